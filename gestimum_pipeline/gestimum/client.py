"""HTTP client for Gestimum's import endpoints.

One rule drives the retry policy: a request is re-sent automatically only when we
know Gestimum did not process it, or when processing it twice is harmless.

* Could not connect (refused, DNS, connect timeout): nothing was delivered, retried
  for every endpoint, then GestimumUnreachable.
* HTTP 503 (and 408/429): we assume Gestimum refused the request before processing it
  (server busy / not accepting work; Gestimum's docs say nothing about it), so it is
  retried for every endpoint, honouring Retry-After (capped by max_backoff_seconds).
  Behind a proxy that may answer 503 after losing Gestimum's answer, that assumption is
  wrong for DocumentsStock: `stock_retry_on_503=False` (GESTIMUM_STOCK_RETRY_ON_503) makes
  a 503 on a non-idempotent endpoint a delivery in doubt instead.
* HTTP 500/502/504, read timeout, connection closed after the body was sent, an
  answer that is not the documented envelope, or counts that do not add up: Gestimum
  may have processed the request. Retried only on idempotent endpoints; on the
  others (DocumentsStock creates a new document every time) GestimumDeliveryUnknown is
  raised at once and the operator must reconcile before anything is re-sent.
* 4xx with the documented envelope, or a 200 whose `resultat` is not "succès": a
  refusal, nothing processed (our assumption); typed error, no retry.

The request body holds the password: it never appears in a log line or an exception,
and every exception message also goes through `redact` as a defence in depth.
A client holds one requests.Session: use one client per thread.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from gestimum_pipeline.gestimum.catalog import RESPONSE_MESSAGE, RESPONSE_RESULTAT, RESULTAT_SUCCESS, Endpoint
from gestimum_pipeline.gestimum.envelope import CompanySettings, LineFormat, build_body, encode_body
from gestimum_pipeline.gestimum.errors import (
    GestimumDeliveryUnknown,
    GestimumError,
    GestimumProtocolError,
    GestimumServerError,
    GestimumUnreachable,
)
from gestimum_pipeline.gestimum.journal import (
    ImportResult,
    envelope_entry,
    failure_from_payload,
    gestimum_said,
    parse_response,
)
from gestimum_pipeline.redaction import redact, redact_url, url_secrets

_log = logging.getLogger(__name__)

# How a failed attempt may be handled.
#   not_delivered: nothing reached Gestimum -> retry for every endpoint
#   not_processed: Gestimum declined to process it (503) -> retry for every endpoint
#   ambiguous: Gestimum may have processed it -> retry only if the endpoint is idempotent
#   final: retrying cannot help -> raise now
_Kind = Literal["not_delivered", "not_processed", "ambiguous", "final"]

# TLS failures that can only happen during the handshake, before any byte of the body.
_HANDSHAKE_REASONS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "WRONG_VERSION_NUMBER",
        "UNSUPPORTED_PROTOCOL",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_INTERNAL_ERROR",
        "NO_PROTOCOLS_AVAILABLE",
        "HANDSHAKE_FAILURE",
    }
)
_SNIPPET = 200


@dataclass
class _Failure:
    kind: _Kind
    error: GestimumError  # what to raise when we stop (final, or retries exhausted)
    detail: str  # short, body-free description for logs and DeliveryUnknown
    status: int | None = None
    retry_after: float | None = None
    cause: BaseException | None = None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception wrapped in `exc`: requests and urllib3 nest them in args/reason."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend((e.__cause__, e.__context__, getattr(e, "reason", None), *e.args))


def _never_connected(exc: BaseException) -> bool:
    # urllib3's NewConnectionError (refused, DNS: NameResolutionError) subclasses
    # ConnectTimeoutError; both are raised before the connection exists.
    return any(isinstance(e, urllib3.exceptions.ConnectTimeoutError | ConnectionRefusedError) for e in _chain(exc))


def _tls_handshake_failure(exc: BaseException) -> ssl.SSLError | None:
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return e
        if isinstance(e, ssl.SSLError) and getattr(e, "reason", None) in _HANDSHAKE_REASONS:
            return e
    return None


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions tolerated) or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def plain_http_warning(url: str, password: str, *, setting: str = "GESTIMUM_URL") -> str | None:
    """The warning a plain-HTTP Gestimum URL deserves, or None (https://, or a simulator on this
    machine with no password: nothing secret leaves the machine). One wording, said once per run;
    `setting` names where the URL comes from (a company file's own variable)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "http":
        return None
    if not password and _loopback(parts.hostname or ""):
        return None
    return (
        f"{setting} {redact_url(url.strip())} is plain HTTP: the Gestimum password and the CRM data travel "
        "unencrypted; use https://"
    )


class GestimumClient:
    """Sends already-encoded lines to one Gestimum server and company file."""

    def __init__(
        self,
        base_url: str,
        company: CompanySettings,
        *,
        fmt: LineFormat = LineFormat(),  # noqa: B008 - frozen dataclass, a safe default
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        verify: bool | str = True,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        stock_retry_on_503: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        # A URL may embed a proxy's user:password: it is shown redacted everywhere.
        secrets = [company.password, *url_secrets(base_url)]
        try:
            parts = urlsplit(base_url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            if valid:
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            shown = redact(redact_url(base_url), secrets)
            raise ValueError(f"the Gestimum URL must be http(s)://host[:port]/..., got {shown!r}")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive: a request must never hang forever")
        if max_retries < 0 or backoff_seconds < 0 or max_backoff_seconds < 0:
            raise ValueError("max_retries, backoff_seconds and max_backoff_seconds must not be negative")
        if isinstance(verify, str) and not os.path.exists(verify):
            raise ValueError(f"the TLS CA bundle {verify!r} does not exist")
        # urljoin drops the last path segment of a base without a trailing slash.
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.shown_url = redact(redact_url(self.base_url), secrets)  # for messages and logs
        self.company = company
        self.fmt = fmt
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.verify = verify
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.stock_retry_on_503 = stock_retry_on_503
        self._log = logger or _log
        self._secrets = secrets
        self._requests_made = 0
        self._bytes_posted = 0
        self._sleep = time.sleep  # replaceable in tests
        self._session = requests.Session()
        self._session.verify = verify
        self._session.headers.update({"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"})
        if verify is False:
            self._log.warning(
                "TLS verification is OFF for %s: the server's identity is not checked and the Gestimum "
                "credentials sent to it could be intercepted. Configure a CA bundle instead.",
                self.shown_url,
            )
        # Plain HTTP is warned about once per run, by the preflight (plain_http_warning), not per client.
        elif verify is True and parts.scheme == "https":
            # requests' trust_env: with no CA bundle of ours, these variables choose the trusted CAs.
            variable = next((v for v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if os.environ.get(v)), None)
            if variable is not None:
                self._log.info("TLS: Gestimum's certificate is checked against the CA bundle of %s", variable)

    @property
    def requests_made(self) -> int:
        """HTTP attempts made so far, retries included."""
        return self._requests_made

    @property
    def bytes_posted(self) -> int:
        """Bytes of request bodies posted so far, retries included."""
        return self._bytes_posted

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GestimumClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GestimumClient({self.shown_url!r}, {self.company!r})"

    # -- the request ---------------------------------------------------------------

    def import_lines(
        self,
        endpoint: Endpoint,
        lines: Sequence[str],
        *,
        test_mode: bool = False,
        options: Mapping[str, bool] | None = None,
    ) -> ImportResult:
        """Imports already-encoded data lines (the header is added here) in one request.

        Returns the checked result (rejected lines included); raises a GestimumError
        subclass when no trustworthy answer could be obtained. An empty `lines` makes no
        request (each one costs seconds of company opening) and returns an empty result.
        """
        lines = list(lines)
        # Invalid options / test mode raise ValueError here, before anything is sent.
        body = build_body(endpoint, self.company, lines, fmt=self.fmt, test_mode=test_mode, options=options)
        if not lines:
            return ImportResult(endpoint.name, 0, 0, 0, (), (), (), "", "", test_mode)
        data = encode_body(body)
        del body  # holds the password: keep it out of tracebacks' locals as far as possible
        return self._post(endpoint, data, len(lines), test_mode, self.max_retries)

    def redact(self, text: str) -> str:
        """`text` with the password (and any URL password) replaced by `***`: for journals shown in the UI."""
        return redact(text, self._secrets)

    def _redacted(self, result: ImportResult) -> ImportResult:
        """The answer with every text Gestimum wrote redacted: a per-line reason quotes the value
        refused, which may be the password, and it goes to the store, metadata, checks and alerts."""
        return dataclasses.replace(
            result,
            rejected_lines=tuple(dataclasses.replace(r, reason=self.redact(r.reason)) for r in result.rejected_lines),
            journal=tuple(self.redact(entry) for entry in result.journal),
            message=self.redact(result.message),
        )

    def check_access(self, endpoint: Endpoint, *, max_retries: int | None = None) -> ImportResult:
        """Proves that Gestimum answers and accepts the company file and credentials, importing nothing.

        Posts the endpoint's header and no data line with `tester` = Oui (the endpoint must
        document it): Gestimum opens the company (the fixed cost of any request, about 6 s on
        a real server), checks the user and password, and stores nothing. Raises the same
        typed errors as `import_lines`.
        """
        if not endpoint.supports_test_mode:
            raise ValueError(f"{endpoint.name} has no documented test mode: it cannot be used to check access")
        body = build_body(endpoint, self.company, [], fmt=self.fmt, test_mode=True)
        data = encode_body(body)
        del body
        retries = self.max_retries if max_retries is None else min(max_retries, self.max_retries)
        return self._post(endpoint, data, 0, True, retries)

    def _post(self, endpoint: Endpoint, data: bytes, n_lines: int, test_mode: bool, max_retries: int) -> ImportResult:
        """Posts one encoded body, retrying where that is safe (see the module docstring)."""
        url = urljoin(self.base_url, endpoint.path)
        attempt = 0
        while True:
            attempt += 1
            outcome = self._attempt(endpoint, url, data, n_lines, attempt, test_mode)
            if isinstance(outcome, ImportResult):
                return outcome
            failure = outcome
            if failure.kind == "final":
                raise self._scrub(failure.error) from failure.cause
            if failure.kind == "ambiguous" and not endpoint.idempotent:
                raise self._scrub(
                    GestimumDeliveryUnknown(
                        f"the {endpoint.name} request ({n_lines} lines, {len(data)} bytes, attempt {attempt}) "
                        f"may have been processed by Gestimum: {failure.detail}. It may have created documents "
                        f"in Gestimum: reconcile (check the documents in Gestimum) before re-sending these lines. "
                        f"Not retried automatically because {endpoint.name} is not idempotent.",
                        endpoint=endpoint.name,
                        status=failure.status,
                        lines=n_lines,
                    )
                ) from failure.cause
            if attempt > max_retries:
                raise self._scrub(failure.error) from failure.cause
            delay = self._delay(attempt, failure.retry_after)
            self._log.warning(
                "gestimum %s: %s; retry %d/%d in %.2fs",
                endpoint.name,
                redact(failure.detail, self._secrets),  # may quote Gestimum's message
                attempt,
                max_retries,
                delay,
            )
            self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        return min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)

    def _scrub(self, error: GestimumError) -> GestimumError:
        clean = redact(error.message, self._secrets)
        error.message = clean
        error.args = (clean,)
        return error

    def _attempt(
        self, endpoint: Endpoint, url: str, data: bytes, n_lines: int, attempt: int, test_mode: bool
    ) -> ImportResult | _Failure:
        self._requests_made += 1
        self._bytes_posted += len(data)
        started = time.monotonic()
        outcome: str = "?"
        try:
            try:
                response = self._session.post(
                    url,
                    data=data,
                    timeout=(self.connect_timeout, self.read_timeout),
                    allow_redirects=False,  # a redirected POST may lose its body, or change method
                    # Explicit: left to the session, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override
                    # GESTIMUM_CA_BUNDLE and GESTIMUM_VERIFY_TLS=false (requests' merge_environment_settings).
                    verify=self.verify,
                )
            except requests.RequestException as exc:
                outcome = type(exc).__name__
                return self._transport_failure(endpoint, exc, attempt)
            outcome = f"HTTP {response.status_code}"
            return self._answer(endpoint, response, n_lines, test_mode)
        finally:
            # Debug: one line per attempt is too much for the run log; the sink sums it up.
            self._log.debug(
                "gestimum %s: %d lines, %d bytes, attempt %d -> %s in %.2fs",
                endpoint.name,
                n_lines,
                len(data),
                attempt,
                outcome,
                time.monotonic() - started,
            )

    def _transport_failure(self, endpoint: Endpoint, exc: requests.RequestException, attempt: int) -> _Failure:
        name = endpoint.name
        where = self.shown_url
        if isinstance(exc, requests.exceptions.SSLError):
            tls = _tls_handshake_failure(exc)
            if tls is not None:
                why = getattr(tls, "reason", None) or type(tls).__name__
                return _Failure(
                    "final",
                    GestimumUnreachable(
                        f"TLS handshake with Gestimum at {where} failed ({why}); "
                        f"nothing was sent. Check the URL's scheme and the server certificate / CA bundle.",
                        endpoint=name,
                    ),
                    "TLS handshake failed",
                    cause=exc,
                )
        if isinstance(exc, requests.exceptions.ConnectTimeout) or (
            isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc)
        ):
            detail = (
                f"no connection within {self.connect_timeout:g}s"
                if isinstance(exc, requests.exceptions.ConnectTimeout)
                else "could not connect"
            )
            return _Failure(
                "not_delivered",
                GestimumUnreachable(
                    f"could not reach Gestimum at {where} ({detail}, {attempt} attempts); nothing was sent. "
                    f"Check the Gestimum URL setting and that the server is running and reachable.",
                    endpoint=name,
                ),
                detail,
                cause=exc,
            )
        if isinstance(exc, requests.exceptions.ReadTimeout):
            detail = f"no answer within the {self.read_timeout:g}s read timeout"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            detail = "the connection was closed or reset after the request was sent"
        elif isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidHeader):
            return _Failure(
                "final",
                GestimumError(f"invalid request to {where}: {type(exc).__name__}", endpoint=name),
                type(exc).__name__,
                cause=exc,
            )
        else:  # ChunkedEncodingError, ContentDecodingError, ...: the answer broke while being read
            detail = f"the answer could not be read ({type(exc).__name__})"
        return _Failure(
            "ambiguous",
            GestimumServerError(
                f"Gestimum at {where} gave no usable answer to the {name} import after {attempt} attempts: {detail}",
                endpoint=name,
            ),
            detail,
            cause=exc,
        )

    def _answer(
        self, endpoint: Endpoint, response: requests.Response, n_lines: int, test_mode: bool
    ) -> ImportResult | _Failure:
        status = response.status_code
        name = endpoint.name
        payload, snippet = self._decode(response, self.redact)

        if status == 503 and not endpoint.idempotent and not self.stock_retry_on_503:
            # Not trusted as "nothing processed" (a proxy may have lost the answer): in doubt.
            return _Failure(
                "ambiguous",
                GestimumServerError(
                    f"Gestimum answered HTTP 503 to the {name} import{self._said(payload)} and "
                    "GESTIMUM_STOCK_RETRY_ON_503 is false (a proxy may have lost the answer)",
                    endpoint=name,
                    status=status,
                ),
                f"HTTP 503{self._said(payload)}, not proof that nothing was processed (GESTIMUM_STOCK_RETRY_ON_503)",
                status=status,
            )
        if status == 503 or status in (408, 429):
            return _Failure(
                "not_processed",
                GestimumServerError(
                    f"Gestimum is unavailable (HTTP {status}) for the {name} import{self._said(payload)}; "
                    f"still refused after {self.max_retries} retries",
                    endpoint=name,
                    status=status,
                ),
                f"HTTP {status}",
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            return _Failure(
                "ambiguous",
                GestimumServerError(
                    f"Gestimum answered HTTP {status} to the {name} import{self._said(payload)}"
                    f" (after {self.max_retries} retries)",
                    endpoint=name,
                    status=status,
                ),
                f"HTTP {status}{self._said(payload)}",
                status=status,
            )
        if 300 <= status < 400:
            return _Failure(
                "final",
                GestimumProtocolError(
                    f"Gestimum redirected the {name} import (HTTP {status}) to {response.headers.get('Location')!r}: "
                    f"set the Gestimum URL to the final address",
                    endpoint=name,
                    status=status,
                ),
                f"HTTP {status}",
                status=status,
            )
        if 400 <= status < 500:
            return _Failure(
                "final", self._refusal(endpoint, status, payload, snippet, n_lines), f"HTTP {status}", status
            )
        if status != 200:
            return self._malformed(endpoint, status, f"unexpected HTTP status {status}")
        entry = envelope_entry(payload)
        if entry is None:
            shown = snippet if payload is None else self.redact(json.dumps(payload, ensure_ascii=False))[:_SNIPPET]
            return self._malformed(endpoint, status, f"not the documented JSON envelope: {shown!r}")
        if entry[RESPONSE_RESULTAT] != RESULTAT_SUCCESS:
            # A refusal in a 200 (company not opened, envelope refused): nothing processed.
            refusal = failure_from_payload(endpoint, payload, status=status)
            assert refusal is not None  # the envelope was checked just above
            return _Failure("final", refusal, f"refused: {refusal}", status=status)
        try:
            return self._redacted(parse_response(endpoint, payload, n_lines, test_mode=test_mode, status=status))
        except GestimumProtocolError as exc:
            # A well-formed answer whose counts do not add up: Gestimum did process the
            # request but we cannot tell what it imported. Re-sending would not fix the
            # server; on a non-idempotent endpoint it is a delivery in doubt.
            if endpoint.idempotent:
                return _Failure("final", exc, str(exc), status=status)
            return _Failure("ambiguous", exc, str(exc), status=status, cause=exc)

    def _refusal(self, endpoint: Endpoint, status: int, payload: object, snippet: str, n_lines: int) -> GestimumError:
        name = endpoint.name
        error = failure_from_payload(endpoint, payload, status=status)
        if error is not None:
            if status == 413:  # keep the batch-size hint even when the body explains
                error.message += "; lower the maximum request size (bytes/lines per request)"
            return error
        if status in (401, 403, 404):
            # Not the documented envelope: likely a proxy or a wrong URL, not Gestimum.
            hint = (
                f"check the Gestimum URL and that the server runs Gestimum {endpoint.min_version} or later"
                if status == 404
                else "a proxy in front of Gestimum may require its own authentication"
            )
            return GestimumProtocolError(
                f"HTTP {status} for the {name} import at {self.shown_url} without Gestimum's envelope ({hint}); "
                f"answer starts with {snippet!r}",
                endpoint=name,
                status=status,
            )
        hint = "; lower the maximum request size (bytes/lines per request)" if status == 413 else ""
        return GestimumProtocolError(
            f"Gestimum refused the {name} import ({n_lines} lines) with HTTP {status}{hint}; "
            f"answer starts with {snippet!r}",
            endpoint=name,
            status=status,
        )

    def _malformed(self, endpoint: Endpoint, status: int, problem: str) -> _Failure:
        return _Failure(
            "ambiguous",
            GestimumProtocolError(
                f"Gestimum's answer to the {endpoint.name} import is malformed (HTTP {status}): {problem}"
                f" (after {self.max_retries} retries)",
                endpoint=endpoint.name,
                status=status,
            ),
            f"malformed answer (HTTP {status})",
            status=status,
        )

    @staticmethod
    def _decode(response: requests.Response, redact_text: Callable[[str], str]) -> tuple[object | None, str]:
        """(decoded JSON or None, a short text snippet of the answer, redacted before it is cut:
        a password cut in two would no longer be recognised)."""
        content = response.content or b""
        try:
            text = content.decode(response.encoding or "utf-8")
        except (LookupError, UnicodeDecodeError):
            text = content.decode("utf-8", errors="replace")
            return None, redact_text(text)[:_SNIPPET]
        snippet = redact_text(text)[:_SNIPPET]
        try:
            return json.loads(text), snippet  # decisions read the answer as sent, never a redacted one
        except ValueError:
            return None, snippet

    @staticmethod
    def _said(payload: object) -> str:
        entry = envelope_entry(payload)
        message = entry.get(RESPONSE_MESSAGE) if entry else None
        return f" ({gestimum_said(message)})" if isinstance(message, str) and message else ""
