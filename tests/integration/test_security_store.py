"""The state store's security points (issue 23): messages that quote configuration hide what it
may hold, opening a store needs only DML on its tables, and access proofs are hashed to OWASP's
current PBKDF2 figure."""

from __future__ import annotations

import pytest

from gestimum_pipeline.db import url_with
from gestimum_pipeline.sync.state import StateStore, StateStoreOwnerMismatch, access_fingerprint

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


CREDENTIALS = ("https://gestimum.example/", "DEMO.Gestimum", "DEMO", "Acc3ss-Pw")


def test_access_proofs_use_owasp_pbkdf2_rounds_and_weaker_ones_prove_nothing(database_url: str) -> None:
    with StateStore(database_url) as store:
        store.init(CREDENTIALS[0], CREDENTIALS[1])
        store.record_access(*CREDENTIALS, "run-new")
        assert store.access_proof(*CREDENTIALS) is not None
        with store.conn, store.conn.cursor() as cur:
            cur.execute("SELECT fingerprint, salt FROM gestimum_sync.gestimum_access")
            fingerprint, salt = cur.fetchone()
        assert fingerprint.startswith("pbkdf2_sha256$600000$")
        assert PASSWORD not in fingerprint and CREDENTIALS[3] not in fingerprint

        # A proof stored by an older version (200,000 rounds) is not trusted: access is checked again.
        old = access_fingerprint(*CREDENTIALS, bytes.fromhex(salt), 200_000)
        with store.conn, store.conn.cursor() as cur:
            cur.execute("UPDATE gestimum_sync.gestimum_access SET fingerprint = %s", (old,))
        assert store.access_proof(*CREDENTIALS) is None
        store.record_access(*CREDENTIALS, "run-again")  # and the next check stores it with today's rounds
        proof = store.access_proof(*CREDENTIALS)
        assert proof is not None and proof.run_id == "run-again"
