"""The command socket's transport: who is connected, how many, and how much they may send.

Each connection is served by :meth:`.connections.CommandConnections.serve`; this module bounds
what the clients can make the main process hold. A client may send one message of up to
``max_command_buffer_size`` bytes, but all clients together may hold at most twice that in
unfinished messages, and at most :data:`MAX_COMMAND_CONNECTIONS` connections are open at once:
many connections each pushing a large line can no longer grow the main process without limit.
A client over a limit gets one ``failure`` answer saying which, and is disconnected; the others
are not disturbed.

Each connection's peer (pid, uid, gid and command name, read with ``SO_PEERCRED`` when it
connects) is kept with it, for ``command_allowed_uids`` and the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, SupportsIndex

from sozu_config.protocol import encode_response
from sozu_config.responses import ErrorKind

from .replies import fail

__all__ = [
    "MAX_COMMAND_CONNECTIONS",
    "CommandBudgetExceeded",
    "CommandServer",
    "Peer",
    "unread_bytes",
]

# Command connections open at once (event subscribers and watchers included).
MAX_COMMAND_CONNECTIONS = 256

# (reader, writer, what the previous main process handed over of this connection, or None)
Handler = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any] | None], Awaitable[None]
]


class CommandBudgetExceeded(Exception):
    """Raised by a client's reader when the message it is receiving would take the command
    socket over its budget of unfinished bytes."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a command connection (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int
    command: str
    """Its command name (``/proc/<pid>/comm``), or ``""`` when it cannot be read."""

    @classmethod
    def of(cls, sock: socket.socket | None) -> Peer | None:
        if sock is None:
            return None
        try:
            credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        except (OSError, AttributeError):
            return None
        pid, uid, gid = struct.unpack("3i", credentials)
        command = ""
        with (
            contextlib.suppress(OSError, UnicodeDecodeError),
            open(f"/proc/{pid}/comm", encoding="utf-8") as handle,
        ):
            command = handle.read(64).strip()
        return cls(pid=pid, uid=uid, gid=gid, command=command)


class _BudgetedReader(asyncio.StreamReader):
    """A StreamReader whose unfinished bytes count against the server's shared budget."""

    def __init__(self, server: CommandServer, limit: int) -> None:
        super().__init__(limit=limit)
        self._server = server
        self.refused = False

    @property
    def held(self) -> int:
        buffer: bytearray = self._buffer  # type: ignore[attr-defined]
        return len(buffer)

    def unread(self) -> bytes:
        """The bytes received and not read yet (handed over by a main-process upgrade)."""
        buffer: bytearray = self._buffer  # type: ignore[attr-defined]
        return bytes(buffer)

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if self.refused:
            return  # refused: what follows is dropped until the connection closes
        if self._server.over_budget(self, len(data)):  # type: ignore[arg-type]
            self.refused = True
            self.set_exception(
                CommandBudgetExceeded(
                    "the daemon is already receiving other large messages "
                    f"({self._server.budget} bytes in all); try again"
                )
            )
            return
        super().feed_data(data)


class CommandServer:
    """The unix stream server of the command socket, with its limits."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_message: int,
        max_connections: int = MAX_COMMAND_CONNECTIONS,
    ) -> None:
        self._handler = handler
        self.max_message = max_message
        self.max_connections = max_connections
        self.budget = 2 * max_message
        self._readers: set[_BudgetedReader] = set()
        self.server: asyncio.Server | None = None

    def over_budget(self, reader: _BudgetedReader, incoming: int) -> bool:
        """Whether ``incoming`` more bytes for ``reader`` would pass the shared budget. A
        message longer than ``max_message`` is left to the reader's own limit, which refuses
        it with a message that says so."""
        if reader.held + incoming > self.max_message:
            return False
        return sum(r.held for r in self._readers) + incoming > self.budget

    async def listen(self, path: str) -> None:
        """Create the socket at ``path`` (mode 0600: only the daemon's user)."""
        loop = asyncio.get_running_loop()
        previous = os.umask(0o177)
        try:
            self.server = await loop.create_unix_server(
                self._protocol, path, backlog=self.max_connections
            )
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)

    async def adopt(self, sock: socket.socket) -> None:
        """Serve an already listening socket (handed over by the previous main process)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(self._protocol, sock=sock)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    @property
    def listening_socket(self) -> socket.socket:
        assert self.server is not None
        sock: socket.socket = self.server.sockets[0]
        return sock

    async def adopt_client(
        self, sock: socket.socket, unread: bytes, handed_over: dict[str, Any]
    ) -> None:
        """Serve a client connection the previous main process handed over, starting with
        the bytes it had received and not read."""
        reader = _BudgetedReader(self, self.max_message + 1)
        if unread:
            reader.feed_data(unread)

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._connected(reader, writer, handed_over)

        protocol = asyncio.StreamReaderProtocol(reader, connected)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock)

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        reader = _BudgetedReader(self, self.max_message + 1)
        return asyncio.StreamReaderProtocol(reader, self._connected)

    async def _connected(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handed_over: dict[str, Any] | None = None,
    ) -> None:
        assert isinstance(reader, _BudgetedReader)
        if len(self._readers) >= self.max_connections:
            await refuse(
                writer,
                f"too many command connections ({self.max_connections} are open); "
                "close some (event subscriptions, watchers) and try again",
                ErrorKind.LIMIT,
            )
            return
        self._readers.add(reader)
        try:
            await self._handler(reader, writer, handed_over)
        finally:
            self._readers.discard(reader)


async def refuse(writer: asyncio.StreamWriter, message: str, kind: ErrorKind) -> None:
    """Answer one failure (without request id) and disconnect."""
    with contextlib.suppress(Exception):
        writer.write(encode_response(fail(message, kind=kind)))
        await asyncio.wait_for(writer.drain(), 5.0)
    writer.close()


def unread_bytes(reader: asyncio.StreamReader) -> bytes:
    """What a command connection received and did not read yet."""
    return reader.unread() if isinstance(reader, _BudgetedReader) else b""
