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
from typing import assert_never

from sozu_config import requests as rq
from sozu_config.metrics import filter_names, select_clusters
from sozu_config.models import (
    Cluster,
    FrontendKey,
    HttpFrontend,
    TcpListenerConfig,
)
from sozu_config.responses import Event, EventKind, MetricsContent
from sozu_config.state import ConfigState

from .accepting import Handshake
from .access_log import AccessEntry, AccessLogWriter
from .admission import Admission, Connection
from .h2_front import H2Session, take_over_h2
from .http import FrontendSession
from .listeners import HttpListener, Listener, TcpListener
from .metrics import Metrics
from .pool import BackendPool
from .reading import ReadBuffers
from .router import RouteRule
from .routes import ClusterRuntime, Route
from .tcp import TcpSession

log = logging.getLogger("sozu.worker")

__all__ = ["Proxy"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
NO_BACKEND_EVERY = 1.0  # seconds between two no_available_backends events of a cluster


def _ulid_time(ms: int) -> str:
    out = []
    for _ in range(10):
        out.append(_CROCKFORD[ms & 31])
        ms >>= 5
    return "".join(reversed(out))


class Proxy:
    """Everything one worker serves."""

    # Complexity: the worker's settings, each a keyword given by the process that sets it up.
    def __init__(  # noqa: PLR0913
        self,
        *,
        worker_id: int,
        buffer_size: int = 16393,
        max_connections: int = 10_000,
        max_connections_per_ip: int = 0,
        retry_after: int = 60,
        evict_on_queue_full: bool = False,
        emit_event: Callable[[Event], None] | None = None,
        observe: Callable[[Event], None] | None = None,
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
        self.metrics = Metrics()
        self.admission = Admission(
            self._set_accepting,
            self.metrics,
            max_connections=max_connections,
            evict_on_queue_full=evict_on_queue_full,
        )
        # every open connection (sessions, TLS handshakes, connections awaiting a PROXY header)
        self.sessions: set[Connection] = self.admission.connections
        # protocol → its handshake, while a connection's TLS handshake is in progress
        self.handshakes: dict[object, Handshake] = {}
        # access logs: off until configure_access_logs gives them a target; when off,
        # nothing is built for them
        self.access_writer: AccessLogWriter | None = None
        self.access_logs = False
        self.stopping = False
        self._emit = emit_event or (lambda event: None)
        # backend connections: the idle ones per backend, new ones, removed backends
        self.pool = BackendPool(self, self.loop, self._emit, observe or (lambda event: None))
        self._rid_counter = 0
        self._no_backend_said: dict[str, float] = {}  # cluster id → when it was last said
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
        """``enabled``, ``disabled`` or ``clear``. Disabled metrics record no exchange and are
        not reported; enabling them again starts from zero."""
        metrics = self.metrics
        if configuration == "clear" or (configuration == "enabled" and not metrics.enabled):
            metrics.clear()
        if configuration != "clear":
            metrics.enabled = configuration == "enabled"

    def metrics_content(self, request: rq.QueryMetrics) -> MetricsContent:
        """This worker's answer to ``query_metrics``: its proxy-wide figures and, unless
        ``no_clusters``, its clusters and backends (filtered as the request says)."""
        live = {cluster_id: c.balancer.backends() for cluster_id, c in self.clusters.items()}
        every = list(self.metrics.cluster_snapshots(live))
        gauges = {
            "client.connections": len(self.sessions),
            "tcp.active_sessions": sum(isinstance(s, TcpSession) for s in self.sessions),
            "http2.active_streams": sum(
                len(s.streams) for s in self.sessions if isinstance(s, H2Session)
            ),
            "http2.backend_connections": len(self.pool.h2_connections),
        }
        names = request.metric_names
        proxying = self.metrics.proxy_snapshot((scope for _, scope, _ in every), gauges)
        clusters = (
            {}
            if request.no_clusters
            else select_clusters(every, request.cluster_ids, request.backend_ids, names)
        )
        return MetricsContent(proxying=filter_names(proxying, names), clusters=clusters)

    # ------------------------------------------------------------------ sessions

    def session_opened(self, session: Connection) -> None:
        """A session's transport is up (counted from its handshake when it had one)."""
        self.metrics.accepted += 1
        if self.handshakes:
            handshake = self.handshakes.pop(session, None)
            if handshake is not None:
                self.admission.replaced(handshake, session)
                return
        if not self.admission.opened(session):
            transport = session.transport
            if transport is not None:
                transport.abort()  # accepted past the limit in the same batch

    def session_closed(self, session: Connection) -> None:
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

    # ------------------------------------------------------------------ backends

    def no_backend(self, cluster: ClusterRuntime) -> None:
        """A request of ``cluster`` found no backend: said at most once a second per cluster
        (a cluster that answers 503 to every request must not flood the events)."""
        now = self.clock()
        if (
            now - self._no_backend_said.get(cluster.cluster_id, -NO_BACKEND_EVERY)
            >= NO_BACKEND_EVERY
        ):
            self._no_backend_said[cluster.cluster_id] = now
            self._emit(Event(kind=EventKind.NO_AVAILABLE_BACKENDS, cluster_id=cluster.cluster_id))

    # ------------------------------------------------------------------ access logs

    def configure_access_logs(self, target: str | None, log_format: str, tag: str) -> None:
        """Write access logs to ``target`` (None: off) in ``log_format`` (``ascii``,
        ``json``), lines tagged ``tag`` (``WRK-00``). Raises OSError when the file cannot be
        opened."""
        self.close_access_log()
        self.access_writer = None
        if target is not None:
            self.access_writer = AccessLogWriter(target, log_format, tag, loop=self.loop)
        self.access_logs = self.access_writer is not None

    def access_log(self, entry: AccessEntry) -> None:
        writer = self.access_writer
        if writer is not None:
            writer.write(entry)

    def reopen_access_log(self) -> None:
        """Open the access-log file again (log rotation)."""
        if self.access_writer is not None:
            try:
                self.access_writer.reopen()
            except OSError as error:
                log.error("cannot reopen the access log %s: %s", error.filename, error.strerror)

    def close_access_log(self) -> None:
        """Write the buffered access-log lines and close the target (the worker stops)."""
        if self.access_writer is not None:
            self.access_writer.close()
            if self.access_writer.dropped:
                log.warning("%d access-log lines were dropped", self.access_writer.dropped)

    # ------------------------------------------------------------------ sweeping

    def sweep(self) -> None:
        """Expire deadlines, close idle pooled connections (called every tick)."""
        now = self.loop.time()
        self.refresh_clock()
        for session in [s for s in self.sessions if s.deadline < now]:
            session.check_deadline(now)
        self.admission.sweep(now, idle=not self.sessions and not self.pool.busy)
        self.pool.sweep(now)
        self.metrics.fold()

    # ------------------------------------------------------------------ applying requests

    async def apply(self, request: rq.MutatingRequest, fds: list[int]) -> None:
        """Apply a mutating request to the state, then to the runtime objects. ``fds`` holds
        the listening sockets of the request's activations, in order; they are consumed."""
        self.state.apply(request)
        if isinstance(request, rq.Batch):
            for inner in request.requests:
                await self._apply_runtime(inner, fds)
        else:
            await self._apply_runtime(request, fds)

    # Complexity: one exhaustive match over the state requests (mypy checks every type is here).
    async def _apply_runtime(self, request: rq.StateRequest, fds: list[int]) -> None:  # noqa: C901, PLR0912
        """The runtime side of a request the state accepted: one case per request type (mypy
        names this place when a new one is declared)."""
        match request:
            case rq.AddHttpListener() | rq.AddHttpsListener() | rq.AddTcpListener():
                self._add_listener(request)
            case rq.UpdateHttpListener() | rq.UpdateHttpsListener() | rq.UpdateTcpListener():
                self._update_listener(request)
            case rq.RemoveListener():
                await self._remove_listener(request)
            case rq.ActivateListener():
                await self._activate_listener(request, fds)
            case rq.DeactivateListener():
                await self.listeners[request.address].deactivate()
            case rq.AddCluster():
                self._add_cluster(request.cluster)
            case rq.SetHealthCheck() | rq.RemoveHealthCheck():
                self._add_cluster(self.state.clusters[request.cluster_id])
            case rq.RemoveCluster():
                self._remove_cluster(request)
            case rq.AddHttpFrontend() | rq.AddHttpsFrontend():
                self._add_http_frontend(request)
            case rq.RemoveHttpFrontend() | rq.RemoveHttpsFrontend():
                self._remove_http_frontend(request)
            case rq.AddTcpFrontend():
                self._add_tcp_frontend(request)
            case rq.RemoveTcpFrontend():
                self._remove_tcp_frontend(request)
            case rq.AddBackend():
                self._add_backend(request)
            case rq.RemoveBackend():
                self._remove_backend(request)
            case rq.AddCertificate() | rq.ReplaceCertificate() | rq.RemoveCertificate():
                self._sync_certificates(request.address)
            case _:
                assert_never(request)

    # listeners
    def _add_listener(
        self, request: rq.AddHttpListener | rq.AddHttpsListener | rq.AddTcpListener
    ) -> None:
        config = request.listener
        if isinstance(config, TcpListenerConfig):
            self.listeners[config.address] = TcpListener(self, config, TcpSession)
        else:
            listener = HttpListener(self, config, FrontendSession, take_over_h2)
            for cluster in self.clusters.values():
                if cluster.config.answers:
                    listener.answers.set_cluster(cluster.cluster_id, cluster.config.answers)
            self.listeners[config.address] = listener

    def _update_listener(
        self, request: rq.UpdateHttpListener | rq.UpdateHttpsListener | rq.UpdateTcpListener
    ) -> None:
        listener = self.listeners[request.address]
        config = self.state.listeners()[request.address]
        listener.reconfigure(config)

    async def _remove_listener(self, request: rq.RemoveListener) -> None:
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

    # health
    def set_health(
        self, down: list[tuple[str, str]], up: list[tuple[str, str]], reset: bool
    ) -> None:
        """The shared health decided by the main process: ``down`` backends are down, ``up``
        ones up again; with ``reset``, every backend not in ``down`` is up."""
        if reset:
            for cluster in self.clusters.values():
                for backend in cluster.balancer.backends():
                    cluster.balancer.set_down(backend, False)
        for pairs, down_now in ((up, False), (down, True)):
            for cluster_id, backend_id in pairs:
                runtime = self.clusters.get(cluster_id)
                found = None if runtime is None else runtime.balancer.backend(backend_id)
                if runtime is not None and found is not None:
                    runtime.balancer.set_down(found, down_now)

    # clusters
    def _add_cluster(self, config: Cluster) -> None:
        runtime = self.clusters.get(config.cluster_id)
        limit, retry_after = self.max_connections_per_ip, self.retry_after
        if runtime is None:
            runtime = self.clusters[config.cluster_id] = ClusterRuntime(config, limit, retry_after)
            runtime.stats = self.metrics.cluster(config.cluster_id)
        else:
            runtime.configure(config, limit, retry_after)
        self.pool.set_http2(config.cluster_id, config.http2)
        for listener in self.listeners.values():
            if isinstance(listener, HttpListener):
                listener.answers.set_cluster(config.cluster_id, config.answers)

    def _remove_cluster(self, request: rq.RemoveCluster) -> None:
        cluster_id = request.cluster_id
        self._no_backend_said.pop(cluster_id, None)
        self.pool.set_http2(cluster_id, False)
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
            # its figures go to the worker's own; its remaining connections count there
            runtime.stats = self.metrics.retire_cluster(cluster_id)
            for backend in runtime.balancer.backends():
                runtime.balancer.remove_backend(backend.backend_id)
                backend.stats = runtime.stats
                self.pool.detach(backend)

    # frontends
    def _add_http_frontend(self, request: rq.AddHttpFrontend | rq.AddHttpsFrontend) -> None:
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

    def _remove_http_frontend(
        self, request: rq.RemoveHttpFrontend | rq.RemoveHttpsFrontend
    ) -> None:
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

    def _add_tcp_frontend(self, request: rq.AddTcpFrontend) -> None:
        listener = self.listeners[request.frontend.address]
        assert isinstance(listener, TcpListener)
        listener.cluster = self.clusters[request.frontend.cluster_id]

    def _remove_tcp_frontend(self, request: rq.RemoveTcpFrontend) -> None:
        listener = self.listeners.get(request.frontend.address)
        if isinstance(listener, TcpListener):
            listener.cluster = None

    # backends
    def _add_backend(self, request: rq.AddBackend) -> None:
        config = request.backend
        cluster = self.clusters[config.cluster_id]
        previous = next(
            (b for b in cluster.balancer.backends() if b.backend_id == config.backend_id), None
        )
        backend = cluster.balancer.upsert_backend(
            config.backend_id,
            config.address,
            weight=config.weight,
            backup=config.backup,
            sticky_id=config.sticky_id,
        )
        backend.stats = self.metrics.backend(config.cluster_id, config.backend_id)
        if previous is not None and previous.removed:  # the address changed
            self.pool.detach(previous)

    def _remove_backend(self, request: rq.RemoveBackend) -> None:
        cluster = self.clusters.get(request.cluster_id)
        if cluster is None:
            return
        backend = cluster.balancer.remove_backend(request.backend_id)
        if backend is not None:
            # its figures go to the cluster's own; its remaining connections count there
            backend.stats = self.metrics.retire_backend(request.cluster_id, request.backend_id)
            self.pool.detach(backend)

    # certificates
    def _sync_certificates(self, address: str) -> None:
        listener = self.listeners[address]
        assert isinstance(listener, HttpListener)
        listener.sync_certificates(self.state)

    # ------------------------------------------------------------------ stopping

    def soft_stop(self) -> None:
        self.stopping = True
        for session in list(self.sessions):
            session.soft_stop()
        self.pool.stop()

    async def stop_listening(self) -> None:
        for listener in self.listeners.values():
            await listener.deactivate()

    def hard_stop(self) -> None:
        self.stopping = True
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                transport = session.transport
                if transport is not None:
                    transport.abort()
        self.pool.close_all()


def _router_remove(listener: HttpListener, frontend: HttpFrontend) -> None:
    listener.route_cache.clear()
    with contextlib.suppress(ValueError):
        listener.router.remove(RouteRule.of(frontend))
