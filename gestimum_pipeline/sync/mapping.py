"""CRM rows → Gestimum lines, one endpoint at a time, validating every value first.

A mapper turns one source row (a tuple in the source contract's column order) into a
`MappedRow`: either an encoded line ready to send, or a local rejection whose reason
names the record and the field. Values travel exactly as they are in the CRM, except
for the documented rules below, which are counted so the metadata can show them:

* ``address_line_breaks``: a line break inside an address field (street, street2,
  city, postal code) becomes one space; a line cannot carry CR/LF and an address
  printed on one line reads the same.
* ``contact_name``: ``CCT_NOM`` is ``last_name`` followed by a space and ``first_name``
  when the first name is not empty (French convention: NOM Prénom).
* ``account_number``: ``CPT_NUMERO`` is the configured prefix (default ``411``, the
  French chart of accounts' customer ledger) followed by the customer code.

Everything else (separators, quotes, tabs, edge spaces, accents) is carried exactly by
the line encoding; what the encoding cannot carry is rejected, never altered.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from hashlib import blake2b
from typing import Any, NamedTuple

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.catalog import Endpoint, FieldKind
from gestimum_pipeline.gestimum.encoding import EncodingError, LineEncoder

# Assumed precision of Gestimum quantities and prices (docs/assumptions.md); the
# simulator enforces the same bound.
MAX_DECIMALS = 4
DEFAULT_ACCOUNT_PREFIX = "411"
# Bump when a mapping rule changes what a row becomes: every window is then read again.
MAPPING_VERSION = 1

_LINE_BREAKS = re.compile(r"[ \t]*(?:\r\n|\r|\n)[ \t]*")


class MappedRow(NamedTuple):
    """One source row ready for the state store: a line to send or a local rejection.

    A NamedTuple (immutable, cheap to build): millions are made per backfill.
    """

    source_key: str
    content_hash: str
    line: str | None = None  # None when rejected locally
    reason: str | None = None
    parent_key: str | None = None  # key of the parent record (customer code), if any
    group_key: str = ""  # requests never mix groups (stock: one document header per request)
    sort_key: int = 0  # keeps the CRM's order inside a group (movement id for stock)
    rules: tuple[str, ...] = ()

    @property
    def rejected(self) -> bool:
        return self.line is None


@dataclass
class MappingStats:
    rows: int = 0
    mapped: int = 0
    rejected: int = 0
    rules: Counter[str] = field(default_factory=Counter)

    def add(self, row: MappedRow) -> None:
        self.rows += 1
        if row.line is None:
            self.rejected += 1
        else:
            self.mapped += 1
        if row.rules:
            self.rules.update(row.rules)


class LocalRejection(Exception):
    def __init__(self, field_code: str, reason: str) -> None:
        super().__init__(reason)
        self.field_code = field_code
        self.reason = reason


def source_key(*parts: Any) -> str:
    """Stable text key for a source row: the code itself, or a JSON list for composite keys."""
    if len(parts) == 1:
        return str(parts[0])
    return json.dumps([str(p) for p in parts], ensure_ascii=False)


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _raw_hash(row: Sequence[Any]) -> str:
    # Hash of the raw values: a locally rejected row is re-evaluated when it changes.
    return content_hash("\x1f".join("\x00" if v is None else str(v) for v in row))


class Built(NamedTuple):
    """What an endpoint's row builder returns: field values in catalog order and routing."""

    values: list[Any]
    parent_key: str | None = None
    group_key: str = ""
    sort_key: int = 0
    rules: tuple[str, ...] = ()


class Mapper:
    """Maps rows of one relation to lines of one endpoint.

    `key` names the record; `build` returns its values in the endpoint's field order
    and may raise `LocalRejection` for rules beyond the field checks (direction, sign).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        encoder: LineEncoder,
        key: Callable[[Sequence[Any]], str],
        build: Callable[[Sequence[Any]], Built],
        settings: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.encoder = encoder
        # What the lines depend on besides the row: a window staged under another
        # fingerprint is read again (see StateStore.window_signature).
        self.fingerprint = (
            f"v{MAPPING_VERSION}|{endpoint.name}|{encoder.separator}|{encoder.qualifier}|{encoder.charset}"
            f"|{encoder.decimal_separator}|{settings}"
        )
        self._key = key
        self._build = build
        self._codes = endpoint.field_codes
        self._decimals: dict[Decimal, str | None] = {}
        # (field, code, max length, required, decimal) per field: map() runs millions of times.
        self._specs = tuple((f, f.code, f.max_length, f.required, f.kind is FieldKind.DECIMAL) for f in endpoint.fields)

    def key_of(self, row: Sequence[Any]) -> str:
        """The record's source key; needs only the relation's key columns, which come first."""
        return self._key(row)

    def map(self, row: Sequence[Any]) -> MappedRow:
        key = self._key(row)
        try:
            built = self._build(row)
            values = built.values
            if len(values) != len(self._specs):
                raise ValueError(f"{self.endpoint.name} builder returned {len(values)} values for {len(self._specs)}")
            texts: list[str | None] = []
            for (f, code, max_length, required, decimal), value in zip(self._specs, values):  # noqa: B905
                if value is None or value == "":
                    if required:
                        raise LocalRejection(code, "is required but empty")
                    texts.append(None)
                    continue
                if decimal or type(value) is not str:
                    if decimal and type(value) is Decimal and value.is_finite():
                        # Quantities and prices repeat: format each value once.
                        text = self._decimals.get(value)
                        if text is None:
                            text = self._text(f, value)
                            if len(self._decimals) < 65_536:
                                self._decimals[value] = text
                        texts.append(text)
                    else:
                        texts.append(self._text(f, value))
                    continue
                if max_length is not None and len(value) > max_length:
                    raise LocalRejection(code, f"is {len(value)} characters long, the limit is {max_length}")
                texts.append(value)
            line = self.encoder.encode_line(texts, record=key, fields=self._codes)
        except LocalRejection as exc:
            return self._rejected(row, key, exc.field_code, exc.reason)
        except EncodingError as exc:
            return self._rejected(row, key, exc.field or "?", exc.reason)
        return MappedRow(
            key,
            blake2b(line.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest(),  # = content_hash(line)
            line,
            None,
            built.parent_key,
            built.group_key,
            built.sort_key,
            built.rules,
        )

    def _rejected(self, row: Sequence[Any], key: str, field_code: str, reason: str) -> MappedRow:
        try:
            built = self._build(row)
            parent, group, sort = built.parent_key, built.group_key, built.sort_key
        except LocalRejection:
            parent, group, sort = None, "", 0
        return MappedRow(
            key,
            _raw_hash(row),
            reason=f"{self.endpoint.name} record {key} field {field_code}: {reason}",
            parent_key=parent,
            group_key=group,
            sort_key=sort,
        )

    def _text(self, f: catalog.Field, value: Any) -> str | None:
        if f.kind is FieldKind.DECIMAL and value is not None and value != "":
            d = _decimal(f.code, value)
            exponent = d.normalize().as_tuple().exponent
            if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
                raise LocalRejection(f.code, f"{d} has more than {MAX_DECIMALS} decimals")
            value = self.encoder.format_decimal(d)
        if value is None or value == "":
            if f.required:
                raise LocalRejection(f.code, "is required but empty")
            return None
        text = str(value)
        if f.max_length is not None and len(text) > f.max_length:
            raise LocalRejection(f.code, f"is {len(text)} characters long, the limit is {f.max_length}")
        return text


def _decimal(field_code: str, value: Any) -> Decimal:
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise LocalRejection(field_code, f"{value!r} is not a number") from None
    if not d.is_finite():
        raise LocalRejection(field_code, f"{value!r} is not a finite number")
    return d


def _address(value: str | None, rules: list[str]) -> str | None:
    if value is None or ("\n" not in value and "\r" not in value):
        return value
    cleaned = _LINE_BREAKS.sub(" ", value)
    if cleaned != value:
        rules.append("address_line_breaks")
    return cleaned


def _first_key(row: Sequence[Any]) -> str:
    return str(row[0])


# Column order of each relation is the source contract's (crm.contract.RELATIONS):
# customers: code, name, street, street2, postal_code, city, email, phone, updated_at
# contacts: code, customer_code, last_name, first_name, email, phone, updated_at
# stock_movements: id, direction, warehouse_code, item_code, quantity, moved_at
# customer_item_references: customer_code, item_code, customer_reference, customer_price, updated_at


def _account_number(code: Any, prefix: str) -> str | None:
    return None if code in (None, "") else f"{prefix}{code}"


def comptes_mapper(encoder: LineEncoder, account_prefix: str = DEFAULT_ACCOUNT_PREFIX) -> Mapper:
    def build(row: Sequence[Any]) -> Built:
        code, name = row[0], row[1]
        return Built([_account_number(code, account_prefix), name, catalog.ACCOUNT_CUSTOMER, code, None])

    return Mapper(catalog.COMPTES, encoder, _first_key, build, settings=account_prefix)


def clients_mapper(encoder: LineEncoder, account_prefix: str = DEFAULT_ACCOUNT_PREFIX) -> Mapper:
    def build(row: Sequence[Any]) -> Built:
        code, name, street, street2, postal_code, city = row[:6]
        rules: list[str] = []
        values = [
            code,
            _account_number(code, account_prefix),
            name,
            _address(street, rules),
            _address(street2, rules),
            _address(postal_code, rules),
            _address(city, rules),
        ]
        # The parent of a customer is its account (Comptes) under the same key.
        return Built(values, parent_key=str(code), rules=tuple(rules))

    return Mapper(catalog.CLIENTS, encoder, _first_key, build, settings=account_prefix)


def contacts_mapper(encoder: LineEncoder) -> Mapper:
    def build(row: Sequence[Any]) -> Built:
        code, customer_code, last_name, first_name = row[:4]
        name, rules = last_name, ()
        if last_name not in (None, "") and first_name not in (None, ""):
            name, rules = f"{last_name} {first_name}", ("contact_name",)
        parent = None if customer_code is None else str(customer_code)
        return Built([code, name, customer_code], parent_key=parent, rules=rules)

    return Mapper(catalog.CONTACTS, encoder, _first_key, build)


_DIRECTIONS = {"in": catalog.STOCK_ENTRY, "out": catalog.STOCK_EXIT}


def documents_stock_mapper(encoder: LineEncoder) -> Mapper:
    def build(row: Sequence[Any]) -> Built:
        movement_id, direction, warehouse, item, quantity = row[:5]
        stype = _DIRECTIONS.get(direction) if isinstance(direction, str) else None
        if stype is None:
            raise LocalRejection("DOC_STYPE", f"direction {direction!r} is neither 'in' nor 'out'")
        if quantity is not None and _decimal("MVT_QTE", quantity) <= 0:
            raise LocalRejection("MVT_QTE", f"quantity {quantity} must be greater than zero")
        # One request never mixes document headers, so each request's document maps to its lines.
        return Built([stype, warehouse, item, quantity], group_key=f"{stype}|{warehouse}", sort_key=int(movement_id))

    return Mapper(catalog.DOCUMENTS_STOCK, encoder, _first_key, build)


def references_mapper(encoder: LineEncoder) -> Mapper:
    def build(row: Sequence[Any]) -> Built:
        customer_code, item_code, reference, price = row[:4]
        if price is not None and _decimal("ART_PCLIENT", price) < 0:
            raise LocalRejection("ART_PCLIENT", f"customer price {price} is negative")
        parent = None if customer_code is None else str(customer_code)
        return Built([item_code, customer_code, price, reference], parent_key=parent)

    return Mapper(catalog.REFERENCES_CLIENTS_ARTICLES, encoder, lambda r: source_key(r[0], r[1]), build)


# The CRM columns each Gestimum field is computed from, per endpoint, as the mappers above
# build them (a field set to a constant has none). The catalog's column lineage is derived
# from this table; tests/unit/test_mapping.py checks it against the mappers' field codes and
# the source contract's columns, so it cannot drift from them silently.
FIELD_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    catalog.COMPTES.name: {
        "CPT_NUMERO": ("code",),  # the account prefix + the customer code
        "CPT_LIB": ("name",),
        "CPT_TYPE": (),
        "PCF_CODE": ("code",),
        "CPT_TVA_NC": (),
    },
    catalog.CLIENTS.name: {
        "PCF_CODE": ("code",),
        "CPT_NUMERO": ("code",),
        "PCF_RS": ("name",),
        "PCF_RUE": ("street",),
        "PCF_COMP": ("street2",),
        "PCF_CP": ("postal_code",),
        "PCF_VILLE": ("city",),
    },
    catalog.CONTACTS.name: {
        "CCT_CODE": ("code",),
        "CCT_NOM": ("last_name", "first_name"),
        "CCT_ORIGIN": ("customer_code",),
    },
    catalog.REFERENCES_CLIENTS_ARTICLES.name: {
        "ART_CODE": ("item_code",),
        "PCF_CODE": ("customer_code",),
        "ART_PCLIENT": ("customer_price",),
        "ART_REFCLI": ("customer_reference",),
    },
    catalog.DOCUMENTS_STOCK.name: {
        "DOC_STYPE": ("direction",),
        "DEP_CODE": ("warehouse_code",),
        "ART_CODE": ("item_code",),
        "MVT_QTE": ("quantity",),
    },
}
