"""The asset graph: CRM sources → transforms (lines per endpoint) → Gestimum sinks.

Rows never travel between assets as Python objects: sources describe a CRM time window,
transforms stream it into the state store (staged lines, local rejections), and sinks
stream the staged lines to Gestimum. Every step is bounded in memory, and every row's
whereabouts is durable in the state store between steps.
"""

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import dagster as dg
import psycopg2

from gestimum_pipeline.crm.contract import check_contract
from gestimum_pipeline.crm.queries import count_window_by_day, existing_keys
from gestimum_pipeline.db import DatabaseUnavailable, db_reason, validate_identifier
from gestimum_pipeline.defs.alerts import alerts_status
from gestimum_pipeline.defs.metadata import (
    COMPANY_FILE_TAG,
    ENDPOINT_TAG,
    column_lineage,
    company_file_tag,
    crm_column_schema,
    gestimum_column_schema,
    missing_run_tags,
    record_per_partition,
    table_name,
    tag_value,
    timestamp,
)
from gestimum_pipeline.defs.partitions import backfill_policy, daily_partitions
from gestimum_pipeline.defs.preflight import run_preflight
from gestimum_pipeline.defs.resources import (
    STATE_URL_SETTING,
    ConfigurationError,
    CrmDatabase,
    GestimumApi,
    SyncOptions,
    SyncStateDatabase,
    rename_settings,
)
from gestimum_pipeline.defs.schedules import PREFLIGHT_KEY
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.gestimum.errors import GestimumError
from gestimum_pipeline.sync.endpoints import EndpointRegistry, EndpointSpec
from gestimum_pipeline.sync.engine import (
    DeliveryUnknownError,
    RejectedRow,
    SendReport,
    StageReport,
    StateStoreFailure,
    SyncError,
    Window,
    day_function,
    send_endpoint,
    stage_endpoint,
    statistics_problems,
    summary_line,
    unaccountable_answer,
)
from gestimum_pipeline.sync.mapping import MAPPING_VERSION
from gestimum_pipeline.sync.refresh import refresh_from_crm
from gestimum_pipeline.sync.state import Status

OWNERS = ["team:data-engineering"]
SOURCE_CONTRACT_CHECK = "source_contract"
STATISTICS_CHECK = "statistics_consistent"


def gestimum_pool(company_file: str) -> str:
    """Sinks share the pool of their company file: with the instance's pool limit of 1
    (dagster.yaml), one sink at a time writes to a company file, across all runs."""
    return "gestimum_" + re.sub(r"[^A-Za-z0-9_]", "_", company_file.strip() or "default")


def sink_freshness(max_lag_minutes: float) -> dg.FreshnessPolicy:
    """Gestimum may lag the CRM by `max_lag_minutes` (GESTIMUM_MAX_LAG_MINUTES): a sink not
    materialized for that long fails its freshness policy, and warns at two thirds of it."""
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=max_lag_minutes), warn_window=timedelta(minutes=max_lag_minutes * 2 / 3)
    )


def _partitioned(partitions: dg.PartitionsDefinition) -> dict[str, Any]:
    """What every asset of the sync shares: owners, daily partitions, one run per backfill."""
    return {"owners": OWNERS, "partitions_def": partitions, "backfill_policy": backfill_policy}


def source_key(relation: str, settings: Settings | None = None) -> dg.AssetKey:
    return (settings or _UNSCOPED).asset_key("crm", relation)


def transform_key(endpoint: str, settings: Settings | None = None) -> dg.AssetKey:
    return (settings or _UNSCOPED).asset_key("transform", endpoint)


def sink_key(endpoint: str, settings: Settings | None = None) -> dg.AssetKey:
    return (settings or _UNSCOPED).asset_key("gestimum", endpoint)


def preflight_key(settings: Settings | None = None) -> dg.AssetKey:
    return (settings or _UNSCOPED).asset_key(*PREFLIGHT_KEY.path)


_UNSCOPED = Settings()
RESOURCE_NAMES = ("crm", "gestimum", "sync_state", "sync_options")


@dataclass(frozen=True)
class _Resources:
    """A company file's resources, under its resource keys (Settings.scoped): several company
    files in one code location each have their own."""

    crm: CrmDatabase
    gestimum: GestimumApi
    sync_state: SyncStateDatabase
    sync_options: SyncOptions


def _resource_keys(settings: Settings) -> set[str]:
    return {settings.scoped(name) for name in RESOURCE_NAMES}


def _resources(context: dg.AssetExecutionContext, settings: Settings) -> _Resources:
    _tag_run(context, settings)
    return _Resources(*(getattr(context.resources, settings.scoped(name)) for name in RESOURCE_NAMES))


def _tag_run(context: dg.AssetExecutionContext, settings: Settings) -> None:
    """A run launched from the asset graph (or `dg launch --assets`) is Dagster's own asset job,
    which no definition can tag: its first step adds the tags `gestimum_sync` runs carry, so run
    history filters by company file and trigger whatever launched it. A no-op on tagged runs."""
    if context.run_id in _TAGGED_RUNS:
        return  # an earlier step of this run in this process tagged it (context.run is loaded once)
    missing = missing_run_tags(context.run.tags, settings.company_file)
    if missing:
        context.instance.add_run_tags(context.run_id, missing)
    _TAGGED_RUNS.add(context.run_id)


_TAGGED_RUNS: set[str] = set()


def _window(context: dg.AssetExecutionContext, options: SyncOptions) -> Window:
    tw = context.partition_time_window
    return Window.for_partitions(tw.start, tw.end, timedelta(minutes=options.lookback_minutes))


def _partition_label(context: dg.AssetExecutionContext) -> str:
    r = context.partition_key_range
    return r.start if r.start == r.end else f"{r.start}...{r.end}"


def _fail(what: str, exc: Exception) -> dg.Failure:
    return dg.Failure(description=f"{what}: {exc}")


def step_retry_policy(settings: Settings) -> dg.RetryPolicy | None:
    """Sources and transforms are re-executed after a transient database error (they only read
    the CRM and write the state store, idempotently). Sinks never get one: a POST may have been
    delivered, and the state store, not a blind re-execution, decides what is sent again."""
    if settings.step_retries <= 0:
        return None
    return dg.RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.step_retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def _transient(what: str, exc: Exception) -> dg.Failure:
    """A failure the step's retry policy may re-execute (database unreachable, connection lost)."""
    return dg.Failure(description=f"{what}: {exc}", allow_retries=True)


@contextmanager
def _settings_named(context: dg.AssetExecutionContext, settings: Settings) -> Iterator[None]:
    """A step's failure names the company file's own settings (ACME_CRM_DATABASE_URL (…/defs.yaml,
    crm_url), ACME_GESTIMUM_PASSWORD, ...) where the sync's messages name the defaults
    (CRM_DATABASE_URL, GESTIMUM_MOT_PASSE, ...)."""
    try:
        yield
    except dg.Failure as failure:
        res = _resources(context, settings)
        names = {**res.crm.setting_names(), **res.gestimum.setting_names(), STATE_URL_SETTING: res.sync_state.setting}
        description = rename_settings(failure.description or "", names)
        if description == failure.description:
            raise
        raise dg.Failure(
            description=description, metadata=failure.metadata, allow_retries=failure.allow_retries
        ) from None


def _asset_tags(settings: Settings, endpoint: str | None = None) -> dict[str, str]:
    tags = {COMPANY_FILE_TAG: company_file_tag(settings.company_file)}
    if endpoint is not None:
        tags[ENDPOINT_TAG] = tag_value(endpoint)
    return tags


def build_preflight(partitions: dg.PartitionsDefinition, settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=preflight_key(settings),
        required_resource_keys=_resource_keys(settings),
        tags=_asset_tags(settings),
        group_name="sync",
        kinds={"python"},
        **_partitioned(partitions),
        description="Checks every setting and reaches the CRM (source contract) and the state store before any "
        "data moves, and Gestimum (an empty Comptes import in test mode: credentials and company file, nothing "
        "stored) unless Gestimum accepted these credentials within GESTIMUM_ACCESS_CHECK_INTERVAL_SECONDS. When "
        "it fails, the run stops here with each problem and the setting to fix.",
    )
    def preflight(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        res = _resources(context, settings)
        crm, gestimum, sync_state, sync_options = res.crm, res.gestimum, res.sync_state, res.sync_options
        report = run_preflight(crm, gestimum, sync_state, sync_options, context.log, run_id=context.run_id)
        if not report.ok:
            raise ConfigurationError(description=report.failure_message())
        context.log.info(
            "preflight passed in %.3fs (CRM %.3fs, state store %.3fs, Gestimum %.3fs)",
            sum(report.seconds.values()),
            report.seconds["crm"],
            report.seconds["state_store"],
            report.seconds["gestimum"],
        )
        return dg.MaterializeResult(
            metadata={
                "crm_check_seconds": round(report.seconds["crm"], 3),
                "state_store_check_seconds": round(report.seconds["state_store"], 3),
                "gestimum_check_seconds": round(report.seconds["gestimum"], 3),
                "gestimum_requests": report.gestimum_requests,
                "gestimum_access": report.gestimum_access,
                "tls_verification": report.tls_verification,
                "dry_run": sync_options.dry_run,
                "alerts": alerts_status(settings.alert_webhook_configured),
            }
        )

    return preflight


def build_source(relation: str, partitions: dg.PartitionsDefinition, settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=source_key(relation, settings),
        deps=[preflight_key(settings)],
        required_resource_keys=_resource_keys(settings),
        group_name="crm",
        kinds={"postgres"},
        **_partitioned(partitions),
        metadata={
            "dagster/column_schema": crm_column_schema(relation),
            **table_name(settings.crm_schema, relation),
        },
        tags=_asset_tags(settings),
        retry_policy=step_retry_policy(settings),
        description=f"CRM rows of `{relation}` whose change time falls in the partition (plus the look-back "
        "window). The rows stay in the CRM; this asset checks the source contract and records what the window holds.",
        check_specs=[
            dg.AssetCheckSpec(
                SOURCE_CONTRACT_CHECK,
                asset=source_key(relation, settings),
                blocking=True,
                description=f"`{relation}` has the source contract's columns, a timestamptz change column, and "
                "is readable; checked before any row is read, and nothing downstream runs when it fails.",
            )
        ],
    )
    def _source(context: dg.AssetExecutionContext) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        with _settings_named(context, settings):
            yield from _read_source(context)

    def _read_source(context: dg.AssetExecutionContext) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        res = _resources(context, settings)
        crm, sync_options = res.crm, res.sync_options
        window = _window(context, sync_options)
        schema = validate_identifier(crm.schema_name, "CRM_SCHEMA")
        try:
            conn = crm.connect()
        except DatabaseUnavailable as exc:
            raise _transient("CRM unreachable", exc) from None
        try:
            # One connection: the contract is read from the catalog, then the window is counted.
            problems = check_contract(conn, schema, [relation])
            contract = dg.AssetCheckResult(
                check_name=SOURCE_CONTRACT_CHECK,
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(problems) or f"{schema}.{relation} meets the source contract",
                metadata={"schema": schema, "problems": len(problems)},
            )
            if problems:
                yield contract  # recorded on the asset before the run stops: the catalog shows why
                raise ConfigurationError(
                    description=f"The CRM does not match the source contract (README, 'Source contract'): "
                    f"{'; '.join(problems)}. Nothing was read; fix the relation (or its view), then rerun."
                )
            by_day = count_window_by_day(conn, schema, relation, window.start, window.end, settings.timezone)
        except psycopg2.Error as exc:
            raise dg.Failure(
                description=f"CRM query on {schema}.{relation} failed ({db_reason(exc)}); nothing was staged or "
                "sent. Check that the CRM (CRM_DATABASE_URL) is reachable, then rerun the partition.",
                # A lost connection may be transient; a wrong query or permission is not.
                allow_retries=isinstance(exc, psycopg2.OperationalError),
            ) from None
        finally:
            conn.close()
        latest = max((last for _, last in by_day.values()), default=None)
        # Each day its own CRM rows (by change time); the window (look-back included) once, on the run.
        record_per_partition(
            context,
            {day: {"crm_rows": n} for day, (n, _) in by_day.items()},
            ["crm_rows"],
            row_figure="crm_rows",
            run_wide={
                "window_start": timestamp(window.start),
                "window_end": timestamp(window.end),
                "run_last_change": timestamp(latest),
                "schema": schema,
            },
            day_extra=lambda day: {"last_change": timestamp(by_day[day][1]) if day in by_day else None},
        )
        # The relation read (a resource may override settings' schema): the same on every partition.
        yield dg.MaterializeResult(metadata=table_name(schema, relation), check_results=[contract])

    return _source


STAGE_FIGURES = ("rows_read", "lines_staged", "rejected_locally")
SEND_FIGURES = ("lines_sent", "imported", "rejected")


def _stage_metadata(report: StageReport, force: bool) -> dict[str, object]:
    """The transform's run-wide metadata (its per-day figures: record_per_partition)."""
    metadata: dict[str, object] = {
        "unchanged": report.unchanged,
        "force": force,
        "duration_seconds": round(report.duration_seconds, 3),
        "window_start": timestamp(report.window.start),
        "window_end": timestamp(report.window.end),
    }
    for rule, n in sorted(report.rules.items()):
        metadata[f"rule_{rule}"] = n
    if report.rejections:
        metadata["local_rejections"] = dg.MetadataValue.table(
            records=[dg.TableRecord({"source_key": k, "reason": r}) for k, r in report.rejections],
            schema=dg.TableSchema(columns=[dg.TableColumn("source_key", "string"), dg.TableColumn("reason", "string")]),
        )
    return metadata


def build_transform(
    spec: EndpointSpec, partitions: dg.PartitionsDefinition, settings: Settings, endpoints: EndpointRegistry
) -> dg.AssetsDefinition:
    endpoint, relation = spec.name, spec.relation

    @dg.asset(
        key=transform_key(endpoint, settings),
        deps=[source_key(relation, settings)],
        required_resource_keys=_resource_keys(settings),
        group_name="transform",
        kinds={"python", "postgres"},
        **_partitioned(partitions),
        # What a row becomes is the mapping's: a new mapping version makes the catalog show the change.
        code_version=str(MAPPING_VERSION),
        metadata={"dagster/column_schema": gestimum_column_schema(spec.wire)},
        tags=_asset_tags(settings, endpoint),
        retry_policy=step_retry_policy(settings),
        description=f"`{relation}` rows mapped to Gestimum {endpoint} lines and validated; changed rows are "
        "staged in the sync state store, invalid ones rejected there with their reason.",
    )
    def _transform(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with _settings_named(context, settings):
            return _stage(context)

    def _stage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        res = _resources(context, settings)
        crm, gestimum, sync_state, sync_options = res.crm, res.gestimum, res.sync_state, res.sync_options
        window = _window(context, sync_options)
        try:
            schema = crm.checked_schema([relation])
            state = sync_state.open(endpoints)
        except DatabaseUnavailable as exc:
            raise _transient("database unreachable", exc) from None
        try:
            mapper = spec.make_mapper(gestimum.line_format().encoder(), sync_options.account_prefix)
            day_of = day_function(settings.timezone)
            report = stage_endpoint(
                crm_connect=crm.connect,
                crm_schema=schema,
                state=state,
                spec=spec,
                mapper=mapper,
                window=window,
                partition=_partition_label(context),
                run_id=context.run_id,
                force=sync_options.force,
                chunk_size=sync_options.chunk_size,
                logger=context.log,
                day_of=day_of,
            )
            # Rows Gestimum rejected, or an operator re-queued, whatever their window: staged again
            # from the CRM's current row, so a fix there is sent by this run, never a stale line.
            refreshed = refresh_from_crm(
                crm_connect=crm.connect,
                crm_schema=schema,
                state=state,
                spec=spec,
                mapper=mapper,
                partition=_partition_label(context),
                run_id=context.run_id,
                chunk_size=sync_options.chunk_size,
                day_of=day_of,
            )
        except DatabaseUnavailable as exc:
            raise _transient("database unreachable while streaming rows; rerun the partition", exc) from None
        except SyncError as exc:  # the CRM or the state store failed mid-stream; the message says what next
            raise dg.Failure(description=f"{endpoint} not staged: {exc}") from None
        finally:
            state.close()
        context.log.info(
            "%s: %d rows read, %d staged, %d unchanged, %d rejected locally",
            endpoint,
            report.rows_read,
            report.staged,
            report.unchanged,
            report.rejected_locally,
        )
        if refreshed.staged:
            context.log.info("%s: %d rejected or re-queued rows re-staged from the CRM", endpoint, refreshed.staged)
        metadata = _stage_metadata(report, sync_options.force)
        metadata["restaged_from_crm"] = refreshed.staged
        record_per_partition(context, report.by_day, STAGE_FIGURES, row_figure="lines_staged", run_wide=metadata)
        return dg.MaterializeResult()

    return _transform


_REJECTIONS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("request", "int"),
        dg.TableColumn("line", "int"),
        dg.TableColumn("source_key", "string"),
        dg.TableColumn("reason", "string"),
    ]
)


def _rejections_table(rows: list[RejectedRow]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"request": r.request, "line": r.line, "source_key": r.source_key, "reason": r.reason})
            for r in rows
        ],
        schema=_REJECTIONS_SCHEMA,
    )


def _send_metadata(report: SendReport, pending_after: int, held_after: int) -> dict[str, object]:
    """The sink's run-wide metadata (its per-day figures and rejections: record_per_partition)."""
    metadata: dict[str, object] = {
        "requests": report.requests,
        "bytes_posted": report.bytes_posted,
        "http_attempts": report.http_attempts,
        "duration_seconds": round(report.duration_seconds, 3),
        "documents_created": len(report.documents),
        "dry_run": report.dry_run,
        # Rows of the endpoint held for their parent after the run (rows_to_act_on names them), and
        # how many of them this run held.
        "held_for_parent": held_after,
        "newly_held_for_parent": report.held,
        "released_after_parent_import": report.released,
        "recovered_in_flight": report.recovered_in_flight,
        "pending_after": pending_after,
    }
    if report.dry_run:
        metadata["would_send_without_tester"] = report.would_send
    if report.documents:
        shown = report.documents[:50]
        metadata["documents"] = ", ".join(shown) + (" …" if len(report.documents) > 50 else "")
    if report.delivery_unknown:
        metadata["delivery_unknown"] = report.delivery_unknown
    if report.access_checks:  # the test-mode check before the first stock request
        metadata["access_checks"] = report.access_checks
    if report.journal:  # entries were redacted by the client as they were collected
        more = report.journal_entries - len(report.journal)
        text = "\n".join(report.journal) + (f"\n… {more} more entries" if more > 0 else "")
        # Gestimum's own words (French), labelled as such beside our English.
        metadata["gestimum_journal"] = dg.MetadataValue.md(
            f"Gestimum's journal, as Gestimum wrote it ([n]: the run's request n):\n\n```\n{text}\n```"
        )
    return metadata


def _statistics_result(problems: list[str], report: SendReport | None) -> dg.AssetCheckResult:
    counts = (
        {"lines_sent": report.lines_sent, "imported": report.imported, "rejected": report.rejected}
        if report is not None
        else {}
    )
    return dg.AssetCheckResult(
        check_name=STATISTICS_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems)
        or f"Gestimum's statistics account for every line sent ({counts['imported']} imported + "
        f"{counts['rejected']} rejected = {counts['lines_sent']} sent)",
        metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()},
    )


def build_sink(
    spec: EndpointSpec, partitions: dg.PartitionsDefinition, settings: Settings, endpoints: EndpointRegistry
) -> dg.AssetsDefinition:
    endpoint_name, endpoint = spec.name, spec.wire
    deps = [transform_key(endpoint_name, settings)]
    if spec.parent is not None:
        deps.append(sink_key(spec.parent, settings))
    lineage = column_lineage(spec, source_key(spec.relation, settings))

    @dg.asset(
        key=sink_key(endpoint_name, settings),
        deps=deps,
        required_resource_keys=_resource_keys(settings),
        group_name="gestimum",
        kinds={"gestimum", "api"},
        **_partitioned(partitions),
        code_version=str(MAPPING_VERSION),
        metadata={"dagster/column_schema": gestimum_column_schema(spec.wire)},
        tags=_asset_tags(settings, endpoint_name),
        # No retry policy: a sink step is never re-executed automatically (see step_retry_policy).
        pool=gestimum_pool(settings.company_file),
        freshness_policy=sink_freshness(settings.max_lag_minutes),
        description=f"Staged {endpoint_name} lines sent to Gestimum's `{unquote(endpoint.path)}` endpoint, with "
        "Gestimum's statistics. Every line ends imported, rejected with Gestimum's reason, or still pending.",
        check_specs=[
            dg.AssetCheckSpec(
                STATISTICS_CHECK,
                asset=sink_key(endpoint_name, settings),
                blocking=True,
                description="Gestimum's statistics add up to the lines sent, every rejected line has its reason, "
                "imported stock lines have documents, and the state store recorded every answer. When it fails, "
                "nothing downstream runs.",
            )
        ],
    )
    def _sink(context: dg.AssetExecutionContext) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        with _settings_named(context, settings):
            yield from _send(context)

    def _send(context: dg.AssetExecutionContext) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        res = _resources(context, settings)
        crm, gestimum, sync_state, sync_options = res.crm, res.gestimum, res.sync_state, res.sync_options
        client = gestimum.client(context.log)
        try:
            state = sync_state.open(endpoints)
        except DatabaseUnavailable as exc:
            client.close()
            raise _fail("state store unreachable", exc) from None
        crm_conn: Any = None

        def source_exists(keys: list[str]) -> set[str]:
            # Movements deleted in the CRM before they are sent are withdrawn, not sent.
            nonlocal crm_conn
            if crm_conn is None:
                crm_conn = crm.connect()
                crm_conn.autocommit = True
            return existing_keys(crm_conn, crm.schema_name, spec.relation, keys)

        failure: dg.Failure | None = None
        cause: Exception | None = None
        report: SendReport | None = None
        try:
            report = send_endpoint(
                state=state,
                client=client,
                endpoint=endpoint,
                company_file=gestimum.company_file,
                max_lines=gestimum.max_lines_per_request,
                max_bytes=gestimum.max_bytes_per_request,
                dry_run=sync_options.dry_run,
                run_id=context.run_id,
                logger=context.log,
                source_exists=source_exists if spec.creates_documents else None,
            )
            counts = state.counts(endpoint_name).get(endpoint_name, {})
        except DeliveryUnknownError as exc:
            cause, failure = exc, dg.Failure(description=str(exc), allow_retries=False)
        except StateStoreFailure as exc:
            cause, failure = exc, dg.Failure(description=f"{endpoint_name} not synced: {exc}", allow_retries=False)
        except (GestimumError, SyncError, DatabaseUnavailable) as exc:
            cause, failure = (
                exc,
                _fail(
                    f"{endpoint_name} not synced; rows not confirmed stay pending in the state store and are "
                    "sent by the next run",
                    exc,
                ),
            )
        finally:
            state.close()
            client.close()
            if crm_conn is not None:
                crm_conn.close()
        if failure is not None:
            answer_problem = unaccountable_answer(cause) if cause is not None else None
            if answer_problem is not None:
                # Gestimum answered but its answer cannot be accounted for: the check says so in the catalog.
                yield _statistics_result([str(answer_problem)], None)
            raise failure
        assert report is not None
        metadata = _send_metadata(report, counts.get(Status.PENDING, 0), counts.get(Status.HELD, 0))
        context.log.info(
            summary_line(report, held_after=counts.get(Status.HELD, 0), pending_after=counts.get(Status.PENDING, 0))
        )
        rejections_by_day: dict[str | None, list[RejectedRow]] = defaultdict(list)
        for r in report.rejections:
            rejections_by_day[r.partition].append(r)
        record_per_partition(
            context,
            report.by_day,
            SEND_FIGURES,
            row_figure="lines_sent",  # lines sent to Gestimum: imported + rejected
            run_wide=metadata,
            day_extra=lambda day: {"rejections": _rejections_table(rejections_by_day.get(day, []))},
        )
        problems = statistics_problems(report, counts.get(Status.IN_FLIGHT, 0), endpoints)
        statistics = _statistics_result(problems, report)
        if spec.creates_documents and report.delivery_unknown:
            yield statistics
            raise dg.Failure(
                description=f"{report.delivery_unknown} stock movements are in delivery_unknown: they may or may "
                "not have become documents in Gestimum and are not re-sent. Check in Gestimum, then reconcile "
                "them with `gestimum-pipeline reconcile` (list: `gestimum-pipeline rejections --status "
                "delivery_unknown`).",
                metadata=metadata,
                allow_retries=False,
            )
        shared = {"dagster/column_lineage": lineage} if lineage.deps_by_column else {}
        yield dg.MaterializeResult(metadata=shared, check_results=[statistics])

    return _sink


def build_assets(settings: Settings, endpoints: EndpointRegistry) -> list[dg.AssetsDefinition]:
    """The preflight, one source per CRM relation, and a transform and a sink per endpoint."""
    partitions = daily_partitions(settings)
    return [
        build_preflight(partitions, settings),
        *(build_source(relation, partitions, settings) for relation in endpoints.relations),
        *(build_transform(spec, partitions, settings, endpoints) for spec in endpoints),
        *(build_sink(spec, partitions, settings, endpoints) for spec in endpoints),
    ]
