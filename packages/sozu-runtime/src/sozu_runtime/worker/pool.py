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

__all__ = ["BackendPool", "Connecting", "connect_error"]

MAX_IDLE_PER_BACKEND: Final = 128  # idle keep-alive connections kept per backend
IDLE_BACKEND_TIMEOUT: Final = 30.0  # seconds an idle pooled connection is kept


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
        "connections",
        "draining",
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

    # ------------------------------------------------------------------ idle connections

    def take(self, backend: Backend) -> BackendConnection | None:
        """An idle keep-alive connection to ``backend``, or None."""
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
        if len(pool) >= MAX_IDLE_PER_BACKEND or self.services.stopping:
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

    # ------------------------------------------------------------------ removed backends

    def detach(self, backend: Backend) -> None:
        """``backend`` left the configuration: drop its idle connections, let busy ones
        finish."""
        self._drop_idle(backend)
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

    def close_all(self) -> None:
        """Hard stop: every connection closes now."""
        for connection in list(self.connections):
            connection.close()


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
