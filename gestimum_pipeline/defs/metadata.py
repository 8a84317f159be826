"""Metadata in the keys and types Dagster's catalog understands.

Column schemas (the CRM relations' columns, the Gestimum field codes), column lineage from
CRM columns to Gestimum field codes (derived from `sync/mapping.FIELD_SOURCES` and the
endpoint registry), row counts under `dagster/row_count` and `dagster/partition_row_count`,
and times as timestamp values.
"""

from __future__ import annotations

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
    """The row count of a materialization; one materialization per partition range, so the
    partition count is the same number (Dagster sums it over partitions where it can)."""
    return {"dagster/row_count": dg.MetadataValue.int(rows), "dagster/partition_row_count": dg.MetadataValue.int(rows)}


def table_name(schema: str, relation: str) -> dict[str, str]:
    """`dagster/table_name`: the relation the source reads, as `schema.relation` (the database
    name is left out: it lives in the CRM URL, a secret resolved only at run time)."""
    return {"dagster/table_name": f"{schema}.{relation}"}


def timestamp(value: datetime | None) -> dg.MetadataValue | None:
    return dg.MetadataValue.timestamp(value) if value is not None else None
