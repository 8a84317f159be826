"""The errors a sync step raises: each message says what happened and what to do next."""

from __future__ import annotations


class SyncError(RuntimeError):
    """A sync step failed; the message says what happened and what to do next."""


class DeliveryUnknownError(SyncError):
    """Stock movements may or may not have become documents: an operator must reconcile."""


class SourceReadError(SyncError):
    """The CRM connection failed while rows were streaming: what was staged is safe, rerun."""


class StateStoreFailure(SyncError):
    """The state store failed mid-step; the message says where each row stands."""
