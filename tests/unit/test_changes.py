"""The change sensor's pure logic (crm/changes.py): comparing probes, the days to sync, the cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gestimum_pipeline.crm.changes import MAX_TAIL_AGE, ChangeCursor, Probe, Tail, compare, days_between

AT = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
SINCE = AT - timedelta(minutes=10)
QUIET = {"customers": (2, "123"), "contacts": (0, "0")}


def _probe(compared: dict[str, Tail], kept: dict[str, tuple[int, str]] | None = None) -> Probe:
    return Probe(AT, SINCE - timedelta(seconds=30), SINCE, compared, kept or QUIET)


def _tail(signature: tuple[int, str], earliest: datetime | None = None, latest: datetime | None = None) -> Tail:
    return Tail(signature, earliest, latest)


def test_first_probe_reports_nothing_and_keeps_the_new_tail() -> None:
    changes = compare(None, Probe(AT, None, SINCE, {}, QUIET))
    assert not changes.any and changes.cursor == ChangeCursor(SINCE, QUIET)


def test_equal_signatures_are_no_change() -> None:
    cursor = ChangeCursor(SINCE - timedelta(seconds=30), QUIET)
    changes = compare(cursor, _probe({"customers": _tail((2, "123"), AT, AT), "contacts": _tail((0, "0"))}))
    assert not changes.any and changes.relations == ()


def test_a_changed_tail_spans_its_change_times_up_to_the_probe() -> None:
    cursor = ChangeCursor(SINCE - timedelta(seconds=30), QUIET)
    early = AT - timedelta(minutes=5)
    changes = compare(cursor, _probe({"customers": _tail((3, "456"), early, AT), "contacts": _tail((0, "0"))}))
    assert changes.relations == ("customers",)
    assert (changes.first, changes.last) == (early, AT)


def test_a_tail_emptied_by_deletions_spans_from_the_compared_bound() -> None:
    cursor = ChangeCursor(SINCE - timedelta(seconds=30), QUIET)
    changes = compare(cursor, _probe({"customers": _tail((0, "0")), "contacts": _tail((0, "0"))}))
    assert changes.relations == ("customers",)
    assert (changes.first, changes.last) == (SINCE - timedelta(seconds=30), AT)


def test_a_relation_missing_from_the_cursor_counts_as_changed() -> None:
    cursor = ChangeCursor(SINCE - timedelta(seconds=30), {"customers": (2, "123")})
    changes = compare(cursor, _probe({"customers": _tail((2, "123")), "contacts": _tail((0, "0"))}))
    assert changes.relations == ("contacts",)


def test_a_stale_cursor_reports_the_last_day() -> None:
    cursor = ChangeCursor(AT - timedelta(days=3), QUIET)
    changes = compare(cursor, Probe(AT, None, SINCE, {}, QUIET))
    assert changes.stale and (changes.first, changes.last) == (AT - MAX_TAIL_AGE, AT)


def test_days_between_are_days_of_the_partitions_time_zone() -> None:
    # 23:30 UTC is already the next day in Paris.
    late = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)
    assert days_between(late, late, "UTC") == ["2026-03-09"]
    assert days_between(late, late, "Europe/Paris") == ["2026-03-10"]
    assert days_between(late - timedelta(days=1), late, "UTC") == ["2026-03-08", "2026-03-09"]


def test_cursor_round_trips_and_unreadable_cursors_start_afresh() -> None:
    cursor = ChangeCursor(SINCE, {"customers": (3, "-922337203685477580799")})
    assert ChangeCursor.from_json(cursor.to_json()) == cursor
    for text in (None, "", "not json", '{"v": 0}', '{"v": 1, "since": "2026-03-10T09:00:00", "tails": {}}', "[]"):
        assert ChangeCursor.from_json(text) is None
