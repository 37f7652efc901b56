"""The worker's backend connections: opening them, keeping the idle ones, forgetting backends.

A session asks the pool for an idle keep-alive connection to the backend it chose
(:meth:`BackendPool.take`), or for a new one (:meth:`BackendPool.connect`: one coroutine per
connection, never per request); a connection whose answer is complete comes back
(:meth:`BackendPool.release`) unless it cannot be reused. Connection failures, and the first
success after them, are reported to the main process (``observe``), which decides for every
worker whether the backend is down (HTTP and TCP sessions report the same way). A backend that
left the configuration is *draining*: its idle connections are closed at once, its busy ones
finish their requests, and when its last connection closes it is forgotten and reported once
(``removed_backend_has_no_connections``).

The backends of a cluster with ``http2`` (:meth:`BackendPool.set_http2`) are spoken to in h2c
(:mod:`.h2_backend`): their connections are shared, a request takes a stream slot on the
connection with the fewest streams that has room under the backend's MAX_CONCURRENT_STREAMS
(:meth:`BackendPool.take` gives it as the connection), else a new connection is opened, and
requests that come while one is being opened wait for it instead of opening more. A
connection counts once in ``Backend.active_connections`` however many streams it carries.
Health checks stay HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from time import monotonic_ns
from typing import Final, Protocol

from sozu_config.responses import Event, EventKind

from .backend import BackendConnection, BackendServices
from .balancing import Backend
from .h2_backend import H2BackendConnection

__all__ = ["BackendPool", "Connecting", "connect_error"]

MAX_IDLE_PER_BACKEND: Final = 128  # idle keep-alive connections kept per backend
IDLE_BACKEND_TIMEOUT: Final = 30.0  # seconds an idle pooled connection is kept
# requests that wait for one h2c connection being opened (RFC 9113 §6.5.2 advises backends to
# allow at least 100 streams); past it, another connection is opened
OPENING_STREAMS: Final = 100


class Connecting(Protocol):
    """A session waiting for a new backend connection (see :meth:`BackendPool.connect`)."""

    def connected(self, connection: BackendConnection, request: bytes, complete: bool) -> None:
        """The connection is up: send ``request`` on it (the whole request when
        ``complete``)."""

    def connect_failed(self, backend: Backend) -> None:
        """The connection to ``backend`` could not be opened in time."""


class BackendPool:
    """Every backend connection of a worker, and the idle ones per backend."""

    __slots__ = (
        "_emit",
        "_observe",
        "_opening",
        "connections",
        "draining",
        "h2",
        "h2_clusters",
        "h2_connections",
        "h2_idle_since",
        "idle",
        "idle_since",
        "loop",
        "services",
    )

    def __init__(
        self,
        services: BackendServices,
        loop: asyncio.AbstractEventLoop,
        emit: Callable[[Event], None],
        observe: Callable[[Event], None],
    ) -> None:
        self.services = services
        self.loop = loop
        self._emit = emit
        self._observe = observe
        self.connections: set[BackendConnection] = set()
        self.idle: dict[Backend, list[BackendConnection]] = {}
        self.idle_since: dict[BackendConnection, float] = {}
        # backends removed from the configuration that still have connections
        self.draining: set[Backend] = set()
        self.h2_clusters: set[str] = set()  # the clusters whose backends speak h2c
        self.h2: dict[Backend, list[H2BackendConnection]] = {}  # opened and opening
        self.h2_connections: set[H2BackendConnection] = set()  # opened (counted)
        self.h2_idle_since: dict[H2BackendConnection, float] = {}
        self._opening: dict[H2BackendConnection, asyncio.Future[None]] = {}

    @property
    def busy(self) -> bool:
        """A backend connection is open (or being opened, for h2c)."""
        return bool(self.connections or self.h2)

    # ------------------------------------------------------------------ idle connections

    def take(self, backend: Backend) -> BackendConnection | None:
        """An idle keep-alive connection to ``backend`` (a stream slot on a shared connection
        for an h2c backend), or None."""
        if self.h2_clusters and backend.cluster_id in self.h2_clusters:
            return self._stream(backend)
        pool = self.idle.get(backend)
        while pool:
            connection = pool.pop()
            self.idle_since.pop(connection, None)
            if not connection.closed:
                return connection
        return None

    def release(self, connection: BackendConnection) -> None:
        """``connection`` finished its answer and may carry another request."""
        pool = self.idle.get(connection.backend)
        if pool is None:
            pool = self.idle[connection.backend] = []
        if (
            len(pool) >= MAX_IDLE_PER_BACKEND
            or self.services.stopping
            or (self.h2_clusters and connection.backend.cluster_id in self.h2_clusters)
        ):
            connection.close()
            return
        pool.append(connection)
        self.idle_since[connection] = self.loop.time()

    def sweep(self, now: float) -> None:
        """Close the connections idle for longer than :data:`IDLE_BACKEND_TIMEOUT`."""
        if self.idle_since:
            limit = now - IDLE_BACKEND_TIMEOUT
            for connection in [c for c, t in self.idle_since.items() if t < limit]:
                connection.close()
        if self.h2_idle_since:
            limit = now - IDLE_BACKEND_TIMEOUT
            for h2_connection in [c for c, t in self.h2_idle_since.items() if t < limit]:
                h2_connection.close()

    # ------------------------------------------------------------------ new connections

    def connect(
        self,
        backend: Backend,
        session: Connecting,
        request: bytes,
        complete: bool,
        timeout: float,
    ) -> None:
        """Open a connection to ``backend`` for ``session`` (one coroutine per connection);
        ``backend.active_connections`` already counts it."""
        if self.h2_clusters and backend.cluster_id in self.h2_clusters:
            self._connect_h2(backend, session, request, complete, timeout)
            return
        self.loop.create_task(self._connect(backend, session, request, complete, timeout))

    async def _connect(
        self,
        backend: Backend,
        session: Connecting,
        request: bytes,
        complete: bool,
        timeout: float,
    ) -> None:
        loop = self.loop
        started = monotonic_ns()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: BackendConnection(self.services, self, backend),
                    backend.host,
                    backend.port,
                )
        except (OSError, TimeoutError) as error:
            self.connection_failed(backend, error)
            session.connect_failed(backend)
            return
        connection.connect_ns = self.connection_opened(backend, monotonic_ns() - started)
        self.connections.add(connection)
        session.connected(connection, request, complete)

    def connection_opened(self, backend: Backend, elapsed_ns: int) -> int:
        """A connection to ``backend`` opened after ``elapsed_ns``; returned."""
        backend.stats.connection_opened(elapsed_ns)
        if backend.connect_succeeded(elapsed_ns / 1e9):
            self._observe(_observation(EventKind.BACKEND_UP, backend, "connection opened"))
        return elapsed_ns

    def connection_failed(self, backend: Backend, error: OSError | TimeoutError) -> None:
        """A connection to ``backend`` could not be opened (``active_connections`` counted
        it)."""
        backend.active_connections -= 1
        backend.stats.connect_errors += 1
        if backend.connect_failed(self.loop.time()):
            self._observe(_observation(EventKind.BACKEND_DOWN, backend, connect_error(error)))
        self._maybe_drained(backend)

    def answered(self, backend: Backend) -> None:
        """An answer came from ``backend`` that is news (``Backend.news``)."""
        if backend.recovered():
            self._observe(_observation(EventKind.BACKEND_UP, backend, "an answer came"))

    def answer_timed_out(self, backend: Backend, timeout: float) -> None:
        """``backend`` took a request and did not answer within ``timeout`` seconds: the main
        process is told (each time: a backend that does not answer many requests at once
        fails many times), and only an answer will prove it works again."""
        backend.answer_timed_out()
        reason = f"no answer within {timeout:g} s"
        self._observe(_observation(EventKind.BACKEND_DOWN, backend, reason))

    def closed(self, connection: BackendConnection) -> None:
        """``connection`` closed (called once it is closed, maybe more than once)."""
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        self.idle_since.pop(connection, None)
        pool = self.idle.get(connection.backend)
        if pool and connection in pool:
            pool.remove(connection)
        backend = connection.backend
        backend.active_connections -= 1
        self._maybe_drained(backend)

    # ------------------------------------------------------------------ h2c backends

    def set_http2(self, cluster_id: str, enabled: bool) -> None:
        """Whether the backends of ``cluster_id`` speak h2c (its ``http2``), for the requests
        from now on; idle connections of the other kind close, busy ones finish their
        requests."""
        if (cluster_id in self.h2_clusters) == enabled:
            return
        if enabled:
            self.h2_clusters.add(cluster_id)
        else:
            self.h2_clusters.discard(cluster_id)
        for backend in [b for b in self.idle if b.cluster_id == cluster_id]:
            self._drop_idle(backend)
        for connection in [c for c in self.h2_idle_since if c.backend.cluster_id == cluster_id]:
            connection.close()

    def _stream(self, backend: Backend) -> BackendConnection | None:
        """A stream slot on the connection to ``backend`` with the fewest streams that has
        room for one more, or None."""
        best: H2BackendConnection | None = None
        for connection in self.h2.get(backend, ()):
            if connection.has_room() and (best is None or len(connection.slots) < len(best.slots)):
                best = connection
        if best is None:
            return None
        self.h2_idle_since.pop(best, None)
        return best.new_stream(self)

    def _connect_h2(
        self,
        backend: Backend,
        session: Connecting,
        request: bytes,
        complete: bool,
        timeout: float,
    ) -> None:
        """A stream for ``session``: on a connection with room if one has it now, else on the
        connection being opened, else on a new one (which keeps the count the session made in
        ``backend.active_connections``)."""
        stream = self._stream(backend)
        if stream is not None:
            backend.active_connections -= 1
            self.loop.call_soon(session.connected, stream, request, complete)
            return
        for opening in self.h2.get(backend, ()):
            if not opening.ready and not opening.closed and len(opening.waiting) < OPENING_STREAMS:
                backend.active_connections -= 1
                opening.waiting.append((session, request, complete))
                return
        connection = H2BackendConnection(self.services, self, backend, self.loop)
        connection.waiting.append((session, request, complete))
        self.h2.setdefault(backend, []).append(connection)
        self._opening[connection] = self.loop.create_future()
        self.loop.create_task(self._open_h2(connection, timeout))

    async def _open_h2(self, connection: H2BackendConnection, timeout: float) -> None:
        """Open ``connection`` and wait for the backend's SETTINGS (within ``timeout``), then
        give its waiting requests their streams."""
        backend = connection.backend
        ready = self._opening[connection]
        started = monotonic_ns()
        try:
            async with asyncio.timeout(timeout):
                await self.loop.create_connection(lambda: connection, backend.host, backend.port)
                await ready
        except (OSError, TimeoutError) as error:
            self._opening.pop(connection, None)
            self._forget_h2(connection)
            connection.close()
            self.connection_failed(backend, error)
            waiting, connection.waiting = connection.waiting, []
            for session, _, _ in waiting:
                session.connect_failed(backend)
            return
        elapsed = self.connection_opened(backend, monotonic_ns() - started)
        waiting, connection.waiting = connection.waiting, []
        if connection.closed:  # closed as soon as it was ready: it counts no more
            backend.active_connections -= 1
            self._maybe_drained(backend)
            for session, _, _ in waiting:
                session.connect_failed(backend)
            return
        self.h2_connections.add(connection)
        for session, request, complete in waiting:
            if connection.has_room():
                stream = connection.new_stream(self)
                stream.connect_ns = elapsed
                session.connected(stream, request, complete)
            elif connection.capacity == 0:  # it takes no stream at all: not another connection
                session.connect_failed(backend)
            else:  # the backend allows fewer streams: another connection
                backend.active_connections += 1
                self._connect_h2(backend, session, request, complete, timeout)
        if not connection.slots:
            connection.check_unused()

    def h2_ready(self, connection: H2BackendConnection) -> None:
        """The backend's SETTINGS arrived on ``connection``."""
        ready = self._opening.pop(connection, None)
        if ready is not None and not ready.done():
            ready.set_result(None)

    def h2_idle(self, connection: H2BackendConnection) -> None:
        """``connection`` carries no stream any more."""
        cluster_id = connection.backend.cluster_id
        if self.services.stopping or cluster_id not in self.h2_clusters:
            connection.close()
            return
        self.h2_idle_since[connection] = self.loop.time()

    def h2_closed(self, connection: H2BackendConnection) -> None:
        """``connection`` closed (maybe said more than once)."""
        ready = self._opening.pop(connection, None)
        if ready is not None and not ready.done():
            ready.set_exception(ConnectionResetError("the backend closed the connection"))
        self._forget_h2(connection)
        if connection in self.h2_connections:
            self.h2_connections.discard(connection)
            backend = connection.backend
            backend.active_connections -= 1
            self._maybe_drained(backend)

    def _forget_h2(self, connection: H2BackendConnection) -> None:
        self.h2_idle_since.pop(connection, None)
        connections = self.h2.get(connection.backend)
        if connections is not None and connection in connections:
            connections.remove(connection)
            if not connections:
                del self.h2[connection.backend]

    # ------------------------------------------------------------------ removed backends

    def detach(self, backend: Backend) -> None:
        """``backend`` left the configuration: drop its idle connections, let busy ones
        finish."""
        self._drop_idle(backend)
        for connection in list(self.h2.get(backend, ())):
            if connection.ready and not connection.slots:
                connection.close()
        self.draining.add(backend)
        self._maybe_drained(backend)

    def _maybe_drained(self, backend: Backend) -> None:
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

    def _drop_idle(self, backend: Backend) -> None:
        for connection in self.idle.pop(backend, []):
            self.idle_since.pop(connection, None)
            connection.close()

    # ------------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Soft stop (the worker is ``stopping``: no connection goes back to the pool any
        more): idle connections close now, busy ones after their answer."""
        idle, self.idle = self.idle, {}
        for pool in idle.values():
            for connection in pool:
                connection.close()
        for h2_connection in list(self.h2_connections):
            if not h2_connection.slots:
                h2_connection.close()

    def close_all(self) -> None:
        """Hard stop: every connection closes now."""
        for connection in list(self.connections):
            connection.close()
        for h2_connections in list(self.h2.values()):
            for h2_connection in list(h2_connections):
                h2_connection.close()


def connect_error(error: OSError) -> str:
    """Why a connection could not be opened, in words (``connection refused``)."""
    if isinstance(error, TimeoutError) and not error.errno:
        return "connection timed out"
    if error.errno:  # the system's words ("connection refused"), not the loop's
        return os.strerror(error.errno).lower()
    return (error.strerror or str(error) or type(error).__name__).lower()


def _observation(kind: EventKind, backend: Backend, message: str) -> Event:
    return Event(
        kind=kind,
        cluster_id=backend.cluster_id,
        backend_id=backend.backend_id,
        address=backend.address,
        message=message,
    )
