"""Deployment settings: one typed, frozen object read from the environment by `Settings.from_env`.

Nothing reads the environment at import: `definitions.py` calls `Settings.from_env()` once
and hands the object to `build_definitions`; tests build one from a plain mapping.

Only non-secret values are read here; secrets (the Gestimum password, database URLs
with passwords, the alert webhook) are passed to resources as `EnvVar`s and resolved at
run time, so they never appear in the UI or in run configuration. For those, the
settings only record which variable to use (an `EnvVar` of an unset variable fails).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from gestimum_pipeline.gestimum.batching import DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES
from gestimum_pipeline.sync.mapping import DEFAULT_ACCOUNT_PREFIX

ALERT_WEBHOOK_ENV = "GESTIMUM_ALERT_WEBHOOK_URL"
UI_URL_ENV = "GESTIMUM_UI_URL"
REJECTED_PERCENT_ENV = "GESTIMUM_ALERT_REJECTED_PERCENT"
# The broker URL may carry a password: the executor reads it from this variable at run time.
CELERY_BROKER_ENV = "GESTIMUM_CELERY_BROKER_URL"
EXECUTORS = ("in_process", "celery")


class _Reader:
    """Typed reads of one environment mapping; a malformed value names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str:
        return self.env.get(name, "").strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def number(self, name: str, default: float, kind: type[float] | type[int], noun: str) -> float:
        raw = self.raw(name)
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"setting {name} must be {noun}, got {raw!r}") from None

    def real(self, name: str, default: float) -> float:
        return self.number(name, default, float, "a number")

    def integer(self, name: str, default: int) -> int:
        return int(self.number(name, default, int, "an integer"))

    def flag(self, name: str, default: bool) -> bool:
        raw = self.raw(name).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"setting {name} must be true or false, got {raw!r}")

    def percent(self, name: str, default: float) -> float:
        value = self.real(name, default)
        if not 0 <= value <= 100:
            raise ValueError(f"setting {name} must be a percentage between 0 and 100, got {value:g}")
        return value

    def minutes(self, name: str, default: float) -> float:
        value = self.real(name, default)
        if value <= 0:
            raise ValueError(f"setting {name} must be a positive number of minutes, got {value:g}")
        return value


@dataclass(frozen=True)
class Settings:
    """Everything the code location's shape depends on (README, 'Configuration')."""

    start_date: str = "2024-01-01"  # GESTIMUM_SYNC_START_DATE
    timezone: str = "Europe/Paris"  # GESTIMUM_SYNC_TIMEZONE
    cron: str = "0 * * * *"  # GESTIMUM_SYNC_CRON
    # The change sensor: runs the partitions the CRM changed, within seconds (defs/sensors.py).
    change_sensor: bool = False  # GESTIMUM_CHANGE_SENSOR: its default status (running when true)
    change_sensor_interval_seconds: int = 30  # GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS
    # How far Gestimum may lag behind the CRM: a sink not materialized for this long fails its
    # freshness policy (warned at two thirds of it), and rows pending or held longer fail a check.
    max_lag_minutes: float = 180.0  # GESTIMUM_MAX_LAG_MINUTES
    max_waiting_minutes: float = 180.0  # GESTIMUM_MAX_WAITING_MINUTES (default: the lag)
    crm_schema: str = "crm"  # CRM_SCHEMA
    company_file: str = ""  # GESTIMUM_FICHIER, read here only to name the sinks' pool
    # The state store defaults to the CRM database: which variable holds its URL.
    state_url_variable: str = "CRM_DATABASE_URL"
    verify_tls: bool = True  # GESTIMUM_VERIFY_TLS
    ca_bundle: str | None = None  # GESTIMUM_CA_BUNDLE
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 300.0
    max_lines_per_request: int = DEFAULT_MAX_LINES
    max_bytes_per_request: int = DEFAULT_MAX_BYTES
    max_retries: int = 3
    # A 503 on DocumentsStock proves nothing was processed (retried), unless a proxy in front
    # of Gestimum may answer 503 after losing the answer: then false (in doubt, reconciled).
    stock_retry_on_503: bool = True  # GESTIMUM_STOCK_RETRY_ON_503
    # How long Gestimum's acceptance of the credentials is trusted before the preflight checks
    # them again (each check opens the company file); 0 checks at every run.
    access_check_interval_seconds: int = 86400  # GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS
    lookback_minutes: int = 180  # GESTIMUM_SYNC_LOOKBACK_MINUTES
    account_prefix: str = DEFAULT_ACCOUNT_PREFIX  # GESTIMUM_ACCOUNT_PREFIX
    # Re-executions of a source or transform step after a transient database error, with
    # exponential backoff from this delay; sinks are never re-executed automatically.
    step_retries: int = 2  # GESTIMUM_STEP_RETRIES
    step_retry_delay_seconds: float = 2.0  # GESTIMUM_STEP_RETRY_DELAY_SECONDS
    alert_webhook_configured: bool = False  # GESTIMUM_ALERT_WEBHOOK_URL is set (its value is a secret)
    # GESTIMUM_ALERT_REJECTED_PERCENT: alert when a run's rejected lines exceed this share (0: off)
    alert_rejected_percent: float = 0.0
    ui_url: str = ""  # GESTIMUM_UI_URL
    # Where a run's steps execute: in the run's process, or as tasks on Celery workers (the
    # `[celery]` extra; docs/production/README.md, "Celery"), on the broker of CELERY_BROKER_ENV.
    executor: str = "in_process"  # GESTIMUM_EXECUTOR
    celery_queue: str = "dagster"  # GESTIMUM_CELERY_QUEUE: the queue the workers listen on (-Q)
    # Empty for the environment's one company file. Set by the GestimumSync component when a code
    # location holds several: it prefixes the asset keys, resource keys, job and schedule names.
    key_prefix: str = ""

    def scoped(self, name: str) -> str:
        """A job, schedule or resource name of this company file."""
        return f"{self.key_prefix}_{name}" if self.key_prefix else name

    def asset_key(self, *path: str) -> dg.AssetKey:
        return dg.AssetKey([self.key_prefix, *path] if self.key_prefix else list(path))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from `env` (default: the process environment); raises ValueError naming a bad variable."""
        read = _Reader(os.environ if env is None else env)
        max_lag = read.minutes("GESTIMUM_MAX_LAG_MINUTES", cls.max_lag_minutes)
        executor = read.text("GESTIMUM_EXECUTOR", cls.executor)
        if executor not in EXECUTORS:
            raise ValueError(f"setting GESTIMUM_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if executor == "celery" and not read.raw(CELERY_BROKER_ENV):
            raise ValueError(f"setting GESTIMUM_EXECUTOR=celery needs {CELERY_BROKER_ENV} (the broker's URL)")
        return cls(
            start_date=read.text("GESTIMUM_SYNC_START_DATE", cls.start_date),
            timezone=read.text("GESTIMUM_SYNC_TIMEZONE", cls.timezone),
            cron=read.text("GESTIMUM_SYNC_CRON", cls.cron),
            change_sensor=read.flag("GESTIMUM_CHANGE_SENSOR", cls.change_sensor),
            change_sensor_interval_seconds=read.integer(
                "GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS", cls.change_sensor_interval_seconds
            ),
            max_lag_minutes=max_lag,
            max_waiting_minutes=read.minutes("GESTIMUM_MAX_WAITING_MINUTES", max_lag),
            crm_schema=read.text("CRM_SCHEMA", cls.crm_schema),
            company_file=read.raw("GESTIMUM_FICHIER"),
            state_url_variable="SYNC_STATE_DATABASE_URL" if read.raw("SYNC_STATE_DATABASE_URL") else "CRM_DATABASE_URL",
            verify_tls=read.flag("GESTIMUM_VERIFY_TLS", cls.verify_tls),
            ca_bundle=read.raw("GESTIMUM_CA_BUNDLE") or None,
            connect_timeout_seconds=read.real("GESTIMUM_CONNECT_TIMEOUT_SECONDS", cls.connect_timeout_seconds),
            read_timeout_seconds=read.real("GESTIMUM_READ_TIMEOUT_SECONDS", cls.read_timeout_seconds),
            max_lines_per_request=read.integer("GESTIMUM_MAX_LINES_PER_REQUEST", cls.max_lines_per_request),
            max_bytes_per_request=read.integer("GESTIMUM_MAX_BYTES_PER_REQUEST", cls.max_bytes_per_request),
            max_retries=read.integer("GESTIMUM_MAX_RETRIES", cls.max_retries),
            stock_retry_on_503=read.flag("GESTIMUM_STOCK_RETRY_ON_503", cls.stock_retry_on_503),
            access_check_interval_seconds=read.integer(
                "GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS", cls.access_check_interval_seconds
            ),
            lookback_minutes=read.integer("GESTIMUM_SYNC_LOOKBACK_MINUTES", cls.lookback_minutes),
            account_prefix=read.text("GESTIMUM_ACCOUNT_PREFIX", cls.account_prefix),
            step_retries=read.integer("GESTIMUM_STEP_RETRIES", cls.step_retries),
            step_retry_delay_seconds=read.real("GESTIMUM_STEP_RETRY_DELAY_SECONDS", cls.step_retry_delay_seconds),
            alert_webhook_configured=bool(read.raw(ALERT_WEBHOOK_ENV)),
            alert_rejected_percent=read.percent(REJECTED_PERCENT_ENV, cls.alert_rejected_percent),
            ui_url=read.raw(UI_URL_ENV),
            executor=executor,
            celery_queue=read.text("GESTIMUM_CELERY_QUEUE", cls.celery_queue),
        )
