"""The sync itself, as plain Python: `stage_endpoint` (sync/staging.py) stages CRM rows into
the state store, `send_endpoint` (sync/sending.py) sends them. This module keeps the names
callers import from one place.
"""

from __future__ import annotations

from gestimum_pipeline.sync.errors import DeliveryUnknownError, SourceReadError, StateStoreFailure, SyncError
from gestimum_pipeline.sync.sending import (
    ACCESS_CHECK_RETRIES,
    MAX_REPORTED_JOURNAL_ENTRIES,
    RejectedRow,
    SendReport,
    send_endpoint,
    statistics_problems,
    summary_line,
    unaccountable_answer,
)
from gestimum_pipeline.sync.staging import (
    INVALID_KEY,
    MAX_REPORTED_REJECTIONS,
    StageReport,
    Window,
    day_function,
    stage_endpoint,
)

__all__ = [
    "ACCESS_CHECK_RETRIES",
    "INVALID_KEY",
    "MAX_REPORTED_JOURNAL_ENTRIES",
    "MAX_REPORTED_REJECTIONS",
    "DeliveryUnknownError",
    "RejectedRow",
    "SendReport",
    "SourceReadError",
    "StageReport",
    "StateStoreFailure",
    "SyncError",
    "Window",
    "day_function",
    "send_endpoint",
    "stage_endpoint",
    "statistics_problems",
    "summary_line",
    "unaccountable_answer",
]
