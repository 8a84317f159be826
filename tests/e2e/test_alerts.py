"""Failure alerts against a real local HTTP receiver: payloads, delivery, and both sensors on real runs."""

from __future__ import annotations

import json
import logging
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sync_harness import insert_contacts, insert_customers, run_sync, state_records

from gestimum_pipeline.db import create_database, drop_database, normalize_url
from gestimum_pipeline.defs.alerts import (
    ALERT_WEBHOOK_ENV,
    ALERTS_OFF,
    UI_URL_ENV,
    AlertWebhook,
    build_alert_webhook,
    check_failure_alert,
    failed_checks_of_run,
    run_failure_alert,
)
from gestimum_pipeline.defs.build import alert_definitions
from gestimum_pipeline.defs.settings import Settings
from gestimum_pipeline.notify.webhook import (
    WebhookError,
    WebhookNotifier,
    check_failure_payload,
    run_failure_payload,
)
from gestimum_pipeline.redaction import redact_text
from gestimum_pipeline.simulator.server import GestimumSimulator
from gestimum_pipeline.sync.endpoints import ENDPOINTS

TOKEN = "xoxb-T0ALERT-s3cr3tT0k3n"
TOKEN_PATH = f"/services/T0ALERT/B0HOOK/{TOKEN}"
DB_PASSWORD = "Crm-Pa55word-9"
UI = "http://dagster.example:3000"
DAY = "2026-03-28"
DAY_TS = "2026-03-28 10:00:00+01"


# --------------------------------------------------------------------------- the receiver


class Receiver:
    """A webhook receiver on 127.0.0.1: records every attempt; can answer 500 or hang on demand."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.fail_next = 0  # answer 500 to this many attempts first
        self.hang = threading.Event()  # set: never answer (until released)
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts += 1
                if receiver.hang.is_set():
                    receiver.release.wait(10)
                    return
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self._answer(500, b"busy")
                    return
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self._answer(200, b"ok")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{TOKEN_PATH}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def texts(self) -> list[str]:
        return [b["text"] for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.release.set()
        r.server.shutdown()
        r.server.server_close()


def assert_slack_compatible(body: dict[str, Any]) -> None:
    assert isinstance(body["text"], str) and body["text"]
    (block,) = body["blocks"]
    assert block == {"type": "section", "text": {"type": "mrkdwn", "text": body["text"]}}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and TOKEN_PATH not in text
        assert DB_PASSWORD not in text


@contextmanager
def no_deprecation_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        yield


# --------------------------------------------------------------------------- payloads


def test_run_failure_payload_carries_run_partitions_steps_and_link_without_secrets() -> None:
    leak = f"could not reach postgresql://sync:{DB_PASSWORD}@crm:5432/crm (password={DB_PASSWORD})"
    payload = run_failure_payload(
        job_name="gestimum_sync",
        run_id="abc-123",
        tags={"dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-31"},
        step_failures=[("crm__customers", leak), ("crm__contacts", leak), ("gestimum__clients", "x < y & z")],
        run_message="Execution of run failed.",
        ui_url=UI + "/",
        secrets=[TOKEN_PATH],
    )
    assert_slack_compatible(payload)
    text = payload["text"]
    assert "gestimum_sync" in text and "abc-123" in text
    assert "2026-03-01...2026-03-31" in text
    # One line for the steps sharing a cause; the DB password is redacted, mrkdwn control characters escaped.
    assert "Steps `crm__customers`, `crm__contacts` failed: could not reach postgresql://sync:***@crm:5432/crm" in text
    assert "password=***" in text
    assert "x &lt; y &amp; z" in text
    assert text.endswith(f"{UI}/runs/abc-123")
    assert_no_secret(text)


def test_run_failure_payload_without_step_failures_uses_the_run_message_and_no_link() -> None:
    payload = run_failure_payload(
        job_name="gestimum_sync",
        run_id="r1",
        tags={"dagster/partition": DAY},
        step_failures=[],
        run_message="run worker crashed",
    )
    assert f"Partitions: {DAY}" in payload["text"] and "run worker crashed" in payload["text"]
    assert "/runs/" not in payload["text"]


def test_check_failure_payload_carries_severity_counts_samples_and_link() -> None:
    payload = check_failure_payload(
        asset_key_path=["gestimum", "contacts"],
        check_name="no_rejected_lines",
        severity="WARN",
        description="1 line rejected by Gestimum",
        metadata={"rejected": 1, "imported": 3.0, "held": 0},
        samples=[{"source_key": "KC2", "reason": "client NOPE inconnu"}] * 5,
        run_id="r2",
        partition=DAY,
        ui_url=UI,
        secrets=[TOKEN_PATH],
    )
    assert_slack_compatible(payload)
    text = payload["text"]
    assert "(WARN)" in text and "`gestimum/contacts`" in text and "no_rejected_lines" in text
    assert "1 line rejected by Gestimum" in text
    assert "rejected: 1, imported: 3, held: 0" in text
    assert text.count("source_key: KC2; reason: client NOPE inconnu") == 3 and "(and 2 more)" in text
    assert f"{UI}/assets/gestimum/contacts?view=checks" in text


def test_long_messages_are_cut_to_what_slack_shows() -> None:
    payload = run_failure_payload(
        job_name="j", run_id="r", tags={}, step_failures=[(f"s{i}", f"{i}" + "x" * 900) for i in range(9)]
    )
    assert len(payload["text"]) <= 3000 and payload["text"].endswith("…")
    assert payload["blocks"][0]["text"]["text"] == payload["text"]


def test_redact_text_hides_url_passwords_and_explicit_secrets() -> None:
    text = f"a https://u:{DB_PASSWORD}@h/x b {TOKEN_PATH} c"
    assert redact_text(text, [TOKEN_PATH]) == "a https://u:***@h/x b *** c"


# --------------------------------------------------------------------------- delivery


def test_notifier_posts_json_and_retries_after_500(receiver: Receiver) -> None:
    receiver.fail_next = 2
    with WebhookNotifier(receiver.url, retries=3, backoff_seconds=0.01) as notifier:
        notifier.post({"text": "hello"})
    assert receiver.attempts == 3
    assert receiver.bodies == [{"text": "hello"}]
    assert receiver.headers[0]["Content-Type"] == "application/json"


def test_notifier_error_after_retries_names_only_the_host(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 quotes the request path at DEBUG and WARNING
    receiver.fail_next = 100
    notifier = WebhookNotifier(receiver.url, retries=2, backoff_seconds=0.01)
    with pytest.raises(WebhookError) as raised:
        notifier.post({"text": "hello"})
    message = str(raised.value)
    assert receiver.attempts == 3
    assert message == f"alert webhook at {receiver.host} answered HTTP 500 after 3 attempts: busy"
    # Nothing chained: a traceback of the error cannot show requests' exception (which quotes the URL).
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    assert "127.0.0.1" in caplog.text  # urllib3 did log, redacted
    assert_no_secret(message, caplog.text, repr(notifier))


def test_notifier_unreachable_receiver(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = receiver.server.server_address[1]
    receiver.server.shutdown()
    receiver.server.server_close()
    with pytest.raises(WebhookError, match=rf"could not reach the alert webhook at 127\.0\.0\.1:{port} \(") as raised:
        WebhookNotifier(receiver.url, retries=1, backoff_seconds=0.01).post({"text": "x"})
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert_no_secret(str(raised.value), caplog.text)


def test_notifier_times_out_and_does_not_post_twice(receiver: Receiver) -> None:
    receiver.hang.set()
    with pytest.raises(WebhookError) as raised:
        WebhookNotifier(receiver.url, timeout_seconds=0.3, retries=3, backoff_seconds=0.01).post({"text": "x"})
    assert str(raised.value) == f"alert webhook at {receiver.host} did not answer within 0.3s"
    assert receiver.attempts == 1  # the body was sent: re-posting could duplicate the alert


def test_notifier_refuses_a_malformed_url_without_quoting_it() -> None:
    with pytest.raises(ValueError) as raised:
        WebhookNotifier(f"hooks.example.com{TOKEN_PATH}")
    assert_no_secret(str(raised.value))


# --------------------------------------------------------------------------- the resource


def test_resource_reads_the_webhook_as_an_env_var(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, receiver.url)
    monkeypatch.setenv(UI_URL_ENV, UI)
    resource = build_alert_webhook()
    # What Dagster shows as the resource's configuration: the variable's name, never its value.
    config = resource._convert_to_config_dictionary()
    assert config["url"] == {"env": ALERT_WEBHOOK_ENV} and config["ui_url"] == UI
    assert_no_secret(repr(resource), str(config))

    monkeypatch.delenv(ALERT_WEBHOOK_ENV)
    assert build_alert_webhook().url == ""


# --------------------------------------------------------------------------- sensors on real runs


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent instance like `dagster dev`'s (SQLite, run-sharded) or production's (PostgreSQL)."""
    config = "telemetry:\n  enabled: false\n"
    database: str | None = None
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server_url")
        database = f"gp_dagster_{uuid.uuid4().hex[:12]}"
        url = create_database(server, database, setting="GESTIMUM_TEST_DATABASE_URL")
        # SQLAlchemy maps a bare postgresql:// to psycopg 3, which the project does not ship.
        pg_url = normalize_url(url)
        config += f"storage:\n  postgres:\n    postgres_url: {pg_url}\n"
    (tmp_path / "dagster.yaml").write_text(config)
    with dg.DagsterInstance.from_config(str(tmp_path)) as dagster_instance:
        yield dagster_instance
    if database:
        drop_database(request.getfixturevalue("pg_server_url"), database, setting="GESTIMUM_TEST_DATABASE_URL")


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> AlertWebhook:
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, receiver.url)
    monkeypatch.setenv(UI_URL_ENV, UI)
    return build_alert_webhook()


def test_run_failure_sensor_posts_one_alert_without_secrets(
    instance: dg.DagsterInstance,
    webhook: AlertWebhook,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    crm_url = f"postgresql://sync:{DB_PASSWORD}@127.0.0.1:1/crm"  # a closed port: every CRM step fails
    monkeypatch.setenv("CRM_DATABASE_URL", crm_url)
    run = run_sync(crm_url, "http://127.0.0.1:1/", partition=DAY, instance=instance)
    assert not run.success
    result = run.result

    with no_deprecation_warnings():
        outcome = evaluate_run_failure_sensor(instance, result, webhook)

    (body,) = receiver.bodies
    assert_slack_compatible(body)
    text = body["text"]
    assert result.run_id in text and "gestimum_sync" in text and f"Partitions: {DAY}" in text
    assert "`crm__customers`" in text and "CRM unreachable: cannot connect to CRM_DATABASE_URL" in text
    assert "postgresql://sync:***@127.0.0.1:1/crm" in text
    assert f"{UI}/runs/{result.run_id}" in text
    assert_no_secret(json.dumps(body), caplog.text, repr(outcome))


def evaluate_run_failure_sensor(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, webhook: AlertWebhook
) -> dg.SkipReason | None:
    """The real run-failure sensor, on the failed run `result` of `instance`."""
    context = dg.build_run_status_sensor_context(
        sensor_name="gestimum_run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alert_webhook": webhook},
    ).for_run_failure()
    return run_failure_alert(context)


def evaluate_check_sensor(instance: dg.DagsterInstance, cursor: str | None, webhook: AlertWebhook) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alert_webhook": webhook})
    with no_deprecation_warnings():
        result = check_failure_alert(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_check_sensor_posts_each_failed_check_once(
    instance: dg.DagsterInstance,
    webhook: AlertWebhook,
    receiver: Receiver,
    crm_url: str,
    simulator: GestimumSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # A run that ended before the sensor first looked: history, not replayed.
    insert_customers(crm_url, [("OK1", "Bonne Entreprise", None, None, None, None, None, None, DAY_TS)])
    insert_contacts(crm_url, [("KC1", "NOPE", "Petit", None, None, None, DAY_TS)])  # unknown customer
    assert run_sync(crm_url, simulator.url, partition=DAY, instance=instance).success
    first = evaluate_check_sensor(instance, None, webhook)
    assert first.cursor is not None and first.skip_reason is not None
    assert "not replayed" in first.skip_reason.skip_message
    assert receiver.bodies == []

    # A new run where Gestimum rejects a contact whose customer does not exist.
    insert_contacts(crm_url, [("KC2", "NOPE2", "Durand", None, None, None, DAY_TS)])
    assert run_sync(crm_url, simulator.url, partition=DAY, instance=instance).success
    reason = state_records(crm_url, "contacts")["KC2"]["reason"]
    assert reason

    second = evaluate_check_sensor(instance, first.cursor, webhook)
    assert second.cursor is not None and int(second.cursor) > int(first.cursor)
    assert receiver.bodies, "no alert for the failed check"
    for body in receiver.bodies:
        assert_slack_compatible(body)
    on_contacts = [t for t in receiver.texts() if "`gestimum/contacts`" in t]
    assert on_contacts, receiver.texts()
    assert all(t.startswith("*Gestimum check failed (") for t in receiver.texts())
    assert any(reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in t for t in on_contacts)
    assert all(f"{UI}/assets/gestimum/contacts?view=checks" in t for t in on_contacts)
    assert all(f"Partitions: {DAY}" in t for t in on_contacts)
    # Only this project's assets, and only checks that did not pass.
    assert all(any(f"`{root}/" in t for root in ("gestimum", "crm", "transform", "sync")) for t in receiver.texts())

    posted = len(receiver.bodies)
    third = evaluate_check_sensor(instance, second.cursor, webhook)
    assert len(receiver.bodies) == posted
    assert third.cursor == second.cursor and third.skip_reason is not None

    # The hourly schedule runs again with nothing changed: the check still fails the same way,
    # which the team already knows; no alert.
    assert run_sync(crm_url, simulator.url, partition=DAY, instance=instance).success
    fourth = evaluate_check_sensor(instance, third.cursor, webhook)
    assert int(fourth.cursor or 0) > int(third.cursor or 0) and len(receiver.bodies) == posted
    # A new rejection changes the findings: told again.
    insert_contacts(crm_url, [("KC3", "NOPE3", "Roux", None, None, None, DAY_TS)])
    assert run_sync(crm_url, simulator.url, partition=DAY, instance=instance).success
    evaluate_check_sensor(instance, fourth.cursor, webhook)
    assert len(receiver.bodies) == posted + 1 and "KC3" in receiver.texts()[-1]
    assert_no_secret(json.dumps(receiver.bodies), caplog.text, repr(second), repr(third))


def test_alerts_off_without_the_variable(
    instance: dg.DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    webhook = build_alert_webhook()
    assert not webhook.enabled

    skipped = evaluate_check_sensor(instance, None, webhook)
    assert skipped.skip_reason is not None and ALERT_WEBHOOK_ENV in skipped.skip_reason.skip_message
    assert skipped.cursor is None  # turned on later, the sensor starts from that moment

    @dg.asset
    def always_fails() -> None:
        raise RuntimeError("boom")

    result = dg.materialize([always_fails], instance=instance, raise_on_error=False)
    assert not result.success
    outcome = evaluate_run_failure_sensor(instance, result, webhook)
    assert isinstance(outcome, dg.SkipReason) and ALERT_WEBHOOK_ENV in (outcome.skip_message or "")
    assert receiver.attempts == 0


def test_with_no_webhook_every_alert_sensor_tick_says_alerts_are_off(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code location's alert sensors, as the daemon ticks them: no run has failed, so the real
    run-failure sensor would say nothing; with no webhook each tick says alerts are off."""
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    settings = Settings.from_env()
    assert not settings.alert_webhook_configured
    defs = alert_definitions(settings)
    sensors = {s.name: s for s in defs.sensors or []}
    assert set(sensors) == {run_failure_alert.name, check_failure_alert.name}
    resources = {"alert_webhook": build_alert_webhook(settings)}
    for name, sensor in sensors.items():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            tick = sensor.evaluate_tick(context)
        assert tick.skip_message == ALERTS_OFF, name
        assert tick.skip_message.startswith(f"skipped: {ALERT_WEBHOOK_ENV} not set"), name
        assert not tick.run_requests

    # With the webhook set, the real sensors are in place, under the same names.
    on = alert_definitions(settings, AlertWebhook(url="http://127.0.0.1:9/hook"))
    assert {type(s) for s in on.sensors or []} == {type(run_failure_alert), type(check_failure_alert)}
    assert [s.name for s in on.sensors or []] == [run_failure_alert.name, check_failure_alert.name]


def test_a_run_with_more_rejected_lines_than_the_threshold_is_alerted_once(
    instance: dg.DagsterInstance,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    crm_url: str,
    simulator: GestimumSimulator,
) -> None:
    """GESTIMUM_ALERT_REJECTED_PERCENT: a run whose rejected lines exceed the share is told, from the
    run's own totals (comptes, clients and contacts: 3 lines sent, 1 rejected by Gestimum: 33%)."""
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, receiver.url)
    monkeypatch.setenv(UI_URL_ENV, UI)
    monkeypatch.setenv("GESTIMUM_ALERT_REJECTED_PERCENT", "25")
    webhook = build_alert_webhook()
    assert webhook.rejected_percent == 25
    first = evaluate_check_sensor(instance, None, webhook)  # watching from now on
    insert_customers(crm_url, [("OK1", "Bonne Entreprise", None, None, None, None, None, None, DAY_TS)])
    insert_contacts(crm_url, [("KT1", "NOPE", "Petit", None, None, None, DAY_TS)])  # unknown customer
    run = run_sync(crm_url, simulator.url, partition=DAY, instance=instance)
    assert run.success
    evaluate_check_sensor(instance, first.cursor, webhook)
    share = [t for t in receiver.texts() if "of the run's lines rejected" in t]
    assert len(share) == 1, receiver.texts()
    assert share[0].startswith("*Gestimum sync: 33.3% of the run's lines rejected* (threshold 25%")
    assert "1 of 3 lines rejected: 1 by Gestimum, 0 by our validation" in share[0]
    assert run.result.run_id in share[0] and f"{UI}/runs/{run.result.run_id}" in share[0]

    # At or under the share, nothing (3 lines sent, 1 rejected: 33% of 50%); a malformed share stops the
    # settings, naming the variable.
    monkeypatch.setenv("GESTIMUM_ALERT_REJECTED_PERCENT", "50")
    quiet = build_alert_webhook()
    cursor = evaluate_check_sensor(instance, None, quiet).cursor
    insert_customers(crm_url, [("OK2", "Autre Entreprise", None, None, None, None, None, None, DAY_TS)])
    insert_contacts(crm_url, [("KT2", "NOPE2", "Roux", None, None, None, DAY_TS)])
    again = run_sync(crm_url, simulator.url, partition=DAY, instance=instance)
    assert again.success and sum(again.metadata[f"gestimum/{e}"]["run_lines_sent"] for e in ENDPOINTS.names) == 3
    evaluate_check_sensor(instance, cursor, quiet)
    assert len([t for t in receiver.texts() if "of the run's lines rejected" in t]) == 1
    monkeypatch.setenv("GESTIMUM_ALERT_REJECTED_PERCENT", "150")
    with pytest.raises(ValueError, match="GESTIMUM_ALERT_REJECTED_PERCENT must be a percentage"):
        build_alert_webhook()


def test_the_rows_to_act_on_list_is_not_alerted_the_sinks_checks_are(instance: dg.DagsterInstance) -> None:
    """`rows_to_act_on` repeats the sinks' own failed checks and changes with every operator action:
    the check sensor posts the sinks' checks, never the list."""
    preflight, sink = dg.AssetKey(["sync", "preflight"]), dg.AssetKey(["gestimum", "contacts"])

    @dg.op
    def evaluations(context) -> None:  # type: ignore[no-untyped-def]  # (the module's annotations are strings)
        for key, name in ((preflight, "rows_to_act_on"), (sink, "no_rejected_lines")):
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=key, check_name=name, passed=False, severity=dg.AssetCheckSeverity.WARN, description="1"
                )
            )

    @dg.job
    def operator_like() -> None:
        evaluations()

    result = operator_like.execute_in_process(instance=instance)
    failed = failed_checks_of_run(instance, result.run_id)
    assert [(c.evaluation.asset_key, c.evaluation.check_name) for c in failed] == [(sink, "no_rejected_lines")]
