"""Re-reads from the CRM, by key, the rows rejected and those an operator re-queued.

A row Gestimum refused line by line was provably not imported: once its CRM row is fixed
(the warehouse of a stock movement, the customer of a contact) the corrected line must be
sent by the next run, with no operator step, even when the fix does not move the row's
change time (a stock movement's `moved_at` never moves, so no window reads it again). The
same holds for a row our validation refused.
`gestimum-pipeline retry` re-queues a row the same way: it is staged again from the CRM's
current row before it is sent, never with its stale line. One query by key per chunk:
cheap, as only rejected and re-queued rows are read (the cost is per rejected row, at
every run of the endpoint's transform).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg2.extensions

from gestimum_pipeline.crm import contract
from gestimum_pipeline.crm.queries import fetch_by_keys, snapshot_version
from gestimum_pipeline.sync.endpoints import EndpointSpec
from gestimum_pipeline.sync.ledger_reads import keys_to_refresh
from gestimum_pipeline.sync.mapping import Mapper
from gestimum_pipeline.sync.state import StageCounts, StateStore, Status


def _key_columns(rel: contract.Relation, key: str) -> tuple[Any, ...] | None:
    """The key columns of a source key (a JSON list for a composite key), None if it cannot be one."""
    values: list[Any] = json.loads(key) if len(rel.key_columns) > 1 else [key]
    if len(values) != len(rel.key_columns):
        return None
    typed: list[Any] = []
    for column, value in zip(rel.key_columns, values, strict=True):
        if contract.COLUMN_KINDS[rel.name][column] == contract.INTEGER_ID:
            if not str(value).lstrip("-").isdigit():
                return None
            value = int(value)
        typed.append(value)
    return tuple(typed)


def refresh_from_crm(
    *,
    crm_connect: Callable[[], Any],
    crm_schema: str,
    state: StateStore,
    spec: EndpointSpec,
    mapper: Mapper,
    partition: str | None,
    run_id: str | None,
    chunk_size: int = 5000,
    day_of: Callable[[Any], str | None] | None = None,
) -> StageCounts:
    """Stages again, from the CRM's current rows, the endpoint's rejected rows and those
    re-queued by an operator; a changed row becomes pending with its new line. Returns the counts."""
    total = StageCounts(0, 0, 0)
    # The kept counts first (exact, independent of the table's size): most runs have nothing.
    counts = state.counts(spec.name).get(spec.name, {})
    if not counts.get(Status.REJECTED) and not counts.get(Status.PENDING):
        return total
    keys = keys_to_refresh(state, spec.name)
    if not keys:
        return total
    rel = contract.relation(spec.relation)
    wanted = [k for k in (_key_columns(rel, key) for key in keys) if k is not None]
    conn = crm_connect()
    try:
        # One snapshot for every chunk, and its order among the CRM's: the version of the rows
        # read (a staging from an older snapshot never replaces them, nor they a newer one).
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
        version = snapshot_version(conn)
        for rows in fetch_by_keys(conn, crm_schema, spec.relation, wanted, chunk_size=chunk_size):
            mapped = []
            # A key repeated by a CRM view stays with the window's rejection of every copy.
            repeated = {k for k, n in Counter(mapper.key_of(r) for r in rows).items() if n > 1}
            for row in rows:
                if mapper.key_of(row) in repeated:
                    continue
                if contract.row_problems(rel, row):
                    continue  # the window's own staging rejects it with the reason
                try:
                    mapped.append(mapper.map(row))
                except (TypeError, ValueError, ArithmeticError, AttributeError):
                    continue
            days = None
            if day_of is not None:  # each row under the day of its change time (per-day figures)
                change = rel.columns.index(rel.change_column)
                days = {mapper.key_of(r): day_of(r[change]) for r in rows}
            counts = state.stage(
                spec.name, mapped, partition=partition, run_id=run_id, source_version=version, days=days
            )
            total = StageCounts(
                total.staged + counts.staged,
                total.rejected + counts.rejected,
                total.unchanged + counts.unchanged,
                total.skipped + counts.skipped,
            )
        conn.rollback()
    finally:
        conn.close()
    return total
