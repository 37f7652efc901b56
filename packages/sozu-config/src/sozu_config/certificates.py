"""Certificates: the models and what is read from the PEM text with ``cryptography``.

A certificate is identified by its fingerprint: the SHA-256 of the leaf certificate's DER
encoding, in lowercase hex. The names it serves are the CN and the DNS subject alternative names
of the leaf, unless the request overrides them. Private keys are kept out of ``repr``, error
messages and query answers: only fingerprints and names are shown.

``cryptography`` is imported by the functions that read PEM text, not with this module: the
models are used by every request and answer, most of which hold no certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from .addresses import SocketAddress
from .grammar import fold_hostname, normalize_certificate_name
from .models import Model, TlsVersion

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "CertificateAndKey",
    "CertificateError",
    "CertificateInfo",
    "CertificateSummary",
    "certificate_info",
    "check_key_matches",
    "fingerprint_of",
    "inspect",
    "split_pem_chain",
]

_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message never contains key material."""


class CertificateAndKey(Model):
    """A certificate as sent to the proxy: PEM leaf, PEM chain, PEM private key."""

    certificate: str
    """PEM of the leaf certificate."""
    certificate_chain: list[str] = Field(default_factory=list)
    """PEM of each intermediate certificate, leaf excluded."""
    key: str = Field(repr=False)
    """PEM of the private key (PKCS#1, PKCS#8 or SEC1). Never shown."""
    versions: list[TlsVersion] = Field(default_factory=list)
    """TLS versions for this certificate (empty: the listener's)."""
    names: list[str] = Field(default_factory=list)
    """Names served (empty: the leaf's CN and DNS SANs)."""

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [normalize_certificate_name(name) for name in value]


class CertificateSummary(Model):
    """What queries show of a certificate: everything but the private key."""

    address: SocketAddress
    fingerprint: str
    names: list[str]
    not_after: dt.datetime
    expired_at: int | None = None
    versions: list[TlsVersion] = Field(default_factory=list)
    certificate: str = ""
    certificate_chain: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the leaf says about itself."""

    fingerprint: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    subject: str

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.not_after < (now or dt.datetime.now(dt.UTC))


def split_pem_chain(text: str) -> list[str]:
    """All PEM certificate blocks of ``text``, in order (a chain file may hold several)."""
    return [block.replace("\r\n", "\n") + "\n" for block in _PEM_BLOCK.findall(text)]


def _load(pem: str, what: str) -> x509.Certificate:
    from cryptography import x509

    blocks = split_pem_chain(pem) if isinstance(pem, str) else []
    if not blocks:
        raise CertificateError(f"{what} is not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:
        return x509.load_pem_x509_certificate(blocks[0].encode("ascii"))
    except (ValueError, UnicodeEncodeError) as error:
        raise CertificateError(f"{what} does not parse: {error}") from None


@lru_cache(maxsize=4096)
def certificate_info(pem: str) -> CertificateInfo:
    """Fingerprint, names, validity of the first certificate in ``pem``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    cert = _load(pem, "the certificate")
    der = cert.public_bytes(serialization.Encoding.DER)
    names: list[str] = []
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode()
        names.append(fold_hostname(value))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names.extend(fold_hostname(n) for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    unique = tuple(dict.fromkeys(n for n in names if n))
    return CertificateInfo(
        fingerprint=hashlib.sha256(der).hexdigest(),
        names=unique,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        subject=cert.subject.rfc4514_string(),
    )


def fingerprint_of(pem: str) -> str:
    """SHA-256 of the DER of the first certificate in ``pem``, lowercase hex."""
    return certificate_info(pem).fingerprint


def _spki(key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@lru_cache(maxsize=4096)
def check_key_matches(certificate_pem: str, key_pem: str) -> None:
    """Raise CertificateError unless ``key_pem`` is a private key for the certificate."""
    from cryptography.hazmat.primitives import serialization

    cert = _load(certificate_pem, "the certificate")
    try:
        key = serialization.load_pem_private_key(
            key_pem.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        raise CertificateError("the private key is encrypted; give an unencrypted key") from None
    except (ValueError, UnicodeEncodeError, AttributeError):
        raise CertificateError("the private key is not a readable PEM key") from None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CertificateError("the private key does not match the certificate")


def inspect(certificate: CertificateAndKey, *, check_key: bool = True) -> CertificateInfo:
    """Validate a certificate request (leaf, chain and key) and return the leaf's information.

    The names served are ``certificate.names`` when given, else the leaf's CN and DNS SANs.
    """
    info = certificate_info(certificate.certificate)
    for index, pem in enumerate(certificate.certificate_chain):
        _load(pem, f"certificate_chain entry {index + 1}")
    if check_key:
        check_key_matches(certificate.certificate, certificate.key)
    if certificate.names:
        return CertificateInfo(
            info.fingerprint,
            tuple(certificate.names),
            info.not_before,
            info.not_after,
            info.subject,
        )
    if not info.names:
        raise CertificateError(
            f"the certificate ({info.subject}) has no CN or DNS name; give its names explicitly"
        )
    return info
