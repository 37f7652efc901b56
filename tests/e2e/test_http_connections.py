"""End-to-end connection handling of HTTP/1.1: keep-alive on both sides, pooled backend
connections, ``Connection: close`` from either side, HTTP/1.0 clients, pipelining, requests
split in tiny writes, and clients that hang up at awkward moments (reference §E.4).

One daemon (one worker, so that every backend connection counted is this worker's) serves the
module. The backends answer with the request target, so an answer says which request it
belongs to.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.clients import HttpConnection
from support.daemon import DaemonProcess, free_port

from sozu_config import QueryMetrics

pytestmark = pytest.mark.e2e


def echo_target(request: Received) -> Answer:
    if request.target.startswith("/backend-close"):
        return Answer(body=request.target.encode(), close=True)
    if request.target.startswith("/slow"):
        return Answer(body=request.target.encode(), delay=1.0)
    if request.target.startswith("/http10-answer"):
        return Answer(raw=b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhttp10")
    if request.method == "POST":
        return Answer(body=b"posted:" + request.body)
    return Answer(body=request.target.encode())


@dataclass
class Connections:
    port: int
    daemon: DaemonProcess
    keep: HttpBackend  # cluster "keep", host keep.test
    pool: HttpBackend  # cluster "pool", host pool.test
    trio: list[HttpBackend]  # cluster "trio", host trio.test

    def gauges(self, cluster_id: str) -> dict[str, dict[str, Any]]:
        """The backends' live counters (active connections and requests) of the worker."""
        response = self.daemon.send(QueryMetrics(cluster_ids=[cluster_id], workers=True))
        assert response.ok, response.message
        [worker] = response.content.workers.values()  # type: ignore[union-attr]
        return worker["clusters"][cluster_id]["backends"]  # type: ignore[no-any-return]

    def assert_quiet(self, cluster_id: str) -> None:
        """No request in flight on the cluster's backends, and no negative counter."""

        def settled() -> bool:
            gauges = self.gauges(cluster_id)
            return all(
                g["http.active_requests"] == 0 and g["backend.connections"] >= 0
                for g in gauges.values()
            )

        deadline = time.monotonic() + 5
        while not settled():
            assert time.monotonic() < deadline, self.gauges(cluster_id)
            time.sleep(0.05)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connections]:
    port = free_port()
    with (
        HttpBackend("keep", echo_target) as keep,
        HttpBackend("pool", echo_target) as pool,
        HttpBackend("trio-0") as trio0,
        HttpBackend("trio-1") as trio1,
        HttpBackend("trio-2") as trio2,
    ):
        address = f"127.0.0.1:{port}"
        trio = [trio0, trio1, trio2]
        config = configs.document(
            configs.http_listener(address),
            configs.http_cluster("keep", address, "keep.test", [keep.address]),
            configs.http_cluster("pool", address, "pool.test", [pool.address]),
            configs.http_cluster("trio", address, "trio.test", [b.address for b in trio]),
            worker_count=1,
        )
        with DaemonProcess(tmp_path_factory.mktemp("connections"), config).start() as daemon:
            yield Connections(port, daemon, keep, pool, trio)


def requests_since(backend: HttpBackend, start: int) -> list[Received]:
    return backend.requests[start:]


def test_keep_alive_both_sides_reuses_one_backend_connection(proxy: Connections) -> None:
    """sōzu ``test_keep_alive`` (client keep-alive + backend keep-alive: both stay open)."""
    start = len(proxy.keep.requests)
    with HttpConnection(proxy.port) as connection:
        for index in range(5):
            answer = connection.request("GET", f"/ka/{index}", host="keep.test")
            assert answer.status == 200 and answer.body == f"/ka/{index}".encode()
            assert "close" not in (answer.header("connection") or "").lower()
        assert not connection.is_closed(timeout=0.5)
    received = requests_since(proxy.keep, start)
    assert [r.target for r in received] == [f"/ka/{i}" for i in range(5)]
    assert len({r.connection for r in received}) == 1


def test_pooled_backend_connections_over_many_clients(proxy: Connections) -> None:
    """sōzu ``test_sync`` (clients times sequential requests, all answered), with the backend's
    connections counted: far fewer than requests, never more than concurrent clients."""
    clients, per_client = 10, 20
    start = len(proxy.pool.requests)
    connections_before = proxy.pool.connections

    def client(number: int) -> list[bytes]:
        bodies = []
        with HttpConnection(proxy.port) as connection:
            for index in range(per_client):
                answer = connection.request("GET", f"/c{number}/{index}", host="pool.test")
                assert answer.status == 200
                bodies.append(answer.body)
        return bodies

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients), timeout=60))
    for number, bodies in enumerate(results):
        assert bodies == [f"/c{number}/{i}".encode() for i in range(per_client)]
    received = requests_since(proxy.pool, start)
    assert len(received) == clients * per_client
    used = {r.connection for r in received}
    opened = proxy.pool.connections - connections_before
    assert len(used) <= clients, f"{len(used)} backend connections for {clients} clients"
    assert opened <= clients
    proxy.assert_quiet("pool")

    # sequential clients, one after the other, share one pooled connection
    start = len(proxy.pool.requests)
    for number in range(3):
        with HttpConnection(proxy.port) as connection:
            for index in range(3):
                assert (
                    connection.request("GET", f"/s{number}/{index}", host="pool.test").status == 200
                )
    assert len({r.connection for r in requests_since(proxy.pool, start)}) == 1


def test_concurrent_clients_over_three_backends(proxy: Connections) -> None:
    """sōzu ``test_async``: 3 backends, 10 concurrent clients, every request answered."""
    starts = [len(b.requests) for b in proxy.trio]

    def client(number: int) -> list[int]:
        statuses = []
        with HttpConnection(proxy.port) as connection:
            for index in range(15):
                answer = connection.request("GET", f"/t{number}/{index}", host="trio.test")
                statuses.append(answer.status)
        return statuses

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(client, range(10), timeout=60))
    assert all(status == 200 for statuses in results for status in statuses)
    served = [len(b.requests) - s for b, s in zip(proxy.trio, starts, strict=True)]
    assert sum(served) == 150
    assert all(count > 0 for count in served), served


def test_a_real_pooling_client_gets_every_answer(proxy: Connections) -> None:
    """aiohttp's client (its own keep-alive pool of 3 connections) sends 60 requests, 20 at a
    time: every answer belongs to its request, over few backend connections."""
    start = len(proxy.pool.requests)

    async def run() -> list[tuple[int, bytes, bytes]]:
        connector = aiohttp.TCPConnector(limit=3)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def fetch(index: int) -> tuple[int, bytes, bytes]:
                url = f"http://127.0.0.1:{proxy.port}/aio/{index}"
                async with session.get(url, headers={"Host": "pool.test"}) as response:
                    return response.status, await response.read(), f"/aio/{index}".encode()

            results: list[tuple[int, bytes, bytes]] = []
            for batch in range(3):
                results += await asyncio.gather(*(fetch(batch * 20 + i) for i in range(20)))
            return results

    for status, body, expected in asyncio.run(run()):
        assert status == 200 and body == expected
    received = requests_since(proxy.pool, start)
    assert len(received) == 60
    assert len({r.connection for r in received}) <= 3


def test_client_connection_close_closes_after_the_answer(proxy: Connections) -> None:
    """sōzu ``test_keep_alive`` (client ``Connection: close``) and
    ``test_h1_connection_close_terminates``."""
    with HttpConnection(proxy.port) as connection:
        answer = connection.request(
            "GET", "/client-close", host="keep.test", headers=[("Connection", "close")]
        )
        assert answer.status == 200 and answer.body == b"/client-close"
        assert "close" in (answer.header("connection") or "").lower()
        assert connection.is_closed(timeout=3)


def test_backend_connection_close_closes_only_the_backend_side(proxy: Connections) -> None:
    """sōzu ``test_keep_alive`` (backend ``Connection: close``: back closed, front open) and
    ``test_msg_close`` (the backend answers then closes: the answer arrives whole)."""
    start = len(proxy.keep.requests)
    with HttpConnection(proxy.port) as connection:
        answer = connection.request("GET", "/backend-close", host="keep.test")
        assert answer.status == 200 and answer.body == b"/backend-close"
        assert "close" not in (answer.header("connection") or "").lower()
        assert not connection.is_closed(timeout=0.5)
        again = connection.request("GET", "/after-backend-close", host="keep.test")
        assert again.status == 200 and again.body == b"/after-backend-close"
    first, second = requests_since(proxy.keep, start)
    assert first.connection != second.connection


def test_http10_client_gets_its_connection_closed_unless_keep_alive(proxy: Connections) -> None:
    with HttpConnection(proxy.port) as connection:
        connection.send(b"GET /http10 HTTP/1.0\r\nHost: keep.test\r\n\r\n")
        answer = connection.read_answer()
        assert answer.status == 200 and answer.body == b"/http10"
        assert connection.is_closed(timeout=3)
    with HttpConnection(proxy.port) as connection:
        for index in range(2):
            connection.send(
                b"GET /http10-ka/%d HTTP/1.0\r\nHost: keep.test\r\nConnection: keep-alive\r\n\r\n"
                % index
            )
            answer = connection.read_answer()
            assert answer.status == 200 and answer.body == b"/http10-ka/%d" % index
            assert (answer.header("connection") or "").lower() == "keep-alive"
        assert not connection.is_closed(timeout=0.5)


def test_http10_backend_answer_is_relayed_and_its_connection_not_reused(
    proxy: Connections,
) -> None:
    start = len(proxy.keep.requests)
    with HttpConnection(proxy.port) as connection:
        answer = connection.request("GET", "/http10-answer", host="keep.test")
        assert answer.status == 200 and answer.body == b"http10"
        follow = connection.request("GET", "/after-http10", host="keep.test")
        assert follow.status == 200 and follow.body == b"/after-http10"
    first, second = requests_since(proxy.keep, start)
    assert first.connection != second.connection


def test_pipelined_requests_are_answered_in_order(proxy: Connections) -> None:
    """sōzu ``test_h1_pipelining``: several requests in one write, answers in order."""
    pipeline = (
        b"GET /p1 HTTP/1.1\r\nHost: keep.test\r\n\r\n"
        b"GET /p2 HTTP/1.1\r\nHost: keep.test\r\n\r\n"
        b"POST /p3 HTTP/1.1\r\nHost: keep.test\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /p4 HTTP/1.1\r\nHost: keep.test\r\n\r\n"
        b"GET /p5 HTTP/1.1\r\nHost: keep.test\r\nConnection: close\r\n\r\n"
    )
    with HttpConnection(proxy.port) as connection:
        connection.send(pipeline)
        bodies = [connection.read_answer().body for _ in range(5)]
        assert connection.is_closed(timeout=3)
    assert bodies == [b"/p1", b"/p2", b"posted:hello", b"/p4", b"/p5"]


def test_request_split_in_tiny_writes(proxy: Connections) -> None:
    """sōzu ``test_status_header_split``: a request delivered in many tiny TCP segments."""
    request = (
        b"POST /split HTTP/1.1\r\nHost: keep.test\r\nX-Long-Header: "
        + b"v" * 40
        + b"\r\nContent-Length: 10\r\n\r\n0123456789"
    )
    with HttpConnection(proxy.port) as connection:
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(0, len(request), 3):
            connection.send(request[index : index + 3])
            time.sleep(0.002)
        answer = connection.read_answer()
    assert answer.status == 200 and answer.body == b"posted:0123456789"


def test_client_hangs_up_during_a_request(proxy: Connections) -> None:
    """mux ``test_client_hup_during_request``: the client leaves while the backend works;
    the proxy keeps serving and no request stays counted in flight."""
    with HttpConnection(proxy.port) as connection:
        connection.send(b"GET /slow/hup HTTP/1.1\r\nHost: keep.test\r\n\r\n")
        time.sleep(0.2)
    with HttpConnection(proxy.port) as other:
        assert other.request("GET", "/during-hup", host="keep.test").body == b"/during-hup"
    time.sleep(1.2)  # the slow answer arrives for a client that is gone
    proxy.assert_quiet("keep")
    with HttpConnection(proxy.port) as other:
        assert other.request("GET", "/after-hup", host="keep.test").body == b"/after-hup"


def test_rapid_connect_disconnect(proxy: Connections) -> None:
    """mux ``test_rapid_connect_disconnect``: connections opened and closed at once, some
    after a partial head; the proxy stays healthy."""
    deadline = time.monotonic() + 20
    for index in range(100):
        assert time.monotonic() < deadline
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            if index % 3 == 1:
                sock.sendall(b"GET /partial HTTP/1.1\r\nHo")
            if index % 3 == 2:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
    with HttpConnection(proxy.port) as connection:
        assert connection.request("GET", "/after-rapid", host="keep.test").body == b"/after-rapid"
    proxy.assert_quiet("keep")


def test_keep_alive_requests_then_hang_up(proxy: Connections) -> None:
    """mux ``test_keepalive_then_hup`` and ``test_concurrent_hup``: clients that made a few
    keep-alive requests hang up, some while a request is in flight, in a staggered way."""

    def client(number: int) -> None:
        with HttpConnection(proxy.port) as connection:
            for index in range(3):
                assert (
                    connection.request("GET", f"/h{number}/{index}", host="keep.test").status == 200
                )
            if number % 2:
                connection.send(b"GET /slow/h HTTP/1.1\r\nHost: keep.test\r\n\r\n")
            time.sleep(0.05 * number)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    time.sleep(1.2)
    proxy.assert_quiet("keep")
    with HttpConnection(proxy.port) as connection:
        assert connection.request("GET", "/after-hups", host="keep.test").body == b"/after-hups"


def test_malformed_request_leaves_no_request_in_flight(proxy: Connections) -> None:
    """mux ``test_malformed_request_no_underflow``: a rejected request is never counted on a
    backend, and the counters stay at zero (never negative)."""
    for _ in range(3):
        with HttpConnection(proxy.port) as connection:
            connection.send(b"GET / HTTP/1.1\r\nHost: keep.test\r\nBad Header\r\n\r\n")
            assert connection.read_answer().status == 400
    proxy.assert_quiet("keep")
    for gauge in proxy.gauges("keep").values():
        assert gauge["http.active_requests"] == 0
