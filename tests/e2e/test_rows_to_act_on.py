"""One list of the rows to act on (issue 24 item 3): the `rows_to_act_on` check of the preflight
asset lists every rejected, held and delivery-unknown row across the five endpoints, each with
its key, status, labelled reason, since when and next step; the operator jobs re-evaluate it, so
an action shows at once; the next step's config is the one the Launchpad takes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from reliability import Deployment, deployment, environment, run_job, seed_standard
from sync_harness import insert_movements

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.simulator.faults import CLOSE_AFTER_READ, Fault

pytestmark = pytest.mark.slow
CHECK = dg.AssetCheckKey(dg.AssetKey(["sync", "preflight"]), "rows_to_act_on")
ACTOR = "alice.operator"


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def _view(instance: dg.DagsterInstance, run_id: str) -> dg.AssetCheckEvaluation:
    """The check's evaluation recorded by run `run_id` (a sync or an operator job)."""
    found = []
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_check_key == CHECK:
            found.append(evaluation)
    assert len(found) == 1, f"{len(found)} evaluations of {CHECK} in run {run_id}"
    return found[0]


def _rows(evaluation: dg.AssetCheckEvaluation) -> dict[tuple[str, str], dict[str, Any]]:
    table = evaluation.metadata["rows"]
    assert isinstance(table, dg.TableMetadataValue)
    return {(r.data["endpoint"], r.data["key"]): r.data for r in table.records}


def _launch(dep: Deployment, instance: dg.DagsterInstance, job: str, op: str, config: dict[str, Any]) -> str:
    defs = build_definitions(Settings(), resources=dep.resources())
    with environment(dep.env()):
        result = defs.resolve_job_def(job).execute_in_process(
            run_config={"ops": {op: {"config": config}}}, instance=instance, raise_on_error=False
        )
    assert result.success
    return result.run_id


def _config(next_step: str, job: str) -> dict[str, Any]:
    """The Launchpad config a next step gives, e.g. `operator_retry with {...}`."""
    start = next_step.index(f"{job} with ") + len(f"{job} with ")
    config, _ = json.JSONDecoder().raw_decode(next_step[start:])
    return {**config, "actor": ACTOR}


def test_one_list_of_rows_to_act_on_updated_by_the_operator_jobs(dep: Deployment) -> None:
    with dg.instance_for_test() as instance:
        run = run_job(dep, instance=instance)
        assert run.success, run.failures
        view = _view(instance, run.run_id)
        assert not view.passed and view.severity == dg.AssetCheckSeverity.WARN
        rows = _rows(view)

        # Gestimum's words, quoted and labelled; the next step is the operator job with its config.
        k4 = rows["contacts", "K4"]
        assert (k4["status"], k4["reason_by"]) == ("rejected", "Gestimum")
        assert k4["reason"].startswith('Gestimum said: "') and "NOPE" in k4["reason"]
        assert 'operator_retry with {"endpoint": "contacts", "source_keys": ["K4"]' in k4["next_step"]
        # A held contact is named, with its parent and why the parent is not imported.
        k3 = rows["contacts", "K3"]
        assert k3["status"] == "held" and k3["reason"] == "held for its parent clients C4, which is rejected"
        assert "clients C4" in k3["next_step"]
        # Our validation: the CRM field to fix.
        c4 = rows["clients", "C4"]
        assert (c4["status"], c4["reason_by"]) == ("rejected", "us") and c4["reason"].startswith("Our validation: ")
        assert c4["next_step"].startswith("fix crm.customers.name")
        assert rows["documents_stock", "9"]["next_step"].startswith("fix crm.stock_movements.quantity")
        # A composite key as people write it, not a JSON array, in the view and in the job's config.
        reference = rows["references_clients_articles", "C3 / ZZZ"]
        assert _config(reference["next_step"], "operator_retry")["source_keys"] == ["C3 / ZZZ"]
        assert all(not key.startswith("[") for _, key in rows)
        assert all(r["since"] for r in rows.values())
        # One count, the same everywhere: the contacts sink's metadata and the view agree on held rows.
        held = [k for (e, k), r in rows.items() if e == "contacts" and r["status"] == "held"]
        assert run.metadata["gestimum/contacts"]["held_for_parent"] == len(held) == 1
        assert view.metadata["held"].value == sum(r["status"] == "held" for r in rows.values())
        assert view.metadata["rejected"].value == sum(r["status"] == "rejected" for r in rows.values())
        assert view.metadata["runbook"].value == "docs/operations.md#rows-to-act-on"

        # A movement whose delivery is unknown: the stock sink fails, the view lists it at the next evaluation.
        insert_movements(dep.crm_url, [(10, "in", "001", "ELS", 10, "2026-03-10 11:00+01")])
        dep.simulator.add_fault(Fault(CLOSE_AFTER_READ, endpoint="documents_stock", process=True))
        failed = run_job(dep, instance=instance)
        assert not failed.success

        # The causes of movement 8 and reference C3 / ZZZ are fixed in Gestimum; the retries' configs are
        # the view's own.
        dep.simulator.config.warehouses = (*dep.simulator.config.warehouses, "999")
        dep.simulator.config.items = (*dep.simulator.config.items, "ZZZ")
        _launch(dep, instance, "operator_retry", "retry_rows", _config(reference["next_step"], "operator_retry"))
        config = _config(rows["documents_stock", "8"]["next_step"], "operator_retry")
        assert config == {"endpoint": "documents_stock", "source_keys": ["8"], "actor": ACTOR}
        retried = _launch(dep, instance, "operator_retry", "retry_rows", config)
        after_retry = _view(instance, retried)
        listed = _rows(after_retry)
        assert ("documents_stock", "8") not in listed  # pending now: the view says so without a sync
        unknown = listed["documents_stock", "10"]
        assert unknown["status"] == "delivery_unknown"
        assert after_retry.severity == dg.AssetCheckSeverity.ERROR
        reconcile = _config(unknown["next_step"], "operator_reconcile")
        assert reconcile["source_keys"] == ["10"] and reconcile["delivered"] is True
        # The check's latest evaluation is the operator job's: what the UI shows.
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
        assert latest.run_id == retried

        # Gestimum did create movement 10's document: reconciled as delivered, it leaves the view.
        reconcile["document"] = dep.simulator.state.documents[-1].number
        reconciled = _launch(dep, instance, "operator_reconcile", "reconcile_rows", reconcile)
        assert ("documents_stock", "10") not in _rows(_view(instance, reconciled))

        # The next sync delivers movement 8, and its view no longer lists it.
        again = run_job(dep, instance=instance)
        assert again.success, again.failures
        final = _rows(_view(instance, again.run_id))
        assert not {
            ("documents_stock", "8"),
            ("documents_stock", "10"),
            ("references_clients_articles", "C3 / ZZZ"),
        } & set(final)
        assert ("contacts", "K4") in final
