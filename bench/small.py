"""Small runs, as the user waits for them: the documented command line, whole process.

    python bench/small.py [--customers 1000] [--runs 3] [--json]

The hourly schedule's runs usually have little to do, so what they cost is mostly what
Dagster costs. This prints, measured in one session on the same machine, the median wall
time and CPU time (user + sys of the whole process tree) of:

* ``trivial``: a trivial 15-asset daily-partitioned job (bench/trivial_job.py), in process,
  launched the same way (`dg launch --assets '*' --partition D`, from a dg project of its own);
* ``first_run``: the pipeline on a CRM of N customers (one contact, reference and stock
  movement each, all on one day) with an empty state store;
* ``noop``: the same command again, nothing changed in the CRM;
* ``changed``: the same command after 5 customers were edited in the CRM;

with the requests and lines Gestimum (a do-nothing sink, bench/sink.py) received, the WAL
bytes the server wrote, the sync's own work (its transforms' and sinks' `duration_seconds`,
read from the run's events) and the ratios to ``trivial``; then the floor (bench/floor.py)
on the same CRM, for the cost per line of the first run. `python bench/run.py` prints this
section first; this file runs it alone. Timings are figures, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/small.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

from bench.celery_workers import pg_env  # noqa: E402
from bench.common import DATA_START, TIMEZONE, Setup  # noqa: E402
from bench.harness import (  # noqa: E402
    DEFAULT_SERVER_URL,
    Sink,
    background_wal_rate,
    cost_per_line,
    run_variant,
    wal_bytes,
    wal_lsn,
)
from gestimum_pipeline.crm.ddl import create_reference_schema  # noqa: E402
from gestimum_pipeline.crm.demo import load_bulk  # noqa: E402
from gestimum_pipeline.db import connect, create_database, drop_database  # noqa: E402

DAY = DATA_START
DATABASE = "gestimum_bench_small"
BIN = Path(sys.executable).parent
EDITED = 5
NOOP_TARGET = 1.5  # issue 13: a run with nothing to send takes <= 1.5x the trivial job


# The trivial job as a dg project of its own, so both are launched by the same command.
TRIVIAL_PROJECT = """[project]
name = "trivial"
version = "0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "bench"
code_location_target_module = "bench.trivial_job"
code_location_name = "trivial"
"""


def launch_command(day: str) -> list[str]:
    """The README's command for one day (a scheduled run's usual range), run in a dg project."""
    return [str(BIN / "dg"), "launch", "--assets", "*", "--partition", day]


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Wall and CPU seconds (the whole process tree, from wait4) of one run; fails loudly."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.decode(errors='replace')[-4000:]}")
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime}


def build_crm(server_url: str, customers: int) -> str:
    drop_database(server_url, DATABASE)
    url = create_database(server_url, DATABASE)
    conn = connect(url, "bench database")
    try:
        create_reference_schema(conn, "crm")
        load_bulk(conn, "crm", customers, start=DAY, days=1)
        conn.commit()
    finally:
        conn.close()
    return url


def sql(url: str, statement: str) -> None:
    conn = connect(url, "bench database")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def sessions(server_url: str) -> int:
    """Connections opened so far to the benchmark's database (pg_stat_database, PostgreSQL 14+)."""
    conn = connect(server_url, "bench server")
    try:
        with conn.cursor() as cur:
            # The counters are flushed by each backend at its own pace: give the run's a moment.
            time.sleep(0.5)
            cur.execute("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = %s", (DATABASE,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def sync_work_seconds(home: Path) -> float:
    """The sync's own work in the instance's latest run: its transforms' and sinks' `duration_seconds`."""
    import dagster as dg  # only the parent reads the instance; imported late to keep `--help` quick

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        run = instance.get_runs(limit=1)[0]
        total = 0.0
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            mat = entry.asset_materialization
            # Run-wide figures are on the run's last partition only.
            steps = ("transform", "gestimum")
            if mat is not None and mat.asset_key.path[0] in steps and "duration_seconds" in mat.metadata:
                total += float(mat.metadata["duration_seconds"].value)
        return total
    finally:
        instance.dispose()


def median(samples: list[dict[str, Any]], sink_samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        key: round(statistics.median(s[key] for s in samples), 3)
        for key in ("wall_seconds", "cpu_seconds", "wal_bytes", "sync_work_seconds", "connections")
        if key in samples[0]
    }
    out["runs"] = len(samples)
    out["requests"] = [sum(s["requests"].values()) for s in sink_samples]
    out["lines"] = [sum(s["lines"].values()) for s in sink_samples]
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """The small-run figures; `args` needs customers, runs, keep and database_url."""
    instance = getattr(args, "instance", "sqlite")  # bench/run.py's namespace has none: the local one
    crm_url = build_crm(args.database_url, args.customers)
    sink = Sink()
    home = Path(tempfile.mkdtemp(prefix="gestimum-bench-small-"))
    try:
        dagster_db = f"{DATABASE}_dagster"
        if instance == "postgres":  # the production instance: event log and runs in PostgreSQL
            shutil.copy(ROOT / "docs" / "production" / "dagster.yaml", home / "dagster.yaml")
            drop_database(args.database_url, dagster_db)
            instance_env = pg_env(create_database(args.database_url, dagster_db))
            os.environ.update(instance_env)  # this process reads the runs' events too (sync_work_seconds)
        else:
            shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
            instance_env = {}
        trivial_project = home / "trivial_project"
        trivial_project.mkdir()
        (trivial_project / "pyproject.toml").write_text(TRIVIAL_PROJECT)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(home),
            PYTHONPATH=str(ROOT),
            VIRTUAL_ENV=sys.prefix,  # dg runs the code in this environment, where the project is installed
            CRM_DATABASE_URL=crm_url,
            GESTIMUM_URL=sink.url,
            GESTIMUM_FICHIER="BENCH.Gestimum",
            GESTIMUM_UTILISATEUR="BENCH",
            GESTIMUM_MOT_PASSE="",
            GESTIMUM_SYNC_TIMEZONE=TIMEZONE,  # the day's rows are on one UTC day (bench/common.py)
            **instance_env,
        )
        command = launch_command(DAY.isoformat())
        results: dict[str, Any] = {}

        def fresh_state() -> None:  # each first run starts from an empty store, created as in production
            sql(crm_url, "DROP SCHEMA IF EXISTS gestimum_sync CASCADE")
            subprocess.run([str(BIN / "gestimum-pipeline"), "state", "init"], env=env, check=True, capture_output=True)

        def variant(name: str, project: Path, before: str | Callable[[], None] | None = None) -> None:
            samples, received = [], []
            for _ in range(args.runs):
                if callable(before):
                    before()
                elif before:
                    sql(crm_url, before)
                sink.reset()
                opened = sessions(args.database_url)
                lsn = wal_lsn(args.database_url)
                sample: dict[str, Any] = timed(command, env, project)
                sample["wal_bytes"] = wal_bytes(args.database_url, lsn)
                sample["connections"] = sessions(args.database_url) - opened
                if project == ROOT:
                    sample["sync_work_seconds"] = sync_work_seconds(home)
                samples.append(sample)
                received.append(sink.stats())
            results[name] = median(samples, received)
            print(f"[bench] {name}: {results[name]}", file=sys.stderr)

        timed(command, env, trivial_project)  # warm-up: imports, the instance's tables
        variant("trivial", trivial_project)
        variant("first_run", ROOT, before=fresh_state)
        variant("noop", ROOT)
        # A new name (toggled, so each run edits again) and a later change time within the day.
        touch = (
            "UPDATE crm.customers SET updated_at = updated_at + interval '1 second',"
            " name = CASE WHEN name LIKE '% bis' THEN left(name, -4) ELSE name || ' bis' END"
            f" WHERE code IN (SELECT code FROM crm.customers ORDER BY code LIMIT {EDITED})"
        )
        variant("changed", ROOT, before=touch)
        # The floor on the same rows (first run's lines), for the first run's cost per line.
        floors = []
        for _ in range(args.runs):
            sink.reset()
            floors.append(
                run_variant("floor", Setup(crm_url=crm_url, sink_url=sink.url, days=1), home, args.database_url)
            )
        results["floor"] = {
            key: round(statistics.median(f[key] for f in floors), 3)
            for key in ("wall_seconds", "work_seconds", "cpu_seconds", "wal_bytes")
        }
        results["floor"]["runs"] = len(floors)
        results["floor"]["lines"] = [sum(e["lines_sent"] for e in f["endpoints"].values()) for f in floors]
    finally:
        sink.close()
        shutil.rmtree(home, ignore_errors=True)
        if not args.keep:
            drop_database(args.database_url, DATABASE)
        if instance == "postgres":
            for name in instance_env:
                os.environ.pop(name, None)
            drop_database(args.database_url, dagster_db)
    trivial = results["trivial"]
    for name in ("first_run", "noop", "changed"):
        results[name]["to_trivial_wall"] = round(results[name]["wall_seconds"] / trivial["wall_seconds"], 2)
        results[name]["to_trivial_cpu"] = round(results[name]["cpu_seconds"] / trivial["cpu_seconds"], 2)
    first = results["first_run"]
    results["cost_per_line"] = cost_per_line(
        lines=statistics.median(first["lines"]),
        pipeline_wall=first["wall_seconds"],
        sync_work=first["sync_work_seconds"],
        floor_work=results["floor"]["work_seconds"],
        wal_bytes=first["wal_bytes"],
        # The trivial job and the floor write nothing to PostgreSQL: what the server wrote meanwhile is others'.
        background_wal_per_second=background_wal_rate([results["trivial"], results["floor"]]),
    )
    noop = results["noop"]
    results["target_noop"] = {
        "value": noop["to_trivial_wall"],
        "requests": max(noop["requests"]),
        "target": f"<= {NOOP_TARGET}x the trivial job, 0 requests",
        "met": noop["to_trivial_wall"] <= NOOP_TARGET and max(noop["requests"]) == 0,
    }
    return {
        "customers": args.customers,
        "day": DAY.isoformat(),
        "edited_customers": EDITED,
        "instance": instance,
        **results,
    }


def print_small(results: dict[str, Any]) -> None:
    runs = results["trivial"]["runs"]
    print(
        f"== small runs: {results['customers']} customers on {results['day']}, `dg launch --assets '*'"
        f" --partition {results['day']}`, whole process, median of {runs}, {results['instance']} instance"
    )
    print(
        f"  {'run':12} {'wall s':>8} {'x triv':>7} {'CPU s':>7} {'sync s':>7} {'WAL KiB':>8} {'PG conn':>7}"
        "  requests / lines"
    )
    for name in ("trivial", "first_run", "noop", "changed"):
        r = results[name]
        ratio = f"{r['to_trivial_wall']:7.2f}" if name != "trivial" else f"{1:7.2f}"
        work = f"{r['sync_work_seconds']:7.2f}" if "sync_work_seconds" in r else f"{'':7}"
        print(
            f"  {name:12} {r['wall_seconds']:8.2f} {ratio} {r['cpu_seconds']:7.2f} {work}"
            f" {r['wal_bytes'] / 1024:8.0f} {r['connections']:7.0f}  {r['requests']} / {r['lines']}"
        )
    f = results["floor"]
    print(
        f"  {'floor':12} {f['wall_seconds']:8.2f} {'':7} {f['cpu_seconds']:7.2f} {f['work_seconds']:7.2f} "
        f"{f['wal_bytes'] / 1024:8.0f}  lines {f['lines']}  (sync s = its in-process work)"
    )
    t = results["target_noop"]
    print(
        f"  target: nothing to send <= 1.5x trivial and 0 requests: x{t['value']}, {t['requests']} requests"
        f" -> {'MET' if t['met'] else 'NOT MET'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; the median is printed")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--instance",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Dagster instance: the local dagster.yaml (SQLite) or docs/production/dagster.yaml (PostgreSQL)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GESTIMUM_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
        help="a PostgreSQL server (a role that may CREATE DATABASE)",
    )
    args = parser.parse_args(argv)
    results = bench(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_small(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
