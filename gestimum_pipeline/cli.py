"""The `gestimum-pipeline` command: demo, simulator, and the operator's quarantine tools."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gestimum_pipeline.companies import CompanyFile
    from gestimum_pipeline.sync.endpoints import EndpointRegistry
    from gestimum_pipeline.sync.operator import ActionOutcome
    from gestimum_pipeline.sync.state import StateStore

STATE_URL_HELP = (
    "state store URL (default: $SYNC_STATE_DATABASE_URL, else $CRM_DATABASE_URL); one with a password is "
    "visible to every local user in `ps`: prefer the variables or --database-url-file"
)
URL_FILE_HELP = "read the database URL from this file (keeps a password out of the command line)"


def _url_from_argv(value: str | None, option: str) -> str | None:
    """`value`, with a warning when it carries a password: argv is readable by every local user (`ps`)."""
    from gestimum_pipeline.redaction import url_secrets

    if value and (url_secrets(value) or "password=" in value.lower()):
        print(
            f"warning: {option} carries a password, which every local user can read (ps, /proc): set the "
            "environment variable instead, or pass the URL in a file with --database-url-file",
            file=sys.stderr,
        )
    return value


def _url_from_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as source:
            return source.read().strip()
    except OSError as exc:
        raise SystemExit(f"--database-url-file: cannot read {path}: {exc.strerror}") from None


def _url_from_options(args: argparse.Namespace, variables: Sequence[str]) -> tuple[str, str] | None:
    """(URL, where it came from): `--database-url`, `--database-url-file`, then `variables` in order."""
    for setting, value in (
        ("--database-url", _url_from_argv(args.database_url, "--database-url")),
        ("--database-url-file", _url_from_file(args.database_url_file)),
        *((variable, os.environ.get(variable)) for variable in variables),
    ):
        if value:
            return value, setting
    return None


def _refuse_beside_company(company: CompanyFile, args: argparse.Namespace, options: Sequence[str], what: str) -> None:
    """`--company` reads `what` from its defs.yaml: the options that would also say it are refused."""
    given = [option for option in options if getattr(args, option[2:].replace("-", "_"))]
    if given:
        raise SystemExit(
            f"--company {company.name} reads {what} from {company.shown_path}: do not pass {', '.join(given)} with it"
        )


COMPANY_HELP = (
    "the company file NAME of a GestimumSync defs.yaml (docs/company-files.md): its state store's URL and schema, "
    "read from the variables it names; replaces --database-url and --schema"
)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which state store a command works on: a company file, or a URL and schema."""
    parser.add_argument("--company", metavar="NAME", help=COMPANY_HELP)
    parser.add_argument("--database-url", help=STATE_URL_HELP)
    parser.add_argument("--database-url-file", help=URL_FILE_HELP)
    parser.add_argument("--schema", help="the state store schema (default: gestimum_sync)")


@dataclass(frozen=True)
class StoreTarget:
    """Which state store, and the setting its URL came from (named in messages, never the URL's password)."""

    url: str
    schema: str
    setting: str
    company: CompanyFile | None = None

    @property
    def init_command(self) -> str:
        from gestimum_pipeline.sync.state import INIT_COMMAND

        return f"{INIT_COMMAND} --company {self.company.name}" if self.company else INIT_COMMAND


def company_file(args: argparse.Namespace) -> CompanyFile | None:
    """The company file `--company` names, or None without it."""
    from gestimum_pipeline.companies import CompanyFileError, find_company

    name = getattr(args, "company", None)
    if not name:
        return None
    try:
        return find_company(name)
    except CompanyFileError as exc:
        raise SystemExit(f"--company {name}: {exc}") from None


def store_target(args: argparse.Namespace) -> StoreTarget:
    """The state store `args` name: `--company`'s defs.yaml, else the options and the environment."""
    from gestimum_pipeline.companies import CompanyFileError
    from gestimum_pipeline.sync.state import DEFAULT_SCHEMA

    company = company_file(args)
    if company is not None:
        _refuse_beside_company(company, args, ("--database-url", "--database-url-file", "--schema"), "the state store")
        field = company.state_field()
        try:
            return StoreTarget(company.value(field), company.state_schema(), company.origin(field), company)
        except CompanyFileError as exc:
            raise SystemExit(f"--company {company.name}: {exc}") from None
    found = _url_from_options(args, ("SYNC_STATE_DATABASE_URL", "CRM_DATABASE_URL"))
    if found is not None:
        url, setting = found
        return StoreTarget(url, args.schema or DEFAULT_SCHEMA, setting)
    raise SystemExit(
        "no state store: pass --company NAME (a company file's defs.yaml), set SYNC_STATE_DATABASE_URL or "
        "CRM_DATABASE_URL, or pass --database-url"
    )


def open_store(args: argparse.Namespace) -> StateStore:
    """The existing state store `args` name (`store_target`); never creates one, so a mistyped name fails."""
    from gestimum_pipeline.db import DatabaseUnavailable
    from gestimum_pipeline.sync.state import StateStore, StateStoreError

    target = store_target(args)
    store = None
    try:
        store = StateStore(
            target.url,
            target.schema,
            setting=target.setting,
            endpoints=args.endpoints,
            init_command=target.init_command,
        )
        store.open_existing()
    except (DatabaseUnavailable, ValueError, StateStoreError) as exc:
        if store is not None:
            store.close()
        raise SystemExit(str(exc)) from None
    return store


def _cmd_state_init(args: argparse.Namespace) -> int:
    from gestimum_pipeline.companies import CompanyFileError
    from gestimum_pipeline.db import DatabaseUnavailable
    from gestimum_pipeline.redaction import redact_url
    from gestimum_pipeline.sync.state import StateStore, StateStoreError, gestimum_host

    target = store_target(args)
    company = target.company
    gestimum_url = args.gestimum_url
    company_name = args.company_file
    try:
        if company is not None:
            gestimum_url = gestimum_url or company.value("gestimum_url")
            company_name = company_name or company.value("company_file")
    except CompanyFileError as exc:
        raise SystemExit(f"--company {company.name}: {exc}") from None
    gestimum_url = gestimum_url or os.environ.get("GESTIMUM_URL")
    company_name = company_name or os.environ.get("GESTIMUM_FICHIER")
    if not gestimum_url or not company_name:
        raise SystemExit(
            "state init needs the Gestimum URL and company file the store belongs to: pass --company NAME "
            "(a company file's defs.yaml), set GESTIMUM_URL and GESTIMUM_FICHIER, or pass --gestimum-url and "
            "--company-file"
        )
    try:
        with StateStore(target.url, target.schema, setting=target.setting, endpoints=args.endpoints) as store:
            created = store.init(gestimum_url, company_name, actor=args.actor or None)
    except (DatabaseUnavailable, ValueError, StateStoreError) as exc:
        raise SystemExit(str(exc)) from None
    what = "created" if created else "already exists, up to date"
    print(
        f"state store {what} at {redact_url(target.url)} (schema {target.schema}), for company file "
        f"{company_name!r} on Gestimum host {gestimum_host(gestimum_url)!r}"
    )
    return 0


def _crm_target(args: argparse.Namespace) -> tuple[str, str, str]:
    """(CRM URL, schema, where the URL came from): `--company`'s defs.yaml, else the options and
    the environment (CRM_DATABASE_URL, CRM_SCHEMA)."""
    from gestimum_pipeline.companies import CompanyFileError
    from gestimum_pipeline.crm.contract import DEFAULT_SCHEMA

    company = company_file(args)
    if company is not None:
        _refuse_beside_company(company, args, ("--database-url", "--database-url-file"), "the CRM")
        try:
            schema = args.schema or company.value("crm_schema", DEFAULT_SCHEMA)
            return company.value("crm_url"), schema, company.origin("crm_url")
        except CompanyFileError as exc:
            raise SystemExit(f"--company {company.name}: {exc}") from None
    found = _url_from_options(args, ("CRM_DATABASE_URL",))
    if found is not None:
        url, setting = found
        return url, args.schema or os.environ.get("CRM_SCHEMA") or DEFAULT_SCHEMA, setting
    raise SystemExit(
        "no CRM database: set CRM_DATABASE_URL, pass --database-url (or --database-url-file), or --company"
    )


def _cmd_crm_init(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    import psycopg2

    from gestimum_pipeline.crm.ddl import create_reference_schema, holds_rows
    from gestimum_pipeline.crm.demo import load_demo_data
    from gestimum_pipeline.db import DatabaseUnavailable, connect, db_reason, validate_identifier
    from gestimum_pipeline.demo import demo_days
    from gestimum_pipeline.redaction import redact_url

    url, schema, setting = _crm_target(args)
    try:
        validate_identifier(schema, "--schema")
        conn = connect(url, setting=setting)
    except (DatabaseUnavailable, ValueError) as exc:
        raise SystemExit(f"crm init: {exc}") from None
    try:
        create_reference_schema(conn, schema)
        print(
            f"CRM reference schema {schema!r} ready at {redact_url(url)} "
            "(four relations; existing ones left as they are)"
        )
        if args.demo_data:
            full = holds_rows(conn, schema)
            if full:
                # Demo rows beside real ones would be synced to Gestimum as if they were customers.
                raise SystemExit(
                    f"crm init --demo-data: {', '.join(f'{schema}.{n}' for n in full)} already hold rows; demo rows "
                    "go into an empty schema only (pass another --schema)"
                )
            timezone = os.environ.get("GESTIMUM_SYNC_TIMEZONE", "Europe/Paris")
            days = demo_days(datetime.now(ZoneInfo(timezone)).date(), args.days)
            loaded = load_demo_data(conn, schema, days=days, customers_per_day=args.customers_per_day, tz=timezone)
            conn.commit()
            counts = ", ".join(f"{n} {name}" for name, n in loaded.counts().items())
            print(
                f"demo rows loaded for {days[0].isoformat()}...{days[-1].isoformat()}: {counts} "
                f"({len(loaded.bad_rows)} of them deliberately bad, for Gestimum or our validation to reject)"
            )
    except psycopg2.Error as exc:
        raise SystemExit(f"crm init: the CRM database ({setting}) failed: {db_reason(exc)}") from None
    finally:
        conn.close()
    return 0


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers): the operator must say who they are
        return ""


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gestimum_pipeline.demo import run_demo

    run_demo(
        home=Path(args.home) if args.home else None,
        database_url=_url_from_argv(args.database_url, "--database-url") or _url_from_file(args.database_url_file),
        days=args.days,
        customers_per_day=args.customers_per_day,
        ui=args.ui,
        port=args.port,
    )
    return 0


def _cmd_simulator(args: argparse.Namespace) -> int:
    import logging

    from gestimum_pipeline.simulator.server import config_from_args, serve

    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"simulator: {exc}") from None
    # One line per import request (never the body or the password).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(config, args.host, args.port)
    return 0


# Bidirectional overrides and isolates reorder what the terminal shows ("Trojan Source").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def terminal_safe(text: str) -> str:
    """`text` with control characters (ESC sequences, CR, BEL, C1 codes, bidi overrides) shown
    escaped: CRM values reach the operator's terminal through the text output."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS
        else ch
        for ch in text
    )


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


_LIST_COLUMNS = ("endpoint", "source_key", "status", "attempts", "updated_at", "reason")


def _check_endpoint(args: argparse.Namespace) -> None:
    registry: EndpointRegistry = args.endpoints
    if args.endpoint is not None and args.endpoint not in registry:
        raise SystemExit(f"unknown endpoint {args.endpoint!r}; one of {', '.join(registry.names)}")


def _cmd_rejections(args: argparse.Namespace) -> int:
    from gestimum_pipeline.sync.state import STATUSES, Status

    _check_endpoint(args)
    unknown = sorted(set(args.status or ()) - set(STATUSES))
    if unknown:
        raise SystemExit(f"unknown status {', '.join(unknown)}; one of {', '.join(STATUSES)}")
    store = open_store(args)
    try:
        rows = store.records(
            endpoint=args.endpoint,
            statuses=args.status or [Status.REJECTED, Status.HELD, Status.DELIVERY_UNKNOWN],
            reason_like=args.reason,
            older_than_seconds=args.older_than_hours * 3600 if args.older_than_hours else None,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        json.dump(
            [{k: _jsonable(v) for k, v in r.items() if k != "line"} for r in rows],
            sys.stdout,
            ensure_ascii=False,
            indent=2,
        )
        print()
        return 0
    if not rows:
        print("nothing rejected, held or undelivered")
        return 0
    table = [[terminal_safe(str(_jsonable(r[c])) if r[c] is not None else "") for c in _LIST_COLUMNS] for r in rows]
    widths = [min(60, max(len(c), *(len(t[i]) for t in table))) for i, c in enumerate(_LIST_COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(_LIST_COLUMNS, widths, strict=True)))
    for t in table:
        print("  ".join(v[:w].ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    print(f"\n{len(rows)} rows")
    return 0


def _confirm(args: argparse.Namespace, what: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise SystemExit(f"refusing to {what} without confirmation: pass --yes")
    answer = input(f"{what}? type 'yes' to confirm: ")
    if answer.strip().lower() != "yes":
        raise SystemExit("not confirmed; nothing changed")


def _report(outcome: ActionOutcome) -> int:
    print(f"{outcome.action}: {len(outcome.changed)} rows now {outcome.to_status}")
    if outcome.without_line:
        # A row refused locally has no line to send: only a corrected CRM row can be staged again.
        print(
            f"not changed (rejected locally, nothing to re-send: fix the CRM row, the next run stages it): "
            f"{', '.join(outcome.without_line)}",
            file=sys.stderr,
        )
    if outcome.skipped:
        print(f"not changed (not in {'/'.join(outcome.from_statuses)}): {', '.join(outcome.skipped)}", file=sys.stderr)
    return 0 if outcome.complete else 1


def _act(args: argparse.Namespace, what: str, operation: Callable[[StateStore], ActionOutcome]) -> int:
    """Confirms, then applies `operation(store)` (sync/operator.py, shared with the UI's jobs)."""
    from gestimum_pipeline.sync.operator import OperatorError

    if not args.actor.strip():
        raise SystemExit("who is acting? pass --actor NAME (it is recorded with the action)")
    _confirm(args, what)
    store = open_store(args)
    try:
        return _report(operation(store))
    except OperatorError as exc:
        raise SystemExit(str(exc)) from None
    finally:
        store.close()


def _cmd_retry(args: argparse.Namespace) -> int:
    from gestimum_pipeline.sync import operator

    _check_endpoint(args)
    return _act(
        args,
        f"retry {len(args.keys)} {args.endpoint} rows",
        lambda store: operator.retry(store, args.endpoints, args.endpoint, args.keys, actor=args.actor),
    )


def _cmd_ignore(args: argparse.Namespace) -> int:
    from gestimum_pipeline.sync import operator

    _check_endpoint(args)
    return _act(
        args,
        f"ignore {len(args.keys)} {args.endpoint} rows",
        lambda store: operator.ignore(
            store, args.endpoints, args.endpoint, args.keys, actor=args.actor, note=args.note
        ),
    )


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from gestimum_pipeline.sync import operator

    try:
        endpoint = operator.document_endpoint(args.endpoints)
    except operator.OperatorError as exc:
        raise SystemExit(str(exc)) from None
    if args.delivered and not (args.document or "").strip():
        raise SystemExit("--delivered needs --document: the Gestimum document these movements became")
    action = "reconcile-delivered" if args.delivered else "reconcile-release"
    return _act(
        args,
        f"{action} {len(args.keys)} {endpoint} rows",
        lambda store: operator.reconcile(
            store, args.endpoints, args.keys, actor=args.actor, delivered=args.delivered, document=args.document
        ),
    )


def _cmd_actions(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        rows = store.actions(limit=args.limit)
    finally:
        store.close()
    if args.json:
        json.dump([{k: _jsonable(v) for k, v in r.items()} for r in rows], sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    for r in rows:
        detail = r["detail"] or {}
        extra = ", ".join(f"{k}={v}" for k, v in detail.items() if v is not None)
        line = f"{_jsonable(r['at'])}  {r['actor']}  {r['action']}  {r['endpoint']}  {r['source_key']}  {extra}"
        print(terminal_safe(line))
    print(f"\n{len(rows)} actions")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from gestimum_pipeline.sync.history import row_history

    _check_endpoint(args)
    store = open_store(args)
    try:
        story = row_history(store, args.endpoints, args.endpoint, args.key, company=args.company)
    finally:
        store.close()
    if args.json:
        json.dump(story.as_json(), sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        print(terminal_safe_lines(story.as_text()))
    return 0


def terminal_safe_lines(text: str) -> str:
    """`text` line by line through terminal_safe (its own newlines kept)."""
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


def build_parser(endpoints: EndpointRegistry | None = None) -> argparse.ArgumentParser:
    """The command line; `endpoints` (default: the registry) are the endpoints the quarantine tools know."""
    from gestimum_pipeline.sync.endpoints import ENDPOINTS

    registry = ENDPOINTS if endpoints is None else endpoints
    parser = argparse.ArgumentParser(prog="gestimum-pipeline", description=__doc__)
    parser.set_defaults(endpoints=registry)
    sub = parser.add_subparsers(dest="command", required=True)
    endpoint_help = f"one of {', '.join(registry.names)}"

    demo = sub.add_parser("demo", help="run the whole sync on an embedded PostgreSQL and the simulator")
    demo.add_argument("--home", help="where the embedded PostgreSQL and DAGSTER_HOME live")
    demo.add_argument("--database-url", help="use this PostgreSQL server instead of the embedded one")
    demo.add_argument("--database-url-file", help=URL_FILE_HELP)
    demo.add_argument("--days", type=int, default=3)
    demo.add_argument("--customers-per-day", type=int, default=20)
    demo.add_argument(
        "--ui",
        action="store_true",
        help="then serve the Dagster UI on the demo (`dg dev`, in its environment) until Ctrl-C or SIGTERM, "
        "keeping PostgreSQL and the simulator running",
    )
    demo.add_argument("--port", type=int, help="the UI's port with --ui (default 3000)")
    demo.set_defaults(func=_cmd_demo)

    from gestimum_pipeline.simulator.server import add_cli_arguments

    sim = sub.add_parser("simulator", help="run the Gestimum simulator (a real HTTP server)")
    add_cli_arguments(sim)
    sim.set_defaults(func=_cmd_simulator)

    state = sub.add_parser("state", help="the sync state store")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    init = state_sub.add_parser(
        "init", help="create the state store for one Gestimum company file (runs never create it themselves)"
    )
    add_store_arguments(init)
    init.add_argument("--gestimum-url", help="the Gestimum URL (default: $GESTIMUM_URL)")
    init.add_argument("--company-file", help="the company file (default: $GESTIMUM_FICHIER)")
    init.add_argument("--actor", default=_default_actor(), help="who creates it (recorded; default: the OS user)")
    init.set_defaults(func=_cmd_state_init)

    crm = sub.add_parser("crm", help="the CRM side: the reference schema, demo rows")
    crm_sub = crm.add_subparsers(dest="crm_command", required=True)
    crm_init = crm_sub.add_parser(
        "init", help="create the reference schema (crm/schema.sql) in an existing database; --demo-data loads demo rows"
    )
    crm_init.add_argument(
        "--company",
        metavar="NAME",
        help="the company file NAME of a GestimumSync defs.yaml: its crm_url and crm_schema",
    )
    crm_init.add_argument("--database-url", help="the CRM database (default: $CRM_DATABASE_URL)")
    crm_init.add_argument("--database-url-file", help=URL_FILE_HELP)
    crm_init.add_argument("--schema", help="the schema to create (default: $CRM_SCHEMA, else crm)")
    crm_init.add_argument(
        "--demo-data", action="store_true", help="also load the demo's rows (into an empty schema only)"
    )
    crm_init.add_argument("--days", type=int, default=3, help="with --demo-data: days of rows, ending today")
    crm_init.add_argument("--customers-per-day", type=int, default=20)
    crm_init.set_defaults(func=_cmd_crm_init)

    rej = sub.add_parser("rejections", help="list rejected, held and undelivered rows")
    add_store_arguments(rej)
    rej.add_argument("--endpoint", help=endpoint_help)
    rej.add_argument(
        "--status", action="append", help="rejected, held, delivery_unknown, pending, ignored… (repeatable)"
    )
    rej.add_argument("--reason", help="substring of the reason")
    rej.add_argument("--older-than-hours", type=float)
    rej.add_argument("--limit", type=int, default=1000)
    rej.add_argument("--json", action="store_true")
    rej.set_defaults(func=_cmd_rejections)

    def action_args(p: argparse.ArgumentParser, with_endpoint: bool = True) -> None:
        add_store_arguments(p)
        if with_endpoint:
            p.add_argument("--endpoint", required=True, help=endpoint_help)
        p.add_argument("keys", nargs="+", help="source keys (see `rejections`)")
        p.add_argument("--actor", default=_default_actor(), help="who is acting (recorded; default: the OS user)")
        p.add_argument("--yes", action="store_true", help="confirm without prompting")

    retry = sub.add_parser("retry", help="re-queue rejected, held or ignored rows for the next run")
    action_args(retry)
    retry.set_defaults(func=_cmd_retry)

    ignore = sub.add_parser("ignore", help="mark rows ignored (re-opened if the CRM row changes)")
    action_args(ignore)
    ignore.add_argument("--note", help="why (recorded)")
    ignore.set_defaults(func=_cmd_ignore)

    rec = sub.add_parser("reconcile", help="settle stock movements whose delivery is unknown")
    action_args(rec, with_endpoint=False)
    mode = rec.add_mutually_exclusive_group(required=True)
    mode.add_argument("--delivered", action="store_true", help="Gestimum has them: record the document")
    mode.add_argument("--release", action="store_true", help="Gestimum does not have them: send them again")
    rec.add_argument("--document", help="the Gestimum document number (with --delivered)")
    rec.set_defaults(func=_cmd_reconcile)

    hist = sub.add_parser(
        "history", help="one row's whole story: CRM versions, requests, Gestimum's answers, actions, next step"
    )
    add_store_arguments(hist)
    hist.add_argument("--endpoint", required=True, help=endpoint_help)
    hist.add_argument("key", help="the row's source key (see `rejections`)")
    hist.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    hist.set_defaults(func=_cmd_history)

    act = sub.add_parser("actions", help="the operators' actions, newest first (who, when, what)")
    add_store_arguments(act)
    act.add_argument("--limit", type=int, default=100)
    act.add_argument("--json", action="store_true")
    act.set_defaults(func=_cmd_actions)
    return parser


def main(argv: Sequence[str] | None = None, endpoints: EndpointRegistry | None = None) -> int:
    import psycopg2

    from gestimum_pipeline.db import db_reason

    args = build_parser(endpoints).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except psycopg2.Error as exc:
        # A server message (never the connection's password), without a traceback.
        raise SystemExit(f"{args.command}: the state store failed: {db_reason(exc)}") from None


if __name__ == "__main__":
    sys.exit(main())
