"""Metadata in Dagster's own keys and types, read back through the instance, and the steps'
retry policies (sources and transforms after transient errors; never a sink)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dagster as dg
import pytest
from sync_harness import insert_contacts, insert_customers, run_sync

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync.mapping import MAPPING_VERSION

pytestmark = pytest.mark.slow
DAY = "2026-03-10"


def _latest(instance: dg.DagsterInstance, *path: str) -> dict[str, dg.MetadataValue]:
    event = instance.get_latest_materialization_event(dg.AssetKey(list(path)))
    assert event is not None and event.asset_materialization is not None, path
    return dict(event.asset_materialization.metadata)


def test_counts_schemas_lineage_times_and_tags_read_back_through_the_instance(
    crm_url: str, simulator: GestimumSimulator
) -> None:
    insert_customers(
        crm_url,
        [
            ("M1", "Meunier", "1 rue Haute", None, "75001", "Paris", None, None, "2026-03-10 09:00+01"),
            ("M2", "Martin", None, None, None, None, None, None, "2026-03-10 10:00+01"),
        ],
    )
    insert_contacts(crm_url, [("K1", "M1", "Meunier", "Anne", None, None, "2026-03-10 09:30+01")])
    with dg.instance_for_test() as instance:
        run = run_sync(crm_url, simulator.url, partition=DAY, instance=instance)
        assert run.success, run.failures

        source = _latest(instance, "crm", "customers")
        assert isinstance(source["dagster/row_count"], dg.IntMetadataValue)
        assert source["dagster/row_count"].value == 2
        assert source["dagster/partition_row_count"].value == 2
        for key in ("window_start", "window_end", "last_change"):
            assert isinstance(source[key], dg.TimestampMetadataValue), key
        assert datetime.fromtimestamp(source["last_change"].value).year == 2026
        assert source["dagster/table_name"] == dg.MetadataValue.text("crm.customers")

        transform = _latest(instance, "transform", "clients")
        assert transform["dagster/row_count"] == dg.MetadataValue.int(2)

        sink = _latest(instance, "gestimum", "contacts")
        assert sink["dagster/row_count"] == dg.MetadataValue.int(1)
        lineage = sink["dagster/column_lineage"]
        assert isinstance(lineage, dg.TableColumnLineageMetadataValue)
        deps = lineage.value.deps_by_column
        assert {(d.asset_key, d.column_name) for d in deps["CCT_NOM"]} == {
            (dg.AssetKey(["crm", "contacts"]), "last_name"),
            (dg.AssetKey(["crm", "contacts"]), "first_name"),
        }
        assert "CPT_TYPE" not in _latest(instance, "gestimum", "comptes")["dagster/column_lineage"].value.deps_by_column

        runs = instance.get_runs()
        assert runs and runs[0].tags["gestimum/trigger"] == "manual"
        assert runs[0].tags["gestimum/company_file"] == "default"  # Settings() names no company file

    # Definition metadata: column schemas, code versions, asset tags.
    defs = build_definitions(Settings(company_file="SOCIETE.Gestimum"))
    graph = defs.resolve_asset_graph()
    source_def = graph.get(dg.AssetKey(["crm", "customers"]))
    columns = source_def.metadata["dagster/column_schema"].columns
    assert [c.name for c in columns][:2] == ["code", "name"] and columns[-1].type == "timestamptz"
    assert source_def.metadata["dagster/table_name"] == "crm.customers"
    other_schema = build_definitions(Settings(crm_schema="sales")).resolve_asset_graph()
    for relation in ("customers", "contacts", "stock_movements", "customer_item_references"):
        assert other_schema.get(dg.AssetKey(["crm", relation])).metadata["dagster/table_name"] == f"sales.{relation}"
    sink_def = graph.get(dg.AssetKey(["gestimum", "clients"]))
    assert [c.name for c in sink_def.metadata["dagster/column_schema"].columns][:3] == [
        "PCF_CODE",
        "CPT_NUMERO",
        "PCF_RS",
    ]
    assert sink_def.code_version == str(MAPPING_VERSION)
    assert graph.get(dg.AssetKey(["transform", "clients"])).code_version == str(MAPPING_VERSION)
    assert sink_def.tags["gestimum/endpoint"] == "clients"
    assert sink_def.tags["gestimum/company_file"] == "SOCIETE.Gestimum"
    job = defs.resolve_job_def("gestimum_sync")
    assert job.tags["gestimum/company_file"] == "SOCIETE.Gestimum"


def test_retry_policies_cover_sources_and_transforms_never_sinks() -> None:
    defs = build_definitions(Settings())
    for asset in defs.assets or []:
        assert isinstance(asset, dg.AssetsDefinition)
        key = asset.key.path
        policy = asset.op.retry_policy
        if key[0] in ("crm", "transform"):
            assert policy is not None and policy.max_retries == 2 and policy.backoff == dg.Backoff.EXPONENTIAL, key
        else:
            assert policy is None, key
    assert all(a.op.retry_policy is None for a in build_definitions(Settings(step_retries=0)).assets or [])


def test_a_transient_source_failure_is_retried_and_a_sink_failure_is_not(
    crm_url: str, simulator: GestimumSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRM drops the first connection of the source; the step is re-executed and the run
    succeeds. A sink that fails is not re-executed: one attempt, the run fails."""
    import gestimum_pipeline.defs.resources as resources_module
    from gestimum_pipeline.db import DatabaseUnavailable

    insert_customers(crm_url, [("T1", "Transitoire", None, None, None, None, None, None, "2026-03-10 09:00+01")])
    real_connect = resources_module.CrmDatabase.connect
    calls = {"n": 0}

    def flaky(self: resources_module.CrmDatabase) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise DatabaseUnavailable("CRM_DATABASE_URL", crm_url, "connection reset (test)")
        return real_connect(self)

    monkeypatch.setattr(resources_module.CrmDatabase, "connect", flaky)
    monkeypatch.setattr(Settings, "step_retry_delay_seconds", 0.01)
    run = run_sync(crm_url, simulator.url, partition=DAY)
    assert run.success, run.failures
    retries = [e for e in run.result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1
    assert simulator.state.customers["T1"]["PCF_RS"] == "Transitoire"

    # Gestimum unreachable: the sinks fail, and none is re-executed.
    insert_customers(crm_url, [("T2", "Injoignable", None, None, None, None, None, None, "2026-03-10 11:00+01")])
    failed = run_sync(crm_url, "http://127.0.0.1:9/", partition=DAY)
    assert not failed.success
    sink_steps = {e.step_key for e in failed.result.all_events if e.is_step_failure}
    assert any(key and key.startswith("gestimum__") for key in sink_steps), sink_steps
    assert not [e for e in failed.result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
