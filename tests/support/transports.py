"""A transport standing for a client's socket, for tests that drive a session's Protocol
directly (without a socket on the client side)."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientTransport"]


class ClientTransport:
    """The client side of a session: what the session writes, whether it closed and whether
    it reads."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.paused_once = False
        # a socket buffer that fills: past ``high_water`` bytes written, ``protocol`` is told
        # to stop writing (as a real transport does), once
        self.high_water: int | None = None
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written += data
        if self.high_water is not None and len(self.written) > self.high_water:
            self.high_water = None
            assert self.protocol is not None
            self.protocol.pause_writing()

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.written += part

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str) -> Any:
        return ("10.1.2.3", 4567) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False
        self.paused_once = True

    def resume_reading(self) -> None:
        self.reading = True
