"""The protections of an HTTP/2 connection: sōzu's ``h2_*`` listener settings, and the
counts that enforce them.

A :class:`Guard` watches one client connection. It walks the frame headers of the bytes read
(nine bytes each, before the ``h2`` library handles them) and counts, over the current second,
the frames that floods are made of: RST_STREAM (rapid reset, CVE-2023-44487), SETTINGS, PING,
empty DATA without END_STREAM, WINDOW_UPDATE on the connection, and the CONTINUATION frames
of one header block (CVE-2024-27316). Over the connection's life it counts the RST_STREAM
received, those that cancel a stream before its answer began, those the proxy sent, and the
client's stream-level faults ("glitches"; a WINDOW_UPDATE on a closed stream is one). Each
count past its limit names the flood; the connection then ends with
GOAWAY(ENHANCE_YOUR_CALM). A SETTINGS or PING frame of the wrong size is found on the way
(GOAWAY(FRAME_SIZE_ERROR), RFC 9113 §6.5, §6.7), which the library would report as a mere
protocol error, and so is a SETTINGS frame of more than 64 entries (sōzu's cap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["ENHANCE_YOUR_CALM", "FRAME_SIZE_ERROR", "Guard", "H2Limits"]

_PREFACE_LENGTH: Final = 24
# frame types (RFC 9113 §6)
_DATA: Final = 0x0
_HEADERS: Final = 0x1
_RST_STREAM: Final = 0x3
_SETTINGS: Final = 0x4
_PING: Final = 0x6
_WINDOW_UPDATE: Final = 0x8
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_ACK: Final = 0x1
ENHANCE_YOUR_CALM: Final = 0xB
FRAME_SIZE_ERROR: Final = 0x6
_MAX_SETTINGS_ENTRIES: Final = 64  # sōzu's cap on the entries of one SETTINGS frame


class H2Limits:
    """The HTTP/2 settings of a listener (sōzu's ``h2_*`` keys, with sōzu's defaults), read
    when a connection starts: a live change applies to the next connections."""

    __slots__ = (
        "abusive_resets",
        "concurrent_streams",
        "continuation_frames",
        "emitted_resets",
        "empty_data_per_second",
        "glitches",
        "graceful_deadline",
        "header_fields",
        "header_list_size",
        "header_table_size",
        "initial_connection_window",
        "ping_per_second",
        "rst_lifetime",
        "rst_per_second",
        "settings_per_second",
        "stream_idle_timeout",
        "window_update_per_second",
    )

    def __init__(self, config: Any) -> None:
        def knob(name: str, default: int) -> int:
            value = getattr(config, name, None)
            return default if value is None else int(value)

        self.concurrent_streams = knob("h2_max_concurrent_streams", 100)
        self.rst_per_second = knob("h2_max_rst_stream_per_window", 100)
        self.ping_per_second = knob("h2_max_ping_per_window", 100)
        self.settings_per_second = knob("h2_max_settings_per_window", 50)
        self.empty_data_per_second = knob("h2_max_empty_data_per_window", 100)
        self.window_update_per_second = knob("h2_max_window_update_stream0_per_window", 100)
        self.continuation_frames = knob("h2_max_continuation_frames", 20)
        self.initial_connection_window = knob("h2_initial_connection_window", 1_048_576)
        self.header_list_size = knob("h2_max_header_list_size", 65_536)
        self.header_table_size = knob("h2_max_header_table_size", 65_536)
        self.header_fields = knob("h2_max_header_fields", 128)
        self.stream_idle_timeout = float(knob("h2_stream_idle_timeout_seconds", 30))
        self.graceful_deadline = float(knob("h2_graceful_shutdown_deadline_seconds", 5))
        # over the connection's life: RST_STREAM received, received for a stream not answered
        # yet (the rapid-reset pattern), sent by the proxy, and stream-level faults
        self.rst_lifetime = knob("h2_max_rst_stream_lifetime", 10_000)
        self.abusive_resets = knob("h2_max_rst_stream_abusive_lifetime", 50)
        self.emitted_resets = knob("h2_max_rst_stream_emitted_lifetime", 500)
        self.glitches = knob("h2_max_glitch_count", 100)


class Guard:
    """The counts of one connection (see the module's doc). Each method returns the flood
    found, or ""; ``code`` is then the error code of the GOAWAY it calls for."""

    __slots__ = (
        "_abusive_resets",
        "_continuations",
        "_emitted_resets",
        "_empty_data",
        "_glitches",
        "_header",
        "_pings",
        "_resets",
        "_resets_total",
        "_settings",
        "_skip",
        "_start",
        "_window_updates",
        "closed",
        "code",
        "limits",
    )

    def __init__(self, limits: H2Limits, closed: Callable[[int], bool] | None = None) -> None:
        self.limits = limits
        self.closed = closed  # whether a stream id names a stream that was closed
        self.code = ENHANCE_YOUR_CALM
        self._start = 0.0  # the current second
        self._resets = self._pings = self._settings = self._empty_data = 0
        self._window_updates = 0
        self._continuations = 0  # CONTINUATION frames of the header block in progress
        self._resets_total = self._abusive_resets = self._emitted_resets = self._glitches = 0
        self._skip = _PREFACE_LENGTH  # bytes until the next frame header
        self._header = b""  # a frame header split between reads

    # Complexity: per-read hot path: the frame headers walked in one loop.
    def frames(self, data: bytes, now: float) -> str:  # noqa: C901, PLR0911, PLR0912
        """Count the frames whose header is in ``data`` (the next bytes read)."""
        limits = self.limits
        if now - self._start >= 1.0:
            self._start = now
            self._resets = self._pings = self._settings = self._empty_data = 0
            self._window_updates = 0
        pos = 0
        end = len(data)
        while pos < end:
            skip = self._skip
            if skip:
                if end - pos <= skip:
                    self._skip = skip - (end - pos)
                    return ""
                pos += skip
                self._skip = 0
            held = self._header
            need = 9 - len(held)
            if end - pos < need:
                self._header = held + data[pos:end]
                return ""
            header = held + data[pos : pos + need] if held else data[pos : pos + 9]
            self._header = b""
            pos += need
            self._skip = int.from_bytes(header[:3], "big")
            kind = header[3]
            flags = header[4]
            if kind == _DATA:
                if self._skip == 0 and not flags & _END_STREAM:
                    self._empty_data += 1
                    if self._empty_data > limits.empty_data_per_second:
                        return "empty DATA flood"
            elif kind == _HEADERS:
                self._continuations = 0
            elif kind == _CONTINUATION:
                self._continuations += 1
                if self._continuations > limits.continuation_frames:
                    return "CONTINUATION flood"
            elif kind == _RST_STREAM:
                self._resets += 1
                self._resets_total += 1
                if self._resets > limits.rst_per_second:
                    return "RST_STREAM flood (rapid reset)"
                if self._resets_total > limits.rst_lifetime:
                    return "too many RST_STREAM over the connection's life"
            elif kind == _SETTINGS:
                if self._skip if flags & _ACK else self._skip % 6:
                    self.code = FRAME_SIZE_ERROR
                    return "SETTINGS frame of a wrong size"
                if self._skip > 6 * _MAX_SETTINGS_ENTRIES:
                    self.code = FRAME_SIZE_ERROR
                    return "SETTINGS frame of too many entries"
                if not flags & _ACK:
                    self._settings += 1
                    if self._settings > limits.settings_per_second:
                        return "SETTINGS flood"
            elif kind == _PING:
                if self._skip != 8:
                    self.code = FRAME_SIZE_ERROR
                    return "PING frame of a wrong size"
                if not flags & _ACK:
                    self._pings += 1
                    if self._pings > limits.ping_per_second:
                        return "PING flood"
            elif kind == _WINDOW_UPDATE:
                flood = self._window_update(int.from_bytes(header[5:9], "big") & 0x7FFF_FFFF)
                if flood:
                    return flood
        return ""

    def _window_update(self, stream_id: int) -> str:
        """A WINDOW_UPDATE: counted on the connection, a glitch on a closed stream."""
        if not stream_id:
            self._window_updates += 1
            if self._window_updates > self.limits.window_update_per_second:
                return "WINDOW_UPDATE flood"
        elif self.closed is not None and self.closed(stream_id):
            return self.glitch()
        return ""

    def reset_unanswered(self) -> str:
        """The client reset a stream before its answer began."""
        self._abusive_resets += 1
        if self._abusive_resets > self.limits.abusive_resets:
            return "too many streams reset before their answer"
        return ""

    def reset_sent(self) -> str:
        """The proxy reset a stream."""
        self._emitted_resets += 1
        if self._emitted_resets > self.limits.emitted_resets:
            return "too many streams reset by the proxy"
        return ""

    def glitch(self) -> str:
        """A stream-level fault of the client (a refused or malformed stream)."""
        self._glitches += 1
        if self._glitches > self.limits.glitches:
            return "too many faulty streams"
        return ""
