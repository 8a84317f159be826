"""A Gestimum REST import server on a real socket, for tests and demos.

Serves the five import endpoints of the catalog (see importer.py for what an import
does), lets tests inject faults, and exposes control endpoints for tests that drive
the pipeline from another process:

* ``GET /_simulator/state``: the holdings and request log as JSON (plus pending faults
  and the public configuration);
* ``POST /_simulator/faults``: queue a fault (JSON object with the fields of `Fault`);
  ``GET`` lists pending faults, ``DELETE`` clears them;
* ``POST /_simulator/reset``: forget holdings, faults and the request log.

Logging: no access log; one INFO line per import request on the
``gestimum_pipeline.simulator`` logger, which never carries the body nor the password.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from gestimum_pipeline.gestimum.catalog import (
    ENDPOINTS,
    PARAM_ENTETE,
    PARAMETRES,
    RESPONSE_RESULT,
    RESPONSE_STATISTIQUES,
    STAT_IMPORTED,
    STAT_REJECTED,
    YES,
    Endpoint,
)
from gestimum_pipeline.simulator.config import (
    DECIMAL_SEPARATORS,
    SimulatorConfig,
    load_catalog,
)
from gestimum_pipeline.simulator.faults import (
    BAD_STATS,
    CLOSE_AFTER_READ,
    DELAY,
    HTTP_500,
    HTTP_503,
    MALFORMED,
    PROCESS_OPTIONAL_KINDS,
    SLOW,
    TRUNCATED,
    Fault,
    FaultQueue,
)
from gestimum_pipeline.simulator.importer import (
    ImportOutcome,
    process_import,
    success_payload,
    task_name,
)
from gestimum_pipeline.simulator.state import Document, RequestRecord, SimulatorState

__all__ = [
    "Document",
    "Fault",
    "GestimumSimulator",
    "RequestRecord",
    "SimulatorConfig",
    "SimulatorState",
    "add_cli_arguments",
    "config_from_args",
    "serve",
]

logger = logging.getLogger("gestimum_pipeline.simulator")

DEFAULT_PORT = 8765
CONTROL_PREFIX = "/_simulator/"
MAX_BODY_BYTES = 256 * 1024 * 1024  # far above any sane batch; protects the test machine
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

# The request path with `"Importer"` decoded, so that both the encoded form Gestimum
# documents (%22Importer%22) and the literal one are accepted.
_IMPORT_ROUTES: dict[str, Endpoint] = {unquote("/" + e.path): e for e in ENDPOINTS.values()}


def route(path: str) -> Endpoint | None:
    """The endpoint served at `path` (query string ignored), or None."""
    return _IMPORT_ROUTES.get(unquote(urlsplit(path).path))


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_bytes(payload: Any) -> bytes:
    # Gestimum's answers carry accented keys ("nombre_lignes_importées"): sent as UTF-8.
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _format_seconds(seconds: float) -> str:
    # Whole seconds as the RFC wants; fractions kept so tests need not wait a full second.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _count_lines(endpoint: Endpoint, body: bytes) -> int:
    """Best-effort count of data lines, for requests the simulator does not process."""
    try:
        params = json.loads(body.decode("utf-8"))[endpoint.envelope_key][PARAMETRES]
        lines = params[endpoint.lines_key]
        header = 1 if params.get(PARAM_ENTETE) == YES else 0
        return max(len(lines) - header, 0) if isinstance(lines, list) else 0
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return 0


def _bad_stats(outcome: ImportOutcome) -> dict[str, Any]:
    # One more imported line than there were: the counts no longer add up to the lines sent.
    payload = json.loads(json.dumps(outcome.payload))
    payload[RESPONSE_RESULT][0][RESPONSE_STATISTIQUES] = {
        STAT_IMPORTED: str(outcome.imported + 1),
        STAT_REJECTED: str(outcome.rejected),
    }
    return payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the IIS/Delphi servers in front of Gestimum
    server_version = "GestimumSimulator"
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # No access log (the default writes every request to stderr); one line per
        # import is logged by _record instead.
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # --- plumbing -------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(400, "invalid Content-Length") from None
        if length < 0:
            raise _BodyError(400, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BodyError(413, "request body too large")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BodyError(400, "request body shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "invalid chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(413, "request body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            # The client went away (e.g. its read timeout fired during a "slow" fault).
            self.close_connection = True

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, _json_bytes(payload), JSON_CONTENT_TYPE)

    def _send_text(self, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._send(status, text.encode("utf-8"), TEXT_CONTENT_TYPE, headers)

    def _send_truncated(self, status: int, body: bytes) -> None:
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", JSON_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
        except OSError:
            return
        self._drop_connection()

    def _drop_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # --- requests -------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True  # the rest of the stream cannot be trusted
            self._send_text(exc.status, exc.message)
            return
        except (OSError, ValueError):
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        if path.startswith(CONTROL_PREFIX):
            self._control(path, body)
            return
        endpoint = route(self.path)
        if endpoint is None or self.command != "POST":
            self._send_text(404, "Not Found")
            return
        self._import(endpoint, body)

    def _import(self, endpoint: Endpoint, body: bytes) -> None:
        self._received_at = time.time()
        simulator = self.server.simulator
        fault = simulator._faults.take(endpoint.name)
        kind = fault.kind if fault else None
        if fault is not None and kind == DELAY:
            time.sleep(fault.seconds)

        if fault is not None and kind in (HTTP_500, HTTP_503):
            status = 500 if kind == HTTP_500 else 503
            headers: tuple[tuple[str, str], ...] = ()
            if kind == HTTP_503 and fault.retry_after is not None:
                headers = (("Retry-After", _format_seconds(fault.retry_after)),)
            self._record(endpoint, None, status, kind, body)
            self._send_text(status, "Internal Server Error" if status == 500 else "Service Unavailable", headers)
            return

        outcome: ImportOutcome | None = None
        if fault is None or fault.process or kind not in PROCESS_OPTIONAL_KINDS:
            try:
                with simulator._import_lock:  # Gestimum runs one import at a time per company
                    outcome = process_import(endpoint, body, simulator.config, simulator.state)
            except Exception:
                # A simulator bug: say so loudly rather than drop the connection.
                logger.exception("%s: the simulator failed to process the request", task_name(endpoint))
                self._send_text(500, "simulator internal error")
                return

        if kind == CLOSE_AFTER_READ:
            # Gestimum may have done the work; the client never hears about it.
            self._record(endpoint, outcome, None, kind, body)
            self._drop_connection()
            return

        if outcome is None:  # "malformed" without processing
            status, data = 200, _json_bytes(success_payload([], (0, 0)))
        else:
            status = outcome.status
            payload = _bad_stats(outcome) if kind == BAD_STATS and status == 200 else outcome.payload
            data = _json_bytes(payload)
        if kind == MALFORMED:
            # Any strict prefix of a JSON object is invalid JSON.
            status, data = 200, data[: len(data) // 2]
        self._record(endpoint, outcome, status, kind, body)
        if kind == TRUNCATED:
            # The connection dies mid-answer: the client reads fewer bytes than announced.
            self._send_truncated(status, data)
            return
        if fault is not None and kind == SLOW:
            time.sleep(fault.seconds)
        self._send(status, data, JSON_CONTENT_TYPE)

    def _record(
        self, endpoint: Endpoint, outcome: ImportOutcome | None, status: int | None, fault: str | None, body: bytes
    ) -> None:
        # Recorded before answering: a test reading the state right after its response sees it.
        record = RequestRecord(
            endpoint=endpoint.name,
            lines=outcome.lines if outcome is not None else _count_lines(endpoint, body),
            status=status,
            fault=fault,
            imported=outcome.imported if outcome is not None else 0,
            rejected=outcome.rejected if outcome is not None else 0,
            test_mode=outcome.test_mode if outcome is not None else False,
            documents=list(outcome.documents) if outcome is not None else [],
            received_at=self._received_at,
            recorded_at=time.time(),
        )
        self.server.simulator.state.record_request(record)
        # Counts, status and our own messages only: never the body, which holds the password.
        logger.info(
            "%s: %d lines, %d imported, %d rejected%s -> %s%s%s",
            task_name(endpoint),
            record.lines,
            record.imported,
            record.rejected,
            " (test mode)" if record.test_mode else "",
            f"HTTP {status}" if status is not None else "connection closed without answer",
            f" [fault {fault}]" if fault else "",
            f": {outcome.error}" if outcome is not None and outcome.error else "",
        )

    def _control(self, path: str, body: bytes) -> None:
        simulator = self.server.simulator
        command = self.command
        if path == CONTROL_PREFIX + "state" and command == "GET":
            self._send_json(200, simulator.snapshot())
        elif path == CONTROL_PREFIX + "faults" and command == "POST":
            try:
                simulator.add_fault(Fault.from_dict(json.loads(body.decode("utf-8"))))
            except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, {"faults": [f.to_dict() for f in simulator.faults]})
        elif path == CONTROL_PREFIX + "faults" and command == "GET":
            self._send_json(200, {"faults": [f.to_dict() for f in simulator.faults]})
        elif path == CONTROL_PREFIX + "faults" and command == "DELETE":
            simulator.clear_faults()
            self._send_json(200, {"faults": []})
        elif path == CONTROL_PREFIX + "reset" and command == "POST":
            simulator.reset()
            self._send_json(200, {"reset": True})
        else:
            self._send_text(404, "Not Found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: GestimumSimulator) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Keep-alive connections would otherwise outlive stop() and keep answering.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Replaces the stdlib's traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            logger.debug("connection from %s ended: %s", client_address, error)
        else:
            logger.exception("unexpected error while serving %s", client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class GestimumSimulator:
    """A simulated Gestimum company behind a real HTTP server (background thread)."""

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.host = host
        self._requested_port = port
        self.state = SimulatorState()
        self._faults = FaultQueue()
        self._import_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> GestimumSimulator:
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self._requested_port), self)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="gestimum-simulator", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        logger.info(
            "Gestimum simulator listening on %s (company file %s, user %s, version %d)",
            self.url,
            self.config.company_file,
            self.config.user,
            self.config.version,
        )
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> GestimumSimulator:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL ending with "/": endpoint paths of the catalog are relative to it."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host = str(self._server.server_address[0])
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    # --- faults and state -----------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Pending faults; `count` is the number of requests each still applies to."""
        return self._faults.pending()

    def reset(self) -> None:
        with self._import_lock:  # never in the middle of an import
            self._faults.clear()
            self.state.reset()

    def public_config(self) -> dict[str, Any]:
        """The configuration without the password."""
        config = asdict(self.config)
        del config["password"]
        config["items"] = list(self.config.items)
        config["warehouses"] = list(self.config.warehouses)
        return config

    def snapshot(self) -> dict[str, Any]:
        """`state.snapshot()` plus pending faults and the public configuration."""
        return {
            **self.state.snapshot(),
            "faults": [f.to_dict() for f in self.faults],
            "config": self.public_config(),
        }


def serve(config: SimulatorConfig, host: str, port: int) -> None:
    """Serves until interrupted (Ctrl-C or SIGTERM); prints the base URL on stdout first."""
    simulator = GestimumSimulator(config, host, port).start()
    print(f"Gestimum simulator listening on {simulator.url}", flush=True)
    stopping = threading.Event()
    previous: Any = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:

        def _on_sigterm(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        logger.info("Gestimum simulator stopped")


# --- command line ---------------------------------------------------------------------


class _RefusePassword(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # The value is not echoed: it may be a real password.
        parser.error("passwords are not taken on the command line (they show in `ps`); use --password-env VAR")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulatorConfig()
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument(
        "--company-file", default=defaults.company_file, help="accepted company file (default: %(default)s)"
    )
    parser.add_argument("--user", default=defaults.user, help="accepted user (default: %(default)s)")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="name of the environment variable holding the accepted password "
        "(default: the empty password of the DEMO company); never give a password on the command line",
    )
    # Defined only to be refused: otherwise argparse would read `--password x` as an
    # abbreviation of --password-env.
    parser.add_argument("--password", nargs="?", action=_RefusePassword, help=argparse.SUPPRESS)
    catalog = parser.add_mutually_exclusive_group()
    catalog.add_argument("--items", metavar="CODES", help="comma-separated item codes (default: the built-in catalog)")
    catalog.add_argument(
        "--catalog", metavar="FILE", help='JSON file {"items": [...], "warehouses": [...]} (either key optional)'
    )
    parser.add_argument(
        "--warehouses",
        metavar="CODES",
        help=f"comma-separated warehouse codes (default: {','.join(defaults.warehouses)})",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=defaults.company_open_delay,
        metavar="SECONDS",
        help="time to open the company on every request; about 6 on a real server (default: %(default)s)",
    )
    parser.add_argument("--charset", default=defaults.charset, help="company character set (default: %(default)s)")
    parser.add_argument(
        "--decimal-separator",
        choices=DECIMAL_SEPARATORS,
        default=defaults.decimal_separator,
        metavar="SEP",
        help="decimal separator of MVT_QTE and ART_PCLIENT, ',' or '.' (default: '%(default)s')",
    )
    parser.add_argument(
        "--version",
        dest="gestimum_version",
        type=int,
        default=defaults.version,
        metavar="N",
        help="Gestimum major version; endpoints needing a newer one answer an error (default: %(default)s)",
    )


def _codes(text: str, option: str) -> tuple[str, ...]:
    codes = tuple(c.strip() for c in text.split(",") if c.strip())
    if not codes:
        raise ValueError(f"{option} needs at least one code")
    return codes


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Builds the configuration; raises ValueError naming the option at fault."""
    defaults = SimulatorConfig()
    password = ""
    if args.password_env:
        if not _ENV_NAME.fullmatch(args.password_env):
            # Not echoed: someone may have given the password itself.
            raise ValueError("--password-env takes the name of an environment variable, not a password")
        value = os.environ.get(args.password_env)
        if value is None:
            raise ValueError(f"--password-env: environment variable {args.password_env} is not set")
        password = value
    items, warehouses = defaults.items, defaults.warehouses
    if args.catalog:
        catalog = load_catalog(args.catalog)
        items = catalog.get("items", items)
        warehouses = catalog.get("warehouses", warehouses)
    if args.items is not None:
        items = _codes(args.items, "--items")
    if args.warehouses is not None:
        warehouses = _codes(args.warehouses, "--warehouses")
    return SimulatorConfig(
        company_file=args.company_file,
        user=args.user,
        password=password,
        items=items,
        warehouses=warehouses,
        charset=args.charset,
        decimal_separator=args.decimal_separator,
        company_open_delay=args.delay,
        version=args.gestimum_version,
    )
