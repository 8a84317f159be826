"""The peer: the same sync written the way a user of dlt would write it.

dlt's `sql_database` source (`sql_table`, pyarrow backend, an incremental window on the
change column, the same ORDER BY for stock movements) extracts the CRM tables; a custom
`@dlt.destination` receives them as Arrow record batches of `max_lines` rows, builds
the same lines with the same Mapper and posts them with the same client, cut by the same
line/byte limits and never mixing stock document headers. dlt keeps its own
bookkeeping (extract/normalize/load packages on disk, its load state); it has no
per-row sync state. Each endpoint is one resource: customers are read twice (as Comptes
and as Clients), as the pipeline does.
"""

from __future__ import annotations

import tempfile
from itertools import groupby
from typing import Any

import dlt
from dlt.common.schema.typing import TTableSchema
from dlt.sources.sql_database import sql_table

from bench.common import ENDPOINT_ORDER, Setup, Timer, emit
from gestimum_pipeline.crm import contract
from gestimum_pipeline.db import normalize_url
from gestimum_pipeline.gestimum.batching import batched
from gestimum_pipeline.gestimum.catalog import endpoint as catalog_endpoint
from gestimum_pipeline.gestimum.envelope import LineFormat, body_overhead
from gestimum_pipeline.sync.endpoints import ENDPOINTS


def run(setup: Setup) -> dict[str, Any]:
    start, end = setup.window()
    encoder = LineFormat().encoder()
    client = setup.client()
    mappers = {name: ENDPOINTS.get(name).make_mapper(encoder) for name in ENDPOINT_ORDER}
    counts: dict[str, dict[str, int]] = {name: {"rows": 0, "lines_sent": 0, "requests": 0} for name in ENDPOINT_ORDER}

    @dlt.destination(
        batch_size=setup.max_lines,
        loader_file_format="parquet",
        name="gestimum",
        max_parallel_load_jobs=1,
        loader_parallelism_strategy="sequential",
    )
    def gestimum(items: Any, table: TTableSchema) -> None:
        name = table["name"]
        endpoint = catalog_endpoint(name)
        mapper = mappers[name]
        rel = contract.relation(ENDPOINTS.get(name).relation)
        columns = [items.column(c).to_pylist() for c in rel.columns]
        mapped = [mapper.map(row) for row in zip(*columns, strict=True)]
        counts[name]["rows"] += len(mapped)
        overhead = body_overhead(endpoint, client.company, fmt=client.fmt)  # as send_endpoint sizes requests
        for _, group in groupby((m for m in mapped if not m.rejected), key=lambda m: m.group_key):
            for batch in batched(
                group, line_of=lambda m: m.line, max_lines=setup.max_lines, max_bytes=setup.max_bytes, overhead=overhead
            ):
                result = client.import_lines(endpoint, [m.line for m in batch])
                assert result.imported + result.rejected == len(batch)
                counts[name]["lines_sent"] += len(batch)
                counts[name]["requests"] += 1

    def order_stock(query: Any, table: Any) -> Any:
        order_by = ENDPOINTS.get("documents_stock").order_by or ()
        return query.order_by(None).order_by(*(table.c[c] for c in order_by))

    resources = []
    for name in ENDPOINT_ORDER:
        rel = contract.relation(ENDPOINTS.get(name).relation)
        resources.append(
            sql_table(
                credentials=normalize_url(setup.crm_url),  # names psycopg2 (SQLAlchemy 2.1 defaults to psycopg 3)
                schema="crm",
                table=rel.name,
                backend="pyarrow",
                chunk_size=50_000,
                reflection_level="full",
                incremental=dlt.sources.incremental(
                    rel.change_column,
                    initial_value=start,
                    end_value=end,
                    row_order=None if rel.name == "stock_movements" else "asc",
                ),
                query_adapter_callback=order_stock if rel.name == "stock_movements" else None,
            ).with_name(name)
        )
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench-dlt-") as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="gestimum_bench", destination=gestimum, dataset_name="crm", pipelines_dir=pipelines_dir
        )
        pipeline.run(resources)
    wall = timer.seconds()
    client.close()
    return {"wall_seconds": wall, "endpoints": counts}


def main(setup: Setup) -> None:
    emit(run(setup))
