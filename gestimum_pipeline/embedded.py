"""An embedded PostgreSQL server, for the demo and for machines without one.

The `pgserver` wheel ships the server binaries, so a fresh machine needs nothing
else. The server listens on a unix socket, never on TCP, so it cannot clash with a
PostgreSQL already running on the machine.

The server trusts every local connection (pgserver runs initdb with trust auth), so the
socket must be reachable by this OS user only. It lives in a private directory
(`EmbeddedPostgres.socket_dir`, mode 0700): the data directory itself (initdb makes it
0700), or, when that path is too long for a unix socket (about 100 characters), a short
directory of its own, `<tmp>/gestimum-pg-<uid>-<hash of the data directory>`, instead of
pgserver's fallback under `/tmp/runtime-<uid>/` (world-writable as root). The socket
file itself is 0700 too (`unix_socket_permissions`).

Several processes may use the same data directory (the Dagster webserver and
daemon, for instance): pgserver counts them on disk and the server stops when the
last one releases it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from gestimum_pipeline.db import create_database

DEFAULT_PORT = 5432
SUPERUSER = "postgres"
DEFAULT_DATABASE = "postgres"
SOCKET_PERMISSIONS = "unix_socket_permissions = 0700  # gestimum-pipeline: this OS user only (trust auth)"
# Whatever pgserver's choice, at most one start at a time swaps in ours (module-level function).
_SOCKET_DIR_LOCK = threading.Lock()


def _socket_path_fits(directory: Path) -> bool:
    """Whether a PostgreSQL socket (`.s.PGSQL.5432`) in `directory` fits a unix socket address."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.bind(str(directory / ".s.PGSQL.5432.probe"))
    except OSError:
        return False
    else:
        (directory / ".s.PGSQL.5432.probe").unlink(missing_ok=True)
        return True
    finally:
        probe.close()


def _server_uid(pgdata: Path) -> int:
    """The OS user the server runs as: the data directory's owner (pgserver's `pgserver` user as root)."""
    return pgdata.stat().st_uid


def private_socket_dir(pgdata: Path) -> Path:
    """The socket directory of the server of `pgdata`: the data directory if the socket path fits,
    else a short directory only the server's OS user may enter (created 0700, refused if another
    user owns it or it is a symlink)."""
    if _socket_path_fits(pgdata):
        return pgdata
    uid = _server_uid(pgdata)
    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:12]
    directory = Path(tempfile.gettempdir()) / f"gestimum-pg-{uid}-{digest}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
        if os.geteuid() != uid:  # root, for pgserver's unprivileged server user
            os.chown(directory, uid, -1)
    found = directory.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != uid:
        raise RuntimeError(
            f"embedded PostgreSQL: {directory} (its socket directory) exists and is not a directory of the "
            f"server's user (uid {uid}): remove it, or use a shorter data directory path"
        )
    directory.chmod(0o700)
    return directory


def _restrict_socket(pgdata: Path) -> None:
    """The socket file 0700 too, so the directory's mode is not the only guard."""
    conf = pgdata / "postgresql.conf"
    if conf.exists() and SOCKET_PERMISSIONS not in conf.read_text():
        with conf.open("a") as out:  # appended: a later setting wins over initdb's
            out.write(f"\n{SOCKET_PERMISSIONS}\n")


@contextlib.contextmanager
def _private_socket_dirs(pgserver_module: Any) -> Iterator[None]:
    """Makes pgserver start servers with `private_socket_dir` (it calls find_suitable_socket_dir
    after initdb, just before pg_ctl start, and only when the server is not running)."""

    def choose(pgdata: Path, _runtime_path: Path) -> Path:
        _restrict_socket(pgdata)
        return private_socket_dir(pgdata)

    module = pgserver_module.postgres_server
    with _SOCKET_DIR_LOCK:
        original = module.find_suitable_socket_dir
        module.find_suitable_socket_dir = choose
        try:
            yield
        finally:
            module.find_suitable_socket_dir = original


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
            with _private_socket_dirs(pgserver):
                server = pgserver.get_server(self.data_dir, cleanup_mode=self.cleanup_mode)
                # get_server hands back a cached handle if this process used the directory
                # before; re-register our pid and make sure the server still runs, since
                # another process may have stopped it in between.
                with server._lock:
                    server.global_process_id_list.get_and_add(os.getpid())
                    server.ensure_postgres_running()
            self._server = server
            socket_dir = self.socket_dir
            if socket_dir is not None and socket_dir != self.data_dir:
                # As root, pgserver opens a socket directory other than the data directory to
                # everyone (0777) for its unprivileged server user, who owns it: closed again.
                socket_dir.chmod(0o700)
            return self

    def stop(self) -> None:
        """Release this process's handle; the server stops if no other process uses it."""
        with self._lock:
            socket_dir = self.socket_dir
            server, self._server = self._server, None
            if server is not None:
                server.cleanup()
            if socket_dir is not None and socket_dir != self.data_dir and self.cleanup_mode == "delete":
                with contextlib.suppress(OSError):  # still holds the socket: another process uses the server
                    socket_dir.rmdir()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def socket_dir(self) -> Path | None:
        """The directory of the server's unix socket (private: see the module's docstring)."""
        if self._server is None:
            return None
        found = self._server.get_postmaster_info().socket_dir
        return Path(found) if found is not None else None

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
