"""The project's TLS settings win over requests' environment (issue 23, Low).

requests reads REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE for every request its session did not
pin: they silently replaced GESTIMUM_CA_BUNDLE and turned verification back on under
GESTIMUM_VERIFY_TLS=false, while the log said it was off. The simulator is served over real
TLS here, with a certificate of its own (openssl), on 127.0.0.1.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.client import GestimumClient
from gestimum_pipeline.gestimum.envelope import CompanySettings
from gestimum_pipeline.simulator.server import GestimumSimulator, SimulatorConfig

COMPANY = CompanySettings("DEMO.Gestimum", "DEMO", "")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_simulator(certificate: tuple[Path, Path]) -> Iterator[str]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with GestimumSimulator(SimulatorConfig()) as sim:
        server = sim._server
        assert server is not None
        server.socket = context.wrap_socket(server.socket, server_side=True)  # same descriptor, now TLS
        yield f"https://127.0.0.1:{sim.port}/"


def _check(url: str, verify: bool | str) -> None:
    with GestimumClient(url, COMPANY, verify=verify, max_retries=0, connect_timeout=5, read_timeout=10) as client:
        client.check_access(catalog.COMPTES, max_retries=0)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_project_ca_bundle_wins_over_the_environment(
    tls_simulator: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, requests.certs.where())  # public CAs only: they do not trust our certificate
    _check(tls_simulator, str(certificate[0]))  # GESTIMUM_CA_BUNDLE: accepted


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the point of this test
def test_verification_off_stays_off_whatever_the_environment(
    tls_simulator: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    with caplog.at_level(logging.WARNING):
        _check(tls_simulator, False)  # GESTIMUM_VERIFY_TLS=false: as the log says, not checked
    assert any("TLS verification is OFF" in r.getMessage() for r in caplog.records)


def test_by_default_the_environment_bundle_is_used_and_logged(
    tls_simulator: str,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    with caplog.at_level(logging.INFO):
        _check(tls_simulator, True)
    assert any("CA bundle of REQUESTS_CA_BUNDLE" in r.getMessage() for r in caplog.records)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(Exception, match="TLS handshake"):  # and verification is really on
        _check(tls_simulator, True)
