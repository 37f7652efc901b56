"""Limits a worker holds to under hostile traffic (reference §B.1, §H.6; sōzu
``cluster_ip_limit_tests.rs`` and ``eviction_tests.rs``):

* connections still in their TLS handshake count toward ``max_connections`` — a flood of
  silent connections to an HTTPS port cannot make a worker hold more sockets than that;
* ``max_connections_per_ip`` per (cluster, client IP): HTTP gets 429 with ``Retry-After``
  (``retry_after = 0`` omits it), a cluster may override the global limit, TCP closes the
  extra connection without a byte;
* ``evict_on_queue_full``: a full worker closes its least recently active connection to admit
  a new one; without it, the new one waits in the backlog.

Every daemon here has one worker, whose limits are then the daemon's.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import pytest
from support import configs
from support.backends import Answer, HttpBackend, TcpEchoBackend, wait_for
from support.certs import make_certificate
from support.clients import HttpConnection, tls_client_context
from support.daemon import DaemonProcess, free_port

from sozu_config import QueryMetrics

pytestmark = pytest.mark.e2e


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def silent_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never send a byte (their connect may still be pending
    in the backlog)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(sock)
    return sockets


def proxying_metrics(daemon: DaemonProcess) -> dict[str, object]:
    response = daemon.send(QueryMetrics())
    assert response.ok and response.content is not None
    return response.content.proxying  # type: ignore[union-attr]


# --------------------------------------------------------------------------- TLS handshakes


def tls_daemon(tmp_path: Path, port: int, backend: str, max_connections: int) -> DaemonProcess:
    """One worker, an HTTPS listener for ``tls.test`` with a 2 s handshake timeout."""
    made = make_certificate("tls.test")
    (tmp_path / "cert.pem").write_text(made.cert_pem)
    (tmp_path / "key.pem").write_text(made.key_pem)
    config = configs.document(
        configs.https_listener(port, certificate="cert.pem", key="key.pem", request_timeout=2),
        configs.http_cluster("app", port, "tls.test", [backend]),
        worker_count=1,
        max_connections=max_connections,
    )
    return DaemonProcess(tmp_path, config)


def served_over_tls_again(port: int, within: float = 20.0) -> None:
    """Wait (at most ``within`` seconds) until a TLS client is served."""
    deadline = time.monotonic() + within
    while True:
        try:
            with HttpConnection(
                port, tls=tls_client_context(), server_hostname="tls.test", timeout=5
            ) as connection:
                assert connection.request("GET", "/", host="tls.test").status == 200
                return
        except (OSError, ssl.SSLError):
            assert time.monotonic() < deadline, "no client served after the flood"
            time.sleep(0.2)


def test_tls_handshakes_count_toward_max_connections(tmp_path: Path) -> None:
    """1,000 silent connections to an HTTPS port: the worker holds at most max_connections
    sockets for them (the rest wait in the kernel backlog), they are closed at the handshake
    timeout, and real clients are served afterwards."""
    port = free_port()
    with HttpBackend("app") as backend, tls_daemon(tmp_path, port, backend.address, 40) as daemon:
        daemon.start()
        (worker,) = daemon.worker_pids()
        before = open_descriptors(worker)
        flood = silent_connections(port, 1000)
        try:
            time.sleep(1.0)
            held = open_descriptors(worker) - before
            assert held <= 40 + 2, f"the worker holds {held} sockets for silent clients"
            assert proxying_metrics(daemon)["listener.connection_capped"] >= 1
        finally:
            for sock in flood:
                sock.close()
        # the silent ones end at the handshake timeout; a real client gets through
        served_over_tls_again(port)
        wait_for(lambda: open_descriptors(worker) <= before + 2, timeout=10)
        assert proxying_metrics(daemon)["tls.handshake_failures"] >= 40


# --------------------------------------------------------------------------- per (cluster, IP)


def limited_http(tmp_path: Path, port: int, backend: str, **settings: object) -> DaemonProcess:
    """One worker, an HTTP listener, clusters ``limited`` (under the global limits of
    ``settings``) and ``open`` (no limit per address)."""
    config = configs.document(
        configs.http_listener(port),
        configs.http_cluster("limited", port, "limited.test", [backend]),
        configs.http_cluster("open", port, "open.test", [backend], max_connections_per_ip=0),
        worker_count=1,
        **settings,
    )
    return DaemonProcess(tmp_path, config)


def test_h1_global_limit_emits_429_with_retry_after(tmp_path: Path) -> None:
    """sōzu ``test_h1_global_limit_emits_429``: with max_connections_per_ip = 2, a third
    connection of the same client to the cluster gets 429 and ``Retry-After: 60``; once one
    connection closes, a new one is served."""
    port = free_port()
    with (
        HttpBackend("app") as backend,
        limited_http(tmp_path, port, backend.address, max_connections_per_ip=2) as daemon,
    ):
        daemon.start()
        first, second = HttpConnection(port), HttpConnection(port)
        try:
            assert first.request("GET", "/", host="limited.test").status == 200
            assert second.request("GET", "/", host="limited.test").status == 200
            with HttpConnection(port) as third:
                refused = third.request("GET", "/", host="limited.test")
                assert refused.status == 429
                assert refused.header("retry-after") == "60"
                assert third.is_closed()
            # the connections that hold the slots go on being served
            assert first.request("GET", "/again", host="limited.test").status == 200
        finally:
            first.close()
        wait_for(lambda: _served(port, "limited.test"), timeout=5)
        second.close()
        assert proxying_metrics(daemon)["client.per_ip_refusals"] >= 1


def _served(port: int, host: str) -> bool:
    with HttpConnection(port) as connection:
        return connection.request("GET", "/", host=host).status == 200


def test_h1_retry_after_zero_elides_the_header(tmp_path: Path) -> None:
    """sōzu ``test_h1_retry_after_zero_elides_header``."""
    port = free_port()
    with (
        HttpBackend("app") as backend,
        limited_http(
            tmp_path, port, backend.address, max_connections_per_ip=1, retry_after=0
        ) as daemon,
    ):
        daemon.start()
        with HttpConnection(port) as holder, HttpConnection(port) as extra:
            assert holder.request("GET", "/", host="limited.test").status == 200
            refused = extra.request("GET", "/", host="limited.test")
            assert refused.status == 429
            assert refused.header("retry-after") is None


def test_h1_per_cluster_override_coexists_with_an_unlimited_cluster(tmp_path: Path) -> None:
    """sōzu ``test_h1_per_cluster_override``: the global limit of 1 holds for ``limited``,
    while ``open`` (max_connections_per_ip = 0) takes any number of connections; a connection
    that moves to another cluster gives its slot back."""
    port = free_port()
    with (
        HttpBackend("app") as backend,
        limited_http(
            tmp_path, port, backend.address, max_connections_per_ip=1, retry_after=7
        ) as daemon,
    ):
        daemon.start()
        connections = [HttpConnection(port) for _ in range(5)]
        try:
            for connection in connections:
                assert connection.request("GET", "/", host="open.test").status == 200
            assert connections[0].request("GET", "/", host="limited.test").status == 200
            refused = connections[1].request("GET", "/", host="limited.test")
            assert refused.status == 429 and refused.header("retry-after") == "7"
            # connection 0 goes back to the open cluster: its slot of "limited" is free again
            assert connections[0].request("GET", "/", host="open.test").status == 200
            assert connections[2].request("GET", "/", host="limited.test").status == 200
        finally:
            for connection in connections:
                connection.close()


def test_tcp_graceful_close_on_limit(tmp_path: Path) -> None:
    """sōzu ``test_tcp_graceful_close_on_limit``: the second connection of a client to a TCP
    cluster limited to one is closed without a byte (a FIN, not a reset); the first one is
    not disturbed."""
    port = free_port()
    with TcpEchoBackend() as echo:
        config = configs.document(
            configs.tcp_listener(port),
            configs.tcp_cluster("pipe", port, [echo.address], max_connections_per_ip=1),
            worker_count=1,
        )
        with DaemonProcess(tmp_path, config).start():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as first:
                first.sendall(b"hello")
                assert first.recv(100) == b"hello"
                with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
                    assert second.recv(100) == b""  # an orderly close
                first.sendall(b"still here")
                assert first.recv(100) == b"still here"
            wait_for(lambda: _echoes(port), timeout=5)


def _echoes(port: int) -> bool:
    """The slot of a closed connection is given back once the proxy saw it close: until
    then, a new connection is refused (closed, or reset when it had sent data)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(b"again")
            return sock.recv(100) == b"again"
        except ConnectionResetError:
            return False


# --------------------------------------------------------------------------- eviction


def eviction_daemon(tmp_path: Path, port: int, backend: str, evict: bool) -> DaemonProcess:
    config = configs.single_http_cluster(
        port,
        [backend],
        hostname="app.test",
        worker_count=1,
        max_connections=5,
        evict_on_queue_full=evict,
    )
    return DaemonProcess(tmp_path, config)


def fill_the_worker(port: int) -> list[socket.socket]:
    """Five idle connections: the worker of an eviction daemon is full."""
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    time.sleep(0.3)  # all accepted by now
    return idle


def test_evict_on_queue_full_accepts_after_eviction(tmp_path: Path) -> None:
    """sōzu ``test_evict_on_queue_full_accepts_after_eviction``: five idle connections fill
    the worker; a sixth client is served at once, and one idle connection was closed."""
    port = free_port()
    with (
        HttpBackend("app") as backend,
        eviction_daemon(tmp_path, port, backend.address, evict=True) as daemon,
    ):
        daemon.start()
        idle = fill_the_worker(port)
        try:
            with HttpConnection(port, timeout=3) as newcomer:
                assert newcomer.request("GET", "/", host="app.test").status == 200
            closed = 0
            for sock in idle:
                sock.settimeout(0.5)
                try:
                    closed += sock.recv(1) == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed += 1
            assert closed >= 1
        finally:
            for sock in idle:
                sock.close()
        assert proxying_metrics(daemon)["client.connections.evicted"] >= 1


def test_evict_on_queue_full_disabled_leaves_the_newcomer_waiting(tmp_path: Path) -> None:
    """sōzu ``test_evict_on_queue_full_disabled_drops_overflow``: without eviction, a full
    worker does not touch its connections; the newcomer is served only once one leaves."""
    port = free_port()
    with (
        HttpBackend("app") as backend,
        eviction_daemon(tmp_path, port, backend.address, evict=False) as daemon,
    ):
        daemon.start()
        idle = fill_the_worker(port)
        try:
            waiting = socket.create_connection(("127.0.0.1", port), timeout=1)
            waiting.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            with pytest.raises(TimeoutError):
                waiting.recv(100)
            for sock in idle:  # nobody was evicted
                sock.settimeout(0.1)
                with pytest.raises(TimeoutError):
                    sock.recv(1)
            idle.pop().close()  # one leaves: below 90 % of the limit, accepting resumes
            idle.pop().close()
            waiting.settimeout(5)
            assert waiting.recv(100).startswith(b"HTTP/1.1 200")
            waiting.close()
        finally:
            for sock in idle:
                sock.close()
        assert proxying_metrics(daemon)["client.connections.evicted"] == 0


# --------------------------------------------------------------------------- stalled readers


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_stalled_reader_costs_a_bounded_amount(tmp_path: Path) -> None:
    """Clients that ask for a large answer and stop reading: each costs the worker about its
    write buffer's high-water mark (4 x buffer_size, 64 KiB here) plus one read, not one of
    the event loop's 256 KiB reads on top of it."""
    body = b"x" * (8 << 20)
    port = free_port()
    with HttpBackend("big", lambda request: Answer(body=body)) as backend:
        config = configs.single_http_cluster(
            port, [backend.address], hostname="big.test", cluster_id="big", worker_count=1
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            (worker,) = daemon.worker_pids()
            with HttpConnection(port) as warm:  # the first request's one-time costs
                warm.send(b"GET / HTTP/1.1\r\nHost: big.test\r\n\r\n")
                warm.read_answer()
            before = resident_kib(worker)
            stalled = []
            try:
                for _ in range(40):
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: big.test\r\n\r\n")
                    stalled.append(sock)
                time.sleep(2.0)
                each = (resident_kib(worker) - before) / len(stalled)
                assert each < 180, f"a stalled reader costs {each:.0f} KiB"
            finally:
                for sock in stalled:
                    sock.close()


# --------------------------------------------------------------------------- file descriptors


def test_out_of_file_descriptors_is_said_not_suffered_silently(tmp_path: Path) -> None:
    """With an open files limit far below what max_connections needs, a worker says so at
    start-up; when a flood of TLS connections then exhausts its descriptors, it logs why it
    cannot accept (once, not per connection) and serves clients again once the flood ends."""
    port = free_port()
    with HttpBackend("app") as backend, tls_daemon(tmp_path, port, backend.address, 1000) as daemon:
        daemon.start(open_files=96)
        wait_for(lambda: "needs about 2064 open files" in daemon.logs(), timeout=10)
        flood = silent_connections(port, 300)
        try:
            wait_for(lambda: "Too many open files" in daemon.logs(), timeout=10)
        finally:
            for sock in flood:
                sock.close()
        assert daemon.logs().count("Too many open files") <= 3  # rate limited
        served_over_tls_again(port)
