"""Requests to h2c backends (worker/h2_backend.py, worker/h2_backend_stream.py, the h2c part of
worker/pool.py): the worker's proxy in this process, its client sessions driven through a
stand-in client transport, and a real h2c origin (tests/support/h2c_server.py) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from support.h2c_server import H2cServer
from support.transports import ClientTransport

from sozu_config import requests as rq
from sozu_config.models import Backend, Cluster, HttpFrontend, HttpListenerConfig
from sozu_config.responses import Event, EventKind
from sozu_runtime.worker.h1 import parse_request_head
from sozu_runtime.worker.h2_backend import CONNECTION_WINDOW, STREAM_WINDOW
from sozu_runtime.worker.h2_backend_stream import request_fields, response_head
from sozu_runtime.worker.http import FrontendSession
from sozu_runtime.worker.listeners import HttpListener
from sozu_runtime.worker.proxy import Proxy

ADDRESS = "127.0.0.1:18081"
WAIT = 10.0  # seconds any condition below is waited for at most


def run(test: Callable[[Proxy], Awaitable[None]], events: list[Event] | None = None) -> None:
    async def main() -> None:
        proxy = Proxy(worker_id=0, emit_event=(events if events is not None else []).append)
        try:
            await asyncio.wait_for(test(proxy), 60)
        finally:
            proxy.hard_stop()

    asyncio.run(main())


async def setup(proxy: Proxy, origin: H2cServer, *, http2: bool = True) -> None:
    await proxy.apply(rq.AddCluster(cluster=Cluster(cluster_id="app", http2=http2)), [])
    backend = Backend(cluster_id="app", backend_id="b1", address=origin.address)
    await proxy.apply(rq.AddBackend(backend=backend), [])
    await proxy.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=ADDRESS)), [])
    spec = HttpFrontend(address=ADDRESS, hostname="example.com", cluster_id="app")
    await proxy.apply(rq.AddHttpFrontend(frontend=spec), [])


def session(proxy: Proxy) -> tuple[FrontendSession, ClientTransport]:
    listener = proxy.listeners[ADDRESS]
    assert isinstance(listener, HttpListener)
    client = FrontendSession(listener)
    transport = ClientTransport()
    transport.protocol = client
    client.connection_made(transport)
    return client, transport


async def wait(condition: Callable[[], object], what: str) -> None:
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {WAIT} s: {what}")


def answered(transport: ClientTransport) -> bool:
    """A whole answer was written (content-length or chunked), or the connection ended."""
    data = bytes(transport.written)
    end = data.find(b"\r\n\r\n")
    if transport.is_closing():
        return True
    if end < 0:
        return False
    head = data[:end].lower()
    if b"transfer-encoding: chunked" in head:
        return data.endswith(b"\r\n\r\n") and b"\r\n0\r\n" in data[end:]
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(data) - end - 4 >= int(line.split(b":")[1])
    return True


def status_of(transport: ClientTransport) -> int:
    return int(bytes(transport.written).split(b" ", 2)[1])


def body_of(transport: ClientTransport) -> bytes:
    data = bytes(transport.written)
    return data[data.find(b"\r\n\r\n") + 4 :]


async def get(proxy: Proxy, target: str, extra: bytes = b"") -> ClientTransport:
    client, transport = session(proxy)
    client.data_received(
        b"GET %s HTTP/1.1\r\nHost: example.com\r\n%s\r\n" % (target.encode(), extra)
    )
    await wait(lambda: answered(transport), f"an answer to {target}")
    return transport


def gauges(proxy: Proxy) -> dict[str, Any]:
    return proxy.metrics_content(rq.QueryMetrics()).proxying


# ---------------------------------------------------------------------- translation


def test_a_forwarded_head_becomes_an_http2_header_list() -> None:
    head = parse_request_head(
        b"GET /a?b HTTP/1.1\r\nHost: example.com:8080\r\nConnection: keep-alive, te\r\n"
        b"Keep-Alive: 5\r\nCookie: a=1\r\nCookie: b=2\r\nX-Thing: v\r\n"
        b"Proxy-Connection: x\r\n\r\n",
        65536,
    )
    assert head is not None
    assert request_fields(head, te_trailers=True) == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"example.com:8080"),
        (b":path", b"/a?b"),
        (b"te", b"trailers"),
        (b"x-thing", b"v"),
        (b"cookie", b"a=1; b=2"),
    ]


def test_an_http2_answer_becomes_an_http11_head() -> None:
    fields = [(b":status", b"200"), (b"content-length", b"3"), (b"x", b"y")]
    assert response_head(fields, b"GET", False) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx: y\r\n\r\n",
        False,
    )
    # no length, or trailers announced: chunked
    assert response_head([(b":status", b"200")], b"GET", False) == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        True,
    )
    announced = [(b":status", b"200"), (b"content-length", b"3"), (b"trailer", b"x-sum")]
    assert response_head(announced, b"GET", False) == (
        b"HTTP/1.1 200 OK\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n",
        True,
    )
    # ended with its head: an empty body; no body at all for HEAD, 204, 304
    assert response_head([(b":status", b"200")], b"GET", True)[0].endswith(
        b"content-length: 0\r\n\r\n"
    )
    assert response_head([(b":status", b"204")], b"GET", False) == (
        b"HTTP/1.1 204 No Content\r\n\r\n",
        False,
    )
    # a status without a registered phrase has none
    assert response_head([(b":status", b"299")], b"HEAD", False)[0] == b"HTTP/1.1 299 \r\n\r\n"
    assert response_head([(b":status", b"200")], b"HEAD", False) == (
        b"HTTP/1.1 200 OK\r\n\r\n",
        False,
    )


# ---------------------------------------------------------------------- requests


def test_a_request_goes_as_a_stream_and_its_answer_comes_back() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(
                proxy, "/hello", b"Cookie: a=1\r\nCookie: b=2\r\nTE: trailers\r\nConnection: te\r\n"
            )
            assert status_of(transport) == 200
            empty = hashlib.sha256(b"").hexdigest()
            assert body_of(transport) == f"origin GET /hello 0 {empty}".encode()
            seen = origin.seen[0]
            assert seen.headers[":authority"] == "example.com"
            assert seen.headers[":scheme"] == "http"
            assert seen.headers["cookie"] == "a=1; b=2"
            assert seen.headers["te"] == "trailers"
            assert seen.headers["x-forwarded-for"] == "10.1.2.3"
            assert "connection" not in seen.headers and "host" not in seen.headers
            figures = gauges(proxy)
            assert figures["http2.backend_streams"] == 1
            assert figures["http2.backend_connections"] == 1
            assert figures["http.status"] == {"200": 1}

    run(test)


def test_streams_share_connections_within_the_backends_limit() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin", max_streams=2) as origin:
            await setup(proxy, origin)
            clients = [session(proxy) for _ in range(5)]
            for n, (client, _) in enumerate(clients):
                client.data_received(b"GET /slow/300?%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % n)
            for _, transport in clients:
                await wait(lambda t=transport: answered(t), "five answers")  # type: ignore[misc]
                assert status_of(transport) == 200
            assert origin.max_concurrent == 2  # never more than the backend allows
            assert origin.connections == 3  # 2 + 2 + 1 streams
            assert gauges(proxy)["http2.backend_connections"] == 3
            for n in range(4):  # later requests take the free slots
                assert status_of(await get(proxy, f"/again/{n}")) == 200
            assert origin.connections == 3

    run(test)


def test_requests_that_come_while_a_connection_opens_wait_for_it() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            clients = [session(proxy) for _ in range(6)]
            for n, (client, _) in enumerate(clients):
                client.data_received(b"GET /%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % n)
            for _, transport in clients:
                await wait(lambda t=transport: answered(t), "six answers")  # type: ignore[misc]
                assert status_of(transport) == 200
            assert origin.connections == 1
            assert sorted(seen.stream_id for seen in origin.seen) == [1, 3, 5, 7, 9, 11]

    run(test)


def test_streams_above_a_goaway_are_sent_again_on_a_new_connection() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/goaway-once")
            assert status_of(transport) == 200
            assert body_of(transport).startswith(b"origin GET /goaway-once 0 ")
            assert origin.connections == 2
            assert [seen.connection for seen in origin.seen] == [2]
            await wait(lambda: gauges(proxy)["http2.backend_connections"] == 1, "one left")

    run(test)


def test_the_streams_a_goaway_keeps_are_answered() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/goaway-then-answer")
            assert status_of(transport) == 200
            assert body_of(transport).startswith(b"origin GET /goaway-then-answer 0 ")
            await wait(lambda: gauges(proxy)["http2.backend_connections"] == 0, "closed")
            assert status_of(await get(proxy, "/next")) == 200  # on a new connection
            assert origin.connections == 2

    run(test)


def test_a_refused_stream_is_sent_again() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/refuse-once")
            assert status_of(transport) == 200
            assert [seen.path for seen in origin.seen] == ["/refuse-once"]
            assert gauges(proxy)["http.retries"] == 1

    run(test)


def test_a_reset_stream_is_a_502_and_the_connection_goes_on() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/reset")
            assert status_of(transport) == 502
            assert status_of(await get(proxy, "/after")) == 200
            assert origin.connections == 1

    run(test)


def test_a_protocol_error_of_the_backend_is_a_502_and_a_new_connection() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/garbage")
            assert status_of(transport) == 502
            await wait(lambda: gauges(proxy)["http2.backend_connections"] == 0, "closed")
            assert gauges(proxy)["http.backend_parse_errors"] == 1
            assert status_of(await get(proxy, "/after")) == 200
            assert origin.connections == 2

    run(test)


def test_an_upgrade_request_to_an_h2c_cluster_is_a_502() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/ws", b"Connection: upgrade\r\nUpgrade: websocket\r\n")
            assert status_of(transport) == 502
            assert origin.seen == []

    run(test)


def test_trailers_and_bodiless_answers() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/trailers")
            data = bytes(transport.written)
            assert b"transfer-encoding: chunked\r\n" in data
            empty = hashlib.sha256(b"").hexdigest().encode()
            assert data.endswith(b"\r\n0\r\nx-checksum: %s\r\nx-origin: origin\r\n\r\n" % empty)
            transport = await get(proxy, "/status/204")
            assert status_of(transport) == 204 and body_of(transport) == b""
            client, transport = session(proxy)
            client.data_received(b"HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            await wait(lambda: b"\r\n\r\n" in transport.written, "the HEAD answer")
            await asyncio.sleep(0.05)
            assert bytes(transport.written).endswith(b"\r\n\r\n")
            assert b"content-length: " in bytes(transport.written)

    run(test)


# ---------------------------------------------------------------------- flow control


def test_a_large_request_body_flows_within_the_windows() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            body = bytes(range(256)) * (10 * 4096)  # 10 MiB
            client, transport = session(proxy)
            client.data_received(
                b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            step = 1 << 18
            for start in range(0, len(body), step):
                await wait(lambda: transport.reading, "the proxy reads the client again")
                piece = body[start : start + step]
                client.data_received(b"%x\r\n%b\r\n" % (len(piece), piece))
            client.data_received(b"0\r\n\r\n")
            await wait(lambda: answered(transport), "the upload's answer")
            assert status_of(transport) == 200
            assert transport.paused_once  # the client was not read while the window was shut
            seen = origin.seen[0]
            assert (seen.body_size, seen.sha256) == (len(body), hashlib.sha256(body).hexdigest())

    run(test)


def test_an_answer_is_acknowledged_only_as_the_client_takes_it() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            size = 4 << 20
            client, transport = session(proxy)
            client.data_received(b"GET /big/%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % size)
            await wait(lambda: len(transport.written) > 0, "the head of the answer")
            client.pause_writing()  # the client's socket buffer is full
            before = len(transport.written)
            await asyncio.sleep(0.3)
            held = len(transport.written)
            await asyncio.sleep(0.2)
            assert len(transport.written) == held < size  # the backend waits for window
            assert held - before <= STREAM_WINDOW + 2 * 16_384  # at most the stream's window
            client.resume_writing()
            await wait(lambda: answered(transport), "the whole answer")
            assert body_of(transport) == bytes(range(256)) * (size // 256)

    run(test)


def test_clients_that_do_not_read_hold_only_their_own_streams() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            size = 1 << 20  # more than a stream's window
            # together, their windows are more than the connection's
            count = CONNECTION_WINDOW // STREAM_WINDOW + 4
            slow = [session(proxy) for _ in range(count)]
            for n, (client, transport) in enumerate(slow):
                transport.high_water = 1  # full from the first byte on
                client.data_received(
                    b"GET /big/%d?%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % (size, n)
                )
            for _, transport in slow:
                await wait(lambda t=transport: t.high_water is None, "a slow client's answer")  # type: ignore[misc]
            fast = await get(proxy, f"/big/{4 * size}?fast")  # the same connection, read at once
            assert len(body_of(fast)) == 4 * size
            assert origin.connections == 1
            assert all(len(t.written) < size for _, t in slow)
            for client, transport in slow:
                client.resume_writing()
                await wait(lambda t=transport: answered(t), "a slow client's whole answer")  # type: ignore[misc]
                assert len(body_of(transport)) == size

    run(test)


def test_a_backend_that_allows_no_stream_gets_no_request() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin", max_streams=0) as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/none")
            assert status_of(transport) == 503
            assert origin.seen == []
            assert origin.connections <= 3  # one per attempt at most, not one after another

    run(test)


def test_a_removed_backend_loses_its_idle_connection_and_is_forgotten() -> None:
    events: list[Event] = []

    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            assert status_of(await get(proxy, "/")) == 200
            assert gauges(proxy)["http2.backend_connections"] == 1
            await proxy.apply(
                rq.RemoveBackend(cluster_id="app", backend_id="b1", address=origin.address), []
            )
            await wait(lambda: gauges(proxy)["http2.backend_connections"] == 0, "closed")
            kinds = [event.kind for event in events]
            assert EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS in kinds

    run(test, events)


def test_switching_http2_off_closes_the_idle_h2c_connections() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin") as origin:
            await setup(proxy, origin)
            assert status_of(await get(proxy, "/")) == 200
            await proxy.apply(rq.AddCluster(cluster=Cluster(cluster_id="app", http2=False)), [])
            await wait(lambda: gauges(proxy)["http2.backend_connections"] == 0, "closed")
            transport = await get(proxy, "/then")
            assert body_of(transport) == b"h1 origin GET /then"  # HTTP/1.1 from now on
            assert origin.h1_seen == ["/then"]

    run(test)


def test_a_connection_that_closes_once_ready_is_not_counted() -> None:
    async def test(proxy: Proxy) -> None:
        with H2cServer("origin", close_after_settings=True) as origin:
            await setup(proxy, origin)
            transport = await get(proxy, "/")
            assert status_of(transport) in (502, 503)
            assert origin.seen == []
            await wait(lambda: gauges(proxy)["http2.backend_connections"] == 0, "none counted")
            (backend,) = proxy.clusters["app"].balancer.backends()
            await wait(lambda: backend.active_connections == 0, "the backend's count at 0")

    run(test)
