"""`gestimum-pipeline history`: one row's whole story, read from a state store filled by real runs
of the graph against the simulator (the standard CRM: rows refused locally, by Gestimum, held)."""

from __future__ import annotations

import json
import sys

import dagster as dg
import pytest
from invariants import assert_no_secret
from reliability import DAY_TS, Deployment, environment, execute, run_job

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings

ACTOR = "alice.operator"


def history(capsys: pytest.CaptureFixture[str], dep: Deployment, *args: str) -> tuple[int, str, str]:
    try:
        code = cli(["history", "--database-url", dep.state_url, *args])
    except SystemExit as exc:
        code = 1 if exc.code not in (0, None) else 0
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out = capsys.readouterr()
    assert_no_secret({"stdout": out.out, "stderr": out.err}, dep.secrets)
    return code, out.out, out.err


def test_history_explains_a_contact_gestimum_rejected_with_its_reason_and_the_next_step(
    synced: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = synced
    code, out, _ = history(capsys, dep, "--endpoint", "contacts", "K4", "--json")
    assert code == 0
    story = json.loads(out)
    assert story["status"] == "rejected"
    # Gestimum's own reason (the simulator's journal line for this contact's unknown customer).
    gestimum_reason = story["record"]["reason"]
    assert story["record"]["reason_source"] == "gestimum" and "NOPE" in gestimum_reason
    versions = [e for e in story["timeline"] if e["kind"] == "version"]
    assert len(versions) == 1 and versions[0]["event"] == "stage"
    assert versions[0]["content_hash"] == story["record"]["content_hash"] and versions[0]["run_id"]
    requests = [e for e in story["timeline"] if e["kind"] == "request"]
    assert len(requests) == 1
    (request,) = requests
    assert request["answer"] == "rejected" and request["reason"] == gestimum_reason
    assert request["request_id"] == story["record"]["request_id"] and request["run_id"] == versions[0]["run_id"]
    assert request["rejected"] >= 1 and request["lines"] == request["imported"] + request["rejected"]
    assert request["content_hash"] == versions[0]["content_hash"]
    assert "retry --endpoint contacts K4" in story["next_step"]

    code, text, _ = history(capsys, dep, "--endpoint", "contacts", "K4")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "contacts K4: rejected"
    assert any("CRM version staged in run" in line for line in lines)
    assert any(f"request {request['request_id']}" in line and gestimum_reason in line for line in lines)
    assert lines[-1].startswith("next step: ") and "gestimum-pipeline retry --endpoint contacts K4" in lines[-1]


def test_history_shows_versions_actions_and_follows_the_row_to_imported(
    synced: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = synced
    # Held behind its parent, refused locally: the next step names the parent.
    _, out, _ = history(capsys, dep, "--endpoint", "contacts", "K3", "--json")
    held = json.loads(out)
    assert held["status"] == "held" and "--endpoint clients C4" in held["next_step"]
    _, out, _ = history(capsys, dep, "--endpoint", "clients", "C4", "--json")
    local = json.loads(out)
    assert local["status"] == "rejected" and [e["event"] for e in local["timeline"]] == ["stage_invalid"]
    assert local["timeline"][0]["reason"] == local["reason"] and "no line to retry" in local["next_step"]

    # The operator ignores K4, then the CRM row is fixed: a second version, imported.
    assert cli(["ignore", "--database-url", dep.state_url, "--endpoint", "contacts", "K4", "--actor", ACTOR,
                "--note", "asked the sales team", "--yes"]) == 0  # fmt: skip
    execute(
        dep.crm_url,
        [("UPDATE crm.contacts SET customer_code = 'C1', updated_at = updated_at + interval '1 second' "
          "WHERE code = 'K4'", None)],
    )  # fmt: skip
    assert run_job(dep).success
    capsys.readouterr()
    _, out, _ = history(capsys, dep, "--endpoint", "contacts", "K4", "--json")
    story = json.loads(out)
    assert story["status"] == "imported" and story["next_step"] == "none: Gestimum holds the version staged"
    kinds = [(e["kind"], e.get("event") or e.get("action") or e.get("answer")) for e in story["timeline"]]
    assert kinds == [
        ("version", "stage"),
        ("request", "rejected"),
        ("action", "ignore"),
        ("version", "stage"),
        ("request", "imported"),
    ]
    first, second = story["timeline"][0], story["timeline"][3]
    assert first["content_hash"] != second["content_hash"] and first["run_id"] != second["run_id"]
    assert story["timeline"][4]["content_hash"] == second["content_hash"] == story["record"]["imported_hash"]
    assert story["timeline"][2]["actor"] == ACTOR and story["timeline"][2]["reason"] == "asked the sales team"


def test_history_of_an_unknown_key_and_endpoint(synced: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = history(capsys, synced, "--endpoint", "contacts", "NOBODY")
    assert code == 0
    assert out.splitlines()[0] == "contacts NOBODY: not in the state store"
    assert "has read this key" in out.splitlines()[-1]
    code, _, err = history(capsys, synced, "--endpoint", "contactz", "K4")
    assert code == 1 and "unknown endpoint 'contactz'" in err


def test_the_operator_history_job_shows_the_story_in_its_run_log(synced: Deployment) -> None:
    dep = synced
    defs = build_definitions(Settings(), resources=dep.resources())
    job = defs.resolve_job_def("operator_history")
    with dg.instance_for_test() as instance, environment(dep.env()):
        result = job.execute_in_process(
            run_config={"ops": {"row_history": {"config": {"endpoint": "contacts", "source_key": "K4"}}}},
            instance=instance,
        )
        assert result.success
        logged = [e.message for e in instance.all_logs(result.run_id) if "contacts K4: rejected" in e.message]
        assert len(logged) == 1
        assert "Gestimum's journal: " in logged[0] and "next step: " in logged[0]
        assert "gestimum-pipeline retry --endpoint contacts K4" in logged[0]
        assert instance.get_run_by_id(result.run_id).tags["gestimum/trigger"] == "operator"
        # A typo fails config validation, before any run starts.
        with pytest.raises(dg.DagsterInvalidConfigError, match="contactz"):
            job.execute_in_process(
                run_config={"ops": {"row_history": {"config": {"endpoint": "contactz", "source_key": "K4"}}}},
                instance=instance,
            )


def test_history_of_a_colliding_code_names_the_collision_and_the_rename(
    synced: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = synced
    execute(
        dep.crm_url,
        [
            (
                "INSERT INTO crm.customers (code, name, updated_at) "
                "VALUES ('ACME', 'Acme', %s), ('acme', 'Acme bis', %s)",
                (DAY_TS, DAY_TS),
            )
        ],
    )
    assert run_job(dep).success
    capsys.readouterr()
    _, out, _ = history(capsys, dep, "--endpoint", "clients", "acme", "--json")
    story = json.loads(out)
    assert story["status"] == "rejected" and "differs only by case" in story["reason"]
    events = [e["event"] for e in story["timeline"]]
    assert events == ["stage", "collide"]
    assert story["timeline"][1]["reason"] == story["reason"]
    assert (
        "rename one of the colliding codes" in story["next_step"]
        and "retry --endpoint clients acme" in (story["next_step"])
    )
