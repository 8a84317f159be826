"""Creating and upgrading the store (numbered migrations in sql/migrations), and its owner."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from gestimum_pipeline.redaction import redact_text, redact_url, url_secrets
from gestimum_pipeline.sync.state import sqlfiles
from gestimum_pipeline.sync.state.base import StateStoreMissing, StateStoreOwnerMismatch, StoreBase

# Every migration, in order: sql/migrations/0001_….sql, 0002_….sql, …
MIGRATIONS = sqlfiles.migrations()
LATEST_VERSION = MIGRATIONS[-1].version


_DEFAULT_PORTS = {"http": 80, "https": 443}


def gestimum_host(url: str) -> str:
    """The Gestimum server of a URL, as the store records it: the host in lower case, with its port
    unless the scheme's default (a test Gestimum on the production host listens on another
    port, and is another owner); never credentials."""
    parts = urlsplit(url)
    host = (parts.hostname or url).lower()
    try:
        port = parts.port
    except ValueError:  # not a port: the URL's own check names it; the host alone is recorded
        port = None
    return host if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()) else f"{host}:{port}"


class SchemaMixin(StoreBase):
    """Owns `schema_migrations` and `owner`."""

    def migrate(self) -> int:
        """Creates or upgrades the schema; safe to call from concurrent runs. Returns the version."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("migrate_lock"), (f"gestimum_sync.migrate:{self.schema}",))
            cur.execute(self._sql("create_schema"))
            cur.execute(self._sql("create_schema_migrations"))
            cur.execute(self._sql("schema_version"))
            current = cur.fetchone()[0]
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                cur.execute(sqlfiles.rendered_migration(migration, self.schema))
                cur.execute(self._sql("record_migration"), (migration.version, migration.description))
                current = migration.version
        return current

    def exists(self) -> bool:
        """Whether a state store was created at this URL and schema (never creates anything)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("store_exists"), (f"{sqlfiles.quote_schema(self.schema)}.schema_migrations",))
            return bool(cur.fetchone()[0])

    def open_existing(self) -> int:
        """Upgrades an existing store to the latest schema; a missing one is an error naming the command.

        A store already at the latest version is only read (no DDL), so the sync's role needs
        DML on the store's tables alone; DDL is for `state init` and upgrades (docs/security.md).
        """
        if not self.exists():
            raise StateStoreMissing(
                f"no state store at {redact_url(self.url)} (schema {self.schema!r}, from {self.setting}): create "
                f"it with `{self.init_command}` (or check the URL and schema: a new store would send every movement of "
                "the range again)"
            )
        conn = self.conn
        with conn, conn.cursor() as cur:
            cur.execute(self._sql("schema_version"))
            current = cur.fetchone()[0]
        return current if current >= LATEST_VERSION else self.migrate()

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
            cur.execute(self._sql("owner"))
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
                    self._sql("claim_owner"),
                    (host, company_file, claimed_by or f"pid {os.getpid()} on {socket.gethostname()}"),
                )
            cur.execute(self._sql("owner"))
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
                    f"(SYNC_STATE_DATABASE_URL or another schema, created with `{self.init_command}`)",
                    url_secrets(self.url),
                )
            )
