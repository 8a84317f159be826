"""Splitting lines into requests: as few as possible, none too big.

Why the defaults. Every request pays a large fixed cost: Gestimum opens the company
file for each one (about 6 s between `Ouverture` and `ouverte` in the documented
journals), whatever the number of lines. Many small requests are therefore slow
(100 000 lines in batches of 100 = 1 000 requests = well over 1.5 h of opening alone),
while 10 000 lines per request keeps that cost under a minute for the same volume.
Beyond that, bigger requests stop paying off and start to hurt: the body must fit
the server's request-size limit (4 MiB = 4 194 304 bytes is the default
`maxRequestLength` of Windows/IIS hosting, and an undocumented server may be as
strict), one answer's journal stays readable, and a failed request holds back, or
leaves in doubt, a bounded number of lines. 4 000 000 bytes stays under 4 MiB with
headroom for HTTP headers. Both limits are configurable (see the sync settings).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

DEFAULT_MAX_LINES = 10_000
DEFAULT_MAX_BYTES = 4_000_000

# Characters JSON escapes: `"` and `\` take one extra byte, control characters take
# one (\b \f \n \r \t) or five (\u00XX). Everything else travels as its UTF-8 bytes
# (the body is serialised with ensure_ascii=False, see envelope.encode_body).
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_SHORT_ESCAPES = frozenset('"\\\b\f\n\r\t')


def line_cost(line: str) -> int:
    """Bytes `line` adds to the compact JSON body: its UTF-8 bytes, its JSON escapes,
    two quotes and the comma separating it from the previous array element."""
    n = (len(line) if line.isascii() else len(line.encode("utf-8"))) + 3  # isascii: a flag, no scan
    if _NEEDS_ESCAPE.search(line) is None:  # the common case: one C-level scan
        return n
    for ch in _NEEDS_ESCAPE.findall(line):
        n += 1 if ch in _SHORT_ESCAPES else 5
    return n


def _describe(item: object) -> str:
    text = repr(item)
    return text if len(text) <= 200 else text[:200] + "..."


def batched(
    items: Iterable[T],
    *,
    line_of: Callable[[T], str],
    max_lines: int,
    max_bytes: int,
    overhead: int = 0,
) -> Iterator[list[T]]:
    """Yields consecutive, order-preserving batches of at most `max_lines` items whose
    body (`overhead` + the cost of each line) is at most `max_bytes`.

    Streams: holds one batch in memory. An item that cannot fit even alone raises
    ValueError naming it, before the batch it would have joined is yielded.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    if overhead < 0:
        raise ValueError(f"overhead must not be negative, got {overhead}")
    if max_bytes <= overhead:
        raise ValueError(f"max_bytes ({max_bytes}) leaves no room for lines after the {overhead}-byte envelope")
    budget = max_bytes - overhead
    batch: list[T] = []
    used = 0
    for index, item in enumerate(items):
        cost = line_cost(line_of(item))
        if cost > budget:
            raise ValueError(
                f"item #{index} {_describe(item)} needs {cost} bytes, more than a whole request can carry "
                f"({max_bytes} bytes minus {overhead} of envelope); it can never be sent"
            )
        if batch and (len(batch) >= max_lines or used + cost > budget):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += cost
    if batch:
        yield batch


def minimum_requests(
    total_lines: int,
    total_bytes: int,
    max_lines: int,
    max_bytes: int,
    *,
    overhead: int = 0,
) -> int:
    """Lower bound on the number of requests for `total_lines` lines whose costs sum to
    `total_bytes`. `batched` may need a few more (lines do not split across requests)."""
    if total_lines <= 0:
        return 0
    if max_lines < 1 or max_bytes <= overhead:
        raise ValueError("max_lines must be at least 1 and max_bytes larger than the overhead")
    return max(1, math.ceil(total_lines / max_lines), math.ceil(total_bytes / (max_bytes - overhead)))
