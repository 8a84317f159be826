"""The reference for small runs: a trivial Dagster job shaped like the sync (15 daily-partitioned
assets: one preflight, four sources, five transforms, five sinks) whose assets do nothing.

What a run of it costs through the command line is what Dagster itself costs; bench/small.py
compares the pipeline's small runs with it.
"""

from __future__ import annotations

import dagster as dg

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="Europe/Paris")
SOURCES = ("customers", "contacts", "stock_movements", "customer_item_references")
# endpoint -> (its source, its parent endpoint)
ENDPOINTS = {
    "comptes": ("customers", None),
    "clients": ("customers", "comptes"),
    "contacts": ("contacts", "clients"),
    "references_clients_articles": ("customer_item_references", "clients"),
    "documents_stock": ("stock_movements", None),
}


def _asset(key: list[str], deps: list[list[str]]) -> dg.AssetsDefinition:
    @dg.asset(key=key, deps=[dg.AssetKey(d) for d in deps], partitions_def=PARTITIONS)
    def _nothing() -> None:
        return None

    return _nothing


assets = [_asset(["sync", "preflight"], [])]
assets += [_asset(["crm", s], [["sync", "preflight"]]) for s in SOURCES]
for name, (source, parent) in ENDPOINTS.items():
    assets.append(_asset(["transform", name], [["crm", source]]))
    assets.append(_asset(["gestimum", name], [["transform", name]] + ([["gestimum", parent]] if parent else [])))

defs = dg.Definitions(assets=assets, executor=dg.in_process_executor)
