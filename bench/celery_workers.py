"""Company files across Celery workers: wall time to sync N company files with 1 worker, then 2.

    python bench/celery_workers.py --companies 6 --customers 20000

Each company file has its own CRM database (`gestimum_bench_celery_crm_<i>`, `--customers`
customers with one contact, one item reference and one stock movement each, on one UTC
day), its own simulator process and its own GestimumSync component; Dagster's storage is
the production dagster.yaml on `gestimum_bench_celery_dagster`. For each worker count, the
same N runs are launched at once (`dg launch`, one per company file, GESTIMUM_EXECUTOR=celery)
against fresh simulators and a fresh state store schema, on a queue of this run's own on the
RabbitMQ broker (`--broker`). Printed per worker count: the wall time from the launches to the
last run's end, the steps each worker ran, and how the sink steps of different company files
overlapped (from Dagster's step events): the most company files being written at one
instant, and the sum of every sink step's time over the time any sink was running (above 1:
company files' pools did not serialise each other).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/celery_workers.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
from dagster._core.events import DagsterEventType  # noqa: E402

from bench.common import DATA_START  # noqa: E402
from bench.harness import DEFAULT_SERVER_URL  # noqa: E402
from gestimum_pipeline.crm.ddl import create_reference_schema  # noqa: E402
from gestimum_pipeline.crm.demo import load_bulk  # noqa: E402
from gestimum_pipeline.db import connect, connection_parameters, create_database, drop_database  # noqa: E402
from gestimum_pipeline.sync.state import StateStore  # noqa: E402

PREFIX = "gestimum_bench_celery_"
BIN = Path(sys.executable).parent
PRODUCTION = ROOT / "docs" / "production"
DAY = DATA_START.isoformat()
# One task at a time per worker (a worker count is then a step count), INFO for its "ready." line.
WORKER_OPTIONS = ("-P", "solo", "--without-gossip", "--without-mingle", "--loglevel", "INFO")
PYPROJECT = """\
[project]
name = "bench-companies"
version = "0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "bench_companies"
code_location_target_module = "bench_companies.definitions"
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def defs_yaml(name: str, state_schema: str) -> str:
    upper = name.upper()
    return f"""\
type: gestimum_pipeline.components.GestimumSync
attributes:
  name: {name}
  gestimum_url: "{{{{ env.{upper}_GESTIMUM_URL }}}}"
  company_file: {upper}.Gestimum
  user: SYNC
  crm_url: "{{{{ env.{upper}_CRM_DATABASE_URL }}}}"
  state_schema: {state_schema}
  start_date: "{DAY}"
  timezone: UTC
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on port {port}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ends a process started in its own session, and all it spawned."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def pg_env(url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables the production dagster.yaml reads."""
    params = connection_parameters(url)
    host = params.get("host", "")
    env = {
        "DAGSTER_PG_HOST": "" if host.startswith("/") else host,
        "DAGSTER_PG_PORT": params.get("port", "5432"),
        "DAGSTER_PG_DB": params.get("dbname", ""),
        "DAGSTER_PG_USER": params.get("user", ""),
        "DAGSTER_PG_PASSWORD": params.get("password", ""),
    }
    if host.startswith("/"):
        env["PGHOST"] = host
    return env


def load_crms(server: str, companies: list[str], customers: int) -> dict[str, str]:
    urls = {}
    for i, name in enumerate(companies):
        db = f"{PREFIX}crm_{name}"
        drop_database(server, db)
        urls[name] = url = create_database(server, db)
        conn = connect(url)
        try:
            create_reference_schema(conn, "crm")
            conn.commit()
            load_bulk(
                conn,
                "crm",
                customers,
                start=DATA_START,
                days=1,
                seed=i + 1,
                contacts_per_customer=1,
                references_per_customer=1,
                movements_per_customer=1,
            )
        finally:
            conn.close()
    return urls


def sink_overlap(spans: list[tuple[str, float, float]]) -> dict[str, float]:
    """spans: (company, start, end) of every sink step. The most company files written at one
    instant, and the sum of the sinks' durations over the union of their time."""
    points = sorted([(s, 1, c) for c, s, _ in spans] + [(e, -1, c) for c, _, e in spans])
    active: dict[str, int] = {}
    most, busy, last = 0, 0.0, None
    for t, step, company in points:
        if last is not None and any(active.values()):
            busy += t - last
        active[company] = active.get(company, 0) + step
        most = max(most, sum(1 for v in active.values() if v > 0))
        last = t
    total = sum(e - s for _, s, e in spans)
    return {"most_company_files_at_once": most, "sink_time_over_busy_time": round(total / busy, 2) if busy else 0.0}


def run_configuration(
    workers: int,
    companies: list[str],
    crm: dict[str, str],
    server: str,
    broker: str,
    base: Path,
) -> dict[str, Any]:
    work = base / f"w{workers}"
    schema = f"gestimum_sync_bench_w{workers}"
    package = work / "project" / "bench_companies"
    for name in companies:
        (package / "defs" / name).mkdir(parents=True)
        (package / "defs" / name / "defs.yaml").write_text(defs_yaml(name, schema))
        with StateStore(crm[name], schema) as store:  # `state init`: a fresh store per configuration
            store.migrate()
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    (work / "project" / "pyproject.toml").write_text(PYPROJECT)
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION / "dagster.yaml", home / "dagster.yaml")
    shutil.copy(PRODUCTION / "dagster_celery_config.py", home / "dagster_celery_config.py")
    dagster_db = f"{PREFIX}dagster"
    drop_database(server, dagster_db)
    dagster_url = create_database(server, dagster_db)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_", "DAGSTER_"))}
    env.update(
        {
            "DAGSTER_HOME": str(home),
            **pg_env(dagster_url),
            "VIRTUAL_ENV": sys.prefix,
            "PYTHONPATH": str(work / "project"),
            "GESTIMUM_EXECUTOR": "celery",
            "GESTIMUM_CELERY_BROKER_URL": broker,
            "GESTIMUM_CELERY_QUEUE": f"{PREFIX}{uuid.uuid4().hex[:12]}",
        }
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = work / "logs"
    logs.mkdir()

    def start(args: list[str], log: str, cwd: Path) -> subprocess.Popen[bytes]:
        with (logs / log).open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)
        return proc

    try:
        for name in companies:
            port = free_port()
            start(
                [
                    str(BIN / "gestimum-pipeline"),
                    "simulator",
                    "--port",
                    str(port),
                    *("--company-file", f"{name.upper()}.Gestimum"),
                    *("--user", "SYNC"),
                ],
                f"simulator_{name}.log",
                work,
            )
            wait_port(port)
            env[f"{name.upper()}_GESTIMUM_URL"] = f"http://127.0.0.1:{port}/"
            env[f"{name.upper()}_CRM_DATABASE_URL"] = crm[name]
        started = time.perf_counter()
        for k in range(1, workers + 1):
            start(
                [
                    str(BIN / "celery"),
                    "-A",
                    "dagster_celery.app",
                    "worker",
                    "-Q",
                    env["GESTIMUM_CELERY_QUEUE"],
                    *WORKER_OPTIONS,
                    "-n",
                    f"bench{k}@%h",
                ],
                f"worker{k}.log",
                home,
            )
        for k in range(1, workers + 1):
            while "ready." not in (logs / f"worker{k}.log").read_text(errors="replace"):
                time.sleep(0.2)
        worker_start = time.perf_counter() - started

        started = time.perf_counter()
        launches = {
            name: start(
                [str(BIN / "dg"), "launch", "--job", f"{name}_gestimum_sync", "--partition", DAY],
                f"launch_{name}.log",
                work / "project",
            )
            for name in companies
        }
        codes = {name: proc.wait() for name, proc in launches.items()}
        wall = time.perf_counter() - started

        os.environ.update({k: v for k, v in env.items() if k.startswith(("DAGSTER_PG_", "PGHOST"))})
        with dg.DagsterInstance.from_config(str(home)) as instance:
            tasks: dict[str, int] = {}
            spans: list[tuple[str, float, float]] = []
            for name in companies:
                for run in instance.get_runs(dg.RunsFilter(job_name=f"{name}_gestimum_sync")):
                    starts: dict[str, float] = {}
                    for record in instance.all_logs(run.run_id):
                        event = record.dagster_event
                        if event is None or record.step_key is None:
                            continue
                        data = event.engine_event_data if event.event_type == DagsterEventType.ENGINE_EVENT else None
                        if data is not None and "Celery worker" in data.metadata:
                            worker = str(data.metadata["Celery worker"].value).split("@")[0]
                            tasks[worker] = tasks.get(worker, 0) + 1
                        if not record.step_key.startswith(f"{name}__gestimum__"):
                            continue
                        if event.event_type == DagsterEventType.STEP_START:
                            starts[record.step_key] = record.timestamp
                        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                            spans.append((name, starts[record.step_key], record.timestamp))
        failed = sorted(name for name, code in codes.items() if code != 0)
        return {
            "workers": workers,
            "wall_seconds": round(wall, 1),
            "worker_start_seconds": round(worker_start, 1),
            "failed_runs": failed,
            "steps_per_worker": dict(sorted(tasks.items())),
            **sink_overlap(spans),
        }
    finally:
        for proc in reversed(procs):
            stop(proc)
        drop_database(server, dagster_db)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=6, help="company files (default 6)")
    parser.add_argument("--customers", type=int, default=20000, help="customers per company file (default 20000)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, in one run (default 1,2)")
    parser.add_argument("--broker", default="pyamqp://guest:guest@127.0.0.1:5672//", help="the Celery broker")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GESTIMUM_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
        help="a PostgreSQL server (a role that may CREATE DATABASE); default $GESTIMUM_BENCH_DATABASE_URL or "
        + DEFAULT_SERVER_URL,
    )
    parser.add_argument("--keep", action="store_true", help="keep the CRM databases")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    companies = [f"c{i}" for i in range(1, args.companies + 1)]
    server = args.database_url
    base = Path(tempfile.mkdtemp(prefix=PREFIX))
    print(f"loading {args.companies} CRMs of {args.customers} customers ...", file=sys.stderr, flush=True)
    crm = load_crms(server, companies, args.customers)
    results = []
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            print(f"syncing {args.companies} company files on {workers} worker(s) ...", file=sys.stderr, flush=True)
            results.append(run_configuration(workers, companies, crm, server, args.broker, base))
    finally:
        if not args.keep:
            for name in companies:
                drop_database(server, f"{PREFIX}crm_{name}")
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"\n{args.companies} company files x {args.customers} customers"
        f" ({args.customers * 5} lines each), runs launched at once, Celery workers of one task each\n"
    )
    print(f"{'workers':>7} {'wall s':>8} {'ratio':>6} {'steps per worker':<26} {'files at once':>13} {'sink/busy':>9}")
    first = results[0]["wall_seconds"]
    for r in results:
        print(
            f"{r['workers']:>7} {r['wall_seconds']:>8.1f} {r['wall_seconds'] / first:>6.2f}"
            f" {json.dumps(r['steps_per_worker']):<26} {r['most_company_files_at_once']:>13}"
            f" {r['sink_time_over_busy_time']:>9.2f}" + (f"  FAILED: {r['failed_runs']}" if r["failed_runs"] else "")
        )
    starts = ", ".join(f"{r['workers']}: {r['worker_start_seconds']} s" for r in results)
    print(f"\nworker start (to 'ready'): {starts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
