"""The operator's actions as Dagster jobs (the Launchpad's retry / ignore / reconcile): typed
config, the run log, the state store's audit trail with the run id, and the next sync acting
on them. The same operations as the `gestimum-pipeline` command (sync/operator.py)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from invariants import statuses
from reliability import Deployment, environment, run_job

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync.state import StateStore

pytestmark = pytest.mark.slow
ACTOR = "bob.operator"


def _launch(
    dep: Deployment, instance: dg.DagsterInstance, job: str, op: str, config: dict[str, Any]
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(Settings(), resources=dep.resources())
    with environment(dep.env()):
        return defs.resolve_job_def(job).execute_in_process(
            run_config={"ops": {op: {"config": config}}}, instance=instance, raise_on_error=False
        )


def _actions(dep: Deployment) -> list[dict[str, Any]]:
    with StateStore(dep.state_url) as store:
        return store.actions()


def test_retry_from_the_launchpad_is_logged_audited_and_sent_by_the_next_sync(synced: Deployment) -> None:
    dep = synced
    assert statuses(dep.state_url, "documents_stock")["8"] == "rejected"  # unknown warehouse 999
    dep.simulator.config.warehouses = (*dep.simulator.config.warehouses, "999")
    with dg.instance_for_test() as instance:
        result = _launch(
            dep,
            instance,
            "operator_retry",
            "retry_rows",
            {"endpoint": "documents_stock", "source_keys": ["8"], "actor": ACTOR},
        )
        assert result.success
        logged = [e.message for e in instance.all_logs(result.run_id) if "retry: 1 documents_stock rows" in e.message]
        assert logged, "the run log says what the action did"
        assert instance.get_run_by_id(result.run_id).tags["gestimum/trigger"] == "operator"
    action = [a for a in _actions(dep) if a["action"] == "retry"]
    assert [(a["actor"], a["source_key"], a["detail"]["run_id"]) for a in action] == [(ACTOR, "8", result.run_id)]
    assert statuses(dep.state_url, "documents_stock")["8"] == "pending"

    documents_before = len(dep.simulator.state.documents)
    run = run_job(dep)
    assert run.success, run.failures
    assert statuses(dep.state_url, "documents_stock")["8"] == "imported"
    assert len(dep.simulator.state.documents) == documents_before + 1


def test_ignore_and_bad_config_from_the_launchpad(synced: Deployment) -> None:
    dep = synced
    with dg.instance_for_test() as instance:
        ignored = _launch(
            dep,
            instance,
            "operator_ignore",
            "ignore_rows",
            {"endpoint": "contacts", "source_keys": ["K4"], "actor": ACTOR, "note": "duplicate of K1"},
        )
        assert ignored.success
        # `endpoint` is an enum: an unknown one fails config validation, before any run starts.
        runs_before = len(instance.get_run_records())
        with pytest.raises(dg.DagsterInvalidConfigError, match=r"endpoint.*not in enum type Endpoint"):
            _launch(
                dep,
                instance,
                "operator_ignore",
                "ignore_rows",
                {"endpoint": "nope", "source_keys": ["K4"], "actor": ACTOR},
            )
        assert len(instance.get_run_records()) == runs_before
        config_type = build_definitions(Settings()).resolve_job_def("operator_ignore").run_config_schema.config_type
        endpoint_type = config_type.fields["ops"].config_type.fields["ignore_rows"].config_type
        endpoint_type = endpoint_type.fields["config"].config_type.fields["endpoint"].config_type
        assert set(endpoint_type.config_values) == {
            "comptes",
            "clients",
            "contacts",
            "documents_stock",
            "references_clients_articles",
        }
        # Reconcile of a movement not in delivery_unknown: applied to nothing, the run says so.
        reconcile = _launch(
            dep,
            instance,
            "operator_reconcile",
            "reconcile_rows",
            {"source_keys": ["1"], "actor": ACTOR, "delivered": False},
        )
        assert not reconcile.success
    assert statuses(dep.state_url, "contacts")["K4"] == "ignored"
    ignore = [a for a in _actions(dep) if a["action"] == "ignore"]
    assert [(a["source_key"], a["detail"]["reason"], a["detail"]["run_id"]) for a in ignore] == [
        ("K4", "duplicate of K1", ignored.run_id)
    ]
    run = run_job(dep)
    assert run.success, run.failures
    assert statuses(dep.state_url, "contacts")["K4"] == "ignored"  # not sent again
