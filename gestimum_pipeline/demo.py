"""`gestimum-pipeline demo`: the whole sync on an embedded PostgreSQL and the simulator.

Needs no configuration: it starts an embedded PostgreSQL (pgserver), loads demo data
(including rows Gestimum or our validation will reject), starts the Gestimum simulator,
runs the real Dagster job over the demo's days in one run, and prints a per-endpoint
summary from the run's own asset metadata and the state store.

The run is a run of the code location's `gestimum_sync` job, recorded in the demo's instance
as `dagster job launch` records one (the UI's Overview timeline and the job's run history show
it), executed in this process. With `--ui`, the demo then keeps PostgreSQL and the simulator
up and serves the UI with `dg dev`, in the environment the run used, until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from dagster import AssetCheckEvaluation, DagsterEvent, DagsterInstance

    from gestimum_pipeline.crm.demo import DemoSummary
    from gestimum_pipeline.simulator.server import GestimumSimulator

DEMO_DATABASE = "gestimum_demo"
DEMO_DAYS = 3
# [tool.dg.project] code_location_name: the UI files runs under their code location and repository,
# so the demo's run names the location `dg dev` serves (tests/unit/test_demo_ui.py checks they agree).
CODE_LOCATION = "gestimum_pipeline"
REPOSITORY = "__repository__"  # the one repository of a Definitions code location
# `load_definitions`, not the module's `defs`: the definitions are built from the environment as it
# is when the run starts, even in a process that imported the module earlier.
DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE = "gestimum_pipeline.definitions", "load_definitions"
DEFAULT_UI_PORT = 3000
# The variables the sync and Dagster read: `demo --ui` hands `dg dev` the demo's, never the shell's.
OWN_PREFIXES = ("GESTIMUM_", "CRM_", "SYNC_", "DAGSTER_")
UI_STARTUP_TIMEOUT_SECONDS = 180.0
DG_DEV_STOP_TIMEOUT_SECONDS = 90.0  # dagster dev gives its webserver and daemon 60 s each


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
    ui: bool = False,
    port: int | None = None,
    out: TextIO = sys.stdout,
) -> dict[str, EndpointSummary]:
    """Runs the demo end to end and returns the per-endpoint summary it printed; with `ui`, then
    serves the Dagster UI on it until Ctrl-C or SIGTERM."""
    # Imported here: the CLI's other commands should not pay for these imports.
    from gestimum_pipeline.db import connect, with_database
    from gestimum_pipeline.defs.settings import Settings
    from gestimum_pipeline.embedded import EmbeddedPostgres
    from gestimum_pipeline.redaction import redact_url

    if ui:  # before the demo's work, not after it
        project_root()
        _require_free_port(port or DEFAULT_UI_PORT)
    home = home or default_home()
    home.mkdir(parents=True, exist_ok=True)
    timezone = Settings.from_env().timezone
    today = datetime.now(ZoneInfo(timezone)).date()
    day_list = demo_days(today, days)

    # Stopped in reverse order on the way out: `dg dev` (serve_ui), the simulator, PostgreSQL.
    with contextlib.ExitStack() as stack:
        if database_url is None:
            print(f"Starting the embedded PostgreSQL in {home / 'pg'} …", file=out)
            embedded = EmbeddedPostgres(home / "pg").start()
            stack.callback(embedded.stop)
            server_url = embedded.url
        else:
            server_url = database_url
        admin = connect(server_url, setting="--database-url", autocommit=True)
        try:
            with admin.cursor() as cur:
                # A fresh database each time, so the summary always describes this demo alone.
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
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
        stack.callback(simulator.stop)
        print(f"Gestimum simulator listening on {simulator.url}", file=out)
        dagster_home = prepare_dagster_home(home / "dagster_home")
        env = sync_environment(
            crm_url=crm_url,
            gestimum_url=simulator.url,
            start_date=day_list[0],
            timezone=timezone,
            dagster_home=dagster_home,
        )
        summary, run_id = run_sync(env, day_list, out)
        _print_summary(summary, out)
        if ui:
            print(f"\nRun {run_id} is recorded in {dagster_home}.", file=out)
            serve_ui(env, port=port or DEFAULT_UI_PORT, out=out)
        else:
            print(
                f"\nRun {run_id} is recorded in {dagster_home}. To operate the demo in the Dagster UI (the run, "
                "its asset metadata and checks, the operator jobs in the Launchpad), run it with the UI:\n"
                f"  gestimum-pipeline demo --ui [--port {DEFAULT_UI_PORT}]   # from the repository root\n"
                "(the same demo, then `dg dev` in the demo's environment, with PostgreSQL and the simulator kept "
                "running until Ctrl-C).",
                file=out,
            )
    return summary


# --------------------------------------------------------------------------- demo --ui


def ui_environment(base: Mapping[str, str], demo: Mapping[str, str], virtual_env: str | None) -> dict[str, str]:
    """The environment of `dg dev` under `demo --ui`: the shell's, without anything the sync or
    Dagster reads (a developer's CRM_DATABASE_URL or DAGSTER_HOME must not leak into the demo),
    plus the demo's own settings and, in a virtualenv, VIRTUAL_ENV for `--use-active-venv`."""
    env = {k: v for k, v in base.items() if not k.startswith(OWN_PREFIXES)}
    env.update(demo)
    if virtual_env is not None:
        env["VIRTUAL_ENV"] = virtual_env
    else:
        env.pop("VIRTUAL_ENV", None)
    return env


def active_virtual_env() -> str | None:
    """This interpreter's virtualenv, if it runs in one (`dg dev --use-active-venv` then uses it)."""
    return sys.prefix if sys.prefix != sys.base_prefix else None


def project_root() -> Path:
    """The repository checkout holding this package ([tool.dg] in its pyproject.toml), where `dg dev` runs."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.dg" not in pyproject.read_text(encoding="utf-8"):
        raise SystemExit(
            "demo --ui runs `dg dev` on the project's checkout, but gestimum_pipeline is not installed from one "
            f"({root} has no pyproject.toml with [tool.dg]): clone the repository and `pip install -e .`"
        )
    return root


def dg_dev_command(port: int, virtual_env: str | None) -> list[str]:
    """`dg dev` of this environment on 127.0.0.1:`port` (the UI has no login: local only)."""
    beside = Path(sys.executable).parent / "dg"
    command = [str(beside) if beside.exists() else "dg", "dev", "-h", "127.0.0.1", "-p", str(port)]
    return [*command, "--use-active-venv"] if virtual_env is not None else command


def serve_ui(demo_env: Mapping[str, str], *, port: int, out: TextIO) -> None:
    """Runs `dg dev` in the demo's environment until Ctrl-C or SIGTERM (or until it exits), then stops it.

    `dg dev` gets its own session, so a signal reaches it only through here, in order. Our own
    handlers are installed before it starts: a process started in the background by a
    non-interactive shell inherits SIGINT ignored, and `dagster dev` maps SIGTERM to its SIGINT
    handler, so a child inheriting that would ignore both; exec resets handled signals to default.
    """
    root = project_root()
    virtual_env = active_virtual_env()
    _require_free_port(port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(
            dg_dev_command(port, virtual_env),
            cwd=root,
            env=ui_environment(os.environ, demo_env, virtual_env),
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            if _wait_for_ui(url, proc, stop):
                print(
                    f"\nDagster UI: {url}  (the demo's partitions, its run on the Overview timeline, the operator "
                    "jobs in the Launchpad)\nCtrl-C stops dg dev, the simulator and PostgreSQL.",
                    file=out,
                    flush=True,
                )
            elif not stop.is_set() and proc.poll() is None:
                print(f"dg dev has not answered on {url} yet; its output is above.", file=out, flush=True)
            while not stop.wait(0.5) and proc.poll() is None:
                pass
            exited = None if stop.is_set() else proc.poll()  # on its own (a port in use, say): a failure
        finally:
            print("Stopping dg dev, then the simulator and PostgreSQL …", file=out, flush=True)
            stop_process_group(proc)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if exited is not None:
        raise SystemExit(f"dg dev exited on its own (code {exited}); its output is above")


def _require_free_port(port: int) -> None:
    """Fails before `dg dev` starts if `port` is taken: its webserver would log the error and hang."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(f"demo --ui: port {port} on 127.0.0.1 is not free ({exc.strerror}); use --port") from None


def _wait_for_ui(url: str, proc: subprocess.Popen[bytes], stop: threading.Event) -> bool:
    """Whether the webserver at `url` answered before `dg dev` exited or the demo was told to stop."""
    deadline = time.monotonic() + UI_STARTUP_TIMEOUT_SECONDS
    while not stop.is_set() and proc.poll() is None and time.monotonic() < deadline:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url + "server_info", timeout=2) as answer,
        ):
            if answer.status == 200:
                return True
        stop.wait(0.5)
    return False


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Stops `dg dev` as Ctrl-C in its terminal would (SIGINT to its whole group: dg, dagster dev,
    webserver, daemon, code server, run workers), then kills what is left of the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=DG_DEV_STOP_TIMEOUT_SECONDS)
    with contextlib.suppress(ProcessLookupError):  # stragglers, even once the leader is gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


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
    # Dagster resolves the secrets (EnvVar) and finds DAGSTER_HOME there. The shell's own settings
    # (a CRM_SCHEMA, a webhook) are set aside meanwhile: the demo's run is the demo's alone.
    saved = {k: os.environ.get(k) for k in {*env, *(k for k in os.environ if k.startswith(OWN_PREFIXES))}}
    for k in saved:
        os.environ.pop(k, None)
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

    from gestimum_pipeline.defs.resources import SyncStateDatabase

    instance = dg.DagsterInstance.get()
    first, last = day_list[0].isoformat(), day_list[-1].isoformat()
    print(f"Running job gestimum_sync over partitions {first}...{last} in one run …", file=out)
    run_id = launch_sync_run(
        instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        # The step-by-step event log is in the run (and the UI); the terminal gets warnings only.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    run = instance.get_run_by_id(run_id)
    assert run is not None
    result = _RunEvents(instance, run_id)
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
    if run.status != dg.DagsterRunStatus.SUCCESS:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise SystemExit("The demo run failed:\n" + "\n".join(str(f) for f in failures))
    leftover = {e: c for e, c in counts.items() if c.get(Status.PENDING) or c.get(Status.IN_FLIGHT)}
    if leftover:
        raise SystemExit(f"Rows left unsent after the demo run: {leftover}")
    return summary, run_id


def launch_sync_run(instance: DagsterInstance, *, tags: Mapping[str, str], run_config: Mapping[str, Any]) -> str:
    """Runs the code location's `gestimum_sync` in this process as a run of that location, and returns its id.

    The run is created as `dagster job launch` creates one (the job's snapshot, execution plan,
    remote origin: code location, repository) and executed here, as the run worker would; an
    `execute_in_process` run has no origin, and the UI leaves it off the Overview timeline and
    the job's history.
    """
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._utils.hosted_user_process import recon_job_from_origin
    from dagster._utils.merger import merge_dicts

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFINITIONS_MODULE, attribute=DEFINITIONS_ATTRIBUTE
        ),
        location_name=CODE_LOCATION,
    )
    with origin.create_location(instance) as location:
        repository = location.get_repository(REPOSITORY)
        remote_job = repository.get_full_job("gestimum_sync")
        plan = location.get_execution_plan(
            remote_job, dict(run_config), step_keys_to_execute=None, known_state=None, instance=instance
        ).execution_plan_snapshot
        run = instance.create_run(
            job_name=remote_job.name,
            run_id=None,
            run_config=dict(run_config),
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=merge_dicts(remote_job.tags, dict(tags)),  # the job's own tags: its company file
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        execute_run(recon_job_from_origin(remote_job.get_python_origin()), run, instance)
    return run.run_id


class _RunEvents:
    """A finished run's events from the instance, read as an execution result is."""

    def __init__(self, instance: DagsterInstance, run_id: str) -> None:
        self.all_events = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None]

    def get_asset_materialization_events(self) -> list[DagsterEvent]:
        return [e for e in self.all_events if e.is_step_materialization]

    def get_asset_check_evaluations(self) -> list[AssetCheckEvaluation]:
        from dagster import DagsterEventType

        return [
            e.asset_check_evaluation_data
            for e in self.all_events
            if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        ]


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
