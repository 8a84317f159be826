"""The change sensor: a run for the partitions the CRM changed, seconds after the commit.

The probe and its cursor are plain Python (crm/changes.py); this module only wires them to
Dagster. Off by default, like the schedule: turn it on in the UI, with
`dagster sensor start gestimum_change_sensor`, or by declaring it running
(GESTIMUM_CHANGE_SENSOR=true; `change_sensor: true` in a company file's defs.yaml). Sensors
run only under the daemon (`dg dev`, or `dagster-daemon run`). The schedule stays on as the
safety net for commits the probe cannot see (README, 'Running it for real').
"""

from __future__ import annotations

import dagster as dg

from gestimum_pipeline.crm.changes import ChangeCursor, ProbeBusy, compare, days_between, probe
from gestimum_pipeline.db import validate_identifier
from gestimum_pipeline.defs.metadata import TRIGGER_TAG
from gestimum_pipeline.defs.resources import CrmDatabase
from gestimum_pipeline.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from gestimum_pipeline.defs.settings import Settings

CHANGE_SENSOR = "gestimum_change_sensor"
SENSOR_TRIGGER = "sensor"  # the runs' gestimum/trigger tag
# A run in one of these has not ended yet: the next change-driven run waits for it.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def change_run_in_flight(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """The id of this job's change-driven run that has not ended, if any."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, tags={TRIGGER_TAG: SENSOR_TRIGGER}, statuses=IN_FLIGHT), limit=1
    )
    return records[0].dagster_run.run_id if records else None


def build_change_sensor(
    settings: Settings, job: dg.UnresolvedAssetJobDefinition, partitions: dg.DailyPartitionsDefinition
) -> dg.SensorDefinition:
    if settings.change_sensor_interval_seconds < 1:
        raise ValueError(
            "setting GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS must be at least 1, "
            f"got {settings.change_sensor_interval_seconds}"
        )
    crm_key = settings.scoped("crm")

    @dg.sensor(
        name=settings.scoped(CHANGE_SENSOR),
        job=job,
        minimum_interval_seconds=settings.change_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if settings.change_sensor else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={crm_key},
        description="Probes the CRM for rows changed since its last tick (a few index lookups) and runs the days "
        "that changed; one change-driven run at a time. The schedule remains the safety net.",
    )
    def change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        running = change_run_in_flight(context.instance, job.name)
        if running is not None:
            # The cursor stays: what commits meanwhile is compared, and run, at the first tick after it.
            return dg.SensorResult(skip_reason=f"Run {running} is in flight: changes since wait for it to end")
        crm: CrmDatabase = getattr(context.resources, crm_key)
        schema = validate_identifier(crm.schema_name, "CRM_SCHEMA")
        cursor = ChangeCursor.from_json(context.cursor)
        conn = crm.connect()
        try:
            changes = compare(cursor, probe(conn, schema, cursor))
        except ProbeBusy as busy:
            return dg.SensorResult(skip_reason=f"{busy}; the next tick probes again")
        finally:
            conn.close()
        new_cursor = changes.cursor.to_json()
        if cursor is None:
            return dg.SensorResult(skip_reason="Watching CRM changes from now on", cursor=new_cursor)
        if changes.first is None or changes.last is None:
            return dg.SensorResult(skip_reason="No CRM change since the last tick", cursor=new_cursor)
        valid = set(partitions.get_partition_keys())
        keys = [k for k in days_between(changes.first, changes.last, settings.timezone) if k in valid]
        what = "the sensor was off too long to compare" if changes.stale else ", ".join(changes.relations)
        if not keys:
            return dg.SensorResult(skip_reason=f"Changes ({what}) fall on no partition", cursor=new_cursor)
        context.log.info(f"CRM changed ({what}): running {keys[0]}" + (f"...{keys[-1]}" if len(keys) > 1 else ""))
        tags = {TRIGGER_TAG: SENSOR_TRIGGER}
        run_key = f"{keys[0]}...{keys[-1]}@{changes.cursor.since.isoformat()}"
        if len(keys) == 1:
            request = dg.RunRequest(run_key=run_key, partition_key=keys[0], tags=tags)
        else:  # one run over the range (the assets' single-run backfill policy), like the schedule's catch-up
            request = dg.RunRequest(run_key=run_key, tags={**tags, RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
        return dg.SensorResult(run_requests=[request], cursor=new_cursor)

    return change_sensor
