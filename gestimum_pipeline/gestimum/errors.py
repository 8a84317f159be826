"""Typed failures of the Gestimum protocol layer.

Each class answers the operator's first question: was anything delivered, and what
do I fix? Messages never carry the password nor the request body (which holds it);
`gestimum_pipeline.redaction` is applied on top as a defence in depth.
"""

from __future__ import annotations

# Settings an operator can fix, named in authentication errors.
SETTING_CREDENTIALS = "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE"
SETTING_COMPANY_FILE = "GESTIMUM_FICHIER"


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
