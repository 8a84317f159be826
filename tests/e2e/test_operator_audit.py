"""What the audit trail records of an operator job launched from the UI (issue 23, Medium): the
run, its tags, and that its actor is only declared. The OSS webserver has no login: anyone who
reaches it may launch `operator_ignore` under any name."""

from __future__ import annotations

import dagster as dg
import pytest
from invariants import statuses
from reliability import Deployment, environment

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.operator_jobs import ACTOR_DECLARED
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync.state import StateStore

pytestmark = pytest.mark.slow


def test_an_operator_job_records_its_run_its_tags_and_an_unproven_actor(synced: Deployment) -> None:
    dep = synced
    defs = build_definitions(Settings(), resources=dep.resources())
    config = {"endpoint": "contacts", "source_keys": ["K4"], "actor": "the.ceo", "note": "not ours"}
    with environment(dep.env()), dg.instance_for_test() as instance:
        result = defs.resolve_job_def("operator_ignore").execute_in_process(
            run_config={"ops": {"ignore_rows": {"config": config}}},
            instance=instance,
            tags={"launched_from": "launchpad-test"},
        )
        run_tags = dict(instance.get_run_by_id(result.run_id).tags)
    assert statuses(dep.state_url, "contacts")["K4"] == "ignored"
    with StateStore(dep.state_url) as store:
        (action,) = [a for a in store.actions() if a["action"] == "ignore"]
    assert action["actor"] == "the.ceo"
    detail = action["detail"]
    assert detail["run_id"] == result.run_id
    assert detail["run_tags"] == run_tags
    assert detail["run_tags"]["launched_from"] == "launchpad-test"
    assert detail["run_tags"]["gestimum/trigger"] == "operator"
    assert detail["actor_verified"] is False and detail["actor_source"] == ACTOR_DECLARED
