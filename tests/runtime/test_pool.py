"""The worker's backend pool (worker/pool.py): idle connections without sockets, new
connections with real ones on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from sozu_config.responses import Event, EventKind
from sozu_runtime.worker import pool as pool_module
from sozu_runtime.worker.backend import BackendConnection
from sozu_runtime.worker.balancing import Backend
from sozu_runtime.worker.metrics import Metrics
from sozu_runtime.worker.pool import BackendPool
from sozu_runtime.worker.reading import ReadBuffers


@dataclass
class Services:
    """What a backend connection uses of its worker."""

    reads: ReadBuffers = field(default_factory=lambda: ReadBuffers(4096, 1024))
    write_buffer_limit: int = 4096
    metrics: Metrics = field(default_factory=Metrics)
    stopping: bool = False
    access_logs: bool = False

    def clock(self) -> float:
        return 0.0


@dataclass
class Waiting:
    """A session waiting for a connection."""

    connected_with: list[tuple[BackendConnection, bytes, bool]] = field(default_factory=list)
    failed: list[Backend] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def connected(self, connection: BackendConnection, request: bytes, complete: bool) -> None:
        self.connected_with.append((connection, request, complete))
        self.done.set()

    def connect_failed(self, backend: Backend) -> None:
        self.failed.append(backend)
        self.done.set()


class Pooled:
    """A pool, its events, and connections opened as if they had connected."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[Event] = []
        self.observations: list[Event] = []  # what the main process is told
        self.services = Services()
        self.pool = BackendPool(self.services, loop, self.events.append, self.observations.append)

    def opened(self, backend: Backend) -> BackendConnection:
        connection = BackendConnection(self.services, self.pool, backend)
        backend.active_connections += 1
        self.pool.connections.add(connection)
        return connection

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]


def run(test: object) -> None:
    async def main() -> None:
        await test(Pooled(asyncio.get_running_loop()))  # type: ignore[operator]

    asyncio.run(main())


def backend(backend_id: str = "b1", address: str = "127.0.0.1:1") -> Backend:
    return Backend("app", backend_id, address)


def test_a_released_connection_is_taken_again_once() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        connection = p.opened(b)
        p.pool.release(connection)
        assert p.pool.take(b) is connection
        assert p.pool.take(b) is None
        assert p.pool.take(backend("other")) is None

    run(test)


def test_a_closed_idle_connection_is_never_taken() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        first, second = p.opened(b), p.opened(b)
        p.pool.release(first)
        p.pool.release(second)
        second.closed = True  # closed, its close not yet reported
        assert p.pool.take(b) is first
        assert p.pool.take(b) is None

    run(test)


def test_the_pool_of_a_backend_is_bounded_and_closed_when_stopping() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        connections = [p.opened(b) for _ in range(pool_module.MAX_IDLE_PER_BACKEND + 1)]
        for connection in connections:
            p.pool.release(connection)
        assert connections[-1].closed  # one too many
        assert not any(c.closed for c in connections[:-1])
        p.services.stopping = True  # the worker stops (as Proxy.soft_stop does), then its pool
        p.pool.stop()
        assert all(c.closed for c in connections)  # every idle connection, none skipped
        assert not p.pool.connections and b.active_connections == 0
        late = p.opened(b)
        p.pool.release(late)  # stopping: nothing goes back to the pool
        assert late.closed

    run(test)


def test_idle_connections_expire() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        connection = p.opened(b)
        p.pool.release(connection)
        p.pool.sweep(p.pool.loop.time())
        assert not connection.closed
        p.pool.sweep(p.pool.loop.time() + pool_module.IDLE_BACKEND_TIMEOUT + 1)
        assert connection.closed and p.pool.take(b) is None

    run(test)


def test_a_removed_backend_drains_then_is_reported_once() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        idle, busy = p.opened(b), p.opened(b)
        p.pool.release(idle)
        p.pool.detach(b)
        assert idle.closed and not busy.closed  # busy connections finish their requests
        assert p.kinds() == []
        busy.close()
        assert p.kinds() == [EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS]
        busy.close()  # reported once
        assert p.kinds() == [EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS]
        assert b not in p.pool.draining

    run(test)


def test_a_removed_backend_without_connections_is_reported_at_once() -> None:
    async def test(p: Pooled) -> None:
        p.pool.detach(backend())
        assert p.kinds() == [EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS]

    run(test)


def test_close_all_closes_busy_connections_too() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        connections = [p.opened(b) for _ in range(3)]
        p.pool.close_all()
        assert all(c.closed for c in connections) and not p.pool.connections

    run(test)


def test_connect_opens_a_real_connection() -> None:
    async def test(p: Pooled) -> None:
        accepted: list[asyncio.StreamReader] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(reader)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        b = backend(address=f"127.0.0.1:{port}")
        b.active_connections += 1  # counted by the session that asks
        waiting = Waiting()
        p.pool.connect(b, waiting, b"GET", True, 2.0)
        await asyncio.wait_for(waiting.done.wait(), 5)
        [(connection, request, complete)] = waiting.connected_with
        assert (request, complete) == (b"GET", True)
        assert connection in p.pool.connections and connection.transport is not None
        assert b.stats.connect_errors == 0 and b.stats.connections_opened == 1
        connection.close()
        assert b.active_connections == 0
        server.close()
        await server.wait_closed()

    run(test)


def test_a_failed_connect_is_counted_and_reported_to_the_session() -> None:
    async def test(p: Pooled) -> None:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]  # closed below: nothing listens there
        b = backend(address=f"127.0.0.1:{port}")
        b.active_connections += 1
        waiting = Waiting()
        p.pool.connect(b, waiting, b"GET", True, 2.0)
        await asyncio.wait_for(waiting.done.wait(), 5)
        assert waiting.failed == [b] and not waiting.connected_with
        assert b.active_connections == 0 and b.failures == 1
        assert b.stats.connect_errors == 1
        assert not p.pool.connections
        # the failure is reported to the main process, with why; no public event here
        [observation] = p.observations
        assert observation.kind is EventKind.BACKEND_DOWN
        assert (observation.cluster_id, observation.backend_id) == (b.cluster_id, b.backend_id)
        assert observation.message == "connection refused"
        assert not p.events

    run(test)


def test_an_answer_timeout_is_a_failure_and_an_answer_after_it_a_recovery() -> None:
    async def test(p: Pooled) -> None:
        b = backend()
        p.pool.answer_timed_out(b, 30.0)
        p.pool.answer_timed_out(b, 30.0)  # two requests unanswered: two failures
        assert b.failures == 0 and b.can_open(p.pool.loop.time())  # no backoff window
        assert [(o.kind, o.message) for o in p.observations] == [
            (EventKind.BACKEND_DOWN, "no answer within 30 s")
        ] * 2
        p.pool.answered(b)
        p.pool.answered(b)  # told once
        assert not b.silent and not b.news
        assert [o.kind for o in p.observations][2:] == [EventKind.BACKEND_UP]
        assert not p.events  # the public events are the main process's

    run(test)
