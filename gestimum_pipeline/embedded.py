"""An embedded PostgreSQL server, for the demo and for machines without one.

The `pgserver` wheel ships the server binaries, so a fresh machine needs nothing
else. The server listens on a unix socket inside (or next to) its data directory,
never on TCP, so it cannot clash with a PostgreSQL already running on the machine.

Several processes may use the same data directory (the Dagster webserver and
daemon, for instance): pgserver counts them on disk and the server stops when the
last one releases it.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from gestimum_pipeline.db import create_database

DEFAULT_PORT = 5432
SUPERUSER = "postgres"
DEFAULT_DATABASE = "postgres"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/gestimum-pipeline/pg``, else ``~/.local/share/gestimum-pipeline/pg``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gestimum-pipeline" / "pg"


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL; ``with EmbeddedPostgres() as pg: pg.url``.

    :meth:`start` and :meth:`stop` are idempotent. `cleanup_mode` is pgserver's:
    ``"stop"`` (default) stops the server when the last process releases it,
    ``"delete"`` also removes the data directory, ``None`` leaves it running.
    """

    def __init__(self, data_dir: str | Path | None = None, *, cleanup_mode: str | None = "stop"):
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.cleanup_mode = cleanup_mode
        self._server: Any = None  # pgserver.PostgresServer; typed loosely, pgserver ships no stubs we rely on
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> EmbeddedPostgres:
        """Initialise the data directory if needed and start (or join) the server."""
        with self._lock:
            if self._server is not None:
                return self
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, cron); harmless here.
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                import pgserver  # deferred: the import touches the runtime directory

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(self.data_dir, cleanup_mode=self.cleanup_mode)
            # get_server hands back a cached handle if this process used the directory
            # before; re-register our pid and make sure the server still runs, since
            # another process may have stopped it in between.
            with server._lock:
                server.global_process_id_list.get_and_add(os.getpid())
                server.ensure_postgres_running()
            self._server = server
            return self

    def stop(self) -> None:
        """Release this process's handle; the server stops if no other process uses it."""
        with self._lock:
            server, self._server = self._server, None
            if server is not None:
                server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ URLs and databases

    @property
    def url(self) -> str:
        """Plain ``postgresql://`` URL of the ``postgres`` database (accepted by every helper in db.py)."""
        return self.url_for(DEFAULT_DATABASE)

    def url_for(self, database: str) -> str:
        """Plain ``postgresql://`` URL of `database` on this server (which need not exist yet)."""
        if self._server is None:
            raise RuntimeError(f"embedded PostgreSQL in {self.data_dir} is not started; call start() first")
        info = self._server.get_postmaster_info()
        db = quote(database, safe="")
        if info.socket_dir is not None:
            # Unix socket: libpq reads the socket directory from the `host` parameter.
            url = f"postgresql://{SUPERUSER}@/{db}?host={quote(str(info.socket_dir), safe='/')}"
            if info.port is not None and info.port != DEFAULT_PORT:
                url += f"&port={info.port}"
            return url
        return f"postgresql://{SUPERUSER}@{info.hostname}:{info.port}/{db}"

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its URL."""
        create_database(self.url, name, setting=f"embedded PostgreSQL ({self.data_dir})")
        return self.url_for(name)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedPostgres({str(self.data_dir)!r}, {state})"
