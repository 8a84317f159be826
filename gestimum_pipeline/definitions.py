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
    # Steps still run in their own processes (a crash stays contained, transforms of
    # different relations overlap), but forked from a warm server instead of each
    # importing Dagster anew: on two cores that is most of a short run's wall time.
    executor=dg.multiprocess_executor.configured({"start_method": {"forkserver": {}}}),
)
