"""Secrets hygiene, tested end to end.

The Gestimum password, the database role's password and a proxy password embedded in
GESTIMUM_URL must never appear in: log records (the simulator's included), the process's
stdout/stderr, the Dagster event log (messages, metadata, failures, run config and tags),
exception text, or the CLI's output. URLs are shown with `***` for the password. TLS
verification can be turned off, but never silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from invariants import CaseRecord, assert_no_secret
from reliability import GESTIMUM_PASSWORD, ROLE_PASSWORD, Deployment, Run, as_role, deployment, run_job, seed_standard

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.simulator.server import Fault

PROXY_PASSWORD = "Pr0xy-S3cret-Zz9"
WRONG_PASSWORD = "Wr0ng-But-Secret-11"
ALL_SECRETS = [GESTIMUM_PASSWORD, ROLE_PASSWORD, PROXY_PASSWORD, WRONG_PASSWORD]


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def with_userinfo(url: str, port: int | None = None) -> str:
    host = url.split("://", 1)[1].rstrip("/")
    if port is not None:
        host = f"127.0.0.1:{port}"
    return f"http://proxyuser:{PROXY_PASSWORD}@{host}/"


def scan(run: Run, capfd: pytest.CaptureFixture[str]) -> None:
    out = capfd.readouterr()
    texts = {**run.texts(), "stdout": out.out, "stderr": out.err}
    # Not vacuous: every channel holds the run's story (Dagster's console log goes to stderr).
    assert "sync__preflight" in run.event_log and "sync__preflight" in out.err and run.logs
    assert_no_secret(texts, ALL_SECRETS)
    with pytest.raises(AssertionError, match="leaked into event log"):  # and the scanner does see a leak
        assert_no_secret({"event log": run.event_log + GESTIMUM_PASSWORD}, ALL_SECRETS)


def test_a_successful_run_shows_no_secret_anywhere(dep: Deployment, capfd: pytest.CaptureFixture[str]) -> None:
    dep.gestimum_url = with_userinfo(dep.simulator.url)  # a proxy's credentials in the URL
    run = run_job(dep)
    assert run.success, run.failures
    scan(run, capfd)
    # The URL is shown, redacted; the metadata holds no URL at all.
    assert f"proxyuser:***@127.0.0.1:{dep.simulator.port}" in run.event_log
    assert "Gest-S3cret" not in json.dumps({k: str(v) for k, v in run.metadata.items()})
    # The secrets were really there: resolved by Dagster at run time, sent to the simulator.
    assert dep.simulator.config.password == GESTIMUM_PASSWORD and ROLE_PASSWORD in dep.crm_url


@pytest.mark.parametrize(
    "scenario",
    [
        "wrong_password",
        "proxy_url_unreachable",
        "crm_unreachable",
        "state_store_unreachable",
        "delivery_unknown",
        "gestimum_echoes_the_password",
    ],
)
def test_failures_show_no_secret_and_urls_are_redacted(
    dep: Deployment, capfd: pytest.CaptureFixture[str], scenario: str
) -> None:
    expect_in_failure = ""
    echo: ThreadingHTTPServer | None = None
    if scenario == "wrong_password":
        dep.password = WRONG_PASSWORD
        expect_in_failure = "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE"
    elif scenario == "proxy_url_unreachable":
        dep.gestimum_url = with_userinfo(dep.simulator.url, port=1)
        expect_in_failure = "http://proxyuser:***@127.0.0.1:1/"
    elif scenario == "crm_unreachable":
        dep.crm_url = as_role("postgresql://x@127.0.0.1:1/crm")
        expect_in_failure = "postgresql://gp_reliability_sync:***@127.0.0.1:1/crm"
    elif scenario == "state_store_unreachable":
        dep.state_url = as_role("postgresql://x@127.0.0.1:1/state")
        expect_in_failure = "postgresql://gp_reliability_sync:***@127.0.0.1:1/state"
    elif scenario == "delivery_unknown":
        dep.simulator.add_fault(Fault("malformed", endpoint="documents_stock"))
        expect_in_failure = "delivery_unknown"
    else:
        echo = _echoing_server()
        dep.gestimum_url = f"http://127.0.0.1:{echo.server_address[1]}/"
        expect_in_failure = "***"
    try:
        run = run_job(dep)
    finally:
        if echo is not None:
            echo.shutdown()
            echo.server_close()
    assert not run.success
    assert expect_in_failure in "\n".join(run.failures.values())
    scan(run, capfd)
    message = next(iter(run.failures.values()))
    shown = message.split("1. ", 1)[1].split("\n")[0] if "1. " in message else message.split(": ", 1)[-1]
    case = CaseRecord("secrets", scenario, "the run fails; every channel of the run scanned for 4 secrets", shown[:220])
    case.checks.append(f"{len(run.texts()) + 2} channels (event log, logs, failures, stdout, stderr): 0 secrets")
    case.save()


class _Echo(BaseHTTPRequestHandler):
    """A server that refuses the credentials and quotes the password it received (a careless proxy)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        password = next(iter(body.values()))["societe"]["mot_passe"]
        answer = {
            "result": [
                {
                    "resultat": "erreur",
                    "message": f"Mot de passe {password} incorrect",
                    "journal": [f"01/01/2026 00:00:00 Mot de passe {password} incorrect"],
                    "statistiques": {},
                }
            ]
        }
        data = json.dumps(answer, ensure_ascii=False).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _echoing_server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_tls_verification_off_is_loud_at_every_run(dep: Deployment, capfd: pytest.CaptureFixture[str]) -> None:
    dep.api["verify_tls"] = False
    run = run_job(dep)
    assert run.success, run.failures
    assert run.metadata["sync/preflight"]["tls_verification"].startswith("OFF (GESTIMUM_VERIFY_TLS=false)")
    warnings = run.event_log.count("TLS verification is OFF")
    assert warnings >= 6  # the preflight and each of the five sinks
    scan(run, capfd)
    dep.api["verify_tls"] = True
    quiet = run_job(dep)
    # The simulator is plain http://: never reported as "on" (issue 12, finding 10).
    assert quiet.metadata["sync/preflight"]["tls_verification"].startswith("none (GESTIMUM_URL is not https://)")
    assert "TLS verification is OFF" not in quiet.event_log


@pytest.mark.parametrize("value", ["nah", "2", "disabled"])
def test_tls_verification_cannot_be_turned_off_by_a_typo(value: str) -> None:
    with pytest.raises(ValueError, match=f"setting GESTIMUM_VERIFY_TLS must be true or false, got '{value}'"):
        Settings.from_env({"GESTIMUM_VERIFY_TLS": value})


def test_the_simulator_command_never_logs_the_password(tmp_path: Path) -> None:
    """`gestimum-pipeline simulator` logs one line per request: never the password, right or wrong."""
    import requests

    from gestimum_pipeline.gestimum import catalog
    from gestimum_pipeline.gestimum.envelope import CompanySettings, build_body, encode_body

    env = {**os.environ, "SIM_PASSWORD": GESTIMUM_PASSWORD}
    process = subprocess.Popen(
        [sys.executable, "-m", "gestimum_pipeline.cli", "simulator", "--port", "0", "--password-env", "SIM_PASSWORD"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        for password in (GESTIMUM_PASSWORD, WRONG_PASSWORD):
            body = build_body(catalog.CLIENTS, CompanySettings("DEMO.Gestimum", "DEMO", password), ["C1;;Nom"])
            requests.post(url + catalog.CLIENTS.path, data=encode_body(body), timeout=10)
        state = requests.get(url + "_simulator/state", timeout=10).json()
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert "ImporterClients" in err  # it did log the requests
    assert_no_secret({"simulator stdout": out, "simulator stderr": err, "state": json.dumps(state)}, ALL_SECRETS)


def test_cli_output_never_shows_the_database_password(
    dep: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_job(dep).success
    monkeypatch.setenv("SYNC_STATE_DATABASE_URL", dep.state_url)
    for argv in (["rejections"], ["rejections", "--json"], ["actions"]):
        assert cli(argv) == 0
    monkeypatch.setenv("SYNC_STATE_DATABASE_URL", as_role("postgresql://x@127.0.0.1:1/state"))
    with pytest.raises(SystemExit) as exit_info:
        cli(["rejections"])
    message = str(exit_info.value.code)
    assert "SYNC_STATE_DATABASE_URL" in message and "gp_reliability_sync:***@127.0.0.1:1/state" in message
    out = capsys.readouterr()
    assert_no_secret({"stdout": out.out, "stderr": out.err, "exit message": message}, ALL_SECRETS)
