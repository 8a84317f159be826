"""The change probe (crm/changes.py) on real PostgreSQL: what it sees, what it leaves to the
schedule, and that it gives way to locks instead of waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import psycopg2.extensions
import pytest

from gestimum_pipeline.crm.changes import ChangeCursor, Changes, ProbeBusy, compare, probe
from gestimum_pipeline.db import connect


@pytest.fixture
def crm(crm_url: str) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(crm_url, "crm fixture")
    yield conn
    conn.close()


def _execute(conn: psycopg2.extensions.connection, statement: str, params: tuple[object, ...] = ()) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, params)
    conn.commit()


def _tick(conn: psycopg2.extensions.connection, cursor: ChangeCursor | None) -> Changes:
    return compare(cursor, probe(conn, "crm", cursor))


def test_first_probe_watches_from_now_and_a_quiet_crm_shows_nothing(crm: psycopg2.extensions.connection) -> None:
    _execute(crm, "INSERT INTO crm.customers (code, name) VALUES ('C1', 'Before')")
    first = _tick(crm, None)
    assert not first.any  # what came before the sensor is the schedule's
    assert first.cursor.tails["customers"][0] == 1  # but the new tail holds it, to compare next time
    quiet = _tick(crm, first.cursor)
    assert not quiet.any and quiet.relations == ()
    again = _tick(crm, ChangeCursor.from_json(quiet.cursor.to_json()))  # the cursor survives JSON
    assert not again.any


@pytest.mark.parametrize(
    "change",
    [
        "INSERT INTO crm.customers (code, name) VALUES ('C2', 'New')",
        # An update that leaves updated_at alone (breaking the contract) still changes the row's version.
        "UPDATE crm.customers SET city = 'Lyon' WHERE code = 'C1'",
        "DELETE FROM crm.customers WHERE code = 'C1'",
        "INSERT INTO crm.stock_movements (direction, warehouse_code, item_code, quantity) VALUES ('in', '001', 'X', 1)",
        "INSERT INTO crm.customer_item_references (customer_code, item_code) VALUES ('C1', 'X')",
    ],
)
def test_each_kind_of_change_is_seen_once(crm: psycopg2.extensions.connection, change: str) -> None:
    _execute(crm, "INSERT INTO crm.customers (code, name) VALUES ('C1', 'Before')")
    cursor = _tick(crm, None).cursor
    _execute(crm, change)
    seen = _tick(crm, cursor)
    relation = change.split("crm.")[1].split()[0]
    assert seen.relations == (relation,)
    assert seen.first is not None and seen.last is not None
    assert seen.cursor.since >= cursor.since
    assert not _tick(crm, seen.cursor).any  # acted on: not reported twice


def test_a_commit_during_the_previous_probe_window_is_seen(crm: psycopg2.extensions.connection, crm_url: str) -> None:
    """A transaction that started before a probe and commits after it: its updated_at (its start)
    is older than the probe, but within the margin, so the next probe sees it."""
    cursor = _tick(crm, None).cursor
    writer = connect(crm_url, "writer")
    try:
        with writer.cursor() as cur:
            cur.execute("INSERT INTO crm.customers (code, name) VALUES ('LATE', 'Late')")
        cursor = _tick(crm, cursor).cursor  # probes while the insert is uncommitted
        writer.commit()
    finally:
        writer.close()
    assert _tick(crm, cursor).relations == ("customers",)


def test_a_row_older_than_the_margin_is_left_to_the_schedule(crm: psycopg2.extensions.connection) -> None:
    cursor = _tick(crm, None).cursor
    _execute(crm, "INSERT INTO crm.customers (code, name, updated_at) VALUES ('OLD', 'Old', now() - interval '1 hour')")
    assert not _tick(crm, cursor).any


def test_a_stale_cursor_reports_the_last_day_without_reading_it(crm: psycopg2.extensions.connection) -> None:
    cursor = _tick(crm, None).cursor
    stale = ChangeCursor(cursor.since - timedelta(days=2), cursor.tails)
    result = probe(crm, "crm", stale)
    assert result.compared_since is None and result.compared == {}
    changes = compare(stale, result)
    assert changes.stale and changes.first is not None and changes.last == result.at
    assert result.at - changes.first == timedelta(days=1)


def test_views_are_probed_by_their_row_text(crm: psycopg2.extensions.connection) -> None:
    _execute(crm, "CREATE SCHEMA erp")
    _execute(crm, "CREATE TABLE erp.clients AS SELECT * FROM crm.customers WITH NO DATA")
    _execute(crm, "CREATE INDEX ON erp.clients (updated_at)")
    _execute(crm, "CREATE SCHEMA v")
    _execute(crm, "CREATE VIEW v.customers AS SELECT * FROM erp.clients")
    for name in ("contacts", "stock_movements", "customer_item_references"):
        _execute(crm, f"CREATE VIEW v.{name} AS SELECT * FROM crm.{name}")
    _execute(crm, "INSERT INTO erp.clients (code, name, updated_at) VALUES ('V1', 'View', now())")
    cursor = compare(None, probe(crm, "v", None)).cursor
    assert compare(cursor, probe(crm, "v", cursor)).relations == ()
    _execute(crm, "UPDATE erp.clients SET city = 'Nantes'")  # updated_at untouched: the row text differs
    assert compare(cursor, probe(crm, "v", cursor)).relations == ("customers",)


def test_the_probe_gives_way_to_a_lock_instead_of_waiting(crm: psycopg2.extensions.connection, crm_url: str) -> None:
    """DDL holding a relation (ACCESS EXCLUSIVE) makes the probe give up at once: it never queues
    behind it (which would queue the CRM's own queries behind the probe)."""
    cursor = _tick(crm, None).cursor
    holder = connect(crm_url, "ddl")
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE crm.contacts IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(ProbeBusy, match="lock"):
            probe(crm, "crm", cursor)
    finally:
        holder.rollback()
        holder.close()
    assert crm.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert not _tick(crm, cursor).any  # the same connection probes again, nothing missed


def test_a_probe_does_not_hold_back_crm_writes(crm: psycopg2.extensions.connection, crm_url: str) -> None:
    """The probe's transaction ends before it returns: a writer's DDL-free writes never wait on it."""
    cursor = _tick(crm, None).cursor
    probe(crm, "crm", cursor)
    assert crm.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    done = threading.Event()

    def write() -> None:
        writer = connect(crm_url, "writer")
        try:
            with writer.cursor() as cur:
                cur.execute("SET lock_timeout = '2s'")
                cur.execute("ALTER TABLE crm.customers ADD COLUMN note text")  # needs ACCESS EXCLUSIVE
            writer.commit()
            done.set()
        finally:
            writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert done.is_set()


def test_bad_arguments_are_refused(crm: psycopg2.extensions.connection) -> None:
    with pytest.raises(ValueError, match="unknown relations"):
        probe(crm, "crm", None, relations=["orders"])
    crm.autocommit = True
    with pytest.raises(ValueError, match="autocommit"):
        probe(crm, "crm", None)
