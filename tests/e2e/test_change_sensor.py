"""The change sensor (defs/sensors.py): its ticks on a real CRM and instance, then for real under
`dagster-daemon run` on the shipped dagster.yaml, a CRM commit reaching the simulator."""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import yaml
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.scheduler.instigation import InstigatorState, InstigatorType, TickStatus
from dagster_services import BIN, environ_without_settings, log_tail, process_group
from sync_harness import execute

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.metadata import TRIGGER_TAG
from gestimum_pipeline.defs.resources import CrmDatabase
from gestimum_pipeline.defs.sensors import CHANGE_SENSOR, SENSOR_TRIGGER
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

ROOT = Path(__file__).resolve().parents[2]
TIMEZONE = "Europe/Paris"
SETTINGS = Settings(timezone=TIMEZONE, start_date="2026-01-01")
PARTITION_TAG = "dagster/partition"
INTERVAL_SECONDS = 5  # the daemon test's sensor interval (30 s by default)
TIMEOUT_SECONDS = 300.0  # generous: a loaded two-core machine; the test asserts facts, not durations
WORKSPACE = {
    "load_from": [
        {"python_module": {"module_name": "gestimum_pipeline.definitions", "location_name": "gestimum_pipeline"}}
    ]
}


def _today() -> str:
    return datetime.now(ZoneInfo(TIMEZONE)).date().isoformat()


def _insert_customer(crm_url: str, code: str) -> None:
    execute(crm_url, [("INSERT INTO crm.customers (code, name) VALUES (%s, %s)", (code, f"Customer {code}"))])


# --------------------------------------------------------------------------- ticks, evaluated directly


def test_ticks_run_what_changed_one_run_at_a_time(crm_url: str) -> None:
    defs = build_definitions(SETTINGS, resources={"crm": CrmDatabase(url=crm_url)})
    sensor = defs.resolve_sensor_def(CHANGE_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # off unless turned on

    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> SensorExecutionData:
            # What the daemon calls, with the resources the code location gives it.
            context = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"crm": CrmDatabase(url=crm_url)},
                repository_def=defs.get_repository_def(),
            )
            return sensor.evaluate_tick(context)

        first = tick(None)
        assert not first.run_requests and first.cursor and "from now on" in str(first.skip_message)
        quiet = tick(first.cursor)
        assert not quiet.run_requests and "No CRM change" in str(quiet.skip_message)

        _insert_customer(crm_url, "S1")
        changed = tick(quiet.cursor)
        assert changed.run_requests is not None and len(changed.run_requests) == 1
        request = changed.run_requests[0]
        assert request.partition_key == _today() and request.tags[TRIGGER_TAG] == SENSOR_TRIGGER
        assert not tick(changed.cursor).run_requests  # acted on: not again

        # The requested run is in flight: the next ticks skip without probing or moving the cursor,
        # even though the CRM changes meanwhile.
        run = instance.add_run(
            dg.DagsterRun(
                job_name="gestimum_sync",
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.STARTED,
                tags={**request.tags, PARTITION_TAG: _today()},
            )
        )
        _insert_customer(crm_url, "S2")
        waiting = tick(changed.cursor)
        assert not waiting.run_requests and run.run_id in str(waiting.skip_message)
        assert waiting.cursor == changed.cursor  # kept as it was

        # Once it ends, the first tick runs what came during it.
        instance.report_run_canceled(run)
        after = tick(changed.cursor)
        assert after.run_requests is not None and [r.partition_key for r in after.run_requests] == [_today()]
        assert not tick(after.cursor).run_requests


# --------------------------------------------------------------------------- for real: the daemon


def _sensor_state(instance: dg.DagsterInstance) -> InstigatorState | None:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == CHANGE_SENSOR:
            return state
    return None


def _wait(what: str, done: Callable[[], Any], daemon: Any, log: Path) -> Any:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        value = done()
        if value:
            return value
        assert daemon.poll() is None, "dagster-daemon exited:\n" + log_tail(log)
        assert time.monotonic() < deadline, f"{what}: not after {TIMEOUT_SECONDS:.0f} s\n" + log_tail(log)
        time.sleep(0.5)


def test_under_the_daemon_a_commit_reaches_gestimum_and_a_quiet_crm_starts_no_run(tmp_path: Path, crm_url: str) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / "workspace.yaml").write_text(yaml.safe_dump(WORKSPACE))
    config = SimulatorConfig(company_file="SENSOR.Gestimum", user="SYNC", items=("ELS",))
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(GestimumSimulator(config))
        env = environ_without_settings()
        env.update(
            {
                "DAGSTER_HOME": str(home),
                "CRM_DATABASE_URL": crm_url,
                "GESTIMUM_URL": sim.url,
                "GESTIMUM_FICHIER": "SENSOR.Gestimum",
                "GESTIMUM_UTILISATEUR": "SYNC",
                "GESTIMUM_MOT_PASSE": "",
                "GESTIMUM_SYNC_START_DATE": "2026-01-01",
                "GESTIMUM_SYNC_TIMEZONE": TIMEZONE,
                # How the README turns the sensor on, with a short interval for the test.
                "GESTIMUM_CHANGE_SENSOR": "true",
                "GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
            }
        )
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        log = tmp_path / "daemon.log"
        daemon = stack.enter_context(process_group([str(BIN / "dagster-daemon"), "run"], cwd=home, env=env, log=log))

        # Its first tick watches from now on: commits after it are the sensor's.
        _wait(
            "the sensor's first tick", lambda: (s := _sensor_state(instance)) and s.instigator_data.cursor, daemon, log
        )
        sensor_runs = dg.RunsFilter(tags={TRIGGER_TAG: SENSOR_TRIGGER})
        assert instance.get_runs(filters=sensor_runs) == []

        _insert_customer(crm_url, "LIVE1")
        _wait("the customer in Gestimum", lambda: "LIVE1" in sim.state.customers, daemon, log)
        runs = _wait(
            "the run's end",
            lambda: (r := instance.get_runs(filters=sensor_runs)) and all(x.is_finished for x in r) and r,
            daemon,
            log,
        )
        assert [(r.status, r.tags[PARTITION_TAG]) for r in runs] == [(dg.DagsterRunStatus.SUCCESS, _today())]
        assert "411LIVE1" in sim.state.accounts

        # Quiet: ticks go on after the run ended, and none starts a run (no run of any kind).
        ended = instance.get_run_record_by_id(runs[0].run_id)
        assert ended is not None and ended.end_time is not None
        state = _sensor_state(instance)
        assert state is not None

        def quiet_ticks() -> list[Any]:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=20)
            after = [t for t in ticks if t.timestamp > ended.end_time and t.status != TickStatus.STARTED]
            return after if len(after) >= 3 else []

        ticks = _wait("three ticks after the run", quiet_ticks, daemon, log)
        assert {t.status for t in ticks} == {TickStatus.SKIPPED}
        assert len(instance.get_runs()) == 1
        assert sim.state.customers.keys() == {"LIVE1"}
