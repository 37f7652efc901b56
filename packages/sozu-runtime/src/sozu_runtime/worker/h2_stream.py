"""One HTTP/2 stream of a client connection, carried by the HTTP/1.1 session code.

Each stream of an :class:`~.h2_front.H2Session` gets its own :class:`StreamSession`: a
:class:`~.http.FrontendSession` (so routing, the proxy's answers, forwarding headers,
redirects, rewrites, authentication, stickiness, retries, timeouts, access logs and metrics are
the very code HTTP/1.1 requests run through) whose transport is a :class:`StreamTransport`:

* the request is handed to the session as the HTTP/1.1 message it stands for (built by
  :func:`request_head` from the HEADERS frame; DATA frames as its body, chunked when the
  client gave no ``content-length``; trailers as chunked trailers);
* what the session writes (an HTTP/1.1 answer) is read back by a
  :class:`~.h1_decode.MessageReader` into HEADERS and DATA frames for the stream, within the
  stream's and the connection's flow-control windows. What waits for window is counted; past
  the write-buffer limit the session is told to pause (its backend is no longer read), as a
  full socket buffer would.

A stream session carries exactly one exchange: when its answer is complete it closes, which
ends the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from hpack import NeverIndexedHeaderTuple

from . import h1
from .h1 import BODY_NONE, HttpError
from .h1_decode import MessageReader
from .http import FrontendSession

if TYPE_CHECKING:
    from .access_log import AccessEntry
    from .h2_guard import H2Limits
    from .listeners import HttpListener
    from .metrics import Sample
    from .proxy_protocol import ProxyHeader

__all__ = ["Refused", "StreamConnection", "StreamSession", "StreamTransport", "request_head"]

# Fields that do not cross from HTTP/1.1 to HTTP/2 (RFC 9113 §8.2.2).
_CONNECTION_FIELDS: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# A field whose value is new in every answer: kept out of the HPACK dynamic table (RFC 7541
# §6.2.3), where it would only evict the fields that repeat and lengthen every search.
_UNIQUE_FIELD: Final = b"sozu-id"


class Refused(NamedTuple):
    """An HTTP/2 request that is not forwarded: ``status`` 400 is answered; 0 means it is
    malformed (RFC 9113 §8.1.1), a stream error: RST_STREAM(PROTOCOL_ERROR)."""

    status: int
    reason: str


_SCHEMES: Final = frozenset({b"http", b"https"})


# Complexity: one pass over the header list, each field where it goes.
def request_head(  # noqa: C901, PLR0912
    headers: list[tuple[bytes, bytes]], ended: bool
) -> tuple[bytes, bytes, bool] | Refused:
    """(the HTTP/1.1 head, the method, whether the body is sent chunked) that an HTTP/2
    request's header list stands for; ``ended``: the HEADERS frame ended the stream (no body).

    ``:authority`` becomes ``Host``; ``cookie`` fields are joined with ``; `` (RFC 9113
    §8.2.3); a body without ``content-length`` is sent chunked. The library (``h2``) already
    refused connection-specific fields, uppercase names, misplaced or missing pseudo-fields
    and a ``host`` that differs from ``:authority``; here, what it lets through: a ``:path``
    that is not origin-form, a ``:scheme`` other than http(s), a ``content-length`` that
    END_STREAM contradicts."""
    method = path = authority = scheme = b""
    host = b""
    length = b""
    cookies: list[bytes] = []
    fields: list[bytes] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            host = value
            continue
        if name in _CONNECTION_FIELDS or (name == b"te" and value.lower() != b"trailers"):
            continue  # (TE: trailers stays for an HTTP/2 backend, see .h2_backend_stream)
        if name == b"content-length":
            length = value
        fields += (name, b": ", value, b"\r\n")
    if not method or not path or scheme.lower() not in _SCHEMES:
        return Refused(0, "missing or invalid :method, :scheme or :path")
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        return Refused(0, ":path is not origin-form")
    if ended and length and length.strip() != b"0":
        return Refused(0, "content-length announces a body that END_STREAM denies")
    if authority and host and authority.lower() != host.lower():
        return Refused(0, ":authority and Host name different hosts")
    authority = authority or host
    if not authority:
        return Refused(400, "missing :authority and Host")
    chunked = not ended and not length
    if cookies:
        fields += (b"cookie: ", b"; ".join(cookies), b"\r\n")
    if chunked:
        fields.append(b"transfer-encoding: chunked\r\n")
    head = b"".join(
        (method, b" ", path, b" HTTP/1.1\r\nhost: ", authority, b"\r\n", *fields, b"\r\n")
    )
    return head, method, chunked


class StreamConnection(Protocol):
    """What a stream needs of its connection (:class:`.h2_front.H2Session`)."""

    listener: HttpListener
    transport: Any
    peer: tuple[str, int]
    proxy_header: ProxyHeader | None
    fwd_static: bytes  # the forwarding headers of this client (headers.for_peer)
    sni_names: tuple[str, ...] | None
    limits: H2Limits

    def send_headers(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], end: bool
    ) -> None: ...

    def flush_output(self) -> None: ...

    @property
    def write_paused(self) -> bool: ...

    def send_data(self, stream_id: int, data: bytes | memoryview, end: bool) -> int: ...

    def reset_stream(self, stream_id: int) -> None: ...

    def acknowledge(self, stream_id: int, size: int) -> None: ...

    def stream_finished(self, stream: StreamTransport) -> None: ...


class StreamTransport:
    """The transport of a :class:`StreamSession`: its writes become the stream's frames.

    ``pending`` holds the body bytes (and the end) that wait for flow-control window;
    ``paused``: the session asked not to be read (request DATA is then not acknowledged, so
    the client's window closes)."""

    __slots__ = (
        "_closing",
        "_held",
        "_high",
        "_session_paused",
        "aborted",
        "chunked",
        "connection",
        "ended",
        "idle_deadline",
        "pending",
        "pending_size",
        "reader",
        "reading_paused",
        "request_ended",
        "request_trailers",
        "session",
        "stream_id",
        "trailers",
        "unacked",
    )

    def __init__(self, connection: StreamConnection, stream_id: int, method: bytes) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.session: StreamSession | None = None
        self.reader = MessageReader(
            self, request=False, max_head=connection.listener.max_head, method=method
        )
        self.pending: list[bytes | memoryview | None] = []  # None: the end of the stream
        self.pending_size = 0
        self.ended = False  # END_STREAM (or RST_STREAM) sent: nothing more goes out
        self.reading_paused = False
        self.idle_deadline = 0.0  # while the request's body is awaited: its idle timeout
        self.request_ended = True  # the client sent all of its request (END_STREAM)
        self.aborted = False  # cut with RST_STREAM
        self.chunked = False  # the request body is sent chunked (no content-length given)
        self.request_trailers: list[tuple[bytes, bytes]] = []
        self.unacked = 0  # request bytes received while paused, acknowledged on resume
        self.trailers: list[tuple[bytes, bytes]] = []  # sent at the end, after what waits
        self._held: bytes | memoryview | None = None  # see message_data
        self._high = 1 << 16
        self._session_paused = False
        self._closing = False

    # ------------------------------------------------------------------ transport interface

    def write(self, data: bytes | memoryview) -> None:
        if self.ended:
            return
        try:
            self.reader.feed(data)
        except HttpError:
            self.abort()
            return
        if self._held is not None:
            self._release_held()
        connection = self.connection
        if connection.write_paused and not self._session_paused:
            self.update_pause()
        connection.flush_output()

    def writelines(self, pieces: Any) -> None:
        if self.ended:
            return
        try:
            for piece in pieces:
                self.reader.feed(piece)
        except HttpError:
            self.abort()
            return
        if self._held is not None:
            self._release_held()
        connection = self.connection
        if connection.write_paused and not self._session_paused:
            self.update_pause()
        connection.flush_output()

    def close(self) -> None:
        """The session is done: the stream ends once what waits is sent (cut short when the
        answer is incomplete)."""
        if self._closing:
            return
        self._closing = True
        if not self.ended and not self.reader.done:
            if self.reader.close():
                pass  # a close-delimited body: complete
            else:
                self.abort()
                return
        if not self.pending:
            self.connection.stream_finished(self)
        self.connection.flush_output()

    def abort(self) -> None:
        """Cut the stream: RST_STREAM, unless it already ended."""
        self._closing = True
        self.aborted = True
        self._held = None
        self.pending.clear()
        self.pending_size = 0
        if not self.ended:
            self.ended = True
            self.connection.reset_stream(self.stream_id)
        self.connection.stream_finished(self)
        self.connection.flush_output()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.unacked:
                unacked, self.unacked = self.unacked, 0
                self.connection.acknowledge(self.stream_id, unacked)
                self.connection.flush_output()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self.connection.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is not None:
            self._high = high

    def get_write_buffer_size(self) -> int:
        return self.pending_size

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:  # pragma: no cover - no tunnel on a stream
        self.abort()

    # ------------------------------------------------------------------ the answer read back

    def message_head(self, head: h1.RequestHead | h1.ResponseHead) -> None:
        assert isinstance(head, h1.ResponseHead)
        fields: list[tuple[bytes, bytes]] = [(b":status", b"%d" % head.status)]
        for name, value in head.headers:
            lower = name.lower()
            if lower in _CONNECTION_FIELDS:
                continue
            if lower == _UNIQUE_FIELD:
                fields.append(NeverIndexedHeaderTuple(lower, value))
                continue
            fields.append((lower, value))
        # an answer without a body ends with its head
        end = head.status >= 200 and self.reader.kind == BODY_NONE
        if end:
            self.ended = True
        self.connection.send_headers(self.stream_id, fields, end)

    def message_data(self, data: bytes | memoryview) -> None:
        # the last piece read is held until the next one, the end of the write, or the end
        # of the answer, so that a body's last DATA frame carries END_STREAM
        held = self._held
        self._held = data
        if held is not None:
            self._emit(held, False)

    def message_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if self.ended:
            return
        self.trailers = [(name.lower(), value) for name, value in trailers]
        held = self._held
        if held is not None:
            self._held = None
            if not self.trailers:
                self._emit(held, True)
                return
            self._emit(held, False)
        if self.pending:
            self.pending.append(None)
            return
        self._end()

    def _release_held(self) -> None:
        """The end of a write: the piece held goes out (more may come with the next)."""
        held = self._held
        if held is not None:
            self._held = None
            self._emit(held, False)

    def _emit(self, data: bytes | memoryview, end: bool) -> None:
        """Send ``data`` (and the end of the stream) as far as the windows allow; the rest
        waits in ``pending``."""
        pending = self.pending
        if not pending:
            sent = self.connection.send_data(self.stream_id, data, end)
            if sent == len(data):
                if end:
                    self.ended = True
                return
            data = memoryview(data)[sent:]
        pending.append(data)
        self.pending_size += len(data)
        if end:
            pending.append(None)
        if self.pending_size > self._high and not self._session_paused:
            self.update_pause()

    def _end(self) -> None:
        self.ended = True
        if self.trailers:
            self.connection.send_headers(self.stream_id, self.trailers, True)
        else:
            self.connection.send_data(self.stream_id, b"", True)

    def flush(self) -> None:
        """Send what waits, as far as the windows allow (they grew)."""
        pending = self.pending
        connection = self.connection
        while pending:
            piece = pending[0]
            if piece is None:
                pending.clear()
                self._end()
                break
            sent = connection.send_data(self.stream_id, piece, False)
            self.pending_size -= sent
            if sent < len(piece):
                pending[0] = memoryview(piece)[sent:]
                break
            pending.pop(0)
        if self._session_paused:
            self.update_pause()
        if not pending and self._closing:
            connection.stream_finished(self)

    def update_pause(self) -> None:
        """Pause the session (its backend is not read) while the answer waits for window
        past the write-buffer limit, or the connection's socket buffer is full; resume it
        when both have room again."""
        session = self.session
        if session is None:
            return
        if self._session_paused:
            if not self.connection.write_paused and self.pending_size <= self._high // 4:
                self._session_paused = False
                session.resume_writing()
        elif self.connection.write_paused or self.pending_size > self._high:
            self._session_paused = True
            session.pause_writing()


class StreamSession(FrontendSession):
    """The HTTP/1.1 session code carrying one HTTP/2 stream (see the module's doc)."""

    __slots__ = ()

    def __init__(self, listener: HttpListener, connection: StreamConnection) -> None:
        super().__init__(listener)
        self.proxy_header = connection.proxy_header
        # h2_max_header_fields, checked on the HEADERS frame already
        self.max_fields = connection.limits.header_fields

    def _learn_peer(self, transport: Any) -> None:
        """The facts of the connection, learnt once by it."""
        connection = transport.connection
        self.peer_ip, self.peer_port = connection.peer
        self.fwd_static = connection.fwd_static
        self.sni_names = connection.sni_names

    def _speaks_h2(self, transport: Any) -> bool:
        return False  # it is HTTP/2 already

    def _register(self) -> None:
        """A stream is not a connection: the H2 connection is counted, and sweeps it."""

    def _unregister(self) -> None:
        pass

    def response_done(self) -> None:
        self.keep_alive = False  # one exchange per stream: its end closes the stream
        super().response_done()

    def soft_stop(self) -> None:
        """The connection sends GOAWAY; this stream finishes its exchange."""

    def _access_entry(self, sample: Sample, message: str) -> AccessEntry:
        entry = super()._access_entry(sample, message)
        entry.protocol = "HTTP2"
        return entry
