"""The one daily partitions definition shared by every asset of the sync, and its backfill policy."""

from __future__ import annotations

import dagster as dg

from gestimum_pipeline.defs.settings import Settings

# A backfill of any range runs as one run: the assets read the whole range's window in
# one pass, stream it, and send it in requests as large as Gestimum allows.
backfill_policy = dg.BackfillPolicy.single_run()


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    # end_offset=1 includes today's partition, so the hourly schedule can keep it fresh.
    return dg.DailyPartitionsDefinition(start_date=settings.start_date, timezone=settings.timezone, end_offset=1)
