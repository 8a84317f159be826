"""Proof that Gestimum accepted these credentials (a salted, slow fingerprint, never the password)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import datetime

from gestimum_pipeline.sync.state.base import AccessProof, StoreBase
from gestimum_pipeline.sync.state.schema import gestimum_host

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


class AccessMixin(StoreBase):
    """Owns `gestimum_access`."""

    def record_access(self, gestimum_url: str, company_file: str, user: str, password: str, run_id: str | None) -> None:
        """Records that Gestimum just accepted a request made with these credentials (one upsert)."""
        salt = os.urandom(16)  # a fresh salt per record: equal credentials never look equal across stores
        fingerprint = access_fingerprint(gestimum_url, company_file, user, password, salt)
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._sql("record_access"),
                (company_file, gestimum_host(gestimum_url), fingerprint, salt.hex(), run_id),
            )

    def access_proof(self, gestimum_url: str, company_file: str, user: str, password: str) -> AccessProof | None:
        """The last acceptance of exactly these credentials, or None (never proven, or other credentials since)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(
                self._sql("access_proof"),
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
