"""Scale-out on a real engine: three company files' runs as Celery tasks on two workers (issue 22).

The deployment of docs/production/README.md ("Celery"): RabbitMQ on 127.0.0.1:5672, the
production instance (PostgreSQL storage, op pools with limit 1: Celery needs the instance
shared by the run's process and the workers, so this test uses dagster-postgres rather than
SQLite), two `celery -A dagster_celery.app worker` processes started from a DAGSTER_HOME
holding docs/production/dagster_celery_config.py, and GESTIMUM_EXECUTOR=celery. Three company
files (one GestimumSync defs.yaml each), each with its own CRM and its own simulator, launched
at once with `dg launch`. Then a worker is SIGKILLed while Gestimum imports stock movements,
and the next run recovers with nothing sent twice.

Each test run uses its own queue (GESTIMUM_CELERY_QUEUE), so concurrent sessions on one broker
never take each other's tasks. Without a broker it skips, saying so, except in CI (`CI` set),
where it fails, as the browser test does.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster_services import BIN, environ_without_settings, log_tail, pg_env, stop_group
from databases import copy_database, init_state_store
from dg_project import company_defs_yaml, company_env, write_dg_project
from invariants import check_invariants, statuses
from sync_harness import insert_contacts, insert_customers, insert_movements, insert_references, query_rows

from gestimum_pipeline.db import create_database, database_name, drop_database
from gestimum_pipeline.gestimum.catalog import Endpoint
from gestimum_pipeline.simulator import server as simulator_server
from gestimum_pipeline.simulator.faults import Fault
from gestimum_pipeline.simulator.importer import parse_request
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "docs" / "production"
BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672
BROKER_URL = f"pyamqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}//"
SETTING = "GESTIMUM_TEST_DATABASE_URL"
DAY = "2026-03-10"
COMPANIES = ("acme", "bravo", "carlo")
WORKERS = ("w1", "w2")
# Gestimum opening the company file for every request, shortened: long enough that two sinks
# writing at once would overlap on the simulator's clock.
REQUEST_DELAY_SECONDS = 0.4
RUN_TIMEOUT_SECONDS = 240.0


def defs_yaml(name: str) -> str:
    return company_defs_yaml(name, start_date='"2026-01-01"')


# --------------------------------------------------------------------------- the broker


def _broker_required() -> str | None:
    """Why a missing broker fails the test instead of skipping it, if it does."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "in CI (CI is set)"
    return None


@pytest.fixture(scope="module")
def broker() -> str:
    """The broker's URL, or skip saying why (fail where a broker is required: CI). Requested
    first, so a skip sets nothing up for nothing."""
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2):
            pass
    except OSError as exc:
        problem = f"no AMQP broker answers on {BROKER_HOST}:{BROKER_PORT} ({exc}); apt-get install rabbitmq-server"
        required = _broker_required()
        if required:
            pytest.fail(f"a Celery broker is required ({required}) but {problem}")
        pytest.skip(f"Celery test skipped: {problem}")
    return BROKER_URL


# --------------------------------------------------------------------------- the deployment


def _rows(index: int, name: str) -> dict[str, list[tuple[object, ...]]]:
    """A company's CRM rows; codes and quantities are its own, so a line in the wrong company
    file would show."""
    p = name[0].upper()
    at = f"{DAY} 09:00+01"
    return {
        "customers": [(f"{p}{i}", f"{name} {i}", None, None, None, None, None, None, at) for i in range(1, 4)],
        "contacts": [(f"{p}C{i}", f"{p}{i}", f"Nom{i}", "Ana", None, None, at) for i in range(1, 3)],
        "movements": [(i, "in", "001", "ELS", index * 10 + i, at) for i in range(1, 4)],
        "references": [(f"{p}1", "ELS", f"REF-{p}", 12.5, at)],
    }


def _insert(crm: str, rows: dict[str, list[tuple[object, ...]]]) -> None:
    insert_customers(crm, rows["customers"])
    insert_contacts(crm, rows["contacts"])
    insert_movements(crm, rows["movements"])
    insert_references(crm, rows["references"])


@dataclass
class Deployment:
    project: Path
    home: Path
    env: dict[str, str]
    crm: dict[str, str]
    simulators: dict[str, GestimumSimulator]
    workers: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def launch(self, name: str) -> subprocess.Popen[bytes]:
        """`dg launch` of one company file's sync job: the run's process, whose executor sends
        each step to the queue."""
        log = (self.logs / f"launch_{name}_{uuid.uuid4().hex[:6]}.log").open("wb")
        return subprocess.Popen(
            [str(BIN / "dg"), "launch", "--job", f"{name}_gestimum_sync", "--partition", DAY],
            cwd=self.project,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, worker: str) -> None:
        """A worker as the recipe starts one, one task at a time (-P solo: a SIGKILL kills the
        task with it); gossip, mingle and heartbeats off, they only slow the start."""
        log = (self.logs / f"{worker}.log").open("wb")
        self.workers[worker] = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "dagster_celery.app",
                "worker",
                "-Q",
                self.env["GESTIMUM_CELERY_QUEUE"],
                "-n",
                f"{worker}@%h",
                "-P",
                "solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=self.home,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for_workers(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for worker, proc in self.workers.items():
            log = self.logs / f"{worker}.log"
            while "ready." not in (log.read_text(errors="replace") if log.exists() else ""):
                assert proc.poll() is None, f"celery worker {worker} exited:\n" + log_tail(log)
                assert time.monotonic() < deadline, f"celery worker {worker} not ready:\n" + log_tail(log)
                time.sleep(0.2)

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{log_tail(p, 30)}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
def deployment(broker: str, pg_server_url: str, crm_template: str, tmp_path: Path) -> Iterator[Deployment]:
    write_dg_project(tmp_path / "project", "three_companies", {name: defs_yaml(name) for name in COMPANIES})
    # DAGSTER_HOME as the recipe makes it: the production instance and the workers' Celery settings.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION / "dagster.yaml", home / "dagster.yaml")
    shutil.copy(PRODUCTION / "dagster_celery_config.py", home / "dagster_celery_config.py")
    logs = tmp_path / "logs"
    logs.mkdir()

    dagster_db = f"gp_celery_dagster_{uuid.uuid4().hex[:10]}"
    dagster_url = create_database(pg_server_url, dagster_db, setting=SETTING)
    crm = {name: copy_database(pg_server_url, crm_template, f"gp_celery_{name}") for name in COMPANIES}
    for name in COMPANIES:  # `gestimum-pipeline state init` of each company file's store
        init_state_store(crm[name])
    env = environ_without_settings()
    env.update(
        {
            "DAGSTER_HOME": str(home),
            **pg_env(dagster_url),
            "VIRTUAL_ENV": sys.prefix,  # `dg`: this test's environment has the project
            # The workers import the code location as the run's process does.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "project"), env.get("PYTHONPATH")])),
            "GESTIMUM_EXECUTOR": "celery",
            "GESTIMUM_CELERY_BROKER_URL": broker,
            # This test session's own queue on the shared broker.
            "GESTIMUM_CELERY_QUEUE": f"gestimum_test_{uuid.uuid4().hex[:12]}",
            # The killed stock request is not retried: its movements go delivery_unknown at once.
            "GESTIMUM_MAX_RETRIES": "0",
        }
    )
    dep = Deployment(tmp_path / "project", home, env, crm, {}, {}, logs)
    try:
        for name in COMPANIES:
            upper = name.upper()
            sim = GestimumSimulator(
                SimulatorConfig(
                    company_file=f"{upper}.Gestimum",
                    user="SYNC",
                    password=f"{name}-pw",
                    items=("ELS",),
                    company_open_delay=REQUEST_DELAY_SECONDS,
                )
            )
            dep.simulators[name] = sim.start()
            env.update(company_env(name, sim.url, crm[name]))
        for worker in WORKERS:  # with the whole environment: they load the code location
            dep.start_worker(worker)
        yield dep
    finally:
        for proc in dep.workers.values():
            stop_group(proc)
        for sim in dep.simulators.values():
            sim.stop()
        for url in crm.values():
            drop_database(pg_server_url, database_name(url), setting=SETTING)
        drop_database(pg_server_url, dagster_db, setting=SETTING)


# --------------------------------------------------------------------------- reading the outcome


@dataclass
class Span:
    company: str
    what: str
    start: float
    end: float

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end


def _wait(procs: dict[str, subprocess.Popen[bytes]], dep: Deployment) -> dict[str, int]:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                stop_group(p)
            message = f"the run of {name} did not end in {RUN_TIMEOUT_SECONDS:.0f} s\n"
            raise AssertionError(message + dep.tails()) from None
    return {name: proc.returncode for name, proc in procs.items()}


class Rendezvous:
    """The simulators' company-open delay, made to wait (once, for at most `timeout` seconds) until
    two requests carrying data (the preflights' test-mode checks run outside the sinks' pools and
    do not count) are inside Gestimum at the same time. Each company file has one writer, so the
    second can only be another company file's: the overlap the test asserts happens whenever the
    engine lets company files write at once, however the machine's load spaces their steps. An
    engine that serialised company files never brings a second one: the wait times out, and the
    overlap assertion fails."""

    def __init__(self, timeout: float) -> None:
        self._changed = threading.Condition()
        self._inside = 0
        self._timeout = timeout
        self.met = False

    def sleep(self, seconds: float) -> None:
        with self._changed:
            self._inside += 1
            self.met = self.met or self._inside >= 2
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.met, timeout=self._timeout)
        try:
            time.sleep(seconds)
        finally:
            with self._changed:
                self._inside -= 1

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        process_import = simulator_server.process_import
        monkeypatch.setattr(
            simulator_server,
            "process_import",
            lambda endpoint, body, *args, **kwargs: process_import(
                endpoint, body, *args, **kwargs, sleep=time.sleep if _test_mode(endpoint, body) else self.sleep
            ),
        )


def _test_mode(endpoint: Endpoint, body: bytes) -> bool:
    try:
        return parse_request(endpoint, body).test_mode
    except Exception:  # an unreadable request: the simulator answers it as usual
        return False


def _requests(sim: GestimumSimulator, company: str, *, data_only: bool = False) -> list[Span]:
    return [
        Span(company, r.endpoint, r.received_at, r.recorded_at)
        for r in sorted(sim.state.requests, key=lambda r: r.received_at)
        if not (data_only and r.test_mode)  # data: not the preflight's access check
    ]


def _sink_steps(instance: dg.DagsterInstance, run: dg.DagsterRun, company: str) -> list[Span]:
    """The run's sink steps (those in a pool), from the STEP_START and STEP_SUCCESS/FAILURE
    events the workers wrote to PostgreSQL."""
    plan = instance.get_execution_plan_snapshot(str(run.execution_plan_snapshot_id))
    pooled = {s.key for s in plan.steps if s.pool}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for record in instance.all_logs(run.run_id, of_type=kinds):
        if record.step_key in pooled:
            target = starts if record.dagster_event_type == DagsterEventType.STEP_START else ends
            target[record.step_key] = record.timestamp
    return [Span(company, key, starts[key], ends[key]) for key in starts if key in ends]


def _workers_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker (hostname) that executed it, from the engine events the
    workers record."""
    found = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = event.engine_event_data if event is not None else None
        if data is not None and "Celery worker" in data.metadata and record.step_key:
            found[record.step_key] = str(data.metadata["Celery worker"].value)
    return found


def _assert_disjoint(spans: list[Span]) -> None:
    for before, after in itertools.pairwise(sorted(spans, key=lambda s: s.start)):
        assert after.start >= before.end, f"{before} overlaps {after}"


def _imported_lines(sim: GestimumSimulator) -> Counter[str]:
    lines: Counter[str] = Counter()
    for r in sim.state.requests:
        if not r.test_mode:
            lines[r.endpoint] += r.imported
    return lines


def _document_lines(sim: GestimumSimulator) -> Counter[tuple[str, str]]:
    return Counter((line["ART_CODE"], line["MVT_QTE"]) for d in sim.state.documents for line in d.lines)


def _movement_lines(crm: str) -> Counter[tuple[str, str]]:
    rows = query_rows(crm, "SELECT item_code, quantity FROM crm.stock_movements")
    return Counter((item, format(qty.normalize(), "f").replace(".", ",")) for item, qty in rows)


# --------------------------------------------------------------------------- the test


def test_celery_workers_sync_company_files_apart_one_writer_each_and_survive_a_killed_worker(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment
    t0 = time.monotonic()
    rows = {name: _rows(i, name) for i, name in enumerate(COMPANIES, start=1)}
    for name in COMPANIES:
        _insert(dep.crm[name], rows[name])
    for key, value in dep.env.items():  # this process reads the same instance
        if key.startswith(("DAGSTER_PG_", "PGHOST")):
            monkeypatch.setenv(key, value)
    acme, sim = dep.crm["acme"], dep.simulators["acme"]
    # ACME's stock request is imported by Gestimum, then answered late: the worker sending it is
    # SIGKILLed meanwhile, while BRAVO's and CARLO's runs go on.
    sim.add_fault(Fault("slow", endpoint="documents_stock", seconds=60))
    rendezvous = Rendezvous(timeout=RUN_TIMEOUT_SECONDS / 4)
    rendezvous.install(monkeypatch)
    dep.wait_for_workers()
    t_ready = time.monotonic()

    # ---- three company files at once, their steps spread over the two workers
    launched = {name: dep.launch(name) for name in COMPANIES}
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not any(r.fault == "slow" for r in sim.state.requests):  # Gestimum has imported them
        assert launched["acme"].poll() is None, "ACME's run ended early\n" + dep.tails()
        assert time.monotonic() < deadline, "ACME's stock request never reached Gestimum\n" + dep.tails()
        time.sleep(0.05)
    assert "in_flight" in statuses(acme, "documents_stock").values()
    with dg.DagsterInstance.from_config(str(dep.home)) as instance:
        (killed_run,) = instance.get_runs(dg.RunsFilter(job_name="acme_gestimum_sync"))
        worker = _workers_of(instance, killed_run.run_id)["acme__gestimum__documents_stock"].split("@")[0]
        os.killpg(dep.workers[worker].pid, signal.SIGKILL)
        dep.workers[worker].wait(10)
        # ACME's run process now waits for a task no worker will answer. The operator
        # force-terminates the run and frees its pool slot (docs/production/README.md), as the UI
        # does it.
        time.sleep(1.0)
        assert launched["acme"].poll() is None
        os.killpg(launched.pop("acme").pid, signal.SIGKILL)
        instance.report_run_canceled(instance.get_run_by_id(killed_run.run_id))
        instance.event_log_storage.free_concurrency_slots_for_run(killed_run.run_id)
    killed_request = next(r for r in sim.state.requests if r.fault == "slow")
    check_invariants(acme, acme, sim.state, allow_in_flight=True, allow_unstaged=True)
    sim.clear_faults()
    # The other company files' runs finish on the surviving worker.
    assert _wait(launched, dep) == {"bravo": 0, "carlo": 0}, dep.tails()
    t_runs = time.monotonic()

    # ---- the next ACME run: the movements in doubt become delivery_unknown and are not sent
    # again (the run fails, naming the command that settles them); everything else is sent.
    assert _wait({"acme": dep.launch("acme")}, dep)["acme"] != 0
    t_next = time.monotonic()
    in_doubt = {k for k, s in statuses(acme, "documents_stock").items() if s == "delivery_unknown"}
    assert in_doubt == {"1", "2", "3"}
    assert sum(1 for r in sim.state.requests if r.endpoint == "documents_stock") == 1  # not re-sent
    check_invariants(acme, acme, sim.state)
    # The operator records Gestimum's document: every row settled.
    (document,) = killed_request.documents
    reconciled = subprocess.run(
        [str(BIN / "gestimum-pipeline"), "reconcile", "--delivered", "--document", document, "--yes", *in_doubt],
        env={**dep.env, "CRM_DATABASE_URL": acme},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert set(statuses(acme, "documents_stock").values()) == {"imported"}

    with dg.DagsterInstance.from_config(str(dep.home)) as instance:
        runs = {name: instance.get_runs(dg.RunsFilter(job_name=f"{name}_gestimum_sync")) for name in COMPANIES}
        executed = {name: [_workers_of(instance, r.run_id) for r in rs] for name, rs in runs.items()}
        sinks = {name: [s for r in rs for s in _sink_steps(instance, r, name)] for name, rs in runs.items()}
        pools = {
            name: instance.event_log_storage.get_concurrency_info(f"gestimum_{name.upper()}_Gestimum")
            for name in COMPANIES
        }
    # Every step ran as a Celery task, and the engine used both workers.
    assert all(len(steps) >= 15 for name in ("bravo", "carlo") for steps in executed[name]), executed
    assert {w.split("@")[0] for runs_ in executed.values() for steps in runs_ for w in steps.values()} == set(WORKERS)
    assert all((p.active_slot_count, p.pending_step_count) == (0, 0) for p in pools.values())  # slots given back

    requests = {name: _requests(dep.simulators[name], name) for name in COMPANIES}
    for i, name in enumerate(COMPANIES, start=1):
        company, mine = dep.simulators[name], rows[name]
        # Every row exactly once, in its own company file: nothing of another company, no line twice.
        assert set(company.state.customers) == {c[0] for c in mine["customers"]}
        assert set(company.state.contacts) == {c[0] for c in mine["contacts"]}
        assert set(company.state.references) == {("ELS", f"{name[0].upper()}1")}
        assert _imported_lines(company) == {
            "comptes": 3,
            "clients": 3,
            "contacts": 2,
            "references_clients_articles": 1,
            "documents_stock": 3,
        }
        assert _document_lines(company) == Counter(("ELS", str(i * 10 + k)) for k in range(1, 4))
        assert _document_lines(company) == _movement_lines(dep.crm[name])
        check_invariants(dep.crm[name], dep.crm[name], company.state)
        # One writer per company file: its sink steps, and the requests it received, never overlap.
        _assert_disjoint(sinks[name])
        _assert_disjoint(requests[name])
    # While different company files were written at the same time.
    assert rendezvous.met, "no two company files' requests were ever in Gestimum at once"
    data = {name: _requests(dep.simulators[name], name, data_only=True) for name in COMPANIES}
    assert any(a.overlaps(b) for x, y in itertools.combinations(COMPANIES, 2) for a in data[x] for b in data[y]), data
    tasks = Counter(w.split("@")[0] for runs_ in executed.values() for steps in runs_ for w in steps.values())
    print(
        f"\nworkers ready {t_ready - t0:.1f} s after the deployment; three runs {t_runs - t_ready:.1f} s;"
        f" the next ACME run {t_next - t_runs:.1f} s; tasks per worker {dict(tasks)}"
    )
