"""Demo CRM data: realistic French customers for the demo, and fast bulk rows for the benchmark.

:func:`load_demo_data` writes a few customers a day with what real CRMs hold:
accents (cp1252 has them), apostrophes, semicolons and double quotes inside names
(they must survive the line encoding), postal codes with a leading zero, and, on
request, a handful of rows that Gestimum or our validation must reject (on the
first day of the call). It is deterministic per (seed, day) and idempotent: loading
a day twice changes nothing, and loading days one at a time, in order, gives the
same rows as loading them together.

:func:`load_bulk` COPYs millions of valid rows, for the benchmark.
"""

from __future__ import annotations

import io
import itertools
import random
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import execute_values

from gestimum_pipeline.crm.contract import (
    CONTACTS,
    CUSTOMER_ITEM_REFERENCES,
    CUSTOMERS,
    DEFAULT_SCHEMA,
    DIRECTION_IN,
    DIRECTION_OUT,
    STOCK_MOVEMENTS,
    Relation,
)
from gestimum_pipeline.db import ident

# Taken from the simulator's default catalog (simulator/catalog_default.json), so demo
# rows import cleanly; tests/integration/test_crm.py fails if the two drift apart.
DEMO_ITEMS: tuple[str, ...] = ("ELS", "A10", "A11", "A12", "A20", "ELS2", "CLAVIER", "SOURIS", "ECRAN22", "TONER-NOIR")
DEMO_WAREHOUSES: tuple[str, ...] = ("001", "002")

_MICROSECOND = timedelta(microseconds=1)
MAX_CUSTOMERS_PER_DAY = 8999  # codes C<yyyymmdd>-0001..8999; 9xxx is kept for the bad rows

# --------------------------------------------------------------------------- word lists

_TRADES = (
    "Boulangerie",
    "Pâtisserie",
    "Fromagerie",
    "Menuiserie",
    "Ébénisterie",
    "Garage",
    "Quincaillerie",
    "Transports",
    "Imprimerie",
    "Cabinet",
    "Brasserie",
    "Librairie",
    "Plomberie",
    "Épicerie fine",
)
_FAMILY_NAMES = (
    "Dupont",
    "Lefèvre",
    "Gérard",
    "Chevalier",
    "Noël",
    "Lemaître",
    "Fontaine",
    "Rousseau",
    "Bérard",
    "Giraud",
    "Faure",
    "Mercier",
    "Béranger",
    "Lacroix",
    "Perrin",
)
_SUFFIXES = ("SARL", "SAS", "& Fils", "EURL", "SA", "", "", "")
# Names a delimited line must quote (separator, qualifier) or that test the charset,
# by customer index: every day has one of each.
_TRICKY_NAMES: dict[int, tuple[str, ...]] = {
    2: ("Société Générale d'Équipement", "L'Œuf ou la Poule"),
    3: ("Dupont; Martin & Associés", 'Pâtis\'Serie "Chez Zoé"; Annecy'),
    4: ('Bar "Le Zinc"', 'Garage "Au Bon Coin"'),
}
_STREET_TYPES = ("rue", "avenue", "boulevard", "place", "chemin", "allée", "impasse", "quai")
_STREET_NAMES = (
    "de la République",
    "Victor-Hugo",
    "des Œillets",
    "Jean-Jaurès",
    "du Général-de-Gaulle",
    "Saint-Honoré",
    "des Tanneurs",
    "de l'Église",
    "Pasteur",
    "des Prés",
)
_STREET2 = ("Bâtiment B", "ZI des Prés", "BP 42", "3e étage", "Résidence Les Tilleuls", None, None, None, None)
_CITIES = (
    ("75011", "Paris"),
    ("69003", "Lyon"),
    ("13008", "Marseille"),
    ("31000", "Toulouse"),
    ("44000", "Nantes"),
    ("67000", "Strasbourg"),
    ("59000", "Lille"),
    ("33000", "Bordeaux"),
    ("06000", "Nice"),
    ("01000", "Bourg-en-Bresse"),
    ("25000", "Besançon"),
    ("45000", "Orléans"),
    ("30000", "Nîmes"),
    ("42000", "Saint-Étienne"),
    ("97400", "Saint-Denis"),
    ("20000", "Ajaccio"),
)
_FIRST_NAMES = ("Élodie", "François", "Zoé", "Jean-Luc", "Anaïs", "Hélène", "Loïc", "Maëlle", "Noémie", "Benoît", None)
_LAST_NAMES = ("Martin", "Bernard", "Dubois", "Lefèvre", "Girard", "N'Diaye", "d'Ornano", "Bonnet", "Lambert", "Müller")
_DOMAINS = ("orange.fr", "free.fr", "laposte.net", "gmail.com", "wanadoo.fr")
_RELATION_NAMES = (CUSTOMERS.name, CONTACTS.name, CUSTOMER_ITEM_REFERENCES.name, STOCK_MOVEMENTS.name)


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class BadRow:
    """A demo row that Gestimum or our validation should reject, and why."""

    relation: str
    key: tuple[Any, ...]
    reason: str


@dataclass(frozen=True)
class DemoSummary:
    customers: int  # new customers written
    contacts: int
    references: int
    movements: int
    updated_customers: int  # customers of earlier days modified again on a later day
    start: datetime  # local midnight of the first day (aware)
    end: datetime  # local midnight after the last day: all rows change in [start, end)
    bad_rows: tuple[BadRow, ...] = field(default_factory=tuple)

    def counts(self) -> dict[str, int]:
        """Rows written per relation name (bad rows included)."""
        return {
            CUSTOMERS.name: self.customers,
            CONTACTS.name: self.contacts,
            CUSTOMER_ITEM_REFERENCES.name: self.references,
            STOCK_MOVEMENTS.name: self.movements,
        }


# --------------------------------------------------------------------------- demo data


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_text.lower() if ch.isalnum()) or "contact"


def _phone(rng: random.Random) -> str:
    prefix = rng.choice(("01", "02", "03", "04", "05", "06", "07", "09"))
    return prefix + "".join(f" {rng.randrange(100):02d}" for _ in range(4))


def _unused(candidates: Iterable[str], used: Sequence[str]) -> str:
    return next(c for c in candidates if c not in set(used))


class _Day:
    """Random values for one local day, timestamps inside [start, end)."""

    def __init__(self, seed: int, day: date, zone: ZoneInfo, not_after: datetime | None = None):
        # A str seed is hashed deterministically (unlike hash()), across runs and machines.
        self.rng = random.Random(f"gestimum-demo:{seed}:{day.isoformat()}")
        self.day = day
        # Local midnights: a DST day is 23 or 25 hours long, hence two conversions.
        self.start = datetime.combine(day, time(), zone)
        self.end = datetime.combine(day + timedelta(days=1), time(), zone)
        # Today's rows change no later than now: a CRM has no change in the future.
        if not_after is not None and self.start + timedelta(seconds=1) < not_after < self.end:
            self.end = not_after
        self.span_us = int((self.end.astimezone(UTC) - self.start.astimezone(UTC)) / _MICROSECOND)

    def at(self, offset_us: int) -> datetime:
        # Arithmetic in UTC: aware local arithmetic is wall-clock and breaks across DST.
        return (self.start.astimezone(UTC) + timedelta(microseconds=offset_us)).astimezone(self.start.tzinfo)

    def moment(self, after: datetime | None = None) -> datetime:
        # Both sides in UTC: same-tzinfo subtraction is wall-clock, wrong on DST days.
        low = 0 if after is None else int((after.astimezone(UTC) - self.start.astimezone(UTC)) / _MICROSECOND)
        return self.at(self.rng.randrange(low, self.span_us))

    @property
    def last_moment(self) -> datetime:
        return self.at(self.span_us - 1)


def _customer_row(d: _Day, code: str, index: int, updated_at: datetime) -> tuple[Any, ...]:
    rng = d.rng
    if index in _TRICKY_NAMES:
        choices = _TRICKY_NAMES[index]
        name = choices[d.day.toordinal() % len(choices)]
    else:
        name = " ".join(p for p in (rng.choice(_TRADES), rng.choice(_FAMILY_NAMES), rng.choice(_SUFFIXES)) if p)
    # A leading zero every day: postal codes are text, never numbers.
    postal_code, city = ("01000", "Bourg-en-Bresse") if index == 2 else rng.choice(_CITIES)
    street = f"{rng.randint(1, 180)} {rng.choice(_STREET_TYPES)} {rng.choice(_STREET_NAMES)}"
    email = f"contact@{_slug(name)[:20]}.fr" if rng.random() < 0.8 else None
    phone = _phone(rng) if rng.random() < 0.9 else None
    return (code, name, street, rng.choice(_STREET2), postal_code, city, email, phone, updated_at)


def _contact_row(d: _Day, code: str, customer_code: str, updated_at: datetime) -> tuple[Any, ...]:
    rng = d.rng
    last_name, first_name = rng.choice(_LAST_NAMES), rng.choice(_FIRST_NAMES)
    email = f"{_slug(first_name or '')}.{_slug(last_name)}@{rng.choice(_DOMAINS)}" if rng.random() < 0.7 else None
    return (code, customer_code, last_name, first_name, email, _phone(rng) if rng.random() < 0.6 else None, updated_at)


def _price(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(150, 250_000)) / 100


def _quantity(rng: random.Random) -> Decimal:
    # Mostly whole units, sometimes weights or lengths with decimals.
    if rng.random() < 0.7:
        return Decimal(rng.randint(1, 50))
    return Decimal(rng.randint(1, 50_000)) / 1000


def _upsert(
    cur: psycopg2.extensions.cursor,
    schema: str,
    rel: Relation,
    rows: list[tuple[Any, ...]],
) -> None:
    if not rows:
        return
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in rel.columns)
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in rel.key_columns)
    table = sql.SQL("{}.{}").format(ident(schema, "CRM schema"), sql.Identifier(rel.name))
    if rel is STOCK_MOVEMENTS:
        conflict = sql.SQL("DO NOTHING")  # movements are immutable
    else:
        # Never let an older version (a day loaded again later) overwrite a newer one.
        conflict = sql.SQL("DO UPDATE SET {assignments} WHERE {table}.{change} <= EXCLUDED.{change}").format(
            assignments=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in rel.value_columns
            ),
            table=table,
            change=sql.Identifier(rel.change_column),
        )
    query = sql.SQL("INSERT INTO {table} ({columns}) VALUES %s ON CONFLICT ({keys}) {conflict}").format(
        table=table, columns=columns, keys=keys, conflict=conflict
    )
    execute_values(cur, query.as_string(cur), rows, page_size=1000)


def load_demo_data(
    conn: psycopg2.extensions.connection,
    schema: str = DEFAULT_SCHEMA,
    *,
    days: Sequence[date],
    customers_per_day: int = 20,
    seed: int = 42,
    tz: str = "Europe/Paris",
    include_bad_rows: bool = True,
    items: Sequence[str] = DEMO_ITEMS,
    warehouses: Sequence[str] = DEMO_WAREHOUSES,
    now: datetime | None = None,
) -> DemoSummary:
    """Write demo rows for each of `days` (local days in `tz`) into the reference tables; commits.

    Per day: `customers_per_day` new customers (codes ``C<yyyymmdd>-<nnnn>``), 1-3
    contacts each (``<customer>-<k>``), 0-2 item references each, two stock
    movements per customer (ids ``<yyyymmdd><nnnnnn>``), and a tenth of the
    previous calendar day's customers moving to a new street (when they exist).
    The first customer of a day changes exactly at local midnight and the last
    one a microsecond before the next, to exercise window boundaries. With
    `include_bad_rows`, the first day also gets the rows of ``DemoSummary.bad_rows``.

    Load days in chronological order (one call or several): a day's changes only
    apply over older versions. Rows of a day still under way change no later than `now`
    (default: the current time), never in the future.
    """
    if not days:
        raise ValueError("days must not be empty")
    if not 0 <= customers_per_day <= MAX_CUSTOMERS_PER_DAY:
        raise ValueError(f"customers_per_day must be between 0 and {MAX_CUSTOMERS_PER_DAY}, got {customers_per_day}")
    if not items or not warehouses:
        raise ValueError("items and warehouses must not be empty")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None
    ident(schema, "CRM schema")

    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _RELATION_NAMES}
    moves: list[tuple[Any, ...]] = []  # (code, new street, updated_at) for earlier customers
    bad: list[BadRow] = []
    new_customers = 0
    ordered_days = sorted(set(days))
    now = now or datetime.now(UTC)

    for day in ordered_days:
        d = _Day(seed, day, zone, not_after=now)
        stamp = f"{day:%Y%m%d}"
        for i in range(1, customers_per_day + 1):
            if i == 1:
                updated_at = d.start
            elif i == customers_per_day:
                updated_at = d.last_moment
            else:
                updated_at = d.moment()
            code = f"C{stamp}-{i:04d}"
            rows[CUSTOMERS.name].append(_customer_row(d, code, i, updated_at))
            new_customers += 1
            for k in range(1, d.rng.randint(1, 3) + 1):
                rows[CONTACTS.name].append(_contact_row(d, f"{code}-{k}", code, d.moment(after=updated_at)))
            for item in d.rng.sample(list(items), k=min(len(items), d.rng.randint(0, 2))):
                reference = f"REF-{d.rng.randrange(10_000, 99_999)}"
                rows[CUSTOMER_ITEM_REFERENCES.name].append(
                    (code, item, reference, _price(d.rng), d.moment(after=updated_at))
                )
        for n, moved_at in enumerate(sorted(d.moment() for _ in range(2 * customers_per_day)), start=1):
            direction = DIRECTION_IN if d.rng.random() < 0.5 else DIRECTION_OUT
            movement = (int(f"{stamp}{n:06d}"), direction, d.rng.choice(warehouses), d.rng.choice(items))
            rows[STOCK_MOVEMENTS.name].append((*movement, _quantity(d.rng), moved_at))

        # Yesterday's customers, chosen from today's random stream: deterministic per day.
        previous = f"{day - timedelta(days=1):%Y%m%d}"
        for i in d.rng.sample(range(1, customers_per_day + 1), k=customers_per_day // 10):
            street = f"{d.rng.randint(1, 180)} {d.rng.choice(_STREET_TYPES)} {d.rng.choice(_STREET_NAMES)}"
            moves.append((f"C{previous}-{i:04d}", street, d.moment()))

        if include_bad_rows and day == ordered_days[0]:
            first_customer = rows[CUSTOMERS.name][-customers_per_day] if customers_per_day else None
            bad_rows, bad_reasons = _bad_rows(d, stamp, items, warehouses, first_customer=first_customer)
            for name, extra in bad_rows.items():
                rows[name].extend(extra)
            new_customers += len(bad_rows[CUSTOMERS.name])
            bad.extend(bad_reasons)

    with conn.cursor() as cur:
        for rel in (CUSTOMERS, CONTACTS, CUSTOMER_ITEM_REFERENCES, STOCK_MOVEMENTS):
            _upsert(cur, schema, rel, rows[rel.name])
        updated = _move_customers(cur, schema, moves)
    conn.commit()

    return DemoSummary(
        customers=new_customers,
        contacts=len(rows[CONTACTS.name]),
        references=len(rows[CUSTOMER_ITEM_REFERENCES.name]),
        movements=len(rows[STOCK_MOVEMENTS.name]),
        updated_customers=updated,
        start=datetime.combine(ordered_days[0], time(), zone),
        end=datetime.combine(ordered_days[-1] + timedelta(days=1), time(), zone),
        bad_rows=tuple(bad),
    )


def _move_customers(cur: psycopg2.extensions.cursor, schema: str, moves: list[tuple[Any, ...]]) -> int:
    """Give existing customers a new street; a customer that does not exist is skipped."""
    if not moves:
        return 0
    query = sql.SQL(
        "UPDATE {table} AS c SET street = v.street, updated_at = v.updated_at "
        "FROM (VALUES %s) AS v(code, street, updated_at) "
        "WHERE c.code = v.code AND c.updated_at < v.updated_at RETURNING c.code"
    ).format(table=sql.SQL("{}.{}").format(ident(schema, "CRM schema"), sql.Identifier(CUSTOMERS.name)))
    # One page: RETURNING rows of earlier pages would be lost otherwise.
    return len(execute_values(cur, query.as_string(cur), moves, page_size=len(moves), fetch=True))


def _bad_rows(
    d: _Day,
    stamp: str,
    items: Sequence[str],
    warehouses: Sequence[str],
    *,
    first_customer: tuple[Any, ...] | None,
) -> tuple[dict[str, list[tuple[Any, ...]]], list[BadRow]]:
    """Rows Gestimum or our validation must reject, keyed by relation name, and why."""
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _RELATION_NAMES}
    bad: list[BadRow] = []

    def customer(number: int, name: str, street: str, reason: str) -> None:
        code = f"C{stamp}-{number}"
        rows[CUSTOMERS.name].append((code, name, street, None, "75002", "Paris", None, None, d.moment()))
        bad.append(BadRow(CUSTOMERS.name, (code,), reason))

    customer(9001, "Boulangerie Au Soleil ☀️🥐", "3 rue du Four", "name has emoji, outside Windows-1252")
    long_name = ("Société Coopérative Agricole et Viticole des Coteaux du Lyonnais " * 4)[:200]
    customer(9002, long_name, "1 place Bellecour", "name of 200 characters, longer than Gestimum's 60")
    customer(9003, "Menuiserie Bérard", "12 rue des Lilas\nBâtiment C", "street contains a line break")
    # A contact of the rejected 9001: held until its customer imports, not sent to certain failure.
    held_contact = f"C{stamp}-9001-1"
    rows[CONTACTS.name].append((held_contact, f"C{stamp}-9001", "Soleil", "Marie", None, None, d.moment()))
    bad.append(BadRow(CONTACTS.name, (held_contact,), f"customer C{stamp}-9001 is rejected: held"))

    orphan_customer = f"C{stamp}-9999"  # never created
    contact_code = f"{orphan_customer}-1"
    rows[CONTACTS.name].append((contact_code, orphan_customer, "Orphelin", "Jean", None, None, d.moment()))
    bad.append(BadRow(CONTACTS.name, (contact_code,), f"customer {orphan_customer} does not exist"))

    unknown_item = _unused(("ZZ999", "ZZ998", "XX-UNKNOWN"), items)
    unknown_warehouse = _unused(("999", "998", "XXX"), warehouses)
    if first_customer is not None:
        code, changed_at = first_customer[0], first_customer[-1]
        reference = (code, unknown_item, "REF-INCONNUE", Decimal("9.99"), d.moment(after=changed_at))
        rows[CUSTOMER_ITEM_REFERENCES.name].append(reference)
        bad.append(BadRow(CUSTOMER_ITEM_REFERENCES.name, (code, unknown_item), f"item {unknown_item} does not exist"))

    item, warehouse = items[0], warehouses[0]
    bad_movements = (
        (DIRECTION_IN, unknown_warehouse, Decimal(5), f"warehouse {unknown_warehouse} does not exist"),
        (DIRECTION_OUT, warehouse, Decimal(0), "quantity is 0"),
        (DIRECTION_IN, warehouse, Decimal(-3), "quantity is negative"),
        ("transfer", warehouse, Decimal(2), "direction 'transfer' is neither 'in' nor 'out'"),
    )
    for n, (direction, wh, quantity, reason) in enumerate(bad_movements, start=900_001):
        movement_id = int(f"{stamp}{n:06d}")
        rows[STOCK_MOVEMENTS.name].append((movement_id, direction, wh, item, quantity, d.moment()))
        bad.append(BadRow(STOCK_MOVEMENTS.name, (movement_id,), reason))
    return rows, bad


# --------------------------------------------------------------------------- bulk data

_BULK_CHUNK_ROWS = 50_000
# One read per chunk: each read takes the GIL back from the generating thread.
_COPY_READ_SIZE = 64 << 20


def _copy(
    cur: psycopg2.extensions.cursor,
    schema: str,
    rel: Relation,
    lines: Iterator[str],
) -> int:
    """COPY text lines (tab-separated, ``\\N`` for NULL) in chunks; return the row count."""
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        ident(schema, "CRM schema"),
        sql.Identifier(rel.name),
        sql.SQL(", ").join(sql.Identifier(c) for c in rel.columns),
    )
    statement_text = statement.as_string(cur)

    def next_chunk() -> tuple[io.StringIO, int]:
        buffer = io.StringIO()
        count = 0
        for line in itertools.islice(lines, _BULK_CHUNK_ROWS):
            buffer.write(line)
            count += 1
        buffer.seek(0)
        return buffer, count

    total = 0
    # Generate the next chunk while the current one is COPYed: psycopg2 releases the
    # GIL inside libpq, so Python generation and the server's work overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-gen") as pool:
        pending = pool.submit(next_chunk)
        while True:
            buffer, count = pending.result()
            if count == 0:
                return total
            pending = pool.submit(next_chunk)
            cur.copy_expert(statement_text, buffer, size=_COPY_READ_SIZE)
            total += count


def _spread(start: datetime, span: timedelta, n: int) -> Callable[[int], str]:
    """Timestamp text of the i-th of n rows spread evenly over [start, start + span)."""
    step_us = max(1, int(span / timedelta(microseconds=1)) // max(n, 1))

    def at(i: int) -> str:
        return (start + timedelta(microseconds=i * step_us)).isoformat()

    return at


def load_bulk(
    conn: psycopg2.extensions.connection,
    schema: str,
    n_customers: int,
    *,
    start: date,
    days: int,
    seed: int = 1,
    contacts_per_customer: float = 2,
    references_per_customer: float = 1,
    movements_per_customer: float = 3,
    items: Sequence[str] = DEMO_ITEMS,
    warehouses: Sequence[str] = DEMO_WAREHOUSES,
) -> None:
    """COPY valid rows for `n_customers` customers spread over `days` UTC days from `start`; commits.

    Meant for empty relations (customer codes ``B<8 digits>``); movement ids follow
    the current maximum. Rows are generated lazily and sent 50,000 at a time, so
    memory stays flat at millions of rows. Ends with ANALYZE, so the benchmark's
    queries get real plans.
    """
    if n_customers < 0 or days < 1:
        raise ValueError("n_customers must be >= 0 and days >= 1")
    if references_per_customer > len(items):
        raise ValueError(f"references_per_customer cannot exceed the {len(items)} items")
    rng = random.Random(seed)
    origin = datetime.combine(start, time(), UTC)
    span = timedelta(days=days)
    table = sql.SQL("{}.{}").format(ident(schema, "CRM schema"), sql.Identifier(STOCK_MOVEMENTS.name))
    n_contacts = round(n_customers * contacts_per_customer)
    n_references = round(n_customers * references_per_customer)
    n_movements = round(n_customers * movements_per_customer)

    def customer_code(i: int) -> str:
        return f"B{i:08d}"

    def customer_lines() -> Iterator[str]:
        at = _spread(origin, span, n_customers)
        for i in range(n_customers):
            family = _FAMILY_NAMES[i % len(_FAMILY_NAMES)]
            name = f"{_TRADES[i % len(_TRADES)]} {family} {i}"
            postal_code, city = _CITIES[i % len(_CITIES)]
            street = f"{i % 180 + 1} {_STREET_TYPES[i % len(_STREET_TYPES)]} {_STREET_NAMES[i % len(_STREET_NAMES)]}"
            email = f"contact{i}@{_DOMAINS[i % len(_DOMAINS)]}"
            phone = f"01 {i % 100:02d} {i // 100 % 100:02d} {rng.randrange(100):02d} 00"
            yield f"{customer_code(i)}\t{name}\t{street}\t\\N\t{postal_code}\t{city}\t{email}\t{phone}\t{at(i)}\n"

    def contact_lines() -> Iterator[str]:
        at = _spread(origin, span, n_contacts)
        for j in range(n_contacts):
            owner = customer_code(j % n_customers)
            last_name, first_name = _LAST_NAMES[j % len(_LAST_NAMES)], _FIRST_NAMES[j % (len(_FIRST_NAMES) - 1)]
            yield f"{owner}-{j // n_customers + 1}\t{owner}\t{last_name}\t{first_name}\t\\N\t\\N\t{at(j)}\n"

    def reference_lines() -> Iterator[str]:
        at = _spread(origin, span, n_references)
        for j in range(n_references):
            owner, rank = j % n_customers, j // n_customers
            price = f"{rng.randint(150, 250_000) / 100:.2f}"
            yield f"{customer_code(owner)}\t{items[rank]}\tREF-{j}\t{price}\t{at(j)}\n"

    def movement_lines(first_id: int) -> Iterator[str]:
        at = _spread(origin, span, n_movements)
        for j in range(n_movements):
            direction = DIRECTION_IN if rng.random() < 0.5 else DIRECTION_OUT
            warehouse, item = warehouses[j % len(warehouses)], items[(j // len(warehouses)) % len(items)]
            yield f"{first_id + j}\t{direction}\t{warehouse}\t{item}\t{rng.randint(1, 50)}\t{at(j)}\n"

    if n_customers == 0:
        return
    with conn.cursor() as cur:
        _copy(cur, schema, CUSTOMERS, customer_lines())
        _copy(cur, schema, CONTACTS, contact_lines())
        _copy(cur, schema, CUSTOMER_ITEM_REFERENCES, reference_lines())
        cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(table))
        first_id = cur.fetchone()[0] + 1
        _copy(cur, schema, STOCK_MOVEMENTS, movement_lines(first_id))
        # Keep the identity (when there is one) ahead of the ids we set, for later inserts.
        if n_movements:
            cur.execute(
                "SELECT setval(pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), 'id'), %s)",
                (schema, STOCK_MOVEMENTS.name, first_id + n_movements - 1),
            )
        for rel in (CUSTOMERS, CONTACTS, CUSTOMER_ITEM_REFERENCES, STOCK_MOVEMENTS):
            cur.execute(sql.SQL("ANALYZE {}.{}").format(ident(schema, "CRM schema"), sql.Identifier(rel.name)))
    conn.commit()
