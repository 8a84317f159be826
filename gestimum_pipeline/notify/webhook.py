"""Failure alerts posted to a Slack-compatible webhook: payloads and delivery, no Dagster.

The webhook URL is a secret (a Slack URL embeds its token in the path): it never
appears in a log line, an exception or a message. Errors name the receiver's host only,
and urllib3's own log lines (which quote the request path) are redacted by a filter.
Every message also goes through the project's URL redaction, so a database password
quoted by an upstream error cannot reach a chat channel.

Payloads are Slack's `{"text": ..., "blocks": [...]}`: `text` alone carries the whole
message, so receivers that ignore blocks (Mattermost, Rocket.Chat, adapters) show it all.
Links are bare URLs, which every receiver turns into links.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from gestimum_pipeline.redaction import redact, redact_text, url_secrets

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 0.5
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Slack renders at most 3 000 characters in a section block; `text` holds the same message.
MAX_MESSAGE_CHARS = 3000
MAX_STEP_MESSAGE_CHARS = 1000
MAX_METADATA_VALUES = 8
MAX_SAMPLE_ROWS = 3


class _CappedRetry(Retry):
    """Honours Retry-After, but never sleeps longer than a sensor tick can afford."""

    MAX_RETRY_AFTER_SECONDS = 10.0

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.MAX_RETRY_AFTER_SECONDS)


class WebhookError(RuntimeError):
    """The alert could not be delivered; the message names the receiver's host, never its URL."""


# --------------------------------------------------------------------------- redaction


class _SecretFilter(logging.Filter):
    """Redacts registered secrets from urllib3's log records, which quote the request path."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is urllib3's problem, not ours to crash on
            return True
        if any(s in message for s in secrets):
            record.msg, record.args = redact(message, secrets), None
        return True


_LOG_FILTER = _SecretFilter()
for _name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_LOG_FILTER)


def webhook_secrets(url: str) -> list[str]:
    """What of a webhook URL must stay hidden: the URL itself, its path and query (the token), its password."""
    parts = urlsplit(url)
    secrets = [url, *url_secrets(url)]
    if parts.path not in ("", "/"):
        secrets.append(parts.path)
    if parts.query:
        secrets.append(parts.query)
    return [s for s in secrets if s]


def webhook_host(url: str) -> str:
    """The receiver's host (and port), the only part of the URL shown to anyone."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


# --------------------------------------------------------------------------- payloads


# Receivers differ (Slack's mrkdwn; Markdown for Mattermost and Rocket.Chat), so markup that
# any of them acts on is broken by a zero-width space (U+200B): shown the same, never acted on.
_ZWSP = "\u200b"
# @channel, @here, @all, @everyone, @someone; not the @ of an e-mail or a (redacted) URL's user:***@host.
_MENTION = re.compile(r"(?<![\w*%.:/+-])@(?=[\w.-])")
_MARKDOWN_LINK = re.compile(r"\]\(")  # [text](url)
_FENCE = re.compile(r"`(?=`)")  # ``` code fences, and `` spans


def _escape(text: str) -> str:
    """A value (CRM data, error text) as inert text for the receiver's markup."""
    # Slack's mrkdwn treats <, > and & as control characters (links, <!channel> mentions).
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MENTION.sub("@" + _ZWSP, text)
    text = _MARKDOWN_LINK.sub("]" + _ZWSP + "(", text)
    return _FENCE.sub("`" + _ZWSP, text)


def _shorten(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def slack_payload(text: str) -> dict[str, Any]:
    """A Slack-compatible body: `text` carries the whole message, one mrkdwn section repeats it."""
    text = _shorten(text, MAX_MESSAGE_CHARS)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def run_url(ui_url: str, run_id: str) -> str | None:
    return f"{ui_url.rstrip('/')}/runs/{run_id}" if ui_url.strip() else None


def asset_checks_url(ui_url: str, asset_key_path: Sequence[str]) -> str | None:
    if not ui_url.strip():
        return None
    return f"{ui_url.rstrip('/')}/assets/{'/'.join(asset_key_path)}?view=checks"


def partition_text(tags: Mapping[str, str]) -> str | None:
    """The run's partition or partition range, from Dagster's run tags."""
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        return start if start == end else f"{start}...{end}"
    return tags.get("dagster/partition")


def run_failure_payload(
    *,
    job_name: str,
    run_id: str,
    tags: Mapping[str, str],
    step_failures: Sequence[tuple[str, str]],
    run_message: str | None = None,
    ui_url: str = "",
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The message for a failed run: job, run id, partitions, each failed step's message, a link."""
    secrets = list(secrets)
    lines = [f"*Gestimum sync: run failed* (job `{_escape(job_name)}`)", f"Run: `{run_id}`"]
    partitions = partition_text(tags)
    if partitions:
        lines.append(f"Partitions: {_escape(partitions)}")
    # Steps failing for one cause (every CRM source when the CRM is down) share one line.
    steps_by_message: dict[str, list[str]] = {}
    for step_key, message in step_failures:
        steps_by_message.setdefault(message, []).append(step_key)
    for message, step_keys in steps_by_message.items():
        text = _escape(_shorten(redact_text(message, secrets), MAX_STEP_MESSAGE_CHARS))
        names = ", ".join(f"`{_escape(k)}`" for k in step_keys)
        lines.append(f"{'Steps' if len(step_keys) > 1 else 'Step'} {names} failed: {text}")
    if not step_failures and run_message:
        # A run can fail outside any step (launch, run worker crash): its own message is all there is.
        lines.append(_escape(_shorten(redact_text(run_message, secrets), MAX_STEP_MESSAGE_CHARS)))
    link = run_url(ui_url, run_id)
    if link:
        lines.append(link)
    return slack_payload("\n".join(lines))


def _format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_failure_payload(
    *,
    asset_key_path: Sequence[str],
    check_name: str,
    severity: str,
    description: str | None,
    metadata: Mapping[str, object],
    samples: Sequence[Mapping[str, object]] = (),
    run_id: str | None = None,
    partition: str | None = None,
    ui_url: str = "",
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The message for a failed asset check.

    `metadata` holds the check's scalar values (counts), shown first ones first; `samples`
    a few rows (e.g. rejected lines with their reason) that explain the failure.
    """
    secrets = list(secrets)
    asset = "/".join(asset_key_path)
    lines = [f"*Gestimum check failed ({_escape(severity)})*: `{_escape(asset)}` check `{_escape(check_name)}`"]
    if description:
        lines.append(_escape(_shorten(redact_text(description, secrets), MAX_STEP_MESSAGE_CHARS)))
    shown = [(k, v) for k, v in metadata.items() if isinstance(v, (int, float, str, bool)) and v is not None]
    if shown:
        values = ", ".join(f"{k}: {_format_value(v)}" for k, v in shown[:MAX_METADATA_VALUES])
        lines.append(_escape(redact_text(values, secrets)))
    for row in samples[:MAX_SAMPLE_ROWS]:
        row_text = "; ".join(f"{k}: {v}" for k, v in row.items() if v is not None and v != "")
        lines.append("• " + _escape(_shorten(redact_text(row_text, secrets), 400)))
    if len(samples) > MAX_SAMPLE_ROWS:
        lines.append(f"(and {len(samples) - MAX_SAMPLE_ROWS} more)")
    context = [f"Run: `{run_id}`" if run_id else "", f"Partitions: {_escape(partition)}" if partition else ""]
    if any(context):
        lines.append("  ".join(c for c in context if c))
    link = asset_checks_url(ui_url, asset_key_path)
    if link:
        lines.append(link)
    return slack_payload("\n".join(lines))


def rejected_share_payload(
    *,
    percent: float,
    threshold: float,
    lines: int,
    rejected_by_gestimum: int,
    rejected_locally: int,
    run_id: str,
    partition: str | None = None,
    ui_url: str = "",
) -> dict[str, Any]:
    """The message for a run whose rejected lines exceed the threshold (GESTIMUM_ALERT_REJECTED_PERCENT)."""
    rejected = rejected_by_gestimum + rejected_locally
    lines_text = [
        f"*Gestimum sync: {percent:.1f}% of the run's lines rejected* (threshold {threshold:g}%, "
        "GESTIMUM_ALERT_REJECTED_PERCENT)",
        f"{rejected} of {lines} lines rejected: {rejected_by_gestimum} by Gestimum, {rejected_locally} by our "
        "validation. The rows and their next steps: check `rows_to_act_on` of `sync/preflight`.",
        "  ".join(c for c in (f"Run: `{run_id}`", f"Partitions: {_escape(partition)}" if partition else "") if c),
    ]
    link = run_url(ui_url, run_id)
    if link:
        lines_text.append(link)
    return slack_payload("\n".join(lines_text))


# --------------------------------------------------------------------------- delivery


class WebhookNotifier:
    """Posts JSON to one webhook with a timeout and a bounded retry.

    Retried: connection failures, 429 and 5xx (the receiver did not take the message).
    Not retried: a read timeout after the body was sent, which could post the alert twice.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = DEFAULT_RETRIES,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    ) -> None:
        if not url.strip():
            raise ValueError("the alert webhook URL is empty")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Never quote the URL: it may hold the token even when malformed.
            raise ValueError("the alert webhook URL must be an http:// or https:// URL with a host")
        self._url = url
        self.host = webhook_host(url)
        self.secrets = webhook_secrets(url)
        _LOG_FILTER.add(self.secrets)
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        retry = _CappedRetry(
            total=retries,
            connect=retries,
            read=False,  # a read error (timeout, reset) after sending: re-raised, never re-posted
            status=retries,
            other=0,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"POST"}),
            backoff_factor=backoff_seconds,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"WebhookNotifier(host={self.host!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> WebhookNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, payload: Mapping[str, Any]) -> None:
        """Posts `payload` as JSON; raises WebhookError naming only the host when it was not accepted."""
        attempts = self.retries + 1
        try:
            # No redirects: a receiver (or whoever took over its host) must not send the alert,
            # and the token-bearing request, to another origin.
            response = self._session.post(
                self._url, json=dict(payload), timeout=self.timeout_seconds, allow_redirects=False
            )
        # `from None` below: the chained requests exception quotes the URL, token included.
        except requests.ConnectionError as exc:  # includes a connect timeout: nothing was sent
            raise WebhookError(
                f"could not reach the alert webhook at {self.host} ({type(exc).__name__}, {attempts} attempts)"
            ) from None
        except requests.Timeout:
            raise WebhookError(
                f"alert webhook at {self.host} did not answer within {self.timeout_seconds:g}s"
            ) from None
        except requests.RequestException as exc:
            raise WebhookError(f"alert webhook at {self.host} failed: {type(exc).__name__}") from None
        try:
            if response.is_redirect:
                raise WebhookError(
                    f"alert webhook at {self.host} answered HTTP {response.status_code}, a redirect: not followed "
                    "(set GESTIMUM_ALERT_WEBHOOK_URL to the final URL)"
                )
            if response.status_code >= 400:
                body = redact_text(response.text, self.secrets)[:200].strip()  # redacted whole, then cut
                raise WebhookError(
                    f"alert webhook at {self.host} answered HTTP {response.status_code}"
                    + (f" after {attempts} attempts" if response.status_code in RETRY_STATUSES else "")
                    + (f": {body}" if body else "")
                )
        finally:
            response.close()
