"""The operator's actions on rows of the state store: retry, ignore, reconcile.

One implementation for both ways in: the `gestimum-pipeline` command (cli.py) and the
Dagster jobs launched from the UI's Launchpad (defs/operator_jobs.py). Each action moves
the named rows between statuses and records who did it (and, from Dagster, the run id) in
the state store's audit trail (the `actions` table); the next sync acts on the result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from gestimum_pipeline.crm import contract
from gestimum_pipeline.sync.endpoints import EndpointRegistry
from gestimum_pipeline.sync.mapping import source_key
from gestimum_pipeline.sync.state import StateStore, Status

RETRY_REASON = "re-queued by `retry`: staged again from the CRM's current row before it is sent"


class OperatorError(ValueError):
    """The action cannot be applied as asked; the message says what to pass instead."""


@dataclass(frozen=True)
class ActionOutcome:
    action: str
    endpoint: str
    to_status: str
    from_statuses: tuple[str, ...]
    changed: list[str]
    # Rejected locally: no line to send again, only a corrected CRM row can be staged.
    without_line: list[str] = field(default_factory=list)
    # Not in one of `from_statuses` (or unknown keys): left as they were.
    skipped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.without_line and not self.skipped

    def summary(self) -> str:
        text = f"{self.action}: {len(self.changed)} {self.endpoint} rows now {self.to_status}"
        if self.without_line:
            text += f"; not changed (rejected locally, fix the CRM row): {', '.join(self.without_line)}"
        if self.skipped:
            text += f"; not changed (not in {'/'.join(self.from_statuses)}): {', '.join(self.skipped)}"
        return text


def _validate(endpoints: EndpointRegistry, endpoint: str, keys: Sequence[str], actor: str) -> None:
    if endpoint not in endpoints:
        raise OperatorError(f"unknown endpoint {endpoint!r}; known: {', '.join(endpoints.names)}")
    if not keys:
        raise OperatorError("no source keys given (see `gestimum-pipeline rejections`)")
    if not actor.strip():
        raise OperatorError("who is acting? an actor name is required (it is recorded with the action)")


# How people write a composite key (`customer / item`), as the rows-to-act-on view shows it.
KEY_PARTS_SEPARATOR = " / "


def written_key(relation: str, key: str) -> str:
    """A source key as people write it: a composite key's codes joined by ` / `, not a JSON array."""
    if len(contract.relation(relation).key_columns) < 2:
        return key
    try:
        parts = json.loads(key)
    except ValueError:
        return key
    return KEY_PARTS_SEPARATOR.join(str(p) for p in parts) if isinstance(parts, list) else key


def _source_keys(endpoints: EndpointRegistry, endpoint: str, keys: Sequence[str]) -> list[str]:
    """The source keys of `keys`, given as stored (a JSON array for a composite key) or as written."""
    width = len(contract.relation(endpoints.get(endpoint).relation).key_columns)
    if width < 2:
        return list(keys)
    out = []
    for key in keys:
        parts = key.split(KEY_PARTS_SEPARATOR)
        out.append(source_key(*parts) if len(parts) == width and not key.startswith("[") else key)
    return out


def _apply(
    store: StateStore,
    action: str,
    endpoint: str,
    keys: Sequence[str],
    *,
    actor: str,
    from_statuses: tuple[str, ...],
    to_status: str,
    needs_line: bool = False,
    run_id: str | None = None,
    document: str | None = None,
    reason: str | None = None,
) -> ActionOutcome:
    wanted = list(dict.fromkeys(keys))
    sendable, without_line = store.sendable_keys(endpoint, wanted) if needs_line else (wanted, [])
    changed = (
        store.apply_action(
            action,
            endpoint,
            sendable,
            actor=actor,
            from_statuses=from_statuses,
            to_status=to_status,
            document=document,
            reason=reason,
            run_id=run_id,
        )
        if sendable
        else []
    )
    refused = sorted(set(without_line))
    skipped = sorted(set(wanted) - set(changed) - set(refused))
    return ActionOutcome(action, endpoint, to_status, from_statuses, changed, refused, skipped)


def retry(
    store: StateStore,
    endpoints: EndpointRegistry,
    endpoint: str,
    keys: Sequence[str],
    *,
    actor: str,
    run_id: str | None = None,
) -> ActionOutcome:
    """Re-queues rejected, held or ignored rows: the next sync stages each again from the CRM's
    current row (sync/refresh.py), then sends it; a stale line is never sent."""
    _validate(endpoints, endpoint, keys, actor)
    keys = _source_keys(endpoints, endpoint, keys)
    # Only rows that still carry their line can be re-sent; locally rejected rows need a CRM fix.
    # The reason (source `operator`) is what marks the row to be read again from the CRM.
    return _apply(
        store,
        "retry",
        endpoint,
        keys,
        actor=actor,
        from_statuses=(Status.REJECTED, Status.HELD, Status.IGNORED),
        to_status=Status.PENDING,
        needs_line=True,
        run_id=run_id,
        reason=RETRY_REASON,
    )


def ignore(
    store: StateStore,
    endpoints: EndpointRegistry,
    endpoint: str,
    keys: Sequence[str],
    *,
    actor: str,
    note: str | None = None,
    run_id: str | None = None,
) -> ActionOutcome:
    """Marks rows ignored: not sent, re-opened when the CRM row changes. An imported row may be
    ignored too: one deleted in the CRM and removed in Gestimum by hand, marked handled."""
    _validate(endpoints, endpoint, keys, actor)
    keys = _source_keys(endpoints, endpoint, keys)
    return _apply(
        store,
        "ignore",
        endpoint,
        keys,
        actor=actor,
        from_statuses=(Status.REJECTED, Status.HELD, Status.PENDING, Status.IMPORTED),
        to_status=Status.IGNORED,
        reason=note,
        run_id=run_id,
    )


def document_endpoint(endpoints: EndpointRegistry) -> str:
    """The endpoint whose requests create documents (the only one that leaves delivery_unknown rows)."""
    documents = [spec.name for spec in endpoints if spec.creates_documents]
    if not documents:
        raise OperatorError("no endpoint creates documents: nothing to reconcile")
    return documents[0]


def reconcile(
    store: StateStore,
    endpoints: EndpointRegistry,
    keys: Sequence[str],
    *,
    actor: str,
    delivered: bool,
    document: str | None = None,
    run_id: str | None = None,
) -> ActionOutcome:
    """Settles stock movements whose delivery is unknown: `delivered` (Gestimum has them, as
    `document`) marks them imported; otherwise they are released, to be sent again."""
    endpoint = document_endpoint(endpoints)
    _validate(endpoints, endpoint, keys, actor)
    if delivered:
        if not (document or "").strip():
            raise OperatorError("delivered needs the Gestimum document these movements became")
        return _apply(
            store,
            "reconcile-delivered",
            endpoint,
            keys,
            actor=actor,
            from_statuses=(Status.DELIVERY_UNKNOWN,),
            to_status=Status.IMPORTED,
            document=(document or "").strip(),
            run_id=run_id,
        )
    return _apply(
        store,
        "reconcile-release",
        endpoint,
        keys,
        actor=actor,
        from_statuses=(Status.DELIVERY_UNKNOWN,),
        to_status=Status.PENDING,
        run_id=run_id,
    )
