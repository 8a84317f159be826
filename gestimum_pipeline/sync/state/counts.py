"""Reading the store: exact per-status counts (trigger-kept deltas) and the records themselves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg2.extensions

from gestimum_pipeline.sync.state.base import StoreBase
from gestimum_pipeline.sync.state.status import Status

# Kept status deltas are folded into one row per (endpoint, status) beyond this many.
COMPACT_DELTAS_ABOVE = 2000


class CountsMixin(StoreBase):
    """Owns `status_deltas` (written by migration 0002's triggers, folded here)."""

    def counts(self, endpoint: str | None = None) -> dict[str, dict[str, int]]:
        """{endpoint: {status: count}} for one or all endpoints."""
        # Sums the trigger-kept deltas (migration 2): exact, and independent of the table's size.
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("status_counts"), {"e": endpoint})
            out: dict[str, dict[str, int]] = {}
            for ep, status, n in cur.fetchall():
                out.setdefault(ep, {})[status] = int(n)
            cur.execute(self._sql("open_request_lines"), {"e": endpoint})
            in_flight, pending = Status.IN_FLIGHT.value, Status.PENDING.value
            for ep, n in cur.fetchall():
                by_status = out.setdefault(ep, {})
                by_status[in_flight] = by_status.get(in_flight, 0) + int(n)
                left = by_status.get(pending, 0) - int(n)
                if left > 0:
                    by_status[pending] = left
                else:
                    by_status.pop(pending, None)
        return out

    def _compact_counts(self, cur: psycopg2.extensions.cursor) -> None:
        """Folds the kept deltas when they pile up; called on the write paths that add them."""
        cur.execute(self._sql("delta_rows"))
        if cur.fetchone()[0] > COMPACT_DELTAS_ABOVE:
            cur.execute(self._sql("compact_deltas"))

    def _has(self, endpoint: str, *statuses: str) -> bool:
        """Whether any record of `endpoint` has one of `statuses` (exact, from the kept counts)."""
        counts = self.counts(endpoint).get(endpoint, {})
        return any(counts.get(status, 0) > 0 for status in statuses)

    def waiting(
        self, endpoint: str, statuses: Sequence[str], *, older_than_seconds: float
    ) -> dict[str, tuple[int, datetime]]:
        """{status: (rows, oldest updated_at)} of the endpoint's rows in `statuses` for longer than the age."""
        if not self._has(endpoint, *statuses):  # the kept counts answer the usual case without a scan
            return {}
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("waiting_records"), (endpoint, list(statuses), older_than_seconds))
            found = {status: (int(n), oldest) for status, n, oldest in cur.fetchall()}
            if Status.IN_FLIGHT in statuses:
                cur.execute(self._sql("waiting_requests"), (endpoint, older_than_seconds))
                n, oldest = cur.fetchone()
                if n:
                    before = found.get(Status.IN_FLIGHT.value)
                    found[Status.IN_FLIGHT.value] = (
                        int(n) + (before[0] if before else 0),
                        min(oldest, before[1]) if before else oldest,
                    )
            return found

    def records(
        self,
        *,
        endpoint: str | None = None,
        statuses: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
        reason_like: str | None = None,
        older_than_seconds: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._sql("records"),
                {
                    "endpoint": endpoint,
                    "statuses": [str(s) for s in statuses] if statuses else None,
                    "keys": list(keys) if keys else None,
                    "reason": f"%{reason_like}%" if reason_like else None,
                    "older": older_than_seconds,
                    "limit": limit,
                },
            )
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def rows_to_act_on(self, *, limit: int) -> list[dict[str, Any]]:
        """The first `limit` rows rejected, held or in delivery_unknown, every endpoint, oldest first."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("rows_to_act_on"), (limit,))
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def diverged(self, endpoint: str, *, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(count, first rows) of sent movements whose CRM version changed since."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("diverged"), (endpoint, limit))
            found = cur.fetchall()
        total = int(found[0][0]) if found else 0
        return total, [{"source_key": k, "status": st, "document": d or "", "since": at} for _, k, st, d, at in found]

    def missing_keys(self, endpoint: str, keys: Sequence[str]) -> list[str]:
        """The keys among `keys` that have no record for the endpoint."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("missing_keys"), (list(keys), endpoint))
            return [k for (k,) in cur.fetchall()]

    def sendable_keys(self, endpoint: str, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """Splits `keys` into rows that still carry a line (can be re-sent) and rows that do not."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("sendable_keys"), (endpoint, list(keys)))
            found = dict(cur.fetchall())
        return [k for k in keys if found.get(k)], [k for k in keys if k in found and not found[k]]

    def iter_imported(self, endpoint: str, *, chunk_size: int = 10_000) -> Iterator[list[tuple[str, str | None, Any]]]:
        """Chunks of (source key, document, imported_at) of the endpoint's imported rows, streamed
        through a server-side cursor on its own connection (bounded memory at any size)."""
        if not self._has(endpoint, Status.IMPORTED):  # type: ignore[attr-defined]
            return
        conn = self.new_connection()
        try:
            with conn, conn.cursor(name=f"imported_{uuid.uuid4().hex[:12]}") as cur:
                cur.itersize = chunk_size
                cur.execute(self._sql("imported_keys"), (endpoint,))
                while chunk := cur.fetchmany(chunk_size):
                    yield chunk
        finally:
            conn.close()
