"""Change probes: has the CRM changed since the last look, and on which days? (The change sensor's logic.)

The probe reads, per relation, its *tail*: the rows whose change column is at or after a
bound, and signs it (row count and a sum of a hash of each row's version, as
`queries.window_signature` does: `xmin`/`ctid` for tables, the whole row for views). Each
probe signs two tails in one index range scan: the one from the previous probe's bound,
compared with the signature the previous probe kept (the cursor), and the one from a new
bound, `PROBE_MARGIN` before now, kept for the next probe.

Why a tail and not today's and yesterday's windows: a window signature, or a count, scans
every row of the window (a million after a bulk load); the tail holds only the rows changed
in the last minutes, so a quiet CRM costs one index descent per relation (four lookups), and
a busy one what changed since the last probe. Any insert, update or delete of a row whose
change time is at or after the previous bound changes the compared signature, so:

* a commit is seen by the first probe after it, if its change time is at most `PROBE_MARGIN`
  older than the previous probe (the application sets `updated_at` to `now()`, the start of
  its transaction: transactions shorter than the margin are always seen);
* a row committed with an older change time (a longer transaction, a stock movement dated in
  the past) is not seen here: the schedule, whose windows look back
  `GESTIMUM_SYNC_LOOKBACK_MINUTES`, is the safety net for those;
* an edited stock movement (its `moved_at` never moves) is seen only within the margin.

Why not triggers and LISTEN/NOTIFY: they need DDL in the CRM (impossible over views the
CRM's owner keeps), a trigger on every write of the CRM, and a session holding LISTEN,
which a sensor's tick (a short call into the code server) does not have; notifications sent
while nobody listens are lost, so a probe would still be needed.

The probe never waits: it runs read-only with a short `lock_timeout` (DDL holding a
relation makes the tick skip, `ProbeBusy`) and a `statement_timeout`; plain reads take no
lock that a CRM write waits for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from gestimum_pipeline.crm.contract import RELATIONS
from gestimum_pipeline.db import ident, validate_identifier

# How far before the probe the next probe's tail starts: longer CRM transactions are left to the schedule.
PROBE_MARGIN = timedelta(minutes=10)
# A cursor older than this (the sensor was off, the daemon down) is not compared: its tail could hold
# days of rows. The days it spans are reported changed instead (at most yesterday and today).
MAX_TAIL_AGE = timedelta(days=1)
LOCK_TIMEOUT = "500ms"  # DDL holding a relation: give way at once, the next tick probes again
STATEMENT_TIMEOUT = "10s"
CURSOR_VERSION = 1
# Relation kinds whose rows carry xmin/ctid; other kinds (views, foreign tables) are signed by their row text.
_VERSIONED_KINDS = ("r", "p", "m")


class ProbeBusy(RuntimeError):
    """The probe gave way to a lock or its time limit: nothing was read, try again next tick."""


Signature = tuple[int, str]  # (rows, sum of their version hashes as a decimal string)


@dataclass(frozen=True)
class Tail:
    """One relation's tail from the compared bound: its signature and the span of its change times."""

    signature: Signature
    earliest: datetime | None
    latest: datetime | None


@dataclass(frozen=True)
class Probe:
    at: datetime  # the CRM's clock at the probe (transaction start)
    compared_since: datetime | None  # the previous bound, None when there was nothing to compare
    since: datetime  # the new bound: what the next probe compares from
    compared: Mapping[str, Tail]  # tails from compared_since (empty when None)
    kept: Mapping[str, Signature]  # signatures from `since`, for the next probe


@dataclass(frozen=True)
class ChangeCursor:
    """What a probe keeps for the next one (the sensor's cursor, as JSON)."""

    since: datetime
    tails: Mapping[str, Signature] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "since": self.since.isoformat(),
                "tails": {name: list(sig) for name, sig in sorted(self.tails.items())},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> ChangeCursor | None:
        """The cursor, or None for none or one this version cannot read (the next probe starts afresh)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                return None
            since = datetime.fromisoformat(data["since"])
            tails = {str(name): (int(n), str(Decimal(str(h)))) for name, (n, h) in data["tails"].items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if since.tzinfo is None:
            return None
        return cls(since, tails)


@dataclass(frozen=True)
class Changes:
    relations: tuple[str, ...]  # the relations whose compared tail differs
    first: datetime | None  # the span of change times to sync (None: nothing changed)
    last: datetime | None
    cursor: ChangeCursor  # keep this once the changes are acted on
    stale: bool = False  # the cursor was too old to compare: the span is what it may have missed

    @property
    def any(self) -> bool:
        return self.first is not None


# One round trip: the transaction's limits, its time and the relations' kinds (tables have row versions).
_START = (
    "SET TRANSACTION READ ONLY; "
    f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'; "
    "SELECT now(), (SELECT coalesce(json_object_agg(c.relname, c.relkind), '{}') FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s))"
)


def _tail_query(schema: str, name: str, kind: str) -> sql.Composable:
    rel = RELATIONS[name]
    # A table's row version changes with any update; a view has none, its row text stands in.
    version = sql.SQL("t.xmin::text || ':' || t.ctid::text" if kind in _VERSIONED_KINDS else "t::text")
    return sql.SQL(
        "SELECT {name}, count(*), coalesce(sum(h), 0), min(c), max(c),"
        " count(*) FILTER (WHERE c >= %(since)s), coalesce(sum(h) FILTER (WHERE c >= %(since)s), 0)"
        " FROM (SELECT t.{change} AS c, hashtextextended({version}, 0) AS h"
        " FROM {schema}.{table} t WHERE t.{change} >= %(compared)s) tail"
    ).format(
        name=sql.Literal(name),
        change=sql.Identifier(rel.change_column),
        version=version,
        schema=ident(schema, "CRM schema"),
        table=sql.Identifier(rel.name),
    )


def probe(
    conn: psycopg2.extensions.connection,
    schema: str,
    cursor: ChangeCursor | None,
    *,
    relations: Sequence[str] = tuple(RELATIONS),
    margin: timedelta = PROBE_MARGIN,
    max_tail_age: timedelta = MAX_TAIL_AGE,
) -> Probe:
    """Signs each relation's tails in one read-only statement; the caller owns `conn` (not autocommit).

    Raises ProbeBusy when a lock or the time limit stopped it, psycopg2.Error for anything else
    (a missing relation: the contract check of the next run names it).
    """
    schema = validate_identifier(schema, "CRM schema")
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown:
        raise ValueError(f"unknown relations {unknown}; the contract's: {', '.join(RELATIONS)}")
    if conn.autocommit:
        raise ValueError("probe needs a connection in a transaction (autocommit off) for its local limits")
    try:
        with conn.cursor() as cur:
            cur.execute(_START, (schema, list(relations)))
            at, kinds = cur.fetchone()
            # Never move the bound back (a clock set back): a row seen once is not seen again as new.
            since = at - margin
            compared = cursor.since if cursor is not None and at - cursor.since <= max_tail_age else None
            if compared is not None:
                since = max(since, compared)
            query = sql.SQL(" UNION ALL ").join(_tail_query(schema, r, kinds.get(r, "v")) for r in relations)
            cur.execute(query, {"since": since, "compared": since if compared is None else compared})
            rows = cur.fetchall()
    except (psycopg2.errors.LockNotAvailable, psycopg2.errors.QueryCanceled) as exc:
        reason = " ".join((exc.pgerror or type(exc).__name__).split())
        raise ProbeBusy(f"the CRM probe gave way: {reason}") from None
    finally:
        conn.rollback()  # read only: ends the snapshot and the local settings
    tails: dict[str, Tail] = {}
    kept: dict[str, Signature] = {}
    for name, n, h, earliest, latest, kept_n, kept_h in rows:
        tails[name] = Tail((int(n), str(Decimal(h))), earliest, latest)
        kept[name] = (int(kept_n), str(Decimal(kept_h)))
    return Probe(at, compared, since, tails if compared is not None else {}, kept)


def compare(cursor: ChangeCursor | None, result: Probe) -> Changes:
    """What changed between the cursor's probe and this one, and the cursor to keep."""
    kept = ChangeCursor(result.since, dict(result.kept))
    if cursor is None:
        # First probe (the sensor just turned on): watch from now; the schedule covers what came before.
        return Changes((), None, None, kept)
    if result.compared_since is None:
        # A stale cursor: its tail was not read. Sync the span it may have missed, up to the probe.
        return Changes((), result.at - MAX_TAIL_AGE, result.at, kept, stale=True)
    changed = tuple(name for name, tail in result.compared.items() if cursor.tails.get(name) != tail.signature)
    if not changed:
        return Changes((), None, None, kept)
    earliest = [t.earliest for n in changed if (t := result.compared[n]).earliest is not None]
    latest = [t.latest for n in changed if (t := result.compared[n]).latest is not None]
    # A tail left empty changed by deletions, of rows whose change time was in [compared_since, at].
    first = min(earliest) if len(earliest) == len(changed) else result.compared_since
    last = max([*latest, result.at]) if latest else result.at
    return Changes(changed, min(first, result.at), last, kept)


def days_between(first: datetime, last: datetime, timezone: str) -> list[str]:
    """The days (YYYY-MM-DD, in `timezone`) from `first`'s to `last`'s, both included."""
    tz = ZoneInfo(timezone)
    start: date = first.astimezone(tz).date()
    end: date = last.astimezone(tz).date()
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
