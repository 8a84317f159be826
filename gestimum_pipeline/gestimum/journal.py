"""Answers: from Gestimum's JSON (`result`, `statistiques`, `journal`) to an ImportResult.

We trust nothing we cannot cross-check. `resultat` is "succès" even when every line
was rejected (documented ReferencesClientsArticles example), so success is judged
from the statistics, and the statistics must agree with the lines we sent and with
the journal's per-line rejections. Any disagreement is a GestimumProtocolError saying
what was expected and what came: silently accepting it could hide lost records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gestimum_pipeline.gestimum.catalog import (
    JOURNAL_DOCUMENT_CREATED_RE,
    JOURNAL_IMPORTED_COUNT,
    JOURNAL_REJECTED_COUNT,
    JOURNAL_REJECTED_LINE_RE,
    JOURNAL_TIMESTAMP_FORMAT,
    MESSAGE_KEYWORDS_COMPANY_FILE,
    MESSAGE_KEYWORDS_CREDENTIALS,
    MESSAGE_KEYWORDS_NOT_FOUND,
    MESSAGE_KEYWORDS_REQUEST,
    MESSAGE_KEYWORDS_VERSION,
    RESPONSE_JOURNAL,
    RESPONSE_MESSAGE,
    RESPONSE_RESULT,
    RESPONSE_RESULTAT,
    RESPONSE_STATISTIQUES,
    RESULTAT_SUCCESS,
    STAT_IMPORTED,
    STAT_REJECTED,
    Endpoint,
)
from gestimum_pipeline.gestimum.errors import (
    SETTING_COMPANY_FILE,
    SETTING_CREDENTIALS,
    GestimumAuthenticationError,
    GestimumError,
    GestimumProtocolError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RejectedLine:
    line: int  # data lines count from 1, header excluded (as Gestimum numbers them)
    reason: str  # the journal entry following the rejection, without its timestamp


@dataclass(frozen=True)
class ImportResult:
    endpoint: str  # our endpoint name (catalog.Endpoint.name)
    lines_sent: int
    imported: int
    rejected: int
    rejected_lines: tuple[RejectedLine, ...]
    documents: tuple[str, ...]  # numbers of the documents Gestimum says it created
    journal: tuple[str, ...]  # raw journal entries, timestamps included
    resultat: str
    message: str
    test_mode: bool = False

    @property
    def all_imported(self) -> bool:
        return self.rejected == 0 and self.imported == self.lines_sent


# "dd/mm/yyyy HH:MM:SS text": the prefix every documented journal entry starts with.
_JOURNAL_ENTRY = re.compile(r"(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}) (.*)", re.DOTALL)
_REJECTED_LINE = re.compile(JOURNAL_REJECTED_LINE_RE)
_DOCUMENT_CREATED = re.compile(JOURNAL_DOCUMENT_CREATED_RE)


def _count_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{n}"), r"(\d+)"))


_IMPORTED_COUNT = _count_pattern(JOURNAL_IMPORTED_COUNT)
_REJECTED_COUNT = _count_pattern(JOURNAL_REJECTED_COUNT)


def _show(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Context:
    """Builds errors that say which request they are about."""

    def __init__(self, endpoint: Endpoint, lines_sent: int, status: int | None) -> None:
        self.endpoint = endpoint
        self.lines_sent = lines_sent
        self.status = status

    def protocol(self, problem: str) -> GestimumProtocolError:
        where = f"Gestimum's answer to the {self.endpoint.name} import ({self.lines_sent} lines)"
        return GestimumProtocolError(
            f"{where} is not of the documented shape: {problem}", endpoint=self.endpoint.name, status=self.status
        )


def envelope_entry(payload: object) -> dict | None:
    """The single `result[0]` object if `payload` has the documented envelope, else None."""
    if not isinstance(payload, dict):
        return None
    result = payload.get(RESPONSE_RESULT)
    if not isinstance(result, list) or len(result) != 1 or not isinstance(result[0], dict):
        return None
    entry = result[0]
    if not isinstance(entry.get(RESPONSE_RESULTAT), str):
        return None
    return entry


def _strip_timestamps(journal: Sequence[str]) -> list[str]:
    texts = []
    for raw in journal:
        m = _JOURNAL_ENTRY.fullmatch(raw) if isinstance(raw, str) else None
        texts.append(m.group(2) if m else str(raw))
    return texts


def gestimum_said(text: str) -> str:
    """Gestimum's own words, quoted and labelled, so they never read as ours: `Gestimum said: "…"`."""
    return f'Gestimum said: "{text}"'


def classify_failure(
    endpoint: Endpoint,
    message: str,
    *,
    status: int | None = None,
    journal: Sequence[str] = (),
    resultat: str | None = None,
) -> GestimumError:
    """The typed error for a refusal (`resultat` other than "succès", or a 4xx envelope).

    Gestimum does not document its failure messages: we look for keywords (catalog
    MESSAGE_KEYWORDS_*). 400 and messages about the request itself are protocol
    errors; 401/403 are credentials unless the message is about the company file; a
    404 is the company file (the simulator's convention) unless the message is about
    the request or the version; a 200 is an authentication error only when its message
    says which one. Gestimum's own words are always quoted so the operator can judge.
    """
    text = message.strip() if isinstance(message, str) else ""
    # Gestimum's own words (French), quoted and labelled beside ours.
    quoted = gestimum_said(text) if text else "no message"
    tail = [t for t in _strip_timestamps(journal)[-3:] if t]
    detail = f"; Gestimum's journal ends with: {' | '.join(gestimum_said(t) for t in tail)}" if tail else ""
    low = text.lower()
    about_credentials = any(k in low for k in MESSAGE_KEYWORDS_CREDENTIALS)
    about_company_file = any(k in low for k in MESSAGE_KEYWORDS_COMPANY_FILE) and any(
        k in low for k in MESSAGE_KEYWORDS_NOT_FOUND
    )
    about_request = any(k in low for k in MESSAGE_KEYWORDS_REQUEST)
    about_version = any(k in low for k in MESSAGE_KEYWORDS_VERSION)
    if status not in (None, 200, 401, 403, 404) or (about_request and status not in (401, 403)):
        about_credentials = about_company_file = False
    elif status == 404 and not about_credentials and not about_version:
        about_company_file = True
    http = f"HTTP {status}, " if status is not None else ""
    if about_credentials or (status in (401, 403) and not about_company_file):
        return GestimumAuthenticationError(
            f"Gestimum refused the user or password for the {endpoint.name} import ({http}{quoted}): "
            f"check {SETTING_CREDENTIALS}",
            setting=SETTING_CREDENTIALS,
            endpoint=endpoint.name,
            status=status,
        )
    if about_company_file:
        return GestimumAuthenticationError(
            f"Gestimum could not open the company file for the {endpoint.name} import ({http}{quoted}): "
            f"check {SETTING_COMPANY_FILE}",
            setting=SETTING_COMPANY_FILE,
            endpoint=endpoint.name,
            status=status,
        )
    shown = f"resultat {resultat!r}, " if resultat is not None else ""
    return GestimumProtocolError(
        f"Gestimum refused the {endpoint.name} import ({http}{shown}{quoted}){detail}",
        endpoint=endpoint.name,
        status=status,
    )


def failure_from_payload(endpoint: Endpoint, payload: object, *, status: int | None = None) -> GestimumError | None:
    """classify_failure for a payload with the documented envelope; None if it has not."""
    entry = envelope_entry(payload)
    if entry is None:
        return None
    message = entry.get(RESPONSE_MESSAGE)
    journal = entry.get(RESPONSE_JOURNAL)
    return classify_failure(
        endpoint,
        message if isinstance(message, str) else "",
        status=status,
        journal=journal if isinstance(journal, list) else (),
        resultat=entry[RESPONSE_RESULTAT],
    )


def _count(ctx: _Context, stats: dict, key: str) -> int:
    if key not in stats:
        raise ctx.protocol(f"statistiques lacks {key!r} (got keys {_show(sorted(stats))})")
    value = stats[key]
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        # The docs show strings; a number means a different server version. Accepted,
        # but worth knowing when reading the logs.
        logger.warning("Gestimum sent statistiques[%r] as a number (%d), the docs show a string", key, value)
        return value
    raise ctx.protocol(f"statistiques[{key!r}] should be a string of digits, got {_show(value)}")


def parse_response(
    endpoint: Endpoint,
    payload: object,
    lines_sent: int,
    *,
    test_mode: bool = False,
    status: int | None = None,
) -> ImportResult:
    """Checks and reads a decoded answer. Raises GestimumProtocolError for any shape or
    count that does not add up, GestimumAuthenticationError for refused credentials or
    company file, GestimumProtocolError (with Gestimum's message) for other refusals."""
    ctx = _Context(endpoint, lines_sent, status)
    if not isinstance(payload, dict) or RESPONSE_RESULT not in payload:
        raise ctx.protocol(f'expected an object {{"{RESPONSE_RESULT}": [...]}}, got {_show(payload)}')
    result = payload[RESPONSE_RESULT]
    if not isinstance(result, list) or len(result) != 1:
        count = f"{len(result)} elements" if isinstance(result, list) else _show(result)
        raise ctx.protocol(f"expected {RESPONSE_RESULT!r} to be a list of exactly one object, got {count}")
    entry = result[0]
    if not isinstance(entry, dict):
        raise ctx.protocol(f"expected {RESPONSE_RESULT}[0] to be an object, got {_show(entry)}")

    resultat = entry.get(RESPONSE_RESULTAT)
    if not isinstance(resultat, str):
        raise ctx.protocol(f"expected {RESPONSE_RESULTAT!r} to be a string, got {_show(resultat)}")
    message = entry.get(RESPONSE_MESSAGE, "")
    if not isinstance(message, str):
        raise ctx.protocol(f"expected {RESPONSE_MESSAGE!r} to be a string, got {_show(message)}")
    journal = entry.get(RESPONSE_JOURNAL)
    if journal is None:
        journal = []
    if not isinstance(journal, list) or not all(isinstance(e, str) for e in journal):
        raise ctx.protocol(f"expected {RESPONSE_JOURNAL!r} to be a list of strings, got {_show(journal)}")

    if resultat != RESULTAT_SUCCESS:
        raise classify_failure(endpoint, message, status=status, journal=journal, resultat=resultat)

    stats = entry.get(RESPONSE_STATISTIQUES)
    if not isinstance(stats, dict):
        raise ctx.protocol(f"expected {RESPONSE_STATISTIQUES!r} to be an object, got {_show(stats)}")
    imported = _count(ctx, stats, STAT_IMPORTED)
    rejected = _count(ctx, stats, STAT_REJECTED)
    if imported + rejected != lines_sent:
        raise ctx.protocol(
            f"{imported} imported + {rejected} rejected = {imported + rejected}, but {lines_sent} lines were sent"
        )

    texts = _journal_texts(ctx, journal)
    rejected_lines, documents = _read_journal(ctx, texts, imported, rejected)
    return ImportResult(
        endpoint=endpoint.name,
        lines_sent=lines_sent,
        imported=imported,
        rejected=rejected,
        rejected_lines=tuple(rejected_lines),
        documents=tuple(documents),
        journal=tuple(journal),
        resultat=resultat,
        message=message,
        test_mode=test_mode,
    )


def _journal_texts(ctx: _Context, journal: list[str]) -> list[str]:
    texts: list[str] = []
    valid_stamps: set[str] = set()  # entries share timestamps: parse each one once
    for number, raw in enumerate(journal, 1):
        m = _JOURNAL_ENTRY.fullmatch(raw)
        if m is None:
            raise ctx.protocol(f"journal entry {number} does not start with 'dd/mm/yyyy HH:MM:SS ': {_show(raw)}")
        stamp = m.group(1)
        if stamp not in valid_stamps:
            try:
                datetime.strptime(stamp, JOURNAL_TIMESTAMP_FORMAT)
            except ValueError:
                raise ctx.protocol(f"journal entry {number} has an invalid timestamp: {_show(raw)}") from None
            valid_stamps.add(stamp)
        texts.append(m.group(2))
    return texts


def _read_journal(
    ctx: _Context, texts: list[str], imported: int, rejected: int
) -> tuple[list[RejectedLine], list[str]]:
    if rejected and not texts:
        raise ctx.protocol(f"{rejected} lines were rejected but the journal, which holds the reasons, is empty")
    rejected_lines: list[RejectedLine] = []
    documents: list[str] = []
    seen: set[int] = set()
    i = 0
    while i < len(texts):
        text = texts[i]
        m = _REJECTED_LINE.match(text)
        if m:
            n = int(m.group(1))
            if not 1 <= n <= ctx.lines_sent:
                raise ctx.protocol(f"the journal rejects line {n}, but only lines 1..{ctx.lines_sent} were sent")
            if n in seen:
                raise ctx.protocol(f"the journal rejects line {n} twice")
            reason = texts[i + 1].strip() if i + 1 < len(texts) else ""
            if not reason or _REJECTED_LINE.match(reason):
                raise ctx.protocol(f"the rejection of line {n} is not followed by a reason in the journal")
            seen.add(n)
            rejected_lines.append(RejectedLine(n, reason))
            i += 2  # the reason is consumed: it cannot also count as, say, a document
            continue
        if m := _DOCUMENT_CREATED.match(text):
            documents.append(m.group(1))
        elif m := _IMPORTED_COUNT.fullmatch(text):
            if int(m.group(1)) != imported:
                raise ctx.protocol(f"the journal says {m.group(1)} lines imported, statistiques say {imported}")
        elif (m := _REJECTED_COUNT.fullmatch(text)) and int(m.group(1)) != rejected:
            raise ctx.protocol(f"the journal says {m.group(1)} lines not imported, statistiques say {rejected}")
        i += 1
    if len(rejected_lines) != rejected:
        raise ctx.protocol(
            f"statistiques report {rejected} rejected lines but the journal explains {len(rejected_lines)}"
        )
    return rejected_lines, documents
