"""What every benchmark variant shares: the data window, request sizing and the client."""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from gestimum_pipeline.defs.partitions import daily_partitions
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.gestimum.batching import DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings, LineFormat
from gestimum_pipeline.sync.endpoints import ENDPOINTS

# The order the Dagster job runs the sinks in (parents first).
ENDPOINT_ORDER = ENDPOINTS.names
# The reference CRM's rows are spread over whole UTC days (`load_bulk`), so the bench runs the
# pipeline with UTC daily partitions: `--days 1` is then exactly one partition. The time zone
# changes which rows a day holds, not what Dagster or the sync does per row or per partition.
TIMEZONE = "UTC"
SETTINGS = Settings(timezone=TIMEZONE)
PARTITIONS = daily_partitions(SETTINGS)
COMPANY = CompanySettings("BENCH.Gestimum", "BENCH", "")
LOOKBACK = timedelta(minutes=SETTINGS.lookback_minutes)
DATA_START = date(2024, 1, 1)


@dataclass(frozen=True)
class Setup:
    crm_url: str
    sink_url: str
    days: int
    max_lines: int = DEFAULT_MAX_LINES
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def partition_range(self) -> tuple[str, str]:
        """The first and last daily partitions (UTC) covering the data: `days` partitions."""
        end = DATA_START + timedelta(days=self.days - 1)
        return DATA_START.isoformat(), end.isoformat()

    def window(self) -> tuple[datetime, datetime]:
        """The time window the pipeline reads for that range (look-back included)."""
        first, last = self.partition_range
        start = PARTITIONS.time_window_for_partition_key(first).start
        end = PARTITIONS.time_window_for_partition_key(last).end
        return start - LOOKBACK, end

    def client(self) -> GestimumClient:
        return GestimumClient(self.sink_url, COMPANY, fmt=LineFormat(), max_retries=0)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Setup:
        return cls(**json.loads(text))


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def emit(figures: dict[str, Any]) -> None:
    """A variant's result: one JSON line on stdout, read by bench/run.py."""
    figures["peak_rss_mib_self"] = round(peak_rss_mib(), 1)
    print("BENCH-RESULT " + json.dumps(figures), flush=True)
