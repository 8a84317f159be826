"""Types at the source contract (issue 12, finding 7): wrong types and NULLs through a CRM view
are refused by the contract check, and each bad value read becomes a local rejection naming
its record and field: never a crash, never str() of a non-text value."""

from __future__ import annotations

from datetime import UTC, datetime

from sync_harness import insert_customers, insert_movements

from gestimum_pipeline.crm.contract import check_contract
from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.engine import Window, stage_endpoint
from gestimum_pipeline.sync.state import StateStore

DAY = Window(datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 28, tzinfo=UTC))
WHEN = "2026-03-27 10:00+00"

BAD_VIEWS = """
CREATE SCHEMA crm_bad;
CREATE VIEW crm_bad.customers AS
    SELECT code, convert_to(name, 'UTF8') AS name, street, street2, postal_code::numeric AS postal_code,
           city, email, phone = '1' AS phone, updated_at
    FROM crm.customers;
CREATE VIEW crm_bad.stock_movements AS
    SELECT CASE WHEN id = 2 THEN NULL ELSE id END AS id, direction, warehouse_code, item_code,
           quantity::float8 AS quantity, moved_at
    FROM crm.stock_movements;
"""


def make_bad_views(crm_url: str) -> None:
    with connect(crm_url) as conn, conn.cursor() as cur:
        cur.execute(BAD_VIEWS)


def stage(crm_url: str, endpoint: str, store: StateStore) -> dict[str, dict[str, object]]:
    spec = ENDPOINTS.get(endpoint)
    store.migrate()  # the test template has one already; idempotent
    stage_endpoint(
        crm_connect=lambda: connect(crm_url),
        crm_schema="crm_bad",
        state=store,
        spec=spec,
        mapper=spec.make_mapper(LineFormat().encoder()),
        window=DAY,
        partition="2026-03-27",
        run_id="r",
    )
    return {r["source_key"]: r for r in store.records(endpoint=endpoint)}


def test_the_contract_check_names_each_column_of_the_wrong_type(crm_url: str) -> None:
    make_bad_views(crm_url)
    with connect(crm_url) as conn:
        problems = " | ".join(check_contract(conn, "crm_bad", ["customers", "stock_movements"]))
    assert "crm_bad.customers.name must be text" in problems and "not bytea" in problems
    assert "crm_bad.customers.postal_code must be text" in problems and "not numeric" in problems
    assert "crm_bad.customers.phone must be text" in problems and "not boolean" in problems
    assert "crm_bad.stock_movements.quantity must be number" in problems and "not double precision" in problems
    with connect(crm_url) as conn:
        assert check_contract(conn, "crm") == []  # the reference schema meets it


def test_non_text_values_are_rejected_naming_record_and_field_never_sent_as_str(crm_url: str) -> None:
    make_bad_views(crm_url)
    insert_customers(crm_url, [("C1", "Dupont", None, None, "01000", None, None, "1", WHEN)])
    with StateStore(crm_url) as store:
        record = stage(crm_url, "comptes", store)["C1"]
    assert record["status"] == "rejected" and record["line"] is None
    reason = str(record["reason"])
    assert "comptes record C1 field name: holds a memoryview" in reason
    assert "field postal_code: holds a Decimal" in reason and "field phone: holds a bool" in reason
    assert "<memory at" not in reason and "True" not in reason


def test_a_null_or_float_in_a_stock_view_is_a_local_rejection_not_a_crash(crm_url: str) -> None:
    make_bad_views(crm_url)
    insert_movements(crm_url, [(i, "in", "001", "ELS", 5, WHEN) for i in (1, 2, 3)])
    with StateStore(crm_url) as store:
        records = stage(crm_url, "documents_stock", store)
    assert set(records) == {"1", "3", "(invalid key)"}
    assert all(r["status"] == "rejected" for r in records.values())
    assert "documents_stock record (invalid key) field id: is NULL" in str(records["(invalid key)"]["reason"])
    assert "documents_stock record 1 field quantity: holds a float" in str(records["1"]["reason"])
