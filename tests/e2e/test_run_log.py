"""A quieter, clearer run log (issue 24 item 6): one summary line per endpoint at the end of a
sync, no line per request, and Gestimum's words quoted and labelled beside ours."""

from __future__ import annotations

import logging

import dagster as dg
import pytest
from sync_harness import insert_contacts, insert_customers, run_sync

from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync.endpoints import ENDPOINTS

pytestmark = pytest.mark.slow
DAY = "2026-03-10"


def test_one_summary_line_per_endpoint_with_gestimums_words_labelled(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    insert_customers(
        crm_url, [(f"L{i}", f"Client {i}", None, None, None, None, None, None, f"{DAY} 09:00+01") for i in range(3)]
    )
    insert_contacts(crm_url, [("LK1", "NOPE", "Petit", None, None, None, f"{DAY} 10:00+01")])  # unknown customer
    with dg.instance_for_test() as instance:
        # Two lines a request: the clients go in two requests, which the log does not list one by one.
        run = run_sync(crm_url, simulator.url, partition=DAY, instance=instance, api_max_lines_per_request=2)
        assert run.success, run.failures
        info = [
            e.user_message
            for e in instance.all_logs(run.result.run_id)
            if e.level == logging.INFO and not e.is_dagster_event
        ]
    summaries = {name: [m for m in info if m.startswith(f"{name}: ") and " sent in " in m] for name in ENDPOINTS.names}
    assert all(len(lines) == 1 for lines in summaries.values()), summaries
    (clients,) = summaries["clients"]
    assert clients.startswith("clients: 3 lines sent in 2 requests: 3 imported, 0 rejected by Gestimum")
    (contacts,) = summaries["contacts"]
    assert contacts.startswith("contacts: 1 line sent in 1 request: 0 imported, 1 rejected by Gestimum")
    assert 'LK1: Gestimum said: "' in contacts and "NOPE" in contacts
    # No line per request or per HTTP attempt at the run log's level.
    assert not [m for m in info if " request 1: " in m or " -> HTTP " in m], info
