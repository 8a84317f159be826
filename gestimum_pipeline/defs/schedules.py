"""Automation: the sync job and the schedule that keeps yesterday and today in sync."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import dagster as dg

from gestimum_pipeline.defs.metadata import TRIGGER_TAG
from gestimum_pipeline.defs.settings import Settings

SYNC_JOB = "gestimum_sync"
PREFLIGHT_KEY = dg.AssetKey(["sync", "preflight"])


def build_sync_job(
    *, without_preflight: bool = False, tags: Mapping[str, str] | None = None, settings: Settings | None = None
) -> dg.UnresolvedAssetJobDefinition:
    """The whole sync of one company file; `without_preflight` leaves out its first step (tests
    that count every request)."""
    settings = settings or Settings()
    # Partitioned daily, like every asset it selects; with several company files, only its own.
    if settings.key_prefix:
        selection = dg.AssetSelection.key_prefixes([settings.key_prefix])
    else:
        selection = dg.AssetSelection.all()
    if without_preflight:
        selection = selection - dg.AssetSelection.assets(settings.asset_key(*PREFLIGHT_KEY.path))
    return dg.define_asset_job(
        name=settings.scoped(SYNC_JOB),
        selection=selection,
        description="The whole sync: CRM sources, transforms and the Gestimum imports, in dependency order.",
        # Launched by hand unless the schedule's run request says otherwise.
        tags={TRIGGER_TAG: "manual", **(tags or {})},
    )


def build_sync_schedule(
    settings: Settings, job: dg.UnresolvedAssetJobDefinition, partitions: dg.DailyPartitionsDefinition
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=settings.scoped("gestimum_sync_schedule"),
        cron_schedule=settings.cron,
        job=job,
        execution_timezone=settings.timezone,
        description="Keeps yesterday's and today's partitions in sync (yesterday catches rows committed late).",
    )
    def sync_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time
        keys = [(now - timedelta(days=1)).strftime("%Y-%m-%d"), now.strftime("%Y-%m-%d")]
        valid = set(partitions.get_partition_keys(current_time=now))
        return [
            dg.RunRequest(run_key=f"{key}@{now.isoformat()}", partition_key=key, tags={TRIGGER_TAG: "schedule"})
            for key in keys
            if key in valid
        ]

    return sync_schedule
