"""The operator's command line and what it shows (issue 23, Lows): CRM values never drive the
terminal, and database passwords stay out of argv."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability import DAY_TS, Deployment, deployment, execute, run_job, seed_standard

from gestimum_pipeline.cli import main as cli

ESCAPES = "\x1b]0;pwned\x07\x1b[2J"


@pytest.fixture
def hostile(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    """A synced CRM whose rejected rows carry terminal escape sequences in their values."""
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        execute(
            d.crm_url,
            [
                (
                    "INSERT INTO crm.customers (code, name, updated_at) VALUES (%s, %s, %s)",
                    (f"EVIL{ESCAPES}", f"Emoji 🚀 {ESCAPES}", DAY_TS),  # refused locally (outside cp1252)
                ),
                (
                    "INSERT INTO crm.contacts (code, customer_code, last_name, updated_at) VALUES (%s, %s, %s, %s)",
                    (f"K{ESCAPES}", "NOPE", "Petit", DAY_TS),  # refused by Gestimum (unknown customer)
                ),
            ],
        )
        run = run_job(d)
        assert run.success, run.failures
        yield d


def test_text_output_escapes_control_characters_from_crm_values(
    hostile: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNC_STATE_DATABASE_URL", hostile.state_url)
    assert cli(["rejections", "--limit", "1000"]) == 0
    out = capsys.readouterr().out
    assert "EVIL\\x1b]0;pwned\\x07\\x1b[2J" in out and "K\\x1b]0;pwned" in out  # shown, escaped
    assert "\x1b" not in out and "\x07" not in out
    assert cli(["ignore", "--endpoint", "clients", f"EVIL{ESCAPES}", "--actor", f"x{ESCAPES}", "--yes"]) == 0
    assert cli(["actions"]) == 0
    out = capsys.readouterr().out
    assert "x\\x1b]0;pwned" in out and "\x1b" not in out
