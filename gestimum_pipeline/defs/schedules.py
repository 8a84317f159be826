"""Automation: the sync job and the schedule that keeps yesterday and today in sync."""

from datetime import timedelta

import dagster as dg

from gestimum_pipeline.defs.partitions import daily_partitions
from gestimum_pipeline.defs.settings import CRON, TIMEZONE

sync_job = dg.define_asset_job(
    name="gestimum_sync",
    selection=dg.AssetSelection.all(),  # partitioned daily, like every asset it selects
    description="The whole sync: CRM sources, transforms and the five Gestimum imports, in dependency order.",
)


@dg.schedule(
    name="gestimum_sync_schedule",
    cron_schedule=CRON,
    job=sync_job,
    execution_timezone=TIMEZONE,
    description="Keeps yesterday's and today's partitions in sync (yesterday catches rows committed late).",
)
def sync_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    now = context.scheduled_execution_time
    keys = [(now - timedelta(days=1)).strftime("%Y-%m-%d"), now.strftime("%Y-%m-%d")]
    valid = set(daily_partitions.get_partition_keys(current_time=now))
    return [dg.RunRequest(run_key=f"{key}@{now.isoformat()}", partition_key=key) for key in keys if key in valid]
