"""The backend side of HTTP proxying: one connection to a backend, as an asyncio Protocol.

A :class:`BackendConnection` carries one request at a time for a client session, reads the
answer and forwards it to the client (the head edited by :mod:`.headers`, the body streamed
as it comes, with flow control both ways), then goes back to its pool. It sees its session
through :class:`Client` and the worker through :class:`BackendServices`: narrow interfaces,
so that this module depends on neither the session's module nor the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import h1
from .exchange import REQUEST_BODY, TUNNEL, Exchange
from .h1 import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, BODY_TUNNEL, HttpError
from .headers import ForwardingHeaders, client_response_head

if TYPE_CHECKING:
    from .balancing import Backend
    from .metrics import Metrics
    from .reading import ReadBuffers

__all__ = ["BackendConnection", "BackendServices", "Client", "ConnectionPool"]

# Interim (1xx) responses relayed before the final one; past it, 502. Real servers send one
# or two (100 Continue, 103 Early Hints): the bound stops a backend from keeping a worker
# busy relaying an endless stream of them.
MAX_INTERIM_RESPONSES: Final = 32
SMALL_BODY: Final = 8192  # body bytes copied next to the head into one buffer; larger ones are not


class ClientListener(Protocol):
    """What a backend connection reads of its client's listener."""

    @property
    def back_timeout(self) -> float: ...

    @property
    def max_head(self) -> int: ...

    @property
    def forwarding(self) -> ForwardingHeaders: ...

    @property
    def hsts_line(self) -> bytes: ...


class Client(Protocol):
    """The client session a backend connection answers (:class:`.http.FrontendSession`)."""

    phase: int
    transport: Any
    keep_alive: bool
    deadline: float
    backend: BackendConnection | None
    backend_paused: bool  # the session paused this connection's reading (flow control)

    @property
    def exchange(self) -> Exchange: ...

    @property
    def listener(self) -> ClientListener: ...

    def hsts(self) -> tuple[bytes, bool]: ...

    def response_head_started(self) -> None: ...

    def response_done(self) -> None: ...

    def response_failed(self, status: int, message: str) -> None: ...

    def retry_after_reset(self, connection: BackendConnection) -> bool: ...

    def start_tunnel(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ConnectionPool(Protocol):
    """Where a backend connection goes when its answer is complete, and says it closed
    (see :class:`.pool.BackendPool`), and that its backend answered when that is news
    (``Backend.news``)."""

    def release(self, connection: BackendConnection) -> None: ...

    def closed(self, connection: BackendConnection) -> None: ...

    def answered(self, backend: Backend) -> None: ...


class BackendServices(Protocol):
    """What a backend connection uses of its worker."""

    clock: Callable[[], float]
    reads: ReadBuffers
    write_buffer_limit: int
    metrics: Metrics
    stopping: bool


class BackendConnection(asyncio.BufferedProtocol):
    """A connection to a backend: carries one request at a time, then goes back to the pool.

    It reads into the worker's buffer (see :mod:`.reading`): a small read once the client's
    write buffer holds data, so that a client that stops reading costs a bounded amount."""

    __slots__ = (
        "_client_paused",
        "backend",
        "body",
        "buf",
        "chunks",
        "closed",
        "connect_ns",
        "eof",
        "head_done",
        "interim",
        "keep_alive",
        "pool",
        "received",
        "remaining",
        "reused",
        "services",
        "session",
        "transport",
    )

    def __init__(self, services: BackendServices, pool: ConnectionPool, backend: Backend) -> None:
        self.services = services
        self.pool = pool
        self.backend = backend
        self.transport: Any = None
        self.session: Client | None = None
        self.buf = b""
        self.head_done = False
        self.interim = 0  # interim responses relayed for the current request
        self.body = BODY_NONE
        self.remaining = 0
        self.chunks: h1.ChunkedTracker | None = None
        self.keep_alive = True
        self.received = False  # any byte of the current answer received
        self.eof = False  # the backend ended its side (matters in a tunnel)
        self.reused = False
        self.closed = False  # the connection is closed (or closing): never reused
        self.connect_ns = 0  # how long opening it took
        self._client_paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # what waits to be sent to the backend is bounded: past it, the client is not read
        transport.set_write_buffer_limits(self.services.write_buffer_limit)

    def send_request(self, request: bytes, session: Client) -> None:
        self.session = session
        self.buf = b""
        self.head_done = False
        self.received = False
        self.interim = 0
        self.transport.write(request)
        session.exchange.back_out += len(request)

    def get_buffer(self, sizehint: int) -> memoryview:
        session = self.session
        reads = self.services.reads
        if session is not None and session.transport.get_write_buffer_size():
            return reads.small
        return reads.large

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.services.reads.take(nbytes))

    # flow control: the backend's send buffer is full → stop reading the client
    def pause_writing(self) -> None:
        session = self.session
        if session is not None and not self._client_paused:
            self._client_paused = True
            session.transport.pause_reading()

    def resume_writing(self) -> None:
        session = self.session
        if session is not None and self._client_paused:
            self._client_paused = False
            session.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            # an idle pooled connection must not speak: drop it
            self.close()
            return
        exchange = session.exchange
        if not self.received:
            self.received = True
            exchange.t_first = monotonic_ns()
        exchange.back_in += len(data)
        if session.phase == TUNNEL:
            session.transport.write(data)
            exchange.bytes_out += len(data)
            session.deadline = self.services.clock() + session.listener.back_timeout
            return
        if not self.head_done:
            if self.buf:
                data = self.buf + data
                self.buf = b""
            elif self._fast(session, data):
                return
            self._read_head(session, data)
            return
        self._forward(session, data)

    def _fast(self, session: Client, data: bytes) -> bool:
        """A complete common answer in one read (see :func:`.h1.simple_response`), forwarded
        in one write. False (nothing done) otherwise: the general path takes it."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        simple = h1.simple_response(data, end)
        if simple is None:
            return False
        status, length, keep_alive, cut_start, cut_end, line = simple
        received = len(data) - end - 4  # body bytes in this read
        exchange = session.exchange
        if length < 0 or received > length or exchange.method == b"HEAD":
            return False
        route = exchange.route
        if route is not None and route.response_edits:
            return False
        services = self.services
        closing = not session.keep_alive or services.stopping
        if closing:
            session.keep_alive = False
        listener = session.listener
        # on this path the backend sent no Strict-Transport-Security of its own
        hsts = listener.hsts_line if route is None or route.hsts_line is None else route.hsts_line
        extra = listener.forwarding.response_fields(
            exchange.request_id, exchange.set_cookie, hsts, closing, exchange.version
        )
        exchange.status = status
        if received <= SMALL_BODY:  # one buffer, one write
            if cut_start:
                out = b"".join((data[:line], extra, data[line:cut_start], data[cut_end:]))
            else:
                out = b"".join((data[:line], extra, data[line:]))
            session.transport.write(out)
            exchange.bytes_out += len(out)
        else:  # a large first part of the body is written as is, not copied into the head
            head_end = end + 4
            if cut_start:
                head = b"".join((data[:line], extra, data[line:cut_start], data[cut_end:head_end]))
            else:
                head = b"".join((data[:line], extra, data[line:head_end]))
            session.transport.writelines((head, memoryview(data)[head_end:]))
            exchange.bytes_out += len(head) + received
        self.keep_alive = keep_alive
        if received == length:
            exchange.response_started = True
            self._done(session, b"")
            return True
        # the rest of the body follows: stream it (see _forward)
        self.head_done = True
        self.body = BODY_LENGTH
        self.remaining = length - received
        session.response_head_started()
        return True

    # Complexity: per-response hot path: the head is read in one frame (a call per step costs).
    def _read_head(self, session: Client, data: bytes) -> None:  # noqa: C901, PLR0911, PLR0912, PLR0915
        listener = session.listener
        start = 0
        while True:
            try:
                head = h1.parse_response_head(data, listener.max_head, start)
            except HttpError as error:
                self.services.metrics.backend_parse_errors += 1
                self.close()
                session.response_failed(502, error.reason)
                return
            if head is None:
                self.buf = data[start:] if start else data
                return
            status = head.status
            if 100 <= status < 200 and status != 101:
                # interim answer (100 Continue, 103 Early Hints): relay it, read the final one
                self.interim += 1
                if self.interim > MAX_INTERIM_RESPONSES:
                    self.services.metrics.backend_parse_errors += 1
                    self.close()
                    session.response_failed(502, "too many interim (1xx) responses")
                    return
                session.transport.write(head.raw)
                session.exchange.bytes_out += len(head.raw)
                start += head.length
                if start == len(data):
                    return
                continue
            if start:
                data = data[start:]
            break
        kind = h1.response_body_kind(head, session.exchange.method)
        if kind == BODY_TUNNEL and session.exchange.upgrade is None:
            self.close()
            session.response_failed(502, "the backend switched protocols without being asked")
            return
        rest: bytes | memoryview = (
            data[head.length :]
            if len(data) - head.length <= SMALL_BODY
            else memoryview(data)[head.length :]  # not copied: written as it came
        )
        tracker: h1.ChunkedTracker | None = None
        end = -1
        if kind == BODY_CHUNKED:
            # check the framing of what came with the head before anything reaches the client
            tracker = h1.ChunkedTracker()
            try:
                end = tracker.feed(rest)
            except HttpError as error:
                self.services.metrics.backend_parse_errors += 1
                self.close()
                session.response_failed(502, error.reason)
                return
        self.head_done = True
        self.body = kind
        self.keep_alive = head.keep_alive and kind not in (BODY_CLOSE, BODY_TUNNEL)
        session.response_head_started()
        out_head = self._client_head(session, head, kind)
        exchange = session.exchange
        exchange.status = status
        exchange.bytes_out += len(out_head) + len(rest)  # (less what a final cut leaves out)
        transport = session.transport
        if kind == BODY_TUNNEL:
            transport.writelines((out_head, rest)) if rest else transport.write(out_head)
            self.keep_alive = False
            session.start_tunnel()
            return
        if kind == BODY_NONE:
            transport.write(out_head)
            exchange.bytes_out -= len(rest)
            self._done(session, rest)
            return
        if kind == BODY_LENGTH:
            self.remaining = head.content_length
            if len(rest) < self.remaining:
                transport.writelines((out_head, rest)) if rest else transport.write(out_head)
                self.remaining -= len(rest)
                return
            body, extra = rest[: self.remaining], rest[self.remaining :]
            exchange.bytes_out -= len(extra)
            transport.writelines((out_head, body))
            self._done(session, extra)
            return
        if tracker is not None:
            if end < 0:
                self.chunks = tracker
                transport.writelines((out_head, rest)) if rest else transport.write(out_head)
                return
            transport.writelines((out_head, rest[:end]))
            exchange.bytes_out -= len(rest) - end
            self._done(session, rest[end:])
            return
        # close-delimited: everything until the backend closes
        transport.writelines((out_head, rest)) if rest else transport.write(out_head)

    def _client_head(self, session: Client, head: h1.ResponseHead, kind: int) -> bytes:
        """The response head for the client (see :func:`.headers.client_response_head`)."""
        exchange = session.exchange
        closing = not session.keep_alive or self.services.stopping or kind == BODY_CLOSE
        if closing:
            session.keep_alive = False
        extra = session.listener.forwarding.response_fields(
            exchange.request_id, exchange.set_cookie, b"", closing, exchange.version
        )
        hsts, force = session.hsts()
        return client_response_head(head, extra, exchange.route, hsts, force)

    def _forward(self, session: Client, data: bytes) -> None:
        transport = session.transport
        exchange = session.exchange
        session.deadline = self.services.clock() + session.listener.back_timeout
        kind = self.body
        if kind == BODY_LENGTH:
            remaining = self.remaining
            if len(data) < remaining:
                transport.write(data)
                exchange.bytes_out += len(data)
                self.remaining = remaining - len(data)
                return
            transport.write(data[:remaining] if len(data) > remaining else data)
            exchange.bytes_out += remaining
            self._done(session, data[remaining:])
            return
        if kind == BODY_CHUNKED:
            tracker = self.chunks
            assert tracker is not None
            try:
                end = tracker.feed(data)
            except HttpError:
                self.close()
                session.abort()
                return
            if end < 0:
                transport.write(data)
                exchange.bytes_out += len(data)
                return
            transport.write(data[:end])
            exchange.bytes_out += end
            self.chunks = None
            self._done(session, data[end:])
            return
        transport.write(data)  # close-delimited
        exchange.bytes_out += len(data)

    def _done(self, session: Client, extra: bytes | memoryview) -> None:
        """The answer is complete: back to the pool (or closed), the session goes on."""
        backend = self.backend
        backend.active_requests -= 1
        if backend.news:  # it answers again
            self.pool.answered(backend)
        self.session = None
        reusable = self.keep_alive and not extra and session.phase != REQUEST_BODY
        if self._client_paused:
            self._client_paused = False
            session.transport.resume_reading()
        if session.backend_paused:
            session.backend_paused = False
            self.transport.resume_reading()
        self.release_or_close(reusable)
        session.response_done()

    def release_or_close(self, reusable: bool) -> None:
        """Back to the pool when ``reusable`` (and still usable), else closed."""
        if reusable and not self.closed and not self.backend.removed:
            self.reused = True
            self.session = None
            self.pool.release(self)
        else:
            self.close()

    def eof_received(self) -> bool | None:
        session = self.session
        self.eof = True
        if session is not None and session.phase == TUNNEL:
            if not session.keep_alive:  # the client had half-closed too: the pipe is done
                session.close()
                return None
            if session.transport.can_write_eof():
                session.transport.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            self.pool.closed(self)
            return
        self.closed = True
        session = self.session
        self.session = None
        self.pool.closed(self)
        if session is None:
            return
        self.backend.active_requests -= 1
        if session.phase == TUNNEL:
            session.close()
            return
        if not self.head_done:
            if not self.received and self.reused and session.retry_after_reset(self):
                return
            session.response_failed(502, "the backend closed the connection before answering")
            return
        if self.body == BODY_CLOSE:
            session.backend = None
            session.keep_alive = False
            session.close()  # the close-delimited answer is complete
            return
        session.backend = None
        session.abort()  # the answer was cut short

    def close(self) -> None:
        """Close the connection (the request it carried, if any, is given up)."""
        if self.session is not None:
            self.backend.active_requests -= 1
            self.session = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool.closed(self)

    def abandon(self) -> None:
        """Give the request up: the client went away, or was answered directly."""
        self.close()
