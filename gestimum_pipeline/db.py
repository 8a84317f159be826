"""Database URLs, raw connections and identifiers, in one place.

Users configure plain libpq-style URLs (``postgresql://user:pw@host:5432/db``, or
the unix-socket form ``postgresql://user@/db?host=/run/postgresql`` that the
embedded server hands out). SQLAlchemy 2.1 maps a plain ``postgresql://`` URL to
psycopg 3, which we do not ship, so every URL goes through :func:`normalize_url`
and explicitly names psycopg2. Bulk reads and COPY use raw psycopg2 connections
(:func:`connect`), for server-side cursors.

Nothing here ever puts a password in an exception message or a log line
(gestimum_pipeline/redaction.py hides it).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gestimum_pipeline.redaction import redact, redact_url

APPLICATION_NAME = "gestimum-pipeline"
DEFAULT_DRIVER = "psycopg2"
DEFAULT_CONNECT_TIMEOUT = 10  # seconds; a wrong host must fail fast, not hang a run

_POSTGRES_NAMES = ("postgresql", "postgres")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class DatabaseUnavailable(RuntimeError):
    """A database could not be reached; the message names the setting, never the password."""

    def __init__(self, setting: str, url: str, reason: str):
        self.setting = setting
        self.url = redact_url(url)
        self.reason = reason
        super().__init__(f"cannot connect to {setting} ({self.url}): {reason}")


# --------------------------------------------------------------------------- URLs


def _parse(url: str, setting: str) -> URL:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{setting} is empty; expected a PostgreSQL URL such as postgresql://user@host:5432/dbname")
    # An unencoded `@` in the password: SQLAlchemy splits at the first one, so the rest of the
    # password becomes the host and the driver quotes it ("could not translate host name").
    _, has_scheme, rest = url.strip().partition("://")
    if has_scheme and rest.split("?", 1)[0].count("@") > 1:
        raise ValueError(
            f"{setting} holds more than one '@' before its host: write an '@' of the user name or password "
            f"as %40 ({redact_url(url)})"
        )
    try:
        return make_url(url.strip())
    except ArgumentError:
        # Not echoed: where a password sits in an unparsable string is anyone's guess.
        raise ValueError(
            f"{setting} is not a valid database URL; expected postgresql://user:password@host:port/dbname"
        ) from None
    except ValueError:  # parsed, but the port is not a number
        raise ValueError(f"{setting} has an invalid port: {redact_url(url)}") from None


def _normalized(url: str, setting: str) -> URL:
    parsed = _parse(url, setting)
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _POSTGRES_NAMES:
        raise ValueError(
            f"{setting} must be a PostgreSQL URL (postgresql://...), got scheme {backend!r}: {redact_url(url)}"
        )
    # A driver the user named explicitly is kept: it is their choice to install it.
    return parsed.set(drivername=f"postgresql+{driver or DEFAULT_DRIVER}")


def normalize_url(url: str, *, setting: str = "database URL") -> str:
    """Return a SQLAlchemy URL that names its driver: plain PostgreSQL URLs get psycopg2.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg2://``; an
    explicit ``postgresql+<driver>://`` is kept. Raises ValueError (naming `setting`,
    without the password) for an empty, malformed or non-PostgreSQL URL.
    """
    return _normalized(url, setting).render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at another database on the same server (scheme unchanged)."""
    return url_with(url, database=database)


def url_with(
    url: str,
    *,
    database: str | None = None,
    host: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """Return `url` with the given parts replaced, whatever its shape (scheme unchanged).

    A new `host` (or `port`) replaces the whole address: the socket form's ``?host=…`` (and
    ``?port=…``) query parameters go too, since libpq would let them win over the URL's own.
    """
    parsed = _parse(url, "database URL")
    if host is not None or port is not None:
        parsed = parsed.difference_update_query(["host", "port"])
        if host is not None:
            parsed = parsed.set(host=host)
        if port is not None:
            parsed = parsed.set(port=port)
    if database is not None:
        parsed = parsed.set(database=database)
    if username is not None:
        parsed = parsed.set(username=username)
    if password is not None:
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def database_name(url: str) -> str:
    """The database `url` names (libpq's default, the user's name, is not guessed: ValueError)."""
    name = _parse(url, "database URL").database
    if not name:
        raise ValueError(f"the database URL names no database: {redact_url(url)}")
    return str(name)


def connection_parameters(url: str, *, setting: str = "database URL") -> dict[str, str]:
    """libpq keywords (host, port, user, password, dbname and any query parameter) of `url`.

    The socket form ``postgresql://user@/db?host=/run/postgresql`` gives ``host`` the socket
    directory; a repeated ``host`` becomes libpq's comma-separated list.
    """
    parsed = _normalized(url, setting)
    params: dict[str, str] = {}
    for key, value in parsed.query.items():
        params[key] = ",".join(value) if isinstance(value, tuple) else value
    if parsed.host is not None and "host" not in params:
        params["host"] = parsed.host
    if parsed.port is not None and "port" not in params:
        params["port"] = str(parsed.port)
    if parsed.username:
        params["user"] = parsed.username
    if parsed.password:
        params["password"] = parsed.password
    if parsed.database:
        params["dbname"] = parsed.database
    return params


def psycopg2_dsn(url: str, *, setting: str = "database URL") -> str:
    """Return a libpq keyword DSN for psycopg2.connect, from any accepted PostgreSQL URL.

    Query parameters are libpq keywords and pass through, so the socket form
    ``?host=/path`` works; a repeated ``host`` becomes libpq's comma-separated list.
    ``application_name`` and ``connect_timeout`` get defaults unless given.
    """
    params: dict[str, Any] = dict(connection_parameters(url, setting=setting))
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    return psycopg2.extensions.make_dsn(**params)


def db_reason(exc: BaseException, password: str | None = None) -> str:
    """One line from a driver error; a password the error may echo (connecting) is scrubbed.

    Server messages after connecting never hold the connection's password.
    """
    return redact(" ".join(str(exc).split()) or type(exc).__name__, [password])


def connect(
    url: str,
    setting: str = "CRM_DATABASE_URL",
    *,
    autocommit: bool = False,
) -> psycopg2.extensions.connection:
    """Open a raw psycopg2 connection; the caller owns (and closes) it.

    Raises ValueError for a bad URL and DatabaseUnavailable when the server cannot be
    reached or refuses us; both name `setting` and hide the password.
    """
    dsn = psycopg2_dsn(url, setting=setting)
    pooled = _POOL.take(dsn, autocommit)
    if pooled is not None:
        return pooled
    try:
        conn = psycopg2.connect(dsn, connection_factory=_PooledConnection) if _POOL.active else psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        parsed = _parse(url, setting)
        password = parsed.password or parsed.query.get("password")
        password = password if isinstance(password, str) else None
        # `from None`: the driver exception adds nothing the reason lacks.
        raise DatabaseUnavailable(setting, url, db_reason(exc, password)) from None
    conn.autocommit = autocommit
    if isinstance(conn, _PooledConnection):
        conn.pool_key = dsn
    return conn


class _PooledConnection(psycopg2.extensions.connection):
    """A connection opened while pooling is on: `close()` hands it back, reset, to the pool."""

    pool_key: str = ""

    def close(self) -> None:
        if not _POOL.give_back(self):
            super().close()

    def discard(self) -> None:
        super().close()


class _Pool:
    """Idle connections kept between the steps of one run (`pooling`), per DSN, this process only.

    A run's steps each open and close their own connections (the state store, the CRM, the
    company lock): about 60 on a run with nothing to send, each a server process started. While
    pooling is on, a closed connection is reset (rolled back, `DISCARD ALL`: temporary tables,
    session settings, advisory locks and cursors gone) and kept; the next `connect` to the same
    DSN takes it after one round trip proving it alive. Off, `close()` closes, as always.
    """

    MAX_IDLE = 8  # per DSN: a run holds a few at once (store, writer, lock, CRM)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._pid = os.getpid()
        self._idle: dict[str, list[_PooledConnection]] = {}

    @property
    def active(self) -> bool:
        return self._users > 0 and self._pid == os.getpid()

    def enter(self) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
                self._pid, self._idle, self._users = os.getpid(), {}, 0
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return
            self._users = max(0, self._users - 1)
            if self._users:
                return
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.discard()

    def take(self, dsn: str, autocommit: bool) -> _PooledConnection | None:
        while True:
            with self._lock:
                if not self.active or not self._idle.get(dsn):
                    return None
                conn = self._idle[dsn].pop()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")  # autocommit (reset): no transaction left open
                conn.autocommit = autocommit
                return conn
            except psycopg2.Error:
                conn.discard()  # terminated while idle: try the next, or open a new one

    def give_back(self, conn: _PooledConnection) -> bool:
        if conn.closed or not self.active or not conn.pool_key:
            return False
        with self._lock:
            if len(self._idle.get(conn.pool_key, ())) >= self.MAX_IDLE:
                return False
        try:
            if not conn.autocommit:
                conn.rollback()
            conn.autocommit = True
            conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT", deferrable="DEFAULT")
            with conn.cursor() as cur:
                cur.execute("DISCARD ALL")
            conn.notices.clear()
        except psycopg2.Error:
            return False
        with self._lock:
            if not self.active:
                return False
            self._idle.setdefault(conn.pool_key, []).append(conn)
        return True


_POOL = _Pool()


@contextlib.contextmanager
def pooling() -> Iterator[None]:
    """Within it, this process's connections are kept and reused (see `_Pool`); nestable."""
    _POOL.enter()
    try:
        yield
    finally:
        _POOL.leave()


def start_pooling() -> None:
    """`pooling` for a resource's setup (paired with `stop_pooling` at its teardown)."""
    _POOL.enter()


def stop_pooling() -> None:
    _POOL.leave()


def create_database(server_url: str, name: str, *, setting: str = "database URL") -> str:
    """Create database `name` on the server of `server_url` unless it exists; return its URL.

    Needs a role allowed to CREATE DATABASE. The returned URL keeps the scheme of
    `server_url` (a plain postgresql:// stays plain).
    """
    validate_identifier(name, "database name")
    conn = connect(server_url, setting, autocommit=True)  # CREATE DATABASE refuses transactions
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                # Another process may create it between our check and our CREATE.
                with contextlib.suppress(psycopg2.errors.DuplicateDatabase):
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return with_database(server_url, name)


def drop_database(server_url: str, name: str, *, setting: str = "database URL") -> None:
    """Drop database `name` if it exists, disconnecting its sessions first."""
    validate_identifier(name, "database name")
    conn = connect(server_url, setting, autocommit=True)
    try:
        with conn.cursor() as cur:
            if conn.server_version >= 130000:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            else:  # before 13: terminate, then drop (a racing new session makes the drop fail loudly)
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid()",
                    (name,),
                )
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


# --------------------------------------------------------------------------- identifiers


def validate_identifier(name: str, what: str) -> str:
    """Return `name` if it is a plain SQL identifier, else raise ValueError naming `what`.

    Configured names (schema, relations) are then always quoted, so they are
    case-sensitive: ``CRM`` and ``crm`` are different schemas.
    """
    if not isinstance(name, str) or not _IDENTIFIER_RE.fullmatch(name):
        raise ValueError(
            f"{what} must be a plain SQL identifier (letters, digits, underscore; not starting "
            f"with a digit; at most 63 characters), got {name!r}"
        )
    return name


def ident(name: str, what: str) -> sql.Identifier:
    """A validated identifier ready for :mod:`psycopg2.sql` composition."""
    return sql.Identifier(validate_identifier(name, what))


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of `values`, for a ``%s::text[]`` parameter.

    psycopg2 sends a list as ``ARRAY['a', 'b', ...]``, which the server parses as one
    expression per element: for a request's 10 000 keys that costs about five times parsing
    the literal (measured: 24.7 ms against 4.8 ms for two such arrays).
    """
    if not values:
        return "{}"
    joined = "\x1f".join(values)
    if '"' in joined or "\\" in joined or joined.count("\x1f") != len(values) - 1:
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
    return '{"' + joined.replace("\x1f", '","') + '"}'
