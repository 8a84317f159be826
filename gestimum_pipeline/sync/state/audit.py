"""The operator's moves (retry, ignore, reconcile), each an edge of TRANSITIONS, and their audit trail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gestimum_pipeline.sync.state.base import StoreBase
from gestimum_pipeline.sync.state.status import OPERATOR_EVENTS, Event, Status, TransitionError, target


def operator_event(action: str) -> Event:
    """The TRANSITIONS event of an operator action named as the CLI names it (`retry`, …)."""
    try:
        event = Event(action)
    except ValueError:
        event = None
    if event not in OPERATOR_EVENTS:
        names = ", ".join(sorted(e.value for e in OPERATOR_EVENTS))
        raise TransitionError(f"unknown operator action {action!r}; known: {names}")
    return event  # type: ignore[return-value]


class AuditMixin(StoreBase):
    """Owns `actions`; moves records only along the operator's edges of TRANSITIONS."""

    def apply_action(
        self,
        action: str,
        endpoint: str,
        keys: Sequence[str],
        *,
        actor: str,
        from_statuses: Sequence[str],
        to_status: str,
        document: str | None = None,
        reason: str | None = None,
        run_id: str | None = None,
    ) -> list[str]:
        """Moves the given rows between statuses and records who did it (and the Dagster run that
        did it, for actions launched from the UI); returns the keys changed.

        Each (from status, action) → `to_status` must be an edge of TRANSITIONS."""
        event = operator_event(action)
        to = Status(to_status)  # an unknown status is a ValueError
        for source in from_statuses:
            if target(Status(source), event) is not to:
                raise TransitionError(f"{action} takes a {source} record to {target(Status(source), event)}, not {to}")
        conn = self.conn
        with conn, conn.cursor() as cur:
            # A marking transaction holds its lease row FOR SHARE: waiting for it here means the
            # UPDATE below sees its request (open, so the row is refused) or none, never half.
            cur.execute(self._sql("wait_for_markings"))
            cur.execute(
                self._sql("operator_move"),
                {
                    "to": to.value,
                    "reason": reason,
                    "document": document,
                    "endpoint": endpoint,
                    "keys": list(keys),
                    "from": [Status(s).value for s in from_statuses],
                },
            )
            changed = [k for (k,) in cur.fetchall()]
            self._compact_counts(cur)  # type: ignore[attr-defined]
            for key in changed:
                detail = (
                    {"to": to.value, "document": document, "reason": reason}
                    | ({"run_id": run_id} if run_id else {})
                    | self.action_provenance
                )
                cur.execute(self._sql("record_action"), (actor, action, endpoint, key, json.dumps(detail, default=str)))
        return changed

    def actions(self, limit: int = 100) -> list[dict[str, Any]]:
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("actions"), (limit,))
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
