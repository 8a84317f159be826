"""Unit tests of encoding.py: one record is one line, and decodes back to itself."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from gestimum_pipeline.gestimum.encoding import (
    EncodingError,
    LineEncoder,
    LineSyntaxError,
    decode_line,
    parse_decimal,
)

ENC = LineEncoder()  # ; " cp1252 ,

HOSTILE = [
    "a;b",  # separator
    ";",
    ";;;",
    'say "hi"',  # qualifier
    '"',
    '""',
    '"abc',
    'abc"',
    "\t",  # tab
    "a\tb",
    " ",  # edge whitespace
    "  x",
    "x  ",
    ' "x',
    "\u00a0x",  # non-breaking space at the edge
    "a b",  # inner space: no quotes needed
    "éèàçùôœ€ÿ",  # accents and cp1252 specials
    'Zoë; "l\'Hôtel"\t',
    "it's",
    "\\back\\slash\\",
    "{json: [1]}",
    "",
    None,
]


def normalised(values):
    return ["" if v is None else v for v in values]


def roundtrip(values, enc: LineEncoder = ENC) -> list[str]:
    line = enc.encode_line(values)
    decoded = decode_line(line, enc.separator, enc.qualifier)
    # Trailing empty fields are omitted on the wire (Gestimum accepts short lines).
    return decoded + [""] * (len(values) - len(decoded)) if len(decoded) < len(values) else decoded


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_value_roundtrips_alone_and_among_others(value):
    assert roundtrip([value]) == normalised([value])
    values = ["before", value, "after"]
    assert roundtrip(values) == normalised(values)


def test_all_hostile_values_in_one_line():
    assert roundtrip(HOSTILE) == normalised(HOSTILE)


def test_random_hostile_lines_roundtrip():
    rng = random.Random(1234)
    alphabet = [";", '"', "\t", " ", "a", "Z", "é", "€", "'", "\\", "\u00a0", "|", ","]
    for _ in range(2000):
        values = [
            None if rng.random() < 0.1 else "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
            for _ in range(rng.randrange(1, 8))
        ]
        assert roundtrip(values) == normalised(values), values


@pytest.mark.parametrize(("separator", "qualifier"), [("|", "'"), (",", '"'), ("#", "~"), (";", "'")])
def test_other_separators_roundtrip(separator, qualifier):
    enc = LineEncoder(separator=separator, qualifier=qualifier, charset=None, decimal_separator=".")
    values = [f"a{separator}b", f"x{qualifier}y", " edge ", "plain", "Ω", None, "tail"]
    assert roundtrip(values, enc) == normalised(values)


def test_quoting_is_minimal_and_qualifier_doubled():
    assert ENC.encode_value("plain") == "plain"
    assert ENC.encode_value("a b") == "a b"
    assert ENC.encode_value("a;b") == '"a;b"'
    assert ENC.encode_value('a"b') == '"a""b"'
    assert ENC.encode_value(" a") == '" a"'
    assert ENC.encode_value("a\tb") == '"a\tb"'


def test_none_and_empty_are_empty_fields():
    assert ENC.encode_value(None) == ""
    assert ENC.encode_value("") == ""
    assert ENC.encode_line(["A", None, "", "B"]) == "A;;;B"


def test_trailing_empty_fields_are_omitted():
    # As in the documented Comptes example: "411JOHNDOE;John Doe;C;JOHNDOE".
    assert ENC.encode_line(["411JOHNDOE", "John Doe", "C", "JOHNDOE", None]) == "411JOHNDOE;John Doe;C;JOHNDOE"
    assert ENC.encode_line(["70700202", "Ventes de produits finis", "G", "", "445660"]) == (
        "70700202;Ventes de produits finis;G;;445660"
    )
    assert ENC.encode_line([None, None]) == ""
    assert ENC.encode_line([]) == ""


def test_header():
    assert ENC.encode_header(["CCT_CODE", "CCT_NOM", "CCT_ORIGIN"]) == "CCT_CODE;CCT_NOM;CCT_ORIGIN"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("a\nb", "line break"),
        ("a\rb", "line break"),
        ("a\r\n", "line break"),
        ("\x00", "U\\+0000"),
        ("bell\x07", "U\\+0007"),
        ("\x1f", "U\\+001F"),
        ("del\x7f", "U\\+007F"),
        ("Ω", "not representable in cp1252"),
        ("emoji 😀", "not representable"),
        ("漢字", "not representable"),
    ],
)
def test_values_that_cannot_travel_are_refused(value, match):
    with pytest.raises(EncodingError, match=match):
        ENC.encode_value(value)


def test_refusal_names_record_and_field():
    with pytest.raises(EncodingError) as info:
        ENC.encode_line(["ok", "bad\nvalue"], record="C42", fields=["PCF_CODE", "PCF_RS"])
    assert info.value.record == "C42"
    assert info.value.field == "PCF_RS"
    assert "record C42" in str(info.value) and "field PCF_RS" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_refusal_without_field_names_uses_positions():
    with pytest.raises(EncodingError, match="field 2"):
        ENC.encode_line(["ok", "bad\x01"])


def test_non_text_refused():
    with pytest.raises(EncodingError, match="expected text"):
        ENC.encode_value(42)  # type: ignore[arg-type]


def test_charset_none_accepts_any_printable_text():
    enc = LineEncoder(charset=None)
    assert enc.encode_value("Ω 😀") == "Ω 😀"
    with pytest.raises(EncodingError):
        enc.encode_value("a\nb")  # still one line


def test_other_charset():
    enc = LineEncoder(charset="latin-1")
    assert enc.encode_value("é") == "é"
    with pytest.raises(EncodingError):
        enc.encode_value("€")  # in cp1252, not in latin-1


def test_without_qualifier_special_values_are_refused():
    enc = LineEncoder(qualifier="", charset=None)
    assert enc.encode_value("plain") == "plain"
    for value in ("a;b", " edge", "tab\t"):
        with pytest.raises(EncodingError, match="no text qualifier"):
            enc.encode_value(value)
    assert decode_line("a; b ;c", qualifier="") == ["a", "b", "c"]


def test_empty_qualifier_is_accepted():
    # Every documented example sends "identificateur_texte": "".
    assert LineEncoder(qualifier="").qualifier == ""


@pytest.mark.parametrize(
    ("separator", "qualifier", "decimal"),
    [
        (";;", '"', ","),
        ("", '"', ","),
        ("\t", '"', ","),
        (" ", '"', ","),
        (";", ";", ","),
        (";", '""', ","),
        (";", '"', ";"),
    ],
)
def test_invalid_encoder_settings(separator, qualifier, decimal):
    with pytest.raises(ValueError):
        LineEncoder(separator=separator, qualifier=qualifier, decimal_separator=decimal)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("20"), "20"),
        (20, "20"),
        ("1.50", "1,5"),
        (Decimal("1E+3"), "1000"),
        (0.1, "0,1"),
        (Decimal("-0.00"), "0"),
        (Decimal("-1.25"), "-1,25"),
        (Decimal("0.000001"), "0,000001"),
    ],
)
def test_format_decimal(value, text):
    assert ENC.format_decimal(value) == text
    assert parse_decimal(text) == Decimal(str(value)).normalize() or text == "0"


def test_format_decimal_with_dot():
    assert LineEncoder(decimal_separator=".").format_decimal(Decimal("2.5")) == "2.5"


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", Decimal("NaN"), float("inf"), ""])
def test_format_decimal_refuses_non_numbers(value):
    with pytest.raises(EncodingError):
        ENC.format_decimal(value, record="A1", field="MVT_QTE")


@pytest.mark.parametrize("text", ["", " ", "1.5", "1,5,0", "1e3", "NaN", "1 000", "abc", "Infinity"])
def test_parse_decimal_refuses(text):
    with pytest.raises(ValueError):
        parse_decimal(text)


def test_parse_decimal_accepts():
    assert parse_decimal("1,5") == Decimal("1.5")
    assert parse_decimal(" 2 ") == Decimal("2")
    assert parse_decimal("-3") == Decimal("-3")
    assert parse_decimal("1.5", decimal_separator=".") == Decimal("1.5")


@pytest.mark.parametrize(
    "line",
    ['"a', 'a"b', '"a"x', '"a";"b', "a\nb", 'x;"unterminated'],
)
def test_decode_line_is_strict(line):
    with pytest.raises(LineSyntaxError):
        decode_line(line)


def test_decode_line_shapes():
    assert decode_line("") == [""]
    assert decode_line(";;") == ["", "", ""]
    assert decode_line(' "a" ; b ') == ["a", "b"]  # spaces around a quoted value are padding
    assert decode_line('"a;b";"c""d"') == ["a;b", 'c"d']
    assert decode_line("C42;411C42;SPORT25;5 rue Cugnot;ZA Du Pâtis;78120;RAMBOUILLET") == [
        "C42",
        "411C42",
        "SPORT25",
        "5 rue Cugnot",
        "ZA Du Pâtis",
        "78120",
        "RAMBOUILLET",
    ]
