"""The state store's SQL, read from the package's .sql files.

* `sql/migrations/NNNN_<slug>.sql`: one numbered migration per file, applied in order by
  `migrate()`; its first line is `-- description: …` (kept in `schema_migrations`).
* `sql/queries/<module>.sql`: named queries, each written out whole under `-- name: <name>`;
  a query that writes `records.status` names the transitions it implements on a
  `-- events: <event>, …` line (checked against `status.TRANSITIONS` by a test).

`{schema}` stands for the store's schema, quoted; nothing else is substituted.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import NamedTuple

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_EVENTS = re.compile(r"^-- events: (.+)$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{4})_\w+\.sql$")


class Migration(NamedTuple):
    version: int
    description: str
    file: str
    text: str


class Query(NamedTuple):
    name: str
    file: str
    events: tuple[str, ...]  # the TRANSITIONS events it implements (empty: writes no status)
    text: str


def _sql_dir() -> resources.abc.Traversable:
    return resources.files("gestimum_pipeline.sync.state").joinpath("sql")


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in version order (versions 1, 2, … without a gap)."""
    found: list[Migration] = []
    for entry in _sql_dir().joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        first = text.splitlines()[0] if text else ""
        if not first.startswith("-- description: "):
            raise RuntimeError(f"migration {entry.name} must start with '-- description: …'")
        found.append(Migration(int(match.group(1)), first.removeprefix("-- description: ").strip(), entry.name, text))
    found.sort()
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps: {[m.file for m in found]}")
    return tuple(found)


@cache
def queries() -> dict[str, Query]:
    """{name: query} over every file of sql/queries; a name defined twice is an error."""
    out: dict[str, Query] = {}
    for entry in sorted(_sql_dir().joinpath("queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        marks = list(_NAME.finditer(text))
        for i, mark in enumerate(marks):
            body = text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            events = _EVENTS.search(body)
            name = mark.group(1)
            if name in out:
                raise RuntimeError(f"query {name!r} is defined in {out[name].file} and {entry.name}")
            out[name] = Query(
                name,
                entry.name,
                tuple(e.strip() for e in events.group(1).split(",")) if events else (),
                body.strip() + "\n",
            )
    return out


def quote_schema(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


@cache
def rendered(name: str, schema: str) -> str:
    """Query `name` for the store in `schema`."""
    return queries()[name].text.replace("{schema}", quote_schema(schema))


def rendered_migration(migration: Migration, schema: str) -> str:
    return migration.text.replace("{schema}", quote_schema(schema))
