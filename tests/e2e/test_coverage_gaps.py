"""Issue 18, points 2 and 3: the coverage check sees versions and gaps, not only keys.

Through public names only: the production job run in process (`run_sync`), its asset checks,
the schedule evaluated on a real instance, and the simulator's holdings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from sync_harness import HARNESS_SETTINGS, SyncRun, execute, insert_customers, insert_movements, run_sync

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.simulator.server import GestimumSimulator

PARIS = ZoneInfo("Europe/Paris")
TODAY = datetime.now(PARIS).date()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


def noon(day_key: str) -> str:
    return f"{day_key} 12:00:00+01"


def customer(code: str, name: str, when: str) -> tuple[object, ...]:
    return (code, name, None, None, None, None, None, None, when)


def check(run: SyncRun, asset: str, name: str) -> tuple[bool, str]:
    evaluation = run.checks[f"{asset}:{name}"]
    return evaluation.passed, str(evaluation.description)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def test_an_edit_committed_into_a_synced_window_afterwards_fails_the_coverage_check(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    """Point 2 (master data): a row edited with a change time inside a window already synced (a
    long transaction, a clock behind) keeps its key in the store, but not its content."""
    synced_day = day(-3)
    insert_customers(crm_url, [customer("C1", "Old name", noon(synced_day))])
    assert run_sync(crm_url, simulator.url, partition=synced_day).success
    execute(crm_url, [("UPDATE crm.customers SET name = 'New name' WHERE code = 'C1'", None)])
    hourly = run_sync(crm_url, simulator.url, partition=day(0))
    assert hourly.success, hourly.failures
    passed, summary = check(hourly, "gestimum/clients", "crm_rows_in_state_store")
    assert not passed, summary
    assert "C1" in summary


def test_a_stock_edit_after_its_window_left_the_schedule_is_reported_and_stays_reported(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    """Point 2 (stock): `moved_at` never moves, so no later run reads the movement again; the
    check must see the new quantity by content, and keep reporting it (recording the window's
    new signature must not erase the evidence)."""
    moved_day = day(-3)
    insert_movements(crm_url, [(1, "in", "001", "ELS", 5, noon(moved_day))])
    assert run_sync(crm_url, simulator.url, partition=moved_day).success
    assert [line["MVT_QTE"] for d in simulator.state.documents for line in d.lines] == ["5"]
    execute(crm_url, [("UPDATE crm.stock_movements SET quantity = 7 WHERE id = 1", None)])
    for _ in range(2):  # two hourly runs: the second must still see it
        hourly = run_sync(crm_url, simulator.url, partition=day(0))
        assert hourly.success, hourly.failures
        reports = [
            check(hourly, "gestimum/documents_stock", name)
            for name in ("crm_rows_in_state_store", "no_movement_changed_after_sending")
        ]
        assert any(not passed and "1 (imported" in summary for passed, summary in reports), reports


def outage_then_a_run_by_hand(crm_url: str, simulator: GestimumSimulator, instance: dg.DagsterInstance) -> SyncRun:
    """Synced three days ago, then an outage (the day after holds a new customer, GAP); an
    operator runs today by hand before the schedule ticks."""
    synced_day, outage_day = day(-3), day(-2)
    insert_customers(
        crm_url,
        [customer("C1", "Synced", noon(synced_day)), customer("GAP", "During the outage", noon(outage_day))],
    )
    assert run_sync(crm_url, simulator.url, partition=synced_day, instance=instance).success
    by_hand = run_sync(crm_url, simulator.url, partition=day(0), instance=instance)
    assert by_hand.success, by_hand.failures
    return by_hand


def test_a_day_never_staged_is_named_by_the_coverage_check(
    crm_url: str, simulator: GestimumSimulator, instance: dg.DagsterInstance
) -> None:
    """Point 3: the check covers every day from the start date to today, not only the windows staged."""
    by_hand = outage_then_a_run_by_hand(crm_url, simulator, instance)
    passed, summary = check(by_hand, "gestimum/comptes", "crm_rows_in_state_store")
    assert not passed and "GAP" in summary, summary


def test_catch_up_starts_from_the_first_day_not_covered(
    crm_url: str, simulator: GestimumSimulator, instance: dg.DagsterInstance
) -> None:
    """Point 3: the next tick asks for the outage day (not only yesterday and today), and the
    outage day's customer reaches Gestimum."""
    outage_then_a_run_by_hand(crm_url, simulator, instance)
    defs = build_definitions(HARNESS_SETTINGS)
    schedule = defs.resolve_schedule_def("gestimum_sync_schedule")
    when = datetime.combine(TODAY, datetime.min.time(), PARIS).replace(hour=23)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    asked: set[str] = set()
    for request in requests:
        if request.partition_key:
            asked.add(request.partition_key)
        else:
            start = date.fromisoformat(request.tags["dagster/asset_partition_range_start"])
            end = date.fromisoformat(request.tags["dagster/asset_partition_range_end"])
            asked |= {(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)}
    assert day(-2) in asked, sorted(asked)
    caught_up = run_sync(crm_url, simulator.url, partition_range=(min(asked), max(asked)), instance=instance)
    assert caught_up.success, caught_up.failures
    assert simulator.state.customers["GAP"]["PCF_RS"] == "During the outage"
