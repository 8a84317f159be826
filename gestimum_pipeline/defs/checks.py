"""Asset checks beside the sinks: what the state store says after each sync."""

import dagster as dg

from gestimum_pipeline.defs.assets import ENDPOINT_ORDER, sink_key
from gestimum_pipeline.defs.resources import SyncStateDatabase
from gestimum_pipeline.sync.state import STOCK_ENDPOINT


def build_state_check(endpoint: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=sink_key(endpoint),
        name="every_row_accounted_for",
        description="No row is left in flight, and no stock movement is in delivery_unknown; rejected and "
        "held rows are reported (warning) for the operator's quarantine (`gestimum-pipeline rejections`).",
    )
    def _check(sync_state: SyncStateDatabase) -> dg.AssetCheckResult:
        store = sync_state.open()
        try:
            counts = store.counts(endpoint).get(endpoint, {})
        finally:
            store.close()
        stuck = counts.get("in_flight", 0) + counts.get("delivery_unknown", 0)
        attention = counts.get("rejected", 0) + counts.get("held", 0)
        severity = dg.AssetCheckSeverity.ERROR if stuck else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(
            passed=stuck == 0 and attention == 0,
            severity=severity,
            metadata={
                status: counts.get(status, 0)
                for status in ("imported", "pending", "rejected", "held", "in_flight", "delivery_unknown", "ignored")
            },
            description=(
                "delivery_unknown stock movements need `gestimum-pipeline reconcile`"
                if endpoint == STOCK_ENDPOINT and counts.get("delivery_unknown")
                else None
            ),
        )

    return _check


state_checks = [build_state_check(e) for e in ENDPOINT_ORDER]
