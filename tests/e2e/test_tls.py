"""End-to-end HTTPS: certificate selection by SNI, TLS versions and suites, ALPN, strict SNI
binding, forwarding headers, upgrades, the handshake timeout and connection teardown over TLS
(reference §F, §E.2 step 1; sōzu ``tls_tests.rs`` and the TLS items of ``tests.rs``).

One daemon (one worker) serves the module with seven HTTPS listeners, each showing one setting:

* ``sni``: no ``default_sni``; certificates for ``rsa.tls.test`` (RSA-2048),
  ``ecdsa.tls.test`` (ECDSA P-256), ``*.wild.tls.test``, ``exact.wild.tls.test`` and the
  reference's multi-name sample (``foo``/``bar``/``baz.example.com``, ``localhost``);
* ``fallback``: the listener's own ``certificate``/``key`` (the multi-name sample), which makes
  its first name the ``default_sni``, and a frontend certificate for ``other.tls.test``;
* ``lenient``: ``strict_sni_binding = false``;
* ``v12`` and ``v13``: ``tls_versions`` restricted to TLS 1.2, resp. TLS 1.3, each serving an
  RSA-2048 certificate and the reference's ECDSA ``localhost`` sample;
* ``cipher``: TLS 1.2 only, ``cipher_list`` reduced to one suite;
* ``slow``: ``request_timeout = 2``, for the handshake timeout.

Certificates are checked by the fingerprint of what the server presents
(``getpeercert(binary_form=True)``), and, with ``curl`` and ``openssl s_client`` when they are
installed, by real verification against the expected certificate. Where a tool is missing the
same check is made with Python's ``ssl``.

ALPN: listeners with the default list choose ``h2`` for a client that offers it (HTTP/2 itself
is tested in ``test_h2_*.py``); a client that offers only ``h2`` to the listener offering only
``http/1.1`` (``v13``) is served HTTP/1.1 without ALPN (the server selects no protocol), not
refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support import configs
from support.backends import Answer, Handler, HttpBackend, Received, ScriptedBackend, wait_for
from support.certs import make_certificate
from support.clients import (
    HttpAnswer,
    HttpConnection,
    TlsSession,
    tls_client_context,
    tls_handshake,
)
from support.daemon import DaemonProcess, free_port, free_ports

from sozu_config import (
    AddCertificate,
    CertificateAndKey,
    QueryMetrics,
    RemoveCertificate,
    fingerprint_of,
)
from sozu_config.responses import MetricsContent

if TYPE_CHECKING:
    from support.certs import TestCertificate

pytestmark = pytest.mark.e2e

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
LISTENERS = ("sni", "fallback", "lenient", "v12", "v13", "cipher", "slow")
HANDSHAKE_TIMEOUT = 2  # request_timeout of the "slow" listener, seconds
SUBPROCESS_TIMEOUT = 20.0


# --------------------------------------------------------------------------- backends


def payload(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random bytes (a reordering or a loss changes the digest)."""
    return random.Random(seed).randbytes(size)


def echo_handler(name: str) -> Handler:
    """Answers ``<name> <target>``; ``/big/<n>`` answers n bytes with a Content-Length,
    ``/close-delimited/<n>`` n bytes ended by closing the connection."""

    def handle(request: Received) -> Answer:
        if request.target.startswith("/big/"):
            return Answer(body=payload(int(request.target.rsplit("/", 1)[1]), 1))
        if request.target.startswith("/close-delimited/"):
            size = int(request.target.rsplit("/", 1)[1])
            return Answer(body=payload(size, 2), close_delimited=True)
        return Answer(body=f"{name} {request.target}".encode())

    return handle


WS_GREETING = b"hello from the backend\n"


async def websocket_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the upgrade request with 101, greets, then echoes every byte prefixed."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    writer.write(WS_GREETING)
    await writer.drain()
    while True:
        data = await reader.read(1 << 16)
        if not data:
            return
        writer.write(b"echo:" + data)
        await writer.drain()


# --------------------------------------------------------------------------- the daemon


@dataclass
class Certificates:
    rsa: TestCertificate  # rsa.tls.test, RSA-2048
    ecdsa: TestCertificate  # ecdsa.tls.test, ECDSA P-256
    wildcard: TestCertificate  # *.wild.tls.test
    exact: TestCertificate  # exact.wild.tls.test
    other: TestCertificate  # other.tls.test
    lenient: TestCertificate  # a.lenient.test
    multi_pem: str  # reference sample: foo/bar/baz.example.com, localhost (RSA-2048)
    ecdsa_localhost_pem: str  # reference sample: localhost (ECDSA P-256)
    paths: dict[str, Path]  # certificate file of each name above (for curl --cacert)


@dataclass
class TlsProxy:
    daemon: DaemonProcess
    ports: dict[str, int]
    certs: Certificates
    alpha: HttpBackend
    wild: HttpBackend
    beta: HttpBackend
    websocket: ScriptedBackend
    directory: Path

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"


def write_pair(directory: Path, stem: str, certificate: TestCertificate) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_text(certificate.cert_pem)
    key_path.write_text(certificate.key_pem)
    return cert_path, key_path


def tls_config(
    ports: dict[str, int],
    files: dict[str, tuple[Path, Path]],
    backends: dict[str, str],
) -> str:
    def frontend(listener: str, hostname: str, certificate: str | None = None) -> dict[str, object]:
        if certificate is None:
            return configs.frontend(ports[listener], hostname)
        cert_path, key_path = files[certificate]
        return configs.frontend(ports[listener], hostname, certificate=cert_path, key=key_path)

    multi_cert, multi_key = files["multi"]
    alpha = [
        frontend("sni", "rsa.tls.test", "rsa"),
        frontend("sni", "ecdsa.tls.test", "ecdsa"),
        frontend("sni", "exact.wild.tls.test", "exact"),
        frontend("fallback", "other.tls.test", "other"),
        frontend("lenient", "a.lenient.test", "lenient"),
        frontend("lenient", "b.lenient.test"),
        frontend("v12", "rsa.tls.test", "rsa"),
        frontend("v12", "localhost", "ecdsa_localhost"),
        frontend("v13", "rsa.tls.test", "rsa"),
        frontend("v13", "localhost", "ecdsa_localhost"),
        frontend("cipher", "rsa.tls.test", "rsa"),
        frontend("slow", "rsa.tls.test", "rsa"),
    ]
    beta = [
        frontend("sni", "foo.example.com", "multi"),
        frontend("sni", "bar.example.com"),
        frontend("fallback", "foo.example.com"),
    ]
    return configs.document(
        configs.https_listener(ports["sni"]),
        configs.https_listener(ports["fallback"], certificate=multi_cert, key=multi_key),
        configs.https_listener(ports["lenient"], strict_sni_binding=False),
        configs.https_listener(ports["v12"], tls_versions=["TLS_V12"]),
        # (this one offers HTTP/1.1 only by ALPN)
        configs.https_listener(ports["v13"], tls_versions=["TLS_V13"], alpn_protocols=["http/1.1"]),
        configs.https_listener(
            ports["cipher"],
            tls_versions=["TLS_V12"],
            cipher_list=["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        ),
        configs.https_listener(ports["slow"], request_timeout=HANDSHAKE_TIMEOUT),
        configs.cluster("alpha", frontends=alpha, backends=[configs.backend(backends["alpha"])]),
        configs.cluster(
            "wild",
            frontends=[frontend("sni", "*.wild.tls.test", "wildcard")],
            backends=[configs.backend(backends["wild"])],
        ),
        configs.cluster("beta", frontends=beta, backends=[configs.backend(backends["beta"])]),
        configs.cluster(
            "ws",
            frontends=[frontend("sni", "ws.wild.tls.test")],
            backends=[configs.backend(backends["ws"])],
        ),
        worker_count=1,
    )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, sozu_data: Path) -> Iterator[TlsProxy]:
    directory = tmp_path_factory.mktemp("tls")
    generated = {
        "rsa": make_certificate("rsa.tls.test", rsa_bits=2048),
        "ecdsa": make_certificate("ecdsa.tls.test"),
        "wildcard": make_certificate("*.wild.tls.test"),
        "exact": make_certificate("exact.wild.tls.test"),
        "other": make_certificate("other.tls.test"),
        "lenient": make_certificate("a.lenient.test"),
    }
    files = {stem: write_pair(directory, stem, cert) for stem, cert in generated.items()}
    files["multi"] = (
        sozu_data / "lib__assets__multi-sni-cert.pem",
        sozu_data / "lib__assets__multi-sni-key.pem",
    )
    files["ecdsa_localhost"] = (
        sozu_data / "lib__assets__tests__ecdsa-localhost.pem",
        sozu_data / "lib__assets__tests__ecdsa-localhost.key",
    )
    certs = Certificates(
        **generated,
        multi_pem=files["multi"][0].read_text(),
        ecdsa_localhost_pem=files["ecdsa_localhost"][0].read_text(),
        paths={stem: pair[0] for stem, pair in files.items()},
    )
    with (
        HttpBackend("alpha", echo_handler("alpha")) as alpha,
        HttpBackend("wild", echo_handler("wild")) as wild,
        HttpBackend("beta", echo_handler("beta")) as beta,
        ScriptedBackend(websocket_backend) as websocket,
    ):
        # chosen once the backends hold their ports, so that none can collide
        ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
        backends = {
            "alpha": alpha.address,
            "wild": wild.address,
            "beta": beta.address,
            "ws": websocket.address,
        }
        config = tls_config(ports, files, backends)
        with DaemonProcess(directory, config).start() as daemon:
            yield TlsProxy(daemon, ports, certs, alpha, wild, beta, websocket, directory)


# --------------------------------------------------------------------------- clients


def https_get(
    port: int,
    server_name: str | None,
    target: str = "/",
    *,
    host: str | None = None,
    context: ssl.SSLContext | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> HttpAnswer:
    """One request on a fresh TLS connection (SNI ``server_name``, Host ``host`` or the SNI)."""
    with HttpConnection(
        port, tls=context or tls_client_context(), server_hostname=server_name
    ) as connection:
        return connection.request(
            "GET", target, host=host or server_name or "localhost", headers=headers
        )


def handshake_refused(
    port: int, server_name: str | None, *, context: ssl.SSLContext | None = None
) -> str:
    """Assert that the handshake fails (promptly, never a hang) and return why."""
    started = time.monotonic()
    try:
        session = tls_handshake(port, server_name, context=context)
    except (ssl.SSLError, OSError) as error:
        assert time.monotonic() - started < 5, "the refusal took too long"
        return str(error)
    raise AssertionError(f"handshake with SNI {server_name!r} succeeded: {session}")


def key_of(session: TlsSession) -> object:
    return x509.load_der_x509_certificate(session.certificate).public_key()


@dataclass(frozen=True)
class VerifiedAnswer:
    """An HTTPS answer obtained with full certificate and host name verification."""

    status: int
    body: bytes
    protocol: str
    client: str  # "curl" or "python"


def verified_get(
    port: int,
    host: str,
    target: str,
    trust: Path,
    *,
    version: ssl.TLSVersion | None = None,
) -> VerifiedAnswer:
    """GET ``https://host:port/target`` trusting only the certificate in ``trust``: with
    ``curl`` when installed, else with Python's ``ssl`` (same verification). ``version`` pins
    the client to one TLS version."""
    if shutil.which("curl") is not None:
        command = [
            "curl",
            "-sS",
            "-v",
            "--max-time",
            "10",
            "--resolve",
            f"{host}:{port}:127.0.0.1",
            "--cacert",
            str(trust),
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ]
        if version is TLS12:
            command += ["--tlsv1.2", "--tls-max", "1.2"]
        elif version is TLS13:
            command += ["--tlsv1.3"]
        result = subprocess.run(
            [*command, f"https://{host}:{port}{target}"],
            capture_output=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        body, _, status = result.stdout.rpartition(b"\n")
        found = re.search(rb"SSL connection using (TLSv1\.[0-9])", result.stderr)
        assert found is not None, result.stderr.decode(errors="replace")
        return VerifiedAnswer(int(status), body, found.group(1).decode(), "curl")
    context = tls_client_context(trust=trust.read_text(), minimum=version, maximum=version)
    with HttpConnection(port, tls=context, server_hostname=host) as connection:
        answer = connection.request("GET", target, host=host)
        assert isinstance(connection.sock, ssl.SSLSocket)
        protocol = connection.sock.version()
    return VerifiedAnswer(answer.status, answer.body, protocol or "", "python")


@dataclass(frozen=True)
class Probe:
    """What ``openssl s_client`` (or Python's ssl in its place) saw of a handshake."""

    fingerprint: str | None  # None: no certificate presented (handshake refused)
    protocol: str | None
    cipher: str | None


def openssl_probe(
    port: int,
    server_name: str | None,
    *,
    version: ssl.TLSVersion | None = None,
    cipher: str | None = None,
) -> Probe:
    """Handshake with ``openssl s_client`` (``-noservername`` when ``server_name`` is None),
    or with Python's ssl when openssl is not installed."""
    if shutil.which("openssl") is None:
        context = tls_client_context(minimum=version, maximum=version, ciphers=cipher)
        try:
            session = tls_handshake(port, server_name, context=context)
        except (ssl.SSLError, OSError):
            return Probe(None, None, None)
        return Probe(session.fingerprint, session.version, session.cipher)
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    command += ["-noservername"] if server_name is None else ["-servername", server_name]
    if version is TLS12:
        command.append("-tls1_2")
    elif version is TLS13:
        command.append("-tls1_3")
    if cipher is not None:
        command += ["-cipher", cipher]
    result = subprocess.run(
        command, input=b"", capture_output=True, timeout=SUBPROCESS_TIMEOUT, check=False
    )
    output = result.stdout.decode(errors="replace")
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", output, re.S)
    negotiated = re.search(r"New, (\S+), Cipher is (\S+)", output)
    if result.returncode != 0 or pem is None or negotiated is None:
        return Probe(None, None, None)
    protocol, suite = negotiated.groups()
    if protocol == "(NONE)":
        return Probe(None, None, None)
    return Probe(fingerprint_of(pem.group(0)), protocol, suite)


# --------------------------------------------------------------------------- basic termination


def test_tls_endpoint(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_endpoint``: the proxy decrypts an HTTPS request, forwards it in clear
    text, and keeps the TLS connection alive for the next requests."""
    port = proxy.ports["sni"]
    start = len(proxy.alpha.requests)
    context = tls_client_context(trust=proxy.certs.rsa.cert_pem)
    with HttpConnection(port, tls=context, server_hostname="rsa.tls.test") as connection:
        for index in range(3):
            answer = connection.request("GET", f"/endpoint/{index}", host="rsa.tls.test")
            assert answer.status == 200
            assert answer.body == f"alpha /endpoint/{index}".encode()
    received = proxy.alpha.requests[start:]
    assert [r.target for r in received] == [f"/endpoint/{i}" for i in range(3)]
    assert len({r.connection for r in received}) == 1, "one backend connection, kept alive"
    verified = verified_get(port, "rsa.tls.test", "/endpoint/tool", proxy.certs.paths["rsa"])
    assert (verified.status, verified.body) == (200, b"alpha /endpoint/tool"), verified


def test_tls_sni_routing(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_sni_routing``: each SNI name gets its certificate and its requests
    reach the cluster of that name."""
    port = proxy.ports["sni"]
    cases = [
        ("rsa.tls.test", proxy.certs.rsa.fingerprint, b"alpha /route"),
        ("foo.example.com", fingerprint_of(proxy.certs.multi_pem), b"beta /route"),
        ("www.wild.tls.test", proxy.certs.wildcard.fingerprint, b"wild /route"),
    ]
    for name, fingerprint, body in cases:
        assert tls_handshake(port, name).fingerprint == fingerprint, name
        answer = https_get(port, name, "/route")
        assert (answer.status, answer.body) == (200, body), name


def test_tls_invalid_hostname(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_invalid_hostname``: a Host covered by the certificate but routed
    nowhere gets the 404 answer, and the proxy keeps serving."""
    port = proxy.ports["sni"]
    answer = https_get(port, "foo.example.com", "/nowhere", host="baz.example.com")
    assert answer.status == 404
    assert b"404 Not Found" in answer.body
    assert https_get(port, "foo.example.com", "/after").status == 200


# --------------------------------------------------------------------------- SNI selection


def test_sni_selects_each_certificate(proxy: TlsProxy) -> None:
    """Among several certificates on one listener the SNI name picks the one naming it, every
    name of a multi-name certificate included (checked with Python and openssl s_client)."""
    port = proxy.ports["sni"]
    multi = fingerprint_of(proxy.certs.multi_pem)
    expected = {
        "rsa.tls.test": proxy.certs.rsa.fingerprint,
        "ecdsa.tls.test": proxy.certs.ecdsa.fingerprint,
        "foo.example.com": multi,
        "bar.example.com": multi,
        "baz.example.com": multi,
        "localhost": multi,
    }
    for name, fingerprint in expected.items():
        assert tls_handshake(port, name).fingerprint == fingerprint, name
    for name in ("rsa.tls.test", "ecdsa.tls.test", "bar.example.com"):
        assert openssl_probe(port, name).fingerprint == expected[name], name


def test_wildcard_certificate_covers_exactly_one_label(proxy: TlsProxy) -> None:
    """A ``*.wild.tls.test`` certificate serves any single label under that domain, not the
    domain itself nor two labels (then, without default_sni, the handshake fails)."""
    port = proxy.ports["sni"]
    wildcard = proxy.certs.wildcard.fingerprint
    for name in ("www.wild.tls.test", "x-1.wild.tls.test"):
        assert tls_handshake(port, name).fingerprint == wildcard, name
    assert openssl_probe(port, "api.wild.tls.test").fingerprint == wildcard
    for name in ("wild.tls.test", "a.b.wild.tls.test"):
        handshake_refused(port, name)


def test_exact_name_beats_wildcard(proxy: TlsProxy) -> None:
    """``exact.wild.tls.test`` has its own certificate: it wins over ``*.wild.tls.test``."""
    port = proxy.ports["sni"]
    assert tls_handshake(port, "exact.wild.tls.test").fingerprint == proxy.certs.exact.fingerprint
    probe = openssl_probe(port, "exact.wild.tls.test")
    assert probe.fingerprint == proxy.certs.exact.fingerprint
    assert https_get(port, "exact.wild.tls.test", "/exact").body == b"alpha /exact"


def test_two_certificates_for_one_name_the_last_expiring_is_served(proxy: TlsProxy) -> None:
    """Two certificates claim ``dup.tls.test``: the one expiring last is served whatever the
    order they were added in; removing it falls back to the other one."""
    port = proxy.ports["sni"]
    address = proxy.address("sni")
    long_lived = make_certificate("dup.tls.test", days=800)
    short_lived = make_certificate("dup.tls.test", days=30)
    added = []
    try:
        for cert in (long_lived, short_lived):  # the long-lived one first: order must not win
            response = proxy.daemon.send(
                AddCertificate(
                    address=address,
                    certificate=CertificateAndKey(certificate=cert.cert_pem, key=cert.key_pem),
                )
            )
            assert response.ok, response.message
            added.append(cert)
        assert tls_handshake(port, "dup.tls.test").fingerprint == long_lived.fingerprint
        response = proxy.daemon.send(
            RemoveCertificate(address=address, fingerprint=long_lived.fingerprint)
        )
        assert response.ok, response.message
        added.remove(long_lived)
        assert tls_handshake(port, "dup.tls.test").fingerprint == short_lived.fingerprint
    finally:
        for cert in added:
            proxy.daemon.send(RemoveCertificate(address=address, fingerprint=cert.fingerprint))


def test_no_sni_or_unknown_sni_fails_without_default_sni(proxy: TlsProxy) -> None:
    """A listener without ``default_sni`` refuses the handshake of a client that sends no SNI
    or a name no certificate covers (never hangs), and still serves the others."""
    port = proxy.ports["sni"]
    handshake_refused(port, None)
    handshake_refused(port, "unknown.tls.test")
    assert openssl_probe(port, None).fingerprint is None
    assert openssl_probe(port, "unknown.tls.test").fingerprint is None
    assert https_get(port, "rsa.tls.test").status == 200


def test_default_sni_serves_the_default_certificate(proxy: TlsProxy) -> None:
    """A listener whose own certificate is the default (``default_sni``) serves it to clients
    without SNI or with an unknown name; names with their own certificate get theirs. Strict
    SNI binding then checks the Host against the default certificate's names."""
    port = proxy.ports["fallback"]
    multi = fingerprint_of(proxy.certs.multi_pem)
    assert tls_handshake(port, None).fingerprint == multi
    assert tls_handshake(port, "unknown.tls.test").fingerprint == multi
    assert tls_handshake(port, "foo.example.com").fingerprint == multi
    assert tls_handshake(port, "other.tls.test").fingerprint == proxy.certs.other.fingerprint
    assert openssl_probe(port, None).fingerprint == multi
    covered = https_get(port, None, "/default", host="foo.example.com")
    assert (covered.status, covered.body) == (200, b"beta /default")
    start = len(proxy.alpha.requests)
    uncovered = https_get(port, None, "/default", host="other.tls.test")
    assert uncovered.status == 421
    assert len(proxy.alpha.requests) == start, "a 421 request must not reach the backend"


# --------------------------------------------------------------------------- strict SNI binding


def test_strict_sni_binding(proxy: TlsProxy) -> None:
    """With strict SNI binding (the default) a Host the served certificate does not cover is
    answered 421 without reaching a backend; covered hosts, wildcard-covered ones and a Host
    with a port pass."""
    port = proxy.ports["sni"]
    start = (len(proxy.alpha.requests), len(proxy.wild.requests))
    refused = https_get(port, "rsa.tls.test", "/strict", host="ecdsa.tls.test")
    assert refused.status == 421
    refused = https_get(port, "exact.wild.tls.test", "/strict", host="www.wild.tls.test")
    assert refused.status == 421
    assert (len(proxy.alpha.requests), len(proxy.wild.requests)) == start
    covered = https_get(port, "www.wild.tls.test", "/strict", host="other.wild.tls.test")
    assert (covered.status, covered.body) == (200, b"wild /strict")
    with_port = https_get(port, "rsa.tls.test", "/strict", host=f"rsa.tls.test:{port}")
    assert (with_port.status, with_port.body) == (200, b"alpha /strict")


def test_strict_sni_binding_disabled_forwards(proxy: TlsProxy) -> None:
    """``strict_sni_binding = false``: a Host the certificate does not cover is routed."""
    port = proxy.ports["lenient"]
    assert tls_handshake(port, "a.lenient.test").fingerprint == proxy.certs.lenient.fingerprint
    answer = https_get(port, "a.lenient.test", "/lenient", host="b.lenient.test")
    assert (answer.status, answer.body) == (200, b"alpha /lenient")
    assert proxy.alpha.requests[-1].header("host") == "b.lenient.test"


# --------------------------------------------------------------------------- versions, suites


def test_tls_1_2_only_listener_refuses_tls_1_3_clients(proxy: TlsProxy) -> None:
    """``tls_versions = ["TLS_V12"]``: a TLS 1.3-only client is refused, TLS 1.2 is served."""
    port = proxy.ports["v12"]
    handshake_refused(port, "rsa.tls.test", context=tls_client_context(minimum=TLS13))
    assert openssl_probe(port, "rsa.tls.test", version=TLS13).fingerprint is None
    assert tls_handshake(port, "rsa.tls.test").version == "TLSv1.2"
    assert openssl_probe(port, "rsa.tls.test").protocol == "TLSv1.2"


def test_tls_1_3_only_listener_refuses_tls_1_2_clients(proxy: TlsProxy) -> None:
    """``tls_versions = ["TLS_V13"]``: a TLS 1.2-only client is refused, TLS 1.3 is served."""
    port = proxy.ports["v13"]
    handshake_refused(port, "rsa.tls.test", context=tls_client_context(maximum=TLS12))
    assert openssl_probe(port, "rsa.tls.test", version=TLS12).fingerprint is None
    assert tls_handshake(port, "rsa.tls.test").version == "TLSv1.3"
    assert openssl_probe(port, "rsa.tls.test").protocol == "TLSv1.3"


def check_rsa_2048(session: TlsSession) -> None:
    key = key_of(session)
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048, key


def check_p256(session: TlsSession) -> None:
    key = key_of(session)
    assert isinstance(key, ec.EllipticCurvePublicKey), key
    assert isinstance(key.curve, ec.SECP256R1), key.curve


def test_tls_1_2_rsa(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_1_2_rsa``: TLS 1.2 only, RSA certificate, ECDHE-RSA suite."""
    port = proxy.ports["v12"]
    session = tls_handshake(port, "rsa.tls.test")
    check_rsa_2048(session)
    assert session.version == "TLSv1.2" and session.cipher.startswith("ECDHE-RSA-"), session
    answer = verified_get(port, "rsa.tls.test", "/v12rsa", proxy.certs.paths["rsa"], version=TLS12)
    assert (answer.status, answer.body, answer.protocol) == (200, b"alpha /v12rsa", "TLSv1.2")


def test_tls_1_2_ecdsa(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_1_2_ecdsa``: TLS 1.2 only, ECDSA P-256 certificate (the reference's
    ``ecdsa-localhost`` sample), ECDHE-ECDSA suite."""
    port = proxy.ports["v12"]
    session = tls_handshake(port, "localhost")
    check_p256(session)
    assert session.fingerprint == fingerprint_of(proxy.certs.ecdsa_localhost_pem)
    assert session.version == "TLSv1.2" and session.cipher.startswith("ECDHE-ECDSA-"), session
    trust = proxy.certs.paths["ecdsa_localhost"]
    answer = verified_get(port, "localhost", "/v12ec", trust, version=TLS12)
    assert (answer.status, answer.body, answer.protocol) == (200, b"alpha /v12ec", "TLSv1.2")


def test_tls_1_3_rsa(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_1_3_rsa``: TLS 1.3 only, RSA certificate."""
    port = proxy.ports["v13"]
    session = tls_handshake(port, "rsa.tls.test")
    check_rsa_2048(session)
    assert session.version == "TLSv1.3", session
    answer = verified_get(port, "rsa.tls.test", "/v13rsa", proxy.certs.paths["rsa"], version=TLS13)
    assert (answer.status, answer.body, answer.protocol) == (200, b"alpha /v13rsa", "TLSv1.3")


def test_tls_1_3_ecdsa(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_1_3_ecdsa``: TLS 1.3 only, ECDSA P-256 certificate."""
    port = proxy.ports["v13"]
    session = tls_handshake(port, "localhost")
    check_p256(session)
    assert session.version == "TLSv1.3", session
    trust = proxy.certs.paths["ecdsa_localhost"]
    answer = verified_get(port, "localhost", "/v13ec", trust, version=TLS13)
    assert (answer.status, answer.body, answer.protocol) == (200, b"alpha /v13ec", "TLSv1.3")


def test_tls_rsa_2048(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_rsa_2048``: an RSA-2048 certificate on a listener with the default
    versions, reached with TLS 1.2 and with TLS 1.3."""
    port = proxy.ports["sni"]
    for version, name in ((TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")):
        context = tls_client_context(minimum=version, maximum=version)
        session = tls_handshake(port, "rsa.tls.test", context=context)
        check_rsa_2048(session)
        assert session.version == name
        answer = https_get(port, "rsa.tls.test", "/rsa", context=context)
        assert (answer.status, answer.body) == (200, b"alpha /rsa")
        verified = verified_get(
            port, "rsa.tls.test", "/rsa", proxy.certs.paths["rsa"], version=version
        )
        assert (verified.status, verified.protocol) == (200, name), verified


def test_tls_ecdsa(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_ecdsa``: an ECDSA P-256 certificate on a listener with the default
    versions, reached with TLS 1.2 and with TLS 1.3."""
    port = proxy.ports["sni"]
    for version, name in ((TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")):
        context = tls_client_context(minimum=version, maximum=version)
        session = tls_handshake(port, "ecdsa.tls.test", context=context)
        check_p256(session)
        assert session.version == name
        answer = https_get(port, "ecdsa.tls.test", "/ec", context=context)
        assert (answer.status, answer.body) == (200, b"alpha /ec")
        verified = verified_get(
            port, "ecdsa.tls.test", "/ec", proxy.certs.paths["ecdsa"], version=version
        )
        assert (verified.status, verified.protocol) == (200, name), verified


def test_cipher_list_restricted_to_one_suite(proxy: TlsProxy) -> None:
    """``cipher_list = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]`` on a TLS 1.2 listener: that
    suite is negotiated with a client offering many; a client offering only another suite is
    refused."""
    port = proxy.ports["cipher"]
    session = tls_handshake(port, "rsa.tls.test")
    assert (session.version, session.cipher) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    probe = openssl_probe(port, "rsa.tls.test")
    assert probe.cipher == "ECDHE-RSA-AES128-GCM-SHA256", probe
    other_suite = tls_client_context(maximum=TLS12, ciphers="ECDHE-RSA-AES256-GCM-SHA384")
    handshake_refused(port, "rsa.tls.test", context=other_suite)
    probe = openssl_probe(port, "rsa.tls.test", cipher="ECDHE-RSA-AES256-GCM-SHA384")
    assert probe.fingerprint is None, probe
    answer = https_get(port, "rsa.tls.test", "/suite")
    assert (answer.status, answer.body) == (200, b"alpha /suite")


def test_unknown_cipher_suite_is_a_startup_error(tmp_path: Path) -> None:
    """An unknown suite name in ``cipher_list`` stops the daemon at startup with a message
    naming the suite and the key (exit code 1), instead of being silently skipped."""
    port = free_port()
    config = f"""
worker_count = 1
[[listeners]]
protocol = "https"
address = "127.0.0.1:{port}"
cipher_list = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_MD5"]
"""
    with DaemonProcess(tmp_path, config).start(wait=False) as daemon:
        assert daemon.process is not None
        code = daemon.process.wait(timeout=30)
        output = daemon.logs()
    assert code == 1, output
    assert "TLS_RSA_WITH_RC4_128_MD5" in output, output
    assert "cipher_list" in output, output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --------------------------------------------------------------------------- ALPN


def test_alpn_http11_negotiated(proxy: TlsProxy) -> None:
    """sōzu ``test_alpn_http11_only_listener``: on a listener offering only ``http/1.1``, a
    client offering ``h2`` and ``http/1.1`` gets ``http/1.1`` and is served HTTP/1.1; on a
    listener with the default list it gets ``h2``."""
    context = tls_client_context(alpn=["h2", "http/1.1"])
    assert tls_handshake(proxy.ports["sni"], "rsa.tls.test", context=context).alpn == "h2"
    port = proxy.ports["v13"]
    assert tls_handshake(port, "rsa.tls.test", context=context).alpn == "http/1.1"
    answer = https_get(port, "rsa.tls.test", "/alpn", context=context)
    assert (answer.status, answer.body) == (200, b"alpha /alpn")


def test_tls_alpn_mismatch_recovery(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_alpn_mismatch_recovery``: a client offering only ``h2`` to a listener
    that offers only ``http/1.1`` is served without ALPN — the handshake completes with no
    protocol selected and an HTTP/1.1 request is answered; nothing hangs."""
    port = proxy.ports["v13"]
    context = tls_client_context(alpn=["h2"])
    started = time.monotonic()
    session = tls_handshake(port, "rsa.tls.test", context=context)
    assert session.alpn is None
    answer = https_get(port, "rsa.tls.test", "/h2-only", context=context)
    assert (answer.status, answer.body) == (200, b"alpha /h2-only")
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- what the backend sees


def test_forwarding_headers_say_https(proxy: TlsProxy) -> None:
    """Requests decrypted by the proxy reach the backend with ``X-Forwarded-Proto: https``,
    ``Forwarded: proto=https;for=...;by=...`` and the listener's port."""
    port = proxy.ports["sni"]
    context = tls_client_context()
    with HttpConnection(port, tls=context, server_hostname="rsa.tls.test") as connection:
        client_port = connection.sock.getsockname()[1]
        answer = connection.request("GET", "/forwarded-https", host="rsa.tls.test")
    assert answer.status == 200
    received = next(r for r in proxy.alpha.requests if r.target == "/forwarded-https")
    assert received.header("x-forwarded-proto") == "https"
    assert received.header("x-forwarded-port") == str(port)
    assert received.header("x-forwarded-for") == "127.0.0.1"
    assert received.header("forwarded") == f'proto=https;for="127.0.0.1:{client_port}";by=127.0.0.1'


def active_backend_gauges(daemon: DaemonProcess, cluster_id: str) -> dict[str, dict[str, int]]:
    """Backends of ``cluster_id`` (``"<worker>/<backend>"``) that count an active connection
    or request in a worker's metrics; waits (bounded) for them to settle to none."""
    active: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = daemon.send(QueryMetrics(cluster_ids=[cluster_id], workers=True))
        assert response.ok and isinstance(response.content, MetricsContent), response.message
        active = {
            f"{worker}/{backend}": gauges
            for worker, data in response.content.workers.items()
            for backend, gauges in data["clusters"].get(cluster_id, {}).get("backends", {}).items()
            if gauges["backend.connections"] or gauges["http.active_requests"]
        }
        if not active:
            break
        time.sleep(0.05)
    return active


def test_websocket_over_tls(proxy: TlsProxy) -> None:
    """sōzu ``test_websocket_upgrade`` over TLS: the backend's ``101 Switching Protocols`` is
    relayed, then the TLS connection is a byte pipe in both directions; once it is closed
    the backend gauges (active connections and requests) are back to zero."""
    port = proxy.ports["sni"]
    context = tls_client_context()
    with HttpConnection(port, tls=context, server_hostname="ws.wild.tls.test") as connection:
        connection.send(
            b"GET /chat HTTP/1.1\r\nHost: ws.wild.tls.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = connection.read_answer(head_only=True)
        assert head.status == 101
        assert (head.header("upgrade") or "").lower() == "websocket"

        def read_exactly(size: int) -> bytes:
            while len(connection.buffer) < size:
                assert connection._fill(), "the pipe closed"
            data, connection.buffer = connection.buffer[:size], connection.buffer[size:]
            return data

        assert read_exactly(len(WS_GREETING)) == WS_GREETING
        for index in range(3):
            message = f"frame {index} ".encode() * 100
            connection.send(message)
            assert read_exactly(len(message) + 5) == b"echo:" + message
    wait_for(lambda: proxy.websocket.received and b"frame 2" in proxy.websocket.received[-1])
    assert proxy.websocket.received[-1].startswith(b"GET /chat HTTP/1.1\r\n")
    # sōzu's test checks the gauges: a closed pipe is neither a connection nor a request
    assert active_backend_gauges(proxy.daemon, "ws") == {}


# --------------------------------------------------------------------------- handshake timeout


def client_hello(server_name: str) -> bytes:
    """The bytes of a real TLS ClientHello for ``server_name``."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_client_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def seconds_until_closed(sock: socket.socket, limit: float) -> float:
    """Wait (at most ``limit``) for the peer to close ``sock`` without sending anything."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        data = sock.recv(1 << 16)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s") from None
    assert data == b"", f"the proxy answered a stalled handshake: {data[:60]!r}"
    return time.monotonic() - started


def test_tls_handshake_timeout(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_handshake_timeout``: a connection that sends nothing, or half a
    ClientHello, is closed once ``request_timeout`` (2 s) has passed — not before, and not
    much later — while other clients are served meanwhile."""
    port = proxy.ports["slow"]
    hello = client_hello("rsa.tls.test")
    assert len(hello) > 100
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as silent,
        socket.create_connection(("127.0.0.1", port), timeout=5) as partial,
    ):
        partial.sendall(hello[: len(hello) // 2])
        # a stalled handshake must not block anybody else
        assert https_get(port, "rsa.tls.test", "/meanwhile").status == 200
        waited_silent = seconds_until_closed(silent, HANDSHAKE_TIMEOUT + 8)
        waited_partial = seconds_until_closed(partial, HANDSHAKE_TIMEOUT + 8)
    assert HANDSHAKE_TIMEOUT - 1.0 <= waited_silent <= HANDSHAKE_TIMEOUT + 3, waited_silent
    assert waited_partial <= HANDSHAKE_TIMEOUT + 3, waited_partial


# --------------------------------------------------------------------------- teardown


def read_to_close_notify(tls: ssl.SSLSocket) -> bytes:
    """Everything until the peer's TLS close_notify; a TCP close without it raises."""
    data = bytearray()
    while True:
        chunk = tls.recv(1 << 16)
        if not chunk:
            return bytes(data)
        data += chunk


def split_answer(raw: bytes) -> tuple[bytes, bytes]:
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, raw[:200]
    return head, body


def test_tls_connection_close_header(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_connection_close_header``: with ``Connection: close`` the answer is
    delivered and the proxy ends the TLS session properly (close_notify, then EOF)."""
    port = proxy.ports["sni"]
    context = tls_client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="rsa.tls.test", suppress_ragged_eofs=False) as tls,
    ):
        tls.sendall(b"GET /close HTTP/1.1\r\nHost: rsa.tls.test\r\nConnection: close\r\n\r\n")
        head, body = split_answer(read_to_close_notify(tls))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"connection: close" in head.lower()
    assert body == b"alpha /close"


def test_tls_connection_close_large_response(proxy: TlsProxy) -> None:
    """sōzu ``test_tls_connection_close_large_response`` (and
    ``test_h1_close_delimited_response_fully_delivered`` over TLS): a 4 MiB answer to a
    ``Connection: close`` request, and a 1 MiB close-delimited answer, arrive complete before
    the TLS session ends."""
    port = proxy.ports["sni"]
    context = tls_client_context()
    for target, expected in (
        ("/big/4194304", payload(4 << 20, 1)),
        ("/close-delimited/1048576", payload(1 << 20, 2)),
    ):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
            context.wrap_socket(
                raw, server_hostname="rsa.tls.test", suppress_ragged_eofs=False
            ) as tls,
        ):
            tls.sendall(
                f"GET {target} HTTP/1.1\r\nHost: rsa.tls.test\r\nConnection: close\r\n\r\n".encode()
            )
            head, body = split_answer(read_to_close_notify(tls))
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert len(body) == len(expected), target
        assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest(), target
