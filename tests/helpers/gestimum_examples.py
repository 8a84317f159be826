"""Gestimum's five documented example requests and answers, verbatim (../shared/gestimum-api/).

One copy for every test that replays them: the protocol unit tests, the simulator tests.
"""

from __future__ import annotations

import json
from typing import Any

# fmt: off
# 004_a6263dcd5a1144d5.txt
COMPTES_REQUEST = r'''{
    "importer_comptes": {
        "societe": {
            "fichier": "DEMO.Gestimum",
            "utilisateur": "DEMO",
            "mot_passe": "",
            "deconnecter": "Non",
            "exclusif": "Non"
        },
        "parametres": {
            "journal": "Oui",
            "statistiques": "Oui",
            "entete": "Oui",
            "noms_champs": "",
            "separateur_champs": ";",
            "identificateur_texte": "",
            "fichier_comptes": [
                "CPT_NUMERO;CPT_LIB;CPT_TYPE;PCF_CODE;CPT_TVA_NC",
                "411JOHNDOE;John Doe;C;JOHNDOE",
                "70700202;Ventes de produits finis;G;;445660"
            ]
        }
    }
}'''
COMPTES_RESPONSE = r'''{
    "result": [
        {
            "resultat": "succès",
            "message": "terminé",
            "journal": [
                "16/09/2019 17:39:43 Ouverture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum",
                "16/09/2019 17:39:49 Société C:\\ProgramData\\Gestimum\\DEMO.Gestimum ouverte",
                "16/09/2019 17:39:49 Lancement de la tâche ImporterComptes",
                "16/09/2019 17:39:49 L'import a été effectué avec succès.",
                "16/09/2019 17:39:49 Nombre de lignes importées : 2",
                "16/09/2019 17:39:49 Nombre de lignes non importées : 0",
                "16/09/2019 17:39:49 Tâche ImporterComptes terminée",
                "16/09/2019 17:39:49 Fermeture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum"
            ],
            "statistiques": {
                "nombre_lignes_importées": "2",
                "nombre_lignes_non_importées": "0"
            }
        }
    ]
}'''
# 001_46eadc935f990b23.txt
CLIENTS_REQUEST = r'''{
    "importer_clients": {
        "societe": {
            "fichier": "DEMO.Gestimum",
            "utilisateur": "DEMO",
            "mot_passe": "",
            "deconnecter": "Non",
            "exclusif": "Non"
        },
        "parametres": {
            "journal": "Oui",
            "statistiques": "Oui",
            "entete": "Oui",
            "noms_champs": "",
            "separateur_champs": ";",
            "identificateur_texte": "",
            "fichier_clients": [
                "PCF_CODE;CPT_NUMERO;PCF_RS;PCF_RUE;PCF_COMP;PCF_CP;PCF_VILLE",
                "C42;411C42;SPORT25;5 rue Cugnot;ZA Du Pâtis;78120;RAMBOUILLET"
            ]
        }
    }
}'''
CLIENTS_RESPONSE = r'''{
    "result": [
        {
            "resultat": "succès",
            "message": "terminé",
            "journal": [
                "10/09/2019 18:57:29 Ouverture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum",
                "10/09/2019 18:57:35 Société C:\\ProgramData\\Gestimum\\DEMO.Gestimum ouverte",
                "10/09/2019 18:57:35 Lancement de la tâche ImporterClients",
                "10/09/2019 18:57:35 L'import a été effectué avec succès.",
                "10/09/2019 18:57:35 Nombre de lignes importées : 1",
                "10/09/2019 18:57:35 Nombre de lignes non importées : 0",
                "10/09/2019 18:57:35 Tâche ImporterClients terminée",
                "10/09/2019 18:57:35 Fermeture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum"
            ],
            "statistiques": {
                "nombre_lignes_importées": "1",
                "nombre_lignes_non_importées": "0"
            }
        }
    ]
}'''
# 002_ef986d8fed05a3a2.txt
CONTACTS_REQUEST = r'''{
    "importer_contacts": {
        "societe": {
            "fichier": "DEMO.Gestimum",
            "utilisateur": "DEMO",
            "mot_passe": "",
            "deconnecter": "Non",
            "exclusif": "Non"
        },
        "parametres": {
            "journal": "Oui",
            "statistiques": "Oui",
            "entete": "Oui",
            "noms_champs": "",
            "separateur_champs": ";",
            "identificateur_texte": "",
            "fichier_contacts": [
                "CCT_CODE;CCT_NOM;CCT_ORIGIN",
                "CONTACT1;Contact1;CLIENT1",
                "CONTACT2;Contact2;CLIENT1",
                "CONTACT3;Contact3;CLIENT2"
            ]
        }
    }
}'''
CONTACTS_RESPONSE = r'''{
    "result": [
        {
            "resultat": "succès",
            "message": "terminé",
            "journal": [
                "13/09/2019 14:30:38 Ouverture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum",
                "13/09/2019 14:30:43 Société C:\\ProgramData\\Gestimum\\DEMO.Gestimum ouverte",
                "13/09/2019 14:30:43 Lancement de la tâche ImporterContacts",
                "13/09/2019 14:30:44 L'import a été effectué avec succès.",
                "13/09/2019 14:30:44 Nombre de lignes importées : 3",
                "13/09/2019 14:30:44 Nombre de lignes non importées : 0",
                "13/09/2019 14:30:44 Tâche ImporterContacts terminée",
                "13/09/2019 14:30:44 Fermeture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum"
            ],
            "statistiques": {
                "nombre_lignes_importées": "3",
                "nombre_lignes_non_importées": "0"
            }
        }
    ]
}'''
# 003_e9a476b1d9efab20.txt
DOCUMENTS_STOCK_REQUEST = r'''{
    "importer_documents_stock": {
        "societe": {
            "fichier": "DEMO.Gestimum",
            "utilisateur": "DEMO",
            "mot_passe": "",
            "deconnecter": "Non",
            "exclusif": "Non"
        },
        "parametres": {
            "journal": "Oui",
            "statistiques": "Oui",
            "entete": "Oui",
            "noms_champs": "",
            "separateur_champs": ";",
            "identificateur_texte": "",
            "fichier_documents_stock": [
                "DOC_STYPE;DEP_CODE;ART_CODE;MVT_QTE",
                "E;001;ELS;20"
            ]
        }
    }
}'''
DOCUMENTS_STOCK_RESPONSE = r'''{
    "result": [
        {
            "resultat": "succès",
            "message": "terminé",
            "journal": [
                "12/09/2019 16:28:06 Ouverture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum",
                "12/09/2019 16:28:11 Société C:\\ProgramData\\Gestimum\\DEMO.Gestimum ouverte",
                "12/09/2019 16:28:11 Lancement de la tâche ImporterDocumentsStock",
                "12/09/2019 16:28:11 L'import a été effectué avec succès.",
                "12/09/2019 16:28:11 Nombre de lignes importées : 1",
                "12/09/2019 16:28:11 Nombre de lignes non importées : 0",
                "12/09/2019 16:28:11 La pièce ENT17-00017 a été créée",
                "12/09/2019 16:28:11 Tâche ImporterDocumentsStock terminée",
                "12/09/2019 16:28:11 Fermeture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum"
            ],
            "statistiques": {
                "nombre_lignes_importées": "1",
                "nombre_lignes_non_importées": "0"
            }
        }
    ]
}'''
# 000_a939744a2705c7f6.txt
REFERENCES_CLIENTS_ARTICLES_REQUEST = r'''{
    "importer_references_clients_articles": {
        "societe": {
            "fichier": "DEMO.Gestimum",
            "utilisateur": "DEMO",
            "mot_passe": "",
            "deconnecter": "Non",
            "exclusif": "Non"
        },
        "parametres": {
            "journal": "Oui",
            "statistiques": "Oui",
            "entete": "Oui",
            "noms_champs": "",
            "separateur_champs": ";",
            "identificateur_texte": "",
            "fichier_references_clients_articles": [
                "ART_CODE;PCF_CODE;ART_PCLIENT;ART_REFCLI",
                "A10;C1;5;A10001",
                "A10;C2;5;A10002"
            ]
        }
    }
}'''
REFERENCES_CLIENTS_ARTICLES_RESPONSE = r'''{
    "result": [
        {
            "resultat": "succès",
            "message": "terminé",
            "journal": [
                "13/09/2019 16:16:56 Ouverture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum",
                "13/09/2019 16:17:02 Société C:\\ProgramData\\Gestimum\\DEMO.Gestimum ouverte",
                "13/09/2019 16:17:02 Lancement de la tâche ImporterReferencesClientsArticles",
                "13/09/2019 16:17:02 Nombre de lignes importées : 0",
                "13/09/2019 16:17:02 Nombre de lignes non importées : 2",
                "13/09/2019 16:17:02 La ligne 1 n'a pas pu être importée :",
                "13/09/2019 16:17:02 Code manquant",
                "13/09/2019 16:17:02 La ligne 2 n'a pas pu être importée :",
                "13/09/2019 16:17:02 Code manquant",
                "13/09/2019 16:17:02 Tâche ImporterReferencesClientsArticles terminée",
                "13/09/2019 16:17:02 Fermeture de la société C:\\ProgramData\\Gestimum\\DEMO.Gestimum"
            ],
            "statistiques": {
                "nombre_lignes_importées": "0",
                "nombre_lignes_non_importées": "2"
            }
        }
    ]
}'''
# fmt: on

REQUESTS: dict[str, str] = {
    "comptes": COMPTES_REQUEST,
    "clients": CLIENTS_REQUEST,
    "contacts": CONTACTS_REQUEST,
    "documents_stock": DOCUMENTS_STOCK_REQUEST,
    "references_clients_articles": REFERENCES_CLIENTS_ARTICLES_REQUEST,
}
RESPONSES: dict[str, str] = {
    "comptes": COMPTES_RESPONSE,
    "clients": CLIENTS_RESPONSE,
    "contacts": CONTACTS_RESPONSE,
    "documents_stock": DOCUMENTS_STOCK_RESPONSE,
    "references_clients_articles": REFERENCES_CLIENTS_ARTICLES_RESPONSE,
}


def request(endpoint: str) -> dict[str, Any]:
    """A fresh copy of the documented request body for one endpoint (ours to mutate)."""
    return json.loads(REQUESTS[endpoint])


def response(endpoint: str) -> dict[str, Any]:
    return json.loads(RESPONSES[endpoint])
