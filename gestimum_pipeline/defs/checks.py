"""Asset checks beside the sinks: what the state store says after each sync.

The checks that must run inside their asset (Gestimum's statistics on each sink, the source
contract on each source) are declared with the assets in `assets.py`; these read the state
store, so they can also be re-run on their own from the UI.
"""

from collections.abc import Callable
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import dagster as dg

from gestimum_pipeline.defs.assets import sink_key
from gestimum_pipeline.defs.resources import CrmDatabase, SyncOptions, SyncStateDatabase
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.sync import health
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry
from gestimum_pipeline.sync.state import StateStore

TABLE_COLUMN_TYPES = {"source_key": "string", "reason": "string", "rejected_by": "string", "since": "string"}


def check_result(finding: health.Finding, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    metadata: dict[str, object] = {k: dg.MetadataValue.int(v) for k, v in finding.counts.items()}
    metadata["summary"] = dg.MetadataValue.text(finding.summary)
    if finding.rows:
        columns = list(finding.rows[0])
        metadata["rows"] = dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in finding.rows],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, TABLE_COLUMN_TYPES.get(c, "string")) for c in columns]),
        )
    return dg.AssetCheckResult(passed=finding.passed, severity=severity, description=finding.summary, metadata=metadata)


def _state_check(
    endpoint: str,
    name: str,
    description: str,
    severity: dg.AssetCheckSeverity,
    evaluate: Callable[[StateStore, str], health.Finding],
    endpoints: EndpointRegistry,
    settings: Settings,
) -> dg.AssetChecksDefinition:
    resource_key = settings.scoped("sync_state")  # the company file's own state store

    @dg.asset_check(
        asset=sink_key(endpoint, settings), name=name, description=description, required_resource_keys={resource_key}
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        sync_state: SyncStateDatabase = getattr(context.resources, resource_key)
        store = sync_state.open(endpoints)
        try:
            return check_result(evaluate(store, endpoint), severity)
        finally:
            store.close()

    return _check


def build_state_checks(
    endpoint: str,
    max_waiting_minutes: float,
    endpoints: EndpointRegistry = ENDPOINTS,
    settings: Settings | None = None,
) -> list[dg.AssetChecksDefinition]:
    settings = settings or Settings()
    checks = [
        _state_check(
            endpoint,
            "no_rejected_lines",
            "Warns while rows of this endpoint are rejected, by Gestimum or by our validation; the rejections "
            "(source key, reason) are in the metadata. Fixing a row in the CRM re-sends it (a stock movement "
            "rejected by Gestimum needs `gestimum-pipeline retry`).",
            dg.AssetCheckSeverity.WARN,
            health.rejections,
            endpoints,
            settings,
        ),
        _state_check(
            endpoint,
            "no_rows_waiting_too_long",
            f"Warns when rows have been pending, held for their parent, or in flight for more than "
            f"{max_waiting_minutes:g} minutes (GESTIMUM_MAX_WAITING_MINUTES).",
            dg.AssetCheckSeverity.WARN,
            lambda store, ep: health.waiting_too_long(store, ep, max_age_seconds=max_waiting_minutes * 60),
            endpoints,
            settings,
        ),
    ]
    if endpoints.creates_documents(endpoint):
        checks.append(
            _state_check(
                endpoint,
                "no_movement_changed_after_sending",
                "Warns while stock movements already sent were edited in the CRM since: they are never re-sent "
                "(that would create another document) and need a correction in Gestimum.",
                dg.AssetCheckSeverity.WARN,
                health.stock_diverged,
                endpoints,
                settings,
            )
        )
        checks.append(
            _state_check(
                endpoint,
                "no_delivery_unknown",
                "Fails while stock movements are in delivery_unknown: they may or may not be documents in "
                "Gestimum, are never re-sent on their own, and need `gestimum-pipeline reconcile`.",
                dg.AssetCheckSeverity.ERROR,
                health.delivery_unknown,
                endpoints,
                settings,
            )
        )
    return checks


def build_coverage_check(endpoint: str, settings: Settings, endpoints: EndpointRegistry) -> dg.AssetChecksDefinition:
    """Fails when CRM rows changed inside windows already synced are missing from the state store."""
    spec = endpoints.get(endpoint)
    not_before = datetime.combine(date.fromisoformat(settings.start_date), time(), ZoneInfo(settings.timezone))

    keys = {name: settings.scoped(name) for name in ("crm", "sync_state", "sync_options")}  # the company file's

    @dg.asset_check(
        asset=sink_key(endpoint, settings),
        name="crm_rows_in_state_store",
        description=f"Fails when `{spec.relation}` rows changed inside windows already synced are not in the state "
        "store (never read by any run); shows how many rows changed before GESTIMUM_SYNC_START_DATE.",
        required_resource_keys=set(keys.values()),
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        crm: CrmDatabase = getattr(context.resources, keys["crm"])
        sync_state: SyncStateDatabase = getattr(context.resources, keys["sync_state"])
        sync_options: SyncOptions = getattr(context.resources, keys["sync_options"])
        mapper = spec.make_mapper(LineFormat().encoder(), sync_options.account_prefix)  # only its keys are used
        store = sync_state.open(endpoints)
        conn = crm.connect()
        try:
            finding = health.crm_coverage(
                store, conn, crm.checked_schema([spec.relation]), endpoint, spec.relation, mapper, not_before=not_before
            )
            return check_result(finding, dg.AssetCheckSeverity.ERROR)
        finally:
            conn.close()
            store.close()

    return _check


def build_all_state_checks(settings: Settings, endpoints: EndpointRegistry) -> list[dg.AssetChecksDefinition]:
    return [
        *(
            c
            for name in endpoints.names
            for c in build_state_checks(name, settings.max_waiting_minutes, endpoints, settings)
        ),
        *(build_coverage_check(name, settings, endpoints) for name in endpoints.names),
    ]
