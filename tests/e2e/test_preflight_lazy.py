"""The Gestimum access check is lazy (issue 13, "Run cost").

A run with nothing to send sends no request to Gestimum: the preflight trusts the state
store's proof that Gestimum accepted these exact credentials less than
GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS ago. New credentials are checked again, and a sink
about to send stock movements checks access first unless this run proved it, so a password
changed in Gestimum still fails before any movement is marked in flight or sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from invariants import statuses
from reliability import DAY_TS, GESTIMUM_PASSWORD, Deployment, Run, deployment, execute, run_job, seed_standard
from sync_harness import query_rows

from gestimum_pipeline.defs.resources import build_resources
from gestimum_pipeline.defs.settings import Settings

CREDENTIALS = "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE"


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def requests_during(dep: Deployment, **kwargs: object) -> tuple[Run, list]:
    """Runs the job; returns the run and the requests the simulator received meanwhile."""
    before = len(dep.simulator.state.requests)
    run = run_job(dep, **kwargs)  # type: ignore[arg-type]
    return run, dep.simulator.state.requests[before:]


def access_rows(dep: Deployment) -> list[tuple[str, str | None]]:
    return [
        (r[0], r[1]) for r in query_rows(dep.state_url, "SELECT t::text, t.run_id FROM gestimum_sync.gestimum_access t")
    ]


def add_movements(dep: Deployment, *ids: int) -> None:
    execute(
        dep.crm_url,
        [
            (
                "INSERT INTO crm.stock_movements (id, direction, warehouse_code, item_code, quantity, moved_at)"
                " VALUES (%s, 'in', '001', 'ELS', %s, %s)",
                (i, i, DAY_TS),
            )
            for i in ids
        ],
    )


def test_a_rerun_with_nothing_to_send_sends_no_request(dep: Deployment) -> None:
    first, sent = requests_during(dep)
    assert first.success, first.failures
    # The first run checks (one test-mode request), then the sinks send; the stock sink does
    # not check again: this run proved access.
    assert [(r.endpoint, r.lines) for r in sent if r.test_mode] == [("comptes", 0)]
    assert first.metadata["sync/preflight"]["gestimum_requests"] == 1
    assert first.metadata["sync/preflight"]["gestimum_access"].startswith("Gestimum access: checked now")
    assert "access_checks" not in first.metadata["gestimum/documents_stock"]
    (row, proven_by), *_ = access_rows(dep)
    assert GESTIMUM_PASSWORD not in row and "pbkdf2_sha256$" in row
    assert proven_by == first.run_id  # the last sink's request re-recorded it in the same run

    again, sent = requests_during(dep)
    assert again.success, again.failures
    assert sent == []  # nothing changed: not one request, not even the access check
    preflight = again.metadata["sync/preflight"]
    assert preflight["gestimum_requests"] == 0
    said = preflight["gestimum_access"]
    assert said.startswith("Gestimum access: proven at ") and f"by run {first.run_id}; next check after " in said
    assert f"by run {first.run_id}; next check after" in again.event_log  # the run log says it too
    assert GESTIMUM_PASSWORD not in again.event_log + again.logs


def test_changed_credentials_are_checked_again_and_a_wrong_one_fails_clearly(dep: Deployment) -> None:
    assert run_job(dep).success
    dep.password = "Not-The-Password-2"  # the configuration changed, not Gestimum
    run, sent = requests_during(dep)
    assert not run.success and list(run.failures) == ["sync__preflight"]
    message = run.failure("sync/preflight")
    assert f"{CREDENTIALS}: Gestimum refused the user or password" in message
    assert [(r.endpoint, r.lines, r.test_mode) for r in sent] == [("comptes", 0, True)] * len(sent) and sent
    assert "Not-The-Password-2" not in run.event_log + run.logs + message
    # The right new password, set in both places: checked once, then trusted.
    dep.password = dep.simulator.config.password = "N3w-Gest-Passw0rd"
    run, sent = requests_during(dep)
    assert run.success, run.failures
    assert [(r.endpoint, r.lines, r.test_mode) for r in sent] == [("comptes", 0, True)]
    assert all("N3w-Gest-Passw0rd" not in row for row, _ in access_rows(dep))
    _, sent = requests_during(dep)
    assert sent == []


def test_a_password_changed_in_gestimum_fails_before_any_stock_line_is_sent(dep: Deployment) -> None:
    proven = run_job(dep)
    assert proven.success, proven.failures
    add_movements(dep, 101, 102)
    dep.simulator.config.password = "Changed-In-Gestimum-3"  # the configuration still holds the old one
    run, sent = requests_during(dep)
    # The preflight trusts the earlier run's proof: master data has nothing to send, so the
    # first request of this run is the stock sink's own check, which Gestimum refuses.
    assert run.metadata["sync/preflight"]["gestimum_requests"] == 0
    assert not run.success
    assert list(run.failures) == ["gestimum__documents_stock"], run.failures
    message = run.failure("gestimum/documents_stock")
    assert f"{CREDENTIALS}: Gestimum refused the user or password" in message
    assert "none was marked in flight or sent, and they stay pending" in message
    assert [(r.endpoint, r.lines, r.test_mode) for r in sent] == [("comptes", 0, True)]
    assert not [r for r in sent if r.endpoint == "documents_stock"]
    stock = statuses(dep.state_url, "documents_stock")
    assert (stock["101"], stock["102"]) == ("pending", "pending")
    # Fixed in the configuration: the new credentials are checked, and the movements sent once.
    dep.password = "Changed-In-Gestimum-3"
    fixed, sent = requests_during(dep)
    assert fixed.success, fixed.failures
    assert fixed.metadata["sync/preflight"]["gestimum_requests"] == 1
    assert [r.lines for r in sent if r.endpoint == "documents_stock"] == [2]
    assert "access_checks" not in fixed.metadata["gestimum/documents_stock"]  # the preflight proved it
    stock = statuses(dep.state_url, "documents_stock")
    assert (stock["101"], stock["102"]) == ("imported", "imported")


def test_the_first_request_with_data_proves_access_for_the_run(dep: Deployment) -> None:
    """Without the preflight, the first answered request records the proof; a stock-only run checks first."""
    first = run_job(dep, without_preflight=True)
    assert first.success, first.failures
    assert [r.lines for r in dep.simulator.state.requests if r.test_mode] == []  # comptes sent data first
    assert [run_id for _, run_id in access_rows(dep)] == [first.run_id]
    add_movements(dep, 201)
    stock_only, sent = requests_during(dep, without_preflight=True)
    assert stock_only.success, stock_only.failures
    # Nothing proved access in this run before the stock request: one check, then the movement.
    assert [(r.endpoint, r.lines, r.test_mode) for r in sent] == [("comptes", 0, True), ("documents_stock", 1, False)]
    assert stock_only.metadata["gestimum/documents_stock"]["access_checks"] == 1
    assert [run_id for _, run_id in access_rows(dep)] == [stock_only.run_id]
    # And a run with no movement to send makes no check at all.
    _, sent = requests_during(dep, without_preflight=True)
    assert sent == []


def test_an_interval_of_zero_checks_at_every_run(dep: Deployment) -> None:
    dep.api["access_check_interval_seconds"] = 0
    assert run_job(dep).success
    for _ in range(2):
        run, sent = requests_during(dep)
        assert run.success, run.failures
        assert [(r.endpoint, r.lines, r.test_mode) for r in sent] == [("comptes", 0, True)]
        assert run.metadata["sync/preflight"]["gestimum_requests"] == 1
    # A negative interval is a setting to fix, reported with the others.
    dep.api["access_check_interval_seconds"] = -1
    run, sent = requests_during(dep)
    assert list(run.failures) == ["sync__preflight"] and sent == []
    assert "GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS must not be negative" in run.failure("sync/preflight")


def test_the_interval_is_read_from_the_environment() -> None:
    assert Settings().access_check_interval_seconds == 86400
    settings = Settings.from_env({"GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS": "0"})
    assert settings.access_check_interval_seconds == 0
    assert build_resources(settings)["gestimum"].access_check_interval_seconds == 0
    with pytest.raises(ValueError, match="GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS must be an integer"):
        Settings.from_env({"GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS": "1d"})
