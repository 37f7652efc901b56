"""HTTP/1.1 messages read back into their parts, for the HTTP/2 side of a translation.

The proxy's HTTP/1.1 code writes whole messages as bytes: a forwarded request to a backend, an
answer to a client. Where the peer speaks HTTP/2 instead, those bytes go to a
:class:`MessageReader`, which hands their parts to a :class:`MessageSink`: the head (parsed by
:mod:`.h1`), the body as it comes (the chunked coding removed), the trailer fields, the end.
It is sans-I/O and keeps nothing of a body: a piece of body is passed on as soon as it is
read (a view of the bytes written, not a copy, when it is not chunked).

The bytes it reads were written by the proxy itself, from a head :mod:`.h1` checked; a
framing error still raises :class:`~.h1.HttpError`, which ends that one message.
"""

from __future__ import annotations

from typing import Final, Protocol

from . import h1
from .h1 import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, BODY_TUNNEL, HttpError

__all__ = ["MessageReader", "MessageSink"]

_HEAD: Final = 0  # reading a head (or a response's interim heads)
_LENGTH: Final = 1  # Content-Length body: ``remaining`` bytes to come
_CHUNK_SIZE: Final = 2  # a chunk-size line
_CHUNK_DATA: Final = 3  # chunk data: ``remaining`` bytes to come
_CHUNK_END: Final = 4  # the CRLF after chunk data
_TRAILERS: Final = 5  # trailer field lines, then an empty line
_CLOSE: Final = 6  # a body that runs until the writer closes
_DONE: Final = 7  # the message is complete: nothing more is read

_MAX_LINE: Final = 16_384  # chunk-size line or trailer field line


class MessageSink(Protocol):
    """Where a :class:`MessageReader` hands the parts of the message it reads."""

    def message_head(self, head: h1.RequestHead | h1.ResponseHead) -> None:
        """A head (for a response: an interim 1xx head, then the final one)."""

    def message_data(self, data: bytes | memoryview) -> None:
        """A piece of the body (never empty)."""

    def message_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """The message is complete; ``trailers``: its trailer fields (often none)."""


class MessageReader:
    """Reads one HTTP/1.1 message (a request, or a response to ``method``) from the bytes
    fed to it, and hands its parts to ``sink``.

    After the final head, ``kind`` says how the body is framed (:mod:`.h1`'s ``BODY_*``); a
    close-delimited body ends with :meth:`close`. Bytes fed after the end of the message are
    refused (HttpError): one reader reads one message.
    """

    __slots__ = (
        "_line",
        "_state",
        "_trailers",
        "buf",
        "kind",
        "max_head",
        "method",
        "remaining",
        "request",
        "sink",
    )

    def __init__(
        self, sink: MessageSink, *, request: bool, max_head: int, method: bytes = b"GET"
    ) -> None:
        self.sink = sink
        self.request = request
        self.max_head = max_head
        self.method = method  # of the request a response answers (HEAD: no body)
        self.kind = BODY_NONE
        self.remaining = 0
        self.buf = b""  # an incomplete head
        self._state = _HEAD
        self._line = b""  # an incomplete chunk-size or trailer line
        self._trailers: list[tuple[bytes, bytes]] = []

    @property
    def done(self) -> bool:
        """The whole message was read."""
        return self._state == _DONE

    @property
    def head_read(self) -> bool:
        """The final head was read (the body, if any, is being read)."""
        return self._state != _HEAD

    def feed(self, data: bytes | memoryview) -> None:
        """Read ``data``, the next bytes of the message."""
        if not data:
            return
        state = self._state
        if state == _HEAD:
            self._feed_head(bytes(data))
            return
        if state == _LENGTH:
            self._feed_length(data)
            return
        if state == _CLOSE:
            self.sink.message_data(data)
            return
        if state == _DONE:
            raise HttpError(502, "bytes after the end of the message")
        self._feed_chunked(data, 0)

    def close(self) -> bool:
        """The writer is done: True when that completes the message (a close-delimited body,
        or a message already complete), False when it was cut short."""
        if self._state == _CLOSE:
            self._finish()
        return self._state == _DONE

    # ------------------------------------------------------------------ the head

    def _feed_head(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        while True:
            head: h1.RequestHead | h1.ResponseHead | None
            if self.request:
                head = h1.parse_request_head(data, self.max_head)
            else:
                head = h1.parse_response_head(data, self.max_head)
            if head is None:
                self.buf = data
                return
            rest = data[head.length :]
            if (
                isinstance(head, h1.ResponseHead)
                and 100 <= head.status < 200
                and head.status != 101
            ):
                self.sink.message_head(head)  # interim: the final head follows
                if not rest:
                    return
                data = rest
                continue
            self._start_body(head)
            if rest:
                self.feed(rest)
            return

    def _start_body(self, head: h1.RequestHead | h1.ResponseHead) -> None:
        if isinstance(head, h1.ResponseHead):
            kind = h1.response_body_kind(head, self.method)
        else:
            kind = h1.request_body_kind(head)
        if kind == BODY_TUNNEL:
            raise HttpError(502, "a protocol switch cannot be translated")
        self.kind = kind
        self.sink.message_head(head)
        if kind == BODY_NONE:
            self._finish()
        elif kind == BODY_LENGTH:
            self.remaining = head.content_length
            self._state = _LENGTH
        elif kind == BODY_CHUNKED:
            self._state = _CHUNK_SIZE
        else:
            assert kind == BODY_CLOSE
            self._state = _CLOSE

    # ------------------------------------------------------------------ the body

    def _feed_length(self, data: bytes | memoryview) -> None:
        remaining = self.remaining
        size = len(data)
        if size < remaining:
            self.remaining = remaining - size
            self.sink.message_data(data)
            return
        if size > remaining:
            raise HttpError(502, "bytes after the end of the message")
        self.remaining = 0
        self.sink.message_data(data)
        self._finish()

    # Complexity: the chunked grammar (RFC 9112 §7.1) as one state machine.
    def _feed_chunked(self, data: bytes | memoryview, pos: int) -> None:
        end = len(data)
        sink = self.sink
        state = self._state
        while pos < end:
            if state == _CHUNK_DATA:
                take = min(self.remaining, end - pos)
                sink.message_data(data[pos : pos + take] if pos or take < end else data)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    state = _CHUNK_END
                continue
            line, pos = self._take_line(data, pos, end)
            if line is None:
                break
            if state == _CHUNK_END:
                if line:
                    raise HttpError(502, "missing CRLF after chunk data")
                state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                digits = line.split(b";", 1)[0].strip()
                try:
                    size = int(digits, 16)
                except ValueError:
                    raise HttpError(502, "invalid chunk size") from None
                if size:
                    self.remaining = size
                    state = _CHUNK_DATA
                else:
                    state = _TRAILERS
            else:  # _TRAILERS
                if not line:
                    self._state = state
                    if pos < end:
                        raise HttpError(502, "bytes after the end of the message")
                    self._finish()
                    return
                name, _, value = line.partition(b":")
                self._trailers.append((name.strip(), value.strip()))
        self._state = state

    def _take_line(self, data: bytes | memoryview, pos: int, end: int) -> tuple[bytes | None, int]:
        """The next CRLF-ended line without its CRLF and the offset after it; (None, end)
        when the line is not complete yet (kept for the next feed)."""
        chunk = bytes(data[pos:end]) if type(data) is memoryview else data
        start = 0 if type(data) is memoryview else pos
        newline = chunk.find(b"\n", start)
        if newline < 0:
            self._line += chunk[start:]
            if len(self._line) > _MAX_LINE:
                raise HttpError(502, "chunk-size or trailer line too long")
            return None, end
        line = self._line + chunk[start:newline]
        self._line = b""
        consumed = newline + 1 - start
        return line.rstrip(b"\r"), pos + consumed

    def _finish(self) -> None:
        self._state = _DONE
        trailers, self._trailers = self._trailers, []
        self.sink.message_end(trailers)
