"""The operator's quarantine, for real: `gestimum-pipeline rejections | retry | ignore | reconcile |
actions` against a state store filled by real runs of the graph (with faults where needed).

In process through `cli.main(argv)` (output captured), and through the installed
`gestimum-pipeline` command in a subprocess for what only a real process shows (exit
codes, no terminal to confirm on, environment variables).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from invariants import CaseRecord, assert_no_secret, check_invariants, records, statuses
from reliability import Deployment, deployment, execute, run_job, seed_standard

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.db import url_with
from gestimum_pipeline.simulator.server import Fault
from gestimum_pipeline.sync.state import StateStore

ACTOR = "alice.operator"


def gp(dep: Deployment, *args: str) -> list[str]:
    return [args[0], "--database-url", dep.state_url, *args[1:]]


def run_cli(capsys: pytest.CaptureFixture[str], dep: Deployment, *args: str) -> tuple[int, str, str]:
    try:
        code = cli(gp(dep, *args))
    except SystemExit as exc:  # refusals exit with their message, as from a shell
        code = 1 if exc.code not in (0, None) else 0
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out = capsys.readouterr()
    assert_no_secret({"stdout": out.out, "stderr": out.err}, dep.secrets)
    return code, out.out, out.err


def actions(dep: Deployment) -> list[dict]:
    with StateStore(dep.state_url) as store:
        return store.actions()


def test_rejections_lists_rejected_held_and_undelivered_with_filters(
    synced: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = synced
    code, out, _ = run_cli(capsys, dep, "rejections")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["endpoint", "source_key", "status", "attempts", "updated_at", "reason"]
    # C4 (emoji) refused locally twice, K3 held, K4 / ZZZ reference / movement 8 refused by Gestimum, 9 locally.
    expected = {
        ("clients", "C4", "rejected"),
        ("comptes", "C4", "rejected"),
        ("contacts", "K3", "held"),
        ("contacts", "K4", "rejected"),
        ("documents_stock", "8", "rejected"),
        ("documents_stock", "9", "rejected"),
        ("references_clients_articles", '["C3", "ZZZ"]', "rejected"),
    }
    body = out.splitlines()[1:-2]
    assert len(body) == len(expected)
    for endpoint, key, status in expected:
        assert any(line.startswith(endpoint) and f" {key} " in line and status in line for line in body), key
    _, out_json, _ = run_cli(capsys, dep, "rejections", "--json")
    assert {(r["endpoint"], r["source_key"], r["status"]) for r in json.loads(out_json)} == expected
    assert out.rstrip().endswith("7 rows")

    _, out, _ = run_cli(capsys, dep, "rejections", "--endpoint", "contacts", "--json")
    rows = json.loads(out)
    assert {(r["source_key"], r["status"]) for r in rows} == {("K3", "held"), ("K4", "rejected")}
    assert all("line" not in r and r["reason"] for r in rows)
    assert {r["reason_source"] for r in rows} == {"parent", "gestimum"}

    _, out, _ = run_cli(capsys, dep, "rejections", "--status", "held", "--json")
    assert [r["source_key"] for r in json.loads(out)] == ["K3"]
    _, out, _ = run_cli(capsys, dep, "rejections", "--reason", "n'existe pas", "--json")
    assert {r["source_key"] for r in json.loads(out)} == {"K4", "8", '["C3", "ZZZ"]'}

    # Age: only rows whose last change is older than the threshold.
    _, out, _ = run_cli(capsys, dep, "rejections", "--older-than-hours", "24", "--json")
    assert json.loads(out) == []
    execute(
        dep.state_url,
        [("UPDATE gestimum_sync.records SET updated_at = now() - interval '2 days' WHERE source_key = 'K4'", None)],
    )
    _, out, _ = run_cli(capsys, dep, "rejections", "--older-than-hours", "24", "--json")
    assert [r["source_key"] for r in json.loads(out)] == ["K4"]

    code, _, err = run_cli(capsys, dep, "rejections", "--endpoint", "kontakts")
    assert code == 1 and "unknown endpoint 'kontakts'" in err
    code, _, err = run_cli(capsys, dep, "rejections", "--status", "lost")
    assert code == 1 and "unknown status lost" in err

    case = CaseRecord(
        "quarantine",
        "rejections_filters",
        "rejections: table and JSON; --endpoint, --status, --reason, --older-than-hours",
        "7 rows: rejected locally, by Gestimum, held",
    )
    case.add("after the run", check_invariants(dep.crm_url, dep.state_url, dep.simulator.state))
    case.save()


def test_retry_requeues_rows_gestimum_refused_and_refuses_rows_refused_locally(
    synced: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = synced
    # Without confirmation (no terminal, no --yes) nothing changes.
    code, _, err = run_cli(capsys, dep, "retry", "--endpoint", "documents_stock", "8")
    assert code == 1 and "without confirmation: pass --yes" in err
    assert statuses(dep.state_url, "documents_stock")["8"] == "rejected"

    # Movement 8 was refused for its unknown warehouse; the warehouse now exists in Gestimum.
    dep.simulator.config.warehouses = (*dep.simulator.config.warehouses, "999")
    code, out, err = run_cli(capsys, dep, "retry", "--endpoint", "documents_stock", "8", "9", "--actor", ACTOR, "--yes")
    assert code == 1  # 9 was refused locally (zero quantity): only a CRM fix can change it
    assert "retry: 1 rows now pending" in out
    assert "rejected locally, nothing to re-send" in err and "9" in err
    stock = statuses(dep.state_url, "documents_stock")
    assert (stock["8"], stock["9"]) == ("pending", "rejected")
    documents_before = len(dep.simulator.state.documents)
    run = run_job(dep)
    assert run.success, run.failures
    assert statuses(dep.state_url, "documents_stock")["8"] == "imported"
    assert len(dep.simulator.state.documents) == documents_before + 1
    logged = [a for a in actions(dep) if a["action"] == "retry"]
    assert [(a["actor"], a["endpoint"], a["source_key"]) for a in logged] == [(ACTOR, "documents_stock", "8")]
    assert datetime.now(UTC) - logged[0]["at"] < timedelta(minutes=5)
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)
    assert report.max_copies == 1
    case = CaseRecord(
        "quarantine",
        "retry",
        "retry: rows Gestimum refused go back to pending and are sent once; rows refused locally are refused "
        "(fix the CRM); nothing without confirmation",
        err.strip()[:160],
    )
    case.add("after the retried run", report)
    case.save()


def test_ignore_and_retry_of_held_rows_are_recorded_and_a_crm_change_reopens(
    synced: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = synced
    code, out, _ = run_cli(
        capsys, dep, "ignore", "--endpoint", "contacts", "K4", "--note", "test contact", "--actor", ACTOR, "--yes"
    )
    assert code == 0 and "ignore: 1 rows now ignored" in out
    assert statuses(dep.state_url, "contacts")["K4"] == "ignored"
    _, out, _ = run_cli(capsys, dep, "rejections", "--endpoint", "contacts", "--json")
    assert [r["source_key"] for r in json.loads(out)] == ["K3"]  # ignored rows leave the default list
    # Retrying a held row re-queues it; the next run holds it again while its parent is refused.
    code, _, _ = run_cli(capsys, dep, "retry", "--endpoint", "contacts", "K3", "--actor", ACTOR, "--yes")
    assert code == 0
    assert run_job(dep).success
    assert statuses(dep.state_url, "contacts")["K3"] == "held"

    # Changing the CRM row reopens an ignored row.
    execute(
        dep.crm_url,
        [
            (
                "UPDATE crm.contacts SET customer_code = 'C1', updated_at = updated_at + interval '1 second'"
                " WHERE code = 'K4'",
                None,
            )
        ],
    )
    assert run_job(dep).success
    assert statuses(dep.state_url, "contacts")["K4"] == "imported"
    assert dep.simulator.state.contacts["K4"]["CCT_ORIGIN"] == "C1"

    _, out, _ = run_cli(capsys, dep, "actions", "--json")
    logged = json.loads(out)
    assert [(a["action"], a["source_key"], a["actor"]) for a in logged] == [
        ("retry", "K3", ACTOR),
        ("ignore", "K4", ACTOR),
    ]
    assert logged[1]["detail"]["reason"] == "test contact"
    assert all(datetime.fromisoformat(a["at"]) > datetime.now(UTC) - timedelta(minutes=5) for a in logged)
    _, out, _ = run_cli(capsys, dep, "actions")
    assert "ignore  contacts  K4" in out and ACTOR in out
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)
    case = CaseRecord(
        "quarantine",
        "ignore",
        "ignore: leaves the list, recorded with note, actor and time; a CRM change reopens the row",
        "ignore: 1 rows now ignored",
    )
    case.add("after the CRM fix", report)
    case.save()


def test_interactive_confirmation(
    synced: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = synced
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["no", "yes"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    code, _, err = run_cli(capsys, dep, "ignore", "--endpoint", "contacts", "K4", "--actor", ACTOR)
    assert code == 1 and "not confirmed; nothing changed" in err
    assert statuses(dep.state_url, "contacts")["K4"] == "rejected"
    code, _, _ = run_cli(capsys, dep, "ignore", "--endpoint", "contacts", "K4", "--actor", ACTOR)
    assert code == 0 and statuses(dep.state_url, "contacts")["K4"] == "ignored"
    code, _, err = run_cli(capsys, dep, "ignore", "--endpoint", "contacts", "K4", "--actor", " ", "--yes")
    assert code == 1 and "pass --actor NAME" in err


@pytest.fixture
def in_doubt(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    """Movements 1-3 in delivery_unknown after a connection closed once Gestimum had imported them."""
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        d.simulator.add_fault(Fault("close_after_read", endpoint="documents_stock", process=True))
        run = run_job(d)
        assert not run.success
        d.simulator.clear_faults()
        assert run_job(d).success is False  # the rest is sent; the run still asks for reconciliation
        yield d


def test_reconcile_needs_confirmation_is_recorded_and_does_exactly_what_it_is_told(
    in_doubt: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = in_doubt
    document = dep.simulator.state.documents[0].number
    _, out, _ = run_cli(capsys, dep, "rejections", "--status", "delivery_unknown", "--json")
    assert sorted(r["source_key"] for r in json.loads(out)) == ["1", "2", "3"]

    code, _, err = run_cli(capsys, dep, "reconcile", "--delivered", "--document", document, "1", "2")
    assert code == 1 and "without confirmation" in err
    code, _, err = run_cli(capsys, dep, "reconcile", "--delivered", "1", "--yes")
    assert code == 1 and "--delivered needs --document" in err
    assert set(statuses(dep.state_url, "documents_stock").values()) >= {"delivery_unknown"}

    code, out, _ = run_cli(
        capsys, dep, "reconcile", "--delivered", "--document", document, "1", "2", "--actor", ACTOR, "--yes"
    )
    assert code == 0 and "reconcile-delivered: 2 rows now imported" in out
    # Movement 3 was in the same document, but suppose the operator releases it by mistake
    # together with 4, which is not in doubt: 4 is refused, 3 is released.
    code, out, err = run_cli(capsys, dep, "reconcile", "--release", "3", "4", "--actor", ACTOR, "--yes")
    assert code == 1 and "reconcile-release: 1 rows now pending" in out and "not in delivery_unknown" in err
    stock = records(dep.state_url, "documents_stock")
    assert stock["1"]["status"] == stock["2"]["status"] == "imported"
    assert stock["1"]["document"] == stock["2"]["document"] == document
    assert stock["3"]["status"] == "pending" and stock["4"]["status"] == "imported"
    logged = actions(dep)
    assert [(a["action"], a["source_key"], a["actor"], a["detail"].get("document")) for a in reversed(logged)] == [
        ("reconcile-delivered", "1", ACTOR, document),
        ("reconcile-delivered", "2", ACTOR, document),
        ("reconcile-release", "3", ACTOR, None),
    ]
    # The released movement is sent again: a second copy. The invariant check catches it, and it
    # is why the runbook says to release only what Gestimum does not have.
    assert run_job(dep).success
    with pytest.raises(AssertionError, match="movement 3"):
        check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)


def test_reconcile_the_right_way_leaves_every_movement_once(
    in_doubt: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = in_doubt
    document = dep.simulator.state.documents[0].number
    code, _, _ = run_cli(
        capsys, dep, "reconcile", "--delivered", "--document", document, "1", "2", "3", "--actor", ACTOR, "--yes"
    )
    assert code == 0
    run = run_job(dep)
    assert run.success, run.failures
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)
    assert report.max_copies == 1 and report.statuses["delivery_unknown"] == 0
    case = CaseRecord(
        "quarantine",
        "reconcile",
        "reconcile --delivered --document N ids / --release ids: only delivery_unknown rows, only confirmed, "
        "recorded with document, actor and time",
        "reconcile-delivered: 3 rows now imported",
    )
    case.add("after reconciling and the next run", report)
    case.save()


def test_the_installed_command_in_a_subprocess(in_doubt: Deployment) -> None:
    dep = in_doubt
    exe = shutil.which("gestimum-pipeline", path=str(Path(sys.executable).parent)) or "gestimum-pipeline"
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "SYNC_STATE_DATABASE_URL")}
    env["SYNC_STATE_DATABASE_URL"] = dep.state_url

    listed = subprocess.run(
        [exe, "rejections", "--status", "delivery_unknown", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["source_key"] for r in json.loads(listed.stdout)) == ["1", "2", "3"]

    # No terminal and no --yes: refused, nothing changed.
    refused = subprocess.run(
        [exe, "reconcile", "--release", "1"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert refused.returncode != 0 and "without confirmation: pass --yes" in refused.stderr
    assert statuses(dep.state_url, "documents_stock")["1"] == "delivery_unknown"

    # The default actor is the OS user.
    import getpass

    done = subprocess.run(
        [exe, "reconcile", "--release", "1", "--yes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert actions(dep)[0]["actor"] == getpass.getuser()

    # An unreachable state store: the setting is named, the password is not shown.
    env["SYNC_STATE_DATABASE_URL"] = url_with(dep.state_url, host="127.0.0.1", port=1)
    down = subprocess.run([exe, "rejections"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode != 0
    assert "cannot connect to SYNC_STATE_DATABASE_URL" in down.stderr and ":***@127.0.0.1:1/" in down.stderr
    assert "Traceback" not in down.stderr
    for result in (listed, refused, done, down):
        assert_no_secret({"stdout": result.stdout, "stderr": result.stderr}, dep.secrets)
