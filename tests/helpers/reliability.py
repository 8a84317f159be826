"""Harness of the reliability tests: a production-like deployment, and the real graph run on it.

A `Deployment` is what an operator configures: a CRM and a state store reached as a
PostgreSQL role WITH a password (the machine server uses trust auth, so the password is
not checked, but it travels in the URLs exactly as in production), the simulator with a
Gestimum password, and every secret handed to the resources as a Dagster `EnvVar`, as
`build_resources` does. `run_job` runs the whole job in process (preflight, sources,
transforms, sinks, checks) and returns what the operator can see: step failure messages,
asset metadata, the serialized Dagster event log and every log record emitted meanwhile
(the simulator's included), so tests can also prove that no secret shows anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._serdes import serialize_value
from databases import copy_database, init_state_store
from sync_harness import HARNESS_SETTINGS, execute, failure_message

from gestimum_pipeline.crm.ddl import create_reference_schema
from gestimum_pipeline.db import connect, create_database, database_name, drop_database, url_with, with_database
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.resources import CrmDatabase, GestimumApi, SyncOptions, SyncStateDatabase
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

__all__ = ["execute"]  # re-exported for the reliability tests

ROLE = "gp_reliability_sync"
ROLE_PASSWORD = "Pg-S3cret-4Kd9"  # in the DB URLs; must never show
GESTIMUM_PASSWORD = "Gest-S3cret-7Qx2"  # the company's password; must never show
ITEMS = ("ELS", "A10", "A11")
WAREHOUSES = ("001", "002")
DAY = "2026-03-10"
DAY_TS = "2026-03-10 10:00:00+01"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
ENV_NAMES = (
    "CRM_DATABASE_URL",
    "SYNC_STATE_DATABASE_URL",
    "GESTIMUM_URL",
    "GESTIMUM_FICHIER",
    "GESTIMUM_UTILISATEUR",
    "GESTIMUM_MOT_PASSE",
)


@functools.cache
def ensure_role(server_url: str) -> None:
    """The sync's PostgreSQL role, with a password (created once per server)."""
    conn = connect(server_url, "GESTIMUM_TEST_DATABASE_URL", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
            if cur.fetchone() is None:
                with contextlib.suppress(Exception):  # a concurrent session may create it first
                    cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (ROLE_PASSWORD,))
    finally:
        conn.close()


def as_role(url: str) -> str:
    """`url` connecting as the sync role, with its password in the URL."""
    return url_with(url, username=ROLE, password=ROLE_PASSWORD)


@contextlib.contextmanager
def role_database(server_url: str, prefix: str = "gp_rel", *, template: str | None = None) -> Iterator[str]:
    """A fresh database owned by the sync role (a copy of `template`, one made the same way, if
    given); yields its URL as that role (password included)."""
    ensure_role(server_url)
    if template:
        admin_url = copy_database(server_url, template, prefix, owner=ROLE)
        name = database_name(admin_url)
    else:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        admin_url = create_database(server_url, name, setting="GESTIMUM_TEST_DATABASE_URL")
    try:
        if not template:
            conn = connect(admin_url, autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(f'ALTER DATABASE "{name}" OWNER TO {ROLE}')
                    cur.execute(f"ALTER SCHEMA public OWNER TO {ROLE}")
            finally:
                conn.close()
        yield as_role(admin_url)
    finally:
        drop_database(server_url, name, setting="GESTIMUM_TEST_DATABASE_URL")


def admin_url_of(role_url: str, server_url: str) -> str:
    """The superuser URL of the same database (for fault injection the sync role may not do)."""
    return with_database(server_url, database_name(role_url))


@dataclass
class Deployment:
    crm_url: str
    state_url: str
    server_url: str
    simulator: GestimumSimulator
    gestimum_url: str = ""
    company_file: str = "DEMO.Gestimum"
    user: str = "DEMO"
    password: str = GESTIMUM_PASSWORD
    api: dict[str, Any] = field(default_factory=dict)  # GestimumApi overrides
    options: dict[str, Any] = field(default_factory=dict)  # SyncOptions overrides
    crm: dict[str, Any] = field(default_factory=dict)  # CrmDatabase overrides (e.g. a company file's setting)
    state: dict[str, Any] = field(default_factory=dict)  # SyncStateDatabase overrides

    def __post_init__(self) -> None:
        self.gestimum_url = self.gestimum_url or self.simulator.url

    @property
    def secrets(self) -> list[str]:
        return [ROLE_PASSWORD, GESTIMUM_PASSWORD]

    def env(self) -> dict[str, str]:
        return {
            "CRM_DATABASE_URL": self.crm_url,
            "SYNC_STATE_DATABASE_URL": self.state_url,
            "GESTIMUM_URL": self.gestimum_url,
            "GESTIMUM_FICHIER": self.company_file,
            "GESTIMUM_UTILISATEUR": self.user,
            "GESTIMUM_MOT_PASSE": self.password,
        }

    def resources(self) -> dict[str, Any]:
        api: dict[str, Any] = {
            "url": dg.EnvVar("GESTIMUM_URL"),
            "company_file": dg.EnvVar("GESTIMUM_FICHIER"),
            "user": dg.EnvVar("GESTIMUM_UTILISATEUR"),
            "password": dg.EnvVar("GESTIMUM_MOT_PASSE"),
            "backoff_seconds": 0.01,
            "max_retries": 2,
            "connect_timeout_seconds": 2.0,
            "read_timeout_seconds": 10.0,
            **self.api,
        }
        return {
            "crm": CrmDatabase(url=dg.EnvVar("CRM_DATABASE_URL"), **self.crm),
            "gestimum": GestimumApi(**api),
            "sync_state": SyncStateDatabase(url=dg.EnvVar("SYNC_STATE_DATABASE_URL"), **self.state),
            "sync_options": SyncOptions(**self.options),
        }


@contextlib.contextmanager
def deployment(
    server_url: str, *, separate_state: bool = False, template: str | None = None, **config: Any
) -> Iterator[Deployment]:
    """A CRM (reference schema, empty; a copy of `template`, conftest's sync_role_crm_template,
    if given), a state store (the CRM database unless `separate_state`), and a started
    simulator whose company has a password."""
    sim_config = SimulatorConfig(password=GESTIMUM_PASSWORD, items=ITEMS, warehouses=WAREHOUSES, **config)
    with contextlib.ExitStack() as stack:
        crm_url = stack.enter_context(role_database(server_url, template=template))
        if not template:
            conn = connect(crm_url)
            try:
                create_reference_schema(conn, "crm")
            finally:
                conn.close()
            init_state_store(crm_url)
        state_url = stack.enter_context(role_database(server_url, "gp_state")) if separate_state else crm_url
        if separate_state:
            init_state_store(state_url)
        simulator = stack.enter_context(GestimumSimulator(sim_config))
        yield Deployment(crm_url=crm_url, state_url=state_url, server_url=server_url, simulator=simulator)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@contextlib.contextmanager
def captured_logs() -> Iterator[_Capture]:
    """Every log record of the process (the simulator's threads included), at DEBUG."""
    root = logging.getLogger()
    handler = _Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@dataclass
class Run:
    success: bool
    failures: dict[str, str]  # step key -> failure message (what the operator reads first)
    metadata: dict[str, dict[str, Any]]
    event_log: str  # every event of the run, serialized
    logs: str
    run_id: str
    result: Any

    def failure(self, asset: str) -> str:
        step = asset.replace("/", "__")
        for key, message in self.failures.items():
            if key.startswith(step):
                return message
        raise AssertionError(f"no failure of {asset}; failures: {list(self.failures)}")

    def texts(self) -> dict[str, str]:
        return {"event log": self.event_log, "logs": self.logs, "failures": "\n".join(self.failures.values())}

    def materialized(self) -> list[str]:
        return list(self.metadata)


def run_job(
    dep: Deployment,
    partition: str | None = DAY,
    *,
    partition_range: tuple[str, str] | None = None,
    without_preflight: bool = False,
    instance: dg.DagsterInstance | None = None,
) -> Run:
    """Runs the whole graph once, in process, like a scheduled run of the production job."""
    defs = build_definitions(HARNESS_SETTINGS, resources=dep.resources(), without_preflight=without_preflight)
    job = defs.resolve_job_def("gestimum_sync")
    instance = instance or dg.DagsterInstance.ephemeral()
    kwargs: dict[str, Any] = {"raise_on_error": False, "instance": instance}
    if partition_range:
        kwargs["tags"] = {RANGE_START_TAG: partition_range[0], RANGE_END_TAG: partition_range[1]}
    else:
        kwargs["partition_key"] = partition
    with environment(dep.env()), captured_logs() as logs:
        result = job.execute_in_process(**kwargs)
    run_id = result.run_id
    metadata: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    failures = {e.step_key or "?": failure_message(e) for e in result.all_events if e.is_step_failure}
    entries = instance.all_logs(run_id)
    event_log = "\n".join(serialize_value(e) for e in entries)
    run = instance.get_run_by_id(run_id)
    event_log += "\n" + serialize_value(run)
    return Run(result.success, failures, metadata, event_log, "\n".join(logs.lines), run_id, result)


def seed_standard(crm_url: str, ts: str = DAY_TS) -> dict[str, int]:
    """The fault matrix's CRM: a little of everything, including rows that must be refused.

    Every movement has its own line (quantity = its id) so document lines map to movements.
    Returns how many rows each relation holds.
    """
    customers = [
        ("C1", 'Alpha; "SARL"', "5 rue Cugnot", None, "78120", "RAMBOUILLET"),
        ("C2", "Bêta Équipement", "12 avenue\nde la Gare", "Bât. B", "75001", "Paris"),
        ("C3", "Gamma", None, None, None, "Lyon"),
        ("C4", "Emoji 🚀 SARL", None, None, None, None),  # outside cp1252: refused locally
    ]
    contacts = [
        ("K1", "C1", "Dupont", "Jean"),
        ("K2", "C2", "Martin", None),
        ("K3", "C4", "Durand", "Alice"),  # parent refused: held
        ("K4", "NOPE", "Petit", None),  # unknown customer: Gestimum refuses it
    ]
    references = [("C1", "A10", "REF-1", "5.25"), ("C2", "ELS", "REF;2", "1"), ("C3", "ZZZ", "REF-3", None)]
    movements = [
        (1, "in", "001", "ELS", "1"),
        (2, "in", "001", "A10", "2"),
        (3, "in", "001", "A11", "3.5"),
        (4, "out", "001", "ELS", "4"),
        (5, "out", "001", "A10", "5"),
        (6, "in", "002", "ELS", "6"),
        (7, "in", "002", "A11", "7"),
        (8, "in", "999", "ELS", "8"),  # unknown warehouse: Gestimum refuses it
        (9, "in", "001", "ELS", "0"),  # zero: refused locally
    ]
    execute(
        crm_url,
        [
            *(
                (
                    "INSERT INTO crm.customers (code, name, street, street2, postal_code, city, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (*c, ts),
                )
                for c in customers
            ),
            *(
                (
                    "INSERT INTO crm.contacts (code, customer_code, last_name, first_name, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (*c, ts),
                )
                for c in contacts
            ),
            *(
                (
                    "INSERT INTO crm.customer_item_references"
                    " (customer_code, item_code, customer_reference, customer_price, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (*r, ts),
                )
                for r in references
            ),
            *(
                (
                    "INSERT INTO crm.stock_movements (id, direction, warehouse_code, item_code, quantity, moved_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (*m, ts),
                )
                for m in movements
            ),
        ],
    )
    return {
        "customers": len(customers),
        "contacts": len(contacts),
        "customer_item_references": len(references),
        "stock_movements": len(movements),
    }


def kill_crm_stream_at(dep: Deployment, movement_id: int) -> None:
    """The CRM backend dies while the movements stream, when the FETCH reaches `movement_id`: the
    relation becomes a view that kills its own session there. Rows then stream lazily through an
    index, chunk by chunk (sorting is off in the CRM database), as a large table's would."""
    execute(
        dep.crm_url,
        [
            ("ALTER TABLE crm.stock_movements RENAME TO stock_movements_data", None),
            ("CREATE INDEX ON crm.stock_movements_data (direction, warehouse_code, id)", None),
            ("CREATE TABLE crm.fault_switch (kill_at bigint)", None),
            ("INSERT INTO crm.fault_switch VALUES (%s)", (movement_id,)),
            (
                """CREATE FUNCTION crm.fault_gate(movement bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
                BEGIN
                    IF current_query() ILIKE 'FETCH%' AND movement IN (SELECT kill_at FROM crm.fault_switch) THEN
                        PERFORM pg_terminate_backend(pg_backend_pid());
                    END IF;
                    RETURN true;
                END $$""",
                None,
            ),
            (
                "CREATE VIEW crm.stock_movements AS SELECT id, direction, warehouse_code, item_code, quantity, moved_at"
                " FROM crm.stock_movements_data WHERE crm.fault_gate(id)",
                None,
            ),
        ],
    )
    admin = admin_url_of(dep.crm_url, dep.server_url)
    execute(admin, [(f'ALTER DATABASE "{database_name(dep.crm_url)}" SET enable_sort = off', ())])
