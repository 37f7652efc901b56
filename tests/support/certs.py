"""Certificates made for tests with `cryptography` (EC P-256 by default: fast to generate)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCertificate:
    cert_pem: str
    key_pem: str
    names: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        from sozu_config.certificates import fingerprint_of

        return fingerprint_of(self.cert_pem)


def make_certificate(
    *names: str,
    days: int = 365,
    expired: bool = False,
    rsa_bits: int | None = None,
    serial: int | None = None,
    issuer: TestCertificate | None = None,
) -> TestCertificate:
    """A certificate for `names` (first one is the CN), self-signed unless `issuer` is given."""
    key = (
        rsa.generate_private_key(65537, rsa_bits)
        if rsa_bits
        else ec.generate_private_key(ec.SECP256R1())
    )
    now = dt.datetime.now(dt.UTC)
    if expired:
        not_before, not_after = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    else:
        not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=days)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    if issuer is not None:
        issuer_cert = x509.load_pem_x509_certificate(issuer.cert_pem.encode())
        issuer_key = serialization.load_pem_private_key(issuer.key_pem.encode(), None)
        issuer_name = issuer_cert.subject
    else:
        issuer_key, issuer_name = key, subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    )
    cert = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    return TestCertificate(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        tuple(names),
    )


@lru_cache(maxsize=64)
def cached_certificate(*names: str, generation: int = 0) -> TestCertificate:
    """The same certificate for the same names (and generation) during a test run; another
    generation is another certificate for the same names (a renewal)."""
    return make_certificate(*names)
