"""A company file's messages name its own settings (issue 20): the defs.yaml file, the field and
the variable it uses (ACME_GESTIMUM_PASSWORD), never the single company file's GESTIMUM_MOT_PASSE or
CRM_DATABASE_URL; a CRM that is down is reported once; a missing store names the command with
`--company`. Real PostgreSQL, the simulator on a socket, the resources built by Dagster."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import dagster as dg
import pytest
from databases import init_state_store
from reliability import DAY_TS, deployment, environment, execute, kill_crm_stream_at, run_job, seed_standard

from gestimum_pipeline.components import GestimumSync
from gestimum_pipeline.defs.preflight import PreflightReport, run_preflight
from gestimum_pipeline.defs.resources import ConfigurationError, deployment_resources
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

pytestmark = pytest.mark.slow
DEFS_YAML = "companies/defs/acme/defs.yaml"
ACME = """\
name: acme
gestimum_url: "{{ env.ACME_GESTIMUM_URL }}"
company_file: ACME.Gestimum
user: SYNC
password: "{{ env.ACME_GESTIMUM_PASSWORD }}"
crm_url: "{{ env.ACME_CRM_DATABASE_URL }}"
state_schema: gestimum_sync_acme
"""
# The single company file's names, standing alone (not as part of ACME_…).
DEFAULT_NAMES = re.compile(r"(?<![A-Z_])(GESTIMUM_URL|GESTIMUM_MOT_PASSE|GESTIMUM_UTILISATEUR|CRM_DATABASE_URL)")


@pytest.fixture
def acme() -> Iterator[GestimumSimulator]:
    sim = GestimumSimulator(SimulatorConfig(company_file="ACME.Gestimum", user="SYNC", password="acme-pw")).start()
    try:
        yield sim
    finally:
        sim.stop()


def preflight(env: dict[str, str]) -> PreflightReport:
    component = GestimumSync.resolve_from_yaml(ACME)
    resources = deployment_resources(component.resources(component.settings(), DEFS_YAML))
    with environment(env), dg.build_resources(resources) as built:
        return run_preflight(built.crm, built.gestimum, built.sync_state, built.sync_options, logging.getLogger("test"))


def test_a_wrong_password_names_the_company_files_variable(crm_url: str, acme: GestimumSimulator) -> None:
    init_state_store(crm_url, "gestimum_sync_acme")
    env = {"ACME_GESTIMUM_URL": acme.url, "ACME_GESTIMUM_PASSWORD": "wrong", "ACME_CRM_DATABASE_URL": crm_url}
    report = preflight(env)
    assert len(report.problems) == 1, report.problems
    assert f"ACME_GESTIMUM_PASSWORD ({DEFS_YAML}, password)" in report.problems[0]
    assert f"user ({DEFS_YAML})" in report.problems[0]
    assert not DEFAULT_NAMES.search(report.problems[0]), report.problems[0]
    assert report.tls_verification.startswith(f"none (ACME_GESTIMUM_URL ({DEFS_YAML}, gestimum_url) is not https://)")

    env["ACME_GESTIMUM_PASSWORD"] = "acme-pw"
    assert preflight(env).ok


def test_a_missing_store_names_the_command_with_company(crm_url: str, acme: GestimumSimulator) -> None:
    env = {"ACME_GESTIMUM_URL": acme.url, "ACME_GESTIMUM_PASSWORD": "acme-pw", "ACME_CRM_DATABASE_URL": crm_url}
    report = preflight(env)
    message = " ".join(report.problems)
    assert "gestimum-pipeline state init --company acme" in message
    assert f"ACME_CRM_DATABASE_URL ({DEFS_YAML}, crm_url)" in message and not DEFAULT_NAMES.search(message)


def test_a_crm_that_is_down_is_reported_once_under_its_variable(acme: GestimumSimulator) -> None:
    down = "postgresql://sync@127.0.0.1:1/acme"  # nothing listens on port 1
    env = {"ACME_GESTIMUM_URL": acme.url, "ACME_GESTIMUM_PASSWORD": "acme-pw", "ACME_CRM_DATABASE_URL": down}
    report = preflight(env)
    about_database = [p for p in report.problems if "cannot connect" in p]
    assert len(about_database) == 1, report.problems
    assert f"cannot connect to ACME_CRM_DATABASE_URL ({DEFS_YAML}, crm_url)" in about_database[0]
    assert "state store is in this database too" in about_database[0]
    assert not DEFAULT_NAMES.search(" ".join(report.problems)), report.problems


def test_an_unset_variable_at_run_time_names_the_file_and_field(crm_url: str) -> None:
    component = GestimumSync.resolve_from_yaml(ACME)
    resources = deployment_resources(component.resources(component.settings(), DEFS_YAML))
    env = {"ACME_GESTIMUM_PASSWORD": "acme-pw", "ACME_CRM_DATABASE_URL": crm_url}  # ACME_GESTIMUM_URL unset
    with environment(env), pytest.raises(dg.DagsterResourceFunctionError) as raised, dg.build_resources(resources):
        pass
    cause = raised.value.__cause__
    assert isinstance(cause, ConfigurationError)
    assert cause.description == (
        f'GestimumApi.url reads the environment variable "ACME_GESTIMUM_URL" ({DEFS_YAML}, gestimum_url) '
        "which is not set: set it where runs execute"
    )


def test_a_sink_refused_by_gestimum_names_the_company_files_settings(
    pg_server_url: str, sync_role_crm_template: str
) -> None:
    """The preflight trusts an earlier proof; the password was changed in Gestimum since, so the
    stock sink's own access check fails: its message names the defs.yaml's user and variable."""
    with deployment(pg_server_url, template=sync_role_crm_template) as dep:
        seed_standard(dep.crm_url)
        dep.api["settings_labels"] = {
            "url": f"ACME_GESTIMUM_URL ({DEFS_YAML}, gestimum_url)",
            "company_file": f"company_file ({DEFS_YAML})",
            "user": f"user ({DEFS_YAML})",
            "password": f"ACME_GESTIMUM_PASSWORD ({DEFS_YAML}, password)",
        }
        assert run_job(dep).success
        execute(
            dep.crm_url,
            [
                (
                    "INSERT INTO crm.stock_movements (id, direction, warehouse_code, item_code, quantity, moved_at)"
                    " VALUES (101, 'in', '001', 'ELS', 1, %s)",
                    (DAY_TS,),
                )
            ],
        )
        dep.simulator.config.password = "Changed-In-Gestimum"
        run = run_job(dep)
        assert list(run.failures) == ["gestimum__documents_stock"], run.failures
        message = run.failure("gestimum/documents_stock")
        assert f"user ({DEFS_YAML}) and ACME_GESTIMUM_PASSWORD ({DEFS_YAML}, password)" in message, message
        assert "Gestimum refused the user or password" in message
        assert not DEFAULT_NAMES.search(message), message


def test_a_crm_lost_mid_stream_names_the_company_files_variable(pg_server_url: str) -> None:
    """The sync's own messages name CRM_DATABASE_URL; a company file's transform failure names its
    defs.yaml's variable instead (here the CRM backend dies while the movements stream)."""
    with deployment(pg_server_url) as dep:
        seed_standard(dep.crm_url)
        kill_crm_stream_at(dep, 8)
        dep.options["chunk_size"] = 2
        dep.crm["setting"] = f"ACME_CRM_DATABASE_URL ({DEFS_YAML}, crm_url)"
        dep.state["setting"] = f"ACME_CRM_DATABASE_URL ({DEFS_YAML}, crm_url)"
        run = run_job(dep)
        message = run.failure("transform/documents_stock")
        assert "CRM connection failed while streaming stock_movements" in message, message
        assert f"the CRM (ACME_CRM_DATABASE_URL ({DEFS_YAML}, crm_url)) is reachable" in message, message
        assert not DEFAULT_NAMES.search(message), message
