"""The documented command line: `dg launch --assets '*' --partition-range A...B` with only the
environment variables set, and `dg check defs` on the project; neither prints a SupersessionWarning."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_services import environ_without_settings
from sync_harness import insert_contacts, insert_customers, insert_movements, run_sync, state_records

from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The active environment's `dg`: the project is installed there (no project venv of its own).
DG = [str(BIN / "dg")]


@pytest.fixture
def simulator() -> Iterator[GestimumSimulator]:
    with GestimumSimulator(SimulatorConfig()) as sim:
        yield sim


def _env(crm_url: str, gestimum_url: str, dagster_home: Path) -> dict[str, str]:
    env = environ_without_settings()
    env.update(
        CRM_DATABASE_URL=crm_url,
        GESTIMUM_URL=gestimum_url,
        GESTIMUM_FICHIER="DEMO.Gestimum",
        GESTIMUM_UTILISATEUR="DEMO",
        GESTIMUM_MOT_PASSE="",
        DAGSTER_HOME=str(dagster_home),
    )
    return env


def test_materialize_a_partition_range_from_the_command_line(
    crm_url: str, simulator: GestimumSimulator, tmp_path: Path
) -> None:
    insert_customers(
        crm_url,
        [
            ("A1", "Atelier Un", None, None, None, None, None, None, "2026-02-01 09:00+01"),
            ("A2", "Atelier Deux", None, None, None, None, None, None, "2026-02-02 18:00+01"),
            ("A3", "Atelier Trois", None, None, None, None, None, None, "2026-02-03 23:59:59+01"),
        ],
    )
    insert_contacts(crm_url, [("KA2", "A2", "Roux", "Léa", None, None, "2026-02-02 18:00+01")])
    insert_movements(crm_url, [(1, "in", "001", "ELS", 3, "2026-02-03 08:00+01")])
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    command = [*DG, "launch", "--assets", "*", "--partition-range", "2026-02-01...2026-02-03"]
    done = subprocess.run(
        command, env=_env(crm_url, simulator.url, tmp_path), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SupersessionWarning" not in done.stdout + done.stderr
    assert "BetaWarning" not in done.stdout + done.stderr  # our backfill_policy's, filtered by message
    assert "plain HTTP" not in done.stdout + done.stderr  # the simulator on this machine, no password
    assert set(simulator.state.customers) == {"A1", "A2", "A3"}
    assert simulator.state.contacts["KA2"]["CCT_ORIGIN"] == "A2"
    assert [len(d.lines) for d in simulator.state.documents] == [1]
    # One run for the three days: each endpoint sent one request.
    assert sum(1 for r in simulator.state.requests if r.endpoint == "clients") == 1
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        (run,) = instance.get_runs()
        # Dagster's own asset job, tagged like a gestimum_sync run by its first step.
        assert run.job_name.startswith("__ASSET_JOB")
        assert run.tags["gestimum/company_file"] == "DEMO.Gestimum"
        assert run.tags["gestimum/trigger"] == "asset_graph"
        # Each day its own CRM rows and lines: one customer a day, the contact on the 2nd.
        days = ["2026-02-01", "2026-02-02", "2026-02-03"]
        per_day = {}
        for key in ("crm/customers", "gestimum/contacts"):
            for record in instance.fetch_materializations(dg.AssetKey.from_user_string(key), limit=100).records:
                mat = record.asset_materialization
                assert mat is not None
                per_day[key, mat.partition] = mat.metadata
        assert [per_day["crm/customers", d]["dagster/partition_row_count"].value for d in days] == [1, 1, 1]
        assert [per_day["gestimum/contacts", d]["lines_sent"].value for d in days] == [0, 1, 0]
        assert per_day["gestimum/contacts", days[-1]]["run_lines_sent"].value == 1


def test_dg_check_defs_on_the_project(tmp_path: Path) -> None:
    env = _env("postgresql://unused@127.0.0.1/unused", "http://127.0.0.1:9/", tmp_path)
    env["VIRTUAL_ENV"] = sys.prefix  # `--use-active-venv`: this test's environment has the project
    done = subprocess.run(
        [*DG, "check", "defs", "--use-active-venv"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "All definitions loaded successfully" in output
    assert "SupersessionWarning" not in output


def test_dg_list_defs_shows_the_graph(tmp_path: Path) -> None:
    env = _env("postgresql://unused@127.0.0.1/unused", "http://127.0.0.1:9/", tmp_path)
    done = subprocess.run(
        [*DG, "list", "defs", "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    keys = {a["asset_key"] for a in json.loads(done.stdout)["assets"]}
    assert {"sync/preflight", "crm/customers", "transform/clients", "gestimum/documents_stock"} <= keys


def test_a_row_committed_late_is_caught_by_the_look_back_window(crm_url: str, simulator: GestimumSimulator) -> None:
    assert run_sync(crm_url, simulator.url, partition="2026-02-01").success
    # A long transaction commits after the 1st was synced, with a change time of the 1st.
    insert_customers(crm_url, [("LATE", "Commit tardif", None, None, None, None, None, None, "2026-02-01 23:10+01")])
    run = run_sync(crm_url, simulator.url, partition="2026-02-02")
    assert run.success, run.failures
    assert simulator.state.customers["LATE"]["PCF_RS"] == "Commit tardif"
    assert state_records(crm_url, "clients")["LATE"]["status"] == "imported"


def test_resync_a_day_with_force_and_dry_run_from_the_command_line(
    crm_url: str, simulator: GestimumSimulator, tmp_path: Path
) -> None:
    """README, Operations: re-syncing a day and dry runs, with the per-run options as run config."""
    insert_customers(crm_url, [("R1", "Reprise", None, None, None, None, None, None, "2026-02-05 10:00+01")])
    insert_movements(crm_url, [(7, "in", "001", "ELS", 2, "2026-02-05 10:00+01")])
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = _env(crm_url, simulator.url, tmp_path)

    def materialize(options: dict[str, object] | None = None) -> None:
        command = [*DG, "launch", "--assets", "*", "--partition", "2026-02-05"]
        if options:
            command += ["--config-json", json.dumps({"resources": {"sync_options": {"config": options}}})]
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    def requests(endpoint: str) -> int:
        return sum(1 for r in simulator.state.requests if r.endpoint == endpoint)

    materialize({"dry_run": True})  # validated with `tester`, nothing stored
    assert simulator.state.customers == {} and simulator.state.documents == []
    assert requests("clients") == 1
    assert state_records(crm_url, "clients")["R1"]["status"] == "pending"

    materialize()
    assert simulator.state.customers["R1"]["PCF_RS"] == "Reprise" and len(simulator.state.documents) == 1
    materialize()  # a plain rerun of the day sends nothing
    assert requests("clients") == 2
    materialize({"force": True})  # re-sends the day's master data, never its stock movements
    assert requests("clients") == 3 and len(simulator.state.documents) == 1
