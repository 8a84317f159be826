"""Adding an endpoint is one registry entry plus its mapper: a synthetic endpoint shows it.

The synthetic `contact_emails` endpoint reads the CRM's `contacts` relation, sends each
contact's email under its customer (parent `clients`), and is picked up by the asset
graph (transform, sink, checks), the state store (held under a rejected parent) and the
CLI's quarantine tools, with no other change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pytest

from gestimum_pipeline.cli import main as cli
from gestimum_pipeline.defs.build import build_definitions
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.gestimum.catalog import Endpoint, Field
from gestimum_pipeline.gestimum.encoding import LineEncoder
from gestimum_pipeline.gestimum.envelope import LineFormat
from gestimum_pipeline.sync.endpoints import ENDPOINTS, EndpointSpec
from gestimum_pipeline.sync.mapping import Built, Mapper
from gestimum_pipeline.sync.state import StateStore

CONTACT_EMAILS = Endpoint(
    name="contact_emails",
    path="api/rest/ContactEmails/%22Importer%22",
    envelope_key="importer_contact_emails",
    lines_key="fichier_contact_emails",
    options=(),
    min_version=9,
    fields=(Field("CCT_CODE", 20, required=True), Field("CCT_EMAIL", 80, required=True)),
    idempotent=True,
    supports_test_mode=False,
)


def contact_emails_mapper(encoder: LineEncoder, _account_prefix: str) -> Mapper:
    # contacts: code, customer_code, last_name, first_name, email, phone, updated_at
    def build(row: Sequence[Any]) -> Built:
        return Built([row[0], row[4]], parent_key=None if row[1] is None else str(row[1]))

    return Mapper(CONTACT_EMAILS, encoder, lambda row: str(row[0]), build)


REGISTRY = ENDPOINTS.with_endpoint(
    EndpointSpec(CONTACT_EMAILS, "contacts", "CCT_CODE", contact_emails_mapper, parent="clients")
)


def test_the_graph_picks_up_a_registered_endpoint() -> None:
    defs = build_definitions(Settings(), endpoints=REGISTRY)
    graph = defs.resolve_asset_graph()
    sink = graph.get(dg.AssetKey(["gestimum", "contact_emails"]))
    assert {k.to_user_string() for k in sink.parent_keys} == {"transform/contact_emails", "gestimum/clients"}
    transform = graph.get(dg.AssetKey(["transform", "contact_emails"]))
    assert {k.to_user_string() for k in transform.parent_keys} == {"crm/contacts"}
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == sink.key}
    assert checks == {
        "statistics_consistent",
        "no_rejected_lines",
        "no_rows_waiting_too_long",
        "crm_rows_in_state_store",
        "no_crm_row_deleted_after_import",
    }
    assert "gestimum_sync" in {j.name for j in defs.resolve_all_job_defs()}
    # The production graph is unchanged.
    production = build_definitions(Settings()).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["gestimum", "contact_emails"]) not in production


def test_its_mapper_and_the_state_store_follow_the_entry(database_url: str) -> None:
    mapper = REGISTRY.get("contact_emails").make_mapper(LineFormat().encoder())
    row = mapper.map(("K1", "C1", "Dupont", "Jean", "jean@example.com", None, None))
    assert row.line == "K1;jean@example.com" and row.parent_key == "C1"
    with StateStore(database_url, endpoints=REGISTRY) as store:
        store.migrate()
        store.stage(
            "clients",
            [REGISTRY.get("clients").make_mapper(LineFormat().encoder()).map(_bad_customer())],
            partition="p",
            run_id="r",
        )
        store.stage("contact_emails", [row], partition="p", run_id="r")
        assert store.hold_orphans("contact_emails") == 1  # its parent customer is rejected


def _bad_customer() -> tuple[Any, ...]:
    return ("C1", "", None, None, None, None, None, None, None)  # no name: rejected locally


def test_the_cli_picks_up_a_registered_endpoint(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["rejections", "--endpoint", "contact_emails", "--database-url", database_url, "--json"]
    with pytest.raises(SystemExit, match="unknown endpoint 'contact_emails'"):
        cli(args)
    with StateStore(database_url) as store:
        store.migrate()  # the store exists (a deployment creates it with `state init`)
    assert cli(args, endpoints=REGISTRY) == 0
    assert json.loads(capsys.readouterr().out) == []
