"""The two invariants every reliability case ends with, checked over the CRM, the state store
and the simulator's holdings, independently of the pipeline's own bookkeeping.

(a) Nothing lost: every CRM row, for every endpoint it feeds, is imported (and then Gestimum
    holds exactly the line the state store says it holds), rejected with a reason naming
    the record, or still to be sent (pending; held behind its parent, with a reason;
    ignored by an operator; delivery_unknown awaiting reconciliation). "Not staged yet" is
    accepted only after a run that failed before staging (`allow_unstaged`), because the
    next run reads the window again; "in flight" only right after a killed run.
(b) Nothing twice: every line of every document in Gestimum belongs to exactly one stock
    movement, and no movement appears in more than one document line. An imported movement
    is in Gestimum exactly once, in the document it recorded; a pending or rejected one is
    not there at all (re-sending it must not duplicate it); a delivery_unknown one is there
    at most once.

Movements are matched to document lines by their full line (direction, warehouse, item,
quantity), so each case gives every movement a distinct line; `check_invariants` refuses
ambiguous data rather than guessing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.encoding import decode_line
from gestimum_pipeline.simulator.state import SimulatorState
from gestimum_pipeline.sync.mapping import source_key
from gestimum_pipeline.sync.state import StateStore

REPORT_ENV = "GESTIMUM_RELIABILITY_REPORT"  # a JSON-lines file that collects every case's counts

# Endpoint -> (CRM relation, key columns).
FEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "comptes": ("customers", ("code",)),
    "clients": ("customers", ("code",)),
    "contacts": ("contacts", ("code",)),
    "references_clients_articles": ("customer_item_references", ("customer_code", "item_code")),
    "documents_stock": ("stock_movements", ("id",)),
}
CHANGE_COLUMNS = {"customers": "updated_at", "contacts": "updated_at", "customer_item_references": "updated_at"}
WAITING = ("pending", "held", "ignored")
WITH_REASON = ("rejected", "held", "delivery_unknown")


class InvariantViolation(AssertionError):
    pass


@dataclass
class InvariantReport:
    rows: int = 0  # (endpoint, CRM row) pairs checked
    statuses: Counter[str] = field(default_factory=Counter)
    master_verified: int = 0  # imported master records compared field by field with Gestimum
    movements: int = 0
    document_lines: int = 0  # lines of Gestimum documents, each attributed to one movement
    max_copies: int = 0  # most document lines any movement has (must be <= 1)

    def summary(self) -> str:
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.rows} rows ({statuses}); {self.master_verified} master records equal in Gestimum; "
            f"{self.movements} movements, {self.document_lines} document lines, max {self.max_copies} per movement"
        )


def _crm_keys(crm_url: str, schema: str = "crm") -> dict[str, list[str]]:
    conn = connect(crm_url)
    try:
        with conn, conn.cursor() as cur:
            keys: dict[str, list[str]] = {}
            for endpoint, (relation, columns) in FEEDS.items():
                cur.execute(f"SELECT {', '.join(columns)} FROM {schema}.{relation}")
                keys[endpoint] = [source_key(*row) if len(row) > 1 else str(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()
    return keys


def _decoded(endpoint: catalog.Endpoint, line: str) -> dict[str, str]:
    values = decode_line(line, ";", '"')
    codes = endpoint.field_codes
    if len(values) > len(codes):
        raise InvariantViolation(f"{endpoint.name}: the state store holds a line with too many fields: {line!r}")
    return dict(zip(codes, values + [""] * (len(codes) - len(values)), strict=True))


def _held_by_gestimum(endpoint: str, values: dict[str, str], sim: SimulatorState) -> dict[str, str] | None:
    if endpoint == "comptes":
        return sim.accounts.get(values["CPT_NUMERO"])
    if endpoint == "clients":
        return sim.customers.get(values["PCF_CODE"])
    if endpoint == "contacts":
        return sim.contacts.get(values["CCT_CODE"])
    return sim.references.get((values["ART_CODE"], values["PCF_CODE"]))


def check_invariants(
    crm_url: str,
    state_url: str,
    sim: SimulatorState,
    *,
    allow_unstaged: bool = False,
    allow_in_flight: bool = False,
    allow_orphans: bool = False,
) -> InvariantReport:
    """Checks (a) and (b); raises InvariantViolation naming every broken row."""
    report = InvariantReport()
    problems: list[str] = []
    with StateStore(state_url) as store:
        store.migrate()  # a run stopped by the preflight may never have created it: then it is empty
        records = {(r["endpoint"], r["source_key"]): r for r in store.records()}
    crm = _crm_keys(crm_url)

    # (a) every CRM row is accounted for, and imported master data is what Gestimum holds.
    for endpoint_name, keys in crm.items():
        endpoint = catalog.endpoint(endpoint_name)
        for key in keys:
            report.rows += 1
            record = records.get((endpoint_name, key))
            status = record["status"] if record else "unstaged"
            report.statuses[status] += 1
            where = f"{endpoint_name} {key!r}"
            if status == "unstaged":
                if not allow_unstaged:
                    problems.append(f"{where}: never staged although the run read its window")
                continue
            assert record is not None
            if status == "in_flight" and not allow_in_flight:
                problems.append(f"{where}: left in flight")
            if status == "delivery_unknown" and endpoint_name != "documents_stock":
                problems.append(f"{where}: delivery_unknown on an idempotent endpoint")
            if status in WITH_REASON and not (record["reason"] or "").strip():
                problems.append(f"{where}: {status} without a reason")
            if status == "rejected" and record["reason_source"] == "local":
                if f"record {key} " not in (record["reason"] or ""):
                    problems.append(f"{where}: local rejection does not name the record: {record['reason']!r}")
                if " field " not in (record["reason"] or ""):
                    problems.append(f"{where}: local rejection does not name the field: {record['reason']!r}")
            if status == "imported" and endpoint_name != "documents_stock":
                values = _decoded(endpoint, record["line"])
                held = _held_by_gestimum(endpoint_name, values, sim)
                if held is None:
                    problems.append(f"{where}: imported, but Gestimum does not hold it")
                else:
                    diff = {c: (v, held.get(c)) for c, v in values.items() if held.get(c) != v}
                    if diff:
                        problems.append(f"{where}: Gestimum holds other values than the state store: {diff}")
                    report.master_verified += 1
    unknown = [k for k in records if k[1] not in set(crm.get(k[0], ()))]
    if unknown and not allow_orphans:
        problems.append(f"state store rows with no CRM row: {unknown[:10]}")

    # (b) every document line belongs to exactly one movement; no movement twice.
    stock = catalog.DOCUMENTS_STOCK
    by_line: dict[tuple[str, ...], str] = {}
    for key in crm["documents_stock"]:
        report.movements += 1
        record = records.get(("documents_stock", key))
        if record is None or record["line"] is None:
            continue
        signature = tuple(_decoded(stock, record["line"]).values())
        if signature in by_line:
            raise InvariantViolation(f"test data: movements {by_line[signature]} and {key} have the same line")
        by_line[signature] = key
    copies: Counter[str] = Counter()
    docs_of: dict[str, list[str]] = {}
    for document in sim.documents:
        for line in document.lines:
            report.document_lines += 1
            signature = tuple(line.get(c, "") for c in stock.field_codes)
            key = by_line.get(signature)
            if key is None:
                problems.append(f"document {document.number} holds a line no movement explains: {line}")
                continue
            copies[key] += 1
            docs_of.setdefault(key, []).append(document.number)
    report.max_copies = max(copies.values(), default=0)
    for key in crm["documents_stock"]:
        record = records.get(("documents_stock", key))
        status = record["status"] if record else "unstaged"
        n = copies[key]
        where = f"movement {key} ({status})"
        if n > 1:
            problems.append(f"{where}: {n} document lines in Gestimum ({docs_of[key]})")
        elif status == "imported":
            if n != 1:
                problems.append(f"{where}: imported but in {n} documents")
            elif not record or record["document"] not in docs_of[key]:
                problems.append(f"{where}: records document {record and record['document']!r}, not {docs_of[key]}")
        elif status in ("pending", "rejected", "held", "ignored", "unstaged") and n:
            problems.append(f"{where}: already in Gestimum ({docs_of[key]}): sending it would duplicate it")
    if problems:
        raise InvariantViolation("invariants broken:\n  " + "\n  ".join(problems))
    return report


@dataclass
class CaseRecord:
    """One line of the reliability table (README, "Reliability")."""

    matrix: str  # "fault" or "input"
    case: str
    happens: str
    operator_sees: str
    checks: list[str] = field(default_factory=list)  # each invariant check's summary, in order

    def add(self, label: str, report: InvariantReport) -> InvariantReport:
        self.checks.append(f"{label}: {report.summary()}")
        return report

    def save(self) -> None:
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self), ensure_ascii=False) + "\n")


def assert_no_secret(texts: dict[str, str] | str, secrets: list[str]) -> None:
    """No secret, in any of the named texts (event log, logs, messages, output)."""
    named = {"text": texts} if isinstance(texts, str) else texts
    for name, text in named.items():
        for secret in secrets:
            assert secret and secret not in text, f"a secret leaked into {name}"


def statuses(state_url: str, endpoint: str) -> dict[str, str]:
    with StateStore(state_url) as store:
        store.migrate()
        return {r["source_key"]: r["status"] for r in store.records(endpoint=endpoint)}


def records(state_url: str, endpoint: str) -> dict[str, dict[str, Any]]:
    with StateStore(state_url) as store:
        store.migrate()
        return {r["source_key"]: r for r in store.records(endpoint=endpoint)}
