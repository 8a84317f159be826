"""The code location: assembles the per-concern definition modules."""

from __future__ import annotations

import dagster as dg

from gestimum_pipeline.defs.alerts import alert_sensors, build_alert_webhook
from gestimum_pipeline.defs.assets import preflight_assets, sink_assets, source_assets, transform_assets
from gestimum_pipeline.defs.checks import state_checks
from gestimum_pipeline.defs.resources import build_resources
from gestimum_pipeline.defs.schedules import sync_job, sync_schedule

defs = dg.Definitions(
    assets=[*preflight_assets, *source_assets, *transform_assets, *sink_assets],
    asset_checks=state_checks,
    jobs=[sync_job],
    schedules=[sync_schedule],
    sensors=alert_sensors,
    resources={**build_resources(), "alert_webhook": build_alert_webhook()},
    # A run's steps are I/O-bound and ordered (the sinks of a company file go one at a
    # time), so they run one after another in the run's process: a process per step
    # cost about 2 s each, most of a short run. A crash is contained by the state store
    # (rows in flight are resolved by the next run), not by processes. Pools still hold:
    # this executor claims slots through the same instance concurrency context.
    executor=dg.in_process_executor,
)
