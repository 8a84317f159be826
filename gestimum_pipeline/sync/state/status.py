"""The state machine of a record: its statuses, the events that move it, and the one table of moves.

Every status a record takes is a `Status`; the CHECK constraint of `records.status` (migration
0001) lists exactly these values, and a test holds them equal. Every move is an edge of
`TRANSITIONS` (status × event → status), the operator's included: the SQL that writes a
status names the events it implements (`-- events:` in its .sql section) and a test checks
each status it sets, and each status it moves from, against this table.

`in_flight` is derived since migration 7: a record whose key is in an open request of the
ledger (`requests`, state `in_flight`) is in flight while its stored status stays `pending`;
`counts()`, `records()` and the `record_status` view show it so. Stores written by earlier
versions may still hold a stored `in_flight`, settled like an open request. The outcome of a
request therefore leaves from the stored status too (`pending`, or a version queued behind
the line sent), which is why those edges appear beside the ones from `in_flight`.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # staged, waiting to be sent (carries its encoded line)
    IN_FLIGHT = "in_flight"  # inside a request whose answer is not recorded yet (derived; see above)
    IMPORTED = "imported"  # Gestimum counted it as imported
    REJECTED = "rejected"  # refused locally or by Gestimum (reason_source says which)
    HELD = "held"  # not sent: its parent is rejected, held or ignored
    DELIVERY_UNKNOWN = "delivery_unknown"  # a stock movement that may or may not be a document
    IGNORED = "ignored"  # dropped by an operator, or withdrawn (gone from the CRM before sending)


class RequestState(StrEnum):
    """The state of one request of the ledger (`requests.state`)."""

    IN_FLIGHT = "in_flight"  # posted (or about to be): its rows are in flight
    ANSWERED = "answered"  # Gestimum answered; the records hold the outcome
    FAILED = "failed"  # surely not delivered: its rows wait to be sent again
    UNKNOWN = "unknown"  # stock that may have been delivered: its rows are delivery_unknown
    ABANDONED = "abandoned"  # master data left open by a run that died: sent again (an upsert)


class ReasonSource(StrEnum):
    """Who gave a record's `reason` (`records.reason_source`)."""

    LOCAL = "local"  # refused before sending (validation, duplicate or colliding key)
    GESTIMUM = "gestimum"  # Gestimum rejected the line
    PARENT = "parent"  # held behind its parent
    DELIVERY = "delivery"  # the request failed or its answer was lost
    OPERATOR = "operator"  # an operator's note
    CRM = "crm"  # the CRM row is gone (withdrawn)


class Event(StrEnum):
    """What moves a record. The operator's actions carry their CLI names."""

    STAGE = "stage"  # a new or changed CRM version that maps to a valid line
    STAGE_INVALID = "stage_invalid"  # a new or changed CRM version refused locally
    SEND = "send"  # the request's ledger row is committed: in flight
    ANSWER_IMPORTED = "answer_imported"  # Gestimum imported the line sent (the version staged)
    ANSWER_REJECTED = "answer_rejected"  # Gestimum rejected the line sent (the version staged)
    REQUEUE = "requeue"  # the flight ended for an older version (or failed): the version staged waits
    REQUEUE_INVALID = "requeue_invalid"  # …and the version staged meanwhile was refused locally
    DELIVERY_UNKNOWN = "delivery_unknown"  # a stock request failed after Gestimum may have processed it
    HOLD = "hold"  # its parent is rejected, held or ignored
    RELEASE = "release"  # its parent imported since
    COLLIDE = "collide"  # its key differs only by case or trailing spaces from another's
    WITHDRAW = "withdraw"  # a movement gone from the CRM before it was sent
    RETRY = "retry"  # operator: send it again
    IGNORE = "ignore"  # operator: never send it
    RECONCILE_DELIVERED = "reconcile-delivered"  # operator: Gestimum has it (a document)
    RECONCILE_RELEASE = "reconcile-release"  # operator: Gestimum does not have it, send it again


# The source of a record not in the store yet (the first staging of a key).
NEW = None

OPERATOR_EVENTS = frozenset({Event.RETRY, Event.IGNORE, Event.RECONCILE_DELIVERED, Event.RECONCILE_RELEASE})

_S = Status
_STAGEABLE = (NEW, _S.PENDING, _S.IMPORTED, _S.REJECTED, _S.HELD, _S.IGNORED)

TRANSITIONS: dict[tuple[Status | None, Event], Status] = {
    # A changed CRM version is staged (master data: whatever was sent; stock: only while it was
    # never sent, `pending` or rejected locally, or withdrawn). A version changed while its
    # row is stored in flight (stores before migration 7) is queued behind the line sent.
    **{(source, Event.STAGE): _S.PENDING for source in _STAGEABLE},
    **{(source, Event.STAGE_INVALID): _S.REJECTED for source in _STAGEABLE},
    (_S.IN_FLIGHT, Event.STAGE): _S.IN_FLIGHT,
    (_S.IN_FLIGHT, Event.STAGE_INVALID): _S.IN_FLIGHT,
    (_S.PENDING, Event.SEND): _S.IN_FLIGHT,
    # The answer (the stored status of a row in an open request is `pending`, or `rejected` for
    # a queued version refused locally; a late stock answer overrides a writer's delivery_unknown).
    **{
        (source, Event.ANSWER_IMPORTED): _S.IMPORTED
        for source in (_S.IN_FLIGHT, _S.PENDING, _S.REJECTED, _S.DELIVERY_UNKNOWN)
    },
    **{
        (source, Event.ANSWER_REJECTED): _S.REJECTED
        for source in (_S.IN_FLIGHT, _S.PENDING, _S.REJECTED, _S.DELIVERY_UNKNOWN)
    },
    (_S.IN_FLIGHT, Event.REQUEUE): _S.PENDING,
    (_S.PENDING, Event.REQUEUE): _S.PENDING,
    (_S.IN_FLIGHT, Event.REQUEUE_INVALID): _S.REJECTED,
    (_S.PENDING, Event.REQUEUE_INVALID): _S.REJECTED,
    (_S.REJECTED, Event.REQUEUE_INVALID): _S.REJECTED,
    (_S.IN_FLIGHT, Event.DELIVERY_UNKNOWN): _S.DELIVERY_UNKNOWN,
    (_S.PENDING, Event.DELIVERY_UNKNOWN): _S.DELIVERY_UNKNOWN,
    (_S.REJECTED, Event.DELIVERY_UNKNOWN): _S.DELIVERY_UNKNOWN,
    (_S.PENDING, Event.HOLD): _S.HELD,
    (_S.HELD, Event.RELEASE): _S.PENDING,
    (_S.REJECTED, Event.RELEASE): _S.PENDING,
    (_S.PENDING, Event.COLLIDE): _S.REJECTED,
    (_S.PENDING, Event.WITHDRAW): _S.IGNORED,
    # The operator's moves (sync/operator.py).
    (_S.REJECTED, Event.RETRY): _S.PENDING,
    (_S.HELD, Event.RETRY): _S.PENDING,
    (_S.IGNORED, Event.RETRY): _S.PENDING,
    (_S.REJECTED, Event.IGNORE): _S.IGNORED,
    (_S.HELD, Event.IGNORE): _S.IGNORED,
    (_S.PENDING, Event.IGNORE): _S.IGNORED,
    # An imported row whose CRM row is gone, removed in Gestimum by hand: marked handled (the
    # deletions check stops listing it). A movement ignored so is never staged again.
    (_S.IMPORTED, Event.IGNORE): _S.IGNORED,
    (_S.DELIVERY_UNKNOWN, Event.RECONCILE_DELIVERED): _S.IMPORTED,
    (_S.DELIVERY_UNKNOWN, Event.RECONCILE_RELEASE): _S.PENDING,
}

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
REQUEST_STATES: tuple[str, ...] = tuple(s.value for s in RequestState)


class TransitionError(ValueError):
    """A move that is not an edge of TRANSITIONS."""


def target(source: Status | None, event: Event) -> Status:
    """Where `event` takes a record in `source`; a move not in the table is an error."""
    try:
        return TRANSITIONS[(source, event)]
    except KeyError:
        raise TransitionError(f"{event.value} does not apply to a {source or 'new'} record") from None


def sources(event: Event) -> list[Status | None]:
    """The statuses `event` moves a record from."""
    return [s for (s, e) in TRANSITIONS if e is event]


def transition_table_markdown() -> str:
    """TRANSITIONS as a Markdown table (docs/reliability.md): one row per event and target status."""
    lines = ["| event | from | to |", "|---|---|---|"]
    for event in Event:
        by_target: dict[Status, list[str]] = {}
        for (source, e), to in TRANSITIONS.items():
            if e is event:
                by_target.setdefault(to, []).append("(new)" if source is None else f"`{source.value}`")
        for to, froms in by_target.items():
            lines.append(f"| `{event.value}` | {', '.join(froms)} | `{to.value}` |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m gestimum_pipeline.sync.state.status: the table for the docs
    print(transition_table_markdown())
