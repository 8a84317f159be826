"""What the state store says about an endpoint's health: the facts behind the asset checks.

Plain functions over `StateStore`, so the Dagster checks stay thin and these stay unit-tested.
Each returns a `Finding`: whether it passed, one sentence a data team reads at a glance
(naming rows and reasons, and the command to act on them), counts, and detail rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gestimum_pipeline.crm.queries import count_before, stream_keys, window_signatures
from gestimum_pipeline.sync.mapping import Mapper
from gestimum_pipeline.sync.state import StateStore, merge_windows

# Rows listed in a check's table and sentence: enough to act on, bounded for the UI.
MAX_LISTED_ROWS = 100
MAX_NAMED_IN_SUMMARY = 5
WAITING_STATUSES = ("pending", "held", "in_flight")


@dataclass
class Finding:
    passed: bool
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def rejections(store: StateStore, endpoint: str, *, limit: int = MAX_LISTED_ROWS) -> Finding:
    """The endpoint's rows currently rejected, by Gestimum or by our validation, with their reasons."""
    total, records = _listed(store, endpoint, "rejected", limit)
    if not total:
        return Finding(True, f"no {endpoint} row is rejected", {"rejected": 0})
    rows = [
        {
            "source_key": r["source_key"],
            "reason": r["reason"] or "",
            "rejected_by": r["reason_source"] or "",
            "since": _iso(r["updated_at"]),
        }
        for r in records
    ]
    named = "; ".join(f"{r['source_key']}: {r['reason']}" for r in rows[:MAX_NAMED_IN_SUMMARY])
    more = f"; and {total - MAX_NAMED_IN_SUMMARY} more" if total > MAX_NAMED_IN_SUMMARY else ""
    if store.endpoints.creates_documents(endpoint):
        # A movement Gestimum rejected is never re-sent on its own, even once changed in the CRM.
        advice = (
            "A movement rejected by our validation is re-sent once fixed in the CRM; one rejected by Gestimum is "
            "never re-sent on its own: fix the cause (the item or warehouse in Gestimum, or the CRM row), then "
            f"re-queue it with `gestimum-pipeline retry --endpoint {endpoint} <ids>`"
        )
    else:
        advice = "Fix them in the CRM (the next run re-sends changed rows)"
    summary = (
        f"{total} {endpoint} row{'s' if total != 1 else ''} rejected — {named}{more}. {advice}, or see "
        f"`gestimum-pipeline rejections --endpoint {endpoint}`."
    )
    by_source: dict[str, int] = {}
    for r in rows:
        by_source[r["rejected_by"]] = by_source.get(r["rejected_by"], 0) + 1
    counts = {"rejected": total, **{f"listed_rejected_by_{k or 'unknown'}": n for k, n in sorted(by_source.items())}}
    return Finding(False, summary, counts, rows)


def waiting_too_long(
    store: StateStore, endpoint: str, *, max_age_seconds: float, now: datetime | None = None
) -> Finding:
    """Rows pending, held for a parent, or in flight for longer than `max_age_seconds`."""
    found = store.waiting(endpoint, WAITING_STATUSES, older_than_seconds=max_age_seconds)
    counts = {status: found.get(status, (0, None))[0] for status in WAITING_STATUSES}
    limit = _minutes(max_age_seconds)
    if not any(counts.values()):
        return Finding(True, f"no {endpoint} row has waited longer than {limit}", counts)
    now = now or datetime.now(UTC)
    oldest = min(found[s][1] for s in found)
    counts["oldest_wait_minutes"] = int((now - oldest).total_seconds() // 60)
    parts = [f"{n} {status.replace('_', ' ')}" for status, n in counts.items() if status in found and n]
    hints = []
    if counts["pending"] or counts["in_flight"]:
        hints.append("pending rows are sent by the next successful run (check the failed runs)")
    if counts["held"]:
        hints.append("held rows wait for a parent that is not imported (see the parent's rejections)")
    summary = (
        f"{endpoint}: {', '.join(parts)} for longer than {limit} (oldest since {_iso(oldest)}); "
        + "; ".join(hints)
        + f". List them with `gestimum-pipeline rejections --endpoint {endpoint}`."
    )
    return Finding(False, summary, counts)


def delivery_unknown(store: StateStore, endpoint: str, *, limit: int = MAX_LISTED_ROWS) -> Finding:
    """Stock movements that may or may not have become documents: an operator must reconcile them."""
    total, records = _listed(store, endpoint, "delivery_unknown", limit)
    if not total:
        return Finding(True, f"no {endpoint} row has an unknown delivery", {"delivery_unknown": 0})
    rows = [
        {"source_key": r["source_key"], "reason": r["reason"] or "", "since": _iso(r["updated_at"])} for r in records
    ]
    keys = ", ".join(r["source_key"] for r in rows[:MAX_NAMED_IN_SUMMARY])
    more = ", …" if total > MAX_NAMED_IN_SUMMARY else ""
    summary = (
        f"{total} {endpoint} row{'s' if total != 1 else ''} in delivery_unknown ({keys}{more}): they may or may "
        "not be in Gestimum and are never re-sent on their own. Check in Gestimum, then `gestimum-pipeline "
        "reconcile --delivered --document <number> <ids>` or `gestimum-pipeline reconcile --release <ids>`."
    )
    return Finding(False, summary, {"delivery_unknown": total}, rows)


def _listed(store: StateStore, endpoint: str, status: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """How many of the endpoint's rows have `status` (from the kept counts), and the first `limit` of them."""
    total = store.counts(endpoint).get(endpoint, {}).get(status, 0)
    return total, store.records(endpoint=endpoint, statuses=[status], limit=limit) if total else []


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} minute{'s' if minutes != 1 else ''}"


def stock_diverged(store: StateStore, endpoint: str, *, limit: int = MAX_LISTED_ROWS) -> Finding:
    """Movements already sent (or in doubt) whose CRM row was edited since: never re-sent, reported."""
    total, rows = store.diverged(endpoint, limit=limit)
    if not total:
        return Finding(True, f"no {endpoint} movement was edited in the CRM after it was sent", {"diverged": 0})
    listed = [{**r, "since": _iso(r["since"])} for r in rows]
    named = ", ".join(
        f"{r['source_key']} ({r['status']}{', ' + r['document'] if r['document'] else ''})"
        for r in listed[:MAX_NAMED_IN_SUMMARY]
    )
    more = f" and {total - MAX_NAMED_IN_SUMMARY} more" if total > MAX_NAMED_IN_SUMMARY else ""
    return Finding(
        False,
        f"{total} {endpoint} movement{'s' if total != 1 else ''} changed in the CRM after being sent: {named}{more}. "
        "Movements are never re-sent (Gestimum would create another document): correct the document in "
        "Gestimum by hand, or restore the CRM row.",
        {"diverged": total},
        listed,
    )


def crm_coverage(
    store: StateStore,
    crm_conn: Any,
    crm_schema: str,
    endpoint: str,
    relation: str,
    mapper: Mapper,
    *,
    not_before: datetime,
    limit: int = MAX_LISTED_ROWS,
    chunk_size: int = 10_000,
) -> Finding:
    """CRM rows changed inside the windows staged in full, yet missing from the state store.

    A row there was never seen by any transform (a window staged before the row was
    committed with an older change time, or a faulty read): it fails the check. Rows
    changed before the sync's start date (or with no change time) are in no window:
    counted and shown, never silently ignored.
    """
    before = count_before(crm_conn, crm_schema, relation, not_before)
    missing: list[str] = []
    total_missing = 0
    checked = 0
    # A window whose rows are exactly the versions a complete check, or a transform that staged
    # every row of it, last saw (same count, same row versions) cannot have gained a row since:
    # only the others are read key by key. A relation without row versions (a view) is read
    # in full every time.
    windows = store.staged_windows(endpoint, merged=False)
    signatures = window_signatures(crm_conn, crm_schema, relation, windows)
    recorded = store.coverage_signatures(endpoint) if signatures is not None else {}
    current = dict(zip(windows, signatures, strict=True)) if signatures is not None else {}
    to_read = [w for w in windows if w not in current or current[w] not in recorded.get(w, set())]
    unchanged = sum(current[w][0] for w in windows if w not in to_read)
    for start, end in merge_windows(to_read):
        for chunk in stream_keys(crm_conn, crm_schema, relation, start, end, chunk_size=chunk_size):
            keys = [mapper.key_of(row) for row in chunk]
            checked += len(keys)
            absent = store.missing_keys(endpoint, keys)
            total_missing += len(absent)
            missing.extend(absent[: max(limit - len(missing), 0)])
    crm_conn.rollback()  # the key streams' transaction: read only
    if not total_missing:
        store.record_coverage_signatures(endpoint, {w: current[w] for w in to_read if w in current}, run_id=None)
    counts = {
        "crm_rows_checked": checked,
        "crm_rows_unchanged_since_last_check": unchanged,
        "missing_from_state_store": total_missing,
        "before_start_date": before,
    }
    outside = (
        f"; {before} {relation} rows changed before GESTIMUM_SYNC_START_DATE ({not_before.date().isoformat()}) "
        "or with no change time are in no partition and never sent"
        if before
        else ""
    )
    if not total_missing:
        return Finding(True, f"every {relation} row of the synced windows is in the state store{outside}", counts)
    named = ", ".join(missing[:MAX_NAMED_IN_SUMMARY]) + (", …" if total_missing > MAX_NAMED_IN_SUMMARY else "")
    return Finding(
        False,
        f"{total_missing} {relation} rows changed inside windows already synced are not in the state store "
        f"({named}): rerun those partitions (a backfill) so they are read{outside}",
        counts,
        [{"source_key": k, "reason": "not in the state store"} for k in missing],
    )
