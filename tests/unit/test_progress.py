"""Progress lines of long steps: at most one per interval, with rate and time left."""

from __future__ import annotations

import logging

import pytest

from gestimum_pipeline.sync.progress import ProgressLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sink_logs_request_lines_rate_and_eta_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = ProgressLog(
        logging.getLogger("t"),
        "sending clients",
        unit="lines",
        total=100_000,
        per_request=10_000,
        interval_seconds=10,
        clock=clock,
    )
    caplog.set_level(logging.INFO, "t")
    clock.now += 4
    progress.update(10_000, requests=1)  # before the interval: quiet
    assert caplog.messages == []
    clock.now += 6
    progress.update(20_000, requests=2)
    clock.now += 1
    progress.update(25_000, requests=3)  # within the next interval: quiet
    clock.now += 9
    progress.update(40_000, requests=4)
    assert caplog.messages == [
        "sending clients: request 2 of about 10, lines 20,000 of 100,000, 2,000 lines/s, ETA 40 s",
        "sending clients: request 4 of about 10, lines 40,000 of 100,000, 2,000 lines/s, ETA 30 s",
    ]
    clock.now += 1
    progress.finish(42_000, requests=5)
    assert caplog.messages[-1].startswith("sending clients: request 5 of about 10, lines 42,000 of 100,000")


def test_a_transform_logs_rows_read_so_far_and_a_short_step_stays_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "t")
    clock = Clock()
    quiet = ProgressLog(logging.getLogger("t"), "staging comptes", unit="rows", interval_seconds=10, clock=clock)
    clock.now += 2
    quiet.update(5_000)
    quiet.finish(5_000)
    assert caplog.messages == []
    long = ProgressLog(logging.getLogger("t"), "staging comptes", unit="rows", interval_seconds=10, clock=clock)
    clock.now += 20
    long.update(300_000)
    assert caplog.messages == ["staging comptes: rows 300,000, 15,000 rows/s, 20 s so far"]


def test_more_requests_than_estimated_never_reads_backwards() -> None:
    clock = Clock()
    progress = ProgressLog(logging.getLogger("t"), "s", unit="lines", total=10, per_request=10, clock=clock)
    clock.now += 1
    assert "request 3 of about 3," in progress.message(10, 3, clock.now)  # request groups split the estimate
