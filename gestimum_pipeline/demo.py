"""`gestimum-pipeline demo`: the whole sync on an embedded PostgreSQL and the simulator.

Needs no configuration: it starts an embedded PostgreSQL (pgserver), loads demo data
(including rows Gestimum or our validation will reject), starts the Gestimum simulator,
runs the real Dagster job over the demo's days in one run, and prints a per-endpoint
summary from the run's own asset metadata and the state store.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from gestimum_pipeline.crm.demo import DemoSummary
    from gestimum_pipeline.simulator.server import GestimumSimulator

DEMO_DATABASE = "gestimum_demo"
DEMO_DAYS = 3


@dataclass
class EndpointSummary:
    endpoint: str
    rows_read: int = 0
    rejected_locally: int = 0
    sent: int = 0
    imported: int = 0
    rejected_by_gestimum: int = 0
    held: int = 0
    requests: int = 0
    documents: int = 0
    failed_checks: list[str] = field(default_factory=list)  # "WARN no_rejected_lines: description"


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "gestimum-pipeline"


def demo_days(today: date, days: int = DEMO_DAYS) -> list[date]:
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def run_demo(
    *,
    home: Path | None = None,
    database_url: str | None = None,
    days: int = DEMO_DAYS,
    customers_per_day: int = 20,
    out: TextIO = sys.stdout,
) -> dict[str, EndpointSummary]:
    """Runs the demo end to end and returns the per-endpoint summary it printed."""
    # Imported here: the CLI's other commands should not pay for these imports.
    from gestimum_pipeline.db import connect, with_database
    from gestimum_pipeline.defs.settings import Settings
    from gestimum_pipeline.embedded import EmbeddedPostgres
    from gestimum_pipeline.redaction import redact_url

    home = home or default_home()
    home.mkdir(parents=True, exist_ok=True)
    timezone = Settings.from_env().timezone
    today = datetime.now(ZoneInfo(timezone)).date()
    day_list = demo_days(today, days)

    embedded: EmbeddedPostgres | None = None
    if database_url is None:
        print(f"Starting the embedded PostgreSQL in {home / 'pg'} …", file=out)
        embedded = EmbeddedPostgres(home / "pg").start()
        server_url = embedded.url
    else:
        server_url = database_url
    admin = connect(server_url, setting="--database-url", autocommit=True)
    try:
        with admin.cursor() as cur:
            # A fresh database each time, so the summary always describes this demo alone.
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (DEMO_DATABASE,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}"')
            cur.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    finally:
        admin.close()
    crm_url = with_database(server_url, DEMO_DATABASE)
    loaded = load_demo_crm(crm_url, day_list, customers_per_day=customers_per_day, timezone=timezone)
    print(
        f"Loaded demo CRM into {redact_url(crm_url)}: {loaded.customers} customers, {loaded.contacts} contacts, "
        f"{loaded.references} references, {loaded.movements} stock movements, including {len(loaded.bad_rows)} "
        "rows that Gestimum or our validation will reject or hold",
        file=out,
    )

    simulator = start_demo_simulator()
    print(f"Gestimum simulator listening on {simulator.url}", file=out)
    dagster_home = prepare_dagster_home(home / "dagster_home")
    env = sync_environment(
        crm_url=crm_url,
        gestimum_url=simulator.url,
        start_date=day_list[0],
        timezone=timezone,
        dagster_home=dagster_home,
    )
    try:
        summary, run_id = run_sync(env, day_list, out)
    finally:
        simulator.stop()
        if embedded is not None:
            embedded.stop()
    _print_summary(summary, out)
    print(
        f"\nRun {run_id} is recorded in {dagster_home}. To browse it in the Dagster UI:\n"
        f"  DAGSTER_HOME={dagster_home} dg dev   # from the repository root\n"
        "(the UI shows the run, its asset metadata and checks; re-running needs the environment of README's "
        "'Configuration').",
        file=out,
    )
    return summary


# The pieces below are the demo's steps; tests/e2e/test_ui.py runs the same ones against its own
# database and keeps the simulator up for the Dagster UI.


def load_demo_crm(crm_url: str, day_list: list[date], *, customers_per_day: int, timezone: str) -> DemoSummary:
    """Creates the reference CRM schema in `crm_url` and loads the demo rows of `day_list` into it."""
    from gestimum_pipeline.crm.ddl import create_reference_schema
    from gestimum_pipeline.crm.demo import load_demo_data
    from gestimum_pipeline.db import connect

    conn = connect(crm_url, setting="--database-url")
    try:
        create_reference_schema(conn, "crm")
        loaded = load_demo_data(conn, "crm", days=day_list, customers_per_day=customers_per_day, tz=timezone)
        conn.commit()
    finally:
        conn.close()
    return loaded


def start_demo_simulator() -> GestimumSimulator:
    """A started Gestimum simulator whose catalog holds the demo's items and warehouses."""
    from gestimum_pipeline.crm.demo import DEMO_ITEMS, DEMO_WAREHOUSES
    from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

    return GestimumSimulator(SimulatorConfig(items=tuple(DEMO_ITEMS), warehouses=tuple(DEMO_WAREHOUSES))).start()


def prepare_dagster_home(dagster_home: Path) -> Path:
    """Creates `dagster_home` with the demo's instance file (SQLite storage) unless it has one."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(
            "# Instance of `gestimum-pipeline demo` (SQLite storage here).\ntelemetry:\n  enabled: false\n"
            "# The daemon of `dg dev` evaluates the sinks' freshness policies.\nfreshness:\n  enabled: true\n"
        )
    return dagster_home


def sync_environment(
    *, crm_url: str, gestimum_url: str, start_date: date, timezone: str, dagster_home: Path
) -> dict[str, str]:
    """The environment the sync reads (README's 'Configuration'), for the demo's company file."""
    return {
        "CRM_DATABASE_URL": crm_url,
        "GESTIMUM_URL": gestimum_url,
        "GESTIMUM_FICHIER": "DEMO.Gestimum",
        "GESTIMUM_UTILISATEUR": "DEMO",
        "GESTIMUM_MOT_PASSE": "",
        "GESTIMUM_SYNC_START_DATE": start_date.isoformat(),
        "GESTIMUM_SYNC_TIMEZONE": timezone,
        "DAGSTER_HOME": str(dagster_home),
    }


def init_state(env: dict[str, str]) -> None:
    """Creates the demo's state store (in its CRM database), as `gestimum-pipeline state init` would."""
    from gestimum_pipeline.sync.state import StateStore

    with StateStore(env["CRM_DATABASE_URL"], setting="CRM_DATABASE_URL") as store:
        store.init(env["GESTIMUM_URL"], env["GESTIMUM_FICHIER"], actor="gestimum-pipeline demo")


def run_sync(env: dict[str, str], day_list: list[date], out: TextIO) -> tuple[dict[str, EndpointSummary], str]:
    """Runs the `gestimum_sync` job over `day_list` in one run with `env` set, then restores the environment."""
    init_state(env)  # the demo creates its store explicitly; runs never do
    # The settings come from `env`; the environment is still set for the run, as in production:
    # Dagster resolves the secrets (EnvVar) and finds DAGSTER_HOME there.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return _run_job(day_list, out)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_job(day_list: list[date], out: TextIO) -> tuple[dict[str, EndpointSummary], str]:
    import dagster as dg

    from gestimum_pipeline.defs.build import build_definitions
    from gestimum_pipeline.defs.resources import SyncStateDatabase
    from gestimum_pipeline.defs.settings import Settings

    defs = build_definitions(Settings.from_env())
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("gestimum_sync")
    first, last = day_list[0].isoformat(), day_list[-1].isoformat()
    print(f"Running job gestimum_sync over partitions {first}...{last} in one run …", file=out)
    result = job.execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
        # The step-by-step event log is in the run (and the UI); the terminal gets warnings only.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    summary: dict[str, EndpointSummary] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        kind, name = mat.asset_key.path[0], mat.asset_key.path[-1]
        meta = {k: v.value for k, v in mat.metadata.items()}
        if "run_partitions" not in meta:
            continue  # a day's own figures; the run's totals are on its last day
        if kind == "transform":
            s = summary.setdefault(name, EndpointSummary(name))
            s.rows_read = int(meta.get("run_rows_read", 0))
            s.rejected_locally = int(meta.get("run_rejected_locally", 0))
        elif kind == "gestimum":
            s = summary.setdefault(name, EndpointSummary(name))
            s.sent = int(meta.get("run_lines_sent", 0))
            s.imported = int(meta.get("run_imported", 0))
            s.rejected_by_gestimum = int(meta.get("run_rejected", 0))
            s.held = int(meta.get("held_for_parent", 0))
            s.requests = int(meta.get("requests", 0))
            s.documents = int(meta.get("documents_created", 0))
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.asset_key.path[0] == "gestimum":
            s = summary.setdefault(evaluation.asset_key.path[-1], EndpointSummary(evaluation.asset_key.path[-1]))
            s.failed_checks.append(f"{evaluation.severity.value} {evaluation.check_name}: {evaluation.description}")
    from gestimum_pipeline.sync.state import Status

    state = SyncStateDatabase(url=os.environ["CRM_DATABASE_URL"]).open()
    try:
        counts = state.counts()
    finally:
        state.close()
    for name, s in summary.items():
        s.held = counts.get(name, {}).get(Status.HELD, s.held)
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise SystemExit("The demo run failed:\n" + "\n".join(str(f) for f in failures))
    leftover = {e: c for e, c in counts.items() if c.get(Status.PENDING) or c.get(Status.IN_FLIGHT)}
    if leftover:
        raise SystemExit(f"Rows left unsent after the demo run: {leftover}")
    return summary, result.run_id


def _print_summary(summary: dict[str, EndpointSummary], out: TextIO) -> None:
    from gestimum_pipeline.sync.endpoints import ENDPOINTS

    order = ENDPOINTS.names
    headers = ("endpoint", "rows read", "rejected locally", "sent", "imported", "rejected", "held", "requests", "docs")
    rows = [
        (
            s.endpoint,
            s.rows_read,
            s.rejected_locally,
            s.sent,
            s.imported,
            s.rejected_by_gestimum,
            s.held,
            s.requests,
            s.documents,
        )
        for s in (summary[e] for e in order if e in summary)
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    print("", file=out)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    for r in rows:
        print(
            "  ".join(
                str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
            ),
            file=out,
        )
    failed = [(e, check) for e in order if e in summary for check in summary[e].failed_checks]
    if failed:
        # The deliberately bad demo rows, as the data team sees them: failed checks with their reasons.
        print("\nChecks that did not pass (the UI shows them on each sink's Checks tab):", file=out)
        for endpoint, check in failed:
            print(f"  gestimum/{endpoint} {check}", file=out)
