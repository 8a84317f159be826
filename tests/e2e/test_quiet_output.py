"""Quiet output (issue 20, item 4): one plain-HTTP warning per run in one wording, none for a
simulator on this machine without a password, and a demo summary without internal wording.
(`dg launch` printing no BetaWarning is tests/e2e/test_cli_materialize.py's.)"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability import Deployment, deployment, run_job, seed_standard

from gestimum_pipeline import demo
from gestimum_pipeline.defs.partitions import SILENCED_BETA_WARNINGS
from gestimum_pipeline.gestimum.client import plain_http_warning

WORDING = "is plain HTTP: the Gestimum password and the CRM data travel unencrypted; use https://"


@pytest.mark.parametrize(
    ("url", "password", "warned"),
    [
        ("http://127.0.0.1:8080/", "", False),  # the simulator: nothing secret leaves the machine
        ("http://localhost:8080/", "", False),
        ("http://[::1]:8080/", "", False),
        ("http://127.0.0.1:8080/", "s3cret", True),
        ("http://gestimum.example:8080/", "", True),  # CRM data still travels in clear
        ("HTTP://10.0.0.5/", "s3cret", True),
        ("https://gestimum.example/", "s3cret", False),
    ],
)
def test_plain_http_warning(url: str, password: str, warned: bool) -> None:
    message = plain_http_warning(url, password)
    assert (message is not None) == warned
    if message is not None:
        assert message.endswith(WORDING) and (not password or password not in message)


def test_only_our_backfill_policy_beta_warning_is_filtered() -> None:
    """Loading the definitions with every warning shown (`-W always`): none about backfill_policy,
    while any other beta warning still shows."""
    code = (
        "import warnings, dagster as dg\n"
        "from gestimum_pipeline.defs.build import build_definitions\n"
        "from gestimum_pipeline.defs.settings import Settings\n"
        "build_definitions(Settings()).resolve_asset_graph()\n"
        "warnings.warn('Parameter `other` of function `asset` is currently in beta', dg.BetaWarning)\n"
    )
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "backfill_policy" not in done.stderr
    assert done.stderr.count("BetaWarning") == 1 and "Parameter `other`" in done.stderr
    assert sum("backfill_policy" in m for m in SILENCED_BETA_WARNINGS) == 2


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def test_one_plain_http_warning_per_run_and_none_without_a_password_on_loopback(dep: Deployment) -> None:
    run = run_job(dep)  # a password, over plain http:// to the simulator
    assert run.success, run.failures
    assert run.event_log.count(WORDING) == 1  # the preflight's, not one per Gestimum client
    assert "GESTIMUM_URL: none" not in run.event_log and "travels unencrypted" not in run.event_log
    dep.password = ""
    dep.simulator.config.password = ""
    quiet = run_job(dep)
    assert quiet.success, quiet.failures
    assert WORDING not in quiet.event_log


def test_the_demo_prints_no_internal_wording(
    pg_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Its own database: another test's demo on the same server must not drop this one's.
    monkeypatch.setattr(demo, "DEMO_DATABASE", f"gp_test_demo_{uuid.uuid4().hex[:8]}")
    out = io.StringIO()
    try:
        summary = demo.run_demo(home=tmp_path, database_url=pg_server_url, days=1, customers_per_day=5, out=out)
    finally:
        from gestimum_pipeline.db import connect

        admin = connect(pg_server_url, autocommit=True)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{demo.DEMO_DATABASE}" WITH (FORCE)')
        admin.close()
    assert summary["contacts"].rejected_by_gestimum >= 1
    printed = out.getvalue() + "".join(capfd.readouterr())
    for internal in ("GESTIMUM_URL", "https://", "plain HTTP", "BetaWarning", "not encrypted"):
        assert internal not in printed, internal
