"""The code location: the graph `build_definitions` assembles from the environment's settings."""

from __future__ import annotations

from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings

defs = build_definitions(Settings.from_env())
