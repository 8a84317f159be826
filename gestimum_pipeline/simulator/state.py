"""What the simulated company holds, and the log of requests it answered.

Every public read returns a deep copy taken under the lock, so tests can inspect the
state while requests are being served without seeing half-applied imports.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

Record = dict[str, str]  # field code -> value, every field of the endpoint present


@dataclass
class Document:
    """A stock document created by a DocumentsStock import."""

    number: str  # e.g. "ENT25-00001"
    stype: str  # DOC_STYPE: "E" entry or "S" exit
    warehouse: str  # DEP_CODE
    lines: list[Record] = field(default_factory=list)  # the imported lines, values as received


@dataclass
class RequestRecord:
    """One import request as the simulator saw it (control endpoints are not recorded)."""

    endpoint: str  # catalog Endpoint.name
    lines: int  # data lines received (header excluded); 0 when the envelope was unreadable
    status: int | None  # HTTP status answered; None when the connection was closed without answer
    fault: str | None = None  # kind of the fault applied, if any
    imported: int = 0
    rejected: int = 0
    test_mode: bool = False
    documents: list[str] = field(default_factory=list)  # numbers of the documents created
    # Wall-clock span (time.time()): the body read, then the outcome recorded just before answering.
    # Not part of equality: two records are the same request outcome whenever they happened.
    received_at: float = field(default=0.0, compare=False)
    recorded_at: float = field(default=0.0, compare=False)


class SimulatorState:
    """Thread-safe holdings of the simulated company."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._accounts: dict[str, Record] = {}
        self._customers: dict[str, Record] = {}
        self._contacts: dict[str, Record] = {}
        self._references: dict[tuple[str, str], Record] = {}
        self._documents: list[Document] = []
        self._requests: list[RequestRecord] = []
        self._document_counters: dict[str, int] = {}

    # --- reads (copies) -------------------------------------------------------------

    @property
    def accounts(self) -> dict[str, Record]:
        with self._lock:
            return copy.deepcopy(self._accounts)

    @property
    def customers(self) -> dict[str, Record]:
        with self._lock:
            return copy.deepcopy(self._customers)

    @property
    def contacts(self) -> dict[str, Record]:
        with self._lock:
            return copy.deepcopy(self._contacts)

    @property
    def references(self) -> dict[tuple[str, str], Record]:
        with self._lock:
            return copy.deepcopy(self._references)

    @property
    def documents(self) -> list[Document]:
        with self._lock:
            return copy.deepcopy(self._documents)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return copy.deepcopy(self._requests)

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain JSON-able data (references as a list: JSON keys are strings)."""
        with self._lock:
            return {
                "accounts": copy.deepcopy(self._accounts),
                "customers": copy.deepcopy(self._customers),
                "contacts": copy.deepcopy(self._contacts),
                "references": [dict(r) for _, r in sorted(self._references.items())],
                "documents": [asdict(d) for d in self._documents],
                "requests": [asdict(r) for r in self._requests],
            }

    # --- writes (used by the importer) ----------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Holds the lock so a whole request's lines become visible at once."""
        with self._lock:
            yield

    def reset(self) -> None:
        with self._lock:
            self._accounts.clear()
            self._customers.clear()
            self._contacts.clear()
            self._references.clear()
            self._documents.clear()
            self._requests.clear()
            self._document_counters.clear()

    def has_account(self, number: str) -> bool:
        with self._lock:
            return number in self._accounts

    def has_customer(self, code: str) -> bool:
        with self._lock:
            return code in self._customers

    def upsert_account(self, number: str, provided: Mapping[str, str], field_codes: Sequence[str]) -> None:
        with self._lock:
            _upsert(self._accounts, number, provided, field_codes)

    def upsert_customer(self, code: str, provided: Mapping[str, str], field_codes: Sequence[str]) -> None:
        with self._lock:
            _upsert(self._customers, code, provided, field_codes)

    def upsert_contact(self, code: str, provided: Mapping[str, str], field_codes: Sequence[str]) -> None:
        with self._lock:
            _upsert(self._contacts, code, provided, field_codes)

    def upsert_reference(self, key: tuple[str, str], provided: Mapping[str, str], field_codes: Sequence[str]) -> None:
        with self._lock:
            _upsert(self._references, key, provided, field_codes)

    def create_document(self, prefix: str, stype: str, warehouse: str, lines: Sequence[Mapping[str, str]]) -> str:
        """Numbers and stores a document; `prefix` already holds the year (e.g. "ENT25")."""
        with self._lock:
            counter = self._document_counters.get(prefix, 0) + 1
            self._document_counters[prefix] = counter
            number = f"{prefix}-{counter:05d}"
            self._documents.append(Document(number, stype, warehouse, [dict(line) for line in lines]))
            return number

    def record_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(copy.deepcopy(record))


def _upsert(table: dict[Any, Record], key: Any, provided: Mapping[str, str], field_codes: Sequence[str]) -> None:
    # Fields the request did not carry (absent from its header) keep their value.
    record = table.get(key)
    if record is None:
        record = dict.fromkeys(field_codes, "")
        table[key] = record
    record.update(provided)
