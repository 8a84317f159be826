"""The README's setup commands as pasted (issue 20, item 5): `crm init` (and schema.sql through
psql), then "Running it for real" on a fresh HOME, in bash, with only the placeholder values of
its first three lines replaced (a real CRM database, the simulator). `dg dev` is left out: it is
a server, exercised by tests/e2e/test_ui.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dg_project import company_defs_yaml, write_dg_project

from gestimum_pipeline.crm.contract import RELATIONS, check_contract
from gestimum_pipeline.db import connect
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def bash_block(after_heading: str, index: int = 0) -> list[str]:
    """The lines of the `index`th ```bash block after the README heading `after_heading`."""
    section = README[README.index(after_heading) :]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return blocks[index].splitlines()


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_", "DAGSTER_")) and k != "HOME"
    }
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=sys.prefix, **extra)
    return env


def bash(lines: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    return subprocess.run(
        ["bash", "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def relations(url: str, schema: str) -> set[str]:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
            return {name for (name,) in cur.fetchall()}
    finally:
        conn.close()


def contract_problems(url: str, schema: str) -> list[str]:
    conn = connect(url)
    try:
        return check_contract(conn, schema, list(RELATIONS))
    finally:
        conn.close()


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_schema_sql_through_psql_with_and_without_the_schema_variable(database_url: str) -> None:
    script = str(REPO / "gestimum_pipeline/crm/schema.sql")
    for args, schema in ((["-v", "schema=Sales Team"], "Sales Team"), ([], "crm")):
        done = subprocess.run(
            ["psql", database_url, "-X", "-q", *args, "-f", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr
        assert relations(database_url, schema) == set(RELATIONS)
    # What the reference DDL declares is what the contract wants.
    assert contract_problems(database_url, "crm") == []
    # The README's psql line as pasted (into a schema dropped first, so it creates it).
    psql_line = next(line for line in bash_block("### Source contract") if line.startswith("psql "))
    conn = connect(database_url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA crm CASCADE")
    finally:
        conn.close()
    done = bash([psql_line], clean_env(Path("/nonexistent"), CRM_DATABASE_URL=database_url))
    assert done.returncode == 0, done.stderr
    assert contract_problems(database_url, "crm") == []


def test_crm_init_creates_the_schema_loads_demo_rows_once_and_refuses_a_schema_with_rows(
    database_url: str, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, CRM_DATABASE_URL=database_url)
    done = bash(["gestimum-pipeline crm init --schema sales"], env)
    assert done.returncode == 0, done.stderr
    assert "CRM reference schema 'sales' ready" in done.stdout
    assert contract_problems(database_url, "sales") == []
    assert bash(["gestimum-pipeline crm init --schema sales"], env).returncode == 0  # idempotent

    done = bash(["gestimum-pipeline crm init --schema trial --demo-data --days 1 --customers-per-day 3"], env)
    assert done.returncode == 0, done.stderr
    assert "demo rows loaded" in done.stdout and "deliberately bad" in done.stdout
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM trial.customers")
            customers = cur.fetchone()[0]
    finally:
        conn.close()
    assert customers >= 3
    again = bash(["gestimum-pipeline crm init --schema trial --demo-data"], env)
    assert again.returncode != 0 and "already hold rows" in again.stderr and "trial.customers" in again.stderr

    bad = bash(["gestimum-pipeline crm init --schema 'no;pe'"], env)
    assert bad.returncode != 0 and "--schema" in bad.stderr
    nowhere = bash(["gestimum-pipeline crm init"], clean_env(tmp_path))
    assert nowhere.returncode != 0 and "CRM_DATABASE_URL" in nowhere.stderr


def test_the_readme_setup_as_pasted_on_a_fresh_home(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    setup = bash_block("## Running it for real")
    placeholders = ("export CRM_DATABASE_URL=", "export GESTIMUM_URL=", "export GESTIMUM_UTILISATEUR=")
    assert [line.split(" ", 2)[1].split("=")[0] for line in setup[:3]] == [
        p.split(" ")[1].rstrip("=") for p in placeholders
    ], "the README's first three lines are the placeholders this test replaces"
    with GestimumSimulator(SimulatorConfig(company_file="SOCIETE.Gestimum", user="SYNC", password="pw")) as simulator:
        values = [
            f"export CRM_DATABASE_URL={database_url}",
            f"export GESTIMUM_URL={simulator.url}   GESTIMUM_FICHIER=SOCIETE.Gestimum",
            "export GESTIMUM_UTILISATEUR=SYNC                   GESTIMUM_MOT_PASSE=pw",
        ]
        crm_init = bash_block("### Source contract")[0]
        assert crm_init.startswith("gestimum-pipeline crm init --schema crm ")
        rest = [line for line in setup[3:] if not line.startswith("dg dev ")]
        assert rest[0].startswith("export DAGSTER_HOME=~/dagster_home && mkdir -p $DAGSTER_HOME")
        done = bash([*values, crm_init, *rest], clean_env(home))
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        assert (home / "dagster_home" / "dagster.yaml").is_file()
        assert "state store created" in output and "All definitions loaded successfully" in output
        assert "RUN_SUCCESS" in output
        assert "BetaWarning" not in output
        # The preflight reached the simulator: its access check is Gestimum's only request on an empty CRM.
        assert simulator.state.requests


ACME = company_defs_yaml("acme", crm_schema="acme_crm", state_schema="gestimum_sync_acme")


def test_crm_init_and_history_read_the_company_file(database_url: str, tmp_path: Path) -> None:
    write_dg_project(tmp_path, "companies", {"acme": ACME}, code_location=False)
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, ACME_GESTIMUM_URL="http://gestimum.acme.test:8080/")
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(BIN / "gestimum-pipeline"), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    unset = run("crm", "init", "--company", "acme")
    assert unset.returncode != 0 and "ACME_CRM_DATABASE_URL" in unset.stderr and "defs.yaml, crm_url" in unset.stderr
    env["ACME_CRM_DATABASE_URL"] = database_url
    done = run("crm", "init", "--company", "acme")
    assert done.returncode == 0, done.stderr
    assert contract_problems(database_url, "acme_crm") == []  # the company file's crm_schema
    assert run("state", "init", "--company", "acme").returncode == 0
    story = run("history", "--company", "acme", "--endpoint", "clients", "C1")
    assert story.returncode == 0, story.stderr
    assert story.stdout.splitlines()[0] == "clients C1: not in the state store"
