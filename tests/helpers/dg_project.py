"""A `dg` project on disk, as docs/company-files.md has a user make one: company files as components."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DEFINITIONS = """\
from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def write_dg_project(
    root: Path, module: str, companies: Mapping[str, str] | None = None, *, code_location: bool = True
) -> Path:
    """Writes `root/pyproject.toml` and the package `root/<module>` with its `defs/` folder; each
    company file's defs.yaml (name -> text) goes to `defs/<name>/defs.yaml`. With `code_location`,
    the package has a definitions module loading the defs folder (what `dg dev` and `dg launch`
    load); without, only the folders (what the CLI's `--company` reads). Returns the defs folder."""
    target = f'code_location_target_module = "{module}.definitions"\n' if code_location else ""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{module.replace("_", "-")}"\nversion = "0"\n\n'
        '[tool.dg]\ndirectory_type = "project"\n\n'
        f'[tool.dg.project]\nroot_module = "{module}"\n{target}'
    )
    package = root / module
    defs = package / "defs"
    defs.mkdir(parents=True, exist_ok=True)
    if code_location:
        (package / "__init__.py").write_text("")
        (defs / "__init__.py").write_text("")
        (package / "definitions.py").write_text(DEFINITIONS)
    for name, text in (companies or {}).items():
        (defs / name).mkdir()
        (defs / name / "defs.yaml").write_text(text)
    return defs


def company_defs_yaml(name: str, **attributes: str | int) -> str:
    """A company file's defs.yaml as docs/company-files.md writes one: company file `<NAME>.Gestimum`,
    user SYNC, its URL, password and CRM read from `<NAME>_…` variables; then `attributes`."""
    upper = name.upper()
    lines = [
        f"  name: {name}",
        f'  gestimum_url: "{{{{ env.{upper}_GESTIMUM_URL }}}}"',
        f"  company_file: {upper}.Gestimum",
        "  user: SYNC",
        f'  password: "{{{{ env.{upper}_GESTIMUM_PASSWORD }}}}"',
        f'  crm_url: "{{{{ env.{upper}_CRM_DATABASE_URL }}}}"',
        *(f"  {key}: {value}" for key, value in attributes.items()),
    ]
    return "type: gestimum_pipeline.components.GestimumSync\nattributes:\n" + "\n".join(lines) + "\n"


def company_env(name: str, gestimum_url: str, crm_url: str) -> dict[str, str]:
    """The variables `company_defs_yaml(name)` reads (the simulator's password is `<name>-pw`)."""
    upper = name.upper()
    return {
        f"{upper}_GESTIMUM_URL": gestimum_url,
        f"{upper}_GESTIMUM_PASSWORD": f"{name}-pw",
        f"{upper}_CRM_DATABASE_URL": crm_url,
    }
