"""URLs, engines, raw connections, identifiers and the embedded server, on real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import psycopg2
import psycopg2.extensions
import pytest
from db_helpers import make_engine, quote_ident

from gestimum_pipeline.db import (
    APPLICATION_NAME,
    DatabaseUnavailable,
    connect,
    create_database,
    database_name,
    drop_database,
    normalize_url,
    psycopg2_dsn,
    validate_identifier,
    with_database,
)
from gestimum_pipeline.embedded import EmbeddedPostgres, default_data_dir

SECRET = "s3cr3t-P4ss"


# --------------------------------------------------------------------------- normalize_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg2://u@h:5432/db"),
        ("postgres://u:pw@h/db", "postgresql+psycopg2://u:pw@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        # An explicit driver is the user's choice and is kept.
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres+pg8000://u@h/db", "postgresql+pg8000://u@h/db"),
        ("  postgresql://u@h/db  ", "postgresql+psycopg2://u@h/db"),
        # The unix-socket form the embedded server hands out.
        (
            "postgresql://postgres:@/postgres?host=/tmp/xyz",
            "postgresql+psycopg2://postgres:@/postgres?host=%2Ftmp%2Fxyz",
        ),
        ("postgresql:///db", "postgresql+psycopg2:///db"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{SECRET}@h/db",
        f"sqlite:///tmp/x.db?password={SECRET}",
        f"mssql+pyodbc://u:{SECRET}@dsn",
        f"postgresql://u:{SECRET}@h:notaport/db",
        f"not a url {SECRET}",
        f"u:{SECRET}@h/db",
        "",
        "   ",
    ],
)
def test_normalize_url_rejects_without_leaking_the_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_url(url, setting="CRM_DATABASE_URL")
    assert "CRM_DATABASE_URL" in str(info.value)
    assert SECRET not in str(info.value)


def test_make_engine_picks_psycopg2_for_a_plain_url() -> None:
    """The pitfall normalize_url exists for: to SQLAlchemy 2.1 a plain URL means psycopg 3."""
    engine = make_engine("postgresql://u@127.0.0.1/db")
    assert engine.dialect.driver == "psycopg2"


# --------------------------------------------------------------------------- DSN, engine, connect


def test_psycopg2_dsn_handles_the_socket_form() -> None:
    dsn = psycopg2_dsn("postgresql://postgres:@/postgres?host=/tmp/some%20dir")
    parsed = psycopg2.extensions.parse_dsn(dsn)
    assert parsed["host"] == "/tmp/some dir"
    assert parsed["user"] == "postgres"
    assert parsed["dbname"] == "postgres"
    assert "password" not in parsed
    assert parsed["application_name"] == APPLICATION_NAME


def test_psycopg2_dsn_keeps_password_and_libpq_options() -> None:
    url = "postgres://u:p%40ss%20w@db.example:6543/crm?sslmode=require&application_name=mine"
    parsed = psycopg2.extensions.parse_dsn(psycopg2_dsn(url))
    assert parsed == {
        "host": "db.example",
        "port": "6543",
        "user": "u",
        "password": "p@ss w",
        "dbname": "crm",
        "sslmode": "require",
        "application_name": "mine",
        "connect_timeout": "10",
    }


def test_make_engine_connects_with_psycopg2_and_application_name(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert engine.dialect.driver == "psycopg2"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_setting('application_name')").scalar() == APPLICATION_NAME
    finally:
        engine.dispose()


def test_connect_returns_a_raw_connection(database_url: str) -> None:
    conn = connect(database_url, "CRM_DATABASE_URL")
    try:
        assert isinstance(conn, psycopg2.extensions.connection)
        assert not conn.autocommit
        with conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone()[0] == database_name(database_url)
    finally:
        conn.close()


def test_database_unavailable_names_the_setting_and_hides_the_password(unused_tcp_port: int) -> None:
    url = f"postgresql://someone:{SECRET}@127.0.0.1:{unused_tcp_port}/crm"
    with pytest.raises(DatabaseUnavailable) as info:
        connect(url, "CRM_DATABASE_URL")
    message = str(info.value)
    assert message.startswith("cannot connect to CRM_DATABASE_URL (postgresql://someone:***@127.0.0.1:")
    assert "refused" in message.lower()
    assert SECRET not in message
    assert info.value.__cause__ is None  # nothing else to print the DSN


def test_database_unavailable_for_a_refused_login(pg_server_url: str) -> None:
    url = with_database(pg_server_url, "gp_no_such_database")
    with pytest.raises(DatabaseUnavailable, match=r"gp_no_such_database.*does not exist"):
        connect(url, "GESTIMUM_DATABASE_URL")


def test_connect_rejects_a_bad_url_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="CRM_DATABASE_URL must be a PostgreSQL URL"):
        connect(f"mysql://u:{SECRET}@h/db", "CRM_DATABASE_URL")


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_create_and_drop_database_even_with_open_sessions(pg_server_url: str) -> None:
    url = create_database(pg_server_url, "gp_test_create_drop")
    try:
        assert create_database(pg_server_url, "gp_test_create_drop") == url  # idempotent
        conn = connect(url)  # left open on purpose: the drop must not wait for it
    finally:
        drop_database(pg_server_url, "gp_test_create_drop")
    conn.close()
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        connect(url)
    drop_database(pg_server_url, "gp_test_create_drop")  # absent: no error


def test_database_url_fixture_gives_an_empty_private_database(database_url: str, pg_server_url: str) -> None:
    assert database_url.startswith("postgresql://")
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), count(*) FROM pg_namespace WHERE nspname = 'crm'")
            name, crm_schemas = cur.fetchone()
    finally:
        conn.close()
    assert name.startswith("gp_test_")
    assert crm_schemas == 0
    assert with_database(pg_server_url, name) == database_url


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("name", ["crm", "CRM_2", "_private", "a" * 63])
def test_validate_identifier_accepts_plain_names(name: str) -> None:
    assert validate_identifier(name, "CRM_SCHEMA") == name
    assert quote_ident(name, "CRM_SCHEMA") == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    [
        "crm; drop table x",
        'a"b',
        "crm.customers",
        "crm--",
        "1crm",
        "",
        "a" * 64,
        "créme",
        "crm\n",
        " crm",
        None,
        42,
    ],
)
def test_validate_identifier_rejects_anything_else(name: object) -> None:
    with pytest.raises(ValueError, match="CRM_SCHEMA must be a plain SQL identifier"):
        validate_identifier(name, "CRM_SCHEMA")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CRM_SCHEMA"):
        quote_ident(name, "CRM_SCHEMA")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- embedded server


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "gestimum-pipeline" / "pg"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == Path.home() / ".local" / "share" / "gestimum-pipeline" / "pg"


@pytest.fixture
def pg_data_parent() -> Iterator[Path]:
    """A directory for a data directory, outside pytest's tmp (see conftest.pg_server_url)."""
    parent = Path(tempfile.mkdtemp(prefix="gestimum-test-pg-"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def test_embedded_postgres_lifecycle(pg_data_parent: Path) -> None:
    """Runs whatever GESTIMUM_TEST_DATABASE_URL says, so the embedded path is always covered."""
    server = EmbeddedPostgres(pg_data_parent / "pg")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    with server:
        assert server.start() is server  # idempotent
        assert server.running
        assert server.url.startswith("postgresql://postgres@/postgres?host=")
        url = server.create_database("gp_embedded")
        assert server.create_database("gp_embedded") == url
        conn = connect(url, "embedded")
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)")
        conn.close()
        engine = make_engine(url)
        with engine.connect() as sa_conn:
            assert sa_conn.exec_driver_sql("SELECT current_database()").scalar() == "gp_embedded"
        engine.dispose()
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(DatabaseUnavailable):
        connect(url, "embedded")

    # Restarted on the same directory, the data is still there.
    with EmbeddedPostgres(pg_data_parent / "pg") as again:
        conn = connect(again.url_for("gp_embedded"), "embedded")
        with conn.cursor() as cur:
            cur.execute("SELECT x FROM kept")
            assert cur.fetchall() == [(1,)]
        conn.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("length", ["short", "long"])
def test_the_embedded_socket_is_private_whatever_the_data_directory_length(pg_data_parent: Path, length: str) -> None:
    """The server trusts local connections: its socket stays in a 0700 directory, the data
    directory or (a path too long for a socket) a short one of its own, never /tmp/runtime-<uid>/."""
    data_dir = pg_data_parent / "pg"
    if length == "long":
        data_dir = pg_data_parent / ("d" * 60) / ("e" * 60) / "pg"
        data_dir.parent.mkdir(parents=True)
    with EmbeddedPostgres(data_dir, cleanup_mode="delete") as server:
        socket_dir = server.socket_dir
        assert socket_dir is not None
        if length == "short":
            assert socket_dir == data_dir
        else:
            assert socket_dir.name.startswith("gestimum-pg-") and "runtime-" not in str(socket_dir)
        assert _mode(socket_dir) == 0o700
        (socket_file,) = socket_dir.glob(".s.PGSQL.*[0-9]")
        assert _mode(socket_file) == 0o700
        assert f"host={socket_dir}" in unquote(server.url)
        conn = connect(server.url, "embedded")
        conn.close()
        if os.geteuid() == 0:
            assert _other_user_cannot_connect(server.url)


def _other_user_cannot_connect(url: str) -> bool:
    """Connects from a child process as `nobody`: refused by the socket's permissions."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 2
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                connect(url, "embedded").close()
                code = 1  # connected: the socket is not private
            except DatabaseUnavailable as exc:
                code = 0 if "Permission denied" in str(exc) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
