"""docs/company-files.md's walkthrough, run as written (issue 20): the commands are read from the
doc's blocks marked `<!-- walkthrough -->` and run by bash, in order, in a project of two company
files (a temp dir with [tool.dg]), against two CRM databases on real PostgreSQL and two Gestimum
simulators: scaffold, state init --company, dg check, dg launch, a rejected contact fixed in the
CRM and retried with --company, launched again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster_services import environ_without_settings
from databases import copy_database
from dg_project import company_env, write_dg_project
from sync_harness import insert_contacts, insert_customers, state_records

from gestimum_pipeline.db import database_name, drop_database
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

pytestmark = pytest.mark.slow
DOC = Path(__file__).resolve().parents[2] / "docs" / "company-files.md"
BIN = Path(sys.executable).parent
COMPANIES = ("acme", "bravo")


def walkthrough_commands(doc: Path = DOC) -> list[str]:
    """The commands of the doc's marked bash blocks, in order (comments and blank lines left out)."""
    blocks = re.findall(r"<!-- walkthrough -->\s*```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and line[0] != "#"]


def test_the_doc_walks_through_init_check_launch_and_a_retry_with_company() -> None:
    commands = walkthrough_commands()
    assert [c.split(" --")[0] for c in commands if c.startswith("gestimum-pipeline")] == [
        "gestimum-pipeline state init",
        "gestimum-pipeline state init",
        "gestimum-pipeline rejections",
        "gestimum-pipeline retry",
        "gestimum-pipeline rejections",
        "gestimum-pipeline actions",
    ]
    assert all("--company" in c for c in commands if c.startswith("gestimum-pipeline"))
    assert not any("--database-url" in c or "--schema" in c for c in commands)  # nothing typed twice
    assert "dg check defs" in commands and sum(c.startswith("dg launch") for c in commands) == 2


Project = tuple[Path, dict[str, str], dict[str, str], dict[str, GestimumSimulator]]


@pytest.fixture
def project(pg_server_url: str, crm_template: str, tmp_path: Path) -> Iterator[Project]:
    write_dg_project(tmp_path / "project", "two_companies")
    (tmp_path / "dagster_home").mkdir()
    crm = {name: copy_database(pg_server_url, crm_template, f"gp_{name}") for name in COMPANIES}
    # The scaffolded company files: ACME.Gestimum / BRAVO.Gestimum, user SYNC.
    simulators = {
        name: GestimumSimulator(
            SimulatorConfig(company_file=f"{name.upper()}.Gestimum", user="SYNC", password=f"{name}-pw")
        ).start()
        for name in COMPANIES
    }
    env = environ_without_settings()
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    env["VIRTUAL_ENV"] = sys.prefix  # this test's environment has gestimum_pipeline installed
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # dg, gestimum-pipeline
    for name in COMPANIES:
        env.update(company_env(name, simulators[name].url, crm[name]))
    try:
        yield tmp_path / "project", env, crm, simulators
    finally:
        for sim in simulators.values():
            sim.stop()
        for url in crm.values():
            drop_database(pg_server_url, database_name(url), setting="GESTIMUM_TEST_DATABASE_URL")


def test_the_walkthrough_runs_as_written(project: Project) -> None:
    root, env, crm, simulators = project
    at = "2026-03-10 09:00+01"
    insert_customers(crm["acme"], [("A1", "Acme un", None, None, None, None, None, None, at)])
    insert_contacts(crm["acme"], [("K1", "A1", "Durand", "Marie", None, None, at)])
    insert_contacts(crm["acme"], [("K2", "A9", "Martin", "Paul", None, None, at)])  # A9: a typo for A1
    insert_customers(crm["bravo"], [("B1", "Bravo un", None, None, None, None, None, None, at)])

    outputs: dict[str, str] = {}
    for command in walkthrough_commands():
        done = subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command}\n{output[-4000:]}"
        outputs.setdefault(command, "")
        outputs[command] += output

        if command.startswith("dg launch --assets"):
            # Both company files synced in one run; ACME's K2 rejected by Gestimum, K1 imported.
            assert set(simulators["acme"].state.customers) == {"A1"}
            assert set(simulators["bravo"].state.customers) == {"B1"}
            contacts = state_records(crm["acme"], "contacts", schema="gestimum_sync_acme")
            assert contacts["K1"]["status"] == "imported" and contacts["K2"]["status"] == "rejected"
            assert "A9" in contacts["K2"]["reason"]
        if command.startswith("gestimum-pipeline rejections") and "K2" not in outputs.get("seen-K2", ""):
            assert "contacts" in output and "K2" in output and "A9" in output, output
            outputs["seen-K2"] = output
        if command.startswith("gestimum-pipeline retry"):
            assert "retry: 1 rows now pending" in output, output
        if command.startswith("dg launch --job acme_gestimum_sync"):
            assert set(simulators["acme"].state.contacts) == {"K1", "K2"}
            assert state_records(crm["acme"], "contacts", schema="gestimum_sync_acme")["K2"]["status"] == "imported"

    last_rejections = [c for c in walkthrough_commands() if c.startswith("gestimum-pipeline rejections")][-1]
    assert outputs[last_rejections].rstrip().endswith("nothing rejected, held or undelivered")
    actions = outputs["gestimum-pipeline actions --company acme"]
    assert "alice" in actions and "retry" in actions and "K2" in actions
    # The scaffolded files are the ones synced: one folder each, named after the company file.
    assert {p.parent.name for p in (root / "two_companies" / "defs").rglob("defs.yaml")} == set(COMPANIES)
    assert "acme-pw" not in "".join(outputs.values())
