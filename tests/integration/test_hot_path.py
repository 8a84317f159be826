"""The hot path's fast routes give exactly what the general routes give."""

from __future__ import annotations

import random

import pytest

from gestimum_pipeline.gestimum.encoding import EncodingError, LineEncoder

ALPHABET = [
    "a",
    "Z",
    "0",
    " ",
    ";",
    '"',
    "'",
    "\t",
    "\n",
    "\r",
    "\x01",
    "\x7f",
    "é",
    "€",
    "Œ",
    "😀",
    "\xa0",
    "\x85",
    ",",
    "|",
]


def _slow(enc: LineEncoder, values: list[str | None]) -> str | Exception:
    try:
        encoded = [enc.encode_value(v, field=str(i + 1)) for i, v in enumerate(values)]
    except EncodingError as exc:
        return exc
    while encoded and encoded[-1] == "":
        encoded.pop()
    return enc.separator.join(encoded)


@pytest.mark.parametrize(
    ("separator", "qualifier", "charset"),
    [(";", '"', "cp1252"), (";", "", "cp1252"), ("|", "'", "latin-1"), ("|", '"', None), (";", '"', "utf-8")],
)
def test_encode_line_fast_path_matches_the_per_value_path(separator: str, qualifier: str, charset: str | None) -> None:
    enc = LineEncoder(separator, qualifier, charset)
    rng = random.Random(7)
    for _ in range(20_000):
        values: list[str | None] = []
        for _ in range(rng.randint(0, 5)):
            kind = rng.random()
            if kind < 0.15:
                values.append(None)
            elif kind < 0.25:
                values.append("")
            elif kind < 0.6:
                values.append("".join(rng.choice("abcXYZ 019-") for _ in range(rng.randint(1, 8))))
            else:
                values.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6))))
        expected = _slow(enc, values)
        if isinstance(expected, Exception):
            with pytest.raises(EncodingError) as info:
                enc.encode_line(values)
            assert info.value.reason == expected.reason and info.value.field == expected.field
        else:
            assert enc.encode_line(values) == expected, values


def test_trigger_kept_counts_match_the_records(database_url: str) -> None:
    """counts() sums trigger-kept deltas: it must equal a scan of the records after any change."""
    from gestimum_pipeline.gestimum.envelope import LineFormat
    from gestimum_pipeline.sync.mapping import clients_mapper
    from gestimum_pipeline.sync.state import COMPACT_DELTAS_ABOVE, Outcome, StateStore

    mapper = clients_mapper(LineFormat().encoder())

    def scanned(store: StateStore) -> dict[str, dict[str, int]]:
        with store.conn, store.conn.cursor() as cur:
            # The view derives `in_flight` for rows of an open request, as counts() does.
            cur.execute("SELECT endpoint, status, count(*) FROM gestimum_sync.record_status GROUP BY 1, 2")
            out: dict[str, dict[str, int]] = {}
            for endpoint, status, n in cur.fetchall():
                out.setdefault(endpoint, {})[status] = n
            return out

    with StateStore(database_url) as store:
        store.migrate()
        rows = [mapper.map((f"C{i}", f"Client {i}", None, None, None, None, None, None, None)) for i in range(50)]
        rows.append(mapper.map(("BAD", "x" * 200, None, None, None, None, None, None, None)))
        store.stage("clients", rows, partition="p", run_id="r")
        assert store.counts() == scanned(store) == {"clients": {"pending": 50, "rejected": 1}}
        with store.company_lock("X"):  # a fenced writer
            keys = [f"C{i}" for i in range(20)]
            store.mark_in_flight("clients", keys, request_id="q1", run_id="r")
            assert store.counts("clients") == scanned(store)
            store.record_outcomes(
                "clients", [Outcome(k, i % 5 != 0, reason=None if i % 5 else "non") for i, k in enumerate(keys)]
            )
            assert store.counts() == scanned(store)
            # Re-staging changed rows (INSERT ... ON CONFLICT DO UPDATE) and deleting some.
            changed = [
                mapper.map((f"C{i}", f"Client {i} bis", None, None, None, None, None, None, None)) for i in range(10)
            ]
            store.stage("clients", changed, partition="p", run_id="r2")
            with store.conn, store.conn.cursor() as cur:
                cur.execute("DELETE FROM gestimum_sync.records WHERE source_key IN ('C30', 'C31')")
            assert store.counts() == scanned(store)
            # Enough statements to trigger a compaction: the sums stay exact.
            for i in range(COMPACT_DELTAS_ABOVE // 2 + 10):
                key = [f"C{40 + i % 5}"]
                store.apply_action("ignore", "clients", key, actor="t", from_statuses=["pending"], to_status="ignored")
                store.apply_action("retry", "clients", key, actor="t", from_statuses=["ignored"], to_status="pending")
                store.mark_in_flight("clients", key, request_id=f"q{i}", run_id="r")
                store.settle_in_flight("clients", key, delivered=False, reason="retry")
        assert store.counts() == scanned(store)
        with store.conn, store.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM gestimum_sync.status_deltas")
            assert cur.fetchone()[0] <= COMPACT_DELTAS_ABOVE + 10


def test_master_data_outcomes_are_written_in_the_background_and_waited_for(database_url: str) -> None:
    """record_outcomes returns at once for master data; any later use of the store waits for it,
    and a failure there is raised as a state-store error naming what happened."""
    import psycopg2
    import pytest as _pytest

    from gestimum_pipeline.gestimum.envelope import LineFormat
    from gestimum_pipeline.sync.mapping import clients_mapper
    from gestimum_pipeline.sync.state import Outcome, OutcomesNotRecorded, StateStore

    mapper = clients_mapper(LineFormat().encoder())
    with StateStore(database_url) as store:
        store.migrate()
        store.stage("clients", [mapper.map((f"C{i}", "N", *[None] * 7)) for i in range(30)], partition="p", run_id="r")
        with store.company_lock("X"):
            keys = [p.source_key for p in store.iter_pending("clients")]
            store.mark_in_flight("clients", keys[:10], request_id="q1", run_id="r")
            store.record_outcomes("clients", [Outcome(k, True) for k in keys[:10]])
            store.mark_in_flight("clients", keys[10:20], request_id="q2", run_id="r")  # beside q1's outcomes
            store.record_outcomes("clients", [Outcome(k, True) for k in keys[10:20]])
        # The lock was released only once both requests' outcomes were committed.
        assert store.counts("clients") == {"clients": {"imported": 20, "pending": 10}}

        # The background write fails: a constraint added meanwhile refuses its UPDATE.
        with store.conn, store.conn.cursor() as cur:
            cur.execute(
                "ALTER TABLE gestimum_sync.records ADD CONSTRAINT no_more_imports"
                " CHECK (status <> 'imported' OR source_key IN (%s)) NOT VALID",
                (psycopg2.extensions.AsIs(",".join(f"'{k}'" for k in keys[:20])),),
            )
        with _pytest.raises(OutcomesNotRecorded, match=r"earlier clients request failed .*stay in flight"):  # noqa: SIM117
            with store.company_lock("X"):
                store.mark_in_flight("clients", keys[20:], request_id="q3", run_id="r")
                store.record_outcomes("clients", [Outcome(k, True) for k in keys[20:]])
                store.counts("clients")
        assert store.counts("clients") == {"clients": {"imported": 20, "in_flight": 10}}
