"""The state store's security points (issue 23): messages that quote configuration hide what it
may hold, opening a store needs only DML on its tables, and access proofs are hashed to OWASP's
current PBKDF2 figure."""

from __future__ import annotations

import pytest

from gestimum_pipeline.db import url_with
from gestimum_pipeline.sync.state import StateStore, StateStoreOwnerMismatch

PASSWORD = "St4te-S3cret-pw"


def test_an_owner_mismatch_never_shows_a_url_passed_as_the_company_file(database_url: str) -> None:
    """A company file set to the state URL (once possible through a run config) is quoted redacted."""
    secret_url = url_with(database_url, password=PASSWORD)
    with StateStore(database_url) as store:
        store.init("http://gestimum.example/", "DEMO.Gestimum")
    with StateStore(secret_url) as store, pytest.raises(StateStoreOwnerMismatch) as refused:
        store.check_owner("http://gestimum.example/", secret_url, claim=False)
    message = str(refused.value)
    assert "DEMO.Gestimum" in message and "***" in message
    assert PASSWORD not in message
