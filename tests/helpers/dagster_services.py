"""Dagster's own services (webserver, daemon, `dg dev`) as processes of a test, and the
webserver's GraphQL API: shared by tests/e2e/test_production_instance.py and tests/e2e/test_ui.py.

Each service runs in its own process group, so stopping it also stops what it spawned (code
servers, run workers, step processes), and the test checks that nothing was left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from gestimum_pipeline.db import connection_parameters
from gestimum_pipeline.demo import OWN_PREFIXES

BIN = Path(sys.executable).parent  # dagster, dagster-webserver, dagster-daemon of this virtualenv
STARTUP_TIMEOUT_SECONDS = 90.0

# What the UI's "Launch backfill" sends.
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Ends a process started with start_new_session and all it spawned: code servers, run
    workers and their step processes stay in its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):  # stragglers, even once the leader is gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def live_group_members(pgid: int, wait_seconds: float = 10.0) -> list[int]:
    """Processes of group `pgid` still alive (zombies awaiting their reaper do not count)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        members = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.2)


@contextlib.contextmanager
def process_group(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `args` in a new process group, output to `log`; stops the whole group on exit and
    fails if any of its processes outlives it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(args), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_group(proc)
        left = live_group_members(proc.pid)
        assert not left, f"{args[0]} left processes behind: {left}"


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    noise = ("Warning: ", "return fn(")  # Dagster's beta warnings, repeated by every process
    kept = [line for line in path.read_text(errors="replace").splitlines() if not any(n in line for n in noise)]
    return "\n".join(kept[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_webserver(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_seconds: float = STARTUP_TIMEOUT_SECONDS
) -> None:
    """Waits until the webserver at `url` (ending in /) answers, failing with its log if it exits or times out."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        assert proc.poll() is None, f"{proc.args!r} exited:\n" + log_tail(log)
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "server_info", timeout=2).ok:
                return
        assert time.monotonic() < deadline, "the Dagster webserver is not up:\n" + log_tail(log)
        time.sleep(0.5)


def graphql(webserver_url: str, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Posts `query` to the webserver's /graphql endpoint, as the UI does; returns `data`, failing on errors."""
    answer = requests.post(
        webserver_url + "graphql", json={"query": query, "variables": dict(variables or {})}, timeout=60
    )
    answer.raise_for_status()
    payload = answer.json()
    assert not payload.get("errors"), payload["errors"]
    return dict(payload["data"])


def launch_backfill(
    webserver_url: str,
    *,
    location: str,
    partition_set: str,
    partitions: Sequence[str],
    run_config: Mapping[str, Any] | None = None,
) -> str:
    """Launches a backfill of `partitions` of a job's partition set (the UI's "Launch backfill");
    returns its id."""
    params = {
        "selector": {
            "partitionSetName": partition_set,
            "repositorySelector": {"repositoryLocationName": location, "repositoryName": "__repository__"},
        },
        "partitionNames": list(partitions),
        "runConfigData": dict(run_config or {}),
    }
    launched = graphql(webserver_url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def pg_env(url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables the production dagster.yaml reads, from a postgresql:// URL.

    A Unix-socket URL (the embedded server's: ``postgresql://user@/db?host=/socket/dir``)
    leaves DAGSTER_PG_HOST empty and names the socket directory in PGHOST, which libpq reads
    when the connection string has no host.
    """
    params = connection_parameters(url)
    host = params.get("host", "")
    env = {
        "DAGSTER_PG_HOST": "" if host.startswith("/") else host,
        "DAGSTER_PG_PORT": params.get("port", "5432"),
        "DAGSTER_PG_DB": params.get("dbname", ""),
        "DAGSTER_PG_USER": params.get("user", ""),
        "DAGSTER_PG_PASSWORD": params.get("password", ""),
    }
    if host.startswith("/"):
        env["PGHOST"] = host
    return env


def environ_without_settings() -> dict[str, str]:
    """This process's environment without the project's own settings (GESTIMUM_*, CRM_*, SYNC_*,
    DAGSTER_*): a process a test starts sees what the test sets, nothing of the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
