"""Dagster resources: the CRM database, the Gestimum API, the sync state store, run options.

Secrets (database URLs, which may hold passwords, and the Gestimum password) are wired
as `EnvVar`s: Dagster resolves them at run time and never shows their values.

Connection targets and credentials are the deployment's, never a run's: `fixed_resource`
hands Dagster every resource but the per-run `SyncOptions` with an empty config schema, so
a run config that names one of their fields (the Launchpad, `dagster asset materialize -c`,
`dg launch --config`) fails Dagster's config validation, naming the field, before the run
starts and before anything connects. Otherwise a run config could point GESTIMUM_URL at
any server and set `password: {env: GESTIMUM_MOT_PASSE}`, `user: {env: CRM_DATABASE_URL}`:
the preflight would post the secrets there.
"""

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import psycopg2.extensions
from pydantic import Field

from gestimum_pipeline.crm.contract import check_contract
from gestimum_pipeline.db import connect, start_pooling, stop_pooling, validate_identifier
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.gestimum.batching import DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings, LineFormat
from gestimum_pipeline.gestimum.errors import SETTING_CREDENTIALS
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointRegistry
from gestimum_pipeline.sync.mapping import DEFAULT_ACCOUNT_PREFIX
from gestimum_pipeline.sync.state import DEFAULT_SCHEMA as STATE_SCHEMA
from gestimum_pipeline.sync.state import INIT_COMMAND, StateStore


class ConfigurationError(dg.Failure):
    """A setting is missing or wrong: raised before any data moves, and never retried
    (a step's retry policy is for transient errors; this one stays until someone fixes it)."""

    def __init__(self, description: str | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(description=description, metadata=metadata, allow_retries=False)


# The settings of the environment's one company file, as messages name them by default. A
# company file's defs.yaml names others (`ACME_GESTIMUM_PASSWORD (acme/defs.yaml, password)`):
# its resources carry them, and `rename_settings` puts them in the messages.
GESTIMUM_SETTINGS = {
    "url": "GESTIMUM_URL",
    "company_file": "GESTIMUM_FICHIER",
    "user": "GESTIMUM_UTILISATEUR",
    "password": "GESTIMUM_MOT_PASSE",
}
CRM_URL_SETTING = "CRM_DATABASE_URL"
CRM_SCHEMA_SETTING = "CRM_SCHEMA"
STATE_URL_SETTING = "SYNC_STATE_DATABASE_URL"


def rename_settings(text: str, names: Mapping[str, str]) -> str:
    """`text` with each default setting name (GESTIMUM_URL, ...) replaced by `names`' label for it;
    one pass, whole names only (ACME_GESTIMUM_URL is not GESTIMUM_URL)."""
    names = {default: label for default, label in names.items() if label and label != default}
    if not names:
        return text
    pattern = re.compile(
        r"(?<![A-Za-z0-9_])("
        + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        + r")(?![A-Za-z0-9_])"
    )
    return pattern.sub(lambda m: names[m.group(1)], text)


class CrmDatabase(dg.ConfigurableResource):
    """The CRM: four relations of the source contract in one schema."""

    url: str = Field(description="PostgreSQL URL of the CRM (CRM_DATABASE_URL)", repr=False)
    schema_name: str = Field(default="crm", description="Schema holding the contract's relations (CRM_SCHEMA)")
    setting: str = Field(default=CRM_URL_SETTING, description="Where the URL comes from, named in messages")
    schema_setting: str = Field(default=CRM_SCHEMA_SETTING, description="Where the schema comes from, in messages")

    def setting_label(self, field: str) -> str | None:
        return {"url": self.setting, "schema_name": self.schema_setting}.get(field)

    def setting_names(self) -> dict[str, str]:
        """{default name: this CRM's label}, for `rename_settings`."""
        return {CRM_URL_SETTING: self.setting, CRM_SCHEMA_SETTING: self.schema_setting}

    def connect(self) -> psycopg2.extensions.connection:
        return connect(self.url, setting=self.setting)

    def checked_schema(self, relations: Sequence[str] | None = None) -> str:
        """Validates the schema name and the relations' (default all) columns; raises naming what is wrong."""
        schema = validate_identifier(self.schema_name, self.schema_setting)
        conn = self.connect()
        try:
            problems = check_contract(conn, schema, relations)
        finally:
            conn.close()
        if problems:
            raise ConfigurationError(
                description="The CRM does not match the source contract (see README, 'Source contract'): "
                + "; ".join(problems)
            )
        return schema


class GestimumApi(dg.ConfigurableResource):
    """Gestimum's REST import API for one company file."""

    # repr=False: a proxy's credentials may sit in the URL.
    url: str = Field(description="Base URL of Gestimum's REST server (GESTIMUM_URL)", repr=False)
    company_file: str = Field(description="Company file, e.g. DEMO.Gestimum (GESTIMUM_FICHIER)")
    user: str = Field(description="Gestimum user (GESTIMUM_UTILISATEUR)")
    password: str = Field(default="", description="Gestimum password (GESTIMUM_MOT_PASSE)", repr=False)
    disconnect: bool = False
    exclusive: bool = False
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 300.0
    max_lines_per_request: int = DEFAULT_MAX_LINES
    max_bytes_per_request: int = DEFAULT_MAX_BYTES
    verify_tls: bool = Field(default=True, description="Turning this off is logged loudly at every run")
    ca_bundle: str | None = Field(default=None, description="CA bundle path for a private CA (GESTIMUM_CA_BUNDLE)")
    max_retries: int = 3
    stock_retry_on_503: bool = Field(
        default=True,
        description="A 503 on DocumentsStock is retried (Gestimum refused the work); false when a proxy may "
        "answer 503 after losing the answer: the movements are then in doubt (GESTIMUM_STOCK_RETRY_ON_503)",
    )
    access_check_interval_seconds: int = Field(
        default=86400,
        description="Seconds an access check (or an accepted request) is trusted before the preflight checks "
        "again; 0 checks at every run (GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS)",
    )
    backoff_seconds: float = 1.0
    separator: str = ";"
    qualifier: str = '"'
    charset: str = "cp1252"
    decimal_separator: str = ","
    # {field: label}: where url, company_file, user and password come from, when not the
    # environment's GESTIMUM_* (a company file's defs.yaml); named in messages.
    settings_labels: dict[str, str] = Field(default_factory=dict, description="Where each setting comes from")

    def setting_label(self, field: str) -> str | None:
        return self.settings_labels.get(field) or GESTIMUM_SETTINGS.get(field)

    def setting_names(self) -> dict[str, str]:
        """{default name: this company file's label}, for `rename_settings` (the credentials pair first)."""
        names = {GESTIMUM_SETTINGS[f]: self.setting_label(f) or GESTIMUM_SETTINGS[f] for f in GESTIMUM_SETTINGS}
        user, password = names["GESTIMUM_UTILISATEUR"], names["GESTIMUM_MOT_PASSE"]
        names[SETTING_CREDENTIALS] = f"{user} and {password}" if self.settings_labels else SETTING_CREDENTIALS
        return names

    def line_format(self) -> LineFormat:
        return LineFormat(self.separator, self.qualifier, self.charset or None, self.decimal_separator)

    def client(self, logger: logging.Logger | None = None) -> GestimumClient:
        if not self.url.strip():
            raise ConfigurationError(description=f"{self.setting_label('url')} is empty: set it to Gestimum's URL")
        if not self.company_file.strip():
            raise ConfigurationError(
                description=f"{self.setting_label('company_file')} is empty: set it to the company file name"
            )
        if not self.user.strip():
            raise ConfigurationError(description=f"{self.setting_label('user')} is empty: set it to the Gestimum user")
        verify: bool | str = self.ca_bundle if (self.verify_tls and self.ca_bundle) else self.verify_tls
        try:
            return GestimumClient(
                self.url,
                CompanySettings(self.company_file, self.user, self.password, self.disconnect, self.exclusive),
                fmt=self.line_format(),
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                verify=verify,
                max_retries=self.max_retries,
                backoff_seconds=self.backoff_seconds,
                stock_retry_on_503=self.stock_retry_on_503,
                logger=logger,
            )
        except ValueError as exc:
            raise ConfigurationError(
                description=f"Gestimum settings ({self.setting_label('url')}, GESTIMUM_CA_BUNDLE): {exc}"
            ) from None


class SyncStateDatabase(dg.ConfigurableResource):
    """The sync state store (schema `gestimum_sync`): created by `gestimum-pipeline state init`, upgraded on use."""

    url: str = Field(description="PostgreSQL URL (SYNC_STATE_DATABASE_URL, default CRM_DATABASE_URL)", repr=False)
    schema_name: str = STATE_SCHEMA
    setting: str = Field(
        default=STATE_URL_SETTING, description="The variable the URL comes from, named in error messages"
    )
    init_command: str = Field(default=INIT_COMMAND, description="The command that creates the store, in messages")

    def setting_label(self, field: str) -> str | None:
        return self.setting if field == "url" else None

    # One run's steps share their PostgreSQL connections (db.pooling): Dagster sets a run's
    # resources up once per process before its steps and tears them down after them.
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        start_pooling()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        stop_pooling()

    def open(self, endpoints: EndpointRegistry = ENDPOINTS) -> StateStore:
        store = StateStore(
            self.url, self.schema_name, setting=self.setting, endpoints=endpoints, init_command=self.init_command
        )
        try:
            store.open_existing()  # never creates one: a missing store fails naming the command
        except BaseException:
            store.close()
            raise
        return store


class SyncOptions(dg.ConfigurableResource):
    """Per-run options, settable in the launchpad under `resources.sync_options.config`."""

    dry_run: bool = Field(
        default=False,
        description="Validate with Gestimum's `tester` where documented (Comptes, Clients); send nothing elsewhere",
    )
    force: bool = Field(default=False, description="Re-send master data even if unchanged (never stock movements)")
    lookback_minutes: int = Field(
        default=180, description="Re-read this much before each window to catch rows committed late"
    )
    account_prefix: str = DEFAULT_ACCOUNT_PREFIX
    chunk_size: int = 5000


def fixed_resource(resource: dg.ConfigurableResource) -> dg.ResourceDefinition:
    """`resource` as the deployment wired it, with nothing a run config can set.

    Its config schema is empty, so Dagster refuses any `resources.<key>.config` entry at
    launch ("unexpected config entry "url""). Its `EnvVar` fields are read from the
    environment when a run initializes it, as Dagster would; their names, never a value,
    are listed in the UI's description.
    """
    resource_type = type(resource)
    wired = {name: getattr(resource, name) for name in resource_type.model_fields}
    variables = {name: value.env_var_name for name, value in wired.items() if isinstance(value, dg.EnvVar)}

    def build(context: dg.InitResourceContext) -> Iterator[dg.ConfigurableResource]:
        values = dict(wired)
        for name, variable in variables.items():
            value = os.environ.get(variable)
            if value is None:
                label = resource.setting_label(name) if hasattr(resource, "setting_label") else None
                if label and label.startswith(f"{variable} (") and label.endswith(")"):
                    label = label[len(variable) + 2 : -1]  # "ACME_X (acme/defs.yaml, field)": the place only
                where = f" ({label})" if label and label != variable else ""
                raise ConfigurationError(
                    description=f'{resource_type.__name__}.{name} reads the environment variable "{variable}"{where} '
                    "which is not set: set it where runs execute"
                )
            values[name] = value
        built = resource_type(**values)
        # A function resource skips the class's own hooks: run them as Dagster would.
        built.setup_for_execution(context)
        try:
            yield built
        finally:
            built.teardown_after_execution(context)

    summary = ", ".join(f"{name} from {variable}" for name, variable in variables.items())
    description = " ".join((resource_type.__doc__ or resource_type.__name__).split())
    description += " Set by the deployment" + (f" ({summary})" if summary else "") + ": a run config cannot change it."
    return dg.ResourceDefinition(resource_fn=build, config_schema={}, description=description)


def deployment_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """Every resource fixed by the deployment (`fixed_resource`), except the per-run `SyncOptions`."""
    return {
        key: fixed_resource(value)
        if isinstance(value, dg.ConfigurableResource) and not isinstance(value, SyncOptions)
        else value
        for key, value in resources.items()
    }


def gestimum_api(settings: Settings, *, url: Any, company_file: Any, user: Any, password: Any) -> GestimumApi:
    """The Gestimum resource of a company file: its connection (values or EnvVars) with the
    deployment's timeouts, request sizing, TLS, retry and access-check settings."""
    return GestimumApi(
        url=url,
        company_file=company_file,
        user=user,
        password=password,
        connect_timeout_seconds=settings.connect_timeout_seconds,
        read_timeout_seconds=settings.read_timeout_seconds,
        max_lines_per_request=settings.max_lines_per_request,
        max_bytes_per_request=settings.max_bytes_per_request,
        verify_tls=settings.verify_tls,
        ca_bundle=settings.ca_bundle,
        max_retries=settings.max_retries,
        stock_retry_on_503=settings.stock_retry_on_503,
        access_check_interval_seconds=settings.access_check_interval_seconds,
    )


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    # Secrets stay EnvVars, resolved by Dagster at run time; the settings say which variables.
    state_variable = settings.state_url_variable
    return {
        "crm": CrmDatabase(url=dg.EnvVar("CRM_DATABASE_URL"), schema_name=settings.crm_schema),
        "gestimum": gestimum_api(
            settings,
            url=dg.EnvVar("GESTIMUM_URL"),
            company_file=dg.EnvVar("GESTIMUM_FICHIER"),
            user=dg.EnvVar("GESTIMUM_UTILISATEUR"),
            password=dg.EnvVar("GESTIMUM_MOT_PASSE"),
        ),
        "sync_state": SyncStateDatabase(
            url=dg.EnvVar(state_variable),
            setting="SYNC_STATE_DATABASE_URL"
            if state_variable == "SYNC_STATE_DATABASE_URL"
            else "SYNC_STATE_DATABASE_URL (unset: CRM_DATABASE_URL)",
        ),
        "sync_options": SyncOptions(lookback_minutes=settings.lookback_minutes, account_prefix=settings.account_prefix),
    }
