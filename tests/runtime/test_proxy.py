"""The worker's proxy (worker/proxy.py): requests applied to its runtime objects, listeners
paused by its admission, and HTTP sessions driven through a stand-in client transport (with a
real backend on 127.0.0.1 when one is needed)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from support.transports import ClientTransport

from sozu_config import requests as rq
from sozu_config.models import (
    Backend,
    Cluster,
    HttpFrontend,
    HttpListenerConfig,
    ListenerType,
    RedirectPolicy,
    TcpFrontend,
    TcpListenerConfig,
)
from sozu_config.responses import Event, EventKind
from sozu_runtime.worker.exchange import CONNECTING, IDLE
from sozu_runtime.worker.http import FrontendSession
from sozu_runtime.worker.listeners import HttpListener, TcpListener
from sozu_runtime.worker.proxy import Proxy
from sozu_runtime.worker.tcp import TcpSession

ADDRESS = "127.0.0.1:18080"


def run(test: Callable[[Proxy, list[Event]], Awaitable[None]]) -> None:
    async def main() -> None:
        events: list[Event] = []
        proxy = Proxy(worker_id=0, emit_event=events.append)
        await test(proxy, events)

    asyncio.run(main())


async def http_setup(proxy: Proxy, backend_address: str = "127.0.0.1:9", **frontend: Any) -> None:
    await proxy.apply(rq.AddCluster(cluster=Cluster(cluster_id="app")), [])
    backend = Backend(cluster_id="app", backend_id="b1", address=backend_address)
    await proxy.apply(rq.AddBackend(backend=backend), [])
    await proxy.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=ADDRESS)), [])
    spec = HttpFrontend(address=ADDRESS, hostname="example.com", cluster_id="app", **frontend)
    await proxy.apply(rq.AddHttpFrontend(frontend=spec), [])


def session(proxy: Proxy) -> tuple[FrontendSession, ClientTransport]:
    listener = proxy.listeners[ADDRESS]
    assert isinstance(listener, HttpListener)
    client = FrontendSession(listener)
    transport = ClientTransport()
    client.connection_made(transport)
    return client, transport


# ---------------------------------------------------------------------- applying requests


def test_requests_build_and_remove_the_runtime_objects() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        await http_setup(proxy)
        listener = proxy.listeners[ADDRESS]
        assert isinstance(listener, HttpListener)
        route = listener.router.lookup(b"example.com", b"/x", b"GET")
        assert route is not None and route.cluster is proxy.clusters["app"]
        [backend] = proxy.clusters["app"].balancer.backends()
        assert backend.address == "127.0.0.1:9"
        await proxy.apply(rq.RemoveBackend(cluster_id="app", backend_id="b1"), [])
        assert proxy.clusters["app"].balancer.backends() == []
        assert [e.kind for e in events] == [EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS]
        await proxy.apply(rq.Batch(requests=[rq.RemoveCluster(cluster_id="app")]), [])
        assert "app" not in proxy.clusters and not proxy.routes
        assert listener.router.lookup(b"example.com", b"/x", b"GET") is None

    run(test)


def test_a_listener_pauses_at_max_connections_and_resumes_below() -> None:
    async def main() -> None:
        proxy = Proxy(worker_id=0, max_connections=2)
        await proxy.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=ADDRESS)), [])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        activate = rq.ActivateListener(address=ADDRESS, proxy=ListenerType.HTTP)
        await proxy.apply(activate, [sock.detach()])
        listener = proxy.listeners[ADDRESS]
        assert listener.server is not None
        connections = [_Connection(), _Connection()]
        for connection in connections:
            assert proxy.admission.opened(connection)
        assert listener.server is None and proxy.accepting_paused
        proxy.admission.closed(connections[0])
        for _ in range(5):
            await asyncio.sleep(0)
        assert listener.server is not None and not proxy.accepting_paused
        deactivate = rq.DeactivateListener(address=ADDRESS, proxy=ListenerType.HTTP)
        await proxy.apply(deactivate, [])
        assert listener.server is None and listener.sock is None

    asyncio.run(main())


class _Connection:
    deadline = 0.0
    transport = None

    def check_deadline(self, now: float) -> None:
        pass

    def soft_stop(self) -> None:
        pass


# ---------------------------------------------------------------------- answers of the session


def test_unknown_hosts_and_missing_hosts_are_answered() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        await http_setup(proxy)
        client, transport = session(proxy)
        client.data_received(b"GET / HTTP/1.1\r\nHost: other.com\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 404 ")
        assert transport.closed
        client, transport = session(proxy)
        client.data_received(b"GET / HTTP/1.0\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 400 ")

    run(test)


def test_a_redirect_route_answers_with_its_location() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        await http_setup(proxy, redirect=RedirectPolicy.PERMANENT, rewrite_path="/new")
        client, transport = session(proxy)
        client.data_received(b"GET /old HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 301 ")
        assert b"\r\nLocation: http://example.com/new\r\n" in transport.written
        assert client.exchange.cluster is proxy.clusters["app"]

    run(test)


def test_an_unauthorized_route_and_a_missing_password_answer_401() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        await http_setup(proxy, redirect=RedirectPolicy.UNAUTHORIZED)
        client, transport = session(proxy)
        client.data_received(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 401 ")

    run(test)


def test_basic_authentication_lets_the_right_password_through() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        await http_setup(proxy, required_auth=True)
        digest = hashlib.sha256(b"secret").hexdigest()
        cluster = Cluster(cluster_id="app", authorized_hashes=[f"ann:{digest}"])
        await proxy.apply(rq.AddCluster(cluster=cluster), [])
        client, transport = session(proxy)
        client.data_received(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 401 ")
        good = base64.b64encode(b"ann:secret")
        client, transport = session(proxy)
        client.data_received(
            b"GET / HTTP/1.1\r\nHost: example.com\r\nAuthorization: Basic " + good + b"\r\n\r\n"
        )
        assert transport.written == b"" and client.phase == CONNECTING  # on to a backend
        client.connection_lost(None)

    run(test)


# ---------------------------------------------------------------------- whole exchanges


def test_keep_alive_exchanges_reuse_the_backend_connection() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        received: list[bytes] = []
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while head := await reader.readuntil(b"\r\n\r\n"):
                received.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await http_setup(proxy, f"127.0.0.1:{port}")
        client, transport = session(proxy)
        for n in range(3):
            request = b"GET /%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % n
            client.data_received(request)
            for _ in range(200):
                if transport.written.count(b"ok") > n:
                    break
                await asyncio.sleep(0.01)
            assert client.phase == IDLE
            assert client.exchange.route is None and client.exchange.replay is None
        answers = bytes(transport.written)
        assert answers.count(b"HTTP/1.1 200 OK\r\nSozu-Id: ") == 3
        assert connections == 1  # one backend connection, reused from the pool
        assert [head.split(b" ")[1] for head in received] == [b"/0", b"/1", b"/2"]
        assert all(b"X-Forwarded-For: 10.1.2.3\r\n" in head for head in received)
        sent = sum(len(b"GET /%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % n) for n in range(3))
        figures = proxy.metrics_content(rq.QueryMetrics()).proxying
        assert figures["http.requests"] == 3 and figures["http.status"] == {"200": 3}
        assert (figures["bytes_in"], figures["bytes_out"]) == (sent, len(answers))
        assert figures["back_bytes_out"] == sum(len(head) for head in received)
        assert figures["back_bytes_in"] == 3 * len(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        assert figures["request_time"]["count"] == 3
        assert figures["backend_response_time"]["count"] == 3
        assert figures["backend_connection_time"]["count"] == 1
        client.connection_lost(None)
        proxy.hard_stop()
        server.close()

    run(test)


# ---------------------------------------------------------------------- TCP


def test_a_tcp_session_keeps_early_bytes_until_its_backend_is_up() -> None:
    async def test(proxy: Proxy, events: list[Event]) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(10))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tcp_address = "127.0.0.1:18081"
        await proxy.apply(rq.AddCluster(cluster=Cluster(cluster_id="db")), [])
        backend = Backend(cluster_id="db", backend_id="b1", address=f"127.0.0.1:{port}")
        await proxy.apply(rq.AddBackend(backend=backend), [])
        await proxy.apply(rq.AddTcpListener(listener=TcpListenerConfig(address=tcp_address)), [])
        frontend = TcpFrontend(address=tcp_address, cluster_id="db")
        await proxy.apply(rq.AddTcpFrontend(frontend=frontend), [])
        listener = proxy.listeners[tcp_address]
        assert isinstance(listener, TcpListener)
        client = TcpSession(listener)
        transport = ClientTransport()
        client.connection_made(transport)
        assert client in proxy.sessions and proxy.metrics.accepted == 1
        client.data_received(b"hello")  # before the backend connection is up
        client.data_received(b"world")
        assert client.pending == [b"hello", b"world"]
        for _ in range(200):
            if transport.closed:
                break
            await asyncio.sleep(0.01)
        assert bytes(transport.written) == b"helloworld" and client.pending == []
        client.connection_lost(None)
        assert client not in proxy.sessions
        figures = proxy.metrics_content(rq.QueryMetrics()).clusters["db"]["backends"]["b1"]
        assert figures["tcp.sessions"] == 1
        assert (figures["bytes_in"], figures["bytes_out"]) == (10, 10)
        assert (figures["back_bytes_in"], figures["back_bytes_out"]) == (10, 10)
        server.close()

    run(test)
