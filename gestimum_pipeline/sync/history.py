""" "Why is this row not in Gestimum?": one row's whole story, and the one step that would move it.

One implementation for the `gestimum-pipeline history` command (cli.py) and the UI's
`operator_history` job (defs/operator_jobs.py). It reads the state store only
(`StateStore.row_history`): each CRM version staged (when, which run, its hash), each request
that carried the row (request id, run, time, Gestimum's answer for this line with the journal
lines it gave, the request's statistics), the operators' actions, the current status, and the
next step. Imported lines are not logged one by one (the send path writes one UPDATE per line,
nothing more): the import shown is the record's own, the version Gestimum holds now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gestimum_pipeline.sync.endpoints import EndpointRegistry
from gestimum_pipeline.sync.state import ReasonSource, StateStore, Status

_VERSION_EVENTS = {
    "stage": "CRM version staged",
    "stage_invalid": "CRM version refused locally",
    "collide": "refused locally (colliding key)",
}


@dataclass(frozen=True)
class Entry:
    """One dated line of the timeline."""

    at: datetime | None
    kind: str  # version, request, action
    text: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowHistory:
    endpoint: str
    source_key: str
    status: str | None  # None: the store has never seen this key
    reason: str | None
    timeline: list[Entry]
    next_step: str
    record: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "source_key": self.source_key,
            "status": self.status,
            "reason": self.reason,
            "record": _plain(self.record),
            "timeline": [
                {"at": _plain(e.at), "kind": e.kind, "text": e.text, **_plain(e.detail)} for e in self.timeline
            ],
            "next_step": self.next_step,
        }

    def as_text(self) -> str:
        lines = [f"{self.endpoint} {self.source_key}: {self.status or 'not in the state store'}"]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        for e in self.timeline:
            when = e.at.isoformat(timespec="seconds") if e.at else "?"
            lines.append(f"{when}  {e.text}")
        lines.append(f"next step: {self.next_step}")
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _short(content_hash: str | None) -> str:
    return (content_hash or "?")[:12]


def row_history(
    store: StateStore, endpoints: EndpointRegistry, endpoint: str, source_key: str, *, company: str | None = None
) -> RowHistory:
    """The story of `endpoint` row `source_key`; `company` is added to the commands it suggests."""
    data = store.row_history(endpoint, source_key)
    record = data["record"]
    timeline: list[Entry] = []
    rejections: dict[str, dict[str, Any]] = {}
    for e in data["log"]:
        if e["event"] == "answer_rejected":
            rejections[e["request_id"] or ""] = e
            continue
        what = _VERSION_EVENTS.get(e["event"], e["event"])
        where = f" in run {e['run_id']}" if e["run_id"] else ""
        part = f", partition {e['partition']}" if e["partition"] else ""
        text = f"{what}{where}{part}: hash {_short(e['content_hash'])}"
        if e["reason"]:
            text += f"; reason: {e['reason']}"
        detail = {k: e[k] for k in ("event", "content_hash", "run_id", "partition", "reason")}
        timeline.append(Entry(e["at"], "version", text, detail))
    seen: set[str] = set()
    for q in data["requests"]:
        seen.add(q["request_id"])
        answer, why, sent = _answer(q, record, rejections.get(q["request_id"]))
        stats = (
            f"{q['imported']} imported, {q['rejected']} rejected of {q['lines']} lines"
            if q["imported"] is not None
            else f"{q['lines']} lines"
        )
        text = (
            f"request {q['request_id']} (run {q['run_id'] or '?'}, {q['state']}; {stats}) carried hash "
            f"{_short(sent)}: {answer}"
        )
        if why:
            text += f"; Gestimum's journal: {why}" if answer == "rejected" else f"; {why}"
        detail = {
            "request_id": q["request_id"],
            "run_id": q["run_id"],
            "request_state": q["state"],
            "lines": q["lines"],
            "imported": q["imported"],
            "rejected": q["rejected"],
            "settled_at": q["settled_at"],
            "content_hash": sent,
            "answer": answer,
            "reason": why,
        }
        timeline.append(Entry(q["sent_at"], "request", text, detail))
    for request_id, e in rejections.items():  # a request the ledger no longer holds (pruned by hand)
        if request_id not in seen:
            text = f"request {request_id or '?'} carried hash {_short(e['content_hash'])}: rejected; {e['reason']}"
            detail = {"request_id": request_id, "answer": "rejected", "reason": e["reason"]}
            timeline.append(Entry(e["at"], "request", text, detail))
    for a in data["actions"]:
        extra = a["detail"] or {}
        note = f", note: {extra['reason']}" if extra.get("reason") else ""
        run = f", run {extra['run_id']}" if extra.get("run_id") else ""
        text = f"operator {a['actor']}: {a['action']} (to {extra.get('to', '?')}{note}{run})"
        timeline.append(Entry(a["at"], "action", text, {"actor": a["actor"], "action": a["action"], **extra}))
    timeline.sort(key=lambda e: (e.at is None, e.at or datetime.min))
    return RowHistory(
        endpoint=endpoint,
        source_key=source_key,
        status=record["status"] if record else None,
        reason=record["reason"] if record else None,
        timeline=timeline,
        next_step=next_step(endpoints, endpoint, source_key, record, company=company),
        record=record,
    )


def _answer(
    q: dict[str, Any], record: dict[str, Any] | None, rejection: dict[str, Any] | None
) -> tuple[str, str | None, str | None]:
    """(Gestimum's answer for this line, its reason, the hash sent) in request `q`."""
    if rejection is not None:
        return "rejected", rejection["reason"], rejection["content_hash"]
    state = q["state"]
    if state == "in_flight":
        return "waiting for Gestimum's answer", None, q["sent_hash"]
    if state in ("failed", "unknown", "abandoned"):
        return f"no answer ({state})", q["reason"], q["sent_hash"]
    if record is not None and record["request_id"] == q["request_id"] and record["imported_hash"]:
        return "imported", None, record["sent_hash"] or record["imported_hash"]
    return "answered", None, q["sent_hash"]


def next_step(
    endpoints: EndpointRegistry,
    endpoint: str,
    source_key: str,
    record: dict[str, Any] | None,
    *,
    company: str | None = None,
) -> str:
    """The one step that would move the row, with the command to type."""
    opt = f" --company {company}" if company else ""
    key = _quoted(source_key)
    if record is None:
        return (
            f"none of {endpoint}'s runs has read this key: check the CRM row's key and change time, then run the "
            "partition of that day (or check the key: `gestimum-pipeline rejections" + opt + f" --endpoint {endpoint}`)"
        )
    status, source = record["status"], record["reason_source"]
    if status == Status.PENDING:
        return f"none: the next run of gestimum/{endpoint} sends it"
    if status == Status.IN_FLIGHT:
        return (
            f"wait: request {record['request_id']} is waiting for Gestimum's answer (if its run died, the next "
            "run settles it)"
        )
    if status == Status.IMPORTED:
        if record["diverged_hash"]:
            return (
                "the CRM movement changed after Gestimum imported it (a movement is never sent twice): correct "
                f"document {record['document'] or '?'} in Gestimum by hand"
            )
        return "none: Gestimum holds the version staged"
    if status == Status.HELD:
        parent = endpoints.parent_of(endpoint)
        return (
            f"fix its parent first: `gestimum-pipeline history{opt} --endpoint {parent} "
            f"{_quoted(record['parent_key'] or '?')}`; it is released once the parent imports"
        )
    if status == Status.DELIVERY_UNKNOWN:
        return (
            "check in Gestimum whether the movement became a document, then `gestimum-pipeline reconcile"
            f"{opt} --delivered --document NUMBER {key}` or `gestimum-pipeline reconcile{opt} --release {key}`"
        )
    if status == Status.IGNORED:
        if source == ReasonSource.CRM:
            return "none: the row was gone from the CRM before it was sent"
        return f"none while ignored; to send it after all: `gestimum-pipeline retry{opt} --endpoint {endpoint} {key}`"
    if status == Status.REJECTED and source == ReasonSource.LOCAL and not record["has_line"]:
        return "fix the CRM row as the reason says: the next run stages it again (there is no line to retry)"
    if status == Status.REJECTED and source == ReasonSource.LOCAL:
        return (
            "rename one of the colliding codes in the CRM, then "
            f"`gestimum-pipeline retry{opt} --endpoint {endpoint} {key}`"
        )
    if status == Status.REJECTED:
        return (
            "fix what Gestimum's reason names (the CRM row: the next run sends the corrected row; or Gestimum "
            f"itself), then send it again: `gestimum-pipeline retry{opt} --endpoint {endpoint} {key}`"
        )
    return f"unknown status {status}"


def _quoted(key: str) -> str:
    """A key as a shell argument (composite keys are JSON arrays, with quotes and spaces)."""
    if key and all(c.isalnum() or c in "-_.:/@" for c in key):
        return key
    return "'" + key.replace("'", "'\\''") + "'"
