"""Pure unit tests of the protocol layer: envelope, batching, answers, errors.

The documented examples below are copied verbatim from Gestimum's documentation pages
(shared/gestimum-api/*.txt): each request must be rebuilt byte-for-byte and each
answer must parse into the right counts, reasons and documents.
"""

from __future__ import annotations

import itertools
import json
import logging
import random

import pytest
from gestimum_examples import (
    CLIENTS_REQUEST,
    CLIENTS_RESPONSE,
    COMPTES_REQUEST,
    COMPTES_RESPONSE,
    CONTACTS_REQUEST,
    CONTACTS_RESPONSE,
    DOCUMENTS_STOCK_REQUEST,
    DOCUMENTS_STOCK_RESPONSE,
    REFERENCES_CLIENTS_ARTICLES_REQUEST,
    REFERENCES_CLIENTS_ARTICLES_RESPONSE,
)

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.batching import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_LINES,
    batched,
    line_cost,
    minimum_requests,
)
from gestimum_pipeline.gestimum.catalog import (
    CLIENTS,
    COMPTES,
    CONTACTS,
    DOCUMENTS_STOCK,
    REFERENCES_CLIENTS_ARTICLES,
    Endpoint,
)
from gestimum_pipeline.gestimum.envelope import (
    CompanySettings,
    LineFormat,
    body_overhead,
    build_body,
    encode_body,
)
from gestimum_pipeline.gestimum.errors import (
    SETTING_COMPANY_FILE,
    SETTING_CREDENTIALS,
    GestimumAuthenticationError,
    GestimumDeliveryUnknown,
    GestimumError,
    GestimumProtocolError,
)
from gestimum_pipeline.gestimum.journal import (
    ImportResult,
    RejectedLine,
    classify_failure,
    failure_from_payload,
    parse_response,
)
from gestimum_pipeline.redaction import redact

EXAMPLES: dict[str, tuple[Endpoint, str, str]] = {
    "comptes": (COMPTES, COMPTES_REQUEST, COMPTES_RESPONSE),
    "clients": (CLIENTS, CLIENTS_REQUEST, CLIENTS_RESPONSE),
    "contacts": (CONTACTS, CONTACTS_REQUEST, CONTACTS_RESPONSE),
    "documents_stock": (DOCUMENTS_STOCK, DOCUMENTS_STOCK_REQUEST, DOCUMENTS_STOCK_RESPONSE),
    "references_clients_articles": (
        REFERENCES_CLIENTS_ARTICLES,
        REFERENCES_CLIENTS_ARTICLES_REQUEST,
        REFERENCES_CLIENTS_ARTICLES_RESPONSE,
    ),
}
# What each documented answer says, read by a human.
EXPECTED = {
    "comptes": (2, 0, (), ()),
    "clients": (1, 0, (), ()),
    "contacts": (3, 0, (), ()),
    "documents_stock": (1, 0, (), ("ENT17-00017",)),
    "references_clients_articles": (
        0,
        2,
        (RejectedLine(1, "Code manquant"), RejectedLine(2, "Code manquant")),
        (),
    ),
}
DEMO = CompanySettings(company_file="DEMO.Gestimum", user="DEMO")
# The examples send an empty text qualifier.
DOC_FORMAT = LineFormat(qualifier="")
TS = "13/09/2019 16:17:02 "


def example_lines(name: str) -> list[str]:
    endpoint, request, _ = EXAMPLES[name]
    return json.loads(request)[endpoint.envelope_key]["parametres"][endpoint.lines_key][1:]


def answer(imported, rejected, journal=None, *, resultat="succès", message="terminé", **extra) -> dict:
    entry = {"resultat": resultat, "message": message}
    if journal is not None:
        entry["journal"] = journal
    entry["statistiques"] = {
        "nombre_lignes_importées": imported,
        "nombre_lignes_non_importées": rejected,
    }
    entry.update(extra)
    return {"result": [entry]}


# --- envelope ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_build_body_reproduces_the_documented_request(name):
    # With our default qualifier ("), which the example values never need.
    endpoint, request, _ = EXAMPLES[name]
    expected = json.loads(request)
    expected[endpoint.envelope_key]["parametres"]["identificateur_texte"] = '"'
    body = build_body(endpoint, DEMO, example_lines(name))
    assert body == expected
    # Same key order too: the body reads like the documentation.
    assert json.dumps(body, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_build_body_reproduces_the_documented_request_byte_for_byte(name):
    endpoint, request, _ = EXAMPLES[name]
    body = build_body(endpoint, DEMO, example_lines(name), fmt=DOC_FORMAT)
    assert json.dumps(body, ensure_ascii=False) == json.dumps(json.loads(request), ensure_ascii=False)


def test_build_body_defaults_and_flags():
    company = CompanySettings("X.Gestimum", "ADMIN", "pw", disconnect=True, exclusive=True)
    body = build_body(CLIENTS, company, ["C1;;A"])
    inner = body["importer_clients"]
    assert inner["societe"] == {
        "fichier": "X.Gestimum",
        "utilisateur": "ADMIN",
        "mot_passe": "pw",
        "deconnecter": "Oui",
        "exclusif": "Oui",
    }
    params = inner["parametres"]
    assert params["separateur_champs"] == ";"
    assert params["identificateur_texte"] == '"'
    assert params["journal"] == params["statistiques"] == params["entete"] == "Oui"
    assert params["noms_champs"] == ""
    assert "tester" not in params  # Gestimum's default is Non: not sent unless asked
    assert params["fichier_clients"] == ["PCF_CODE;CPT_NUMERO;PCF_RS;PCF_RUE;PCF_COMP;PCF_CP;PCF_VILLE", "C1;;A"]
    assert list(params)[-1] == "fichier_clients"


def test_build_body_other_separator_and_header():
    fmt = LineFormat(separator="|", qualifier="'")
    body = build_body(CONTACTS, DEMO, ["A|B|C"], fmt=fmt, header=["CCT_CODE", "CCT_NOM", "CCT_ORIGIN"])
    params = body["importer_contacts"]["parametres"]
    assert params["separateur_champs"] == "|"
    assert params["identificateur_texte"] == "'"
    assert params["fichier_contacts"][0] == "CCT_CODE|CCT_NOM|CCT_ORIGIN"


def test_build_body_empty_lines_still_sends_header():
    body = build_body(CONTACTS, DEMO, [])
    assert body["importer_contacts"]["parametres"]["fichier_contacts"] == ["CCT_CODE;CCT_NOM;CCT_ORIGIN"]


@pytest.mark.parametrize("endpoint", [CLIENTS, COMPTES])
def test_test_mode_sets_tester(endpoint):
    params = build_body(endpoint, DEMO, ["x"], test_mode=True)[endpoint.envelope_key]["parametres"]
    assert params["tester"] == "Oui"


@pytest.mark.parametrize("endpoint", [CONTACTS, DOCUMENTS_STOCK, REFERENCES_CLIENTS_ARTICLES])
def test_test_mode_refused_where_undocumented(endpoint):
    with pytest.raises(ValueError, match="test mode"):
        build_body(endpoint, DEMO, ["x"], test_mode=True)


def test_options_documented_order_and_values():
    body = build_body(
        COMPTES, DEMO, ["x"], options={"tester": False, "calculer_numero_compte": True, "calculer_code_tiers": False}
    )
    params = body["importer_comptes"]["parametres"]
    keys = list(params)
    assert keys[6:] == ["calculer_code_tiers", "calculer_numero_compte", "tester", "fichier_comptes"]
    assert params["calculer_code_tiers"] == "Non"
    assert params["calculer_numero_compte"] == "Oui"
    assert params["tester"] == "Non"


def test_unknown_option_refused():
    with pytest.raises(ValueError, match="calculer_code_tiers"):
        build_body(CLIENTS, DEMO, ["x"], options={"calculer_code_tiers": True})
    with pytest.raises(ValueError, match="no option"):
        build_body(CONTACTS, DEMO, ["x"], options={"tester": True})


def test_option_values_must_be_bool():
    with pytest.raises(ValueError, match="True or False"):
        build_body(COMPTES, DEMO, ["x"], options={"tester": "Oui"})  # type: ignore[dict-item]


def test_test_mode_contradicting_option():
    with pytest.raises(ValueError, match="contradicts"):
        build_body(CLIENTS, DEMO, ["x"], test_mode=True, options={"tester": False})
    params = build_body(CLIENTS, DEMO, ["x"], test_mode=True, options={"tester": True})["importer_clients"]
    assert params["parametres"]["tester"] == "Oui"


def test_invalid_line_format_refused():
    with pytest.raises(ValueError):
        build_body(CLIENTS, DEMO, ["x"], fmt=LineFormat(separator=";", qualifier=";"))
    with pytest.raises(ValueError):
        LineFormat(separator=";;").encoder()


def test_company_settings_repr_hides_password():
    company = CompanySettings("DEMO.Gestimum", "DEMO", "s3cr3t-P@ss")
    assert "s3cr3t" not in repr(company)
    assert "s3cr3t" not in str(company)


def test_line_format_encoder_uses_its_settings():
    enc = LineFormat(separator="|", qualifier="'", charset=None, decimal_separator=".").encoder()
    assert enc.encode_line(["a|b", "Ω"]) == "'a|b'|Ω"
    assert enc.format_decimal("1.5") == "1.5"


def test_encode_body_is_compact_utf8():
    data = encode_body(build_body(CLIENTS, DEMO, ["C1;;Pâtis"]))
    assert b", " not in data and b": " not in data
    assert "Pâtis".encode() in data
    assert json.loads(data) == build_body(CLIENTS, DEMO, ["C1;;Pâtis"])


# --- batching ---------------------------------------------------------------------

HOSTILE_LINES = [
    "",
    "plain",
    'quote " inside',
    "back\\slash",
    "tab\there",
    "ctrl\x01\x1f",
    "line\nbreak\r",
    "\b\f",
    "accents éèàç €",
    "emoji 😀 and 漢字",
    '"";;""',
    "\x7f del",
    "\u2028 separator",
]


def test_line_cost_matches_the_serialised_body_exactly():
    rng = random.Random(42)
    alphabet = ["a", " ", ";", '"', "\\", "\t", "\n", "\x00", "é", "€", "😀", "\u2028", "/"]
    lines = HOSTILE_LINES + ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30))) for _ in range(300)]
    overhead = body_overhead(CLIENTS, DEMO)
    for line in lines:
        body = encode_body(build_body(CLIENTS, DEMO, [line]))
        assert len(body) == overhead + line_cost(line), repr(line)
    body = encode_body(build_body(CLIENTS, DEMO, lines))
    assert len(body) == overhead + sum(map(line_cost, lines))


def test_body_overhead_counts_options_and_password():
    base = body_overhead(CLIENTS, DEMO)
    assert body_overhead(CLIENTS, DEMO, test_mode=True) > base
    assert body_overhead(CLIENTS, CompanySettings("DEMO.Gestimum", "DEMO", "abc")) == base + 3


def test_default_limits():
    assert DEFAULT_MAX_LINES == 10_000
    assert DEFAULT_MAX_BYTES == 4_000_000


def _check_batches(batches, items, max_lines, max_bytes, overhead, line_of=str):
    assert [x for b in batches for x in b] == items  # order kept, nothing lost or repeated
    for b in batches:
        assert 1 <= len(b) <= max_lines
        assert overhead + sum(line_cost(line_of(x)) for x in b) <= max_bytes


def test_batched_by_lines():
    items = [f"L{i}" for i in range(25)]
    batches = list(batched(items, line_of=str, max_lines=10, max_bytes=10**6))
    assert [len(b) for b in batches] == [10, 10, 5]
    _check_batches(batches, items, 10, 10**6, 0)


def test_batched_by_bytes_with_overhead():
    items = [(f"k{i}", "x" * 7) for i in range(10)]  # each line costs 10 bytes
    batches = list(batched(items, line_of=lambda t: t[1], max_lines=100, max_bytes=45, overhead=15))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    _check_batches(batches, items, 100, 45, 15, line_of=lambda t: t[1])


def test_batched_exact_fit():
    items = ["x" * 7] * 4  # 10 bytes each
    assert [len(b) for b in batched(items, line_of=str, max_lines=10, max_bytes=40)] == [4]
    assert [len(b) for b in batched(items, line_of=str, max_lines=10, max_bytes=39)] == [3, 1]


def test_batched_random_hostile():
    rng = random.Random(7)
    items = [(i, rng.choice(HOSTILE_LINES) * rng.randrange(1, 20)) for i in range(2000)]
    for max_lines, max_bytes, overhead in [(1, 10_000, 100), (7, 500, 50), (1000, 3_000, 0)]:
        batches = list(
            batched(items, line_of=lambda t: t[1], max_lines=max_lines, max_bytes=max_bytes, overhead=overhead)
        )
        _check_batches(batches, items, max_lines, max_bytes, overhead, line_of=lambda t: t[1])
        total = sum(line_cost(t[1]) for t in items)
        assert len(batches) >= minimum_requests(len(items), total, max_lines, max_bytes, overhead=overhead)


def test_batched_streams():
    consumed = []

    def source():
        for i in itertools.count():
            consumed.append(i)
            yield f"line {i}"

    gen = batched(source(), line_of=str, max_lines=5, max_bytes=10**6)
    first = next(gen)
    assert first == [f"line {i}" for i in range(5)]
    assert len(consumed) <= 6  # only what the first batch needed, plus the one that closed it


def test_batched_empty_input():
    assert list(batched([], line_of=str, max_lines=5, max_bytes=100)) == []


def test_batched_item_too_big_is_named():
    items = [("ok", "a"), ("HUGE-KEY", "x" * 100), ("ok2", "b")]
    gen = batched(items, line_of=lambda t: t[1], max_lines=10, max_bytes=60, overhead=10)
    with pytest.raises(ValueError, match=r"HUGE-KEY.*can never be sent"):
        list(gen)


def test_batched_invalid_limits():
    with pytest.raises(ValueError):
        list(batched(["a"], line_of=str, max_lines=0, max_bytes=100))
    with pytest.raises(ValueError):
        list(batched(["a"], line_of=str, max_lines=1, max_bytes=100, overhead=100))
    with pytest.raises(ValueError):
        list(batched(["a"], line_of=str, max_lines=1, max_bytes=100, overhead=-1))


def test_minimum_requests():
    assert minimum_requests(0, 0, 10, 100) == 0
    assert minimum_requests(1, 5, 10, 100) == 1
    assert minimum_requests(25, 50, 10, 1000) == 3  # lines decide
    assert minimum_requests(5, 350, 10, 100) == 4  # bytes decide
    assert minimum_requests(5, 350, 10, 100, overhead=50) == 7
    assert minimum_requests(100_000, 8_100_000, DEFAULT_MAX_LINES, DEFAULT_MAX_BYTES) == 10


# --- answers: the documented examples -------------------------------------------


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_parse_documented_answer(name):
    endpoint, _, response = EXAMPLES[name]
    sent = len(example_lines(name))
    result = parse_response(endpoint, json.loads(response), sent)
    imported, rejected, rejected_lines, documents = EXPECTED[name]
    assert isinstance(result, ImportResult)
    assert result.endpoint == endpoint.name
    assert result.lines_sent == sent
    assert (result.imported, result.rejected) == (imported, rejected)
    assert result.rejected_lines == rejected_lines
    assert result.documents == documents
    assert result.resultat == "succès"
    assert result.message == "terminé"
    assert result.journal == tuple(json.loads(response)["result"][0]["journal"])
    assert result.test_mode is False
    assert result.all_imported == (rejected == 0)


def test_success_with_every_line_rejected_is_a_result_not_an_error():
    endpoint, _, response = EXAMPLES["references_clients_articles"]
    result = parse_response(endpoint, json.loads(response), 2)
    assert result.resultat == "succès" and result.imported == 0 and not result.all_imported


def test_test_mode_is_carried():
    _, _, response = EXAMPLES["clients"]
    assert parse_response(CLIENTS, json.loads(response), 1, test_mode=True).test_mode is True


def test_reasons_are_stripped_of_timestamps_and_kept_in_order():
    journal = [
        TS + "La ligne 3 n'a pas pu être importée :",
        TS + "Champ obligatoire manquant : PCF_RS",
        TS + "La ligne 1 n'a pas pu être importée :",
        TS + "Code manquant : le compte 411X n'existe pas",
    ]
    result = parse_response(CLIENTS, answer("1", "2", journal), 3)
    assert result.rejected_lines == (
        RejectedLine(3, "Champ obligatoire manquant : PCF_RS"),
        RejectedLine(1, "Code manquant : le compte 411X n'existe pas"),
    )


def test_several_documents():
    journal = [TS + "La pièce ENT25-00001 a été créée", TS + "La pièce SOR25-00002 a été créée"]
    result = parse_response(DOCUMENTS_STOCK, answer("2", "0", journal), 2)
    assert result.documents == ("ENT25-00001", "SOR25-00002")


def test_reason_that_looks_like_a_document_is_not_a_document():
    journal = [TS + "La ligne 1 n'a pas pu être importée :", TS + "La pièce X a été créée"]
    result = parse_response(DOCUMENTS_STOCK, answer("0", "1", journal), 1)
    assert result.documents == ()
    assert result.rejected_lines == (RejectedLine(1, "La pièce X a été créée"),)


def test_integer_counts_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        result = parse_response(CLIENTS, answer(2, 0, []), 2)
    assert result.imported == 2
    assert "number" in caplog.text


def test_journal_absent_without_rejections_is_fine():
    result = parse_response(CLIENTS, answer("2", "0"), 2)
    assert result.journal == () and result.imported == 2


def test_message_absent_is_tolerated():
    payload = answer("1", "0", [])
    del payload["result"][0]["message"]
    assert parse_response(CLIENTS, payload, 1).message == ""


# --- answers: shapes we refuse ------------------------------------------------------

BAD_PAYLOADS = {
    "not an object": (["result"], "expected an object"),
    "no result": ({"resultat": "succès"}, "expected an object"),
    "result not a list": ({"result": {"resultat": "succès"}}, "exactly one"),
    "result empty": ({"result": []}, "exactly one.*0 elements"),
    "result twice": ({"result": [answer("1", "0")["result"][0]] * 2}, "exactly one.*2 elements"),
    "entry not an object": ({"result": ["succès"]}, "to be an object"),
    "resultat missing": ({"result": [{"message": "terminé", "statistiques": {}}]}, "'resultat' to be a string"),
    "message not text": (answer("1", "0", message=3), "'message' to be a string"),
    "journal not a list": (answer("1", "0", "x"), "list of strings"),
    "journal holds a number": (answer("1", "0", [1]), "list of strings"),
    "statistiques missing": ({"result": [{"resultat": "succès", "message": "", "journal": []}]}, "'statistiques'"),
    "statistiques key missing": (
        {"result": [{"resultat": "succès", "message": "", "statistiques": {"nombre_lignes_importées": "1"}}]},
        "lacks 'nombre_lignes_non_importées'",
    ),
    "count not digits": (answer("1.0", "0"), "string of digits"),
    "count negative": (answer("-1", "2"), "string of digits"),
    "count empty": (answer("", "1"), "string of digits"),
    "count null": (answer(None, "1"), "string of digits"),
    "count bool": (answer(True, "0"), "string of digits"),
    "count negative int": (answer(-1, 2), "string of digits"),
    "counts too low": (answer("0", "0"), r"0 imported \+ 0 rejected = 0, but 1 lines were sent"),
    "counts too high": (answer("1", "1", [TS + "La ligne 1 n'a pas pu être importée :", TS + "x"]), "2, but 1"),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_refused_shapes(case):
    payload, match = BAD_PAYLOADS[case]
    with pytest.raises(GestimumProtocolError, match=match) as info:
        parse_response(CLIENTS, payload, 1)
    assert "clients import (1 lines)" in str(info.value)


BAD_JOURNALS = {
    "rejections without journal": (None, "journal, which holds the reasons, is empty"),
    "rejections with empty journal": ([], "journal, which holds the reasons, is empty"),
    "fewer explanations": ([TS + "La ligne 1 n'a pas pu être importée :", TS + "Code manquant"], "explains 1"),
    "line zero": ([TS + "La ligne 0 n'a pas pu être importée :", TS + "r"] * 1, "line 0"),
    "line beyond those sent": ([TS + "La ligne 4 n'a pas pu être importée :", TS + "r"], "line 4"),
    "same line twice": ([TS + "La ligne 1 n'a pas pu être importée :", TS + "r"] * 2, "line 1 twice"),
    "no reason at the end": ([TS + "La ligne 2 n'a pas pu être importée :"], "not followed by a reason"),
    "empty reason": ([TS + "La ligne 2 n'a pas pu être importée :", TS + " "], "not followed by a reason"),
    "reason is another rejection": (
        [TS + "La ligne 1 n'a pas pu être importée :", TS + "La ligne 2 n'a pas pu être importée :", TS + "r"],
        "not followed by a reason",
    ),
    "entry without timestamp": (["La ligne 1 n'a pas pu être importée :", "Code manquant"], "does not start with"),
    "timestamp without text separator": (["13/09/2019 16:17:02"], "does not start with"),
    "american timestamp": (["2019-09-13 16:17:02 Ouverture"], "does not start with"),
    "impossible date": (["31/02/2019 16:17:02 Ouverture"], "invalid timestamp"),
    "journal count disagrees": ([TS + "Nombre de lignes importées : 3"], "says 3 lines imported"),
    "journal rejected count disagrees": ([TS + "Nombre de lignes non importées : 0"], "says 0 lines not imported"),
}


@pytest.mark.parametrize("case", list(BAD_JOURNALS))
def test_refused_journals(case):
    journal, match = BAD_JOURNALS[case]
    with pytest.raises(GestimumProtocolError, match=match):
        parse_response(CLIENTS, answer("1", "2", journal), 3)


def test_error_message_says_what_came():
    with pytest.raises(GestimumProtocolError) as info:
        parse_response(CLIENTS, answer("x1", "0"), 1)
    assert "'x1'" in str(info.value)
    assert "clients" in str(info.value)


# --- refusals -----------------------------------------------------------------------


def refusal(message: str, journal: list[str] | None = None) -> dict:
    return {"result": [{"resultat": "erreur", "message": message, "journal": journal or [], "statistiques": {}}]}


def test_bad_credentials_in_a_200():
    with pytest.raises(GestimumAuthenticationError) as info:
        parse_response(CLIENTS, refusal("Utilisateur ou mot de passe incorrect"), 1)
    assert info.value.setting == SETTING_CREDENTIALS
    assert "GESTIMUM_UTILISATEUR/GESTIMUM_MOT_PASSE" in str(info.value)
    assert "Utilisateur ou mot de passe incorrect" in str(info.value)


def test_unknown_company_file_in_a_200():
    message = "Le fichier société C:\\ProgramData\\Gestimum\\NOPE.Gestimum est introuvable"
    with pytest.raises(GestimumAuthenticationError) as info:
        parse_response(CLIENTS, refusal(message), 1)
    assert info.value.setting == SETTING_COMPANY_FILE
    assert "GESTIMUM_FICHIER" in str(info.value)
    assert "NOPE.Gestimum" in str(info.value)


def test_other_refusal_is_a_protocol_error_with_gestimums_words():
    journal = [TS + "Ouverture de la société X", TS + "Erreur interne 42"]
    with pytest.raises(GestimumProtocolError, match="Import impossible") as info:
        parse_response(DOCUMENTS_STOCK, refusal("Import impossible", journal), 1)
    assert "Erreur interne 42" in str(info.value)
    assert "'erreur'" in str(info.value)


def test_refusal_is_classified_before_counts():
    # An error envelope has empty statistiques: the refusal, not the counts, is the news.
    with pytest.raises(GestimumAuthenticationError):
        parse_response(CLIENTS, refusal("Utilisateur ou mot de passe incorrect"), 10)


def test_unknown_resultat_is_classified_too():
    payload = answer("1", "0", resultat="échec", message="Quelque chose")
    with pytest.raises(GestimumProtocolError, match="échec"):
        parse_response(CLIENTS, payload, 1)


@pytest.mark.parametrize(
    ("status", "message", "expected", "setting"),
    [
        (401, "Utilisateur ou mot de passe incorrect", GestimumAuthenticationError, SETTING_CREDENTIALS),
        (401, "Accès refusé", GestimumAuthenticationError, SETTING_CREDENTIALS),
        (403, "", GestimumAuthenticationError, SETTING_CREDENTIALS),
        (401, "Le fichier société X.Gestimum est introuvable", GestimumAuthenticationError, SETTING_COMPANY_FILE),
        (404, "Le fichier société X.Gestimum est introuvable", GestimumAuthenticationError, SETTING_COMPANY_FILE),
        (404, "La société X n'existe pas", GestimumAuthenticationError, SETTING_COMPANY_FILE),
        (404, "Société inconnue", GestimumAuthenticationError, SETTING_COMPANY_FILE),
        (404, "", GestimumAuthenticationError, SETTING_COMPANY_FILE),
        (404, "Utilisateur inconnu", GestimumAuthenticationError, SETTING_CREDENTIALS),
        (404, "Paramètre inconnu : fichier", GestimumProtocolError, None),
        (200, "Société inconnue", GestimumProtocolError, None),
        (404, "La tâche ImporterContacts nécessite la version 9 de Gestimum", GestimumProtocolError, None),
        (400, "Paramètre obligatoire manquant : utilisateur", GestimumProtocolError, None),
        (400, "Utilisateur ou mot de passe incorrect", GestimumProtocolError, None),
        (None, "Paramètre inconnu : utilisateur", GestimumProtocolError, None),
        (None, "Valeur incorrecte", GestimumProtocolError, None),
    ],
)
def test_classify_failure(status, message, expected, setting):
    error = classify_failure(CLIENTS, message, status=status)
    assert type(error) is expected
    if setting:
        assert error.setting == setting
        assert setting in str(error)
    if message:
        assert message in str(error)
    assert error.status == status
    assert error.endpoint == "clients"


def test_failure_from_payload():
    assert failure_from_payload(CLIENTS, {"error": "x"}, status=400) is None
    assert failure_from_payload(CLIENTS, "not json", status=400) is None
    error = failure_from_payload(CLIENTS, refusal("Paramètre inconnu : foo"), status=400)
    assert isinstance(error, GestimumProtocolError) and "Paramètre inconnu : foo" in str(error)


# --- errors ---------------------------------------------------------------------------


def test_redact():
    assert redact("a s3cr3t b s3cr3t", ["s3cr3t"]) == "a *** b ***"
    assert redact("abc", ["", None or ""]) == "abc"
    assert redact("password=longsecret", ["secret", "longsecret"]) == "password=***"
    assert redact("", ["x"]) == ""


def test_error_hierarchy_and_fields():
    for cls in (GestimumAuthenticationError, GestimumProtocolError, GestimumDeliveryUnknown):
        assert issubclass(cls, GestimumError)
    error = GestimumDeliveryUnknown("msg", endpoint="documents_stock", status=500, lines=3)
    assert (str(error), error.endpoint, error.status, error.lines) == ("msg", "documents_stock", 500, 3)
    assert GestimumAuthenticationError("m").setting == SETTING_CREDENTIALS


def test_catalog_phrases_used_by_the_parser_match_the_docs():
    # The parser builds its patterns from catalog constants: they must match the docs.
    _, _, response = EXAMPLES["references_clients_articles"]
    assert any(
        catalog.JOURNAL_REJECTED_LINE.format(n=1) in line for line in json.loads(response)["result"][0]["journal"]
    )
