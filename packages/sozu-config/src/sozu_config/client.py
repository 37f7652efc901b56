"""Clients of the command socket: :class:`CommandClient` (blocking) and
:class:`AsyncCommandClient` (asyncio).

Both send one request at a time on one connection, read the ``processing`` answers (given to
an optional callback, or yielded by :meth:`responses`) and return the final one. Errors are
typed: :class:`DaemonUnreachable` (no socket, nobody listening), :class:`CommandTimeout` (no
final answer in time), :class:`~sozu_config.protocol.ProtocolError` (the peer speaks nonsense).
``send`` returns a ``failure`` answer like any other; ``call`` raises it as
:class:`CommandFailed`, which carries the answer's error ``kind`` and batch ``index``.

    with CommandClient("/run/sozu/sozu.sock") as client:
        response = client.send(Status())

asyncio is imported by :class:`AsyncCommandClient` when it connects, not with this module: a
blocking client does not pay for it.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    LineReader,
    ProtocolError,
    decode_response,
    encode_request,
)
from .requests import SubscribeEvents
from .responses import ErrorKind, Event, EventContent, Response

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "MUTATION_TIMEOUT",
    "AsyncCommandClient",
    "ClientError",
    "CommandClient",
    "CommandFailed",
    "CommandTimeout",
    "DaemonUnreachable",
    "mutation_timeout",
]

MUTATION_TIMEOUT = 30.0
"""Seconds a client waits at least for the answer to a change: a batch is applied by every
worker before the daemon answers, which takes longer than a query."""


def mutation_timeout(ctl_command_timeout: int) -> float | None:
    """Seconds to wait for the answer to a change, given a ``ctl_command_timeout`` in
    milliseconds (0: no limit, ``None``): that timeout, but at least :data:`MUTATION_TIMEOUT`."""
    if ctl_command_timeout == 0:
        return None
    return max(ctl_command_timeout / 1000, MUTATION_TIMEOUT)


_ids = itertools.count(1)
_prefix = f"{os.getpid():x}"


def _next_id() -> str:
    return f"{_prefix}-{next(_ids)}"


class ClientError(Exception):
    """Base of the client errors."""


class DaemonUnreachable(ClientError):
    """Nothing answers on the command socket."""


class CommandTimeout(ClientError):
    """The daemon did not give a final answer in time."""


class CommandFailed(ClientError):
    """The daemon answered with a ``failure``: ``response`` is that answer, ``kind`` why it
    failed (``None`` from a daemon that does not say) and ``index`` the position in a batch
    of the request at fault."""

    def __init__(self, response: Response) -> None:
        message = response.message or "the daemon refused the request"
        super().__init__(message)
        self.message = message
        self.response = response
        self.kind: ErrorKind | None = response.kind
        self.index: int | None = response.index


def _checked(response: Response) -> Response:
    if not response.ok:
        raise CommandFailed(response)
    return response


def _unreachable(path: str | os.PathLike[str], error: OSError) -> DaemonUnreachable:
    if isinstance(error, FileNotFoundError):
        reason = "the socket file does not exist (is the daemon started?)"
    elif isinstance(error, ConnectionRefusedError):
        reason = "nobody listens on it (stale socket: the daemon is not running)"
    elif isinstance(error, PermissionError):
        reason = "permission denied (the socket is private to the daemon's user)"
    else:
        reason = error.strerror or str(error)
    return DaemonUnreachable(f"cannot connect to the command socket {os.fspath(path)}: {reason}")


class CommandClient:
    """A blocking client. ``timeout`` (seconds, None = wait forever) bounds the wait for each
    final answer; ``max_message_size`` bounds each answer line."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float | None = 30.0,
        max_message_size: int = 1024 * 1024 * 1024,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._reader = LineReader(max_message_size)
        self._socket: socket.socket | None = None
        self._lines: list[bytes] = []

    def connect(self) -> CommandClient:
        if self._socket is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout if self.timeout is not None else None)
                sock.connect(os.fspath(self.socket_path))
            except OSError as error:
                sock.close()
                if isinstance(error, TimeoutError):
                    raise CommandTimeout(f"connecting to {self.socket_path} timed out") from None
                raise _unreachable(self.socket_path, error) from None
            self._socket = sock
        return self

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._lines.clear()
        self._reader = LineReader(self._reader.max_size)

    def __enter__(self) -> CommandClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_line(self, deadline: float | None) -> bytes:
        assert self._socket is not None
        while not self._lines:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise CommandTimeout("no answer from the daemon in time")
                self._socket.settimeout(remaining)
            else:
                self._socket.settimeout(None)
            try:
                data = self._socket.recv(1 << 20)
            except TimeoutError:
                self.close()  # a late answer must not be taken for the next request's
                raise CommandTimeout("no answer from the daemon in time") from None
            except OSError as error:
                raise DaemonUnreachable(f"the connection to the daemon failed: {error}") from None
            if not data:
                raise DaemonUnreachable("the daemon closed the connection before answering")
            self._lines.extend(self._reader.feed(data))
        return self._lines.pop(0)

    def responses(self, request: Any, *, request_id: str | None = None) -> Iterator[Response]:
        """Send ``request`` and yield every answer, the final one last."""
        self.connect()
        assert self._socket is not None
        request_id = request_id or _next_id()
        try:
            self._socket.settimeout(self.timeout)
            self._socket.sendall(encode_request(request, request_id))
        except TimeoutError:
            raise CommandTimeout("sending the request timed out") from None
        except OSError as error:
            raise DaemonUnreachable(f"the connection to the daemon failed: {error}") from None
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            response = decode_response(self._read_line(deadline))
            if response.id != request_id:
                raise ProtocolError(
                    f"the daemon answered request {response.id!r} instead of {request_id!r}"
                )
            yield response
            if response.final:
                return

    def send(
        self, request: Any, *, on_processing: Callable[[Response], None] | None = None
    ) -> Response:
        """Send ``request`` and return the final answer (``ok`` or ``failure``)."""
        for response in self.responses(request):
            if response.final:
                return response
            if on_processing is not None:
                on_processing(response)
        raise ProtocolError("the daemon ended the answer without a final status")

    def call(
        self, request: Any, *, on_processing: Callable[[Response], None] | None = None
    ) -> Response:
        """:meth:`send`, but a ``failure`` answer raises :class:`CommandFailed`."""
        return _checked(self.send(request, on_processing=on_processing))

    def events(self) -> Iterator[Event]:
        """Subscribe to events and yield them until the connection closes (no timeout)."""
        saved, self.timeout = self.timeout, None
        try:
            for response in self.responses(SubscribeEvents()):
                if isinstance(response.content, EventContent):
                    yield response.content.event
                elif response.final:
                    return
        except DaemonUnreachable:
            return  # the daemon closed the subscription (it stopped, or was upgraded)
        finally:
            self.timeout = saved


class AsyncCommandClient:
    """The asyncio twin of :class:`CommandClient`."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float | None = 30.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE * 16,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._max = max_message_size
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> AsyncCommandClient:
        import asyncio

        if self._stream is None:
            try:
                self._stream = await asyncio.wait_for(
                    asyncio.open_unix_connection(os.fspath(self.socket_path), limit=self._max),
                    self.timeout,
                )
            except TimeoutError:
                raise CommandTimeout(f"connecting to {self.socket_path} timed out") from None
            except OSError as error:
                raise _unreachable(self.socket_path, error) from None
        return self

    async def close(self) -> None:
        if self._stream is not None:
            writer = self._stream[1]
            self._stream = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> AsyncCommandClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await reader.readline()
        except ValueError:  # line over the limit
            raise ProtocolError(f"an answer exceeds {self._max} bytes") from None
        except OSError as error:
            raise DaemonUnreachable(f"the connection to the daemon failed: {error}") from None
        if not line.endswith(b"\n"):
            raise DaemonUnreachable("the daemon closed the connection before answering")
        return line

    async def responses(
        self, request: Any, *, request_id: str | None = None, timeout: float | None = -1.0
    ) -> AsyncIterator[Response]:
        """Send ``request`` and yield every answer, the final one last."""
        import asyncio

        await self.connect()
        assert self._stream is not None
        reader, writer = self._stream
        request_id = request_id or _next_id()
        wait = self.timeout if timeout == -1.0 else timeout
        try:
            writer.write(encode_request(request, request_id))
            await writer.drain()
        except OSError as error:
            raise DaemonUnreachable(f"the connection to the daemon failed: {error}") from None
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                line = await asyncio.wait_for(self._read_line(reader), remaining)
            except TimeoutError:
                await self.close()  # a late answer must not be taken for the next request's
                raise CommandTimeout("no answer from the daemon in time") from None
            response = decode_response(line)
            if response.id != request_id:
                raise ProtocolError(
                    f"the daemon answered request {response.id!r} instead of {request_id!r}"
                )
            yield response
            if response.final:
                return

    async def send(
        self, request: Any, *, on_processing: Callable[[Response], None] | None = None
    ) -> Response:
        """Send ``request`` and return the final answer."""
        async for response in self.responses(request):
            if response.final:
                return response
            if on_processing is not None:
                on_processing(response)
        raise ProtocolError("the daemon ended the answer without a final status")

    async def call(
        self, request: Any, *, on_processing: Callable[[Response], None] | None = None
    ) -> Response:
        """:meth:`send`, but a ``failure`` answer raises :class:`CommandFailed`."""
        return _checked(await self.send(request, on_processing=on_processing))

    async def events(self) -> AsyncIterator[Event]:
        """Subscribe to events and yield them until the connection closes."""
        try:
            async for response in self.responses(SubscribeEvents(), timeout=None):
                if isinstance(response.content, EventContent):
                    yield response.content.event
                elif response.final:
                    return
        except DaemonUnreachable:
            return
