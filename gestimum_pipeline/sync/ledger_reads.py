"""What the state store holds of each key: the version a transform staged last, for the
coverage check's content comparison.

A read of its own, beside `sync/state.py` (kept out of the store's class while it is split
into a package): one query over the records' primary key, for one chunk of keys at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from psycopg2 import sql

from gestimum_pipeline.sync.state import StateStore, text_array

# The version staged last (`content_hash`), and what a sink did with it. A stock movement in an
# open request keeps the version sent; `status` is the record's own (an open request shows as
# `pending` or `rejected` here, as in the records table).
STAGED_VERSIONS_SQL = """
SELECT r.source_key, r.content_hash, r.status, r.reason_source, r.document
FROM {schema}.records r
WHERE r.endpoint = %(endpoint)s AND r.source_key = ANY(%(keys)s::text[])
"""


class StagedVersion(NamedTuple):
    content_hash: str | None
    status: str
    reason_source: str | None
    document: str | None


def staged_versions(store: StateStore, endpoint: str, keys: Sequence[str]) -> dict[str, StagedVersion]:
    """{source key: the version staged last} for those of `keys` the store holds."""
    if not keys:
        return {}
    conn = store.conn
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(STAGED_VERSIONS_SQL).format(schema=sql.Identifier(store.schema)),
            {"endpoint": endpoint, "keys": text_array(keys)},
        )
        return {key: StagedVersion(h, status, source, document) for key, h, status, source, document in cur.fetchall()}


# Rows to read again from the CRM at every staging of their endpoint, whatever their window:
# those rejected, by Gestimum line by line or by our validation (provably not imported: a CRM
# fix must reach Gestimum even if it does not move the row's change time, as a stock
# movement's never does), and those an operator re-queued with `retry` (never sent with a
# stale line).
TO_REFRESH_SQL = """
SELECT r.source_key
FROM {schema}.records r
WHERE r.endpoint = %(endpoint)s
  AND (r.status = 'rejected' OR (r.status = 'pending' AND r.reason_source = 'operator'))
ORDER BY r.source_key
"""


def keys_to_refresh(store: StateStore, endpoint: str) -> list[str]:
    """The endpoint's rejected rows, and those an operator re-queued: read from the CRM again."""
    conn = store.conn
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL(TO_REFRESH_SQL).format(schema=sql.Identifier(store.schema)), {"endpoint": endpoint})
        return [key for (key,) in cur.fetchall()]
