"""An h2c origin for tests (HTTP/2 in clear text, prior knowledge), built on the ``h2``
package and run in its own thread like the other test backends.

What it answers depends on the request's path:

* ``/status/<code>``: that status (no body for 204 and 304, else a short one);
* ``/trailers``: a body without content-length, then trailers ``x-checksum`` (the sha256 of
  the request body) and ``x-origin``;
* ``/big/<n>``: ``n`` bytes of body (sent within the client's windows);
* ``/slow/<ms>``: the default answer after ``ms`` milliseconds;
* ``/reset``: RST_STREAM(INTERNAL_ERROR) instead of an answer;
* ``/refuse-once``: RST_STREAM(REFUSED_STREAM) the first time, the default answer after;
* ``/goaway-once``: the first time, GOAWAY with a last stream id below this stream (which
  was therefore not processed), then the connection closes;
* ``/goaway-then-answer``: GOAWAY with this stream as the last one, then the default answer
  then the connection closes;
* ``/garbage``: bytes that are no HTTP/2 frame the client accepts (a connection error);
* anything else: 200 with ``<name> <method> <path> <body length> <body sha256>``.

A client that does not start with the HTTP/2 preface is answered in HTTP/1.1 instead (requests
without a body only): 200 with ``h1 <name> <method> <path>``, its targets kept in ``h1_seen``.

Every request is recorded (:class:`Seen`): its header list, body size and digest, connection
number and stream id; ``max_concurrent`` is the most streams seen open at once on one
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

_BODY_STEP = 16_384


@dataclass
class Seen:
    """A request the origin received."""

    connection: int
    stream_id: int
    headers: dict[str, str]
    fields: list[tuple[str, str]]
    body_size: int = 0
    sha256: str = ""
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.headers[":method"]

    @property
    def path(self) -> str:
        return self.headers[":path"]

    @property
    def route(self) -> str:
        """The path without its query (what the answer depends on)."""
        return self.path.split("?", 1)[0]


class _Stream:
    def __init__(self, seen: Seen) -> None:
        self.seen = seen
        self.digest = hashlib.sha256()
        self.out = b""  # body bytes waiting for window
        self.end_trailers: list[tuple[str, str]] | None = None
        self.ending = False


class _Origin(asyncio.Protocol):
    def __init__(self, server: H2cServer, number: int) -> None:
        self.server = server
        self.number = number
        self.transport: Any = None
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.streams: dict[int, _Stream] = {}
        self.open = 0
        self.h1: bytes | None = None  # HTTP/1.1 spoken: bytes of the next head
        self.h2 = False  # the preface came
        self.closing = False  # GOAWAY sent: the connection closes once its streams are done

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections += 1
        self.server.transports.add(transport)

    def start_h2(self) -> None:
        self.h2 = True
        settings: dict[int, int] = {}
        if self.server.max_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.server.max_streams
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        self.conn.initiate_connection()
        if self.server.close_after_settings:  # SETTINGS and GOAWAY in one write
            self.conn.close_connection(ErrorCodes.NO_ERROR)
            self.flush()
            self.transport.close()
            return
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.transports.discard(self.transport)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if not self.h2:
            if self.h1 is None and data.startswith(b"PRI * HTTP/2.0"[: len(data)]):
                self.start_h2()
            else:
                self.h1_received(data)
                return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            return
        for event in events:
            self.event(event)
        self.flush()

    def h1_received(self, data: bytes) -> None:
        buffer = (self.h1 or b"") + data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            method, target = buffer[:end].split(b" ", 2)[:2]
            buffer = buffer[end + 4 :]
            self.server.h1_seen.append(target.decode())
            body = b"h1 %s %s %s" % (self.server.name.encode(), method, target)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.h1 = buffer

    def event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            fields = [(str(n), str(v)) for n, v in event.headers or ()]
            seen = Seen(self.number, event.stream_id, dict(fields), fields)
            self.streams[event.stream_id] = _Stream(seen)
            self.open += 1
            self.server.max_concurrent = max(self.server.max_concurrent, self.open)
            if self.early(event.stream_id, seen):
                return
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id or 0)
            self.conn.acknowledge_received_data(
                event.flow_controlled_length or 0, event.stream_id or 0
            )
            if stream is not None and event.data:
                stream.digest.update(event.data)
                stream.seen.body_size += len(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.seen.trailers = {str(n): str(v) for n, v in event.headers or ()}
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.seen.sha256 = stream.digest.hexdigest()
                self.server.seen.append(stream.seen)
                self.answer(event.stream_id or 0, stream)
        elif isinstance(event, h2.events.StreamReset):
            self.forget(event.stream_id or 0)
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id, stream in list(self.streams.items()):
                if stream.out or stream.ending:
                    self.send_body(stream_id, stream)

    def early(self, stream_id: int, seen: Seen) -> bool:
        """The answers given as soon as the head is read; True when given."""
        path = seen.route
        server = self.server
        if path == "/reset":
            self.conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
            self.forget(stream_id)
            return True
        if path == "/refuse-once" and "refuse-once" not in server.done:
            server.done.add("refuse-once")
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self.forget(stream_id)
            return True
        if path == "/goaway-once" and "goaway-once" not in server.done:
            server.done.add("goaway-once")
            self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=max(0, stream_id - 2))
            self.forget(stream_id)
            self.flush()
            self.transport.close()
            return True
        if path == "/goaway-then-answer":
            # written by hand: the library, told, would refuse to answer afterwards
            self.flush()
            self.transport.write(GoAwayFrame(0, last_stream_id=stream_id).serialize())
            self.closing = True
            return False
        if path == "/garbage":
            self.flush()
            # a DATA frame on stream 0: a connection error (RFC 9113 §6.1)
            self.transport.write(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
            return True
        return False

    def forget(self, stream_id: int) -> None:
        if self.streams.pop(stream_id, None) is not None:
            self.open -= 1
        if self.closing and not self.streams:
            self.flush()
            self.transport.close()

    def answer(self, stream_id: int, stream: _Stream) -> None:
        path = stream.seen.route
        if path.startswith("/slow/"):
            delay = int(path.rsplit("/", 1)[1]) / 1000
            asyncio.get_running_loop().call_later(delay, self.answer_now, stream_id, stream)
            return
        self.answer_now(stream_id, stream)

    def answer_now(self, stream_id: int, stream: _Stream) -> None:
        if self.streams.get(stream_id) is not stream or self.transport.is_closing():
            return
        seen = stream.seen
        path = seen.route
        status = 200
        headers: list[tuple[str, str]] = [("x-origin", self.server.name)]
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            body = b"" if status in (204, 304) else b"status %d" % status
        elif path.startswith("/big/"):
            body = bytes(range(256)) * (int(path.rsplit("/", 1)[1]) // 256)
        else:
            body = " ".join(
                (self.server.name, seen.method, seen.path, str(seen.body_size), seen.sha256)
            ).encode()
        if path == "/trailers":
            stream.end_trailers = [("x-checksum", seen.sha256), ("x-origin", self.server.name)]
            headers.append(("trailer", "x-checksum, x-origin"))
        elif status not in (204, 304):
            headers.append(("content-length", str(len(body))))
        if seen.method == "HEAD" or status in (204, 304):
            self.conn.send_headers(stream_id, [(":status", str(status)), *headers], True)
            self.forget(stream_id)
            self.flush()
            return
        self.conn.send_headers(stream_id, [(":status", str(status)), *headers])
        stream.out = body
        stream.ending = True
        self.send_body(stream_id, stream)
        self.flush()

    def send_body(self, stream_id: int, stream: _Stream) -> None:
        conn = self.conn
        while stream.out:
            window = min(conn.local_flow_control_window(stream_id), _BODY_STEP)
            if window <= 0:
                return
            piece, stream.out = stream.out[:window], stream.out[window:]
            conn.send_data(stream_id, piece)
        if stream.ending:
            stream.ending = False
            if stream.end_trailers:
                conn.send_headers(stream_id, stream.end_trailers, end_stream=True)
            else:
                conn.end_stream(stream_id)
            self.forget(stream_id)
        self.flush()


class H2cServer:
    """The h2c origin (see the module's doc) on 127.0.0.1, in its own thread.
    ``max_streams``: its MAX_CONCURRENT_STREAMS (None: not said); ``close_after_settings``:
    each connection says GOAWAY with its SETTINGS, and closes."""

    def __init__(
        self,
        name: str = "h2c",
        *,
        max_streams: int | None = None,
        close_after_settings: bool = False,
    ) -> None:
        self.name = name
        self.max_streams = max_streams
        self.close_after_settings = close_after_settings
        self.port = 0
        self.seen: list[Seen] = []
        self.h1_seen: list[str] = []
        self.connections = 0
        self.max_concurrent = 0
        self.done: set[str] = set()
        self.transports: set[Any] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> Self:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                loop.create_server(lambda: _Origin(self, self.connections + 1), "127.0.0.1", port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=f"h2c-{self.name}")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the h2c origin did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for transport in list(self.transports):
                transport.abort()
            loop.stop()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
