"""Dagster components of the project: `GestimumSync`, one per company file (docs/company-files.md)."""

from gestimum_pipeline.components.gestimum_sync import GestimumSync

__all__ = ["GestimumSync"]
