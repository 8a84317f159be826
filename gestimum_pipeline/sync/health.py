"""What the state store says about an endpoint's health: the facts behind the asset checks.

Plain functions over `StateStore`, so the Dagster checks stay thin and these stay unit-tested.
Each returns a `Finding`: whether it passed, one sentence a data team reads at a glance
(naming rows and reasons, and the command to act on them), counts, and detail rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gestimum_pipeline.crm import contract
from gestimum_pipeline.crm.queries import (
    count_before,
    existing_source_keys,
    rows_in_windows,
    stream_window,
    window_signatures,
)
from gestimum_pipeline.sync.engine import INVALID_KEY
from gestimum_pipeline.sync.ledger_reads import staged_versions
from gestimum_pipeline.sync.mapping import Mapper, source_key
from gestimum_pipeline.sync.operator import written_key
from gestimum_pipeline.sync.state import StateStore, Status, merge_windows

# Rows listed in a check's table and sentence: enough to act on, bounded for the UI.
MAX_LISTED_ROWS = 100
MAX_NAMED_IN_SUMMARY = 5
WAITING_STATUSES = (Status.PENDING, Status.HELD, Status.IN_FLIGHT)
# The one list of every row to act on, with its next step (sync/rows_to_act_on.py), and its runbook.
RUNBOOK_CHECK = "rows_to_act_on"
RUNBOOK = "docs/operations.md#rows-to-act-on"


@dataclass
class Finding:
    passed: bool
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def rejections(
    store: StateStore, endpoint: str, relation: str | None = None, *, limit: int = MAX_LISTED_ROWS
) -> Finding:
    """The endpoint's rows currently rejected, by Gestimum or by our validation, with their reasons.

    With the endpoint's `relation`, composite keys are written as people write them (`C3 / ZZZ`)."""
    total, records = _listed(store, endpoint, Status.REJECTED, limit)
    if not total:
        return Finding(True, f"no {endpoint} row is rejected", {"rejected": 0})
    rows = [
        {
            "source_key": written_key(relation, r["source_key"]) if relation else r["source_key"],
            "reason": r["reason"] or "",
            "rejected_by": r["reason_source"] or "",
            "since": _iso(r["updated_at"]),
        }
        for r in records
    ]
    # Gestimum's words (French) quoted and labelled; our validation's as they are.
    named = "; ".join(
        f"{r['source_key']}: " + (f'Gestimum said: "{r["reason"]}"' if r["rejected_by"] == "gestimum" else r["reason"])
        for r in rows[:MAX_NAMED_IN_SUMMARY]
    )
    more = f"; and {total - MAX_NAMED_IN_SUMMARY} more" if total > MAX_NAMED_IN_SUMMARY else ""
    # A rejected row was not imported (by Gestimum's own count): every run reads it again from the
    # CRM (sync/refresh.py), so a CRM fix is sent by the next run, whatever the row's change time.
    advice = (
        "Fix them in the CRM: the next run reads rejected rows again and sends the corrected line; if the cause "
        "was in Gestimum (an item, warehouse or customer created there since), re-queue them with the "
        f"operator_retry job (Launchpad: endpoint {endpoint} and the keys) or `gestimum-pipeline retry --endpoint "
        f"{endpoint} <keys>`"
    )
    summary = (
        f"{total} {endpoint} row{'s' if total != 1 else ''} rejected — {named}{more}. {advice}. Each row's next "
        f"step: the `{RUNBOOK_CHECK}` check of sync/preflight ({RUNBOOK})."
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
    waiting = {status.value: found.get(status, (0, None))[0] for status in WAITING_STATUSES}
    # Named for what they count (rows over the limit), never read as all the rows held or pending.
    counts = {f"{status}_too_long": n for status, n in waiting.items()}
    limit = _minutes(max_age_seconds)
    if not any(counts.values()):
        return Finding(True, f"no {endpoint} row has waited longer than {limit}", counts)
    now = now or datetime.now(UTC)
    oldest = min(found[s][1] for s in found)
    counts["oldest_wait_minutes"] = int((now - oldest).total_seconds() // 60)
    parts = [f"{n} {status.replace('_', ' ')}" for status, n in waiting.items() if status in found and n]
    hints = []
    if waiting[Status.PENDING] or waiting[Status.IN_FLIGHT]:
        hints.append("pending rows are sent by the next successful run (check the failed runs)")
    if waiting[Status.HELD]:
        hints.append("held rows wait for a parent that is not imported (see the parent's rejections)")
    summary = (
        f"{endpoint}: {', '.join(parts)} for longer than {limit} (oldest since {_iso(oldest)}); "
        + "; ".join(hints)
        + f". List them with `gestimum-pipeline rejections --endpoint {endpoint}`."
    )
    return Finding(False, summary, counts)


def delivery_unknown(store: StateStore, endpoint: str, *, limit: int = MAX_LISTED_ROWS) -> Finding:
    """Stock movements that may or may not have become documents: an operator must reconcile them."""
    total, records = _listed(store, endpoint, Status.DELIVERY_UNKNOWN, limit)
    if not total:
        return Finding(True, f"no {endpoint} row has an unknown delivery", {"delivery_unknown": 0})
    rows = [
        {"source_key": r["source_key"], "reason": r["reason"] or "", "since": _iso(r["updated_at"])} for r in records
    ]
    keys = ", ".join(r["source_key"] for r in rows[:MAX_NAMED_IN_SUMMARY])
    more = ", …" if total > MAX_NAMED_IN_SUMMARY else ""
    summary = (
        f"{total} {endpoint} row{'s' if total != 1 else ''} in delivery_unknown ({keys}{more}): they may or may "
        "not be in Gestimum and are never re-sent on their own. Check in Gestimum, then launch the "
        "operator_reconcile job (or `gestimum-pipeline reconcile --delivered --document <number> <ids>`, "
        f"`--release <ids>`). Each row's config: the `{RUNBOOK_CHECK}` check of sync/preflight ({RUNBOOK})."
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
        "A movement sent is never re-sent (Gestimum would create another document): restore the CRM row, or "
        "correct its document in Gestimum by hand (one in delivery_unknown: settle it first with "
        "`gestimum-pipeline reconcile`).",
        {"diverged": total},
        listed,
    )


def deleted_after_import(
    store: StateStore,
    crm_conn: Any,
    crm_schema: str,
    endpoint: str,
    relation: str,
    *,
    limit: int = MAX_LISTED_ROWS,
) -> Finding:
    """Rows Gestimum imported whose CRM row is gone. Gestimum's import endpoints cannot delete: someone
    removes them in Gestimum, then marks them handled with `ignore` (an imported row may be ignored)."""
    total = 0
    checked = 0
    rows: list[dict[str, Any]] = []
    for chunk in store.iter_imported(endpoint):
        checked += len(chunk)
        present = existing_source_keys(crm_conn, crm_schema, relation, [k for k, _, _ in chunk])
        for key, document, imported_at in chunk:
            if key in present:
                continue
            total += 1
            if len(rows) < limit:
                rows.append({"source_key": key, "document": document or "", "since": _iso(imported_at)})
    counts = {"deleted_after_import": total, "imported_checked": checked}
    if not total:
        return Finding(True, f"every {endpoint} row Gestimum imported is still in the CRM ({relation})", counts)
    named = ", ".join(r["source_key"] for r in rows[:MAX_NAMED_IN_SUMMARY])
    more = f" and {total - MAX_NAMED_IN_SUMMARY} more" if total > MAX_NAMED_IN_SUMMARY else ""
    return Finding(
        False,
        f"{total} {endpoint} row{'s' if total != 1 else ''} imported into Gestimum {'are' if total != 1 else 'is'} "
        f"gone from the CRM ({relation}): {named}{more}. Gestimum's import cannot delete: remove "
        f"{'them' if total != 1 else 'it'} in Gestimum, then mark {'them' if total != 1 else 'it'} handled with "
        f"`gestimum-pipeline ignore --endpoint {endpoint} <keys>` (or the operator_ignore job).",
        counts,
        rows,
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
    now: datetime | None = None,
    limit: int = MAX_LISTED_ROWS,
    chunk_size: int = 10_000,
) -> Finding:
    """Compares the CRM with the state store over every day from the start date to now.

    * Windows staged whose rows changed since they were last proven (their signature
      differs): each CRM row is mapped and its version compared with the one staged last.
      A key missing from the store, or a version the store never staged (an edit committed
      into a window already read, a stock movement edited after it was sent, an old
      version put back), fails the check.
    * Days no transform ever staged (an outage, a run by hand before the schedule caught
      up): every CRM row changed there fails the check, named with the days to backfill.
    * Rows changed before the start date (or with no change time) are in no window:
      counted and shown, never silently ignored.

    A window's new signature is recorded only after a pass that found nothing: evidence of
    a divergence is never erased, so the check keeps failing until the store or the CRM
    agrees.
    """
    rel = contract.relation(relation)
    now = now or datetime.now(UTC)
    before = count_before(crm_conn, crm_schema, relation, not_before)
    missing: list[str] = []
    differing: list[dict[str, Any]] = []
    total_missing = total_differing = checked = 0
    # A window whose rows are exactly the versions a complete check, or a transform that staged
    # every row of it, last saw (same count, same row versions) cannot hold a row or a version
    # the store lacks: only the others are read. A relation without row versions (a view) is
    # read in full every time.
    windows = store.staged_windows(endpoint, merged=False)
    signatures = window_signatures(crm_conn, crm_schema, relation, windows)
    recorded = store.coverage_signatures(endpoint) if signatures is not None else {}
    current = dict(zip(windows, signatures, strict=True)) if signatures is not None else {}
    to_read = [w for w in windows if w not in current or current[w] not in recorded.get(w, set())]
    unchanged = sum(current[w][0] for w in windows if w not in to_read)
    for start, end in merge_windows(to_read):
        for chunk in stream_window(crm_conn, crm_schema, relation, start, end, chunk_size=chunk_size):
            versions = _crm_versions(rel, mapper, chunk)
            checked += len(versions)
            staged = staged_versions(store, endpoint, [key for key, _ in versions])
            for key, version in versions:
                found = staged.get(key)
                if found is None:
                    total_missing += 1
                    if len(missing) < limit:
                        missing.append(key)
                elif version is not None and version != found.content_hash:
                    total_differing += 1
                    if len(differing) < limit:
                        differing.append({"source_key": key, "status": found.status, "document": found.document})
    gaps = _uncovered(merge_windows(windows), not_before, now)
    never, never_keys, first_change, last_change = rows_in_windows(crm_conn, crm_schema, relation, gaps, limit=limit)
    crm_conn.rollback()  # the reads' transaction: read only
    if not total_missing and not total_differing:
        store.record_coverage_signatures(endpoint, {w: current[w] for w in to_read if w in current}, run_id=None)
    counts = {
        "crm_rows_checked": checked,
        "crm_rows_unchanged_since_last_check": unchanged,
        "missing_from_state_store": total_missing,
        "changed_since_staged": total_differing,
        "on_days_never_synced": never,
        "before_start_date": before,
    }
    outside = (
        f"; {before} {relation} rows changed before GESTIMUM_SYNC_START_DATE ({not_before.date().isoformat()}) "
        "or with no change time are in no partition and never sent"
        if before
        else ""
    )
    if not (total_missing or total_differing or never):
        return Finding(
            True,
            f"every {relation} row changed since {not_before.date().isoformat()} is in the state store, "
            f"in the version staged last{outside}",
            counts,
        )
    tz = not_before.tzinfo
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    if never:
        first_day = first_change.astimezone(tz).date().isoformat() if first_change else "?"
        last_day = last_change.astimezone(tz).date().isoformat() if last_change else "?"
        keys = [mapper_key(k) for k in never_keys]
        problems.append(
            f"{never} {relation} rows changed on days no run has synced ({_named(keys, never)}, from {first_day} to "
            f"{last_day}): backfill them (`dg launch --assets '*' --partition-range {first_day}...{last_day}`); the "
            "schedule's next tick also catches up from the first day not synced"
        )
        rows += [{"source_key": k, "reason": "changed on a day no run has synced"} for k in keys]
    if total_missing:
        problems.append(
            f"{total_missing} {relation} rows changed inside windows already synced are not in the state store "
            f"({_named(missing, total_missing)}): rerun those partitions (a backfill) so they are read"
        )
        rows += [{"source_key": k, "reason": "not in the state store"} for k in missing]
    if total_differing:
        problems.append(_differing_summary(store, endpoint, relation, differing, total_differing))
        rows += [{"source_key": d["source_key"], "reason": _differing_reason(store, endpoint, d)} for d in differing]
    return Finding(False, "; ".join(problems) + outside, counts, rows[:limit])


def mapper_key(key_columns: tuple[Any, ...]) -> str:
    """The source key of a row's key columns (a JSON list for a composite key)."""
    return source_key(*key_columns)


def _named(keys: list[str], total: int) -> str:
    return ", ".join(keys[:MAX_NAMED_IN_SUMMARY]) + (", …" if total > MAX_NAMED_IN_SUMMARY else "")


def _crm_versions(rel: contract.Relation, mapper: Mapper, chunk: list[tuple[Any, ...]]) -> list[tuple[str, str | None]]:
    """(source key, content hash of the line the transform would stage) of each CRM row; None
    where the row breaks the contract or its key repeats (the transform rejects those with a
    reason of its own: only their presence is compared)."""
    out: list[tuple[str, str | None]] = []
    for row in chunk:
        if contract.row_problems(rel, row):
            key_broken = any(c in rel.key_columns for c, _ in contract.row_problems(rel, row))
            out.append((INVALID_KEY if key_broken else mapper.key_of(row), None))
            continue
        try:
            mapped = mapper.map(row)
        except (TypeError, ValueError, ArithmeticError, AttributeError):
            out.append((mapper.key_of(row), None))
            continue
        out.append((mapped.source_key, mapped.content_hash))
    seen: dict[str, int] = {}
    for key, _ in out:
        seen[key] = seen.get(key, 0) + 1
    return [(key, None if seen[key] > 1 else version) for key, version in out]


def _uncovered(
    staged: list[tuple[datetime, datetime]], not_before: datetime, now: datetime
) -> list[tuple[datetime, datetime]]:
    """The parts of [not_before, now) that no staged window covers (`staged` merged, in order)."""
    gaps: list[tuple[datetime, datetime]] = []
    cursor = not_before
    for start, end in staged:
        if start > cursor:
            gaps.append((cursor, min(start, now)))
        cursor = max(cursor, end)
        if cursor >= now:
            break
    if cursor < now:
        gaps.append((cursor, now))
    return [(s, e) for s, e in gaps if s < e]


_SENT = (Status.IMPORTED, Status.DELIVERY_UNKNOWN)


def _differing_reason(store: StateStore, endpoint: str, row: dict[str, Any]) -> str:
    where = f"{row['status']}{', ' + row['document'] if row['document'] else ''}"
    if store.endpoints.creates_documents(endpoint) and row["status"] in _SENT:
        return f"changed in the CRM after it was sent ({where})"
    return f"the CRM holds a version the state store never staged ({where})"


def _differing_summary(
    store: StateStore, endpoint: str, relation: str, differing: list[dict[str, Any]], total: int
) -> str:
    named = ", ".join(
        f"{d['source_key']} ({d['status']}{', ' + d['document'] if d['document'] else ''})"
        for d in differing[:MAX_NAMED_IN_SUMMARY]
    ) + (", …" if total > MAX_NAMED_IN_SUMMARY else "")
    text = f"{total} {relation} rows differ from the version in the state store: {named}"
    sent = [d for d in differing if d["status"] in _SENT]
    if store.endpoints.creates_documents(endpoint) and sent:
        text += (
            ". A movement already sent is never re-sent (Gestimum would create another document): restore the CRM "
            "row, or correct its document in Gestimum by hand (a delivery_unknown one: reconcile it first); the "
            "others were never imported: rerun the partitions of their days so they are read and sent"
        )
    else:
        text += ". Rerun the partitions of their days (a backfill) so the CRM's version is staged and sent"
    return text
