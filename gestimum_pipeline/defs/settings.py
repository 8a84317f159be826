"""Deployment settings read from the environment when the code location loads.

Only non-secret values are read here; secrets (the Gestimum password, database URLs
with passwords) are passed to resources as `EnvVar`s and resolved at run time, so they
never appear in the UI or in run configuration.
"""

from __future__ import annotations

import os

DEFAULT_START_DATE = "2024-01-01"
DEFAULT_TIMEZONE = "Europe/Paris"
DEFAULT_CRON = "0 * * * *"


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be a number, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be an integer, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {name} must be true or false, got {raw!r}")


START_DATE = env_str("GESTIMUM_SYNC_START_DATE", DEFAULT_START_DATE)
TIMEZONE = env_str("GESTIMUM_SYNC_TIMEZONE", DEFAULT_TIMEZONE)
CRON = env_str("GESTIMUM_SYNC_CRON", DEFAULT_CRON)


def env_minutes(name: str, default: float) -> float:
    value = env_float(name, default)
    if value <= 0:
        raise ValueError(f"setting {name} must be a positive number of minutes, got {value:g}")
    return value


# How far Gestimum may lag behind the CRM: a sink not materialized for this long fails its
# freshness policy (warned at two thirds of it), and rows pending or held longer fail a check.
MAX_LAG_MINUTES = env_minutes("GESTIMUM_MAX_LAG_MINUTES", 180.0)
MAX_WAITING_MINUTES = env_minutes("GESTIMUM_MAX_WAITING_MINUTES", MAX_LAG_MINUTES)
