"""Stock edits and deletions (issue 12, finding 8): a movement edited after it was sent is reported
(never re-sent), one deleted before it was sent is withdrawn, and the rejection advice fits stock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sync_harness import execute, insert_movements

from gestimum_pipeline.crm.queries import existing_keys
from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings, LineFormat
from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync import health
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.engine import SendReport, Window, send_endpoint, stage_endpoint
from gestimum_pipeline.sync.state import Outcome, StateStore

DAY = Window(datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 28, tzinfo=UTC))
WHEN = "2026-03-27 10:00+00"
STOCK = ENDPOINTS.get("documents_stock")


@pytest.fixture
def store(crm_url: str) -> Iterator[StateStore]:
    with StateStore(crm_url) as s:
        yield s


def stage(crm_url: str, store: StateStore) -> None:
    stage_endpoint(
        crm_connect=lambda: connect(crm_url),
        crm_schema="crm",
        state=store,
        spec=STOCK,
        mapper=STOCK.make_mapper(LineFormat().encoder()),
        window=DAY,
        partition="2026-03-27",
        run_id="r",
    )


def send(crm_url: str, store: StateStore, simulator: GestimumSimulator) -> SendReport:
    conn = connect(crm_url)
    conn.autocommit = True
    try:
        with GestimumClient(simulator.url, CompanySettings("DEMO.Gestimum", "DEMO", "")) as client:
            return send_endpoint(
                state=store,
                client=client,
                endpoint=catalog.DOCUMENTS_STOCK,
                company_file="DEMO.Gestimum",
                max_lines=100,
                max_bytes=1_000_000,
                source_exists=lambda keys: existing_keys(conn, "crm", "stock_movements", keys),
            )
    finally:
        conn.close()


def test_a_movement_edited_after_it_was_sent_is_reported_never_re_sent(
    crm_url: str, store: StateStore, simulator: GestimumSimulator
) -> None:
    insert_movements(crm_url, [(1, "in", "001", "ELS", 5, WHEN), (2, "in", "001", "ELS", 6, WHEN)])
    stage(crm_url, store)
    assert send(crm_url, store, simulator).lines_sent == 2
    assert health.stock_diverged(store, "documents_stock").passed
    execute(crm_url, [("UPDATE crm.stock_movements SET quantity = 50 WHERE id = 1", ())])
    stage(crm_url, store)
    assert send(crm_url, store, simulator).lines_sent == 0  # never re-sent
    finding = health.stock_diverged(store, "documents_stock")
    assert not finding.passed and finding.counts == {"diverged": 1}
    assert "1 (imported, " in finding.summary and "never re-sent" in finding.summary
    # Restoring the CRM row clears the report.
    execute(crm_url, [("UPDATE crm.stock_movements SET quantity = 5 WHERE id = 1", ())])
    stage(crm_url, store)
    assert health.stock_diverged(store, "documents_stock").passed


def test_a_movement_deleted_in_the_crm_before_it_was_sent_is_withdrawn(
    crm_url: str, store: StateStore, simulator: GestimumSimulator
) -> None:
    insert_movements(crm_url, [(1, "in", "001", "ELS", 5, WHEN), (2, "in", "001", "ELS", 6, WHEN)])
    stage(crm_url, store)
    execute(crm_url, [("DELETE FROM crm.stock_movements WHERE id = 2", ())])
    report = send(crm_url, store, simulator)
    assert (report.lines_sent, report.withdrawn) == (1, 1)
    withdrawn = {r["source_key"]: r for r in store.records(endpoint="documents_stock")}["2"]
    assert withdrawn["status"] == "ignored" and "deleted in the CRM before it was sent" in withdrawn["reason"]


def test_the_rejection_advice_for_stock_says_retry(store: StateStore) -> None:
    mapper = STOCK.make_mapper(LineFormat().encoder())
    store.stage("documents_stock", [mapper.map((7, "in", "001", "NOPE", 5, None))], partition="p", run_id="r")
    with store.company_lock("DEMO.Gestimum"):
        store.mark_in_flight("documents_stock", ["7"], request_id="q", run_id="r")
        store.record_outcomes("documents_stock", [Outcome("7", False, reason="Article inexistant")])
    summary = health.rejections(store, "documents_stock").summary
    assert "gestimum-pipeline retry --endpoint documents_stock" in summary
    assert "next run re-sends changed rows" not in summary
