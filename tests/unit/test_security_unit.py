"""Pure security rules of issue 23: what resources, messages and outputs may show."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from gestimum_pipeline.defs.alerts import AlertWebhook
from gestimum_pipeline.defs.resources import CrmDatabase, GestimumApi, SyncStateDatabase

SECRET = "S3cret-Unit-9x"


@pytest.mark.parametrize(
    "resource",
    [
        GestimumApi(url=f"http://proxy:{SECRET}@gestimum/", company_file="F", user="U", password=SECRET),
        CrmDatabase(url=f"postgresql://sync:{SECRET}@db/crm"),
        SyncStateDatabase(url=f"postgresql://sync:{SECRET}@db/state"),
        AlertWebhook(url=f"https://hooks.example/services/{SECRET}"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_a_resource_repr_shows_no_secret(resource: object) -> None:
    assert SECRET not in repr(resource) and SECRET not in str(resource)
    assert type(resource).__name__ in repr(resource)


def _component_yaml(gestimum_url: str) -> str:
    return f"""\
name: acme
gestimum_url: "{gestimum_url}"
company_file: ACME.Gestimum
user: SYNC
password: "{{{{ env.ACME_GESTIMUM_PASSWORD }}}}"
crm_url: "{{{{ env.ACME_CRM_DATABASE_URL }}}}"
"""


def test_the_component_url_never_shows_proxy_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Written `{{ env.VARIABLE }}`, the URL stays an EnvVar: the definitions the UI reads (its
    GraphQL `configuredValues`, the resources' descriptions) name the variable, never the value."""
    import dagster as dg
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from gestimum_pipeline.components import GestimumSync

    monkeypatch.setenv("ACME_GESTIMUM_URL", f"http://proxy:{SECRET}@gestimum.example/")
    component = GestimumSync.resolve_from_yaml(_component_yaml("{{ env.ACME_GESTIMUM_URL }}"))
    assert isinstance(component.gestimum_url, dg.EnvVar) and component.gestimum_url.env_var_name == "ACME_GESTIMUM_URL"
    # build_defs reads only where its defs.yaml is (to name it in messages).
    context = SimpleNamespace(path=tmp_path / "acme", project_root=tmp_path)
    defs = component.build_defs(context)  # type: ignore[arg-type]
    snapshot = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert "url from ACME_GESTIMUM_URL" in snapshot
    assert SECRET not in snapshot and "proxy:" not in snapshot


def test_the_component_refuses_credentials_written_in_defs_yaml() -> None:
    from gestimum_pipeline.components import GestimumSync

    with pytest.raises(Exception, match=r"gestimum_url holds credentials.*env\.VARIABLE") as refused:
        GestimumSync.resolve_from_yaml(_component_yaml(f"http://proxy:{SECRET}@gestimum.example/"))
    assert SECRET not in str(refused.value)
    plain = GestimumSync.resolve_from_yaml(_component_yaml("https://gestimum.example/"))
    assert plain.gestimum_url == "https://gestimum.example/"


def test_an_unencoded_at_in_a_database_password_never_leaks_its_tail() -> None:
    """SQLAlchemy splits `user:Secret@2025x@host` at the first `@`: `2025x` would reach the
    driver as a host name and be quoted in its error."""
    from gestimum_pipeline.db import connect

    url = "postgresql://sync:Tail-Head@2025xTail@127.0.0.1:1/crm"
    with pytest.raises(ValueError, match=r"CRM_DATABASE_URL holds more than one '@'.*%40") as refused:
        connect(url, "CRM_DATABASE_URL")
    assert "2025xTail" not in str(refused.value) and "Tail-Head" not in str(refused.value)
    assert "postgresql://sync:***@127.0.0.1:1/crm" in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Alpha \x1b[2J\x1b]0;pwned\x07", "Alpha \\x1b[2J\\x1b]0;pwned\\x07"),
        ("line\r\nover\twritten", "line\\r\\nover\\twritten"),
        ("C1 \x9b31m", "C1 \\x9b31m"),
        ("admin\u202egnp.exe", "admin\\u202egnp.exe"),
        ("Bêta Équipement 🚀 SARL", "Bêta Équipement 🚀 SARL"),
    ],
)
def test_terminal_output_escapes_control_characters(raw: str, shown: str) -> None:
    from gestimum_pipeline.cli import terminal_safe

    assert terminal_safe(raw) == shown


def test_webhook_alerts_render_crm_values_as_inert_text() -> None:
    from gestimum_pipeline.notify.webhook import check_failure_payload

    hostile = "@channel @here <!everyone> [click](https://evil.example/login) ```\nfake alert\n```"
    payload = check_failure_payload(
        asset_key_path=["gestimum", "clients"],
        check_name="no_rejected_lines",
        severity="WARN",
        description=f"2 rows rejected {hostile}",
        metadata={"rejected": 2},
        samples=[{"source_key": "C1", "reason": hostile}],
    )
    text = payload["text"]
    assert payload["blocks"][0]["text"]["text"] == text
    for live in ("@channel", "@here", "<!everyone>", "](", "```"):
        assert live not in text, live
    # Still readable: a zero-width space breaks the markup, the characters stay.
    assert "@\u200bchannel" in text and "]\u200b(https://evil.example/login)" in text and "&lt;!everyone&gt;" in text
    assert text.count("*") == 2  # the project's own markup (the bold title) is kept
