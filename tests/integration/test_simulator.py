"""The Gestimum simulator, over real HTTP on a real socket (no mocks).

The five documented example requests (/work/shared/gestimum-api/*.txt) are copied
below verbatim; their documented answers are the reference for the answer shape and
the journal wording.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from gestimum_examples import request

from gestimum_pipeline.gestimum.catalog import (
    CLIENTS,
    COMPTES,
    CONTACTS,
    DOCUMENTS_STOCK,
    ENDPOINTS,
    REFERENCES_CLIENTS_ARTICLES,
    Endpoint,
)
from gestimum_pipeline.simulator.config import DEFAULT_CATALOG_FILE, load_catalog
from gestimum_pipeline.simulator.server import (
    Document,
    Fault,
    GestimumSimulator,
    RequestRecord,
    SimulatorConfig,
    add_cli_arguments,
    config_from_args,
)

TIMEOUT = 10
JOURNAL_LINE = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2} ")
YY = f"{date.today().year % 100:02d}"
PATH = "C:\\ProgramData\\Gestimum\\DEMO.Gestimum"

# --- the documented examples, verbatim --------------------------------------------------

EXAMPLE_COMPTES = request("comptes")
EXAMPLE_CLIENTS = request("clients")
EXAMPLE_CONTACTS = request("contacts")
EXAMPLE_DOCUMENTS_STOCK = request("documents_stock")
EXAMPLE_REFERENCES = request("references_clients_articles")
# The documented societe block and common parameters, taken from the examples themselves.
DEMO_SOCIETE = dict(EXAMPLE_COMPTES["importer_comptes"]["societe"])
DOC_PARAMETERS = {
    k: v
    for k, v in EXAMPLE_COMPTES["importer_comptes"]["parametres"].items()
    if k not in ("fichier_comptes", *COMPTES.options)
}


def _documented_journal(task: str, middle: list[str]) -> list[str]:
    """A documented journal without its timestamps."""
    return [
        f"Ouverture de la société {PATH}",
        f"Société {PATH} ouverte",
        f"Lancement de la tâche {task}",
        *middle,
        f"Tâche {task} terminée",
        f"Fermeture de la société {PATH}",
    ]


def _success(imported: int, rejected: int = 0) -> list[str]:
    head = ["L'import a été effectué avec succès."] if rejected == 0 else []
    return [*head, f"Nombre de lignes importées : {imported}", f"Nombre de lignes non importées : {rejected}"]


# Journals as documented, timestamps removed. Two differences are ours, by design:
# document numbers start at 00001 in a fresh simulator (the doc shows ENT17-00017),
# and our reason for an unknown customer names it after the documented "Code manquant".
DOCUMENTED = {
    "comptes": (EXAMPLE_COMPTES, _documented_journal("ImporterComptes", _success(2)), ("2", "0")),
    "clients": (EXAMPLE_CLIENTS, _documented_journal("ImporterClients", _success(1)), ("1", "0")),
    "contacts": (EXAMPLE_CONTACTS, _documented_journal("ImporterContacts", _success(3)), ("3", "0")),
    "documents_stock": (
        EXAMPLE_DOCUMENTS_STOCK,
        _documented_journal(
            "ImporterDocumentsStock", [*_success(1), f"La pièce ENT{YY}-00001 a été créée"]
        ),  # documented: ENT17-00017
        ("1", "0"),
    ),
    "references_clients_articles": (
        EXAMPLE_REFERENCES,
        _documented_journal(
            "ImporterReferencesClientsArticles",
            [
                *_success(0, 2),
                "La ligne 1 n'a pas pu être importée :",
                "Code manquant : le client C1 n'existe pas",  # documented: "Code manquant"
                "La ligne 2 n'a pas pu être importée :",
                "Code manquant : le client C2 n'existe pas",
            ],
        ),
        ("0", "2"),
    ),
}

# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[GestimumSimulator]:
    with GestimumSimulator() as sim:
        yield sim


def make_body(
    endpoint: Endpoint,
    lines: list[str],
    *,
    societe: dict[str, Any] | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    """A body like the documented ones; `lines` include the header when entete=Oui."""
    params: dict[str, Any] = {**DOC_PARAMETERS, **parameters, endpoint.lines_key: lines}
    return {endpoint.envelope_key: {"societe": {**DEMO_SOCIETE, **(societe or {})}, "parametres": params}}


def post(
    sim: GestimumSimulator, endpoint: Endpoint, body: Any, *, timeout: float = TIMEOUT, raw: bytes | None = None
) -> requests.Response:
    data = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    return requests.post(
        sim.url + endpoint.path, data=data, headers={"Content-Type": "application/json"}, timeout=timeout
    )


def entry_of(response: requests.Response) -> dict[str, Any]:
    payload = response.json()
    assert list(payload) == ["result"]
    assert isinstance(payload["result"], list) and len(payload["result"]) == 1
    entry = payload["result"][0]
    assert list(entry) == ["resultat", "message", "journal", "statistiques"]
    return entry


def texts(journal: list[str]) -> list[str]:
    for line in journal:
        assert JOURNAL_LINE.match(line), line
        datetime.strptime(line[:19], "%d/%m/%Y %H:%M:%S")
    return [line[20:] for line in journal]


def send_lines(
    sim: GestimumSimulator, endpoint: Endpoint, lines: list[str], *, header: list[str] | None = None, **parameters: Any
) -> dict[str, Any]:
    """Posts data lines under `header` (default: every field in catalog order); returns result[0]."""
    head = ";".join(header if header is not None else endpoint.field_codes)
    response = post(sim, endpoint, make_body(endpoint, [head, *lines], **parameters))
    assert response.status_code == 200, response.text
    return entry_of(response)


def rejections(entry: dict[str, Any]) -> dict[int, str]:
    """{line number: reason} read from the journal."""
    found: dict[int, str] = {}
    lines = texts(entry["journal"])
    for i, text in enumerate(lines):
        m = re.match(r"^La ligne (\d+) n'a pas pu être importée :$", text)
        if m:
            found[int(m.group(1))] = lines[i + 1]
    return found


def stats(entry: dict[str, Any]) -> tuple[int, int]:
    s = entry["statistiques"]
    return int(s["nombre_lignes_importées"]), int(s["nombre_lignes_non_importées"])


def seed_customers(sim: GestimumSimulator, *codes: str) -> None:
    entry = send_lines(sim, CLIENTS, [f"{code};;Raison sociale {code}" for code in codes])
    assert stats(entry) == (len(codes), 0)


# --- documented examples ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_documented_example_gets_the_documented_answer(simulator: GestimumSimulator, name: str) -> None:
    body, expected_journal, (imported, rejected) = DOCUMENTED[name]
    endpoint = ENDPOINTS[name]
    # What the DEMO company holds and ours does not (the references example is sent as is).
    if name == "clients":
        assert stats(send_lines(simulator, COMPTES, ["411C42;SPORT25;C;C42"])) == (1, 0)
    if name == "contacts":
        seed_customers(simulator, "CLIENT1", "CLIENT2")

    response = post(simulator, endpoint, copy.deepcopy(body))

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    entry = entry_of(response)
    assert entry["resultat"] == "succès"
    assert entry["message"] == "terminé"
    assert all(isinstance(line, str) for line in entry["journal"])
    assert texts(entry["journal"]) == expected_journal
    assert entry["statistiques"] == {"nombre_lignes_importées": imported, "nombre_lignes_non_importées": rejected}


def test_documented_examples_store_what_they_say(simulator: GestimumSimulator) -> None:
    assert post(simulator, COMPTES, EXAMPLE_COMPTES).status_code == 200
    assert simulator.state.accounts == {
        "411JOHNDOE": {
            "CPT_NUMERO": "411JOHNDOE",
            "CPT_LIB": "John Doe",
            "CPT_TYPE": "C",
            "PCF_CODE": "JOHNDOE",
            "CPT_TVA_NC": "",
        },
        "70700202": {
            "CPT_NUMERO": "70700202",
            "CPT_LIB": "Ventes de produits finis",
            "CPT_TYPE": "G",
            "PCF_CODE": "",
            "CPT_TVA_NC": "445660",
        },
    }
    assert post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK).status_code == 200
    assert simulator.state.documents == [
        Document(
            f"ENT{YY}-00001", "E", "001", [{"DOC_STYPE": "E", "DEP_CODE": "001", "ART_CODE": "ELS", "MVT_QTE": "20"}]
        )
    ]
    # The references example: both customers are unknown here too, nothing is stored.
    assert post(simulator, REFERENCES_CLIENTS_ARTICLES, EXAMPLE_REFERENCES).status_code == 200
    assert simulator.state.references == {}
    seed_customers(simulator, "C1", "C2")
    entry = entry_of(post(simulator, REFERENCES_CLIENTS_ARTICLES, EXAMPLE_REFERENCES))
    assert stats(entry) == (2, 0)
    assert simulator.state.references[("A10", "C2")] == {
        "ART_CODE": "A10",
        "PCF_CODE": "C2",
        "ART_PCLIENT": "5",
        "ART_REFCLI": "A10002",
    }


def test_clients_example_without_its_account_is_rejected_naming_it(simulator: GestimumSimulator) -> None:
    entry = entry_of(post(simulator, CLIENTS, EXAMPLE_CLIENTS))
    assert entry["resultat"] == "succès"  # as documented: even when every line is rejected
    assert stats(entry) == (0, 1)
    assert rejections(entry) == {1: "Code manquant : le compte 411C42 n'existe pas"}
    assert "L'import a été effectué avec succès." not in texts(entry["journal"])
    assert simulator.state.customers == {}


def test_request_log_records_each_import(simulator: GestimumSimulator) -> None:
    post(simulator, COMPTES, EXAMPLE_COMPTES)
    post(simulator, REFERENCES_CLIENTS_ARTICLES, EXAMPLE_REFERENCES)
    assert simulator.state.requests == [
        RequestRecord("comptes", 2, 200, None, imported=2, rejected=0),
        RequestRecord("references_clients_articles", 2, 200, None, imported=0, rejected=2),
    ]
    # Each request's span, on the wall clock: the second one came after the first was answered.
    first, second = simulator.state.requests
    assert 0 < first.received_at <= first.recorded_at <= second.received_at <= second.recorded_at


# --- business rules --------------------------------------------------------------------


def test_master_data_is_upserted_by_code(simulator: GestimumSimulator) -> None:
    send_lines(simulator, COMPTES, ["411C1;Client un;C;C1", "411C2;Client deux;C;C2"])
    entry = send_lines(simulator, CLIENTS, ["C1;411C1;Ancien nom;1 rue A;;75001;PARIS"])
    assert stats(entry) == (1, 0)
    entry = send_lines(simulator, CLIENTS, ["C1;411C2;Nouveau nom;2 rue B;;69001;LYON"])
    assert stats(entry) == (1, 0)
    assert simulator.state.customers == {
        "C1": {
            "PCF_CODE": "C1",
            "CPT_NUMERO": "411C2",
            "PCF_RS": "Nouveau nom",
            "PCF_RUE": "2 rue B",
            "PCF_COMP": "",
            "PCF_CP": "69001",
            "PCF_VILLE": "LYON",
        }
    }
    # Fields absent from the header keep their value; a short line clears its trailing fields.
    send_lines(simulator, CLIENTS, ["C1;Nom changé;3 rue C"], header=["PCF_CODE", "PCF_RS", "PCF_RUE"])
    send_lines(simulator, CLIENTS, ["C1;Nom final"], header=["PCF_CODE", "PCF_RS", "PCF_RUE"])
    customer = simulator.state.customers["C1"]
    assert (customer["PCF_RS"], customer["PCF_RUE"], customer["PCF_VILLE"]) == ("Nom final", "", "LYON")
    # Same for contacts and references: one record per code.
    send_lines(simulator, CONTACTS, ["K1;Premier;C1", "K1;Second;C1"])
    assert simulator.state.contacts == {"K1": {"CCT_CODE": "K1", "CCT_NOM": "Second", "CCT_ORIGIN": "C1"}}
    send_lines(simulator, REFERENCES_CLIENTS_ARTICLES, ["A10;C1;5;R1", "A10;C1;6,5;R2"])
    assert list(simulator.state.references.values()) == [
        {"ART_CODE": "A10", "PCF_CODE": "C1", "ART_PCLIENT": "6,5", "ART_REFCLI": "R2"}
    ]


@pytest.mark.parametrize("endpoint", [COMPTES, CLIENTS], ids=lambda e: e.name)
def test_tester_mode_validates_and_stores_nothing(simulator: GestimumSimulator, endpoint: Endpoint) -> None:
    send_lines(simulator, COMPTES, ["411OK;Compte;C;OK"])
    before = simulator.state.snapshot()
    lines = {
        "comptes": ["411X;Compte X;C;X", "411Y;Compte Y;Z;Y"],
        "clients": ["NEW;411OK;Nouveau", "BAD;411NONE;Mauvais"],
    }[endpoint.name]
    tested = send_lines(simulator, endpoint, lines, tester="Oui")
    after = simulator.state.snapshot()
    assert stats(tested) == (1, 1)
    assert after["accounts"] == before["accounts"] and after["customers"] == before["customers"]
    assert after["requests"][-1]["test_mode"] is True
    # The same lines for real: same statistics, and this time they are stored.
    real = send_lines(simulator, endpoint, lines, tester="Non")
    assert stats(real) == (1, 1)
    assert texts(real["journal"]) == texts(tested["journal"])
    assert simulator.state.snapshot() != after


def test_tester_is_not_a_contacts_or_stock_option(simulator: GestimumSimulator) -> None:
    seed_customers(simulator, "C1")
    for endpoint, line in ((CONTACTS, "K1;Nom;C1"), (DOCUMENTS_STOCK, "E;001;ELS;1")):
        body = make_body(endpoint, [";".join(endpoint.field_codes), line], tester="Oui")
        response = post(simulator, endpoint, body)
        assert response.status_code == 400
        assert entry_of(response)["message"] == "Paramètre inconnu : tester"
    assert simulator.state.contacts == {} and simulator.state.documents == []


def test_comptes_options_are_accepted(simulator: GestimumSimulator) -> None:
    entry = send_lines(
        simulator, COMPTES, ["411A;A;C;A"], calculer_code_tiers="Oui", calculer_numero_compte="Non", tester="Non"
    )
    assert stats(entry) == (1, 0)


def test_accounts_rules(simulator: GestimumSimulator) -> None:
    entry = send_lines(simulator, COMPTES, ["411A;A;X;A", "411B;B;C", "70700;Ventes;G", ";Sans numéro;G", "411C;;G"])
    assert stats(entry) == (1, 4)
    assert rejections(entry) == {
        1: "Valeur incorrecte pour le champ CPT_TYPE : X (attendu : C ou G)",
        2: "Code manquant : un compte de type C doit indiquer PCF_CODE",
        4: "Code manquant",
        5: "Champ obligatoire manquant : CPT_LIB",
    }


def test_contact_with_unknown_customer_is_rejected_with_reason(simulator: GestimumSimulator) -> None:
    seed_customers(simulator, "CLIENT1")
    entry = send_lines(simulator, CONTACTS, ["K1;Contact un;CLIENT1", "K2;Contact deux;GHOST", "K3;Contact trois;"])
    assert stats(entry) == (1, 2)
    assert rejections(entry) == {2: "Code manquant : le client GHOST n'existe pas", 3: "Code manquant"}
    assert list(simulator.state.contacts) == ["K1"]


def test_references_need_known_item_and_customer(simulator: GestimumSimulator) -> None:
    seed_customers(simulator, "C1")
    entry = send_lines(
        simulator, REFERENCES_CLIENTS_ARTICLES, ["NOPE;C1;5;R", "A10;GHOST;5;R", "A10;C1;abc;R", "A10;C1;;R"]
    )
    assert stats(entry) == (1, 3)
    assert rejections(entry) == {
        1: "Code manquant : l'article NOPE n'existe pas",
        2: "Code manquant : le client GHOST n'existe pas",
        3: "Nombre incorrect pour le champ ART_PCLIENT : abc",
    }


def test_stock_movement_rules(simulator: GestimumSimulator) -> None:
    entry = send_lines(
        simulator,
        DOCUMENTS_STOCK,
        [
            "E;001;ELS;abc",
            "E;001;ELS;1.5",  # wrong decimal separator for this company
            "E;001;ELS;1,23456",
            "E;001;ELS;0",
            "E;001;ELS;-2",
            "E;003;ELS;1",
            "E;001;NOPE;1",
            "X;001;ELS;1",
            ";001;ELS;1",
            "E;001;ELS;2,5",
            "S;002;A10;1,25000",  # trailing zeros do not count as decimals
        ],
    )
    assert stats(entry) == (2, 9)
    assert rejections(entry) == {
        1: "Nombre incorrect pour le champ MVT_QTE : abc",
        2: "Nombre incorrect pour le champ MVT_QTE : 1.5",
        3: "Trop de décimales pour le champ MVT_QTE : 1,23456 (maximum 4)",
        4: "Le champ MVT_QTE doit être strictement positif : 0",
        5: "Le champ MVT_QTE doit être strictement positif : -2",
        6: "Code manquant : le dépôt 003 n'existe pas",
        7: "Code manquant : l'article NOPE n'existe pas",
        8: "Valeur incorrecte pour le champ DOC_STYPE : X (attendu : E ou S)",
        9: "Champ obligatoire manquant : DOC_STYPE",
    }
    assert [d.number for d in simulator.state.documents] == [f"ENT{YY}-00001", f"SOR{YY}-00001"]


def test_decimal_separator_is_configurable() -> None:
    with GestimumSimulator(SimulatorConfig(decimal_separator=".")) as sim:
        entry = send_lines(sim, DOCUMENTS_STOCK, ["E;001;ELS;1.5", "E;001;ELS;1,5"])
        assert stats(entry) == (1, 1)
        assert rejections(entry) == {2: "Nombre incorrect pour le champ MVT_QTE : 1,5"}


def test_items_and_warehouses_are_configurable() -> None:
    with GestimumSimulator(SimulatorConfig(items=("X1",), warehouses=("W",))) as sim:
        entry = send_lines(sim, DOCUMENTS_STOCK, ["E;W;X1;1", "E;001;X1;1", "E;W;ELS;1"])
        assert stats(entry) == (1, 2)


def test_documents_group_consecutive_runs_and_number_per_prefix(simulator: GestimumSimulator) -> None:
    entry = send_lines(
        simulator,
        DOCUMENTS_STOCK,
        [
            "E;001;ELS;1",
            "E;001;A10;2",
            "E;001;NOPE;3",  # rejected: does not split the run
            "E;001;A11;4",
            "S;001;ELS;1",
            "E;002;ELS;5",
            "E;002;A10;6",
            "E;001;ELS;7",
        ],
    )
    assert stats(entry) == (7, 1)
    created = [f"ENT{YY}-00001", f"SOR{YY}-00001", f"ENT{YY}-00002", f"ENT{YY}-00003"]
    journal = texts(entry["journal"])
    assert journal[-6:-2] == [f"La pièce {n} a été créée" for n in created]
    assert journal.index("La ligne 3 n'a pas pu être importée :") < journal.index(f"La pièce {created[0]} a été créée")
    documents = simulator.state.documents
    assert [(d.number, d.stype, d.warehouse, [line["ART_CODE"] for line in d.lines]) for d in documents] == [
        (created[0], "E", "001", ["ELS", "A10", "A11"]),
        (created[1], "S", "001", ["ELS"]),
        (created[2], "E", "002", ["ELS", "A10"]),
        (created[3], "E", "001", ["ELS"]),
    ]
    assert simulator.state.requests[-1].documents == created


def test_stock_import_is_not_idempotent_and_rejected_only_creates_nothing(simulator: GestimumSimulator) -> None:
    first = post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK)
    again = post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK)
    assert f"La pièce ENT{YY}-00001 a été créée" in texts(entry_of(first)["journal"])
    assert f"La pièce ENT{YY}-00002 a été créée" in texts(entry_of(again)["journal"])
    entry = send_lines(simulator, DOCUMENTS_STOCK, ["E;001;NOPE;1"])
    assert stats(entry) == (0, 1)
    assert not any(t.startswith("La pièce") for t in texts(entry["journal"]))
    assert len(simulator.state.documents) == 2


def test_concurrent_imports_are_serialised(simulator: GestimumSimulator) -> None:
    results: list[int] = []

    def one() -> None:
        results.append(post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK).status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert sorted(d.number for d in simulator.state.documents) == [f"ENT{YY}-{n:05d}" for n in range(1, 9)]


# --- lines -----------------------------------------------------------------------------


def test_line_level_errors_reject_only_their_line(simulator: GestimumSimulator) -> None:
    entry = send_lines(
        simulator,
        COMPTES,
        [
            '411A;"Dupont; Fils";C;A',
            "411B;B;C;B;X;extra",
            '411C;"Oops;C;C',
            "411D;Ωmega;C;D",
            "411E;" + "x" * 61 + ";C;E",
            "411F;F\x01;C;F",
            "70700;Ventes;G",
            '411K;"Le ""Grand"" K";C;K',
            "411L;L;C;" + "€" * 20,  # in cp1252, and exactly at the limit
        ],
        identificateur_texte='"',
    )
    assert stats(entry) == (4, 5)
    assert rejections(entry) == {
        2: "Trop de champs : 6 pour 5 attendus",
        3: "Ligne mal formée (séparateur ou identificateur de texte incorrect)",
        4: "Caractère Ω non représentable (cp1252) dans le champ CPT_LIB",
        5: "Valeur trop longue pour le champ CPT_LIB : 61 caractères (maximum 60)",
        6: "Caractère de contrôle interdit dans le champ CPT_LIB",
    }
    accounts = simulator.state.accounts
    assert accounts["411A"]["CPT_LIB"] == "Dupont; Fils"
    assert accounts["411K"]["CPT_LIB"] == 'Le "Grand" K'
    assert accounts["70700"] == {
        "CPT_NUMERO": "70700",
        "CPT_LIB": "Ventes",
        "CPT_TYPE": "G",
        "PCF_CODE": "",
        "CPT_TVA_NC": "",
    }


def test_without_qualifier_quotes_are_plain_text(simulator: GestimumSimulator) -> None:
    entry = send_lines(simulator, COMPTES, ['411A;"Dupont";C;A'])
    assert stats(entry) == (1, 0)
    assert simulator.state.accounts["411A"]["CPT_LIB"] == '"Dupont"'


def test_line_break_inside_a_line_is_rejected(simulator: GestimumSimulator) -> None:
    entry = send_lines(simulator, COMPTES, ["411A;A\r\nB;C;A", "411B;B;C;B"])
    assert stats(entry) == (1, 1)
    assert rejections(entry) == {1: "Saut de ligne interdit à l'intérieur d'une ligne"}


def test_header_in_any_order_and_other_separator(simulator: GestimumSimulator) -> None:
    body = make_body(COMPTES, ["CPT_TYPE|CPT_LIB|CPT_NUMERO|PCF_CODE", "C|Client|411X|X"], separateur_champs="|")
    entry = entry_of(post(simulator, COMPTES, body))
    assert stats(entry) == (1, 0)
    assert simulator.state.accounts["411X"]["CPT_LIB"] == "Client"


def test_without_header_fields_are_in_catalog_order(simulator: GestimumSimulator) -> None:
    body = make_body(COMPTES, ["411A;Client A;C;A", "70700;Ventes;G;;445660"], entete="Non")
    entry = entry_of(post(simulator, COMPTES, body))
    assert stats(entry) == (2, 0)
    assert simulator.state.accounts["70700"]["CPT_TVA_NC"] == "445660"
    assert simulator.state.requests[-1].lines == 2


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["CPT_NUMERO;CPT_LIB;CPT_KIND", "411A;A;C"], "Champ inconnu dans l'en-tête : CPT_KIND"),
        (["CPT_NUMERO;CPT_LIB;CPT_NUMERO", "411A;A;411A"], "Champ en double dans l'en-tête : CPT_NUMERO"),
        (['CPT_NUMERO;"CPT_LIB', "411A;A"], "En-tête mal formé"),
        ([], "En-tête manquant"),
    ],
    ids=["unknown-field", "duplicate-field", "qualifier", "missing"],
)
def test_header_errors_refuse_the_request(simulator: GestimumSimulator, lines: list[str], message: str) -> None:
    response = post(simulator, COMPTES, make_body(COMPTES, lines, identificateur_texte='"'))
    assert response.status_code == 400
    entry = entry_of(response)
    assert (entry["resultat"], entry["message"], entry["statistiques"]) == ("erreur", message, {})
    assert simulator.state.accounts == {}


def test_journal_and_statistics_can_be_omitted(simulator: GestimumSimulator) -> None:
    entry = send_lines(simulator, COMPTES, ["411A;A;C;A"], journal="Non", statistiques="Non")
    assert entry["resultat"] == "succès"
    assert entry["journal"] == []
    assert entry["statistiques"] == {}
    assert "411A" in simulator.state.accounts


# --- envelope errors -------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: list[str], value: Any) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[str]) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _rename_root(body: dict[str, Any]) -> None:
    body["importer_clients"] = body.pop("importer_comptes")


def _extra_root(body: dict[str, Any]) -> None:
    body["autre"] = {}


ROOT = "importer_comptes"
ENVELOPE_ERRORS: list[tuple[str, Mutation | bytes, int, str]] = [
    ("wrong-root-key", _rename_root, 400, "Le corps de la requête doit contenir la seule clé importer_comptes"),
    ("extra-root-key", _extra_root, 400, "Le corps de la requête doit contenir la seule clé importer_comptes"),
    ("unknown-parameter", _set([ROOT, "parametres", "tester_x"], "Oui"), 400, "Paramètre inconnu : tester_x"),
    (
        "bad-oui-non",
        _set([ROOT, "parametres", "journal"], "oui"),
        400,
        "Valeur incorrecte pour le paramètre journal (attendu : Oui ou Non)",
    ),
    (
        "bad-option",
        _set([ROOT, "parametres", "tester"], "Yes"),
        400,
        "Valeur incorrecte pour le paramètre tester (attendu : Oui ou Non)",
    ),
    (
        "bad-exclusif",
        _set([ROOT, "societe", "exclusif"], True),
        400,
        "Valeur incorrecte pour le paramètre exclusif (attendu : une chaîne de caractères)",
    ),
    (
        "missing-societe-key",
        _delete([ROOT, "societe", "deconnecter"]),
        400,
        "Paramètre obligatoire manquant : deconnecter",
    ),
    ("extra-societe-key", _set([ROOT, "societe", "port"], "1"), 400, "Paramètre inconnu : port"),
    ("missing-parametres", _delete([ROOT, "parametres"]), 400, "Paramètre obligatoire manquant : parametres"),
    (
        "missing-lines",
        _delete([ROOT, "parametres", "fichier_comptes"]),
        400,
        "Paramètre obligatoire manquant : fichier_comptes",
    ),
    (
        "lines-not-strings",
        _set([ROOT, "parametres", "fichier_comptes"], ["CPT_NUMERO", 411]),
        400,
        "Valeur incorrecte pour le paramètre fichier_comptes (attendu : un tableau de chaînes de caractères)",
    ),
    (
        "two-char-separator",
        _set([ROOT, "parametres", "separateur_champs"], ";;"),
        400,
        "Valeur incorrecte pour le paramètre separateur_champs (attendu : un seul caractère)",
    ),
    (
        "two-char-qualifier",
        _set([ROOT, "parametres", "identificateur_texte"], "''"),
        400,
        "Valeur incorrecte pour le paramètre identificateur_texte "
        "(attendu : vide ou un seul caractère, différent du séparateur)",
    ),
    (
        "qualifier-is-separator",
        _set([ROOT, "parametres", "identificateur_texte"], ";"),
        400,
        "Valeur incorrecte pour le paramètre identificateur_texte "
        "(attendu : vide ou un seul caractère, différent du séparateur)",
    ),
    (
        "noms-champs",
        _set([ROOT, "parametres", "noms_champs"], "CPT_NUMERO"),
        400,
        "Valeur incorrecte pour le paramètre noms_champs (attendu : vide)",
    ),
    ("invalid-json", b'{"importer_comptes": {', 400, "Le corps de la requête n'est pas un objet JSON valide"),
    ("not-utf8", b'{"importer_comptes": "\xe9"}', 400, "Le corps de la requête n'est pas un objet JSON valide"),
    ("json-array", b"[]", 400, "Le corps de la requête n'est pas un objet JSON valide"),
    (
        "duplicate-key",
        b'{"importer_comptes": {}, "importer_comptes": {}}',
        400,
        "Paramètre en double : importer_comptes",
    ),
    ("wrong-password", _set([ROOT, "societe", "mot_passe"], "guess"), 401, "Utilisateur ou mot de passe incorrect"),
    ("wrong-user", _set([ROOT, "societe", "utilisateur"], "ADMIN"), 401, "Utilisateur ou mot de passe incorrect"),
    (
        "unknown-company-file",
        _set([ROOT, "societe", "fichier"], "AUTRE.Gestimum"),
        404,
        "Le fichier société C:\\ProgramData\\Gestimum\\AUTRE.Gestimum est introuvable",
    ),
]


@pytest.mark.parametrize(
    ("change", "status", "message"), [c[1:] for c in ENVELOPE_ERRORS], ids=[c[0] for c in ENVELOPE_ERRORS]
)
def test_envelope_errors_answer_an_error_and_store_nothing(
    simulator: GestimumSimulator, change: Mutation | bytes, status: int, message: str
) -> None:
    if isinstance(change, bytes):
        response = post(simulator, COMPTES, None, raw=change)
    else:
        body = copy.deepcopy(EXAMPLE_COMPTES)
        change(body)
        response = post(simulator, COMPTES, body)
    assert response.status_code == status
    entry = entry_of(response)
    assert entry["resultat"] == "erreur"
    assert entry["message"] == message
    assert entry["statistiques"] == {}
    journal = texts(entry["journal"])
    assert journal[-1] == message
    if status == 401:  # the company was found and opened before the login failed
        assert journal == [f"Ouverture de la société {PATH}", message]
    assert simulator.state.accounts == {}
    assert simulator.state.requests[-1].status == status


def test_refused_stock_request_creates_no_document_and_consumes_no_number(simulator: GestimumSimulator) -> None:
    body = copy.deepcopy(EXAMPLE_DOCUMENTS_STOCK)
    body["importer_documents_stock"]["societe"]["mot_passe"] = "guess"
    assert post(simulator, DOCUMENTS_STOCK, body).status_code == 401
    assert simulator.state.documents == []
    entry = entry_of(post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK))
    assert f"La pièce ENT{YY}-00001 a été créée" in texts(entry["journal"])


def test_company_file_name_is_case_insensitive_and_password_checked() -> None:
    with GestimumSimulator(SimulatorConfig(password="s3cret")) as sim:
        body = copy.deepcopy(EXAMPLE_COMPTES)
        body[ROOT]["societe"]["fichier"] = "demo.gestimum"
        assert post(sim, COMPTES, body).status_code == 401  # the documented empty password is wrong here
        body[ROOT]["societe"]["mot_passe"] = "s3cret"
        entry = entry_of(post(sim, COMPTES, body))
        assert texts(entry["journal"])[0] == "Ouverture de la société C:\\ProgramData\\Gestimum\\demo.gestimum"
        assert stats(entry) == (2, 0)


def test_endpoint_newer_than_the_server_version_is_refused() -> None:
    with GestimumSimulator(SimulatorConfig(version=8)) as sim:
        response = post(sim, CONTACTS, EXAMPLE_CONTACTS)
        assert response.status_code == 400
        entry = entry_of(response)
        assert entry["resultat"] == "erreur"
        assert (
            entry["message"] == "La tâche ImporterContacts nécessite la version 9 de Gestimum (version installée : 8)"
        )
        assert post(sim, COMPTES, EXAMPLE_COMPTES).status_code == 200  # version 8 endpoint


def test_unknown_paths_and_methods_are_404(simulator: GestimumSimulator) -> None:
    base = simulator.url
    assert requests.post(base + "api/rest/Articles/%22Importer%22", json={}, timeout=TIMEOUT).status_code == 404
    assert requests.post(base + "api/rest/Comptes/Importer", json=EXAMPLE_COMPTES, timeout=TIMEOUT).status_code == 404
    assert requests.get(base + COMPTES.path, timeout=TIMEOUT).status_code == 404
    assert requests.post(base + "_simulator/nothing", timeout=TIMEOUT).status_code == 404
    assert simulator.state.requests == [] and simulator.state.accounts == {}


def test_decoded_importer_path_is_accepted(simulator: GestimumSimulator) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", simulator.port, timeout=TIMEOUT)
    try:
        data = json.dumps(EXAMPLE_COMPTES).encode()
        connection.request(
            "POST", '/api/rest/Comptes/"Importer"', body=data, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["result"][0]["statistiques"]["nombre_lignes_importées"] == "2"
    finally:
        connection.close()


def test_chunked_body_and_keep_alive(simulator: GestimumSimulator) -> None:
    data = json.dumps(EXAMPLE_COMPTES).encode()
    with requests.Session() as session:
        for _ in range(3):
            response = session.post(
                simulator.url + COMPTES.path, data=iter([data[:10], data[10:]]), timeout=TIMEOUT
            )  # a generator body is sent chunked
            assert response.status_code == 200
    assert len(simulator.state.requests) == 3


def test_company_open_delay_applies_to_every_request() -> None:
    with GestimumSimulator(SimulatorConfig(company_open_delay=0.2)) as sim:
        started = time.monotonic()
        assert post(sim, COMPTES, EXAMPLE_COMPTES).status_code == 200
        assert time.monotonic() - started >= 0.2


# --- faults ----------------------------------------------------------------------------


def test_http_500_imports_nothing_and_disappears_after_count(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("http_500", count=2, endpoint="comptes"))
    assert post(simulator, CLIENTS, EXAMPLE_CLIENTS).status_code == 200  # other endpoint: unaffected
    assert post(simulator, COMPTES, EXAMPLE_COMPTES).status_code == 500
    assert simulator.faults == [Fault("http_500", count=1, endpoint="comptes")]
    assert post(simulator, COMPTES, EXAMPLE_COMPTES).status_code == 500
    assert simulator.state.accounts == {}
    assert simulator.faults == []
    assert post(simulator, COMPTES, EXAMPLE_COMPTES).status_code == 200
    assert [(r.endpoint, r.lines, r.status, r.fault) for r in simulator.state.requests] == [
        ("clients", 1, 200, None),
        ("comptes", 2, 500, "http_500"),
        ("comptes", 2, 500, "http_500"),
        ("comptes", 2, 200, None),
    ]


def test_http_503_with_and_without_retry_after(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("http_503", retry_after=1.5))
    simulator.add_fault(Fault("http_503", retry_after=2))
    simulator.add_fault(Fault("http_503"))
    headers = []
    for _ in range(3):
        response = post(simulator, COMPTES, EXAMPLE_COMPTES)
        assert response.status_code == 503
        headers.append(response.headers.get("Retry-After"))
    assert headers == ["1.5", "2", None]
    assert simulator.state.accounts == {}


@pytest.mark.parametrize("process", [True, False])
def test_close_after_read(simulator: GestimumSimulator, process: bool) -> None:
    simulator.add_fault(Fault("close_after_read", process=process))
    with pytest.raises(requests.ConnectionError):
        post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK)
    # Gestimum did the work (or not); the client cannot tell which.
    assert len(simulator.state.documents) == (1 if process else 0)
    record = simulator.state.requests[-1]
    assert (record.status, record.fault, record.lines) == (None, "close_after_read", 1)
    # The server is still fine afterwards.
    assert post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK).status_code == 200


def test_close_after_read_on_a_raw_socket_answers_nothing(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("close_after_read"))
    data = json.dumps(EXAMPLE_COMPTES).encode()
    request = (
        f"POST /{COMPTES.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == b""
    assert len(simulator.state.accounts) == 2


@pytest.mark.parametrize("process", [True, False])
def test_malformed_answer(simulator: GestimumSimulator, process: bool) -> None:
    simulator.add_fault(Fault("malformed", process=process))
    response = post(simulator, COMPTES, EXAMPLE_COMPTES)
    assert response.status_code == 200
    assert response.text.startswith('{"result"')
    with pytest.raises(ValueError):
        json.loads(response.text)
    assert len(simulator.state.accounts) == (2 if process else 0)


def test_slow_answer_exceeds_the_client_read_timeout(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("slow", seconds=0.6))
    with pytest.raises(requests.ReadTimeout):
        post(simulator, COMPTES, EXAMPLE_COMPTES, timeout=0.2)
    assert len(simulator.state.accounts) == 2  # processed before the wait
    simulator.add_fault(Fault("slow", seconds=0.2))
    started = time.monotonic()
    assert stats(entry_of(post(simulator, COMPTES, EXAMPLE_COMPTES))) == (2, 0)
    assert time.monotonic() - started >= 0.2


def test_bad_stats(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("bad_stats"))
    entry = entry_of(post(simulator, COMPTES, EXAMPLE_COMPTES))
    imported, rejected = stats(entry)
    assert imported + rejected != 2
    assert len(simulator.state.accounts) == 2


def test_delay_before_processing(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("delay", seconds=0.3))
    started = time.monotonic()
    entry = entry_of(post(simulator, COMPTES, EXAMPLE_COMPTES))
    assert time.monotonic() - started >= 0.3
    assert stats(entry) == (2, 0)
    assert simulator.state.requests[-1].fault == "delay"


@pytest.mark.parametrize(
    "fault",
    [
        Fault("explode"),
        Fault("http_500", count=0),
        Fault("http_500", endpoint="articles"),
        Fault("slow", seconds=-1),
        Fault("http_503", retry_after=-1),
    ],
)
def test_invalid_faults_are_refused(simulator: GestimumSimulator, fault: Fault) -> None:
    with pytest.raises(ValueError):
        simulator.add_fault(fault)
    assert simulator.faults == []


def test_clear_faults_and_reset(simulator: GestimumSimulator) -> None:
    simulator.add_fault(Fault("http_500", count=5))
    simulator.clear_faults()
    assert post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK).status_code == 200
    simulator.add_fault(Fault("http_500"))
    simulator.reset()
    assert simulator.faults == []
    assert simulator.state.snapshot() == {
        "accounts": {},
        "customers": {},
        "contacts": {},
        "references": [],
        "documents": [],
        "requests": [],
    }
    entry = entry_of(post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK))
    assert f"La pièce ENT{YY}-00001 a été créée" in texts(entry["journal"])  # numbering restarts


# --- control endpoints -----------------------------------------------------------------


def test_control_endpoints(simulator: GestimumSimulator) -> None:
    base = simulator.url + "_simulator/"
    response = requests.post(base + "faults", json={"kind": "http_500", "endpoint": "comptes"}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["faults"][0]["kind"] == "http_500"
    assert post(simulator, COMPTES, EXAMPLE_COMPTES).status_code == 500
    assert post(simulator, COMPTES, EXAMPLE_COMPTES).status_code == 200

    state = requests.get(base + "state", timeout=TIMEOUT).json()
    assert sorted(state["accounts"]) == ["411JOHNDOE", "70700202"]
    assert [r["status"] for r in state["requests"]] == [500, 200]
    assert state["faults"] == []
    assert state["config"]["company_file"] == "DEMO.Gestimum" and "password" not in state["config"]

    for bad in ({"kind": "explode"}, {"kind": "slow", "sconds": 1}, {}, [1]):
        assert requests.post(base + "faults", json=bad, timeout=TIMEOUT).status_code == 400
    assert requests.post(base + "faults", data=b"{", timeout=TIMEOUT).status_code == 400
    requests.post(base + "faults", json={"kind": "delay", "seconds": 0.01, "count": 3}, timeout=TIMEOUT)
    assert requests.get(base + "faults", timeout=TIMEOUT).json()["faults"][0]["count"] == 3
    assert requests.delete(base + "faults", timeout=TIMEOUT).json() == {"faults": []}
    assert simulator.faults == []

    simulator.add_fault(Fault("http_500"))
    assert requests.post(base + "reset", timeout=TIMEOUT).status_code == 200
    state = requests.get(base + "state", timeout=TIMEOUT).json()
    assert (state["accounts"], state["requests"], state["faults"]) == ({}, [], [])
    assert requests.get(base + "reset", timeout=TIMEOUT).status_code == 404


def test_snapshot_is_json_able(simulator: GestimumSimulator) -> None:
    seed_customers(simulator, "C1", "C2")
    post(simulator, REFERENCES_CLIENTS_ARTICLES, EXAMPLE_REFERENCES)
    post(simulator, DOCUMENTS_STOCK, EXAMPLE_DOCUMENTS_STOCK)
    snapshot = json.loads(json.dumps(simulator.state.snapshot()))
    assert snapshot["references"][0] == {
        "ART_CODE": "A10",
        "PCF_CODE": "C1",
        "ART_PCLIENT": "5",
        "ART_REFCLI": "A10001",
    }
    assert snapshot["documents"][0]["number"] == f"ENT{YY}-00001"


# --- logging, lifecycle ----------------------------------------------------------------


def test_password_never_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    secret, wrong = "Tr3s-Secret-9f1", "Wr0ng-Guess-77a"
    with GestimumSimulator(SimulatorConfig(password=secret)) as sim:
        assert secret not in repr(sim.config)
        for password in (wrong, secret):
            body = copy.deepcopy(EXAMPLE_COMPTES)
            body[ROOT]["societe"]["mot_passe"] = password
            post(sim, COMPTES, body)
            body[ROOT]["parametres"]["unknown"] = password  # an error answer that quotes the request
            post(sim, COMPTES, body)
        body = copy.deepcopy(EXAMPLE_COMPTES)
        body[ROOT]["societe"]["mot_passe"] = 12345  # wrong type: the message must not echo it
        response = post(sim, COMPTES, body)
        assert "12345" not in response.text
        assert requests.get(sim.url + "_simulator/state", timeout=TIMEOUT).text.count(secret) == 0
    import_records = [
        r for r in caplog.records if r.name == "gestimum_pipeline.simulator" and "ImporterComptes" in r.getMessage()
    ]
    assert len(import_records) == 5  # one line per import request
    assert all(r.levelno == logging.INFO for r in import_records)
    captured = capfd.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert secret not in text and wrong not in text
        assert "Ventes de produits finis" not in text  # nor the body
    assert "HTTP/1.1" not in captured.err  # no access log


def test_lifecycle() -> None:
    sim = GestimumSimulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    sim.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", sim.url)
        with pytest.raises(RuntimeError):
            sim.start()
        session = requests.Session()
        assert session.post(sim.url + COMPTES.path, json=EXAMPLE_COMPTES, timeout=TIMEOUT).status_code == 200
        url = sim.url
    finally:
        sim.stop()
    sim.stop()  # idempotent
    # The kept-alive connection is closed too: nothing answers any more.
    with pytest.raises(requests.ConnectionError):
        session.post(url + COMPTES.path, json=EXAMPLE_COMPTES, timeout=TIMEOUT)
    session.close()


def test_config_validation() -> None:
    for bad in (
        {"decimal_separator": ";"},
        {"charset": "klingon"},
        {"company_open_delay": -1},
        {"version": 0},
        {"company_file": ""},
    ):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)
    config = SimulatorConfig()
    assert "ELS" in config.items and "A10" in config.items and len(config.items) >= 20
    assert config.warehouses == ("001", "002")


# --- command line ----------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return parser.parse_args(argv)


def test_cli_defaults_match_the_config_defaults() -> None:
    args = _parse([])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert config_from_args(args) == SimulatorConfig()


def test_cli_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_PASSWORD", "from-env")
    args = _parse(
        [
            "--host=0.0.0.0",
            "--port=0",
            "--company-file=PROD.Gestimum",
            "--user=ADMIN",
            "--password-env=SIM_PASSWORD",
            "--items=X1, X2",
            "--warehouses=W1",
            "--delay=6",
            "--charset=latin-1",
            "--decimal-separator=.",
            "--version=8",
        ]
    )
    assert config_from_args(args) == SimulatorConfig(
        company_file="PROD.Gestimum",
        user="ADMIN",
        password="from-env",
        items=("X1", "X2"),
        warehouses=("W1",),
        charset="latin-1",
        decimal_separator=".",
        company_open_delay=6.0,
        version=8,
    )
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"items": ["Z1"], "warehouses": ["ZW"]}), encoding="utf-8")
    config = config_from_args(_parse(["--catalog", str(catalog)]))
    assert (config.items, config.warehouses) == (("Z1",), ("ZW",))
    config = config_from_args(_parse(["--catalog", str(catalog), "--warehouses", "A,B"]))
    assert config.warehouses == ("A", "B")
    assert load_catalog(DEFAULT_CATALOG_FILE)["items"] == SimulatorConfig().items


def test_cli_refuses_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_PASSWORD_MISSING", raising=False)
    with pytest.raises(ValueError, match="SIM_PASSWORD_MISSING"):
        config_from_args(_parse(["--password-env", "SIM_PASSWORD_MISSING"]))
    for argv in (["--password", "x"], ["--password=x"], ["--passw", "x"]):
        with pytest.raises(SystemExit):
            _parse(argv)  # no way to give a password on the command line
    with pytest.raises(ValueError) as error:
        config_from_args(_parse(["--password-env", "pa$$word!"]))
    assert "pa$$word!" not in str(error.value)
    with pytest.raises(SystemExit):
        _parse(["--items", "A", "--catalog", "f.json"])
    bad = tmp_path / "bad.json"
    for content in ("[1]", '{"items": [""]}', '{"articles": []}', "{"):
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError):
            config_from_args(_parse(["--catalog", str(bad)]))
    with pytest.raises(ValueError):
        config_from_args(_parse(["--items", " , "]))


def test_serve_in_another_process() -> None:
    env = {**os.environ, "SIM_PW": "pw-in-env"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gestimum_pipeline.simulator", "--port", "0", "--password-env", "SIM_PW"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        url = match.group(1)
        body = copy.deepcopy(EXAMPLE_COMPTES)
        body[ROOT]["societe"]["mot_passe"] = "pw-in-env"
        response = requests.post(url + COMPTES.path, json=body, timeout=TIMEOUT)
        assert response.status_code == 200
        state = requests.get(url + "_simulator/state", timeout=TIMEOUT).json()
        assert sorted(state["accounts"]) == ["411JOHNDOE", "70700202"]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert "pw-in-env" not in err
    assert "ImporterComptes: 2 lines, 2 imported, 0 rejected -> HTTP 200" in err
