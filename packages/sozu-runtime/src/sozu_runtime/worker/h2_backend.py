"""HTTP/2 to a backend in clear text with prior knowledge (h2c): one
:class:`H2BackendConnection` per TCP connection, many requests on it as streams.

The framing, HPACK and flow-control bookkeeping are the ``h2`` library's (sans-I/O, client
side): this protocol feeds it the bytes read, hands each stream's events to its
:class:`~.h2_backend_stream.H2BackendStream` and writes what the library has to send.

* A connection is *ready* once the backend's first SETTINGS frame arrived: from then on its
  MAX_CONCURRENT_STREAMS bounds the streams the pool puts on it (see :mod:`.pool`).
* GOAWAY: no new stream goes there; the streams above its last stream id were not processed
  and are sent again on another connection (as a stream reset with REFUSED_STREAM is); the
  others finish, then the connection closes.
* Any other RST_STREAM fails the request: 502 when nothing of the answer reached the client,
  else the client's connection (or stream) is cut. A protocol error of the backend ends the
  connection with GOAWAY(PROTOCOL_ERROR) and fails every stream on it the same way.
* Flow control: request bodies are sent within the backend's windows (what waits is bounded:
  past the write-buffer limit the client is not read); what the backend sends on a stream is
  acknowledged as the client takes it, so a stream holds at most its window
  (:data:`STREAM_WINDOW`) of answer the client has not taken. The connection's window is given
  back as the bytes arrive: a client that stops reading does not stop the other streams. A
  full socket buffer towards the backend stops every stream's body.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes

from .h2_backend_stream import H2BackendStream
from .h2_hpack import BlockEncoder

if TYPE_CHECKING:
    from .backend import BackendServices
    from .balancing import Backend

__all__ = ["H2BackendConnection", "H2Pool"]

STREAM_WINDOW: Final = 1 << 18  # what one stream's answer may send ahead of the client
CONNECTION_WINDOW: Final = 1 << 22  # and all the streams of a connection together
_DEFAULT_WINDOW: Final = 65_535  # RFC 9113 §6.9.2


class _StateMachine(h2.connection.H2ConnectionStateMachine):
    """The library's connection states, except that a GOAWAY received leaves the connection
    open (the library would close it, and refuse the frames of the streams the backend still
    answers): the streams up to its last stream id finish (RFC 9113 §6.8); no new stream is
    opened there (:attr:`H2BackendConnection.goaway`)."""

    def process_input(self, input_: ConnectionInputs) -> list[h2.events.Event]:
        if input_ is ConnectionInputs.RECV_GOAWAY and self.state is ConnectionState.CLIENT_OPEN:
            return []
        return super().process_input(input_)


class H2Pool(Protocol):
    """What an h2c connection tells its pool (:class:`.pool.BackendPool`)."""

    def h2_ready(self, connection: H2BackendConnection) -> None: ...

    def h2_idle(self, connection: H2BackendConnection) -> None: ...

    def h2_closed(self, connection: H2BackendConnection) -> None: ...


class H2BackendConnection(asyncio.Protocol):
    """One h2c connection to ``backend`` (see the module's doc)."""

    __slots__ = (
        "backend",
        "closed",
        "conn",
        "flush_due",
        "goaway",
        "loop",
        "pool",
        "ready",
        "saturated",
        "services",
        "slots",
        "streams",
        "transport",
        "unacked",
        "waiting",
        "write_paused",
    )

    def __init__(
        self,
        services: BackendServices,
        pool: H2Pool,
        backend: Backend,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.services = services
        self.pool = pool
        self.backend = backend
        self.loop = loop
        self.transport: Any = None
        self.streams: dict[int, H2BackendStream] = {}  # the streams opened, by id
        self.slots: set[H2BackendStream] = set()  # every stream this connection carries
        # requests waiting for the connection to be ready: (session, request, complete)
        self.waiting: list[tuple[Any, bytes, bool]] = []
        self.ready = False  # the backend's SETTINGS arrived
        self.goaway = False  # no new stream: GOAWAY received (or sent)
        self.closed = False
        self.saturated = False  # the library counts more streams open: none more until one ends
        self.flush_due = False  # a write of what the streams prepared is planned (flush_output)
        self.write_paused = False
        self.unacked = 0  # DATA bytes received, not given back to the connection's window yet
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            # what goes out was built here from a checked head: lowercase names, no
            # connection-specific fields
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            # the library's inbound normalisation only joins cookie fields, which answers do
            # not carry (validation stays on)
            normalize_inbound_headers=False,
        )
        conn = self.conn = h2.connection.H2Connection(config)
        conn.state_machine = _StateMachine()
        conn.encoder = BlockEncoder()
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )

    # ------------------------------------------------------------------ capacity

    @property
    def capacity(self) -> int:
        """How many streams the backend allows at once (its MAX_CONCURRENT_STREAMS)."""
        return min(self.conn.remote_settings.max_concurrent_streams, 1 << 20)

    def has_room(self) -> bool:
        """A new stream may go on this connection now."""
        return (
            self.ready
            and not self.goaway
            and not self.closed
            and not self.saturated
            and len(self.slots) < self.capacity
        )

    def new_stream(self, pool: Any) -> H2BackendStream:
        """A stream slot on this connection (its request opens the stream)."""
        stream = H2BackendStream(self.services, pool, self.backend, self)
        self.slots.add(stream)
        return stream

    # ------------------------------------------------------------------ connection events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(self.services.write_buffer_limit)
        conn = self.conn
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._send()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self.services.metrics.backend_parse_errors += 1
            self._fail(f"HTTP/2 protocol error of the backend: {error}", ErrorCodes.PROTOCOL_ERROR)
            return
        for event in events:
            self._event(event)
        self._send()

    # Complexity: one dispatch over the library's events.
    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            size = event.flow_controlled_length or 0
            self._consumed(size)
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.answer_data(event.data or b"", size)
        elif isinstance(event, h2.events.ResponseReceived):
            self._head(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            self._head(event.stream_id, event.headers, False)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.answer_trailers(list(event.headers or ()))
        elif isinstance(event, h2.events.StreamEnded):
            self.saturated = False
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.answer_ended()
        elif isinstance(event, h2.events.StreamReset):
            self.saturated = False
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                refused = event.error_code == ErrorCodes.REFUSED_STREAM
                stream.reset(refused, f"the backend reset the stream ({event.error_code!s})")
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            if isinstance(event, h2.events.RemoteSettingsChanged) and not self.ready:
                self.ready = True
                self.pool.h2_ready(self)
            self._flush_streams()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event.last_stream_id or 0)

    def _head(self, stream_id: int | None, headers: Any, ended: bool) -> None:
        stream = self.streams.get(stream_id or 0)
        if stream is not None:
            stream.answer_head(list(headers or ()), ended)

    def _goaway(self, last_stream_id: int) -> None:
        """GOAWAY: the streams above ``last_stream_id`` go elsewhere, the others finish."""
        self.goaway = True
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last_stream_id:
                stream.reset(True, "the backend is going away")
        self.check_unused()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flush_streams()
        self.flush_output()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.goaway = True
        for stream in list(self.slots):
            stream.reset(False, "the backend closed the connection before answering")
        self.slots.clear()
        self.streams.clear()
        self.pool.h2_closed(self)

    # ------------------------------------------------------------------ what streams use

    def open_stream(
        self, stream: H2BackendStream, fields: list[tuple[bytes, bytes]], end: bool
    ) -> int:
        """Send the HEADERS of a new stream; its id, or 0 when none can be opened here."""
        if self.closed or self.goaway:
            return 0
        conn = self.conn
        stream_id = conn.get_next_available_stream_id()
        try:
            conn.send_headers(stream_id, fields, end_stream=end)
        except h2.exceptions.TooManyStreamsError:
            # streams whose answer is complete, not closed yet for the library (the backend's
            # END_STREAM is on its way): this one goes elsewhere, this connection waits for one
            self.saturated = True
            return 0
        except h2.exceptions.ProtocolError:
            return 0
        self.streams[stream_id] = stream
        return stream_id

    def send_data(self, stream_id: int, data: bytes | memoryview) -> int:
        """Send what the windows allow of ``data`` on a stream; how many bytes went."""
        conn = self.conn
        try:
            size = min(conn.local_flow_control_window(stream_id), len(data))
            if size <= 0:
                return 0
            frame = conn.max_outbound_frame_size
            view = memoryview(data)
            sent = 0
            while sent < size:
                step = min(frame, size - sent)
                conn.send_data(stream_id, view[sent : sent + step])
                sent += step
        except h2.exceptions.ProtocolError:  # (StreamClosedError among them)
            return len(data)  # the backend is done with the stream: nothing more is wanted
        return sent

    def end_stream(self, stream_id: int, trailers: list[tuple[bytes, bytes]]) -> None:
        conn = self.conn
        try:
            if trailers:
                conn.send_headers(stream_id, trailers, end_stream=True)
            else:
                conn.end_stream(stream_id)
        except h2.exceptions.ProtocolError:  # the backend is done with the stream
            pass
        self.flush_output()

    def _consumed(self, size: int) -> None:
        """``size`` bytes of DATA arrived: the connection's window is given back at once (in
        steps), so that a stream whose client does not read holds only its own window."""
        unacked = self.unacked + size
        if unacked < CONNECTION_WINDOW // 4:
            self.unacked = unacked
            return
        self.unacked = 0
        self.conn.increment_flow_control_window(unacked)

    def acknowledge(self, stream_id: int, size: int) -> None:
        if self.closed:
            return
        try:
            self.conn.increment_flow_control_window(size, stream_id=stream_id)
        except h2.exceptions.ProtocolError:
            pass  # the backend ended the stream: no more comes

    def cancel(self, stream_id: int) -> None:
        """RST_STREAM(CANCEL): the request is given up."""
        if self.closed:
            return
        try:
            self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:  # already closed
            pass

    def stream_done(self, stream: H2BackendStream) -> None:
        """``stream`` ended: its slot is free."""
        self.slots.discard(stream)
        if stream.stream_id:
            self.streams.pop(stream.stream_id, None)
        self.check_unused()

    def later(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon(callback, *args)

    def flush_output(self) -> None:
        """Write what the streams prepared, once per pass of the event loop: the requests
        that come together leave in one write."""
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        self._send()

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    # ------------------------------------------------------------------ the end

    def _flush_streams(self) -> None:
        """Windows grew (or the socket drained): the bodies that wait go on."""
        for stream in list(self.streams.values()):
            if stream.out:
                stream.flush()

    def check_unused(self) -> None:
        if self.slots or self.closed:
            return
        if self.goaway or self.services.stopping or self.backend.removed:
            self.close()
        else:
            self.pool.h2_idle(self)

    def _fail(self, reason: str, code: ErrorCodes) -> None:
        """A connection error: GOAWAY, then every stream fails."""
        self.goaway = True
        if not self.closed:
            try:
                self.conn.close_connection(code)
            except h2.exceptions.ProtocolError:
                pass  # the library's connection is closed already: nothing to say
            self._send()
        for stream in list(self.slots):
            stream.reset(False, reason)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        if not self.slots and self.transport is not None and not self.goaway:
            self.goaway = True
            self.conn.close_connection(ErrorCodes.NO_ERROR)
        self._send()  # what the streams prepared, and the GOAWAY, before the end
        self.goaway = True
        self.closed = True
        for stream in list(self.slots):
            stream.reset(False, "the backend connection closed")
        if self.transport is not None:
            self.transport.close()
        self.pool.h2_closed(self)
