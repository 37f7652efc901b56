"""The worker's proxy: the runtime objects derived from the routing state, kept in step with it.

The worker holds a full :class:`~sozu_config.state.ConfigState` (the meaning of every request)
and, next to it, what the data path needs: listeners with their routers and answers, clusters
with their balancers, idle backend connections, open sessions. :meth:`Proxy.apply` applies a
request to the state (refused there if invalid, the state unchanged) and then to the runtime
objects; live connections are never disturbed: a removed frontend stops matching new requests
only, a removed backend finishes its requests and is forgotten when its last connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from sozu_config import requests as rq
from sozu_config.models import (
    FrontendKey,
    HttpFrontend,
    TcpListenerConfig,
)
from sozu_config.responses import Event, EventKind
from sozu_config.state import ConfigState

from . import balancing
from .accepting import Handshake
from .admission import Admission
from .http import BackendConnection, FrontendSession
from .listeners import HttpListener, Listener, TcpListener
from .metrics import Metrics
from .reading import ReadBuffers
from .router import RouteRule
from .routes import ClusterRuntime, Route
from .tcp import TcpSession

log = logging.getLogger("sozu.worker")
access = logging.getLogger("sozu.access")

__all__ = ["Proxy"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_IDLE_PER_BACKEND = 128  # idle keep-alive connections kept per backend
IDLE_BACKEND_TIMEOUT = 30.0  # seconds an idle pooled connection is kept


def _ulid_time(ms: int) -> str:
    out = []
    for _ in range(10):
        out.append(_CROCKFORD[ms & 31])
        ms >>= 5
    return "".join(reversed(out))


class Proxy:
    """Everything one worker serves."""

    def __init__(
        self,
        *,
        worker_id: int,
        buffer_size: int = 16393,
        max_connections: int = 10_000,
        max_connections_per_ip: int = 0,
        retry_after: int = 60,
        evict_on_queue_full: bool = False,
        emit_event: Callable[[Event], None] | None = None,
        expired_certificates: str = "refuse",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        self.worker_id = worker_id
        self.state = ConfigState()
        self.buffer_size = buffer_size
        # bytes waiting in a transport before the other side stops being read (flow control)
        self.write_buffer_limit = 4 * buffer_size
        # the read buffer of the backend sides of connections (see reading)
        self.reads = ReadBuffers(self.write_buffer_limit, buffer_size)
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.retry_after = retry_after
        self.expired_certificates = expired_certificates
        self.listeners: dict[str, Listener] = {}
        self.clusters: dict[str, ClusterRuntime] = {}
        self.routes: dict[FrontendKey, Route] = {}
        self.cluster_routes: dict[str, set[FrontendKey]] = {}
        self.draining: set[balancing.Backend] = set()
        self.metrics = Metrics()
        self.admission = Admission(
            self._set_accepting,
            self.metrics,
            max_connections=max_connections,
            evict_on_queue_full=evict_on_queue_full,
        )
        # every open connection (sessions, TLS handshakes, connections awaiting a PROXY header)
        self.sessions: set[Any] = self.admission.connections
        # protocol → its handshake, while a connection's TLS handshake is in progress
        self.handshakes: dict[Any, Handshake] = {}
        self.backend_connections: set[BackendConnection] = set()
        self.idle: dict[balancing.Backend, list[BackendConnection]] = {}
        self.idle_since: dict[BackendConnection, float] = {}
        self.access_logs = access.isEnabledFor(logging.INFO)
        self.stopping = False
        self._emit = emit_event or (lambda event: None)
        self._rid_counter = 0
        self._rid_prefix = b""
        self._rid_random = "".join(_CROCKFORD[b & 31] for b in os.urandom(6))
        self.refresh_clock()

    # ------------------------------------------------------------------ ids and clock

    def refresh_clock(self) -> None:
        """Refresh the time part of request ids (called by the sweeper)."""
        self._rid_prefix = (_ulid_time(int(time.time() * 1000)) + self._rid_random).encode()

    def next_request_id(self) -> bytes:
        self._rid_counter += 1
        return b"%s%010X" % (self._rid_prefix, self._rid_counter & 0xFFFFFFFFFF)

    # ------------------------------------------------------------------ metrics

    def configure_metrics(self, configuration: str) -> None:
        """``enabled``, ``disabled`` or ``clear``. Counting itself never stops (an integer add);
        disabled metrics are not reported, and enabling them again starts from zero."""
        metrics = self.metrics
        if configuration == "clear" or (configuration == "enabled" and not metrics.enabled):
            metrics.clear()
            for cluster in self.clusters.values():
                cluster.requests = 0
        if configuration != "clear":
            metrics.enabled = configuration == "enabled"

    # ------------------------------------------------------------------ sessions

    def session_opened(self, session: Any) -> None:
        """A session's transport is up (counted from its handshake when it had one)."""
        self.metrics.connections += 1
        if self.handshakes:
            handshake = self.handshakes.pop(session, None)
            if handshake is not None:
                self.admission.replaced(handshake, session)
                return
        if not self.admission.opened(session):
            session.transport.abort()  # accepted past the limit in the same batch

    def session_closed(self, session: Any) -> None:
        self.admission.closed(session)

    @property
    def accepting_paused(self) -> bool:
        return self.admission.paused

    def _set_accepting(self, accepting: bool) -> None:
        """The admission's verdict: stop accepting at max_connections, resume below it."""
        if not accepting:
            self.metrics.backpressure += 1
            for listener in self.listeners.values():
                listener.pause_accepting()
        elif not self.stopping:
            for listener in self.listeners.values():
                listener.resume_accepting()

    # ------------------------------------------------------------------ backend connections

    def take_idle(self, backend: balancing.Backend) -> BackendConnection | None:
        pool = self.idle.get(backend)
        while pool:
            connection = pool.pop()
            self.idle_since.pop(connection, None)
            if not connection._closed:
                return connection
        return None

    def release_idle(self, connection: BackendConnection) -> None:
        pool = self.idle.get(connection.backend)
        if pool is None:
            pool = self.idle[connection.backend] = []
        if len(pool) >= MAX_IDLE_PER_BACKEND or self.stopping:
            connection.close()
            return
        pool.append(connection)
        self.idle_since[connection] = self.loop.time()

    def connect(
        self, backend: balancing.Backend, session: Any, request: bytes, complete: bool
    ) -> None:
        """Open a connection to ``backend`` for ``session`` (one coroutine per connection)."""
        self.loop.create_task(self._connect(backend, session, request, complete))

    async def _connect(
        self, backend: balancing.Backend, session: Any, request: bytes, complete: bool
    ) -> None:
        loop = self.loop
        start = loop.time()
        try:
            async with asyncio.timeout(session.listener.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: BackendConnection(self, backend), backend.host, backend.port
                )
        except (OSError, TimeoutError) as error:
            backend.active_connections -= 1
            self.metrics.backend_connect_errors += 1
            if backend.connect_failed(loop.time()):
                self._emit(
                    Event(
                        kind=EventKind.BACKEND_DOWN,
                        cluster_id=backend.cluster_id,
                        backend_id=backend.backend_id,
                        address=backend.address,
                        message=str(error) or "connection timed out",
                    )
                )
            self._maybe_drained(backend)
            session.connect_failed(backend)
            return
        now = loop.time()
        if backend.connect_succeeded(now, now - start):
            self._emit(
                Event(
                    kind=EventKind.BACKEND_UP,
                    cluster_id=backend.cluster_id,
                    backend_id=backend.backend_id,
                    address=backend.address,
                )
            )
        self.backend_connections.add(connection)
        session.connected(connection, request, complete)

    def backend_closed(self, connection: BackendConnection) -> None:
        if connection not in self.backend_connections:
            return
        self.backend_connections.discard(connection)
        self.idle_since.pop(connection, None)
        pool = self.idle.get(connection.backend)
        if pool and connection in pool:
            pool.remove(connection)
        backend = connection.backend
        backend.active_connections -= 1
        self._maybe_drained(backend)

    def _maybe_drained(self, backend: balancing.Backend) -> None:
        """A removed backend whose last connection closed is forgotten (and reported once)."""
        if backend in self.draining and backend.active_connections <= 0:
            self.draining.discard(backend)
            self._drop_idle(backend)
            self._emit(
                Event(
                    kind=EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS,
                    cluster_id=backend.cluster_id,
                    backend_id=backend.backend_id,
                    address=backend.address,
                )
            )

    def _detach_backend(self, backend: balancing.Backend) -> None:
        """``backend`` left the configuration: drop its idle connections, let busy ones finish."""
        self._drop_idle(backend)
        self.draining.add(backend)
        self._maybe_drained(backend)

    def no_backend(self, cluster: ClusterRuntime) -> None:
        self._emit(Event(kind=EventKind.NO_AVAILABLE_BACKENDS, cluster_id=cluster.cluster_id))

    # ------------------------------------------------------------------ access logs

    def access_log(self, session: Any, status: int, message: str) -> None:
        head = session.request_head() if hasattr(session, "request_head") else None
        cluster = session.cluster.cluster_id if session.cluster is not None else "-"
        backend = session.backend.backend.backend_id if session.backend is not None else "-"
        elapsed = (self.loop.time() - session.started) * 1000
        if head is not None:
            line = (
                f"{session.request_id.decode()} {cluster} {backend} {session.peer_ip} "
                f"{head.method.decode('latin-1')} {head.host.decode('latin-1')}"
                f"{head.target.decode('latin-1')} {status} {elapsed:.1f}ms"
            )
        else:
            line = f"- {cluster} - {session.peer_ip} - {status} {elapsed:.1f}ms"
        if message:
            line += f" | {message}"
        access.info(line)

    # ------------------------------------------------------------------ sweeping

    def sweep(self) -> None:
        """Expire deadlines, close idle pooled connections (called every tick)."""
        now = self.loop.time()
        self.refresh_clock()
        for session in [s for s in self.sessions if s.deadline < now]:
            session.check_deadline(now)
        self.admission.sweep(now, idle=not self.sessions and not self.backend_connections)
        if self.idle_since:
            limit = now - IDLE_BACKEND_TIMEOUT
            for connection in [c for c, t in self.idle_since.items() if t < limit]:
                connection.close()

    # ------------------------------------------------------------------ applying requests

    async def apply(self, request: rq.Request, fds: list[int]) -> None:
        """Apply a mutating request to the state, then to the runtime objects. ``fds`` holds
        the listening sockets of the request's activations, in order; they are consumed."""
        self.state.apply(request)
        if isinstance(request, rq.Batch):
            for inner in request.requests:
                await self._apply_runtime(inner, fds)
        else:
            await self._apply_runtime(request, fds)

    async def _apply_runtime(self, request: rq.Request, fds: list[int]) -> None:
        handler = _RUNTIME.get(type(request))
        if handler is not None:
            result = handler(self, request, fds)
            if asyncio.iscoroutine(result):
                await result

    # listeners
    def _add_listener(self, request: Any, fds: list[int]) -> None:
        config = request.listener
        if isinstance(config, TcpListenerConfig):
            self.listeners[config.address] = TcpListener(self, config, TcpSession)
        else:
            listener = HttpListener(self, config, FrontendSession)
            for cluster in self.clusters.values():
                if cluster.config.answers:
                    listener.answers.set_cluster(cluster.cluster_id, cluster.config.answers)
            self.listeners[config.address] = listener

    def _update_listener(self, request: Any, fds: list[int]) -> None:
        listener = self.listeners[request.address]
        config = self.state.listeners()[request.address]
        listener.reconfigure(config)

    async def _remove_listener(self, request: rq.RemoveListener, fds: list[int]) -> None:
        listener = self.listeners.pop(request.address)
        await listener.deactivate()

    async def _activate_listener(self, request: rq.ActivateListener, fds: list[int]) -> None:
        listener = self.listeners[request.address]
        if not fds:
            raise RuntimeError(f"no listening socket received for {request.address}")
        fd = fds.pop(0)
        await listener.activate(socket.socket(fileno=fd))
        if self.accepting_paused:
            listener.pause_accepting()

    async def _deactivate_listener(self, request: rq.DeactivateListener, fds: list[int]) -> None:
        await self.listeners[request.address].deactivate()

    # clusters
    def _add_cluster(self, request: rq.AddCluster, fds: list[int]) -> None:
        config = request.cluster
        runtime = self.clusters.get(config.cluster_id)
        limit, retry_after = self.max_connections_per_ip, self.retry_after
        if runtime is None:
            self.clusters[config.cluster_id] = ClusterRuntime(config, limit, retry_after)
        else:
            runtime.configure(config, limit, retry_after)
        for listener in self.listeners.values():
            if isinstance(listener, HttpListener):
                listener.answers.set_cluster(config.cluster_id, config.answers)

    def _remove_cluster(self, request: rq.RemoveCluster, fds: list[int]) -> None:
        cluster_id = request.cluster_id
        for key in self.cluster_routes.pop(cluster_id, set()):
            route = self.routes.pop(key)
            listener = self.listeners.get(route.frontend.address)
            if isinstance(listener, HttpListener):
                _router_remove(listener, route.frontend)
        for listener in self.listeners.values():
            if isinstance(listener, HttpListener):
                listener.answers.remove_cluster(cluster_id)
            elif (
                isinstance(listener, TcpListener)
                and listener.cluster is not None
                and listener.cluster.cluster_id == cluster_id
            ):
                listener.cluster = None
        runtime = self.clusters.pop(cluster_id, None)
        if runtime is not None:
            for backend in runtime.balancer.backends():
                runtime.balancer.remove_backend(backend.backend_id)
                self._detach_backend(backend)

    # frontends
    def _add_http_frontend(self, request: Any, fds: list[int]) -> None:
        frontend: HttpFrontend = request.frontend
        listener = self.listeners[frontend.address]
        assert isinstance(listener, HttpListener)
        cluster = self.clusters.get(frontend.cluster_id) if frontend.cluster_id else None
        route = Route(frontend, cluster)
        listener.router.add(RouteRule.of(frontend), route)
        listener.route_cache.clear()
        key = frontend.key
        self.routes[key] = route
        if frontend.cluster_id is not None:
            self.cluster_routes.setdefault(frontend.cluster_id, set()).add(key)

    def _remove_http_frontend(self, request: Any, fds: list[int]) -> None:
        key = request.frontend.key
        route = self.routes.pop(key)
        frontend = route.frontend
        if frontend.cluster_id is not None:
            keys = self.cluster_routes.get(frontend.cluster_id)
            if keys is not None:
                keys.discard(key)
        listener = self.listeners.get(frontend.address)
        if isinstance(listener, HttpListener):
            _router_remove(listener, frontend)

    def _add_tcp_frontend(self, request: rq.AddTcpFrontend, fds: list[int]) -> None:
        listener = self.listeners[request.frontend.address]
        assert isinstance(listener, TcpListener)
        listener.cluster = self.clusters[request.frontend.cluster_id]

    def _remove_tcp_frontend(self, request: rq.RemoveTcpFrontend, fds: list[int]) -> None:
        listener = self.listeners.get(request.frontend.address)
        if isinstance(listener, TcpListener):
            listener.cluster = None

    # backends
    def _add_backend(self, request: rq.AddBackend, fds: list[int]) -> None:
        config = request.backend
        cluster = self.clusters[config.cluster_id]
        previous = next(
            (b for b in cluster.balancer.backends() if b.backend_id == config.backend_id), None
        )
        cluster.balancer.upsert_backend(
            config.backend_id,
            config.address,
            weight=config.weight,
            backup=config.backup,
            sticky_id=config.sticky_id,
        )
        if previous is not None and previous.removed:  # the address changed
            self._detach_backend(previous)

    def _remove_backend(self, request: rq.RemoveBackend, fds: list[int]) -> None:
        cluster = self.clusters.get(request.cluster_id)
        if cluster is None:
            return
        backend = cluster.balancer.remove_backend(request.backend_id)
        if backend is not None:
            self._detach_backend(backend)

    def _drop_idle(self, backend: balancing.Backend) -> None:
        for connection in self.idle.pop(backend, []):
            self.idle_since.pop(connection, None)
            connection.close()

    # certificates
    def _add_certificate(self, request: rq.AddCertificate, fds: list[int]) -> None:
        listener = self.listeners[request.address]
        assert isinstance(listener, HttpListener)
        listener.sync_certificates(self.state)

    # ------------------------------------------------------------------ stopping

    def soft_stop(self) -> None:
        self.stopping = True
        for session in list(self.sessions):
            session.soft_stop()
        for pool in self.idle.values():
            for connection in pool:
                connection.close()
        self.idle.clear()

    async def stop_listening(self) -> None:
        for listener in self.listeners.values():
            await listener.deactivate()

    def hard_stop(self) -> None:
        self.stopping = True
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                session.transport.abort()
        for connection in list(self.backend_connections):
            connection.close()


def _router_remove(listener: HttpListener, frontend: HttpFrontend) -> None:
    listener.route_cache.clear()
    with contextlib.suppress(ValueError):
        listener.router.remove(RouteRule.of(frontend))


_RUNTIME: dict[type, Callable[..., Any]] = {
    rq.AddHttpListener: Proxy._add_listener,
    rq.AddHttpsListener: Proxy._add_listener,
    rq.AddTcpListener: Proxy._add_listener,
    rq.UpdateHttpListener: Proxy._update_listener,
    rq.UpdateHttpsListener: Proxy._update_listener,
    rq.UpdateTcpListener: Proxy._update_listener,
    rq.RemoveListener: Proxy._remove_listener,
    rq.ActivateListener: Proxy._activate_listener,
    rq.DeactivateListener: Proxy._deactivate_listener,
    rq.AddCluster: Proxy._add_cluster,
    rq.RemoveCluster: Proxy._remove_cluster,
    rq.AddHttpFrontend: Proxy._add_http_frontend,
    rq.AddHttpsFrontend: Proxy._add_http_frontend,
    rq.RemoveHttpFrontend: Proxy._remove_http_frontend,
    rq.RemoveHttpsFrontend: Proxy._remove_http_frontend,
    rq.AddTcpFrontend: Proxy._add_tcp_frontend,
    rq.RemoveTcpFrontend: Proxy._remove_tcp_frontend,
    rq.AddBackend: Proxy._add_backend,
    rq.RemoveBackend: Proxy._remove_backend,
    rq.AddCertificate: Proxy._add_certificate,
    rq.ReplaceCertificate: Proxy._add_certificate,
    rq.RemoveCertificate: Proxy._add_certificate,
}
