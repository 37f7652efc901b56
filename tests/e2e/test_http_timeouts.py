"""End-to-end timeouts (reference §E.5): each one armed and enforced, on its own listener with
a 1 s setting so that it fires fast and the others (left at their defaults) never interfere.

* ``request_timeout``: from accept until the request head is complete → 408 (or a silent
  close when not one byte came);
* ``front_timeout``: an idle keep-alive connection, or a client that stalls in its body;
* ``back_timeout``: a silent backend → 504; a backend that stalls in its body → the client's
  connection is cut (the answer had begun);
* ``connect_timeout``: a backend address that never completes the TCP handshake → 503.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.clients import ConnectionClosed, HttpConnection
from support.daemon import DaemonProcess, free_port

from sozu_config import QueryMetrics

pytestmark = pytest.mark.e2e


def stall_after(first: bytes, pause: float) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        yield first
        await asyncio.sleep(pause)
        yield b"too late"

    return chunks()


def backend_answer(request: Received) -> Answer:
    if request.target == "/silent":
        return Answer(body=b"too late", delay=4.0)
    if request.target == "/stall-body":
        return Answer(body=lambda: stall_after(b"x" * 1000, 5.0), length=100_000)
    return Answer(body=b"ok:" + request.target.encode())


@dataclass
class Blackhole:
    """A local address whose TCP handshakes never complete: a listening socket with a full
    accept queue (the kernel drops further SYNs, so connecting hangs until a timeout).

    A non-routable address such as 10.255.255.1 is the usual choice, but where the network
    is proxied (as in some sandboxes) connecting to it succeeds at once; a full backlog on
    127.0.0.1 blackholes SYNs everywhere.
    """

    listener: socket.socket
    fillers: list[socket.socket] = field(default_factory=list)

    @classmethod
    def open(cls) -> Blackhole:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        hole = cls(listener)
        for _ in range(16):
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(listener.getsockname())
            except TimeoutError:
                probe.close()
                return hole
            hole.fillers.append(probe)
        hole.close()
        raise RuntimeError("could not fill the accept queue of a local listening socket")

    @property
    def address(self) -> str:
        host, port = self.listener.getsockname()
        return f"{host}:{port}"

    def close(self) -> None:
        for sock in self.fillers:
            sock.close()
        self.listener.close()


@dataclass
class Timeouts:
    daemon: DaemonProcess
    request: int  # request_timeout = 1
    front: int  # front_timeout = 1
    back: int  # back_timeout = 1
    connect: int  # connect_timeout = 1
    backend: HttpBackend

    def gauges(self) -> list[dict[str, Any]]:
        response = self.daemon.send(QueryMetrics(cluster_ids=["app"], workers=True))
        [worker] = response.content.workers.values()  # type: ignore[union-attr]
        return list(worker["clusters"]["app"]["backends"].values())

    def assert_quiet(self) -> None:
        deadline = time.monotonic() + 5
        while any(g["http.active_requests"] != 0 for g in self.gauges()):
            assert time.monotonic() < deadline, self.gauges()
            time.sleep(0.05)
        assert all(g["http.active_requests"] == 0 for g in self.gauges())


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Timeouts]:
    ports = {name: free_port() for name in ("request", "front", "back", "connect")}
    hole = Blackhole.open()
    try:
        with HttpBackend("app", backend_answer) as backend:
            connect = ports["connect"]
            config = configs.document(
                *(
                    configs.http_listener(port, **{f"{name}_timeout": 1})
                    for name, port in ports.items()
                ),
                configs.cluster(
                    "app",
                    frontends=[configs.frontend(port, "app.test") for port in ports.values()],
                    backends=[configs.backend(backend.address)],
                ),
                configs.cluster(
                    "blackholed",
                    frontends=[configs.frontend(connect, "blackholed.test")],
                    backends=[configs.backend(hole.address)],
                ),
                configs.cluster(
                    "blackholed_and_live",
                    frontends=[configs.frontend(connect, "mixed.test")],
                    backends=[configs.backend(hole.address), configs.backend(backend.address)],
                ),
                worker_count=1,
            )
            directory = tmp_path_factory.mktemp("timeouts")
            with DaemonProcess(directory, config).start() as daemon:
                yield Timeouts(daemon, **ports, backend=backend)
    finally:
        hole.close()


def closed_within(connection: HttpConnection, timeout: float) -> float:
    """Seconds until the proxy closed ``connection`` (fails after ``timeout``); bytes that
    arrive meanwhile are kept in ``connection.buffer``."""
    started = time.monotonic()
    while not connection.is_closed(timeout=0.25):
        assert time.monotonic() - started < timeout, "the connection was not closed"
    return time.monotonic() - started


def test_request_timeout_answers_408_to_a_partial_head(timeouts: Timeouts) -> None:
    with HttpConnection(timeouts.request) as connection:
        started = time.monotonic()
        connection.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        answer = connection.read_answer()
        elapsed = time.monotonic() - started
        assert answer.status == 408 and b"<h1>408 Request Timeout</h1>" in answer.body
        assert connection.is_closed(timeout=3)
    assert 0.7 < elapsed < 3, f"408 after {elapsed:.2f} s with request_timeout = 1"


def test_request_timeout_is_not_reset_by_a_trickling_head(timeouts: Timeouts) -> None:
    """A head sent one byte at a time (slowloris) still has to be complete in time."""
    head = b"GET /trickle HTTP/1.1\r\nHost: app.test\r\nX-Padding: " + b"p" * 40
    with HttpConnection(timeouts.request) as connection:
        started = time.monotonic()
        try:
            for byte in head:
                connection.send(bytes([byte]))
                if connection.is_closed(timeout=0.2):
                    break
                assert time.monotonic() - started < 4, "the trickling head was never cut"
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
    assert elapsed < 3, f"closed after {elapsed:.2f} s with request_timeout = 1"
    assert connection.buffer.startswith(b"HTTP/1.1 408 ")


def test_request_timeout_closes_a_connection_that_sends_nothing(timeouts: Timeouts) -> None:
    with HttpConnection(timeouts.request) as connection:
        elapsed = closed_within(connection, 4)
    assert elapsed > 0.5, f"closed after {elapsed:.2f} s with request_timeout = 1"
    assert connection.buffer in (b"",) or connection.buffer.startswith(b"HTTP/1.1 408 ")


def test_front_timeout_closes_an_idle_keep_alive_connection(timeouts: Timeouts) -> None:
    """mux ``test_idle_timeout_no_underflow``: the idle close leaves no request counted."""
    with HttpConnection(timeouts.front) as connection:
        assert connection.request("GET", "/idle", host="app.test").status == 200
        elapsed = closed_within(connection, 4)
        assert not connection.buffer
    assert elapsed > 0.5, f"closed after {elapsed:.2f} s with front_timeout = 1"
    timeouts.assert_quiet()


def test_front_timeout_cuts_a_client_that_stalls_in_its_body(timeouts: Timeouts) -> None:
    before = len(timeouts.backend.requests)
    with HttpConnection(timeouts.front) as connection:
        connection.send(b"POST /stalled HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n")
        connection.send(b"0123456789")
        elapsed = closed_within(connection, 4)
    assert elapsed > 0.5, f"closed after {elapsed:.2f} s with front_timeout = 1"
    # whatever was said before closing, the backend never got a complete request
    assert connection.buffer == b"" or connection.buffer.startswith(b"HTTP/1.1 408 ")
    assert len(timeouts.backend.requests) == before
    timeouts.assert_quiet()


def test_back_timeout_answers_504_for_a_silent_backend(timeouts: Timeouts) -> None:
    with HttpConnection(timeouts.back) as connection:
        started = time.monotonic()
        answer = connection.request("GET", "/silent", host="app.test")
        elapsed = time.monotonic() - started
        assert answer.status == 504 and b"<h1>504 Gateway Timeout</h1>" in answer.body
        assert connection.is_closed(timeout=3)
    assert 0.7 < elapsed < 3, f"504 after {elapsed:.2f} s with back_timeout = 1"
    timeouts.assert_quiet()


def test_back_timeout_cuts_an_answer_whose_body_stalls(timeouts: Timeouts) -> None:
    with HttpConnection(timeouts.back) as connection:
        connection.send(b"GET /stall-body HTTP/1.1\r\nHost: app.test\r\n\r\n")
        answer = connection.read_answer(head_only=True)
        assert answer.status == 200 and answer.header("content-length") == "100000"
        elapsed = closed_within(connection, 4)
    assert 0.4 < elapsed < 3.5, f"cut after {elapsed:.2f} s with back_timeout = 1"
    assert len(connection.buffer) == 1000, "the body was not cut where the backend stalled"
    timeouts.assert_quiet()


def test_connect_timeout_gives_503_for_a_backend_that_never_accepts(timeouts: Timeouts) -> None:
    with HttpConnection(timeouts.connect) as connection:
        started = time.monotonic()
        answer = connection.request("GET", "/", host="blackholed.test")
        elapsed = time.monotonic() - started
    assert answer.status == 503 and b"<h1>503 Service Unavailable</h1>" in answer.body
    assert 0.7 < elapsed < 4, f"503 after {elapsed:.2f} s with connect_timeout = 1"


def test_connect_timeout_then_retry_on_a_live_backend(timeouts: Timeouts) -> None:
    """A connection attempt that times out counts as a failure and the request is retried on
    the other backend: every request is answered by the live one."""
    for index in range(4):
        with HttpConnection(timeouts.connect) as connection:
            answer = connection.request("GET", f"/mixed/{index}", host="mixed.test")
        assert answer.status == 200 and answer.body == f"ok:/mixed/{index}".encode()


def test_idle_timeouts_interleaved_with_traffic(timeouts: Timeouts) -> None:
    """mux ``test_rapid_idle_with_valid_traffic``: connections left idle time out while
    others keep making requests; every request is answered and nothing stays in flight."""
    idle = [HttpConnection(timeouts.front) for _ in range(5)]
    try:
        for connection in idle:
            assert connection.request("GET", "/before-idle", host="app.test").status == 200
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 2.0 and answered < 200:
            with HttpConnection(timeouts.front) as busy:
                for _ in range(5):
                    assert busy.request("GET", "/busy", host="app.test").status == 200
                    answered += 1
        for connection in idle:
            closed_within(connection, 3)
    finally:
        for connection in idle:
            connection.close()
    assert answered >= 10
    timeouts.assert_quiet()


def test_a_timed_out_keep_alive_connection_is_really_closed(timeouts: Timeouts) -> None:
    """After the front timeout, a request on the closed connection fails on the client side
    (the proxy really closed it), and a new connection works."""
    with HttpConnection(timeouts.front) as connection:
        assert connection.request("GET", "/a", host="app.test").status == 200
        closed_within(connection, 4)
        with pytest.raises((ConnectionClosed, BrokenPipeError, ConnectionResetError)):
            connection.request("GET", "/b", host="app.test")
    with HttpConnection(timeouts.front) as connection:
        assert connection.request("GET", "/c", host="app.test").status == 200
