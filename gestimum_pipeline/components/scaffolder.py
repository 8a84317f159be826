"""`dg scaffold defs gestimum_pipeline.components.GestimumSync acme`: a filled-in, commented defs.yaml.

Every field is written, each with a comment saying what it is; the secrets are `{{ env.VARIABLE }}`
with the variables named after the company file (ACME_GESTIMUM_PASSWORD, ...) and listed under
`requirements.env`, so `dg check yaml --validate-requirements` and `dg list env` know them and
`dg check defs` names any that is unset. Optional parameters (`--json-params`):
`{"company_file": "ACME.Gestimum", "user": "SYNC", "env_prefix": "ACME"}`.
"""

from __future__ import annotations

import re

import dagster as dg
from pydantic import BaseModel, Field

COMPONENT_TYPE = "gestimum_pipeline.components.GestimumSync"


class GestimumSyncScaffoldParams(BaseModel):
    company_file: str | None = Field(default=None, description="the Gestimum company file, e.g. ACME.Gestimum")
    user: str = Field(default="SYNC", description="the Gestimum user the sync logs in as")
    env_prefix: str | None = Field(default=None, description="prefix of the variables (default: the name, upper)")


def company_name(folder_name: str) -> str:
    """A valid `name` (lowercase letters, digits, _) from the scaffolded folder's name."""
    name = re.sub(r"[^a-z0-9_]", "_", folder_name.lower()).strip("_") or "company"
    return name if name[0].isalpha() else f"c_{name}"


def required_variables(prefix: str) -> list[str]:
    return [f"{prefix}_GESTIMUM_URL", f"{prefix}_GESTIMUM_PASSWORD", f"{prefix}_CRM_DATABASE_URL"]


def defs_yaml(name: str, params: GestimumSyncScaffoldParams | None = None) -> str:
    """The scaffolded defs.yaml of company file `name`."""
    params = params or GestimumSyncScaffoldParams()
    prefix = re.sub(r"[^A-Z0-9_]", "_", (params.env_prefix or name).upper())
    company_file = params.company_file or f"{name.upper()}.Gestimum"
    url, password, crm = required_variables(prefix)
    env_list = "\n".join(f"    - {v}" for v in (url, password, crm))
    return f"""\
# Company file {name!r}: one Gestimum company file synced from a PostgreSQL CRM (docs/company-files.md).
# Set the variables under requirements.env where the code location and its runs execute, then:
#   gestimum-pipeline state init --company {name}    # once: creates this company file's state store
#   dg check defs                                   # fails naming every variable still unset
#   dg launch --job {name}_gestimum_sync --partition YYYY-MM-DD
type: {COMPONENT_TYPE}
attributes:
  # Prefix of the asset keys ({name}/crm/customers, ...), of the jobs ({name}_gestimum_sync,
  # {name}_operator_retry, ...) and of the resources; the --company NAME of the command line.
  name: {name}
  # Gestimum's REST server: a plain URL, or {{{{ env.VARIABLE }}}} (required when it holds credentials).
  gestimum_url: "{{{{ env.{url} }}}}"
  # The company file (dossier) in Gestimum; its sinks share the pool gestimum_<company file>.
  company_file: {company_file}
  # The Gestimum user the sync logs in as, and its password (a secret: {{{{ env.VARIABLE }}}} only).
  user: {params.user}
  password: "{{{{ env.{password} }}}}"
  # The CRM database (a secret: its URL may hold a password) and the schema of the source contract.
  crm_url: "{{{{ env.{crm} }}}}"
  crm_schema: crm
  # The state store: its own schema per company file, in the CRM database unless state_url is set
  # (state_url: "{{{{ env.{prefix}_STATE_DATABASE_URL }}}}", then list that variable below too).
  state_schema: gestimum_sync_{name}
  # When the sync job runs (cron, in timezone); change_sensor: true also runs the days the CRM changed.
  cron: "0 * * * *"
  change_sensor: false
  timezone: Europe/Paris
  # The first daily partition, and how far Gestimum may lag behind the CRM (minutes) before the
  # sinks' freshness fails.
  start_date: "2024-01-01"
  max_lag_minutes: 180
  # Customer account number = account_prefix + customer code.
  account_prefix: "411"
  # How the assets show in the catalog: groups {name}_crm, {name}_gestimum, ... ('' shares the
  # groups with the other company files), their owners, and tags added to each asset.
  group_prefix: {name}_
  owners: ["team:data-engineering"]
  tags: {{company: {name}}}
# Every variable this file reads: `dg check yaml --validate-requirements` fails on one not listed,
# `dg check defs` on one not set.
requirements:
  env:
{env_list}
# Dagster's post-processing applies to the assets this component builds, after the attributes above,
# e.g. a description or more tags on the sinks (see docs/company-files.md, "post_processing"):
# post_processing:
#   assets:
#     - target: "key:{name}/gestimum/*"
#       attributes:
#         description: "{company_file} in Gestimum"
"""


class GestimumSyncScaffolder(dg.Scaffolder[GestimumSyncScaffoldParams]):
    """Writes `<folder>/defs.yaml` for the company file named after the folder."""

    @classmethod
    def get_scaffold_params(cls) -> type[GestimumSyncScaffoldParams]:
        return GestimumSyncScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[GestimumSyncScaffoldParams]) -> None:
        folder = request.target_path
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "defs.yaml"
        if target.exists():
            raise FileExistsError(f"{target} exists: remove it first (nothing was overwritten)")
        params = request.params if isinstance(request.params, GestimumSyncScaffoldParams) else None
        target.write_text(defs_yaml(company_name(folder.name), params), encoding="utf-8")
