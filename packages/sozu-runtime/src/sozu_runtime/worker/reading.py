"""Reads sized by what the other side can take: the bound on a connection's memory.

The event loop reads up to 256 KiB at a time from a socket. Flow control stops reading a side
once the other side's write buffer passes its high-water mark (4 x ``buffer_size``), but the
read that crossed the mark is written whole, and a write buffer keeps a read's bytes until the
last of them is sent: with plain reads, a client that stops reading costs a worker one big read
on top of the mark (about 300 KiB), not the mark. The backend sides of HTTP and TCP connections
therefore read into a buffer of their worker (:class:`ReadBuffers`): at most the high-water
mark while the client keeps up, at most ``buffer_size`` bytes once the client lags, so that a
stalled client costs at most about twice the mark. The bytes are copied out at once (as the
event loop itself does for plain reads), so one buffer serves every connection of the worker.
"""

from __future__ import annotations

__all__ = ["ReadBuffers"]


class ReadBuffers:
    """The worker's read buffer: ``large`` (``large_size`` bytes) and ``small`` (``small_size``)
    are views on the same memory, so a read into either is taken back with ``take(nbytes)``."""

    __slots__ = ("_whole", "large", "small")

    def __init__(self, large_size: int, small_size: int) -> None:
        self._whole = memoryview(bytearray(max(large_size, small_size)))
        self.large = self._whole[:large_size]
        self.small = self._whole[:small_size]

    def take(self, nbytes: int) -> bytes:
        """The ``nbytes`` just read, as bytes of their own (the buffer is reused next read)."""
        return self._whole[:nbytes].tobytes()
