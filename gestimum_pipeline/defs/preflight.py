"""The preflight: every setting checked and every system reached before any data moves.

The first step of every run (the `sync/preflight` asset, upstream of the CRM sources).
It reads no CRM row, stages nothing and imports nothing; when it fails, every other step
of the run is skipped and the failure lists each problem with the setting to fix.

What it costs, measured on the simulator and estimated for a real server (the
metadata records the measured seconds of each check):

* settings: no I/O;
* CRM: one connection and one catalog query (the source contract), milliseconds;
* state store: one connection and the idempotent migration check, milliseconds;
* Gestimum: at most ONE request, an empty Comptes import in test mode (`tester` = Oui,
  the header and no data line), which stores nothing. Gestimum opens the company file for
  it, so it costs what any request costs: about 6 s on a real server (the documented
  journals), a few milliseconds on the simulator. At most one retry, so a wrong host
  fails within a connect timeout or two instead of after the full retry schedule.

The Gestimum check is lazy: it is skipped, with no request, when the state store proves
that Gestimum accepted these exact credentials (URL, company file, user, password, as a
salted fingerprint) less than GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS ago (0: check at
every run); the metadata and log then say when and by which run. A passed check is
recorded. A store with a problem proves nothing, so the check is made as before. Skipping
it is safe: a sink records the proof after its first answered request, and checks access
before sending any stock movement unless this run proved it (`sync/sending.py`), so a
password changed in Gestimum still fails before a movement is sent.
"""

from __future__ import annotations

import codecs
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from urllib.parse import urlsplit

import psycopg2

from gestimum_pipeline.db import DatabaseUnavailable, db_reason
from gestimum_pipeline.defs.resources import (
    ConfigurationError,
    CrmDatabase,
    GestimumApi,
    SyncOptions,
    SyncStateDatabase,
    rename_settings,
)
from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import plain_http_warning
from gestimum_pipeline.gestimum.errors import (
    GestimumAuthenticationError,
    GestimumError,
    GestimumUnreachable,
)
from gestimum_pipeline.sync.engine import ACCESS_CHECK_RETRIES
from gestimum_pipeline.sync.state import AccessProof, StateStore, StateStoreError

# Below this a request cannot hold the envelope and one ordinary line.
MIN_REQUEST_BYTES = 4096
DB_HINT = "check the host, port, database name and credentials, and that the server accepts connections"


@dataclass
class PreflightReport:
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    tls_verification: str = "on"
    gestimum_requests: int = 0
    # What the preflight knows of Gestimum access: checked now, or proven earlier (then no request).
    gestimum_access: str = "not checked"

    @property
    def ok(self) -> bool:
        return not self.problems

    def failure_message(self) -> str:
        items = "\n".join(f"  {i}. {p}" for i, p in enumerate(self.problems, 1))
        return (
            "Preflight failed: nothing was read from the CRM, staged or sent to Gestimum. "
            f"Fix the following setting(s), then rerun the partition(s):\n{items}"
        )


def tls_status(url: str, *, verify_tls: bool) -> str:
    """What the preflight reports about TLS: never "on" for a connection that has none."""
    if not verify_tls:
        return "OFF (GESTIMUM_VERIFY_TLS=false): Gestimum's identity is not checked"
    if urlsplit(url.strip()).scheme.lower() != "https":
        return "none (GESTIMUM_URL is not https://): the connection is not encrypted"
    return "on"


def settings_problems(gestimum: GestimumApi, options: SyncOptions) -> list[str]:
    """Values that are present but unusable; no I/O."""
    problems: list[str] = []
    if options.chunk_size < 1:
        problems.append(f"sync_options.chunk_size must be at least 1, got {options.chunk_size}")
    if options.lookback_minutes < 0:
        problems.append(
            f"GESTIMUM_SYNC_LOOKBACK_MINUTES (sync_options.lookback_minutes) must not be negative, "
            f"got {options.lookback_minutes}"
        )
    return problems + gestimum_settings_problems(gestimum)


def gestimum_settings_problems(gestimum: GestimumApi) -> list[str]:
    """The Gestimum resource's unusable values; when there is one, the access check is skipped."""
    problems: list[str] = []
    if gestimum.max_lines_per_request < 1:
        problems.append(f"GESTIMUM_MAX_LINES_PER_REQUEST must be at least 1, got {gestimum.max_lines_per_request}")
    if gestimum.max_bytes_per_request < MIN_REQUEST_BYTES:
        problems.append(
            f"GESTIMUM_MAX_BYTES_PER_REQUEST must be at least {MIN_REQUEST_BYTES}, got {gestimum.max_bytes_per_request}"
        )
    if gestimum.connect_timeout_seconds <= 0 or gestimum.read_timeout_seconds <= 0:
        problems.append(
            "GESTIMUM_CONNECT_TIMEOUT_SECONDS and GESTIMUM_READ_TIMEOUT_SECONDS must be positive "
            "(a request must never hang forever)"
        )
    if gestimum.max_retries < 0:
        problems.append(f"GESTIMUM_MAX_RETRIES must not be negative, got {gestimum.max_retries}")
    if gestimum.access_check_interval_seconds < 0:
        problems.append(
            "GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS must not be negative (0 checks at every run), "
            f"got {gestimum.access_check_interval_seconds}"
        )
    try:
        gestimum.line_format().encoder()
        if gestimum.charset:
            codecs.lookup(gestimum.charset)  # otherwise the first row to encode would fail mid-run
    except (ValueError, LookupError) as exc:
        problems.append(f"Gestimum line format (separator, qualifier, charset): {exc}")
    return problems


def _credentials(gestimum: GestimumApi) -> tuple[str, str, str, str]:
    """What an access proof is about: a different URL, company file, user or password is checked again."""
    return (gestimum.url, gestimum.company_file, gestimum.user, gestimum.password)


def _earlier_proof(store: StateStore, gestimum: GestimumApi, logger: logging.Logger) -> AccessProof | None:
    """The store's proof of these credentials younger than the interval, or None (then check)."""
    interval = gestimum.access_check_interval_seconds
    if interval <= 0:
        return None
    try:
        proof = store.access_proof(*_credentials(gestimum))
    except psycopg2.Error as exc:  # only costs a check
        logger.warning("Gestimum access: earlier proofs could not be read (%s); checking now", db_reason(exc))
        return None
    return proof if proof is not None and proof.age_seconds < interval else None


def _skipped_access(proof: AccessProof, interval: int) -> str:
    verified = proof.verified_at.astimezone(UTC)
    next_check = verified + timedelta(seconds=interval)
    return (
        f"Gestimum access: proven at {verified:%Y-%m-%d %H:%M:%S} UTC by run {proof.run_id or '(unknown)'}; "
        f"next check after {next_check:%Y-%m-%d %H:%M:%S} UTC (GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS={interval}). "
        "No request sent: a sink checks again before sending any stock movement"
    )


def run_preflight(
    crm: CrmDatabase,
    gestimum: GestimumApi,
    sync_state: SyncStateDatabase,
    options: SyncOptions,
    logger: logging.Logger,
    run_id: str | None = None,
) -> PreflightReport:
    """Runs every check, collecting all problems rather than stopping at the first."""
    report = PreflightReport(problems=settings_problems(gestimum, options))
    report.tls_verification = tls_status(gestimum.url, verify_tls=gestimum.verify_tls)
    url_setting = gestimum.setting_label("url") or "GESTIMUM_URL"
    if not gestimum.verify_tls:
        logger.warning("GESTIMUM_VERIFY_TLS is false: %s", report.tls_verification)
    elif (plain_http := plain_http_warning(gestimum.url, gestimum.password, setting=url_setting)) is not None:
        logger.warning(plain_http)  # the run's one plain-HTTP warning (the clients say nothing)

    started = time.perf_counter()
    crm_down: int | None = None  # the index of the CRM's "cannot connect" problem
    try:
        crm.checked_schema()
    except ConfigurationError as exc:
        report.problems.append(f"CRM_SCHEMA / CRM_DATABASE_URL: {exc.description}")
    except DatabaseUnavailable as exc:
        crm_down = len(report.problems)
        report.problems.append(f"{exc}; {DB_HINT}")
    except ValueError as exc:  # a malformed URL or schema name; the message names the setting
        report.problems.append(str(exc))
    except psycopg2.Error as exc:
        report.problems.append(f"CRM_DATABASE_URL: the source contract could not be read ({db_reason(exc)})")
    report.seconds["crm"] = time.perf_counter() - started

    # Kept open to the end: it says whether access was proven, and records a new proof.
    store: StateStore | None = None
    problems_before = list(report.problems)
    try:
        started = time.perf_counter()
        try:
            store = sync_state.open()
            store.check_owner(gestimum.url, gestimum.company_file, claim=False)  # claimed by a sink once it sent
        except StateStoreError as exc:  # missing (the command to create it), or another company file's
            report.problems.append(str(exc))
        except DatabaseUnavailable as exc:
            if crm_down is not None and sync_state.url == crm.url:
                # The same server, already reported: once, saying it holds the state store too.
                report.problems[crm_down] += " (the state store is in this database too)"
            else:
                report.problems.append(f"{exc}; {DB_HINT}")
        except ValueError as exc:
            report.problems.append(str(exc))
        except psycopg2.Error as exc:
            report.problems.append(
                f"{sync_state.setting}: the state store schema {sync_state.schema_name!r} cannot be opened or "
                f"upgraded ({db_reason(exc)}); grant the sync's role DML on the store's tables "
                "(docs/security.md), and upgrade an older store with `gestimum-pipeline state init` as its owner"
            )
        report.seconds["state_store"] = time.perf_counter() - started
        # A store with a problem proves nothing and records nothing: the check is made, as always.
        usable = store if store is not None and report.problems == problems_before else None
        _check_gestimum(report, gestimum, usable, logger, run_id)
    finally:
        if store is not None:
            store.close()
    # A company file's defs.yaml names its own settings: the problems say which (ACME_GESTIMUM_PASSWORD, ...).
    names = {**crm.setting_names(), **gestimum.setting_names()}
    report.problems = [rename_settings(problem, names) for problem in report.problems]
    report.tls_verification = rename_settings(report.tls_verification, names)
    return report


def _check_gestimum(
    report: PreflightReport,
    gestimum: GestimumApi,
    store: StateStore | None,
    logger: logging.Logger,
    run_id: str | None,
) -> None:
    """The access check, unless `store` holds a recent enough proof of these credentials."""
    started = time.perf_counter()
    checked = False
    try:
        # Settings already reported would only fail the access check again, less clearly.
        client = None if gestimum_settings_problems(gestimum) else gestimum.client(logger)
    except ConfigurationError as exc:
        report.problems.append(exc.description or "Gestimum settings are invalid")
    else:
        if client is None:
            report.seconds["gestimum"] = 0.0
            return
        proof = _earlier_proof(store, gestimum, logger) if store is not None else None
        if proof is not None:
            client.close()
            report.gestimum_access = _skipped_access(proof, gestimum.access_check_interval_seconds)
            logger.info("%s", report.gestimum_access)
            report.seconds["gestimum"] = time.perf_counter() - started
            return
        try:
            client.check_access(catalog.COMPTES, max_retries=ACCESS_CHECK_RETRIES)
        except GestimumUnreachable as exc:
            report.problems.append(f"GESTIMUM_URL: {exc}")
        except GestimumAuthenticationError as exc:
            report.problems.append(f"{exc.setting}: {exc}")
        except GestimumError as exc:
            report.problems.append(
                f"GESTIMUM_URL: Gestimum did not accept the access check (an empty Comptes import in test "
                f"mode, which stores nothing): {exc}"
            )
        except ValueError as exc:  # a request that cannot even be built (line format): reported once
            if not any(str(exc) in p for p in report.problems):
                report.problems.append(f"Gestimum settings: {exc}")
        else:
            report.gestimum_access = "Gestimum access: checked now (an empty Comptes import in test mode)"
            checked = True
        finally:
            report.gestimum_requests = client.requests_made
            client.close()
    report.seconds["gestimum"] = time.perf_counter() - started
    # After the timing: recording the proof is store work (a PBKDF2 hash), not Gestimum's cost.
    if checked and store is not None:
        _record(store, gestimum, run_id, logger)


def _record(store: StateStore, gestimum: GestimumApi, run_id: str | None, logger: logging.Logger) -> None:
    try:
        store.record_access(*_credentials(gestimum), run_id)
    except psycopg2.Error as exc:  # only costs a check at the next run
        logger.warning("Gestimum access: the proof could not be recorded (%s)", db_reason(exc))
