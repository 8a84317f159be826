"""Prints the reliability tables (docs/reliability.md) from the cases the tests recorded.

    GESTIMUM_RELIABILITY_REPORT=/tmp/cases.jsonl python -m pytest tests/e2e/test_faults.py \\
        tests/e2e/test_bad_input.py tests/e2e/test_quarantine_cli.py tests/e2e/test_secrets.py \\
        tests/e2e/test_preflight.py
    python tests/helpers/reliability_report.py /tmp/cases.jsonl > /tmp/tables.md
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable

TITLES = {
    "fault": "Fault matrix (tests/e2e/test_faults.py)",
    "input": "Bad-input matrix (tests/e2e/test_bad_input.py)",
    "quarantine": "Operator's quarantine (tests/e2e/test_quarantine_cli.py)",
    "secrets": "Secrets (tests/e2e/test_secrets.py)",
    "config": "Configuration errors (tests/e2e/test_preflight.py)",
}
_SHORT = {
    "delivery_unknown": "DU",
    "imported": "imp",
    "rejected": "rej",
    "pending": "pend",
    "unstaged": "unstaged",
    "in_flight": "in flight",
    "held": "held",
    "ignored": "ign",
}


def _compact(check: str) -> str:
    """'after the fault: 24 rows (delivery_unknown 3, ...); 10 master ...; 9 movements, 3 document lines, max 1 ...'"""
    m = re.match(
        r"(?P<label>[^:]+): (?P<rows>\d+) rows \((?P<statuses>[^)]*)\); (?P<master>\d+) master records equal in "
        r"Gestimum; (?P<movements>\d+) movements, (?P<lines>\d+) document lines, max (?P<max>\d+) per movement",
        check,
    )
    if not m:
        return check
    statuses = ", ".join(
        f"{_SHORT.get(s.rsplit(' ', 1)[0], s.rsplit(' ', 1)[0])} {s.rsplit(' ', 1)[1]}"
        for s in m["statuses"].split(", ")
    )
    return (
        f"*{m['label']}*: {m['rows']} rows ({statuses}); {m['master']} master = Gestimum; "
        f"{m['lines']} doc lines / {m['movements']} mvts, max {m['max']}"
    )


def _clean(text: str) -> str:
    text = re.sub(r"^[\w.]+(Error|Failure): ", "", text.strip())
    text = re.sub(r"request [0-9a-f]{8}-", "request <run>-", text)  # run ids change at every run
    return text.replace("|", "\\|").replace("\n", " ")


def tables(cases: Iterable[dict]) -> str:
    by_matrix: dict[str, list[dict]] = {}
    for case in cases:
        by_matrix.setdefault(case["matrix"], []).append(case)
    out: list[str] = []
    for matrix, title in TITLES.items():
        rows = by_matrix.get(matrix)
        if not rows:
            continue
        out += [
            f"### {title}",
            "",
            "| case | what happens | what the operator sees | invariants checked |",
            "|---|---|---|---|",
        ]
        for case in rows:
            checks = "<br>".join(_compact(c) for c in case["checks"]) or "—"
            out.append(f"| `{case['case']}` | {_clean(case['happens'])} | {_clean(case['operator_sees'])} | {checks} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as lines:
        print(tables(json.loads(line) for line in lines))
