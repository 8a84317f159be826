"""One run's steps share PostgreSQL connections (db.pooling), each handed over reset."""

from __future__ import annotations

import dagster as dg
import psycopg2

from gestimum_pipeline.db import connect, pooling
from gestimum_pipeline.defs.resources import SyncStateDatabase, fixed_resource


def backend_pid(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_a_closed_connection_is_reused_with_its_session_reset(database_url: str) -> None:
    with pooling():
        first = connect(database_url, autocommit=True)
        pid = backend_pid(first)
        with first.cursor() as cur:
            cur.execute("CREATE TEMP TABLE leftover (x int)")
            cur.execute("SELECT pg_advisory_lock(4242)")
            cur.execute("SET statement_timeout = '1234ms'")
        first.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
        first.close()
        second = connect(database_url)
        assert backend_pid(second) == pid  # the same server process: no new connection
        assert second.autocommit is False
        assert second.isolation_level is None  # the server's default again
        with second.cursor() as cur:
            cur.execute("SELECT to_regclass('pg_temp.leftover'), current_setting('statement_timeout')")
            assert cur.fetchone() == (None, "0")
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,))
            assert cur.fetchone()[0] == 0
        second.close()


def test_a_connection_terminated_while_idle_is_never_handed_out(database_url: str) -> None:
    with pooling():
        conn = connect(database_url)
        pid = backend_pid(conn)
        conn.close()
        killer = psycopg2.connect(database_url)  # not from the pool: it would be the idle one
        killer.autocommit = True
        try:
            with killer.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            killer.close()
        fresh = connect(database_url)
        assert backend_pid(fresh) != pid
        fresh.close()


def test_without_pooling_close_closes(database_url: str) -> None:
    conn = connect(database_url)
    pid = backend_pid(conn)
    conn.close()
    assert conn.closed
    other = connect(database_url)
    assert backend_pid(other) != pid
    other.close()


def test_a_runs_steps_share_the_connections_of_the_deployed_state_resource(database_url: str) -> None:
    pids: list[int] = []

    @dg.asset(required_resource_keys={"sync_state"})
    def first() -> None:
        conn = connect(database_url)
        pids.append(backend_pid(conn))
        conn.close()

    @dg.asset(deps=[first], required_resource_keys={"sync_state"})
    def second() -> None:
        conn = connect(database_url)
        pids.append(backend_pid(conn))
        conn.close()

    result = dg.materialize(
        [first, second], resources={"sync_state": fixed_resource(SyncStateDatabase(url=database_url))}
    )
    assert result.success
    assert len(pids) == 2 and pids[0] == pids[1]
    # After the run the pool is off and empty: a new connection is a new server process.
    after = connect(database_url)
    assert backend_pid(after) != pids[0]
    after.close()
