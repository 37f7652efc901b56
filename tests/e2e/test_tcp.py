"""End-to-end TCP proxying: byte pipes between clients and the backends of the cluster bound to
a TCP listener (reference §G; sōzu ``tcp_tests.rs``).

One daemon (one worker, so that round robin is deterministic) serves the module with one TCP
listener per situation:

* ``echo``: one echo backend that answers ``bye`` when the client half-closes;
* ``pair``: two echo backends that start every connection with their name (round robin);
* ``dead``: one backend address where nothing listens;
* ``retry``: a dead backend and a live one;
* ``live``: one backend, changed at runtime while a connection stays up.

Soft stop gets a daemon of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import configs
from support.backends import TcpEchoBackend, wait_for
from support.daemon import DaemonProcess, free_port, free_ports

from sozu_config import AddBackend, Backend, QueryMetrics, RemoveBackend, SoftStop
from sozu_config.responses import MetricsContent

pytestmark = pytest.mark.e2e

EOF_REPLY = b"bye\n"


@dataclass
class TcpProxy:
    daemon: DaemonProcess
    ports: dict[str, int]
    echo: TcpEchoBackend
    first: TcpEchoBackend  # prefix b"[first]"
    second: TcpEchoBackend  # prefix b"[second]"
    retry: TcpEchoBackend  # the live backend of the "retry" cluster
    live: TcpEchoBackend  # prefix b"[live-1]"
    dead_address: str


def tcp_site(
    name: str, port: int, backends: list[tuple[str, str]]
) -> tuple[configs.ListenerTable, configs.ClusterTable]:
    """A TCP listener on ``port`` and cluster ``name`` behind it, with ``backends`` given as
    (backend id, address)."""
    entries = [configs.backend(address, backend_id=backend_id) for backend_id, address in backends]
    return configs.tcp_listener(port), configs.tcp_cluster(name, port, entries)


@contextlib.contextmanager
def refusing_address() -> Iterator[str]:
    """An address where connections are refused: a port bound (so that nobody else gets it)
    but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpProxy]:
    with (
        refusing_address() as dead,
        TcpEchoBackend(reply_on_eof=EOF_REPLY) as echo,
        TcpEchoBackend(prefix=b"[first]") as first,
        TcpEchoBackend(prefix=b"[second]") as second,
        TcpEchoBackend(prefix=b"[retry]") as retry,
        TcpEchoBackend(prefix=b"[live-1]") as live,
    ):
        names = ("echo", "pair", "dead", "retry", "live")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        config = configs.document(
            *tcp_site("echo", ports["echo"], [("echo-0", echo.address)]),
            *tcp_site(
                "pair", ports["pair"], [("first", first.address), ("second", second.address)]
            ),
            *tcp_site("dead", ports["dead"], [("nobody", dead)]),
            *tcp_site("retry", ports["retry"], [("nobody", dead), ("retry", retry.address)]),
            *tcp_site("live", ports["live"], [("live-1", live.address)]),
            worker_count=1,
        )
        with DaemonProcess(tmp_path_factory.mktemp("tcp"), config).start() as daemon:
            yield TcpProxy(daemon, ports, echo, first, second, retry, live, dead)


# --------------------------------------------------------------------------- clients


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(1 << 16, size - len(data)))
        if not chunk:
            raise AssertionError(f"closed after {len(data)} of {size} bytes: {bytes(data[:80])!r}")
        data += chunk
    return bytes(data)


def receive_until_closed(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def round_trip(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(message)
    return receive_exactly(sock, len(message))


def open_backend_connections(daemon: DaemonProcess, cluster_id: str) -> dict[str, int]:
    """Backends of ``cluster_id`` still counting open connections in the worker, waited for
    (bounded) to drop to none: a pipe whose two ends are closed is no longer counted."""
    still_open: dict[str, int] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = daemon.send(QueryMetrics(cluster_ids=[cluster_id], workers=True))
        assert response.ok and isinstance(response.content, MetricsContent), response.message
        still_open = {
            backend: gauges["backend.connections"]
            for data in response.content.workers.values()
            for backend, gauges in data["clusters"].get(cluster_id, {}).get("backends", {}).items()
            if gauges["backend.connections"]
        }
        if not still_open:
            break
        time.sleep(0.05)
    return still_open


# --------------------------------------------------------------------------- the pipe


def test_tcp_proxy_basic(proxy: TcpProxy) -> None:
    """sōzu ``test_tcp_proxy_basic``: raw bytes go to the backend and come back unchanged,
    the backend receives exactly what the client sent."""
    before = len(proxy.echo.received)
    message = b"\x00\x01binary\r\n\xff payload that is not HTTP\n"
    with connect(proxy.ports["echo"]) as client:
        assert round_trip(client, message) == message
    wait_for(lambda: len(proxy.echo.received) > before)
    assert bytes(proxy.echo.received[before]) == message


def test_tcp_proxy_large_payload(proxy: TcpProxy) -> None:
    """sōzu ``test_tcp_proxy_large_payload``: 1 MiB goes through and back intact (written
    while the echo is read, so flow control is exercised in both directions)."""
    data = random.Random(7).randbytes(1 << 20)
    with connect(proxy.ports["echo"], timeout=20) as client:
        sender = threading.Thread(target=client.sendall, args=(data,), daemon=True)
        sender.start()
        echoed = receive_exactly(client, len(data))
        sender.join(10)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


def test_tcp_proxy_half_close(proxy: TcpProxy) -> None:
    """sōzu ``test_tcp_proxy_half_close``: after the client's ``shutdown(SHUT_WR)`` the
    backend sees the end of the stream and its last answer still reaches the client."""
    with connect(proxy.ports["echo"]) as client:
        client.sendall(b"last words")
        assert receive_exactly(client, 10) == b"last words"
        client.shutdown(socket.SHUT_WR)
        assert receive_until_closed(client) == EOF_REPLY


def test_tcp_proxy_multiple_requests(proxy: TcpProxy) -> None:
    """sōzu ``test_tcp_proxy_multiple_requests``: many round trips on one connection, all on
    the same backend connection."""
    before = len(proxy.echo.received)
    with connect(proxy.ports["echo"]) as client:
        for index in range(20):
            message = f"round trip {index}\n".encode()
            assert round_trip(client, message) == message
    wait_for(lambda: len(proxy.echo.received) > before)
    assert len(proxy.echo.received) == before + 1, "one backend connection for one client"
    expected = b"".join(f"round trip {i}\n".encode() for i in range(20))
    assert bytes(proxy.echo.received[before]) == expected


def test_tcp_proxy_concurrent_async(proxy: TcpProxy) -> None:
    """sōzu ``test_tcp_proxy_concurrent_async``: 20 clients at once, each with its own
    payloads over several round trips, each getting back exactly its own bytes."""

    def client(number: int) -> bool:
        with connect(proxy.ports["echo"]) as sock:
            for index in range(5):
                message = f"client {number} message {index} ".encode() * (number + 1)
                if round_trip(sock, message) != message:
                    return False
        return True

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client, range(20), timeout=30))
    assert results == [True] * 20
    assert open_backend_connections(proxy.daemon, "echo") == {}


def test_tcp_backend_connection_failure(proxy: TcpProxy) -> None:
    """sōzu ``test_tcp_backend_connection_failure``: when no backend can be reached the
    client's connection is closed without a byte, promptly, and the proxy keeps serving."""
    for _ in range(3):
        started = time.monotonic()
        with connect(proxy.ports["dead"]) as client:
            client.sendall(b"anybody there?")
            assert receive_until_closed(client) == b""
        assert time.monotonic() - started < 10
    with connect(proxy.ports["echo"]) as client:
        assert round_trip(client, b"still alive") == b"still alive"


def test_tcp_retries_on_another_backend(proxy: TcpProxy) -> None:
    """A connection whose first backend is dead is retried on the other one: every client is
    served."""
    for index in range(6):
        with connect(proxy.ports["retry"]) as client:
            message = f"retry {index}".encode()
            client.sendall(message)
            assert receive_exactly(client, len(b"[retry]") + len(message)) == b"[retry]" + message


def test_tcp_round_robin(proxy: TcpProxy) -> None:
    """Successive connections alternate between the two backends (round robin)."""
    served = []
    for _ in range(6):
        with connect(proxy.ports["pair"]) as client:
            client.sendall(b"?")
            head = receive_exactly(client, 1)
            while not head.endswith(b"]"):
                head += receive_exactly(client, 1)
            served.append(head.decode())
            assert receive_exactly(client, 1) == b"?"
    assert sorted(set(served)) == ["[first]", "[second]"], served
    assert all(a != b for a, b in itertools.pairwise(served)), served


def test_tcp_live_backend_change_keeps_long_connection(proxy: TcpProxy) -> None:
    """``add_backend`` and ``remove_backend`` while a long connection is up: the connection
    keeps working with its backend until it closes; new connections use the new backend."""
    with TcpEchoBackend(prefix=b"[live-2]") as replacement:
        with connect(proxy.ports["live"]) as long_lived:
            assert receive_exactly(long_lived, len(b"[live-1]")) == b"[live-1]"
            assert round_trip(long_lived, b"one") == b"one"
            response = proxy.daemon.send(
                AddBackend(
                    backend=Backend(
                        cluster_id="live", backend_id="live-2", address=replacement.address
                    )
                )
            )
            assert response.ok, response.message
            assert round_trip(long_lived, b"two") == b"two"
            response = proxy.daemon.send(RemoveBackend(cluster_id="live", backend_id="live-1"))
            assert response.ok, response.message
            for index in range(5):
                message = f"after removal {index}".encode()
                assert round_trip(long_lived, message) == message
            for _ in range(3):
                with connect(proxy.ports["live"]) as fresh:
                    assert receive_exactly(fresh, len(b"[live-2]")) == b"[live-2]"
                    assert round_trip(fresh, b"new") == b"new"
            # the short connections are over on both sides before their backend goes away
            assert open_backend_connections(proxy.daemon, "live") == {}
            assert round_trip(long_lived, b"last") == b"last"
        assert (
            bytes(proxy.live.received[-1])
            == b"onetwo" + b"".join(f"after removal {i}".encode() for i in range(5)) + b"last"
        )


# --------------------------------------------------------------------------- soft stop


def late_session_served(port: int) -> bool:
    """Whether a new connection gets its bytes echoed within 1 s (refused, reset, closed or
    left waiting in the kernel backlog: not served)."""
    try:
        with connect(port, timeout=1) as late:
            late.sendall(b"late")
            return late.recv(16) != b""
    except OSError:
        return False


def test_tcp_soft_stop_with_active_sessions(tmp_path: Path) -> None:
    """sōzu ``test_tcp_soft_stop_with_active_sessions``: a soft stop lets an active TCP
    session go on (this daemon does not cut pipes at once as sōzu does: they may finish,
    within ``soft_stop_timeout``), accepts no new session, and the daemon exits once the
    session is over."""
    with TcpEchoBackend() as echo:
        port = free_port()
        config = configs.document(
            *tcp_site("echo", port, [("echo-0", echo.address)]), worker_count=1
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            assert daemon.process is not None
            with connect(port) as active:
                assert round_trip(active, b"before") == b"before"
                answer: list[object] = []
                stopper = threading.Thread(
                    target=lambda: answer.append(daemon.send(SoftStop(), timeout=60)),
                    daemon=True,
                )
                stopper.start()
                time.sleep(0.5)
                for index in range(5):
                    message = f"during soft stop {index}".encode()
                    assert round_trip(active, message) == message
                assert not late_session_served(port), "a new session was served"
                assert round_trip(active, b"still") == b"still"
                assert daemon.process.poll() is None, "the daemon left with a session open"
            code = daemon.process.wait(timeout=30)
            stopper.join(10)
    assert code == 0
    assert answer and getattr(answer[0], "ok", False), answer
