"""A store that knows whose it is (issue 12, finding 5): it records the Gestimum host and company
file it belongs to and refuses another; only `state init` (or the demo) creates one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gestimum_pipeline.cli import main
from gestimum_pipeline.db import connect, url_with
from gestimum_pipeline.defs.resources import SyncStateDatabase
from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings
from gestimum_pipeline.gestimum.journal import ImportResult
from gestimum_pipeline.sync.engine import send_endpoint
from gestimum_pipeline.sync.state import StateStore


def schemas(url: str) -> set[str]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'gestimum%'")
        return {n for (n,) in cur.fetchall()}


def test_a_run_against_a_missing_store_fails_naming_the_redacted_url_and_the_command(database_url: str) -> None:
    secret_url = url_with(database_url, password="s3cret-pw")
    with pytest.raises(Exception, match=r"gestimum-pipeline state init") as raised:
        SyncStateDatabase(url=secret_url).open()
    assert "s3cret-pw" not in str(raised.value) and "***" in str(raised.value)
    assert schemas(database_url) == set()  # nothing was created


@pytest.mark.parametrize("command", [["rejections"], ["actions"]])
def test_read_only_commands_never_create_a_store(database_url: str, command: list[str]) -> None:
    with pytest.raises(SystemExit, match=r"no state store .*schema 'gestimum_synk'.*state init"):
        main([*command, "--database-url", database_url, "--schema", "gestimum_synk"])
    assert schemas(database_url) == set()


def test_state_init_creates_the_store_once_and_for_one_company_file(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    init = ["state", "init", "--database-url", database_url, "--gestimum-url", "https://erp.example:8443/"]
    assert main([*init, "--company-file", "A.Gestimum"]) == 0
    assert "created" in capsys.readouterr().out
    assert main([*init, "--company-file", "A.Gestimum"]) == 0  # idempotent
    assert "already exists" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"belongs to company file 'A.Gestimum' on Gestimum host 'erp.example:8443'"):
        main([*init, "--company-file", "B.Gestimum"])
    assert main(["rejections", "--database-url", database_url]) == 0  # now it exists


class NeverCalledClient:
    def __init__(self, url: str, company_file: str) -> None:
        self._client = GestimumClient(url, CompanySettings(company_file, "DEMO", ""))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def import_lines(self, endpoint: catalog.Endpoint, lines: Sequence[str], **kwargs: Any) -> ImportResult:
        raise AssertionError("nothing may be sent for another company file")


@pytest.mark.parametrize(
    ("url", "company_file"),
    [("https://erp.example/", "B.Gestimum"), ("https://other.example/", "A.Gestimum")],
    ids=["other-company-file", "other-host"],
)
def test_a_sink_refuses_a_store_kept_for_another_company_file(database_url: str, url: str, company_file: str) -> None:
    with StateStore(database_url) as store:
        store.init("https://erp.example/", "A.Gestimum")
        with pytest.raises(Exception, match=r"belongs to company file 'A.Gestimum' on Gestimum host 'erp.example'"):
            send_endpoint(
                state=store,
                client=NeverCalledClient(url, company_file),  # type: ignore[arg-type]
                endpoint=catalog.COMPTES,
                company_file=company_file,
                max_lines=10,
                max_bytes=100_000,
            )
