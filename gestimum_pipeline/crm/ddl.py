"""Create the reference CRM schema (schema.sql) in a configurable schema."""

from __future__ import annotations

from importlib.resources import files

import psycopg2.extensions
from psycopg2 import sql

from gestimum_pipeline.crm.contract import DEFAULT_SCHEMA
from gestimum_pipeline.db import ident

# Serialises concurrent creators (parallel test workers, two Dagster processes):
# CREATE ... IF NOT EXISTS alone can still collide on the catalog.
_DDL_LOCK_KEY = "gestimum-pipeline:crm-reference-ddl"


# psql's quoted-identifier variable in schema.sql (`psql -v schema=crm -f schema.sql`).
PSQL_SCHEMA_VARIABLE = ':"schema"'


def reference_ddl_script() -> str:
    """schema.sql as shipped: a psql script (`:"schema"`, a few backslash commands)."""
    return files("gestimum_pipeline.crm").joinpath("schema.sql").read_text(encoding="utf-8")


def reference_ddl_template() -> str:
    """The reference DDL text, with a ``{schema}`` placeholder: schema.sql without its psql-only
    lines, its psql variable made a placeholder (the file holds no other braces)."""
    lines = [line for line in reference_ddl_script().splitlines() if not line.lstrip().startswith("\\")]
    return "\n".join(lines).replace(PSQL_SCHEMA_VARIABLE, "{schema}") + "\n"


def reference_ddl(schema: str = DEFAULT_SCHEMA) -> sql.Composed:
    """The reference DDL for `schema`, the name validated and quoted."""
    return sql.SQL(reference_ddl_template()).format(schema=ident(schema, "CRM schema"))


def create_reference_schema(conn: psycopg2.extensions.connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Create the schema, its four tables and their indexes unless they exist; commits.

    Idempotent. Existing relations are left as they are (even if they differ): use
    :func:`gestimum_pipeline.crm.contract.check_contract` to verify them.
    """
    ddl = reference_ddl(schema)
    autocommit = conn.autocommit
    if autocommit:
        conn.autocommit = False  # one transaction, so the advisory lock covers the whole DDL
    try:
        with conn, conn.cursor() as cur:  # `with conn` commits, or rolls back on error
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK_KEY,))
            cur.execute(ddl)
    finally:
        if autocommit:
            conn.autocommit = True


def holds_rows(conn: psycopg2.extensions.connection, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """The reference relations of `schema` that already hold rows (read-only)."""
    from gestimum_pipeline.crm.contract import RELATIONS

    found = []
    with conn.cursor() as cur:
        for name in RELATIONS:
            cur.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{})").format(ident(schema, "CRM schema"), sql.Identifier(name))
            )
            if cur.fetchone()[0]:
                found.append(name)
    conn.rollback()
    return found
