"""Simulator settings: the simulated company, its catalog and its conventions.

`SimulatorConfig` is re-exported by `gestimum_pipeline.simulator.server`, where other
modules import it from; it lives here so the importer does not import the server.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CATALOG_FILE = Path(__file__).with_name("catalog_default.json")
CATALOG_KEYS = ("items", "warehouses")


def load_catalog(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Reads a catalog file `{"items": [...], "warehouses": [...]}` (either key optional).

    Raises ValueError saying what is wrong with the file.
    """
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read catalog file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"catalog file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f'catalog file {path} must hold an object {{"items": [...], "warehouses": [...]}}')
    unknown = sorted(set(data) - set(CATALOG_KEYS))
    if unknown:
        raise ValueError(f"catalog file {path} has unknown keys {unknown}; known: {list(CATALOG_KEYS)}")
    catalog: dict[str, tuple[str, ...]] = {}
    for key in CATALOG_KEYS:
        if key not in data:
            continue
        values = data[key]
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise ValueError(f"catalog file {path}: {key!r} must be a list of non-empty strings")
        catalog[key] = tuple(values)
    return catalog


_DEFAULT_CATALOG = load_catalog(DEFAULT_CATALOG_FILE)
DEFAULT_ITEMS: tuple[str, ...] = _DEFAULT_CATALOG["items"]
DEFAULT_WAREHOUSES: tuple[str, ...] = _DEFAULT_CATALOG["warehouses"]
DECIMAL_SEPARATORS = (",", ".")


@dataclass
class SimulatorConfig:
    company_file: str = "DEMO.Gestimum"
    user: str = "DEMO"
    password: str = field(default="", repr=False)  # never shown in repr(), hence never in logs
    items: tuple[str, ...] = DEFAULT_ITEMS
    warehouses: tuple[str, ...] = DEFAULT_WAREHOUSES
    charset: str = "cp1252"  # values outside it are rejected per line
    decimal_separator: str = ","  # of MVT_QTE / ART_PCLIENT
    company_open_delay: float = 0.0  # seconds per request; about 6 s on a real server
    version: int = 9  # Gestimum major version; newer endpoints answer an error

    def __post_init__(self) -> None:
        self.items = tuple(self.items)
        self.warehouses = tuple(self.warehouses)
        if not self.company_file:
            raise ValueError("company_file must not be empty")
        try:
            codecs.lookup(self.charset)
        except LookupError:
            raise ValueError(f"unknown charset {self.charset!r}") from None
        if self.decimal_separator not in DECIMAL_SEPARATORS:
            raise ValueError(f"decimal_separator must be one of {DECIMAL_SEPARATORS}, got {self.decimal_separator!r}")
        if self.company_open_delay < 0:
            raise ValueError(f"company_open_delay must be >= 0, got {self.company_open_delay!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"version must be a positive integer, got {self.version!r}")
