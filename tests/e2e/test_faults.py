"""The fault matrix: the real graph against the simulator's fault knobs and a real PostgreSQL.

Every case runs the production job (preflight, sources, transforms, sinks, checks) on a
deployment whose databases are reached as a role with a password and whose Gestimum has
a password, injects one failure, and then checks, in this order:

* what the operator sees: the failing step's message names the cause and the next step;
* that no secret shows in any message, log record, event or metadata of the run;
* the two invariants (tests/helpers/invariants.py) right after the failure;
* recovery: the next run (and, for stock movements in doubt, the operator's reconcile
  command) ends with every row imported or rejected with a reason, each movement at
  most once in Gestimum, and the invariants checked again.

Movements 1-3 (entries, warehouse 001) form the first stock request: the one faults hit.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg2.errors
import pytest
from invariants import CaseRecord, InvariantReport, assert_no_secret, check_invariants, records, statuses
from reliability import (
    DAY,
    Deployment,
    Run,
    admin_url_of,
    as_role,
    deployment,
    execute,
    kill_crm_stream_at,
    run_job,
    seed_standard,
)

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.db import connect, database_name, with_database
from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.encoding import decode_line
from gestimum_pipeline.simulator.server import Fault

FIRST_REQUEST = ("1", "2", "3")  # E|001: the first stock group sent
MASTER_ENDPOINTS = ("comptes", "clients", "contacts", "references_clients_articles")


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


@pytest.fixture
def dep_separate_state(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, separate_state=True, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def closed_port_url(scheme: str = "http") -> str:
    """A URL on which nothing listens (the port was just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/"


def says(message: str, *phrases: str) -> None:
    low = message.lower()
    missing = [p for p in phrases if p.lower() not in low]
    assert not missing, f"the message lacks {missing}: {message}"


def preflight_says(message: str) -> str:
    """The preflight's failure as the table shows it: the first problem, in full."""
    return "Preflight failed, nothing moved: " + message.split("1. ", 1)[1].split("\n")[0][:220]


def invariants(dep: Deployment, **allow: bool) -> InvariantReport:
    return check_invariants(dep.crm_url, dep.state_url, dep.simulator.state, **allow)


def no_leak(dep: Deployment, *runs: Run, extra: list[str] | None = None) -> None:
    for run in runs:
        assert_no_secret(run.texts(), dep.secrets + (extra or []))


def operator_reconciles(dep: Deployment, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    """What the runbook asks: look in Gestimum for each movement in doubt, then reconcile it.

    Returns (movements reconciled as delivered, movements released for re-sending).
    """
    doubt = {k: r for k, r in records(dep.state_url, "documents_stock").items() if r["status"] == "delivery_unknown"}
    codes = catalog.DOCUMENTS_STOCK.field_codes
    where: dict[str, str] = {}
    for document in dep.simulator.state.documents:
        for line in document.lines:
            for key, record in doubt.items():
                values = decode_line(record["line"])
                if tuple(line[c] for c in codes[: len(values)]) == tuple(values):
                    where[key] = document.number
    delivered: dict[str, list[str]] = {}
    for key, number in where.items():
        delivered.setdefault(number, []).append(key)
    released = sorted(k for k in doubt if k not in where)
    base = ["--database-url", dep.state_url, "--actor", "operator-on-call", "--yes"]
    for number, keys in delivered.items():
        assert cli(["reconcile", *base, "--delivered", "--document", number, *sorted(keys)]) == 0
    if released:
        assert cli(["reconcile", *base, "--release", *released]) == 0
    out = capsys.readouterr()
    assert_no_secret({"cli stdout": out.out, "cli stderr": out.err}, dep.secrets)
    return sorted(k for keys in delivered.values() for k in keys), released


def recover(dep: Deployment, case: CaseRecord, capsys: pytest.CaptureFixture[str]) -> Run:
    """Faults cleared, the next run; reconcile if asked to; a last run; strict invariants."""
    dep.simulator.clear_faults()
    run = run_job(dep)
    no_leak(dep, run)
    if not run.success:
        message = run.failure("gestimum/documents_stock")
        says(message, "delivery_unknown", "gestimum-pipeline reconcile")
        case.add("after the next run", invariants(dep))
        delivered, released = operator_reconciles(dep, capsys)
        case.checks.append(f"operator: {len(delivered)} reconciled as delivered, {len(released)} released")
        run = run_job(dep)
        no_leak(dep, run)
    assert run.success, run.failures
    final = case.add("after recovery", invariants(dep))
    # Recovered means settled: nothing waits any more except what only a CRM fix can change.
    assert set(final.statuses) <= {"imported", "rejected", "held"}, final.statuses
    assert final.max_copies == 1
    return run


# --- Gestimum answers badly, or not at all, mid-run -------------------------------------------------

AMBIGUOUS = [
    # (case id, fault kind, process, api overrides, what the operator's message names)
    ("http_500", "http_500", False, {}, "HTTP 500"),  # the simulator's 500 imports nothing
    ("connection_closed_after_read_processed", "close_after_read", True, {}, "connection was closed"),
    ("connection_closed_after_read_not_processed", "close_after_read", False, {}, "connection was closed"),
    ("read_timeout_after_body_sent", "slow", True, {"read_timeout_seconds": 0.4}, "read timeout"),
    ("malformed_answer", "malformed", True, {}, "malformed answer"),
    ("truncated_answer", "truncated", False, {}, "could not be read"),
    ("statistics_do_not_add_up", "bad_stats", True, {}, "imported +"),
]


@pytest.mark.parametrize(("case_id", "kind", "process", "api", "cause"), AMBIGUOUS, ids=[c[0] for c in AMBIGUOUS])
def test_gestimum_may_have_processed_the_request(
    dep: Deployment,
    capsys: pytest.CaptureFixture[str],
    case_id: str,
    kind: str,
    process: bool,
    api: dict[str, object],
    cause: str,
) -> None:
    """Master data is retried (idempotent); stock movements become delivery_unknown, never re-sent."""
    dep.api.update(api)
    seconds = 1.0 if kind == "slow" else 0.0
    dep.simulator.add_fault(Fault(kind, endpoint="clients", process=process, seconds=seconds))
    dep.simulator.add_fault(Fault(kind, endpoint="documents_stock", process=process, seconds=seconds))
    stock_processed = process  # every kind but the process=False variants imports the request
    case = CaseRecord(
        "fault",
        case_id,
        f"clients: {'refused, rows stay pending' if kind == 'bad_stats' else 'retried, imported once'}; "
        f"stock: first request {'processed' if stock_processed else 'not processed'} by Gestimum, "
        "its movements become delivery_unknown, the rest is sent by the next run",
        "",
    )
    run = run_job(dep)
    no_leak(dep, run)
    assert not run.success
    message = run.failure("gestimum/documents_stock")
    says(message, cause, "delivery_unknown", "will not be re-sent", "gestimum-pipeline reconcile", "ids 1, 2, 3")
    detail = re.search(r"may have been processed by Gestimum: (.*?)\. It may have created", message)
    assert detail is not None, message
    case.operator_sees = (
        f"3 stock movements (ids 1, 2, 3) may or may not have become documents in Gestimum: {detail[1]} … "
        "recorded as delivery_unknown and will not be re-sent … `gestimum-pipeline reconcile --delivered "
        "--document <number> <ids>` or `… --release <ids>`"
    )
    stock = statuses(dep.state_url, "documents_stock")
    assert {k: stock[k] for k in FIRST_REQUEST} == dict.fromkeys(FIRST_REQUEST, "delivery_unknown")
    # Never re-sent: exactly one stock request reached Gestimum, and it was not retried.
    stock_requests = [r for r in dep.simulator.state.requests if r.endpoint == "documents_stock"]
    assert len(stock_requests) == 1 and stock_requests[0].fault == kind
    assert len(dep.simulator.state.documents) == (1 if stock_processed else 0)
    if kind == "bad_stats":
        # Counts that do not add up are not a transport fault: retrying cannot fix them.
        clients_message = run.failure("gestimum/clients")
        says(clients_message, "imported +", "stay pending", "next run")
        assert set(statuses(dep.state_url, "clients").values()) <= {"pending", "rejected"}
    else:
        assert run.metadata["gestimum/clients"]["http_attempts"] == 2  # one retry, then imported
        assert run.metadata["gestimum/clients"]["imported"] == 3
    case.add("after the fault", invariants(dep))

    recover(dep, case, capsys)
    # The movements in doubt were reconciled from Gestimum's contents: processed ones are
    # recorded with their document, the others were released and sent exactly once.
    stock = records(dep.state_url, "documents_stock")
    assert all(stock[k]["status"] == "imported" and stock[k]["document"] for k in FIRST_REQUEST)
    case.save()


def test_http_503_with_retry_after_is_retried_after_the_delay(dep: Deployment, capsys: pytest.CaptureFixture) -> None:
    """503 means "not processed": retried for every endpoint, stock included, honouring Retry-After."""
    dep.simulator.add_fault(Fault("http_503", endpoint="documents_stock", retry_after=0.3))
    dep.simulator.add_fault(Fault("http_503", endpoint="clients", retry_after=0.3))
    case = CaseRecord("fault", "http_503_with_retry_after", "retried after Retry-After, every endpoint", "")
    started = time.monotonic()
    run = run_job(dep)
    no_leak(dep, run)
    assert run.success, run.failures
    assert time.monotonic() - started >= 0.6  # two waits of 0.3 s
    assert "retry 1/2 in 0.30s" in run.event_log
    assert (
        run.metadata["gestimum/documents_stock"]["http_attempts"]
        == run.metadata["gestimum/documents_stock"]["requests"] + 1
    )
    case.operator_sees = (
        "a successful run; the event log warns  `gestimum documents_stock: HTTP 503; retry 1/2 in 0.30s`"
    )
    final = case.add("after the run", invariants(dep))
    assert set(final.statuses) <= {"imported", "rejected", "held"} and final.max_copies == 1
    case.save()


def test_http_503_without_retry_after_transient_then_persistent(dep: Deployment, capsys: pytest.CaptureFixture) -> None:
    """Transient: exponential backoff, then imported. Persistent: the run fails, rows stay pending."""
    dep.simulator.add_fault(Fault("http_503", endpoint="clients", count=1))
    dep.simulator.add_fault(Fault("http_503", endpoint="documents_stock", count=10))  # more than the retries
    case = CaseRecord(
        "fault",
        "http_503_without_retry_after",
        "clients: one 503, retried with backoff, imported; stock: 503 on every attempt, the run fails and "
        "the movements stay pending (Gestimum did not process them), sent by the next run",
        "",
    )
    run = run_job(dep)
    no_leak(dep, run)
    assert not run.success
    assert run.metadata["gestimum/clients"]["http_attempts"] == 2
    message = run.failure("gestimum/documents_stock")
    says(message, "HTTP 503", "stay pending", "sent by the next run")
    case.operator_sees = message[:200]
    stock = statuses(dep.state_url, "documents_stock")
    assert {k: stock[k] for k in FIRST_REQUEST} == dict.fromkeys(FIRST_REQUEST, "pending")
    assert dep.simulator.state.documents == []
    assert len([r for r in dep.simulator.state.requests if r.endpoint == "documents_stock"]) == 3  # 1 + 2 retries
    case.add("after the fault", invariants(dep))
    recover(dep, case, capsys)
    case.save()


# --- configuration and reachability at the start ---------------------------------------------------


def _nothing_moved(dep: Deployment, case: CaseRecord, run: Run) -> None:
    """The preflight stopped the run: only it ran, nothing staged, nothing imported."""
    assert not run.success
    assert list(run.failures) == ["sync__preflight"], run.failures
    assert run.materialized() == []
    assert all(r.test_mode and r.lines == 0 for r in dep.simulator.state.requests)
    report = case.add("after the failed run", invariants(dep, allow_unstaged=True))
    assert set(report.statuses) == {"unstaged"}


def test_gestimum_unreachable_at_start(dep: Deployment, capsys: pytest.CaptureFixture) -> None:
    good = dep.gestimum_url
    dep.gestimum_url = closed_port_url()
    case = CaseRecord("fault", "gestimum_unreachable_at_start", "the preflight fails, no step after it runs", "")
    run = run_job(dep)
    no_leak(dep, run)
    message = run.failure("sync/preflight")
    says(message, "nothing was read", "GESTIMUM_URL", "could not reach Gestimum", "rerun")
    case.operator_sees = preflight_says(message)
    _nothing_moved(dep, case, run)
    dep.gestimum_url = good
    recover(dep, case, capsys)
    case.save()


def test_gestimum_unreachable_when_sending_without_the_preflight(
    dep: Deployment, capsys: pytest.CaptureFixture
) -> None:
    """Even if Gestimum goes away after the preflight, nothing is lost: every sink fails, rows stay pending."""
    good = dep.gestimum_url
    dep.gestimum_url = closed_port_url()
    case = CaseRecord(
        "fault",
        "gestimum_unreachable_at_send_time",
        "(preflight bypassed) rows are staged, each sink fails with nothing sent, all rows stay pending",
        "",
    )
    run = run_job(dep, without_preflight=True)
    no_leak(dep, run)
    assert not run.success
    message = run.failure("gestimum/documents_stock")
    says(message, "could not reach Gestimum", "nothing was sent", "stay pending", "next run")
    case.operator_sees = message[:200]
    assert set(statuses(dep.state_url, "documents_stock").values()) == {"pending", "rejected"}
    case.add("after the failed run", invariants(dep))
    dep.gestimum_url = good
    recover(dep, case, capsys)
    case.save()


@pytest.mark.parametrize(
    ("case_id", "field", "value", "setting"),
    [
        ("wrong_password", "password", "Wr0ng-Passw0rd!", "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE"),
        ("wrong_user", "user", "NOBODY", "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE"),
        ("wrong_company_file", "company_file", "NOPE.Gestimum", "GESTIMUM_FICHIER"),
    ],
)
def test_wrong_credentials_or_company_file(
    dep: Deployment, capsys: pytest.CaptureFixture, case_id: str, field: str, value: str, setting: str
) -> None:
    good = getattr(dep, field)
    setattr(dep, field, value)
    case = CaseRecord("fault", case_id, "the preflight's test-mode request is refused; no step after it runs", "")
    run = run_job(dep)
    no_leak(dep, run, extra=[value] if field == "password" else None)
    message = run.failure("sync/preflight")
    says(message, setting, "nothing was read", "rerun")
    case.operator_sees = preflight_says(message)
    _nothing_moved(dep, case, run)
    setattr(dep, field, good)
    recover(dep, case, capsys)
    case.save()


def test_crm_unreachable_at_start(dep_separate_state: Deployment, capsys: pytest.CaptureFixture) -> None:
    dep = dep_separate_state
    good = dep.crm_url
    dep.crm_url = as_role("postgresql://x@127.0.0.1:1/crm")  # nothing listens on port 1
    case = CaseRecord("fault", "crm_unreachable_at_start", "the preflight fails, no step after it runs", "")
    run = run_job(dep)
    no_leak(dep, run)
    message = run.failure("sync/preflight")
    says(message, "CRM_DATABASE_URL", "***@127.0.0.1:1", "connection refused", "check the host", "rerun")
    case.operator_sees = preflight_says(message)
    dep.crm_url = good
    _nothing_moved(dep, case, run)
    recover(dep, case, capsys)
    case.save()


def test_state_store_unreachable_at_start(dep_separate_state: Deployment, capsys: pytest.CaptureFixture) -> None:
    dep = dep_separate_state
    good = dep.state_url
    dep.state_url = as_role("postgresql://x@127.0.0.1:1/state")
    case = CaseRecord("fault", "state_store_unreachable_at_start", "the preflight fails, no step after it runs", "")
    run = run_job(dep)
    no_leak(dep, run)
    message = run.failure("sync/preflight")
    says(message, "SYNC_STATE_DATABASE_URL", "***@127.0.0.1:1", "check the host", "rerun")
    case.operator_sees = preflight_says(message)
    dep.state_url = good
    _nothing_moved(dep, case, run)
    recover(dep, case, capsys)
    case.save()


# --- a database connection lost mid-run -------------------------------------------------------------


def test_crm_connection_dropped_while_rows_stream(dep: Deployment, capsys: pytest.CaptureFixture) -> None:
    """The CRM backend dies between two chunks of the movements' stream (a view kills its session)."""
    kill_crm_stream_at(dep, 8)
    dep.options["chunk_size"] = 2
    case = CaseRecord(
        "fault",
        "crm_connection_dropped_while_rows_stream",
        "the movements' transform fails after 3 chunks; chunks staged stay pending, the rest is read again "
        "by the next run; other endpoints sync",
        "",
    )
    run = run_job(dep)
    no_leak(dep, run)
    assert not run.success
    message = run.failure("transform/documents_stock")
    says(message, "CRM connection failed while streaming stock_movements", "after 6 rows", "rerun the partition")
    case.operator_sees = message[:220]
    assert "gestimum/documents_stock" not in run.materialized()  # skipped: its input failed
    assert "gestimum/clients" in run.materialized()
    stock = statuses(dep.state_url, "documents_stock")
    assert stock == {"1": "pending", "2": "pending", "3": "pending", "9": "rejected", "6": "pending", "7": "pending"}
    report = case.add("after the failed run", invariants(dep, allow_unstaged=True))
    assert report.statuses["unstaged"] == 3  # movements 8, 4, 5 were never read
    execute(dep.crm_url, [("DELETE FROM crm.fault_switch", ())])
    recover(dep, case, capsys)
    case.save()


class _StateStoreCutter(threading.Thread):
    """Cuts the state store off (no new connections, existing ones terminated) once rows are in flight."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.admin_url = admin_url
        self.database = database
        self.cut = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        conn = connect(self.admin_url, autocommit=True)
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    try:
                        cur.execute(
                            # The in-flight marker: one ledger row per request.
                            "SELECT count(*) FROM gestimum_sync.requests"
                            " WHERE endpoint = 'documents_stock' AND state = 'in_flight'"
                        )
                        in_flight = cur.fetchone()[0]
                    except psycopg2.errors.UndefinedTable:  # the run has not created the state store yet
                        in_flight = 0
                    if in_flight:
                        conn.close()
                        self._alter(allow=False)
                        self.cut.set()
                        return
                    time.sleep(0.02)
        finally:
            conn.close()

    def _alter(self, *, allow: bool) -> None:
        # From another database: a database cannot refuse connections to itself.
        conn = connect(with_database(self.admin_url, "postgres"), autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS {str(allow).lower()}')
                if not allow:
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (self.database,),
                    )
        finally:
            conn.close()

    def restore(self) -> None:
        self._alter(allow=True)


def test_state_store_lost_while_gestimum_processes_a_stock_request(
    dep_separate_state: Deployment, capsys: pytest.CaptureFixture
) -> None:
    """Gestimum creates the document, but its answer cannot be recorded: in flight, then delivery_unknown."""
    dep = dep_separate_state
    dep.simulator.add_fault(Fault("slow", endpoint="documents_stock", seconds=1.0))
    database = database_name(dep.state_url)
    cutter = _StateStoreCutter(admin_url_of(dep.state_url, dep.server_url), database)
    case = CaseRecord(
        "fault",
        "state_store_lost_mid_request",
        "Gestimum imports the first stock request but the answer cannot be recorded: the rows stay in flight; "
        "the next run marks them delivery_unknown; the operator reconciles them with the document the "
        "failure message names",
        "",
    )
    cutter.start()
    try:
        run = run_job(dep)
    finally:
        cutter.stop.set()
        cutter.join(10)
        cutter.restore()
    assert cutter.cut.is_set()
    no_leak(dep, run)
    assert not run.success
    message = run.failure("gestimum/documents_stock")
    documents = dep.simulator.state.documents
    assert len(documents) == 1
    says(
        message,
        "was answered by Gestimum (3 imported, 0 rejected",
        f"documents {documents[0].number}",
        "state store failed while recording",
        "stay in flight",
        "reconcile --delivered",
        "SYNC_STATE_DATABASE_URL",
    )
    case.operator_sees = message[:240]
    stock = statuses(dep.state_url, "documents_stock")
    assert {k: stock[k] for k in FIRST_REQUEST} == dict.fromkeys(FIRST_REQUEST, "in_flight")
    case.add("after the failed run", invariants(dep, allow_in_flight=True, allow_unstaged=True))
    recover(dep, case, capsys)
    stock_records = records(dep.state_url, "documents_stock")
    assert {stock_records[k]["document"] for k in FIRST_REQUEST} == {documents[0].number}
    case.save()


# --- the run process killed mid-import --------------------------------------------------------------


# The production code location and job, executed in one process, as `dg launch --assets '*'`
# runs them, without the CLI's own start-up: the process the test kills mid-import.
RUN_SCRIPT = """
import sys
import dagster as dg
from gestimum_pipeline.definitions import defs
job = defs.resolve_job_def("gestimum_sync")
result = job.execute_in_process(
    partition_key=sys.argv[1], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
)
sys.exit(0 if result.success else 1)
"""


def _run_in_subprocess(dep: Deployment) -> subprocess.Popen[bytes]:
    """The production job (definitions module, settings from the environment) in its own process group."""
    env = {**os.environ, **dep.env(), "GESTIMUM_MAX_RETRIES": "0", "GESTIMUM_READ_TIMEOUT_SECONDS": "120"}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, DAY],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for_in_flight(dep: Deployment, endpoint: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"").decode()[-3000:]
        try:
            if "in_flight" in statuses(dep.state_url, endpoint).values():
                return
        except Exception:  # the state store schema may not exist yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {endpoint} row went in flight within {timeout} s")


@pytest.mark.parametrize("endpoint", ["documents_stock", "clients"])
def test_run_killed_mid_import_then_a_fresh_run(dep: Deployment, capsys: pytest.CaptureFixture, endpoint: str) -> None:
    """SIGKILL while Gestimum works on a request: stock becomes delivery_unknown (never re-sent);
    master data is simply sent again."""
    dep.simulator.add_fault(Fault("slow", endpoint=endpoint, seconds=30))
    stock = endpoint == "documents_stock"
    case = CaseRecord(
        "fault",
        f"sigkill_mid_import_{'stock' if stock else 'master_data'}",
        "the run is killed while Gestimum imports the first "
        + (
            "stock request; the fresh run marks its movements delivery_unknown and fails; the operator "
            "reconciles them as delivered"
            if stock
            else "clients request; the fresh run re-sends it (an idempotent upsert) and succeeds"
        ),
        "",
    )
    process = _run_in_subprocess(dep)
    try:
        _wait_for_in_flight(dep, endpoint, process, timeout=90)
        time.sleep(0.3)  # the request is on the wire, Gestimum is working on it
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert "in_flight" in statuses(dep.state_url, endpoint).values()
    case.add("right after the kill", invariants(dep, allow_in_flight=True, allow_unstaged=True))
    requests_before = len([r for r in dep.simulator.state.requests if r.endpoint == endpoint])
    documents_before = len(dep.simulator.state.documents)

    dep.simulator.clear_faults()
    fresh = run_job(dep)
    no_leak(dep, fresh)
    if stock:
        assert not fresh.success
        message = fresh.failure("gestimum/documents_stock")
        says(message, "delivery_unknown", "not re-sent", "gestimum-pipeline reconcile")
        case.operator_sees = message[:200]
        assert fresh.metadata.get("gestimum/documents_stock") is None  # failed, with its metadata in the failure
        in_doubt = [k for k, s in statuses(dep.state_url, endpoint).items() if s == "delivery_unknown"]
        assert sorted(in_doubt) == sorted(FIRST_REQUEST)
        # Not re-sent: the fresh run posted only the other groups, the killed request's document is alone.
        assert len(dep.simulator.state.documents) == documents_before + 2
    else:
        assert fresh.success, fresh.failures
        case.operator_sees = "a successful fresh run (`recovered_in_flight` = 3 in the clients metadata)"
        assert fresh.metadata["gestimum/clients"]["recovered_in_flight"] == 3
        assert len([r for r in dep.simulator.state.requests if r.endpoint == endpoint]) == requests_before + 1
    case.add("after the fresh run", invariants(dep))
    recover(dep, case, capsys)
    case.save()
