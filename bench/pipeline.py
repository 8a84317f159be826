"""The pipeline as users run it: the `gestimum_sync` Dagster job over one partition range, in one run.

`execute_in_process` runs every asset (sources, transforms, sinks) and the asset checks
in this process, exactly as `dg launch --partition-range` does with the
in-process executor. Each asset's own timing comes from its metadata; the rest of the
run's wall time is Dagster's overhead (events, storage, step orchestration).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from bench.common import ENDPOINT_ORDER, SETTINGS, Setup, Timer, emit
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.resources import CrmDatabase, GestimumApi, SyncOptions, SyncStateDatabase

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def definitions(setup: Setup) -> dg.Definitions:
    # The production graph, without the preflight (one access request, not the sync's cost).
    return build_definitions(
        SETTINGS,
        without_preflight=True,
        resources={
            "crm": CrmDatabase(url=setup.crm_url),
            "gestimum": GestimumApi(
                url=setup.sink_url,
                company_file="BENCH.Gestimum",
                user="BENCH",
                password="",
                max_lines_per_request=setup.max_lines,
                max_bytes_per_request=setup.max_bytes,
                max_retries=0,
            ),
            "sync_state": SyncStateDatabase(url=setup.crm_url),
            "sync_options": SyncOptions(),
        },
    )


def run(setup: Setup) -> dict[str, Any]:
    job = definitions(setup).resolve_job_def("gestimum_sync")
    first, last = setup.partition_range
    instance = dg.DagsterInstance.ephemeral()
    timer = Timer()
    result = job.execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
        raise_on_error=True,
    )
    wall = timer.seconds()
    metadata: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if "run_partitions" in mat.metadata:  # the run's totals, on its last partition
            metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    steps = {
        s.step_key: s.end_time - s.start_time
        for s in instance.get_run_step_stats(result.run_id)
        if s.start_time is not None and s.end_time is not None
    }
    endpoints: dict[str, Any] = {}
    asset_seconds = 0.0
    for name in ENDPOINT_ORDER:
        stage = metadata[f"transform/{name}"]
        send = metadata[f"gestimum/{name}"]
        seconds = stage["duration_seconds"] + send["duration_seconds"]
        asset_seconds += seconds
        endpoints[name] = {
            "rows": stage["run_rows_read"],
            "staged": stage["run_lines_staged"],
            "unchanged": stage["unchanged"],
            "lines_sent": send["run_lines_sent"],
            "requests": send["requests"],
            "stage_seconds": stage["duration_seconds"],
            "send_seconds": send["duration_seconds"],
            "seconds": round(seconds, 3),
        }
    step_seconds = sum(steps.values())
    return {
        "wall_seconds": wall,
        "asset_work_seconds": round(asset_seconds, 3),
        "step_seconds": round(step_seconds, 3),
        "dagster_overhead_seconds": round(wall - asset_seconds, 3),
        "steps": {k: round(v, 3) for k, v in sorted(steps.items())},
        "endpoints": endpoints,
        "success": result.success,
    }


def main(setup: Setup) -> None:
    emit(run(setup))
