"""What ``sozu_config.certificates`` reads from PEM text, checked on sōzu's sample certificates.

Fingerprints are compared with the ones ``openssl`` computes; the names, validity dates and key
pairs are the ones the sample files were made with.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from support.certs import make_certificate

from sozu_config.certificates import (
    CertificateAndKey,
    CertificateError,
    certificate_info,
    check_key_matches,
    fingerprint_of,
    inspect,
    split_pem_chain,
)
from sozu_config.models import normalize_hostname_rule

UTC = dt.UTC

# (certificate file, key file) pairs that belong together
PAIRS = [
    ("lib__assets__certificate.pem", "lib__assets__key.pem"),  # RSA, PKCS#8 key
    ("lib__assets__multi-sni-cert.pem", "lib__assets__multi-sni-key.pem"),
    ("lib__assets__cn-ne-san-cert.pem", "lib__assets__cn-ne-san-key.pem"),
    ("lib__assets__tests__ecdsa-localhost.pem", "lib__assets__tests__ecdsa-localhost.key"),  # SEC1
    ("command__assets__certificate.pem", "command__assets__key.pem"),  # PKCS#1, expired
    ("lib__assets__tests__localhost.crt", "lib__assets__tests__localhost.key"),
]
CERTIFICATES = [
    *(cert for cert, _ in PAIRS),
    "lib__assets__certificate_chain.pem",
    "lib__assets__cert_test.pem",
    "lib__assets__tests__certificate-3.pem",
    "lib__assets__services.crt",
]


def read(sozu_data: Path, name: str) -> str:
    return (sozu_data / name).read_text(encoding="ascii")


def openssl_fingerprint(path: Path) -> str:
    """``openssl x509 -fingerprint -sha256``, normalised to lowercase hex without colons."""
    result = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    _, _, value = result.stdout.strip().partition("=")
    return value.replace(":", "").lower()


def key_material(key_pem: str) -> list[str]:
    """The base64 lines of a PEM key."""
    return [line for line in key_pem.splitlines() if line and not line.startswith("-----")]


def assert_no_key_material(text: str, key_pem: str, *public_pems: str) -> None:
    """No line of the private key in ``text``, except lines of its public half, which also
    appear in the certificates ``public_pems`` (and may be shown with them)."""
    public = "".join("".join(public_pems).split())
    secret = [line for line in key_material(key_pem) if line[:24] not in public]
    assert secret  # the check below would be vacuous otherwise
    for line in secret:
        assert line not in text
        assert line[:24] not in text
    assert "PRIVATE KEY-----" not in text


# --------------------------------------------------------------------------- fingerprints


@pytest.mark.parametrize("name", CERTIFICATES)
def test_the_fingerprint_is_the_one_openssl_computes(sozu_data: Path, name: str) -> None:
    expected = openssl_fingerprint(sozu_data / name)
    assert len(expected) == 64
    assert fingerprint_of(read(sozu_data, name)) == expected
    assert certificate_info(read(sozu_data, name)).fingerprint == expected


def test_known_fingerprints_of_two_samples(sozu_data: Path) -> None:
    lolcat = read(sozu_data, "lib__assets__certificate.pem")
    assert fingerprint_of(lolcat) == (
        "1017a1ad24539ea73c6d72581ae99201f33b649070022e0b1b56d3e63c5c356a"
    )
    ecdsa = read(sozu_data, "lib__assets__tests__ecdsa-localhost.pem")
    assert fingerprint_of(ecdsa) == (
        "c4a787c2140c9b0a56f7eb246c5fe9b6e286b2a4d6b5e45a03e18e378f46a0b0"
    )


def test_the_fingerprint_ignores_line_endings_and_surrounding_text(sozu_data: Path) -> None:
    pem = read(sozu_data, "lib__assets__multi-sni-cert.pem")
    crlf = "some header text\r\n" + pem.replace("\n", "\r\n") + "trailing words\r\n"
    assert fingerprint_of(crlf) == fingerprint_of(pem)


# --------------------------------------------------------------------------- names and dates


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("lib__assets__certificate.pem", ("lolcatho.st",)),
        (
            "lib__assets__multi-sni-cert.pem",
            ("foo.example.com", "localhost", "bar.example.com", "baz.example.com"),
        ),
        # the CN is not among the SANs: both are served
        ("lib__assets__cn-ne-san-cert.pem", ("tenant-b.example", "tenant-a.example")),
        ("lib__assets__tests__ecdsa-localhost.pem", ("localhost",)),
        ("lib__assets__tests__certificate-3.pem", ("*.example.org",)),
        ("lib__assets__cert_test.pem", ("test.local",)),
    ],
)
def test_names_are_the_cn_then_the_dns_sans_without_duplicates(
    sozu_data: Path, name: str, names: tuple[str, ...]
) -> None:
    assert certificate_info(read(sozu_data, name)).names == names


def test_names_are_lowercased_without_a_trailing_dot() -> None:
    made = make_certificate("Mixed.Example.", "WWW.Mixed.Example")
    assert certificate_info(made.cert_pem).names == ("mixed.example", "www.mixed.example")
    given = CertificateAndKey(certificate=made.cert_pem, key=made.key_pem, names=["Other.Example."])
    assert given.names == ["other.example"]
    assert inspect(given).names == ("other.example",)


def test_given_names_are_normalised_like_frontend_hostnames() -> None:
    """SNI always carries A-labels (RFC 6066 §3) and frontend hostnames are stored as A-labels:
    a name given in Unicode must be stored the same way, or it could never be served."""
    made = make_certificate("idn.test")
    given = CertificateAndKey(certificate=made.cert_pem, key=made.key_pem, names=["Bücher.DE."])
    assert given.names == [normalize_hostname_rule("Bücher.DE.")] == ["xn--bcher-kva.de"]


def test_given_names_that_are_not_host_names_are_refused() -> None:
    made = make_certificate("idn.test")
    with pytest.raises(ValidationError, match="names"):
        CertificateAndKey(certificate=made.cert_pem, key=made.key_pem, names=["not a name"])


def test_the_subject_is_given_in_rfc4514_form(sozu_data: Path) -> None:
    info = certificate_info(read(sozu_data, "lib__assets__certificate.pem"))
    assert info.subject == "CN=lolcatho.st,C=FR"


@pytest.mark.parametrize(
    ("name", "not_after", "expired"),
    [
        (
            "command__assets__certificate.pem",
            dt.datetime(2015, 12, 18, 15, 7, 38, tzinfo=UTC),
            True,
        ),
        ("lib__assets__certificate.pem", dt.datetime(2069, 7, 9, 16, 43, 24, tzinfo=UTC), False),
        (
            "lib__assets__multi-sni-cert.pem",
            dt.datetime(2036, 4, 12, 14, 9, 35, tzinfo=UTC),
            False,
        ),
        (
            "lib__assets__tests__localhost.crt",
            dt.datetime(2025, 6, 20, 15, 42, 34, tzinfo=UTC),
            True,
        ),
    ],
)
def test_expiry_is_read_from_not_after(
    sozu_data: Path, name: str, not_after: dt.datetime, expired: bool
) -> None:
    info = certificate_info(read(sozu_data, name))
    assert info.not_after == not_after
    assert info.not_before < info.not_after
    assert info.expired() is expired
    assert info.expired(now=not_after - dt.timedelta(seconds=1)) is False
    assert info.expired(now=not_after + dt.timedelta(seconds=1)) is True


def test_a_fresh_and_an_expired_generated_certificate() -> None:
    assert certificate_info(make_certificate("fresh.test").cert_pem).expired() is False
    assert certificate_info(make_certificate("old.test", expired=True).cert_pem).expired() is True


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(("cert", "key"), PAIRS)
def test_a_certificate_matches_its_own_key(sozu_data: Path, cert: str, key: str) -> None:
    check_key_matches(read(sozu_data, cert), read(sozu_data, key))
    info = inspect(CertificateAndKey(certificate=read(sozu_data, cert), key=read(sozu_data, key)))
    assert info.fingerprint == fingerprint_of(read(sozu_data, cert))


@pytest.mark.parametrize(
    ("cert", "key"),
    [
        ("lib__assets__certificate.pem", "lib__assets__multi-sni-key.pem"),
        ("lib__assets__multi-sni-cert.pem", "lib__assets__cn-ne-san-key.pem"),
        ("lib__assets__tests__ecdsa-localhost.pem", "lib__assets__key.pem"),  # EC cert, RSA key
        ("lib__assets__certificate.pem", "lib__assets__tests__ecdsa-localhost.key"),
        ("command__assets__certificate.pem", "lib__assets__key.pem"),
    ],
)
def test_a_certificate_with_another_key_is_refused(sozu_data: Path, cert: str, key: str) -> None:
    with pytest.raises(CertificateError, match="does not match the certificate") as raised:
        check_key_matches(read(sozu_data, cert), read(sozu_data, key))
    assert_no_key_material(str(raised.value), read(sozu_data, key))
    pair = CertificateAndKey(certificate=read(sozu_data, cert), key=read(sozu_data, key))
    with pytest.raises(CertificateError, match="does not match"):
        inspect(pair)
    # without the key check the certificate alone is accepted
    assert inspect(pair, check_key=False).fingerprint == fingerprint_of(read(sozu_data, cert))


def test_an_encrypted_key_is_refused_with_a_clear_message() -> None:
    made = make_certificate("locked.test")
    key = serialization.load_pem_private_key(made.key_pem.encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    with pytest.raises(CertificateError, match="encrypted") as raised:
        check_key_matches(made.cert_pem, encrypted)
    assert_no_key_material(str(raised.value), encrypted)


# --------------------------------------------------------------------------- chains


def test_a_chain_file_is_split_into_its_blocks_in_order(sozu_data: Path) -> None:
    files = [
        "lib__assets__multi-sni-cert.pem",
        "lib__assets__certificate.pem",
        "lib__assets__tests__ecdsa-localhost.pem",
    ]
    texts = [read(sozu_data, name) for name in files]
    joined = "subject=leaf\n" + texts[0] + "\n# intermediate\r\n" + texts[1].replace("\n", "\r\n")
    joined += "\n\n" + texts[2]
    blocks = split_pem_chain(joined)
    assert blocks == [text.strip() + "\n" for text in texts]
    assert [fingerprint_of(block) for block in blocks] == [fingerprint_of(t) for t in texts]
    assert all("\r" not in block for block in blocks)
    # the information of a chain is the one of its first certificate (the leaf)
    assert certificate_info(joined).fingerprint == fingerprint_of(texts[0])
    assert split_pem_chain("no certificate here") == []
    assert split_pem_chain(read(sozu_data, "lib__assets__key.pem")) == []


def test_a_chain_is_checked_entry_by_entry(sozu_data: Path) -> None:
    leaf = read(sozu_data, "lib__assets__multi-sni-cert.pem")
    key = read(sozu_data, "lib__assets__multi-sni-key.pem")
    good = CertificateAndKey(
        certificate=leaf,
        key=key,
        certificate_chain=[read(sozu_data, "lib__assets__certificate.pem")],
    )
    assert inspect(good).names[0] == "foo.example.com"
    bad = good.model_copy(
        update={"certificate_chain": [read(sozu_data, "lib__assets__certificate.pem"), "junk"]}
    )
    with pytest.raises(CertificateError, match="certificate_chain entry 2"):
        inspect(bad)


# --------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",  # cut short: no END line
    ],
    ids=["empty", "words", "empty-block", "not-der", "not-base64", "truncated"],
)
def test_garbage_is_not_a_certificate(text: str) -> None:
    with pytest.raises(CertificateError, match="the certificate") as raised:
        certificate_info(text)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "clé"],
    ids=["empty", "words", "not-der", "not-ascii"],
)
def test_garbage_is_not_a_key(sozu_data: Path, text: str) -> None:
    with pytest.raises(CertificateError, match="not a readable PEM key"):
        check_key_matches(read(sozu_data, "lib__assets__certificate.pem"), text)


def test_a_certificate_without_any_name_needs_names_given() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nameless")])
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert certificate_info(pem).names == ()
    with pytest.raises(CertificateError, match=r"O=Nameless.*no CN or DNS name") as raised:
        inspect(CertificateAndKey(certificate=pem, key=key_pem))
    assert_no_key_material(str(raised.value), key_pem)
    named = inspect(CertificateAndKey(certificate=pem, key=key_pem, names=["given.test"]))
    assert named.names == ("given.test",)


# --------------------------------------------------------------------------- secrecy


def test_no_error_message_contains_key_material(sozu_data: Path) -> None:
    key = read(sozu_data, "lib__assets__tests__ecdsa-localhost.key")
    cert = read(sozu_data, "lib__assets__tests__ecdsa-localhost.pem")
    other_cert = read(sozu_data, "lib__assets__certificate.pem")
    lines = key.splitlines()
    attempts: list[Callable[[], object]] = [
        lambda: check_key_matches(other_cert, key),  # a mismatch
        lambda: check_key_matches(cert, "\n".join(lines[:2]) + "\n"),  # a truncated key
        lambda: check_key_matches(cert, key.replace("BEGIN", "BEGIN X")),  # bad armour
        lambda: certificate_info(key),  # the key given as the certificate
        lambda: certificate_info(  # the key's base64 inside certificate armour
            "-----BEGIN CERTIFICATE-----\n" + "\n".join(key_material(key)) + "\n"
            "-----END CERTIFICATE-----\n"
        ),
        lambda: inspect(CertificateAndKey(certificate=key, key=key)),
        lambda: inspect(CertificateAndKey(certificate=cert, key=key, certificate_chain=[key])),
    ]
    for attempt in attempts:
        with pytest.raises(CertificateError) as raised:
            attempt()
        for text in (str(raised.value), repr(raised.value)):
            assert_no_key_material(text, key)


def test_the_key_is_not_in_the_repr_of_a_certificate_and_key(sozu_data: Path) -> None:
    key = read(sozu_data, "lib__assets__key.pem")
    pair = CertificateAndKey(certificate=read(sozu_data, "lib__assets__certificate.pem"), key=key)
    assert_no_key_material(repr(pair), key, pair.certificate)
    assert_no_key_material(str(pair), key, pair.certificate)
    assert "key=" not in repr(pair)
    assert pair.key == key  # still there for whoever needs it
