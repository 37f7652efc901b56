"""One request to an h2c backend: an HTTP/2 stream that looks like a backend connection.

An :class:`H2BackendStream` is a :class:`~.backend.BackendConnection` (the contract the
HTTP/1.1 session code uses) carried by a stream of an :class:`~.h2_backend.H2BackendConnection`,
so that the client side does not change:

* the forwarded HTTP/1.1 request the session writes (head, then body bytes) is read back by a
  :class:`~.h1_decode.MessageReader` into a HEADERS frame (:func:`request_fields`), DATA frames
  (the chunked coding removed) and trailers; body bytes are sent within the backend's
  flow-control windows, and past the write-buffer limit the client is no longer read;
* the HTTP/2 answer is turned back into the HTTP/1.1 bytes it stands for
  (:func:`response_head`: content-length kept, chunked otherwise so that trailers pass) and
  fed to the inherited response reader, so answers, HSTS, header edits, access logs and metrics
  are the very code HTTP/1.1 backends go through. Response DATA is acknowledged (window given
  back) only while the client takes the bytes: when it stops, the session pauses this
  "transport" and the backend's window closes, which bounds the memory of a stream.

A stream carries one request: when its answer is complete it ends, and the slot it held on its
connection is free again (see :meth:`H2BackendStream.release_or_close`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, Protocol

from hpack import NeverIndexedHeaderTuple

from . import h1
from .backend import BackendConnection, BackendServices, Client, ConnectionPool
from .h1 import BODY_NONE, HttpError
from .h1_decode import MessageReader

if TYPE_CHECKING:
    from .balancing import Backend

__all__ = ["H2BackendStream", "StreamCarrier", "request_fields", "response_head"]

# Fields that do not cross from HTTP/1.1 to HTTP/2 (RFC 9113 §8.2.2); TE is kept only as
# ``trailers``, its one value allowed there.
_CONNECTION_FIELDS: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_MAX_FORWARDED_HEAD: Final = 1 << 20  # the session checked the head against its own limit
# HTTP/2 has no reason phrase: the registered one is given (clients such as h2load read a
# status line without one as no status at all)
_STATUS_LINES: Final = {
    b"%d" % status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
ACK_STEP: Final = 1 << 15  # response bytes taken by the client before WINDOW_UPDATE says so


class StreamCarrier(Protocol):
    """What a stream needs of its connection (:class:`.h2_backend.H2BackendConnection`)."""

    write_paused: bool

    def open_stream(
        self, stream: H2BackendStream, fields: list[tuple[bytes, bytes]], end: bool
    ) -> int: ...

    def send_data(self, stream_id: int, data: bytes | memoryview) -> int: ...

    def end_stream(self, stream_id: int, trailers: list[tuple[bytes, bytes]]) -> None: ...

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Give ``size`` bytes of window back to the stream (not to the connection)."""

    def cancel(self, stream_id: int) -> None: ...

    def stream_done(self, stream: H2BackendStream) -> None: ...

    def later(self, callback: Any, *args: Any) -> None: ...

    def flush_output(self) -> None: ...


def request_fields(
    head: h1.RequestHead, te_trailers: bool = False, request_id: bytes = b""
) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 header list of a forwarded HTTP/1.1 request head: pseudo-fields first
    (``Host`` becomes ``:authority``), names lowercased, connection-specific fields dropped,
    cookies joined into one field. ``TE`` is hop-by-hop (the forwarded head has none): the
    client's ``TE: trailers`` (``te_trailers``) is said again, the one value HTTP/2 allows.
    The fields whose value is ``request_id`` (new in every request) are never indexed, so
    that the HPACK table keeps what repeats."""
    fields: list[tuple[bytes, bytes]] = [
        (b":method", head.method),
        (b":scheme", b"http"),
        (b":authority", head.host),
        (b":path", head.target),
    ]
    if te_trailers:
        fields.append((b"te", b"trailers"))
    cookies: list[bytes] = []
    for name, value in head.headers:
        lower = name.lower()
        if lower in _CONNECTION_FIELDS or lower in {b"host", b"te"}:
            continue
        if lower == b"cookie":
            cookies.append(value)
            continue
        if value == request_id:
            fields.append(NeverIndexedHeaderTuple(lower, value))
        else:
            fields.append((lower, value))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    return fields


def response_head(
    fields: list[tuple[bytes, bytes]], method: bytes, ended: bool
) -> tuple[bytes, bool]:
    """(the HTTP/1.1 head an HTTP/2 response header list stands for, whether its body is sent
    chunked). ``ended``: the HEADERS frame ended the stream.

    A ``content-length`` is kept (the body passes as it comes) unless trailers are announced
    (``trailer``): then, as without a length, the body is chunked so that trailers can follow.
    An answer that cannot have a body (1xx, 204, 304, to HEAD) is passed as is."""
    status = b""
    lines: list[bytes] = []
    length = False
    announced = False
    for name, value in fields:
        if name[:1] == b":":
            if name == b":status":
                status = value
            continue
        if name == b"content-length":
            length = True
        elif name == b"trailer":
            announced = True
        lines += (name, b": ", value, b"\r\n")
    code = int(status) if status.isdigit() else 0
    bodiless = code < 200 or code in _NO_BODY_STATUSES or method == b"HEAD"
    chunked = False
    if not bodiless:
        if ended:
            if not length:
                lines.append(b"content-length: 0\r\n")
        elif announced or not length:
            chunked = True
            lines = _without_length(lines)
            lines.append(b"transfer-encoding: chunked\r\n")
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 " + status + b" \r\n"
    return b"".join((line, *lines, b"\r\n")), chunked


def _without_length(lines: list[bytes]) -> list[bytes]:
    """``lines`` (name, ": ", value, CRLF, …) without their content-length field."""
    kept: list[bytes] = []
    for index in range(0, len(lines), 4):
        if lines[index] != b"content-length":
            kept += lines[index : index + 4]
    return kept


def _asks_trailers(session: Client) -> bool:
    """The client's request said ``TE: trailers``."""
    head = session.exchange.head
    if head is None:  # taken by the fast path: a plain head
        return False
    for name, value in head.headers:
        if len(name) == 2 and name.lower() == b"te":
            return b"trailers" in value.lower()
    return False


def trailer_block(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The last chunk of a chunked body, with ``trailers``."""
    return b"".join((b"0\r\n", *(n + b": " + v + b"\r\n" for n, v in trailers), b"\r\n"))


class H2BackendStream(BackendConnection):
    """A request to an h2c backend on one stream (see the module's doc). It is its own
    ``transport``: the session writes the request body to it and pauses it (response DATA
    is then not acknowledged)."""

    __slots__ = (
        "ack_paused",
        "carrier",
        "chunked_answer",
        "out",
        "out_size",
        "reader",
        "request_ended",
        "stream_id",
        "trailers",
        "unacked",
    )

    def __init__(
        self,
        services: BackendServices,
        pool: ConnectionPool,
        backend: Backend,
        carrier: StreamCarrier,
    ) -> None:
        super().__init__(services, pool, backend)
        self.carrier = carrier
        self.transport = self
        self.reused = True  # the connection is shared: a refused stream may be retried
        self.stream_id = 0
        self.reader: MessageReader | None = None
        # request body bytes waiting for window; None: the end (then ``trailers``)
        self.out: list[bytes | memoryview | None] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.out_size = 0
        self.request_ended = False  # END_STREAM sent (with the head, the body or trailers)
        self.chunked_answer = False
        self.ack_paused = False
        self.unacked = 0  # response bytes read and not acknowledged yet (while paused, or few)

    # ------------------------------------------------------------------ the request

    def send_request(self, request: bytes, session: Client) -> None:
        self.session = session
        self.buf = b""
        self.head_done = False
        self.received = False
        self.interim = 0
        self.reader = MessageReader(
            self, request=True, max_head=_MAX_FORWARDED_HEAD, method=session.exchange.method
        )
        session.exchange.back_out += len(request)
        if self.closed:  # the connection went away since this slot was given: another one
            self.carrier.later(self.reset, True, "the backend connection closed")
            return
        self.write(request)

    def write(self, data: bytes | memoryview) -> None:
        """Bytes of the forwarded request (the head, then the body)."""
        reader = self.reader
        if reader is None or self.closed:
            return
        try:
            reader.feed(data)
        except HttpError as error:
            self.fail_later(502, error.reason)
            return
        self.carrier.flush_output()

    def writelines(self, pieces: Any) -> None:
        for piece in pieces:
            self.write(piece)

    def message_head(self, head: h1.RequestHead | h1.ResponseHead) -> None:
        assert isinstance(head, h1.RequestHead)
        if head.upgrade is not None:
            raise HttpError(502, "a protocol upgrade cannot be carried to an HTTP/2 backend")
        assert self.reader is not None
        end = self.reader.kind == BODY_NONE
        session = self.session
        assert session is not None
        fields = request_fields(head, _asks_trailers(session), session.exchange.request_id)
        self.stream_id = self.carrier.open_stream(self, fields, end)
        if not self.stream_id:  # no stream can be opened there any more: another connection
            self.carrier.later(self.reset, True, "the backend connection takes no new stream")
            return
        if end:
            self.request_ended = True
        self.services.metrics.h2_backend_streams += 1

    def message_data(self, data: bytes | memoryview) -> None:
        if not self.stream_id:  # not opened: the request goes elsewhere (see message_head)
            return
        if self.out or self.carrier.write_paused:
            self._queue(data)
            return
        sent = self.carrier.send_data(self.stream_id, data)
        if sent < len(data):
            self._queue(memoryview(data)[sent:] if sent else data)

    def message_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if self.request_ended or not self.stream_id:
            return
        self.trailers = [(name.lower(), value) for name, value in trailers]
        self.out.append(None)  # the end waits behind the body
        if len(self.out) == 1:
            self.flush()

    def _queue(self, data: bytes | memoryview) -> None:
        self.out.append(data)
        self.out_size += len(data)
        if self.out_size > self.services.write_buffer_limit:
            self.pause_writing()  # the client is not read until the backend takes it

    def flush(self) -> None:
        """Send the request bytes that wait, as far as the windows allow (they grew)."""
        out = self.out
        carrier = self.carrier
        while out and not carrier.write_paused:
            piece = out[0]
            if piece is None:  # the end of the request
                out.clear()
                self.out_size = 0
                self.request_ended = True
                carrier.end_stream(self.stream_id, self.trailers)
                break
            sent = carrier.send_data(self.stream_id, piece)
            self.out_size -= sent
            if sent < len(piece):
                out[0] = memoryview(piece)[sent:]
                break
            out.pop(0)
        if self._client_paused and self.out_size <= self.services.write_buffer_limit // 4:
            self.resume_writing()

    # ------------------------------------------------------------------ transport interface

    def pause_reading(self) -> None:
        self.ack_paused = True

    def resume_reading(self) -> None:
        if self.ack_paused:
            self.ack_paused = False
            if self.unacked and not self.closed:
                unacked, self.unacked = self.unacked, 0
                self.carrier.acknowledge(self.stream_id, unacked)
                self.carrier.flush_output()

    def get_write_buffer_size(self) -> int:
        return self.out_size

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:  # pragma: no cover - no tunnel to an HTTP/2 backend
        self.close()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    # ------------------------------------------------------------------ the answer

    def answer_head(self, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        """The answer's HEADERS (an interim 1xx one, or the final one)."""
        session = self.session
        if session is None:
            return
        head, chunked = response_head(fields, session.exchange.method, ended)
        self.chunked_answer = chunked
        if ended and chunked:
            head += b"0\r\n\r\n"
        self.data_received(head)

    def answer_data(self, data: bytes, size: int) -> None:
        """A DATA frame of the answer; ``size``: what it took of the window."""
        if self.session is not None:
            if not data:
                pass
            elif self.chunked_answer:
                self.data_received(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self.data_received(data)
        # the stream's window is given back in steps, and only while the client takes the
        # bytes (the connection's is given back at once, see H2BackendConnection)
        unacked = self.unacked + size
        if self.ack_paused or self.closed or unacked < ACK_STEP:
            self.unacked = unacked
        else:
            self.unacked = 0
            self.carrier.acknowledge(self.stream_id, unacked)

    def answer_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        if self.session is not None and self.chunked_answer:
            self.data_received(trailer_block(fields))

    def answer_ended(self) -> None:
        """END_STREAM from the backend: a chunked answer ends (when no trailers did)."""
        if self.session is None:
            return
        if self.chunked_answer and self.head_done:
            self.data_received(b"0\r\n\r\n")
        if self.session is not None:  # the answer is shorter than it said
            self.reset(False, "the backend ended the stream before the answer was complete")

    # ------------------------------------------------------------------ the end

    def release_or_close(self, reusable: bool) -> None:
        """The answer is complete (or given up): the stream ends and frees its slot."""
        self.session = None
        if not self.closed:
            self.closed = True
            if self.stream_id and not self.request_ended:
                self.carrier.cancel(self.stream_id)  # an answer came before the whole request
            self.unacked = 0  # (the stream ends: its window does not matter any more)
            self.carrier.stream_done(self)
            self.carrier.flush_output()

    def close(self) -> None:
        """Give the request up (the client went away, or was answered directly)."""
        if self.session is not None:
            self.backend.active_requests -= 1
            self.session = None
        self.release_or_close(False)

    def abandon(self) -> None:
        """Give the request up: the client went away, or was answered directly."""
        self.close()

    def fail_later(self, status: int, reason: str) -> None:
        """Fail the request on the next turn of the loop: the session is in the middle of
        handing it over."""
        self.carrier.later(self._fail, status, reason)

    def _fail(self, status: int, reason: str) -> None:
        session = self.session
        if session is None:
            return
        self.session = None
        self.backend.active_requests -= 1
        self.release_or_close(False)
        session.response_failed(status, reason)

    def reset(self, refused: bool, reason: str) -> None:
        """The backend reset the stream, or the connection is gone; ``refused``: the backend
        did not process the request (REFUSED_STREAM, or above a GOAWAY's last stream id), so
        it may be sent again on another connection."""
        session = self.session
        if session is None:
            self.release_or_close(False)
            return
        self.session = None
        self.backend.active_requests -= 1
        self.release_or_close(False)
        if not self.head_done:
            if refused and not self.received and session.retry_after_reset(self):
                return
            session.response_failed(502, reason)
            return
        session.backend = None
        session.abort()  # the answer was cut short
