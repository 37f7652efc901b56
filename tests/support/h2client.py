"""A raw HTTP/2 client for end-to-end tests: real TLS (ALPN ``h2``), frames built and read
with the ``h2`` package's own layers (``hyperframe`` for framing, ``hpack`` for header blocks).

It keeps no protocol state machine of its own, so it sends exactly what a test asks for,
well-formed or not: :meth:`H2Client.request` builds a proper HEADERS (+ DATA) exchange,
:meth:`H2Client.send_frame` any frame object and :meth:`H2Client.send_raw` any bytes (a frame
the library would refuse to build: a reserved bit, a wrong length, an unknown type).

What the server sends is read frame by frame (:meth:`H2Client.read_until`, always within a
deadline): SETTINGS and PING are acknowledged, DATA is credited back with WINDOW_UPDATE (so
that large answers flow; ``credit=False`` leaves that to the test), and everything is
recorded: each stream's status, headers, body, trailers and RST_STREAM code, the GOAWAY
received and whether the server closed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from support.clients import tls_client_context

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_TIMEOUT = 5.0

# RFC 9113 §7 error codes, by name, for readable assertions
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

Headers = Sequence[tuple[str | bytes, str | bytes]]


def frame_bytes(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One frame as raw bytes: 24-bit length, type, flags, 32-bit stream id (the reserved bit
    included as given), payload."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


def _bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


@dataclass
class StreamState:
    """What the server sent on one stream."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int | None:
        for name, value in self.headers:
            if name == b":status":
                return int(value)
        return None

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        values = [v.decode("latin-1") for n, v in self.headers if n == key]
        return ", ".join(values) if values else None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection over TLS to 127.0.0.1:``port`` (see the module's doc)."""

    def __init__(
        self,
        port: int,
        server_name: str = "app.example",
        *,
        settings: dict[int, int] | None = None,
        preface: bool = True,
        connect_timeout: float = DEFAULT_TIMEOUT,
        window: int = 16 * 1024 * 1024,
        credit: bool = True,
        proxy_header: bytes = b"",
    ) -> None:
        context = tls_client_context(alpn=["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
        try:
            if proxy_header:  # a PROXY protocol header before the TLS handshake
                raw.sendall(proxy_header)
            self.sock = context.wrap_socket(raw, server_hostname=server_name)
        except Exception:
            raw.close()
            raise
        self.alpn = self.sock.selected_alpn_protocol()
        self.local_port: int = self.sock.getsockname()[1]
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.streams: dict[int, StreamState] = {}
        self.frames: list[Frame] = []  # every frame received, in order
        self.frame_headers: list[bytes] = []  # their 9-byte headers as sent (reserved bit too)
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self.server_settings: dict[int, int] = {}
        self.next_stream_id = 1
        self.credit = credit  # DATA received is credited back with WINDOW_UPDATE
        self._uncredited: dict[int, int] = {}  # by stream id (0: the connection)
        self.stream_window = 65_535  # SETTINGS_INITIAL_WINDOW_SIZE the client sent
        self._buffer = b""
        self._block: tuple[int, bytearray, bool] | None = None  # header block in progress
        if preface:
            self.send_raw(PREFACE)
            self.send_frame(SettingsFrame(0, settings=settings or {}))
            if window > 65_535:  # the connection's window, so that big answers are not held
                self.send_frame(WindowUpdateFrame(0, window_increment=window - 65_535))

    # ---------------------------------------------------------------- sending

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            self.closed = True

    def send_frame(self, *frames: Frame) -> None:
        for frame in frames:  # the stream window the client grants, for :meth:`_credit`
            if isinstance(frame, SettingsFrame) and 0x4 in frame.settings:
                self.stream_window = frame.settings[0x4]
        self.send_raw(b"".join(frame.serialize() for frame in frames))

    def header_block(self, headers: Headers) -> bytes:
        return bytes(self.encoder.encode([(_bytes(n), _bytes(v)) for n, v in headers]))

    def new_stream_id(self) -> int:
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        return stream_id

    def send_headers(
        self, stream_id: int, headers: Headers, *, end_stream: bool = True, padding: int = 0
    ) -> None:
        frame = HeadersFrame(stream_id, self.header_block(headers))
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        if padding:
            frame.flags.add("PADDED")
            frame.pad_length = padding
        self.send_frame(frame)

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = True) -> None:
        """``data`` in DATA frames of at most 16 KiB (the client waits for no window: keep
        bodies under 64 KiB, the initial window)."""
        pieces = [data[i : i + 16_384] for i in range(0, len(data), 16_384)] or [b""]
        frames = []
        for index, piece in enumerate(pieces):
            frame = DataFrame(stream_id, piece)
            if end_stream and index == len(pieces) - 1:
                frame.flags.add("END_STREAM")
            frames.append(frame)
        self.send_frame(*frames)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        authority: str = "app.example",
        scheme: str = "https",
        headers: Headers = (),
        body: bytes | None = None,
        stream_id: int | None = None,
    ) -> int:
        """Send a request (a body in DATA frames when given); its stream id."""
        stream_id = self.new_stream_id() if stream_id is None else stream_id
        fields: list[tuple[str | bytes, str | bytes]] = [
            (":method", method),
            (":scheme", scheme),
            (":authority", authority),
            (":path", path),
            *headers,
        ]
        self.send_headers(stream_id, fields, end_stream=body is None)
        if body is not None:
            self.send_data(stream_id, body)
        return stream_id

    def rst(self, stream_id: int, code: int = CANCEL) -> None:
        self.send_frame(RstStreamFrame(stream_id, error_code=code))

    # ---------------------------------------------------------------- reading

    def stream(self, stream_id: int) -> StreamState:
        return self.streams.setdefault(stream_id, StreamState())

    def _read_once(self, deadline: float) -> bool:
        """Read what comes within ``deadline`` (one socket read); False when closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.closed:
            return not self.closed
        self.sock.settimeout(min(remaining, 0.5))
        try:
            data = self.sock.recv(1 << 16)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        except (OSError, ssl.SSLError):
            data = b""
        if not data:  # closed by the server: closed here too, as a client does
            self.close()
            return False
        self._buffer += data
        self._parse()
        return True

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
            self.frame_headers.append(self._buffer[:9])
            self._buffer = self._buffer[9 + length :]
            self.frames.append(frame)
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.server_settings.update(frame.settings)
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                self.send_frame(ack)
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags:
                pong = PingFrame(0, opaque_data=frame.opaque_data)
                pong.flags.add("ACK")
                self.send_frame(pong)
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset = frame.error_code
        elif isinstance(frame, DataFrame):
            state = self.stream(frame.stream_id)
            state.body += frame.data
            if "END_STREAM" in frame.flags:
                state.ended = True
            if frame.flow_controlled_length and self.credit:
                self._credit(frame.stream_id, frame.flow_controlled_length, state.ended)
        elif isinstance(frame, HeadersFrame):
            self._block = (frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags)
            if "END_HEADERS" in frame.flags:
                self._end_block()
        elif isinstance(frame, ContinuationFrame) and self._block is not None:
            self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block()

    def _credit(self, stream_id: int, size: int, ended: bool) -> None:
        """Give window back as a browser does: in batches (half the stream's window,
        1 MiB of the connection's), not a WINDOW_UPDATE per DATA frame (which the proxy
        counts as a flood past 100 a second)."""
        self._uncredited[0] = self._uncredited.get(0, 0) + size
        updates = []
        if self._uncredited[0] >= 1 << 20:
            updates.append(WindowUpdateFrame(0, window_increment=self._uncredited.pop(0)))
        if not ended:
            self._uncredited[stream_id] = self._uncredited.get(stream_id, 0) + size
            if self._uncredited[stream_id] >= self.stream_window // 2:
                increment = self._uncredited.pop(stream_id)
                updates.append(WindowUpdateFrame(stream_id, window_increment=increment))
        if updates:
            self.send_frame(*updates)

    def _end_block(self) -> None:
        assert self._block is not None
        stream_id, block, ended = self._block
        self._block = None
        fields = [(bytes(n), bytes(v)) for n, v in self.decoder.decode(bytes(block), raw=True)]
        state = self.stream(stream_id)
        status = next((v for n, v in fields if n == b":status"), None)
        if status is None:
            state.trailers = fields
        elif status.startswith(b"1"):
            state.informational.append(fields)
        else:
            state.headers = fields
        if ended:
            state.ended = True

    def read_until(self, predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Read until ``predicate()`` holds (True), the connection closes or ``timeout``
        passes (then whether ``predicate()`` holds)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline or not self._read_once(deadline):
                return bool(predicate())
        return True

    def response(self, stream_id: int, timeout: float = DEFAULT_TIMEOUT) -> StreamState:
        """The stream once it ended or was reset (AssertionError when neither came)."""
        state = self.stream(stream_id)
        if not self.read_until(lambda: state.done, timeout):
            raise AssertionError(
                f"stream {stream_id}: no end within {timeout}s (closed={self.closed}, "
                f"goaway={self.goaway_code}, frames={[type(f).__name__ for f in self.frames]})"
            )
        return state

    def get(self, path: str = "/", timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> StreamState:
        return self.response(self.request(path, **kwargs), timeout)

    def outcome(self, stream_id: int, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, int | None]:
        """How the server dealt with ``stream_id``: ``("status", <status>)`` when answered,
        ``("reset", <code>)`` for RST_STREAM, ``("goaway", <code>)`` when the connection
        ended, ``("closed", None)`` when it closed without GOAWAY, ``("nothing", None)``."""
        state = self.stream(stream_id)
        self.read_until(lambda: state.done or self.goaway is not None or self.closed, timeout)
        if state.reset is not None:
            return ("reset", state.reset)
        if state.status is not None and state.done:
            return ("status", state.status)
        if self.goaway is not None:
            return ("goaway", self.goaway_code)
        return ("closed", None) if self.closed else ("nothing", None)

    @property
    def goaway_code(self) -> int | None:
        return None if self.goaway is None else int(self.goaway.error_code)

    def wait_goaway(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """The error code of the GOAWAY the server sends within ``timeout`` (None if none)."""
        self.read_until(lambda: self.goaway is not None, timeout)
        return self.goaway_code

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Whether the server closed the connection within ``timeout`` (what comes is read)."""
        return self.read_until(lambda: self.closed, timeout)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unknown_frame(kind: int, stream_id: int, payload: bytes) -> ExtensionFrame:
    """A frame of a type RFC 9113 does not define (§5.5: the receiver ignores it)."""
    frame = ExtensionFrame(kind, stream_id)
    frame.body = payload
    return frame


def headers_of(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {n.decode("latin-1"): v.decode("latin-1") for n, v in fields}
