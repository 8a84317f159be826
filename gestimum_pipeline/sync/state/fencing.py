"""One sender per company file: a session advisory lock, and a lease whose generation fences
off any earlier writer (a writer whose lock session died stops before its next POST)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2.extensions

from gestimum_pipeline.sync.state.base import StateStoreError, StoreBase, WriterFenced


class FencingMixin(StoreBase):
    """Owns `leases`."""

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
                    cur.execute(self._sql("try_company_lock"), (key,))
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
            cur.execute(self._sql("take_lease"), (company_file, f"pid {os.getpid()} on {socket.gethostname()}"))
            return int(cur.fetchone()[0])

    def _check_lease(self, cur: psycopg2.extensions.cursor) -> None:
        """Inside a marking transaction: holds the lease row and proves it is still ours."""
        if self._lease is None:
            raise StateStoreError("rows are marked in flight only inside company_lock (a fenced writer)")
        company_file, generation = self._lease
        cur.execute(self._sql("check_lease"), (company_file,))
        found = cur.fetchone()
        if found is None or int(found[0]) != generation:
            holder = found[1] if found else "nobody"
            raise WriterFenced(
                f"another writer ({holder}) took over company file {company_file!r} while this run was sending "
                "(this run's lock session was dropped); this run stops before sending anything more"
            )
