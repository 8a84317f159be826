"""Several company files in one code location: one GestimumSync component (defs.yaml) each.

A project of its own (a temp dir with [tool.dg] and two defs.yaml) run through `dg` as a
data team would: two CRMs, two simulators (ACME and BRAVO), one `dg launch` syncing both;
each simulator receives only its company's lines; a failure in one company file does not
stop the other; `dg check defs` names the field of a bad defs.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_services import environ_without_settings
from databases import copy_database, init_state_store
from dg_project import company_defs_yaml, company_env, write_dg_project
from sync_harness import insert_customers, insert_movements, state_records

from gestimum_pipeline.components import GestimumSync
from gestimum_pipeline.db import database_name, drop_database
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DAY = "2026-03-10"
COMPANIES = ("acme", "bravo")


def defs_yaml(name: str) -> str:
    return company_defs_yaml(name, state_schema=f"gestimum_sync_{name}", start_date='"2026-01-01"', max_lag_minutes=120)


@dataclass
class TwoCompanies:
    project: Path
    crm: dict[str, str]  # company -> CRM URL (its state store too)
    simulators: dict[str, GestimumSimulator]
    env: dict[str, str]

    def dg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "dg"), *args], cwd=self.project, env=self.env, capture_output=True, text=True, timeout=300
        )


@pytest.fixture
def two(pg_server_url: str, crm_template: str, tmp_path: Path) -> Iterator[TwoCompanies]:
    write_dg_project(tmp_path / "project", "two_companies", {name: defs_yaml(name) for name in COMPANIES})
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    crm = {name: copy_database(pg_server_url, crm_template, f"gp_{name}") for name in COMPANIES}
    for name in COMPANIES:  # `gestimum-pipeline state init` of each company file's store
        init_state_store(crm[name], f"gestimum_sync_{name}")
    simulators = {
        name: GestimumSimulator(
            SimulatorConfig(company_file=f"{name.upper()}.Gestimum", user="SYNC", password=f"{name}-pw", items=("ELS",))
        ).start()
        for name in COMPANIES
    }
    env = environ_without_settings()
    env["DAGSTER_HOME"] = str(dagster_home)
    env["VIRTUAL_ENV"] = sys.prefix  # `dg --use-active-venv`: this test's environment has the project
    for name in COMPANIES:
        env.update(company_env(name, simulators[name].url, crm[name]))
    try:
        yield TwoCompanies(tmp_path / "project", crm, simulators, env)
    finally:
        for sim in simulators.values():
            sim.stop()
        for url in crm.values():
            drop_database(pg_server_url, database_name(url), setting="GESTIMUM_TEST_DATABASE_URL")


def _customer(code: str, name: str, at: str = "2026-03-10 09:00+01") -> tuple[object, ...]:
    return (code, name, None, None, None, None, None, None, at)


def test_two_company_files_sync_in_one_dg_launch_and_fail_apart(two: TwoCompanies) -> None:
    insert_customers(two.crm["acme"], [_customer("A1", "Acme un")])
    insert_movements(two.crm["acme"], [(1, "in", "001", "ELS", 2, "2026-03-10 09:00+01")])
    insert_customers(two.crm["bravo"], [_customer("B1", "Bravo un")])

    listed = two.dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    keys = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert {"acme/gestimum/clients", "bravo/gestimum/clients", "acme/crm/customers", "bravo/sync/preflight"} <= keys
    jobs = {j["name"] for j in json.loads(listed.stdout)["jobs"]}
    assert {"acme_gestimum_sync", "bravo_gestimum_sync", "acme_operator_retry", "bravo_operator_retry"} <= jobs
    assert "acme-pw" not in listed.stdout and "bravo-pw" not in listed.stdout  # secrets stay EnvVars

    launched = two.dg("launch", "--assets", "*", "--partition", DAY)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert set(two.simulators["acme"].state.customers) == {"A1"}
    assert set(two.simulators["bravo"].state.customers) == {"B1"}
    assert len(two.simulators["acme"].state.documents) == 1 and two.simulators["bravo"].state.documents == []
    # Each company file has its own state store (its schema in its CRM database here).
    assert state_records(two.crm["acme"], "clients", schema="gestimum_sync_acme")["A1"]["status"] == "imported"
    assert state_records(two.crm["bravo"], "clients", schema="gestimum_sync_bravo")["B1"]["status"] == "imported"

    # BRAVO's password is now wrong: its preflight fails, ACME syncs all the same, in the same launch.
    insert_customers(two.crm["acme"], [_customer("A2", "Acme deux", "2026-03-10 11:00+01")])
    insert_customers(two.crm["bravo"], [_customer("B2", "Bravo deux", "2026-03-10 11:00+01")])
    two.env["BRAVO_GESTIMUM_PASSWORD"] = "wrong"
    failed = two.dg("launch", "--assets", "*", "--partition", DAY)
    assert failed.returncode != 0
    assert "bravo__sync__preflight" in failed.stdout + failed.stderr
    assert set(two.simulators["acme"].state.customers) == {"A1", "A2"}
    assert set(two.simulators["bravo"].state.customers) == {"B1"}
    assert "wrong" not in failed.stdout + failed.stderr and "bravo-pw" not in failed.stdout + failed.stderr


def test_each_company_file_has_its_pool_schedule_and_resources(
    two: TwoCompanies, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in two.env.items():
        if key.startswith(("ACME_", "BRAVO_")):
            monkeypatch.setenv(key, value)
    components = {
        name: GestimumSync.resolve_from_yaml(textwrap.dedent(defs_yaml(name).split("attributes:\n", 1)[1]))
        for name in COMPANIES
    }
    merged = dg.Definitions.merge(
        *(
            build_definitions(c.settings(), resources=c.resources(c.settings()), with_alerts=False)
            for c in components.values()
        )
    )
    graph = merged.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["acme", "gestimum", "clients"])).pools == {"gestimum_ACME_Gestimum"}
    assert graph.get(dg.AssetKey(["bravo", "gestimum", "clients"])).pools == {"gestimum_BRAVO_Gestimum"}
    assert graph.get(dg.AssetKey(["bravo", "gestimum", "clients"])).tags["gestimum/company_file"] == "BRAVO.Gestimum"
    schedules = {s.name: s for s in merged.schedules or []}
    assert set(schedules) == {"acme_gestimum_sync_schedule", "bravo_gestimum_sync_schedule"}
    sensors = {s.name: s for s in merged.sensors or []}
    assert set(sensors) == {"acme_gestimum_change_sensor", "bravo_gestimum_change_sensor"}
    assert sensors["acme_gestimum_change_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
    on = GestimumSync.resolve_from_yaml(
        textwrap.dedent(defs_yaml("acme").split("attributes:\n", 1)[1]) + "change_sensor: true\n"
    )
    on_defs = build_definitions(on.settings(), resources=on.resources(on.settings()), with_alerts=False)
    assert on_defs.resolve_sensor_def("acme_gestimum_change_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    resources = merged.resources or {}
    assert {"acme_crm", "acme_gestimum", "acme_sync_state", "bravo_sync_state"} <= set(resources)
    wired = {name: c.resources(c.settings()) for name, c in components.items()}
    assert wired["acme"]["sync_state"].schema_name == "gestimum_sync_acme"
    assert isinstance(wired["bravo"]["gestimum"].password, dg.EnvVar)
    # Fixed by the deployment, not run config (issue 23); the UI names the variables, never a value.
    assert "password from BRAVO_GESTIMUM_PASSWORD" in (resources["bravo_gestimum"].description or "")
    job = merged.resolve_job_def("acme_gestimum_sync")
    assert {k.path[0] for k in job.asset_layer.executable_asset_keys} == {"acme"}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda text: text.replace("  company_file: BRAVO.Gestimum\n", ""), "company_file"),
        (lambda text: text.replace('"{{ env.BRAVO_GESTIMUM_PASSWORD }}"', "hunter2"), "password"),
        (lambda text: text.replace("max_lag_minutes: 120", "max_lag_minutes: soon"), "max_lag_minutes"),
        (lambda text: text.replace("name: bravo", "name: Bravo-SA"), "name"),
    ],
)
def test_dg_check_defs_names_the_field_of_a_bad_defs_yaml(two: TwoCompanies, edit: object, named: str) -> None:
    path = two.project / "two_companies" / "defs" / "bravo" / "defs.yaml"
    path.write_text(edit(path.read_text()))  # type: ignore[operator]
    checked = two.dg("check", "defs", "--use-active-venv")
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0, output[-3000:]
    assert named in output and "bravo" in output, output[-3000:]
    if named == "password":
        assert "{{ env.VARIABLE }}" in output  # says how to write it
