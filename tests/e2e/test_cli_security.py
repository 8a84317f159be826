"""The operator's command line and what it shows (issue 23, Lows): CRM values never drive the
terminal, and database passwords stay out of argv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability import DAY_TS, ROLE_PASSWORD, Deployment, deployment, execute, run_job, seed_standard

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


def test_a_password_on_the_command_line_is_warned_about_and_a_file_avoids_it(
    hostile: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argv is readable by every local user (`ps`): the URL comes from the environment or a file."""
    for name in ("SYNC_STATE_DATABASE_URL", "CRM_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert ROLE_PASSWORD in hostile.state_url
    assert cli(["rejections", "--database-url", hostile.state_url]) == 0
    warned = capsys.readouterr()
    assert "warning: --database-url carries a password" in warned.err and "--database-url-file" in warned.err
    assert ROLE_PASSWORD not in warned.out + warned.err

    url_file = tmp_path / "state.url"
    url_file.write_text(hostile.state_url + "\n")
    url_file.chmod(0o600)
    assert cli(["rejections", "--database-url-file", str(url_file)]) == 0
    quiet = capsys.readouterr()
    assert "EVIL" in quiet.out and "warning" not in quiet.err

    monkeypatch.setenv("SYNC_STATE_DATABASE_URL", hostile.state_url)  # the default: no warning either
    assert cli(["rejections"]) == 0
    assert "warning" not in capsys.readouterr().err
