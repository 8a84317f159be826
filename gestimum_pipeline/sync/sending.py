"""Sending, as plain Python: stream the endpoint's pending lines from the state store, post
them in requests bounded by lines and bytes, and record every line's outcome (the sink
assets are thin wrappers over `send_endpoint`).

Each request's rows are marked in flight (committed) before it is posted, so no crash can
lose track of a row or send a stock movement twice. The sink records in the state store that
Gestimum accepted its credentials (once, after its first answered request), and before its
first stock request checks them unless this run already proved them (`_Access`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby

import psycopg2

from gestimum_pipeline.db import DatabaseUnavailable, db_reason
from gestimum_pipeline.gestimum.batching import batched
from gestimum_pipeline.gestimum.catalog import COMPTES, Endpoint
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import body_overhead
from gestimum_pipeline.gestimum.errors import (
    GestimumAuthenticationError,
    GestimumDeliveryUnknown,
    GestimumError,
    GestimumProtocolError,
    GestimumServerError,
    GestimumUnreachable,
)
from gestimum_pipeline.gestimum.journal import ImportResult
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry
from gestimum_pipeline.sync.errors import DeliveryUnknownError, StateStoreFailure, SyncError
from gestimum_pipeline.sync.progress import ProgressLog
from gestimum_pipeline.sync.staging import MAX_REPORTED_REJECTIONS
from gestimum_pipeline.sync.state import Outcome, PendingLine, StateStore, Status, WriterFenced

log = logging.getLogger(__name__)

# Passes over the pending lines when some changed between being read and being marked:
# a row re-staged during the sink is sent in the same run (still pending after: the next run).
_MAX_PASSES = 3
# Journal entries kept for the sink's metadata: enough to read a run, bounded for 10 000-line requests.
MAX_REPORTED_JOURNAL_ENTRIES = 200
# An access check retries at most once: a configuration error must fail fast.
ACCESS_CHECK_RETRIES = 1


@dataclass
class RejectedRow:
    request: int
    line: int
    source_key: str
    reason: str
    partition: str | None = None  # the day of the row's CRM change time


@dataclass
class SendReport:
    endpoint: str
    dry_run: bool
    lines_sent: int = 0
    imported: int = 0
    rejected: int = 0
    requests: int = 0
    http_attempts: int = 0
    documents: list[str] = field(default_factory=list)
    rejections: list[RejectedRow] = field(default_factory=list)  # capped
    recovered_in_flight: int = 0
    released: int = 0
    held: int = 0
    would_send: int = 0  # dry run on an endpoint without `tester`
    duration_seconds: float = 0.0
    delivery_unknown: int = 0
    bytes_posted: int = 0  # request bodies, envelopes and retries included
    journal: list[str] = field(default_factory=list)  # Gestimum's journals, redacted, capped
    journal_entries: int = 0  # all entries, including those beyond the cap
    not_marked: int = 0  # read as pending, but changed (or taken) before their request: not sent then
    withdrawn: int = 0  # movements deleted in the CRM before they were sent: withdrawn, never sent
    access_checks: int = 0  # test-mode access checks made before the first stock request
    # Per day of the rows' CRM change time (the partition staging recorded): lines_sent, imported, rejected.
    by_day: dict[str | None, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


# Rejections named in a sink's summary line; the rest are in its metadata and rows_to_act_on.
NAMED_IN_SUMMARY_LINE = 3


def summary_line(report: SendReport, *, held_after: int, pending_after: int) -> str:
    """The sink's one log line at the end of a sync: what was sent, Gestimum's answer (its own
    words quoted and labelled), and what is left waiting."""
    requests = f"{report.requests} request{'s' if report.requests != 1 else ''}"
    lines = f"{report.lines_sent} line{'s' if report.lines_sent != 1 else ''}"
    text = f"{report.endpoint}: {lines} sent in {requests}: {report.imported} imported"
    text += f", {report.rejected} rejected by Gestimum"
    if report.rejections:
        named = "; ".join(
            f'{r.source_key}: Gestimum said: "{r.reason}"' for r in report.rejections[:NAMED_IN_SUMMARY_LINE]
        )
        left = report.rejected - NAMED_IN_SUMMARY_LINE
        more = f"; and {left} more" if left > 0 else ""
        text += f" ({named}{more})"
    if report.dry_run:
        text += f"; dry run ({report.would_send} lines would be sent without Gestimum's test mode)"
    if report.documents:
        text += f"; {len(report.documents)} documents created"
    if report.delivery_unknown:
        text += f"; {report.delivery_unknown} in delivery_unknown"
    return text + f"; {held_after} held for their parent, {pending_after} pending"


def unaccountable_answer(exc: BaseException) -> GestimumProtocolError | None:
    """The error, if `exc` comes from an answer Gestimum gave (HTTP 200) that cannot be accounted for."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GestimumProtocolError) and seen.status == 200:
            return seen
        seen = seen.__cause__
    return None


def statistics_problems(report: SendReport, in_flight_after: int, endpoints: EndpointRegistry = ENDPOINTS) -> list[str]:
    """Why Gestimum's statistics and our accounting of a sink's run disagree; empty when they agree.

    `parse_response` refuses an answer whose own counts do not add up; this looks across the
    run: the totals, the reasons kept for rejected lines, documents for imported stock lines,
    and the state store, where every answered line must have left `in_flight`.
    """
    problems: list[str] = []
    if report.imported + report.rejected != report.lines_sent:
        problems.append(
            f"{report.imported} imported + {report.rejected} rejected = {report.imported + report.rejected}, "
            f"but {report.lines_sent} lines were sent"
        )
    expected_reasons = min(report.rejected, MAX_REPORTED_REJECTIONS)
    if len(report.rejections) != expected_reasons:
        problems.append(f"{report.rejected} lines rejected, but {len(report.rejections)} reasons recorded")
    documents_expected = endpoints.creates_documents(report.endpoint)
    if documents_expected and report.imported and not report.dry_run and not report.documents:
        problems.append(f"{report.imported} stock lines imported, but Gestimum reported no document created")
    if in_flight_after and not report.dry_run:
        problems.append(f"{in_flight_after} rows are still in flight after every request was answered")
    return problems


# HTTP statuses that prove Gestimum processed nothing: 503/429 refuse the work itself, and
# 401/403/404 are the documented refusals of the credentials or the company file (by status,
# never by the words of a message, which Gestimum does not document).
_NOT_PROCESSED_STATUSES = frozenset({503, 429})
_REFUSED_BEFORE_PROCESSING = frozenset({401, 403, 404})


def _not_delivered(endpoint: Endpoint, exc: GestimumError) -> bool:
    """True when Gestimum surely did not process the request (or re-processing is harmless).

    Conservative for document-creating endpoints: anything not provably before processing
    (a 200 whose `resultat` is an error, whatever its message; a 400; a 5xx but 503) leaves
    the movements delivery_unknown for an operator to reconcile.
    """
    if endpoint.idempotent:
        return True
    if isinstance(exc, GestimumDeliveryUnknown):
        return False
    if isinstance(exc, GestimumUnreachable):
        return True  # never connected (refused, DNS, connect timeout, TLS handshake)
    status = exc.status or 0
    if isinstance(exc, GestimumServerError) and status in _NOT_PROCESSED_STATUSES:
        return True
    return (
        isinstance(exc, (GestimumAuthenticationError, GestimumProtocolError)) and status in _REFUSED_BEFORE_PROCESSING
    )


def _documents_for(result: ImportResult, imported_keys: list[str]) -> list[str | None]:
    """Attributes the request's documents to its imported lines.

    Each request holds one document header (see the registry's order_by and the group split), so one
    document means all its lines; one document per line maps in order; otherwise every
    line records the whole list, so nothing is guessed.
    """
    docs = list(result.documents)
    if not docs:
        return [None] * len(imported_keys)
    if len(docs) == 1:
        return [docs[0]] * len(imported_keys)
    if len(docs) == len(imported_keys):
        return docs
    joined = ",".join(docs)
    return [joined] * len(imported_keys)


class _Access:
    """Gestimum access as one sink sees it.

    After the sink's first answered request (any parsed answer: Gestimum opened the company
    file with these credentials) it records the proof in the state store, once per sink.
    Before the first request of an endpoint that creates documents it makes sure access was
    proven IN THIS RUN, i.e. the store's proof of these exact credentials carries this run's
    id (by the preflight's check or an earlier sink); otherwise it sends the test-mode check
    first, so a password changed in Gestimum fails here, before any movement is marked in
    flight. A run id rather than a time: the store's clock and Dagster's need not agree.
    """

    def __init__(
        self,
        state: StateStore,
        client: GestimumClient,
        endpoint: Endpoint,
        report: SendReport,
        *,
        run_id: str | None,
        logger: logging.Logger,
        check_first: bool,
    ) -> None:
        self.state, self.client, self.endpoint, self.report = state, client, endpoint, report
        self.run_id, self.logger = run_id, logger
        self.check_pending = check_first
        self.recorded = False
        company = client.company
        self._credentials = (client.base_url, company.company_file, company.user, company.password)

    def before_request(self) -> None:
        """Before a request carrying data: the stock endpoint's access check, once."""
        if not self.check_pending:
            return
        self.check_pending = False
        if self.run_id is not None and self.state.access_verified(
            *self._credentials, max_age_seconds=None, run_id=self.run_id
        ):
            return
        name = self.endpoint.name
        self.report.access_checks += 1
        try:
            self.client.check_access(COMPTES, max_retries=ACCESS_CHECK_RETRIES)
        except GestimumAuthenticationError as exc:
            raise SyncError(
                f"{name}: {exc.setting}: {exc}. Access was checked (an empty Comptes import in test mode) before "
                "sending any stock movement: none was marked in flight or sent, and they stay pending."
            ) from None
        except GestimumError as exc:
            raise SyncError(
                f"{name}: GESTIMUM_URL: Gestimum did not accept the access check made before sending any stock "
                f"movement (an empty Comptes import in test mode, which stores nothing): {exc}. No stock movement "
                "was marked in flight or sent; they stay pending."
            ) from None
        self.logger.info("%s: Gestimum access checked before sending the first stock movement", name)
        self.answered()

    def answered(self) -> None:
        """Gestimum answered a request of this sink: the proof is recorded, once."""
        if self.recorded:
            return
        self.recorded = True
        self.state.record_access(*self._credentials, self.run_id)


def send_endpoint(
    *,
    state: StateStore,
    client: GestimumClient,
    endpoint: Endpoint,
    company_file: str,
    max_lines: int,
    max_bytes: int,
    dry_run: bool = False,
    run_id: str | None = None,
    logger: logging.Logger | None = None,
    lock_timeout_seconds: float = 3600.0,
    source_exists: Callable[[list[str]], set[str]] | None = None,
) -> SendReport:
    """Sends every pending line of the endpoint and records each line's outcome.

    `source_exists` (document-creating endpoints): which keys still have a CRM row; a movement
    deleted in the CRM before it was sent is withdrawn, never sent.
    """
    logger = logger or log
    report = SendReport(endpoint.name, dry_run)
    started = time.perf_counter()
    attempts_before, bytes_before = client.requests_made, client.bytes_posted
    # Exact bytes of the envelope and header, so requests fill up to max_bytes and no further.
    overhead = body_overhead(
        endpoint, client.company, fmt=client.fmt, test_mode=dry_run and endpoint.supports_test_mode
    )
    # Document-creating endpoints (ENDPOINTS.creates_documents) are those not idempotent on the wire.
    access = _Access(state, client, endpoint, report, run_id=run_id, logger=logger, check_first=not endpoint.idempotent)
    try:
        # Never a store kept for another company file; an unclaimed one is claimed below, once
        # Gestimum has accepted a request for this company file (a wrong setting claims nothing).
        state.check_owner(client.base_url, company_file, claim=False)
        with state.company_lock(company_file, timeout_seconds=lock_timeout_seconds):
            if not dry_run:
                report.recovered_in_flight = state.recover_in_flight(endpoint.name)
                report.released = state.release_children(endpoint.name)
                report.held = state.hold_orphans(endpoint.name)
            pending_lines = state.counts(endpoint.name).get(endpoint.name, {}).get(Status.PENDING, 0)
            progress = ProgressLog(
                logger, f"sending {endpoint.name}", unit="lines", total=pending_lines, per_request=max_lines
            )
            for _ in range(_MAX_PASSES):
                skipped_before = report.not_marked
                pending: Iterator[PendingLine] = state.iter_pending(endpoint.name)
                try:
                    for _, group in groupby(pending, key=lambda p: p.group_key):
                        for batch in batched(
                            group,
                            line_of=lambda p: p.line,
                            max_lines=max_lines,
                            max_bytes=max_bytes,
                            overhead=overhead,
                        ):
                            if source_exists is not None and not endpoint.idempotent and not dry_run:
                                batch = _withdraw_deleted(state, endpoint, batch, source_exists, report)
                            _send_batch(
                                state,
                                client,
                                endpoint,
                                batch,
                                report,
                                dry_run=dry_run,
                                run_id=run_id,
                                logger=logger,
                                access=access,
                            )
                            progress.update(report.lines_sent, requests=report.requests)
                finally:
                    # Closed here, not by the garbage collector: on a dead connection closing raises.
                    with contextlib.suppress(psycopg2.Error):
                        pending.close()  # type: ignore[attr-defined]
                if report.not_marked == skipped_before:
                    break  # every line read was sent: rows re-staged meanwhile were read again
            progress.finish(report.lines_sent, requests=report.requests)
    except (psycopg2.Error, DatabaseUnavailable) as exc:
        raise StateStoreFailure(
            f"the state store failed while sending {endpoint.name}, after {report.requests} answered requests "
            f"({exc if isinstance(exc, DatabaseUnavailable) else db_reason(exc)}). Rows of a request in progress "
            "stay in flight: the next run re-sends master data, and turns stock movements into delivery_unknown "
            "for an operator to reconcile (`gestimum-pipeline rejections --status delivery_unknown`). Check "
            "SYNC_STATE_DATABASE_URL (default CRM_DATABASE_URL), then rerun the partition."
        ) from None
    if report.requests and not dry_run:
        state.check_owner(client.base_url, company_file)
    report.http_attempts = client.requests_made - attempts_before
    report.bytes_posted = client.bytes_posted - bytes_before
    report.duration_seconds = time.perf_counter() - started
    if not endpoint.idempotent and not dry_run:  # only documents are ever delivery_unknown
        report.delivery_unknown = state.counts(endpoint.name).get(endpoint.name, {}).get(Status.DELIVERY_UNKNOWN, 0)
    return report


def _withdraw_deleted(
    state: StateStore,
    endpoint: Endpoint,
    batch: list[PendingLine],
    source_exists: Callable[[list[str]], set[str]],
    report: SendReport,
) -> list[PendingLine]:
    """Withdraws the movements of `batch` whose CRM row is gone; returns the others."""
    present = source_exists([p.source_key for p in batch])
    gone = [p.source_key for p in batch if p.source_key not in present]
    if not gone:
        return batch
    withdrawn = state.withdraw(
        endpoint.name, gone, reason="withdrawn: deleted in the CRM before it was sent (never sent to Gestimum)"
    )
    report.withdrawn += len(withdrawn)
    return [p for p in batch if p.source_key in present]


def _send_batch(
    state: StateStore,
    client: GestimumClient,
    endpoint: Endpoint,
    batch: list[PendingLine],
    report: SendReport,
    *,
    dry_run: bool,
    run_id: str | None,
    logger: logging.Logger,
    access: _Access,
) -> None:
    if not batch:
        return
    keys = [p.source_key for p in batch]
    lines = [p.line for p in batch]
    request_no = report.requests + 1
    if dry_run:
        if not endpoint.supports_test_mode:
            report.would_send += len(lines)
            return
        result = client.import_lines(endpoint, lines, test_mode=True)
        report.requests += 1
        _account(report, request_no, keys, result, [p.partition for p in batch])
        _keep_journal(report, request_no, result, client)
        access.answered()
        return
    access.before_request()  # a wrong password fails here, before any row is marked in flight
    request_id = f"{(run_id or 'manual')[:8]}-{endpoint.name}-{request_no}"
    try:
        marked = state.mark_in_flight(endpoint.name, batch, request_id=request_id, run_id=run_id)
    except WriterFenced as exc:
        raise SyncError(
            f"{endpoint.name}: {exc}. Nothing more was sent by this run; the other run sends the rest, and "
            "rows of this run's last request are settled by it (stock: delivery_unknown, for an operator)."
        ) from None
    if len(marked) < len(keys):
        # Re-staged, sent by another writer, or acted on by an operator since they were read:
        # only the rows marked now are sent (the others, if still pending, on the next pass).
        report.not_marked += len(keys) - len(marked)
        chosen = set(marked)
        batch = [p for p in batch if p.source_key in chosen]
        keys = [p.source_key for p in batch]
        lines = [p.line for p in batch]
    if not keys:
        return
    try:
        result = client.import_lines(endpoint, lines)
    except GestimumError as exc:
        if _not_delivered(endpoint, exc):
            state.settle_in_flight(
                endpoint.name, keys, delivered=False, reason=f"request failed: {exc}", request_id=request_id
            )
            raise
        state.settle_in_flight(
            endpoint.name, keys, delivered=None, reason=f"request {request_id}: {exc}", request_id=request_id
        )
        shown = ", ".join(keys[:20]) + (", …" if len(keys) > 20 else "")
        raise DeliveryUnknownError(
            f"{len(keys)} stock movements (request {request_id}; ids {shown}) may or may not have become "
            f"documents in Gestimum: {exc}. They are recorded as delivery_unknown and will not be re-sent. Check in "
            "Gestimum whether the documents exist, then run `gestimum-pipeline reconcile --delivered "
            "--document <number> <ids>` or `gestimum-pipeline reconcile --release <ids>` "
            "(list them with `gestimum-pipeline rejections --status delivery_unknown`)."
        ) from exc
    except BaseException:
        # Anything else (a bug, KeyboardInterrupt): we cannot know how far the request got.
        if endpoint.idempotent:
            state.settle_in_flight(endpoint.name, keys, delivered=False, reason="interrupted", request_id=request_id)
        raise
    report.requests += 1
    outcomes = _account(report, request_no, keys, result, [p.partition for p in batch])
    _keep_journal(report, request_no, result, client)
    try:
        state.record_outcomes(endpoint.name, outcomes, request_id=request_id)
    except (psycopg2.Error, DatabaseUnavailable) as exc:
        # Gestimum's answer is known but not recorded: say it, so the operator can reconcile from it.
        docs = f", documents {', '.join(result.documents)}" if result.documents else ""
        shown = ", ".join(keys[:20]) + (", …" if len(keys) > 20 else "")
        next_step = (
            "the next run marks these movements delivery_unknown: reconcile them with `gestimum-pipeline "
            f"reconcile --delivered --document <document> {shown}` (Gestimum's answer above)"
            if not endpoint.idempotent
            else "the next run re-sends these rows (an idempotent upsert)"
        )
        reason = exc if isinstance(exc, DatabaseUnavailable) else db_reason(exc)
        raise StateStoreFailure(
            f"{endpoint.name} request {request_id} (ids {shown}) was answered by Gestimum ({result.imported} "
            f"imported, {result.rejected} rejected{docs}), but the state store failed while recording it "
            f"({reason}). The rows stay in flight; {next_step}. Check SYNC_STATE_DATABASE_URL (default "
            "CRM_DATABASE_URL), then rerun the partition."
        ) from None
    access.answered()  # after the outcomes: they matter more than the proof
    # Per request at debug level: the sink's summary line (summary_line) is the run log's.
    logger.debug(
        "%s request %d: %d lines, %d imported, %d rejected%s",
        endpoint.name,
        request_no,
        len(lines),
        result.imported,
        result.rejected,
        f", documents {', '.join(result.documents)}" if result.documents else "",
    )


def _keep_journal(report: SendReport, request_no: int, result: ImportResult, client: GestimumClient) -> None:
    report.journal_entries += len(result.journal)
    room = MAX_REPORTED_JOURNAL_ENTRIES - len(report.journal)
    # Gestimum's journal has no documented reason to quote the password, but it is shown in the UI.
    report.journal.extend(f"[{request_no}] {client.redact(entry)}" for entry in result.journal[: max(room, 0)])


def _account(
    report: SendReport, request_no: int, keys: list[str], result: ImportResult, days: list[str | None]
) -> list[Outcome]:
    """Adds one answer to the report, in total and per day of each line (`days`, in `keys`' order),
    and turns it into per-row outcomes."""
    if result.imported + result.rejected != len(keys):  # parse_response checks it too; never trust silently
        raise SyncError(
            f"{report.endpoint} request {request_no}: Gestimum counted {result.imported} imported + "
            f"{result.rejected} rejected for {len(keys)} lines sent"
        )
    report.lines_sent += len(keys)
    report.imported += result.imported
    report.rejected += result.rejected
    report.documents.extend(result.documents)
    reasons = {r.line: r.reason for r in result.rejected_lines}
    for line_no, day in enumerate(days, start=1):
        figures = report.by_day[day]
        figures["lines_sent"] += 1
        figures["rejected" if line_no in reasons else "imported"] += 1
    imported_keys = [k for i, k in enumerate(keys, start=1) if i not in reasons]
    docs = _documents_for(result, imported_keys)
    outcomes = [Outcome(k, True, document=d) for k, d in zip(imported_keys, docs, strict=True)]
    for line_no, reason in sorted(reasons.items()):
        key = keys[line_no - 1]
        outcomes.append(Outcome(key, False, reason=reason))
        if len(report.rejections) < MAX_REPORTED_REJECTIONS:
            report.rejections.append(RejectedRow(request_no, line_no, key, reason, days[line_no - 1]))
    return outcomes
