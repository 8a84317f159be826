"""Progress lines for long steps, so a data team can tell a slow run from a stuck one.

A transform logs the rows it has read so far and its rate; a sink logs the request it is
at, the lines sent of those pending when it started, its rate and the time left. A line
goes out at most every `interval_seconds` (a short step logs none), plus a last one when a
step that logged progress ends.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

DEFAULT_INTERVAL_SECONDS = 10.0


class ProgressLog:
    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
        what: str,
        *,
        unit: str,
        total: int | None = None,
        per_request: int | None = None,
        interval_seconds: float | None = None,  # None: DEFAULT_INTERVAL_SECONDS, read now
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.unit = unit
        self.total = total
        # Requests still to come, estimated from the lines pending and the lines a request holds.
        self.total_requests = math.ceil(total / per_request) if total and per_request else None
        self.interval = DEFAULT_INTERVAL_SECONDS if interval_seconds is None else interval_seconds
        self.clock = clock
        self.started = clock()
        self.last_logged = self.started
        self.lines_logged = 0

    def update(self, done: int, *, requests: int | None = None) -> None:
        """Record progress; logs a line if `interval_seconds` passed since the last one."""
        now = self.clock()
        if now - self.last_logged >= self.interval:
            self._log(done, requests, now)

    def finish(self, done: int, *, requests: int | None = None) -> None:
        """The step's last line, if it logged any progress (a short step stays quiet)."""
        if self.lines_logged:
            self._log(done, requests, self.clock())

    def message(self, done: int, requests: int | None, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        parts = [self.what + ":"]
        if requests is not None:
            of = f" of about {max(self.total_requests, requests)}" if self.total_requests else ""
            parts.append(f"request {requests}{of},")
        of_total = f" of {self.total:,}" if self.total else ""
        parts.append(f"{self.unit} {done:,}{of_total},")
        parts.append(f"{rate:,.0f} {self.unit}/s,")
        if self.total and rate > 0 and done < self.total:
            parts.append(f"ETA {(self.total - done) / rate:,.0f} s")
        else:
            parts.append(f"{elapsed:,.0f} s so far")
        return " ".join(parts)

    def _log(self, done: int, requests: int | None, now: float) -> None:
        self.logger.info(self.message(done, requests, now))
        self.last_logged = now
        self.lines_logged += 1
