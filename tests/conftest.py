"""Shared fixtures: a real PostgreSQL server, a fresh database per test, the CRM schema.

Which server:

* ``GESTIMUM_TEST_DATABASE_URL`` if set, e.g.
  ``postgresql://postgres@127.0.0.1:5432/postgres`` (a role that may CREATE DATABASE);
  CI sets it to use the machine's server, which is the fast path;
* otherwise an embedded PostgreSQL (pgserver) started once per session in a temp
  directory, so the suite also runs on a machine without PostgreSQL.

Both paths are exercised: run the suite once with the variable and once without;
tests/integration/test_db.py also starts its own EmbeddedPostgres whatever the variable says.

Every fixture yields a plain ``postgresql://`` URL (what users configure); open
connections with ``gestimum_pipeline.db.connect`` or ``db_helpers.make_engine``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gestimum_pipeline.crm.ddl import create_reference_schema
from gestimum_pipeline.db import connect, create_database, drop_database
from gestimum_pipeline.embedded import EmbeddedPostgres
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

TEST_DATABASE_URL_ENV = "GESTIMUM_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (its maintenance database) for the whole session."""
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        yield url
        return
    # Not under tmp_path: as root, pgserver runs the server as user `pgserver`, which
    # must traverse the parents, and every pytest session start re-chmods
    # /tmp/pytest-of-<user> to 0700 (so a concurrent session would lock it out).
    parent = Path(tempfile.mkdtemp(prefix="gestimum-test-pg-"))
    try:
        with EmbeddedPostgres(parent / "data", cleanup_mode="delete") as server:
            yield server.url
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """URL of a new, empty, uniquely named database; dropped (sessions and all) afterwards."""
    name = f"gp_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_server_url, name, setting=TEST_DATABASE_URL_ENV)
    try:
        yield url
    finally:
        drop_database(pg_server_url, name, setting=TEST_DATABASE_URL_ENV)


@pytest.fixture
def crm_url(database_url: str) -> str:
    """`database_url` holding the reference CRM schema ``crm``, with empty tables."""
    conn = connect(database_url, "crm_url fixture")
    try:
        create_reference_schema(conn, "crm")
    finally:
        conn.close()
    return database_url


@pytest.fixture
def simulator() -> Iterator[GestimumSimulator]:
    """The simulator on a real socket, with one item (ELS) and one warehouse (001); modules
    needing other catalog data define their own."""
    sim = GestimumSimulator(SimulatorConfig(items=("ELS",), warehouses=("001",))).start()
    try:
        yield sim
    finally:
        sim.stop()
