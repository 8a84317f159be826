"""The operator's actions as Dagster jobs: retry, ignore and reconcile rows from the Launchpad,
and `operator_history`, which writes one row's whole story to its run log (read-only).

Each job is one op with typed config (the Launchpad shows its fields and checks them) that
calls the same operation as the `gestimum-pipeline` command (sync/operator.py). The result
is in the run log, and the state store's audit trail records the actor, the run id, the
run's tags, and that the actor is declared, not proven: the OSS webserver has no login, so
anyone who can reach the UI may launch these jobs under any name (docs/security.md).
"""
# No `from __future__ import annotations`: Dagster reads the ops' config classes from their annotations.

import functools
from collections.abc import Callable
from enum import Enum
from typing import Any

import dagster as dg
from pydantic import Field

from gestimum_pipeline.defs import rows_to_act_on
from gestimum_pipeline.defs.metadata import COMPANY_FILE_TAG, tag_value
from gestimum_pipeline.defs.resources import SyncStateDatabase
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync import history, operator
from gestimum_pipeline.sync.endpoints import EndpointRegistry
from gestimum_pipeline.sync.state import StateStore

RETRY_JOB = "operator_retry"
IGNORE_JOB = "operator_ignore"
RECONCILE_JOB = "operator_reconcile"
HISTORY_JOB = "operator_history"
# Written with each action: the actor is whatever the Launchpad's config says.
ACTOR_DECLARED = "declared in the run config, not proven (the Dagster UI has no login)"


def endpoint_enum(endpoints: EndpointRegistry) -> type[Enum]:
    """The registry's endpoints as an Enum: the Launchpad offers them, and a typo fails config
    validation, before the run starts."""
    return _endpoint_enum(tuple(endpoints.names))


@functools.cache
def _endpoint_enum(names: tuple[str, ...]) -> type[Enum]:
    # One class per set of names: every company file's jobs share Dagster's config type "Endpoint".
    return Enum("Endpoint", {name: name for name in names})


def operator_configs(endpoints: EndpointRegistry) -> tuple[type[dg.Config], type[dg.Config]]:
    """The retry and ignore jobs' config classes, their `endpoint` one of `endpoints`."""
    endpoint_type = endpoint_enum(endpoints)

    class RetryConfig(dg.Config):
        """Rows Gestimum rejected, held or ignored go back to pending: the next sync sends them."""

        endpoint: endpoint_type = Field(  # type: ignore[valid-type]
            description="the endpoint (see `gestimum-pipeline rejections`)"
        )
        source_keys: list[str] = Field(
            description="the rows' source keys, as `gestimum-pipeline rejections` lists them"
        )
        actor: str = Field(description="who is acting: recorded in the audit trail as declared, not verified")

    class IgnoreConfig(dg.Config):
        """Rows rejected, held or pending are ignored: not sent, re-opened if the CRM row changes."""

        endpoint: endpoint_type = Field(description="the endpoint")  # type: ignore[valid-type]
        source_keys: list[str] = Field(description="the rows' source keys")
        actor: str = Field(description="who is acting: recorded in the audit trail as declared, not verified")
        note: str = Field(default="", description="why (recorded as the rows' reason)")

    return RetryConfig, IgnoreConfig


class ReconcileConfig(dg.Config):
    """Stock movements in delivery_unknown, checked in Gestimum: delivered (Gestimum has them as
    `document`) or released (Gestimum does not have them: the next sync sends them)."""

    source_keys: list[str] = Field(description="the movements' ids")
    actor: str = Field(description="who is acting: recorded in the audit trail as declared, not verified")
    delivered: bool = Field(description="true: Gestimum has them (give the document); false: send them again")
    document: str = Field(default="", description="the Gestimum document they became (when delivered)")


def history_config(endpoints: EndpointRegistry) -> type[dg.Config]:
    """The history job's config class, its `endpoint` one of `endpoints`."""
    endpoint_type = endpoint_enum(endpoints)

    class HistoryConfig(dg.Config):
        """One row's whole story (sync/history.py), as `gestimum-pipeline history` prints it."""

        endpoint: endpoint_type = Field(description="the endpoint")  # type: ignore[valid-type]
        source_key: str = Field(description="the row's source key, as `gestimum-pipeline rejections` lists it")

    return HistoryConfig


def provenance(context: dg.OpExecutionContext) -> dict[str, Any]:
    """What the audit trail records of the launch: the run, its tags, and what the actor is worth."""
    return {
        "run_id": context.run_id,
        "run_tags": dict(context.run.tags),
        "actor_verified": False,
        "actor_source": ACTOR_DECLARED,
    }


def _run(
    context: dg.OpExecutionContext,
    sync_state: SyncStateDatabase,
    endpoints: EndpointRegistry,
    act: Callable[[StateStore], operator.ActionOutcome],
    settings: Settings,
) -> operator.ActionOutcome:
    store = sync_state.open(endpoints)
    store.action_provenance = provenance(context)
    try:
        outcome = act(store)
        # The rows-to-act-on view reflects the action now, not at the next sync.
        context.log_event(rows_to_act_on.evaluation(store, endpoints, settings))
    except operator.OperatorError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    finally:
        store.close()
    context.log.info(outcome.summary())
    if not outcome.complete:
        # What could be applied was; the run fails so the operator sees which rows were not.
        raise dg.Failure(
            description=outcome.summary(),
            metadata={"changed": len(outcome.changed)},
            allow_retries=False,
        )
    return outcome


def build_operator_jobs(endpoints: EndpointRegistry, settings: Settings) -> list[dg.JobDefinition]:
    """The four jobs of one company file (Settings.scoped names them, and its state store's key)."""
    tags = {"gestimum/trigger": "operator", COMPANY_FILE_TAG: tag_value(settings.company_file or "default")}
    state_key = settings.scoped("sync_state")
    RetryConfig, IgnoreConfig = operator_configs(endpoints)
    HistoryConfig = history_config(endpoints)

    @dg.op(name=settings.scoped("retry_rows"), tags=tags, required_resource_keys={state_key})
    def retry_rows(context: dg.OpExecutionContext, config: RetryConfig) -> None:
        _run(
            context,
            getattr(context.resources, state_key),
            endpoints,
            lambda store: operator.retry(
                store, endpoints, config.endpoint.value, config.source_keys, actor=config.actor, run_id=context.run_id
            ),
            settings,
        )

    @dg.op(name=settings.scoped("ignore_rows"), tags=tags, required_resource_keys={state_key})
    def ignore_rows(context: dg.OpExecutionContext, config: IgnoreConfig) -> None:
        _run(
            context,
            getattr(context.resources, state_key),
            endpoints,
            lambda store: operator.ignore(
                store,
                endpoints,
                config.endpoint.value,
                config.source_keys,
                actor=config.actor,
                note=config.note or None,
                run_id=context.run_id,
            ),
            settings,
        )

    @dg.op(name=settings.scoped("reconcile_rows"), tags=tags, required_resource_keys={state_key})
    def reconcile_rows(context: dg.OpExecutionContext, config: ReconcileConfig) -> None:
        _run(
            context,
            getattr(context.resources, state_key),
            endpoints,
            lambda store: operator.reconcile(
                store,
                endpoints,
                config.source_keys,
                actor=config.actor,
                delivered=config.delivered,
                document=config.document or None,
                run_id=context.run_id,
            ),
            settings,
        )

    @dg.op(name=settings.scoped("row_history"), tags=tags, required_resource_keys={state_key})
    def row_history(context: dg.OpExecutionContext, config: HistoryConfig) -> None:  # type: ignore[valid-type]
        store = getattr(context.resources, state_key).open(endpoints)
        try:
            story = history.row_history(store, endpoints, config.endpoint.value, config.source_key)
        finally:
            store.close()
        context.log.info(story.as_text())

    def job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
        @dg.job(name=settings.scoped(name), description=description, tags=tags, executor_def=dg.in_process_executor)
        def _job() -> None:
            op()

        return _job

    return [
        job(RETRY_JOB, retry_rows, "Re-queue rejected, held or ignored rows: the next sync sends them."),
        job(IGNORE_JOB, ignore_rows, "Ignore rows: not sent until the CRM row changes."),
        job(RECONCILE_JOB, reconcile_rows, "Settle stock movements in delivery_unknown after checking Gestimum."),
        job(HISTORY_JOB, row_history, "One row's whole story and its next step, in the run log (changes nothing)."),
    ]
