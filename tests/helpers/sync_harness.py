"""Helpers shared by the end-to-end tests: run the real asset graph against a CRM and the simulator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from psycopg2 import sql

from gestimum_pipeline.crm.contract import RELATIONS
from gestimum_pipeline.db import connect
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.resources import CrmDatabase, GestimumApi, SyncOptions, SyncStateDatabase
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync.state import StateStore

# The production defaults but a short step-retry delay: a source that cannot reach its
# database is still re-executed as in production, without waiting seconds in every test.
HARNESS_SETTINGS = Settings(step_retry_delay_seconds=0.05)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class SyncRun:
    success: bool
    metadata: dict[str, dict[str, Any]]  # asset key ("gestimum/clients") -> metadata values
    order: list[str]  # asset keys in materialization order
    failures: list[str]
    result: Any
    checks: dict[str, Any]  # "gestimum/clients:no_rejected_lines" -> its AssetCheckEvaluation


def resources(crm_url: str, gestimum_url: str, **options: Any) -> dict[str, Any]:
    api_overrides = {k[4:]: options.pop(k) for k in list(options) if k.startswith("api_")}
    api = {
        "url": gestimum_url,
        "company_file": "DEMO.Gestimum",
        "user": "DEMO",
        "password": "",
        "backoff_seconds": 0.01,
        "max_retries": 2,
        **api_overrides,
    }
    return {
        "crm": CrmDatabase(url=crm_url),
        "gestimum": GestimumApi(**api),
        "sync_state": SyncStateDatabase(url=crm_url),
        "sync_options": SyncOptions(**options),
    }


def failure_message(event: dg.DagsterEvent) -> str:
    """What the UI shows first for a failed step: the Failure's description, also after a retry
    policy gave up (the error itself then reads "Exceeded max_retries")."""
    data = event.event_specific_data
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return str(user.description)
    return str(data.error.message)


def run_sync(
    crm_url: str,
    gestimum_url: str,
    *,
    partition: str | None = None,
    partition_range: tuple[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    asset_checks: Sequence[dg.AssetChecksDefinition] | None = None,
    **options: Any,
) -> SyncRun:
    """Runs the production job (sources → transforms → sinks → checks) in process, like a scheduled run.

    Without the preflight: tests count every request Gestimum receives.
    """
    defs = build_definitions(
        HARNESS_SETTINGS,
        resources=resources(crm_url, gestimum_url, **options),
        state_checks=asset_checks,
        without_preflight=True,
    )
    job = defs.resolve_job_def("gestimum_sync")
    kwargs: dict[str, Any] = {"raise_on_error": False, "instance": instance or dg.DagsterInstance.ephemeral()}
    if partition_range:
        kwargs["tags"] = {RANGE_START_TAG: partition_range[0], RANGE_END_TAG: partition_range[1]}
    else:
        kwargs["partition_key"] = partition
    result = job.execute_in_process(**kwargs)
    metadata: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        key = mat.asset_key.to_user_string()
        order.append(key)
        metadata[key] = {k: v.value for k, v in mat.metadata.items()}
    failures = [failure_message(e) for e in result.all_events if e.is_step_failure]
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}
    return SyncRun(result.success, metadata, order, failures, result, checks)


def execute(url: str, statements: Iterable[tuple[str | sql.Composable, Sequence[Any] | None]]) -> None:
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            for query, params in statements:
                cur.execute(query, params)
    finally:
        conn.close()


def query_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def insert_rows(url: str, relation: str, rows: Iterable[Sequence[Any]]) -> None:
    """Inserts rows into a CRM relation, values in the source contract's column order."""
    columns = RELATIONS[relation].columns
    query = sql.SQL("INSERT INTO crm.{} ({}) VALUES ({})").format(
        sql.Identifier(relation),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    execute(url, ((query, r) for r in rows))


def insert_customers(url: str, rows: Iterable[Sequence[Any]]) -> None:
    insert_rows(url, "customers", rows)


def insert_contacts(url: str, rows: Iterable[Sequence[Any]]) -> None:
    insert_rows(url, "contacts", rows)


def insert_movements(url: str, rows: Iterable[Sequence[Any]]) -> None:
    insert_rows(url, "stock_movements", rows)


def insert_references(url: str, rows: Iterable[Sequence[Any]]) -> None:
    insert_rows(url, "customer_item_references", rows)


def state_records(url: str, endpoint: str, schema: str = "gestimum_sync") -> dict[str, dict[str, Any]]:
    with StateStore(url, schema) as store:
        return {r["source_key"]: r for r in store.records(endpoint=endpoint)}


def sent_lines(run: SyncRun) -> dict[str, int]:
    return {k: v["dagster/row_count"] for k, v in run.metadata.items() if k.startswith("gestimum/")}
