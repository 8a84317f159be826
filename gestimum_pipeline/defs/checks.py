"""Asset checks beside the sinks: what the state store says after each sync.

The checks that must run inside their asset (Gestimum's statistics on each sink, the source
contract on each source) are declared with the assets in `assets.py`; these read the state
store, so they can also be re-run on their own from the UI.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import dagster as dg

from gestimum_pipeline.defs.assets import sink_key
from gestimum_pipeline.defs.resources import CrmDatabase, GestimumApi, SyncOptions, SyncStateDatabase
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync import health
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry
from gestimum_pipeline.sync.state import StateStore

TABLE_COLUMN_TYPES = {
    "source_key": "string",
    "reason": "string",
    "rejected_by": "string",
    "since": "string",
    "document": "string",
}


def check_result(
    finding: health.Finding, severity: dg.AssetCheckSeverity, key: dg.AssetCheckKey | None = None
) -> dg.AssetCheckResult:
    metadata: dict[str, object] = {k: dg.MetadataValue.int(v) for k, v in finding.counts.items()}
    metadata["summary"] = dg.MetadataValue.text(finding.summary)
    if finding.rows:
        columns = list(finding.rows[0])
        metadata["rows"] = dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in finding.rows],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, TABLE_COLUMN_TYPES.get(c, "string")) for c in columns]),
        )
    return dg.AssetCheckResult(
        passed=finding.passed,
        severity=severity,
        description=finding.summary,
        metadata=metadata,
        asset_key=key.asset_key if key else None,
        check_name=key.name if key else None,
    )


@dataclass
class _Inputs:
    """What a sink's state-store checks read: its store, and (the coverage check only) the CRM."""

    endpoint: str
    store: StateStore
    crm: CrmDatabase
    gestimum: GestimumApi  # its line format only: the check maps rows as the transform does
    sync_options: SyncOptions


@dataclass(frozen=True)
class _StateCheck:
    name: str
    description: str
    severity: dg.AssetCheckSeverity
    evaluate: Callable[[_Inputs], health.Finding]


def _coverage(endpoint: str, settings: Settings, endpoints: EndpointRegistry) -> Callable[[_Inputs], health.Finding]:
    """CRM rows changed inside windows already synced, missing from the state store."""
    spec = endpoints.get(endpoint)
    not_before = datetime.combine(date.fromisoformat(settings.start_date), time(), ZoneInfo(settings.timezone))

    def evaluate(inputs: _Inputs) -> health.Finding:
        # The transform's own mapping, so the versions compared are the lines it would stage.
        mapper = spec.make_mapper(inputs.gestimum.line_format().encoder(), inputs.sync_options.account_prefix)
        conn = inputs.crm.connect()
        try:
            schema = inputs.crm.checked_schema([spec.relation])
            return health.crm_coverage(
                inputs.store, conn, schema, endpoint, spec.relation, mapper, not_before=not_before
            )
        finally:
            conn.close()

    return evaluate


def _deleted(endpoint: str, endpoints: EndpointRegistry) -> Callable[[_Inputs], health.Finding]:
    """Imported rows whose CRM row is gone (health.deleted_after_import)."""
    relation = endpoints.get(endpoint).relation

    def evaluate(inputs: _Inputs) -> health.Finding:
        conn = inputs.crm.connect()
        try:
            schema = inputs.crm.checked_schema([relation])
            return health.deleted_after_import(inputs.store, conn, schema, endpoint, relation)
        finally:
            conn.close()

    return evaluate


def _sink_state_checks(
    endpoint: str, max_waiting_minutes: float, endpoints: EndpointRegistry, settings: Settings
) -> list[_StateCheck]:
    warn, error = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR
    checks = [
        _StateCheck(
            "no_rejected_lines",
            "Warns while rows of this endpoint are rejected, by Gestimum or by our validation; the rejections "
            "(source key, reason) are in the metadata. A rejected row was not imported: every run reads it again "
            "from the CRM, so fixing it there sends it at the next run; `gestimum-pipeline retry` re-queues one "
            "whose cause was fixed in Gestimum.",
            warn,
            lambda i: health.rejections(i.store, i.endpoint, endpoints.get(i.endpoint).relation),
        ),
        _StateCheck(
            "no_rows_waiting_too_long",
            f"Warns when rows have been pending, held for their parent, or in flight for more than "
            f"{max_waiting_minutes:g} minutes (GESTIMUM_MAX_WAITING_MINUTES).",
            warn,
            lambda i: health.waiting_too_long(i.store, i.endpoint, max_age_seconds=max_waiting_minutes * 60),
        ),
    ]
    if endpoints.creates_documents(endpoint):
        checks.append(
            _StateCheck(
                "no_movement_changed_after_sending",
                "Warns while stock movements already sent (imported, or in delivery_unknown) were edited in the CRM "
                "since: they are never re-sent (that would create another document); restore the CRM row or "
                "correct the document in Gestimum.",
                warn,
                lambda i: health.stock_diverged(i.store, i.endpoint),
            )
        )
        checks.append(
            _StateCheck(
                "no_delivery_unknown",
                "Fails while stock movements are in delivery_unknown: they may or may not be documents in "
                "Gestimum, are never re-sent on their own, and need `gestimum-pipeline reconcile`.",
                error,
                lambda i: health.delivery_unknown(i.store, i.endpoint),
            )
        )
    checks.append(
        _StateCheck(
            "no_crm_row_deleted_after_import",
            f"Warns while rows Gestimum imported are gone from `{endpoints.get(endpoint).relation}` in the CRM: "
            "Gestimum's import cannot delete, so someone removes them in Gestimum, then marks them handled with "
            "`gestimum-pipeline ignore`; the rows (key, document, imported since) are in the metadata.",
            warn,
            _deleted(endpoint, endpoints),
        )
    )
    checks.append(
        _StateCheck(
            "crm_rows_in_state_store",
            f"Fails when a `{endpoints.get(endpoint).relation}` row changed since GESTIMUM_SYNC_START_DATE is not "
            "in the state store in its CRM version: a day no run synced, a row missing from a window synced, "
            "or a version never staged (an edit after staging or sending); shows how many rows changed before "
            "the start date.",
            error,
            _coverage(endpoint, settings, endpoints),
        )
    )
    return checks


def build_state_checks(
    endpoint: str,
    max_waiting_minutes: float,
    endpoints: EndpointRegistry = ENDPOINTS,
    settings: Settings | None = None,
) -> list[dg.AssetChecksDefinition]:
    """The sink's state-store checks, evaluated in one step on one store connection (a step per
    check cost a run more than the checks did); each can still be run alone from the UI."""
    settings = settings or Settings()
    checks = _sink_state_checks(endpoint, max_waiting_minutes, endpoints, settings)
    asset = sink_key(endpoint, settings)
    keys = {name: settings.scoped(name) for name in ("crm", "gestimum", "sync_state", "sync_options")}  # its own

    @dg.multi_asset_check(
        name=settings.scoped(f"{endpoint}_state_checks"),
        specs=[dg.AssetCheckSpec(c.name, asset=asset, description=c.description) for c in checks],
        can_subset=True,
        required_resource_keys=set(keys.values()),
    )
    def _checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        sync_state: SyncStateDatabase = getattr(context.resources, keys["sync_state"])
        store = sync_state.open(endpoints)
        inputs = _Inputs(
            endpoint,
            store,
            getattr(context.resources, keys["crm"]),
            getattr(context.resources, keys["gestimum"]),
            getattr(context.resources, keys["sync_options"]),
        )
        try:
            for check in checks:
                key = dg.AssetCheckKey(asset, check.name)
                if key in context.selected_asset_check_keys:
                    yield check_result(check.evaluate(inputs), check.severity, key)
        finally:
            store.close()

    return [_checks]


def build_all_state_checks(settings: Settings, endpoints: EndpointRegistry) -> list[dg.AssetChecksDefinition]:
    return [
        c
        for name in endpoints.names
        for c in build_state_checks(name, settings.max_waiting_minutes, endpoints, settings)
    ]
