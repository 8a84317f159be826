"""Issue 18, point 1: a backfill beside the hourly run must never put an old version back.

The interleaving is made real, with PostgreSQL only: a row-level-security policy on the CRM's
customers calls a gate that, in a REPEATABLE READ transaction (a transform's snapshot) whose
snapshot still sees the gate closed, waits for an advisory lock the test holds. So the
backfill's first transform takes its snapshot (the old name) and waits; meanwhile the
customer is renamed and the hourly run stages and sends the new name; then the backfill goes
on with its old snapshot. Everything else is public: the production job run in process, and
the simulator's holdings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from reliability import Deployment, Run, deployment, execute, run_job
from sync_harness import query_rows

from gestimum_pipeline.db import connect

TODAY = datetime.now(ZoneInfo("Europe/Paris")).date()
BACKFILL = ((TODAY - timedelta(days=40)).isoformat(), (TODAY - timedelta(days=10)).isoformat())
RENAMED_DAY = (TODAY - timedelta(days=20)).isoformat()
GATE_LOCK = 18001

GATE = f"""
CREATE TABLE crm.gate (closed boolean NOT NULL);
INSERT INTO crm.gate VALUES (true);
CREATE FUNCTION crm.gate_passed() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- Only a snapshot that still sees the gate closed waits (a transform started before the rename).
    IF current_setting('transaction_isolation') = 'repeatable read' AND (SELECT closed FROM crm.gate) THEN
        PERFORM pg_advisory_xact_lock_shared({GATE_LOCK});
    END IF;
    RETURN true;
END $$;
ALTER TABLE crm.customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.customers FORCE ROW LEVEL SECURITY;
CREATE POLICY gate ON crm.customers USING (crm.gate_passed());
"""


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        yield d


def names_held(dep: Deployment) -> set[str]:
    """Every value Gestimum holds for customer C1, in its account and its customer record."""
    sim = dep.simulator.state
    records = [r for r in sim.accounts.values() if "C1" in r.values()] + [sim.customers.get("C1") or {}]
    return {v for r in records for v in r.values()}


def test_a_backfill_beside_the_hourly_run_never_puts_an_old_name_back(dep: Deployment) -> None:
    execute(
        dep.crm_url,
        [
            (
                "INSERT INTO crm.customers (code, name, updated_at) VALUES ('C1', 'Old name', %s)",
                (f"{RENAMED_DAY} 12:00:00+01",),
            ),
            (GATE, None),
        ],
    )
    holder = connect(dep.crm_url, autocommit=True)
    backfill: list[Run] = []
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        thread = threading.Thread(target=lambda: backfill.append(run_job(dep, partition_range=BACKFILL)))
        thread.start()
        deadline = time.monotonic() + 60
        while not query_rows(
            dep.crm_url,
            "SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE d.datname = current_database()"
            f" AND l.locktype = 'advisory' AND l.objid = {GATE_LOCK} AND NOT l.granted",
        ):
            assert time.monotonic() < deadline and thread.is_alive(), "the backfill never reached the customers"
            time.sleep(0.05)
        # The backfill's transform holds its snapshot (Old name). The customer is renamed now.
        execute(
            dep.crm_url,
            [
                ("UPDATE crm.customers SET name = 'New name', updated_at = now() WHERE code = 'C1'", None),
                ("UPDATE crm.gate SET closed = false", None),
            ],
        )
        hourly = run_job(dep, partition=TODAY.isoformat())
        assert hourly.success, hourly.failures
        assert "New name" in names_held(dep)
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
        holder.close()
    thread.join(120)
    assert backfill and backfill[0].success, backfill and backfill[0].failures
    later = run_job(dep, partition=TODAY.isoformat())  # the next hourly run
    assert later.success, later.failures
    held = names_held(dep)
    assert "Old name" not in held and "New name" in held, held
