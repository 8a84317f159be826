"""Company files declared in defs.yaml (GestimumSync components), read without Dagster.

The command line's `--company NAME` finds NAME's defs.yaml and reads from it what a command
needs (the state store's URL and schema, the Gestimum URL and company file), so nothing is
typed twice. A field written `{{ env.VARIABLE }}` is read from that variable; every message
names the defs.yaml file, the field and the variable, never a value.

Where the company files are: the defs module of the `dg` project in the current directory
or a parent (`[tool.dg.project] defs_module`, default `<root_module>.defs`), else this
package's own `gestimum_pipeline/company_files/`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

COMPONENT_TYPE = "gestimum_pipeline.components.GestimumSync"
PACKAGE_COMPANY_FILES = Path(__file__).parent / "company_files"

# `{{ env.VARIABLE }}` or `{{ env('VARIABLE') }}`, the whole value: the only template the fields accept.
ENV_TEMPLATE = re.compile(
    r"""^\s*\{\{\s*env(?:\.([A-Za-z_][A-Za-z0-9_]*)|\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*\))\s*\}\}\s*$"""
)


class CompanyFileError(ValueError):
    """A company file that cannot be found or read: the message names the file, the field, the variable."""


def env_variable(raw: object) -> str | None:
    """The variable `raw` names when written `{{ env.VARIABLE }}`, else None."""
    match = ENV_TEMPLATE.match(str(raw)) if isinstance(raw, str) else None
    return (match.group(1) or match.group(2)) if match else None


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _dg_project(start: Path) -> tuple[Path, Mapping[str, Any]] | None:
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return None
            project = data.get("tool", {}).get("dg", {}).get("project")
            return (folder, project) if isinstance(project, Mapping) else None
    return None


def company_files_folder(start: Path | None = None) -> Path:
    """The folder holding the company files' defs.yaml (see the module's docstring)."""
    found = _dg_project((start or Path.cwd()).resolve())
    if found is not None:
        root, project = found
        root_module = str(project.get("root_module") or "")
        module = str(project.get("defs_module") or (f"{root_module}.defs" if root_module else ""))
        if module:
            relative = Path(*module.split("."))
            for base in (root, root / "src"):
                if (base / relative).is_dir():
                    return base / relative
    return PACKAGE_COMPANY_FILES


@dataclass(frozen=True)
class CompanyFile:
    """One GestimumSync component's defs.yaml, as written (templates not rendered)."""

    path: Path
    attributes: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.attributes.get("name", ""))

    @property
    def shown_path(self) -> str:
        return _shown(self.path)

    def where(self, field: str) -> str:
        """`acme/defs.yaml, state_url`: where a value comes from, for messages."""
        return f"{self.shown_path}, {field}"

    def variable(self, field: str) -> str | None:
        """The environment variable `field` is read from, or None when written as a plain value."""
        return env_variable(self.attributes.get(field))

    def value(self, field: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str:
        """`field`'s value: read from its variable when written `{{ env.VARIABLE }}`; raises naming
        the file, the field and the variable when it is missing or unset."""
        environ = os.environ if env is None else env
        raw = self.attributes.get(field)
        if raw is None or raw == "":
            if default is not None:
                return default
            raise CompanyFileError(f"{self.where(field)}: the field is missing; set it in {self.shown_path}")
        variable = env_variable(raw)
        if variable is not None:
            value = environ.get(variable, "").strip()
            if not value:
                raise CompanyFileError(
                    f"{variable} is not set ({self.where(field)} reads it: {{{{ env.{variable} }}}}); "
                    "set it in this shell's environment"
                )
            return value
        if isinstance(raw, str) and "{{" in raw:
            raise CompanyFileError(
                f"{self.where(field)}: only a whole {{{{ env.VARIABLE }}}} template is read outside Dagster"
            )
        return str(raw)

    def origin(self, field: str) -> str:
        """How a message names the setting: `ACME_STATE_DATABASE_URL (acme/defs.yaml, state_url)`."""
        variable = self.variable(field)
        return f"{variable} ({self.where(field)})" if variable else self.where(field)

    def state_field(self) -> str:
        """The field the state store's URL comes from: state_url, default crm_url."""
        return "state_url" if self.attributes.get("state_url") else "crm_url"

    def state_schema(self) -> str:
        from gestimum_pipeline.sync.state import DEFAULT_SCHEMA

        return self.value("state_schema", DEFAULT_SCHEMA)

    def variables(self) -> dict[str, str]:
        """Every environment variable the file reads: {variable: field}."""
        found: dict[str, str] = {}
        for field, raw in self.attributes.items():
            variable = env_variable(raw)
            if variable is not None:
                found.setdefault(variable, field)
        return found


def _documents(path: Path) -> Iterator[Mapping[str, Any]]:
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise CompanyFileError(f"{_shown(path)} cannot be read: {exc}") from None
    for document in documents:
        if isinstance(document, Mapping):
            yield document


def company_files(folder: Path | None = None) -> list[CompanyFile]:
    """Every GestimumSync declared under `folder` (default: `company_files_folder()`)."""
    root = folder or company_files_folder()
    found: list[CompanyFile] = []
    for path in sorted(root.rglob("defs.yaml")):
        for document in _documents(path):
            kind = str(document.get("type", ""))
            if kind == COMPONENT_TYPE or kind.endswith(".GestimumSync"):
                attributes = document.get("attributes") or {}
                found.append(CompanyFile(path, attributes if isinstance(attributes, Mapping) else {}))
    return found


def find_company(name: str, folder: Path | None = None) -> CompanyFile:
    """The company file `name` (its defs.yaml's `name`); raises listing the declared ones."""
    root = folder or company_files_folder()
    declared = company_files(root)
    for company in declared:
        if company.name == name:
            return company
    names = ", ".join(sorted(c.name for c in declared)) or "none"
    raise CompanyFileError(
        f"no company file named {name!r} under {_shown(root)} (a defs.yaml with type {COMPONENT_TYPE} and "
        f"name: {name}); declared: {names}"
    )
