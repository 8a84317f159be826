"""The code location.

By default, the one company file the environment names (README, 'Configuration'):
`build_definitions(Settings.from_env())`. When the defs module (gestimum_pipeline/company_files,
[tool.dg.project] defs_module) holds a defs.yaml per company file (GestimumSync components),
those company files instead, each under its own key prefix, plus the location's alert sensors.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from gestimum_pipeline.defs.build import alert_definitions, build_definitions
from gestimum_pipeline.defs.settings import Settings

COMPANY_FILES = Path(__file__).parent / "company_files"


def company_files_declared(folder: Path = COMPANY_FILES) -> bool:
    return any(folder.rglob("defs.yaml"))


def load_definitions() -> dg.Definitions:
    settings = Settings.from_env()
    if company_files_declared():
        return dg.Definitions.merge(
            dg.load_from_defs_folder(path_within_project=Path(__file__).parent), alert_definitions(settings)
        )
    return build_definitions(settings)


defs = load_definitions()
