"""The catalog of Gestimum's import endpoints: the one place where French wire keys live.

Everything else in the project speaks English and looks endpoints up here. Field
lengths are not documented by Gestimum; the limits below are our assumption (see
docs/assumptions.md) and are enforced identically by the client and the simulator,
so a value that would be truncated is refused before it is sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FieldKind(enum.Enum):
    TEXT = "text"
    DECIMAL = "decimal"


@dataclass(frozen=True)
class Field:
    code: str
    max_length: int | None = None
    required: bool = False
    kind: FieldKind = FieldKind.TEXT


@dataclass(frozen=True)
class Endpoint:
    """One import endpoint: its URL path, envelope keys, options and field codes."""

    name: str  # our English name, also the asset suffix
    path: str  # relative to the API root, `"Importer"` URL-encoded as Gestimum shows it
    envelope_key: str
    lines_key: str
    options: tuple[str, ...]  # documented Oui/Non options besides the lines
    min_version: int
    fields: tuple[Field, ...]
    idempotent: bool  # safe to re-send a request Gestimum may already have processed
    supports_test_mode: bool

    @property
    def field_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.fields)

    @property
    def header(self) -> tuple[str, ...]:
        return self.field_codes

    def field(self, code: str) -> Field:
        for f in self.fields:
            if f.code == code:
                return f
        raise KeyError(f"{self.name} has no field {code!r}")


# Envelope blocks and keys (wire format).
SOCIETE = "societe"
PARAMETRES = "parametres"
SOCIETE_FICHIER = "fichier"
SOCIETE_UTILISATEUR = "utilisateur"
SOCIETE_MOT_PASSE = "mot_passe"
SOCIETE_DECONNECTER = "deconnecter"
SOCIETE_EXCLUSIF = "exclusif"
PARAM_JOURNAL = "journal"
PARAM_STATISTIQUES = "statistiques"
PARAM_ENTETE = "entete"
PARAM_NOMS_CHAMPS = "noms_champs"
PARAM_SEPARATEUR = "separateur_champs"
PARAM_IDENTIFICATEUR = "identificateur_texte"
OPTION_TESTER = "tester"
OPTION_CALCULER_CODE_TIERS = "calculer_code_tiers"
OPTION_CALCULER_NUMERO_COMPTE = "calculer_numero_compte"
COMMON_PARAMETERS = (
    PARAM_JOURNAL,
    PARAM_STATISTIQUES,
    PARAM_ENTETE,
    PARAM_NOMS_CHAMPS,
    PARAM_SEPARATEUR,
    PARAM_IDENTIFICATEUR,
)
YES = "Oui"
NO = "Non"
YES_NO = (YES, NO)

# Response keys and journal phrases (wire format).
RESPONSE_RESULT = "result"
RESPONSE_RESULTAT = "resultat"
RESPONSE_MESSAGE = "message"
RESPONSE_JOURNAL = "journal"
RESPONSE_STATISTIQUES = "statistiques"
STAT_IMPORTED = "nombre_lignes_importées"
STAT_REJECTED = "nombre_lignes_non_importées"
RESULTAT_SUCCESS = "succès"
RESULTAT_ERROR = "erreur"
MESSAGE_DONE = "terminé"
JOURNAL_TIMESTAMP_FORMAT = "%d/%m/%Y %H:%M:%S"
JOURNAL_REJECTED_LINE = "La ligne {n} n'a pas pu être importée :"
JOURNAL_REJECTED_LINE_RE = r"^La ligne (\d+) n'a pas pu être importée :$"
JOURNAL_DOCUMENT_CREATED = "La pièce {number} a été créée"
JOURNAL_DOCUMENT_CREATED_RE = r"^La pièce (\S+) a été créée$"
JOURNAL_IMPORTED_COUNT = "Nombre de lignes importées : {n}"
JOURNAL_REJECTED_COUNT = "Nombre de lignes non importées : {n}"
JOURNAL_SUCCESS = "L'import a été effectué avec succès."
JOURNAL_OPENING = "Ouverture de la société {path}"
JOURNAL_OPENED = "Société {path} ouverte"
JOURNAL_TASK_START = "Lancement de la tâche {task}"
JOURNAL_TASK_END = "Tâche {task} terminée"
JOURNAL_CLOSING = "Fermeture de la société {path}"

# Stock document directions (wire values of DOC_STYPE).
STOCK_ENTRY = "E"
STOCK_EXIT = "S"
# Account types (wire values of CPT_TYPE).
ACCOUNT_CUSTOMER = "C"
ACCOUNT_GENERAL = "G"

_IMPORTER = "%22Importer%22"

COMPTES = Endpoint(
    name="comptes",
    path=f"api/rest/Comptes/{_IMPORTER}",
    envelope_key="importer_comptes",
    lines_key="fichier_comptes",
    options=(OPTION_CALCULER_CODE_TIERS, OPTION_CALCULER_NUMERO_COMPTE, OPTION_TESTER),
    min_version=8,
    fields=(
        Field("CPT_NUMERO", 30, required=True),
        Field("CPT_LIB", 60, required=True),
        Field("CPT_TYPE", 1, required=True),
        Field("PCF_CODE", 20),
        Field("CPT_TVA_NC", 20),
    ),
    idempotent=True,
    supports_test_mode=True,
)

CLIENTS = Endpoint(
    name="clients",
    path=f"api/rest/Clients/{_IMPORTER}",
    envelope_key="importer_clients",
    lines_key="fichier_clients",
    options=(OPTION_TESTER,),
    min_version=8,
    fields=(
        Field("PCF_CODE", 20, required=True),
        Field("CPT_NUMERO", 30),
        Field("PCF_RS", 60, required=True),
        Field("PCF_RUE", 60),
        Field("PCF_COMP", 60),
        Field("PCF_CP", 10),
        Field("PCF_VILLE", 60),
    ),
    idempotent=True,
    supports_test_mode=True,
)

CONTACTS = Endpoint(
    name="contacts",
    path=f"api/rest/Contacts/{_IMPORTER}",
    envelope_key="importer_contacts",
    lines_key="fichier_contacts",
    options=(),
    min_version=9,
    fields=(
        Field("CCT_CODE", 20, required=True),
        Field("CCT_NOM", 60, required=True),
        Field("CCT_ORIGIN", 20, required=True),
    ),
    idempotent=True,
    supports_test_mode=False,
)

DOCUMENTS_STOCK = Endpoint(
    name="documents_stock",
    path=f"api/rest/DocumentsStock/{_IMPORTER}",
    envelope_key="importer_documents_stock",
    lines_key="fichier_documents_stock",
    options=(),
    min_version=8,
    fields=(
        Field("DOC_STYPE", 1, required=True),
        Field("DEP_CODE", 10, required=True),
        Field("ART_CODE", 30, required=True),
        Field("MVT_QTE", 20, required=True, kind=FieldKind.DECIMAL),
    ),
    # Every accepted request creates new documents: never re-send automatically.
    idempotent=False,
    supports_test_mode=False,
)

REFERENCES_CLIENTS_ARTICLES = Endpoint(
    name="references_clients_articles",
    path=f"api/rest/ReferencesClientsArticles/{_IMPORTER}",
    envelope_key="importer_references_clients_articles",
    lines_key="fichier_references_clients_articles",
    options=(),
    min_version=8,
    fields=(
        Field("ART_CODE", 30, required=True),
        Field("PCF_CODE", 20, required=True),
        Field("ART_PCLIENT", 20, kind=FieldKind.DECIMAL),
        Field("ART_REFCLI", 30),
    ),
    idempotent=True,
    supports_test_mode=False,
)

ENDPOINTS: dict[str, Endpoint] = {
    e.name: e for e in (COMPTES, CLIENTS, CONTACTS, DOCUMENTS_STOCK, REFERENCES_CLIENTS_ARTICLES)
}
ENDPOINTS_BY_ENVELOPE: dict[str, Endpoint] = {e.envelope_key: e for e in ENDPOINTS.values()}


def endpoint(name: str) -> Endpoint:
    try:
        return ENDPOINTS[name]
    except KeyError:
        raise KeyError(f"unknown endpoint {name!r}; known: {', '.join(ENDPOINTS)}") from None


# Failure answers. Gestimum's docs show none: we assume the same envelope with
# resultat "erreur" (see gestimum_pipeline/gestimum/journal.py), and classify its
# message with these lowercase keywords.
MESSAGE_KEYWORDS_CREDENTIALS = ("utilisateur", "mot de passe", "identifiant")
MESSAGE_KEYWORDS_COMPANY_FILE = ("fichier", "société", "societe", "dossier")
MESSAGE_KEYWORDS_NOT_FOUND = ("introuvable", "inexistant", "n'existe pas", "non trouvé", "impossible d'ouvrir")
# A message about the request itself (e.g. "Paramètre obligatoire manquant : utilisateur")
# is a protocol problem even when it names a credential field.
MESSAGE_KEYWORDS_REQUEST = ("paramètre", "json", "corps de la requête", "en-tête")

# Simulator answers (wire format). Gestimum documents only successful imports: the
# failure messages and per-line reasons below are the simulator's assumption
# (docs/simulator.md). Unknown references start with the documented "Code manquant".
COMPANY_DIRECTORY = "C:\\ProgramData\\Gestimum\\"
TASK_PREFIX = "Importer"
ERROR_INVALID_JSON = "Le corps de la requête n'est pas un objet JSON valide"
ERROR_ROOT_KEY = "Le corps de la requête doit contenir la seule clé {key}"
ERROR_DUPLICATE_PARAMETER = "Paramètre en double : {key}"
ERROR_MISSING_PARAMETER = "Paramètre obligatoire manquant : {key}"
ERROR_UNKNOWN_PARAMETER = "Paramètre inconnu : {key}"
ERROR_INVALID_PARAMETER = "Valeur incorrecte pour le paramètre {key} (attendu : {expected})"
EXPECTED_OBJECT = "un objet"
EXPECTED_TEXT = "une chaîne de caractères"
EXPECTED_YES_NO = f"{YES} ou {NO}"
EXPECTED_ONE_CHARACTER = "un seul caractère"
EXPECTED_QUALIFIER = "vide ou un seul caractère, différent du séparateur"
EXPECTED_LINES = "un tableau de chaînes de caractères"
EXPECTED_EMPTY = "vide"
EXPECTED_OR = " ou "
ERROR_UNKNOWN_COMPANY = "Le fichier société {path} est introuvable"
ERROR_BAD_CREDENTIALS = "Utilisateur ou mot de passe incorrect"
ERROR_VERSION = "La tâche {task} nécessite la version {required} de Gestimum (version installée : {version})"
ERROR_HEADER_MISSING = "En-tête manquant"
ERROR_HEADER_SYNTAX = "En-tête mal formé"
ERROR_HEADER_UNKNOWN_FIELD = "Champ inconnu dans l'en-tête : {code}"
ERROR_HEADER_DUPLICATE_FIELD = "Champ en double dans l'en-tête : {code}"
REASON_CODE_MISSING = "Code manquant"
REASON_REQUIRED_MISSING = "Champ obligatoire manquant : {field}"
REASON_SYNTAX = "Ligne mal formée (séparateur ou identificateur de texte incorrect)"
REASON_LINE_BREAK = "Saut de ligne interdit à l'intérieur d'une ligne"
REASON_TOO_MANY_FIELDS = "Trop de champs : {count} pour {expected} attendus"
REASON_CONTROL_CHARACTER = "Caractère de contrôle interdit dans le champ {field}"
REASON_CHARSET = "Caractère {char} non représentable ({charset}) dans le champ {field}"
REASON_TOO_LONG = "Valeur trop longue pour le champ {field} : {length} caractères (maximum {max_length})"
REASON_BAD_NUMBER = "Nombre incorrect pour le champ {field} : {value}"
REASON_TOO_MANY_DECIMALS = "Trop de décimales pour le champ {field} : {value} (maximum {max_decimals})"
REASON_NOT_POSITIVE = "Le champ {field} doit être strictement positif : {value}"
REASON_BAD_VALUE = "Valeur incorrecte pour le champ {field} : {value} (attendu : {expected})"
REASON_CUSTOMER_ACCOUNT_WITHOUT_CODE = "Code manquant : un compte de type C doit indiquer PCF_CODE"
REASON_UNKNOWN_ACCOUNT = "Code manquant : le compte {code} n'existe pas"
REASON_UNKNOWN_CUSTOMER = "Code manquant : le client {code} n'existe pas"
REASON_UNKNOWN_ITEM = "Code manquant : l'article {code} n'existe pas"
REASON_UNKNOWN_WAREHOUSE = "Code manquant : le dépôt {code} n'existe pas"
# Stock document number prefixes: ENT is documented (ENT17-00017), SOR is our guess.
STOCK_DOCUMENT_PREFIXES = {STOCK_ENTRY: "ENT", STOCK_EXIT: "SOR"}
# A 404 whose message is about the Gestimum version (endpoint newer than the server)
# is not about the company file.
MESSAGE_KEYWORDS_VERSION = ("version",)
