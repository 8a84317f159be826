"""A range run records each day's own figures (issue 24 item 1, issue 20 item 3): per day of each
row's change time, on that day's materialization; the run's totals once, on its last day."""

from __future__ import annotations

from collections import Counter
from typing import Any

import dagster as dg
import pytest
from sync_harness import HARNESS_SETTINGS, insert_contacts, insert_customers, query_rows, run_sync

from gestimum_pipeline.simulator.server import GestimumSimulator

pytestmark = pytest.mark.slow
DAYS = ["2026-03-10", "2026-03-11", "2026-03-12"]


def _by_partition(run: Any, key: str) -> dict[str, dict[str, Any]]:
    """Each partition's materialization metadata of `key` in this run (one event per partition)."""
    out: dict[str, dict[str, Any]] = {}
    for event in run.result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key.to_user_string() == key:
            assert mat.partition not in out, f"{key} {mat.partition} materialized twice"
            out[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _crm_per_day(crm_url: str, relation: str) -> Counter[str]:
    rows = query_rows(
        crm_url,
        f"SELECT to_char(updated_at AT TIME ZONE '{HARNESS_SETTINGS.timezone}', 'YYYY-MM-DD'), count(*) "
        f"FROM crm.{relation} GROUP BY 1",
    )
    return Counter({day: n for day, n in rows})


def test_a_three_day_range_records_each_days_own_figures(crm_url: str, simulator: GestimumSimulator) -> None:
    # 3, 1 and 2 customers; 23:30 in Paris is the 10th there but the 10th's 22:30 in UTC: its day
    # is the partitions' (Europe/Paris), and 00:30 on the 12th is the 11th's 23:30 in UTC.
    insert_customers(
        crm_url,
        [
            ("A1", "Arnaud", None, None, None, None, None, None, "2026-03-10 09:00+01"),
            ("A2", "Aubert", None, None, None, None, None, None, "2026-03-10 12:00+01"),
            ("A3", "Auger", None, None, None, None, None, None, "2026-03-10 23:30+01"),
            ("B1", "Bernard", None, None, None, None, None, None, "2026-03-11 10:00+01"),
            ("C1", "Caron", None, None, None, None, None, None, "2026-03-12 00:30+01"),
            ("C2", "Colin", None, None, None, None, None, None, "2026-03-12 15:00+01"),
        ],
    )
    # Two contacts on the 10th, one on the 12th whose customer Gestimum does not have: rejected there.
    insert_contacts(
        crm_url,
        [
            ("K1", "A1", "Arnaud", "Anne", None, None, "2026-03-10 10:00+01"),
            ("K2", "A2", "Aubert", "Paul", None, None, "2026-03-10 11:00+01"),
            ("K3", "ZZ9", "Nobody", "Jean", None, None, "2026-03-12 16:00+01"),
        ],
    )
    with dg.instance_for_test() as instance:
        run = run_sync(crm_url, simulator.url, partition_range=(DAYS[0], DAYS[-1]), instance=instance)
        assert run.success, run.failures

        customers = _crm_per_day(crm_url, "customers")
        contacts = _crm_per_day(crm_url, "contacts")
        assert [customers[d] for d in DAYS] == [3, 1, 2]

        source = _by_partition(run, "crm/customers")
        assert sorted(source) == DAYS
        assert [source[d]["crm_rows"] for d in DAYS] == [customers[d] for d in DAYS]
        assert [source[d]["dagster/partition_row_count"] for d in DAYS] == [customers[d] for d in DAYS]
        assert [source[d]["dagster/row_count"] for d in DAYS] == [customers[d] for d in DAYS]
        # The run's totals once, on its last day; never copied to the others.
        assert source[DAYS[-1]]["run_crm_rows"] == sum(customers.values())
        assert source[DAYS[-1]]["run_partitions"] == f"{DAYS[0]}...{DAYS[-1]}"
        assert all("run_crm_rows" not in source[d] and "window_start" not in source[d] for d in DAYS[:-1])

        transform = _by_partition(run, "transform/clients")
        assert [transform[d]["rows_read"] for d in DAYS] == [customers[d] for d in DAYS]
        assert [transform[d]["lines_staged"] for d in DAYS] == [customers[d] for d in DAYS]
        assert [transform[d]["dagster/partition_row_count"] for d in DAYS] == [customers[d] for d in DAYS]
        last = transform[DAYS[-1]]
        for figure in ("rows_read", "lines_staged", "rejected_locally"):
            assert sum(transform[d][figure] for d in DAYS) == last[f"run_{figure}"], figure
        assert last["run_other_days"] == {}

        clients = _by_partition(run, "gestimum/clients")
        assert [clients[d]["lines_sent"] for d in DAYS] == [customers[d] for d in DAYS]
        assert [clients[d]["imported"] for d in DAYS] == [customers[d] for d in DAYS]
        assert [clients[d]["dagster/partition_row_count"] for d in DAYS] == [customers[d] for d in DAYS]
        requests = clients[DAYS[-1]]["requests"]
        assert requests >= 1 and all("requests" not in clients[d] for d in DAYS[:-1])

        sink = _by_partition(run, "gestimum/contacts")
        assert [sink[d]["lines_sent"] for d in DAYS] == [contacts[d] for d in DAYS]
        assert [sink[d]["imported"] for d in DAYS] == [2, 0, 0]
        assert [sink[d]["rejected"] for d in DAYS] == [0, 0, 1]
        assert [len(sink[d]["rejections"].records) for d in DAYS] == [0, 0, 1]
        assert sink[DAYS[2]]["rejections"].records[0].data["source_key"] == "K3"
        last = sink[DAYS[-1]]
        for figure in ("lines_sent", "imported", "rejected"):
            assert sum(sink[d][figure] for d in DAYS) == last[f"run_{figure}"], figure

        # A later run of one day records that day's figures only, beside the run's own totals.
        insert_customers(crm_url, [("B2", "Blanc", None, None, None, None, None, None, "2026-03-11 18:00+01")])
        again = run_sync(crm_url, simulator.url, partition=DAYS[1], instance=instance)
        assert again.success, again.failures
        one_day = _by_partition(again, "gestimum/clients")
        assert list(one_day) == [DAYS[1]]
        # The look-back re-reads the 10th's evening: unchanged rows are read, not sent again.
        assert one_day[DAYS[1]]["lines_sent"] == 1 and one_day[DAYS[1]]["run_lines_sent"] == 1
        assert _by_partition(again, "crm/customers")[DAYS[1]]["crm_rows"] == 2
