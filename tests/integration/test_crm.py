"""The CRM side: contract, reference DDL, streaming queries and demo data, on real PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from zoneinfo import ZoneInfo

import psycopg2.extensions
import pytest

from gestimum_pipeline.crm.contract import DIRECTIONS, RELATIONS, check_contract
from gestimum_pipeline.crm.ddl import create_reference_schema, reference_ddl
from gestimum_pipeline.crm.demo import DEMO_ITEMS, DEMO_WAREHOUSES, load_bulk, load_demo_data
from gestimum_pipeline.crm.queries import count_window, fetch_by_keys, stream_window
from gestimum_pipeline.db import connect

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 1, 15, tzinfo=UTC)
ORPHAN_CONTACTS = (
    "SELECT count(*) FROM crm.contacts c LEFT JOIN crm.customers u ON u.code = c.customer_code WHERE u.code IS NULL"
)


@pytest.fixture
def crm(crm_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a database holding the empty reference schema `crm`."""
    conn = connect(crm_url, "crm fixture")
    yield conn
    conn.close()


def _insert_customers(conn: psycopg2.extensions.connection, times: list[datetime], schema: str = "crm") -> None:
    with conn.cursor() as cur:
        for i, t in enumerate(times):
            cur.execute(
                f"INSERT INTO {schema}.customers (code, name, updated_at) VALUES (%s, %s, %s)",
                (f"C{i:04d}", f"Client {i}", t),
            )
    conn.commit()


def _rows(conn: psycopg2.extensions.connection, query: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


# --------------------------------------------------------------------------- reference DDL


def test_reference_ddl_is_idempotent_and_creates_the_indexes(crm: psycopg2.extensions.connection) -> None:
    create_reference_schema(crm, "crm")  # the fixture already ran it once
    crm.autocommit = True
    create_reference_schema(crm, "crm")  # autocommit connections work too
    assert crm.autocommit
    indexes = {name for (name,) in _rows(crm, "SELECT indexname FROM pg_indexes WHERE schemaname = 'crm'")}
    assert {
        "customers_updated_at_idx",
        "contacts_updated_at_idx",
        "stock_movements_moved_at_idx",
        "customer_item_references_updated_at_idx",
    } <= indexes
    assert check_contract(crm, "crm") == []


def test_reference_ddl_has_no_constraints_that_would_refuse_bad_rows(crm: psycopg2.extensions.connection) -> None:
    constraints = _rows(
        crm,
        "SELECT conrelid::regclass::text, contype FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'crm' AND contype <> 'p'",
    )
    assert constraints == []  # NOT NULL is not a pg_constraint row before PostgreSQL 18


def test_reference_ddl_quotes_the_schema(crm: psycopg2.extensions.connection) -> None:
    assert 'CREATE TABLE IF NOT EXISTS "My_Crm".customers' in reference_ddl("My_Crm").as_string(crm)


def test_reference_ddl_in_a_custom_schema_keeps_its_case(database_url: str) -> None:
    conn = connect(database_url)
    try:
        create_reference_schema(conn, "Crm_Other")
        assert check_contract(conn, "Crm_Other") == []
        assert "schema 'crm_other' does not exist" in check_contract(conn, "crm_other")[0]
    finally:
        conn.close()


@pytest.mark.parametrize("schema", ["crm; DROP TABLE x", 'crm"', "crm.x", ""])
def test_reference_ddl_refuses_injected_schema_names(database_url: str, schema: str) -> None:
    conn = connect(database_url)
    try:
        with pytest.raises(ValueError, match="CRM schema"):
            create_reference_schema(conn, schema)
        with pytest.raises(ValueError, match="CRM schema"):
            check_contract(conn, schema)
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE  # nothing ran
    finally:
        conn.close()


# --------------------------------------------------------------------------- contract


def test_check_contract_reports_what_a_user_schema_lacks(crm: psycopg2.extensions.connection) -> None:
    with crm.cursor() as cur:
        cur.execute(
            """
            CREATE SCHEMA mine;
            -- A view that forgot a column, one with a naive change time, one materialized view.
            CREATE VIEW mine.customers AS SELECT * FROM crm.customers;
            CREATE VIEW mine.contacts AS
                SELECT code, customer_code, last_name, first_name, email, updated_at FROM crm.contacts;
            CREATE VIEW mine.stock_movements AS
                SELECT id, direction, warehouse_code, item_code, quantity, moved_at::timestamp AS moved_at
                FROM crm.stock_movements;
            CREATE MATERIALIZED VIEW mine.customer_item_references AS SELECT * FROM crm.customer_item_references;
            """
        )
    crm.commit()
    problems = check_contract(crm, "mine")
    assert problems[0] == "mine.contacts lacks column(s): phone"
    assert problems[1].startswith("mine.stock_movements.moved_at must be timestamptz, not timestamp without time zone")
    assert len(problems) == 2

    with crm.cursor() as cur:
        cur.execute("DROP VIEW mine.contacts")
    crm.commit()
    assert check_contract(crm, "mine")[0].startswith("mine.contacts does not exist (needs columns: code, ")


def test_check_contract_missing_schema(crm: psycopg2.extensions.connection) -> None:
    assert check_contract(crm, "nowhere") == [
        "schema 'nowhere' does not exist (expected relations: customers, contacts, stock_movements, "
        "customer_item_references)"
    ]


def test_relations_describe_the_reference_tables(crm: psycopg2.extensions.connection) -> None:
    for rel in RELATIONS.values():
        columns = [
            c
            for (c,) in _rows(
                crm,
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_schema = 'crm' AND table_name = '{rel.name}' ORDER BY ordinal_position",
            )
        ]
        assert tuple(columns) == rel.columns
        assert set(rel.key_columns) <= set(rel.columns)
        assert rel.change_column in rel.columns


# --------------------------------------------------------------------------- stream_window


def test_stream_window_returns_exactly_the_window_across_chunks(crm: psycopg2.extensions.connection) -> None:
    times = [T0 + timedelta(minutes=i) for i in range(30)]
    _insert_customers(crm, times)
    start, end = times[3], times[26]  # start included, end excluded

    chunks = list(stream_window(crm, "crm", "customers", start, end, chunk_size=4))

    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4, 3]
    rows = [r for chunk in chunks for r in chunk]
    assert [r[0] for r in rows] == [f"C{i:04d}" for i in range(3, 26)]
    assert rows[0] == ("C0003", "Client 3", None, None, None, None, None, None, times[3])
    assert count_window(crm, "crm", "customers", start, end) == (23, times[25])


def test_stream_window_uses_a_server_side_cursor(crm: psycopg2.extensions.connection) -> None:
    _insert_customers(crm, [T0 + timedelta(seconds=i) for i in range(10)])
    stream = stream_window(crm, "crm", "customers", T0, T0 + timedelta(days=1), chunk_size=3)

    first = next(stream)
    cursors = _rows(crm, "SELECT name, is_holdable, statement FROM pg_cursors")
    assert len(first) == 3
    assert len(cursors) == 1
    name, holdable, statement = cursors[0]
    assert name.startswith("gestimum_customers_")
    assert not holdable
    assert "ORDER BY" in statement

    assert sum(len(c) for c in stream) == 7
    assert _rows(crm, "SELECT name FROM pg_cursors") == []  # closed once exhausted


def test_stream_window_closes_its_cursor_when_abandoned(crm: psycopg2.extensions.connection) -> None:
    _insert_customers(crm, [T0 + timedelta(seconds=i) for i in range(10)])
    stream = stream_window(crm, "crm", "customers", T0, T0 + timedelta(days=1), chunk_size=3)
    next(stream)
    stream.close()
    assert _rows(crm, "SELECT name FROM pg_cursors") == []


def test_stream_window_bounds_in_other_time_zones(crm: psycopg2.extensions.connection) -> None:
    # Local midnight in Paris on a winter day is 23:00 UTC the day before.
    midnight_paris = datetime(2026, 1, 15, tzinfo=PARIS)
    _insert_customers(
        crm,
        [
            midnight_paris - timedelta(microseconds=1),
            midnight_paris,
            midnight_paris + timedelta(hours=23, minutes=59),
            midnight_paris + timedelta(days=1),
        ],
    )
    with crm.cursor() as cur:
        cur.execute("SET TIME ZONE 'Pacific/Kiritimati'")  # the session zone must not matter
    for zone in ("Asia/Tokyo", "America/New_York", "UTC"):
        start = midnight_paris.astimezone(ZoneInfo(zone))
        end = (midnight_paris + timedelta(days=1)).astimezone(ZoneInfo(zone))
        codes = [r[0] for chunk in stream_window(crm, "crm", "customers", start, end) for r in chunk]
        assert codes == ["C0001", "C0002"], zone


def test_stream_window_refuses_naive_or_reversed_bounds_and_autocommit(crm: psycopg2.extensions.connection) -> None:
    with pytest.raises(ValueError, match="time-zone-aware"):
        stream_window(crm, "crm", "customers", datetime(2026, 1, 1), T0)
    with pytest.raises(ValueError, match="time-zone-aware"):
        count_window(crm, "crm", "customers", T0, datetime(2026, 2, 1))
    with pytest.raises(ValueError, match="before its start"):
        stream_window(crm, "crm", "customers", T0, T0 - timedelta(seconds=1))
    with pytest.raises(ValueError, match="unknown CRM relation"):
        stream_window(crm, "crm", "orders", T0, T0)
    with pytest.raises(ValueError, match="cannot order"):
        stream_window(crm, "crm", "customers", T0, T0, order_by=("name; DROP TABLE x",))
    with pytest.raises(ValueError, match="CRM schema"):
        next(stream_window(crm, 'crm"; --', "customers", T0, T0))
    crm.autocommit = True
    with pytest.raises(ValueError, match="autocommit"):
        stream_window(crm, "crm", "customers", T0, T0)


def test_stream_window_orders_stock_movements_for_grouping(crm: psycopg2.extensions.connection) -> None:
    with crm.cursor() as cur:
        for i, (direction, warehouse) in enumerate([("out", "002"), ("in", "002"), ("out", "001"), ("in", "001")] * 3):
            cur.execute(
                "INSERT INTO crm.stock_movements (direction, warehouse_code, item_code, quantity, moved_at) "
                "VALUES (%s, %s, 'A10', %s, %s)",
                (direction, warehouse, Decimal("1.5") + i, T0 + timedelta(seconds=i)),
            )
    crm.commit()
    order = ("direction", "warehouse_code", "id")
    chunks = list(
        stream_window(crm, "crm", "stock_movements", T0, T0 + timedelta(hours=1), chunk_size=5, order_by=order)
    )
    rows = [r for chunk in chunks for r in chunk]
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert [(r[1], r[2]) for r in rows] == sorted((r[1], r[2]) for r in rows)
    assert rows == sorted(rows, key=lambda r: (r[1], r[2], r[0]))
    assert rows[0][4] == Decimal("4.5")  # numeric comes back exact


def test_count_window_of_an_empty_window(crm: psycopg2.extensions.connection) -> None:
    assert count_window(crm, "crm", "contacts", T0, T0 + timedelta(days=1)) == (0, None)
    assert list(stream_window(crm, "crm", "contacts", T0, T0 + timedelta(days=1))) == []


# --------------------------------------------------------------------------- fetch_by_keys


def test_fetch_by_keys(crm: psycopg2.extensions.connection) -> None:
    _insert_customers(crm, [T0] * 7)
    with crm.cursor() as cur:
        cur.execute(
            "INSERT INTO crm.customer_item_references VALUES "
            "('C0001', 'A10', 'R1', 12.5, %(t)s), ('C0001', 'A11', NULL, NULL, %(t)s), "
            "('C0002', 'A10', 'R3', 1, %(t)s)",
            {"t": T0},
        )
    crm.commit()

    chunks = list(fetch_by_keys(crm, "crm", "customers", [("C0005",), ("C0001",), ("nope",), ("C0003",)], chunk_size=2))
    assert [[r[0] for r in c] for c in chunks] == [["C0001", "C0005"], ["C0003"]]
    assert len(chunks[0][0]) == len(RELATIONS["customers"].columns)

    # Bare values for one-column keys; duplicates dropped.
    rows = [r for c in fetch_by_keys(crm, "crm", "customers", ["C0002", "C0002", "C0004"]) for r in c]
    assert [r[0] for r in rows] == ["C0002", "C0004"]

    keys = [("C0002", "A10"), ("C0001", "A11"), ("C0001", "A12")]
    rows = [r for c in fetch_by_keys(crm, "crm", "customer_item_references", keys) for r in c]
    assert rows == [("C0001", "A11", None, None, T0), ("C0002", "A10", "R3", Decimal(1), T0)]

    assert list(fetch_by_keys(crm, "crm", "customers", [])) == []
    with pytest.raises(ValueError, match="keys have 2 column"):
        fetch_by_keys(crm, "crm", "customer_item_references", [("C0001",)])


def test_fetch_by_keys_with_bigint_ids(crm: psycopg2.extensions.connection) -> None:
    with crm.cursor() as cur:
        cur.execute(
            "INSERT INTO crm.stock_movements (id, direction, warehouse_code, item_code, quantity, moved_at) "
            "SELECT g, 'in', '001', 'A10', 1, %s FROM generate_series(1, 20) g",
            (T0,),
        )
    crm.commit()
    rows = [r for c in fetch_by_keys(crm, "crm", "stock_movements", [(20,), (3,), (99,)]) for r in c]
    assert [r[0] for r in rows] == [3, 20]


# --------------------------------------------------------------------------- demo data


DEMO_DAYS = [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]  # the 29th is a 23-hour day in Paris


def test_demo_data_of_a_day_under_way_never_changes_in_the_future(crm: psycopg2.extensions.connection) -> None:
    """The demo's last day is today: its rows change before now, so no `last_change` is in the future."""
    now = datetime(2026, 3, 30, 9, 15, tzinfo=PARIS)
    load_demo_data(crm, "crm", days=DEMO_DAYS, customers_per_day=20, now=now)
    latest = _rows(
        crm,
        "SELECT max(t) FROM (SELECT updated_at FROM crm.customers UNION ALL SELECT updated_at FROM crm.contacts"
        " UNION ALL SELECT updated_at FROM crm.customer_item_references"
        " UNION ALL SELECT moved_at FROM crm.stock_movements) AS c(t)",
    )[0][0]
    assert datetime(2026, 3, 30, tzinfo=PARIS) < latest < now
    # The last customer of the day is the last change before now (the boundary the demo exercises).
    last = _rows(crm, "SELECT updated_at FROM crm.customers WHERE code = 'C20260330-0020'")[0][0]
    assert last == now - timedelta(microseconds=1)


def test_load_demo_data_counts_and_bounds(crm: psycopg2.extensions.connection) -> None:
    summary = load_demo_data(crm, "crm", days=DEMO_DAYS, customers_per_day=20)

    assert summary.start == datetime(2026, 3, 28, tzinfo=PARIS)
    assert summary.end == datetime(2026, 3, 31, tzinfo=PARIS)
    assert summary.customers == 3 * 20 + 3  # + emoji, long name, line break
    assert summary.updated_customers == 2 * 2  # a tenth of yesterday's customers, from the second day
    for name, expected in summary.counts().items():
        assert count_window(crm, "crm", name, summary.start, summary.end)[0] == expected, name
        assert _rows(crm, f"SELECT count(*) FROM crm.{name}")[0][0] == expected, name
    assert summary.movements == 3 * 40 + 4

    # Boundaries: the first customer of a day changes at local midnight, the last just before the next.
    first = _rows(crm, "SELECT updated_at FROM crm.customers WHERE code = 'C20260329-0001'")[0][0]
    last = _rows(crm, "SELECT updated_at FROM crm.customers WHERE code = 'C20260328-0020'")[0][0]
    assert first == datetime(2026, 3, 29, tzinfo=PARIS)
    assert last == datetime(2026, 3, 29, tzinfo=PARIS) - timedelta(microseconds=1)

    # Every row changes within the local day its code names (customers may move later).
    def local_day(t: datetime) -> str:
        return f"{t.astimezone(PARIS):%Y%m%d}"

    for code, t in _rows(crm, "SELECT code, updated_at FROM crm.contacts"):
        assert local_day(t) == code[1:9], code
    for code, t in _rows(crm, "SELECT customer_code, updated_at FROM crm.customer_item_references"):
        assert local_day(t) == code[1:9], code
    for movement_id, t in _rows(crm, "SELECT id, moved_at FROM crm.stock_movements"):
        assert local_day(t) == str(movement_id)[:8], movement_id
    # Every day carries names the line encoding must quote.
    for day in DEMO_DAYS:
        names = [n for (n,) in _rows(crm, f"SELECT name FROM crm.customers WHERE code LIKE 'C{day:%Y%m%d}-%'")]
        assert any(";" in n for n in names) and any('"' in n for n in names) and any("'" in n for n in names), day
    moved = [(c, t) for c, t in _rows(crm, "SELECT code, updated_at FROM crm.customers") if local_day(t) != c[1:9]]
    assert len(moved) == summary.updated_customers
    assert all(local_day(t) > c[1:9] for c, t in moved)


def test_load_demo_data_holds_realistic_and_bad_rows(crm: psycopg2.extensions.connection) -> None:
    summary = load_demo_data(crm, "crm", days=DEMO_DAYS[:1], customers_per_day=10)
    names = [name for (name,) in _rows(crm, "SELECT name FROM crm.customers")]
    assert any(";" in n for n in names)
    assert any('"' in n for n in names)
    assert any("é" in n or "É" in n or "â" in n for n in names)
    assert any(pc.startswith("0") for (pc,) in _rows(crm, "SELECT postal_code FROM crm.customers"))
    contact_counts = [n for (n,) in _rows(crm, "SELECT count(*) FROM crm.contacts GROUP BY customer_code")]
    assert set(contact_counts) <= {1, 2, 3}

    reasons = {(b.relation, b.key): b.reason for b in summary.bad_rows}
    assert len(reasons) == 10
    # A valid contact of a rejected customer: held back until its customer imports.
    assert "held" in reasons[("contacts", ("C20260328-9001-1",))]
    for (relation, key), reason in reasons.items():
        rows = [r for c in fetch_by_keys(crm, "crm", relation, [key]) for r in c]
        assert len(rows) == 1, (relation, key, reason)

    def customer_name(code: str) -> str:
        return next(r for c in fetch_by_keys(crm, "crm", "customers", [code]) for r in c)[1]

    emoji = customer_name("C20260328-9001")
    with pytest.raises(UnicodeEncodeError):
        emoji.encode("cp1252")
    assert len(customer_name("C20260328-9002")) == 200
    street = _rows(crm, "SELECT street FROM crm.customers WHERE code = 'C20260328-9003'")[0][0]
    assert "\n" in street
    orphan = _rows(crm, "SELECT customer_code FROM crm.contacts WHERE code = 'C20260328-9999-1'")[0][0]
    assert _rows(crm, f"SELECT count(*) FROM crm.customers WHERE code = '{orphan}'")[0][0] == 0
    bad_movements = _rows(
        crm, "SELECT direction, warehouse_code, quantity FROM crm.stock_movements WHERE id >= 20260328900001"
    )
    assert ("in", "999", Decimal(5)) in bad_movements
    assert ("out", "001", Decimal(0)) in bad_movements
    assert ("in", "001", Decimal(-3)) in bad_movements
    assert ("transfer", "001", Decimal(2)) in bad_movements
    assert ("C20260328-0001", "ZZ999") in {key for (rel, key) in reasons if rel == "customer_item_references"}


def test_load_demo_data_without_bad_rows_is_all_valid(crm: psycopg2.extensions.connection) -> None:
    summary = load_demo_data(crm, "crm", days=DEMO_DAYS, customers_per_day=15, include_bad_rows=False)
    assert summary.bad_rows == ()
    assert summary.customers == 45
    movements = _rows(crm, "SELECT direction, warehouse_code, item_code, quantity FROM crm.stock_movements")
    assert all(d in DIRECTIONS and w in DEMO_WAREHOUSES and i in DEMO_ITEMS and q > 0 for d, w, i, q in movements)
    refs = _rows(crm, "SELECT item_code FROM crm.customer_item_references")
    assert all(i in DEMO_ITEMS for (i,) in refs)
    names = [n for (n,) in _rows(crm, "SELECT name FROM crm.customers")]
    assert all(len(n) <= 60 for n in names)
    for n in names:
        n.encode("cp1252")  # no UnicodeEncodeError
    assert _rows(crm, ORPHAN_CONTACTS)[0][0] == 0


def test_load_demo_data_uses_the_given_catalog(crm: psycopg2.extensions.connection) -> None:
    load_demo_data(crm, "crm", days=DEMO_DAYS[:1], customers_per_day=10, items=("ZZ999", "X1"), warehouses=("999",))
    items = {i for (i,) in _rows(crm, "SELECT item_code FROM crm.stock_movements")}
    # The unknown item/warehouse of the bad rows avoid the given catalog.
    assert items == {"ZZ999", "X1"}
    assert {w for (w,) in _rows(crm, "SELECT warehouse_code FROM crm.stock_movements")} == {"999", "998"}


def test_load_demo_data_is_idempotent_and_deterministic_per_day(crm: psycopg2.extensions.connection) -> None:
    create_reference_schema(crm, "crm_daily")
    load_demo_data(crm, "crm", days=DEMO_DAYS, seed=7)
    again = load_demo_data(crm, "crm", days=DEMO_DAYS, seed=7)
    assert again.updated_customers == 0  # nothing newer to apply
    for day in DEMO_DAYS:  # one day at a time, as a daily demo run would; bad rows go to the first day
        load_demo_data(crm, "crm_daily", days=[day], seed=7, include_bad_rows=day == DEMO_DAYS[0])
    for name, rel in RELATIONS.items():
        columns = ", ".join(rel.columns)
        together = _rows(crm, f"SELECT {columns} FROM crm.{name} ORDER BY 1, 2")
        daily = _rows(crm, f"SELECT {columns} FROM crm_daily.{name} ORDER BY 1, 2")
        assert together == daily, name
        assert together, name
    # Another seed gives other data.
    create_reference_schema(crm, "crm_other_seed")
    load_demo_data(crm, "crm_other_seed", days=DEMO_DAYS, seed=8)
    assert _rows(crm, "SELECT name FROM crm.customers ORDER BY code") != _rows(
        crm, "SELECT name FROM crm_other_seed.customers ORDER BY code"
    )


def test_demo_catalog_is_within_the_simulator_default_catalog() -> None:
    resource = files("gestimum_pipeline.simulator").joinpath("catalog_default.json")
    if not resource.is_file():
        pytest.skip("the simulator ships no default catalog")
    catalog = json.loads(resource.read_text(encoding="utf-8"))
    assert set(DEMO_ITEMS) <= set(catalog["items"])
    assert set(DEMO_WAREHOUSES) <= set(catalog["warehouses"])


def test_load_demo_data_rejects_bad_arguments(crm: psycopg2.extensions.connection) -> None:
    with pytest.raises(ValueError, match="days"):
        load_demo_data(crm, "crm", days=[])
    with pytest.raises(ValueError, match="time zone"):
        load_demo_data(crm, "crm", days=DEMO_DAYS, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="CRM schema"):
        load_demo_data(crm, "crm;drop", days=DEMO_DAYS)


# --------------------------------------------------------------------------- bulk data


def test_load_bulk_counts_and_speed(crm: psycopg2.extensions.connection) -> None:
    n = 10_000
    started = time.perf_counter()
    load_bulk(crm, "crm", n, start=date(2026, 1, 1), days=30)
    elapsed = time.perf_counter() - started
    rows = 7 * n
    print(f"\nload_bulk: {n} customers, {rows} rows in {elapsed:.2f}s ({rows / elapsed:,.0f} rows/s)")

    counts = {name: _rows(crm, f"SELECT count(*) FROM crm.{name}")[0][0] for name in RELATIONS}
    assert counts == {"customers": n, "contacts": 2 * n, "customer_item_references": n, "stock_movements": 3 * n}
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC))
    for name in RELATIONS:
        assert count_window(crm, "crm", name, *window)[0] == counts[name]
    # All valid: every contact and reference has its customer, every movement is sane.
    assert _rows(crm, ORPHAN_CONTACTS) == [(0,)]
    movements = _rows(
        crm, "SELECT DISTINCT direction, warehouse_code, item_code, quantity > 0 FROM crm.stock_movements"
    )
    assert all(
        d in DIRECTIONS and w in DEMO_WAREHOUSES and i in DEMO_ITEMS and positive for d, w, i, positive in movements
    )
    # The identity went past the ids we set, so the CRM's own inserts still work.
    with crm.cursor() as cur:
        cur.execute("INSERT INTO crm.stock_movements (direction, moved_at) VALUES ('in', now()) RETURNING id")
        assert cur.fetchone()[0] == 3 * n + 1
    crm.rollback()
