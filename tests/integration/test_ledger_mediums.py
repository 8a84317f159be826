"""Issue 18, the mediums and the owner's port, on one real state store, through public names:
`StateStore`'s public methods, the mappers of the endpoint registry, the operator's actions.

The stage/in-flight race holds a row lock on `records` from the test (a PostgreSQL-level
pause, the only way to make the interleaving happen every time); nothing private is called.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sync_harness import query_rows

from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.sync import operator
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.mapping import MappedRow
from gestimum_pipeline.sync.state import StateStore, StateStoreOwnerMismatch

STOCK = "documents_stock"
WHEN = "2026-03-27 10:00+00"


def mapped(endpoint: str, row: tuple[Any, ...]) -> MappedRow:
    return ENDPOINTS.get(endpoint).make_mapper(LineFormat().encoder()).map(row)


def movement(movement_id: int, quantity: int) -> MappedRow:
    return mapped(STOCK, (movement_id, "in", "001", "ELS", quantity, WHEN))


def customer(code: str) -> MappedRow:
    return mapped("clients", (code, f"Customer {code}", None, None, None, None, None, None, WHEN))


def record(store: StateStore, endpoint: str, key: str) -> dict[str, Any]:
    (found,) = store.records(endpoint=endpoint, keys=[key])
    return found


@pytest.fixture
def store(crm_url: str) -> Iterator[StateStore]:
    with StateStore(crm_url) as s:
        s.migrate()
        yield s


def test_a_staging_never_overwrites_a_row_already_in_flight(crm_url: str, store: StateStore) -> None:
    """Medium 1: the staging's snapshot predates the marking; it must still not replace the line
    in flight (the new version waits behind it), or `reconcile --delivered` would record a
    version Gestimum does not hold."""
    store.stage(STOCK, [movement(1, 5)], partition="p", run_id="r1")
    sent_line = record(store, STOCK, "1")["line"]
    locker = connect(crm_url)
    staged: list[BaseException | None] = []

    def stage_new_version() -> None:
        try:
            with StateStore(crm_url) as other:
                other.stage(STOCK, [movement(1, 7)], partition="p", run_id="r2")
            staged.append(None)
        except BaseException as exc:  # reported below
            staged.append(exc)

    try:
        with locker.cursor() as cur:  # a pause: the staging's statement waits for this row
            cur.execute(
                "SELECT 1 FROM gestimum_sync.records WHERE endpoint = %s AND source_key = '1' FOR UPDATE", (STOCK,)
            )
        thread = threading.Thread(target=stage_new_version)
        thread.start()
        deadline = time.monotonic() + 30
        waiting = "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        while not query_rows(crm_url, waiting):
            assert time.monotonic() < deadline, "the staging never waited"
            time.sleep(0.02)
        with store.company_lock("DEMO.Gestimum"):
            assert store.mark_in_flight(STOCK, ["1"], request_id="q1", run_id="r1") == ["1"]
    finally:
        locker.rollback()
        locker.close()
    thread.join(30)
    assert staged == [None]
    assert record(store, STOCK, "1")["line"] == sent_line, "the line in flight was replaced"


def test_a_movement_withdrawn_then_restored_unchanged_is_pending_again(store: StateStore) -> None:
    """Medium 2: absent at send time (withdrawn, `ignored`), then restored as it was: the next
    staging of its window must reopen it, not leave it ignored for ever."""
    store.stage(STOCK, [movement(2, 6)], partition="p", run_id="r1")
    assert store.withdraw(STOCK, ["2"], reason="deleted in the CRM before it was sent") == ["2"]
    store.stage(STOCK, [movement(2, 6)], partition="p", run_id="r2")
    assert record(store, STOCK, "2")["status"] == "pending"


def test_an_operators_ignore_survives_an_unchanged_restaging(store: StateStore) -> None:
    """The other side of medium 2: an operator's `ignore` stays until the CRM row changes."""
    store.stage(STOCK, [movement(3, 6)], partition="p", run_id="r1")
    operator.ignore(store, ENDPOINTS, STOCK, ["3"], actor="alice", note="counted twice")
    store.stage(STOCK, [movement(3, 6)], partition="p", run_id="r2")
    assert record(store, STOCK, "3")["status"] == "ignored"


@pytest.mark.parametrize("partner_status", ["rejected", "ignored"])
def test_a_case_collision_counts_partners_rejected_or_ignored(store: StateStore, partner_status: str) -> None:
    """Medium 3b: `ACME` rejected or ignored today may be fixed or re-queued tomorrow, and then
    overwrite `acme` in Gestimum: `acme` is refused whatever its partner's status."""
    if partner_status == "rejected":
        store.stage(
            "clients",
            [mapped("clients", ("ACME", "", None, None, None, None, None, None, WHEN))],
            partition="p",
            run_id="r",
        )
    else:
        store.stage("clients", [customer("ACME")], partition="p", run_id="r")
        operator.ignore(store, ENDPOINTS, "clients", ["ACME"], actor="alice")
    assert record(store, "clients", "ACME")["status"] == partner_status
    store.stage("clients", [customer("acme")], partition="p", run_id="r")
    refused = {c.key: c.reason for c in store.reject_case_collisions("clients", "PCF_CODE")}
    assert "acme" in refused, refused
    assert record(store, "clients", "acme")["status"] == "rejected"


def test_composite_keys_are_compared_per_component(store: StateStore) -> None:
    """Medium 4: `["C1 ", "A10"]` and `["C1", "A10"]` are one reference for SQL Server (trailing
    spaces ignored in each code); trimming after the JSON's closing `]` never saw it."""
    refs = [mapped("references_clients_articles", (c, "A10", "REF", "1", WHEN)) for c in ("C1", "C1 ")]
    store.stage("references_clients_articles", refs, partition="p", run_id="r")
    refused = {c.key: c.reason for c in store.reject_case_collisions("references_clients_articles", "ART_CODE")}
    assert set(refused) == {r.source_key for r in refs}, refused


def test_the_owner_includes_the_port(database_url: str) -> None:
    """Low: a test Gestimum on the production host (another port) is another owner."""
    with StateStore(database_url) as store:
        store.init("https://erp.example.com:8443/", "PROD.Gestimum", actor="test")
        store.check_owner("https://erp.example.com:8443/", "PROD.Gestimum", claim=False)
        with pytest.raises(StateStoreOwnerMismatch, match="9443"):
            store.check_owner("https://erp.example.com:9443/", "PROD.Gestimum", claim=False)
