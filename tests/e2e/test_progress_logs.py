"""A long sync says how far it has got, in the run's log: rows read by the transforms, and
the sinks' request, lines, rate and time left."""

from __future__ import annotations

import dagster as dg
import pytest
from sync_harness import insert_customers, run_sync

from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync import progress

DAY = "2026-03-10"


def test_transforms_and_sinks_log_their_progress(
    crm_url: str, simulator: GestimumSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "DEFAULT_INTERVAL_SECONDS", 0.0)  # every chunk and request, here
    insert_customers(
        crm_url, [(f"P{i}", f"Client {i}", None, None, None, None, None, None, f"{DAY} 10:00+01") for i in range(3)]
    )
    instance = dg.DagsterInstance.ephemeral()
    run = run_sync(crm_url, simulator.url, partition=DAY, instance=instance, chunk_size=2, api_max_lines_per_request=1)
    assert run.success, run.failures
    messages = [e.user_message for e in instance.all_logs(run.result.run_id)]
    assert any(m.startswith("staging clients from customers: rows 2, ") for m in messages), messages
    assert any(m.startswith("staging clients from customers: rows 3, ") for m in messages), messages
    assert any(m.startswith("sending clients: request 1 of about 3, lines 1 of 3, ") for m in messages), messages
    assert any(m.startswith("sending clients: request 3 of about 3, lines 3 of 3, ") for m in messages), messages
