"""The control plane's CA and the production refusals of plain text: pure checks and real certificates."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from control_plane.adapters.pki import RENEW_BEFORE, CertificateAuthority, ca_fingerprint, needs_issuing
from control_plane.settings import ServerSettings

NOW = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path / "pki")
    authority.ensure(NOW)
    return authority


def test_the_ca_is_created_once_with_its_key_readable_by_the_owner_only(ca: CertificateAuthority) -> None:
    first = ca.pem
    ca.ensure(NOW + timedelta(days=1))
    assert ca.pem == first
    assert ca.key_file.stat().st_mode & 0o777 == 0o600
    assert len(ca_fingerprint(first)) == 64
    assert x509.load_pem_x509_certificate(first).extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_server_certificate_chains_to_the_ca_and_names_its_hosts(ca: CertificateAuthority) -> None:
    files = ca.ensure_server("api", ["localhost", "127.0.0.1", "cp.example"], NOW)
    assert files.key.stat().st_mode & 0o777 == 0o600
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    context.load_cert_chain(str(files.cert), str(files.key))  # the key matches the certificate
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert cert.issuer == x509.load_pem_x509_certificate(ca.pem).subject
    assert not needs_issuing(files.cert.read_bytes(), ["127.0.0.1", "cp.example", "localhost"], NOW)


@pytest.mark.parametrize(
    ("names", "at", "again"),
    [
        pytest.param(["localhost", "127.0.0.1"], NOW, False, id="same-names"),
        pytest.param(["localhost", "127.0.0.1", "cp.example"], NOW, True, id="a-name-added"),
        pytest.param(["localhost"], NOW, True, id="a-name-removed"),
        pytest.param(["localhost", "127.0.0.1"], NOW + timedelta(days=398) - RENEW_BEFORE, True, id="expiring"),
    ],
)
def test_a_server_certificate_is_issued_again_when_names_change_or_it_expires(
    ca: CertificateAuthority, names: list[str], at: datetime, again: bool
) -> None:
    files = ca.ensure_server("api", ["localhost", "127.0.0.1"], NOW)
    assert needs_issuing(files.cert.read_bytes(), names, at) is again


PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "mqtt": {"password": "s3cret-broker-pw", "tls_ca_file": "/etc/edge/ca.pem"},
    "tls": {"enabled": True},
}


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        pytest.param({"tls": {"enabled": False}}, "plain HTTP", id="no-https"),
        pytest.param({"mqtt": {"password": "s3cret-broker-pw"}}, "plain MQTT", id="no-mqtt-tls"),
        pytest.param({"mqtt": {"password": "changeme", "tls_ca_file": "/ca.pem"}}, "mqtt.password", id="default-pw"),
        pytest.param({"public_url": "http://cp.example"}, "plain-HTTP public_url", id="plain-public-url"),
    ],
)
def test_production_refuses_plain_text_and_default_credentials(change: dict[str, Any], refusal: str) -> None:
    assert ServerSettings.model_validate(PRODUCTION).base_url.startswith("https://")
    with pytest.raises(ValueError, match=refusal):
        ServerSettings.model_validate(PRODUCTION | change)
