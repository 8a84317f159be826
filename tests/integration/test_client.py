"""GestimumClient against the simulator on a real socket, and against stub servers.

What is checked: the documented requests round-trip; hostile values land exactly in
the simulator's holdings; every injected fault gets the documented treatment (retry
only where it is safe, GestimumDeliveryUnknown where a re-send could duplicate stock
documents); and the password never shows in an exception or a log line.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import urllib3.exceptions

from gestimum_pipeline.gestimum.catalog import (
    CLIENTS,
    COMPTES,
    CONTACTS,
    DOCUMENTS_STOCK,
    REFERENCES_CLIENTS_ARTICLES,
    Endpoint,
)
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings, LineFormat
from gestimum_pipeline.gestimum.errors import (
    SETTING_COMPANY_FILE,
    SETTING_CREDENTIALS,
    GestimumAuthenticationError,
    GestimumDeliveryUnknown,
    GestimumError,
    GestimumProtocolError,
    GestimumServerError,
    GestimumUnreachable,
)
from gestimum_pipeline.gestimum.journal import RejectedLine
from gestimum_pipeline.simulator.server import Fault, GestimumSimulator, SimulatorConfig

PASSWORD = "s3cr3t-P@ss"
COMPANY = CompanySettings("DEMO.Gestimum", "DEMO", PASSWORD)
BACKOFF = 0.001
STOCK_LINE = "E;001;ELS;20"  # the documented DocumentsStock example line
CLIENT_LINE = "C1;;Client 1"


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_password_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test of this module also checks that the password was never logged."""
    caplog.set_level(logging.DEBUG)
    yield
    assert PASSWORD not in caplog.text
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()


@pytest.fixture
def sim() -> Iterator[GestimumSimulator]:
    simulator = GestimumSimulator(SimulatorConfig(password=PASSWORD)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def make_client(url: str, **kwargs) -> GestimumClient:
    options = {
        "backoff_seconds": BACKOFF,
        "max_backoff_seconds": 0.01,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_retries": 3,
    }
    options.update(kwargs)
    company = options.pop("company", COMPANY)
    return GestimumClient(url, company, **options)


@pytest.fixture
def client(sim: GestimumSimulator) -> Iterator[GestimumClient]:
    with make_client(sim.url) as c:
        yield c


def assert_secret_free(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))  # causes included
    assert PASSWORD not in text
    assert PASSWORD not in repr(exc)


def fault(sim: GestimumSimulator, kind: str, endpoint: Endpoint | None = None, **kwargs) -> None:
    sim.add_fault(Fault(kind, endpoint=endpoint.name if endpoint else None, **kwargs))


def seed_customer(client: GestimumClient) -> None:
    assert client.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1


# --- documented examples ------------------------------------------------------------


def test_documented_examples_round_trip(sim, client):
    # Comptes, as documented: both accounts imported.
    result = client.import_lines(
        COMPTES, ["411JOHNDOE;John Doe;C;JOHNDOE", "70700202;Ventes de produits finis;G;;445660"]
    )
    assert (result.imported, result.rejected, result.resultat) == (2, 0, "succès")
    assert sim.state.accounts["411JOHNDOE"]["CPT_LIB"] == "John Doe"
    assert sim.state.accounts["70700202"]["CPT_TVA_NC"] == "445660"

    # Clients: its account must exist first (the docs import them separately).
    assert client.import_lines(COMPTES, ["411C42;SPORT25;C;C42"]).imported == 1
    result = client.import_lines(CLIENTS, ["C42;411C42;SPORT25;5 rue Cugnot;ZA Du Pâtis;78120;RAMBOUILLET"])
    assert (result.imported, result.rejected) == (1, 0)
    assert sim.state.customers["C42"] == {
        "PCF_CODE": "C42",
        "CPT_NUMERO": "411C42",
        "PCF_RS": "SPORT25",
        "PCF_RUE": "5 rue Cugnot",
        "PCF_COMP": "ZA Du Pâtis",
        "PCF_CP": "78120",
        "PCF_VILLE": "RAMBOUILLET",
    }

    # Contacts: their customers first.
    client.import_lines(CLIENTS, ["CLIENT1;;Client 1", "CLIENT2;;Client 2"])
    result = client.import_lines(
        CONTACTS, ["CONTACT1;Contact1;CLIENT1", "CONTACT2;Contact2;CLIENT1", "CONTACT3;Contact3;CLIENT2"]
    )
    assert (result.imported, result.rejected) == (3, 0)
    assert sorted(sim.state.contacts) == ["CONTACT1", "CONTACT2", "CONTACT3"]

    # DocumentsStock: one document, named in the journal.
    result = client.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
    assert (result.imported, result.rejected) == (1, 0)
    assert len(result.documents) == 1
    assert [d.number for d in sim.state.documents] == list(result.documents)

    # ReferencesClientsArticles, as documented: customers C1/C2 unknown, both rejected
    # with "Code manquant", yet resultat is "succès".
    result = client.import_lines(REFERENCES_CLIENTS_ARTICLES, ["A10;C1;5;A10001", "A10;C2;5;A10002"])
    assert (result.imported, result.rejected, result.resultat) == (0, 2, "succès")
    assert [r.line for r in result.rejected_lines] == [1, 2]
    assert all(r.reason.startswith("Code manquant") for r in result.rejected_lines)
    assert sim.state.references == {}

    assert client.requests_made == 7
    assert len(sim.state.requests) == 7


def test_rejected_line_numbers_follow_the_lines_sent(sim, client):
    result = client.import_lines(CLIENTS, ["OK1;;A", "BAD;411NOPE;B", "OK2;;C", ";;D"])
    assert (result.imported, result.rejected) == (2, 2)
    assert [r.line for r in result.rejected_lines] == [2, 4]
    assert isinstance(result.rejected_lines[0], RejectedLine)
    assert "411NOPE" in result.rejected_lines[0].reason
    assert sorted(sim.state.customers) == ["OK1", "OK2"]


def test_test_mode_imports_nothing(sim, client):
    result = client.import_lines(CLIENTS, [CLIENT_LINE], test_mode=True)
    assert result.test_mode is True
    assert result.imported == 1
    assert sim.state.customers == {}
    assert sim.state.requests[-1].test_mode is True


def test_invalid_options_fail_before_any_request(client):
    with pytest.raises(ValueError):
        client.import_lines(DOCUMENTS_STOCK, [STOCK_LINE], test_mode=True)
    with pytest.raises(ValueError):
        client.import_lines(CLIENTS, [CLIENT_LINE], options={"calculer_code_tiers": True})
    assert client.requests_made == 0


def test_comptes_options_are_sent(sim, client):
    result = client.import_lines(COMPTES, ["411X;X;C;X"], options={"calculer_code_tiers": False})
    assert result.imported == 1


def test_empty_lines_make_no_request(sim, client):
    result = client.import_lines(CLIENTS, [])
    assert (result.lines_sent, result.imported, result.rejected) == (0, 0, 0)
    assert client.requests_made == 0
    assert sim.state.requests == []


def test_one_log_line_per_request(sim, client, caplog):
    caplog.set_level(logging.DEBUG, logger="gestimum_pipeline.gestimum.client")  # debug: the sink sums up
    caplog.clear()
    client.import_lines(CLIENTS, [CLIENT_LINE, "C2;;B"])
    lines = [r.getMessage() for r in caplog.records if r.name == "gestimum_pipeline.gestimum.client"]
    assert len(lines) == 1
    assert "clients" in lines[0] and "2 lines" in lines[0] and "bytes" in lines[0]
    assert "HTTP 200" in lines[0] and "attempt 1" in lines[0]


def test_custom_logger_is_used(sim):
    logger = logging.getLogger("test.custom.gestimum")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with make_client(sim.url, logger=logger) as c:
            c.import_lines(CLIENTS, [CLIENT_LINE])
    finally:
        logger.removeHandler(handler)
    assert any("clients" in r.getMessage() for r in records)


# --- hostile values -----------------------------------------------------------------

HOSTILE_NAMES = [
    "Dupont; Fils & Cie",
    'Le "Grand" Café',
    '"',
    ";",
    "tab\there",
    "  leading spaces",
    "trailing spaces  ",
    " ",
    "Élodie Ñoël çàèù €œ",
    "back\\slash",
    "it's",
    '";"',
]


def test_hostile_values_round_trip_exactly(sim, client):
    encoder = LineFormat().encoder()
    records = {}
    for i, name in enumerate(HOSTILE_NAMES):
        code = f"H{i:02d}"
        # name, street, complement, postcode (None/empty), city
        values = [code, None, name, name[::-1], "", None, name.upper()]
        records[code] = values
    lines = [encoder.encode_line(v, record=v[0], fields=CLIENTS.field_codes) for v in records.values()]
    result = client.import_lines(CLIENTS, lines)
    assert (result.imported, result.rejected) == (len(lines), 0), result.rejected_lines
    held = sim.state.customers
    for code, values in records.items():
        expected = {f: "" if v is None else v for f, v in zip(CLIENTS.field_codes, values, strict=True)}
        assert held[code] == expected

    # A contact and a customer reference with hostile values too.
    contact = encoder.encode_line(["CT;1", 'Nom "; \t ', "H00"], fields=CONTACTS.field_codes)
    assert client.import_lines(CONTACTS, [contact]).imported == 1
    assert sim.state.contacts["CT;1"] == {"CCT_CODE": "CT;1", "CCT_NOM": 'Nom "; \t ', "CCT_ORIGIN": "H00"}
    reference = encoder.encode_line(["A10", "H01", None, ' réf; "x" '], fields=REFERENCES_CLIENTS_ARTICLES.field_codes)
    assert client.import_lines(REFERENCES_CLIENTS_ARTICLES, [reference]).imported == 1
    assert sim.state.references[("A10", "H01")]["ART_REFCLI"] == ' réf; "x" '


def test_other_separator_and_qualifier_round_trip(sim):
    fmt = LineFormat(separator="|", qualifier="'")
    encoder = fmt.encoder()
    values = ["P|1", None, "O'Brien | Sons", "a;b", None, None, " x "]
    with make_client(sim.url, fmt=fmt) as c:
        result = c.import_lines(CLIENTS, [encoder.encode_line(values)])
    assert result.imported == 1
    assert sim.state.customers["P|1"]["PCF_RS"] == "O'Brien | Sons"
    assert sim.state.customers["P|1"]["PCF_RUE"] == "a;b"
    assert sim.state.customers["P|1"]["PCF_VILLE"] == " x "


# --- faults: retried for every endpoint ------------------------------------------


@pytest.mark.parametrize("endpoint", [CLIENTS, DOCUMENTS_STOCK], ids=lambda e: e.name)
def test_503_is_retried_for_every_endpoint(sim, client, endpoint):
    lines = [STOCK_LINE] if endpoint is DOCUMENTS_STOCK else [CLIENT_LINE]
    fault(sim, "http_503", endpoint, count=2)
    result = client.import_lines(endpoint, lines)
    assert result.imported == 1
    assert client.requests_made == 3
    assert [r.status for r in sim.state.requests] == [503, 503, 200]
    if endpoint is DOCUMENTS_STOCK:
        assert len(sim.state.documents) == 1


def test_503_honours_retry_after_capped(sim):
    with make_client(sim.url, backoff_seconds=0.001, max_backoff_seconds=0.05) as c:
        sleeps: list[float] = []
        c._sleep = sleeps.append  # type: ignore[method-assign]
        fault(sim, "http_503", CLIENTS, retry_after=0.02)
        fault(sim, "http_503", CLIENTS, retry_after=30)
        assert c.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1
    assert sleeps == [0.02, 0.05]


def test_503_exhausted_is_a_server_error(sim, client):
    fault(sim, "http_503", CLIENTS, count=10)
    with pytest.raises(GestimumServerError) as info:
        client.import_lines(CLIENTS, [CLIENT_LINE])
    assert info.value.status == 503
    assert client.requests_made == 4  # 1 + max_retries
    assert_secret_free(info.value)


def test_unreachable_after_retries_with_backoff():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with make_client(f"http://127.0.0.1:{port}/", backoff_seconds=0.01, max_backoff_seconds=0.03) as c:
        sleeps: list[float] = []
        c._sleep = sleeps.append  # type: ignore[method-assign]
        with pytest.raises(GestimumUnreachable) as info:
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])  # nothing delivered: safe even here
    assert c.requests_made == 4
    assert sleeps == [0.01, 0.02, 0.03]  # exponential, capped
    assert "nothing was sent" in str(info.value)
    assert_secret_free(info.value)


def test_real_backoff_sleeps(sim):
    # Without replacing _sleep: tiny real delays, to exercise the default path.
    with make_client(sim.url, backoff_seconds=0.001) as c:
        fault(sim, "http_503", CLIENTS, count=1)
        assert c.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1
        assert c.requests_made == 2


# --- faults: retried only where idempotent --------------------------------------------


def test_500_retried_for_clients(sim, client):
    fault(sim, "http_500", CLIENTS, count=2)
    assert client.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1
    assert client.requests_made == 3


def test_500_exhausted_for_clients_is_a_server_error(sim, client):
    fault(sim, "http_500", CLIENTS, count=10)
    with pytest.raises(GestimumServerError) as info:
        client.import_lines(CLIENTS, [CLIENT_LINE])
    assert info.value.status == 500
    assert client.requests_made == 4


def test_500_on_documents_stock_is_delivery_unknown(sim, client):
    fault(sim, "http_500", DOCUMENTS_STOCK)
    with pytest.raises(GestimumDeliveryUnknown) as info:
        client.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
    error = info.value
    assert client.requests_made == 1  # never re-sent
    assert len(sim.state.requests) == 1
    assert len(sim.state.documents) == 0  # this fault imports nothing, and we did not re-send
    assert error.status == 500 and error.lines == 1 and error.endpoint == "documents_stock"
    text = str(error)
    assert "documents_stock" in text and "1 lines" in text and "reconcile" in text
    assert_secret_free(error)


def test_close_after_read_on_documents_stock_is_delivery_unknown(sim, client):
    fault(sim, "close_after_read", DOCUMENTS_STOCK)
    with pytest.raises(GestimumDeliveryUnknown) as info:
        client.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
    assert client.requests_made == 1
    assert len(sim.state.documents) == 1  # created exactly once: Gestimum did it, we did not re-send
    assert "closed" in str(info.value)
    assert_secret_free(info.value)


def test_close_after_read_is_retried_for_clients(sim, client):
    fault(sim, "close_after_read", CLIENTS)
    assert client.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1
    assert client.requests_made == 2
    assert list(sim.state.customers) == ["C1"]  # re-importing a customer is harmless


def test_slow_beyond_read_timeout_on_documents_stock_is_delivery_unknown(sim):
    with make_client(sim.url, read_timeout=0.3) as c:
        fault(sim, "slow", DOCUMENTS_STOCK, seconds=1.0)
        with pytest.raises(GestimumDeliveryUnknown) as info:
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 1
    assert "read timeout" in str(info.value)
    assert len(sim.state.documents) == 1


def test_slow_is_retried_for_clients(sim):
    with make_client(sim.url, read_timeout=0.3) as c:
        fault(sim, "slow", CLIENTS, seconds=1.0)
        assert c.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1
        assert c.requests_made == 2


def test_delay_within_read_timeout_is_fine(sim):
    with make_client(sim.url, read_timeout=2.0) as c:
        fault(sim, "delay", DOCUMENTS_STOCK, seconds=0.2)
        assert c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE]).imported == 1
        assert c.requests_made == 1


@pytest.mark.parametrize("process", [True, False])
def test_malformed_on_documents_stock_is_delivery_unknown(sim, client, process):
    fault(sim, "malformed", DOCUMENTS_STOCK, process=process)
    with pytest.raises(GestimumDeliveryUnknown) as info:
        client.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
    assert client.requests_made == 1
    assert len(sim.state.documents) == (1 if process else 0)
    assert "malformed" in str(info.value)


def test_malformed_is_retried_for_clients(sim, client):
    fault(sim, "malformed", CLIENTS)
    assert client.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1
    assert client.requests_made == 2


def test_malformed_exhausted_is_a_protocol_error(sim, client):
    fault(sim, "malformed", CLIENTS, count=10)
    with pytest.raises(GestimumProtocolError, match="malformed"):
        client.import_lines(CLIENTS, [CLIENT_LINE])
    assert client.requests_made == 4


def test_bad_stats_is_a_protocol_error(sim, client):
    fault(sim, "bad_stats", CLIENTS)
    with pytest.raises(GestimumProtocolError, match="but 1 lines were sent") as info:
        client.import_lines(CLIENTS, [CLIENT_LINE])
    assert client.requests_made == 1  # the server's deliberate answer: re-sending would not fix it
    assert_secret_free(info.value)


def test_bad_stats_on_documents_stock_is_delivery_unknown(sim, client):
    # Gestimum processed it but its counts cannot be trusted: what was created is unknown.
    fault(sim, "bad_stats", DOCUMENTS_STOCK)
    with pytest.raises(GestimumDeliveryUnknown) as info:
        client.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
    assert isinstance(info.value.__cause__, GestimumProtocolError)
    assert len(sim.state.documents) == 1
    assert client.requests_made == 1


# --- refusals -------------------------------------------------------------------------


def test_wrong_password(sim):
    with make_client(sim.url, company=CompanySettings("DEMO.Gestimum", "DEMO", "wrong-" + PASSWORD)) as c:
        with pytest.raises(GestimumAuthenticationError) as info:
            c.import_lines(CLIENTS, [CLIENT_LINE])
        assert c.requests_made == 1
    assert info.value.setting == SETTING_CREDENTIALS
    assert info.value.status == 401
    assert "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE" in str(info.value)
    assert "wrong-" not in str(info.value)
    assert_secret_free(info.value)


def test_wrong_user(sim):
    company = CompanySettings("DEMO.Gestimum", "NOBODY", PASSWORD)
    with make_client(sim.url, company=company) as c, pytest.raises(GestimumAuthenticationError) as info:
        c.import_lines(CLIENTS, [CLIENT_LINE])
    assert info.value.setting == SETTING_CREDENTIALS


def test_wrong_company_file(sim):
    company = CompanySettings("NOPE.Gestimum", "DEMO", PASSWORD)
    with make_client(sim.url, company=company) as c, pytest.raises(GestimumAuthenticationError) as info:
        c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
    assert info.value.setting == SETTING_COMPANY_FILE
    assert "GESTIMUM_FICHIER" in str(info.value) and "NOPE.Gestimum" in str(info.value)
    assert sim.state.documents == []
    assert_secret_free(info.value)


def test_endpoint_newer_than_the_server(sim):
    sim.config.version = 8  # Contacts needs version 9
    with make_client(sim.url) as c:
        seed_customer(c)
        with pytest.raises(GestimumProtocolError) as info:
            c.import_lines(CONTACTS, ["X;Y;C1"])
    assert info.value.status == 400
    assert "version" in str(info.value)


def test_refused_envelope_carries_gestimums_message(sim):
    # import_lines always sends endpoint.header; a header with an unknown field code
    # needs an endpoint of our own. The simulator refuses the envelope with HTTP 400.
    field = type(CLIENTS.fields[0])
    endpoint = Endpoint(
        name=CLIENTS.name,
        path=CLIENTS.path,
        envelope_key=CLIENTS.envelope_key,
        lines_key=CLIENTS.lines_key,
        options=CLIENTS.options,
        min_version=CLIENTS.min_version,
        fields=(CLIENTS.fields[0], field("NOPE")),
        idempotent=True,
        supports_test_mode=True,
    )
    with make_client(sim.url) as c:
        with pytest.raises(GestimumProtocolError) as info:
            c.import_lines(endpoint, ["A;B"])
        assert c.requests_made == 1  # a refusal is not retried
    assert info.value.status == 400
    assert "NOPE" in str(info.value)


# --- the wire -------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers like Gestimum to anything, remembering the raw request."""

    protocol_version = "HTTP/1.1"
    seen: list[dict]
    answer: tuple[int, bytes, dict[str, str]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, data, headers = type(self).answer
        self.send_response(status)
        for name, value in {"Content-Type": "application/json; charset=utf-8", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def ok_answer(imported: int = 1) -> bytes:
    entry = {
        "resultat": "succès",
        "message": "terminé",
        "journal": [f"10/09/2019 18:57:35 Nombre de lignes importées : {imported}"],
        "statistiques": {"nombre_lignes_importées": str(imported), "nombre_lignes_non_importées": "0"},
    }
    return json.dumps({"result": [entry]}, ensure_ascii=False).encode()


@pytest.fixture
def stub() -> Iterator[type[_Recorder]]:
    handler = type("Recorder", (_Recorder,), {"seen": [], "answer": (200, ok_answer(), {})})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("prefix", ["", "gestimum/", "gestimum"])
def test_path_is_sent_literally(stub, prefix):
    with make_client(stub.url + prefix) as c:
        c.import_lines(CLIENTS, [CLIENT_LINE])
    expected_prefix = "/gestimum/" if prefix else "/"
    assert stub.seen[0]["path"] == expected_prefix + "api/rest/Clients/%22Importer%22"


def test_body_is_compact_utf8_json_with_the_header_line(stub):
    with make_client(stub.url) as c:
        c.import_lines(CLIENTS, ["C1;;Pâtis"])
    request = stub.seen[0]
    assert request["headers"]["Content-Type"].startswith("application/json")
    body = json.loads(request["body"].decode("utf-8"))
    lines = body["importer_clients"]["parametres"]["fichier_clients"]
    assert lines == ["PCF_CODE;CPT_NUMERO;PCF_RS;PCF_RUE;PCF_COMP;PCF_CP;PCF_VILLE", "C1;;Pâtis"]
    assert "Pâtis".encode() in request["body"]


@pytest.mark.parametrize(
    ("status", "data", "headers", "expected", "match"),
    [
        (404, b"Not Found", {}, GestimumProtocolError, "Gestimum 8 or later"),
        (401, b"<html>proxy</html>", {}, GestimumProtocolError, "proxy"),
        (413, b"too big", {}, GestimumProtocolError, "maximum request size"),
        (302, b"", {"Location": "https://elsewhere/"}, GestimumProtocolError, "redirected"),
        (400, b"nope", {}, GestimumProtocolError, "HTTP 400"),
        (204, b"", {}, GestimumDeliveryUnknown, "malformed"),
        (200, b'{"result": []}', {}, GestimumDeliveryUnknown, "malformed"),
        (200, b"\xff\xfe not utf-8", {}, GestimumDeliveryUnknown, "malformed"),
        (502, b"Bad Gateway", {}, GestimumDeliveryUnknown, "HTTP 502"),
        (504, b"Gateway Timeout", {}, GestimumDeliveryUnknown, "HTTP 504"),
    ],
)
def test_unusual_answers_on_documents_stock(stub, status, data, headers, expected, match):
    stub.answer = (status, data, headers)
    with make_client(stub.url) as c:
        with pytest.raises(expected, match=match) as info:
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 1
    assert info.value.status == status


def test_200_refusal_is_classified(stub):
    entry = {
        "resultat": "erreur",
        "message": "Utilisateur ou mot de passe incorrect",
        "journal": [],
        "statistiques": {},
    }
    stub.answer = (200, json.dumps({"result": [entry]}).encode(), {})
    with make_client(stub.url) as c:
        with pytest.raises(GestimumAuthenticationError):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 1


def test_429_is_retried_like_503(stub):
    stub.answer = (429, b"slow down", {"Retry-After": "0"})
    with make_client(stub.url, max_retries=2) as c:
        with pytest.raises(GestimumServerError) as info:
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 3
    assert info.value.status == 429


def test_integer_counts_from_another_server_version(stub):
    entry = {"resultat": "succès", "message": "", "journal": [], "statistiques": {
        "nombre_lignes_importées": 1, "nombre_lignes_non_importées": 0}}  # fmt: skip
    stub.answer = (200, json.dumps({"result": [entry]}).encode(), {})
    with make_client(stub.url) as c:
        assert c.import_lines(CLIENTS, [CLIENT_LINE]).imported == 1


def test_gestimum_echoing_the_password_is_redacted(stub, caplog):
    message = f"Valeur incorrecte pour le paramètre mot_passe : {PASSWORD}"
    entry = {
        "resultat": "erreur",
        "message": message,
        "journal": [f"10/09/2019 18:57:35 {message}"],
        "statistiques": {},
    }
    stub.answer = (400, json.dumps({"result": [entry]}).encode(), {})
    with make_client(stub.url) as c, pytest.raises(GestimumProtocolError) as info:
        c.import_lines(CLIENTS, [CLIENT_LINE])
    assert "***" in str(info.value)
    assert_secret_free(info.value)


@pytest.mark.parametrize("password", ['pa"ss', "pa\\ss", 'q"\\"uo'])
def test_a_password_echoed_json_escaped_is_redacted(stub, password: str) -> None:
    """Issue 12, finding 10: a proxy or server echoing the request body quotes the password as
    JSON writes it (escaped quote, backslash); that form is redacted too."""
    echoed = json.dumps({"mot_passe": password})  # e.g. {"mot_passe": "pa\"ss"}
    assert password not in echoed  # only the escaped form is in the answer
    stub.answer = (400, f"Bad request body: {echoed}".encode(), {"Content-Type": "text/plain"})
    company = CompanySettings("DEMO.Gestimum", "DEMO", password)
    with make_client(stub.url, company=company) as c, pytest.raises(GestimumProtocolError) as info:
        c.import_lines(CLIENTS, [CLIENT_LINE])
    text = "".join(traceback.format_exception(info.value))
    assert json.dumps(password)[1:-1] not in text and password not in text
    assert "***" in text


# --- transport failures that a local socket cannot produce on demand -----------------


def _raising(exc: BaseException):
    def post(*args, **kwargs):
        raise exc

    return post


def test_connect_timeout_is_unreachable_and_retried(sim):
    with make_client(sim.url) as c:
        c._session.post = _raising(requests.exceptions.ConnectTimeout("timed out"))  # type: ignore[method-assign]
        with pytest.raises(GestimumUnreachable, match="no connection within"):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 4


def test_connection_reset_is_ambiguous(sim):
    reset = requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("aborted", ConnectionResetError()))
    with make_client(sim.url) as c:
        c._session.post = _raising(reset)  # type: ignore[method-assign]
        with pytest.raises(GestimumDeliveryUnknown):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 1
        with pytest.raises(GestimumServerError):
            c.import_lines(CLIENTS, [CLIENT_LINE])
        assert c.requests_made == 5


def test_refused_connection_is_recognised_through_wrappers(sim):
    refused = requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.NewConnectionError(None, "refused"))
    )
    with make_client(sim.url, max_retries=1) as c:
        c._session.post = _raising(refused)  # type: ignore[method-assign]
        with pytest.raises(GestimumUnreachable):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 2


def test_tls_certificate_failure_is_not_retried(sim):
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error = requests.exceptions.SSLError(
        urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.SSLError(cert))
    )
    with make_client(sim.url) as c:
        c._session.post = _raising(error)  # type: ignore[method-assign]
        with pytest.raises(GestimumUnreachable, match="TLS handshake"):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])
        assert c.requests_made == 1


def test_tls_failure_mid_answer_is_ambiguous(sim):
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    with make_client(sim.url) as c:
        c._session.post = _raising(requests.exceptions.SSLError(eof))  # type: ignore[method-assign]
        with pytest.raises(GestimumDeliveryUnknown):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])


def test_broken_answer_stream_is_ambiguous(sim):
    with make_client(sim.url) as c:
        c._session.post = _raising(requests.exceptions.ChunkedEncodingError("broken"))  # type: ignore[method-assign]
        with pytest.raises(GestimumDeliveryUnknown, match="could not be read"):
            c.import_lines(DOCUMENTS_STOCK, [STOCK_LINE])


# --- construction -------------------------------------------------------------------


def test_verify_off_warns_every_time(caplog):
    caplog.clear()
    for _ in range(2):
        GestimumClient("https://gestimum.example/", COMPANY, verify=False).close()
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "TLS verification is OFF" in r.getMessage()
    ]
    assert len(warnings) == 2


def test_verify_defaults_on_and_accepts_a_ca_bundle():
    c = GestimumClient("https://gestimum.example/", COMPANY)
    assert c._session.verify is True
    bundle = requests.certs.where()
    assert GestimumClient("https://gestimum.example/", COMPANY, verify=bundle)._session.verify == bundle
    with pytest.raises(ValueError, match="CA bundle"):
        GestimumClient("https://gestimum.example/", COMPANY, verify="/nonexistent/ca.pem")


def test_timeouts_are_always_set(stub, monkeypatch):
    seen: dict = {}
    with make_client(stub.url, connect_timeout=3.0, read_timeout=7.0) as c:
        original = c._session.post

        def spy(*args, **kwargs):
            seen.update(kwargs)
            return original(*args, **kwargs)

        c._session.post = spy  # type: ignore[method-assign]
        c.import_lines(CLIENTS, [CLIENT_LINE])
    assert seen["timeout"] == (3.0, 7.0)
    assert seen["allow_redirects"] is False


@pytest.mark.parametrize(
    "kwargs",
    [{"connect_timeout": 0}, {"read_timeout": -1}, {"max_retries": -1}, {"backoff_seconds": -0.1}],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        GestimumClient("http://localhost/", COMPANY, **kwargs)


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://host/", "http://", ""])
def test_invalid_url(url):
    with pytest.raises(ValueError, match="http"):
        GestimumClient(url, COMPANY)


def test_repr_and_errors_hide_the_password():
    c = GestimumClient("http://h/", COMPANY)
    assert PASSWORD not in repr(c)
    with pytest.raises(ValueError) as info:
        GestimumClient(f"ftp://{PASSWORD}/", COMPANY)
    assert PASSWORD not in str(info.value)


def test_all_errors_share_the_base_class():
    for cls in (GestimumUnreachable, GestimumAuthenticationError, GestimumProtocolError, GestimumServerError):
        assert issubclass(cls, GestimumError)
