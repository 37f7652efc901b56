"""The channel between the main process and a worker: JSON lines plus file descriptors.

One ``AF_UNIX``/``SOCK_STREAM`` socket pair per worker. Messages are JSON lines (the same
envelopes as the command socket). A message may carry listening sockets: they travel as
``SCM_RIGHTS`` ancillary data sent with the first bytes of the line, so they are always received
before the line is complete; the receiver keeps them in arrival order and the message says how
many it carries (``"fds": n``).

Sans-blocking: writes are queued and flushed when the socket is writable; reads are driven by
``loop.add_reader``. Both sides use this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable

from sozu_config.protocol import LineReader

__all__ = ["Channel", "ChannelClosed"]

_MAX_FDS = 64  # per recvmsg; a message never carries more than a few listening sockets


class ChannelClosed(ConnectionError):
    """The peer closed the channel."""


class Channel:
    """One end of a main↔worker channel.

    ``on_line(line)`` is called for each complete line; a message that announces descriptors
    takes them with :meth:`take_fds` (the sender attaches them to the message's first bytes, so
    they have always arrived when the line is complete). ``on_close()`` is called once when the
    peer goes away.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_line: Callable[[bytes], None],
        on_close: Callable[[], None],
        *,
        max_message_size: int = 1 << 30,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._on_line = on_line
        self._on_close = on_close
        self._reader = LineReader(max_message_size)
        self._fds: deque[int] = deque()
        self._out: deque[tuple[memoryview, list[int]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._writing = False
        self._drained: asyncio.Future[None] | None = None
        self._loop.add_reader(sock.fileno(), self._readable)

    # ----------------------------------------------------------------- reading

    def _readable(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, _MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self._fds.extend(fds)
        if not data:
            self.close()
            return
        try:
            lines = self._reader.feed(data)
        except ValueError:
            self.close()
            return
        for line in lines:
            if self._closed:
                return
            self._on_line(line)

    def take_fds(self, count: int) -> list[int]:
        """The next ``count`` received descriptors, in arrival order."""
        if count > len(self._fds):
            raise ValueError(f"expected {count} file descriptors, received {len(self._fds)}")
        return [self._fds.popleft() for _ in range(count)]

    # ----------------------------------------------------------------- writing

    def send(self, line: bytes, fds: list[int] | None = None) -> None:
        """Queue ``line`` (must end with ``\\n``), with ``fds`` attached to its first byte."""
        if self._closed:
            raise ChannelClosed("the channel is closed")
        self._out.append((memoryview(line), list(fds or ())))
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        while self._out:
            data, fds = self._out[0]
            try:
                if fds:
                    sent = socket.send_fds(self.sock, [data], fds)
                else:
                    sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            if sent < len(data):
                self._out[0] = (data[sent:], [])  # the descriptors went with the first bytes
                break
            self._out.popleft()
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self.sock.fileno(), self._writable)
        elif not self._out:
            if self._writing:
                self._writing = False
                self._loop.remove_writer(self.sock.fileno())
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)

    def _writable(self) -> None:
        self._flush()

    async def drain(self) -> None:
        """Wait until everything queued has been handed to the kernel."""
        if not self._out or self._closed:
            return
        if self._drained is None or self._drained.done():
            self._drained = self._loop.create_future()
        await self._drained

    # ----------------------------------------------------------------- closing

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self.sock.fileno())
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self.sock.close()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ChannelClosed("the channel is closed"))
        self._on_close()
