"""The benchmark still runs end to end at a tiny size: counts are checked, never timings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_runs_every_section_and_every_row_reaches_the_sink_once(pg_server_url: str) -> None:
    variants = ["floor", "pipeline", "rerun"]
    if importlib.util.find_spec("dlt") is not None:  # the `bench` extra
        variants.append("dlt_peer")
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--customers",
            "300",
            "--days",
            "3",
            "--variants",
            ",".join(variants),
            # The small runs and the long-range overhead, at the least size that exercises them.
            "--small-customers",
            "50",
            "--small-runs",
            "1",
            "--overhead-customers",
            "50",
            "--overhead-days",
            "3",
            "--database-url",
            pg_server_url,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout)
    figures = results["sizes"]["300"]
    assert figures["crm_rows"] == {
        "customers": 300,
        "contacts": 300,
        "customer_item_references": 300,
        "stock_movements": 300,
    }
    for variant in variants:
        assert figures[variant]["lines_check"] == "ok", (variant, figures[variant]["lines_check"])
    assert figures["rerun"]["requests_received"] == 0
    # The pipeline sends no more requests than the minimum for its request size.
    assert figures["requests"]["sent"] == figures["requests"]["minimum"]
    assert figures["floor"]["requests_received"] == figures["pipeline"]["requests_received"]
    for endpoint in figures["pipeline"]["endpoints"].values():
        assert endpoint["lines_sent"] == endpoint["rows"]

    # Small runs: the first run sends what the floor sends, a no-op run no line, an edit only its lines.
    small = results["small"]
    assert small["first_run"]["lines"] == small["floor"]["lines"] != [0]
    assert small["noop"]["lines"] == [0]
    assert small["changed"]["lines"] == [2 * 5]  # 5 customers: their Comptes and Clients lines
    assert set(small["cost_per_line"]) >= {"sync_work_us", "bookkeeping_us", "wal_bytes_per_line"}
    assert set(figures["cost_per_line"]) >= {"sync_work_us", "bookkeeping_us", "wal_bytes_per_line"}
    # Dagster's overhead on a range: the rerun of the range and of one day send nothing.
    overhead = results["overhead"]
    assert overhead["first_run_range"]["requests"] > 0
    assert overhead["rerun_range"]["requests"] == overhead["rerun_one_day"]["requests"] == 0
    assert {"noop", "pipeline_to_floor"} <= set(results["targets"])


@pytest.mark.slow
def test_the_ledger_bench_sends_every_staged_line_once(pg_server_url: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ledger.py"), "--lines", "2500", "--database-url", pg_server_url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Every line staged, marked in flight and imported exactly once.
    assert out.stdout.startswith("2500 lines, 2500 imported"), out.stdout
    for step in ("stage", "in-flight marker", "outcomes"):
        assert step in out.stdout
