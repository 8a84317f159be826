"""Database URLs are taken apart and rebuilt only by gestimum_pipeline.db, on every shape users
(and the embedded server) hand us: TCP with port and password, unix sockets, query parameters."""

from __future__ import annotations

import psycopg2.extensions
import pytest

from gestimum_pipeline.db import connection_parameters, database_name, redact_url, url_with, with_database

SOCKET = "postgresql://postgres@/gp_test_1?host=%2Ftmp%2Fgestimum-test-pg-x%2Fdata&port=5433"
TCP = "postgresql://sync:p%40ss%2Fw%3Frd@db.example:6543/crm?sslmode=require"
PLAIN = "postgres://postgres@127.0.0.1/postgres"
DRIVER = "postgresql+psycopg2://u:pw@h:5432/db?application_name=mine"


@pytest.mark.parametrize(
    ("url", "name"),
    [(SOCKET, "gp_test_1"), (TCP, "crm"), (PLAIN, "postgres"), (DRIVER, "db")],
)
def test_database_name(url: str, name: str) -> None:
    assert database_name(url) == name


def test_database_name_refuses_a_url_without_one() -> None:
    with pytest.raises(ValueError, match="names no database") as info:
        database_name("postgresql://u:Secret-1@h:5432")
    assert "Secret-1" not in str(info.value)


@pytest.mark.parametrize("url", [SOCKET, TCP, PLAIN, DRIVER])
def test_with_database_changes_only_the_database(url: str) -> None:
    other = with_database(url, "gp_other")
    assert database_name(other) == "gp_other"
    before, after = connection_parameters(url), connection_parameters(other)
    assert after.pop("dbname") == "gp_other"
    before.pop("dbname")
    assert after == before  # host, socket directory, port, user, password, options all kept
    assert other.split("://", 1)[0] == url.split("://", 1)[0]  # the scheme (and driver) too


def test_socket_url_parameters() -> None:
    params = connection_parameters(SOCKET)
    assert params == {"host": "/tmp/gestimum-test-pg-x/data", "port": "5433", "user": "postgres", "dbname": "gp_test_1"}


def test_password_with_reserved_characters_survives_a_round_trip() -> None:
    moved = with_database(TCP, "crm2")
    assert connection_parameters(moved)["password"] == "p@ss/w?rd"
    dsn = psycopg2.extensions.parse_dsn(psycopg2.extensions.make_dsn(**connection_parameters(moved)))
    assert dsn["password"] == "p@ss/w?rd" and dsn["port"] == "6543" and dsn["sslmode"] == "require"


@pytest.mark.parametrize("url", [SOCKET, TCP, PLAIN, DRIVER])
def test_a_new_address_replaces_the_socket_form_too(url: str) -> None:
    moved = url_with(url, host="127.0.0.1", port=1)
    params = connection_parameters(moved)
    assert params["host"] == "127.0.0.1" and params["port"] == "1"
    assert params["dbname"] == database_name(url)
    assert params.get("password") == connection_parameters(url).get("password")


def test_url_with_credentials() -> None:
    moved = url_with(SOCKET, username="gp_role", password="a@b/c")
    params = connection_parameters(moved)
    assert (params["user"], params["password"], params["host"]) == ("gp_role", "a@b/c", "/tmp/gestimum-test-pg-x/data")
    assert "a@b/c" not in redact_url(moved) and "gp_role:***@" in redact_url(moved)
