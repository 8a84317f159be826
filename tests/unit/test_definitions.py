"""The code location loads, and its assets, checks and schedule are what the README says."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from gestimum_pipeline.definitions import defs
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings


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
    checks: dict[str, set[str]] = {}
    for check_key in graph.asset_check_keys:
        checks.setdefault(check_key.asset_key.to_user_string(), set()).add(check_key.name)
    sink_checks = {
        "statistics_consistent",
        "no_rejected_lines",
        "no_rows_waiting_too_long",
        "crm_rows_in_state_store",
        "no_crm_row_deleted_after_import",
    }
    for endpoint in ("comptes", "clients", "contacts", "references_clients_articles"):
        assert checks[f"gestimum/{endpoint}"] == sink_checks
    assert checks["gestimum/documents_stock"] == sink_checks | {
        "no_delivery_unknown",
        "no_movement_changed_after_sending",
    }
    for relation in ("customers", "contacts", "stock_movements", "customer_item_references"):
        assert checks[f"crm/{relation}"] == {"source_contract"}
    blocking = {k.name for k, spec in _check_specs().items() if spec.blocking}
    assert blocking == {"statistics_consistent", "source_contract"}


def _check_specs() -> dict[dg.AssetCheckKey, dg.AssetCheckSpec]:
    return {spec.key: spec for a in defs.assets or () if isinstance(a, dg.AssetsDefinition) for spec in a.check_specs}


def test_freshness_and_waiting_age_follow_the_configured_lag() -> None:
    configured = build_definitions(
        Settings.from_env({"GESTIMUM_MAX_LAG_MINUTES": "45", "GESTIMUM_MAX_WAITING_MINUTES": "90"})
    )
    p = configured.resolve_asset_graph().get(dg.AssetKey(["gestimum", "clients"])).freshness_policy
    c = {k.name: d.get_spec_for_check_key(k) for d in configured.asset_checks or () for k in d.check_keys}
    assert type(p).__name__ == "TimeWindowFreshnessPolicy"
    assert p.fail_window.to_timedelta().total_seconds() == 2700.0
    assert p.warn_window.to_timedelta().total_seconds() == 1800.0
    assert "90 minutes" in (c["no_rows_waiting_too_long"].description or "")
    with pytest.raises(ValueError, match="GESTIMUM_MAX_LAG_MINUTES must be a positive number of minutes"):
        Settings.from_env({"GESTIMUM_MAX_LAG_MINUTES": "0"})


def test_the_stock_503_policy_is_a_setting_that_reaches_the_gestimum_resource() -> None:
    """Issue 18, low: GESTIMUM_STOCK_RETRY_ON_503 (default true, today's policy)."""
    from gestimum_pipeline.defs.resources import build_resources

    assert Settings.from_env({}).stock_retry_on_503 is True
    assert build_resources(Settings.from_env({}))["gestimum"].stock_retry_on_503 is True
    off = Settings.from_env({"GESTIMUM_STOCK_RETRY_ON_503": "false"})
    assert build_resources(off)["gestimum"].stock_retry_on_503 is False
    with pytest.raises(ValueError, match="GESTIMUM_STOCK_RETRY_ON_503 must be true or false"):
        Settings.from_env({"GESTIMUM_STOCK_RETRY_ON_503": "maybe"})


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
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        ) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-03-28", "2026-03-29"]
    assert len({r.run_key for r in requests}) == 2


def _synced(instance: dg.DagsterInstance, days: dict[str, str]) -> None:
    for endpoint, day in days.items():
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["gestimum", endpoint], partition=day))


SINKS = ("comptes", "clients", "contacts", "documents_stock", "references_clients_articles")


def test_after_an_outage_the_schedule_covers_every_day_since_the_last_success() -> None:
    """Issue 12, finding 4: synced up to Friday the 27th, down until Monday the 30th: one run from
    Thursday (the day before the oldest sink's last synced day) to Monday, Saturday included."""
    schedule = defs.resolve_schedule_def("gestimum_sync_schedule")
    when = datetime(2026, 3, 30, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    with dg.instance_for_test() as instance:
        _synced(instance, {e: "2026-03-26" for e in SINKS})
        _synced(instance, {e: "2026-03-27" for e in SINKS if e != "clients"})
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        ) as context:
            requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    assert requests[0].tags["dagster/asset_partition_range_start"] == "2026-03-25"
    assert requests[0].tags["dagster/asset_partition_range_end"] == "2026-03-30"


def test_catch_up_starts_from_the_first_day_not_synced_whatever_was_synced_later() -> None:
    """Issue 18, point 3: days missed in an outage (the 21st to the 25th) stay missed after later
    days were synced (by hand, or a dry run): the run starts the day before the last day of the
    unbroken run (the 20th), as it would have on the 21st."""
    schedule = defs.resolve_schedule_def("gestimum_sync_schedule")
    when = datetime(2026, 3, 30, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    with dg.instance_for_test() as instance:
        _synced(instance, {e: "2026-03-27" for e in SINKS} | {"clients": "2026-03-26"})
        _synced(instance, {e: "2026-03-20" for e in SINKS})  # then nothing until the 26th
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        ) as context:
            requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    assert requests[0].tags["dagster/asset_partition_range_start"] == "2026-03-19"
    assert requests[0].tags["dagster/asset_partition_range_end"] == "2026-03-30"


def test_change_sensor_is_off_by_default_and_turned_on_by_the_environment() -> None:
    sensor = defs.resolve_sensor_def("gestimum_change_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 30 and sensor.job_name == "gestimum_sync"
    on = build_definitions(
        Settings.from_env({"GESTIMUM_CHANGE_SENSOR": "true", "GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS": "10"})
    )
    dg.Definitions.validate_loadable(on)
    sensor = on.resolve_sensor_def("gestimum_change_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 10
    with pytest.raises(ValueError, match="GESTIMUM_CHANGE_SENSOR must be true or false"):
        Settings.from_env({"GESTIMUM_CHANGE_SENSOR": "maybe"})
    with pytest.raises(ValueError, match="GESTIMUM_CHANGE_SENSOR_INTERVAL_SECONDS must be at least 1"):
        build_definitions(Settings(change_sensor_interval_seconds=0))


def test_the_sync_job_runs_in_process_unless_the_deployment_says_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    job = build_definitions(Settings()).resolve_job_def("gestimum_sync")
    assert job.executor_def is dg.in_process_executor

    env = {"GESTIMUM_EXECUTOR": "celery", "GESTIMUM_CELERY_BROKER_URL": "pyamqp://u:s3cret@mq:5672//"}
    settings = Settings.from_env({**env, "GESTIMUM_CELERY_QUEUE": "acme"})
    celery_job = build_definitions(settings).resolve_job_def("gestimum_sync")
    assert celery_job.executor_def.name == "celery"
    # The broker URL (it may carry a password) is read from the environment when a run starts,
    # never written in the definitions: without the variable, the executor's config does not resolve.
    schema = celery_job.executor_def.config_schema
    monkeypatch.delenv("GESTIMUM_CELERY_BROKER_URL", raising=False)
    assert not schema.resolve_config({}).success
    monkeypatch.setenv("GESTIMUM_CELERY_BROKER_URL", env["GESTIMUM_CELERY_BROKER_URL"])
    resolved = schema.resolve_config({})
    assert resolved.success, resolved.errors
    assert Settings.from_env(env).celery_queue == "dagster"  # what a worker listens on without -Q


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GESTIMUM_EXECUTOR": "multiprocess"}, "GESTIMUM_EXECUTOR must be one of in_process, celery"),
        ({"GESTIMUM_EXECUTOR": "celery"}, "needs GESTIMUM_CELERY_BROKER_URL"),
    ],
)
def test_a_bad_executor_setting_names_the_variable(env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.from_env(env)
