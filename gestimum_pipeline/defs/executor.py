"""Where a run's steps execute: the sync job's executor, chosen by the deployment (GESTIMUM_EXECUTOR)."""

from __future__ import annotations

from functools import cache

import dagster as dg

from gestimum_pipeline.defs.settings import CELERY_BROKER_ENV, Settings

# Results come back to the run's process over the broker itself: no second service to run.
CELERY_RESULT_BACKEND = "rpc://"


def sync_executor(settings: Settings) -> dg.ExecutorDefinition:
    """`in_process` (the default) or the Celery executor of the `[celery]` extra.

    A run's steps are I/O-bound and ordered (the sinks of a company file go one at a time), so
    by default they run one after another in the run's process: a process per step cost about
    2 s each, most of a short run. A crash is contained by the state store (rows in flight are
    resolved by the next run), not by processes. With Celery, each step is a task on the queue
    `settings.celery_queue`, run by whichever worker takes it; both executors claim pool slots
    through the instance, so one sink per company file at a time still holds.
    """
    if settings.executor != "celery":
        return dg.in_process_executor
    return _celery_executor(settings.celery_queue)


# One object per queue: the company files of a code location (one Definitions each) merge only
# if they hold the very same executor.
@cache
def _celery_executor(queue: str) -> dg.ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise ValueError(
            'GESTIMUM_EXECUTOR=celery needs the celery extra: pip install "gestimum-pipeline[celery]"'
        ) from None
    return celery_executor.configured(
        {
            # Read from the environment when a run starts: the URL (and its password) is never
            # written in the run's configuration, the UI or the logs.
            "broker": {"env": CELERY_BROKER_ENV},
            "backend": CELERY_RESULT_BACKEND,
            "config_source": {"task_default_queue": queue},
        },
        name="celery",
    )
