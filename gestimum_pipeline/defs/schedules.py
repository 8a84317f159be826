"""Automation: the sync job and the schedule that keeps every partition since the last success in sync."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import dagster as dg

from gestimum_pipeline.defs.metadata import TRIGGER_TAG
from gestimum_pipeline.defs.settings import Settings

SYNC_JOB = "gestimum_sync"
PREFLIGHT_KEY = dg.AssetKey(["sync", "preflight"])
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


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


def catch_up_start(
    instance: dg.DagsterInstance,
    sinks: Sequence[dg.AssetKey],
    partitions: dg.DailyPartitionsDefinition,
    current_time: datetime | None = None,
) -> str | None:
    """The first partition a scheduled run must cover: the day before the last day of each
    sink's unbroken run of synced days from its first synced day (a day missed in an outage
    stays missed even after a later day was synced by hand or by a dry run). None while a sink
    has never succeeded: the initial load is a backfill."""
    keys = partitions.get_partition_keys(current_time=current_time)
    covered_until: list[str] = []
    for key in sinks:
        done = instance.get_materialized_partitions(key)
        if not done:
            return None
        first_done = min(done)
        gap = next((k for k in keys if k > first_done and k not in done), None)
        if gap is None:
            covered_until.append(max(done))
        else:  # the day before the first gap: the last day of the unbroken run
            covered_until.append((datetime.strptime(gap, "%Y-%m-%d") - timedelta(days=1)).strftime("%Y-%m-%d"))
    if not covered_until:
        return None
    # The day before too: rows committed late into the last day synced.
    start = (datetime.strptime(min(covered_until), "%Y-%m-%d") - timedelta(days=1)).strftime("%Y-%m-%d")
    first = partitions.get_first_partition_key()
    return max(start, first) if first else start


def build_sync_schedule(
    settings: Settings,
    job: dg.UnresolvedAssetJobDefinition,
    partitions: dg.DailyPartitionsDefinition,
    sinks: Sequence[dg.AssetKey] = (),
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=settings.scoped("gestimum_sync_schedule"),
        cron_schedule=settings.cron,
        job=job,
        execution_timezone=settings.timezone,
        description="Keeps the partitions in sync from the day before the first day a sink has not synced (after "
        "an outage: every day missed, in one run, even if a later day was run by hand); at least yesterday (rows "
        "committed late) and today.",
    )
    def sync_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time
        yesterday, today = (now - timedelta(days=1)).strftime("%Y-%m-%d"), now.strftime("%Y-%m-%d")
        start = catch_up_start(context.instance, sinks, partitions, now) if sinks else None
        valid = partitions.get_partition_keys(current_time=now)
        if start is not None and start < yesterday:
            # Days missed since the last success (an outage, a weekend): one run over the range.
            covered = [k for k in valid if start <= k <= today]
            if covered:
                return [
                    dg.RunRequest(
                        run_key=f"{covered[0]}...{covered[-1]}@{now.isoformat()}",
                        tags={RANGE_START_TAG: covered[0], RANGE_END_TAG: covered[-1], TRIGGER_TAG: "schedule"},
                    )
                ]
        keys = [yesterday, today]
        return [
            dg.RunRequest(run_key=f"{key}@{now.isoformat()}", partition_key=key, tags={TRIGGER_TAG: "schedule"})
            for key in keys
            if key in valid
        ]

    return sync_schedule
