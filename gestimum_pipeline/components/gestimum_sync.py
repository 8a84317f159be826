"""`GestimumSync`: one Gestimum company file synced from a PostgreSQL CRM, declared in a defs.yaml.

Each company file of a code location has its own folder under the defs module
(gestimum_pipeline/company_files/<name>/defs.yaml), and gets, from `build_definitions`,
its own asset key prefix, resources, pool (`gestimum_<company file>`), sync job, schedule,
checks and operator jobs, and state store. Secrets (the Gestimum password, database URLs,
which may carry passwords) are written `{{ env.VARIABLE }}`: the component keeps the
variable's name and hands the resource a `dg.EnvVar`, resolved at run time, so the value
never reaches the definitions, the UI or the logs.
"""

# No `from __future__ import annotations`: dg.Resolvable reads the fields' annotations as types.
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import dagster as dg

from gestimum_pipeline.companies import ENV_TEMPLATE as _ENV_TEMPLATE
from gestimum_pipeline.components.scaffolder import GestimumSyncScaffolder
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.resources import CrmDatabase, SyncOptions, SyncStateDatabase, gestimum_api
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.sync.state import DEFAULT_SCHEMA as STATE_SCHEMA
from gestimum_pipeline.sync.state import INIT_COMMAND

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Set by `dg check defs` (and `dagster definitions validate`) while it loads the definitions.
VALIDATION_ENV = "DAGSTER_IS_DEFS_VALIDATION_CLI"


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _secret(field_name: str) -> dg.Resolver:
    """A field that must be `{{ env.VARIABLE }}`; resolves to `dg.EnvVar("VARIABLE")`, not its value."""

    def resolve(_context: dg.ResolutionContext, raw: object) -> dg.EnvVar | None:
        if raw is None:
            return None
        match = _ENV_TEMPLATE.match(str(raw))
        if match is None:
            raise ValueError(
                f"{field_name} must be written {{{{ env.VARIABLE }}}} (a secret is read from the environment at run "
                "time and never written in defs.yaml)"
            )
        return dg.EnvVar(match.group(1) or match.group(2))

    # inject_before_resolve=False: the template is read as written, never rendered to its value.
    return dg.Resolver(
        resolve,
        model_field_type=str,
        inject_before_resolve=False,
        description=f"{field_name}: {{{{ env.VARIABLE }}}} only (a secret, read at run time)",
    )


def _url_or_secret(field_name: str) -> dg.Resolver:
    """A URL written as is, or as `{{ env.VARIABLE }}` (then a `dg.EnvVar`, never rendered). One
    with a password (a proxy's credentials) must be the latter: defs.yaml is not a secret store,
    and a plain value is shown by the UI."""

    def resolve(_context: dg.ResolutionContext, raw: object) -> str:
        text = str(raw or "")
        match = _ENV_TEMPLATE.match(text)
        if match is not None:
            return dg.EnvVar(match.group(1) or match.group(2))
        try:
            password = urlsplit(text.strip()).password
        except ValueError:
            password = None
        if password or "{{" in text:
            raise ValueError(
                f"{field_name} holds credentials (or a template mixed with text): write it {{{{ env.VARIABLE }}}} "
                "and set the whole URL in that variable (read at run time, never shown)"
            )
        return text

    return dg.Resolver(
        resolve,
        model_field_type=str,
        inject_before_resolve=False,
        description=f"{field_name}: a URL, or {{{{ env.VARIABLE }}}} when it holds credentials",
    )


def _doc(description: str) -> dg.Resolver:
    return dg.Resolver.default(description=description)


@dg.scaffold_with(GestimumSyncScaffolder)
@dataclass
class GestimumSync(dg.Component, dg.Resolvable):
    """One Gestimum company file synced from a PostgreSQL CRM (the README's whole sync)."""

    name: Annotated[
        str,
        _doc(
            "Short name of the company file in this code location (lowercase letters, digits, _): the prefix of "
            "its asset keys and of its jobs', schedule's and resources' names"
        ),
    ]
    gestimum_url: Annotated[str, _url_or_secret("gestimum_url")]
    company_file: Annotated[str, _doc("The company file, e.g. ACME.Gestimum (its pool is gestimum_<company file>)")]
    user: Annotated[str, _doc("Gestimum user")]
    crm_url: Annotated[dg.EnvVar, _secret("crm_url")]
    password: Annotated[dg.EnvVar | None, _secret("password")] = None
    crm_schema: Annotated[str, _doc("Schema holding the source contract's relations")] = "crm"
    state_url: Annotated[dg.EnvVar | None, _secret("state_url")] = None
    state_schema: Annotated[str, _doc("State store schema: each company file needs its own (schema or database)")] = (
        STATE_SCHEMA
    )
    cron: Annotated[str, _doc("The sync schedule (cron, in timezone)")] = Settings.cron
    change_sensor: Annotated[bool, _doc("Start the change sensor running (runs the days the CRM changed)")] = False
    timezone: Annotated[str, _doc("The partitions' and the schedule's time zone")] = Settings.timezone
    start_date: Annotated[str, _doc("First daily partition (YYYY-MM-DD)")] = Settings.start_date
    max_lag_minutes: Annotated[float, _doc("How far Gestimum may lag behind the CRM, in minutes (freshness)")] = (
        Settings.max_lag_minutes
    )
    account_prefix: Annotated[str, _doc("Customer account number = prefix + customer code")] = Settings.account_prefix
    verify_tls: Annotated[bool, _doc("Verify Gestimum's TLS certificate")] = True
    ca_bundle: Annotated[str | None, _doc("CA bundle path for a private CA")] = None
    # Translation: how this company file's assets show in the catalog.
    group_prefix: Annotated[
        str | None,
        _doc(
            "Prefix of the asset groups (sync, crm, transform, gestimum): default '<name>_' (acme_crm, ...), so each "
            "company file has its own groups; '' shares the groups with the other company files"
        ),
    ] = None
    owners: Annotated[
        list[str] | None,
        _doc("Owners of this company file's assets (team:NAME or an e-mail); default team:data-engineering"),
    ] = None
    tags: Annotated[
        dict[str, str] | None, _doc("Tags added to every asset of this company file (Dagster's tag rules apply)")
    ] = None

    def __post_init__(self) -> None:
        # Checked when defs.yaml is loaded (`dg check defs`), each message naming its field.
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"name must be lowercase letters, digits and _ (a key prefix), got {self.name!r}")
        # Dagster renders a value like "411" to a number: these are text.
        for field_name in ("account_prefix", "company_file", "user", "start_date", "crm_schema", "state_schema"):
            value = getattr(self, field_name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(self, field_name, str(value))
        for field_name in ("gestimum_url", "company_file", "user"):
            value = getattr(self, field_name)
            if not isinstance(value, dg.EnvVar) and not str(value or "").strip():  # an EnvVar is read at run time
                raise ValueError(f"{field_name} is empty")
        try:
            lag = float(self.max_lag_minutes)
        except (TypeError, ValueError):
            lag = 0.0
        if not lag > 0:
            raise ValueError(f"max_lag_minutes must be a positive number of minutes, got {self.max_lag_minutes!r}")
        self.max_lag_minutes = lag

    def settings(self, base: Settings | None = None) -> Settings:
        """This company file's settings, over `base` (default: the environment's other settings)."""
        base = base or Settings.from_env()
        return replace(
            base,
            key_prefix=self.name,
            company_file=self.company_file,
            start_date=self.start_date,
            timezone=self.timezone,
            cron=self.cron,
            change_sensor=self.change_sensor,
            max_lag_minutes=self.max_lag_minutes,
            max_waiting_minutes=self.max_lag_minutes,
            crm_schema=self.crm_schema,
            state_url_variable=(self.state_url or self.crm_url).env_var_name,
            verify_tls=self.verify_tls,
            ca_bundle=self.ca_bundle,
            account_prefix=self.account_prefix,
        )

    def label(self, field_name: str, defs_yaml: str | None = None) -> str:
        """How messages name a field: `ACME_GESTIMUM_PASSWORD (acme/defs.yaml, password)`, or
        `user (acme/defs.yaml)` for a value written in the file."""
        value = getattr(self, field_name)
        path = defs_yaml or f"{self.name}/defs.yaml"
        return (
            f"{value.env_var_name} ({path}, {field_name})" if isinstance(value, dg.EnvVar) else f"{field_name} ({path})"
        )

    def resources(self, settings: Settings, defs_yaml: str | None = None) -> dict[str, dg.ConfigurableResource]:
        """This company file's resources; their messages name `defs_yaml`'s fields and variables."""
        state_field = "state_url" if self.state_url is not None else "crm_url"
        state = self.state_url or self.crm_url
        api = gestimum_api(
            settings,
            url=self.gestimum_url,
            company_file=self.company_file,
            user=self.user,
            password=self.password if self.password is not None else "",
        )
        labels = {f: self.label(g, defs_yaml) for f, g in (("url", "gestimum_url"), ("company_file", "company_file"))}
        labels["user"] = self.label("user", defs_yaml)
        labels["password"] = self.label("password", defs_yaml) if self.password is not None else "password (unset)"
        return {
            "crm": CrmDatabase(
                url=self.crm_url,
                schema_name=self.crm_schema,
                setting=self.label("crm_url", defs_yaml),
                schema_setting=self.label("crm_schema", defs_yaml),
            ),
            "gestimum": api.model_copy(update={"settings_labels": labels}),
            "sync_state": SyncStateDatabase(
                url=state,
                schema_name=self.state_schema,
                setting=self.label(state_field, defs_yaml),
                init_command=f"{INIT_COMMAND} --company {self.name}",
            ),
            "sync_options": SyncOptions(lookback_minutes=settings.lookback_minutes, account_prefix=self.account_prefix),
        }

    def translate(self, spec: dg.AssetSpec) -> dg.AssetSpec:
        """`spec` with this company file's group, owners and tags (the translation attributes)."""
        prefix = f"{self.name}_" if self.group_prefix is None else self.group_prefix
        return spec.replace_attributes(
            group_name=f"{prefix}{spec.group_name}" if spec.group_name else spec.group_name,
            owners=list(self.owners) if self.owners is not None else spec.owners,
            tags={**spec.tags, **(self.tags or {})},
        )

    def variables(self) -> dict[str, str]:
        """Every environment variable this company file reads at run time: {variable: field}."""
        found: dict[str, str] = {}
        for field_name in ("gestimum_url", "password", "crm_url", "state_url"):
            value = getattr(self, field_name)
            if isinstance(value, dg.EnvVar):
                found.setdefault(value.env_var_name, field_name)
        return found

    def check_environment(self, defs_yaml: str, environ: Mapping[str, str] | None = None) -> None:
        """Raises naming every variable of `variables()` that is unset (or empty), with its field."""
        env = os.environ if environ is None else environ
        unset = [
            f"{v} ({field})"
            for v, field in self.variables().items()
            # An empty password is a password (a Gestimum user may have none); an empty URL is not.
            if v not in env or (field != "password" and not env[v].strip())
        ]
        if unset:
            raise ValueError(
                f"{defs_yaml}: company file {self.name!r} reads environment variables that are not set: "
                f"{', '.join(unset)}; set them where the code location and its runs execute"
            )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        defs_yaml = _shown(context.path / "defs.yaml", context.project_root)
        if os.environ.get(VALIDATION_ENV) == "1":
            # `dg check defs`: a deployment missing a variable fails here, not at its first run. A code
            # location loads without them (a webserver need not hold the secrets; runs read them).
            self.check_environment(defs_yaml)
        settings = self.settings()
        # The location's alert sensors are added once, by the code location (definitions.py).
        defs = build_definitions(settings, resources=self.resources(settings, defs_yaml), with_alerts=False)
        return defs.map_asset_specs(func=self.translate)
