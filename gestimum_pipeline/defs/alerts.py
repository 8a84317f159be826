"""Failure alerts: a run-failure sensor and a failed-check sensor posting to a Slack-compatible webhook.

Alerts are on when GESTIMUM_ALERT_WEBHOOK_URL is set when the code location loads; the URL
then reaches the resource as an `EnvVar` (resolved at tick time, never shown in the UI).
Unset, the resource is built empty and both sensors skip, saying which variable turns
them on. Sensors run only under the daemon (`dg dev`, or `dagster-daemon run`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field

from gestimum_pipeline.defs.settings import ALERT_WEBHOOK_ENV, REJECTED_PERCENT_ENV, UI_URL_ENV, Settings
from gestimum_pipeline.notify.webhook import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    WebhookNotifier,
    check_failure_payload,
    partition_text,
    rejected_share_payload,
    run_failure_payload,
    webhook_secrets,
)
from gestimum_pipeline.redaction import url_secrets
from gestimum_pipeline.sync.rows_to_act_on import CHECK_NAME as ROWS_TO_ACT_ON

ALERTS_OFF = (
    f"skipped: {ALERT_WEBHOOK_ENV} not set (alerts are off; set it to a Slack-compatible webhook URL, then "
    "reload the code location, to turn them on)"
)


def alerts_status(configured: bool) -> str:
    """What the preflight's metadata says of alerts (GESTIMUM_ALERT_WEBHOOK_URL is a secret: never its value)."""
    return f"on ({ALERT_WEBHOOK_ENV} set)" if configured else f"off ({ALERT_WEBHOOK_ENV} not set)"


# The first segment of every asset key of this project; other code locations' checks are not ours to report.
PROJECT_ASSET_ROOTS = frozenset({"gestimum", "crm", "transform", "sync"})
# A check is evaluated inside a run: once the run has ended, all its evaluations are stored.
RUN_END_EVENTS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
HISTORY_LOOKBACK = 20  # evaluations of one check read to find the run before this one
RUNS_PER_TICK = 50  # bounds one tick after a long outage; the next tick continues from the cursor
# Settings whose values may be quoted by an upstream error; redacted from messages on top of URL passwords.
_SECRET_URL_SETTINGS = ("CRM_DATABASE_URL", "SYNC_STATE_DATABASE_URL", "GESTIMUM_URL")
_SECRET_SETTINGS = ("GESTIMUM_MOT_PASSE",)
_MIN_SECRET_LENGTH = 4  # a one-letter password replaced everywhere would garble the message, not protect it


class AlertWebhook(dg.ConfigurableResource):
    """Where failure alerts go: a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...)."""

    url: str = Field(
        default="",
        repr=False,
        description=f"Webhook URL ({ALERT_WEBHOOK_ENV}, a secret: Slack URLs embed a token); empty turns alerts off",
    )
    ui_url: str = Field(default="", description=f"Base URL of the Dagster UI, for links in messages ({UI_URL_ENV})")
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, description="Per attempt")
    retries: int = Field(default=DEFAULT_RETRIES, description="On connection errors, 429 and 5xx")
    rejected_percent: float = Field(
        default=0.0,
        description=f"Alert when more than this share of a run's lines were rejected ({REJECTED_PERCENT_ENV}; 0: off)",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.url.strip())

    def notifier(self) -> WebhookNotifier:
        return WebhookNotifier(self.url, timeout_seconds=self.timeout_seconds, retries=self.retries)

    def secrets(self) -> list[str]:
        """Everything a message must not show: the webhook's token, and the deployment's passwords."""
        secrets = webhook_secrets(self.url) if self.enabled else []
        for name in _SECRET_URL_SETTINGS:
            secrets += url_secrets(os.environ.get(name, ""))
        secrets += [os.environ.get(name, "") for name in _SECRET_SETTINGS]
        return [s for s in secrets if len(s) >= _MIN_SECRET_LENGTH]


def build_alert_webhook(settings: Settings | None = None) -> AlertWebhook:
    """The resource: an `EnvVar` when the webhook is configured, else disabled (default: settings from the env)."""
    settings = settings or Settings.from_env()
    # EnvVar fails on an unset variable, so whether to use it is decided at load time.
    return AlertWebhook(
        url=dg.EnvVar(ALERT_WEBHOOK_ENV) if settings.alert_webhook_configured else "",
        ui_url=settings.ui_url,
        rejected_percent=settings.alert_rejected_percent,
    )


# --------------------------------------------------------------------------- run failures


def error_text(error: Any) -> str:
    """The most telling message of a SerializableErrorInfo: the user's exception, not Dagster's wrapper."""
    # Dagster wraps a user exception (DagsterExecutionStepExecutionError "Error occurred while
    # executing op ...") and keeps the original as the cause.
    while error is not None and error.cause is not None:
        error = error.cause
    return (error.message if error is not None else "").strip()


def step_failures(context: dg.RunFailureSensorContext) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        # A dg.Failure's description is the project's own operator-facing message; anything
        # else is shown as its innermost exception ("ValueError: ...").
        if data.user_failure_data and data.user_failure_data.description:
            text = data.user_failure_data.description
        else:
            text = error_text(data.error) if data.error else ""
        failures.append((event.step_key or "?", text or "(no message)"))
    return failures


@dg.run_failure_sensor(
    name="gestimum_run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Posts each failed run of this code location to {ALERT_WEBHOOK_ENV} (skips when unset).",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhook) -> dg.SkipReason | None:
    if not alert_webhook.enabled:
        return dg.SkipReason(ALERTS_OFF)
    run = context.dagster_run
    payload = run_failure_payload(
        job_name=run.job_name,
        run_id=run.run_id,
        tags=run.tags,
        step_failures=step_failures(context),
        run_message=context.failure_event.message,
        ui_url=alert_webhook.ui_url,
        secrets=alert_webhook.secrets(),
    )
    with alert_webhook.notifier() as notifier:
        notifier.post(payload)
        context.log.info(f"Run {run.run_id} failed: alert posted to {notifier.host}")
    return None


# --------------------------------------------------------------------------- failed checks


@dataclass
class FailedCheck:
    evaluation: dg.AssetCheckEvaluation
    run_id: str
    run_tags: Mapping[str, str] = field(default_factory=dict)


def latest_run_end_storage_id(instance: dg.DagsterInstance) -> int:
    latest = 0
    for event_type in RUN_END_EVENTS:
        records = instance.fetch_run_status_changes(event_type, limit=1, ascending=False).records
        if records:
            latest = max(latest, records[0].storage_id)
    return latest


def run_ends_after(instance: dg.DagsterInstance, after: int, limit: int = RUNS_PER_TICK) -> list[tuple[int, str]]:
    """(storage id, run id) of the runs that ended after `after`, oldest first, at most about `limit`."""
    records = []
    bound: int | None = None  # when a type has more than `limit`, later ids of other types wait too
    for event_type in RUN_END_EVENTS:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after),
            limit=limit,
            ascending=True,
        )
        records.extend(result.records)
        if result.has_more and result.records:
            last = result.records[-1].storage_id
            bound = last if bound is None else min(bound, last)
    ends = sorted((r.storage_id, r.run_id) for r in records if bound is None or r.storage_id <= bound)
    return ends


def still_failing_the_same_way(instance: dg.DagsterInstance, evaluation: dg.AssetCheckEvaluation, run_id: str) -> bool:
    """Whether the check's previous run failed it with the same description: already reported.

    An hourly schedule re-evaluates a standing rejection every hour; the team is told when a
    check starts failing or its findings change (new rows, other reasons), not at every run.
    """
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name), limit=HISTORY_LOOKBACK
    )
    # Completed evaluations only (a planned one of a run in progress has no verdict yet).
    history = [(r.run_id, data) for r in records if isinstance(data := _evaluation(r), dg.AssetCheckEvaluation)]
    runs = [r for r, _ in history]
    if run_id not in runs:  # the history moved on past this run (a busy instance): report, don't guess
        return False
    for previous_run, previous in history[runs.index(run_id) + 1 :]:
        if previous_run == run_id:
            continue
        return not previous.passed and previous.description == evaluation.description
    return False


def _evaluation(record: Any) -> object:
    event = record.event.dagster_event if record.event else None
    return event.event_specific_data if event else None


def failed_checks_of_run(instance: dg.DagsterInstance, run_id: str) -> list[FailedCheck]:
    """The run's failed evaluations (WARN and ERROR) of checks on this project's assets."""
    failed: list[FailedCheck] = []
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        dagster_event = record.event_log_entry.dagster_event
        if dagster_event is None:
            continue
        evaluation = dagster_event.event_specific_data
        if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
            continue
        if evaluation.asset_key.path[0] not in PROJECT_ASSET_ROOTS:
            continue
        if evaluation.check_name == ROWS_TO_ACT_ON:
            # The sinks' own checks already tell each new rejection; the list changes with every
            # operator action too, which is no news to post.
            continue
        if still_failing_the_same_way(instance, evaluation, run_id):
            continue
        failed.append(FailedCheck(evaluation, run_id))
    if failed:
        run = instance.get_run_by_id(run_id)
        for check in failed:
            check.run_tags = run.tags if run else {}
    return failed


def _table_rows(metadata: Mapping[str, Any]) -> list[Mapping[str, object]]:
    for value in metadata.values():
        if isinstance(value, dg.TableMetadataValue) and value.records:
            return [record.data for record in value.records]
    return []


def explaining_rows(instance: dg.DagsterInstance, evaluation: dg.AssetCheckEvaluation) -> list[Mapping[str, object]]:
    """Rows that explain the failure: a table in the check's metadata, else the checked materialization's
    (a sink's `rejections`: source key and Gestimum's reason)."""
    rows = _table_rows(evaluation.metadata)
    target = evaluation.target_materialization_data
    if rows or target is None:
        return rows
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=evaluation.asset_key, storage_ids=[target.storage_id]), limit=1
    )
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is not None:
            return _table_rows(materialization.metadata)
    return []


def _counts(metadata: Mapping[str, Any]) -> dict[str, object]:
    # Numbers only: text values (summaries) repeat the description, tables are shown as rows.
    counts: dict[str, object] = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            counts[key] = raw
    return counts


def check_payload(instance: dg.DagsterInstance, check: FailedCheck, alert_webhook: AlertWebhook) -> dict[str, Any]:
    evaluation = check.evaluation
    return check_failure_payload(
        asset_key_path=evaluation.asset_key.path,
        check_name=evaluation.check_name,
        severity=evaluation.severity.value,
        description=evaluation.description,
        metadata=_counts(evaluation.metadata),
        samples=explaining_rows(instance, evaluation),
        run_id=check.run_id,
        partition=evaluation.partition or partition_text(check.run_tags),
        ui_url=alert_webhook.ui_url,
        secrets=alert_webhook.secrets(),
    )


@dataclass(frozen=True)
class RejectedShare:
    """A run's lines (sent to Gestimum, or refused by our validation before) and how many were rejected."""

    lines: int
    rejected_by_gestimum: int
    rejected_locally: int

    @property
    def percent(self) -> float:
        rejected = self.rejected_by_gestimum + self.rejected_locally
        return 100.0 * rejected / self.lines if self.lines else 0.0


def rejected_share(instance: dg.DagsterInstance, run_id: str) -> RejectedShare:
    """From the run's own totals (`run_*`, recorded once per run on its last partition)."""
    sent = by_gestimum = locally = 0
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        materialization = event.event_specific_data.materialization if event is not None else None
        if materialization is None or "run_partitions" not in materialization.metadata:
            continue
        values = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        sent += int(values.get("run_lines_sent") or 0)
        by_gestimum += int(values.get("run_rejected") or 0)
        locally += int(values.get("run_rejected_locally") or 0)
    return RejectedShare(sent + locally, by_gestimum, locally)


def _new_failed_checks(instance: dg.DagsterInstance, after: int) -> Iterator[tuple[int, str, list[FailedCheck]]]:
    for storage_id, run_id in run_ends_after(instance, after):
        yield storage_id, run_id, failed_checks_of_run(instance, run_id)


@dg.sensor(
    name="gestimum_check_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description=f"Posts each failed asset check (WARN or ERROR) of this project to {ALERT_WEBHOOK_ENV}, "
    f"once its run has ended, and each run whose rejected lines exceed {REJECTED_PERCENT_ENV} (skips when unset).",
)
def check_failure_alert(context: dg.SensorEvaluationContext, alert_webhook: AlertWebhook) -> dg.SensorResult:
    if not alert_webhook.enabled:
        return dg.SensorResult(skip_reason=ALERTS_OFF)
    instance = context.instance
    if context.cursor is None:
        # First tick (or alerts just turned on): report what happens from now on, not history.
        latest = latest_run_end_storage_id(instance)
        return dg.SensorResult(
            skip_reason=f"Watching runs that end after event {latest}; earlier check results are not replayed",
            cursor=str(latest),
        )
    cursor = int(context.cursor)
    posted = 0
    # At least once: a delivery error fails the tick before the cursor moves, and the next tick retries.
    with alert_webhook.notifier() as notifier:
        for storage_id, run_id, failures in _new_failed_checks(instance, cursor):
            for check in failures:
                notifier.post(check_payload(instance, check, alert_webhook))
                posted += 1
                key = check.evaluation.asset_key.to_user_string()
                context.log.info(f"Check {key} {check.evaluation.check_name} failed: alert posted to {notifier.host}")
            threshold = alert_webhook.rejected_percent
            share = rejected_share(instance, run_id) if threshold > 0 else None
            if share is not None and share.percent > threshold:
                run = instance.get_run_by_id(run_id)
                notifier.post(
                    rejected_share_payload(
                        percent=share.percent,
                        threshold=threshold,
                        lines=share.lines,
                        rejected_by_gestimum=share.rejected_by_gestimum,
                        rejected_locally=share.rejected_locally,
                        run_id=run_id,
                        partition=partition_text(run.tags) if run else None,
                        ui_url=alert_webhook.ui_url,
                    )
                )
                posted += 1
                context.log.info(f"Run {run_id}: {share.percent:.1f}% of its lines rejected: alert posted")
            cursor = storage_id
    if posted:
        return dg.SensorResult(cursor=str(cursor))
    return dg.SensorResult(skip_reason="No failed check in the runs that ended since the last tick", cursor=str(cursor))


alert_sensors: Sequence[dg.SensorDefinition] = [run_failure_alert, check_failure_alert]


def _alerts_off_sensor(on: dg.SensorDefinition) -> dg.SensorDefinition:
    """`on`'s stand-in while no webhook is set: every tick is skipped, saying why.

    A run-failure sensor has nothing to say while no run fails, so its ticks would read
    "0 runs requested" as if alerts were on; the stand-in keeps the name, so turning alerts on
    (set the variable, reload the code location) swaps the real sensor in with its history.
    """

    @dg.sensor(
        name=on.name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description=f"Alerts are off: {ALERT_WEBHOOK_ENV} is not set. {on.description or ''}".strip(),
    )
    def _off(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        return dg.SkipReason(ALERTS_OFF)

    return _off


def alert_sensors_for(enabled: bool) -> Sequence[dg.SensorDefinition]:
    """The alert sensors, or, with no webhook, stand-ins whose ticks say alerts are off."""
    return alert_sensors if enabled else [_alerts_off_sensor(s) for s in alert_sensors]
