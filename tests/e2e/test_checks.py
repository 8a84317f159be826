"""Asset checks, end to end: real runs against the CRM and the simulator, checks read from the run.

Plus unit tests of the plain health findings the state-store checks are built from.
"""

from __future__ import annotations

import time

import dagster as dg
from sync_harness import execute, insert_contacts, insert_customers, insert_movements, insert_references, run_sync

from gestimum_pipeline.defs.checks import build_state_checks
from gestimum_pipeline.simulator.server import Fault, GestimumSimulator
from gestimum_pipeline.sync import health
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.engine import SendReport, statistics_problems
from gestimum_pipeline.sync.state import StateStore

DAY = "2026-03-28"
DAY_TS = "2026-03-28 10:00:00+01"
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _seed_with_rejections(crm_url: str) -> None:
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
            ("KC3", "OK1", "Martin", None, None, None, DAY_TS),
        ],
    )
    insert_movements(crm_url, [(1, "in", "001", "ELS", "2", DAY_TS)])


def test_rejected_rows_fail_a_warning_check_with_their_reasons(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_with_rejections(crm_url)
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert run.success, run.failures  # warnings never fail the run

    contacts = run.checks["gestimum/contacts:no_rejected_lines"]
    assert not contacts.passed and contacts.severity == WARN
    # The reason is Gestimum's: read it from the state store rather than hard-coding it.
    with StateStore(crm_url) as store:
        kc2 = store.records(endpoint="contacts", keys=["KC2"])[0]
    assert kc2["reason_source"] == "gestimum" and kc2["reason"]
    assert "1 contacts row rejected" in contacts.description
    assert f'KC2: Gestimum said: "{kc2["reason"]}"' in contacts.description  # its words, labelled
    table = contacts.metadata["rows"].value
    assert [(r.data["source_key"], r.data["reason"], r.data["rejected_by"]) for r in table.records] == [
        ("KC2", kc2["reason"], "gestimum")
    ]
    assert contacts.metadata["rejected"].value == 1

    # A local rejection (our validation) shows the same way, with the field it names.
    comptes = run.checks["gestimum/comptes:no_rejected_lines"]
    assert not comptes.passed and "BAD1" in comptes.description and "CPT_LIB" in comptes.description
    assert comptes.metadata["rows"].value.records[0].data["rejected_by"] == "local"

    # Gestimum's statistics add up everywhere; nothing waits too long; nothing is in doubt.
    for endpoint in ENDPOINTS.names:
        stats = run.checks[f"gestimum/{endpoint}:statistics_consistent"]
        assert stats.passed and stats.severity == ERROR, stats.description
        assert run.checks[f"gestimum/{endpoint}:no_rows_waiting_too_long"].passed
    assert run.checks["gestimum/documents_stock:no_delivery_unknown"].passed
    assert run.checks["gestimum/references_clients_articles:no_rejected_lines"].passed
    assert {k for k in run.checks if k.startswith("crm/")} == {
        f"crm/{r}:source_contract" for r in ("customers", "contacts", "stock_movements", "customer_item_references")
    }
    assert all(run.checks[k].passed for k in run.checks if k.startswith("crm/"))

    # The sink's metadata: Gestimum's journal (the reason is in it) and counts as numbers.
    sink = run.metadata["gestimum/contacts"]
    assert kc2["reason"] in sink["gestimum_journal"] and sink["rejected"] == 1 and sink["imported"] == 1

    # Fixed in the CRM: the next run sends it, and the check passes again.
    execute(crm_url, [("UPDATE crm.contacts SET customer_code = 'OK1' WHERE code = 'KC2'", ())])
    fixed = run_sync(crm_url, simulator.url, partition=DAY)
    assert fixed.checks["gestimum/contacts:no_rejected_lines"].passed


def test_rows_held_longer_than_the_configured_age_fail_the_waiting_check(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    _seed_with_rejections(crm_url)
    assert run_sync(crm_url, simulator.url, partition=DAY).success  # the contact is held from now on
    time.sleep(0.2)  # a run's steps follow each other in one process, faster than the 0.1 s below
    checks = [c for e in ENDPOINTS.names for c in build_state_checks(e, max_waiting_minutes=1 / 600)]  # 0.1 s
    run = run_sync(crm_url, simulator.url, partition=DAY, asset_checks=checks)  # nothing changed: still held
    assert run.success, run.failures
    waiting = run.checks["gestimum/contacts:no_rows_waiting_too_long"]
    assert not waiting.passed and waiting.severity == WARN
    assert waiting.metadata["held_too_long"].value == 1 and waiting.metadata["pending_too_long"].value == 0
    assert "1 held" in waiting.description and "parent" in waiting.description
    assert run.checks["gestimum/clients:no_rows_waiting_too_long"].passed  # nothing left there


def test_statistics_that_do_not_add_up_fail_a_blocking_check(crm_url: str, simulator: GestimumSimulator) -> None:
    _seed_with_rejections(crm_url)
    simulator.add_fault(Fault("bad_stats", endpoint="clients"))
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert not run.success
    stats = run.checks["gestimum/clients:statistics_consistent"]
    assert not stats.passed and stats.severity == ERROR and stats.blocking
    assert "imported +" in stats.description  # the parser's own words on what does not add up
    # Blocking: the contacts sink (downstream of clients) did not run; independent sinks did.
    assert "gestimum/contacts" not in run.metadata
    assert run.metadata["gestimum/comptes"]["imported"] == 1
    assert run.checks["gestimum/documents_stock:statistics_consistent"].passed


def test_a_relation_that_breaks_the_source_contract_fails_its_check_before_any_read(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    _seed_with_rejections(crm_url)
    execute(crm_url, [("ALTER TABLE crm.contacts DROP COLUMN phone", ())])
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert not run.success
    contract = run.checks["crm/contacts:source_contract"]
    assert not contract.passed and contract.severity == ERROR and contract.blocking
    assert "crm.contacts lacks column(s): phone" in contract.description
    assert not {"crm/contacts", "transform/contacts", "gestimum/contacts"} & set(run.metadata)
    assert any("Nothing was read" in f for f in run.failures)
    # The other relations meet the contract and sync as usual.
    assert run.checks["crm/customers:source_contract"].passed
    assert run.metadata["gestimum/clients"]["imported"] == 1


def test_statistics_problems_name_each_disagreement() -> None:
    report = SendReport("documents_stock", dry_run=False, lines_sent=3, imported=2, rejected=0)
    problems = statistics_problems(report, in_flight_after=2)
    assert problems == [
        "2 imported + 0 rejected = 2, but 3 lines were sent",
        "2 stock lines imported, but Gestimum reported no document created",
        "2 rows are still in flight after every request was answered",
    ]
    consistent = SendReport("clients", dry_run=False, lines_sent=2, imported=2)
    assert statistics_problems(consistent, in_flight_after=0) == []
    missing_reason = SendReport("clients", dry_run=False, lines_sent=2, imported=1, rejected=1)
    assert statistics_problems(missing_reason, in_flight_after=0) == ["1 lines rejected, but 0 reasons recorded"]


def test_health_findings_on_an_empty_endpoint(database_url: str) -> None:
    with StateStore(database_url) as store:
        store.migrate()
        assert health.rejections(store, "clients") == health.Finding(
            True, "no clients row is rejected", {"rejected": 0}
        )
        waiting = health.waiting_too_long(store, "clients", max_age_seconds=3600)
        assert waiting.passed and waiting.summary == "no clients row has waited longer than 60 minutes"
        assert health.delivery_unknown(store, "documents_stock").passed


def test_a_rejected_reference_is_named_as_people_write_its_key(crm_url: str, simulator: GestimumSimulator) -> None:
    """A composite key reads `customer / item` in the check, not as the JSON array the store keeps."""
    insert_customers(crm_url, [("OK1", "Bonne Entreprise", None, None, None, None, None, None, DAY_TS)])
    insert_references(crm_url, [("OK1", "ZZ999", "REF-1", "5.25", DAY_TS)])  # an item Gestimum lacks
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert run.success, run.failures

    check = run.checks["gestimum/references_clients_articles:no_rejected_lines"]
    assert not check.passed
    assert [r.data["source_key"] for r in check.metadata["rows"].value.records] == ["OK1 / ZZ999"]
    assert "OK1 / ZZ999: Gestimum said:" in check.description and "[" not in check.description.split(":")[0]
