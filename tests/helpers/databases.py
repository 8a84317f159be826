"""Test databases: copies of a template, made in one statement instead of table by table."""

from __future__ import annotations

import uuid

from psycopg2 import sql

from gestimum_pipeline.db import connect, with_database

SETTING = "GESTIMUM_TEST_DATABASE_URL"


def copy_database(server_url: str, template: str, prefix: str, *, owner: str | None = None) -> str:
    """A new, uniquely named database copied from `template` (which must have no session); its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    if owner:
        query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    conn = connect(server_url, SETTING, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
    finally:
        conn.close()
    return with_database(server_url, name)


def init_state_store(url: str, schema: str | None = None) -> None:
    """Creates the state store in a test database, as a deployment does once (`state init`).

    Without an owner: the first sink (or preflight) claims it for the simulator it talks to.
    """
    from gestimum_pipeline.sync.state import StateStore

    with StateStore(url) if schema is None else StateStore(url, schema) as store:
        store.migrate()
