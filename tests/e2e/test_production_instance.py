"""The production instance (docs/production/dagster.yaml) for real: PostgreSQL storage, the
daemon, the run queue, and one writer per Gestimum company file across overlapping runs.

The slow test deploys as docs/production/README.md says: a DAGSTER_HOME holding the
production dagster.yaml, a fresh PostgreSQL database for Dagster, `dagster-daemon run` and
`dagster-webserver`. It launches a backfill of several days through the webserver's GraphQL
API (what the UI's "Launch backfill" does): the backfill daemon makes one run per stretch
of consecutive days and submits them to the queue, the run-queue daemon launches them
together. Then it reads the
step events back from PostgreSQL: the sink steps (pool `gestimum_<company file>`) never
overlap in time, across runs and within them, while the runs and their CRM reads do overlap.
The simulator answers every request after a delay, so unserialized sinks would overlap.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from dagster_services import (
    BIN,
    environ_without_settings,
    free_port,
    launch_backfill,
    log_tail,
    pg_env,
    process_group,
    wait_for_webserver,
)
from sync_harness import query_rows

from gestimum_pipeline.crm.demo import load_demo_data
from gestimum_pipeline.db import connect, create_database, drop_database
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig
from gestimum_pipeline.sync.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = ROOT / "dagster.yaml"
PRODUCTION_YAML = ROOT / "docs" / "production" / "dagster.yaml"

COMPANY_FILE = "SOCIETE PROD.Gestimum"  # a space and a dot: the pool name is sanitized
POOL = "gestimum_SOCIETE_PROD_Gestimum"
# Four days in three stretches: with the assets' single-run backfill policy, the backfill
# makes one run per stretch (2-3 March in one run), so three runs overlap.
DAYS = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 5), date(2026, 3, 7)]
RANGES = [("2026-03-02", "2026-03-03"), ("2026-03-05", "2026-03-05"), ("2026-03-07", "2026-03-07")]
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
REQUEST_DELAY_SECONDS = 1.0  # Gestimum opening the company file for each request, shortened
# Each run starts a process per step (about 30 with the checks) from its forkserver; three
# overlapping runs on a loaded two-core machine took up to about 150 s, so leave room.
RUNS_TIMEOUT_SECONDS = 360.0
SINKS = ("comptes", "clients", "contacts", "references_clients_articles", "documents_stock")

WORKSPACE = {
    "load_from": [
        {"python_module": {"module_name": "gestimum_pipeline.definitions", "location_name": "gestimum_pipeline"}}
    ]
}


def instance_from_yaml(path: Path, home: Path) -> dg.DagsterInstance:
    """Loads `path` as $DAGSTER_HOME/dagster.yaml, the way the daemon and the webserver do
    (its `env:` fields are read from the environment now)."""
    shutil.copy(path, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def dagster_pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database for Dagster's own storage, apart from the CRM's (as in production)."""
    name = f"gp_dagster_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_server_url, name, setting="GESTIMUM_TEST_DATABASE_URL")
    try:
        yield url
    finally:
        drop_database(pg_server_url, name, setting="GESTIMUM_TEST_DATABASE_URL")


# --------------------------------------------------------------------------- fast: the files load


def test_local_instance_config_loads(tmp_path: Path) -> None:
    with instance_from_yaml(LOCAL_YAML, tmp_path) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        pools = instance.get_concurrency_config().pool_config
        assert pools.pool_granularity is not None and pools.pool_granularity.value == "op"
        assert pools.default_pool_limit == 1
        _kills_are_bounded(instance)


def _kills_are_bounded(instance: dg.DagsterInstance) -> None:
    """Issue 12, finding 9: a run whose worker was killed must give its pool slot back: run
    monitoring ends it after max_runtime (the default launcher cannot see a dead worker)."""
    assert instance.run_monitoring_enabled
    settings = instance.run_monitoring_settings
    assert 0 < settings["max_runtime_seconds"] <= 4 * 3600
    assert 0 < settings["free_slots_after_run_end_seconds"] <= 600


def test_production_instance_config_loads(tmp_path: Path, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in pg_env(dagster_pg_url).items():
        monkeypatch.setenv(name, value)
    with instance_from_yaml(PRODUCTION_YAML, tmp_path) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.pool_config.pool_granularity is not None
        assert config.pool_config.pool_granularity.value == "op"
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config is not None and config.run_queue_config.max_concurrent_runs >= 2
        assert instance.event_log_storage.supports_global_concurrency_limits
        _kills_are_bounded(instance)
    # No credential in the file: every part of the connection but the driver is an env var.
    storage = yaml.safe_load(PRODUCTION_YAML.read_text())["storage"]["postgres"]["postgres_db"]
    assert storage.pop("scheme") == "postgresql+psycopg2"
    assert all(isinstance(v, dict) and set(v) == {"env"} for v in storage.values())


# --------------------------------------------------------------------------- slow: the daemon


@dataclass
class Step:
    run_id: str
    key: str
    pool: str | None
    start: float
    end: float

    def overlaps(self, other: Step) -> bool:
        return self.start < other.end and other.start < self.end


def _steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Step]:
    """The run's steps with their pool (from the run's execution plan) and their start and end
    times (from the STEP_START and STEP_SUCCESS/FAILURE events stored in PostgreSQL)."""
    plan = instance.get_execution_plan_snapshot(check_not_none(run.execution_plan_snapshot_id))
    pools = {s.key: s.pool for s in plan.steps}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    events = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for record in instance.all_logs(run.run_id, of_type=events):
        key = check_not_none(record.step_key)
        if record.dagster_event_type == DagsterEventType.STEP_START:
            starts[key] = record.timestamp
        else:
            ends[key] = record.timestamp
    assert set(starts) == set(ends), (run.run_id, set(starts) ^ set(ends))
    return [Step(run.run_id, k, pools[k], starts[k], ends[k]) for k in starts]


def check_not_none(value: Any) -> Any:
    assert value is not None
    return value


def _assert_gestimum_holds_the_crm(sim: GestimumSimulator, crm_url: str, movement_count: int) -> None:
    """Every CRM row is in Gestimum, and each stock movement is in exactly one document."""
    customers = {c for (c,) in query_rows(crm_url, "SELECT code FROM crm.customers")}
    assert set(sim.state.customers) == customers
    assert set(sim.state.accounts) == {f"411{c}" for c in customers}
    assert set(sim.state.contacts) == {c for (c,) in query_rows(crm_url, "SELECT code FROM crm.contacts")}
    references = query_rows(crm_url, "SELECT item_code, customer_code FROM crm.customer_item_references")
    assert set(sim.state.references) == set(references)

    movements = query_rows(
        crm_url, "SELECT id, direction, warehouse_code, item_code, quantity FROM crm.stock_movements"
    )
    assert len(movements) == movement_count
    documents = sim.state.documents
    document_lines = Counter(
        (d.stype, d.warehouse, line["ART_CODE"], line["MVT_QTE"]) for d in documents for line in d.lines
    )
    crm_lines = Counter(
        ("E" if direction == "in" else "S", warehouse, item, format(quantity.normalize(), "f").replace(".", ","))
        for _, direction, warehouse, item, quantity in movements
    )
    assert document_lines == crm_lines  # no movement missing, none twice
    with StateStore(crm_url) as store:
        stock = store.records(endpoint="documents_stock")
    assert sorted(r["source_key"] for r in stock) == sorted(str(m[0]) for m in movements)
    assert {r["status"] for r in stock} == {"imported"}
    assert Counter(r["document"] for r in stock) == {d.number: len(d.lines) for d in documents}


@pytest.mark.slow
def test_backfill_on_the_production_instance_never_overlaps_writes_to_a_company_file(
    tmp_path: Path, crm_url: str, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    t0 = time.monotonic()
    conn = connect(crm_url)
    try:
        demo = load_demo_data(conn, days=DAYS, customers_per_day=4, include_bad_rows=False)
    finally:
        conn.close()

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "workspace.yaml").write_text(yaml.safe_dump(WORKSPACE))
    port = free_port()
    webserver_url = f"http://127.0.0.1:{port}/"
    config = SimulatorConfig(company_file=COMPANY_FILE, user="SYNC", company_open_delay=REQUEST_DELAY_SECONDS)

    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(GestimumSimulator(config))
        # Only what the deployment sets: nothing inherited from the developer's shell.
        env = environ_without_settings()
        env.update(
            {
                "DAGSTER_HOME": str(home),
                **pg_env(dagster_pg_url),
                "CRM_DATABASE_URL": crm_url,
                "GESTIMUM_URL": sim.url,
                "GESTIMUM_FICHIER": COMPANY_FILE,
                "GESTIMUM_UTILISATEUR": "SYNC",
                "GESTIMUM_MOT_PASSE": "",
                "GESTIMUM_SYNC_START_DATE": "2026-03-01",
            }
        )
        for name, value in pg_env(dagster_pg_url).items():  # this process reads the same storage
            monkeypatch.setenv(name, value)
        instance = stack.enter_context(instance_from_yaml(PRODUCTION_YAML, home))
        daemon_log, webserver_log = tmp_path / "daemon.log", tmp_path / "webserver.log"
        webserver = stack.enter_context(
            process_group(
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)],
                cwd=home,
                env=env,
                log=webserver_log,
            )
        )
        wait_for_webserver(webserver_url, webserver, webserver_log)

        # The UI's "Launch backfill" for the job.
        backfill_id = launch_backfill(
            webserver_url,
            location="gestimum_pipeline",
            partition_set="gestimum_sync_partition_set",
            partitions=[d.isoformat() for d in DAYS],
        )
        # The daemon starts now: its backfill loop runs at start and then every 30 s, so a
        # daemon started earlier would leave the backfill waiting for its next turn.
        daemon = stack.enter_context(
            process_group([str(BIN / "dagster-daemon"), "run"], cwd=home, env=env, log=daemon_log)
        )
        backfill_runs = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
        launched_at = time.monotonic()

        deadline = launched_at + RUNS_TIMEOUT_SECONDS
        while True:
            runs = instance.get_runs(filters=backfill_runs)
            if len(runs) == len(RANGES) and all(r.is_finished for r in runs):
                break
            assert daemon.poll() is None, "dagster-daemon exited:\n" + log_tail(daemon_log)
            assert time.monotonic() < deadline, (
                f"runs not finished after {RUNS_TIMEOUT_SECONDS:.0f} s: {[r.status.value for r in runs]}\n"
                + log_tail(daemon_log)
            )
            time.sleep(1.0)
        finished_at = time.monotonic()

        failed = {
            r.run_id: [e.message for e in instance.all_logs(r.run_id, of_type=DagsterEventType.STEP_FAILURE)]
            for r in runs
            if r.status != dg.DagsterRunStatus.SUCCESS
        }
        assert not failed, failed
        assert sorted((r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in runs) == RANGES
        for r in runs:  # queued, then launched by the daemon's run queue
            order = [e.dagster_event_type for e in instance.all_logs(r.run_id) if e.is_dagster_event]
            assert order.index(DagsterEventType.RUN_ENQUEUED) < order.index(DagsterEventType.RUN_STARTING), order

        steps = [s for r in runs for s in _steps(instance, r)]
        sinks = sorted((s for s in steps if s.pool is not None), key=lambda s: s.start)
        assert {s.pool for s in sinks} == {POOL}
        assert sorted(s.key for s in sinks) == sorted(f"gestimum__{e}" for e in SINKS for _ in RANGES)

        # The claim: one sink step at a time on the company file, across and within runs.
        for before, after in itertools.pairwise(sinks):
            assert after.start >= before.end, (
                f"{before.key} of run {before.run_id[:8]} [{before.start:.3f}, {before.end:.3f}] overlaps "
                f"{after.key} of run {after.run_id[:8]} [{after.start:.3f}, {after.end:.3f}]"
            )
        # Not because the runs went one after another: they overlapped, and CRM reads of one
        # run went on while another run's sink was writing. The serialization is per step.
        records = instance.get_run_records(filters=backfill_runs)
        spans = sorted((check_not_none(r.start_time), check_not_none(r.end_time)) for r in records)
        assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), spans
        reads = [s for s in steps if s.key.startswith(("crm__", "transform__"))]
        assert any(r.run_id != s.run_id and r.overlaps(s) for r in reads for s in sinks)
        # Dagster held sink steps back for the pool at least once (not just lucky timing), and
        # every slot was given back.
        blocked = [
            e
            for r in runs
            for e in instance.all_logs(r.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if f"blocked by limit for pool {POOL}" in (e.message or "")
        ]
        assert blocked
        pool = instance.event_log_storage.get_concurrency_info(POOL)
        assert (pool.slot_count, pool.active_slot_count, pool.pending_step_count) == (1, 0, 0)

        _assert_gestimum_holds_the_crm(sim, crm_url, demo.movements)

        origin = sinks[0].start
        print(
            f"\n{len(runs)} runs, setup {launched_at - t0:.1f} s, runs {finished_at - launched_at:.1f} s,"
            f" {len(blocked)} pool waits; sink steps (s from the first):"
            + "".join(
                f"\n  run {s.run_id[:8]} {s.key:38} {s.start - origin:6.2f} → {s.end - origin:6.2f}" for s in sinks
            )
        )
