"""Deletions reported (issue 20, item 7): Gestimum's import endpoints cannot delete, so a CRM row
deleted after Gestimum imported it is listed by its sink's `no_crm_row_deleted_after_import`
check (customer, contact, reference, movement) until someone removes it in Gestimum and marks it
handled with `ignore`. Real runs of the graph against the simulator, real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from invariants import statuses
from reliability import Deployment, execute, run_job

from gestimum_pipeline.cli import main as cli

pytestmark = pytest.mark.slow
CHECK = "no_crm_row_deleted_after_import"


def deletions(dep: Deployment) -> dict[str, Any]:
    """{endpoint: the check's evaluation} after a run."""
    run = run_job(dep)
    found = {e.asset_key.path[-1]: e for e in run.result.get_asset_check_evaluations() if e.check_name == CHECK}
    assert set(found) == {"comptes", "clients", "contacts", "references_clients_articles", "documents_stock"}
    return found


def listed(evaluation: Any) -> list[str]:
    rows = evaluation.metadata.get("rows")
    return sorted(r.data["source_key"] for r in rows.value.records) if rows else []


def test_rows_deleted_after_import_are_listed_until_marked_handled(synced: Deployment) -> None:
    dep = synced
    before = deletions(dep)
    assert all(e.passed for e in before.values())
    assert before["contacts"].metadata["imported_checked"].value == 2  # K1, K2 (K3 held, K4 rejected)

    execute(
        dep.crm_url,
        [
            ("DELETE FROM crm.customers WHERE code = 'C3'", None),
            ("DELETE FROM crm.contacts WHERE code IN ('K2', 'K4')", None),  # K4 was never imported
            ("DELETE FROM crm.customer_item_references WHERE customer_code = 'C1' AND item_code = 'A10'", None),
            ("DELETE FROM crm.stock_movements WHERE id IN (2, 8)", None),  # 8 was rejected by Gestimum
        ],
    )
    after = deletions(dep)
    assert listed(after["comptes"]) == listed(after["clients"]) == ["C3"]
    assert listed(after["contacts"]) == ["K2"]
    assert listed(after["references_clients_articles"]) == ['["C1", "A10"]']
    assert listed(after["documents_stock"]) == ["2"]
    movement = after["documents_stock"]
    assert not movement.passed and movement.severity.value == "WARN"
    assert movement.metadata["rows"].value.records[0].data["document"]  # the document to remove in Gestimum
    assert "remove it in Gestimum" in movement.description and "ignore --endpoint documents_stock" in (
        movement.description
    )
    assert movement.metadata["deleted_after_import"].value == 1

    # Removed in Gestimum by hand: marked handled, the check stops listing it.
    assert statuses(dep.state_url, "contacts")["K2"] == "imported"
    code = cli(["ignore", "--database-url", dep.state_url, "--endpoint", "contacts", "K2", "--actor", "ops",
                "--note", "deleted in Gestimum", "--yes"])  # fmt: skip
    assert code == 0 and statuses(dep.state_url, "contacts")["K2"] == "ignored"
    handled = deletions(dep)
    assert handled["contacts"].passed and listed(handled["documents_stock"]) == ["2"]
