"""A run config cannot change where the sync connects nor with which credentials (issue 23, High).

The OSS webserver has no authentication: whoever reaches it may launch a run with any run
config. Were the resources' connection fields run config, `resources.gestimum.config.url`
pointed at their own server with `password: {env: GESTIMUM_MOT_PASSE}` and
`user: {env: CRM_DATABASE_URL}` would have the preflight post every secret there. Each such
override must fail validation, naming the field, before anything connects; per-run options
stay settable on `sync_options`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_services import environ_without_settings
from reliability import Deployment, deployment, environment, seed_standard
from sync_harness import HARNESS_SETTINGS

from gestimum_pipeline.defs.build import build_definitions

REPO = Path(__file__).resolve().parents[2]
DG = [str(Path(sys.executable).parent / "dg")]


class ConnectionCounter:
    """A plain TCP server on 127.0.0.1 that counts the connections it accepts (the attacker's server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def counter() -> Iterator[ConnectionCounter]:
    server = ConnectionCounter()
    # Not vacuous: a connection made to it is counted.
    socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    for _ in range(500):
        if server.connections:
            break
        threading.Event().wait(0.01)
    assert server.connections == 1
    server.connections = 0
    yield server
    server.close()


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        yield d


def _overrides(port: int) -> list[tuple[str, str, Any]]:
    """(resource key, field, value): every connection target and credential, as an attacker would set it."""
    http = f"http://127.0.0.1:{port}/"
    pg = f"postgresql://attacker:x@127.0.0.1:{port}/stolen"
    return [
        ("gestimum", "url", http),
        ("gestimum", "password", {"env": "GESTIMUM_MOT_PASSE"}),
        ("gestimum", "user", {"env": "CRM_DATABASE_URL"}),
        ("gestimum", "company_file", {"env": "SYNC_STATE_DATABASE_URL"}),
        ("gestimum", "verify_tls", False),
        ("crm", "url", pg),
        ("crm", "schema_name", "public"),
        ("sync_state", "url", pg),
        ("sync_state", "schema_name", "other_store"),
        ("alert_webhook", "url", http),
    ]


@pytest.mark.parametrize("index", range(len(_overrides(0))), ids=[f"{k}.{f}" for k, f, _ in _overrides(0)])
def test_a_run_config_cannot_override_a_connection_target_or_credential(
    dep: Deployment, counter: ConnectionCounter, index: int
) -> None:
    key, field, value = _overrides(counter.port)[index]
    defs = build_definitions(HARNESS_SETTINGS, resources=dep.resources())
    job = defs.resolve_job_def("gestimum_sync")
    instance = dg.DagsterInstance.ephemeral()
    run_config = {"resources": {key: {"config": {field: value}}}}
    with environment(dep.env()), pytest.raises(dg.DagsterInvalidConfigError) as refused:
        job.execute_in_process(run_config=run_config, partition_key="2026-03-10", instance=instance)
    assert f'unexpected config entry "{field}" at path root:resources:{key}:config' in str(refused.value)
    # Refused before anything connected: neither the named server nor the real ones saw a request.
    assert counter.connections == 0
    assert dep.simulator.state.requests == []
    assert instance.get_runs() == []


def test_per_run_options_stay_settable(dep: Deployment) -> None:
    defs = build_definitions(HARNESS_SETTINGS, resources=dep.resources())
    job = defs.resolve_job_def("gestimum_sync")
    options = {"dry_run": True, "force": True, "lookback_minutes": 5, "chunk_size": 10}
    with environment(dep.env()):
        assert dg.validate_run_config(job, {"resources": {"sync_options": {"config": options}}})


def test_the_command_line_refuses_an_overriding_config_before_connecting(
    dep: Deployment, counter: ConnectionCounter, tmp_path: Path
) -> None:
    """`dg launch --config-json` on the production code location (its resources from the environment)."""
    env = environ_without_settings()
    env.update(dep.env(), DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    config = {
        "resources": {
            "gestimum": {
                "config": {
                    "url": f"http://127.0.0.1:{counter.port}/",
                    "password": {"env": "GESTIMUM_MOT_PASSE"},
                    "user": {"env": "CRM_DATABASE_URL"},
                    "company_file": {"env": "SYNC_STATE_DATABASE_URL"},
                }
            }
        }
    }
    command = [*DG, "launch", "--assets", "*", "--partition", "2026-03-10", "--config-json", json.dumps(config)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    # Dagster names every overriding field at once.
    fields = "['company_file', 'password', 'url', 'user']"
    refused = f'unexpected config entries "{fields}" at path root:resources:gestimum:config'
    assert refused in output, output[-3000:]
    assert counter.connections == 0
    assert dep.simulator.state.requests == []
