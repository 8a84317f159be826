"""The one place the Dagster graph is assembled: `build_definitions(settings)`.

The code location (`gestimum_pipeline/definitions.py`), the tests' harnesses, the demo and
the bench all call it, so they run the graph production runs. Everything it builds
derives from `settings` (read once, by `Settings.from_env`) and the endpoint registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from gestimum_pipeline.defs.alerts import AlertWebhook, alert_sensors_for, build_alert_webhook
from gestimum_pipeline.defs.assets import build_assets, sink_key
from gestimum_pipeline.defs.checks import build_all_state_checks
from gestimum_pipeline.defs.executor import sync_executor
from gestimum_pipeline.defs.metadata import COMPANY_FILE_TAG, tag_value
from gestimum_pipeline.defs.operator_jobs import build_operator_jobs
from gestimum_pipeline.defs.partitions import daily_partitions
from gestimum_pipeline.defs.resources import build_resources, deployment_resources
from gestimum_pipeline.defs.rows_to_act_on import build_rows_to_act_on_check
from gestimum_pipeline.defs.schedules import build_sync_job, build_sync_schedule
from gestimum_pipeline.defs.sensors import build_change_sensor
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry


def build_definitions(
    settings: Settings,
    *,
    endpoints: EndpointRegistry = ENDPOINTS,
    resources: Mapping[str, Any] | None = None,
    state_checks: Sequence[dg.AssetChecksDefinition] | None = None,
    without_preflight: bool = False,
    with_alerts: bool = True,
) -> dg.Definitions:
    """The code location's definitions, or one company file's part of them.

    `resources` replace the environment-wired ones by key (tests, demo, bench pass plain
    values; the GestimumSync component its company file's); `state_checks` replace the
    state-store checks (tests that shorten their thresholds); `without_preflight` leaves
    the preflight out of the job (tests that count every request Gestimum receives).

    With `settings.key_prefix` (several company files in one code location), asset keys,
    resource keys, job and schedule names are the company file's own, and `with_alerts`
    is off: the location's alert sensors watch every company file's runs, so they are
    added once (alert_definitions).
    """
    job = build_sync_job(
        without_preflight=without_preflight,
        tags={COMPANY_FILE_TAG: tag_value(settings.company_file or "default")},
        settings=settings,
    )
    checks = build_all_state_checks(settings, endpoints) if state_checks is None else list(state_checks)
    checks.append(build_rows_to_act_on_check(settings, endpoints))
    company_resources = {**build_resources(settings), **(resources or {})}
    webhook = company_resources.pop("alert_webhook", None)  # the location's, not the company file's
    return dg.Definitions.merge(
        dg.Definitions(
            assets=build_assets(settings, endpoints),
            asset_checks=checks,
            jobs=[job, *build_operator_jobs(endpoints, settings)],
            schedules=[
                build_sync_schedule(
                    settings, job, daily_partitions(settings), [sink_key(n, settings) for n in endpoints.names]
                )
            ],
            sensors=[build_change_sensor(settings, job, daily_partitions(settings))],
            # Connection targets and credentials are not run config: only sync_options is.
            resources={settings.scoped(key): value for key, value in deployment_resources(company_resources).items()},
            # in_process unless the deployment says celery (defs/executor.py says why).
            executor=sync_executor(settings),
        ),
        alert_definitions(settings, webhook) if with_alerts else dg.Definitions(),
    )


def alert_definitions(settings: Settings, webhook: Any = None) -> dg.Definitions:
    """The alert sensors and their webhook: one pair per code location (with no webhook, sensors
    whose ticks say alerts are off)."""
    resource = webhook if webhook is not None else build_alert_webhook(settings)
    enabled = resource.enabled if isinstance(resource, AlertWebhook) else True
    return dg.Definitions(
        sensors=alert_sensors_for(enabled),
        resources=deployment_resources({"alert_webhook": resource}),
    )
