"""Issue 18, point 4: an operator's fix of a row Gestimum rejected ends in delivery.

Tried as a new user would, through public names only: the production job (`run_sync`), the
`gestimum-pipeline` command (`cli.main`), the checks' texts and the simulator's holdings and
request log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sync_harness import SyncRun, execute, insert_movements, run_sync

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.simulator.server import GestimumSimulator

TODAY = datetime.now(ZoneInfo("Europe/Paris")).date()
MOVED_DAY = (TODAY - timedelta(days=3)).isoformat()
MOVED_AT = f"{MOVED_DAY} 12:00:00+01"
# Said by the divergence check today; wrong for a movement Gestimum rejected (there is no document).
NO_DOCUMENT_TO_CORRECT = "correct the document in Gestimum"


def lines_held(simulator: GestimumSimulator) -> list[tuple[str, str, str]]:
    """(warehouse, item, quantity) of every document line Gestimum holds."""
    return [
        (line["DEP_CODE"], line["ART_CODE"], line["MVT_QTE"]) for d in simulator.state.documents for line in d.lines
    ]


def stock_rejections(simulator: GestimumSimulator) -> int:
    return sum(r.rejected for r in simulator.state.requests if r.endpoint == "documents_stock")


def check_texts(run: SyncRun) -> list[str]:
    return [str(e.description) for e in run.checks.values()]


def rejected_by_gestimum(crm_url: str, simulator: GestimumSimulator) -> None:
    """A movement to a warehouse Gestimum does not know: refused line by line."""
    insert_movements(crm_url, [(8, "in", "999", "ELS", 8, MOVED_AT), (1, "in", "001", "ELS", 1, MOVED_AT)])
    first = run_sync(crm_url, simulator.url, partition=MOVED_DAY)
    assert first.success, first.failures
    assert lines_held(simulator) == [("001", "ELS", "1")]
    assert stock_rejections(simulator) == 1
    execute(crm_url, [("UPDATE crm.stock_movements SET warehouse_code = '001' WHERE id = 8", None)])


def test_retry_re_stages_from_the_crm_row_and_the_next_run_delivers_it(
    crm_url: str, simulator: GestimumSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented path: fix the warehouse in the CRM, `retry`, and the next hourly run (another
    day) sends the corrected line, never the stale one."""
    rejected_by_gestimum(crm_url, simulator)
    code = cli(["retry", "--database-url", crm_url, "--endpoint", "documents_stock", "8", "--yes"])
    capsys.readouterr()
    assert code == 0
    hourly = run_sync(crm_url, simulator.url, partition=TODAY.isoformat())
    assert hourly.success, hourly.failures
    assert stock_rejections(simulator) == 1, "the stale line was sent again"
    assert sorted(lines_held(simulator)) == [("001", "ELS", "1"), ("001", "ELS", "8")]


def test_a_crm_fix_alone_is_delivered_by_the_next_run_covering_the_movement(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    """No operator step: Gestimum's line-by-line refusal proves the movement was not imported, so
    its corrected CRM row is sent by the next run of its day; no check calls it 'changed after
    sending' or asks to correct a document that does not exist."""
    rejected_by_gestimum(crm_url, simulator)
    rerun = run_sync(crm_url, simulator.url, partition=MOVED_DAY)
    assert rerun.success, rerun.failures
    assert not [t for t in check_texts(rerun) if NO_DOCUMENT_TO_CORRECT in t], check_texts(rerun)
    assert sorted(lines_held(simulator)) == [("001", "ELS", "1"), ("001", "ELS", "8")]
    assert stock_rejections(simulator) == 1


def test_the_rejection_check_names_a_step_that_works_and_agrees_with_the_others(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    """The two check texts of issue 18 contradicted each other: one said `retry`, the other to
    correct a (non-existent) document by hand. Followed as written, the rejection check's own
    advice (fix the CRM row; the next run covering it sends it) must deliver."""
    insert_movements(crm_url, [(8, "in", "999", "ELS", 8, MOVED_AT)])
    first = run_sync(crm_url, simulator.url, partition=MOVED_DAY)
    advice = str(first.checks["gestimum/documents_stock:no_rejected_lines"].description)
    assert "fix" in advice.lower() and "CRM" in advice
    assert NO_DOCUMENT_TO_CORRECT not in advice
    # What it says to do, as a user would: fix the CRM row, let the next run covering it act.
    execute(crm_url, [("UPDATE crm.stock_movements SET warehouse_code = '001' WHERE id = 8", None)])
    hourly = run_sync(crm_url, simulator.url, partition=TODAY.isoformat())
    texts = check_texts(hourly)
    assert not [t for t in texts if NO_DOCUMENT_TO_CORRECT in t], texts
    if not lines_held(simulator):  # the hourly run does not cover the movement's day: its next run does
        assert any(MOVED_DAY in t or "backfill" in t or "rerun" in t for t in texts), texts
        run_sync(crm_url, simulator.url, partition=MOVED_DAY)
    assert lines_held(simulator) == [("001", "ELS", "8")]
