"""The code location loads, and its assets, checks and schedule are what the README says."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from gestimum_pipeline.definitions import defs


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "sync/preflight",
        *(f"crm/{r}" for r in ("customers", "contacts", "stock_movements", "customer_item_references")),
        *(
            f"transform/{e}"
            for e in ("comptes", "clients", "contacts", "documents_stock", "references_clients_articles")
        ),
        *(
            f"gestimum/{e}"
            for e in ("comptes", "clients", "contacts", "documents_stock", "references_clients_articles")
        ),
    }


def test_assets_carry_groups_kinds_owners_partitions_and_policies() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name == key.path[0], key
        assert node.kinds, key
        assert node.owners == ["team:data-engineering"], key
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), key
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
    sink = graph.get(dg.AssetKey(["gestimum", "contacts"]))
    assert {k.to_user_string() for k in sink.parent_keys} == {"transform/contacts", "gestimum/clients"}
    pool = defs.resolve_assets_def(sink.key).op.pool
    assert pool and pool.startswith("gestimum_")
    assert sink.freshness_policy is not None
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"every_row_accounted_for"}


def test_partitions_include_today_in_the_configured_time_zone() -> None:
    partitions = defs.resolve_job_def("gestimum_sync").partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.timezone == "Europe/Paris"
    now = datetime(2026, 6, 15, 23, 30, tzinfo=ZoneInfo("UTC"))  # already the 16th in Paris
    assert partitions.get_partition_keys(current_time=now)[-1] == "2026-06-16"


def test_schedule_requests_yesterday_and_today() -> None:
    schedule = defs.resolve_schedule_def("gestimum_sync_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    when = datetime(2026, 3, 29, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    with dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-03-28", "2026-03-29"]
    assert len({r.run_key for r in requests}) == 2
