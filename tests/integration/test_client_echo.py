"""An answer that echoes the password never shows any of it (issue 23, Low): not when the
200-character snippet of the answer cuts the password, and not in an encoding (HTML-escaped
by an error page, JSON-escaped, percent-encoded by a proxy). A real server on 127.0.0.1."""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import pytest

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings
from gestimum_pipeline.gestimum.errors import GestimumError

PASSWORD = "Pw<&\"'Secret%/+ 9Zq"
ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda p: p,
    "html": html.escape,
    "html_no_quotes": lambda p: html.escape(p, quote=False),
    "json": lambda p: json.dumps(p)[1:-1],
    "percent": lambda p: quote(p, safe=""),
    "form": lambda p: quote_plus(p, safe=""),
}


def _server(body: Callable[[str], bytes]) -> ThreadingHTTPServer:
    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            password = next(iter(sent.values()))["societe"]["mot_passe"]
            data = body(password)
            self.send_response(400)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str], bytes]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(body: Callable[[str], bytes]) -> str:
        servers.append(_server(body))
        return f"http://127.0.0.1:{servers[-1].server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _refusal(url: str) -> str:
    client = GestimumClient(url, CompanySettings("DEMO.Gestimum", "DEMO", PASSWORD), max_retries=0)
    with client, pytest.raises(GestimumError) as refused:
        client.check_access(catalog.COMPTES, max_retries=0)
    return str(refused.value)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("offset", [20, 190])  # 190: the 200-character snippet cuts the password
def test_an_echoed_password_never_shows(
    serve: Callable[[Callable[[str], bytes]], str], encoding: str, offset: int
) -> None:
    encode = ENCODINGS[encoding]
    url = serve(lambda p: ("x" * offset + f"{encode(p)} rejected").encode())
    message = _refusal(url)
    assert "answer starts with 'xxxx" in message and "***" in message
    shown = encode(PASSWORD)
    for prefix in range(4, len(shown) + 1):  # not even the start of it
        assert shown[:prefix] not in message, (encoding, shown[:prefix])
