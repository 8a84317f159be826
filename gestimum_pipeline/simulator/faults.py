"""Injected failures: the ways a real Gestimum server or network lets a client down.

A fault applies to the next `count` import requests it matches (all endpoints when
`endpoint` is None), then disappears. One request takes at most one fault: the
oldest queued fault that matches it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from gestimum_pipeline.gestimum.catalog import ENDPOINTS

HTTP_500 = "http_500"  # answer 500, import nothing
HTTP_503 = "http_503"  # answer 503 (optional Retry-After), import nothing
CLOSE_AFTER_READ = "close_after_read"  # read the body, maybe import, close without answering
MALFORMED = "malformed"  # maybe import, answer 200 with truncated JSON
SLOW = "slow"  # import, then wait `seconds` before answering
BAD_STATS = "bad_stats"  # import, answer statistics that do not add up
DELAY = "delay"  # wait `seconds`, then import and answer normally
TRUNCATED = "truncated"  # maybe import, announce the full Content-Length, send half the body, close

FAULT_KINDS = (HTTP_500, HTTP_503, CLOSE_AFTER_READ, MALFORMED, SLOW, BAD_STATS, DELAY, TRUNCATED)
# Kinds for which `process=False` means "Gestimum did nothing" (the others either never
# import or always do).
PROCESS_OPTIONAL_KINDS = (CLOSE_AFTER_READ, MALFORMED, TRUNCATED)


@dataclass
class Fault:
    kind: str
    count: int = 1
    endpoint: str | None = None  # catalog Endpoint.name, e.g. "documents_stock"; None = every endpoint
    retry_after: float | None = None  # http_503 only: the Retry-After header, in seconds
    seconds: float = 0.0  # slow / delay
    process: bool = True  # close_after_read / malformed / truncated: import before failing?

    def validate(self) -> None:
        """Raises ValueError naming the first thing wrong."""
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"fault count must be an integer >= 1, got {self.count!r}")
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; known: {', '.join(ENDPOINTS)}")
        if self.retry_after is not None and (not _is_number(self.retry_after) or self.retry_after < 0):
            raise ValueError(f"retry_after must be a number >= 0, got {self.retry_after!r}")
        if not _is_number(self.seconds) or self.seconds < 0:
            raise ValueError(f"seconds must be a number >= 0, got {self.seconds!r}")
        if not isinstance(self.process, bool):
            raise ValueError(f"process must be true or false, got {self.process!r}")

    def matches(self, endpoint_name: str) -> bool:
        return self.endpoint is None or self.endpoint == endpoint_name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Builds and validates a fault from JSON; unknown keys are an error, not ignored."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "kind" not in data:
            raise ValueError("a fault needs a 'kind'")
        fault = cls(**data)
        fault.validate()
        return fault


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FaultQueue:
    """Thread-safe FIFO of faults with remaining counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []  # private copies; `count` is what remains

    def add(self, fault: Fault) -> None:
        fault.validate()
        with self._lock:
            self._pending.append(replace(fault))

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, endpoint_name: str) -> Fault | None:
        """The fault to apply to one request to `endpoint_name`, consuming one use of it."""
        with self._lock:
            for i, fault in enumerate(self._pending):
                if fault.matches(endpoint_name):
                    applied = replace(fault)
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._pending[i]
                    return applied
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return [replace(f) for f in self._pending]
