"""The sync state store: where every source row is, in PostgreSQL schema `gestimum_sync`.

One row per (endpoint, source key) in `records`, with a status:

* ``pending``: staged by a transform, waiting to be sent (carries its encoded line);
* ``in_flight``: inside a request whose answer has not been recorded yet. The marker is one
  row per request in `requests` (its keys and the hashes of the lines sent), committed
  durably *before* the request is posted: the records themselves are written once, by the
  outcome. A crash leaves the request open: master data is simply sent again (an idempotent
  upsert); stock movements become ``delivery_unknown``, because Gestimum may have created
  the document. `counts()`, `records()` and the `record_status` view show such rows as
  ``in_flight``;
* ``imported``: Gestimum counted it as imported (`imported_hash` = what it holds now;
  stock rows keep the document number);
* ``rejected``: refused locally (`reason_source` = ``local``) or by Gestimum (``gestimum``);
* ``held``: not sent because its parent (account or customer) is rejected or held;
* ``delivery_unknown``: a stock movement that may or may not have become a document;
  never re-sent until an operator reconciles it;
* ``ignored``: an operator chose to drop it (re-opened if the CRM row changes).

`actions` records every operator action with who and when; `gestimum_access` when Gestimum
last accepted the company file and credentials (a salted fingerprint, never the password). The schema is created and
migrated by `migrate()`, idempotently and under an advisory lock.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from gestimum_pipeline.db import connect, db_reason, validate_identifier
from gestimum_pipeline.redaction import redact_text, redact_url, url_secrets
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry
from gestimum_pipeline.sync.mapping import MappedRow

DEFAULT_SCHEMA = "gestimum_sync"
# Kept status deltas are folded into one row per (endpoint, status) beyond this many.
_COMPACT_DELTAS_ABOVE = 2000
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")

STATUSES = ("pending", "in_flight", "imported", "rejected", "held", "delivery_unknown", "ignored")

_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "records and operator actions",
        """
        CREATE TABLE {schema}.records (
            endpoint        text NOT NULL,
            source_key      text NOT NULL,
            status          text NOT NULL CHECK (status IN
                ('pending','in_flight','imported','rejected','held','delivery_unknown','ignored')),
            line            text,
            content_hash    text NOT NULL,
            imported_hash   text,
            parent_key      text,
            group_key       text NOT NULL DEFAULT '',
            sort_key        bigint NOT NULL DEFAULT 0,
            reason          text,
            reason_source   text,
            attempts        integer NOT NULL DEFAULT 0,
            document        text,
            partition       text,
            request_id      text,
            run_id          text,
            first_seen_at   timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            imported_at     timestamptz,
            PRIMARY KEY (endpoint, source_key)
        );
        CREATE INDEX records_to_send ON {schema}.records (endpoint, group_key, sort_key, source_key)
            WHERE status = 'pending';
        CREATE INDEX records_attention ON {schema}.records (endpoint, status)
            WHERE status IN ('in_flight', 'rejected', 'held', 'delivery_unknown');
        CREATE INDEX records_parent ON {schema}.records (endpoint, parent_key)
            WHERE status IN ('held', 'rejected');
        CREATE TABLE {schema}.actions (
            id          bigserial PRIMARY KEY,
            at          timestamptz NOT NULL DEFAULT now(),
            actor       text NOT NULL,
            action      text NOT NULL,
            endpoint    text,
            source_key  text,
            detail      jsonb
        );
        """,
    ),
    (
        2,
        "status counts kept by triggers; window signatures",
        # Exact per-status counts without scanning millions of records: statement-level
        # triggers append one delta row per (endpoint, status) a statement changes (no
        # counter row is updated, so concurrent writers never wait on each other), and
        # counts() sums them, compacting now and then. The signature of a CRM window
        # (row count and a hash over the rows' row versions) lets a rerun skip re-reading
        # a window nothing has touched; removing records forgets the signatures.
        """
        CREATE TABLE {schema}.status_deltas (
            endpoint text NOT NULL,
            status   text NOT NULL,
            delta    bigint NOT NULL
        );
        CREATE FUNCTION {schema}.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {schema}.status_deltas (endpoint, status, delta)
                SELECT endpoint, status, count(*) FROM new_rows GROUP BY endpoint, status;
            RETURN NULL;
        END $$;
        CREATE FUNCTION {schema}.count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {schema}.status_deltas (endpoint, status, delta)
                SELECT endpoint, status, sum(d) FROM (
                    SELECT endpoint, status, 1 AS d FROM new_rows
                    UNION ALL SELECT endpoint, status, -1 FROM old_rows
                ) AS changes GROUP BY endpoint, status HAVING sum(d) <> 0;
            RETURN NULL;
        END $$;
        CREATE FUNCTION {schema}.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {schema}.status_deltas (endpoint, status, delta)
                SELECT endpoint, status, -count(*) FROM old_rows GROUP BY endpoint, status;
            DELETE FROM {schema}.window_signatures WHERE endpoint IN (SELECT endpoint FROM old_rows);
            RETURN NULL;
        END $$;
        CREATE FUNCTION {schema}.count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM {schema}.status_deltas;
            DELETE FROM {schema}.window_signatures;
            RETURN NULL;
        END $$;
        CREATE TRIGGER records_count_inserted AFTER INSERT ON {schema}.records
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_inserted();
        CREATE TRIGGER records_count_updated AFTER UPDATE ON {schema}.records
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_updated();
        CREATE TRIGGER records_count_deleted AFTER DELETE ON {schema}.records
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deleted();
        CREATE TRIGGER records_count_truncated AFTER TRUNCATE ON {schema}.records
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_truncated();
        -- The triggers lock out writers until this commits: the seed is exact.
        INSERT INTO {schema}.status_deltas (endpoint, status, delta)
            SELECT endpoint, status, count(*) FROM {schema}.records GROUP BY endpoint, status;
        CREATE TABLE {schema}.window_signatures (
            endpoint     text NOT NULL,
            mapping      text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end   timestamptz NOT NULL,
            row_count    bigint NOT NULL,
            row_versions numeric NOT NULL,
            run_id       text,
            recorded_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (endpoint, mapping, window_start, window_end)
        );
        """,
    ),
    (
        3,
        "fenced writers; the hash of the line in flight",
        # A writer proves its authority over a company file inside each transaction that
        # marks rows in flight: it holds the lease row (FOR SHARE) and checks the generation
        # it was given; a new writer bumps the generation (its UPDATE waits for any marking
        # transaction of the old one), so a writer whose lock session died stops before its
        # next POST. `sent_hash` is the hash of the line actually sent: a CRM change staged
        # while the row is in flight updates `line`/`content_hash` and is queued behind it.
        """
        CREATE TABLE {schema}.leases (
            company_file text PRIMARY KEY,
            generation   bigint NOT NULL,
            holder       text,
            acquired_at  timestamptz NOT NULL DEFAULT now()
        );
        ALTER TABLE {schema}.records ADD COLUMN sent_hash text;
        """,
    ),
    (
        4,
        "the Gestimum host and company file the store belongs to",
        # One row at most: a store describes what one company file holds, so it refuses
        # another (every movement would look sent, or be sent again).
        """
        CREATE TABLE {schema}.owner (
            singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            gestimum_host  text NOT NULL,
            company_file   text NOT NULL,
            claimed_at     timestamptz NOT NULL DEFAULT now(),
            claimed_by     text
        );
        """,
    ),
    (
        5,
        "windows staged in full; stock versions that diverged after sending",
        # What a coverage check compares with the CRM: every row changed inside a window
        # staged in full must be in `records` (a row missing there was never seen).
        """
        CREATE TABLE {schema}.staged_windows (
            endpoint     text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end   timestamptz NOT NULL,
            run_id       text,
            recorded_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (endpoint, window_start, window_end)
        );
        -- A stock movement is never re-sent once known; a later CRM version is kept aside
        -- here so a check reports the divergence (the movement was edited after sending).
        ALTER TABLE {schema}.records ADD COLUMN diverged_hash text, ADD COLUMN diverged_at timestamptz;
        """,
    ),
    (
        6,
        "Gestimum access proven, per company file",
        # When Gestimum last accepted a request for these credentials, so a run with nothing to
        # send need not open the company file just to check them. `fingerprint` is a salted,
        # slow hash (see access_fingerprint): the password is never stored, not even hashed alone.
        """
        CREATE TABLE {schema}.gestimum_access (
            company_file  text PRIMARY KEY,
            gestimum_host text NOT NULL,
            fingerprint   text NOT NULL,
            salt          text NOT NULL,
            verified_at   timestamptz NOT NULL DEFAULT now(),
            run_id        text
        );
        """,
    ),
    (
        7,
        "the request ledger: one durable row per request",
        # The in-flight marker is one row per request (its keys and the hashes of the lines
        # sent), not an update of each of its records: one durable write per request, and
        # the records are written once more only by the outcome. A row is in flight while it
        # belongs to an open request; `record_status` shows records with that status derived.
        """
        CREATE TABLE {schema}.requests (
            id           bigserial PRIMARY KEY,
            request_id   text NOT NULL,
            endpoint     text NOT NULL,
            company_file text,
            generation   bigint,
            run_id       text,
            state        text NOT NULL CHECK (state IN ('in_flight', 'answered', 'failed', 'unknown', 'abandoned')),
            lines        integer NOT NULL,
            keys         text[] NOT NULL,
            hashes       text[] NOT NULL,
            sent_at      timestamptz NOT NULL DEFAULT now(),
            settled_at   timestamptz,
            imported     integer,
            rejected     integer,
            reason       text
        );
        CREATE INDEX requests_open ON {schema}.requests (endpoint) WHERE state = 'in_flight';
        CREATE VIEW {schema}.record_status AS
            SELECT r.endpoint, r.source_key,
                   CASE WHEN o.request_id IS NULL THEN r.status ELSE 'in_flight' END AS status,
                   coalesce(o.request_id, r.request_id) AS request_id,
                   r.reason, r.reason_source, r.attempts, r.document, r.partition, r.first_seen_at,
                   r.updated_at, r.last_attempt_at, r.imported_at, r.line
            FROM {schema}.records r
            LEFT JOIN (SELECT q.endpoint, k.source_key, q.request_id FROM {schema}.requests q,
                       unnest(q.keys) AS k(source_key) WHERE q.state = 'in_flight') o
                   ON o.endpoint = r.endpoint AND o.source_key = r.source_key;
        """,
    ),
]

INIT_COMMAND = "gestimum-pipeline state init"

# The status a row takes when its flight ends without an answer that applies to the line
# now staged: a change queued while in flight (or a failed request) goes back to pending,
# or to rejected when the queued version failed local validation (it carries no line).
_REQUEUED = "CASE WHEN r.line IS NULL THEN 'rejected' ELSE 'pending' END"
# What every write of a request's answer (or failure) sets on its records; `d.sent` is the
# hash of the line sent, from the request's ledger row.
_ATTEMPTED = " attempts = r.attempts + 1, last_attempt_at = now(), sent_hash = d.sent,"


class StateStoreError(RuntimeError):
    pass


class StateStoreMissing(StateStoreError):
    """No state store at this URL and schema: creating one is an explicit act."""


class StateStoreOwnerMismatch(StateStoreError):
    """The store belongs to another Gestimum host or company file."""


def gestimum_host(url: str) -> str:
    """The host part of a Gestimum URL, as the store records it (lower case, no port, no credentials)."""
    return (urlsplit(url).hostname or url).lower()


# PBKDF2-HMAC-SHA256 rounds of an access fingerprint: OWASP's current figure (600,000), about
# 0.15 s per lookup or record (a few per run), and as slow per guess for anyone trying passwords
# against a copy of the table. A proof stored with fewer rounds proves nothing: the preflight
# checks access once more and records it again with these.
ACCESS_FINGERPRINT_ITERATIONS = 600_000
_FINGERPRINT_SCHEME = "pbkdf2_sha256"
_MAX_FINGERPRINT_ITERATIONS = 10_000_000  # a tampered row must not make a lookup hang


def access_fingerprint(
    gestimum_url: str,
    company_file: str,
    user: str,
    password: str,
    salt: bytes,
    iterations: int = ACCESS_FINGERPRINT_ITERATIONS,
) -> str:
    """Identifies the credentials Gestimum accepted (its URL, company file, user, password) without
    revealing them: a salted, stretched hash, `pbkdf2_sha256$<iterations>$<hex>`."""
    material = json.dumps([gestimum_url.strip().rstrip("/"), company_file, user, password], ensure_ascii=False).encode(
        "utf-8"
    )
    digest = hashlib.pbkdf2_hmac("sha256", material, salt, iterations)
    return f"{_FINGERPRINT_SCHEME}${iterations}${digest.hex()}"


def _fingerprint_matches(stored: str, salt_hex: str, credentials: tuple[str, str, str, str]) -> bool:
    try:
        scheme, rounds, _ = stored.split("$")
        iterations = int(rounds)
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != _FINGERPRINT_SCHEME or not ACCESS_FINGERPRINT_ITERATIONS <= iterations <= _MAX_FINGERPRINT_ITERATIONS:
        return False
    return hmac.compare_digest(stored, access_fingerprint(*credentials, salt, iterations))


class AccessProof(NamedTuple):
    """When Gestimum last accepted a request made with the credentials asked about (database clock)."""

    verified_at: datetime
    run_id: str | None
    age_seconds: float


class WriterFenced(StateStoreError):
    """Another writer took over the company file: this one must not send anything more."""


@dataclass(frozen=True)
class StageCounts:
    staged: int  # rows now pending (new or changed)
    rejected: int  # rows rejected locally (new or changed)
    unchanged: int  # rows already in that state (nothing to send)
    # Rows whose CRM version differs from the store's but which were not re-staged (a stock
    # movement already sent): the window they belong to must not be recorded as unchanged.
    skipped: int = 0


class PendingLine(NamedTuple):
    """One line to send (NamedTuple: millions per backfill, cheap to build)."""

    source_key: str
    line: str
    group_key: str
    content_hash: str = ""  # the version read: marking in flight requires it to be still current


class Outcome(NamedTuple):
    """What Gestimum said about one line (NamedTuple: one per line sent)."""

    source_key: str
    imported: bool
    reason: str | None = None
    document: str | None = None


class StateStore:
    """Plain-Python access to the state store; one psycopg2 connection per instance."""

    def __init__(
        self,
        url: str,
        schema: str = DEFAULT_SCHEMA,
        *,
        setting: str = "SYNC_STATE_DATABASE_URL",
        endpoints: EndpointRegistry = ENDPOINTS,
    ) -> None:
        self.url = url
        # Parents and document-creating endpoints come from the registry, by endpoint name.
        self.endpoints = endpoints
        self.schema = validate_identifier(schema, "state store schema")
        self._setting = setting
        self._conn: psycopg2.extensions.connection | None = None
        # record_outcomes hands master data's UPDATEs to a background connection, so
        # request k's outcomes are written while request k+1 is marked and posted. Every
        # other use of `conn` first waits for them (and raises their error); company_lock
        # is released only once they are committed.
        self.async_outcomes = True
        self._writer: _OutcomeWriter | None = None
        # (company file, generation) while company_lock is held: checked by every marking.
        self._lease: tuple[str, int] | None = None
        # {request id: ledger row id} from mark_in_flight until the outcome is recorded
        # (request ids are readable, not unique across runs).
        self._sent: dict[str, int] = {}
        # Recorded in the `detail` of every operator action made through this store: how the
        # action was launched (the Dagster run's tags; that its actor is declared, not proven).
        self.action_provenance: dict[str, Any] = {}

    # -- connection ---------------------------------------------------------------
    @property
    def conn(self) -> psycopg2.extensions.connection:
        self._drain()
        return self._own_conn()

    def _own_conn(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, setting=self._setting)
        return self._conn

    def new_connection(self) -> psycopg2.extensions.connection:
        return connect(self.url, setting=self._setting)

    def _drain(self, *, raise_errors: bool = True) -> None:
        """Waits until every outcome handed to the background writer is committed."""
        if self._writer is not None:
            self._writer.drain(raise_errors=raise_errors)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(self.schema))

    # -- schema -------------------------------------------------------------------
    def migrate(self) -> int:
        """Creates or upgrades the schema; safe to call from concurrent runs. Returns the version."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gestimum_sync.migrate:{self.schema}",))
            cur.execute(self._q("CREATE SCHEMA IF NOT EXISTS {schema}"))
            cur.execute(
                self._q(
                    "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                    " version integer PRIMARY KEY, description text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            cur.execute(self._q("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"))
            current = cur.fetchone()[0]
            for version, description, ddl in _MIGRATIONS:
                if version <= current:
                    continue
                cur.execute(self._q(ddl))
                cur.execute(
                    self._q("INSERT INTO {schema}.schema_migrations (version, description) VALUES (%s, %s)"),
                    (version, description),
                )
                current = version
        return current

    def exists(self) -> bool:
        """Whether a state store was created at this URL and schema (never creates anything)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{self.schema}".schema_migrations',))
            return bool(cur.fetchone()[0])

    def open_existing(self) -> int:
        """Upgrades an existing store to the latest schema; a missing one is an error naming the command.

        A store already at the latest version is only read (no DDL), so the sync's role needs
        DML on the store's tables alone; DDL is for `state init` and upgrades (docs/security.md).
        """
        if not self.exists():
            raise StateStoreMissing(
                f"no state store at {redact_url(self.url)} (schema {self.schema!r}, from {self._setting}): create "
                f"it with `{INIT_COMMAND}` (or check the URL and schema: a new store would send every movement of "
                "the range again)"
            )
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._q("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"))
            current = cur.fetchone()[0]
        return current if current >= _MIGRATIONS[-1][0] else self.migrate()

    def init(self, gestimum_url: str, company_file: str, *, actor: str | None = None) -> bool:
        """Creates (or upgrades) the store for this Gestimum host and company file; True if it was new.

        Refuses a store that belongs to another host or company file.
        """
        created = not self.exists()
        self.migrate()
        self.check_owner(gestimum_url, company_file, claimed_by=actor)
        return created

    def owner(self) -> tuple[str, str] | None:
        """(Gestimum host, company file) the store belongs to, or None if no sink has claimed it yet."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._q("SELECT gestimum_host, company_file FROM {schema}.owner"))
            found = cur.fetchone()
        return (found[0], found[1]) if found else None

    def check_owner(
        self, gestimum_url: str, company_file: str, *, claim: bool = True, claimed_by: str | None = None
    ) -> None:
        """Refuses to work for another Gestimum host or company file than the store's own.

        A store without an owner yet (created by `migrate()` alone, or before owners were
        recorded) is claimed when `claim` (by `init`, or by a sink once Gestimum has answered).
        """
        host = gestimum_host(gestimum_url)
        conn = self.conn
        with conn, conn.cursor() as cur:
            if claim:
                cur.execute(
                    self._q(
                        "INSERT INTO {schema}.owner (gestimum_host, company_file, claimed_by) VALUES (%s, %s, %s)"
                        " ON CONFLICT (singleton) DO NOTHING"
                    ),
                    (host, company_file, claimed_by or f"pid {os.getpid()} on {socket.gethostname()}"),
                )
            cur.execute(self._q("SELECT gestimum_host, company_file FROM {schema}.owner"))
            found = cur.fetchone()
        if found is None:
            return
        owner_host, owner_file = found
        if (owner_host, owner_file) != (host, company_file):
            # redact_text: the company file is configuration, and may hold anything (a URL with its password).
            raise StateStoreOwnerMismatch(
                redact_text(
                    f"the state store at {redact_url(self.url)} (schema {self.schema!r}) belongs to company file "
                    f"{owner_file!r} on Gestimum host {owner_host!r}, but this run is set for {company_file!r} on "
                    f"{host!r}: check GESTIMUM_URL and GESTIMUM_FICHIER, or give this company file its own store "
                    f"(SYNC_STATE_DATABASE_URL or another schema, created with `{INIT_COMMAND}`)",
                    url_secrets(self.url),
                )
            )

    # -- Gestimum access ----------------------------------------------------------------
    def record_access(self, gestimum_url: str, company_file: str, user: str, password: str, run_id: str | None) -> None:
        """Records that Gestimum just accepted a request made with these credentials (one upsert)."""
        salt = os.urandom(16)  # a fresh salt per record: equal credentials never look equal across stores
        fingerprint = access_fingerprint(gestimum_url, company_file, user, password, salt)
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO {schema}.gestimum_access AS a"
                    " (company_file, gestimum_host, fingerprint, salt, verified_at, run_id)"
                    " VALUES (%s, %s, %s, %s, now(), %s) ON CONFLICT (company_file) DO UPDATE SET"
                    " gestimum_host = EXCLUDED.gestimum_host, fingerprint = EXCLUDED.fingerprint,"
                    " salt = EXCLUDED.salt, verified_at = EXCLUDED.verified_at, run_id = EXCLUDED.run_id"
                ),
                (company_file, gestimum_host(gestimum_url), fingerprint, salt.hex(), run_id),
            )

    def access_proof(self, gestimum_url: str, company_file: str, user: str, password: str) -> AccessProof | None:
        """The last acceptance of exactly these credentials, or None (never proven, or other credentials since)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT fingerprint, salt, verified_at, run_id, extract(epoch FROM now() - verified_at)"
                    " FROM {schema}.gestimum_access WHERE company_file = %s"
                ),
                (company_file,),
            )
            found = cur.fetchone()
        if found is None or not _fingerprint_matches(found[0], found[1], (gestimum_url, company_file, user, password)):
            return None
        return AccessProof(found[2], found[3], float(found[4]))

    def access_verified(
        self,
        gestimum_url: str,
        company_file: str,
        user: str,
        password: str,
        *,
        max_age_seconds: float | None,
        since: datetime | None = None,
        run_id: str | None = None,
    ) -> bool:
        """Whether Gestimum accepted these credentials less than `max_age_seconds` ago (None: ever),
        not before `since` (a database-clock time) and, if `run_id` is given, in that run."""
        proof = self.access_proof(gestimum_url, company_file, user, password)
        if proof is None:
            return False
        if max_age_seconds is not None and proof.age_seconds >= max_age_seconds:
            return False
        if since is not None and proof.verified_at < since:
            return False
        return run_id is None or proof.run_id == run_id

    # -- staging (transform assets) -------------------------------------------------
    def stage(
        self,
        endpoint: str,
        rows: Sequence[MappedRow],
        *,
        partition: str | None,
        run_id: str | None,
        force: bool = False,
    ) -> StageCounts:
        """Records a chunk of mapped rows: changed rows become pending, invalid ones rejected.

        Unchanged rows are left alone, so a rerun stages nothing. Stock movements are
        immutable once known: only a pending or locally rejected movement is re-staged,
        and `force` never re-sends one.
        """
        if not rows:
            return StageCounts(0, 0, 0)
        conn = self.conn
        buf = io.StringIO(_copy_rows(rows))
        if self.endpoints.creates_documents(endpoint):
            # A movement in an open request keeps the line sent: a new version is noted aside
            # below (the divergence check), never sent after it.
            may_update = (
                "(r.status = 'pending' OR (r.status = 'rejected' AND r.reason_source = 'local'))"
                " AND r.content_hash IS DISTINCT FROM EXCLUDED.content_hash"
                " AND NOT EXISTS (SELECT 1 FROM {schema}.requests q WHERE q.state = 'in_flight'"
                " AND q.endpoint = r.endpoint AND q.keys && ARRAY[r.source_key])"
            )
        else:
            # An in-flight row takes the new version too, and stays in flight: the outcome
            # of the line sent is recorded against `sent_hash`, then the change is sent next.
            may_update = (
                "r.status <> 'delivery_unknown' AND ("
                "r.content_hash IS DISTINCT FROM EXCLUDED.content_hash"
                + (" OR r.status NOT IN ('ignored', 'in_flight')" if force else "")
                + ")"
            )
        with conn, conn.cursor() as cur:
            # A staging lost in a server crash is simply staged again by the next run.
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staged_rows (source_key text, line text, content_hash text,"
                " parent_key text, group_key text, sort_key bigint, reason text) ON COMMIT DELETE ROWS"
            )
            cur.copy_expert("COPY staged_rows FROM STDIN", buf)
            cur.execute(
                self._q(
                    """
                    INSERT INTO {schema}.records AS r (endpoint, source_key, status, line, content_hash,
                        parent_key, group_key, sort_key, reason, reason_source, partition, run_id)
                    SELECT %(endpoint)s, s.source_key,
                           CASE WHEN s.line IS NULL THEN 'rejected' ELSE 'pending' END,
                           s.line, s.content_hash, s.parent_key, s.group_key, s.sort_key, s.reason,
                           CASE WHEN s.line IS NULL THEN 'local' END, %(partition)s, %(run_id)s
                    FROM staged_rows s
                    ON CONFLICT (endpoint, source_key) DO UPDATE SET
                        status = CASE WHEN r.status = 'in_flight' THEN 'in_flight' ELSE EXCLUDED.status END,
                        line = EXCLUDED.line, content_hash = EXCLUDED.content_hash,
                        parent_key = EXCLUDED.parent_key, group_key = EXCLUDED.group_key,
                        sort_key = EXCLUDED.sort_key, reason = EXCLUDED.reason,
                        reason_source = EXCLUDED.reason_source, partition = EXCLUDED.partition,
                        run_id = EXCLUDED.run_id, updated_at = now()
                    WHERE """
                    + may_update
                    + """
                    RETURNING status
                    """
                ),
                {"endpoint": endpoint, "partition": partition, "run_id": run_id},
            )
            statuses = [s for (s,) in cur.fetchall()]
            skipped = 0
            # When every row was taken, none diverged and none was refused: no join at all.
            if len(statuses) < len(rows) and self.endpoints.creates_documents(endpoint):
                # Movements already sent keep their line; a different CRM version is noted
                # aside (and cleared when the CRM reverts), for the divergence check.
                cur.execute(
                    self._q(
                        "UPDATE {schema}.records r SET diverged_hash = CASE WHEN r.content_hash = s.content_hash"
                        " THEN NULL ELSE s.content_hash END,"
                        " diverged_at = CASE WHEN r.content_hash = s.content_hash THEN NULL"
                        " ELSE coalesce(r.diverged_at, now()) END"
                        " FROM staged_rows s WHERE r.endpoint = %s AND r.source_key = s.source_key"
                        " AND (r.content_hash IS DISTINCT FROM s.content_hash OR r.diverged_hash IS NOT NULL)"
                        " AND r.diverged_hash IS DISTINCT FROM"
                        " (CASE WHEN r.content_hash = s.content_hash THEN NULL ELSE s.content_hash END)"
                    ),
                    (endpoint,),
                )
                cur.execute(
                    self._q(
                        "SELECT count(*) FROM staged_rows s JOIN {schema}.records r"
                        " ON r.endpoint = %s AND r.source_key = s.source_key WHERE r.diverged_hash IS NOT NULL"
                    ),
                    (endpoint,),
                )
                skipped = int(cur.fetchone()[0])
            elif len(statuses) < len(rows):
                # Rows left alone are unchanged, or a version the store refused: after the
                # upsert only the latter still differ.
                cur.execute(
                    self._q(
                        "SELECT count(*) FROM staged_rows s JOIN {schema}.records r"
                        " ON r.endpoint = %s AND r.source_key = s.source_key"
                        " WHERE r.content_hash IS DISTINCT FROM s.content_hash"
                    ),
                    (endpoint,),
                )
                skipped = int(cur.fetchone()[0])
            self._compact_counts(cur)
        staged = sum(1 for s in statuses if s in ("pending", "in_flight"))
        rejected = len(statuses) - staged
        return StageCounts(staged, rejected, len(rows) - len(statuses) - skipped, skipped)

    # -- sending (sink assets) ------------------------------------------------------
    @contextmanager
    def company_lock(self, company_file: str, *, timeout_seconds: float = 3600.0) -> Iterator[None]:
        """Only one sender per Gestimum company file at a time, whatever runs overlap.

        A session-level advisory lock on its own connection: a killed process releases it.
        """
        conn = self.new_connection()
        conn.autocommit = True
        key = f"gestimum_sync.company:{company_file}"
        deadline = time.monotonic() + timeout_seconds
        try:
            with conn.cursor() as cur:
                while True:
                    cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
                    if cur.fetchone()[0]:
                        break
                    if time.monotonic() > deadline:
                        raise StateStoreError(
                            f"another run has been sending to company file {company_file!r} for over "
                            f"{timeout_seconds:.0f} s; retry once it finishes"
                        )
                    time.sleep(0.5)
            self._lease = (company_file, self._take_lease(company_file))
            yield
            self._drain()  # outcomes of the last request are committed before the lock goes
        finally:
            self._lease = None
            self._drain(raise_errors=False)  # after a failure: still never release mid-write
            conn.close()

    def _take_lease(self, company_file: str) -> int:
        """Bumps the company file's generation: every earlier writer is fenced off from now on.

        The UPDATE waits for a marking transaction of the previous writer to commit, so its
        rows are in flight (and recovered by this writer) or were never marked.
        """
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO {schema}.leases AS l (company_file, generation, holder) VALUES (%s, 1, %s)"
                    " ON CONFLICT (company_file) DO UPDATE SET generation = l.generation + 1,"
                    " holder = EXCLUDED.holder, acquired_at = now() RETURNING generation"
                ),
                (company_file, f"pid {os.getpid()} on {socket.gethostname()}"),
            )
            return int(cur.fetchone()[0])

    def _check_lease(self, cur: psycopg2.extensions.cursor) -> None:
        """Inside a marking transaction: holds the lease row and proves it is still ours."""
        if self._lease is None:
            raise StateStoreError("rows are marked in flight only inside company_lock (a fenced writer)")
        company_file, generation = self._lease
        cur.execute(
            self._q("SELECT generation, holder FROM {schema}.leases WHERE company_file = %s FOR SHARE"),
            (company_file,),
        )
        found = cur.fetchone()
        if found is None or int(found[0]) != generation:
            holder = found[1] if found else "nobody"
            raise WriterFenced(
                f"another writer ({holder}) took over company file {company_file!r} while this run was sending "
                "(this run's lock session was dropped); this run stops before sending anything more"
            )

    def recover_in_flight(self, endpoint: str) -> int:
        """Settles requests left open by a run that died mid-request; returns how many rows.

        Called under the company lock with a fresh lease: every request still open was sent
        by a writer that is gone. Master data waits to be sent again (an idempotent upsert);
        stock movements become `delivery_unknown`, because Gestimum may have created them.
        """
        if not self._has(endpoint, "in_flight"):
            return 0  # the exact counts say there is nothing to settle: no scan
        documents = self.endpoints.creates_documents(endpoint)
        recovered = 0
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT id, request_id, keys, hashes FROM {schema}.requests"
                    " WHERE endpoint = %s AND state = 'in_flight' ORDER BY id"
                ),
                (endpoint,),
            )
            for ledger_id, request_id, keys, hashes in cur.fetchall():
                reason = f"the run sending request {request_id} stopped before Gestimum's answer was recorded"
                sent = dict(zip(keys, hashes, strict=True))
                if documents:
                    recovered += self._settle(
                        cur, endpoint, [ledger_id], sent, delivered=None, reason=reason, request_id=request_id
                    )
                else:
                    cur.execute(
                        self._q(
                            "UPDATE {schema}.requests SET state = 'abandoned', settled_at = now(), reason = %s"
                            " WHERE id = %s"
                        ),
                        (reason, ledger_id),
                    )
                    recovered += len(keys)
            # Rows an earlier version of this store marked in flight one by one.
            if documents:
                query = (
                    "UPDATE {schema}.records SET status = 'delivery_unknown', reason_source = 'delivery',"
                    " reason = 'the run sending request ' || coalesce(request_id, '?') || ' stopped before Gestimum'"
                    "'s answer was recorded', updated_at = now()"
                    " WHERE endpoint = %s AND status = 'in_flight'"
                )
            else:
                query = (
                    "UPDATE {schema}.records r SET status = " + _REQUEUED + ", updated_at = now()"
                    " WHERE endpoint = %s AND status = 'in_flight'"
                )
            cur.execute(self._q(query), (endpoint,))
            recovered += cur.rowcount
        return recovered

    def hold_orphans(self, endpoint: str) -> int:
        """Pending rows whose parent is rejected, held or ignored are held, not sent to certain failure."""
        parent = self.endpoints.parent_of(endpoint)
        if parent is None or not self._has(endpoint, "pending") or not self._has(parent, "rejected", "held", "ignored"):
            return 0  # nothing can match: skip the join of every pending row with its parent
        return self._execute_count(
            """
            UPDATE {schema}.records c SET status = 'held', reason_source = 'parent', updated_at = now(),
                reason = 'held until ' || p.endpoint || ' record ' || p.source_key || ' imports (it is '
                         || p.status || coalesce(': ' || p.reason, '') || ')'
            FROM {schema}.records p
            WHERE c.endpoint = %s AND c.status = 'pending'
              AND p.endpoint = %s AND p.source_key = c.parent_key
              AND p.status IN ('rejected', 'held', 'ignored')
            """,
            (endpoint, parent),
        )

    def release_children(self, endpoint: str) -> int:
        """Held rows, and rows Gestimum rejected, are re-queued once their parent has imported since."""
        parent = self.endpoints.parent_of(endpoint)
        if parent is None or not self._has(endpoint, "held", "rejected"):
            return 0  # nothing can match: skip the join over every record of the endpoint
        return self._execute_count(
            """
            UPDATE {schema}.records c SET status = 'pending', reason = NULL, reason_source = NULL,
                updated_at = now()
            FROM {schema}.records p
            WHERE c.endpoint = %s AND p.endpoint = %s AND p.source_key = c.parent_key
              AND p.status = 'imported'
              AND (c.status = 'held'
                   OR (c.status = 'rejected' AND c.reason_source = 'gestimum'
                       AND p.imported_at > c.last_attempt_at))
            """,
            (endpoint, parent),
        )

    def iter_pending(self, endpoint: str, *, chunk_size: int = 5000) -> Iterator[PendingLine]:
        """Streams pending lines in sending order through a server-side cursor on its own connection."""
        # Outcomes of requests already sent are recorded first: their rows are no longer pending.
        if not self._has(endpoint, "pending"):
            # Exact counts say none: skip the scan (an index full of entries for rows sent
            # since, until vacuum passes, costs 0.3-0.5 s at a million records).
            return
        conn = self.new_connection()
        try:
            with conn, conn.cursor(name=f"pending_{uuid.uuid4().hex[:12]}") as cur:
                cur.itersize = chunk_size
                cur.execute(
                    self._q(
                        "SELECT source_key, line, group_key, content_hash FROM {schema}.records"
                        " WHERE endpoint = %s AND status = 'pending'"
                        " ORDER BY group_key, sort_key, source_key"
                    ),
                    (endpoint,),
                )
                for key, line, group, hashed in cur:
                    yield PendingLine(key, line, group, hashed)
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
            self._check_lease(cur)
            cur.execute(
                self._q(
                    """
                    INSERT INTO {schema}.requests (request_id, endpoint, company_file, generation, run_id, state,
                                                   lines, keys, hashes)
                    SELECT %(request)s, %(endpoint)s, %(company)s, %(generation)s, %(run)s, 'in_flight', count(*),
                           array_agg(d.key ORDER BY d.i), array_agg(r.content_hash ORDER BY d.i)
                    FROM unnest(%(keys)s::text[], %(wanted)s::text[]) WITH ORDINALITY AS d(key, wanted, i)
                    -- One primary-key lookup per line: a hash join would read the whole table, and
                    -- the status test inside would let the planner walk the pending index instead.
                    CROSS JOIN LATERAL (SELECT content_hash, status FROM {schema}.records
                                        WHERE endpoint = %(endpoint)s AND source_key = d.key OFFSET 0) AS r
                    WHERE r.status = 'pending' AND (d.wanted IS NULL OR r.content_hash = d.wanted)
                    HAVING count(*) > 0
                    RETURNING id, CASE WHEN lines < %(n)s THEN keys END
                    """
                ),
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
                self._q(
                    "SELECT id FROM {schema}.requests WHERE endpoint = %(endpoint)s AND state = 'in_flight'"
                    " AND (%(request)s::text IS NULL OR request_id = %(request)s) AND keys && %(keys)s::text[]"
                    " ORDER BY id"
                ),
                {"endpoint": endpoint, "request": request_id, "keys": text_array(keys)},
            )
            return [int(i) for (i,) in cur.fetchall()]

    def _sent_hashes(self, cur: psycopg2.extensions.cursor, ids: Sequence[int], keys: Sequence[str]) -> dict[str, str]:
        """{key: hash of the line sent} for these keys of these requests (only lines with a story of their own)."""
        cur.execute(
            self._q(
                "SELECT d.k, d.h FROM {schema}.requests q, unnest(q.keys, q.hashes) AS d(k, h)"
                " WHERE q.id = ANY(%s) AND d.k = ANY(%s::text[])"
            ),
            (list(ids), text_array(keys)),
        )
        return dict(cur.fetchall())

    def record_outcomes(self, endpoint: str, outcomes: Sequence[Outcome], *, request_id: str | None = None) -> None:
        """Records each line's outcome and closes the request. With `async_outcomes` (the default)
        master data's UPDATEs run on a background connection and this returns at once; see
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
            self._writer = _OutcomeWriter(self.new_connection, self._apply_outcomes)
        self._writer.submit(job)

    def _apply_outcomes(self, conn: psycopg2.extensions.connection, job: _Outcomes) -> None:
        endpoint = job.endpoint
        same = "r.content_hash = d.sent"
        # The rows this answer may still speak for: waiting (pending, or a queued version
        # rejected locally), left in flight by an earlier version, or declared unknown by a
        # writer that took over (a stock answer that arrives late is still the truth).
        answerable = (
            " AND (r.status IN ('pending', 'rejected', 'in_flight')"
            " OR (r.status = 'delivery_unknown' AND r.reason_source = 'delivery'))"
        )
        common = _ATTEMPTED + " request_id = %(request)s,"
        documents = self.endpoints.creates_documents(endpoint)
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
                if documents:
                    # A movement is never sent twice: a version staged while it was in flight
                    # is kept aside as a divergence, for the check to report.
                    set_clause = (
                        "SET status = 'imported', imported_hash = d.sent, content_hash = d.sent, imported_at = now(),"
                        " reason = NULL, reason_source = NULL, document = d.document,"
                        f" diverged_hash = CASE WHEN {same} THEN r.diverged_hash ELSE r.content_hash END,"
                        f" diverged_at = CASE WHEN {same} THEN r.diverged_at ELSE now() END,"
                        + common
                        + " updated_at = now()"
                    )
                else:
                    set_clause = (
                        f"SET status = CASE WHEN {same} THEN 'imported' ELSE {_REQUEUED} END,"
                        " imported_hash = d.sent, imported_at = now(),"
                        f" reason = CASE WHEN {same} THEN NULL ELSE r.reason END,"
                        f" reason_source = CASE WHEN {same} THEN NULL ELSE r.reason_source END,"
                        " document = d.document," + common + " updated_at = now()"
                    )
                cur.execute(
                    self._q(
                        "UPDATE {schema}.records r "
                        + set_clause
                        + """
                        FROM (SELECT q.endpoint, k.key, k.sent, coalesce(x.document, %(document)s) AS document
                              FROM {schema}.requests q
                              CROSS JOIN LATERAL unnest(q.keys, q.hashes) AS k(key, sent)
                              LEFT JOIN LATERAL (SELECT x.document FROM unnest(%(document_keys)s::text[],
                                                 %(documents)s::text[]) AS x(key, document)
                                                 WHERE x.key = k.key LIMIT 1) AS x ON true
                              WHERE q.id = ANY(%(ids)s) AND NOT (k.key = ANY(%(rejected)s::text[]))) AS d
                        WHERE r.endpoint = d.endpoint AND r.source_key = d.key
                        """
                        + answerable
                    ),
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
                    self._q(
                        f"""
                        UPDATE {{schema}}.records r SET status = CASE WHEN {same} THEN 'rejected' ELSE {_REQUEUED} END,
                            reason = CASE WHEN {same} THEN d.reason ELSE r.reason END,
                            reason_source = CASE WHEN {same} THEN 'gestimum' ELSE r.reason_source END,
                            {common} updated_at = now()
                        FROM unnest(%(keys)s::text[], %(reasons)s::text[], %(sent)s::text[])
                             AS d(source_key, reason, sent)
                        WHERE r.endpoint = %(endpoint)s AND r.source_key = d.source_key
                        """
                        + answerable
                    ),
                    {
                        "keys": text_array(job.rejected_keys),
                        "reasons": text_array(job.rejected_reasons),
                        "sent": text_array([sent.get(k, "") for k in job.rejected_keys]),
                        "endpoint": endpoint,
                        "request": job.request_id,
                    },
                )
            # Closed in the same transaction: a request still open after a crash is one whose
            # outcomes were lost, and the next run settles it like any interrupted request.
            # Its keys and hashes are now in the records (request_id, sent_hash): dropped, so a
            # backfill does not keep a second copy of every key (450 kB per full request).
            cur.execute(
                self._q(
                    "UPDATE {schema}.requests SET state = 'answered', settled_at = now(), imported = %s,"
                    " rejected = %s, keys = '{{}}', hashes = '{{}}' WHERE id = ANY(%s)"
                ),
                (job.imported, len(job.rejected_keys), job.ledger_ids),
            )
            self._compact_counts(cur)  # once per request: the deltas stay few

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
        common = _ATTEMPTED
        if delivered is None:
            # Whatever version is staged now, the line sent may have become a document.
            query = (
                "UPDATE {schema}.records r SET status = 'delivery_unknown', reason = %(reason)s,"
                " reason_source = 'delivery', request_id = coalesce(%(request)s, r.request_id),"
                + common
                + " updated_at = now()"
                " FROM unnest(%(keys)s::text[], %(sent)s::text[]) AS d(source_key, sent)"
                " WHERE r.endpoint = %(endpoint)s AND r.source_key = d.source_key"
                " AND (r.status IN ('pending', 'in_flight') OR (r.status = 'rejected' AND r.reason_source = 'local'))"
            )
        else:
            # The rows are still waiting (a row left in flight by an earlier version goes back);
            # a queued version that failed local validation keeps its own reason.
            query = (
                "UPDATE {schema}.records r SET status = " + _REQUEUED + ","
                " reason = CASE WHEN r.line IS NULL THEN r.reason ELSE %(reason)s END,"
                " reason_source = CASE WHEN r.line IS NULL THEN r.reason_source ELSE 'delivery' END,"
                + common
                + " updated_at = now()"
                " FROM unnest(%(keys)s::text[], %(sent)s::text[]) AS d(source_key, sent)"
                " WHERE r.endpoint = %(endpoint)s AND r.source_key = d.source_key"
                " AND r.status IN ('pending', 'in_flight')"
            )
        cur.execute(
            self._q(query),
            {
                "reason": reason,
                "endpoint": endpoint,
                "keys": list(sent),
                "sent": list(sent.values()),
                "request": request_id,
            },
        )
        written = cur.rowcount
        cur.execute(
            self._q(
                "UPDATE {schema}.requests SET state = %s, settled_at = now(), reason = %s"
                " WHERE id = ANY(%s) AND state = 'in_flight'"
            ),
            ("unknown" if delivered is None else "failed", reason, ids),
        )
        self._compact_counts(cur)
        return written

    # -- reading ---------------------------------------------------------------------
    def counts(self, endpoint: str | None = None) -> dict[str, dict[str, int]]:
        """{endpoint: {status: count}} for one or all endpoints."""
        # Sums the trigger-kept deltas (migration 2): exact, and independent of the table's size.
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT endpoint, status, sum(delta) FROM {schema}.status_deltas"
                    " WHERE %(e)s::text IS NULL OR endpoint = %(e)s GROUP BY endpoint, status"
                    " HAVING sum(delta) <> 0"
                ),
                {"e": endpoint},
            )
            out: dict[str, dict[str, int]] = {}
            for ep, status, n in cur.fetchall():
                out.setdefault(ep, {})[status] = int(n)
            # Rows in an open request are in flight (their records still say pending).
            cur.execute(
                self._q(
                    "SELECT endpoint, sum(lines) FROM {schema}.requests WHERE state = 'in_flight'"
                    " AND (%(e)s::text IS NULL OR endpoint = %(e)s) GROUP BY endpoint"
                ),
                {"e": endpoint},
            )
            for ep, n in cur.fetchall():
                by_status = out.setdefault(ep, {})
                by_status["in_flight"] = by_status.get("in_flight", 0) + int(n)
                left = by_status.get("pending", 0) - int(n)
                if left > 0:
                    by_status["pending"] = left
                else:
                    by_status.pop("pending", None)
        return out

    def _compact_counts(self, cur: psycopg2.extensions.cursor) -> None:
        """Folds the kept deltas when they pile up; called on the write paths that add them."""
        cur.execute(self._q("SELECT count(*) FROM {schema}.status_deltas"))
        if cur.fetchone()[0] > _COMPACT_DELTAS_ABOVE:
            # Concurrent compactions are safe: each folds only the rows it deleted.
            cur.execute(
                self._q(
                    "WITH gone AS (DELETE FROM {schema}.status_deltas RETURNING endpoint, status, delta)"
                    " INSERT INTO {schema}.status_deltas (endpoint, status, delta)"
                    " SELECT endpoint, status, sum(delta) FROM gone GROUP BY endpoint, status"
                    " HAVING sum(delta) <> 0"
                )
            )

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
            cur.execute(
                self._q(
                    "SELECT status, count(*), min(updated_at) FROM {schema}.records"
                    " WHERE endpoint = %s AND status = ANY(%s) AND updated_at < now() - make_interval(secs => %s)"
                    " GROUP BY status"
                ),
                (endpoint, list(statuses), older_than_seconds),
            )
            found = {status: (int(n), oldest) for status, n, oldest in cur.fetchall()}
            if "in_flight" in statuses:
                cur.execute(
                    self._q(
                        "SELECT sum(lines), min(sent_at) FROM {schema}.requests WHERE endpoint = %s"
                        " AND state = 'in_flight' AND sent_at < now() - make_interval(secs => %s)"
                    ),
                    (endpoint, older_than_seconds),
                )
                n, oldest = cur.fetchone()
                if n:
                    before = found.get("in_flight")
                    found["in_flight"] = (
                        int(n) + (before[0] if before else 0),
                        min(oldest, before[1]) if before else oldest,
                    )
            return found

    # -- window signatures (reruns skip windows nothing has touched) ----------------------
    def window_signature(
        self, endpoint: str, mapping: str, start: datetime, end: datetime
    ) -> tuple[int, Decimal] | None:
        """The signature recorded when this exact window was last staged in full with this mapping."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT row_count, row_versions FROM {schema}.window_signatures"
                    " WHERE endpoint = %s AND mapping = %s AND window_start = %s AND window_end = %s"
                ),
                (endpoint, mapping, start, end),
            )
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
    ) -> None:
        """Called once every row of the window read under `signature` is staged."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO {schema}.window_signatures AS w"
                    " (endpoint, mapping, window_start, window_end, row_count, row_versions, run_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (endpoint, mapping, window_start, window_end) DO UPDATE SET"
                    " row_count = EXCLUDED.row_count, row_versions = EXCLUDED.row_versions,"
                    " run_id = EXCLUDED.run_id, recorded_at = now()"
                ),
                (endpoint, mapping, start, end, signature[0], signature[1], run_id),
            )

    def record_staged_window(self, endpoint: str, start: datetime, end: datetime, *, run_id: str | None) -> None:
        """Called once every row of the window has been staged (or found unchanged)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO {schema}.staged_windows (endpoint, window_start, window_end, run_id)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (endpoint, window_start, window_end)"
                    " DO UPDATE SET run_id = EXCLUDED.run_id, recorded_at = now()"
                ),
                (endpoint, start, end, run_id),
            )

    def staged_windows(self, endpoint: str, *, merged: bool = True) -> list[tuple[datetime, datetime]]:
        """The endpoint's windows staged in full in time order; `merged` into disjoint ranges."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT window_start, window_end FROM {schema}.staged_windows WHERE endpoint = %s"
                    " ORDER BY window_start, window_end"
                ),
                (endpoint,),
            )
            windows: list[tuple[datetime, datetime]] = cur.fetchall()
        return merge_windows(windows) if merged else windows

    # The coverage check's signatures share `window_signatures` under this mapping name, so
    # removing records forgets them too (the delete trigger) and every window is checked again.
    _COVERAGE = "(coverage check)"

    def coverage_signatures(self, endpoint: str) -> dict[tuple[datetime, datetime], set[tuple[int, Decimal]]]:
        """{window: signatures} under which every CRM row of the window is known to be in the store.

        Those the coverage check recorded after a complete pass, and those a transform recorded
        after staging every row of the window it read under that signature: either proves it.
        """
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT window_start, window_end, row_count, row_versions FROM {schema}.window_signatures"
                    " WHERE endpoint = %s"
                ),
                (endpoint,),
            )
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
                self._q(
                    "INSERT INTO {schema}.window_signatures AS w"
                    " (endpoint, mapping, window_start, window_end, row_count, row_versions, run_id)"
                    " SELECT %s, %s, s, e, n, v, %s"
                    " FROM unnest(%s::timestamptz[], %s::timestamptz[], %s::bigint[], %s::numeric[]) AS d(s, e, n, v)"
                    " ON CONFLICT (endpoint, mapping, window_start, window_end) DO UPDATE SET"
                    " row_count = EXCLUDED.row_count, row_versions = EXCLUDED.row_versions,"
                    " run_id = EXCLUDED.run_id, recorded_at = now()"
                ),
                (
                    endpoint,
                    self._COVERAGE,
                    run_id,
                    [s for s, _ in windows],
                    [e for _, e in windows],
                    [signatures[w][0] for w in windows],
                    [signatures[w][1] for w in windows],
                ),
            )

    def diverged(self, endpoint: str, *, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(count, first rows) of sent movements whose CRM version changed since."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT count(*) OVER (), source_key, status, document, diverged_at FROM {schema}.records"
                    " WHERE endpoint = %s AND diverged_hash IS NOT NULL ORDER BY diverged_at, source_key LIMIT %s"
                ),
                (endpoint, limit),
            )
            found = cur.fetchall()
        total = int(found[0][0]) if found else 0
        return total, [{"source_key": k, "status": st, "document": d or "", "since": at} for _, k, st, d, at in found]

    def withdraw(self, endpoint: str, keys: Sequence[str], *, reason: str) -> list[str]:
        """Pending rows whose source row is gone are withdrawn (ignored, with the reason), never sent."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "UPDATE {schema}.records SET status = 'ignored', reason = %s, reason_source = 'crm',"
                    " updated_at = now() WHERE endpoint = %s AND source_key = ANY(%s) AND status = 'pending'"
                    " RETURNING source_key"
                ),
                (reason, endpoint, list(keys)),
            )
            return [k for (k,) in cur.fetchall()]

    def missing_keys(self, endpoint: str, keys: Sequence[str]) -> list[str]:
        """The keys among `keys` that have no record for the endpoint."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT k FROM unnest(%s::text[]) AS k WHERE NOT EXISTS"
                    " (SELECT 1 FROM {schema}.records r WHERE r.endpoint = %s AND r.source_key = k)"
                ),
                (list(keys), endpoint),
            )
            return [k for (k,) in cur.fetchall()]

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
                self._q(
                    """
                    SELECT endpoint, source_key, status, reason, reason_source, attempts, document,
                           partition, first_seen_at, updated_at, last_attempt_at, imported_at, line
                    FROM {schema}.record_status
                    WHERE (%(endpoint)s::text IS NULL OR endpoint = %(endpoint)s)
                      AND (%(keys)s::text[] IS NULL OR source_key = ANY(%(keys)s))
                      AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))
                      AND (%(reason)s::text IS NULL OR reason ILIKE %(reason)s)
                      AND (%(older)s::float IS NULL OR updated_at < now() - make_interval(secs => %(older)s))
                    ORDER BY endpoint, updated_at, source_key
                    LIMIT %(limit)s
                    """
                ),
                {
                    "endpoint": endpoint,
                    "statuses": list(statuses) if statuses else None,
                    "keys": list(keys) if keys else None,
                    "reason": f"%{reason_like}%" if reason_like else None,
                    "older": older_than_seconds,
                    "limit": limit,
                },
            )
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- operator actions ---------------------------------------------------------------
    def apply_action(
        self,
        action: str,
        endpoint: str,
        keys: Sequence[str],
        *,
        actor: str,
        from_statuses: Sequence[str],
        to_status: str,
        document: str | None = None,
        reason: str | None = None,
        run_id: str | None = None,
    ) -> list[str]:
        """Moves the given rows between statuses and records who did it (and the Dagster run that
        did it, for actions launched from the UI); returns the keys changed."""
        if to_status not in STATUSES:
            raise ValueError(f"unknown status {to_status!r}")
        conn = self.conn
        with conn, conn.cursor() as cur:
            # A marking transaction holds its lease row FOR SHARE: waiting for it here means the
            # UPDATE below sees its request (open, so the row is refused) or none, never half.
            cur.execute(self._q("SELECT 1 FROM {schema}.leases FOR UPDATE"))
            cur.execute(
                self._q(
                    """
                    UPDATE {schema}.records SET status = %(to)s, updated_at = now(),
                        reason = coalesce(%(reason)s, reason),
                        reason_source = CASE WHEN %(reason)s::text IS NULL THEN reason_source ELSE 'operator' END,
                        document = coalesce(%(document)s, document),
                        imported_hash = CASE WHEN %(to)s = 'imported' THEN content_hash ELSE imported_hash END,
                        imported_at = CASE WHEN %(to)s = 'imported' THEN now() ELSE imported_at END
                    WHERE endpoint = %(endpoint)s AND source_key = ANY(%(keys)s) AND status = ANY(%(from)s)
                      AND NOT EXISTS (SELECT 1 FROM {schema}.requests q WHERE q.state = 'in_flight'
                                      AND q.endpoint = %(endpoint)s AND q.keys && ARRAY[records.source_key])
                    RETURNING source_key
                    """
                ),
                {
                    "to": to_status,
                    "reason": reason,
                    "document": document,
                    "endpoint": endpoint,
                    "keys": list(keys),
                    "from": list(from_statuses),
                },
            )
            changed = [k for (k,) in cur.fetchall()]
            self._compact_counts(cur)
            for key in changed:
                cur.execute(
                    self._q(
                        "INSERT INTO {schema}.actions (actor, action, endpoint, source_key, detail)"
                        " VALUES (%s, %s, %s, %s, %s)"
                    ),
                    (
                        actor,
                        action,
                        endpoint,
                        key,
                        json.dumps(
                            {"to": to_status, "document": document, "reason": reason}
                            | ({"run_id": run_id} if run_id else {})
                            | self.action_provenance,
                            default=str,
                        ),
                    ),
                )
        return changed

    def actions(self, limit: int = 100) -> list[dict[str, Any]]:
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT id, at, actor, action, endpoint, source_key, detail FROM {schema}.actions"
                    " ORDER BY id DESC LIMIT %s"
                ),
                (limit,),
            )
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _execute_count(self, query: str, params: Sequence[Any]) -> int:
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._q(query), params)
            return cur.rowcount

    # -- reliability (appended: duplicate codes, operator tools) ---------------------------
    def reject_case_collisions(self, endpoint: str, field_code: str) -> list[tuple[str, str]]:
        """Rejects pending rows whose key differs only by case (or trailing spaces) from another live key.

        Gestimum runs on SQL Server, whose usual collations compare codes without case and
        ignore trailing spaces: `ACME` and `acme` would be one record there, the second
        import overwriting the first. Both are refused (reason_source `local`, the line is
        kept so `gestimum-pipeline retry` can re-queue one once the other is renamed).
        Returns (source key, reason) of the rows rejected.
        """
        if not self.counts(endpoint).get(endpoint, {}).get("pending"):
            return []  # only pending rows can be rejected: a rerun that staged nothing pays nothing
        conn = self.conn
        with conn, conn.cursor() as cur:
            # Mid-backfill the records are rarely analyzed, and a nested loop on the folded key
            # is quadratic (minutes at 10k rows): hash both sides instead, linear at any size.
            cur.execute("SET LOCAL enable_nestloop = off")
            cur.execute(
                self._q(
                    """
                    WITH collisions AS (
                        SELECT n.source_key, min(o.source_key) AS other
                        FROM {schema}.records n
                        JOIN {schema}.records o ON o.endpoint = n.endpoint AND o.source_key <> n.source_key
                             AND lower(rtrim(o.source_key)) = lower(rtrim(n.source_key))
                        WHERE n.endpoint = %(e)s AND n.status = 'pending'
                          AND o.status NOT IN ('rejected', 'ignored')
                        GROUP BY n.source_key
                    )
                    UPDATE {schema}.records r SET status = 'rejected', reason_source = 'local', updated_at = now(),
                        reason = %(e)s || ' record ' || r.source_key || ' field ' || %(f)s
                            || ': the code differs only by case or trailing spaces from record ' || c.other
                            || ', and Gestimum would store both as one record; rename one of them in the CRM,'
                            || ' then re-queue the other with `gestimum-pipeline retry`'
                    FROM collisions c
                    WHERE r.endpoint = %(e)s AND r.source_key = c.source_key
                    RETURNING r.source_key, r.reason
                    """
                ),
                {"e": endpoint, "f": field_code},
            )
            return [(k, reason) for k, reason in cur.fetchall()]

    def sendable_keys(self, endpoint: str, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """Splits `keys` into rows that still carry a line (can be re-sent) and rows that do not."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._q(
                    "SELECT source_key, line IS NOT NULL FROM {schema}.records"
                    " WHERE endpoint = %s AND source_key = ANY(%s)"
                ),
                (endpoint, list(keys)),
            )
            found = dict(cur.fetchall())
        return [k for k in keys if found.get(k)], [k for k in keys if k in found and not found[k]]


def merge_windows(windows: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Time windows merged into disjoint ranges, in time order."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


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


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of `values`, for a ``%s::text[]`` parameter.

    psycopg2 sends a list as ``ARRAY['a', 'b', ...]``, which the server parses as one
    expression per element: for a request's 10 000 keys that costs about five times parsing
    the literal (measured: 24.7 ms against 4.8 ms for two such arrays).
    """
    if not values:
        return "{}"
    joined = "\x1f".join(values)
    if '"' in joined or "\\" in joined or joined.count("\x1f") != len(values) - 1:
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
    return '{"' + joined.replace("\x1f", '","') + '"}'


class OutcomesNotRecorded(psycopg2.OperationalError):
    """The background writer could not record a master-data request's outcomes.

    A psycopg2 error, so callers handle it as any state-store failure.
    """


class _OutcomeWriter:
    """Applies record_outcomes jobs in order on its own connection, in a daemon thread.

    At most one job waits while one runs (submit blocks otherwise). A failed job keeps
    its rows in flight (recovered like after a crash) and its error is raised by the
    store's next use of its connection; later jobs are still applied.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg2.extensions.connection],
        apply: Callable[..., None],
    ) -> None:
        self._connect = connect
        self._apply = apply
        self._jobs: queue.Queue[_Outcomes | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gestimum-outcomes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: psycopg2.extensions.connection | None = None
        try:
            while True:
                job = self._jobs.get()
                try:
                    if job is None:
                        return
                    if conn is None or conn.closed:
                        conn = self._connect()
                    self._apply(conn, job)
                except psycopg2.Error as exc:  # handed to the store's thread, saying what failed
                    if self._error is None:
                        self._error = OutcomesNotRecorded(
                            f"recording the outcomes of an earlier {job.endpoint if job else ''} request failed "
                            f"({db_reason(exc)}); its rows stay in flight "
                            "and are re-sent by the next run"
                        )
                except BaseException as exc:
                    if self._error is None:
                        self._error = exc
                finally:
                    self._jobs.task_done()
        finally:
            if conn is not None and not conn.closed:
                conn.close()

    def submit(self, job: _Outcomes) -> None:
        self.raise_error()
        self._jobs.put(job)

    def raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def drain(self, *, raise_errors: bool = True) -> None:
        self._jobs.join()
        if raise_errors:
            self.raise_error()

    def stop(self) -> None:
        self._jobs.join()
        self._jobs.put(None)
        self._thread.join(timeout=30)


def _copy_rows(rows: Sequence[MappedRow]) -> str:
    """Staged rows in COPY text format; plain rows (nearly all) skip per-value escaping."""
    out: list[str] = []
    special = _COPY_SPECIAL.search
    for key, content, line, reason, parent, group, sort, _ in rows:
        if line is None or reason is not None or special(key) or special(line) or special(group):
            values = (key, line, content, parent, group, sort, reason)
            out.append("\t".join(_copy_text(v) for v in values))
        elif parent is None:
            out.append(f"{key}\t{line}\t{content}\t\\N\t{group}\t{sort}\t\\N")
        elif special(parent):
            out.append(f"{key}\t{line}\t{content}\t{_copy_text(parent)}\t{group}\t{sort}\t\\N")
        else:
            out.append(f"{key}\t{line}\t{content}\t{parent}\t{group}\t{sort}\t\\N")
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
