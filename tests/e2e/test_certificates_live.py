"""End-to-end certificate changes at runtime: ``add_certificate``, ``replace_certificate`` and
``remove_certificate`` on a daemon with two workers (reference §F, DESIGN §2 and §3).

Every change must take effect on every worker (checked with ``query_certificates_from_workers``
and with many new connections, which the kernel spreads over both workers), must not disturb an
established TLS connection, and a rotation must never make a handshake fail. A certificate the
main process refuses (unparsable PEM, key that does not match, expired certificate under the
default ``expired_certificates = "refuse"``) gets a failure answer that says why and changes
nothing anywhere. Private keys never leave the daemon: not in its logs (at debug level), not in
error messages, not in query answers; the state file, which must hold them, is private (0600).

The listener has no ``default_sni``: a name without a certificate fails its handshake, which is
how the tests see that a certificate is gone. One wildcard frontend (``*.live.test``) routes
every name; each test uses names of its own so that the tests do not depend on their order.
"""

from __future__ import annotations

import hashlib
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import configs
from support.backends import HttpBackend
from support.certs import make_certificate
from support.clients import HttpConnection, tls_client_context, tls_handshake
from support.daemon import DaemonProcess, free_port

from sozu_config import (
    AddCertificate,
    CertificateAndKey,
    QueryCertificates,
    QueryCertificatesFromWorkers,
    QueryMetrics,
    QueryState,
    RemoveCertificate,
    ReplaceCertificate,
    Response,
    SaveState,
    UpdateHttpsListener,
    fingerprint_of,
    iter_state_file,
)
from sozu_config.responses import (
    CertificatesContent,
    MetricsContent,
    StateContent,
    WorkerResponses,
)

if TYPE_CHECKING:
    from support.certs import TestCertificate

pytestmark = pytest.mark.e2e

WORKERS = 2
NEW_CONNECTIONS = 16  # per check: enough for the kernel to hand some to each worker


# --------------------------------------------------------------------------- the daemon


@dataclass
class LiveProxy:
    daemon: DaemonProcess
    port: int
    backend: HttpBackend
    directory: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, cert: TestCertificate) -> Response:
        return self.daemon.send(
            AddCertificate(
                address=self.address,
                certificate=CertificateAndKey(certificate=cert.cert_pem, key=cert.key_pem),
            )
        )

    def remove(self, fingerprint: str) -> Response:
        return self.daemon.send(RemoveCertificate(address=self.address, fingerprint=fingerprint))

    def replace(self, old: TestCertificate, new: TestCertificate) -> Response:
        return self.daemon.send(
            ReplaceCertificate(
                address=self.address,
                new_certificate=CertificateAndKey(certificate=new.cert_pem, key=new.key_pem),
                old_fingerprint=old.fingerprint,
            )
        )

    def main_fingerprints(self) -> set[str]:
        """Fingerprints in the main process's state."""
        return {c.fingerprint for c in query_state(self.daemon).state.certificates}

    def worker_fingerprints(self) -> dict[str, set[str]]:
        """Fingerprints each worker holds, by worker id."""
        response = self.daemon.send(QueryCertificatesFromWorkers())
        assert response.ok, response.message
        assert isinstance(response.content, WorkerResponses), response.content
        answers = response.content.responses
        assert len(answers) == WORKERS, answers
        fingerprints = {}
        for worker, content in answers.items():
            assert isinstance(content, CertificatesContent), content
            fingerprints[worker] = {c.fingerprint for c in content.certificates}
        return fingerprints

    def worker_connections(self) -> dict[str, int]:
        """Client connections each worker has accepted so far (completed handshakes)."""
        response = self.daemon.send(QueryMetrics(workers=True))
        assert response.ok, response.message
        assert isinstance(response.content, MetricsContent), response.content
        workers = response.content.workers
        assert len(workers) == WORKERS, workers
        return {
            worker: data["proxying"]["client.connections.accepted"]
            for worker, data in workers.items()
        }

    def served_by_every_worker(self, name: str, limit: int = 200) -> list[str]:
        """Fingerprints served to new connections for SNI ``name``, made until each worker
        has completed at least one of them (at least :data:`NEW_CONNECTIONS`, at most
        ``limit``). Every handshake must succeed."""
        start = self.worker_connections()
        fingerprints: list[str] = []
        while True:
            fingerprint = served(self.port, name)
            assert fingerprint is not None, f"handshake {len(fingerprints) + 1} for {name} failed"
            fingerprints.append(fingerprint)
            if len(fingerprints) >= NEW_CONNECTIONS:
                now = self.worker_connections()
                if all(now[worker] > start[worker] for worker in start):
                    return fingerprints
            assert len(fingerprints) < limit, f"{limit} connections did not reach every worker"

    def everywhere(self) -> set[str]:
        """Fingerprints of the main state, after checking that every worker holds the same."""
        main = self.main_fingerprints()
        for worker, fingerprints in self.worker_fingerprints().items():
            assert fingerprints == main, f"worker {worker} differs from the main state"
        return main


def query_state(daemon: DaemonProcess) -> StateContent:
    response = daemon.send(QueryState())
    assert response.ok, response.message
    assert isinstance(response.content, StateContent), response.content
    return response.content


def live_config(port: int, backend: str, **settings: object) -> str:
    """An HTTPS listener on ``port`` without certificates, cluster ``live`` for
    ``*.live.test``; ``settings`` at the top level."""
    return configs.document(
        configs.https_listener(port),
        configs.http_cluster("live", port, "*.live.test", [backend]),
        worker_count=WORKERS,
        log_level="debug",
        **settings,
    )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProxy]:
    directory = tmp_path_factory.mktemp("certificates-live")
    with HttpBackend("live") as backend:
        port = free_port()
        config = live_config(port, backend.address)
        with DaemonProcess(directory, config).start() as daemon:
            yield LiveProxy(daemon, port, backend, directory)


# --------------------------------------------------------------------------- observations


def served(port: int, name: str) -> str | None:
    """Fingerprint served to a new connection for SNI ``name``; None if the handshake fails."""
    try:
        return tls_handshake(port, name).fingerprint
    except (ssl.SSLError, OSError):
        return None


def served_on(connection: HttpConnection) -> str:
    """Fingerprint of the certificate an open TLS connection was served."""
    assert isinstance(connection.sock, ssl.SSLSocket)
    der = connection.sock.getpeercert(binary_form=True) or b""
    return hashlib.sha256(der).hexdigest()


def served_to_many(port: int, name: str, count: int = NEW_CONNECTIONS) -> list[str | None]:
    """What ``count`` new connections are served (spread over the workers by the kernel)."""
    return [served(port, name) for _ in range(count)]


def distinctive_key_line(key_pem: str) -> str:
    """A base64 line from the middle of a PEM private key: private material, found nowhere
    else (the first line is mostly a fixed ASN.1 prefix)."""
    lines = [line for line in key_pem.strip().splitlines() if not line.startswith("-----")]
    return lines[len(lines) // 2]


# --------------------------------------------------------------------------- add, replace, remove


def test_add_certificate_takes_effect_on_every_worker(proxy: LiveProxy) -> None:
    """A name without certificate fails its handshake; once ``add_certificate`` is answered,
    every worker holds the certificate and every new connection is served it."""
    cert = make_certificate("add.live.test")
    assert set(served_to_many(proxy.port, "add.live.test", 4)) == {None}
    response = proxy.add(cert)
    assert response.ok, response.message
    assert cert.fingerprint in proxy.everywhere()
    assert set(proxy.served_by_every_worker("add.live.test")) == {cert.fingerprint}
    context = tls_client_context(trust=cert.cert_pem)
    with HttpConnection(proxy.port, tls=context, server_hostname="add.live.test") as connection:
        assert connection.request("GET", "/", host="add.live.test").status == 200


def test_established_connection_survives_add_replace_remove(proxy: LiveProxy) -> None:
    """sōzu ``test_h2_hot_certificate_reload`` in HTTP/1.1: a client holding a TLS keep-alive
    connection keeps getting answers while certificates are added, its own certificate is
    replaced and then removed; new connections follow each change."""
    first = make_certificate("hold.live.test")
    second = make_certificate("hold.live.test")
    neighbour = make_certificate("neighbour.live.test")
    assert proxy.add(first).ok
    with HttpConnection(
        proxy.port, tls=tls_client_context(), server_hostname="hold.live.test"
    ) as connection:
        assert served_on(connection) == first.fingerprint

        def ask(step: str) -> None:
            answer = connection.request("GET", f"/hold/{step}", host="hold.live.test")
            assert (answer.status, answer.body) == (200, b"live"), step

        ask("before")
        response = proxy.add(neighbour)
        assert response.ok, response.message
        ask("after-add")
        response = proxy.replace(first, second)
        assert response.ok, response.message
        ask("after-replace")
        assert set(proxy.served_by_every_worker("hold.live.test")) == {second.fingerprint}
        everywhere = proxy.everywhere()
        assert second.fingerprint in everywhere and first.fingerprint not in everywhere
        response = proxy.remove(second.fingerprint)
        assert response.ok, response.message
        ask("after-remove")
        assert set(served_to_many(proxy.port, "hold.live.test")) == {None}
        assert second.fingerprint not in proxy.everywhere()
        for index in range(3):
            ask(f"still-{index}")
    proxy.remove(neighbour.fingerprint)


@dataclass
class Handshake:
    started: float
    fingerprint: str | None
    error: str = ""


@dataclass
class ReconnectLoop:
    """A client reconnecting in a loop (bounded in count and time), recording each handshake."""

    port: int
    name: str
    limit: int = 3000
    seconds: float = 30.0
    results: list[Handshake] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and len(self.results) < self.limit:
            if time.monotonic() > deadline:
                return
            started = time.monotonic()
            try:
                fingerprint = tls_handshake(self.port, self.name).fingerprint
            except (ssl.SSLError, OSError) as error:
                self.results.append(Handshake(started, None, repr(error)))
            else:
                self.results.append(Handshake(started, fingerprint))

    def wait_count(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count:
            assert time.monotonic() < deadline, f"only {len(self.results)} handshakes"
            time.sleep(0.01)


def test_rotation_never_fails_a_handshake(proxy: LiveProxy) -> None:
    """During a ``replace_certificate`` a client reconnecting in a loop sees no failed
    handshake; every handshake started after the answer gets the new certificate, on both
    workers; a keep-alive client keeps its answers throughout."""
    old = make_certificate("rotate.live.test")
    new = make_certificate("rotate.live.test")
    assert proxy.add(old).ok
    loop = ReconnectLoop(proxy.port, "rotate.live.test")
    connections_before = proxy.worker_connections()
    thread = threading.Thread(target=loop.run, daemon=True)
    with HttpConnection(
        proxy.port, tls=tls_client_context(), server_hostname="rotate.live.test"
    ) as connection:
        thread.start()
        try:
            loop.wait_count(20)
            assert connection.request("GET", "/before", host="rotate.live.test").status == 200
            response = proxy.replace(old, new)
            answered = time.monotonic()
            assert response.ok, response.message
            assert connection.request("GET", "/during", host="rotate.live.test").status == 200
            loop.wait_count(len(loop.results) + 40)
        finally:
            loop.stop.set()
            thread.join(10)
        assert connection.request("GET", "/after", host="rotate.live.test").status == 200
    failures = [h for h in loop.results if h.fingerprint is None]
    assert not failures, f"{len(failures)} failed handshakes, first: {failures[0].error}"
    before = [h.fingerprint for h in loop.results if h.started < answered]
    after = [h.fingerprint for h in loop.results if h.started > answered]
    assert old.fingerprint in before
    assert len(after) >= 40 and set(after) == {new.fingerprint}, set(after)
    assert set(before) <= {old.fingerprint, new.fingerprint}
    connections_after = proxy.worker_connections()
    assert all(connections_after[w] > connections_before[w] for w in connections_before), (
        "the reconnect loop must have reached both workers"
    )
    assert old.fingerprint not in proxy.everywhere()
    proxy.remove(new.fingerprint)


def test_remove_certificate_on_every_worker(proxy: LiveProxy) -> None:
    """After ``remove_certificate`` no worker serves the certificate any more (the listener
    has no default: handshakes for that name fail) and no worker holds it."""
    cert = make_certificate("gone.live.test")
    assert proxy.add(cert).ok
    assert set(proxy.served_by_every_worker("gone.live.test")) == {cert.fingerprint}
    response = proxy.remove(cert.fingerprint)
    assert response.ok, response.message
    assert cert.fingerprint not in proxy.everywhere()
    assert set(served_to_many(proxy.port, "gone.live.test")) == {None}


# --------------------------------------------------------------------------- listener updates


def status_for(port: int, server_name: str, host: str) -> int:
    """Status of one GET on a new TLS connection (SNI ``server_name``, Host ``host``)."""
    with HttpConnection(port, tls=tls_client_context(), server_hostname=server_name) as connection:
        return connection.request("GET", "/", host=host).status


def test_strict_sni_binding_toggle(proxy: LiveProxy) -> None:
    """sōzu ``test_strict_sni_binding_toggle``: ``update_https_listener`` turns strict SNI
    binding off at runtime (a Host the certificate does not cover is then forwarded) and on
    again (421), on new connections spread over both workers."""
    cert = make_certificate("strict.live.test")
    assert proxy.add(cert).ok
    ask = [status_for(proxy.port, "strict.live.test", "uncovered.live.test") for _ in range(8)]
    assert set(ask) == {421}
    try:
        response = proxy.daemon.send(
            UpdateHttpsListener(address=proxy.address, strict_sni_binding=False)
        )
        assert response.ok, response.message
        statuses = [
            status_for(proxy.port, "strict.live.test", "uncovered.live.test")
            for _ in range(NEW_CONNECTIONS)
        ]
        assert set(statuses) == {200}, statuses
    finally:
        response = proxy.daemon.send(
            UpdateHttpsListener(address=proxy.address, strict_sni_binding=True)
        )
        assert response.ok, response.message
    statuses = [
        status_for(proxy.port, "strict.live.test", "uncovered.live.test")
        for _ in range(NEW_CONNECTIONS)
    ]
    assert set(statuses) == {421}, statuses
    proxy.remove(cert.fingerprint)


def test_default_sni_set_and_cleared_at_runtime(proxy: LiveProxy) -> None:
    """``update_https_listener`` with ``default_sni``: clients without SNI, or with a name no
    certificate covers, are served that name's certificate; clearing it (``""``) makes their
    handshakes fail again. Connections established meanwhile keep working."""
    cert = make_certificate("fallback.live.test")
    assert proxy.add(cert).ok
    assert set(served_to_many(proxy.port, "nobody.example", 4)) == {None}
    with HttpConnection(
        proxy.port, tls=tls_client_context(), server_hostname="fallback.live.test"
    ) as established:
        try:
            response = proxy.daemon.send(
                UpdateHttpsListener(address=proxy.address, default_sni="fallback.live.test")
            )
            assert response.ok, response.message
            assert set(proxy.served_by_every_worker("nobody.example")) == {cert.fingerprint}
            no_sni = {tls_handshake(proxy.port, None).fingerprint for _ in range(8)}
            assert no_sni == {cert.fingerprint}
        finally:
            response = proxy.daemon.send(UpdateHttpsListener(address=proxy.address, default_sni=""))
            assert response.ok, response.message
        answer = established.request("GET", "/", host="fallback.live.test")
        assert answer.status == 200
    assert set(served_to_many(proxy.port, "nobody.example")) == {None}
    proxy.remove(cert.fingerprint)


# --------------------------------------------------------------------------- refusals


def unparsable() -> tuple[CertificateAndKey, str]:
    good = make_certificate("bad-pem.live.test")
    body = (
        "-----BEGIN CERTIFICATE-----\n"
        "Tm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n"  # base64, but not DER
        "-----END CERTIFICATE-----\n"
    )
    return CertificateAndKey(certificate=body, key=good.key_pem), "parse"


def mismatched() -> tuple[CertificateAndKey, str]:
    cert, other = make_certificate("mismatch.live.test"), make_certificate("mismatch.live.test")
    return CertificateAndKey(certificate=cert.cert_pem, key=other.key_pem), "does not match"


def expired() -> tuple[CertificateAndKey, str]:
    cert = make_certificate("expired.live.test", expired=True)
    return CertificateAndKey(certificate=cert.cert_pem, key=cert.key_pem), "expired"


REFUSALS = {"unparsable-pem": unparsable, "mismatched-key": mismatched, "expired": expired}


@dataclass(frozen=True)
class Snapshot:
    version: int
    main: str
    workers: dict[str, set[str]]


def snapshot(proxy: LiveProxy) -> Snapshot:
    content = query_state(proxy.daemon)
    return Snapshot(content.version, content.state.model_dump_json(), proxy.worker_fingerprints())


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_certificate_changes_nothing(proxy: LiveProxy, case: str) -> None:
    """A bad certificate is refused by the main process with a message saying why, and
    neither the main state nor any worker changes (``add_certificate``, and
    ``replace_certificate`` where the old certificate then keeps being served)."""
    certificate, reason = REFUSALS[case]()
    current = make_certificate(f"keep-{case}.live.test")
    assert proxy.add(current).ok
    before = snapshot(proxy)
    response = proxy.daemon.send(AddCertificate(address=proxy.address, certificate=certificate))
    assert not response.ok
    assert "certificate" in response.message and reason in response.message, response.message
    assert distinctive_key_line(certificate.key) not in response.message
    response = proxy.daemon.send(
        ReplaceCertificate(
            address=proxy.address,
            new_certificate=certificate,
            old_fingerprint=current.fingerprint,
        )
    )
    assert not response.ok
    assert reason in response.message, response.message
    assert snapshot(proxy) == before
    name = f"keep-{case}.live.test"
    assert set(proxy.served_by_every_worker(name)) == {current.fingerprint}
    proxy.remove(current.fingerprint)


def test_expired_certificate_accepted_with_warn_policy(tmp_path: Path) -> None:
    """``expired_certificates = "warn"``: an expired certificate is accepted and served."""
    cert = make_certificate("old.live.test", expired=True)
    with HttpBackend("warn") as backend:
        port = free_port()
        config = live_config(port, backend.address, expired_certificates="warn")
        with DaemonProcess(tmp_path, config).start() as daemon:
            proxy = LiveProxy(daemon, port, backend, tmp_path)
            response = proxy.add(cert)
            assert response.ok, response.message
            assert cert.fingerprint in proxy.everywhere()
            assert set(proxy.served_by_every_worker("old.live.test")) == {cert.fingerprint}
            with HttpConnection(
                port, tls=tls_client_context(), server_hostname="old.live.test"
            ) as connection:
                assert connection.request("GET", "/", host="old.live.test").status == 200


# --------------------------------------------------------------------------- keys stay private


def test_private_keys_never_disclosed(proxy: LiveProxy) -> None:
    """Keys of accepted and refused certificates appear in no log line (debug level), no
    answer message and no query answer."""
    accepted = make_certificate("secret.live.test", rsa_bits=2048)
    refused_cert = make_certificate("secret-refused.live.test")
    refused_key = make_certificate("secret-refused.live.test", rsa_bits=2048)
    secrets = {
        "accepted": distinctive_key_line(accepted.key_pem),
        "refused": distinctive_key_line(refused_key.key_pem),
    }
    texts: list[str] = []
    response = proxy.add(accepted)
    assert response.ok, response.message
    texts.append(response.model_dump_json())
    response = proxy.daemon.send(
        AddCertificate(
            address=proxy.address,
            certificate=CertificateAndKey(
                certificate=refused_cert.cert_pem, key=refused_key.key_pem
            ),
        )
    )
    assert not response.ok
    texts.append(response.model_dump_json())
    for query in (
        QueryState(),
        QueryCertificates(),
        QueryCertificates(domain="secret.live.test"),
        QueryCertificatesFromWorkers(),
    ):
        answer = proxy.daemon.send(query)
        assert answer.ok, answer.message
        texts.append(answer.model_dump_json())
    assert accepted.fingerprint in texts[2], "the query answers show the certificate"
    assert served(proxy.port, "secret.live.test") == accepted.fingerprint
    texts.append(proxy.daemon.logs())
    for which, line in secrets.items():
        for text in texts:
            assert line not in text, f"the {which} private key leaked: {text[:300]}"
    proxy.remove(accepted.fingerprint)


def test_saved_state_holding_keys_is_private(proxy: LiveProxy) -> None:
    """``save_state`` writes the private keys (the file rebuilds the state) in a file only
    its owner can read (mode 0600)."""
    cert = make_certificate("saved.live.test")
    assert proxy.add(cert).ok
    path = proxy.directory / "saved-state.json"
    response = proxy.daemon.send(SaveState(path=str(path)))
    assert response.ok, response.message
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    assert distinctive_key_line(cert.key_pem) in path.read_text(), "the file must hold the key"
    saved = [
        request.certificate
        for _, request in iter_state_file(path)
        if isinstance(request, AddCertificate)
        and fingerprint_of(request.certificate.certificate) == cert.fingerprint
    ]
    assert [c.key for c in saved] == [cert.key_pem], "the saved state rebuilds the certificate"
    proxy.remove(cert.fingerprint)
