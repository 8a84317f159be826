"""One list of the rows an operator must act on, across every endpoint: rejected, held for a
parent, delivery unknown. Each row with its key as people write it, its status, its reason
labelled as Gestimum's words or ours, since when, and the one next step (the operator job and
its config, or the CRM field to fix). Plain Python over `StateStore`; the Dagster check
`rows_to_act_on` (defs/rows_to_act_on.py) shows it, and the operator jobs re-evaluate it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from gestimum_pipeline.crm import contract
from gestimum_pipeline.sync.endpoints import EndpointRegistry
from gestimum_pipeline.sync.health import MAX_LISTED_ROWS, MAX_NAMED_IN_SUMMARY, RUNBOOK, Finding
from gestimum_pipeline.sync.mapping import FIELD_SOURCES
from gestimum_pipeline.sync.operator import written_key
from gestimum_pipeline.sync.state import StateStore, Status

CHECK_NAME = "rows_to_act_on"
RETRY_JOB, RECONCILE_JOB = "operator_retry", "operator_reconcile"
STATUSES = (Status.REJECTED, Status.HELD, Status.DELIVERY_UNKNOWN)
GESTIMUM, OURS = "Gestimum", "us"
YOUR_NAME = "<your name>"
# Our validation names the Gestimum field a rejected value was for (mapping.Mapper, staging).
_FIELD = re.compile(r" field (\S+?):")


def labelled_reason(reason: str | None, reason_source: str | None) -> tuple[str, str]:
    """(whose words, the reason labelled): Gestimum's journal quoted as Gestimum's, ours as ours."""
    text = (reason or "").strip()
    if reason_source == "gestimum":
        return GESTIMUM, f'Gestimum said: "{text}"'
    if reason_source == "local":
        return OURS, f"Our validation: {text}"
    return OURS, text


def _config(job: str, config: dict[str, Any]) -> str:
    return f"{job} with {json.dumps(config, ensure_ascii=False)}"


def rows_to_act_on(
    store: StateStore,
    endpoints: EndpointRegistry,
    *,
    job_name: Callable[[str], str] = lambda name: name,
    limit: int = MAX_LISTED_ROWS,
) -> Finding:
    """Every rejected, held and delivery-unknown row of the store (the first `limit` listed, oldest
    first), each with its next step; `job_name` names the operator jobs (a company file's prefix)."""
    counts = {s.value: 0 for s in STATUSES}
    for by_status in store.counts().values():
        for status in STATUSES:
            counts[status.value] += by_status.get(status, 0)
    total = sum(counts.values())
    if not total:
        return Finding(True, "no row to act on: nothing rejected, held or in delivery_unknown", {**counts, "total": 0})
    records = [r for r in store.rows_to_act_on(limit=limit) if r["endpoint"] in endpoints]
    parents = _parent_statuses(store, endpoints, records)
    rows = [_row(r, endpoints, parents, job_name) for r in records]
    named = "; ".join(f"{r['endpoint']} {r['key']} {r['status']}" for r in rows[:MAX_NAMED_IN_SUMMARY])
    more = f"; and {total - MAX_NAMED_IN_SUMMARY} more" if total > MAX_NAMED_IN_SUMMARY else ""
    parts = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items() if n)
    summary = (
        f"{total} row{'s' if total != 1 else ''} to act on ({parts}) — {named}{more}. Each row's next step is in "
        f"the `rows` table (the operator job to launch with its config, or the CRM field to fix); runbook: "
        f"{RUNBOOK}."
    )
    return Finding(False, summary, {**counts, "total": total, "listed": len(rows)}, rows)


def _parent_statuses(
    store: StateStore, endpoints: EndpointRegistry, records: list[dict[str, Any]]
) -> dict[tuple[str, str], str]:
    """(parent endpoint, parent key) → its status, for the held rows listed."""
    wanted: dict[str, set[str]] = {}
    for r in records:
        parent = endpoints.parent_of(r["endpoint"])
        if r["status"] == Status.HELD and parent is not None and r["parent_key"] is not None:
            wanted.setdefault(parent, set()).add(r["parent_key"])
    out: dict[tuple[str, str], str] = {}
    for parent, keys in wanted.items():
        for p in store.records(endpoint=parent, keys=sorted(keys)):
            out[parent, p["source_key"]] = p["status"]
    return out


def _row(
    r: dict[str, Any],
    endpoints: EndpointRegistry,
    parents: dict[tuple[str, str], str],
    job_name: Callable[[str], str],
) -> dict[str, Any]:
    endpoint, key, status = r["endpoint"], r["source_key"], r["status"]
    spec = endpoints.get(endpoint)
    shown = written_key(spec.relation, key)
    reason_by, reason = labelled_reason(r["reason"], r["reason_source"])
    if status == Status.HELD and spec.parent is not None and r["parent_key"] is not None:
        parent_status = parents.get((spec.parent, r["parent_key"]), "not staged")
        parent = f"{spec.parent} {written_key(endpoints.get(spec.parent).relation, r['parent_key'])}"
        reason = f"held for its parent {parent}, which is {parent_status}"
        next_step = f"act on its parent {parent} ({parent_status}; listed here): it is sent once the parent imports"
    elif status == Status.DELIVERY_UNKNOWN:
        next_step = (
            "look the movement up in Gestimum, then launch "
            + _config(
                job_name(RECONCILE_JOB),
                {"source_keys": [key], "delivered": True, "document": "<number>", "actor": YOUR_NAME},
            )
            + ' (or "delivered": false if Gestimum does not have it: it is sent again)'
        )
    elif r["reason_source"] == "gestimum":
        next_step = (
            "once Gestimum has what it lacked, launch "
            + _config(job_name(RETRY_JOB), {"endpoint": endpoint, "source_keys": [shown], "actor": YOUR_NAME})
            + f"; a fix of crm.{spec.relation} needs no step (the next sync re-reads the row)"
        )
    else:
        next_step = _crm_fix(endpoint, spec.relation, shown, r["reason"] or "")
    return {
        "endpoint": endpoint,
        "key": shown,
        "status": status,
        "reason_by": reason_by,
        "reason": reason,
        "since": r["updated_at"].isoformat(timespec="seconds") if r["updated_at"] else "",
        "next_step": next_step,
    }


def _crm_fix(endpoint: str, relation: str, shown: str, reason: str) -> str:
    """Our validation's rejection: the CRM field to fix (the reason names the Gestimum field)."""
    match = _FIELD.search(reason)
    field = match.group(1) if match else None
    columns = FIELD_SOURCES.get(endpoint, {}).get(field or "", ())
    if field in contract.relation(relation).columns:
        columns = (field,)
    if columns and field:
        where = " / ".join(f"crm.{relation}.{c}" for c in columns)
        if field not in columns:
            where += f" (Gestimum field {field})"
    else:
        where = f"the crm.{relation} row"
    return f"fix {where} of {shown} in the CRM, as the reason says: the next sync re-reads it"
