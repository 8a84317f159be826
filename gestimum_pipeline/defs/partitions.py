"""The one daily partitions definition shared by every asset of the sync."""

from __future__ import annotations

import dagster as dg

from gestimum_pipeline.defs.settings import START_DATE, TIMEZONE

# end_offset=1 includes today's partition, so the hourly schedule can keep it fresh.
daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone=TIMEZONE, end_offset=1)

# A backfill of any range runs as one run: the assets read the whole range's window in
# one pass, stream it, and send it in requests as large as Gestimum allows.
backfill_policy = dg.BackfillPolicy.single_run()
