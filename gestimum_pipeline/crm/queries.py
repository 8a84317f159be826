"""Streaming reads from the CRM: windows on the change column, and rows by key.

All functions take a raw psycopg2 connection that THE CALLER OWNS: open it with
:func:`gestimum_pipeline.db.connect`, keep it for this reader alone, and close it.
:func:`stream_window` uses a server-side (named) cursor, which lives inside the
connection's current transaction: the connection must not be in autocommit mode,
and nothing else may commit or roll it back while the iterator is being consumed.
For several reads that must agree (a count, then the rows), set the connection to
REPEATABLE READ so they share one snapshot.

Rows come back as tuples in ``RELATIONS[relation].columns`` order; a window is
``start <= change_column < end`` with time-zone-aware bounds.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from gestimum_pipeline.crm import contract
from gestimum_pipeline.crm.contract import Relation
from gestimum_pipeline.db import ident, text_array

DEFAULT_CHUNK_SIZE = 5000


def _aware(value: datetime, what: str) -> datetime:
    # A naive bound would be read in the session's TimeZone: windows would silently shift.
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a time-zone-aware datetime, got {value!r}")
    return value


def _window_bounds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    _aware(start, "window start")
    _aware(end, "window end")
    if end < start:
        raise ValueError(f"window end {end.isoformat()} is before its start {start.isoformat()}")
    return start, end


def _columns(rel: Relation) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in rel.columns)


def _table(schema: str, rel: Relation) -> sql.Composable:
    return sql.SQL("{}.{}").format(ident(schema, "CRM schema"), sql.Identifier(rel.name))


def _order(rel: Relation, order_by: Sequence[str] | None) -> sql.Composable:
    if isinstance(order_by, str):
        raise ValueError("order_by must be a sequence of column names, not a string")
    requested = tuple(order_by) if order_by else rel.key_columns
    unknown = [c for c in requested if c not in rel.columns]
    if unknown:
        raise ValueError(f"cannot order {rel.name} by {unknown}; columns: {', '.join(rel.columns)}")
    # Completed with the key so the order, hence the chunking, is deterministic.
    full = requested + tuple(c for c in rel.key_columns if c not in requested)
    return sql.SQL(", ").join(sql.Identifier(c) for c in full)


def stream_window(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    start: datetime,
    end: datetime,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    order_by: Sequence[str] | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """Yield the rows with ``start <= change_column < end`` in chunks of at most `chunk_size`.

    Ordered by `order_by` (default: the key), completed by the key. Uses a named
    cursor fetching `chunk_size` rows per round trip, so memory stays bounded
    whatever the window holds. The cursor is closed when the iterator is exhausted
    or closed; the transaction is left open for the caller to end.
    """
    rel = contract.relation(relation)
    start, end = _window_bounds(start, end)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if conn.autocommit:
        raise ValueError("stream_window needs a connection in a transaction (autocommit off) for its named cursor")
    query = sql.SQL("SELECT {columns} FROM {table} WHERE {change} >= %s AND {change} < %s ORDER BY {order}").format(
        columns=_columns(rel),
        table=_table(schema, rel),
        change=sql.Identifier(rel.change_column),
        order=_order(rel, order_by),
    )
    # Validation above runs at call time; the cursor opens on the first next().
    return _stream(conn, query, (start, end), rel.name, chunk_size)


def stream_keys(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    start: datetime,
    end: datetime,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[list[tuple[Any, ...]]]:
    """Yield the key columns of the rows with ``start <= change_column < end``, in chunks."""
    rel = contract.relation(relation)
    start, end = _window_bounds(start, end)
    query = sql.SQL("SELECT {keys} FROM {table} WHERE {change} >= %s AND {change} < %s ORDER BY {keys}").format(
        keys=sql.SQL(", ").join(sql.Identifier(c) for c in rel.key_columns),
        table=_table(schema, rel),
        change=sql.Identifier(rel.change_column),
    )
    return _stream(conn, query, (start, end), rel.name, chunk_size)


def existing_keys(conn: psycopg2.extensions.connection, schema: str, relation: str, keys: Sequence[str]) -> set[str]:
    """Which of `keys` (source keys of a single-column-key relation) still have a row in the CRM."""
    rel = contract.relation(relation)
    if len(rel.key_columns) != 1:
        raise ValueError(f"{rel.name} has a composite key: existing_keys needs a single key column")
    column = rel.key_columns[0]
    integer = contract.COLUMN_KINDS[rel.name][column] == contract.INTEGER_ID
    wanted: list[Any] = []
    for key in keys:
        if not integer:
            wanted.append(key)
        elif key.lstrip("-").isdigit():  # compared as bigint, so the key's index is used
            wanted.append(int(key))
    query = sql.SQL("SELECT {key}::text FROM {table} WHERE {key} = ANY(%s::{array})").format(
        key=sql.Identifier(column), table=_table(schema, rel), array=sql.SQL("bigint[]" if integer else "text[]")
    )
    with conn.cursor() as cur:
        # An array literal: the list psycopg2 would send is parsed element by element (db.text_array).
        cur.execute(query, (text_array([str(w) for w in wanted]),))
        return {k for (k,) in cur.fetchall()}


def existing_source_keys(
    conn: psycopg2.extensions.connection, schema: str, relation: str, keys: Sequence[str]
) -> set[str]:
    """Which of `keys` (source keys as the mapping writes them: the code, or a JSON list of the codes
    of a composite key) still have a row in the CRM; one indexed lookup per key."""
    rel = contract.relation(relation)
    if len(rel.key_columns) == 1:
        return existing_keys(conn, schema, relation, keys)
    wanted: list[str] = []
    parts: list[list[str]] = [[] for _ in rel.key_columns]
    for key in keys:
        try:
            codes = json.loads(key)
        except ValueError:
            continue  # not a key this relation's rows can have: reported as gone
        if isinstance(codes, list) and len(codes) == len(rel.key_columns):
            wanted.append(key)
            for column, code in zip(parts, codes, strict=True):
                column.append(str(code))
    names = [sql.Identifier(f"c{i}") for i in range(len(rel.key_columns))]
    query = sql.SQL(
        "SELECT k.key FROM unnest(%s::text[], {arrays}) AS k(key, {names}) "
        "WHERE EXISTS (SELECT 1 FROM {table} t WHERE {match})"
    ).format(
        arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in names),
        names=sql.SQL(", ").join(names),
        table=_table(schema, rel),
        match=sql.SQL(" AND ").join(
            sql.SQL("t.{} = k.{}").format(sql.Identifier(c), n) for c, n in zip(rel.key_columns, names, strict=True)
        ),
    )
    with conn.cursor() as cur:
        cur.execute(query, (text_array(wanted), *(text_array(p) for p in parts)))
        return {k for (k,) in cur.fetchall()}


def count_before(conn: psycopg2.extensions.connection, schema: str, relation: str, before: datetime) -> int:
    """How many rows changed before `before` (or with no change time: invisible to every window)."""
    rel = contract.relation(relation)
    query = sql.SQL("SELECT count(*) FROM {table} WHERE {change} < %s OR {change} IS NULL").format(
        table=_table(schema, rel), change=sql.Identifier(rel.change_column)
    )
    with conn.cursor() as cur:
        cur.execute(query, (_aware(before, "before"),))
        return int(cur.fetchone()[0])


def _stream(
    conn: psycopg2.extensions.connection,
    query: sql.Composable,
    params: tuple[Any, ...],
    name: str,
    chunk_size: int,
) -> Iterator[list[tuple[Any, ...]]]:
    # Unique per call: several windows may be streamed on one connection.
    cursor = conn.cursor(name=f"gestimum_{name}_{uuid.uuid4().hex[:12]}")
    cursor.itersize = chunk_size
    try:
        cursor.execute(query, params)
        while True:
            rows = cursor.fetchmany(chunk_size)
            if not rows:
                break
            yield rows
    finally:
        # Closing a named cursor after an error would fail on the aborted transaction.
        if not cursor.closed and conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            cursor.close()


def count_window(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    start: datetime,
    end: datetime,
) -> tuple[int, datetime | None]:
    """Return how many rows fall in ``[start, end)`` and their latest change time (None if none)."""
    rel = contract.relation(relation)
    start, end = _window_bounds(start, end)
    query = sql.SQL("SELECT count(*), max({change}) FROM {table} WHERE {change} >= %s AND {change} < %s").format(
        table=_table(schema, rel), change=sql.Identifier(rel.change_column)
    )
    with conn.cursor() as cur:
        cur.execute(query, (start, end))
        count, latest = cur.fetchone()
    return int(count), latest


def count_window_by_day(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    start: datetime,
    end: datetime,
    timezone: str,
) -> dict[str, tuple[int, datetime]]:
    """The rows in ``[start, end)`` per day of their change time in `timezone` (`YYYY-MM-DD`):
    how many, and the latest change time of each day."""
    rel = contract.relation(relation)
    start, end = _window_bounds(start, end)
    change = sql.Identifier(rel.change_column)
    query = sql.SQL(
        "SELECT to_char({change} AT TIME ZONE %s, 'YYYY-MM-DD') AS day, count(*), max({change}) FROM {table} "
        "WHERE {change} >= %s AND {change} < %s GROUP BY day"
    ).format(table=_table(schema, rel), change=change)
    with conn.cursor() as cur:
        cur.execute(query, (timezone, start, end))
        return {day: (int(count), latest) for day, count, latest in cur.fetchall()}


# Relation kinds whose rows carry system columns (xmin, ctid): tables, partitioned
# tables, materialized views. Plain views have none: their windows are always read.
_SIGNED_KINDS = ("r", "p", "m")


def snapshot_version(conn: psycopg2.extensions.connection) -> Decimal:
    """The order of the caller's snapshot among the CRM's snapshots: a later read is at least as new.

    The version of every row a transform stages is the snapshot it was read in (issue 18):
    a row's own timestamps cannot order versions (`updated_at = now()` is the writing
    transaction's start, not its commit; a stock movement's `moved_at` never moves; a view may
    have neither). A snapshot taken later sees every commit an earlier one saw: its `xmax`
    (the first transaction id not yet completed, 64-bit, never wrapping) is at least as
    large, and with an equal `xmax` it has no more transactions in progress. Hence
    `xmax * 10^6 + (10^6 - 1 - in progress)`: larger means newer or equal, for every row.
    Read it in the REPEATABLE READ transaction that reads the rows (their snapshot).
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT txid_snapshot_xmax(s)::numeric * 1000000"
            " + (999999 - least((SELECT count(*) FROM txid_snapshot_xip(s)), 999999))"
            " FROM txid_current_snapshot() AS s"
        )
        return Decimal(cur.fetchone()[0])


def window_signature(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    start: datetime,
    end: datetime,
) -> tuple[int, Decimal] | None:
    """(row count, sum of a hash of each row's version) for ``[start, end)``, or None for a view.

    Any insert, update (whatever it does to the change column) or move of a row in the
    window gives the row a new version (xmin, ctid), hence another signature: equal
    signatures mean the window holds exactly the row versions it held. Computed in the
    caller's transaction: read it and then the rows under REPEATABLE READ so both agree.
    """
    signatures = window_signatures(conn, schema, relation, [(start, end)])
    return None if signatures is None else signatures[0]


def window_signatures(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    windows: Sequence[tuple[datetime, datetime]],
) -> list[tuple[int, Decimal]] | None:
    """`window_signature` of each window, in one query (one index range scan each); None for a view."""
    rel = contract.relation(relation)
    bounds = [_window_bounds(start, end) for start, end in windows]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, rel.name),
        )
        found = cur.fetchone()
        if found is None or found[0] not in _SIGNED_KINDS:
            return None
        if not bounds:
            return []
        cur.execute(
            sql.SQL(
                "SELECT w.i, count(t.ctid), coalesce(sum(hashtextextended(t.xmin::text || ':' || t.ctid::text, 0)), 0)"
                " FROM unnest(%s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY AS w(s, e, i)"
                " LEFT JOIN {table} t ON t.{change} >= w.s AND t.{change} < w.e GROUP BY w.i"
            ).format(table=_table(schema, rel), change=sql.Identifier(rel.change_column)),
            ([s for s, _ in bounds], [e for _, e in bounds]),
        )
        found_by_window = {int(i): (int(n), Decimal(v)) for i, n, v in cur.fetchall()}
    return [found_by_window[i] for i in range(1, len(bounds) + 1)]


def _normalize_keys(rel: Relation, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
    width = len(rel.key_columns)
    seen: set[tuple[Any, ...]] = set()
    unique: list[tuple[Any, ...]] = []
    for key in keys:
        # A bare value is accepted for single-column keys: fetch_by_keys(..., ["C1", "C2"]).
        key_tuple = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        if len(key_tuple) != width:
            raise ValueError(f"{rel.name} keys have {width} column(s) ({', '.join(rel.key_columns)}), got {key!r}")
        if key_tuple not in seen:
            seen.add(key_tuple)
            unique.append(key_tuple)
    return unique


def fetch_by_keys(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    keys: Sequence[Any],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[list[tuple[Any, ...]]]:
    """Yield the rows whose primary key is in `keys`, in chunks of at most `chunk_size` keys.

    Keys are tuples in ``key_columns`` order (a bare value will do for one-column
    keys); duplicates are dropped, unknown keys simply return nothing. Within a
    chunk rows are ordered by key. Each chunk is one query joining the key arrays
    (``unnest``), so a chunk costs one round trip whatever its size.
    """
    rel = contract.relation(relation)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    unique = _normalize_keys(rel, keys)
    key_columns = sql.SQL(", ").join(sql.Identifier(c) for c in rel.key_columns)
    query = sql.SQL("SELECT {columns} FROM {table} WHERE ({keys}) IN (SELECT * FROM unnest({arrays})) ORDER BY {keys}")
    query = query.format(
        columns=_columns(rel),
        table=_table(schema, rel),
        keys=key_columns,
        arrays=sql.SQL(", ").join(sql.Placeholder() for _ in rel.key_columns),
    )
    return _fetch_chunks(conn, query, unique, chunk_size)


def _fetch_chunks(
    conn: psycopg2.extensions.connection,
    query: sql.Composable,
    keys: list[tuple[Any, ...]],
    chunk_size: int,
) -> Iterator[list[tuple[Any, ...]]]:
    iterator = iter(keys)
    while chunk := list(itertools.islice(iterator, chunk_size)):
        arrays = [list(column) for column in zip(*chunk, strict=True)]
        with conn.cursor() as cur:
            cur.execute(query, arrays)
            rows = cur.fetchall()  # bounded: at most one row per key of this chunk
        if rows:
            yield rows


def rows_in_windows(
    conn: psycopg2.extensions.connection,
    schema: str,
    relation: str,
    windows: Sequence[tuple[datetime, datetime]],
    *,
    limit: int,
) -> tuple[int, list[tuple[Any, ...]], datetime | None, datetime | None]:
    """(how many rows changed inside any of the disjoint `windows`, the key columns of the first
    `limit` of them by change time, the first and the last change time). One index range scan
    per window: cheap when the windows hold few rows, whatever their length."""
    rel = contract.relation(relation)
    bounds = [_window_bounds(start, end) for start, end in windows]
    if not bounds:
        return 0, [], None, None
    params = ([s for s, _ in bounds], [e for _, e in bounds])
    change = sql.Identifier(rel.change_column)
    joined = sql.SQL(
        "FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS w(s, e)"
        " JOIN {table} t ON t.{change} >= w.s AND t.{change} < w.e"
    ).format(table=_table(schema, rel), change=change)
    with conn.cursor() as cur:
        totals = sql.SQL("SELECT count(*), min(t.{change}), max(t.{change}) ").format(change=change)
        cur.execute(totals + joined, params)
        count, first, last = cur.fetchone()
        keys: list[tuple[Any, ...]] = []
        if count:
            cur.execute(
                sql.SQL("SELECT {keys} ").format(
                    keys=sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in rel.key_columns)
                )
                + joined
                + sql.SQL(" ORDER BY t.{change} LIMIT %s").format(change=change),
                (*params, limit),
            )
            keys = list(cur.fetchall())
    return int(count), keys, first, last
