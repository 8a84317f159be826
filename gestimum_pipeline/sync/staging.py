"""Staging, as plain Python: stream CRM rows for a time window, map and validate them, and
record them in the state store (the transform assets are thin wrappers over `stage_endpoint`).

Changed rows become pending, invalid rows are rejected locally, unchanged rows are left alone
(so a rerun stages nothing). Chunk k is written by the state store's `BackgroundWriter` while
chunk k+1 is read from the CRM and mapped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extensions

from gestimum_pipeline.crm import contract
from gestimum_pipeline.crm.queries import snapshot_version, stream_window, window_signature
from gestimum_pipeline.db import db_reason
from gestimum_pipeline.sync.endpoints import EndpointSpec
from gestimum_pipeline.sync.errors import SourceReadError, StateStoreFailure
from gestimum_pipeline.sync.mapping import MappedRow, Mapper, MappingStats, content_hash
from gestimum_pipeline.sync.progress import ProgressLog
from gestimum_pipeline.sync.state import StageCounts, StateStore, Status
from gestimum_pipeline.sync.state.writer import BackgroundWriter

log = logging.getLogger(__name__)

MAX_REPORTED_REJECTIONS = 200
_STAGED = (Status.PENDING, Status.IN_FLIGHT)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def for_partitions(cls, start: datetime, end: datetime, lookback: timedelta) -> Window:
        """The partitions' time range, widened backwards to catch rows committed late."""
        return cls(start - lookback, end)


@dataclass
class StageReport:
    endpoint: str
    relation: str
    window: Window
    rows_read: int = 0
    staged: int = 0
    unchanged: int = 0
    rejected_locally: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (source key, reason), capped
    duration_seconds: float = 0.0
    window_unchanged: bool = False  # the window's rows are the versions already staged: not read
    skipped: int = 0  # rows whose CRM version differs but was not taken (stock movements already sent)
    # Per day of the rows' change time (given `day_of`): rows_read, lines_staged, rejected_locally.
    by_day: dict[str | None, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


DayOf = Callable[[Any], "str | None"]


def day_function(timezone: str) -> DayOf:
    """The partition (day, `YYYY-MM-DD` in the partitions' time zone) of a change time; None if none."""
    zone = ZoneInfo(timezone)

    def day_of(changed: Any) -> str | None:
        if not isinstance(changed, datetime) or changed.tzinfo is None:
            return None  # the contract's timestamptz broken: the row is rejected with its reason anyway
        return changed.astimezone(zone).strftime("%Y-%m-%d")

    return day_of


def count_by_day(by_day: dict[str | None, Counter[str]], counts: StageCounts) -> None:
    """Adds the rows a staging took to the per-day figures (pending: staged; else rejected)."""
    for partition, status in counts.by_partition:
        by_day[partition]["lines_staged" if status in _STAGED else "rejected_locally"] += 1


def stage_endpoint(
    *,
    crm_connect: Callable[[], Any],
    crm_schema: str,
    state: StateStore,
    spec: EndpointSpec,
    mapper: Mapper,
    window: Window,
    partition: str | None,
    run_id: str | None,
    force: bool = False,
    chunk_size: int = 5000,
    logger: logging.Logger | None = None,
    day_of: DayOf | None = None,
) -> StageReport:
    """Streams the window's rows, maps them and records them in the state store, chunk by chunk.

    `day_of` (day_function): each row is recorded under the partition of its change time, and
    the report's `by_day` tells a range run's figures per day.
    """
    endpoint = spec.name
    relation = spec.relation
    rel = contract.relation(relation)
    report = StageReport(endpoint, relation, window)
    progress = ProgressLog(logger or log, f"staging {endpoint} from {relation}", unit="rows")
    stats = MappingStats()
    started = time.perf_counter()
    conn = crm_connect()
    last_key: str | None = None
    # Chunk k is written to the state store by the background writer while chunk k+1 is read
    # from the CRM and mapped: one write in flight at most, collected before the next is
    # handed over, so order and counts hold.
    writer = BackgroundWriter("gestimum-stage")
    in_flight: tuple[Future[StageCounts], int, Counter[str | None]] | None = None
    change_index = rel.columns.index(rel.change_column)

    def collect() -> None:
        nonlocal in_flight
        if in_flight is None:
            return
        (future, n_rows, read_by_day), in_flight = in_flight, None
        try:
            counts = future.result()
        except psycopg2.Error as exc:
            raise StateStoreFailure(
                f"the state store failed while staging {endpoint} after {report.rows_read} rows "
                f"({db_reason(exc)}); nothing of this step was sent. Check SYNC_STATE_DATABASE_URL "
                "(default CRM_DATABASE_URL), then rerun the partition."
            ) from None
        report.rows_read += n_rows
        progress.update(report.rows_read)
        report.staged += counts.staged
        report.rejected_locally += counts.rejected
        report.unchanged += counts.unchanged
        report.skipped += counts.skipped
        for day, n in read_by_day.items():
            report.by_day[day]["rows_read"] += n
        count_by_day(report.by_day, counts)

    try:
        # One snapshot for the window's signature and its rows: a window whose row versions
        # are exactly those of its last complete staging (same mapping) is not read again.
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
        signature = window_signature(conn, crm_schema, relation, window.start, window.end)
        # The order of this snapshot among the CRM's: the version of every row read below.
        version = snapshot_version(conn)
        if (
            signature is not None
            and not force
            and state.window_signature(endpoint, mapper.fingerprint, window.start, window.end) == signature
        ):
            report.unchanged = signature[0]
            report.window_unchanged = True
            chunks: Iterator[list[Any]] = iter(())
        else:
            chunks = iter(
                stream_window(
                    conn,
                    crm_schema,
                    relation,
                    window.start,
                    window.end,
                    chunk_size=chunk_size,
                    order_by=spec.order_by,
                )
            )
        while True:
            try:
                chunk = next(chunks, None)
            except psycopg2.Error as exc:
                collect()  # the chunk being written counts as staged (it is committed)
                raise SourceReadError(
                    f"the CRM connection failed while streaming {relation} for {endpoint} after "
                    f"{report.rows_read} rows ({db_reason(exc)}). Rows staged so far are safe in the state "
                    "store and nothing of this step was sent; check that the CRM (CRM_DATABASE_URL) is "
                    "reachable, then rerun the partition: the window is read again."
                ) from None
            if chunk is None:
                break
            raw = [_map_checked(spec, rel, mapper, row) for row in chunk]
            mapped = _reject_duplicate_keys(spec, raw, last_key)
            last_key = mapped[-1].source_key if mapped else last_key
            for m in mapped:
                stats.add(m)
                if m.rejected and len(report.rejections) < MAX_REPORTED_REJECTIONS:
                    report.rejections.append((m.source_key, m.reason or ""))
            days: dict[str, str | None] | None = None
            read_by_day: Counter[str | None] = Counter()
            if day_of is not None:
                # Before the duplicates' refusal (which may drop rows): one day per key is enough.
                row_days = [day_of(row[change_index]) for row in chunk]  # once per row: the hot path
                days = {m.source_key: day for m, day in zip(raw, row_days, strict=True)}
                read_by_day.update(row_days)
            collect()
            in_flight = (
                writer.submit(
                    lambda mapped=mapped, days=days: state.stage(
                        endpoint,
                        mapped,
                        partition=partition,
                        run_id=run_id,
                        force=force,
                        source_version=version,
                        days=days,
                    )
                ),
                len(chunk),
                read_by_day,
            )
        collect()
        progress.finish(report.rows_read)
        if spec.case_folded:
            # Always, even when nothing was staged now: an attempt that staged `ACME` and `acme` may
            # have stopped before refusing them (one hash join, only when rows are pending).
            collisions = state.reject_case_collisions(endpoint, spec.key_field)
            report.staged -= len(collisions)
            report.rejected_locally += len(collisions)
            for key, reason, day in collisions:
                if day_of is not None:
                    report.by_day[day]["lines_staged"] -= 1
                    report.by_day[day]["rejected_locally"] += 1
                stats.rules["case_colliding_key_rejected"] += 1
                if len(report.rejections) < MAX_REPORTED_REJECTIONS:
                    report.rejections.append((key, reason))
        # A window with a row the store refused to take (a stock movement changed after it was
        # sent, or a newer version staged by another run: this run lost) is read again by the
        # next run: never recorded as unchanged; nor does an older snapshot's signature replace
        # a newer one.
        if signature is not None and not report.window_unchanged and not report.skipped:
            state.record_window_signature(
                endpoint, mapper.fingerprint, window.start, window.end, signature, run_id=run_id, source_version=version
            )
        state.record_staged_window(endpoint, window.start, window.end, run_id=run_id)  # for the coverage check
    except psycopg2.Error as exc:  # the window's signature, or the state store between chunks
        raise SourceReadError(
            f"a database failed while staging {endpoint} after {report.rows_read} rows ({db_reason(exc)}); "
            "nothing of this step was sent. Check CRM_DATABASE_URL and SYNC_STATE_DATABASE_URL (default "
            "CRM_DATABASE_URL), then rerun the partition."
        ) from None
    finally:
        writer.stop()  # a failure elsewhere: let the write end before anything closes
        conn.close()
    report.rules = stats.rules
    report.duration_seconds = time.perf_counter() - started
    return report


# The record named by a rejection whose key itself breaks the contract (NULL, wrong type).
INVALID_KEY = "(invalid key)"


def _map_checked(spec: EndpointSpec, rel: contract.Relation, mapper: Mapper, row: Any) -> MappedRow:
    """Maps one row; a value that breaks the source contract (or trips the mapper) becomes a
    local rejection naming the record and field, never a crash and never str() of it."""
    problems = contract.row_problems(rel, row)
    key_broken = any(column in rel.key_columns for column, _ in problems)
    if not problems:
        try:
            return mapper.map(row)
        except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            problems = [("(row)", f"could not be mapped ({type(exc).__name__})")]
    key = INVALID_KEY if key_broken else mapper.key_of(row)
    reason = "; ".join(f"{spec.name} record {key} field {column}: {problem}" for column, problem in problems)
    return MappedRow(key, content_hash(reason), reason=reason)


def _reject_duplicate_keys(spec: EndpointSpec, mapped: list[MappedRow], previous_key: str | None) -> list[MappedRow]:
    """Rows sharing a key (a CRM view without a unique key) are all rejected, never one silently kept.

    Within a chunk any duplicate is found; across chunks, duplicates are adjacent because
    rows stream ordered by key (stock: by header, then id), so the previous chunk's last key
    is enough, and its already staged copy is overwritten by the rejection.
    """
    keys = [m.source_key for m in mapped]
    if len(set(keys)) == len(keys) and (not keys or keys[0] != previous_key):
        return mapped  # the common case: one set per chunk, no per-row work
    counts = Counter(keys)
    if previous_key is not None and keys and keys[0] == previous_key:
        counts[previous_key] += 1
    name, field_code = spec.name, spec.key_field
    out: list[MappedRow] = []
    done: set[str] = set()
    for m in mapped:
        n = counts[m.source_key]
        if n < 2:
            out.append(m)
            continue
        if m.source_key in done:
            continue  # one rejection per key: the state store holds one record per key
        done.add(m.source_key)
        reason = (
            f"{name} record {m.source_key} field {field_code}: the key appears {n} or more times in the CRM "
            "window; each record needs a unique key (fix the CRM or its view)"
        )
        out.append(
            MappedRow(
                m.source_key,
                content_hash(reason),
                reason=reason,
                parent_key=m.parent_key,
                group_key=m.group_key,
                sort_key=m.sort_key,
            )
        )
    return out
