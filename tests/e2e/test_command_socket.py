"""The command socket of a running daemon: every query and its content, many clients at once,
clients that send garbage or vanish, a worker too slow to answer, refused changes, batches.

Three daemons serve this module: one that nothing changes (the queries), one that the other
tests change only with objects of their own (each test compares what it reads before and after
its own requests, so the order of the tests does not matter), and, per test, one whose worker
is frozen with SIGSTOP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import certs, configs
from support.backends import HttpBackend, TcpEchoBackend, wait_for
from support.certs import make_certificate
from support.clients import get
from support.daemon import DaemonProcess, free_port

from sozu_config import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    AddCluster,
    AddHttpFrontend,
    AddHttpListener,
    Backend,
    Batch,
    CertificateAndKey,
    Cluster,
    ConfigState,
    ConfigureMetrics,
    CountRequests,
    HttpFrontend,
    HttpListenerConfig,
    ListenerType,
    ListFrontends,
    ListListeners,
    ListWorkers,
    QueryCertificates,
    QueryClusterById,
    QueryClustersByDomain,
    QueryClustersHashes,
    QueryMetrics,
    QueryState,
    RemoveBackend,
    RemoveCertificate,
    RemoveCluster,
    RemoveHttpFrontend,
    RemoveListener,
    Request,
    Response,
    RunState,
    StateRequest,
    Status,
    UpdateHttpListener,
    decode_response,
    encode_request,
    load_config,
)
from sozu_config.responses import MetricsContent

pytestmark = pytest.mark.e2e

MAX_COMMAND_BUFFER_SIZE = 65_536  # of the daemon that receives garbage


# --------------------------------------------------------------------------- a raw client


class RawCommandConnection:
    """A command socket connection that sends exact bytes (what the library client never
    would) and reads answers line by line."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, request: Request, request_id: str) -> Response:
        self.send(encode_request(request, request_id))
        return self.read_final()

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"closed by the daemon; pending {self.buffer[:200]!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def read_final(self) -> Response:
        while True:
            response = decode_response(self.read_line())
            if response.final:
                return response

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True when the daemon closed the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
                self.buffer += data
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawCommandConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def state_of(daemon: DaemonProcess) -> tuple[int, str]:
    """The daemon's state version and snapshot (as JSON, for exact comparisons)."""
    response = daemon.send(QueryState())
    assert response.ok, response.message
    assert response.content is not None and response.content.type == "state"
    return response.content.version, response.content.state.model_dump_json()


def workers_of(daemon: DaemonProcess) -> list[tuple[int, int, RunState]]:
    response = daemon.send(ListWorkers())
    assert response.ok and response.content is not None and response.content.type == "workers"
    return [(w.id, w.pid, w.run_state) for w in response.content.workers]


def all_served(port: int, host: str, count: int = 6) -> list[int]:
    """Statuses of ``count`` requests, each on a new connection (so that both workers serve)."""
    return [get(port, "/", host=host).status for _ in range(count)]


# --------------------------------------------------------------------------- the query daemon


@dataclass
class QueryDaemon:
    daemon: DaemonProcess
    http: str
    https: str
    tcp: str
    one: HttpBackend
    two: HttpBackend
    echo: TcpEchoBackend
    certificate: certs.TestCertificate

    @property
    def http_port(self) -> int:
        return int(self.http.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def queried(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueryDaemon]:
    """A daemon with an HTTP, an HTTPS and a TCP listener and three clusters; no test changes
    its routing state."""
    directory = tmp_path_factory.mktemp("queries")
    certificate = make_certificate("secure.example")
    (directory / "cert.pem").write_text(certificate.cert_pem)
    (directory / "key.pem").write_text(certificate.key_pem)
    http, https, tcp = (f"127.0.0.1:{free_port()}" for _ in range(3))
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(HttpBackend("one"))
        two = stack.enter_context(HttpBackend("two"))
        echo = stack.enter_context(TcpEchoBackend())
        config = configs.document(
            configs.http_listener(http),
            configs.https_listener(https),
            configs.tcp_listener(tcp),
            configs.cluster(
                "app",
                frontends=[
                    configs.frontend(http, "app.example"),
                    configs.frontend(http, "app.example", path="/api"),
                    configs.frontend(
                        https, "secure.example", certificate="cert.pem", key="key.pem"
                    ),
                ],
                backends=[
                    configs.backend(one.address, backend_id="one"),
                    configs.backend(two.address, backend_id="two"),
                ],
            ),
            configs.cluster(
                "other",
                frontends=[configs.frontend(http, "other.example")],
                backends=[configs.backend(one.address, backend_id="other-one")],
            ),
            configs.cluster(
                "stream",
                protocol="tcp",
                frontends=[configs.frontend(tcp)],
                backends=[configs.backend(echo.address, backend_id="echo")],
            ),
            worker_count=2,
        )
        daemon = stack.enter_context(DaemonProcess(directory, config).start())
        yield QueryDaemon(daemon, http, https, tcp, one, two, echo, certificate)


def test_status_and_list_workers(queried: QueryDaemon) -> None:
    status = queried.daemon.send(Status())
    assert status.ok, status.message
    assert status.content is not None and status.content.type == "workers"
    assert [w.id for w in status.content.workers] == [0, 1]
    assert all(w.run_state is RunState.RUNNING for w in status.content.workers)
    assert "2 of 2" in status.message
    listed = queried.daemon.send(ListWorkers())
    assert listed.ok and listed.content is not None and listed.content.type == "workers"
    assert [(w.id, w.pid) for w in listed.content.workers] == [
        (w.id, w.pid) for w in status.content.workers
    ]
    pids = {w.pid for w in listed.content.workers}
    assert len(pids) == 2 and queried.daemon.pid not in pids
    for pid in pids:
        os.kill(pid, 0)  # a live process


def test_list_frontends_with_filters(queried: QueryDaemon) -> None:
    def frontends(request: ListFrontends) -> tuple[list[str], list[str], list[str]]:
        response = queried.daemon.send(request)
        assert response.ok, response.message
        content = response.content
        assert content is not None and content.type == "frontend_list"
        return (
            [f"{f.hostname}{f.path.value}" for f in content.http],
            [f.hostname for f in content.https],
            [f.address for f in content.tcp],
        )

    everything = frontends(ListFrontends())
    assert sorted(everything[0]) == ["app.example", "app.example/api", "other.example"]
    assert everything[1] == ["secure.example"]
    assert everything[2] == [queried.tcp]
    assert frontends(ListFrontends(http=True)) == (everything[0], [], [])
    assert frontends(ListFrontends(https=True)) == ([], ["secure.example"], [])
    assert frontends(ListFrontends(tcp=True)) == ([], [], [queried.tcp])
    assert frontends(ListFrontends(domain="other")) == (["other.example"], [], [])
    only_app = frontends(ListFrontends(http=True, domain="app.example"))
    assert only_app[0] == ["app.example", "app.example/api"]
    assert frontends(ListFrontends(domain="nowhere.example")) == ([], [], [])


def test_list_listeners(queried: QueryDaemon) -> None:
    response = queried.daemon.send(ListListeners())
    assert response.ok, response.message
    content = response.content
    assert content is not None and content.type == "listeners_list"
    assert [(item.address, item.active) for item in content.http] == [(queried.http, True)]
    assert [(item.address, item.active) for item in content.https] == [(queried.https, True)]
    assert [(item.address, item.active) for item in content.tcp] == [(queried.tcp, True)]


def test_query_cluster_by_id(queried: QueryDaemon) -> None:
    response = queried.daemon.send(QueryClusterById(cluster_id="app"))
    assert response.ok, response.message
    content = response.content
    assert content is not None and content.type == "clusters"
    [info] = content.clusters
    assert info.cluster is not None and info.cluster.cluster_id == "app"
    assert sorted(f.path.value for f in info.http_frontends) == ["", "/api"]
    assert [f.hostname for f in info.https_frontends] == ["secure.example"]
    assert info.tcp_frontends == []
    assert {(b.backend_id, b.address) for b in info.backends} == {
        ("one", queried.one.address),
        ("two", queried.two.address),
    }
    stream = queried.daemon.send(QueryClusterById(cluster_id="stream"))
    assert stream.content is not None and stream.content.type == "clusters"
    assert [f.address for f in stream.content.clusters[0].tcp_frontends] == [queried.tcp]
    unknown = queried.daemon.send(QueryClusterById(cluster_id="ghost"))
    assert unknown.ok, unknown.message
    assert unknown.content is not None and unknown.content.type == "clusters"
    assert all(
        c.cluster is None and not c.http_frontends and not c.backends
        for c in unknown.content.clusters
    )


def test_query_clusters_by_domain(queried: QueryDaemon) -> None:
    def clusters(hostname: str, path: str | None = None) -> list[str]:
        response = queried.daemon.send(QueryClustersByDomain(hostname=hostname, path=path))
        assert response.ok, response.message
        assert response.content is not None and response.content.type == "clusters"
        return [c.cluster.cluster_id for c in response.content.clusters if c.cluster is not None]

    assert clusters("app.example") == ["app"]
    assert clusters("secure.example") == ["app"]
    assert clusters("other.example") == ["other"]
    assert clusters("app.example", "/api") == ["app"]
    assert clusters("app.example", "/nothing") == []
    assert clusters("nowhere.example") == []


def test_query_clusters_hashes(queried: QueryDaemon) -> None:
    first = queried.daemon.send(QueryClustersHashes())
    second = queried.daemon.send(QueryClustersHashes())
    assert first.ok, first.message
    assert first.content is not None and first.content.type == "cluster_hashes"
    hashes = first.content.hashes
    assert sorted(hashes) == ["app", "other", "stream"]
    assert len(set(hashes.values())) == 3
    assert all(len(value) >= 8 and int(value, 16) >= 0 for value in hashes.values())
    assert second.content == first.content, "hashes are stable while nothing changes"


def test_query_certificates_never_show_keys(queried: QueryDaemon) -> None:
    certificate = queried.certificate
    response = queried.daemon.send(QueryCertificates())
    assert response.ok, response.message
    content = response.content
    assert content is not None and content.type == "certificates"
    [summary] = content.certificates
    assert summary.address == queried.https
    assert summary.fingerprint == certificate.fingerprint
    assert summary.names == ["secure.example"]
    assert "PRIVATE KEY" not in response.model_dump_json()
    by_domain = queried.daemon.send(QueryCertificates(domain="secure.example"))
    assert by_domain.content is not None and by_domain.content.type == "certificates"
    assert [c.fingerprint for c in by_domain.content.certificates] == [certificate.fingerprint]
    other = queried.daemon.send(QueryCertificates(domain="other.example"))
    assert other.content is not None and other.content.type == "certificates"
    assert other.content.certificates == []
    by_fingerprint = queried.daemon.send(QueryCertificates(fingerprint=certificate.fingerprint))
    assert by_fingerprint.content is not None and by_fingerprint.content.type == "certificates"
    assert len(by_fingerprint.content.certificates) == 1


def test_count_requests(queried: QueryDaemon) -> None:
    response = queried.daemon.send(CountRequests())
    assert response.ok, response.message
    content = response.content
    assert content is not None and content.type == "request_counts"
    counts = content.counts
    expected = {
        "add_http_listener": 1,
        "add_https_listener": 1,
        "add_tcp_listener": 1,
        "activate_listener": 3,
        "add_cluster": 3,
        "add_http_frontend": 3,
        "add_https_frontend": 1,
        "add_tcp_frontend": 1,
        "add_certificate": 1,
        "add_backend": 4,
    }
    assert {k: counts.get(k) for k in expected} == expected


def test_query_state_is_the_configuration(queried: QueryDaemon) -> None:
    response = queried.daemon.send(QueryState())
    assert response.ok, response.message
    content = response.content
    assert content is not None and content.type == "state"
    assert content.version > 0
    snapshot = content.state
    assert [c.cluster_id for c in snapshot.clusters] == ["app", "other", "stream"]
    assert [item.address for item in snapshot.http_listeners] == [queried.http]
    assert sorted(b.backend_id for b in snapshot.backends) == ["echo", "one", "other-one", "two"]
    desired = load_config(queried.daemon.config_path).state
    assert ConfigState.from_snapshot(snapshot) == desired
    again = queried.daemon.send(QueryState())
    assert again.content == content, "nothing changed: same version, same state"


def test_query_metrics_counts_proxied_requests(queried: QueryDaemon) -> None:
    def metrics(request: QueryMetrics) -> MetricsContent:
        response = queried.daemon.send(request)
        assert response.ok, response.message
        assert response.content is not None and response.content.type == "metrics"
        return response.content

    def requests_of(content: MetricsContent, cluster: str) -> int:
        return int(content.clusters.get(cluster, {}).get("cluster", {}).get("http.requests", 0))

    before = metrics(QueryMetrics())
    statuses = [get(queried.http_port, "/", host="other.example").status for _ in range(5)]
    assert statuses == [200] * 5
    after = metrics(QueryMetrics())
    main = after.main
    assert (main["workers"], main["configuration.clusters"], main["configuration.backends"]) == (
        2,
        3,
        4,
    )
    assert requests_of(after, "other") - requests_of(before, "other") == 5
    assert requests_of(after, "app") == requests_of(before, "app")
    assert after.proxying["http.requests"] - before.proxying["http.requests"] >= 5
    per_worker = metrics(QueryMetrics(workers=True))
    assert sorted(per_worker.workers) == ["0", "1"]
    only_other = metrics(QueryMetrics(cluster_ids=["other"]))
    assert sorted(only_other.clusters) == ["other"]


def test_metrics_disable_enable_and_clear(queried: QueryDaemon) -> None:
    def configure(configuration: str) -> None:
        response = queried.daemon.send(ConfigureMetrics(configuration=configuration))
        assert response.ok, response.message

    def metrics() -> MetricsContent:
        content = queried.daemon.send(QueryMetrics()).content
        assert isinstance(content, MetricsContent)
        return content

    try:
        assert get(queried.http_port, "/", host="other.example").status == 200
        assert metrics().clusters["other"]["cluster"]["http.requests"] >= 1
        configure("disabled")
        assert get(queried.http_port, "/", host="other.example").status == 200
        disabled = metrics()
        assert (disabled.proxying, disabled.clusters) == ({}, {})
        assert disabled.main["configuration.clusters"] == 3, "the state counts are not metrics"
        configure("enabled")
        fresh = metrics()
        assert fresh.proxying["http.requests"] == 0, "enabling again starts from zero"
        assert fresh.clusters["other"]["cluster"]["http.requests"] == 0
        assert get(queried.http_port, "/", host="other.example").status == 200
        assert metrics().clusters["other"]["cluster"]["http.requests"] == 1
        configure("clear")
        cleared = metrics()
        assert cleared.proxying["http.requests"] == 0
        assert cleared.clusters["other"]["cluster"]["http.requests"] == 0
    finally:
        configure("enabled")


def test_wire_format_of_a_query(queried: QueryDaemon) -> None:
    with RawCommandConnection(queried.daemon.socket_path) as connection:
        connection.send(b'{"id": "wire-1", "request": {"type": "list_workers"}}\n')
        answer = json.loads(connection.read_line())
        assert answer["id"] == "wire-1"
        assert answer["status"] == "ok"
        assert answer["content"]["type"] == "workers"
        assert [w["id"] for w in answer["content"]["workers"]] == [0, 1]
        # a connection carries several requests in sequence
        connection.send(b'{"id": "wire-2", "request": {"type": "count_requests"}}\n')
        second = json.loads(connection.read_line())
        assert (second["id"], second["status"]) == ("wire-2", "ok")
        assert second["content"]["type"] == "request_counts"
        # requests written together are answered in order
        connection.send(
            b'{"id": "wire-3", "request": {"type": "status"}}\n'
            b'{"id": "wire-4", "request": {"type": "list_listeners"}}\n'
            b'{"id": "wire-5", "request": {"type": "query_clusters_hashes"}}\n'
        )
        answers = [json.loads(connection.read_line()) for _ in range(3)]
        assert [(a["id"], a["status"], a["content"]["type"]) for a in answers] == [
            ("wire-3", "ok", "workers"),
            ("wire-4", "ok", "listeners_list"),
            ("wire-5", "ok", "cluster_hashes"),
        ]


# --------------------------------------------------------------------------- the busy daemon


@dataclass
class BusyDaemon:
    daemon: DaemonProcess
    http: str
    backend: HttpBackend

    @property
    def port(self) -> int:
        return int(self.http.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusyDaemon]:
    """A daemon that tests change with objects of their own; small command messages."""
    directory = tmp_path_factory.mktemp("busy")
    http = f"127.0.0.1:{free_port()}"
    with HttpBackend("app") as backend:
        config = configs.single_http_cluster(
            http,
            [configs.backend(backend.address, backend_id="app-0")],
            worker_count=2,
            command_buffer_size=16384,
            max_command_buffer_size=MAX_COMMAND_BUFFER_SIZE,
        )
        with DaemonProcess(directory, config).start() as daemon:
            yield BusyDaemon(daemon, http, backend)


def test_many_clients_at_once_all_get_their_answers(busy: BusyDaemon) -> None:
    """20 clients x 10 requests, queries and changes mixed, half of them on one connection
    each, half on a connection per request."""
    threads, per_thread = 20, 10
    version_before, _ = state_of(busy.daemon)
    barrier = threading.Barrier(threads)
    answers: dict[int, list[tuple[str, Response]]] = {}
    errors: list[BaseException] = []

    def requests_of(index: int) -> list[Request]:
        name = f"crowd-{index}"
        return [
            Status(),
            AddCluster(cluster=Cluster(cluster_id=f"{name}-a")),
            QueryClusterById(cluster_id=f"{name}-a"),
            AddBackend(
                backend=Backend(
                    cluster_id=f"{name}-a", backend_id="b", address=busy.backend.address
                )
            ),
            ListFrontends(http=True),
            RemoveCluster(cluster_id=f"{name}-a"),
            QueryState(),
            AddCluster(cluster=Cluster(cluster_id=f"{name}-kept")),
            CountRequests(),
            QueryClusterById(cluster_id=f"{name}-kept"),
        ]

    def client(index: int) -> None:
        try:
            received: list[tuple[str, Response]] = []
            barrier.wait(30)
            if index % 2 == 0:
                with busy.daemon.client(timeout=60) as connection:
                    for request in requests_of(index):
                        received.append((request.type, connection.send(request)))
            else:
                for request in requests_of(index):
                    received.append((request.type, busy.daemon.send(request, timeout=60)))
            answers[index] = received
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    assert not any(t.is_alive() for t in workers), "a client is still waiting for an answer"
    assert errors == []
    assert sorted(answers) == list(range(threads))
    for index, received in answers.items():
        assert len(received) == per_thread
        failed = [(kind, r.message) for kind, r in received if not r.ok]
        assert failed == [], f"client {index}: {failed}"
        kinds = dict(received)
        assert kinds["status"].content is not None
        assert kinds["status"].content.type == "workers"
        kept = received[-1][1].content
        assert kept is not None and kept.type == "clusters"
        assert kept.clusters[0].cluster is not None
        assert kept.clusters[0].cluster.cluster_id == f"crowd-{index}-kept"
    version_after, snapshot = state_of(busy.daemon)
    assert version_after - version_before == threads * 4, "each accepted change counts once"
    clusters = {c["cluster_id"] for c in json.loads(snapshot)["clusters"]}
    assert {f"crowd-{i}-kept" for i in range(threads)} <= clusters
    assert not {c for c in clusters if c.endswith("-a")}
    assert all_served(busy.port, "app.example") == [200] * 6


GARBAGE = {
    "not JSON": (b"this is not json\n", ""),
    "invalid UTF-8": (b"\xff\xfe\x00garbage\n", ""),
    "JSON array": (b"[1, 2, 3]\n", ""),
    "no id": (b'{"request": {"type": "status"}}\n', ""),
    "no request": (b'{"id": "shape-0"}\n', "shape-0"),
    "missing field": (b'{"id": "shape-1", "request": {"type": "add_cluster"}}\n', "shape-1"),
    "invalid value": (
        b'{"id": "shape-2", "request": {"type": "add_backend", "backend": {"cluster_id": "app",'
        b' "backend_id": "heavy", "address": "127.0.0.1:9", "weight": 1000}}}\n',
        "shape-2",
    ),
    "unknown type": (b'{"id": "unknown-1", "request": {"type": "make_coffee"}}\n', "unknown-1"),
    # nesting deeper than any JSON parser recurses: a failure, not a dropped connection
    "nested too deeply": (b"[" * 30_000 + b"]" * 30_000 + b"\n", ""),
    "request nested too deeply": (
        b'{"id": "deep", "request": ' + b'{"x": ' * 8_000 + b"1" + b"}" * 8_001 + b"\n",
        "",
    ),
    # an id that cannot be echoed (a lone surrogate is not encodable): answered without id
    "lone surrogate id": (b'{"id": "\\ud800", "request": {"type": "status"}}\n', ""),
    # a backend must name a server, not the wildcard a listener binds to
    "unspecified backend address": (
        b'{"id": "zero", "request": {"type": "add_backend", "backend": {"cluster_id": "app",'
        b' "backend_id": "zero", "address": "0.0.0.0:80"}}}\n',
        "zero",
    ),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_gets_a_failure_and_nobody_else_notices(busy: BusyDaemon, kind: str) -> None:
    line, request_id = GARBAGE[kind]
    before = state_of(busy.daemon)
    with (
        RawCommandConnection(busy.daemon.socket_path) as bystander,
        RawCommandConnection(busy.daemon.socket_path) as sender,
    ):
        assert bystander.request(Status(), "bystander-1").ok
        sender.send(line)
        answer = sender.read_final()
        assert answer.status == "failure"
        assert answer.id == request_id
        assert answer.message
        if kind == "unknown type":
            assert "make_coffee" in answer.message
        if kind == "unspecified backend address":
            assert "unspecified address" in answer.message
        # the same connection goes on, and so do the others
        assert sender.request(Status(), "after-garbage").ok
        assert bystander.request(Status(), "bystander-2").ok
    assert state_of(busy.daemon) == before
    assert all_served(busy.port, "app.example", 2) == [200, 200]


@pytest.mark.parametrize("terminated", [True, False], ids=["with newline", "without newline"])
def test_oversized_line_is_refused(busy: BusyDaemon, terminated: bool) -> None:
    before = state_of(busy.daemon)
    padding = b"x" * (MAX_COMMAND_BUFFER_SIZE * 2)
    line = b'{"id": "big", "request": {"type": "status", "pad": "' + padding + b'"}}'
    with (
        RawCommandConnection(busy.daemon.socket_path) as bystander,
        RawCommandConnection(busy.daemon.socket_path) as sender,
    ):
        sender.send(line + (b"\n" if terminated else b""))
        answer = sender.read_final()
        assert answer.status == "failure"
        assert "max_command_buffer_size" in answer.message
        assert str(MAX_COMMAND_BUFFER_SIZE) in answer.message
        assert sender.is_closed(), "the stream cannot be resynchronised: it is closed"
        assert bystander.request(Status(), "bystander").ok
    assert state_of(busy.daemon) == before


def test_unfinished_messages_share_a_bounded_budget(busy: BusyDaemon) -> None:
    """Every client may send a message of up to max_command_buffer_size, but all together may
    hold at most twice that in unfinished lines: past it, the newcomer is refused (and its
    connection closed) instead of the main process growing without bound."""
    part = b'{"id": "slow", "request": {"type": "status", "pad": "' + b"p" * 60_000
    with (
        RawCommandConnection(busy.daemon.socket_path) as first,
        RawCommandConnection(busy.daemon.socket_path) as second,
    ):
        first.send(part)
        second.send(part)
        time.sleep(0.5)  # both parts are read by the daemon by now
        with RawCommandConnection(busy.daemon.socket_path) as third:
            third.send(part)
            answer = third.read_final()
            assert answer.status == "failure"
            assert "already receiving other large messages" in answer.message
            assert third.is_closed()
        assert busy.daemon.send(Status(), timeout=5).ok
    # the budget is given back when those clients leave
    with RawCommandConnection(busy.daemon.socket_path) as later:
        later.send(part + b'"}}\n')
        answer = later.read_final()
        assert answer.id == "slow" and answer.status == "failure"  # "pad" is not a field
        assert later.request(Status(), "later").ok


def test_command_connections_are_limited_in_number(busy: BusyDaemon) -> None:
    limit = 256  # MAX_COMMAND_CONNECTIONS
    held: list[RawCommandConnection] = []
    try:
        answers = []
        for _ in range(limit + 8):
            connection = RawCommandConnection(busy.daemon.socket_path)
            held.append(connection)
            # a connection over the limit is answered and closed at once: its request may
            # not even be sent, the refusal is read all the same
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.send(encode_request(Status(), "count"))
            answers.append(connection.read_final())
        refused = [a for a in answers if not a.ok]
        assert len(refused) >= 8
        assert all("too many command connections" in a.message for a in refused)
        assert sum(1 for a in answers if a.ok) <= limit
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)
    assert busy.daemon.send(Status(), timeout=5).ok


def test_client_vanishing_mid_line_harms_nobody(busy: BusyDaemon) -> None:
    before = state_of(busy.daemon)
    workers = workers_of(busy.daemon)
    with RawCommandConnection(busy.daemon.socket_path) as lingering:
        lingering.send(b'{"id": "half", "request": {"type": "add_clu')
        # a half line that stays open does not hold anybody up
        assert busy.daemon.send(Status(), timeout=5).ok
        with RawCommandConnection(busy.daemon.socket_path) as vanishing:
            vanishing.send(b'{"id": "gone", "request": {"type": "remove_cluster", "clus')
        assert busy.daemon.send(Status(), timeout=5).ok
    assert busy.daemon.send(Status(), timeout=5).ok
    assert state_of(busy.daemon) == before
    assert workers_of(busy.daemon) == workers


def test_change_from_a_vanished_client_is_applied(busy: BusyDaemon) -> None:
    batch = Batch(
        requests=[
            AddCluster(cluster=Cluster(cluster_id="orphaned")),
            AddHttpFrontend(
                frontend=HttpFrontend(
                    address=busy.http, hostname="orphaned.example", cluster_id="orphaned"
                )
            ),
            AddBackend(
                backend=Backend(cluster_id="orphaned", backend_id="o", address=busy.backend.address)
            ),
        ]
    )
    with RawCommandConnection(busy.daemon.socket_path) as vanishing:
        vanishing.send(encode_request(batch, "vanishing-1"))
    # closed before any answer: the daemon applies the change anyway, everywhere

    def applied() -> bool:
        response = busy.daemon.send(QueryClusterById(cluster_id="orphaned"))
        content = response.content
        return (
            content is not None and content.type == "clusters" and bool(content.clusters[0].cluster)
        )

    wait_for(applied, timeout=10)
    assert all_served(busy.port, "orphaned.example") == [200] * 6
    assert busy.daemon.send(Status(), timeout=5).ok


def refused_requests(busy: BusyDaemon) -> dict[str, Request]:
    """Requests the main state must refuse (not found, already exists, invalid)."""
    other_port = f"127.0.0.1:{free_port()}"
    certificate = make_certificate("refused.example")
    return {
        "remove unknown cluster": RemoveCluster(cluster_id="ghost"),
        "remove unknown backend": RemoveBackend(cluster_id="app", backend_id="ghost"),
        "remove backend with wrong address": RemoveBackend(
            cluster_id="app", backend_id="app-0", address="127.0.0.1:9"
        ),
        "remove unknown frontend": RemoveHttpFrontend(
            frontend=HttpFrontend(address=busy.http, hostname="ghost.example", cluster_id="app")
        ),
        "add existing frontend": AddHttpFrontend(
            frontend=HttpFrontend(address=busy.http, hostname="app.example", cluster_id="app")
        ),
        "frontend of unknown cluster": AddHttpFrontend(
            frontend=HttpFrontend(address=busy.http, hostname="new.example", cluster_id="ghost")
        ),
        "frontend without listener": AddHttpFrontend(
            frontend=HttpFrontend(address=other_port, hostname="new.example", cluster_id="app")
        ),
        "backend of unknown cluster": AddBackend(
            backend=Backend(cluster_id="ghost", backend_id="b", address=busy.backend.address)
        ),
        "add existing listener": AddHttpListener(listener=HttpListenerConfig(address=busy.http)),
        "remove listener with frontends": RemoveListener(
            address=busy.http, proxy=ListenerType.HTTP
        ),
        "activate unknown listener": ActivateListener(address=other_port, proxy=ListenerType.HTTP),
        # sōzu: test_not_found (listener_update_tests.rs)
        "update unknown listener": UpdateHttpListener(address=other_port, front_timeout=5),
        "certificate on an HTTP listener": AddCertificate(
            address=busy.http,
            certificate=CertificateAndKey(
                certificate=certificate.cert_pem, key=certificate.key_pem
            ),
        ),
        "remove certificate with a bad fingerprint": RemoveCertificate(
            address=busy.http, fingerprint="not-a-fingerprint"
        ),
    }


REFUSED = [
    "remove unknown cluster",
    "remove unknown backend",
    "remove backend with wrong address",
    "remove unknown frontend",
    "add existing frontend",
    "frontend of unknown cluster",
    "frontend without listener",
    "backend of unknown cluster",
    "add existing listener",
    "remove listener with frontends",
    "activate unknown listener",
    "update unknown listener",
    "certificate on an HTTP listener",
    "remove certificate with a bad fingerprint",
]


@pytest.mark.parametrize("case", REFUSED)
def test_refused_change_leaves_state_and_workers_untouched(busy: BusyDaemon, case: str) -> None:
    request = refused_requests(busy)[case]
    before = state_of(busy.daemon)
    workers = workers_of(busy.daemon)
    response = busy.daemon.send(request)
    assert response.status == "failure", f"{case} was accepted: {response.message}"
    assert response.message
    assert state_of(busy.daemon) == before, "a refused request changed the state"
    assert workers_of(busy.daemon) == workers, "a worker was replaced or stopped"
    assert all_served(busy.port, "app.example", 4) == [200] * 4


def test_listener_update_without_changes(busy: BusyDaemon) -> None:
    """sōzu: test_no_op_patch (listener_update_tests.rs) — an update naming only the address
    is accepted and leaves the listener as it was."""
    before = daemon_listeners(busy.daemon)
    workers = workers_of(busy.daemon)
    response = busy.daemon.send(UpdateHttpListener(address=busy.http))
    assert response.ok, response.message
    assert daemon_listeners(busy.daemon) == before
    assert workers_of(busy.daemon) == workers
    assert all_served(busy.port, "app.example", 4) == [200] * 4


def daemon_listeners(daemon: DaemonProcess) -> str:
    response = daemon.send(ListListeners())
    assert response.ok and response.content is not None
    return response.content.model_dump_json()


def blue_batch(
    busy: BusyDaemon, name: str, *, tail: list[StateRequest] | None = None
) -> list[StateRequest]:
    return [
        AddCluster(cluster=Cluster(cluster_id=name)),
        AddHttpFrontend(
            frontend=HttpFrontend(address=busy.http, hostname=f"{name}.example", cluster_id=name)
        ),
        AddBackend(
            backend=Backend(cluster_id=name, backend_id=f"{name}-0", address=busy.backend.address)
        ),
        *(tail or []),
    ]


def test_batch_is_all_or_nothing(busy: BusyDaemon) -> None:
    before = state_of(busy.daemon)
    failing = Batch(
        requests=blue_batch(busy, "allornothing", tail=[RemoveCluster(cluster_id="ghost")])
    )
    response = busy.daemon.send(failing)
    assert response.status == "failure"
    assert "ghost" in response.message
    content = response.content
    assert content is not None and content.type == "batch_results"
    assert [r.index for r in content.results] == [0, 1, 2, 3]
    assert content.results[3].status == "failure" and "ghost" in content.results[3].message
    assert all(r.status == "failure" for r in content.results[:3])
    assert state_of(busy.daemon) == before
    assert all_served(busy.port, "allornothing.example", 4) == [404] * 4

    applied = busy.daemon.send(Batch(requests=blue_batch(busy, "allornothing")))
    assert applied.ok, applied.message
    assert all_served(busy.port, "allornothing.example") == [200] * 6
    assert state_of(busy.daemon)[0] == before[0] + 1, "a batch counts as one change"


def test_batch_with_expected_version(busy: BusyDaemon) -> None:
    version, snapshot = state_of(busy.daemon)
    requests = blue_batch(busy, "versioned")
    stale = busy.daemon.send(Batch(requests=requests, expected_version=version - 1))
    assert stale.status == "failure"
    assert "version" in stale.message
    assert state_of(busy.daemon) == (version, snapshot)
    assert all_served(busy.port, "versioned.example", 4) == [404] * 4

    current = busy.daemon.send(Batch(requests=requests, expected_version=version))
    assert current.ok, current.message
    assert current.content is not None and current.content.type == "batch_results"
    new_version, _ = state_of(busy.daemon)
    assert new_version == version + 1
    assert current.content.version == new_version
    assert all_served(busy.port, "versioned.example") == [200] * 6

    # the plan made before this change is now stale
    again = busy.daemon.send(
        Batch(requests=[RemoveCluster(cluster_id="versioned")], expected_version=version)
    )
    assert again.status == "failure"
    assert all_served(busy.port, "versioned.example", 2) == [200] * 2
    removed = busy.daemon.send(
        Batch(requests=[RemoveCluster(cluster_id="versioned")], expected_version=new_version)
    )
    assert removed.ok, removed.message
    assert all_served(busy.port, "versioned.example", 4) == [404] * 4


# --------------------------------------------------------------------------- a slow worker


def test_worker_timeout_names_the_slow_worker(tmp_path: Path) -> None:
    """A worker frozen with SIGSTOP: a change fails within ``worker_timeout`` naming it; once
    it runs again the daemon is whole (every worker serves the change)."""
    http = f"127.0.0.1:{free_port()}"
    port = int(http.rsplit(":", 1)[1])
    with HttpBackend("app") as backend:
        config = configs.single_http_cluster(
            http, [backend.address], worker_count=2, worker_timeout=1
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            workers = workers_of(daemon)
            slow_id, slow_pid, _ = workers[1]
            batch = Batch(
                requests=[
                    AddCluster(cluster=Cluster(cluster_id="late")),
                    AddHttpFrontend(
                        frontend=HttpFrontend(
                            address=http, hostname="late.example", cluster_id="late"
                        )
                    ),
                    AddBackend(
                        backend=Backend(cluster_id="late", backend_id="l", address=backend.address)
                    ),
                ]
            )
            os.kill(slow_pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                response = daemon.send(batch, timeout=30)
                elapsed = time.monotonic() - started
                assert response.status == "failure", response.message
                assert f"worker {slow_id}" in response.message
                assert f"worker {workers[0][0]}:" not in response.message
                assert elapsed < 1 + 2.5, f"answered after {elapsed:.1f} s"
                started = time.monotonic()
                status = daemon.send(Status(), timeout=30)
                assert time.monotonic() - started < 1 + 2.5
                assert status.content is not None and status.content.type == "workers"
                states = {w.id: w.run_state for w in status.content.workers}
                assert states[workers[0][0]] is RunState.RUNNING
                assert states.get(slow_id, RunState.STOPPED) is not RunState.RUNNING
            finally:
                os.kill(slow_pid, signal.SIGCONT)

            def whole() -> bool:
                current = workers_of(daemon)
                running = [w for w in current if w[2] is RunState.RUNNING]
                return len(running) == 2 and slow_pid not in {pid for _, pid, _ in running}

            wait_for(whole, timeout=20)
            assert all_served(port, "late.example") == [200] * 6
            assert all_served(port, "app.example") == [200] * 6
