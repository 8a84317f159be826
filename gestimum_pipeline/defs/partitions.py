"""The one daily partitions definition shared by every asset of the sync, and its backfill policy."""

from __future__ import annotations

import re
import warnings

import dagster as dg

from gestimum_pipeline.defs.settings import Settings

# A backfill of any range runs as one run: the assets read the whole range's window in
# one pass, stream it, and send it in requests as large as Gestimum allows.
backfill_policy = dg.BackfillPolicy.single_run()

# Dagster warns at every load, once per asset, that `backfill_policy` is in beta: our deliberate
# use is not news (15 warnings a `dg launch`), nor is the one Dagster's own parser raises for the
# README's `dg launch --assets '*'` (AssetSelection.all(include_sources=...)). Only these exact
# messages are silenced: any other beta API still warns, and a reworded one shows again
# (tests/e2e/test_quiet_output.py, tests/e2e/test_cli_materialize.py).
_BETA = (
    "is currently in beta, and may have breaking changes in minor version releases, with behavior changes in "
    "patch releases."
)
SILENCED_BETA_WARNINGS = (
    *(f"Parameter `backfill_policy` of function `{decorator}` {_BETA}" for decorator in ("asset", "multi_asset")),
    f"Parameter `include_sources` of function `AssetSelection.all` {_BETA}",
)
for _message in SILENCED_BETA_WARNINGS:
    warnings.filterwarnings("ignore", message=re.escape(_message) + r"\Z", category=dg.BetaWarning)


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    # end_offset=1 includes today's partition, so the hourly schedule can keep it fresh.
    return dg.DailyPartitionsDefinition(start_date=settings.start_date, timezone=settings.timezone, end_offset=1)
