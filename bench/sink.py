"""A fast do-nothing Gestimum: reads each body, counts its lines, answers success.

Runs in its own process (`python bench/sink.py`), so parsing request bodies never
competes for the benchmarked process's GIL. It parses every body as JSON (counting
lines honestly: a line is an element of the lines array, the header excluded) and
answers the documented success shape with correct statistics; DocumentsStock answers
name one created document per request, as Gestimum's journal does. Nothing is stored.

Control endpoints for the benchmark: ``GET /_sink/stats`` (requests, lines and body
bytes per endpoint, and the largest body) and ``POST /_sink/reset``.

Prints ``listening on http://127.0.0.1:PORT/`` once ready.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gestimum_pipeline.gestimum.catalog import (
    ENDPOINTS,
    JOURNAL_DOCUMENT_CREATED,
    JOURNAL_IMPORTED_COUNT,
    JOURNAL_REJECTED_COUNT,
    JOURNAL_SUCCESS,
    JOURNAL_TIMESTAMP_FORMAT,
    MESSAGE_DONE,
    PARAMETRES,
    RESPONSE_JOURNAL,
    RESPONSE_MESSAGE,
    RESPONSE_RESULT,
    RESPONSE_RESULTAT,
    RESPONSE_STATISTIQUES,
    RESULTAT_SUCCESS,
    STAT_IMPORTED,
    STAT_REJECTED,
    STOCK_DOCUMENT_PREFIXES,
    STOCK_ENTRY,
)

_ROUTES = {"/" + e.path: e for e in ENDPOINTS.values()}


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, int] = {}
        self.lines: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.max_body = 0
        self.max_lines = 0
        self.documents = 0

    def add(self, endpoint: str, lines: int, size: int) -> int:
        with self.lock:
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
            self.lines[endpoint] = self.lines.get(endpoint, 0) + lines
            self.bytes[endpoint] = self.bytes.get(endpoint, 0) + size
            self.max_body = max(self.max_body, size)
            self.max_lines = max(self.max_lines, lines)
            self.documents += 1
            return self.documents

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "lines": dict(self.lines),
                "bytes": dict(self.bytes),
                "max_body_bytes": self.max_body,
                "max_lines": self.max_lines,
            }


STATS = _Stats()


def answer(endpoint_name: str, body: dict[str, Any], document_no: int) -> dict[str, Any]:
    """The documented success answer for `body`: every line imported."""
    endpoint = ENDPOINTS[endpoint_name]
    lines = body[endpoint.envelope_key][PARAMETRES][endpoint.lines_key]
    n = len(lines) - 1  # the first line is the header (entete = Oui)
    now = time.strftime(JOURNAL_TIMESTAMP_FORMAT)
    journal = [f"{now} {JOURNAL_IMPORTED_COUNT.format(n=n)}", f"{now} {JOURNAL_REJECTED_COUNT.format(n=0)}"]
    if endpoint_name == "documents_stock" and n:
        direction = lines[1].split(";", 1)[0]
        prefix = STOCK_DOCUMENT_PREFIXES.get(direction, STOCK_DOCUMENT_PREFIXES[STOCK_ENTRY])
        journal.append(f"{now} {JOURNAL_DOCUMENT_CREATED.format(number=f'{prefix}26-{document_no:05d}')}")
    journal.append(f"{now} {JOURNAL_SUCCESS}")
    return {
        RESPONSE_RESULT: [
            {
                RESPONSE_RESULTAT: RESULTAT_SUCCESS,
                RESPONSE_MESSAGE: MESSAGE_DONE,
                RESPONSE_JOURNAL: journal,
                RESPONSE_STATISTIQUES: {STAT_IMPORTED: str(n), STAT_REJECTED: "0"},
            }
        ]
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real client session

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        pass

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/_sink/stats":
            self._reply(200, STATS.as_dict())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_sink/reset":
            STATS.reset()
            self._reply(200, {"reset": True})
            return
        endpoint = _ROUTES.get(self.path)
        if endpoint is None:
            self._reply(404, {"error": f"unknown path {self.path}"})
            return
        body = json.loads(raw)
        n = len(body[endpoint.envelope_key][PARAMETRES][endpoint.lines_key]) - 1
        document_no = STATS.add(endpoint.name, n, len(raw))
        self._reply(200, answer(endpoint.name, body, document_no))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)

    def _on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: an ignored SIGTERM can be inherited from the launching shell.
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
