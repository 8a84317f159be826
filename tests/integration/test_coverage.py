"""Catch-up's safety net (issue 12, finding 4): a check compares the CRM with the state store over
the windows already synced, and counts the rows no window will ever read."""

from __future__ import annotations

from datetime import UTC, datetime

from sync_harness import insert_customers

from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.sync import health
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.engine import Window, stage_endpoint
from gestimum_pipeline.sync.state import StateStore

START = datetime(2026, 3, 1, tzinfo=UTC)
FRIDAY = Window(datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 28, tzinfo=UTC))


def customer(code: str, when: str) -> tuple[object, ...]:
    return (code, f"Customer {code}", None, None, None, None, None, None, when)


def coverage(store: StateStore, crm_url: str) -> health.Finding:
    spec = ENDPOINTS.get("comptes")
    conn = connect(crm_url)
    try:
        mapper = spec.make_mapper(LineFormat().encoder())
        return health.crm_coverage(store, conn, "crm", "comptes", spec.relation, mapper, not_before=START)
    finally:
        conn.close()


def stage_friday(store: StateStore, crm_url: str) -> None:
    """Friday's scheduled run of transform/comptes."""
    spec = ENDPOINTS.get("comptes")
    stage_endpoint(
        crm_connect=lambda: connect(crm_url),
        crm_schema="crm",
        state=store,
        spec=spec,
        mapper=spec.make_mapper(LineFormat().encoder()),
        window=FRIDAY,
        partition="2026-03-27",
        run_id="r1",
    )


def test_rows_committed_into_a_synced_window_afterwards_fail_the_check(crm_url: str) -> None:
    insert_customers(crm_url, [customer("C1", "2026-03-27 10:00+00")])
    with StateStore(crm_url) as store:
        store.migrate()  # the test template has one already; idempotent
        stage_friday(store, crm_url)
        assert coverage(store, crm_url).passed
        # Committed after Friday's run, with a change time inside Friday (a long transaction,
        # a clock behind): no later scheduled run reads Friday again.
        insert_customers(
            crm_url,
            [customer("C2", "2026-03-27 20:00+00"), customer("OLD", "2026-02-01 00:00+00")],
        )
        finding = coverage(store, crm_url)
    assert not finding.passed
    assert finding.counts == {
        "crm_rows_checked": 2,
        "crm_rows_unchanged_since_last_check": 0,
        "missing_from_state_store": 1,
        "changed_since_staged": 0,
        "on_days_never_synced": 0,
        "before_start_date": 1,
    }
    assert "C2" in finding.summary and [r["source_key"] for r in finding.rows] == ["C2"]
    assert "1 customers rows changed before GESTIMUM_SYNC_START_DATE (2026-03-01)" in finding.summary


def test_a_window_unchanged_since_a_complete_check_is_not_read_again(crm_url: str) -> None:
    """Each run's check reads key by key only the windows whose row versions changed since the
    last complete check: an hourly run over years of history does not stream every key."""
    insert_customers(crm_url, [customer("C1", "2026-03-27 10:00+00"), customer("C2", "2026-03-27 11:00+00")])
    with StateStore(crm_url) as store:
        store.migrate()
        stage_friday(store, crm_url)
        # The transform staged every row of the window under its signature: that proves it.
        first = coverage(store, crm_url)
        assert first.passed
        assert (first.counts["crm_rows_checked"], first.counts["crm_rows_unchanged_since_last_check"]) == (0, 2)
        # A row edited since: the window is read again and the edit, never staged, fails the check
        # (issue 18, point 2: versions, not only keys) until the window is staged again; then the
        # check's own pass proves it.
        crm = connect(crm_url)
        try:
            with crm, crm.cursor() as cur:
                cur.execute(
                    "UPDATE crm.customers SET name = 'Renamed', updated_at = '2026-03-27 10:30+00' WHERE code = 'C1'"
                )
        finally:
            crm.close()
        edited = coverage(store, crm_url)
        assert not edited.passed and edited.counts["crm_rows_checked"] == 2
        assert [r["source_key"] for r in edited.rows] == ["C1"]
        assert not coverage(store, crm_url).passed  # the evidence is not erased by the first pass
        stage_friday(store, crm_url)
        assert coverage(store, crm_url).passed
        again = coverage(store, crm_url)
        assert again.passed
        assert (again.counts["crm_rows_checked"], again.counts["crm_rows_unchanged_since_last_check"]) == (0, 2)
        # Records removed from the store: the signatures are forgotten and every key is read.
        with store.conn, store.conn.cursor() as cur:
            cur.execute("DELETE FROM gestimum_sync.records WHERE source_key = 'C2'")
        after_delete = coverage(store, crm_url)
    assert not after_delete.passed
    assert after_delete.counts["crm_rows_checked"] == 2
    assert [r["source_key"] for r in after_delete.rows] == ["C2"]
