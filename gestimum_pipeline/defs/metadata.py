"""Metadata in the keys and types Dagster's catalog understands.

Column schemas (the CRM relations' columns, the Gestimum field codes), column lineage from
CRM columns to Gestimum field codes (derived from `sync/mapping.FIELD_SOURCES` and the
endpoint registry), row counts under `dagster/row_count` and `dagster/partition_row_count`,
and times as timestamp values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import dagster as dg

from gestimum_pipeline.crm.contract import RELATIONS
from gestimum_pipeline.gestimum.catalog import Endpoint, FieldKind
from gestimum_pipeline.sync.endpoints import EndpointSpec
from gestimum_pipeline.sync.mapping import FIELD_SOURCES

# Column types as the reference schema (crm/schema.sql) declares them; the contract itself
# only requires the change columns to be timestamptz, so a CRM's views may differ elsewhere.
_CRM_TYPES = {"id": "bigint", "quantity": "numeric", "customer_price": "numeric"}
_TIMESTAMP_COLUMNS = {"updated_at", "moved_at"}

# Asset tags (filterable in the catalog) and run tags.
ENDPOINT_TAG = "gestimum/endpoint"
COMPANY_FILE_TAG = "gestimum/company_file"
TRIGGER_TAG = "gestimum/trigger"


ASSET_GRAPH_TRIGGER = "asset_graph"  # launched from the asset graph or `dg launch --assets`
BACKFILL_TAG = "dagster/backfill"


def company_file_tag(company_file: str) -> str:
    return tag_value(company_file or "default")


def missing_run_tags(run_tags: Mapping[str, str], company_file: str) -> dict[str, str]:
    """The tags a run of the sync's assets lacks to read like a `gestimum_sync` run: its company
    file, and what triggered it (a run of Dagster's own asset job: the asset graph or a backfill)."""
    missing: dict[str, str] = {}
    if COMPANY_FILE_TAG not in run_tags:
        missing[COMPANY_FILE_TAG] = company_file_tag(company_file)
    if TRIGGER_TAG not in run_tags:
        missing[TRIGGER_TAG] = "backfill" if BACKFILL_TAG in run_tags else ASSET_GRAPH_TRIGGER
    return missing


def tag_value(text: str) -> str:
    """A value Dagster accepts as a tag (letters, digits, `-_.`, at most 63 characters)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.strip())
    return cleaned[:63]


def crm_column_schema(relation: str) -> dg.TableSchema:
    rel = RELATIONS[relation]
    columns = []
    for name in rel.columns:
        kind = "timestamptz" if name in _TIMESTAMP_COLUMNS else _CRM_TYPES.get(name, "text")
        role = "key" if name in rel.key_columns else ("change time" if name == rel.change_column else "")
        columns.append(
            dg.TableColumn(
                name,
                kind,
                description=role or None,
                constraints=dg.TableColumnConstraints(nullable=name not in rel.key_columns and role == ""),
            )
        )
    return dg.TableSchema(columns=columns)


def gestimum_column_schema(endpoint: Endpoint) -> dg.TableSchema:
    """The endpoint's field codes, in the order its lines carry them."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.code,
                "decimal" if f.kind is FieldKind.DECIMAL else "text",
                description=f"at most {f.max_length} characters" if f.max_length else None,
                constraints=dg.TableColumnConstraints(nullable=not f.required),
            )
            for f in endpoint.fields
        ]
    )


def column_lineage(spec: EndpointSpec, source: dg.AssetKey) -> dg.TableColumnLineage:
    """Each Gestimum field code of `spec` from the CRM columns of `source` it is computed from
    (empty for an endpoint not in FIELD_SOURCES: a new endpoint shows no lineage until added)."""
    return dg.TableColumnLineage(
        deps_by_column={
            field_code: [dg.TableColumnDep(asset_key=source, column_name=column) for column in columns]
            for field_code, columns in FIELD_SOURCES.get(spec.name, {}).items()
            if columns
        }
    )


def row_counts(rows: int) -> dict[str, Any]:
    """The row count of one partition's materialization: its own rows (record_per_partition)."""
    return {"dagster/row_count": dg.MetadataValue.int(rows), "dagster/partition_row_count": dg.MetadataValue.int(rows)}


def record_per_partition(
    context: dg.AssetExecutionContext,
    by_day: Mapping[str | None, Mapping[str, int]],
    figures: Sequence[str],
    *,
    row_figure: str,
    run_wide: Mapping[str, Any],
    day_extra: Callable[[str], Mapping[str, Any]] | None = None,
) -> None:
    """Records each partition's own figures on its own materialization, and the run's once.

    `by_day` holds the figures per day of each row's change time. Each partition of the run
    gets its day's `figures` (and its row counts from `row_figure`); the figures that cannot be
    split (`run_wide`: requests, durations, a request spans days) and the run's totals
    (`run_<figure>`; `run_other_days`: rows of days outside the run, from the look-back or
    re-staged) go once, on the run's last partition. Nothing is copied to every day, so a plot
    over partitions reads each day's own rows. The MaterializeResult must carry no figure: its
    metadata is copied to every partition of a range.
    """
    keys = list(context.partition_keys)
    in_run = set(keys)
    totals = {f: sum(int(day.get(f, 0)) for day in by_day.values()) for f in figures}
    other = {f: n for f in figures if (n := sum(int(day.get(f, 0)) for d, day in by_day.items() if d not in in_run))}
    for key in keys:
        day = by_day.get(key, {})
        metadata: dict[str, Any] = {f: int(day.get(f, 0)) for f in figures}
        metadata.update(row_counts(metadata[row_figure]))
        if day_extra is not None:
            metadata.update(day_extra(key))
        if key == keys[-1]:
            metadata["run_partitions"] = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
            metadata.update({f"run_{f}": n for f, n in totals.items()})
            metadata["run_other_days"] = dg.MetadataValue.json(other)
            metadata.update({k: v for k, v in run_wide.items() if v is not None})
        context.add_asset_metadata(metadata, partition_key=key)


def table_name(schema: str, relation: str) -> dict[str, str]:
    """`dagster/table_name`: the relation the source reads, as `schema.relation` (the database
    name is left out: it lives in the CRM URL, a secret resolved only at run time)."""
    return {"dagster/table_name": f"{schema}.{relation}"}


def timestamp(value: datetime | None) -> dg.MetadataValue | None:
    return dg.MetadataValue.timestamp(value) if value is not None else None
