"""The state store remembers which credentials Gestimum accepted, and never the password."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from psycopg2 import sql

from gestimum_pipeline.sync.state import StateStore

URL = "http://gestimum-host:8443/"
FILE = "DEMO.Gestimum"
PASSWORD = "Acc3ss-S3cret-9Zq"


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    s = StateStore(database_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


def table_text(store: StateStore) -> str:
    """Every value of the access table, as text: what anyone reading the database sees."""
    conn = store.conn
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT t::text FROM {}.gestimum_access AS t").format(sql.Identifier(store.schema)))
        return "\n".join(row[0] for row in cur.fetchall())


def test_access_is_proven_only_for_the_credentials_recorded(store: StateStore) -> None:
    assert store.access_proof(URL, FILE, "DEMO", PASSWORD) is None
    assert not store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=None)
    store.record_access(URL, FILE, "DEMO", PASSWORD, "run-1")
    proof = store.access_proof(URL, FILE, "DEMO", PASSWORD)
    assert proof is not None and proof.run_id == "run-1" and 0 <= proof.age_seconds < 60
    # The URL as the client writes it (a trailing slash added) is the same server.
    assert store.access_verified(URL.rstrip("/"), FILE, "DEMO", PASSWORD, max_age_seconds=3600)
    # Any other password, user, server or company file is not proven.
    assert not store.access_verified(URL, FILE, "DEMO", PASSWORD + "x", max_age_seconds=None)
    assert not store.access_verified(URL, FILE, "OTHER", PASSWORD, max_age_seconds=None)
    assert not store.access_verified("http://other-host:8443/", FILE, "DEMO", PASSWORD, max_age_seconds=None)
    assert not store.access_verified(URL, "OTHER.Gestimum", "DEMO", PASSWORD, max_age_seconds=None)
    # Filters: age, run, time.
    time.sleep(0.05)
    assert not store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=0.01)
    assert not store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=0)
    assert store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=None, run_id="run-1")
    assert not store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=None, run_id="run-2")
    assert store.access_verified(
        URL, FILE, "DEMO", PASSWORD, max_age_seconds=None, since=proof.verified_at - timedelta(seconds=1)
    )
    assert not store.access_verified(
        URL, FILE, "DEMO", PASSWORD, max_age_seconds=None, since=proof.verified_at + timedelta(seconds=1)
    )
    # New credentials replace the old ones: one row per company file.
    store.record_access(URL, FILE, "DEMO", "N3w-Passw0rd", "run-2")
    assert not store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=None)
    assert store.access_verified(URL, FILE, "DEMO", "N3w-Passw0rd", max_age_seconds=None, run_id="run-2")
    assert table_text(store).count(FILE) == 1


def test_the_access_table_holds_no_password_nor_a_plain_hash_of_it(store: StateStore) -> None:
    store.record_access("http://gestimum-host:8443/", FILE, "DEMO", PASSWORD, "run-1")
    first = table_text(store)
    assert PASSWORD not in first
    for plain in (hashlib.sha256(PASSWORD.encode()).hexdigest(), hashlib.md5(PASSWORD.encode()).hexdigest()):
        assert plain not in first
    assert "gestimum-host" in first and "pbkdf2_sha256$" in first
    # Salted: the same credentials recorded again give another fingerprint.
    store.record_access("http://gestimum-host:8443/", FILE, "DEMO", PASSWORD, "run-2")
    assert table_text(store).split(",")[2] != first.split(",")[2]


def test_a_tampered_fingerprint_proves_nothing(store: StateStore) -> None:
    store.record_access(URL, FILE, "DEMO", PASSWORD, "run-1")
    for fingerprint in ("garbage", "pbkdf2_sha256$999999999999$00", "md5$1$00"):
        conn = store.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE {}.gestimum_access SET fingerprint = %s").format(sql.Identifier(store.schema)),
                (fingerprint,),
            )
        assert not store.access_verified(URL, FILE, "DEMO", PASSWORD, max_age_seconds=None)
