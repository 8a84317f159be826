"""Shared fixtures: a real PostgreSQL server, a fresh database per test, the CRM schema; the tiers.

Which server:

* ``GESTIMUM_TEST_DATABASE_URL`` if set, e.g.
  ``postgresql://postgres@127.0.0.1:5432/postgres`` (a role that may CREATE DATABASE);
* otherwise an embedded PostgreSQL (pgserver) started once per session (per xdist worker)
  in a temp directory: what a fresh machine, and CI, use.

Databases are copied from a template made once per session (``CREATE DATABASE … TEMPLATE``)
instead of being built table by table for every test.

Tiers (directories): ``unit/`` pure functions, ``integration/`` one real component (the
database, the simulator on a socket), ``e2e/`` the Dagster graph, the CLI, daemons and the
browser. Every e2e test is marked ``slow`` except the one marked ``smoke``, so
``python -m pytest -m "not slow"`` is the fast tier.

Every fixture yields a plain ``postgresql://`` URL (what users configure); take URLs apart
with ``gestimum_pipeline.db`` (``with_database``, ``database_name``, ``url_with``); open
connections with ``gestimum_pipeline.db.connect``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from databases import copy_database, init_state_store
from psycopg2 import sql

from gestimum_pipeline.crm.ddl import create_reference_schema
from gestimum_pipeline.db import connect, create_database, database_name, drop_database
from gestimum_pipeline.embedded import EmbeddedPostgres
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

TEST_DATABASE_URL_ENV = "GESTIMUM_TEST_DATABASE_URL"
TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")
# The longest tests go first, so that with several workers none is left alone at the end
# with a daemon test that started last.
LONGEST_FIRST = (
    "test_production_instance.py",
    "test_ui.py",
    "test_cli_materialize.py",
    "test_alerts.py",
    "test_change_sensor.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores. Much of an end-to-end test waits on another
    process (a daemon's tick, a subprocess starting, the simulator's delays), so a spare
    worker keeps the cores busy: on 2 cores, 3 workers took 186 s where 2 took 232 s."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.path).relative_to(TESTS).parts[0] if Path(item.path).is_relative_to(TESTS) else ""
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "e2e" and item.get_closest_marker("smoke") is None:
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> int:
        name = Path(item.path).name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a rank, the collection order stays


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
            _throwaway_durability(server.url)
            yield server.url
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _throwaway_durability(url: str) -> None:
    """No fsync on the session's own server: its data directory is deleted at the end anyway,
    and each CREATE/DROP DATABASE otherwise waits for a checkpoint's fsyncs (~0.2 s a test)."""
    conn = connect(url, "embedded test server", autocommit=True)
    try:
        with conn.cursor() as cur:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                cur.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def crm_template(pg_server_url: str) -> Iterator[str]:
    """Name of a template database holding the reference CRM schema (empty tables)."""
    name = f"gp_tpl_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_server_url, name, setting=TEST_DATABASE_URL_ENV)
    conn = connect(url, TEST_DATABASE_URL_ENV)
    try:
        create_reference_schema(conn, "crm")
    finally:
        conn.close()  # CREATE DATABASE … TEMPLATE refuses a template with sessions
    init_state_store(url)
    try:
        yield name
    finally:
        drop_database(pg_server_url, name, setting=TEST_DATABASE_URL_ENV)


@pytest.fixture(scope="session")
def sync_role_crm_template(pg_server_url: str) -> Iterator[str]:
    """Template of the reliability tests' CRM: owned by the sync role, schema created as that role."""
    from reliability import role_database  # a helper of the e2e tier: imported only when needed

    with role_database(pg_server_url, "gp_tpl_role") as url:
        conn = connect(url, TEST_DATABASE_URL_ENV)
        try:
            create_reference_schema(conn, "crm")
        finally:
            conn.close()
        init_state_store(url)
        yield database_name(url)


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
def crm_url(pg_server_url: str, crm_template: str) -> Iterator[str]:
    """A new database holding the reference CRM schema ``crm``, with empty tables."""
    url = copy_database(pg_server_url, crm_template, "gp_test")
    try:
        yield url
    finally:
        drop_database(pg_server_url, database_name(url), setting=TEST_DATABASE_URL_ENV)


@pytest.fixture
def simulator() -> Iterator[GestimumSimulator]:
    """The simulator on a real socket, with one item (ELS) and one warehouse (001); modules
    needing other catalog data define their own."""
    sim = GestimumSimulator(SimulatorConfig(items=("ELS",), warehouses=("001",))).start()
    try:
        yield sim
    finally:
        sim.stop()
