"""The state store's per-line cost, without HTTP: staging, the in-flight marker, the outcomes.

    python bench/ledger.py [--lines 200000] [--database-url URL]

Stages `--lines` Comptes-shaped lines into a fresh state-store schema, then sends them the
way a sink does (pending lines in requests of 10 000, each marked in flight, then answered
"imported") with no Gestimum at all, and prints, per line, the time and the WAL bytes
(`pg_current_wal_lsn()` deltas, so other databases' writes on a shared server count too)
of each step. Then it stages the same lines twice more, as a rerun whose window was read
again does: once with nothing changed, once with one line in ten changed (those become
pending again). The whole pipeline's figures are bench/run.py's; this isolates the ledger.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/ledger.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

from bench.harness import wal_bytes, wal_lsn  # noqa: E402
from bench.run import DEFAULT_SERVER_URL  # noqa: E402
from gestimum_pipeline.db import connect  # noqa: E402
from gestimum_pipeline.sync.mapping import MappedRow  # noqa: E402
from gestimum_pipeline.sync.state import Outcome, PendingLine, StateStore  # noqa: E402

REQUEST_LINES = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--database-url", default=os.environ.get("GESTIMUM_BENCH_DATABASE_URL", DEFAULT_SERVER_URL))
    args = parser.parse_args(argv)
    schema = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    n = args.lines
    rows = []
    for i in range(n):
        key = f"C{i:08d}"
        line = f"{key};Client number {i};12 rue de la Paix;75002;Paris;FR;0102030405;client{i}@example.com;411{i:06d}"
        rows.append(MappedRow(key, hashlib.md5(line.encode()).hexdigest(), line))
    store = StateStore(args.database_url, schema)
    try:
        store.migrate()
        lsn = wal_lsn(args.database_url)
        started = time.perf_counter()
        for k in range(0, n, 5000):
            store.stage("comptes", rows[k : k + 5000], partition=None, run_id="bench")
        stage = (time.perf_counter() - started, wal_bytes(args.database_url, lsn))
        mark = [0.0, 0]
        outcomes = [0.0, 0]
        measuring = [0.0]  # time spent reading the WAL position, taken out of the total

        def timed(step: list[Any], work: Callable[[], None]) -> None:
            t = time.perf_counter()
            lsn = wal_lsn(args.database_url)
            t0 = time.perf_counter()
            work()
            step[0] += time.perf_counter() - t0
            t1 = time.perf_counter()
            step[1] += wal_bytes(args.database_url, lsn)
            measuring[0] += (t0 - t) + (time.perf_counter() - t1)

        started = time.perf_counter()
        with store.company_lock("BENCH.Gestimum"):
            batch: list[PendingLine] = []

            def send(batch: list[PendingLine]) -> None:
                request = uuid.uuid4().hex[:12]
                marked: list[str] = []
                timed(
                    mark,
                    lambda: marked.extend(store.mark_in_flight("comptes", batch, request_id=request, run_id="bench")),
                )

                def answer() -> None:
                    store.record_outcomes("comptes", [Outcome(k, True) for k in marked], request_id=request)
                    store.counts("comptes")  # waits for the background writer, as the next use would

                timed(outcomes, answer)

            for pending in store.iter_pending("comptes"):
                batch.append(pending)
                if len(batch) == REQUEST_LINES:
                    send(batch)
                    batch = []
            if batch:
                send(batch)
        total = time.perf_counter() - started - measuring[0]
        imported = store.counts("comptes").get("comptes", {}).get("imported", 0)

        def restage(rows: list[MappedRow]) -> tuple[float, int]:
            lsn = wal_lsn(args.database_url)
            started = time.perf_counter()
            for k in range(0, n, 5000):
                store.stage("comptes", rows[k : k + 5000], partition=None, run_id="bench")
            return time.perf_counter() - started, wal_bytes(args.database_url, lsn)

        unchanged = restage(rows)
        changed_rows = [
            r if i % 10 else MappedRow(r.source_key, hashlib.md5(f"{r.line}!".encode()).hexdigest(), f"{r.line}!")
            for i, r in enumerate(rows)
        ]
        changed = restage(changed_rows)
        pending = store.counts("comptes").get("comptes", {}).get("pending", 0)
    finally:
        store.close()
        conn = connect(args.database_url, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            conn.close()

    def per_line(seconds: float, wal: int) -> str:
        return f"{seconds / n * 1e6:7.1f} us/line  {wal / n:7.0f} WAL bytes/line"

    print(f"{n} lines, {imported} imported, requests of {REQUEST_LINES}")
    print(f"  stage (COPY + INSERT ... ON CONFLICT)     {per_line(*stage)}")
    print(f"  in-flight marker (one ledger row/request) {per_line(mark[0], mark[1])}")
    print(f"  outcomes (one UPDATE/request)             {per_line(outcomes[0], outcomes[1])}")
    print(f"  sending in all (read + marker + outcomes) {total / n * 1e6:7.1f} us/line")
    print(f"  restage, nothing changed                  {per_line(*unchanged)}")
    print(f"  restage, one line in ten changed          {per_line(*changed)}  ({pending} pending)")
    return 0 if imported == n and pending == n // 10 else 1


if __name__ == "__main__":
    sys.exit(main())
