"""The bad-input matrix: hostile CRM values through the whole graph (CRM → state store → simulator).

Every value ends one of three ways, and each case below says which:

* **exact**: Gestimum holds exactly the CRM's value (numbers: the same number, written
  with the documented decimal comma);
* **rule**: changed by a documented rule that the transform's metadata counts (a line
  break inside an address becomes one space: `rule_address_line_breaks`; a contact's
  name is `last_name first_name`: `rule_contact_name`);
* **local**: refused before sending, with a reason naming the record and the field.

A broken line is never sent: no line Gestimum received was refused for its syntax,
characters, length or numbers (only for business reasons such as an unknown warehouse,
which is then checked to carry the value intact).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from invariants import CaseRecord, assert_no_secret, check_invariants, records, statuses
from reliability import DAY_TS, Deployment, deployment, execute, run_job

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.encoding import parse_decimal
from gestimum_pipeline.sync.mapping import source_key

LONG_60 = "N" * 60
LONG_61 = "N" * 61
HUGE_OK = "99999999999999999999"  # 20 digits: the longest MVT_QTE we write
HUGE_TOO_LONG = "1" + "0" * 25  # 26 digits


@dataclass(frozen=True)
class Exact:
    values: dict[str, str]  # field code -> what Gestimum must hold


@dataclass(frozen=True)
class Rule:
    name: str
    values: dict[str, str]


@dataclass(frozen=True)
class Local:
    field: str
    says: str = ""


@dataclass(frozen=True)
class Held:
    parent: str


@dataclass(frozen=True)
class RefusedByGestimum:
    says: str  # the value, intact, in Gestimum's own reason


Expect = Exact | Rule | Local | Held | RefusedByGestimum


@dataclass(frozen=True)
class Case:
    id: str
    relation: str
    row: tuple[Any, ...]
    expect: dict[str, Expect]  # endpoint -> outcome


def _breaks(value: str) -> str:
    """The documented address rule, written independently of the mapper."""
    return re.sub(r"[ \t]*(?:\r\n|\r|\n)[ \t]*", " ", value)


def customer(
    case_id: str, code: str, name: Any, street: Any = None, street2: Any = None, cp: Any = None, city: Any = None
) -> tuple[str, str, tuple[Any, ...]]:
    return case_id, "customers", (code, name, street, street2, cp, city)


CASES: list[Case] = [
    # --- separator, qualifier, tabs, edge spaces: carried exactly by quoting -------------
    Case(
        "separator",
        "customers",
        ("B01", "Dupont; Fils", "1 rue A;B", None, "75001", "Paris"),
        {
            "comptes": Exact({"CPT_LIB": "Dupont; Fils", "CPT_NUMERO": "411B01"}),
            "clients": Exact({"PCF_RS": "Dupont; Fils", "PCF_RUE": "1 rue A;B", "PCF_COMP": "", "PCF_CP": "75001"}),
        },
    ),
    Case(
        "qualifier",
        "customers",
        ("B02", 'Le "Bon" Coin', '"12" rue', None, None, 'Paris "centre"'),
        {
            "comptes": Exact({"CPT_LIB": 'Le "Bon" Coin'}),
            "clients": Exact({"PCF_RS": 'Le "Bon" Coin', "PCF_RUE": '"12" rue', "PCF_VILLE": 'Paris "centre"'}),
        },
    ),
    Case(
        "tab",
        "customers",
        ("B05", "Tab\tulation", "Rue\tdu Port", None, None, None),
        {"comptes": Exact({"CPT_LIB": "Tab\tulation"}), "clients": Exact({"PCF_RUE": "Rue\tdu Port"})},
    ),
    Case(
        "leading_trailing_spaces",
        "customers",
        ("B06", "  Espaces  ", " rue ", None, " 01000 ", "Lyon "),
        {
            "comptes": Exact({"CPT_LIB": "  Espaces  "}),
            "clients": Exact({"PCF_RS": "  Espaces  ", "PCF_RUE": " rue ", "PCF_CP": " 01000 ", "PCF_VILLE": "Lyon "}),
        },
    ),
    Case(
        "code_with_leading_space",
        "customers",
        (" B07", "Code espacé", None, None, None, None),
        {"comptes": Exact({"PCF_CODE": " B07", "CPT_NUMERO": "411 B07"}), "clients": Exact({"PCF_CODE": " B07"})},
    ),
    # --- CR/LF: a documented rule in addresses, refused elsewhere ------------------------
    Case(
        "line_breaks_in_address",
        "customers",
        ("B03", "Adresse multiligne", "12 avenue\r\nde la Gare", "Bât.\nB", None, "Paris \n "),
        {
            "comptes": Exact({"CPT_LIB": "Adresse multiligne"}),
            "clients": Rule(
                "address_line_breaks",
                {
                    "PCF_RUE": _breaks("12 avenue\r\nde la Gare"),
                    "PCF_COMP": _breaks("Bât.\nB"),
                    "PCF_VILLE": _breaks("Paris \n "),
                },
            ),
        },
    ),
    Case(
        "line_break_in_name",
        "customers",
        ("B04", "Nom sur\ndeux lignes", None, None, None, None),
        {"comptes": Local("CPT_LIB", "line break"), "clients": Local("PCF_RS", "line break")},
    ),
    Case(
        "line_break_in_contact_name",
        "contacts",
        ("KB8", "B01", "Dupont\r", None),
        {"contacts": Local("CCT_NOM", "line break")},
    ),
    # --- binary junk (NUL-free), characters beyond Latin-1 / cp1252 ----------------------
    Case(
        "control_characters",
        "customers",
        ("B08", "Junk\x01\x02", None, None, None, None),
        {"comptes": Local("CPT_LIB", "U+0001"), "clients": Local("PCF_RS", "U+0001")},
    ),
    Case(
        "escape_sequence_in_street",
        "customers",
        ("B09", "Terminal", "rue \x1b[31m", None, None, None),
        {"comptes": Exact({"CPT_LIB": "Terminal"}), "clients": Local("PCF_RUE", "U+001B")},
    ),
    Case(
        "delete_character",
        "customers",
        ("B10", "Del\x7f", None, None, None, None),
        {"comptes": Local("CPT_LIB", "U+007F"), "clients": Local("PCF_RS", "U+007F")},
    ),
    Case(
        "c1_control_in_city",
        "customers",
        ("B11", "C1", None, None, None, "Next\x85Line"),
        {"comptes": Exact({"CPT_LIB": "C1"}), "clients": Local("PCF_VILLE", "U+0085")},
    ),
    Case(
        "windows_1252_letters",
        "customers",
        ("B12", "Œuvres € ‰ Ÿ", "Straße ñ ø", "Ä Ö Ü é", None, "Zürich"),
        {
            "comptes": Exact({"CPT_LIB": "Œuvres € ‰ Ÿ"}),
            "clients": Exact({"PCF_RS": "Œuvres € ‰ Ÿ", "PCF_RUE": "Straße ñ ø", "PCF_COMP": "Ä Ö Ü é"}),
        },
    ),
    Case(
        "emoji",
        "customers",
        ("B13", "Fusée 🚀", None, None, None, None),
        {"comptes": Local("CPT_LIB", "U+1F680"), "clients": Local("PCF_RS", "U+1F680")},
    ),
    Case(
        "greek_city",
        "customers",
        ("B14", "Hellas", None, None, None, "Αθήνα"),
        {"comptes": Exact({"CPT_LIB": "Hellas"}), "clients": Local("PCF_VILLE", "cp1252")},
    ),
    Case(
        "polish_letters",
        "customers",
        ("B15", "Łódź SA", None, None, None, None),
        {"comptes": Local("CPT_LIB", "U+0141"), "clients": Local("PCF_RS", "U+0141")},
    ),
    Case(
        "emoji_in_first_name",
        "contacts",
        ("KB7", "B01", "Durand", "😀"),
        {"contacts": Local("CCT_NOM", "U+1F600")},
    ),
    # --- lengths --------------------------------------------------------------------------
    Case(
        "name_at_the_limit",
        "customers",
        ("B16", LONG_60, None, None, None, None),
        {"comptes": Exact({"CPT_LIB": LONG_60}), "clients": Exact({"PCF_RS": LONG_60})},
    ),
    Case(
        "name_one_over_the_limit",
        "customers",
        ("B17", LONG_61, None, None, None, None),
        {"comptes": Local("CPT_LIB", "61 characters"), "clients": Local("PCF_RS", "61 characters")},
    ),
    Case(
        "very_long_street",
        "customers",
        ("B18", "Long", "x" * 10_000, None, None, None),
        {"comptes": Exact({"CPT_LIB": "Long"}), "clients": Local("PCF_RUE", "10000 characters")},
    ),
    Case(
        "code_over_the_limit",
        "customers",
        ("C" * 21, "Code trop long", None, None, None, None),
        {"comptes": Local("PCF_CODE", "21 characters"), "clients": Local("PCF_CODE", "21 characters")},
    ),
    # --- empty strings and NULLs ------------------------------------------------------------
    Case(
        "empty_required_name",
        "customers",
        ("B19", "", None, None, None, None),
        {"comptes": Local("CPT_LIB", "required"), "clients": Local("PCF_RS", "required")},
    ),
    Case(
        "null_required_name",
        "customers",
        ("B20", None, None, None, None, None),
        {"comptes": Local("CPT_LIB", "required"), "clients": Local("PCF_RS", "required")},
    ),
    Case(
        "empty_code",
        "customers",
        ("", "Sans code", None, None, None, None),
        {"comptes": Local("CPT_NUMERO", "required"), "clients": Local("PCF_CODE", "required")},
    ),
    Case(
        "empty_and_null_optional_fields",
        "customers",
        ("B21", "Optionnels", "", None, "", None),
        {"clients": Exact({"PCF_RUE": "", "PCF_COMP": "", "PCF_CP": "", "PCF_VILLE": ""})},
    ),
    Case("empty_contact_name", "contacts", ("KB2", "B01", "", None), {"contacts": Local("CCT_NOM", "required")}),
    Case("null_contact_name", "contacts", ("KB3", "B01", None, "Anne"), {"contacts": Local("CCT_NOM", "required")}),
    Case(
        "empty_contact_customer",
        "contacts",
        ("KB4", "", "Orphelin", None),
        {"contacts": Local("CCT_ORIGIN", "required")},
    ),
    Case(
        "contact_separator_and_qualifier",
        "contacts",
        ("KB1", "B01", "O'Neil; Jr", 'Jean "JJ"'),
        {"contacts": Rule("contact_name", {"CCT_NOM": 'O\'Neil; Jr Jean "JJ"', "CCT_ORIGIN": "B01"})},
    ),
    Case("contact_of_a_refused_customer", "contacts", ("KB5", "B04", "Held", None), {"contacts": Held("B04")}),
    # --- codes colliding when case (or trailing spaces) is ignored ---------------------------
    Case(
        "case_colliding_codes_upper",
        "customers",
        ("ACME", "Acme majuscules", None, None, None, None),
        {"comptes": Local("PCF_CODE", "differs only by case"), "clients": Local("PCF_CODE", "differs only by case")},
    ),
    Case(
        "case_colliding_codes_lower",
        "customers",
        ("acme", "Acme minuscules", None, None, None, None),
        {"comptes": Local("PCF_CODE", "differs only by case"), "clients": Local("PCF_CODE", "differs only by case")},
    ),
    Case(
        "trailing_space_colliding_code",
        "customers",
        ("TRAIL ", "Trailing", None, None, None, None),
        {"comptes": Local("PCF_CODE", "trailing spaces"), "clients": Local("PCF_CODE", "trailing spaces")},
    ),
    Case(
        "trailing_space_colliding_code_plain",
        "customers",
        ("TRAIL", "Plain", None, None, None, None),
        {"comptes": Local("PCF_CODE", "trailing spaces"), "clients": Local("PCF_CODE", "trailing spaces")},
    ),
    Case(
        "case_colliding_contact_codes",
        "contacts",
        ("KX", "B01", "Upper", None),
        {"contacts": Local("CCT_CODE", "differs only by case")},
    ),
    Case(
        "case_colliding_contact_codes_lower",
        "contacts",
        ("kx", "B01", "Lower", None),
        {"contacts": Local("CCT_CODE", "differs only by case")},
    ),
    Case("contact_of_a_colliding_customer", "contacts", ("KB6", "acme", "Attente", None), {"contacts": Held("acme")}),
    # --- quantities ---------------------------------------------------------------------------
    Case("zero_quantity", "stock_movements", (101, "in", "001", "ELS", "0"), {"documents_stock": Local("MVT_QTE")}),
    Case(
        "negative_quantity", "stock_movements", (102, "out", "001", "ELS", "-3"), {"documents_stock": Local("MVT_QTE")}
    ),
    Case(
        "fractional_quantity",
        "stock_movements",
        (103, "in", "001", "ELS", "0.25"),
        {"documents_stock": Exact({"MVT_QTE": "0.25"})},
    ),
    Case(
        "four_decimals",
        "stock_movements",
        (104, "in", "001", "A10", "1.2345"),
        {"documents_stock": Exact({"MVT_QTE": "1.2345"})},
    ),
    Case(
        "trailing_zeros",
        "stock_movements",
        (105, "in", "001", "A11", "2.500"),
        {"documents_stock": Exact({"MVT_QTE": "2.500"})},
    ),
    Case(
        "five_decimals",
        "stock_movements",
        (106, "in", "001", "ELS", "1.23456"),
        {"documents_stock": Local("MVT_QTE", "more than 4 decimals")},
    ),
    Case(
        "huge_quantity",
        "stock_movements",
        (107, "in", "002", "ELS", HUGE_OK),
        {"documents_stock": Exact({"MVT_QTE": HUGE_OK})},
    ),
    Case(
        "quantity_too_long",
        "stock_movements",
        (108, "in", "002", "ELS", HUGE_TOO_LONG),
        {"documents_stock": Local("MVT_QTE", "26 characters")},
    ),
    Case("nan_quantity", "stock_movements", (109, "in", "002", "A10", "NaN"), {"documents_stock": Local("MVT_QTE")}),
    Case("null_quantity", "stock_movements", (110, "in", "002", "A11", None), {"documents_stock": Local("MVT_QTE")}),
    # --- directions and codes of movements ----------------------------------------------------
    Case(
        "direction_in_upper_case",
        "stock_movements",
        (111, "IN", "001", "ELS", "11"),
        {"documents_stock": Local("DOC_STYPE", "neither 'in' nor 'out'")},
    ),
    Case(
        "unknown_direction",
        "stock_movements",
        (112, "sideways", "001", "ELS", "12"),
        {"documents_stock": Local("DOC_STYPE", "neither 'in' nor 'out'")},
    ),
    Case("null_direction", "stock_movements", (113, None, "001", "ELS", "13"), {"documents_stock": Local("DOC_STYPE")}),
    Case("empty_warehouse", "stock_movements", (114, "in", "", "ELS", "14"), {"documents_stock": Local("DEP_CODE")}),
    Case("null_item", "stock_movements", (115, "out", "001", None, "15"), {"documents_stock": Local("ART_CODE")}),
    Case(
        "separator_in_warehouse",
        "stock_movements",
        (116, "in", "0;1", "ELS", "16"),
        {"documents_stock": RefusedByGestimum("le dépôt 0;1 n'existe pas")},
    ),
    Case(
        "exit_movement",
        "stock_movements",
        (117, "out", "002", "A10", "17"),
        {"documents_stock": Exact({"MVT_QTE": "17"})},
    ),
    # --- customer item references -------------------------------------------------------------
    Case(
        "reference_separator_qualifier_price",
        "customer_item_references",
        ("B01", "A10", 'Réf; "spéciale"', "5.25"),
        {"references_clients_articles": Exact({"ART_REFCLI": 'Réf; "spéciale"', "ART_PCLIENT": "5.25"})},
    ),
    Case(
        "reference_too_long",
        "customer_item_references",
        ("B01", "ELS", "R" * 31, "1"),
        {"references_clients_articles": Local("ART_REFCLI", "31 characters")},
    ),
    Case(
        "negative_price",
        "customer_item_references",
        ("B02", "A11", "REF", "-1"),
        {"references_clients_articles": Local("ART_PCLIENT", "negative")},
    ),
    Case(
        "zero_price_and_tab",
        "customer_item_references",
        ("B05", "A10", "tab\there", "0"),
        {"references_clients_articles": Exact({"ART_REFCLI": "tab\there", "ART_PCLIENT": "0"})},
    ),
    Case(
        "empty_reference_null_price",
        "customer_item_references",
        ("B02", "ELS", "", None),
        {"references_clients_articles": Exact({"ART_REFCLI": "", "ART_PCLIENT": ""})},
    ),
]

# Reasons that would mean a broken line reached Gestimum (catalog.REASON_* templates).
BROKEN_LINE_REASONS = tuple(
    t.split("{")[0]
    for t in (
        catalog.REASON_SYNTAX,
        catalog.REASON_LINE_BREAK,
        catalog.REASON_TOO_MANY_FIELDS,
        catalog.REASON_CONTROL_CHARACTER,
        catalog.REASON_CHARSET,
        catalog.REASON_TOO_LONG,
        catalog.REASON_BAD_NUMBER,
        catalog.REASON_TOO_MANY_DECIMALS,
        catalog.REASON_NOT_POSITIVE,
        catalog.REASON_REQUIRED_MISSING,
    )
)


def _insert(dep: Deployment, cases: list[Case], ts: str = DAY_TS) -> None:
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for c in cases:
        if c.relation == "customers":
            sql = (
                "INSERT INTO crm.customers (code, name, street, street2, postal_code, city, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            )
        elif c.relation == "contacts":
            sql = (
                "INSERT INTO crm.contacts (code, customer_code, last_name, first_name, updated_at)"
                " VALUES (%s, %s, %s, %s, %s)"
            )
        elif c.relation == "stock_movements":
            sql = (
                "INSERT INTO crm.stock_movements (id, direction, warehouse_code, item_code, quantity, moved_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
            )
        else:
            sql = (
                "INSERT INTO crm.customer_item_references"
                " (customer_code, item_code, customer_reference, customer_price, updated_at)"
                " VALUES (%s, %s, %s, %s, %s)"
            )
        statements.append((sql, (*c.row, ts)))
    execute(dep.crm_url, statements)


def _key(c: Case) -> str:
    return source_key(c.row[0], c.row[1]) if c.relation == "customer_item_references" else str(c.row[0])


def _held(dep: Deployment, endpoint: str, record: dict[str, Any]) -> dict[str, str] | None:
    line = record["line"] or ""
    from gestimum_pipeline.gestimum.encoding import decode_line

    codes = catalog.endpoint(endpoint).field_codes
    values = decode_line(line)
    values += [""] * (len(codes) - len(values))
    fields = dict(zip(codes, values, strict=True))
    state = dep.simulator.state
    if endpoint == "comptes":
        return state.accounts.get(fields["CPT_NUMERO"])
    if endpoint == "clients":
        return state.customers.get(fields["PCF_CODE"])
    if endpoint == "contacts":
        return state.contacts.get(fields["CCT_CODE"])
    if endpoint == "references_clients_articles":
        return state.references.get((fields["ART_CODE"], fields["PCF_CODE"]))
    matches = [
        line
        for d in state.documents
        for line in d.lines
        if tuple(line[c] for c in codes) == tuple(fields[c] for c in codes)
    ]
    assert len(matches) <= 1
    return matches[0] if matches else None


def _same(field: str, held: str, expected: str) -> bool:
    if field in ("MVT_QTE", "ART_PCLIENT") and expected:
        # The same number, written with Gestimum's decimal comma (docs/assumptions.md).
        return "." not in held and parse_decimal(held) == Decimal(expected)
    return held == expected


@pytest.fixture
def dep(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        # A CRM behind views may hand NULLs where the reference tables forbid them.
        execute(
            d.crm_url,
            [
                ("ALTER TABLE crm.customers ALTER COLUMN name DROP NOT NULL", None),
                ("ALTER TABLE crm.contacts ALTER COLUMN last_name DROP NOT NULL", None),
                ("ALTER TABLE crm.contacts ALTER COLUMN customer_code DROP NOT NULL", None),
            ],
        )
        yield d


def test_every_hostile_value_arrives_exactly_is_changed_by_a_counted_rule_or_is_refused_locally(
    dep: Deployment,
) -> None:
    _insert(dep, CASES)
    run = run_job(dep)
    assert run.success, run.failures
    assert_no_secret(run.texts(), dep.secrets)
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)

    state = {e: records(dep.state_url, e) for e in catalog.ENDPOINTS}
    rules_seen: dict[str, int] = {}
    for c in CASES:
        key = _key(c)
        for endpoint, expect in c.expect.items():
            record = state[endpoint].get(key)
            where = f"{c.id}: {endpoint} {key!r}"
            assert record is not None, f"{where}: not staged"
            if isinstance(expect, Exact | Rule):
                assert record["status"] == "imported", f"{where}: {record['status']} {record['reason']}"
                held = _held(dep, endpoint, record)
                assert held is not None, f"{where}: not in Gestimum"
                for field, value in expect.values.items():
                    assert _same(field, held[field], value), f"{where}: {field} = {held[field]!r}, not {value!r}"
                if isinstance(expect, Rule):
                    rules_seen[expect.name] = rules_seen.get(expect.name, 0) + 1
            elif isinstance(expect, Local):
                assert record["status"] == "rejected" and record["reason_source"] == "local", f"{where}: {record}"
                reason = record["reason"]
                assert f"record {key} field {expect.field}" in reason, f"{where}: {reason!r}"
                assert expect.says in reason, f"{where}: {reason!r}"
                assert record["line"] is None or "differs only by case" in reason  # nothing sendable was kept
            elif isinstance(expect, Held):
                assert record["status"] == "held" and expect.parent in record["reason"], f"{where}: {record}"
            else:
                assert record["status"] == "rejected" and record["reason_source"] == "gestimum", f"{where}: {record}"
                assert expect.says in record["reason"], f"{where}: {record['reason']!r}"

    # The documented rules are counted in the transforms' metadata.
    address_fields = sum(
        len(e.values)
        for c in CASES
        for e in c.expect.values()
        if isinstance(e, Rule) and e.name == "address_line_breaks"
    )
    assert run.metadata["transform/clients"]["rule_address_line_breaks"] == address_fields
    assert run.metadata["transform/contacts"]["rule_contact_name"] >= rules_seen["contact_name"]
    assert run.metadata["transform/clients"]["rule_case_colliding_key_rejected"] == 4

    # A broken line is never sent: Gestimum refused lines only for business reasons.
    for endpoint, rows in state.items():
        for key, record in rows.items():
            if record["reason_source"] == "gestimum":
                assert not record["reason"].startswith(BROKEN_LINE_REASONS), (endpoint, key, record["reason"])
    assert sum(r.rejected for r in dep.simulator.state.requests) == sum(
        1 for rows in state.values() for r in rows.values() if r["reason_source"] == "gestimum"
    )
    for c in CASES:
        case = CaseRecord(
            "input",
            c.id,
            "; ".join(f"{e}: {_describe(x)}" for e, x in c.expect.items()),
            _operator_view(c, state),
        )
        case.add("the whole matrix in one run", report)
        case.save()


def _describe(expect: Expect) -> str:
    if isinstance(expect, Exact):
        return "exact"
    if isinstance(expect, Rule):
        return f"rule {expect.name}"
    if isinstance(expect, Local):
        return f"refused locally ({expect.field})"
    if isinstance(expect, Held):
        return f"held until {expect.parent} imports"
    return "refused by Gestimum, value intact in its reason"


def _operator_view(c: Case, state: dict[str, dict[str, dict[str, Any]]]) -> str:
    reasons = [state[e][_key(c)]["reason"] for e in c.expect if state[e][_key(c)]["reason"]]
    return reasons[0][:160] if reasons else "imported"


def test_rows_sharing_a_key_in_a_crm_view_are_all_refused(dep: Deployment) -> None:
    """A CRM view without a unique key: every copy refused, within a chunk and across chunks."""
    execute(
        dep.crm_url,
        [
            ("ALTER TABLE crm.customers RENAME TO customers_data", None),
            ("CREATE TABLE crm.customers_extra (LIKE crm.customers_data)", None),
            (
                "CREATE VIEW crm.customers AS SELECT * FROM crm.customers_data"
                " UNION ALL SELECT * FROM crm.customers_extra",
                None,
            ),
            *(
                ("INSERT INTO crm.customers_data (code, name, updated_at) VALUES (%s, %s, %s)", (code, name, DAY_TS))
                for code, name in [("D1", "Un"), ("D2", "Deux"), ("D3", "Trois"), ("D4", "Quatre")]
            ),
            *(
                ("INSERT INTO crm.customers_extra (code, name, updated_at) VALUES (%s, %s, %s)", (code, name, DAY_TS))
                for code, name in [("D1", "Un bis"), ("D3", "Trois bis")]
            ),
            (
                "INSERT INTO crm.contacts (code, customer_code, last_name, updated_at) VALUES ('KD', 'D1', 'X', %s)",
                (DAY_TS,),
            ),
        ],
    )
    dep.options["chunk_size"] = 2  # keys D1 D1 | D2 D3 | D3 D4: one pair inside a chunk, one across
    run = run_job(dep)
    assert run.success, run.failures
    for endpoint in ("comptes", "clients"):
        rows = records(dep.state_url, endpoint)
        assert {k: r["status"] for k, r in rows.items()} == {
            "D1": "rejected",
            "D2": "imported",
            "D3": "rejected",
            "D4": "imported",
        }
        for key in ("D1", "D3"):
            assert f"record {key} field PCF_CODE: the key appears 2 or more times" in rows[key]["reason"]
    assert statuses(dep.state_url, "contacts") == {"KD": "held"}
    assert "D1" not in dep.simulator.state.customers and "D3" not in dep.simulator.state.customers
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)
    case = CaseRecord(
        "input",
        "duplicate_keys_in_a_crm_view",
        "comptes, clients: every copy refused locally (PCF_CODE), within a chunk and across chunks",
        rows["D1"]["reason"][:160],
    )
    case.add("one run", report)
    case.save()


# Movements at the edges of Europe/Paris days, written in several time zones. Each is
# expected in the partition of its Paris date, and only there (look-back 0).
BOUNDARY_MOVEMENTS = [
    (201, "2026-03-28 23:59:59.999+01", "2026-03-28"),  # last instant before the spring DST day
    (202, "2026-03-28T23:00:00Z", "2026-03-29"),  # midnight in Paris, written in UTC
    (203, "2026-03-29 01:59:59+01", "2026-03-29"),  # just before the clocks jump
    (204, "2026-03-29 03:00:00+02", "2026-03-29"),  # just after (02:xx does not exist that day)
    (205, "2026-03-29 23:59:59+02", "2026-03-29"),  # the 23-hour day's last second
    (206, "2026-03-29T22:00:00Z", "2026-03-30"),  # midnight in Paris (CEST), in UTC
    (207, "2026-03-29 08:00:00-05", "2026-03-29"),  # New York morning = Paris afternoon
    (208, "2026-03-29 06:30:00+09", "2026-03-28"),  # Tokyo morning of the 29th = Paris evening of the 28th
    (209, "2026-10-25 02:30:00+02", "2026-10-25"),  # autumn DST day: the first 02:30 (CEST)
    (210, "2026-10-25 02:30:00+01", "2026-10-25"),  # ... and the second 02:30 (CET), one hour later
    (211, "2026-10-24T22:00:00Z", "2026-10-25"),  # midnight starting the 25-hour day
    (212, "2026-10-25T22:59:59Z", "2026-10-25"),  # its last second
    (213, "2026-10-25T23:00:00Z", "2026-10-26"),  # the next midnight
]


def test_timestamps_in_other_time_zones_and_at_dst_boundaries_land_in_one_partition(dep: Deployment) -> None:
    execute(
        dep.crm_url,
        [
            (
                "INSERT INTO crm.stock_movements (id, direction, warehouse_code, item_code, quantity, moved_at)"
                " VALUES (%s, 'in', '001', 'ELS', %s, %s)",
                (movement, movement, moved_at),
            )
            for movement, moved_at, _ in BOUNDARY_MOVEMENTS
        ],
    )
    dep.options["lookback_minutes"] = 0
    seen: dict[str, str] = {}
    for day in sorted({d for _, _, d in BOUNDARY_MOVEMENTS}):
        before = set(statuses(dep.state_url, "documents_stock"))
        run = run_job(dep, day)
        assert run.success, run.failures
        staged = set(statuses(dep.state_url, "documents_stock")) - before
        for key in staged:
            seen[key] = day
        window = run.metadata["transform/documents_stock"]
        assert window["rows_read"] == sum(1 for _, _, d in BOUNDARY_MOVEMENTS if d == day), (day, window)
    assert seen == {str(m): d for m, _, d in BOUNDARY_MOVEMENTS}
    rows = records(dep.state_url, "documents_stock")
    assert {k: r["partition"] for k, r in rows.items()} == seen
    assert set(statuses(dep.state_url, "documents_stock").values()) == {"imported"}
    report = check_invariants(dep.crm_url, dep.state_url, dep.simulator.state)
    assert report.max_copies == 1 and report.document_lines == len(BOUNDARY_MOVEMENTS)
    case = CaseRecord(
        "input",
        "timestamps_other_zones_and_dst_boundaries",
        "13 movements written in UTC, +01, +02, -05, +09 around both 2026 DST changes: each read by the run of "
        "its Europe/Paris day only (look-back 0), imported once",
        "imported",
    )
    case.add("after one run per day", report)
    case.save()
