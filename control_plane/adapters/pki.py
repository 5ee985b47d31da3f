"""The control plane's certificate authority: created on first start, it issues the REST API's server certificate
(and, with `edgectl certs issue`, the broker's), so agents and operators verify both against one CA they pin.

Keys are ECDSA P-256, written 0600 and never logged or returned; certificates are public. A server certificate is
issued again when its names change or it is within `RENEW_BEFORE` of expiring; the CA itself lives ten years.
The pure checks (which names a certificate must carry, whether it needs renewing) take `now` from the caller.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from control_plane.adapters.private_files import write_private

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=397)  # the CA/Browser Forum's ceiling for a server certificate
RENEW_BEFORE = timedelta(days=30)

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class IssuedFiles:
    cert: Path  # the certificate followed by the CA's (a full chain)
    key: Path


def ca_fingerprint(ca_pem: bytes) -> str:
    """sha256 of the CA certificate's DER: what `edge-agent enroll --ca-sha256` and an operator check."""
    return hashlib.sha256(x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)).hexdigest()


class CertificateAuthority:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cert_file = directory / "ca.pem"
        self.key_file = directory / "ca-key.pem"

    def ensure(self, now: datetime, name: str = "edge control plane CA") -> None:
        """Create the CA on first use; an existing one is kept as it is."""
        if self.cert_file.exists() and self.key_file.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_file, _key_pem(key))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    @property
    def pem(self) -> bytes:
        return self.cert_file.read_bytes()

    def ensure_server(
        self, stem: str, names: Iterable[str], now: datetime, directory: Path | None = None
    ) -> IssuedFiles:
        """A server certificate for `names` (host names and IP addresses) as `stem`.pem and `stem`-key.pem in
        `directory` (default: the CA's), issued again when its names differ or it expires within RENEW_BEFORE."""
        wanted = sorted(set(names))
        if not wanted:
            raise ValueError("a server certificate needs at least one host name or address")
        where = directory or self.directory
        files = IssuedFiles(where / f"{stem}.pem", where / f"{stem}-key.pem")
        if files.cert.exists() and files.key.exists() and not needs_issuing(files.cert.read_bytes(), wanted, now):
            return files
        where.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(key, wanted, now)
        write_private(files.key, _key_pem(key))
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.pem)
        return files

    def _issue(self, key: PrivateKey, names: list[str], now: datetime) -> x509.Certificate:
        ca_key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate(self.pem)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + SERVER_LIFETIME, ca.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )


def needs_issuing(cert_pem: bytes, names: list[str], now: datetime) -> bool:
    """Whether a certificate's names differ from `names` or it expires within RENEW_BEFORE of `now`."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    have = sorted({*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))})
    return have != sorted(names) or cert.not_valid_after_utc - now < RENEW_BEFORE


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
