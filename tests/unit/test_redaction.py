"""Secrets redaction (gestimum_pipeline/redaction.py) against every shape a secret takes in a message."""

from __future__ import annotations

import json

import pytest

from gestimum_pipeline.db import db_reason
from gestimum_pipeline.redaction import REDACTED, redact, redact_text, redact_url, url_secrets

SECRET = "s3cr3t-P4ss"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
        (f"postgresql+psycopg2://u:{SECRET}@h/db?sslmode=require", "postgresql+psycopg2://u:***@h/db?sslmode=require"),
        (f"https://u:{SECRET}@gestimum.example/api", "https://u:***@gestimum.example/api"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db?host=/tmp/x", "postgresql://h/db?host=/tmp/x"),
        ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://postgres:@/postgres?host=/tmp/x"),
        (f"postgresql://u@h/db?password={SECRET}&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        (f"host=h password={SECRET} dbname=db", "host=h password=*** dbname=db"),
        (f"host=h password='{SECRET} x' dbname=db", "host=h password=*** dbname=db"),
        (f"host=h PASSWORD = {SECRET}", "host=h PASSWORD = ***"),
    ],
)
def test_redact_url_shapes(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@h/db",
        f"postgresql://u:{SECRET}@@h/db",  # unencoded @ in the password
        f"postgresql://u:{SECRET}/x@h/db",  # unencoded / in the password
        f"postgresql://u:a@{SECRET}@h/db",  # @ inside the password, before the secret part
        f"postgresql://u:{SECRET}@h/db?password={SECRET}",
        f"garbage://u:{SECRET}@",
    ],
)
def test_redact_url_hides_awkward_passwords(url: str) -> None:
    assert SECRET not in redact_url(url)
    assert REDACTED in redact_url(url)


def test_redact_url_on_a_non_string() -> None:
    assert redact_url(None) == "<not a string>"  # type: ignore[arg-type]


@pytest.mark.parametrize("password", ['pa"ss', "pa\\ss", 'q"\\"uo\\te', "é-àccent"])
def test_redact_hides_json_escaped_passwords(password: str) -> None:
    body = json.dumps({"societe": {"mot_passe": password}})
    ascii_body = json.dumps({"societe": {"mot_passe": password}}, ensure_ascii=False)
    for text in (body, ascii_body, f"raw {password} raw"):
        shown = redact(text, [password])
        assert password not in shown and json.dumps(password)[1:-1] not in shown
        assert REDACTED in shown


def test_redact_longest_first_and_empty_secrets() -> None:
    assert redact("password=longsecret", ["secret", "longsecret"]) == "password=***"
    assert redact("abc", ["", None]) == "abc"


def test_redact_text_finds_urls_query_strings_and_keywords_in_prose() -> None:
    text = (
        f"could not reach postgresql://u:{SECRET}@h/db (retrying); dsn host=h password={SECRET}; "
        f"see https://h/x?user=u&password={SECRET} and token T0K"
    )
    shown = redact_text(text, ["T0K"])
    assert SECRET not in shown and "T0K" not in shown
    assert "postgresql://u:***@h/db" in shown and "password=***" in shown


def test_url_secrets_gives_raw_and_decoded_passwords() -> None:
    assert url_secrets("https://u:p%40ss@h/") == ["p%40ss", "p@ss"]
    assert url_secrets("https://h/") == []
    assert url_secrets("http://[bad") == []


def test_db_reason_is_one_line_without_the_password() -> None:
    assert db_reason(RuntimeError(f"FATAL:  password\n  {SECRET} rejected"), SECRET) == "FATAL: password *** rejected"
    assert db_reason(RuntimeError("")) == "RuntimeError"
