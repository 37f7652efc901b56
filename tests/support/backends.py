"""Real HTTP and TCP backends for end-to-end tests, on 127.0.0.1 ephemeral ports.

Each backend runs an asyncio server in its own thread and records what it receives: the exact
bytes of every request head, the parsed headers and the body (or only its length and digest
for large bodies). The answer is chosen per request by a handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self, SupportsIndex


@dataclass
class Received:
    """One request as the backend received it."""

    head: bytes
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    body_length: int = 0
    body_sha256: str = ""
    connection: int = 0

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Answer:
    """What a backend answers. ``body`` may be bytes or an async iterator of chunks (then
    the answer is chunked unless ``length`` is given). ``raw`` replaces everything."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Callable[[], AsyncIterator[bytes]] = b""
    length: int | None = None
    delay: float = 0.0
    close: bool = False
    raw: bytes | None = None
    close_delimited: bool = False


Handler = Callable[[Received], Answer]


def default_handler(name: str) -> Handler:
    def handle(request: Received) -> Answer:
        return Answer(body=name.encode())

    return handle


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        return None


async def _read_chunked(reader: asyncio.StreamReader, sink: Callable[[bytes], None]) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        remaining = size
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 16))
            if not chunk:
                raise ConnectionError("eof in chunk")
            sink(chunk)
            remaining -= len(chunk)
        await reader.readexactly(2)


class _ThreadedServer:
    """An asyncio server on 127.0.0.1 running in its own thread (started by :meth:`start`,
    stopped, open connections aborted, by :meth:`stop`)."""

    thread_name = "backend"

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _listen(self, port: int) -> asyncio.AbstractServer:
        raise NotImplementedError

    def start(self, port: int = 0) -> Self:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(self._listen(port))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=self.thread_name)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.thread_name} did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpBackend(_ThreadedServer):
    """An HTTP/1.1 backend with keep-alive. ``keep_bodies=False`` keeps only body lengths and
    digests (for large uploads)."""

    def __init__(
        self, name: str = "backend", handler: Handler | None = None, *, keep_bodies: bool = True
    ) -> None:
        super().__init__()
        self.name = name
        self.handler = handler or default_handler(name)
        self.keep_bodies = keep_bodies
        self.requests: list[Received] = []
        self.connections = 0
        self.open_connections = 0
        self.thread_name = f"backend-{name}"

    async def _listen(self, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, "127.0.0.1", port, limit=1 << 20)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        number = self.connections
        self._writers.add(writer)
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = [*lines[0].split(" "), "", ""][:3]
                headers = [
                    tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:] if line
                ]
                request = Received(head, method, target, headers, connection=number)  # type: ignore[arg-type]
                digest = hashlib.sha256()
                parts: list[bytes] = []

                def sink(
                    data: bytes,
                    digest: Any = digest,
                    request: Received = request,
                    parts: list[bytes] = parts,
                ) -> None:
                    digest.update(data)
                    request.body_length += len(data)
                    if self.keep_bodies:
                        parts.append(data)

                if request.header("expect") == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                length = request.header("content-length")
                if request.header("transfer-encoding"):
                    await _read_chunked(reader, sink)
                elif length:
                    remaining = int(length)
                    while remaining:
                        data = await reader.read(min(remaining, 1 << 16))
                        if not data:
                            return
                        sink(data)
                        remaining -= len(data)
                request.body = b"".join(parts)
                request.body_sha256 = digest.hexdigest()
                self.requests.append(request)
                answer = self.handler(request)
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                if answer.raw is not None:
                    writer.write(answer.raw)
                    await writer.drain()
                    if answer.close:
                        return
                    continue
                await self._answer(writer, answer, method)
                if answer.close or answer.close_delimited:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, answer: Answer, method: str) -> None:
        head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Status')}"]
        head += [f"{n}: {v}" for n, v in answer.headers]
        names = {n.lower() for n, _ in answer.headers}
        body = answer.body
        streamed = not isinstance(body, bytes)
        if answer.close and "connection" not in names:
            head.append("Connection: close")
        if (
            not answer.close_delimited
            and "content-length" not in names
            and "transfer-encoding" not in names
        ):
            if streamed and answer.length is None:
                head.append("Transfer-Encoding: chunked")
            elif answer.status not in (204, 304) and not 100 <= answer.status < 200:
                length = answer.length if answer.length is not None else len(body)  # type: ignore[arg-type]
                head.append(f"Content-Length: {length}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method == "HEAD":
            await writer.drain()
            return
        if not streamed:
            writer.write(body)  # type: ignore[arg-type]
            await writer.drain()
            return
        chunked = answer.length is None and not answer.close_delimited
        async for chunk in body():  # type: ignore[operator]
            if chunked:
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            else:
                writer.write(chunk)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    304: "Not Modified",
    404: "Not Found",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class TcpEchoBackend(_ThreadedServer):
    """A TCP backend: echoes what it receives, prefixed with ``prefix`` once per connection,
    and records the exact bytes of each connection. On half-close from the client it answers
    ``reply_on_eof`` then closes."""

    def __init__(self, prefix: bytes = b"", reply_on_eof: bytes = b"") -> None:
        super().__init__()
        self.prefix = prefix
        self.reply_on_eof = reply_on_eof
        self.received: list[bytearray] = []

    async def _listen(self, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = bytearray()
        self.received.append(record)
        self._writers.add(writer)
        if self.prefix:
            writer.write(self.prefix)
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    if self.reply_on_eof:
                        writer.write(self.reply_on_eof)
                    await writer.drain()
                    break
                record += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _RecordingReader(asyncio.StreamReader):
    """A StreamReader that also keeps every byte it is fed, in ``record``."""

    def __init__(self, record: bytearray, limit: int) -> None:
        super().__init__(limit=limit)
        self.record = record

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.record += bytes(data)
        super().feed_data(data)


class ScriptedBackend(_ThreadedServer):
    """A TCP backend on 127.0.0.1 whose every connection runs ``script(reader, writer)``.

    For what :class:`HttpBackend` cannot answer: a protocol switch followed by a byte pipe,
    interim answers, framing broken on purpose on a live connection, a server that reads and
    says nothing. Every byte received is recorded, per connection in arrival order, in
    ``received`` (so a test can prove that nothing at all reached the backend). The connection
    is closed when the script returns.
    """

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.received: list[bytearray] = []

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return len(self.received)

    @property
    def received_bytes(self) -> int:
        """Bytes received so far, over all connections."""
        return sum(len(record) for record in self.received)

    async def _listen(self, port: int) -> asyncio.AbstractServer:
        def protocol() -> asyncio.StreamReaderProtocol:
            record = bytearray()
            self.received.append(record)
            return asyncio.StreamReaderProtocol(_RecordingReader(record, 1 << 20), self._serve)

        return await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
