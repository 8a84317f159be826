"""Configuration errors are caught before any data moves.

The `sync/preflight` asset runs first: when a setting is missing, malformed or points
at something unreachable, or the credentials are wrong, the run stops there, no CRM row
is read, nothing is staged, nothing is imported, and the failure names each setting
and how to fix it. What Dagster checks before that (a missing variable) and what the
code location checks at load time (a malformed number) are tested too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from invariants import CaseRecord, check_invariants, statuses
from reliability import DAY, Deployment, Run, as_role, deployment, execute, role_database, run_job, seed_standard

from gestimum_pipeline.db import connect, database_name
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def stopped_at_preflight(dep: Deployment, run: Run, case: CaseRecord | None = None) -> str:
    """The run failed at the preflight and nothing moved; returns the failure message."""
    assert not run.success
    assert list(run.failures) == ["sync__preflight"], run.failures
    assert run.materialized() == []
    assert all(r.test_mode and r.lines == 0 for r in dep.simulator.state.requests)
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state, allow_unstaged=True)
    assert set(report.statuses) == {"unstaged"}
    message = run.failure("sync/preflight")
    if case is not None:
        case.operator_sees = message.split("\n", 1)[1].strip()[:200]
        case.add("after the failed run", report)
        case.save()
    return message


def test_the_preflight_costs_one_test_mode_request_that_stores_nothing(dep: Deployment) -> None:
    run = run_job(dep)
    assert run.success, run.failures
    first = dep.simulator.state.requests[0]
    assert (first.endpoint, first.lines, first.test_mode, first.status) == ("comptes", 0, True, 200)
    metadata = run.metadata["sync/preflight"]
    assert metadata["gestimum_requests"] == 1
    assert {"crm_check_seconds", "state_store_check_seconds", "gestimum_check_seconds"} <= set(metadata)
    # No webhook configured: the preflight says alerts are off, where the run is read.
    assert metadata["alerts"] == "off (GESTIMUM_ALERT_WEBHOOK_URL not set)"
    # A rerun with nothing to send makes no request: access was proven within the interval
    # (tests/e2e/test_preflight_lazy.py). With an interval of 0 it checks at every run.
    before = len(dep.simulator.state.requests)
    assert run_job(dep).success
    assert len(dep.simulator.state.requests) == before
    dep.api["access_check_interval_seconds"] = 0
    # Its Gestimum cost is one company opening: measured with a simulated opening time.
    dep.simulator.config.company_open_delay = 0.5
    slow = run_job(dep)
    assert slow.success
    # The opening delay shows in the Gestimum figure (a lower bound: no wall-clock ceiling here).
    assert slow.metadata["sync/preflight"]["gestimum_check_seconds"] >= 0.5
    # A rerun with nothing to send then makes exactly that one request.
    before = len(dep.simulator.state.requests)
    dep.simulator.config.company_open_delay = 0.0
    assert run_job(dep).success
    assert len(dep.simulator.state.requests) == before + 1


@pytest.mark.parametrize(
    ("case_id", "api", "options", "named"),
    [
        ("chunk_size_zero", {}, {"chunk_size": 0}, ["sync_options.chunk_size must be at least 1"]),
        ("negative_lookback", {}, {"lookback_minutes": -5}, ["GESTIMUM_SYNC_LOOKBACK_MINUTES"]),
        ("max_lines_zero", {"max_lines_per_request": 0}, {}, ["GESTIMUM_MAX_LINES_PER_REQUEST must be at least 1"]),
        ("max_bytes_tiny", {"max_bytes_per_request": 100}, {}, ["GESTIMUM_MAX_BYTES_PER_REQUEST must be at least"]),
        ("negative_retries", {"max_retries": -1}, {}, ["GESTIMUM_MAX_RETRIES must not be negative"]),
        (
            "negative_access_check_interval",
            {"access_check_interval_seconds": -1},
            {},
            ["GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS must not be negative"],
        ),
        ("zero_timeout", {"read_timeout_seconds": 0}, {}, ["GESTIMUM_READ_TIMEOUT_SECONDS"]),
        ("separator_is_a_space", {"separator": " "}, {}, ["separator must be one visible character"]),
        ("unknown_charset", {"charset": "klingon"}, {}, ["charset"]),
        ("missing_ca_bundle", {"ca_bundle": "/nonexistent/ca.pem"}, {}, ["GESTIMUM_CA_BUNDLE", "/nonexistent/ca.pem"]),
        (
            "several_at_once",
            {"max_lines_per_request": 0},
            {"chunk_size": 0},
            ["1. sync_options.chunk_size", "2. GESTIMUM_MAX_LINES_PER_REQUEST"],
        ),
    ],
)
def test_unusable_values_stop_the_run_naming_the_setting(
    dep: Deployment, case_id: str, api: dict[str, object], options: dict[str, object], named: list[str]
) -> None:
    dep.api.update(api)
    dep.options.update(options)
    case = CaseRecord("config", case_id, "the preflight fails, nothing moves", "")
    message = stopped_at_preflight(dep, run_job(dep), case)
    for fragment in named:
        assert fragment in message, message
    assert "Fix the following setting(s), then rerun" in message
    # One problem, one line: a bad Gestimum value is not reported again by the access check.
    assert message.count("\n  ") == len(named if case_id == "several_at_once" else [None])


@pytest.mark.parametrize(
    ("case_id", "field", "value", "named"),
    [
        ("url_without_scheme", "gestimum_url", "gestimum-host:8443", "GESTIMUM_URL"),
        ("url_bad_port", "gestimum_url", "http://127.0.0.1:port/", "GESTIMUM_URL"),
        ("empty_company_file", "company_file", " ", "GESTIMUM_FICHIER is empty"),
        ("empty_user", "user", "", "GESTIMUM_UTILISATEUR is empty"),
        ("crm_url_not_postgres", "crm_url", "mysql://u:p@h/db", "CRM_DATABASE_URL must be a PostgreSQL URL"),
    ],
)
def test_malformed_settings_stop_the_run_naming_the_setting(
    dep: Deployment, case_id: str, field: str, value: str, named: str
) -> None:
    good_crm = dep.crm_url
    setattr(dep, field, value)
    run = run_job(dep)
    dep.crm_url = good_crm  # to check the real CRM was left alone
    case = CaseRecord("config", case_id, "the preflight fails, nothing moves", "")
    message = stopped_at_preflight(dep, run, case)
    assert named in message, message


def test_unreachable_hosts_fail_fast(dep: Deployment) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dep.gestimum_url = f"http://127.0.0.1:{closed}/"
    dep.api.update(connect_timeout_seconds=0.5, backoff_seconds=0.01, max_retries=5)
    case = CaseRecord("config", "gestimum_host_unreachable", "the preflight fails within seconds (1 retry)", "")
    message = stopped_at_preflight(dep, run_job(dep), case)
    assert "GESTIMUM_URL: could not reach Gestimum" in message and "2 attempts" in message  # one retry at most
    # TLS spoken to a plain-HTTP server: the handshake fails, nothing is sent.
    dep.gestimum_url = dep.simulator.url.replace("http://", "https://")
    case = CaseRecord("config", "https_to_a_plain_http_server", "TLS handshake fails, nothing sent", "")
    message = stopped_at_preflight(dep, run_job(dep), case)
    assert "GESTIMUM_URL" in message and "TLS handshake" in message


def test_wrong_credentials_and_unreachable_crm_are_reported_together(dep: Deployment) -> None:
    good = dep.crm_url
    dep.crm_url = as_role("postgresql://x@127.0.0.1:1/crm")
    dep.password = "Not-The-Password-1"
    dep.state_url = good  # reachable: only two problems
    run = run_job(dep)
    dep.crm_url = good
    case = CaseRecord("config", "two_problems_at_once", "both reported in one failure", "")
    message = stopped_at_preflight(dep, run, case)
    assert "1. cannot connect to CRM_DATABASE_URL" in message
    assert "2. GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE: Gestimum refused the user or password" in message


def test_a_crm_that_breaks_the_source_contract(dep: Deployment) -> None:
    execute(dep.crm_url, [("ALTER TABLE crm.contacts DROP COLUMN first_name", None)])
    case = CaseRecord("config", "crm_breaks_the_source_contract", "the preflight names what is missing", "")
    message = stopped_at_preflight(dep, run_job(dep), case)
    assert "CRM_SCHEMA / CRM_DATABASE_URL: The CRM does not match the source contract" in message
    assert "crm.contacts lacks column(s): first_name" in message


def test_a_missing_state_store_stops_the_run_naming_the_command(dep: Deployment, pg_server_url: str) -> None:
    with role_database(pg_server_url, "gp_locked") as locked:
        # The database becomes the superuser's: the sync role may connect, not create a schema.
        name = database_name(locked)
        conn = connect(pg_server_url, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{name}" OWNER TO postgres')
                cur.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
        finally:
            conn.close()
        dep.state_url = locked
        run = run_job(dep)
        dep.state_url = dep.crm_url
        case = CaseRecord("config", "state_store_missing", "the preflight names `gestimum-pipeline state init`", "")
        message = stopped_at_preflight(dep, run, case)
        # A run never creates a store: the preflight names the command that does (as a role that may).
        assert "no state store" in message and "gestimum-pipeline state init" in message


PRODUCTION_RUN = """
import sys
import dagster as dg
from gestimum_pipeline.definitions import defs
result = defs.resolve_job_def("gestimum_sync").execute_in_process(
    partition_key=sys.argv[1], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
)
sys.exit(0 if result.success else 1)
"""


def _production_run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_"))}
    return subprocess.run(
        [sys.executable, "-c", PRODUCTION_RUN, DAY], env={**clean, **env}, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("missing", ["GESTIMUM_MOT_PASSE", "CRM_DATABASE_URL"])
def test_a_missing_variable_is_named_by_dagster_before_any_step(dep: Deployment, missing: str) -> None:
    """Dagster resolves EnvVars when the run starts: its error names the variable; no step runs."""
    env = {k: v for k, v in dep.env().items() if k != missing}
    if missing == "CRM_DATABASE_URL":
        env.pop("SYNC_STATE_DATABASE_URL")  # it defaults to the CRM's
    done = _production_run(env)
    assert done.returncode != 0
    assert f'environment variable "{missing}" which is not set' in done.stderr
    assert "STEP_START" not in done.stderr
    assert dep.simulator.state.requests == []
    assert statuses(dep.state_url, "comptes") == {}
    case = CaseRecord(
        "config",
        f"missing_{missing}",
        "Dagster refuses to start the run (EnvVar resolution)",
        f'You have attempted to fetch the environment variable "{missing}" which is not set…',
    )
    case.checks.append("no step started, 0 requests to Gestimum, state store empty")
    case.save()


def test_an_empty_password_is_a_value_not_a_missing_variable(dep: Deployment) -> None:
    """GESTIMUM_MOT_PASSE may be set empty (README); then Gestimum judges it."""
    env = {**dep.env(), "GESTIMUM_MOT_PASSE": ""}
    done = _production_run(env)
    assert done.returncode != 0
    assert "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE: Gestimum refused the user or password" in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GESTIMUM_MAX_RETRIES", "three", "setting GESTIMUM_MAX_RETRIES must be an integer, got 'three'"),
        ("GESTIMUM_READ_TIMEOUT_SECONDS", "5min", "setting GESTIMUM_READ_TIMEOUT_SECONDS must be a number"),
        ("GESTIMUM_VERIFY_TLS", "maybe", "setting GESTIMUM_VERIFY_TLS must be true or false"),
    ],
)
def test_a_malformed_number_or_flag_stops_the_code_location_from_loading(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError) as loaded:
        build_definitions(Settings.from_env({variable: value}))
    assert message in str(loaded.value)
    case = CaseRecord("config", f"malformed_{variable}", "the code location does not load", message)
    case.checks.append("nothing can run")
    case.save()
