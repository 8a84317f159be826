"""`--company NAME` (issue 20): the quarantine tools read the state store from a company file's
defs.yaml, so no URL or schema is typed, and every message names the file, the field and the
variable the file uses (ACME_STATE_DATABASE_URL, not SYNC_STATE_DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dg_project import company_defs_yaml, write_dg_project

from gestimum_pipeline.cli import main
from gestimum_pipeline.companies import company_files_folder, find_company
from gestimum_pipeline.db import connect

ACME = company_defs_yaml("acme", state_url='"{{ env.ACME_STATE_DATABASE_URL }}"', state_schema="gestimum_sync_acme")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Path:
    write_dg_project(tmp_path, "companies", {"acme": ACME}, code_location=False)
    for variable in ("SYNC_STATE_DATABASE_URL", "CRM_DATABASE_URL", "GESTIMUM_URL", "GESTIMUM_FICHIER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ACME_GESTIMUM_URL", "http://gestimum.acme.test:8080")
    monkeypatch.setenv("ACME_STATE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path / "companies")  # a sub-folder: the project is found upwards
    return tmp_path


def owner(url: str, schema: str) -> tuple[str, str]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT gestimum_host, company_file FROM {schema}.owner")
        return cur.fetchone()


def test_the_dg_projects_defs_module_holds_the_company_files(project: Path) -> None:
    assert company_files_folder() == project / "companies" / "defs"
    assert find_company("acme").variables()["ACME_STATE_DATABASE_URL"] == "state_url"


def test_state_init_and_the_tools_read_the_store_from_defs_yaml(
    project: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match=r"no state store .*gestimum_sync_acme.*state init --company acme"):
        main(["rejections", "--company", "acme"])
    assert main(["state", "init", "--company", "acme", "--actor", "ops"]) == 0
    out = capsys.readouterr().out
    assert "schema gestimum_sync_acme" in out and "'ACME.Gestimum'" in out and "gestimum.acme.test:8080" in out
    assert owner(database_url, "gestimum_sync_acme") == ("gestimum.acme.test:8080", "ACME.Gestimum")

    assert main(["rejections", "--company", "acme"]) == 0
    assert "nothing rejected" in capsys.readouterr().out
    assert main(["actions", "--company", "acme"]) == 0
    # The store is found; the row is not in it (nothing to retry).
    assert main(["retry", "--company", "acme", "--endpoint", "contacts", "C1", "--yes", "--actor", "ops"]) == 1
    assert "not changed (not in rejected/held/ignored): C1" in capsys.readouterr().err
    assert main(["ignore", "--company", "acme", "--endpoint", "contacts", "C1", "--yes", "--actor", "ops"]) == 1
    assert main(["reconcile", "--company", "acme", "--release", "7", "--yes", "--actor", "ops"]) == 1
    err = capsys.readouterr().err
    assert "not changed" in err and "C1" in err and "7" in err


def test_an_unset_variable_is_named_with_its_file_and_field(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_STATE_DATABASE_URL")
    with pytest.raises(SystemExit) as raised:
        main(["actions", "--company", "acme"])
    message = str(raised.value)
    assert "ACME_STATE_DATABASE_URL is not set" in message
    assert "defs/acme/defs.yaml, state_url" in message and "SYNC_STATE_DATABASE_URL" not in message

    monkeypatch.setenv("ACME_STATE_DATABASE_URL", "postgresql://x@127.0.0.1:1/none")
    monkeypatch.delenv("ACME_GESTIMUM_URL")
    with pytest.raises(SystemExit, match=r"ACME_GESTIMUM_URL is not set \(.*acme/defs.yaml, gestimum_url"):
        main(["state", "init", "--company", "acme"])


def test_an_unknown_company_lists_the_declared_ones(project: Path) -> None:
    with pytest.raises(SystemExit, match=r"--company acmee: no company file named 'acmee'.*declared: acme"):
        main(["rejections", "--company", "acmee"])


def test_company_and_an_explicit_store_are_not_mixed(project: Path) -> None:
    with pytest.raises(SystemExit, match=r"do not pass --schema"):
        main(["rejections", "--company", "acme", "--schema", "other"])
