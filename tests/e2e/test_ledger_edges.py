"""Issue 18: the medium and lows that need the whole graph, through public names only (the job
run in process, `StateStore`'s public methods, the CLI, the simulator's holdings and request log)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from invariants import assert_no_secret
from reliability import GESTIMUM_PASSWORD, Deployment, deployment, execute, run_job
from sync_harness import insert_customers, insert_movements, run_sync

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.simulator.server import Fault, GestimumSimulator
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.state import StateStore

DAY = "2026-03-10"
WHEN = "2026-03-10 10:00:00+01"


def test_the_case_collision_refusal_runs_even_when_the_attempt_staged_nothing(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    """Medium 3a: a transform staged `ACME` and `acme` and crashed before refusing them; the next
    run stages nothing new, and must still refuse both rather than send both."""
    rows = [(code, f"Customer {code}", None, None, None, None, None, None, WHEN) for code in ("ACME", "acme")]
    insert_customers(crm_url, rows)
    with StateStore(crm_url) as store:
        for endpoint in ("comptes", "clients"):
            mapper = ENDPOINTS.get(endpoint).make_mapper(LineFormat().encoder())
            store.stage(endpoint, [mapper.map(r) for r in rows], partition=DAY, run_id="crashed")
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert run.success, run.failures
    assert not {"ACME", "acme"} & set(simulator.state.customers), simulator.state.customers


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        yield d


def test_a_password_echoed_in_a_line_rejection_never_reaches_the_store_the_checks_or_the_cli(
    dep: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """Low 1: Gestimum quotes the value it refused; when that value is the company's password,
    the per-line reason is redacted before it is stored, shown in metadata, checks or alerts."""
    execute(
        dep.crm_url,
        [
            (
                "INSERT INTO crm.contacts (code, customer_code, last_name, updated_at) VALUES ('K9', %s, 'Petit', %s)",
                (GESTIMUM_PASSWORD, WHEN),
            )
        ],
    )
    run = run_job(dep)
    assert run.success, run.failures
    with StateStore(dep.state_url) as store:
        (rejected,) = store.records(endpoint="contacts", keys=["K9"])
    assert rejected["status"] == "rejected" and rejected["reason_source"] == "gestimum"
    assert "***" in rejected["reason"], rejected["reason"]
    cli(["rejections", "--database-url", dep.state_url, "--json"])
    shown = capsys.readouterr()
    assert_no_secret({"reason": rejected["reason"], **run.texts(), "cli": shown.out + shown.err}, [GESTIMUM_PASSWORD])


@pytest.mark.parametrize(
    ("retry_on_503", "requests", "status"), [(True, 2, "imported"), (False, 1, "delivery_unknown")]
)
def test_a_503_on_documents_stock_follows_the_stock_retry_setting(
    crm_url: str, simulator: GestimumSimulator, retry_on_503: bool, requests: int, status: str
) -> None:
    """Low 3: behind a proxy that may have lost the answer, a 503 on DocumentsStock is not proof
    that nothing was processed; the operator can say so (`GESTIMUM_STOCK_RETRY_ON_503=false`).
    The default keeps today's policy (retried)."""
    insert_movements(crm_url, [(1, "in", "001", "ELS", 5, WHEN)])
    simulator.add_fault(Fault("http_503", endpoint="documents_stock"))
    run = run_sync(crm_url, simulator.url, partition=DAY, api_stock_retry_on_503=retry_on_503)
    assert run.success is (status == "imported"), run.failures
    assert sum(r.endpoint == "documents_stock" for r in simulator.state.requests) == requests
    with StateStore(crm_url) as store:
        assert store.records(endpoint="documents_stock", keys=["1"])[0]["status"] == status
