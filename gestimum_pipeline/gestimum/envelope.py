"""Request bodies: the documented `{"importer_x": {"societe": ..., "parametres": ...}}` envelope.

The key order follows Gestimum's examples, so a body built with the examples' settings
is byte-for-byte the documented one (tests/unit/test_protocol_unit.py checks all five).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gestimum_pipeline.gestimum.catalog import (
    NO,
    OPTION_TESTER,
    PARAM_ENTETE,
    PARAM_IDENTIFICATEUR,
    PARAM_JOURNAL,
    PARAM_NOMS_CHAMPS,
    PARAM_SEPARATEUR,
    PARAM_STATISTIQUES,
    PARAMETRES,
    SOCIETE,
    SOCIETE_DECONNECTER,
    SOCIETE_EXCLUSIF,
    SOCIETE_FICHIER,
    SOCIETE_MOT_PASSE,
    SOCIETE_UTILISATEUR,
    YES,
    Endpoint,
)
from gestimum_pipeline.gestimum.encoding import (
    DEFAULT_CHARSET,
    DEFAULT_DECIMAL_SEPARATOR,
    DEFAULT_QUALIFIER,
    DEFAULT_SEPARATOR,
    LineEncoder,
)


@dataclass(frozen=True)
class CompanySettings:
    """Which company file to open and as whom. The password never shows in repr()."""

    company_file: str
    user: str
    password: str = field(default="", repr=False)
    # Gestimum's `deconnecter`/`exclusif`: both "Non" in every documented example.
    disconnect: bool = False
    exclusive: bool = False


@dataclass(frozen=True)
class LineFormat:
    """How lines are written. `charset` and `decimal_separator` are the company's; they
    constrain what we encode and do not travel in the envelope."""

    separator: str = DEFAULT_SEPARATOR
    qualifier: str = DEFAULT_QUALIFIER
    charset: str | None = DEFAULT_CHARSET
    decimal_separator: str = DEFAULT_DECIMAL_SEPARATOR

    def encoder(self) -> LineEncoder:
        return LineEncoder(self.separator, self.qualifier, self.charset, self.decimal_separator)


def yes_no(flag: bool) -> str:
    return YES if flag else NO


def build_body(
    endpoint: Endpoint,
    company: CompanySettings,
    lines: Sequence[str],
    *,
    fmt: LineFormat = LineFormat(),
    test_mode: bool = False,
    options: Mapping[str, bool] | None = None,
    header: Sequence[str] | None = None,
) -> dict:
    """Builds the request body; `lines` are already-encoded data lines (header excluded).

    Options are sent only when given (Gestimum's default for each is "Non"), so the
    body stays identical to the documented examples. Raises ValueError for an option
    the endpoint does not document, or test mode on an endpoint without `tester`.
    """
    chosen: dict[str, bool] = {}
    for name, value in (options or {}).items():
        if name not in endpoint.options:
            documented = ", ".join(endpoint.options) or "none"
            raise ValueError(f"{endpoint.name} has no option {name!r} (documented: {documented})")
        if not isinstance(value, bool):
            raise ValueError(f"option {name!r} must be True or False, got {value!r}")
        chosen[name] = value
    if test_mode:
        if not endpoint.supports_test_mode or OPTION_TESTER not in endpoint.options:
            raise ValueError(f"{endpoint.name} has no documented test mode (`{OPTION_TESTER}` option)")
        if chosen.get(OPTION_TESTER) is False:
            raise ValueError(f"test_mode=True contradicts options[{OPTION_TESTER!r}]=False")
        chosen[OPTION_TESTER] = True

    encoder = fmt.encoder()  # validates the separator/qualifier pair
    header_line = encoder.encode_header(endpoint.header if header is None else header)
    parametres: dict[str, object] = {
        PARAM_JOURNAL: YES,  # we need the journal: it holds the per-line reasons and documents
        PARAM_STATISTIQUES: YES,
        PARAM_ENTETE: YES,  # the first line names the fields: column order is then explicit
        PARAM_NOMS_CHAMPS: "",
        PARAM_SEPARATEUR: fmt.separator,
        PARAM_IDENTIFICATEUR: fmt.qualifier,
    }
    # Documented order, whatever order the caller gave.
    for name in endpoint.options:
        if name in chosen:
            parametres[name] = yes_no(chosen[name])
    parametres[endpoint.lines_key] = [header_line, *lines]
    return {
        endpoint.envelope_key: {
            SOCIETE: {
                SOCIETE_FICHIER: company.company_file,
                SOCIETE_UTILISATEUR: company.user,
                SOCIETE_MOT_PASSE: company.password,
                SOCIETE_DECONNECTER: yes_no(company.disconnect),
                SOCIETE_EXCLUSIF: yes_no(company.exclusive),
            },
            PARAMETRES: parametres,
        }
    }


def encode_body(body: Mapping[str, object]) -> bytes:
    """The bytes the client sends: compact UTF-8 JSON.

    Compact separators make each extra line cost exactly `batching.line_cost(line)`.
    """
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def body_overhead(
    endpoint: Endpoint,
    company: CompanySettings,
    *,
    fmt: LineFormat = LineFormat(),
    test_mode: bool = False,
    options: Mapping[str, bool] | None = None,
) -> int:
    """Bytes of a request carrying no data line (envelope + header): `batched`'s overhead."""
    return len(encode_body(build_body(endpoint, company, [], fmt=fmt, test_mode=test_mode, options=options)))
