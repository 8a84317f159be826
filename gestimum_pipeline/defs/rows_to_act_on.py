"""The `rows_to_act_on` check on the preflight asset: one list, per company file, of every row
rejected, held or in delivery_unknown across the five endpoints, each with its next step
(sync/rows_to_act_on.py). It runs after the sinks of a sync (its additional deps), and every
operator job re-evaluates it after acting, so the list is current without waiting for a sync.
"""
# No `from __future__ import annotations`: Dagster reads the check's context type from its annotation.

import dagster as dg

from gestimum_pipeline.defs.assets import preflight_key, sink_key
from gestimum_pipeline.defs.checks import check_result
from gestimum_pipeline.defs.resources import SyncStateDatabase
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync.endpoints import EndpointRegistry
from gestimum_pipeline.sync.health import Finding
from gestimum_pipeline.sync.rows_to_act_on import CHECK_NAME, RUNBOOK, rows_to_act_on
from gestimum_pipeline.sync.state import StateStore, Status

DESCRIPTION = (
    "Every row of this company file to act on, across the five endpoints: rejected (by Gestimum, its words "
    "quoted, or by our validation), held for a parent, or in delivery_unknown. The `rows` table gives each "
    "row's key, status, reason, since when and its one next step: the operator job to launch with its config "
    "(operator_retry, operator_reconcile), or the CRM field to fix. Evaluated after the sinks of each sync and "
    f"again by every operator job. Runbook: {RUNBOOK} ('Rows to act on')."
)


def _severity(finding: Finding) -> dg.AssetCheckSeverity:
    # A movement whose delivery is unknown may be a document in Gestimum: never left as a warning.
    if finding.counts.get(Status.DELIVERY_UNKNOWN.value):
        return dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckSeverity.WARN


def evaluate(store: StateStore, endpoints: EndpointRegistry, settings: Settings) -> dg.AssetCheckResult:
    finding = rows_to_act_on(store, endpoints, job_name=settings.scoped)
    result = check_result(finding, _severity(finding), dg.AssetCheckKey(preflight_key(settings), CHECK_NAME))
    return result._replace(metadata={**result.metadata, "runbook": dg.MetadataValue.text(RUNBOOK)})


def evaluation(store: StateStore, endpoints: EndpointRegistry, settings: Settings) -> dg.AssetCheckEvaluation:
    """The check's evaluation as an event an operator job logs (it runs outside the asset graph)."""
    result = evaluate(store, endpoints, settings)
    return dg.AssetCheckEvaluation(
        asset_key=preflight_key(settings),
        check_name=CHECK_NAME,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
    )


def build_rows_to_act_on_check(settings: Settings, endpoints: EndpointRegistry) -> dg.AssetChecksDefinition:
    state_key = settings.scoped("sync_state")

    @dg.asset_check(
        asset=preflight_key(settings),
        name=CHECK_NAME,
        description=DESCRIPTION,
        # After every sink of the run: the list a sync leaves behind.
        additional_deps=[sink_key(name, settings) for name in endpoints.names],
        required_resource_keys={state_key},
    )
    def _rows_to_act_on(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        sync_state: SyncStateDatabase = getattr(context.resources, state_key)
        store = sync_state.open(endpoints)
        try:
            return evaluate(store, endpoints, settings)
        finally:
            store.close()

    return _rows_to_act_on
