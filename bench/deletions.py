"""The deletions check's cost: `no_crm_row_deleted_after_import` over N imported rows, without Dagster.

    python bench/deletions.py [--rows 100000] [--database-url URL]

Creates a throwaway database holding the reference CRM (N customers and N customer item
references, a hundred of each then deleted) and a state store whose `clients` and
`references_clients_articles` records are all imported, then times the check's evaluation
(sync/health.deleted_after_import: the imported keys streamed from the store in chunks of
10 000, each chunk looked up in the CRM by primary key) and prints seconds per 100 000 rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/deletions.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

from bench.run import DEFAULT_SERVER_URL  # noqa: E402
from gestimum_pipeline.crm.ddl import create_reference_schema  # noqa: E402
from gestimum_pipeline.db import connect, create_database, drop_database  # noqa: E402
from gestimum_pipeline.sync.health import deleted_after_import  # noqa: E402
from gestimum_pipeline.sync.state import StateStore  # noqa: E402

DELETED = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=os.environ.get("GESTIMUM_BENCH_DATABASE_URL", DEFAULT_SERVER_URL))
    args = parser.parse_args(argv)
    n = args.rows
    name = f"bench_deletions_{uuid.uuid4().hex[:8]}"
    url = create_database(args.database_url, name)
    try:
        conn = connect(url)
        create_reference_schema(conn, "crm")
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO crm.customers (code, name) SELECT 'C' || lpad(i::text, 8, '0'), 'n' "
                "FROM generate_series(1, %s) i",
                (n,),
            )
            cur.execute(
                "INSERT INTO crm.customer_item_references (customer_code, item_code) "
                "SELECT 'C' || lpad(i::text, 8, '0'), 'ELS' FROM generate_series(1, %s) i",
                (n,),
            )
        with StateStore(url) as store:
            store.migrate()
            with store.conn, store.conn.cursor() as cur:
                for endpoint, key in (
                    ("clients", "'C' || lpad(i::text, 8, '0')"),
                    ("references_clients_articles", "'[\"C' || lpad(i::text, 8, '0') || '\", \"ELS\"]'"),
                ):
                    cur.execute(
                        f"INSERT INTO gestimum_sync.records (endpoint, source_key, status, content_hash, "
                        f"imported_hash, imported_at) SELECT %s, {key}, 'imported', 'h', 'h', now() "
                        "FROM generate_series(1, %s) i",
                        (endpoint, n),
                    )
                cur.execute("ANALYZE gestimum_sync.records")
            with conn, conn.cursor() as cur:
                cur.execute("DELETE FROM crm.customers WHERE code <= 'C' || lpad(%s::text, 8, '0')", (DELETED,))
                cur.execute(
                    "DELETE FROM crm.customer_item_references WHERE customer_code <= 'C' || lpad(%s::text, 8, '0')",
                    (DELETED,),
                )
                cur.execute("ANALYZE")
            print(f"{n} imported rows per endpoint, {DELETED} of them deleted in the CRM")
            for endpoint, relation in (
                ("clients", "customers"),
                ("references_clients_articles", "customer_item_references"),
            ):
                best = float("inf")
                for _ in range(3):
                    started = time.perf_counter()
                    finding = deleted_after_import(store, conn, "crm", endpoint, relation)
                    best = min(best, time.perf_counter() - started)
                assert finding.counts["deleted_after_import"] == DELETED, finding.counts
                print(
                    f"  {endpoint:<28} {best:6.3f} s (best of 3), {best * 100_000 / n:6.3f} s per 100 000 imported rows"
                )
        conn.close()
    finally:
        drop_database(args.database_url, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
