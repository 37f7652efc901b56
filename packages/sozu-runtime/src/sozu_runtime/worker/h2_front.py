"""HTTP/2 on an HTTPS listener: one :class:`H2Session` per client connection that chose
``h2`` by ALPN.

The framing, HPACK and flow-control bookkeeping are the ``h2`` library's (sans-I/O): this
protocol feeds it the bytes read, acts on its events and writes what it has to send. Each
stream is carried by a :class:`~.h2_stream.StreamSession`, the HTTP/1.1 session code with a
virtual transport (see :mod:`.h2_stream`): an HTTP/2 stream is the same unit as an HTTP/1.1
request, through the same routing, answers, forwarding, retries, timeouts, logs and metrics.

Protections (each a listener setting with sōzu's name and default, see :mod:`.h2_guard`):

* at most ``h2_max_concurrent_streams`` streams at once: more are refused with
  RST_STREAM(REFUSED_STREAM), the connection goes on;
* floods (counted by :class:`~.h2_guard.Guard` on the frames as they arrive, before the
  library handles them) end the connection with GOAWAY(ENHANCE_YOUR_CALM);
* a decoded header list over ``h2_max_header_list_size`` (an HPACK bomb) ends it the same
  way (the library's check); a request with more than ``h2_max_header_fields`` fields gets
  RST_STREAM(PROTOCOL_ERROR);
* what the library finds malformed (pseudo-fields, connection-specific fields, stream ids)
  ends the connection with GOAWAY(PROTOCOL_ERROR), or resets the one stream when the
  library says it is a stream error;
* a request left unfinished longer than ``h2_stream_idle_timeout_seconds`` is answered 408;
* memory: a stream's answer waits for window up to the write-buffer limit (then its backend
  is not read); request bodies are bounded by the windows the proxy grants, granted again
  only as the backend takes the bytes.

Soft stop (and a worker upgrade) sends GOAWAY: open streams finish, new ones are refused,
and the connection closes when none is left, or after
``h2_graceful_shutdown_deadline_seconds``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from .h2_guard import Guard, H2Limits
from .h2_hpack import BlockEncoder, RequestDecoder
from .h2_stream import Refused, StreamSession, StreamTransport, request_head

if TYPE_CHECKING:
    from .http import FrontendSession
    from .services import ProxyServices

__all__ = ["H2Session", "take_over_h2"]


def take_over_h2(session: FrontendSession, transport: Any) -> None:
    """An HTTPS connection whose handshake chose ``h2``: an :class:`H2Session` replaces
    ``session`` (the HTTP/1.1 protocol made for it) as the protocol of ``transport``, counted
    in its place."""
    h2_session = H2Session(session)
    handshakes = session.proxy.handshakes
    handshake = handshakes.pop(session, None)
    if handshake is not None:
        handshakes[h2_session] = handshake
        handshake.protocol = h2_session
    transport.set_protocol(h2_session)
    h2_session.connection_made(transport)


class _Connection(h2.connection.H2Connection):
    """The library's connection, with the limit of concurrent streams left to
    :class:`H2Session` (the library would end the whole connection; a refused stream is
    enough)."""

    @property
    def open_inbound_streams(self) -> int:
        super().open_inbound_streams  # noqa: B018 - the property forgets closed streams
        return 0


class H2Session(asyncio.Protocol):
    """One client connection speaking HTTP/2 (see the module's doc)."""

    __slots__ = (
        "_closed",
        "_flush_due",
        "_goaway_at",
        "_guard",
        "conn",
        "fwd_static",
        "idle_deadline",
        "limits",
        "listener",
        "peer",
        "proxy",
        "proxy_header",
        "sni_names",
        "streams",
        "transport",
        "write_paused",
    )

    def __init__(self, session: FrontendSession) -> None:
        """Take over the connection of ``session``, whose handshake chose ``h2``."""
        listener = self.listener = session.listener
        # what the streams' sessions need of the connection, learnt once by ``session``
        self.peer = (session.peer_ip, session.peer_port)
        self.proxy_header = session.proxy_header
        self.fwd_static = session.fwd_static
        self.sni_names = session.sni_names
        self.proxy: ProxyServices = listener.proxy
        self.transport: Any = None
        self.limits = H2Limits(listener.config)
        self.streams: dict[int, StreamTransport] = {}
        self.idle_deadline = 0.0
        self.write_paused = False
        self._goaway_at = 0.0  # when GOAWAY was sent on a soft stop (0: not sent)
        self._closed = False
        self._flush_due = False  # a write of what the streams prepared is scheduled
        self._guard = Guard(self.limits, self._closed_stream)
        limits = self.limits
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # what goes out was built here from a checked head: lowercase names, no
            # connection-specific fields
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            # the library's inbound normalisation only joins cookie fields, which request_head
            # does in its own pass (validation stays on)
            normalize_inbound_headers=False,
        )
        conn = self.conn = _Connection(config)
        conn.encoder = BlockEncoder()
        conn.decoder = RequestDecoder()
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.header_list_size,
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: limits.header_table_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        conn.decoder.max_header_list_size = limits.header_list_size
        conn.decoder.max_allowed_table_size = limits.header_table_size

    # ------------------------------------------------------------------ connection events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        proxy = self.proxy
        transport.set_write_buffer_limits(proxy.write_buffer_limit)
        conn = self.conn
        conn.initiate_connection()
        extra = self.limits.initial_connection_window - 65_535
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self._send()
        proxy.metrics.h2_connections += 1
        proxy.session_opened(self)
        self.idle_deadline = proxy.clock() + self.listener.request_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self.streams.values()):
            stream.ended = True
            session = stream.session
            if session is not None:
                session.connection_lost(exc)
        self.streams.clear()
        self.proxy.session_closed(self)

    # flow control: the client reads slower than the answers come: their backends wait
    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.update_pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.update_pause()

    def eof_received(self) -> bool | None:
        return None

    # ------------------------------------------------------------------ reading

    def _closed_stream(self, stream_id: int) -> bool:
        """``stream_id`` names a stream of the client that was opened and is closed now."""
        return bool(
            stream_id & 1
            and stream_id <= self.conn.highest_inbound_stream_id
            and stream_id not in self.streams
        )

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        guard = self._guard
        calm = guard.frames(data, self.proxy.clock())
        if calm:
            self._goaway(ErrorCodes(guard.code), calm)
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            if isinstance(error, h2.exceptions.DenialOfServiceError):
                self.proxy.metrics.h2_floods += 1
            else:
                self.proxy.metrics.h2_protocol_errors += 1
            self._send()  # the library prepared a GOAWAY with the error's code
            self._end_connection(str(error))
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._stream_ended(event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                self._trailers(event)
            elif isinstance(event, h2.events.StreamReset):
                self._reset_by_client(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                self._flush_streams(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._flush_streams(0)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._send()
                self._end_connection("the client sent GOAWAY")
                return
        self._send()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        headers: list[tuple[bytes, bytes]] = event.headers
        metrics = self.proxy.metrics
        metrics.h2_streams += 1
        if self._goaway_at or len(self.streams) >= self.limits.concurrent_streams:
            metrics.h2_refused_streams += 1
            self._refuse(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(headers) > self.limits.header_fields:
            self._refuse(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        ended = event.stream_ended is not None
        built = request_head(headers, ended)
        if isinstance(built, Refused) and not built.status:
            self._refuse(stream_id, ErrorCodes.PROTOCOL_ERROR)  # malformed: a stream error
            return
        method = b"GET" if isinstance(built, Refused) else built[1]
        stream = StreamTransport(self, stream_id, method)
        session = StreamSession(self.listener, self)
        stream.session = session
        self.streams[stream_id] = stream
        session.connection_made(stream)
        self.idle_deadline = 0.0
        stream.request_ended = ended
        if isinstance(built, Refused):
            self._calm(self._guard.glitch())
            session.answer(built.status, message=built.reason)
            return
        head, _, stream.chunked = built
        if not ended:  # the body follows: the stream must not stay silent too long
            stream.idle_deadline = self.proxy.clock() + self.limits.stream_idle_timeout
        session.data_received(head)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        size = event.flow_controlled_length
        stream = self.streams.get(stream_id)
        data: bytes = event.data
        if stream is None or stream.session is None or stream.ended:
            if size:
                self.conn.acknowledge_received_data(size, stream_id)
            return
        if stream.idle_deadline:
            stream.idle_deadline = self.proxy.clock() + self.limits.stream_idle_timeout
        if data:
            stream.session.data_received(
                b"%x\r\n%b\r\n" % (len(data), data) if stream.chunked else data
            )
        if not size:
            return
        if stream.reading_paused:
            stream.unacked += size
        else:
            self.conn.acknowledge_received_data(size, stream_id)

    def _trailers(self, event: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.request_trailers = event.headers

    def _stream_ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.session is None:
            return
        stream.idle_deadline = 0.0  # the request is complete
        stream.request_ended = True
        if not stream.chunked:
            return
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in stream.request_trailers)
        stream.session.data_received(b"0\r\n" + lines + b"\r\n")

    def _reset_by_client(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        session = stream.session
        if session is not None and not session.exchange.response_started:
            calm = self._guard.reset_unanswered()
            if calm:
                self.streams[stream_id] = stream  # cut with the others
                self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, calm)
                return
        stream.ended = True
        stream.pending.clear()
        stream.session = None
        if session is not None:
            session.connection_lost(None)
        self._maybe_idle()

    # ------------------------------------------------------------------ writing

    def send_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.conn.send_headers(stream_id, fields, end_stream=end)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError):
            return

    def send_data(self, stream_id: int, data: bytes | memoryview, end: bool) -> int:
        """Send what the windows allow of ``data`` (all of it and the end when ``end``);
        the number of bytes sent."""
        conn = self.conn
        try:
            if not data:
                conn.send_data(stream_id, b"", end_stream=end)
                return 0
            window = conn.local_flow_control_window(stream_id)
            size = min(len(data), window)
            if size <= 0:
                return 0
            frame = conn.max_outbound_frame_size
            sent = 0
            while sent < size:
                piece = min(frame, size - sent)
                conn.send_data(
                    stream_id,
                    bytes(data[sent : sent + piece]),
                    end_stream=end and sent + piece == len(data),
                )
                sent += piece
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError):
            return len(data)  # the stream is gone: what is left is dropped
        return sent

    def reset_stream(self, stream_id: int) -> None:
        """Cut a stream whose answer cannot be completed: RST_STREAM(INTERNAL_ERROR)."""
        try:
            self.conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError):
            return
        self._calm(self._guard.reset_sent())

    def _refuse(self, stream_id: int, code: ErrorCodes) -> None:
        """A stream the proxy does not serve: RST_STREAM(``code``), a glitch of the client."""
        self.conn.reset_stream(stream_id, code)
        self._calm(self._guard.reset_sent() or self._guard.glitch())

    def _calm(self, flood: str) -> None:
        """End the connection when the guard found a flood."""
        if flood and not self._closed:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, flood)

    def acknowledge(self, stream_id: int, size: int) -> None:
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except (h2.exceptions.ProtocolError, ValueError):
            return

    def flush_output(self) -> None:
        """Write what the streams prepared, once per pass of the event loop: the answers of
        several streams that arrive together (their backends' reads in one pass) leave in one
        write, one TLS record, instead of one each."""
        if not self._flush_due:
            self._flush_due = True
            self.proxy.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self._send()

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self._closed:
            self.transport.write(data)

    def _flush_streams(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.pending:
                stream.flush()
            return
        for stream in list(self.streams.values()):
            if stream.pending:
                stream.flush()

    # ------------------------------------------------------------------ the end of streams

    def stream_finished(self, stream: StreamTransport) -> None:
        """``stream`` ended (answered, or reset): its session goes, its slot is free."""
        if self.streams.get(stream.stream_id) is not stream:
            return
        del self.streams[stream.stream_id]
        if not stream.request_ended and not stream.aborted:
            # answered before the request was complete: the client may stop sending
            try:
                self.conn.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
            except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError):
                pass
        session = stream.session
        stream.session = None
        if session is not None:
            # after the session's own call returns, as a transport's connection_lost comes
            self.proxy.loop.call_soon(session.connection_lost, None)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.streams:
            return
        if self._goaway_at:
            self.close()
            return
        self.idle_deadline = self.proxy.clock() + self.listener.front_timeout

    def _goaway(self, code: ErrorCodes, reason: str) -> None:
        """End the connection for misbehaviour: GOAWAY(``code``), every stream cut."""
        metrics = self.proxy.metrics
        if code == ErrorCodes.ENHANCE_YOUR_CALM:
            metrics.h2_floods += 1
        else:
            metrics.h2_protocol_errors += 1
        try:
            self.conn.close_connection(error_code=code)
        except h2.exceptions.ProtocolError:
            pass
        self._send()
        self._end_connection(reason)

    def _end_connection(self, reason: str) -> None:
        for stream in list(self.streams.values()):
            stream.ended = True
            session = stream.session
            stream.session = None
            if session is not None:
                session.connection_lost(None)
        self.streams.clear()
        transport = self.transport
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------------ the worker's calls

    @property
    def deadline(self) -> float:
        """The earliest deadline of the connection and its streams (for the sweeper)."""
        earliest = self.idle_deadline or float("inf")
        if self._goaway_at:
            graceful = self.limits.graceful_deadline
            if graceful:
                earliest = min(earliest, self._goaway_at + graceful)
        for stream in self.streams.values():
            session = stream.session
            if session is not None and session.deadline < earliest:
                earliest = session.deadline
            if stream.idle_deadline and stream.idle_deadline < earliest:
                earliest = stream.idle_deadline
        return earliest

    def check_deadline(self, now: float) -> None:
        graceful = self.limits.graceful_deadline
        if self._goaway_at and graceful and now >= self._goaway_at + graceful:
            self.abort()
            return
        if self.idle_deadline and now >= self.idle_deadline and not self.streams:
            # idle (front_timeout): GOAWAY(NO_ERROR) first (RFC 9113 §9.1), then the close
            try:
                self.conn.close_connection(error_code=ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
            self.close()  # which sends it
            return
        for stream in list(self.streams.values()):
            session = stream.session
            if session is None:
                continue
            if stream.idle_deadline and stream.idle_deadline <= now:
                # h2_stream_idle_timeout_seconds: the client left its request unfinished
                stream.idle_deadline = 0.0
                if session.exchange.response_started:
                    stream.abort()
                else:
                    session.answer(408, message="HTTP/2 stream idle")
            elif session.deadline < now:
                session.check_deadline(now)

    def soft_stop(self) -> None:
        """GOAWAY: the streams open finish, new ones are refused; closed when none is left
        (or after the graceful deadline)."""
        if self._goaway_at or self._closed:
            return
        self._goaway_at = self.proxy.clock()
        self._send()
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.conn.highest_inbound_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        if self.transport is not None:
            self.transport.write(frame.serialize())
        if not self.streams:
            self.close()

    def close(self) -> None:
        self._send()  # what the streams prepared goes before the end
        transport = self.transport
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()
