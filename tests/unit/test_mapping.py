"""Mapping CRM rows to Gestimum lines: plain unit tests of pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gestimum_pipeline.gestimum.encoding import LineEncoder, decode_line
from gestimum_pipeline.sync.mapping import (
    clients_mapper,
    comptes_mapper,
    contacts_mapper,
    documents_stock_mapper,
    references_mapper,
    source_key,
)

ENC = LineEncoder()


def customer(code: str = "C1", name: str = "Nom", **kw: object) -> tuple[object, ...]:
    values = {"street": None, "street2": None, "postal_code": None, "city": None, **kw}
    return (code, name, values["street"], values["street2"], values["postal_code"], values["city"], None, None, None)


def test_comptes_line_carries_prefix_and_customer_type() -> None:
    row = comptes_mapper(ENC, "411").map(customer("JOHNDOE", "John Doe"))
    assert row.line == "411JOHNDOE;John Doe;C;JOHNDOE"  # the documentation's example line
    assert row.source_key == "JOHNDOE" and row.parent_key is None


def test_clients_line_matches_documented_example() -> None:
    row = clients_mapper(ENC).map(
        customer(
            "C42", "SPORT25", street="5 rue Cugnot", street2="ZA Du Pâtis", postal_code="78120", city="RAMBOUILLET"
        )
    )
    assert row.line == "C42;411C42;SPORT25;5 rue Cugnot;ZA Du Pâtis;78120;RAMBOUILLET"
    assert row.parent_key == "C42"


def test_address_line_breaks_become_spaces_and_are_counted() -> None:
    row = clients_mapper(ENC).map(customer(street="12 avenue\r\n  de la Gare", city="Paris\n"))
    assert decode_line(row.line)[3] == "12 avenue de la Gare"
    assert decode_line(row.line)[6] == "Paris "
    assert row.rules == ("address_line_breaks", "address_line_breaks")


def test_line_break_outside_an_address_is_rejected_naming_record_and_field() -> None:
    row = clients_mapper(ENC).map(customer("C9", "Deux\nlignes"))
    assert row.rejected and row.line is None
    assert row.reason is not None and "C9" in row.reason and "PCF_RS" in row.reason


@pytest.mark.parametrize(
    ("name", "field_hint"),
    [("", "PCF_RS"), (None, "PCF_RS"), ("x" * 61, "PCF_RS"), ("Fusée 🚀", "PCF_RS")],
)
def test_invalid_customer_names_are_rejected(name: str | None, field_hint: str) -> None:
    row = clients_mapper(ENC).map(customer("C7", name))  # type: ignore[arg-type]
    assert row.rejected and field_hint in (row.reason or "")


def test_hostile_values_round_trip_exactly() -> None:
    name = ' ;"Société" d\'Éq;uipement\t '
    row = clients_mapper(ENC).map(customer("C1", name))
    assert decode_line(row.line)[2] == name


def test_contact_name_rule() -> None:
    mapper = contacts_mapper(ENC)
    both = mapper.map(("K1", "C1", "Dupont", "Jean", None, None, None))
    assert decode_line(both.line) == ["K1", "Dupont Jean", "C1"] and both.rules == ("contact_name",)
    last_only = mapper.map(("K2", "C1", "Martin", None, None, None, None))
    assert decode_line(last_only.line) == ["K2", "Martin", "C1"] and last_only.rules == ()
    assert mapper.map(("K3", "C1", "", "Jean", None, None, None)).rejected


@pytest.mark.parametrize(
    ("direction", "quantity", "expected"),
    [
        ("in", Decimal("20"), "E;001;ELS;20"),
        ("out", Decimal("1.50"), "S;001;ELS;1,5"),
        ("in", Decimal("1E+3"), "E;001;ELS;1000"),
        ("in", Decimal("0.0001"), "E;001;ELS;0,0001"),
    ],
)
def test_stock_lines(direction: str, quantity: Decimal, expected: str) -> None:
    row = documents_stock_mapper(ENC).map((7, direction, "001", "ELS", quantity, None))
    assert row.line == expected
    assert row.group_key == f"{expected[0]}|001" and row.sort_key == 7


@pytest.mark.parametrize(
    ("direction", "quantity", "field"),
    [
        ("sideways", Decimal("1"), "DOC_STYPE"),
        (None, Decimal("1"), "DOC_STYPE"),
        ("in", Decimal("0"), "MVT_QTE"),
        ("in", Decimal("-3"), "MVT_QTE"),
        ("in", Decimal("0.00001"), "MVT_QTE"),
        ("in", None, "MVT_QTE"),
        ("in", Decimal("1" + "0" * 25), "MVT_QTE"),
    ],
)
def test_invalid_movements_are_rejected(direction: str | None, quantity: Decimal | None, field: str) -> None:
    row = documents_stock_mapper(ENC).map((8, direction, "001", "ELS", quantity, None))
    assert row.rejected and field in (row.reason or "") and "record 8" in (row.reason or "")


def test_references_use_a_composite_key_and_reject_negative_prices() -> None:
    mapper = references_mapper(ENC)
    row = mapper.map(("C1", "A10", "A10001", Decimal("5"), None))
    assert row.line == "A10;C1;5;A10001" and row.source_key == source_key("C1", "A10")
    assert row.parent_key == "C1"
    assert mapper.map(("C1", "A10", None, Decimal("-1"), None)).rejected


def test_hash_follows_the_line_not_unsent_columns() -> None:
    mapper = clients_mapper(ENC)
    a = mapper.map(("C1", "Nom", None, None, None, None, "a@x.fr", None, None))
    b = mapper.map(("C1", "Nom", None, None, None, None, "b@x.fr", "0102", None))
    c = mapper.map(("C1", "Nom2", None, None, None, None, "a@x.fr", None, None))
    assert a.content_hash == b.content_hash != c.content_hash


def test_field_sources_name_every_field_and_only_contract_columns() -> None:
    from gestimum_pipeline.crm.contract import RELATIONS
    from gestimum_pipeline.sync.endpoints import ENDPOINTS
    from gestimum_pipeline.sync.mapping import FIELD_SOURCES

    assert set(FIELD_SOURCES) == set(ENDPOINTS.names)
    for spec in ENDPOINTS:
        sources = FIELD_SOURCES[spec.name]
        assert tuple(sources) == spec.wire.field_codes, spec.name
        columns = set(RELATIONS[spec.relation].columns)
        for field_code, used in sources.items():
            assert set(used) <= columns, (spec.name, field_code, used)
