"""Benchmark: the pipeline against its floor and a dlt peer, on a reference CRM of N customers.

    python bench/run.py --customers 100000 [--customers 1000000] --json

For each N: builds a reference CRM (`load_bulk`: per customer, by default, 1 contact,
1 item reference and 1 stock movement spread over `--days` days of history) in a fresh
database, starts a do-nothing Gestimum (bench/sink.py, its own process), then runs each
variant in its own subprocess, so every peak RSS is that variant's alone:

* ``floor``: COPY out, same lines, same requests, no state (bench/floor.py);
* ``pipeline``: the real Dagster job over one partition range covering the data, on an
  empty state store (bench/pipeline.py);
* ``rerun``: the same job again, nothing changed in the CRM;
* ``dlt_peer``: the same sync with dlt (bench/dlt_peer.py; needs the ``bench`` extra).

Prints the figures as JSON (``--json``) or as a short table. Timings are figures, never
assertions: the smoke test only checks counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/run.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

from bench.common import DATA_START, ENDPOINT_ORDER, Setup, Timer  # noqa: E402
from gestimum_pipeline.crm.ddl import create_reference_schema  # noqa: E402
from gestimum_pipeline.crm.demo import load_bulk  # noqa: E402
from gestimum_pipeline.db import connect, create_database, drop_database  # noqa: E402
from gestimum_pipeline.sync.state import StateStore  # noqa: E402

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
VARIANTS = ("floor", "pipeline", "rerun", "dlt_peer")
TARGETS = {"pipeline_to_floor": 1.3, "pipeline_to_peer": 1.0, "rss_1m_to_100k": 1.3, "rerun_work_seconds": 2.0}


# --------------------------------------------------------------------------- children


def _child(variant: str, setup: Setup) -> None:
    if variant == "floor":
        from bench import floor

        floor.main(setup)
    elif variant in ("pipeline", "rerun"):
        from bench import pipeline

        pipeline.main(setup)
    elif variant == "dlt_peer":
        from bench import dlt_peer

        dlt_peer.main(setup)
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def run_variant(variant: str, setup: Setup, log_dir: Path) -> dict[str, Any]:
    """Runs one variant in a subprocess; returns its figures plus its peak RSS (wait4's ru_maxrss)."""
    log_path = log_dir / f"{variant}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--setup", setup.to_json()],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        out = proc.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    result = next((line for line in out.splitlines() if line.startswith("BENCH-RESULT ")), None)
    if proc.returncode != 0 or result is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"variant {variant} failed (exit {proc.returncode}):\n{out[-2000:]}\n{tail}")
    figures = json.loads(result[len("BENCH-RESULT ") :])
    figures["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # kilobytes on Linux
    return figures


# --------------------------------------------------------------------------- the sink


class Sink:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve().parent / "sink.py")],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.url = line.split()[-1]

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "_sink/stats")

    def reset(self) -> None:
        self._call("POST", "_sink/reset")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # SIGTERM can arrive ignored (a disposition inherited from a background job):
            # an orphaned sink would hold our caller's pipes open forever.
            self.proc.kill()
            self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- one size


def build_crm(server_url: str, customers: int, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    name = f"gestimum_bench_{customers}"
    drop_database(server_url, name)
    url = create_database(server_url, name)
    conn = connect(url, "bench database")
    timer = Timer()
    try:
        create_reference_schema(conn, "crm")
        with StateStore(url) as store:  # as `gestimum-pipeline state init` does; runs never create it
            store.migrate()
        load_bulk(
            conn,
            "crm",
            customers,
            start=DATA_START,
            days=args.days,
            contacts_per_customer=args.contacts,
            references_per_customer=args.references,
            movements_per_customer=args.movements,
        )
        with conn.cursor() as cur:
            counts = {}
            for relation in ("customers", "contacts", "customer_item_references", "stock_movements"):
                cur.execute(f"SELECT count(*) FROM crm.{relation}")
                counts[relation] = cur.fetchone()[0]
        conn.commit()
    finally:
        conn.close()
    return url, {"build_seconds": timer.seconds(), "crm_rows": counts}


def _rates(endpoints: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, e in endpoints.items():
        seconds = e.get("seconds") or 0
        out[name] = {**e, "rows_per_second": round(e["rows"] / seconds) if seconds else None}
    return out


def bench_size(
    customers: int, args: argparse.Namespace, sink: Sink, variants: list[str], log_dir: Path
) -> dict[str, Any]:
    url, built = build_crm(args.database_url, customers, args)
    setup = Setup(crm_url=url, sink_url=sink.url, days=args.days)
    first, last = setup.partition_range
    figures: dict[str, Any] = {"customers": customers, "partition_range": f"{first}...{last}", **built}
    expected = {
        "comptes": built["crm_rows"]["customers"],
        "clients": built["crm_rows"]["customers"],
        "contacts": built["crm_rows"]["contacts"],
        "references_clients_articles": built["crm_rows"]["customer_item_references"],
        "documents_stock": built["crm_rows"]["stock_movements"],
    }
    for variant in variants:
        sink.reset()
        result = run_variant(variant, setup, log_dir)
        received = sink.stats()
        result["requests_received"] = sum(received["requests"].values())
        result["lines_received"] = received["lines"]
        result["max_body_bytes"] = received["max_body_bytes"]
        if "endpoints" in result:
            result["endpoints"] = _rates(result["endpoints"])
        # Correctness, not speed: every row reached the sink exactly once (none on a rerun).
        want = {} if variant == "rerun" else expected
        got = {k: v for k, v in received["lines"].items() if v}
        result["lines_check"] = "ok" if got == want else f"expected {want}, sink got {got}"
        figures[variant] = result
        print(f"[bench] {customers} customers: {variant} done in {result.get('wall_seconds')} s", file=sys.stderr)
    if not args.keep:
        drop_database(args.database_url, f"gestimum_bench_{customers}")
    pipeline, floor_, peer, rerun = (figures.get(v) for v in ("pipeline", "floor", "dlt_peer", "rerun"))
    if pipeline and floor_:
        figures["pipeline_to_floor"] = round(pipeline["wall_seconds"] / floor_["wall_seconds"], 3)
        figures["pipeline_work_to_floor"] = round(pipeline["asset_work_seconds"] / floor_["wall_seconds"], 3)
        figures["requests"] = {
            "sent": pipeline["requests_received"],
            "minimum": sum(e["minimum_requests"] for e in floor_["endpoints"].values()),
        }
    if pipeline and peer:
        figures["pipeline_to_peer"] = round(pipeline["wall_seconds"] / peer["wall_seconds"], 3)
    if peer and floor_:
        figures["peer_to_floor"] = round(peer["wall_seconds"] / floor_["wall_seconds"], 3)
    if rerun:
        figures["rerun_summary"] = {
            "wall_seconds": rerun["wall_seconds"],
            "pipeline_work_seconds": rerun["asset_work_seconds"],
            "dagster_overhead_seconds": rerun["dagster_overhead_seconds"],
            "requests": rerun["requests_received"],
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, action="append", help="repeatable; default 100000")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GESTIMUM_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
        help="a PostgreSQL server (a role that may CREATE DATABASE); default $GESTIMUM_BENCH_DATABASE_URL or "
        + DEFAULT_SERVER_URL,
    )
    parser.add_argument("--days", type=int, default=730, help="days of history the rows are spread over")
    # One of each per customer by default: 5 lines per customer over the five endpoints,
    # so the 1M case (5M lines) runs in about 10 minutes on a 2-core machine.
    parser.add_argument("--contacts", type=float, default=1, help="contacts per customer (default 1)")
    parser.add_argument("--references", type=float, default=1, help="item references per customer (default 1)")
    parser.add_argument("--movements", type=float, default=1, help="stock movements per customer (default 1)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant (child process)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        _child(args.variant, Setup.from_json(args.setup))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    sizes = args.customers or [100_000]
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "ratios_per_customer": {"contacts": args.contacts, "references": args.references, "movements": args.movements},
        "days": args.days,
        "sizes": {},
    }
    sink = Sink()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="gestimum-bench-") as tmp:
            for n in sizes:
                results["sizes"][str(n)] = bench_size(n, args, sink, variants, Path(tmp))
    finally:
        sink.close()
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = targets(results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


def targets(results: dict[str, Any]) -> dict[str, Any]:
    sizes = results["sizes"]
    largest = sizes[max(sizes, key=int)]
    out: dict[str, Any] = {}
    for key in ("pipeline_to_floor", "pipeline_to_peer"):
        if key in largest:
            out[key] = {"value": largest[key], "target": f"< {TARGETS[key]}", "met": largest[key] < TARGETS[key]}
    if "pipeline_work_to_floor" in largest:  # the same without Dagster's per-partition bookkeeping
        value = largest["pipeline_work_to_floor"]
        out["pipeline_work_to_floor"] = {"value": value, "target": "< 1.3", "met": value < 1.3}
    if "rerun_summary" in largest:
        rerun = largest["rerun_summary"]
        out["rerun"] = {
            "pipeline_work_seconds": rerun["pipeline_work_seconds"],
            "requests": rerun["requests"],
            "target": "< 2 s of pipeline work, 0 requests",
            "met": rerun["pipeline_work_seconds"] < TARGETS["rerun_work_seconds"] and rerun["requests"] == 0,
        }
    small, large = sizes.get("100000", {}).get("pipeline"), sizes.get("1000000", {}).get("pipeline")
    if small and large:
        ratio = round(large["peak_rss_mib"] / small["peak_rss_mib"], 3)
        out["rss_1m_to_100k"] = {"value": ratio, "target": "< 1.3", "met": ratio < TARGETS["rss_1m_to_100k"]}
    return out


def print_table(results: dict[str, Any]) -> None:
    for n, f in results["sizes"].items():
        print(f"== {n} customers (CRM built in {f['build_seconds']} s: {f['crm_rows']})")
        for variant in VARIANTS:
            if variant in f:
                v = f[variant]
                print(
                    f"  {variant:9} {v['wall_seconds']:9.2f} s  peak RSS {v['peak_rss_mib']:7.1f} MiB  "
                    f"requests {v['requests_received']:6}  lines {v['lines_check']}"
                )
        for key in ("pipeline_to_floor", "pipeline_to_peer", "peer_to_floor", "requests"):
            if key in f:
                print(f"  {key}: {f[key]}")
        if "pipeline" in f:
            for name in ENDPOINT_ORDER:
                e = f["pipeline"]["endpoints"][name]
                rate = e["rows_per_second"] or 0
                print(f"    {name:28} {e['rows']:9} rows  {rate:9} rows/s  {e['requests']} requests")
    print("targets:", json.dumps(results["targets"]))


if __name__ == "__main__":
    sys.exit(main())
