"""Window signatures (a rerun skips a window nothing has touched) and windows staged in full
(what the coverage check compares with the CRM)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from gestimum_pipeline.sync.state.base import StoreBase

# The coverage check's signatures share `window_signatures` under this mapping name, so
# removing records forgets them too (the delete trigger) and every window is checked again.
COVERAGE_MAPPING = "(coverage check)"


def merge_windows(windows: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Time windows merged into disjoint ranges, in time order."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class WindowsMixin(StoreBase):
    """Owns `window_signatures` and `staged_windows`."""

    def window_signature(
        self, endpoint: str, mapping: str, start: datetime, end: datetime
    ) -> tuple[int, Decimal] | None:
        """The signature recorded when this exact window was last staged in full with this mapping."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("window_signature"), (endpoint, mapping, start, end))
            found = cur.fetchone()
        return (int(found[0]), found[1]) if found else None

    def record_window_signature(
        self,
        endpoint: str,
        mapping: str,
        start: datetime,
        end: datetime,
        signature: tuple[int, Decimal],
        *,
        run_id: str | None,
        source_version: Decimal | None = None,
    ) -> None:
        """Called once every row of the window read under `signature` is staged. A signature read
        in an older snapshot (`source_version`) than the one recorded never replaces it."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._sql("record_window_signature"),
                (endpoint, mapping, start, end, signature[0], signature[1], run_id, source_version),
            )

    def record_staged_window(self, endpoint: str, start: datetime, end: datetime, *, run_id: str | None) -> None:
        """Called once every row of the window has been staged (or found unchanged)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("record_staged_window"), (endpoint, start, end, run_id))

    def staged_windows(self, endpoint: str, *, merged: bool = True) -> list[tuple[datetime, datetime]]:
        """The endpoint's windows staged in full in time order; `merged` into disjoint ranges."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("staged_windows"), (endpoint,))
            windows: list[tuple[datetime, datetime]] = cur.fetchall()
        return merge_windows(windows) if merged else windows

    def coverage_signatures(self, endpoint: str) -> dict[tuple[datetime, datetime], set[tuple[int, Decimal]]]:
        """{window: signatures} under which every CRM row of the window is known to be in the store.

        Those the coverage check recorded after a complete pass, and those a transform recorded
        after staging every row of the window it read under that signature: either proves it.
        """
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("coverage_signatures"), (endpoint,))
            found: dict[tuple[datetime, datetime], set[tuple[int, Decimal]]] = {}
            for start, end, n, versions in cur.fetchall():
                found.setdefault((start, end), set()).add((int(n), versions))
            return found

    def record_coverage_signatures(
        self, endpoint: str, signatures: dict[tuple[datetime, datetime], tuple[int, Decimal]], *, run_id: str | None
    ) -> None:
        """Called when every CRM row of these windows (at these signatures) was found in the store."""
        if not signatures:
            return
        windows = list(signatures)
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._sql("record_coverage_signatures"),
                (
                    endpoint,
                    COVERAGE_MAPPING,
                    run_id,
                    [s for s, _ in windows],
                    [e for _, e in windows],
                    [signatures[w][0] for w in windows],
                    [signatures[w][1] for w in windows],
                ),
            )
