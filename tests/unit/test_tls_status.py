"""The preflight's TLS line (issue 12, finding 10): never "on" for a connection without TLS."""

from __future__ import annotations

import pytest

from gestimum_pipeline.defs.preflight import tls_status


@pytest.mark.parametrize("url", ["http://gestimum.example:8080/", "HTTP://gestimum.example/", " http://10.0.0.5/"])
def test_plain_http_is_reported_as_unencrypted(url: str) -> None:
    assert tls_status(url, verify_tls=True).startswith("none (GESTIMUM_URL is not https://)")


def test_https_is_on_unless_verification_is_off() -> None:
    assert tls_status("https://gestimum.example/", verify_tls=True) == "on"
    assert tls_status("https://gestimum.example/", verify_tls=False).startswith("OFF (GESTIMUM_VERIFY_TLS=false)")
