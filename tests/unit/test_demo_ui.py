"""`gestimum-pipeline demo --ui`: the environment `dg dev` gets, and the names the demo's run shares with it."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

from gestimum_pipeline import demo

REPO = Path(__file__).resolve().parents[2]

SHELL = {
    "PATH": "/usr/bin",
    "HOME": "/home/someone",
    "LANG": "C.UTF-8",
    # A developer's own settings, which must not reach the demo's `dg dev`.
    "CRM_DATABASE_URL": "postgresql://sync:secret@prod-crm/crm",
    "CRM_SCHEMA": "erp",
    "SYNC_STATE_DATABASE_URL": "postgresql://sync:secret@prod-crm/state",
    "GESTIMUM_URL": "https://gestimum.example/",
    "GESTIMUM_ALERT_WEBHOOK_URL": "https://hooks.example/T000",
    "GESTIMUM_SYNC_START_DATE": "2024-01-01",
    "GESTIMUM_CHANGE_SENSOR": "true",
    "DAGSTER_HOME": "/srv/dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "VIRTUAL_ENV": "/elsewhere/.venv",
}


def _demo_env() -> dict[str, str]:
    return demo.sync_environment(
        crm_url="postgresql://postgres@/gestimum_demo?host=/tmp/pg",
        gestimum_url="http://127.0.0.1:41234/",
        start_date=date(2026, 3, 1),
        timezone="Europe/Paris",
        dagster_home=Path("/tmp/demo/dagster_home"),
    )


def test_dg_dev_gets_the_demos_settings_and_none_of_the_shells() -> None:
    env = demo.ui_environment(SHELL, _demo_env(), "/work/.venv")
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/someone",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": "/work/.venv",
        **_demo_env(),
    }
    # The partitions start at the demo's first day, the tags name its company file.
    assert env["GESTIMUM_SYNC_START_DATE"] == "2026-03-01"
    assert env["GESTIMUM_FICHIER"] == "DEMO.Gestimum"
    assert env["DAGSTER_HOME"] == "/tmp/demo/dagster_home"


def test_outside_a_virtualenv_no_virtual_env_is_passed_on() -> None:
    env = demo.ui_environment(SHELL, _demo_env(), None)
    assert "VIRTUAL_ENV" not in env
    assert demo.dg_dev_command(3000, None)[1:] == ["dev", "-h", "127.0.0.1", "-p", "3000"]


def test_dg_dev_listens_on_localhost_in_the_active_virtualenv() -> None:
    command = demo.dg_dev_command(3123, "/work/.venv")
    assert command[1:] == ["dev", "-h", "127.0.0.1", "-p", "3123", "--use-active-venv"]


def test_every_demo_setting_is_one_the_shell_cannot_override() -> None:
    """The stripped prefixes cover every variable the demo sets: a shell variable of the same
    family (e.g. CRM_SCHEMA) would otherwise sit beside the demo's and change its sync."""
    assert all(k.startswith(demo.OWN_PREFIXES) for k in _demo_env())


def test_the_demos_run_names_the_code_location_dg_dev_serves() -> None:
    """The UI files runs under their code location: the demo's run must name the project's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert project["code_location_name"] == demo.CODE_LOCATION
    assert project["code_location_target_module"] == demo.DEFINITIONS_MODULE
    assert demo.project_root() == REPO


def test_a_port_in_use_is_refused_before_dg_dev_starts() -> None:
    import socket

    import pytest

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is not free"):
            demo._require_free_port(port)
