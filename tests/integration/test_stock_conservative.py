"""DocumentsStock is conservative (issue 12, finding 6): only failures that provably happened
before Gestimum processed anything release the movements; everything else is delivery_unknown."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.encoding import LineEncoder
from gestimum_pipeline.gestimum.envelope import CompanySettings
from gestimum_pipeline.gestimum.errors import GestimumError, GestimumServerError, GestimumUnreachable
from gestimum_pipeline.gestimum.journal import ImportResult, failure_from_payload
from gestimum_pipeline.simulator.importer import error_payload
from gestimum_pipeline.sync.engine import DeliveryUnknownError, send_endpoint
from gestimum_pipeline.sync.mapping import documents_stock_mapper
from gestimum_pipeline.sync.state import StateStore

COMPANY = CompanySettings("DEMO.Gestimum", "DEMO", "")
STOCK = catalog.DOCUMENTS_STOCK


class FailingClient:
    """A real client (never connected) whose import answers with one given failure."""

    def __init__(self, error: GestimumError) -> None:
        self._client = GestimumClient("http://127.0.0.1:9/", COMPANY)
        self._error = error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def import_lines(self, endpoint: catalog.Endpoint, lines: Sequence[str], **kwargs: Any) -> ImportResult:
        raise self._error


def refusal(message: str, status: int) -> GestimumError:
    error = failure_from_payload(STOCK, error_payload(message, []), status=status)
    assert error is not None
    return error


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    s = StateStore(database_url)
    s.migrate()
    mapper = documents_stock_mapper(LineEncoder())
    s.stage(
        "documents_stock", [mapper.map((i, "in", "001", "ELS", 5, None)) for i in (1, 2)], partition="p", run_id="r"
    )
    try:
        yield s
    finally:
        s.close()


def send(store: StateStore, error: GestimumError) -> None:
    # The run's preflight proved access, so the stock request itself is what fails.
    store.record_access("http://127.0.0.1:9/", COMPANY.company_file, COMPANY.user, COMPANY.password, "run")
    send_endpoint(
        state=store,
        client=FailingClient(error),  # type: ignore[arg-type]
        endpoint=STOCK,
        company_file=COMPANY.company_file,
        max_lines=100,
        max_bytes=1_000_000,
        run_id="run",
    )


def stock_statuses(store: StateStore) -> set[str]:
    return {r["status"] for r in store.records(endpoint="documents_stock")}


@pytest.mark.parametrize(
    "message",
    ["Identifiant ou mot de passe incorrect", "Utilisateur inconnu", "Mot de passe expiré"],
)
def test_an_undocumented_refusal_in_a_200_is_delivery_unknown(store: StateStore, message: str) -> None:
    """A 200 with resultat=erreur is Gestimum's answer after it read the request: not provably unprocessed."""
    with pytest.raises(DeliveryUnknownError):
        send(store, refusal(message, 200))
    assert stock_statuses(store) == {"delivery_unknown"}


@pytest.mark.parametrize(
    "error",
    [
        GestimumUnreachable("could not connect", endpoint="documents_stock"),
        GestimumServerError("unavailable", endpoint="documents_stock", status=503),
        GestimumServerError("too many requests", endpoint="documents_stock", status=429),
        refusal("Identifiant ou mot de passe incorrect", 401),
        refusal("Accès refusé", 403),
        refusal("Dossier introuvable", 404),
    ],
    ids=["connect-refused", "503", "429", "401", "403", "404"],
)
def test_failures_provably_before_processing_release_the_movements(store: StateStore, error: GestimumError) -> None:
    with pytest.raises(GestimumError):
        send(store, error)
    assert stock_statuses(store) == {"pending"}


@pytest.mark.parametrize(
    "error",
    [
        GestimumServerError("bad gateway", endpoint="documents_stock", status=502),
        refusal("Requête invalide", 400),
        GestimumServerError("request timeout", endpoint="documents_stock", status=408),
    ],
    ids=["502", "400", "408"],
)
def test_other_failures_on_stock_are_delivery_unknown(store: StateStore, error: GestimumError) -> None:
    with pytest.raises(DeliveryUnknownError):
        send(store, error)
    assert stock_statuses(store) == {"delivery_unknown"}
