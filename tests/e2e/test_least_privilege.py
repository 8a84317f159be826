"""The least-privilege roles of docs/security.md, applied verbatim (issue 23, Medium).

A CRM role that may only SELECT the four relations and a state-store role with DML only on
an existing store (another database, created by `state init` as its owner) run the whole
sync and the CLI. Opening an up-to-date store runs no DDL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from invariants import statuses
from reliability import Deployment, admin_url_of, deployment, run_job, seed_standard

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.db import connect, database_name, url_with

pytestmark = pytest.mark.slow
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
CRM_READER = "gp_lp_crm_reader"
STATE_WRITER = "gp_lp_state_writer"
PASSWORD = "Lp-S3cret-8Tz"


def documented_grants(title: str, variables: dict[str, str]) -> str:
    """The ```sql block of docs/security.md headed `-- gestimum-pipeline: <title>`, psql variables filled in."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    (block,) = [b for b in blocks if b.startswith(f"-- gestimum-pipeline: {title}\n")]
    return re.sub(r':"(\w+)"', lambda m: '"' + variables[m.group(1)] + '"', block)


@functools.cache
def ensure_roles(server_url: str) -> None:
    conn = connect(server_url, "GESTIMUM_TEST_DATABASE_URL", autocommit=True)
    try:
        with conn.cursor() as cur:
            for role in (CRM_READER, STATE_WRITER):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone() is None:
                    with contextlib.suppress(Exception):  # a concurrent session may create it first
                        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (PASSWORD,))
    finally:
        conn.close()


def grant(admin_url: str, statements: str) -> None:
    conn = connect(admin_url, "GESTIMUM_TEST_DATABASE_URL", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statements)
    finally:
        conn.close()


@pytest.fixture
def least(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    ensure_roles(pg_server_url)
    with deployment(pg_server_url, separate_state=True, template=sync_role_crm_template) as owner:
        seed_standard(owner.crm_url)
        crm_db, state_db = database_name(owner.crm_url), database_name(owner.state_url)
        crm_grants = documented_grants("CRM reader", {"crm_db": crm_db, "crm_schema": "crm", "crm_role": CRM_READER})
        state_grants = documented_grants(
            "state-store writer", {"state_db": state_db, "state_schema": "gestimum_sync", "state_role": STATE_WRITER}
        )
        grant(admin_url_of(owner.crm_url, pg_server_url), crm_grants)
        grant(admin_url_of(owner.state_url, pg_server_url), state_grants)
        yield dataclasses.replace(
            owner,
            crm_url=url_with(owner.crm_url, username=CRM_READER, password=PASSWORD),
            state_url=url_with(owner.state_url, username=STATE_WRITER, password=PASSWORD),
        )


def test_the_documented_roles_run_the_sync_and_the_cli(
    least: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The roles are as narrow as documented: the reader cannot write, the writer cannot create.
    with pytest.raises(Exception, match="permission denied"), connect(least.crm_url) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM crm.customers")
    with pytest.raises(Exception, match="permission denied"), connect(least.state_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS gestimum_sync")

    run = run_job(least)
    assert run.success, run.failures
    assert statuses(admin_url_of(least.state_url, least.server_url), "clients")["C1"] == "imported"
    assert "C1" in least.simulator.state.customers

    monkeypatch.setenv("SYNC_STATE_DATABASE_URL", least.state_url)
    assert cli(["rejections", "--json"]) == 0
    assert '"source_key"' in capsys.readouterr().out
