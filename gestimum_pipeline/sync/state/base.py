"""What every part of the state store shares: its connection, its errors and its small types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg2
import psycopg2.extensions

from gestimum_pipeline.db import connect, validate_identifier
from gestimum_pipeline.db import text_array as text_array  # its home is db.py; re-exported for the store
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry
from gestimum_pipeline.sync.state import sqlfiles
from gestimum_pipeline.sync.state.writer import BackgroundWriter

DEFAULT_SCHEMA = "gestimum_sync"
INIT_COMMAND = "gestimum-pipeline state init"


class StateStoreError(RuntimeError):
    pass


class StateStoreMissing(StateStoreError):
    """No state store at this URL and schema: creating one is an explicit act."""


class StateStoreOwnerMismatch(StateStoreError):
    """The store belongs to another Gestimum host or company file."""


class WriterFenced(StateStoreError):
    """Another writer took over the company file: this one must not send anything more."""


class AccessProof(NamedTuple):
    """When Gestimum last accepted a request made with the credentials asked about (database clock)."""

    verified_at: datetime
    run_id: str | None
    age_seconds: float


@dataclass(frozen=True)
class StageCounts:
    staged: int  # rows now pending (new or changed)
    rejected: int  # rows rejected locally (new or changed)
    unchanged: int  # rows already in that state (nothing to send)
    # Rows whose CRM version differs from the store's but which were not re-staged (a stock
    # movement already sent, or an older version than the one staged): the window they
    # belong to must not be recorded as unchanged.
    skipped: int = 0
    # (partition, status) of each row taken, when the caller gave each row's partition: the
    # per-day figures of a range run.
    by_partition: tuple[tuple[str | None, str], ...] = ()


class PendingLine(NamedTuple):
    """One line to send (NamedTuple: millions per backfill, cheap to build)."""

    source_key: str
    line: str
    group_key: str
    content_hash: str = ""  # the version read: marking in flight requires it to be still current
    partition: str | None = None  # the day of the row's CRM change time (per-day figures of a range run)


class Outcome(NamedTuple):
    """What Gestimum said about one line (NamedTuple: one per line sent)."""

    source_key: str
    imported: bool
    reason: str | None = None
    document: str | None = None


class StoreBase:
    """One psycopg2 connection per store, plus the background writer's (ledger.py)."""

    def __init__(
        self,
        url: str,
        schema: str = DEFAULT_SCHEMA,
        *,
        setting: str = "SYNC_STATE_DATABASE_URL",
        endpoints: EndpointRegistry = ENDPOINTS,
        init_command: str = INIT_COMMAND,
    ) -> None:
        self.url = url
        # The command that creates this store, named when it is missing (`... --company acme`).
        self.init_command = init_command
        # Parents and document-creating endpoints come from the registry, by endpoint name.
        self.endpoints = endpoints
        self.schema = validate_identifier(schema, "state store schema")
        self.setting = setting
        self._outcome_conn: psycopg2.extensions.connection | None = None  # the writer thread's own
        self._conn: psycopg2.extensions.connection | None = None
        # record_outcomes hands master data's UPDATEs to the background writer, so request
        # k's outcomes are written while request k+1 is marked and posted. Every other use
        # of `conn` first waits for them (and raises their error); company_lock is released
        # only once they are committed.
        self.async_outcomes = True
        self._writer: BackgroundWriter | None = None
        # (company file, generation) while company_lock is held: checked by every marking.
        self._lease: tuple[str, int] | None = None
        # {request id: ledger row id} from mark_in_flight until the outcome is recorded
        # (request ids are readable, not unique across runs).
        self._sent: dict[str, int] = {}
        # Recorded in the `detail` of every operator action made through this store: how the
        # action was launched (the Dagster run's tags; that its actor is declared, not proven).
        self.action_provenance: dict[str, Any] = {}
        # Endpoints whose last staged chunk was taken whole (staging.py): the next chunk skips
        # the lookup of unchanged rows, which only pays when some are found.
        self._taken_whole: set[str] = set()

    # -- connection ---------------------------------------------------------------
    @property
    def conn(self) -> psycopg2.extensions.connection:
        self._drain()
        return self._own_conn()

    def _own_conn(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, setting=self.setting)
        return self._conn

    def new_connection(self) -> psycopg2.extensions.connection:
        return connect(self.url, setting=self.setting)

    def _drain(self, *, raise_errors: bool = True) -> None:
        """Waits until every outcome handed to the background writer is committed."""
        if self._writer is not None:
            self._writer.drain(raise_errors=raise_errors)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()
        if self._outcome_conn is not None and not self._outcome_conn.closed:
            self._outcome_conn.close()
        self._outcome_conn = None
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SQL ------------------------------------------------------------------------
    def _sql(self, name: str) -> str:
        """Named query `name` (sql/queries/*.sql) for this store's schema."""
        return sqlfiles.rendered(name, self.schema)

    def _execute_count(self, name: str, params: Any) -> int:
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql(name), params)
            return cur.rowcount
