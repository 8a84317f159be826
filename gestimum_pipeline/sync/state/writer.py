"""The one background writer: database writes applied in order on a daemon thread.

Both halves of a sync overlap a database write with the next piece of work: a transform
stages chunk k while it reads and maps chunk k+1 (sync/staging.py), and a sink records
request k's outcomes while it marks and posts request k+1 (ledger.py). Each uses one
`BackgroundWriter`: at most one job runs and one waits (`submit` blocks otherwise), so
order holds and memory is bounded. psycopg2 releases the GIL while PostgreSQL works.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_Job = tuple[Callable[[], Any], Future[Any], Callable[[BaseException], BaseException] | None]


class BackgroundWriter:
    """Applies jobs in order on one daemon thread.

    Each job's result or error is on the Future `submit` returns. With `keep_errors`, the
    first failure (as `on_error` turns it, e.g. into an error saying which rows stay where)
    is also kept and raised by the owner's next `raise_error` / `drain` / `submit`: the owner
    may never look at a job's Future (fire and forget), yet never misses a failure. Later
    jobs are still applied.
    """

    def __init__(self, name: str, *, keep_errors: bool = False) -> None:
        self._keep_errors = keep_errors
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                work, future, on_error = job
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)
                    if self._keep_errors and self._error is None:
                        self._error = on_error(exc) if on_error is not None else exc
            finally:
                self._jobs.task_done()

    def submit(
        self, work: Callable[[], Any], *, on_error: Callable[[BaseException], BaseException] | None = None
    ) -> Future[Any]:
        self.raise_error()
        future: Future[Any] = Future()
        self._jobs.put((work, future, on_error))
        return future

    def raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def drain(self, *, raise_errors: bool = True) -> None:
        """Waits until every job submitted is applied."""
        self._jobs.join()
        if raise_errors:
            self.raise_error()

    def stop(self) -> None:
        self._jobs.join()
        self._jobs.put(None)
        self._thread.join(timeout=30)
