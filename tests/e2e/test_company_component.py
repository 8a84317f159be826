"""GestimumSync as a dg-native component (issue 20): registered (`dg list components`), scaffolded
filled in with its `requirements.env`, checked by `dg check defs` against the environment, and
translated per company file (groups, owners, tags, Dagster's post_processing).

A project of its own in a temp dir, driven through `dg` as a data team would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dg_project import write_dg_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
VARIABLES = ("ACME_GESTIMUM_URL", "ACME_GESTIMUM_PASSWORD", "ACME_CRM_DATABASE_URL")
POST_PROCESSING = """\
post_processing:
  assets:
    - target: "key:acme/gestimum/*"
      attributes:
        description: "ACME.Gestimum in Gestimum"
        tags:
          tier: gold
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_dg_project(tmp_path, "companies")
    return tmp_path


def dg(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GESTIMUM_", "CRM_", "SYNC_", "ACME_"))}
    environ["VIRTUAL_ENV"] = sys.prefix  # this test's environment has gestimum_pipeline installed
    environ.update(env or {})
    return subprocess.run(
        [str(BIN / "dg"), *args], cwd=project, env=environ, capture_output=True, text=True, timeout=300
    )


def test_dg_lists_the_component(project: Path) -> None:
    listed = dg(project, "list", "components", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    keys = {c["key"] for c in json.loads(listed.stdout)["items"]}
    assert "gestimum_pipeline.components.GestimumSync" in keys


def test_scaffold_writes_a_filled_in_defs_yaml_checked_against_the_environment(project: Path) -> None:
    scaffolded = dg(project, "scaffold", "defs", "gestimum_pipeline.components.GestimumSync", "acme")
    assert scaffolded.returncode == 0, scaffolded.stderr[-2000:]
    path = project / "companies" / "defs" / "acme" / "defs.yaml"
    text = path.read_text()
    document = yaml.safe_load(text)
    assert document["type"] == "gestimum_pipeline.components.GestimumSync"
    attributes = document["attributes"]
    assert attributes["name"] == "acme" and attributes["company_file"] == "ACME.Gestimum"
    assert attributes["password"] == "{{ env.ACME_GESTIMUM_PASSWORD }}"
    assert attributes["state_schema"] == "gestimum_sync_acme"
    assert document["requirements"]["env"] == list(VARIABLES)
    assert text.count("\n#") + text.count("\n  #") >= 10, "every field is commented"

    checked = dg(project, "check", "yaml", "--validate-requirements")
    assert checked.returncode == 0, checked.stdout[-2000:]
    # A variable used but not listed under requirements.env is caught.
    path.write_text(text.replace("    - ACME_CRM_DATABASE_URL\n", ""))
    unlisted = dg(project, "check", "yaml", "--validate-requirements")
    assert unlisted.returncode != 0 and "ACME_CRM_DATABASE_URL" in unlisted.stdout
    path.write_text(text)

    # `dg check defs` fails naming every unset variable, its field and the file.
    missing = dg(project, "check", "defs", env={"ACME_GESTIMUM_URL": "http://127.0.0.1:9"})
    assert missing.returncode != 0
    output = missing.stdout + missing.stderr
    assert "companies/defs/acme/defs.yaml: company file 'acme' reads environment variables that are not set" in output
    assert "ACME_GESTIMUM_PASSWORD (password), ACME_CRM_DATABASE_URL (crm_url)" in output
    assert "ACME_GESTIMUM_URL (" not in output

    env = {
        "ACME_GESTIMUM_URL": "http://127.0.0.1:9",
        "ACME_GESTIMUM_PASSWORD": "",  # a user without a password: set, and empty
        "ACME_CRM_DATABASE_URL": "postgresql://sync@127.0.0.1:5432/acme",
    }
    passed = dg(project, "check", "defs", env=env)
    assert passed.returncode == 0, passed.stderr[-3000:]

    # Translation attributes and post_processing: the catalog shows this company file's own.
    translated = text.replace('owners: ["team:data-engineering"]', 'owners: ["team:acme-finance"]')
    path.write_text(translated + POST_PROCESSING)
    listed = dg(project, "list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assets = {a["asset_key"]: a for a in json.loads(listed.stdout)["assets"]}
    assert {a["group_name"] for a in assets.values()} == {"acme_sync", "acme_crm", "acme_transform", "acme_gestimum"}
    customers = assets["acme/crm/customers"]
    assert customers["owners"] == [{"team": "acme-finance"}]
    assert {"key": "company", "value": "acme"} in customers["tags"]
    sink = assets["acme/gestimum/clients"]
    assert sink["description"] == "ACME.Gestimum in Gestimum"
    assert {"key": "tier", "value": "gold"} in sink["tags"] and {"key": "company", "value": "acme"} in sink["tags"]
    assert customers["description"] != "ACME.Gestimum in Gestimum"  # post_processing targeted the sinks only

    again = dg(project, "scaffold", "defs", "gestimum_pipeline.components.GestimumSync", "acme")
    assert again.returncode != 0 and path.read_text().endswith(POST_PROCESSING)  # nothing overwritten
