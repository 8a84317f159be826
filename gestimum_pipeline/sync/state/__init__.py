"""The sync state store: where every source row is, in PostgreSQL schema `gestimum_sync`.

One row per (endpoint, source key) in `records`, with a `Status` (status.py):

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

Every move is an edge of `TRANSITIONS` (status.py). `actions` records every operator action
with who and when; `gestimum_access` when Gestimum last accepted the company file and
credentials (a salted fingerprint, never the password); `record_log` each CRM version staged
and each line refused, per key, for `gestimum-pipeline history` (history.py). The schema is created and migrated by
`migrate()` from the numbered files of sql/migrations, idempotently and under an advisory
lock; the queries are the named sections of sql/queries.
"""

from __future__ import annotations

from gestimum_pipeline.sync.state.access import ACCESS_FINGERPRINT_ITERATIONS, access_fingerprint
from gestimum_pipeline.sync.state.base import (
    DEFAULT_SCHEMA,
    INIT_COMMAND,
    AccessProof,
    Outcome,
    PendingLine,
    StageCounts,
    StateStoreError,
    StateStoreMissing,
    StateStoreOwnerMismatch,
    WriterFenced,
    text_array,
)
from gestimum_pipeline.sync.state.counts import COMPACT_DELTAS_ABOVE
from gestimum_pipeline.sync.state.ledger import OutcomesNotRecorded
from gestimum_pipeline.sync.state.schema import LATEST_VERSION, MIGRATIONS, gestimum_host
from gestimum_pipeline.sync.state.status import (
    REQUEST_STATES,
    STATUSES,
    TRANSITIONS,
    Event,
    ReasonSource,
    RequestState,
    Status,
    TransitionError,
)
from gestimum_pipeline.sync.state.store import StateStore
from gestimum_pipeline.sync.state.windows import COVERAGE_MAPPING, merge_windows

__all__ = [
    "ACCESS_FINGERPRINT_ITERATIONS",
    "COMPACT_DELTAS_ABOVE",
    "COVERAGE_MAPPING",
    "DEFAULT_SCHEMA",
    "INIT_COMMAND",
    "LATEST_VERSION",
    "MIGRATIONS",
    "REQUEST_STATES",
    "STATUSES",
    "TRANSITIONS",
    "AccessProof",
    "Event",
    "Outcome",
    "OutcomesNotRecorded",
    "PendingLine",
    "ReasonSource",
    "RequestState",
    "StageCounts",
    "StateStore",
    "StateStoreError",
    "StateStoreMissing",
    "StateStoreOwnerMismatch",
    "Status",
    "TransitionError",
    "WriterFenced",
    "access_fingerprint",
    "gestimum_host",
    "merge_windows",
    "text_array",
]
