"""Line encoding: one record becomes one delimited string, and never more or less.

Gestimum does not document how `identificateur_texte` escapes a qualifier inside a
value, nor whether unquoted values are trimmed. We take the conservative reading
(docs/assumptions.md):

* a field is wrapped in the text qualifier when it holds the separator, the
  qualifier, a tab, or leading/trailing whitespace; a qualifier inside a value is
  doubled (the RFC 4180 convention, which Windows import tools share);
* unquoted fields may be trimmed by Gestimum, hence whitespace at the edges is quoted;
* CR/LF and other control characters cannot be carried by a line and are refused,
  as are characters outside the company's character set (Windows-1252 by default);
* `None` and the empty string both travel as an empty field.

The same module decodes lines, so the simulator parses exactly what we encode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

DEFAULT_SEPARATOR = ";"
DEFAULT_QUALIFIER = '"'
DEFAULT_CHARSET = "cp1252"
DEFAULT_DECIMAL_SEPARATOR = ","


class EncodingError(ValueError):
    """A value that cannot travel faithfully; names the record and the field."""

    def __init__(self, reason: str, *, record: str | None = None, field: str | None = None):
        self.reason = reason
        self.record = record
        self.field = field
        where = " ".join(p for p in (f"record {record}" if record else "", f"field {field}" if field else "") if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class LineSyntaxError(ValueError):
    """A line that does not parse with the announced separator and qualifier."""


def _forbidden_char(value: str) -> str | None:
    for ch in value:
        if ch in "\r\n":
            return "contains a line break (CR/LF), which would split the record"
        o = ord(ch)
        if (o < 32 and ch != "\t") or o == 0x7F:
            return f"contains the control character U+{o:04X}"
    return None


class LineEncoder:
    """Encodes records for one separator/qualifier/charset combination."""

    def __init__(
        self,
        separator: str = DEFAULT_SEPARATOR,
        qualifier: str = DEFAULT_QUALIFIER,
        charset: str | None = DEFAULT_CHARSET,
        decimal_separator: str = DEFAULT_DECIMAL_SEPARATOR,
    ) -> None:
        if len(separator) != 1 or separator in "\r\n\t ":
            raise ValueError(f"separator must be one visible character, got {separator!r}")
        if len(qualifier) > 1 or qualifier == separator or (qualifier and qualifier in "\r\n\t "):
            raise ValueError(f"qualifier must be empty or one character other than the separator, got {qualifier!r}")
        if decimal_separator == separator:
            raise ValueError("the decimal separator cannot be the field separator")
        self.separator = separator
        self.qualifier = qualifier
        self.charset = charset
        self.decimal_separator = decimal_separator
        self._specials = (separator, qualifier, "\t") if qualifier else (separator, "\t")
        # Fast path of encode_line: one C-level scan of the joined line finds anything
        # that could need more than joining the values (control characters and tabs, the
        # qualifier, whitespace at a field's edge); the separator count finds separators
        # inside values. Anything found falls back to the per-value path, which decides.
        self._needs_care = re.compile(rf"[\x00-\x1f\x7f{re.escape(qualifier)}]")
        self._spaced_separators = (f" {separator}", f"{separator} ")
        self._check_charset = bool(charset)
        if charset:
            try:
                "".join(map(chr, range(128))).encode(charset)
                self._ascii_safe = True  # an ASCII-only line needs no charset check
            except (UnicodeEncodeError, LookupError):
                self._ascii_safe = False
        else:
            self._ascii_safe = True

    def encode_value(self, value: str | None, *, record: str | None = None, field: str | None = None) -> str:
        if value is None or value == "":
            return ""
        if not isinstance(value, str):
            raise EncodingError(f"expected text, got {type(value).__name__}", record=record, field=field)
        problem = _forbidden_char(value)
        if problem:
            raise EncodingError(problem, record=record, field=field)
        if self.charset:
            try:
                value.encode(self.charset)
            except UnicodeEncodeError as exc:
                bad = value[exc.start]
                raise EncodingError(
                    f"character {bad!r} (U+{ord(bad):04X}) is not representable in {self.charset}",
                    record=record,
                    field=field,
                ) from None
        needs_quotes = (
            any(s and s in value for s in self._specials)
            or value[0].isspace()
            or value[-1].isspace()
            or (self.qualifier and self.qualifier in value)
        )
        if not needs_quotes:
            return value
        if not self.qualifier:
            raise EncodingError(
                "holds the separator or edge whitespace and no text qualifier is configured",
                record=record,
                field=field,
            )
        q = self.qualifier
        return q + value.replace(q, q + q) + q

    def encode_line(
        self,
        values: Sequence[str | None],
        *,
        record: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> str:
        fast = self._fast_line(values)
        if fast is not None:
            return fast
        encoded = [
            self.encode_value(v, record=record, field=fields[i] if fields else str(i + 1)) for i, v in enumerate(values)
        ]
        # Gestimum accepts lines shorter than the header (trailing empty fields omitted).
        while encoded and encoded[-1] == "":
            encoded.pop()
        return self.separator.join(encoded)

    def _fast_line(self, values: Sequence[str | None]) -> str | None:
        """The line when every value travels as is (the common case), else None.

        Gives exactly what the per-value path gives for such values: they are joined
        unquoted, trailing empty fields dropped.
        """
        try:
            joined = self.separator.join(["" if v is None else v for v in values])
        except TypeError:  # a value that is not text: the slow path names it
            return None
        if joined.count(self.separator) != len(values) - 1 or self._needs_care.search(joined):
            return None
        ascii_only = joined.isascii()
        if ascii_only:
            # Every ASCII whitespace but the space is a control character, refused above.
            before, after = self._spaced_separators
            if joined[:1] == " " or joined[-1:] == " " or before in joined or after in joined:
                return None
        elif any(v and (v[0].isspace() or v[-1].isspace()) for v in values):
            return None
        if self._check_charset and not (self._ascii_safe and ascii_only):
            try:
                joined.encode(self.charset)  # type: ignore[arg-type]
            except UnicodeEncodeError:
                return None
        return joined.rstrip(self.separator)

    def encode_header(self, codes: Sequence[str]) -> str:
        return self.separator.join(codes)

    def format_decimal(
        self, value: Decimal | int | float | str, *, record: str | None = None, field: str | None = None
    ) -> str:
        try:
            d = value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            raise EncodingError(f"{value!r} is not a number", record=record, field=field) from None
        if not d.is_finite():
            raise EncodingError(f"{value!r} is not a finite number", record=record, field=field)
        text = format(d.normalize(), "f")  # "f" never uses exponent notation
        if text == "-0":
            text = "0"
        return text.replace(".", self.decimal_separator)


def parse_decimal(text: str, decimal_separator: str = DEFAULT_DECIMAL_SEPARATOR) -> Decimal:
    """Parses a decimal written with `decimal_separator`; raises ValueError otherwise."""
    t = text.strip()
    other = "." if decimal_separator == "," else ","
    if not t or other in t or " " in t:
        raise ValueError(f"invalid number {text!r}")
    try:
        d = Decimal(t.replace(decimal_separator, "."))
    except InvalidOperation:
        raise ValueError(f"invalid number {text!r}") from None
    if not d.is_finite() or "e" in t.lower():
        raise ValueError(f"invalid number {text!r}")
    return d


def decode_line(line: str, separator: str = DEFAULT_SEPARATOR, qualifier: str = DEFAULT_QUALIFIER) -> list[str]:
    """Splits one line into field values; strict about qualifiers.

    Unquoted values are trimmed (as we assume Gestimum does); quoted values are kept
    exactly, with doubled qualifiers collapsed.
    """
    if "\r" in line or "\n" in line:
        raise LineSyntaxError("line break inside a line")
    if not qualifier:
        return [v.strip() for v in line.split(separator)]
    fields: list[str] = []
    i, n = 0, len(line)
    while True:
        # skip leading spaces before a possible opening qualifier
        j = i
        while j < n and line[j] == " ":
            j += 1
        if j < n and line[j] == qualifier:
            j += 1
            buf: list[str] = []
            while True:
                k = line.find(qualifier, j)
                if k < 0:
                    raise LineSyntaxError(f"unterminated text qualifier at column {len(fields) + 1}")
                buf.append(line[j:k])
                if k + 1 < n and line[k + 1] == qualifier:
                    buf.append(qualifier)
                    j = k + 2
                    continue
                j = k + 1
                break
            while j < n and line[j] == " ":
                j += 1
            fields.append("".join(buf))
            if j == n:
                return fields
            if line[j] != separator:
                raise LineSyntaxError(f"text after closing qualifier at column {len(fields)}")
            i = j + 1
        else:
            k = line.find(separator, i)
            raw = line[i:] if k < 0 else line[i:k]
            if qualifier in raw:
                raise LineSyntaxError(f"stray text qualifier at column {len(fields) + 1}")
            fields.append(raw.strip())
            if k < 0:
                return fields
            i = k + 1
