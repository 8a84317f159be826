"""The import itself: from a request body to Gestimum's answer, with no HTTP in sight.

Follows the documented examples (/work/shared/gestimum-api) to the letter where they
speak, and the assumptions listed in docs/simulator.md where they are silent.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from gestimum_pipeline.gestimum.catalog import (
    ACCOUNT_CUSTOMER,
    ACCOUNT_GENERAL,
    CLIENTS,
    COMMON_PARAMETERS,
    COMPANY_DIRECTORY,
    COMPTES,
    CONTACTS,
    DOCUMENTS_STOCK,
    ERROR_BAD_CREDENTIALS,
    ERROR_DUPLICATE_PARAMETER,
    ERROR_HEADER_DUPLICATE_FIELD,
    ERROR_HEADER_MISSING,
    ERROR_HEADER_SYNTAX,
    ERROR_HEADER_UNKNOWN_FIELD,
    ERROR_INVALID_JSON,
    ERROR_INVALID_PARAMETER,
    ERROR_MISSING_PARAMETER,
    ERROR_ROOT_KEY,
    ERROR_UNKNOWN_COMPANY,
    ERROR_UNKNOWN_PARAMETER,
    ERROR_VERSION,
    EXPECTED_EMPTY,
    EXPECTED_LINES,
    EXPECTED_OBJECT,
    EXPECTED_ONE_CHARACTER,
    EXPECTED_OR,
    EXPECTED_QUALIFIER,
    EXPECTED_TEXT,
    EXPECTED_YES_NO,
    JOURNAL_CLOSING,
    JOURNAL_DOCUMENT_CREATED,
    JOURNAL_IMPORTED_COUNT,
    JOURNAL_OPENED,
    JOURNAL_OPENING,
    JOURNAL_REJECTED_COUNT,
    JOURNAL_REJECTED_LINE,
    JOURNAL_SUCCESS,
    JOURNAL_TASK_END,
    JOURNAL_TASK_START,
    JOURNAL_TIMESTAMP_FORMAT,
    MESSAGE_DONE,
    NO,
    OPTION_TESTER,
    PARAM_ENTETE,
    PARAM_IDENTIFICATEUR,
    PARAM_JOURNAL,
    PARAM_NOMS_CHAMPS,
    PARAM_SEPARATEUR,
    PARAM_STATISTIQUES,
    PARAMETRES,
    REASON_BAD_NUMBER,
    REASON_BAD_VALUE,
    REASON_CHARSET,
    REASON_CODE_MISSING,
    REASON_CONTROL_CHARACTER,
    REASON_CUSTOMER_ACCOUNT_WITHOUT_CODE,
    REASON_LINE_BREAK,
    REASON_NOT_POSITIVE,
    REASON_REQUIRED_MISSING,
    REASON_SYNTAX,
    REASON_TOO_LONG,
    REASON_TOO_MANY_DECIMALS,
    REASON_TOO_MANY_FIELDS,
    REASON_UNKNOWN_ACCOUNT,
    REASON_UNKNOWN_CUSTOMER,
    REASON_UNKNOWN_ITEM,
    REASON_UNKNOWN_WAREHOUSE,
    REFERENCES_CLIENTS_ARTICLES,
    RESPONSE_JOURNAL,
    RESPONSE_MESSAGE,
    RESPONSE_RESULT,
    RESPONSE_RESULTAT,
    RESPONSE_STATISTIQUES,
    RESULTAT_ERROR,
    RESULTAT_SUCCESS,
    SOCIETE,
    SOCIETE_DECONNECTER,
    SOCIETE_EXCLUSIF,
    SOCIETE_FICHIER,
    SOCIETE_MOT_PASSE,
    SOCIETE_UTILISATEUR,
    STAT_IMPORTED,
    STAT_REJECTED,
    STOCK_DOCUMENT_PREFIXES,
    STOCK_ENTRY,
    STOCK_EXIT,
    TASK_PREFIX,
    YES,
    YES_NO,
    Endpoint,
    FieldKind,
)
from gestimum_pipeline.gestimum.encoding import LineSyntaxError, decode_line, parse_decimal
from gestimum_pipeline.simulator.config import SimulatorConfig
from gestimum_pipeline.simulator.state import Record, SimulatorState

# Field codes the rules read, looked up in the catalog so a rename there fails here at import.
CPT_NUMERO = COMPTES.field("CPT_NUMERO").code
CPT_TYPE = COMPTES.field("CPT_TYPE").code
PCF_CODE = CLIENTS.field("PCF_CODE").code
CCT_CODE = CONTACTS.field("CCT_CODE").code
CCT_ORIGIN = CONTACTS.field("CCT_ORIGIN").code
DOC_STYPE = DOCUMENTS_STOCK.field("DOC_STYPE").code
DEP_CODE = DOCUMENTS_STOCK.field("DEP_CODE").code
ART_CODE = DOCUMENTS_STOCK.field("ART_CODE").code
MVT_QTE = DOCUMENTS_STOCK.field("MVT_QTE").code

# Fields holding a code: an empty one is reported as the documented "Code manquant".
CODE_FIELDS = frozenset({CPT_NUMERO, PCF_CODE, CCT_CODE, CCT_ORIGIN, DEP_CODE, ART_CODE})
MAX_DECIMALS = 4
SOCIETE_KEYS = (SOCIETE_FICHIER, SOCIETE_UTILISATEUR, SOCIETE_MOT_PASSE, SOCIETE_DECONNECTER, SOCIETE_EXCLUSIF)
# Values of the common parameters a request leaves out (Gestimum does not document them).
PARAMETER_DEFAULTS = {
    PARAM_JOURNAL: YES,
    PARAM_STATISTIQUES: YES,
    PARAM_ENTETE: NO,
    PARAM_NOMS_CHAMPS: "",
    PARAM_SEPARATEUR: ";",
    PARAM_IDENTIFICATEUR: "",
}
_YES_NO_PARAMETERS = (PARAM_JOURNAL, PARAM_STATISTIQUES, PARAM_ENTETE)


class RequestError(Exception):
    """A request refused as a whole: nothing is imported, an error answer is sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass
class ImportRequest:
    """A request body that passed the envelope checks."""

    company_file: str
    user: str
    password: str = field(repr=False)
    journal: bool
    statistics: bool
    header: bool
    separator: str
    qualifier: str
    options: dict[str, bool]
    lines: list[str]

    @property
    def test_mode(self) -> bool:
        return self.options.get(OPTION_TESTER, False)


@dataclass
class ImportOutcome:
    """What to answer, and what to log and record about it."""

    status: int
    payload: dict[str, Any]
    lines: int = 0  # data lines received, header excluded
    imported: int = 0
    rejected: int = 0
    test_mode: bool = False
    documents: list[str] = field(default_factory=list)
    error: str | None = None  # the error message of a refused request


def task_name(endpoint: Endpoint) -> str:
    """ "Importer" + the path segment, as the journal names it (ImporterReferencesClientsArticles)."""
    return TASK_PREFIX + endpoint.path.split("/")[-2]


def company_path(company_file: str) -> str:
    return COMPANY_DIRECTORY + company_file


class _Journal:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self.entries: list[str] = []

    def add(self, text: str) -> None:
        self.entries.append(f"{self._now().strftime(JOURNAL_TIMESTAMP_FORMAT)} {text}")


def error_payload(message: str, journal: Sequence[str]) -> dict[str, Any]:
    return {
        RESPONSE_RESULT: [
            {
                RESPONSE_RESULTAT: RESULTAT_ERROR,
                RESPONSE_MESSAGE: message,
                RESPONSE_JOURNAL: list(journal),
                RESPONSE_STATISTIQUES: {},
            }
        ]
    }


def success_payload(journal: Sequence[str] | None, statistics: tuple[int, int] | None) -> dict[str, Any]:
    stats = {} if statistics is None else {STAT_IMPORTED: str(statistics[0]), STAT_REJECTED: str(statistics[1])}
    return {
        RESPONSE_RESULT: [
            {
                RESPONSE_RESULTAT: RESULTAT_SUCCESS,
                RESPONSE_MESSAGE: MESSAGE_DONE,
                RESPONSE_JOURNAL: list(journal or []),
                RESPONSE_STATISTIQUES: stats,
            }
        ]
    }


# --- envelope -----------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _invalid(key: str, expected: str) -> RequestError:
    # Never echo the value: it may be the password.
    return RequestError(400, ERROR_INVALID_PARAMETER.format(key=key, expected=expected))


def _object(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(key, EXPECTED_OBJECT)
    return value


def _check_keys(block: dict[str, Any], allowed: Sequence[str], required: Sequence[str]) -> None:
    for key in block:
        if key not in allowed:
            raise RequestError(400, ERROR_UNKNOWN_PARAMETER.format(key=key))
    for key in required:
        if key not in block:
            raise RequestError(400, ERROR_MISSING_PARAMETER.format(key=key))


def _text(block: dict[str, Any], key: str) -> str:
    value = block[key]
    if not isinstance(value, str):
        raise _invalid(key, EXPECTED_TEXT)
    return value


def _yes_no(block: dict[str, Any], key: str) -> bool:
    value = _text(block, key)
    if value not in YES_NO:  # exact spelling: "oui" or "OUI" is refused
        raise _invalid(key, EXPECTED_YES_NO)
    return value == YES


def parse_request(endpoint: Endpoint, body: bytes) -> ImportRequest:
    """Checks the envelope strictly; raises RequestError(400) on the first problem."""
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise RequestError(400, ERROR_DUPLICATE_PARAMETER.format(key=exc.key)) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError(400, ERROR_INVALID_JSON) from None
    if not isinstance(data, dict):
        raise RequestError(400, ERROR_INVALID_JSON)
    if list(data) != [endpoint.envelope_key]:
        raise RequestError(400, ERROR_ROOT_KEY.format(key=endpoint.envelope_key))
    envelope = _object(data[endpoint.envelope_key], endpoint.envelope_key)
    _check_keys(envelope, (SOCIETE, PARAMETRES), (SOCIETE, PARAMETRES))

    societe = _object(envelope[SOCIETE], SOCIETE)
    _check_keys(societe, SOCIETE_KEYS, SOCIETE_KEYS)
    company_file, user, password = (_text(societe, k) for k in SOCIETE_KEYS[:3])
    for key in (SOCIETE_DECONNECTER, SOCIETE_EXCLUSIF):
        _yes_no(societe, key)  # accepted and ignored: imports are serialised anyway

    params = _object(envelope[PARAMETRES], PARAMETRES)
    _check_keys(params, (*COMMON_PARAMETERS, *endpoint.options, endpoint.lines_key), (endpoint.lines_key,))
    lines = params[endpoint.lines_key]
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise _invalid(endpoint.lines_key, EXPECTED_LINES)
    # Options default to "Non", as documented.
    defaults = {**PARAMETER_DEFAULTS, **dict.fromkeys(endpoint.options, NO)}
    merged = {**defaults, **{k: v for k, v in params.items() if k != endpoint.lines_key}}
    flags = {key: _yes_no(merged, key) for key in (*_YES_NO_PARAMETERS, *endpoint.options)}
    if _text(merged, PARAM_NOMS_CHAMPS) != "":
        # Undocumented (empty in every example): refused rather than guessed.
        raise _invalid(PARAM_NOMS_CHAMPS, EXPECTED_EMPTY)
    separator = _text(merged, PARAM_SEPARATEUR)
    if len(separator) != 1 or separator in "\r\n":
        raise _invalid(PARAM_SEPARATEUR, EXPECTED_ONE_CHARACTER)
    qualifier = _text(merged, PARAM_IDENTIFICATEUR)
    if len(qualifier) > 1 or qualifier == separator or (qualifier and qualifier.isspace()):
        raise _invalid(PARAM_IDENTIFICATEUR, EXPECTED_QUALIFIER)
    return ImportRequest(
        company_file=company_file,
        user=user,
        password=password,
        journal=flags[PARAM_JOURNAL],
        statistics=flags[PARAM_STATISTIQUES],
        header=flags[PARAM_ENTETE],
        separator=separator,
        qualifier=qualifier,
        options={name: flags[name] for name in endpoint.options},
        lines=lines,
    )


def split_header(endpoint: Endpoint, request: ImportRequest) -> tuple[tuple[str, ...], list[str]]:
    """The field codes of each data line, and the data lines."""
    if not request.header:
        return endpoint.field_codes, request.lines
    if not request.lines:
        raise RequestError(400, ERROR_HEADER_MISSING)
    try:
        codes = decode_line(request.lines[0], request.separator, request.qualifier)
    except LineSyntaxError:
        raise RequestError(400, ERROR_HEADER_SYNTAX) from None
    seen: set[str] = set()
    for code in codes:
        if code not in endpoint.field_codes:
            raise RequestError(400, ERROR_HEADER_UNKNOWN_FIELD.format(code=code))
        if code in seen:
            raise RequestError(400, ERROR_HEADER_DUPLICATE_FIELD.format(code=code))
        seen.add(code)
    return tuple(codes), request.lines[1:]


# --- lines --------------------------------------------------------------------------


def _control_character(value: str) -> bool:
    return any((ord(ch) < 32 and ch != "\t") or ord(ch) == 0x7F for ch in value)


def _one_of(*values: str) -> str:
    return EXPECTED_OR.join(values)


@dataclass
class _Run:
    imported: int = 0
    rejections: list[tuple[int, str]] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    movements: list[Record] = field(default_factory=list)  # DocumentsStock lines to turn into documents


class _LineImporter:
    """Imports the data lines of one request, in order, one reason per rejected line."""

    def __init__(
        self,
        endpoint: Endpoint,
        config: SimulatorConfig,
        state: SimulatorState,
        header: tuple[str, ...],
        request: ImportRequest,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.state = state
        self.header = header
        self.request = request
        self.store = not request.test_mode
        self.items = frozenset(config.items)
        self.warehouses = frozenset(config.warehouses)
        self.rule = _RULES[endpoint.name]
        self.run = _Run()

    def import_lines(self, lines: Sequence[str]) -> _Run:
        with self.state.transaction():
            for number, line in enumerate(lines, 1):
                reason = self._import_line(line)
                if reason is None:
                    self.run.imported += 1
                else:
                    self.run.rejections.append((number, reason))
            if self.store and self.run.movements:
                self._create_documents()
        return self.run

    def _import_line(self, line: str) -> str | None:
        if "\r" in line or "\n" in line:
            return REASON_LINE_BREAK
        try:
            values = decode_line(line, self.request.separator, self.request.qualifier)
        except LineSyntaxError:
            return REASON_SYNTAX
        if len(values) > len(self.header):
            return REASON_TOO_MANY_FIELDS.format(count=len(values), expected=len(self.header))
        # A line may stop early: the missing trailing fields are empty.
        provided = dict(zip(self.header, values + [""] * (len(self.header) - len(values)), strict=True))
        reason = self._check_values(provided)
        if reason:
            return reason
        record = {code: provided.get(code, "") for code in self.endpoint.field_codes}
        return self._check_required(record) or self._check_numbers(record) or self.rule(self, provided, record)

    def _check_values(self, provided: Record) -> str | None:
        for code, value in provided.items():
            if _control_character(value):
                return REASON_CONTROL_CHARACTER.format(field=code)
            try:
                value.encode(self.config.charset)
            except UnicodeEncodeError as exc:
                return REASON_CHARSET.format(char=value[exc.start], charset=self.config.charset, field=code)
            max_length = self.endpoint.field(code).max_length
            if max_length is not None and len(value) > max_length:
                return REASON_TOO_LONG.format(field=code, length=len(value), max_length=max_length)
        return None

    def _check_required(self, record: Record) -> str | None:
        for f in self.endpoint.fields:
            if f.required and not record[f.code]:
                return REASON_CODE_MISSING if f.code in CODE_FIELDS else REASON_REQUIRED_MISSING.format(field=f.code)
        return None

    def _check_numbers(self, record: Record) -> str | None:
        for f in self.endpoint.fields:
            value = record[f.code]
            if f.kind is not FieldKind.DECIMAL or not value:
                continue
            try:
                number = parse_decimal(value, self.config.decimal_separator)
            except ValueError:
                return REASON_BAD_NUMBER.format(field=f.code, value=value)
            exponent = number.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > MAX_DECIMALS:
                return REASON_TOO_MANY_DECIMALS.format(field=f.code, value=value, max_decimals=MAX_DECIMALS)
        return None

    def _create_documents(self) -> None:
        # One document per consecutive run of imported lines with the same direction and warehouse.
        year = date.today().year % 100
        group: list[Record] = []
        for movement in [*self.run.movements, None]:
            if group and (movement is None or _document_key(movement) != _document_key(group[0])):
                stype, warehouse = _document_key(group[0])
                prefix = f"{STOCK_DOCUMENT_PREFIXES[stype]}{year:02d}"
                self.run.documents.append(self.state.create_document(prefix, stype, warehouse, group))
                group = []
            if movement is not None:
                group.append(movement)


def _document_key(movement: Record) -> tuple[str, str]:
    return movement[DOC_STYPE], movement[DEP_CODE]


# Business rules: each returns a rejection reason, or applies the line (unless testing).
_Rule = Callable[[_LineImporter, Record, Record], str | None]


def _accounts(imp: _LineImporter, provided: Record, record: Record) -> str | None:
    account_type = record[CPT_TYPE]
    if account_type not in (ACCOUNT_CUSTOMER, ACCOUNT_GENERAL):
        expected = _one_of(ACCOUNT_CUSTOMER, ACCOUNT_GENERAL)
        return REASON_BAD_VALUE.format(field=CPT_TYPE, value=account_type, expected=expected)
    if account_type == ACCOUNT_CUSTOMER and not record[PCF_CODE]:
        return REASON_CUSTOMER_ACCOUNT_WITHOUT_CODE
    if imp.store:
        imp.state.upsert_account(record[CPT_NUMERO], provided, imp.endpoint.field_codes)
    return None


def _customers(imp: _LineImporter, provided: Record, record: Record) -> str | None:
    account = record[CPT_NUMERO]
    if account and not imp.state.has_account(account):
        return REASON_UNKNOWN_ACCOUNT.format(code=account)
    if imp.store:
        imp.state.upsert_customer(record[PCF_CODE], provided, imp.endpoint.field_codes)
    return None


def _contacts(imp: _LineImporter, provided: Record, record: Record) -> str | None:
    if not imp.state.has_customer(record[CCT_ORIGIN]):
        return REASON_UNKNOWN_CUSTOMER.format(code=record[CCT_ORIGIN])
    if imp.store:
        imp.state.upsert_contact(record[CCT_CODE], provided, imp.endpoint.field_codes)
    return None


def _references(imp: _LineImporter, provided: Record, record: Record) -> str | None:
    if record[ART_CODE] not in imp.items:
        return REASON_UNKNOWN_ITEM.format(code=record[ART_CODE])
    if not imp.state.has_customer(record[PCF_CODE]):
        return REASON_UNKNOWN_CUSTOMER.format(code=record[PCF_CODE])
    if imp.store:
        key = (record[ART_CODE], record[PCF_CODE])
        imp.state.upsert_reference(key, provided, imp.endpoint.field_codes)
    return None


def _stock_movements(imp: _LineImporter, provided: Record, record: Record) -> str | None:
    if record[DOC_STYPE] not in (STOCK_ENTRY, STOCK_EXIT):
        expected = _one_of(STOCK_ENTRY, STOCK_EXIT)
        return REASON_BAD_VALUE.format(field=DOC_STYPE, value=record[DOC_STYPE], expected=expected)
    if record[DEP_CODE] not in imp.warehouses:
        return REASON_UNKNOWN_WAREHOUSE.format(code=record[DEP_CODE])
    if record[ART_CODE] not in imp.items:
        return REASON_UNKNOWN_ITEM.format(code=record[ART_CODE])
    if parse_decimal(record[MVT_QTE], imp.config.decimal_separator) <= 0:  # parsed by _check_numbers already
        return REASON_NOT_POSITIVE.format(field=MVT_QTE, value=record[MVT_QTE])
    imp.run.movements.append(record)
    return None


_RULES: dict[str, _Rule] = {
    COMPTES.name: _accounts,
    CLIENTS.name: _customers,
    CONTACTS.name: _contacts,
    REFERENCES_CLIENTS_ARTICLES.name: _references,
    DOCUMENTS_STOCK.name: _stock_movements,
}


# --- the whole request --------------------------------------------------------------


def process_import(
    endpoint: Endpoint,
    body: bytes,
    config: SimulatorConfig,
    state: SimulatorState,
    *,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = datetime.now,
) -> ImportOutcome:
    """Runs one import request. The caller serialises calls (one import at a time)."""
    journal = _Journal(now)
    data_lines = 0
    test_mode = False
    try:
        task = task_name(endpoint)
        if endpoint.min_version > config.version:
            raise RequestError(
                400, ERROR_VERSION.format(task=task, required=endpoint.min_version, version=config.version)
            )
        request = parse_request(endpoint, body)
        test_mode = request.test_mode
        header, lines = split_header(endpoint, request)
        data_lines = len(lines)
        path = company_path(request.company_file)
        # Windows file names are case-insensitive.
        if request.company_file.casefold() != config.company_file.casefold():
            raise RequestError(404, ERROR_UNKNOWN_COMPANY.format(path=path))
        journal.add(JOURNAL_OPENING.format(path=path))
        if config.company_open_delay:
            sleep(config.company_open_delay)
        password_ok = hmac.compare_digest(request.password.encode("utf-8"), config.password.encode("utf-8"))
        if request.user != config.user or not password_ok:
            raise RequestError(401, ERROR_BAD_CREDENTIALS)
    except RequestError as exc:
        journal.add(exc.message)
        return ImportOutcome(
            status=exc.status,
            payload=error_payload(exc.message, journal.entries),
            lines=data_lines,
            test_mode=test_mode,
            error=exc.message,
        )

    journal.add(JOURNAL_OPENED.format(path=path))
    journal.add(JOURNAL_TASK_START.format(task=task))
    run = _LineImporter(endpoint, config, state, header, request).import_lines(lines)
    rejected = len(run.rejections)
    if rejected == 0:
        journal.add(JOURNAL_SUCCESS)
    journal.add(JOURNAL_IMPORTED_COUNT.format(n=run.imported))
    journal.add(JOURNAL_REJECTED_COUNT.format(n=rejected))
    for number, reason in run.rejections:
        journal.add(JOURNAL_REJECTED_LINE.format(n=number))
        journal.add(reason)
    for document in run.documents:
        journal.add(JOURNAL_DOCUMENT_CREATED.format(number=document))
    journal.add(JOURNAL_TASK_END.format(task=task))
    journal.add(JOURNAL_CLOSING.format(path=path))
    return ImportOutcome(
        status=200,
        payload=success_payload(
            journal.entries if request.journal else None,
            (run.imported, rejected) if request.statistics else None,
        ),
        lines=data_lines,
        imported=run.imported,
        rejected=rejected,
        test_mode=test_mode,
        documents=run.documents,
    )
