"""TCP proxying: a byte pipe between a client and a backend of the listener's cluster.

The backend is chosen by the cluster's balancing policy, with up to three connection attempts
on different backends; a client whose connection cannot be served is closed without a byte.
Half-closes are passed on in both directions (a client that shuts down its sending side still
gets the backend's answer). Flow control pauses the reading side when the other side's send
buffer is full. ``send_proxy`` clusters start the backend connection with a PROXY v2 header
built from the client's address; with ``expect_proxy`` as well, the header received is relayed
as is.
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns, time_ns
from typing import TYPE_CHECKING, Any

from sozu_config.models import ProxyProtocolConfig

from .access_log import AccessEntry
from .proxy_protocol import build_v2

if TYPE_CHECKING:
    from .balancing import Backend
    from .listeners import TcpListener
    from .proxy_protocol import ProxyHeader

__all__ = ["TcpBackend", "TcpSession"]

CONNECT_ATTEMPTS = 3


class TcpSession(asyncio.Protocol):
    """The client side of a TCP pipe."""

    __slots__ = (
        "_closed",
        "backend",
        "client_eof",
        "deadline",
        "down",
        "ip_slot",
        "listener",
        "paused",
        "peer_ip",
        "peer_port",
        "pending",
        "proxy_header",
        "started",
        "transport",
        "tried",
        "up",
    )

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: Any = None
        self.backend: TcpBackend | None = None
        self.pending: list[bytes] = []
        self.peer_ip = ""
        self.peer_port = 0
        self.proxy_header: ProxyHeader | None = None
        self.tried: list[Backend] = []
        self.client_eof = False
        self.paused = False
        self.deadline = 0.0
        self.ip_slot = ""  # the cluster whose per-IP slot this connection holds
        self._closed = False
        self.up = self.down = 0  # bytes from the client, from the backend
        self.started = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.started = monotonic_ns()
        listener = self.listener
        proxy = listener.proxy
        if not self.peer_ip:
            peer = transport.get_extra_info("peername")
            if peer:
                self.peer_ip, self.peer_port = peer[0], peer[1]
        proxy.session_opened(self)
        self.deadline = proxy.loop.time() + listener.connect_timeout * CONNECT_ATTEMPTS + 1
        cluster = listener.cluster
        if cluster is not None and cluster.per_ip_limit:
            if not proxy.admission.take_ip_slot(
                cluster.cluster_id, self.peer_ip, cluster.per_ip_limit
            ):
                transport.close()  # over max_connections_per_ip: closed without a byte
                return
            self.ip_slot = cluster.cluster_id
        self._connect()

    def _connect(self) -> None:
        cluster = self.listener.cluster
        proxy = self.listener.proxy
        if cluster is None or len(self.tried) >= CONNECT_ATTEMPTS:
            self.transport.close()
            return
        backend = cluster.balancer.choose(proxy.loop.time(), exclude=self.tried)
        if backend is None:
            proxy.no_backend(cluster)
            self.transport.close()
            return
        self.tried.append(backend)
        backend.active_connections += 1
        proxy.loop.create_task(self._open(backend))

    async def _open(self, backend: Backend) -> None:
        proxy = self.listener.proxy
        loop = proxy.loop
        started = monotonic_ns()
        try:
            async with asyncio.timeout(self.listener.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: TcpBackend(self, backend), backend.host, backend.port
                )
        except (OSError, TimeoutError) as error:
            proxy.pool.connection_failed(backend, error)
            if not self._closed:
                self._connect()
            return
        proxy.pool.connection_opened(backend, monotonic_ns() - started)
        if backend.news:  # for a TCP backend, a connection that opens is its answer
            proxy.pool.answered(backend)
        backend.stats.tcp_sessions += 1
        if self._closed:
            connection.transport.close()
            return
        self.backend = connection
        cluster = self.listener.cluster
        policy = cluster.proxy_protocol if cluster is not None else None
        header = b""
        if policy is ProxyProtocolConfig.RELAY_HEADER and self.proxy_header is not None:
            header = self.proxy_header.raw
        elif policy in (ProxyProtocolConfig.SEND_HEADER, ProxyProtocolConfig.RELAY_HEADER):
            local = self.transport.get_extra_info("sockname")
            header = build_v2((self.peer_ip, self.peer_port), (local[0], local[1]))
        data = header + b"".join(self.pending)
        self.pending = []
        if data:
            connection.transport.write(data)
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.client_eof and connection.transport.can_write_eof():
            connection.transport.write_eof()
        self.touch()

    def touch(self) -> None:
        listener = self.listener
        self.deadline = listener.proxy.loop.time() + max(
            listener.front_timeout, listener.back_timeout
        )

    def data_received(self, data: bytes) -> None:
        self.up += len(data)
        backend = self.backend
        if backend is None:
            self.pending.append(data)
            if sum(map(len, self.pending)) > self.listener.proxy.buffer_size and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            return
        backend.transport.write(data)
        self.touch()

    def eof_received(self) -> bool:
        self.client_eof = True
        backend = self.backend
        if backend is not None:
            if backend.eof:
                self.transport.close()
                return True
            if backend.transport.can_write_eof():
                backend.transport.write_eof()
        return True  # keep reading the backend's answer

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        proxy = self.listener.proxy
        if self.ip_slot:
            proxy.admission.release_ip_slot(self.ip_slot, self.peer_ip)
            self.ip_slot = ""
        proxy.session_closed(self)
        backend = self.backend
        if backend is not None:
            backend.transport.close()
        self._record(proxy)

    def _record(self, proxy: Any) -> None:
        """The session ended: its bytes go to the metrics of its backend (else of the worker),
        its entry to the access log."""
        backend = self.backend
        stats = backend.backend.stats if backend is not None else proxy.metrics.own
        stats.bytes_in += self.up
        stats.bytes_out += self.down
        if backend is not None:
            stats.back_bytes_out += self.up
            stats.back_bytes_in += self.down
        if not proxy.access_logs:
            return
        entry = AccessEntry()
        entry.time_ns = time_ns()
        entry.session_id = proxy.next_request_id().decode()
        cluster = self.listener.cluster
        entry.cluster_id = cluster.cluster_id if cluster is not None else ""
        if backend is not None:
            entry.backend_id = backend.backend.backend_id
            entry.backend_address = backend.backend.address
        entry.client_address = self.peer_ip
        entry.client_port = self.peer_port
        entry.protocol = "TCP"
        entry.request_time_us = (monotonic_ns() - self.started) // 1000
        entry.service_time_us = entry.request_time_us
        entry.bytes_in = self.up
        entry.bytes_out = self.down
        proxy.access_log(entry)

    def check_deadline(self, now: float) -> None:
        self.transport.abort()

    def soft_stop(self) -> None:
        # sōzu cuts TCP pipes at once on soft stop; here they may finish until the deadline
        pass


class TcpBackend(asyncio.BufferedProtocol):
    """The backend side of a TCP pipe (reads sized by the client's pace, see :mod:`.reading`)."""

    __slots__ = ("backend", "eof", "session", "transport")

    def __init__(self, session: TcpSession, backend: Backend) -> None:
        self.session = session
        self.backend = backend
        self.transport: Any = None
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        reads = self.session.listener.proxy.reads
        return reads.small if self.session.transport.get_write_buffer_size() else reads.large

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        session.down += nbytes
        session.transport.write(session.listener.proxy.reads.take(nbytes))
        session.touch()

    def eof_received(self) -> bool:
        self.eof = True
        session = self.session
        if session.client_eof:
            session.transport.close()
            return False
        if session.transport.can_write_eof():
            session.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        self.session.transport.pause_reading()

    def resume_writing(self) -> None:
        self.session.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.active_connections -= 1
        self.session.transport.close()
