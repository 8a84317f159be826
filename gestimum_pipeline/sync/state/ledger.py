"""The request ledger: a request is marked in flight (one durable row in `requests`) before it
is posted, and its answer, failure or abandonment is written to its records from that row."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from gestimum_pipeline.db import db_reason
from gestimum_pipeline.sync.state.base import Outcome, PendingLine, StoreBase, text_array
from gestimum_pipeline.sync.state.status import RequestState, Status
from gestimum_pipeline.sync.state.writer import BackgroundWriter


class OutcomesNotRecorded(psycopg2.OperationalError):
    """The background writer could not record a master-data request's outcomes.

    A psycopg2 error, so callers handle it as any state-store failure.
    """


@dataclass(frozen=True)
class _Outcomes:
    """One answered request, as record_outcomes hands it to the (background) writer."""

    endpoint: str
    ledger_ids: list[int]
    imported: int
    rejected_keys: list[str]
    rejected_reasons: list[str]
    document: str | None  # the request's one document (stock), if it has one
    document_keys: list[str]  # several documents in one request: each imported line's
    documents: list[str]
    request_id: str | None


class LedgerMixin(StoreBase):
    """Owns `requests`; writes the outcome of each request to `records`."""

    def iter_pending(self, endpoint: str, *, chunk_size: int = 5000) -> Iterator[PendingLine]:
        """Streams pending lines in sending order through a server-side cursor on its own connection."""
        if not self._has(endpoint, Status.PENDING):
            # Exact counts say none: skip the scan (an index full of entries for rows sent
            # since, until vacuum passes, costs 0.3-0.5 s at a million records).
            return
        conn = self.new_connection()
        try:
            with conn, conn.cursor(name=f"pending_{uuid.uuid4().hex[:12]}") as cur:
                cur.itersize = chunk_size
                cur.execute(self._sql("pending_lines"), (endpoint,))
                for key, line, group, hashed, partition in cur:
                    yield PendingLine(key, line, group, hashed, partition)
        finally:
            conn.close()

    def mark_in_flight(
        self,
        endpoint: str,
        lines: Sequence[PendingLine] | Sequence[str],
        *,
        request_id: str,
        run_id: str | None,
    ) -> list[str]:
        """Records the request in flight, compare-and-set, and commits durably; returns the keys marked.

        One row in `requests` (the keys and the hashes of the lines sent) is the marker, built
        by the server from the records themselves: the records are not written until the
        answer. A row is marked only if it is still pending and, given PendingLines, still holds
        the version read (a re-staging or an operator's action since wins: that row is not
        sent). The same transaction proves this writer still holds the company file's lease.
        """
        keys = [p if isinstance(p, str) else p.source_key for p in lines]
        if not keys:
            return []
        wanted = None if isinstance(lines[0], str) else [p.content_hash for p in lines]  # type: ignore[union-attr]
        # Runs beside the previous request's outcomes (other rows, another connection);
        # a failure there stops us before anything more is marked or sent.
        if self._writer is not None:
            self._writer.raise_error()
        lease = self._lease
        conn = self._own_conn()
        with conn, conn.cursor() as cur:
            # The marker must survive a server crash whatever the server's default.
            cur.execute("SET LOCAL synchronous_commit = on")
            self._check_lease(cur)  # type: ignore[attr-defined]
            cur.execute(
                self._sql("mark_in_flight"),
                {
                    "request": request_id,
                    "endpoint": endpoint,
                    "company": lease[0] if lease else None,
                    "generation": lease[1] if lease else None,
                    "run": run_id,
                    "keys": text_array(keys),
                    "wanted": text_array(wanted) if wanted is not None else None,
                    "n": len(keys),
                },
            )
            found = cur.fetchone()
        if found is None:
            return []
        self._sent[request_id] = int(found[0])
        return keys if found[1] is None else list(found[1])

    def _ledger_ids(self, endpoint: str, keys: Sequence[str], request_id: str | None) -> list[int]:
        """The ledger rows of `request_id` (or of the endpoint's open requests holding these keys)."""
        known = self._sent.pop(request_id, None) if request_id is not None else None
        if known is not None:
            return [known]
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._sql("open_ledger_ids"),
                {"endpoint": endpoint, "request": request_id, "keys": text_array(keys)},
            )
            return [int(i) for (i,) in cur.fetchall()]

    def _sent_hashes(self, cur: psycopg2.extensions.cursor, ids: Sequence[int], keys: Sequence[str]) -> dict[str, str]:
        """{key: hash of the line sent} for these keys of these requests."""
        cur.execute(self._sql("sent_hashes"), (list(ids), text_array(keys)))
        return dict(cur.fetchall())

    def record_outcomes(self, endpoint: str, outcomes: Sequence[Outcome], *, request_id: str | None = None) -> None:
        """Records each line's outcome and closes the request. With `async_outcomes` (the default)
        master data's UPDATEs run on the background writer and this returns at once; see
        `conn` and `company_lock`.

        The imported hash is the hash of the line sent; a change staged meanwhile stays queued
        (master data) or is kept aside as a divergence (stock: a movement is never sent twice).
        A stock request another writer has meanwhile declared unknown takes the answer too:
        the answer is the truth. Imported lines are written by the server from the request's
        ledger row; only rejected lines carry their own data (the reason).
        """
        if not outcomes:
            return
        ids = self._ledger_ids(endpoint, [o.source_key for o in outcomes], request_id)
        rejected = [o for o in outcomes if not o.imported]
        documents = {o.document for o in outcomes if o.imported}
        by_key = len(documents) > 1  # several documents in one request: one per line
        job = _Outcomes(
            endpoint=endpoint,
            ledger_ids=ids,
            imported=len(outcomes) - len(rejected),
            rejected_keys=[o.source_key for o in rejected],
            rejected_reasons=[o.reason or "" for o in rejected],
            document=None if by_key or not documents else next(iter(documents)),
            document_keys=[o.source_key for o in outcomes if o.imported] if by_key else [],
            documents=[o.document or "" for o in outcomes if o.imported] if by_key else [],
            request_id=request_id,
        )
        # Stock outcomes stay synchronous: a failure to record them must be reported with
        # the request it belongs to (the documents an operator reconciles against).
        if not self.async_outcomes or self.endpoints.creates_documents(endpoint):
            self._apply_outcomes(self.conn, job)
            return
        if self._writer is None:
            self._writer = BackgroundWriter("gestimum-outcomes", keep_errors=True)
        self._writer.submit(lambda: self._apply_outcomes(self._outcome_connection(), job), on_error=_not_recorded(job))

    def _outcome_connection(self) -> psycopg2.extensions.connection:
        """The background writer's own connection (used by its thread only)."""
        if self._outcome_conn is None or self._outcome_conn.closed:
            self._outcome_conn = self.new_connection()
        return self._outcome_conn

    def _apply_outcomes(self, conn: psycopg2.extensions.connection, job: _Outcomes) -> None:
        documents = self.endpoints.creates_documents(job.endpoint)
        with conn, conn.cursor() as cur:
            # Master data: losing this commit in a server crash only re-sends an upsert (the
            # request stays open, so the next run re-sends it), so it need not wait for the
            # disk. Stock: the document numbers are durable before we go on, or an operator
            # would have to reconcile them by hand.
            if not documents:
                cur.execute("SET LOCAL synchronous_commit = off")
            # One primary-key lookup per line of the request: a hash join would read every record.
            cur.execute("SET LOCAL enable_hashjoin = off")
            cur.execute("SET LOCAL enable_mergejoin = off")
            if job.imported:
                cur.execute(
                    self._sql("outcome_imported_stock" if documents else "outcome_imported_master"),
                    {
                        "document": job.document,
                        "document_keys": text_array(job.document_keys),
                        "documents": text_array(job.documents),
                        "ids": job.ledger_ids,
                        "rejected": text_array(job.rejected_keys),
                        "request": job.request_id,
                    },
                )
            if job.rejected_keys:
                sent = self._sent_hashes(cur, job.ledger_ids, job.rejected_keys)
                cur.execute(
                    self._sql("outcome_rejected"),
                    {
                        "keys": text_array(job.rejected_keys),
                        "reasons": text_array(job.rejected_reasons),
                        "sent": text_array([sent.get(k, "") for k in job.rejected_keys]),
                        "endpoint": job.endpoint,
                        "request": job.request_id,
                    },
                )
            cur.execute(self._sql("close_answered"), (job.imported, len(job.rejected_keys), job.ledger_ids))
            self._compact_counts(cur)  # type: ignore[attr-defined]  # once per request: the deltas stay few

    def settle_in_flight(
        self,
        endpoint: str,
        keys: Sequence[str],
        *,
        delivered: bool | None,
        reason: str,
        request_id: str | None = None,
    ) -> None:
        """After a failed request: its rows wait to be sent again when surely not delivered (or
        idempotent), and become `delivery_unknown` when Gestimum may have processed a
        non-idempotent request."""
        ids = self._ledger_ids(endpoint, keys, request_id)
        conn = self.conn
        with conn, conn.cursor() as cur:
            sent = self._sent_hashes(cur, ids, keys)
            self._settle(cur, endpoint, ids, sent, delivered=delivered, reason=reason, request_id=request_id)

    def _settle(
        self,
        cur: psycopg2.extensions.cursor,
        endpoint: str,
        ids: list[int],
        sent: dict[str, str],
        *,
        delivered: bool | None,
        reason: str,
        request_id: str | None,
    ) -> int:
        """Writes a failed or abandoned request's rows and closes it; returns the rows written."""
        cur.execute(
            self._sql("settle_unknown" if delivered is None else "settle_requeue"),
            {
                "reason": reason,
                "endpoint": endpoint,
                "keys": list(sent),
                "sent": list(sent.values()),
                "request": request_id,
            },
        )
        written = cur.rowcount
        state = RequestState.UNKNOWN if delivered is None else RequestState.FAILED
        cur.execute(self._sql("close_settled"), (state.value, reason, ids))
        self._compact_counts(cur)  # type: ignore[attr-defined]
        return written

    def recover_in_flight(self, endpoint: str) -> int:
        """Settles requests left open by a run that died mid-request; returns how many rows.

        Called under the company lock with a fresh lease: every request still open was sent
        by a writer that is gone. Master data waits to be sent again (an idempotent upsert);
        stock movements become `delivery_unknown`, because Gestimum may have created them.
        """
        if not self._has(endpoint, Status.IN_FLIGHT):
            return 0  # the exact counts say there is nothing to settle: no scan
        documents = self.endpoints.creates_documents(endpoint)
        recovered = 0
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("open_requests"), (endpoint,))
            for ledger_id, request_id, keys, hashes in cur.fetchall():
                reason = f"the run sending request {request_id} stopped before Gestimum's answer was recorded"
                sent = dict(zip(keys, hashes, strict=True))
                if documents:
                    recovered += self._settle(
                        cur, endpoint, [ledger_id], sent, delivered=None, reason=reason, request_id=request_id
                    )
                else:
                    cur.execute(self._sql("abandon_request"), (reason, ledger_id))
                    recovered += len(keys)
            # Rows an earlier version of this store marked in flight one by one.
            cur.execute(
                self._sql("recover_stored_in_flight_stock" if documents else "recover_stored_in_flight_master"),
                (endpoint,),
            )
            recovered += cur.rowcount
        return recovered


def _not_recorded(job: _Outcomes) -> Callable[[BaseException], BaseException]:
    def translate(exc: BaseException) -> BaseException:
        if isinstance(exc, psycopg2.Error):  # handed to the store's thread, saying what failed
            return OutcomesNotRecorded(
                f"recording the outcomes of an earlier {job.endpoint} request failed ({db_reason(exc)}); "
                "its rows stay in flight and are re-sent by the next run"
            )
        return exc

    return translate
