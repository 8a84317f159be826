"""The source contract: the four relations the pipeline reads from the CRM.

They live in one configurable schema (default ``crm``). A CRM shaped differently
exposes views with these names and columns; extra columns are ignored. Tables,
views, materialized views, foreign and partitioned tables all qualify.

Change columns drive incremental reads and must be ``timestamptz``: a naive
``timestamp`` would be read in each session's time zone, so windows would drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg2.extensions

from gestimum_pipeline.db import validate_identifier


@dataclass(frozen=True)
class Relation:
    name: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]  # the order in which queries return them
    change_column: str  # `updated_at`, or `moved_at` for immutable stock movements

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.key_columns)


CUSTOMERS = Relation(
    name="customers",
    key_columns=("code",),
    columns=("code", "name", "street", "street2", "postal_code", "city", "email", "phone", "updated_at"),
    change_column="updated_at",
)
CONTACTS = Relation(
    name="contacts",
    key_columns=("code",),
    columns=("code", "customer_code", "last_name", "first_name", "email", "phone", "updated_at"),
    change_column="updated_at",
)
STOCK_MOVEMENTS = Relation(
    name="stock_movements",
    key_columns=("id",),
    columns=("id", "direction", "warehouse_code", "item_code", "quantity", "moved_at"),
    change_column="moved_at",
)
CUSTOMER_ITEM_REFERENCES = Relation(
    name="customer_item_references",
    key_columns=("customer_code", "item_code"),
    columns=("customer_code", "item_code", "customer_reference", "customer_price", "updated_at"),
    change_column="updated_at",
)

RELATIONS: dict[str, Relation] = {r.name: r for r in (CUSTOMERS, CONTACTS, STOCK_MOVEMENTS, CUSTOMER_ITEM_REFERENCES)}

# What each column must hold. A view exposing another type (a bytea name, a boolean, a
# float or uuid id) is refused by the contract check before anything is read; the same
# kinds are checked on every value read, so a row that slips through is rejected locally,
# naming its record and field, instead of reaching Gestimum as str() of something else.
TEXT, NUMBER, INTEGER_ID, TIMESTAMPTZ = "text", "number", "integer id", "timestamptz"
COLUMN_KINDS: dict[str, dict[str, str]] = {
    "customers": {
        **dict.fromkeys(("code", "name", "street", "street2", "postal_code", "city", "email", "phone"), TEXT),
        "updated_at": TIMESTAMPTZ,
    },
    "contacts": {
        **dict.fromkeys(("code", "customer_code", "last_name", "first_name", "email", "phone"), TEXT),
        "updated_at": TIMESTAMPTZ,
    },
    "stock_movements": {
        "id": INTEGER_ID,
        **dict.fromkeys(("direction", "warehouse_code", "item_code"), TEXT),
        "quantity": NUMBER,
        "moved_at": TIMESTAMPTZ,
    },
    "customer_item_references": {
        **dict.fromkeys(("customer_code", "item_code", "customer_reference"), TEXT),
        "customer_price": NUMBER,
        "updated_at": TIMESTAMPTZ,
    },
}
# Columns that must hold a value (a view cannot declare NOT NULL: checked on each row): the
# keys and change columns. Values Gestimum requires (a name, a parent code) are the mapper's
# rules, whose rejections name Gestimum's field.
NOT_NULL: dict[str, frozenset[str]] = {
    name: frozenset({*rel.key_columns, rel.change_column}) for name, rel in RELATIONS.items()
}
# PostgreSQL types (format_type, without modifiers) each kind accepts.
_KIND_TYPES: dict[str, tuple[str, ...]] = {
    TEXT: ("text", "character varying", "character", "citext", "name"),
    NUMBER: ("numeric", "smallint", "integer", "bigint"),
    INTEGER_ID: ("smallint", "integer", "bigint"),
    TIMESTAMPTZ: ("timestamp with time zone",),
}
_CASTS = {TEXT: "::text", NUMBER: "::numeric", INTEGER_ID: "::bigint", TIMESTAMPTZ: "::timestamptz"}
_BIGINT = 2**63


def value_problem(kind: str, value: object, required: bool) -> str | None:
    """Why `value` does not fit a column of `kind` (None if it does). Never quotes the value itself."""
    if value is None:
        return "is NULL, and the source contract requires a value" if required else None
    if kind == TEXT:
        ok = isinstance(value, str)
    elif kind == NUMBER:
        ok = isinstance(value, (int, Decimal)) and not isinstance(value, bool)
    elif kind == INTEGER_ID:
        ok = isinstance(value, int) and not isinstance(value, bool) and -_BIGINT <= value < _BIGINT
        if isinstance(value, int) and not isinstance(value, bool) and not ok:
            return "is outside the range of a bigint"
    else:
        ok = isinstance(value, datetime) and value.tzinfo is not None
    return None if ok else f"holds a {type(value).__name__}, not the {kind} the source contract requires"


def row_problems(rel: Relation, row: Sequence[object]) -> list[tuple[str, str]]:
    """(column, problem) for each value of `row` (contract column order) that breaks the contract."""
    kinds = COLUMN_KINDS[rel.name]
    required = NOT_NULL[rel.name]
    out: list[tuple[str, str]] = []
    for column, value in zip(rel.columns, row, strict=False):
        problem = value_problem(kinds[column], value, column in required)
        if problem is not None:
            out.append((column, problem))
    return out


# Stock movement directions as the CRM writes them.
DIRECTION_IN = "in"
DIRECTION_OUT = "out"
DIRECTIONS = (DIRECTION_IN, DIRECTION_OUT)

DEFAULT_SCHEMA = "crm"

# relkind: table, view, materialized view, foreign table, partitioned table.
_RELKINDS = ("r", "v", "m", "f", "p")


def relation(name: str) -> Relation:
    try:
        return RELATIONS[name]
    except KeyError:
        raise ValueError(f"unknown CRM relation {name!r}; known: {', '.join(RELATIONS)}") from None


def check_contract(
    conn: psycopg2.extensions.connection, schema: str = DEFAULT_SCHEMA, relations: Sequence[str] | None = None
) -> list[str]:
    """Return the problems that keep `schema` from meeting the contract; empty when it does.

    `relations` limits the check to those relations of the contract (default: all four).

    Reports a missing schema, relation or column, a change column that is not
    ``timestamptz``, and a relation the current user may not SELECT. Reads the
    catalog (not information_schema, which hides materialized views); runs one
    query and leaves the transaction state to the caller.
    """
    validate_identifier(schema, "CRM schema")
    checked = [relation(name) for name in relations] if relations is not None else list(RELATIONS.values())
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            return [f"schema {schema!r} does not exist (expected relations: {', '.join(r.name for r in checked)})"]
        cur.execute(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                   has_table_privilege(c.oid, 'SELECT')
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = ANY(%s)
            """,
            (schema, [r.name for r in checked], list(_RELKINDS)),
        )
        found: dict[str, dict[str, str]] = {}
        readable: dict[str, bool] = {}
        for relname, column, type_name, can_select in cur.fetchall():
            found.setdefault(relname, {})
            readable[relname] = can_select
            if column is not None:
                found[relname][column] = type_name

    problems: list[str] = []
    for rel in checked:
        if rel.name not in found:
            problems.append(f"{schema}.{rel.name} does not exist (needs columns: {', '.join(rel.columns)})")
            continue
        columns = found[rel.name]
        missing = [c for c in rel.columns if c not in columns]
        if missing:
            problems.append(f"{schema}.{rel.name} lacks column(s): {', '.join(missing)}")
        change_type = columns.get(rel.change_column)
        if change_type is not None and change_type != "timestamp with time zone":
            problems.append(
                f"{schema}.{rel.name}.{rel.change_column} must be timestamptz, not {change_type} "
                f"(convert it in the view, e.g. {rel.change_column} AT TIME ZONE 'Europe/Paris')"
            )
        for column, kind in COLUMN_KINDS[rel.name].items():
            type_name = columns.get(column)
            if column == rel.change_column or type_name is None:
                continue
            base = type_name.split("(")[0].strip()
            if base not in _KIND_TYPES[kind]:
                problems.append(
                    f"{schema}.{rel.name}.{column} must be {kind} ({', '.join(_KIND_TYPES[kind])}), not {type_name} "
                    f"(cast it in the view, e.g. {column}{_CASTS[kind]})"
                )
        if not readable.get(rel.name, True):
            problems.append(f"{schema}.{rel.name} is not readable by the current user (GRANT SELECT)")
    return problems
