"""Typed failures of the Gestimum protocol layer.

Each class answers the operator's first question: was anything delivered, and what
do I fix? Messages never carry the password nor the request body (which holds it);
`redact` is applied on top as a defence in depth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

REDACTED = "***"

# Settings an operator can fix, named in authentication errors.
SETTING_CREDENTIALS = "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE"
SETTING_COMPANY_FILE = "GESTIMUM_FICHIER"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replaces every occurrence of each non-empty secret with `***`."""
    # Longest first, so a secret containing another one is not half-redacted.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


# `scheme://user:PASSWORD@host...`: the password runs up to the last `@` of the authority.
_URL_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:)(?P<password>[^/?#]*)@")


def redact_url(url: str) -> str:
    """`url` with the password of its user-info part (`user:password@`) replaced by `***`."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('head')}{REDACTED}@", url, count=1)


def url_secrets(url: str) -> list[str]:
    """The password embedded in `url`, raw and percent-decoded, for `redact`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


class GestimumError(Exception):
    """Base class; `endpoint` is our endpoint name and `status` the HTTP status, when known."""

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status

    def __str__(self) -> str:
        return self.message


class GestimumUnreachable(GestimumError):
    """Could not connect (refused, DNS, connect timeout, TLS refused): nothing was delivered."""


class GestimumAuthenticationError(GestimumError):
    """Gestimum refused the credentials or the company file; `setting` names what to fix."""

    def __init__(
        self,
        message: str,
        *,
        setting: str = SETTING_CREDENTIALS,
        endpoint: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.setting = setting


class GestimumProtocolError(GestimumError):
    """The answer is not of the documented shape, its counts do not add up, or a 4xx refusal."""


class GestimumServerError(GestimumError):
    """Gestimum answered 5xx (after retries, where retrying is safe)."""


class GestimumDeliveryUnknown(GestimumError):
    """A non-idempotent request may have been processed: reconcile before re-sending.

    Never retried automatically: re-sending stock movements creates new documents.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        lines: int = 0,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.lines = lines
