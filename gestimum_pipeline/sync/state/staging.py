"""Staging CRM versions into `records`, and the moves a sink makes before sending (hold,
release, withdraw) and the case-collision refusal."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple

from gestimum_pipeline.crm import contract
from gestimum_pipeline.sync.mapping import MappedRow
from gestimum_pipeline.sync.state.base import StageCounts, StoreBase
from gestimum_pipeline.sync.state.status import Status

_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


class Collision(NamedTuple):
    key: str
    reason: str
    partition: str | None


class StagingMixin(StoreBase):
    """Writes `records` on the transform's side: new versions, and the moves before sending."""

    def stage(
        self,
        endpoint: str,
        rows: Sequence[MappedRow],
        *,
        partition: str | None,
        run_id: str | None,
        force: bool = False,
        source_version: Decimal | None = None,
        days: Mapping[str, str | None] | None = None,
    ) -> StageCounts:
        """Records a chunk of mapped rows: changed rows become pending, invalid ones rejected.

        Unchanged rows are left alone, so a rerun stages nothing. Stock movements are
        immutable once known: only a pending or rejected movement (by our validation, or by
        Gestimum line by line: never imported) or one withdrawn (never sent) is re-staged,
        and `force` never re-sends one. `source_version` orders CRM versions
        (crm.queries.snapshot_version of the snapshot the rows were read in): a row
        staged from a newer snapshot is never replaced by this one's (counted as skipped).
        None: no order known (a row read outside a transform), taken as it comes.
        `days` (source key → the day of its CRM change time) records each row's own partition
        (`partition` for a row not in it), so a range run's figures are told per day.
        """
        if not rows:
            return StageCounts(0, 0, 0)
        documents = self.endpoints.creates_documents(endpoint)
        conn = self.conn
        buf = io.StringIO(_copy_rows(rows, days or {}))
        with conn, conn.cursor() as cur:
            # A staging lost in a server crash is simply staged again by the next run.
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute(self._sql("stage_temp_table"))
            cur.copy_expert("COPY staged_rows FROM STDIN", buf)
            cur.execute(
                self._sql("stage_stock" if documents else "stage_master"),
                {
                    "endpoint": endpoint,
                    "partition": partition,
                    "run_id": run_id,
                    "force": force,
                    "version": source_version,
                    # Look each row up first unless the previous chunk was taken whole (a first
                    # staging), where the lookup finds nothing and costs a probe per row.
                    "known": endpoint not in self._taken_whole,
                },
            )
            taken = cur.fetchall()
            statuses = [s for (s, _) in taken]
            if len(statuses) == len(rows):
                self._taken_whole.add(endpoint)
            else:
                self._taken_whole.discard(endpoint)
            skipped = 0
            # When every row was taken, none diverged and none was refused: no join at all.
            if len(statuses) < len(rows):
                # One primary-key lookup per staged row: a hash join would read every record of
                # the endpoint for each chunk (a rerun of a 1M-row window: minutes).
                cur.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
                if documents:
                    cur.execute(self._sql("stage_stock_diverged"), {"endpoint": endpoint, "version": source_version})
                cur.execute(self._sql("stage_count_refused"), (endpoint,))
                skipped = int(cur.fetchone()[0])
            self._compact_counts(cur)
        staged = sum(1 for s in statuses if s in (Status.PENDING, Status.IN_FLIGHT))
        rejected = len(statuses) - staged
        by_partition = tuple((p, s) for (s, p) in taken) if days else ()
        return StageCounts(staged, rejected, len(rows) - len(statuses) - skipped, skipped, by_partition)

    def reject_case_collisions(self, endpoint: str, field_code: str) -> list[Collision]:
        """Rejects pending rows whose key differs only by case (or trailing spaces) from another live key.

        Gestimum runs on SQL Server, whose usual collations compare codes without case and
        ignore trailing spaces: `ACME` and `acme` would be one record there, the second
        import overwriting the first. Both are refused (reason_source `local`, the line is
        kept so `gestimum-pipeline retry` can re-queue one once the other is renamed).
        Returns the rows rejected (source key, reason, partition).
        """
        if not self._has(endpoint, Status.PENDING):
            return []  # only pending rows can be rejected: a rerun that staged nothing pays nothing
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL enable_nestloop = off")
            cur.execute(
                self._sql("reject_case_collisions"),
                {"e": endpoint, "f": field_code, "composite": self._composite_keys(endpoint)},
            )
            return [Collision(k, reason, partition) for k, reason, partition in cur.fetchall()]

    def _composite_keys(self, endpoint: str) -> bool:
        """Whether the endpoint's keys are JSON arrays of codes (sync.mapping.source_key)."""
        spec = self.endpoints.get(endpoint)
        return len(contract.relation(spec.relation).key_columns) > 1

    def hold_orphans(self, endpoint: str) -> int:
        """Pending rows whose parent is rejected, held or ignored are held, not sent to certain failure."""
        parent = self.endpoints.parent_of(endpoint)
        if (
            parent is None
            or not self._has(endpoint, Status.PENDING)
            or not self._has(parent, Status.REJECTED, Status.HELD, Status.IGNORED)
        ):
            return 0  # nothing can match: skip the join of every pending row with its parent
        return self._execute_count("hold_orphans", (endpoint, parent))

    def release_children(self, endpoint: str) -> int:
        """Held rows, and rows Gestimum rejected, are re-queued once their parent has imported since."""
        parent = self.endpoints.parent_of(endpoint)
        if parent is None or not self._has(endpoint, Status.HELD, Status.REJECTED):
            return 0  # nothing can match: skip the join over every record of the endpoint
        return self._execute_count("release_children", (endpoint, parent))

    def withdraw(self, endpoint: str, keys: Sequence[str], *, reason: str) -> list[str]:
        """Pending rows whose source row is gone are withdrawn (ignored, with the reason), never sent."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("withdraw"), (reason, endpoint, list(keys)))
            return [k for (k,) in cur.fetchall()]


def _copy_rows(rows: Sequence[MappedRow], days: Mapping[str, str | None]) -> str:
    """Staged rows in COPY text format; plain rows (nearly all) skip per-value escaping.
    The last column is the row's day (`days`; a day is digits and dashes, never escaped)."""
    out: list[str] = []
    special = _COPY_SPECIAL.search
    day_of = days.get
    for key, content, line, reason, parent, group, sort, _ in rows:
        day = day_of(key) or "\\N"
        if line is None or reason is not None or special(key) or special(line) or special(group):
            values = (key, line, content, parent, group, sort, reason)
            out.append("\t".join(_copy_text(v) for v in values) + f"\t{day}")
        elif parent is None:
            out.append(f"{key}\t{line}\t{content}\t\\N\t{group}\t{sort}\t\\N\t{day}")
        elif special(parent):
            out.append(f"{key}\t{line}\t{content}\t{_copy_text(parent)}\t{group}\t{sort}\t\\N\t{day}")
        else:
            out.append(f"{key}\t{line}\t{content}\t{parent}\t{group}\t{sort}\t\\N\t{day}")
    out.append("")
    return "\n".join(out)


def _copy_text(value: object) -> str:
    """One value in COPY's text format (tab-separated, \\N for NULL)."""
    if value is None:
        return "\\N"
    text = str(value)
    if any(c in text for c in "\\\t\n\r"):
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text
