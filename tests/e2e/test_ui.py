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
* The backfill test launches a backfill of days the demo did not cover through the
  webserver's GraphQL endpoint (the UI's "Launch backfill"), waits for it, and checks the
  days landed: materialized partitions, the state store, the simulator's holdings.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
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
from dagster_services import BIN, free_port, graphql, launch_backfill, log_tail, process_group, wait_for_webserver
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
            process_env = {
                k: v for k, v in os.environ.items() if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_", "DAGSTER_"))
            }
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
    # The check's description names the row and Gestimum's reason for refusing it.
    expect(page.get_by_text(re.compile(re.escape(f"{key}: {reason}"))).first).to_be_visible()
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
