"""The hot path's fast routes give exactly what the general routes give."""

from __future__ import annotations

import random

import pytest

from gestimum_pipeline.gestimum.encoding import EncodingError, LineEncoder

ALPHABET = [
    "a",
    "Z",
    "0",
    " ",
    ";",
    '"',
    "'",
    "\t",
    "\n",
    "\r",
    "\x01",
    "\x7f",
    "é",
    "€",
    "Œ",
    "😀",
    "\xa0",
    "\x85",
    ",",
    "|",
]


def _slow(enc: LineEncoder, values: list[str | None]) -> str | Exception:
    try:
        encoded = [enc.encode_value(v, field=str(i + 1)) for i, v in enumerate(values)]
    except EncodingError as exc:
        return exc
    while encoded and encoded[-1] == "":
        encoded.pop()
    return enc.separator.join(encoded)


@pytest.mark.parametrize(
    ("separator", "qualifier", "charset"),
    [(";", '"', "cp1252"), (";", "", "cp1252"), ("|", "'", "latin-1"), ("|", '"', None), (";", '"', "utf-8")],
)
def test_encode_line_fast_path_matches_the_per_value_path(separator: str, qualifier: str, charset: str | None) -> None:
    enc = LineEncoder(separator, qualifier, charset)
    rng = random.Random(7)
    for _ in range(20_000):
        values: list[str | None] = []
        for _ in range(rng.randint(0, 5)):
            kind = rng.random()
            if kind < 0.15:
                values.append(None)
            elif kind < 0.25:
                values.append("")
            elif kind < 0.6:
                values.append("".join(rng.choice("abcXYZ 019-") for _ in range(rng.randint(1, 8))))
            else:
                values.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6))))
        expected = _slow(enc, values)
        if isinstance(expected, Exception):
            with pytest.raises(EncodingError) as info:
                enc.encode_line(values)
            assert info.value.reason == expected.reason and info.value.field == expected.field
        else:
            assert enc.encode_line(values) == expected, values
