"""The alert webhook does not follow redirects (issue 23, Low): a real server on 127.0.0.1
answers 302 towards another one, which must receive nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gestimum_pipeline.notify.webhook import WebhookError, WebhookNotifier

TOKEN = "T0KEN-redirect-9q"


class _Counting(BaseHTTPRequestHandler):
    hits: list[str]
    location: str = ""

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST  # a followed 302 arrives as a GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def _server(location: str = "") -> tuple[ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits, "location": location})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def servers() -> Iterator[tuple[int, list[str], list[str]]]:
    other, other_hits = _server()
    first, first_hits = _server(f"http://127.0.0.1:{other.server_address[1]}/collect")
    yield first.server_address[1], first_hits, other_hits
    for server in (first, other):
        server.shutdown()
        server.server_close()


def test_the_webhook_does_not_follow_a_redirect(servers: tuple[int, list[str], list[str]]) -> None:
    port, first_hits, other_hits = servers
    with (
        WebhookNotifier(f"http://127.0.0.1:{port}/services/{TOKEN}", retries=0) as notifier,
        pytest.raises(WebhookError, match="HTTP 302, a redirect: not followed") as refused,
    ):
        notifier.post({"text": "run failed"})
    assert first_hits == [f"/services/{TOKEN}"]
    assert other_hits == []  # the other origin received nothing
    assert TOKEN not in str(refused.value)
