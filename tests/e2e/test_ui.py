"""The Dagster UI after a demo sync, in a real browser, and a backfill through the UI's API.

One deployment for the module: a CRM database loaded with the demo data (rows Gestimum or
our validation reject included), the Gestimum simulator, a DAGSTER_HOME, the demo's own
sync run into that instance (gestimum_pipeline/demo.py's steps), then `dg dev`
(webserver and daemon) with the sync's environment, as the data team would run it.

* The browser test drives a headless Chromium with Playwright. No browser can be
  downloaded here, so Playwright is pointed at the system's Chromium (Debian's package,
  installed by .ci/run; `GESTIMUM_CHROMIUM` names another). It checks what the data team
  reads: the asset graph, the imported and rejected counts of `gestimum/clients` (as the
  run recorded them), a rejected demo row as a failed check with its reason. Screenshots
  go to `GESTIMUM_SCREENSHOT_DIR` (README's pictures: `docs/images`), else a temp dir.
  Without Chromium it skips, saying so, except in CI (`CI` set, as CI services do) or with
  `GESTIMUM_REQUIRE_BROWSER=1`, where a missing browser fails it.
* The `demo --ui` test starts `gestimum-pipeline demo --ui` itself, from a shell holding other
  settings (which it must ignore), and walks it in the browser: the demo's run on the Overview
  timeline, its partitions and company file; each day's own figures against the CRM's, and
  their plot; the rows-to-act-on view; a rejected contact fixed in the CRM and retried from
  the Launchpad with the config the view gives, off the list at once, delivered by the next
  sync (the simulator holds it). SIGTERM then must stop `dg dev`, the simulator and
  PostgreSQL, leaving no process. Screenshots: rows-to-act-on.png, per-day-plot.png,
  demo-timeline.png.
* The backfill test launches a backfill of days the demo did not cover through the
  webserver's GraphQL endpoint (the UI's "Launch backfill"), waits for it, and checks the
  days landed: materialized partitions, the state store, the simulator's holdings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import requests
from dagster_services import (
    BIN,
    environ_without_settings,
    free_port,
    graphql,
    launch_backfill,
    live_group_members,
    log_tail,
    process_group,
    wait_for_webserver,
)
from sync_harness import query_rows

from gestimum_pipeline.crm.demo import load_demo_data
from gestimum_pipeline.db import connect, create_database, drop_database
from gestimum_pipeline.demo import (
    EndpointSummary,
    demo_days,
    load_demo_crm,
    prepare_dagster_home,
    run_sync,
    start_demo_simulator,
    sync_environment,
)
from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync.mapping import source_key
from gestimum_pipeline.sync.state import StateStore

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
# `--use-active-venv` (VIRTUAL_ENV set below): the project as installed in this test's environment.
DG_DEV = [str(BIN / "dg"), "dev", "--target-path", str(REPO), "--use-active-venv"]
TIMEZONE = "Europe/Paris"
TODAY = datetime.now(ZoneInfo(TIMEZONE)).date()
START_DATE = TODAY - timedelta(days=10)  # earlier than the demo's days, so the backfill's days are partitions
# Days the demo's run did not cover (nor its look-back), in two stretches: the UI's
# backfill makes one run per stretch (the assets' backfill policy is single-run).
BACKFILL_DAYS = [TODAY - timedelta(days=7), TODAY - timedelta(days=6), TODAY - timedelta(days=4)]
SINKS = ("comptes", "clients", "contacts", "references_clients_articles", "documents_stock")
LOCATION = "gestimum_pipeline"  # [tool.dg.project] code_location_name
BACKFILL_TIMEOUT_SECONDS = 240.0
PAGE_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home: this machine has no internet
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")  # Debian's, Ubuntu's, Google's
# One module fixture (the deployment, `dg dev`) for both tests: keep them on one worker.
pytestmark = pytest.mark.xdist_group("dagster_ui")

BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 20) { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""
MATERIALIZED_PARTITIONS = """
query($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
  }
}
"""


@dataclass(frozen=True)
class Deployment:
    crm_url: str
    simulator: GestimumSimulator
    dagster_home: Path
    webserver_url: str
    log: Path
    run_id: str  # the demo's sync run
    summary: dict[str, EndpointSummary]  # what that run's asset metadata recorded

    def log_tail(self) -> str:
        return "`dg dev` log, last lines:\n" + log_tail(self.log, 60)


@pytest.fixture(scope="module")
def deployment(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("ui")
    name = f"gp_ui_{uuid.uuid4().hex[:12]}"
    crm_url = create_database(pg_server_url, name, setting="GESTIMUM_TEST_DATABASE_URL")
    try:
        with contextlib.ExitStack() as stack:
            load_demo_crm(crm_url, demo_days(TODAY), customers_per_day=20, timezone=TIMEZONE)
            simulator = stack.enter_context(start_demo_simulator())
            dagster_home = prepare_dagster_home(root / "dagster_home")
            env = sync_environment(
                crm_url=crm_url,
                gestimum_url=simulator.url,
                start_date=START_DATE,
                timezone=TIMEZONE,
                dagster_home=dagster_home,
            )
            with (root / "demo.out").open("w") as out:
                summary, run_id = run_sync(env, demo_days(TODAY), out)

            port = free_port()
            webserver_url = f"http://127.0.0.1:{port}/"
            # Only the sync's environment: nothing inherited from the developer's shell.
            process_env = environ_without_settings()
            process_env.update(env)
            process_env["VIRTUAL_ENV"] = sys.prefix  # `dg dev --use-active-venv`: this test's environment
            log = root / "dagster_dev.log"
            dev = stack.enter_context(
                process_group(
                    # The documented command, on the repository's project ([tool.dg]).
                    [*DG_DEV, "-h", "127.0.0.1", "-p", str(port)],
                    cwd=root,
                    env=process_env,
                    log=log,
                )
            )
            wait_for_webserver(webserver_url, dev, log)
            _wait_for_code_location(webserver_url, log)
            assert "SupersessionWarning" not in log.read_text(errors="replace"), log_tail(log)
            yield Deployment(crm_url, simulator, dagster_home, webserver_url, log, run_id, summary)
    finally:
        drop_database(pg_server_url, name, setting="GESTIMUM_TEST_DATABASE_URL")
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_code_location(webserver_url: str, log: Path) -> None:
    """The webserver answers before its code server has loaded the definitions."""
    query = """{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
        __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + 90.0
    while True:
        entries = graphql(webserver_url, query)["workspaceOrError"]["locationEntries"]
        loaded = [e["locationOrLoadError"] for e in entries if e["name"] == LOCATION]
        if loaded and loaded[0] is not None:
            assert loaded[0]["__typename"] == "RepositoryLocation", f"{loaded[0]}\n" + log_tail(log)
            return
        assert time.monotonic() < deadline, f"code location {LOCATION} not loaded:\n" + log_tail(log)
        time.sleep(0.5)


def _crm_keys(crm_url: str) -> dict[str, set[str]]:
    """State-store source keys of every CRM row, per endpoint."""
    customers = {source_key(c) for (c,) in query_rows(crm_url, "SELECT code FROM crm.customers")}
    return {
        "comptes": customers,
        "clients": customers,
        "contacts": {source_key(c) for (c,) in query_rows(crm_url, "SELECT code FROM crm.contacts")},
        "references_clients_articles": {
            source_key(c, i)
            for c, i in query_rows(crm_url, "SELECT customer_code, item_code FROM crm.customer_item_references")
        },
        "documents_stock": {source_key(i) for (i,) in query_rows(crm_url, "SELECT id FROM crm.stock_movements")},
    }


def _decimal_comma(value: Decimal) -> str:
    """A quantity as Gestimum holds it: plain digits, decimal comma."""
    return format(value.normalize(), "f").replace(".", ",")


# --------------------------------------------------------------------------- the browser


def _browser_required() -> str | None:
    """Why a missing browser fails the test instead of skipping it, if it does."""
    if os.environ.get("GESTIMUM_REQUIRE_BROWSER") == "1":
        return "GESTIMUM_REQUIRE_BROWSER=1"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "in CI (CI is set)"
    return None


def _find_chromium() -> str | None:
    configured = os.environ.get("GESTIMUM_CHROMIUM")
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return next(filter(None, (shutil.which(n) for n in CHROMIUM_NAMES)), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable, or skip saying why (fail where a browser is required: CI).
    Module-scoped and requested first, so a skip does not set the deployment up for nothing."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = 'the Playwright library is not installed (pip install -e ".[test]")'
    path = _find_chromium()
    if problem is None and path is None:
        where = os.environ.get("GESTIMUM_CHROMIUM") or f"{' or '.join(CHROMIUM_NAMES)} on PATH"
        problem = f"no Chromium ({where}); apt-get install chromium, or set GESTIMUM_CHROMIUM"
    if problem is not None:
        required = _browser_required()
        if required:
            pytest.fail(f"a browser is required ({required}) but {problem}")
        pytest.skip(f"browser test skipped: {problem}")
    assert path is not None
    return path


def _screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("GESTIMUM_SCREENSHOT_DIR")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.slow
def test_the_ui_shows_the_sync_its_counts_and_a_rejected_row(
    chromium: str, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # the UI loads the instance's data after the page
    shots = _screenshot_dir(tmp_path_factory)
    # Dagster's first-visit newsletter dialog would cover every page: dismissed as a user would.
    graphql(deployment.webserver_url, "mutation { setNuxSeen }")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            try:
                _asset_graph(page, deployment, shots)
                _clients_page(page, deployment, shots)
                _rejected_row_check(page, deployment, shots)
                _column_lineage(page, deployment, shots)
            except Exception as exc:  # a failed expectation, or a page element that never came
                page.screenshot(path=str(shots / "failure.png"))
                exc.add_note(f"screenshot of the page: {shots / 'failure.png'}\n{deployment.log_tail()}")
                raise
        finally:
            browser.close()


def _asset_graph(page: Page, deployment: Deployment, shots: Path) -> None:
    """The global asset graph, every group open: the sinks are there."""
    from playwright.sync_api import expect

    # The graph's own "vertical layout" setting: the whole graph then fits the window.
    page.add_init_script("window.localStorage.setItem('asset-graph-direction', JSON.stringify('vertical'))")
    page.goto(deployment.webserver_url + "asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(page.get_by_text("gestimum", exact=True).first).to_be_visible()
    # Room for the graph (the navigation and the asset tree fold away), then "Expand all groups"
    # (its shortcut), which lays the graph out again and fits it to the window.
    page.get_by_text("Hide navigation").click()
    page.get_by_role("img", name="panel_show_right").click()
    page.keyboard.press("Alt+e")
    for name in ("preflight", "customers", "comptes", "clients", "contacts", "documents_stock"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.screenshot(path=str(shots / "asset-graph.png"))


FRESHNESS_STATUS = """
query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { freshnessStatusInfo { freshnessStatus } }
  }
}
"""


def _clients_page(page: Page, deployment: Deployment, shots: Path) -> None:
    """`gestimum/clients` shows the imported and rejected counts its latest materialization recorded."""
    from playwright.sync_api import expect

    with dg.DagsterInstance.from_config(str(deployment.dagster_home)) as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey(["gestimum", "clients"]))
    assert latest is not None and latest.asset_materialization is not None
    recorded = {k: v.value for k, v in latest.asset_materialization.metadata.items()}
    if latest.run_id == deployment.run_id:  # the backfill test has not run yet: the demo's own counts
        # The run's totals are on its last day (each day records its own figures).
        assert (recorded["run_imported"], recorded["run_rejected"]) == (
            deployment.summary["clients"].imported,
            deployment.summary["clients"].rejected_by_gestimum,
        )
    page.goto(deployment.webserver_url + "assets/gestimum/clients")
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    for key in ("imported", "rejected", "requests"):
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
        expect(row.get_by_role("cell").last).to_have_text(str(recorded[key]))
    # Freshness (GESTIMUM_MAX_LAG_MINUTES) as the daemon evaluates it, on the page and through the API.
    expect(page.get_by_text("Passing").first).to_be_visible(timeout=90_000)
    status = graphql(deployment.webserver_url, FRESHNESS_STATUS, {"path": ["gestimum", "clients"]})
    assert status["assetNodeOrError"]["freshnessStatusInfo"]["freshnessStatus"] == "HEALTHY", status
    page.screenshot(path=str(shots / "clients-asset.png"))


def _rejected_row_check(page: Page, deployment: Deployment, shots: Path) -> None:
    """The demo's contact of a customer Gestimum does not have: a failed check, with Gestimum's reason."""
    from playwright.sync_api import expect

    with StateStore(deployment.crm_url) as store:
        rejected = [
            r for r in store.records(endpoint="contacts", statuses=["rejected"]) if r["reason_source"] != "local"
        ]
    assert len(rejected) == 1, rejected
    key, reason = rejected[0]["source_key"], rejected[0]["reason"]
    page.goto(deployment.webserver_url + "assets/gestimum/contacts?view=checks")
    page.locator("[title='no_rejected_lines']").click()
    expect(page.locator("span", has=page.locator("[title='no_rejected_lines']"))).to_contain_text("Failed")
    expect(page.get_by_text("Evaluation result", exact=True).locator("xpath=..")).to_contain_text("Failed")
    # The check's description names the row and Gestimum's reason for refusing it, quoted as Gestimum's.
    expect(page.get_by_text(re.compile(re.escape(f'{key}: Gestimum said: "{reason}"'))).first).to_be_visible()
    page.screenshot(path=str(shots / "rejected-row-check.png"))


# --------------------------------------------------------------------------- the backfill


def _backfill_status(deployment: Deployment, backfill_id: str) -> dict[str, Any]:
    answer = graphql(deployment.webserver_url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    assert answer["__typename"] == "PartitionBackfill", f"{answer}\n{deployment.log_tail()}"
    return dict(answer)


@pytest.mark.slow
def test_a_backfill_launched_through_graphql_lands_its_days(deployment: Deployment) -> None:
    before = _crm_keys(deployment.crm_url)
    conn = connect(deployment.crm_url)
    try:
        added = load_demo_data(conn, days=BACKFILL_DAYS, customers_per_day=3, tz=TIMEZONE, include_bad_rows=False)
    finally:
        conn.close()
    new = {endpoint: keys - before[endpoint] for endpoint, keys in _crm_keys(deployment.crm_url).items()}
    assert len(new["clients"]) == added.customers and len(new["documents_stock"]) == added.movements

    days = [d.isoformat() for d in BACKFILL_DAYS]
    backfill_id = launch_backfill(
        deployment.webserver_url, location=LOCATION, partition_set="gestimum_sync_partition_set", partitions=days
    )
    deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
    while (backfill := _backfill_status(deployment, backfill_id))["status"] == "REQUESTED":
        assert time.monotonic() < deadline, (
            f"backfill {backfill_id} not done after {BACKFILL_TIMEOUT_SECONDS:.0f} s: {backfill}\n"
            + deployment.log_tail()
        )
        time.sleep(1.0)
    assert backfill["status"] == "COMPLETED_SUCCESS", f"{backfill}\n{deployment.log_tail()}"
    # One run per stretch of consecutive days (single-run backfill policy).
    ranges = sorted(
        (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
        for tags in ({t["key"]: t["value"] for t in run["tags"]} for run in backfill["runs"])
    )
    assert ranges == [(days[0], days[1]), (days[2], days[2])], ranges

    # Every sink has a materialization for each of the days, from the backfill's runs.
    run_ids = {run["runId"] for run in backfill["runs"]}
    for sink in SINKS:
        asset = graphql(
            deployment.webserver_url, MATERIALIZED_PARTITIONS, {"path": ["gestimum", sink], "partitions": days}
        )["assetOrError"]
        assert asset["__typename"] == "Asset", asset
        landed = {m["partition"] for m in asset["assetMaterializations"] if m["runId"] in run_ids}
        assert landed == set(days), (sink, asset["assetMaterializations"])

    # The new rows are imported, and Gestimum holds them.
    with StateStore(deployment.crm_url) as store:
        for endpoint, keys in new.items():
            assert keys, endpoint
            statuses = {r["source_key"]: r["status"] for r in store.records(endpoint=endpoint, keys=sorted(keys))}
            assert statuses == dict.fromkeys(keys, "imported"), (endpoint, statuses)
        stock = store.records(endpoint="documents_stock", statuses=["imported"])
    held = requests.get(deployment.simulator.url + "_simulator/state", timeout=10).json()
    assert new["clients"] <= set(held["customers"])
    assert {f"411{c}" for c in new["comptes"]} <= set(held["accounts"])
    assert new["contacts"] <= set(held["contacts"])
    assert new["references_clients_articles"] <= {source_key(r["PCF_CODE"], r["ART_CODE"]) for r in held["references"]}
    # Each stock movement is a line of exactly one document: the one the state store names.
    documents = {d["number"]: d for d in held["documents"]}
    assert Counter(r["document"] for r in stock) == {n: len(d["lines"]) for n, d in documents.items()}
    movements = {
        source_key(i): (
            "E" if direction == "in" else "S",
            warehouse,
            item,
            format(qty.normalize(), "f").replace(".", ","),
        )
        for i, direction, warehouse, item, qty in query_rows(
            deployment.crm_url, "SELECT id, direction, warehouse_code, item_code, quantity FROM crm.stock_movements"
        )
    }
    for record in (r for r in stock if r["source_key"] in new["documents_stock"]):
        document = documents[record["document"]]
        stype, warehouse, item, quantity = movements[record["source_key"]]
        assert (document["stype"], document["warehouse"]) == (stype, warehouse), record
        assert any(line["ART_CODE"] == item and line["MVT_QTE"] == quantity for line in document["lines"]), record


COLUMN_LINEAGE = """
query($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        metadataEntries {
          label
          ... on TableColumnLineageMetadataEntry { lineage { columnName columnDeps { assetKey { path } columnName } } }
        }
      }
    }
  }
}
"""


def _column_lineage(page: Page, deployment: Deployment, shots: Path) -> None:
    """A sink's columns and column lineage: each Gestimum field code from the CRM columns it is
    computed from (CCT_NOM from last_name and first_name). The webserver serves the lineage to the
    UI (checked through its GraphQL API; the open-source UI draws no column lineage graph, a
    Dagster+ view, and keeps the entry out of its metadata table); the page shows the field codes
    as the sink's columns and its row count."""
    from playwright.sync_api import expect

    answer = graphql(deployment.webserver_url, COLUMN_LINEAGE, {"path": ["gestimum", "contacts"]})
    entries = answer["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
    lineage = next(e["lineage"] for e in entries if e["label"] == "dagster/column_lineage")
    deps = {
        column["columnName"]: {(tuple(d["assetKey"]["path"]), d["columnName"]) for d in column["columnDeps"]}
        for column in lineage
    }
    assert deps["CCT_NOM"] == {(("crm", "contacts"), "last_name"), (("crm", "contacts"), "first_name")}, deps
    assert deps["CCT_ORIGIN"] == {(("crm", "contacts"), "customer_code")}, deps
    page.goto(deployment.webserver_url + "assets/gestimum/contacts")
    expect(page.get_by_text("Columns", exact=True).first).to_be_visible()
    for column in ("CCT_CODE", "CCT_NOM", "CCT_ORIGIN"):
        expect(page.get_by_role("cell", name=column, exact=True).first).to_be_visible()
    expect(page.get_by_text("Row count", exact=True).first).to_be_visible()
    page.screenshot(path=str(shots / "sink-columns.png"))


# --------------------------------------------------------------------------- demo --ui

# The shell's own settings, which `demo --ui` must leave out of its run and of `dg dev`.
SHELL_SETTINGS = {
    "CRM_SCHEMA": "not_the_demos",
    "GESTIMUM_FICHIER": "SHELL.Gestimum",
    "GESTIMUM_SYNC_START_DATE": "2024-01-01",
    "GESTIMUM_CHANGE_SENSOR": "true",
}
# As a non-interactive shell starts a command in the background: SIGINT ignored, which is inherited.
BACKGROUND = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]
DEMO_UI_STARTUP_SECONDS = 300.0
DEMO_UI_STOP_SECONDS = 150.0
RUN_TIMEOUT_SECONDS = 240.0
RUNS_OF_JOB = """
query($job: String!) {
  runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status repositoryOrigin { repositoryName repositoryLocationName }
                            tags { key value } } }
  }
}
"""
PARTITION_NAMES = """
query($location: String!) {
  partitionSetOrError(repositorySelector: {repositoryLocationName: $location, repositoryName: "__repository__"},
                      partitionSetName: "gestimum_sync_partition_set") {
    ... on PartitionSet { partitionsOrError { ... on Partitions { results { name } } } }
  }
}
"""
PARTITION_METADATA = """
query($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations { partition runId
      metadataEntries { label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text }
                        ... on JsonMetadataEntry { jsonString } } } }
  }
}
"""


@dataclass(frozen=True)
class DemoUi:
    """`gestimum-pipeline demo --ui`, as a data team member starts it, and what it printed."""

    proc: subprocess.Popen[bytes]
    home: Path
    webserver_url: str
    simulator_url: str
    crm_url: str
    run_id: str  # the demo's sync run
    log: Path

    def log_tail(self) -> str:
        return "`demo --ui` log, last lines:\n" + log_tail(self.log, 60)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def demo_ui(chromium: str) -> Iterator[DemoUi]:
    """`demo --ui` on its embedded PostgreSQL, started like from a shell holding other settings;
    stopped with SIGTERM, which must stop `dg dev`, the simulator and PostgreSQL, leaving nothing."""
    # Not under pytest's base temp: as root, pgserver runs the server as its own user, which must
    # traverse the data directory's parents, and any pytest session resets /tmp/pytest-of-root to 0700.
    root = Path(tempfile.mkdtemp(prefix="gp-demo-ui-"))
    home, log = root / "home", root / "demo.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GESTIMUM_SYNC_TIMEZONE"}  # the demo's days: Paris
    env.update(SHELL_SETTINGS, DAGSTER_HOME=str(root / "shell_dagster_home"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*BACKGROUND, str(BIN / "gestimum-pipeline"), "demo", "--ui", "--port", str(port), "--home", str(home)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dg_dev_groups: list[int] = []
    try:
        deadline = time.monotonic() + DEMO_UI_STARTUP_SECONDS
        while "Dagster UI: " not in (text := log.read_text(errors="replace")):
            assert proc.poll() is None, "`demo --ui` exited:\n" + log_tail(log, 60)
            assert time.monotonic() < deadline, "`demo --ui` served no UI:\n" + log_tail(log, 60)
            time.sleep(1.0)
        dg_dev_groups = _children(proc.pid)  # `dg dev`, in a process group of its own
        webserver_url = re.search(r"Dagster UI: (\S+)", text)[1]  # type: ignore[index]
        assert webserver_url == f"http://127.0.0.1:{port}/"
        _wait_for_code_location(webserver_url, log)
        yield DemoUi(
            proc=proc,
            home=home,
            webserver_url=webserver_url,
            simulator_url=re.search(r"Gestimum simulator listening on (\S+)", text)[1],  # type: ignore[index]
            crm_url=re.search(r"Loaded demo CRM into (\S+):", text)[1],  # type: ignore[index]
            run_id=re.search(r"Run (\S+) is recorded", text)[1],  # type: ignore[index]
            log=log,
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=DEMO_UI_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            for group in dg_dev_groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            raise AssertionError("`demo --ui` did not stop on SIGTERM:\n" + log_tail(log, 60)) from None
        left = {g: live_group_members(g) for g in [proc.pid, *dg_dev_groups]}
        postgres_running = (home / "pg" / "postmaster.pid").exists()
        tail, text = log_tail(log, 60), log.read_text(errors="replace")
        if not any(left.values()) and not postgres_running:
            shutil.rmtree(root, ignore_errors=True)
        assert code == 0, f"`demo --ui` exited {code} on SIGTERM:\n{tail}"
        assert dg_dev_groups, "`demo --ui` started no `dg dev`"
        # Stopped, not killed: dagster dev shut its webserver and daemon down itself.
        assert "Dagster services shut down." in text, tail
        assert not any(left.values()), f"processes left behind: {left}"
        assert not postgres_running, "the demo's PostgreSQL is still running"


def _wait_for_run(webserver_url: str, job: str, known: set[str], log: Path) -> dict[str, Any]:
    """The first run of `job` not in `known`, once it has finished."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        runs = graphql(webserver_url, RUNS_OF_JOB, {"job": job})["runsOrError"]["results"]
        new = [r for r in runs if r["runId"] not in known]
        if new and new[-1]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return dict(new[-1])
        assert time.monotonic() < deadline, f"no finished {job} run: {new}\n" + log_tail(log, 60)
        time.sleep(1.0)


def _per_day_metadata(webserver_url: str, path: list[str], run_id: str) -> dict[str, dict[str, Any]]:
    """Each partition's metadata as `run_id` recorded it on asset `path`."""
    asset = graphql(webserver_url, PARTITION_METADATA, {"path": path})["assetOrError"]
    return {
        m["partition"]: {
            e["label"]: json.loads(e["jsonString"]) if "jsonString" in e else e.get("intValue", e.get("text"))
            for e in m["metadataEntries"]
        }
        for m in asset["assetMaterializations"]
        if m["runId"] == run_id
    }


def _sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement against the demo's CRM, committed."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _crm_contacts_per_day(crm_url: str) -> dict[str, set[str]]:
    """The CRM's contacts by the local day of their change time: the partition each belongs to."""
    days: dict[str, set[str]] = {}
    for code, day in _sql(
        crm_url, "SELECT code, (updated_at AT TIME ZONE %s)::date::text FROM crm.contacts", (TIMEZONE,)
    ):
        days.setdefault(day, set()).add(source_key(code))
    return days


@pytest.mark.slow
def test_the_demo_ui_a_retry_from_the_launchpad_and_per_day_figures(
    chromium: str, demo_ui: DemoUi, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`demo --ui` as the data team uses it: the demo's run on the timeline, its partitions and
    company file (not the shell's); the rows to act on; a rejected contact fixed in the CRM and
    retried from the Launchpad, delivered by the next sync; each day's own figures."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    shots = _screenshot_dir(tmp_path_factory)
    url = demo_ui.webserver_url

    # The demo's run is a run of the code location's gestimum_sync (the timeline groups by it),
    # tagged with the demo's company file; the partitions are the demo's days.
    (run,) = graphql(url, RUNS_OF_JOB, {"job": "gestimum_sync"})["runsOrError"]["results"]
    assert run["runId"] == demo_ui.run_id and run["status"] == "SUCCESS", run
    assert run["repositoryOrigin"] == {"repositoryName": "__repository__", "repositoryLocationName": LOCATION}
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["gestimum/company_file"] == "DEMO.Gestimum", tags
    partitions = graphql(url, PARTITION_NAMES, {"location": LOCATION})["partitionSetOrError"]
    days = [p["name"] for p in partitions["partitionsOrError"]["results"]]
    assert days == [d.isoformat() for d in demo_days(TODAY)], days
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
        days[0],
        days[-1],
    )
    assert not (demo_ui.home.parent / "shell_dagster_home").exists()  # the shell's DAGSTER_HOME: unused

    # Each day's own figures, as the CRM's days differ (taken before the retry changes the store).
    crm_days = _crm_contacts_per_day(demo_ui.crm_url)
    assert len({len(crm_days.get(d, ())) for d in days}) > 1, f"the demo's days do not differ: {crm_days}"
    with StateStore(demo_ui.crm_url) as store:
        records = {r["source_key"]: r for r in store.records(endpoint="contacts")}
    # A day's lines: its contacts sent to Gestimum (not rejected by our validation, not held).
    imported = {d: {k for k in crm_days.get(d, ()) if records[k]["status"] == "imported"} for d in days}
    refused = {
        d: {
            k
            for k in crm_days.get(d, ())
            if records[k]["status"] == "rejected" and records[k]["reason_source"] != "local"
        }
        for d in days
    }
    transform = _per_day_metadata(url, ["transform", "contacts"], demo_ui.run_id)
    sink = _per_day_metadata(url, ["gestimum", "contacts"], demo_ui.run_id)
    assert set(sink) == set(transform) == set(days), (sorted(sink), sorted(transform))
    assert [transform[d]["rows_read"] for d in days] == [len(crm_days.get(d, ())) for d in days], transform
    assert [sink[d]["lines_sent"] for d in days] == [len(imported[d] | refused[d]) for d in days], sink
    assert [(sink[d]["imported"], sink[d]["rejected"]) for d in days] == [
        (len(imported[d]), len(refused[d])) for d in days
    ], sink
    # The run's totals once, on its last day: its days' figures plus any from days outside the run.
    last = sink[days[-1]]
    assert (
        sum(sink[d]["lines_sent"] for d in days) + last["run_other_days"].get("lines_sent", 0)
        == (last["run_lines_sent"])
    ), last
    assert all("run_lines_sent" not in sink[d] for d in days[:-1]), sink

    # The contact of a customer Gestimum does not have: rejected by Gestimum.
    (rejected,) = [r for r in records.values() if r["status"] == "rejected" and r["reason_source"] != "local"]
    key = rejected["source_key"]
    (held,) = [k for k, r in records.items() if r["status"] == "held"]  # the contact of a rejected customer
    with StateStore(demo_ui.crm_url) as store:
        customer = min(r["source_key"] for r in store.records(endpoint="clients", statuses=["imported"]))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            graphql(url, "mutation { setNuxSeen }")
            try:
                # The timeline lists the jobs that ran in its window: gestimum_sync (the demo's run),
                # not yet the operator jobs.
                page.goto(url + "overview/activity/timeline")
                expect(page.get_by_text("gestimum_sync", exact=True).first).to_be_visible()
                expect(page.get_by_text("operator_retry", exact=True)).to_have_count(0)
                page.screenshot(path=str(shots / "demo-timeline.png"))

                _per_day_plot(page, demo_ui, shots)  # the demo's run: each partition's latest figures
                suggested = json.loads(_rows_to_act_on(page, demo_ui, key, held, shots))
                assert suggested == {"endpoint": "contacts", "source_keys": [key], "actor": "<your name>"}, suggested

                # Fixed in the CRM (as its application would: the change time moves), then retried
                # from the Launchpad: back to pending.
                fixed = _sql(
                    demo_ui.crm_url,
                    "UPDATE crm.contacts SET customer_code = %s, updated_at = now() WHERE code = %s RETURNING code",
                    (customer, key),
                )
                assert fixed == [(key,)], fixed
                known = {
                    r["runId"] for r in graphql(url, RUNS_OF_JOB, {"job": "operator_retry"})["runsOrError"]["results"]
                }
                page.goto(url + f"locations/{LOCATION}/jobs/operator_retry/playground")
                expect(page.get_by_text("gestimum/company_file: DEMO.Gestimum")).to_be_visible()
                page.locator(".CodeMirror").click()
                page.keyboard.press("Control+a")
                # The view's config, the actor filled in.
                config = {"ops": {"retry_rows": {"config": {**suggested, "actor": "browser test"}}}}
                page.keyboard.insert_text(json.dumps(config))  # JSON is YAML
                launch = page.get_by_role("button", name="Launch Run")
                expect(launch).to_be_enabled()
                launch.click()
                expect(page).to_have_url(re.compile(r"/runs/"))
                retry = _wait_for_run(url, "operator_retry", known, demo_ui.log)
                assert retry["status"] == "SUCCESS", f"{retry}\n{demo_ui.log_tail()}"
                with StateStore(demo_ui.crm_url) as store:
                    (after_retry,) = store.records(endpoint="contacts", keys=[key])
                assert after_retry["status"] == "pending", after_retry

                _rows_to_act_on_after_retry(page, demo_ui, key, held)

                # The next sync (the UI's "Launch backfill" of the demo's days: one run) delivers it.
                known = {run["runId"]}
                launch_backfill(url, location=LOCATION, partition_set="gestimum_sync_partition_set", partitions=days)
                sync = _wait_for_run(url, "gestimum_sync", known, demo_ui.log)
                assert sync["status"] == "SUCCESS", f"{sync}\n{demo_ui.log_tail()}"
                held = requests.get(demo_ui.simulator_url + "_simulator/state", timeout=10).json()
                assert held["contacts"][key]["CCT_ORIGIN"] == customer, held["contacts"].get(key)
                with StateStore(demo_ui.crm_url) as store:
                    (delivered,) = store.records(endpoint="contacts", keys=[key])
                assert delivered["status"] == "imported", delivered
            except Exception as exc:
                page.screenshot(path=str(shots / "failure.png"))
                exc.add_note(f"screenshot of the page: {shots / 'failure.png'}\n{demo_ui.log_tail()}")
                raise
        finally:
            browser.close()


def _rows_to_act_on(page: Page, demo_ui: DemoUi, key: str, held: str, shots: Path) -> str:
    """The one list of rows to act on (the `rows_to_act_on` check of sync/preflight): the contact
    Gestimum rejected, its reason quoted as Gestimum's, its next step the operator_retry job with its
    Launchpad config; the contact held behind its rejected customer, named with that parent; the
    runbook. Returns the config the view gives for the contact."""
    from playwright.sync_api import expect

    page.goto(demo_ui.webserver_url + "assets/sync/preflight?view=checks")
    page.locator("[title='rows_to_act_on']").click()
    expect(page.get_by_text("Evaluation result", exact=True).locator("xpath=..")).to_contain_text("Failed")
    row = page.get_by_role("cell", name=key, exact=True).locator("xpath=..")
    expect(row).to_contain_text("rejected")
    expect(row).to_contain_text('Gestimum said: "')
    expect(row).to_contain_text("launch operator_retry with {")
    held_row = page.get_by_role("cell", name=held, exact=True).locator("xpath=..")
    expect(held_row).to_contain_text("held for its parent clients")
    expect(page.get_by_text("docs/operations.md#rows-to-act-on").first).to_be_visible()
    page.set_viewport_size({"width": 1900, "height": 1300})  # room for the table, next steps included
    page.screenshot(path=str(shots / "rows-to-act-on.png"))
    page.set_viewport_size(VIEWPORT)
    next_step = row.get_by_role("cell").filter(has_text="operator_retry").inner_text()
    return next_step.split("launch operator_retry with ", 1)[1].split("; ", 1)[0]


def _rows_to_act_on_after_retry(page: Page, demo_ui: DemoUi, key: str, held: str) -> None:
    """The operator job re-evaluated the view: the retried contact is off the list before any sync."""
    from playwright.sync_api import expect

    page.goto(demo_ui.webserver_url + "assets/sync/preflight?view=checks")
    page.locator("[title='rows_to_act_on']").click()
    expect(page.get_by_role("cell", name=held, exact=True)).to_be_visible()  # the list, still there
    expect(page.get_by_role("cell", name=key, exact=True)).to_have_count(0)


def _per_day_plot(page: Page, demo_ui: DemoUi, shots: Path) -> None:
    """The sink's lines sent per day, as the UI plots them over partitions."""
    from playwright.sync_api import expect

    page.goto(demo_ui.webserver_url + "assets/gestimum/contacts")
    page.get_by_text("Hide navigation").click()  # for the screenshots (the UI remembers it)
    page.get_by_role("button", name="Plots").click()
    page.get_by_role("button", name="Partitions").click()  # x axis: the partitions (days)
    chart = page.get_by_text("lines_sent", exact=True).first
    chart.scroll_into_view_if_needed()
    expect(chart).to_be_visible()
    page.mouse.wheel(0, 250)  # the chart under its title
    page.screenshot(path=str(shots / "per-day-plot.png"))
