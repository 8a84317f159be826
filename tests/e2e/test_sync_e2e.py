"""End to end: real PostgreSQL, the simulator on a real socket, real Dagster runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sync_harness import (
    execute,
    insert_contacts,
    insert_customers,
    insert_movements,
    insert_references,
    run_sync,
    sent_lines,
    state_records,
)

from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

ITEMS = ("ELS", "A10", "A11")
WAREHOUSES = ("001", "002")
DAY = "2026-03-28"
DAY_TS = "2026-03-28 10:00:00+01"
NEXT_DAY = "2026-03-29"  # the spring DST change in Europe/Paris: a 23-hour day
NEXT_DAY_TS = "2026-03-29 12:00:00+02"

HOSTILE_CUSTOMERS = [
    # code, name, street, street2, postal_code, city, email, phone, updated_at
    (
        "C1",
        'Société Générale d\'Équipement; "SGE"',
        "5 rue Cugnot",
        "ZA Du Pâtis",
        "78120",
        "RAMBOUILLET",
        "a@b.fr",
        None,
        DAY_TS,
    ),
    ("C2", "  Espaces autour  ", "Rue\tavec tabulation", None, None, "Paris", None, None, DAY_TS),
    ("C3", 'Guillemets "doubles" et ;;', "12 avenue\nde la Gare", "", "75001", "Paris ", None, None, DAY_TS),
]


@pytest.fixture
def simulator() -> Iterator[GestimumSimulator]:
    sim = GestimumSimulator(SimulatorConfig(items=ITEMS, warehouses=WAREHOUSES)).start()
    try:
        yield sim
    finally:
        sim.stop()


def _seed_day(crm_url: str) -> None:
    insert_customers(crm_url, HOSTILE_CUSTOMERS)
    insert_contacts(
        crm_url,
        [
            ("K1", "C1", "Dupont", "Jean-Édouard", None, None, DAY_TS),
            ("K2", "C2", "Martin", None, None, None, DAY_TS),
        ],
    )
    insert_references(crm_url, [("C1", "A10", 'RÉF;1 "x"', "5.25", DAY_TS)])
    insert_movements(
        crm_url,
        [
            (1, "in", "001", "ELS", "20", DAY_TS),
            (2, "out", "001", "ELS", "1.5", DAY_TS),
            (3, "in", "002", "A10", "3", DAY_TS),
            (4, "in", "001", "A11", "0.25", DAY_TS),
        ],
    )


@pytest.mark.smoke  # the fast tier's end-to-end sync
def test_sync_holds_crm_field_by_field(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_day(crm_url)
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert run.success, run.failures

    customers = simulator.state.customers
    accounts = simulator.state.accounts
    assert set(customers) == {"C1", "C2", "C3"}
    for code, name, street, street2, postal_code, city, *_ in HOSTILE_CUSTOMERS:
        held = customers[code]
        # The documented rule: a line break inside an address becomes one space.
        expected_street = street.replace("\n", " ")
        assert held["PCF_CODE"] == code
        assert held["CPT_NUMERO"] == f"411{code}"
        assert held["PCF_RS"] == name
        assert held["PCF_RUE"] == expected_street
        assert (held.get("PCF_COMP") or "") == (street2 or "")
        assert (held.get("PCF_CP") or "") == (postal_code or "")
        assert held["PCF_VILLE"] == city
        assert accounts[f"411{code}"]["CPT_LIB"] == name
        assert accounts[f"411{code}"]["PCF_CODE"] == code
    assert simulator.state.contacts["K1"]["CCT_NOM"] == "Dupont Jean-Édouard"
    assert simulator.state.contacts["K1"]["CCT_ORIGIN"] == "C1"
    assert simulator.state.contacts["K2"]["CCT_NOM"] == "Martin"
    assert simulator.state.references[("A10", "C1")]["ART_REFCLI"] == 'RÉF;1 "x"'
    assert simulator.state.references[("A10", "C1")]["ART_PCLIENT"] == "5,25"

    # One document per header (direction, warehouse); each movement records its document.
    docs = simulator.state.documents
    headers = sorted((d.stype, d.warehouse, len(d.lines)) for d in docs)
    assert headers == [("E", "001", 2), ("E", "002", 1), ("S", "001", 1)]
    movements = state_records(crm_url, "documents_stock")
    assert {k: r["status"] for k, r in movements.items()} == {str(i): "imported" for i in (1, 2, 3, 4)}
    by_doc = {d.number: d for d in docs}
    assert movements["2"]["document"].startswith("SOR")
    assert by_doc[movements["2"]["document"]].lines[0]["MVT_QTE"] == "1,5"
    assert movements["1"]["document"] == movements["4"]["document"]

    clients = run.metadata["gestimum/clients"]
    assert clients["dagster/row_count"] == 3 and clients["imported"] == 3 and clients["rejected"] == 0
    assert clients["requests"] == 1 and clients["dry_run"] is False
    assert clients["bytes_posted"] > 0
    assert run.metadata["transform/clients"]["rule_address_line_breaks"] == 1
    assert run.metadata["gestimum/documents_stock"]["documents_created"] == 3
    # Dependency order: accounts before customers before contacts/references.
    order = [k for k in run.order if k.startswith("gestimum/")]
    assert order.index("gestimum/comptes") < order.index("gestimum/clients") < order.index("gestimum/contacts")
    assert order.index("gestimum/clients") < order.index("gestimum/references_clients_articles")


def test_rerun_sends_nothing_and_changes_are_sent_alone(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_day(crm_url)
    assert run_sync(crm_url, simulator.url, partition=DAY).success
    requests_before = len(simulator.state.requests)
    documents_before = len(simulator.state.documents)

    rerun = run_sync(crm_url, simulator.url, partition=DAY)
    assert rerun.success, rerun.failures
    assert sent_lines(rerun) == dict.fromkeys(sent_lines(rerun), 0)
    assert len(sent_lines(rerun)) == 5
    assert all(m["bytes_posted"] == 0 for k, m in rerun.metadata.items() if k.startswith("gestimum/"))
    assert len(simulator.state.requests) == requests_before
    assert len(simulator.state.documents) == documents_before

    # One changed customer is re-sent alone; one new movement creates one document.
    execute(
        crm_url,
        [
            ("UPDATE crm.customers SET city = 'VERSAILLES', updated_at = %s WHERE code = 'C2'", (DAY_TS,)),
            ("INSERT INTO crm.stock_movements VALUES (5, 'out', '002', 'A10', 1, %s)", (DAY_TS,)),
        ],
    )
    third = run_sync(crm_url, simulator.url, partition=DAY)
    assert third.success, third.failures
    assert sent_lines(third) == {
        "gestimum/comptes": 0,  # the account's fields (code, name) did not change
        "gestimum/clients": 1,
        "gestimum/contacts": 0,
        "gestimum/references_clients_articles": 0,
        "gestimum/documents_stock": 1,
    }
    assert simulator.state.customers["C2"]["PCF_VILLE"] == "VERSAILLES"
    assert len(simulator.state.documents) == documents_before + 1


def test_force_resends_master_data_but_never_stock(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_day(crm_url)
    assert run_sync(crm_url, simulator.url, partition=DAY).success
    documents_before = len(simulator.state.documents)
    forced = run_sync(crm_url, simulator.url, partition=DAY, force=True)
    assert forced.success, forced.failures
    assert forced.metadata["gestimum/clients"]["dagster/row_count"] == 3
    assert forced.metadata["gestimum/documents_stock"]["dagster/row_count"] == 0
    assert len(simulator.state.documents) == documents_before


def test_rejections_are_recorded_and_succeed_once_fixed(crm_url: str, simulator: GestimumSimulator) -> None:
    insert_customers(
        crm_url,
        [
            ("OK1", "Bonne Entreprise", None, None, None, None, None, None, DAY_TS),
            ("BAD1", "Emoji 🚀 SARL", None, None, None, None, None, None, DAY_TS),  # outside cp1252: local
        ],
    )
    insert_contacts(
        crm_url,
        [
            ("KC1", "BAD1", "Durand", "Alice", None, None, DAY_TS),  # parent rejected: held
            ("KC2", "NOPE", "Petit", None, None, None, DAY_TS),  # unknown customer: Gestimum rejects
        ],
    )
    insert_movements(crm_url, [(10, "in", "999", "ELS", "2", DAY_TS), (11, "in", "001", "ELS", "0", DAY_TS)])
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert run.success, run.failures

    comptes = state_records(crm_url, "comptes")
    assert comptes["BAD1"]["status"] == "rejected" and comptes["BAD1"]["reason_source"] == "local"
    assert "CPT_LIB" in comptes["BAD1"]["reason"] and "BAD1" in comptes["BAD1"]["reason"]
    local = run.metadata["transform/comptes"]["local_rejections"]
    assert [r.data["source_key"] for r in local.records] == ["BAD1"]

    contacts = state_records(crm_url, "contacts")
    assert contacts["KC1"]["status"] == "held" and "BAD1" in contacts["KC1"]["reason"]
    assert contacts["KC2"]["status"] == "rejected" and contacts["KC2"]["reason_source"] == "gestimum"
    table = run.metadata["gestimum/contacts"]["rejections"]
    assert [(r.data["source_key"], r.data["line"]) for r in table.records] == [("KC2", 1)]
    assert table.records[0].data["reason"]

    stock = state_records(crm_url, "documents_stock")
    assert stock["10"]["status"] == "rejected" and stock["10"]["reason_source"] == "gestimum"
    assert stock["11"]["status"] == "rejected" and "MVT_QTE" in stock["11"]["reason"]
    assert run.metadata["gestimum/documents_stock"]["rejected"] == 1

    # Fix the causes in the CRM: the customer's name, the contact's customer, the movement's quantity.
    execute(
        crm_url,
        [
            ("UPDATE crm.customers SET name = 'Fusée SARL' WHERE code = 'BAD1'", ()),
            ("UPDATE crm.contacts SET customer_code = 'OK1' WHERE code = 'KC2'", ()),
            ("UPDATE crm.stock_movements SET quantity = 4 WHERE id = 11", ()),
        ],
    )
    fixed = run_sync(crm_url, simulator.url, partition=DAY)
    assert fixed.success, fixed.failures
    assert simulator.state.customers["BAD1"]["PCF_RS"] == "Fusée SARL"
    assert simulator.state.contacts["KC1"]["CCT_ORIGIN"] == "BAD1"  # released once its parent imported
    assert simulator.state.contacts["KC2"]["CCT_ORIGIN"] == "OK1"
    stock = state_records(crm_url, "documents_stock")
    assert stock["11"]["status"] == "imported" and stock["11"]["document"]
    assert stock["10"]["status"] == "rejected"  # unknown warehouse, unchanged: not re-sent
    contacts = state_records(crm_url, "contacts")
    assert {k: r["status"] for k, r in contacts.items()} == {"KC1": "imported", "KC2": "imported"}


def test_multi_day_backfill_in_one_run(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_day(crm_url)
    insert_customers(crm_url, [("D2", "Client du lendemain", None, None, None, None, None, None, NEXT_DAY_TS)])
    insert_contacts(crm_url, [("K3", "D2", "Lemoine", "Zoé", None, None, NEXT_DAY_TS)])
    insert_movements(crm_url, [(20, "in", "002", "ELS", "7", NEXT_DAY_TS)])
    run = run_sync(crm_url, simulator.url, partition_range=(DAY, NEXT_DAY))
    assert run.success, run.failures
    assert run.result.dagster_run.tags["dagster/asset_partition_range_end"] == NEXT_DAY
    assert set(simulator.state.customers) == {"C1", "C2", "C3", "D2"}
    assert simulator.state.contacts["K3"]["CCT_ORIGIN"] == "D2"
    assert len(state_records(crm_url, "documents_stock")) == 5
    assert run.metadata["gestimum/clients"]["requests"] == 1  # both days in one request
    order = [k for k in run.order if k.startswith("gestimum/")]
    assert order.index("gestimum/comptes") < order.index("gestimum/clients") < order.index("gestimum/contacts")


def test_dry_run_validates_with_tester_and_stores_nothing(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_day(crm_url)
    run = run_sync(crm_url, simulator.url, partition=DAY, dry_run=True)
    assert run.success, run.failures
    assert simulator.state.customers == {} and simulator.state.documents == []
    assert run.metadata["gestimum/clients"]["dry_run"] is True
    comptes, clients = run.metadata["gestimum/comptes"], run.metadata["gestimum/clients"]
    assert comptes["dagster/row_count"] == 3 and comptes["imported"] == 3
    # Gestimum's tester stores nothing, so customers whose accounts were only tested are refused.
    assert clients["dagster/row_count"] == 3 and clients["imported"] + clients["rejected"] == 3
    assert run.metadata["gestimum/documents_stock"]["would_send_without_tester"] == 4
    assert run.metadata["gestimum/documents_stock"]["dagster/row_count"] == 0
    # Nothing was marked sent: the real run afterwards sends everything.
    real = run_sync(crm_url, simulator.url, partition=DAY)
    assert real.success and real.metadata["gestimum/documents_stock"]["dagster/row_count"] == 4
