"""Staging writes only what changed: a re-read window's unchanged rows are not even locked."""

from __future__ import annotations

from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum.encoding import LineEncoder
from gestimum_pipeline.sync.mapping import MappedRow, clients_mapper, documents_stock_mapper
from gestimum_pipeline.sync.state import Outcome, StateStore

ENC = LineEncoder()


def client(code: str, name: str) -> MappedRow:
    return clients_mapper(ENC).map((code, name, None, None, None, None, None, None, None))


def row_versions(url: str, endpoint: str) -> dict[str, tuple[str, str]]:
    """{source key: (xmin, xmax)}: a new row version changes xmin, a row lock sets xmax."""
    conn = connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT source_key, xmin::text, xmax::text FROM gestimum_sync.records WHERE endpoint = %s",
                (endpoint,),
            )
            return {k: (xmin, xmax) for k, xmin, xmax in cur.fetchall()}
    finally:
        conn.close()


def test_a_rerun_leaves_unchanged_rows_untouched_and_rewrites_only_changed_ones(database_url: str) -> None:
    rows = [client(f"C{i}", f"Name {i}") for i in range(20)]
    with StateStore(database_url) as first:
        first.migrate()
        assert first.stage("clients", rows, partition="p", run_id="r1").staged == 20
        with first.company_lock("TEST.Gestimum"):
            first.mark_in_flight("clients", [r.source_key for r in rows], request_id="q1", run_id="r1")
            first.record_outcomes("clients", [Outcome(r.source_key, True) for r in rows])
    before = row_versions(database_url, "clients")
    edited = [client("C3", "Renamed"), *(r for r in rows if r.source_key != "C3")]
    # A new store, as each run's step opens one: the window is read again with one row edited.
    with StateStore(database_url) as rerun:
        counts = rerun.stage("clients", edited, partition="p", run_id="r2")
        assert (counts.staged, counts.unchanged, counts.skipped) == (1, 19, 0)
        assert rerun.counts("clients")["clients"] == {"imported": 19, "pending": 1}
    after = row_versions(database_url, "clients")
    assert after["C3"][0] != before["C3"][0]  # the changed row: one new version
    assert {k: v for k, v in after.items() if k != "C3"} == {k: v for k, v in before.items() if k != "C3"}


def test_stock_movements_already_imported_are_not_locked_by_a_rerun(database_url: str) -> None:
    mapper = documents_stock_mapper(ENC)
    rows = [mapper.map((i, "in", "001", f"ART{i}", 5, None)) for i in range(1, 6)]
    with StateStore(database_url) as first:
        first.migrate()
        first.stage("documents_stock", rows, partition="p", run_id="r1")
        with first.company_lock("TEST.Gestimum"):
            first.mark_in_flight("documents_stock", [r.source_key for r in rows], request_id="q1", run_id="r1")
            first.record_outcomes("documents_stock", [Outcome(r.source_key, True, document="D1") for r in rows])
    before = row_versions(database_url, "documents_stock")
    changed = [mapper.map((1, "in", "001", "ART1", 7, None)), *rows[1:]]
    with StateStore(database_url) as rerun:
        counts = rerun.stage("documents_stock", changed, partition="p", run_id="r2")
        # The changed movement is refused (already imported): noted aside, never re-sent.
        assert (counts.staged, counts.unchanged, counts.skipped) == (0, 4, 1)
    after = row_versions(database_url, "documents_stock")
    key = rows[0].source_key
    assert after[key][0] != before[key][0]  # its divergence was noted (stage_stock_diverged)
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}
