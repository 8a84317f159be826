"""Issue 18, point 1 at the store: versions are ordered by the CRM snapshot they were read in.

The whole scenario (a backfill's transform beside the hourly run, through the job) is
tests/e2e/test_versions.py; here each rule on one real state store, through public names.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg2.extensions
import pytest

from gestimum_pipeline.crm.queries import snapshot_version
from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.mapping import MappedRow
from gestimum_pipeline.sync.state import LATEST_VERSION, MIGRATIONS, Outcome, StateStore
from gestimum_pipeline.sync.state.sqlfiles import rendered_migration

WHEN = "2026-03-27 10:00+00"
OLD, NEW = Decimal(1000), Decimal(2000)


def mapped(endpoint: str, row: tuple[Any, ...]) -> MappedRow:
    return ENDPOINTS.get(endpoint).make_mapper(LineFormat().encoder()).map(row)


def customer(code: str, name: str) -> MappedRow:
    return mapped("clients", (code, name, None, None, None, None, None, None, WHEN))


def movement(movement_id: int, quantity: int) -> MappedRow:
    return mapped("documents_stock", (movement_id, "in", "001", "ELS", quantity, WHEN))


def line_of(store: StateStore, endpoint: str, key: str) -> str:
    (found,) = store.records(endpoint=endpoint, keys=[key])
    return found["line"]


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    with StateStore(database_url) as s:
        s.migrate()
        yield s


def test_an_older_snapshot_never_replaces_a_newer_master_version(store: StateStore) -> None:
    new, old = customer("C1", "New name"), customer("C1", "Old name")
    assert store.stage("clients", [new], partition="p", run_id="hourly", source_version=NEW).staged == 1
    with store.company_lock("X"):
        store.mark_in_flight("clients", ["C1"], request_id="q", run_id="hourly")
        store.record_outcomes("clients", [Outcome("C1", True)], request_id="q")
    # The backfill's transform read before the rename and commits after: refused, and counted as
    # skipped, so its window's signature is not recorded (the next run reads the window again).
    counts = store.stage("clients", [old], partition="p", run_id="backfill", source_version=OLD)
    assert (counts.staged, counts.skipped) == (0, 1)
    assert line_of(store, "clients", "C1") == new.line
    assert store.records(endpoint="clients", keys=["C1"])[0]["status"] == "imported"
    # A newer read goes through, whatever its content.
    assert store.stage("clients", [old], partition="p", run_id="later", source_version=NEW + 1).staged == 1


def test_an_older_snapshot_never_replaces_a_pending_stock_version(store: StateStore) -> None:
    assert store.stage("documents_stock", [movement(1, 7)], partition="p", run_id="r2", source_version=NEW).staged
    counts = store.stage("documents_stock", [movement(1, 5)], partition="p", run_id="r1", source_version=OLD)
    assert (counts.staged, counts.skipped) == (0, 1)
    assert line_of(store, "documents_stock", "1") == movement(1, 7).line


def test_an_older_read_of_a_sent_movement_is_not_a_divergence(store: StateStore) -> None:
    store.stage("documents_stock", [movement(2, 7)], partition="p", run_id="r2", source_version=NEW)
    with store.company_lock("X"):
        store.mark_in_flight("documents_stock", ["2"], request_id="q", run_id="r2")
        store.record_outcomes("documents_stock", [Outcome("2", True, document="D1")], request_id="q")
    store.stage("documents_stock", [movement(2, 5)], partition="p", run_id="r1", source_version=OLD)
    assert store.diverged("documents_stock", limit=10) == (0, [])
    # A newer read that differs is one.
    store.stage("documents_stock", [movement(2, 9)], partition="p", run_id="r3", source_version=NEW + 1)
    assert store.diverged("documents_stock", limit=10)[0] == 1


def test_the_newer_snapshots_window_signature_stays_whichever_commits_last(store: StateStore) -> None:
    start, end = datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 28, tzinfo=UTC)
    newer, older = (3, Decimal(42)), (3, Decimal(41))
    store.record_window_signature("clients", "m", start, end, newer, run_id="hourly", source_version=NEW)
    store.record_window_signature("clients", "m", start, end, older, run_id="backfill", source_version=OLD)
    assert store.window_signature("clients", "m", start, end) == newer


def test_a_later_snapshot_has_a_larger_version(database_url: str) -> None:
    """crm.queries.snapshot_version: a snapshot taken after a commit orders after one taken before."""
    first, second = connect(database_url), connect(database_url)
    writer = connect(database_url, autocommit=True)
    try:
        for conn in (first, second):
            conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
        before = snapshot_version(first)
        with writer.cursor() as cur:
            cur.execute("CREATE TEMP TABLE t (x int)")
            cur.execute("INSERT INTO t VALUES (1)")  # a transaction that completes
        after = snapshot_version(second)
        assert after > before
        assert snapshot_version(first) == before  # the transaction's snapshot: fixed
    finally:
        for conn in (first, second, writer):
            conn.close()


def test_a_store_created_at_version_7_opens_and_upgrades(database_url: str) -> None:
    """A store made by the code before the package (migrations 1..7) upgrades in place, rows kept."""
    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA gestimum_sync")
            cur.execute(
                "CREATE TABLE gestimum_sync.schema_migrations (version integer PRIMARY KEY,"
                " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in MIGRATIONS[:7]:
                cur.execute(rendered_migration(migration, "gestimum_sync"))
                cur.execute(
                    "INSERT INTO gestimum_sync.schema_migrations VALUES (%s, %s)",
                    (migration.version, migration.description),
                )
            cur.execute(
                "INSERT INTO gestimum_sync.records (endpoint, source_key, status, line, content_hash)"
                " VALUES ('clients', 'C1', 'imported', 'old line', 'h1')"
            )
    finally:
        conn.close()
    with StateStore(database_url) as store:
        assert store.exists()
        assert store.open_existing() == LATEST_VERSION > 7
        assert store.counts() == {"clients": {"imported": 1}}
        # An unversioned row takes any version, then the order holds.
        assert store.stage("clients", [customer("C1", "New")], partition="p", run_id="r", source_version=OLD).staged
        older = store.stage("clients", [customer("C1", "Old")], partition="p", run_id="r", source_version=OLD - 1)
        assert older.skipped == 1


def test_reconcile_delivered_records_the_hash_of_the_line_sent(store: StateStore) -> None:
    """Even in a store where a newer version reached a movement in flight (written by the code
    before the staging re-checked open requests), `reconcile --delivered` records what was sent."""
    store.stage("documents_stock", [movement(3, 5)], partition="p", run_id="r1", source_version=OLD)
    with store.company_lock("X"):
        store.mark_in_flight("documents_stock", ["3"], request_id="q", run_id="r1")
    newer = movement(3, 7)
    with store.conn, store.conn.cursor() as cur:  # the version the old code let through
        cur.execute(
            "UPDATE gestimum_sync.records SET line = %s, content_hash = %s WHERE source_key = '3'",
            (newer.line, newer.content_hash),
        )
    store.settle_in_flight("documents_stock", ["3"], delivered=None, reason="timeout", request_id="q")
    store.apply_action(
        "reconcile-delivered",
        "documents_stock",
        ["3"],
        actor="alice",
        from_statuses=["delivery_unknown"],
        to_status="imported",
        document="D9",
    )
    with store.conn, store.conn.cursor() as cur:
        cur.execute("SELECT imported_hash FROM gestimum_sync.records WHERE source_key = '3'")
        assert cur.fetchone()[0] == movement(3, 5).content_hash
