"""The sync state store on a real PostgreSQL: migrations, staging rules, holds and releases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gestimum_pipeline.gestimum.encoding import LineEncoder
from gestimum_pipeline.sync.mapping import MappedRow, clients_mapper, contacts_mapper, documents_stock_mapper
from gestimum_pipeline.sync.state import LATEST_VERSION, Outcome, StateStore

ENC = LineEncoder()


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    """A store holding the company file's lease, as a sink does: rows are marked only by a fenced writer."""
    s = StateStore(database_url)
    s.migrate()
    try:
        with s.company_lock("TEST.Gestimum"):
            yield s
    finally:
        s.close()


def statuses(store: StateStore, endpoint: str) -> dict[str, str]:
    return {r["source_key"]: r["status"] for r in store.records(endpoint=endpoint)}


def client(code: str, name: str) -> MappedRow:
    return clients_mapper(ENC).map((code, name, None, None, None, None, None, None, None))


def test_migrate_is_idempotent(database_url: str) -> None:
    with StateStore(database_url) as a, StateStore(database_url) as b:
        assert a.migrate() == b.migrate() == a.migrate() == LATEST_VERSION
        assert a.counts() == {}


def test_unchanged_rows_are_left_alone_and_changes_re_staged(store: StateStore) -> None:
    first = store.stage("clients", [client("C1", "A"), client("C2", "B")], partition="p", run_id="r1")
    assert (first.staged, first.rejected, first.unchanged) == (2, 0, 0)
    store.mark_in_flight("clients", ["C1", "C2"], request_id="q1", run_id="r1")
    store.record_outcomes("clients", [Outcome("C1", True), Outcome("C2", False, reason="Code manquant")])
    again = store.stage("clients", [client("C1", "A"), client("C2", "B")], partition="p", run_id="r2")
    assert (again.staged, again.unchanged) == (0, 2)
    assert statuses(store, "clients") == {"C1": "imported", "C2": "rejected"}
    changed = store.stage("clients", [client("C1", "A2"), client("C2", "B")], partition="p", run_id="r3")
    assert (changed.staged, changed.unchanged) == (1, 1)
    forced = store.stage("clients", [client("C2", "B")], partition="p", run_id="r4", force=True)
    assert forced.staged == 1
    assert statuses(store, "clients") == {"C1": "pending", "C2": "pending"}


def test_stock_movements_are_never_re_staged_once_known(store: StateStore) -> None:
    mapper = documents_stock_mapper(ENC)
    row = mapper.map((1, "in", "001", "ELS", 5, None))
    store.stage("documents_stock", [row], partition="p", run_id="r1")
    store.mark_in_flight("documents_stock", ["1"], request_id="q", run_id="r1")
    store.record_outcomes("documents_stock", [Outcome("1", True, document="ENT26-00001")])
    changed = mapper.map((1, "in", "001", "ELS", 6, None))
    counts = store.stage("documents_stock", [changed], partition="p", run_id="r2", force=True)
    assert counts.staged == 0
    record = store.records(endpoint="documents_stock")[0]
    assert (record["status"], record["document"]) == ("imported", "ENT26-00001")


def test_in_flight_leftovers_recover_differently_for_stock_and_master_data(store: StateStore) -> None:
    store.stage("clients", [client("C1", "A")], partition="p", run_id="r")
    store.stage(
        "documents_stock",
        [documents_stock_mapper(ENC).map((1, "in", "001", "ELS", 5, None))],
        partition="p",
        run_id="r",
    )
    store.mark_in_flight("clients", ["C1"], request_id="q1", run_id="r")
    store.mark_in_flight("documents_stock", ["1"], request_id="q2", run_id="r")
    assert store.recover_in_flight("clients") == 1
    assert store.recover_in_flight("documents_stock") == 1
    assert statuses(store, "clients") == {"C1": "pending"}
    stock = store.records(endpoint="documents_stock")[0]
    assert stock["status"] == "delivery_unknown" and "q2" in stock["reason"]


def test_children_of_rejected_parents_are_held_then_released(store: StateStore) -> None:
    store.stage("clients", [client("C1", "A")], partition="p", run_id="r")
    store.mark_in_flight("clients", ["C1"], request_id="q", run_id="r")
    store.record_outcomes("clients", [Outcome("C1", False, reason="Compte inexistant")])
    contact = contacts_mapper(ENC).map(("K1", "C1", "Dupont", None, None, None, None))
    store.stage("contacts", [contact], partition="p", run_id="r")
    assert store.hold_orphans("contacts") == 1
    held = store.records(endpoint="contacts")[0]
    assert held["status"] == "held" and "C1" in held["reason"] and "Compte inexistant" in held["reason"]
    assert list(store.iter_pending("contacts")) == []
    # The parent imports later: the child is released with its line intact.
    store.stage("clients", [client("C1", "A fixed")], partition="p", run_id="r2")
    store.mark_in_flight("clients", ["C1"], request_id="q2", run_id="r2")
    store.record_outcomes("clients", [Outcome("C1", True)])
    assert store.release_children("contacts") == 1
    assert [p.line for p in store.iter_pending("contacts")] == [contact.line]


def test_operator_actions_are_recorded(store: StateStore) -> None:
    store.stage(
        "documents_stock",
        [documents_stock_mapper(ENC).map((9, "in", "001", "ELS", 5, None))],
        partition="p",
        run_id="r",
    )
    store.mark_in_flight("documents_stock", ["9"], request_id="q", run_id="r")
    store.settle_in_flight("documents_stock", ["9"], delivered=None, reason="timeout")
    changed = store.apply_action(
        "reconcile-delivered",
        "documents_stock",
        ["9", "10"],
        actor="alice",
        from_statuses=["delivery_unknown"],
        to_status="imported",
        document="ENT26-00042",
    )
    assert changed == ["9"]
    record = store.records(endpoint="documents_stock")[0]
    assert (record["status"], record["document"]) == ("imported", "ENT26-00042")
    action = store.actions()[0]
    assert (action["actor"], action["action"], action["source_key"]) == ("alice", "reconcile-delivered", "9")
    assert action["at"] is not None


def test_the_in_flight_marker_is_durable_whatever_the_servers_synchronous_commit(
    store: StateStore, database_url: str
) -> None:
    """Issue 12, finding 10: with synchronous_commit off on the server (a DBA's choice), the
    marking transaction still waits for the disk, so a crash cannot lose the marker."""
    import psycopg2.extensions

    from gestimum_pipeline.db import connect, database_name

    with connect(database_url, autocommit=True) as admin, admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{database_name(database_url)}" SET synchronous_commit = off')
    seen: list[str] = []

    class Recording(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):  # type: ignore[no-untyped-def]
            text = str(query.as_string(self) if hasattr(query, "as_string") else query)
            if "INSERT INTO" in text and ".requests" in text:  # the marker: one row per request
                super().execute("SHOW synchronous_commit")  # inside the marking transaction
                seen.append(self.fetchone()[0])
            super().execute(query, vars)

    store.conn.close()  # a new session, under the database's new default (the fixture holds the lease)
    store.stage("clients", [client("C1", "A")], partition="p", run_id="r")
    with store.conn, store.conn.cursor() as cur:
        cur.execute("SHOW synchronous_commit")
        assert cur.fetchone()[0] == "off"
    store.conn.cursor_factory = Recording
    assert store.mark_in_flight("clients", ["C1"], request_id="q", run_id="r") == ["C1"]
    assert seen and set(seen) == {"on"}


def test_a_request_in_flight_is_one_ledger_row_and_its_records_are_written_once_by_the_answer(
    store: StateStore,
) -> None:
    store.stage("clients", [client(f"C{i}", f"N{i}") for i in range(3)], partition="p", run_id="r")

    def raw() -> tuple[dict[str, tuple[str, int]], list[tuple[str, int, list[str]]]]:
        with store.conn, store.conn.cursor() as cur:
            cur.execute("SELECT source_key, status, xmin::text::bigint FROM gestimum_sync.records")
            rows = {k: (st, int(x)) for k, st, x in cur.fetchall()}
            cur.execute("SELECT state, lines, keys FROM gestimum_sync.requests ORDER BY id")
            return rows, [(st, n, list(keys)) for st, n, keys in cur.fetchall()]

    staged, _ = raw()
    assert store.mark_in_flight("clients", ["C0", "C1", "C2"], request_id="q", run_id="r") == ["C0", "C1", "C2"]
    marked, ledger = raw()
    assert marked == staged  # no record was written by the marker: same status, same row version
    assert ledger == [("in_flight", 3, ["C0", "C1", "C2"])]
    assert store.counts("clients") == {"clients": {"in_flight": 3}}
    assert set(statuses(store, "clients").values()) == {"in_flight"}
    # An operator action never moves a row whose request is open.
    assert (
        store.apply_action("ignore", "clients", ["C1"], actor="t", from_statuses=["pending"], to_status="ignored") == []
    )
    store.record_outcomes(
        "clients", [Outcome("C0", True), Outcome("C1", True), Outcome("C2", False, reason="refus")], request_id="q"
    )
    answered, ledger = raw()
    assert ledger == [("answered", 3, [])]  # the keys now live in the records only
    assert {k: st for k, (st, _) in answered.items()} == {"C0": "imported", "C1": "imported", "C2": "rejected"}
    assert store.counts("clients") == {"clients": {"imported": 2, "rejected": 1}}


def test_a_request_left_open_by_a_dead_writer_is_settled_by_the_next(database_url: str) -> None:
    with StateStore(database_url) as first:
        first.migrate()
        first.stage("clients", [client("C1", "A")], partition="p", run_id="r")
        first.stage(
            "documents_stock",
            [documents_stock_mapper(ENC).map((5, "in", "001", "ELS", 5, None))],
            partition="p",
            run_id="r",
        )
        with first.company_lock("TEST.Gestimum"):
            first.mark_in_flight("clients", ["C1"], request_id="dead-clients-1", run_id="r")
            first.mark_in_flight("documents_stock", ["5"], request_id="dead-stock-1", run_id="r")
    with StateStore(database_url) as second, second.company_lock("TEST.Gestimum"):
        assert second.recover_in_flight("clients") == 1
        assert second.recover_in_flight("documents_stock") == 1
        assert statuses(second, "clients") == {"C1": "pending"}  # sent again: an idempotent upsert
        stock = second.records(endpoint="documents_stock")[0]
        assert (stock["status"], stock["reason_source"]) == ("delivery_unknown", "delivery")
        assert "dead-stock-1" in stock["reason"]
        with second.conn, second.conn.cursor() as cur:
            cur.execute("SELECT request_id, state FROM gestimum_sync.requests ORDER BY id")
            assert cur.fetchall() == [("dead-clients-1", "abandoned"), ("dead-stock-1", "unknown")]


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["C1", "C2"],
        ["", "NULL", "a,b", "{x}", " spaced ", "é€", 'quo"te', "back\\slash", "unit\x1fsep", "(1,2)"],
    ],
)
def test_text_array_literals_round_trip_through_postgresql(database_url: str, values: list[str]) -> None:
    from gestimum_pipeline.db import connect
    from gestimum_pipeline.sync.state import text_array

    conn = connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT %s::text[]", (text_array(values),))
            assert cur.fetchone()[0] == values
    finally:
        conn.close()
