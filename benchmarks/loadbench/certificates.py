"""The self-signed TLS certificate every TLS listener of the benchmark serves.

One certificate and key are shared by the origin, HAProxy, nginx and sōzu so that the TLS
loads compare proxies, not key sizes. The key is ECDSA P-256, the usual modern choice, whose
signature cost does not drown out the proxies' own handshake overhead.

wrk sends the host of its URL as SNI, here the IP literal ``127.0.0.1`` (there is no name
resolution for ``bench.local`` on a benchmark machine). sōzu selects a certificate by SNI among
the names of its certificates and, with its default ``strict_sni_binding``, refuses requests
whose ``Host`` the served certificate does not cover (reference §E.2, §F). The certificate
therefore names both: ``bench.local`` for the ``Host`` header and ``127.0.0.1`` for the SNI
(as a DNS name, which is what an SNI lookup compares, and as an IP address).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the PEM files: certificate alone, key alone, and both concatenated.

    ``bundle_path`` holds certificate then key, the single-file form HAProxy's ``crt`` wants.
    """

    certificate_path: Path
    key_path: Path
    bundle_path: Path


def write_self_signed(directory: Path, hostname: str, address: str) -> TlsMaterial:
    """Create a one-day self-signed certificate for ``hostname`` and ``address`` in ``directory``.

    The key file is readable by its owner only.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.DNSName(address),
                    x509.IPAddress(ipaddress.ip_address(address)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory.mkdir(parents=True, exist_ok=True)
    material = TlsMaterial(
        certificate_path=directory / "certificate.pem",
        key_path=directory / "key.pem",
        bundle_path=directory / "bundle.pem",
    )
    material.certificate_path.write_bytes(certificate_pem)
    for path, content in (
        (material.key_path, key_pem),
        (material.bundle_path, certificate_pem + key_pem),
    ):
        path.touch(mode=0o600)
        path.write_bytes(content)
    return material
