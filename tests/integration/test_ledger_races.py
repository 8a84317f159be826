"""The ledger under races: a writer whose lock session dies, edits while a row is in flight,
re-stagings and operator actions between the sink's read and its POST (issue 12, findings 1-3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.encoding import LineEncoder
from gestimum_pipeline.gestimum.envelope import CompanySettings
from gestimum_pipeline.gestimum.journal import ImportResult
from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync.engine import SyncError, send_endpoint
from gestimum_pipeline.sync.mapping import MappedRow, comptes_mapper, documents_stock_mapper
from gestimum_pipeline.sync.state import StateStore

ENC = LineEncoder()
COMPANY = CompanySettings("DEMO.Gestimum", "DEMO", "")


class HookedClient:
    """A real client on the simulator that logs every line posted and runs `before_answer`
    once, while the first request's rows are in flight (between marking and the answer)."""

    def __init__(self, url: str, posted: list[str], before_answer: Callable[[], None] | None = None) -> None:
        self._client = GestimumClient(url, COMPANY, backoff_seconds=0.01, max_retries=1)
        self._posted = posted
        self._hook = before_answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def import_lines(self, endpoint: catalog.Endpoint, lines: Sequence[str], **kwargs: Any) -> ImportResult:
        self._posted.extend(lines)
        result = self._client.import_lines(endpoint, lines, **kwargs)
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return result


def row_of(store: StateStore, key: str) -> tuple[Any, ...]:
    with connect(store.url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, imported_hash FROM gestimum_sync.records WHERE endpoint = 'comptes' AND source_key = %s",
            (key,),
        )
        return cur.fetchone()


def send(store: StateStore, client: Any, endpoint: catalog.Endpoint, *, max_lines: int = 1) -> Any:
    return send_endpoint(
        state=store,
        client=client,
        endpoint=endpoint,
        company_file=COMPANY.company_file,
        max_lines=max_lines,
        max_bytes=1_000_000,
        run_id="run",
        lock_timeout_seconds=10,
    )


def movement(movement_id: int, quantity: int) -> MappedRow:
    return documents_stock_mapper(ENC).map((movement_id, "in", "001", "ELS", quantity, None))


def customer(code: str, name: str) -> MappedRow:
    """A customer's account (comptes: no parent, so the simulator imports it alone)."""
    return comptes_mapper(ENC).map((code, name))


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[StateStore, StateStore]]:
    a, b = StateStore(database_url), StateStore(database_url)
    a.migrate()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_sink_whose_lock_session_was_dropped_sends_nothing_twice(
    stores: tuple[StateStore, StateStore], simulator: GestimumSimulator, database_url: str
) -> None:
    """Finding 1: the lock's session is terminated (a firewall, pg_terminate_backend) while sink A
    waits for an answer; sink B takes over and sends the rest. A must stop before its next POST."""
    a, b = stores
    a.stage("documents_stock", [movement(i, 10 + i) for i in range(1, 7)], partition="p", run_id="r")
    posted: list[str] = []
    b_report: list[Any] = []

    def drop_lock_then_run_b() -> None:
        with connect(database_url) as admin, admin.cursor() as cur:
            admin.autocommit = True
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert cur.rowcount == 1
        b_report.append(send(b, HookedClient(simulator.url, posted), catalog.DOCUMENTS_STOCK))

    failure: SyncError | None = None
    try:
        send(a, HookedClient(simulator.url, posted, drop_lock_then_run_b), catalog.DOCUMENTS_STOCK)
    except SyncError as exc:
        failure = exc
    assert len(posted) == len(set(posted)) == 6, posted  # every movement posted once, none twice
    records = {r["source_key"]: r for r in a.records(endpoint="documents_stock")}
    # A's answered request is recorded even though B had declared it delivery_unknown meanwhile.
    assert {k: r["status"] for k, r in records.items()} == {str(i): "imported" for i in range(1, 7)}
    assert b_report[0].lines_sent == 5
    assert failure is not None and "another writer" in str(failure)  # A stopped, saying why


def test_a_crm_edit_staged_while_its_row_is_in_flight_is_queued_not_lost(
    stores: tuple[StateStore, StateStore], simulator: GestimumSimulator
) -> None:
    """Finding 2: the edit arrives between the POST and its answer: the outcome is recorded for
    the line sent, and the edit is pending, sent by the next run."""
    a, transform = stores
    old, new = customer("C1", "Old name"), customer("C1", "New name")
    a.stage("comptes", [old], partition="p", run_id="r1")
    posted: list[str] = []

    def edit() -> None:
        assert transform.stage("comptes", [new], partition="p", run_id="r2").staged == 1

    send(a, HookedClient(simulator.url, posted, edit), catalog.COMPTES)
    assert row_of(a, "C1") == ("pending", old.content_hash)  # the line sent is imported; the edit is queued
    assert [p.line for p in a.iter_pending("comptes")] == [new.line]
    send(a, HookedClient(simulator.url, posted), catalog.COMPTES)
    assert posted == [old.line, new.line]
    assert row_of(a, "C1") == ("imported", new.content_hash)


def test_a_line_re_staged_after_the_sink_read_it_is_never_sent_stale(
    stores: tuple[StateStore, StateStore], simulator: GestimumSimulator
) -> None:
    """Finding 3: another run re-stages C2 after the sink's cursor read it: the stale line is
    not sent (nor recorded as the new one); the new line is sent in the same run."""
    a, transform = stores
    c2_old, c2_new = customer("C2", "Old"), customer("C2", "New")
    a.stage("comptes", [customer("C1", "One"), c2_old], partition="p", run_id="r1")
    posted: list[str] = []

    def restage() -> None:
        transform.stage("comptes", [c2_new], partition="p", run_id="r2")

    report = send(a, HookedClient(simulator.url, posted, restage), catalog.COMPTES)
    assert c2_old.line not in posted and c2_new.line in posted
    assert report.lines_sent == 2
    assert row_of(a, "C2") == ("imported", c2_new.content_hash)


def test_an_operator_ignore_between_read_and_send_wins(
    stores: tuple[StateStore, StateStore], simulator: GestimumSimulator
) -> None:
    """Finding 3: `ignore` applied after the sink read the row: the row is not sent."""
    a, operator = stores
    a.stage("comptes", [customer("C1", "One"), customer("C2", "Two")], partition="p", run_id="r1")
    posted: list[str] = []

    def ignore() -> None:
        operator.apply_action(
            "ignore", "comptes", ["C2"], actor="alice", from_statuses=["pending"], to_status="ignored"
        )

    send(a, HookedClient(simulator.url, posted, ignore), catalog.COMPTES)
    assert posted == [customer("C1", "One").line]
    assert {r["source_key"]: r["status"] for r in a.records(endpoint="comptes")} == {
        "C1": "imported",
        "C2": "ignored",
    }


def test_an_operator_action_waits_for_a_marking_in_progress_and_then_refuses_its_rows(database_url: str) -> None:
    """The in-flight marker writes no record, so an operator's action cannot rely on a row
    lock: it waits for the marking transaction (the lease row) and then sees its request."""
    import threading

    with StateStore(database_url) as setup:
        setup.migrate()
        setup.stage("comptes", [customer("C1", "A")], partition="p", run_id="r")
        with setup.company_lock("RACE.Gestimum"):
            pass  # creates the lease row
    marking = connect(database_url)
    done: list[list[str]] = []
    try:
        with marking.cursor() as cur:  # a marker between its lease check and its commit
            cur.execute("SELECT 1 FROM gestimum_sync.leases FOR SHARE")
            cur.execute(
                "INSERT INTO gestimum_sync.requests (request_id, endpoint, state, lines, keys, hashes)"
                " VALUES ('q', 'comptes', 'in_flight', 1, '{C1}', '{h}')"
            )
        operator = StateStore(database_url)

        def act() -> None:
            done.append(
                operator.apply_action(
                    "ignore", "comptes", ["C1"], actor="ops", from_statuses=["pending"], to_status="ignored"
                )
            )

        thread = threading.Thread(target=act)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and not done  # waiting for the marking transaction
        marking.commit()
        thread.join(10)
        operator.close()
    finally:
        marking.close()
    assert done == [[]]  # the row is in flight: the action refused it
