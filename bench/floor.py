"""The floor: the least work that produces the same requests, with no state store.

For each endpoint: `COPY (SELECT ... window ... ORDER BY ...) TO STDOUT` streams the
rows as text, each row is split into its values and built into its line by the same
Mapper the pipeline uses (same lines, same validation), lines are cut into requests by
the same `batched` limits (stock movements by document header too) and posted with
the same GestimumClient. Nothing is recorded anywhere: this is what the pipeline costs
without its guarantees. Memory is bounded: one request's lines at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from itertools import groupby
from typing import Any

from psycopg2 import sql

from bench.common import ENDPOINT_ORDER, Setup, Timer, emit
from gestimum_pipeline.crm import contract
from gestimum_pipeline.db import connect
from gestimum_pipeline.gestimum.batching import batched, line_cost, minimum_requests
from gestimum_pipeline.gestimum.catalog import endpoint as catalog_endpoint
from gestimum_pipeline.gestimum.envelope import LineFormat, body_overhead
from gestimum_pipeline.sync.endpoints import ENDPOINTS
from gestimum_pipeline.sync.mapping import MappedRow, Mapper

_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "b": "\b", "f": "\f", "v": "\v"}
_COPY_CHUNK = 5000


def _value(text: str) -> str | None:
    if text == "\\N":
        return None
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(_UNESCAPE.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def copy_rows(
    crm_url: str, relation: str, start: Any, end: Any, order_by: tuple[str, ...] | None = None
) -> Iterator[tuple[str | None, ...]]:
    """Rows of the window through COPY TO STDOUT, parsed from text, streamed by a reader thread."""
    rel = contract.relation(relation)
    order = order_by or rel.key_columns
    order = tuple(order) + tuple(c for c in rel.key_columns if c not in order)
    chunks: queue.Queue[list[bytes] | BaseException | None] = queue.Queue(maxsize=8)

    class Sink:
        def __init__(self) -> None:
            self.buf: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.buf.append(data)
            if len(self.buf) >= _COPY_CHUNK:
                chunks.put(self.buf)
                self.buf = []

    def read() -> None:
        conn = connect(crm_url)
        try:
            with conn.cursor() as cur:
                query = sql.SQL(
                    "COPY (SELECT {cols} FROM {schema}.{table} WHERE {change} >= {start} AND {change} < {end}"
                    " ORDER BY {order}) TO STDOUT"
                ).format(
                    cols=sql.SQL(", ").join(sql.Identifier(c) for c in rel.columns),
                    schema=sql.Identifier("crm"),
                    table=sql.Identifier(rel.name),
                    change=sql.Identifier(rel.change_column),
                    start=sql.Literal(start),
                    end=sql.Literal(end),
                    order=sql.SQL(", ").join(sql.Identifier(c) for c in order),
                )
                sink = Sink()
                cur.copy_expert(query, sink)
                if sink.buf:
                    chunks.put(sink.buf)
            chunks.put(None)
        except BaseException as exc:  # handed to the consumer
            chunks.put(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    while (chunk := chunks.get()) is not None:
        if isinstance(chunk, BaseException):
            raise chunk
        for raw in chunk:
            yield tuple(_value(v) for v in raw.decode("utf-8").rstrip("\n").split("\t"))
    thread.join()


def _mapped(rows: Iterator[tuple[str | None, ...]], mapper: Mapper, counter: list[int]) -> Iterator[MappedRow]:
    for row in rows:
        counter[0] += 1
        m = mapper.map(row)
        if not m.rejected:
            yield m


def run(setup: Setup) -> dict[str, Any]:
    start, end = setup.window()
    encoder = LineFormat().encoder()
    figures: dict[str, Any] = {"endpoints": {}}
    total = Timer()
    with setup.client() as client:
        for name in ENDPOINT_ORDER:
            endpoint = catalog_endpoint(name)
            spec = ENDPOINTS.get(name)
            mapper = spec.make_mapper(encoder)
            overhead = body_overhead(endpoint, client.company, fmt=client.fmt)  # as send_endpoint sizes requests
            timer = Timer()
            rows = lines = requests = 0
            group_sizes: dict[str, list[int]] = {}  # group -> [lines, bytes], for the minimum

            counter = [0]
            rows_in = copy_rows(setup.crm_url, spec.relation, start, end, spec.order_by)
            for group, items in groupby(_mapped(rows_in, mapper, counter), key=lambda m: m.group_key):
                size = group_sizes.setdefault(group, [0, 0])
                for batch in batched(
                    items,
                    line_of=lambda m: m.line,
                    max_lines=setup.max_lines,
                    max_bytes=setup.max_bytes,
                    overhead=overhead,
                ):
                    batch_lines = [m.line for m in batch]
                    result = client.import_lines(endpoint, batch_lines)
                    assert result.imported + result.rejected == len(batch_lines)
                    requests += 1
                    lines += len(batch_lines)
                    size[0] += len(batch_lines)
                    size[1] += sum(line_cost(line) for line in batch_lines)
            rows = counter[0]
            minimum = sum(
                minimum_requests(n, b, setup.max_lines, setup.max_bytes, overhead=overhead)
                for n, b in group_sizes.values()
            )
            figures["endpoints"][name] = {
                "rows": rows,
                "lines_sent": lines,
                "requests": requests,
                "minimum_requests": minimum,
                "seconds": timer.seconds(),
            }
    figures["wall_seconds"] = total.seconds()
    return figures


def main(setup: Setup) -> None:
    emit(run(setup))
