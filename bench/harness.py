"""What the benchmark's parent process uses to measure its children: the sink, WAL positions,
and a variant run as a whole process (interpreter start, imports and all)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Setup
from gestimum_pipeline.db import connect

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RUN_PY = Path(__file__).resolve().parent / "run.py"


class Sink:
    """The do-nothing Gestimum (bench/sink.py) in its own process."""

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


def wal_lsn(server_url: str) -> str:
    """The server's current WAL insert position (the whole server's: concurrent activity included)."""
    conn = connect(server_url, "bench server")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            return cur.fetchone()[0]
    finally:
        conn.close()


def wal_bytes(server_url: str, before: str) -> int:
    """WAL bytes written on the server since `before`."""
    conn = connect(server_url, "bench server")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (before,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def run_variant(variant: str, setup: Setup, log_dir: Path, server_url: str) -> dict[str, Any]:
    """Runs one variant (bench/run.py --variant) in a subprocess.

    Its figures (its in-process clock as `work_seconds`), plus what the parent measures
    around it: `wall_seconds` (the whole process: interpreter start, imports, the work,
    exit), CPU seconds, peak RSS (wait4's ru_maxrss) and
    the WAL bytes the server wrote meanwhile."""
    log_path = log_dir / f"{variant}-{setup.days}d.log"
    lsn = wal_lsn(server_url)
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--variant", variant, "--setup", setup.to_json()],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        out = proc.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)
        process_seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    wal = wal_bytes(server_url, lsn)
    result = next((line for line in out.splitlines() if line.startswith("BENCH-RESULT ")), None)
    if proc.returncode != 0 or result is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"variant {variant} failed (exit {proc.returncode}):\n{out[-2000:]}\n{tail}")
    figures = json.loads(result[len("BENCH-RESULT ") :])
    # The variant's own clock (its work, after imports) beside the whole process's, which the ratios use.
    figures["work_seconds"] = figures.pop("wall_seconds")
    figures["wall_seconds"] = round(process_seconds, 3)
    figures["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    figures["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # kilobytes on Linux
    figures["wal_bytes"] = wal
    return figures


# Printed with the figures, so a reader needs no other page to read them.
COST_DEFINITIONS = {
    "sync_work_us": "the pipeline's transforms + sinks (their `duration_seconds` metadata) / lines sent",
    "floor_work_us": "the floor's in-process work (COPY, map, post; no state) / the same lines",
    "bookkeeping_us": "sync work - floor work, per line: the state store's share (staging, in flight, outcomes)",
    "dagster_and_process_us": "pipeline whole process - sync work, per line: interpreter, imports, Dagster's"
    " run and steps, sources and checks (mostly fixed per run, not per line)",
    "wal_bytes_per_line": "pg_wal_lsn_diff(pg_current_wal_lsn() after, before) around the pipeline's process"
    " / lines sent. The server is shared: this includes every other database's activity meanwhile",
    "wal_net_bytes_per_line": "the same minus the background: the WAL rate (bytes/s) measured around the"
    " variants that write nothing to PostgreSQL (the floor, the dlt peer, the trivial job) times the"
    " pipeline's wall time; an estimate, as good as the background is steady",
}


def cost_per_line(
    *,
    lines: float,
    pipeline_wall: float,
    sync_work: float,
    floor_work: float | None,
    wal_bytes: float,
    background_wal_per_second: float | None,
) -> dict[str, Any]:
    """The pipeline's cost per line sent (see COST_DEFINITIONS); empty when nothing was sent."""
    if not lines:
        return {"lines": 0}
    us = 1e6 / lines
    return {
        "lines": int(lines),
        "sync_work_us": round(sync_work * us, 1),
        "floor_work_us": None if floor_work is None else round(floor_work * us, 1),
        "bookkeeping_us": None if floor_work is None else round((sync_work - floor_work) * us, 1),
        "dagster_and_process_us": round((pipeline_wall - sync_work) * us, 1),
        "wal_bytes_per_line": round(wal_bytes / lines),
        "background_wal_bytes_per_second": None
        if background_wal_per_second is None
        else round(background_wal_per_second),
        "wal_net_bytes_per_line": None
        if background_wal_per_second is None
        else round((wal_bytes - background_wal_per_second * pipeline_wall) / lines),
    }


def background_wal_rate(quiet: list[dict[str, Any]]) -> float | None:
    """WAL bytes/s the server wrote around processes that write nothing to it (other clients' activity)."""
    rates = [q["wal_bytes"] / q["wall_seconds"] for q in quiet if q.get("wall_seconds")]
    return statistics.median(rates) if rates else None
