"""`StateStore`: the thin facade callers use, one class over the modules that each own their tables."""

from __future__ import annotations

from gestimum_pipeline.sync.state.access import AccessMixin
from gestimum_pipeline.sync.state.audit import AuditMixin
from gestimum_pipeline.sync.state.counts import CountsMixin
from gestimum_pipeline.sync.state.fencing import FencingMixin
from gestimum_pipeline.sync.state.history import HistoryMixin
from gestimum_pipeline.sync.state.ledger import LedgerMixin
from gestimum_pipeline.sync.state.schema import SchemaMixin
from gestimum_pipeline.sync.state.staging import StagingMixin
from gestimum_pipeline.sync.state.windows import WindowsMixin


class StateStore(
    SchemaMixin,
    AccessMixin,
    StagingMixin,
    FencingMixin,
    LedgerMixin,
    WindowsMixin,
    AuditMixin,
    CountsMixin,
    HistoryMixin,
):
    """Plain-Python access to the state store; one psycopg2 connection per instance.

    schema.py (migrations, owner), access.py (Gestimum access proofs), staging.py (CRM
    versions into records; hold, release, withdraw, collisions), fencing.py (one writer per
    company file), ledger.py (requests in flight and their outcomes), windows.py (window
    signatures, windows staged), audit.py (the operator's moves), counts.py (exact counts,
    reads), history.py (one row's story, from the record log). The state machine is status.py; the SQL is in sql/.
    """

    def __enter__(self) -> StateStore:
        return self
