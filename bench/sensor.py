"""Benchmark of the change sensor (issue 21): commit-to-Gestimum latency under the real daemon, the
probe's cost at a large CRM, and the runs a quiet CRM starts.

    python bench/sensor.py [--commits 20] [--spread-seconds 240] [--quiet-seconds 600]
                           [--probe-customers 1000000] [--interval 30] [--json] [--smoke]

1. **Latency**: a reference CRM and the Gestimum simulator (in this process), a DAGSTER_HOME
   holding the shipped dagster.yaml, and `dagster-daemon run` with the sensor turned on as the
   README says (GESTIMUM_CHANGE_SENSOR=true, the default 30 s interval). After the sensor's
   first tick, `--commits` customers are committed one at a time, at random gaps averaging
   `--spread-seconds / --commits`; a watcher polls the simulator every 0.1 s. Latency is from
   the commit returning to Gestimum's state holding the customer: p50 and max.
2. **Quiet CRM**: then nothing is committed for `--quiet-seconds`; the runs started in that
   time are counted (the target is 0), and the sensor's ticks in it.
3. **The probe at `--probe-customers`** (crm/changes.py, connection included, as a tick does):
   a CRM loaded with `load_bulk` (one contact, reference and movement per customer), probed
   quiet (median of 20), after one committed customer, and with every customer in the tail
   (all updated within the margin: the worst case, right after a bulk update).

The machine's load average is printed beside the figures (it is shared). Databases are
``gestimum_bench_sensor_*``. `--smoke` shortens everything (tests/e2e/test_bench_smoke.py
style checks: counts, never timings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/sensor.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from bench.common import DATA_START  # noqa: E402
from bench.harness import DEFAULT_SERVER_URL  # noqa: E402
from gestimum_pipeline.crm.changes import ChangeCursor, compare, probe  # noqa: E402
from gestimum_pipeline.crm.ddl import create_reference_schema  # noqa: E402
from gestimum_pipeline.crm.demo import load_bulk  # noqa: E402
from gestimum_pipeline.db import connect, create_database, drop_database  # noqa: E402
from gestimum_pipeline.defs.metadata import TRIGGER_TAG  # noqa: E402
from gestimum_pipeline.defs.sensors import CHANGE_SENSOR, SENSOR_TRIGGER  # noqa: E402
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig  # noqa: E402
from gestimum_pipeline.sync.state import StateStore  # noqa: E402

PREFIX = "gestimum_bench_sensor"
BIN = Path(sys.executable).parent
COMPANY_FILE = "BENCH.Gestimum"
WORKSPACE = {
    "load_from": [
        {"python_module": {"module_name": "gestimum_pipeline.definitions", "location_name": "gestimum_pipeline"}}
    ]
}
FIRST_TICK_TIMEOUT = 300.0
ARRIVAL_TIMEOUT = 600.0  # a commit not in Gestimum by then is reported as lost


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def _fresh_crm(server_url: str, name: str) -> str:
    drop_database(server_url, name)
    url = create_database(server_url, name)
    conn = connect(url, "bench database")
    try:
        create_reference_schema(conn, "crm")
    finally:
        conn.close()
    with StateStore(url) as store:  # as `gestimum-pipeline state init` does; runs never create it
        store.migrate()
    return url


@contextlib.contextmanager
def _daemon(home: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster-daemon run` in its own process group, stopped with all it spawned."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run"], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _sensor_cursor(instance: dg.DagsterInstance) -> str | None:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == CHANGE_SENSOR and state.instigator_data is not None:
            return getattr(state.instigator_data, "cursor", None)
    return None


def _settled(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Waits until the sensor has ticked twice since its last run ended (commits that came during a
    run cost one more run, which may find nothing left to send); returns its runs."""
    sensor_runs = dg.RunsFilter(tags={TRIGGER_TAG: SENSOR_TRIGGER})
    while True:
        runs = instance.get_runs(filters=sensor_runs)
        if all(r.is_finished for r in runs):
            ends = [record.end_time or 0.0 for record in instance.get_run_records(filters=sensor_runs)]
            if _sensor_ticks_since(instance, max(ends, default=0.0)) >= 2 and len(
                instance.get_runs(filters=sensor_runs)
            ) == len(runs):
                return runs
        time.sleep(1.0)


def _sensor_ticks_since(instance: dg.DagsterInstance, since: float) -> int:
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == CHANGE_SENSOR:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since, limit=10_000)
            return sum(t.status != TickStatus.STARTED for t in ticks)
    return 0


class Watcher:
    """Polls the simulator's state every 0.1 s and records when each customer code first appears."""

    def __init__(self, sim: GestimumSimulator) -> None:
        self.sim = sim
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for code in list(self.sim.state.customers):
                self.seen.setdefault(code, now)
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def latency_and_quiet(args: argparse.Namespace) -> dict[str, Any]:
    crm_url = _fresh_crm(args.database_url, f"{PREFIX}_crm")
    rng = random.Random(21)
    results: dict[str, Any] = {"load_average_at_start": _load(), "interval_seconds": args.interval}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gestimum-bench-sensor-")))
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        (home / "workspace.yaml").write_text(yaml.safe_dump(WORKSPACE))
        sim = stack.enter_context(GestimumSimulator(SimulatorConfig(company_file=COMPANY_FILE, user="SYNC")))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_", "DAGSTER_"))}
        env.update(
            {
                "DAGSTER_HOME": str(home),
                "CRM_DATABASE_URL": crm_url,
                "GESTIMUM_URL": sim.url,
                "GESTIMUM_FICHIER": COMPANY_FILE,
                "GESTIMUM_UTILISATEUR": "SYNC",
                "GESTIMUM_MOT_PASSE": "",
                "GESTIMUM_SYNC_START_DATE": "2026-01-01",
                "GESTIMUM_CHANGE_SENSOR": "true",
                "GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS": str(args.interval),
            }
        )
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        log = tmp / "daemon.log"
        daemon = stack.enter_context(_daemon(home, env, log))
        watcher = Watcher(sim)
        stack.callback(watcher.close)

        deadline = time.monotonic() + FIRST_TICK_TIMEOUT
        while _sensor_cursor(instance) is None:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the sensor never ticked:\n" + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)

        committed: dict[str, float] = {}
        mean_gap = args.spread_seconds / max(args.commits, 1)
        conn = connect(crm_url, "bench CRM writer")
        try:
            for i in range(args.commits):
                time.sleep(rng.uniform(0.5 * mean_gap, 1.5 * mean_gap))
                code = f"L{i:04d}"
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO crm.customers (code, name) VALUES (%s, %s)", (code, f"Live {i}"))
                conn.commit()
                committed[code] = time.time()
        finally:
            conn.close()
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while not set(committed) <= set(watcher.seen) and time.monotonic() < deadline:
            time.sleep(0.5)
        latencies = sorted(watcher.seen[c] - t for c, t in committed.items() if c in watcher.seen)
        sensor_runs = _settled(instance)
        results.update(
            {
                "commits": len(committed),
                "arrived": len(latencies),
                "latency_p50_seconds": round(statistics.median(latencies), 1) if latencies else None,
                "latency_max_seconds": round(latencies[-1], 1) if latencies else None,
                "latencies_seconds": [round(x, 1) for x in latencies],
                "sensor_runs": len(sensor_runs),
                "sensor_runs_failed": sum(r.status != dg.DagsterRunStatus.SUCCESS for r in sensor_runs),
                "load_average_after_commits": _load(),
            }
        )

        quiet_start = time.time()
        runs_before = len(instance.get_runs())
        time.sleep(args.quiet_seconds)
        results.update(
            {
                "quiet_seconds": args.quiet_seconds,
                "quiet_runs_started": len(instance.get_runs()) - runs_before,
                "quiet_ticks": _sensor_ticks_since(instance, quiet_start),
                "load_average_at_end": _load(),
            }
        )
    if not args.keep:
        drop_database(args.database_url, f"{PREFIX}_crm")
    return results


def _timed_probe(url: str, cursor: ChangeCursor | None) -> tuple[float, float, ChangeCursor, int]:
    """One tick's work: connect, probe, compare, close. Returns (ms in all, ms of the probe's
    statements alone, the cursor to keep, relations changed)."""
    started = time.perf_counter()
    conn = connect(url, "bench CRM")
    try:
        probing = time.perf_counter()
        result = probe(conn, "crm", cursor)
        probe_ms = (time.perf_counter() - probing) * 1000
        changes = compare(cursor, result)
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000, probe_ms, changes.cursor, len(changes.relations)


def probe_cost(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{PREFIX}_probe"
    url = _fresh_crm(args.database_url, name)
    started = time.perf_counter()
    conn = connect(url, "bench database")
    try:
        load_bulk(
            conn,
            "crm",
            args.probe_customers,
            start=DATA_START,
            days=1,
            contacts_per_customer=1,
            references_per_customer=1,
            movements_per_customer=1,
        )
    finally:
        conn.close()
    results: dict[str, Any] = {"customers": args.probe_customers, "load_seconds": round(time.perf_counter() - started)}
    _, _, cursor, _ = _timed_probe(url, None)
    quiet, quiet_statements = [], []
    for _ in range(20):
        ms, probe_ms, cursor, changed = _timed_probe(url, cursor)
        assert changed == 0, "a quiet CRM changed"
        quiet.append(ms)
        quiet_statements.append(probe_ms)
    results["quiet_probe_ms_median"] = round(statistics.median(quiet), 1)
    results["quiet_probe_ms_max"] = round(max(quiet), 1)
    results["quiet_statements_ms_median"] = round(statistics.median(quiet_statements), 1)
    conn = connect(url, "bench CRM writer")
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO crm.customers (code, name) VALUES ('NEW1', 'New')")
        conn.commit()
        ms, _, cursor, changed = _timed_probe(url, cursor)
        results["one_change_probe_ms"] = round(ms, 1)
        results["one_change_relations"] = changed
        timer = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("UPDATE crm.customers SET updated_at = now()")
        conn.commit()
        results["bulk_update_seconds"] = round(time.perf_counter() - timer, 1)
        ms, _, cursor, changed = _timed_probe(url, cursor)
        results["all_in_tail_probe_ms"] = round(ms, 1)
    finally:
        conn.close()
    if not args.keep:
        drop_database(args.database_url, name)
    return results


def bench(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    if args.commits:
        results["latency"] = latency_and_quiet(args)
    if args.probe_customers:
        results["probe"] = probe_cost(args)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    return results


def print_table(results: dict[str, Any]) -> None:
    lat = results.get("latency")
    if lat:
        print(f"change sensor, interval {lat['interval_seconds']} s, {results['cpus']} cores")
        print(
            f"  commit → Gestimum: p50 {lat['latency_p50_seconds']} s, max {lat['latency_max_seconds']} s "
            f"over {lat['arrived']}/{lat['commits']} commits ({lat['sensor_runs']} runs, "
            f"{lat['sensor_runs_failed']} failed)"
        )
        print(
            f"  quiet CRM, {lat['quiet_seconds']} s: {lat['quiet_runs_started']} runs started, "
            f"{lat['quiet_ticks']} ticks"
        )
        print(
            f"  load average (1/5/15 min): start {lat['load_average_at_start']}, after the commits "
            f"{lat['load_average_after_commits']}, end {lat['load_average_at_end']}"
        )
    p = results.get("probe")
    if p:
        print(f"probe at {p['customers']:,} customers (connection included)")
        print(
            f"  quiet: median {p['quiet_probe_ms_median']} ms, max {p['quiet_probe_ms_max']} ms "
            f"(its statements alone: median {p['quiet_statements_ms_median']} ms)"
        )
        print(f"  one customer committed: {p['one_change_probe_ms']} ms")
        print(
            f"  every customer in the tail (after a {p['bulk_update_seconds']} s bulk update): "
            f"{p['all_in_tail_probe_ms']} ms"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--commits", type=int, default=20, help="customers committed one by one (0 skips)")
    parser.add_argument("--spread-seconds", type=float, default=240, help="the commits' total spread")
    parser.add_argument("--quiet-seconds", type=float, default=600, help="the quiet period after them")
    parser.add_argument("--interval", type=int, default=30, help="GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS")
    parser.add_argument("--probe-customers", type=int, default=1_000_000, help="the probe's CRM (0 skips)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    add_arguments(parser)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GESTIMUM_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
        help="a PostgreSQL server (a role that may CREATE DATABASE)",
    )
    parser.add_argument("--smoke", action="store_true", help="3 commits over 15 s, 30 s quiet, 1 000 customers")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.commits, args.spread_seconds, args.quiet_seconds = 3, 15, 30
        args.interval, args.probe_customers = 5, 1000
    results = bench(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
