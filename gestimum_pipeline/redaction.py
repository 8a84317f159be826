"""Secrets redaction, in one place: what of a text, a URL or a message must never be shown.

Every message that may reach a human (logs, the Dagster UI, alerts, CLI output) goes
through these functions. Over-hiding is harmless; under-hiding is a leak, so each rule
errs towards hiding:

* `redact(text, secrets)`: known secrets, raw, as JSON escapes them (a password
  holding `"` or `\\` appears escaped in a request body or a JSON answer), HTML-escaped and
  percent-encoded (an echoing error page or proxy), and as repr() shows those; a text is
  redacted whole, before it is cut: a secret cut in two no longer matches;
* `redact_url(url)`: the password of a `scheme://user:password@host` URL (up to the
  *last* `@`, so an unencoded `@` or `/` in it stays hidden), and `password=` values in a
  query string or a libpq keyword string (`host=h password='a b'`);
* `redact_text(text, secrets)`: both of the above over free text (URLs found in it).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit

REDACTED = "***"

# `scheme://user:PASSWORD@rest`: the password runs up to the *last* `@`.
_URL_PASSWORD_RE = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:)(?P<password>.*)@(?P<tail>[^@]*)$")
# `password=...` as a URL query parameter or a libpq keyword (`key=value key2='v a'`).
_PARAM_PASSWORD_RE = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]]+")


def _forms(secret: str) -> list[str]:
    """The secret as written, as JSON writes it inside a string (escaped quotes, backslashes),
    as an HTML page or a URL echoes it (HTML-escaped, percent-encoded), and each of those as
    Python's repr() shows it (an answer quoted with !r doubles backslashes)."""
    escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
    ascii_escaped = json.dumps(secret)[1:-1]
    html_escaped = html.escape(secret)
    written = (
        secret,
        escaped,
        ascii_escaped,
        html_escaped,
        html_escaped.replace("&#x27;", "&#39;"),
        html.escape(secret, quote=False),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        quote(secret),  # "/" kept, as in a path
    )
    return list(dict.fromkeys((*written, *(repr(form)[1:-1] for form in written))))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replaces every occurrence of each non-empty secret (raw or JSON-escaped) with `***`."""
    forms = {form for s in secrets if s for form in _forms(s)}
    # Longest first, so a secret containing another one is not half-redacted.
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`; safe on malformed input and libpq keyword strings too."""
    if not isinstance(url, str):
        return "<not a string>"
    redacted = url
    match = _URL_PASSWORD_RE.match(redacted)
    if match and match.group("password"):
        redacted = f"{match.group('head')}{REDACTED}@{match.group('tail')}"
    return _redact_params(redacted)


def _redact_params(text: str) -> str:
    return _PARAM_PASSWORD_RE.sub(lambda m: f"{m.group('key')}{REDACTED}" if m.group("value") else m.group(0), text)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with explicit secrets, passwords inside URLs and `password=` values replaced by `***`."""
    text = redact(text, secrets)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _redact_params(text)


def url_secrets(url: str) -> list[str]:
    """The password embedded in `url`, raw and percent-decoded, for `redact`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []
