"""The state machine is one table: every status the SQL writes is an edge of TRANSITIONS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gestimum_pipeline.sync.state import MIGRATIONS, REQUEST_STATES, STATUSES, TRANSITIONS, Event, Status
from gestimum_pipeline.sync.state.sqlfiles import queries
from gestimum_pipeline.sync.state.status import OPERATOR_EVENTS, TransitionError, target, transition_table_markdown

STATUS_LITERAL = re.compile(r"'(" + "|".join(STATUSES) + r")'")


def test_the_table_enumerated() -> None:
    """Every edge, written out: a change to the state machine is a change to this list."""
    edges = {(s.value if s else None, e.value, t.value) for (s, e), t in TRANSITIONS.items()}
    stageable = [None, "pending", "imported", "rejected", "held", "ignored"]
    expected = {
        *((s, "stage", "pending") for s in stageable),
        *((s, "stage_invalid", "rejected") for s in stageable),
        ("in_flight", "stage", "in_flight"),
        ("in_flight", "stage_invalid", "in_flight"),
        ("pending", "send", "in_flight"),
        *((s, "answer_imported", "imported") for s in ("in_flight", "pending", "rejected", "delivery_unknown")),
        *((s, "answer_rejected", "rejected") for s in ("in_flight", "pending", "rejected", "delivery_unknown")),
        ("in_flight", "requeue", "pending"),
        ("pending", "requeue", "pending"),
        ("in_flight", "requeue_invalid", "rejected"),
        ("pending", "requeue_invalid", "rejected"),
        ("rejected", "requeue_invalid", "rejected"),
        ("in_flight", "delivery_unknown", "delivery_unknown"),
        ("pending", "delivery_unknown", "delivery_unknown"),
        ("rejected", "delivery_unknown", "delivery_unknown"),
        ("pending", "hold", "held"),
        ("held", "release", "pending"),
        ("rejected", "release", "pending"),
        ("pending", "collide", "rejected"),
        ("pending", "withdraw", "ignored"),
        ("rejected", "retry", "pending"),
        ("held", "retry", "pending"),
        ("ignored", "retry", "pending"),
        ("rejected", "ignore", "ignored"),
        ("held", "ignore", "ignored"),
        ("pending", "ignore", "ignored"),
        ("imported", "ignore", "ignored"),  # deleted in the CRM, removed in Gestimum by hand: handled
        ("delivery_unknown", "reconcile-delivered", "imported"),
        ("delivery_unknown", "reconcile-release", "pending"),
    }
    assert edges == expected
    # Every event moves something; every status is reachable and (but imported) can be left.
    assert {e for _, e in TRANSITIONS} == set(Event)
    assert {t for t in TRANSITIONS.values()} == set(Status)
    assert {s for s, _ in TRANSITIONS if s is not None} == set(Status)
    # A delivery in doubt is left only by an operator, or by Gestimum's own late answer.
    leaving = {e for (s, e), t in TRANSITIONS.items() if s is Status.DELIVERY_UNKNOWN and t is not s}
    assert leaving == {Event.RECONCILE_DELIVERED, Event.RECONCILE_RELEASE, Event.ANSWER_IMPORTED, Event.ANSWER_REJECTED}


def test_a_move_outside_the_table_is_refused() -> None:
    assert target(Status.DELIVERY_UNKNOWN, Event.RECONCILE_RELEASE) is Status.PENDING
    with pytest.raises(TransitionError, match="retry does not apply to a imported record"):
        target(Status.IMPORTED, Event.RETRY)
    with pytest.raises(TransitionError, match="stage does not apply to a delivery_unknown record"):
        target(Status.DELIVERY_UNKNOWN, Event.STAGE)


def test_the_check_constraints_match_the_enums() -> None:
    """Migration 0001's CHECK on records.status and 0007's on requests.state list exactly the enums."""
    first = MIGRATIONS[0].text
    check = re.search(r"status\s+text NOT NULL CHECK \(status IN\s*\(([^)]*)\)\)", first)
    assert check is not None
    assert set(re.findall(r"'(\w+)'", check.group(1))) == set(STATUSES)
    ledger = next(m for m in MIGRATIONS if "CREATE TABLE {schema}.requests" in m.text).text
    check = re.search(r"state\s+text NOT NULL CHECK \(state IN \(([^)]*)\)\)", ledger)
    assert check is not None
    assert set(re.findall(r"'(\w+)'", check.group(1))) == set(REQUEST_STATES)


TOKEN = re.compile(r"'(?:[^']|'')*'|\(|\)|,|\bCASE\b|\bEND\b|\bWHERE\b|\bFROM\b|\bRETURNING\b|\bON\b")


def _expression_after(text: str, start: int) -> str:
    """The SQL expression from `start` to the first comma (or WHERE/FROM/RETURNING) outside parentheses and CASE."""
    depth = 0
    for token in TOKEN.finditer(text, start):
        word = token.group(0)
        if word in ("(", "CASE"):
            depth += 1
        elif word in (")", "END"):
            if depth == 0:
                return text[start : token.start()]
            depth -= 1
        elif depth == 0 and word in (",", "WHERE", "FROM", "RETURNING", "ON"):
            return text[start : token.start()]
    return text[start:]


def _record_writes(text: str) -> tuple[set[str], set[str], bool]:
    """(statuses set, statuses moved from, whether a parameter sets it) for one query writing records."""
    update = re.search(r"UPDATE \{schema\}\.records(?: (?:AS )?(\w+))?", text)
    insert = re.search(r"INSERT INTO \{schema\}\.records(?: AS (\w+))?", text)
    alias = (update or insert).group(1) if (update or insert) else None
    targets: set[str] = set()
    parameter = False
    for assign in re.finditer(r"(?:SET|,)\s*status = ", text):
        expr = _expression_after(text, assign.end())
        targets |= set(STATUS_LITERAL.findall(expr))
        parameter |= "%(" in expr or "EXCLUDED.status" in expr
    if insert:
        select = text[insert.end() : text.find("ON CONFLICT") if "ON CONFLICT" in text else len(text)]
        targets |= set(STATUS_LITERAL.findall(select))
    # Moved from: positive tests of the written table's status (not NOT IN / <>, not another alias).
    qualifier = rf"(?:\b{alias}\.|(?<![\w.]))" if alias else r"(?:\b\w+\.|(?<![\w.]))"
    froms: set[str] = set()
    for test in re.finditer(qualifier + r"status (=|IN) (\('[^)]*\)|'\w+')", text):
        if re.search(r"(SET|,)\s*$", text[: test.start()]):
            continue  # the assignment itself
        froms |= set(STATUS_LITERAL.findall(test.group(2)))
    return targets, froms, parameter


WRITES_STATUS = re.compile(r"(UPDATE \{schema\}\.records|INSERT INTO \{schema\}\.records)")


def test_every_status_the_sql_writes_is_an_edge_of_the_table() -> None:
    """Each named query that writes records.status names its events; every status it sets is a
    target of one of them, and every status it moves from is a source of one of them."""
    checked = 0
    for query in queries().values():
        if not WRITES_STATUS.search(query.text) or not re.search(r"(SET|,)\s*status = ", query.text):
            if query.events:  # reads records to write elsewhere (the in-flight marker): its sources hold
                _, froms, _ = _record_writes(query.text)
                sources = {s.value for (s, e) in TRANSITIONS if e.value in query.events and s is not None}
                assert froms and froms <= sources, query.name
            continue
        assert query.events, f"{query.file}: {query.name} writes records.status without `-- events:`"
        events = [Event(e) for e in query.events]
        targets, froms, parameter = _record_writes(query.text)
        allowed_targets = {t.value for (s, e), t in TRANSITIONS.items() if e in events}
        allowed_sources = {s.value for (s, e) in TRANSITIONS if e in events and s is not None}
        assert targets <= allowed_targets, f"{query.name}: sets {targets - allowed_targets}, not an edge of {events}"
        assert froms <= allowed_sources, f"{query.name}: moves from {froms - allowed_sources}, not an edge"
        if parameter and not query.text.count("EXCLUDED.status"):
            # A status given as a parameter: only the operator's moves, checked edge by edge in Python.
            assert set(events) <= OPERATOR_EVENTS, query.name
        checked += 1
    assert checked >= 14  # every writer of records.status was looked at


def test_every_request_state_the_sql_writes_is_a_request_state() -> None:
    for query in queries().values():
        for found in re.finditer(r"state = '(\w+)'", query.text):
            assert found.group(1) in REQUEST_STATES, query.name


def test_the_reliability_doc_shows_the_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert transition_table_markdown() in doc, "regenerate the table: python -m gestimum_pipeline.sync.state.status"
