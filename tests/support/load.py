"""Continuous client load against the proxy, counted request by request.

:class:`LoadGenerator` runs, each in its own thread, several *keep-alive* clients (one
connection carrying request after request), several *new-connection* clients (a fresh TCP
connection per request, closed by the client after the answer) and one *stream* client that
downloads a large chunked answer that the backend produces slowly (a few MB over several
seconds), so that one long response is in flight whatever the test does meanwhile. Everything
is bounded: requests per client, seconds overall, and every socket operation has a timeout.

Every request ends in exactly one outcome (:data:`OUTCOMES`):

* ``ok``: a complete answer with the expected status (and body, when bodies are checked);
* ``refused``: the TCP connection was refused (nobody listening: the case a proxy that owns
  its listening sockets must never produce);
* ``reset``: the connection was reset (RST) before a complete answer;
* ``closed``: the connection ended (EOF) before a complete answer;
* ``timeout``: no complete answer within the client timeout;
* ``connect_error``: the connection could not be opened for another reason;
* ``bad_status`` / ``bad_body``: an answer, but not the expected one.

A keep-alive client behaves as HTTP clients do (RFC 9112 §9.3.1 and §9.6): before reusing its
connection it checks that the server has not closed it while idle (then it opens a new one:
counted in ``idle_closes``, not a request), and when a request sent on a *reused* connection
gets neither a byte of answer nor anything but the end of the connection, it sends that request
once more on a new connection (counted in ``retries``; the outcome of the second attempt is the
request's outcome). Both counters are reported so that a test can tell what happened.

The backend side is :func:`load_handler` (for :class:`~support.backends.HttpBackend`): a short
body naming the backend for ordinary requests, the slow stream of a :class:`StreamSpec` for the
stream target, and ``/slow/<seconds>`` for a request that stays in flight that long.

:func:`serving_process` tells which process (of a list of pids) holds the server side of a
client connection, read from ``/proc``: tests use it to know which worker serves the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .backends import Answer, Handler, HttpBackend, Received
from .clients import ConnectionClosed, HttpAnswer, HttpConnection

__all__ = [
    "BAD_BODY",
    "BAD_STATUS",
    "CLOSED",
    "CONNECT_ERROR",
    "OK",
    "OUTCOMES",
    "REFUSED",
    "RESET",
    "TIMEOUT",
    "LoadGenerator",
    "LoadReport",
    "RequestRecord",
    "StreamResult",
    "StreamSpec",
    "assert_nothing_lost",
    "load_backends",
    "load_handler",
    "serving_process",
]

OK = "ok"
REFUSED = "refused"
RESET = "reset"
CLOSED = "closed"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
BAD_STATUS = "bad_status"
BAD_BODY = "bad_body"
OUTCOMES = (OK, REFUSED, RESET, CLOSED, TIMEOUT, CONNECT_ERROR, BAD_STATUS, BAD_BODY)
"""Every outcome a request can have; all but ``ok`` are failures."""

SLOW_PREFIX = "/slow/"
"""Targets ``/slow/<seconds>`` are answered by :func:`load_handler` after that delay."""


# --------------------------------------------------------------------------- the slow stream


@dataclass(frozen=True)
class StreamSpec:
    """A large answer produced slowly: ``size`` bytes in chunks of ``chunk`` bytes, spread
    evenly over ``seconds``. The content is deterministic (chunk ``i`` repeats the byte
    ``i % 251``), so the client checks every byte through :attr:`sha256`."""

    size: int = 4 * 1024 * 1024
    seconds: float = 8.0
    chunk: int = 64 * 1024

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk)

    def chunk_bytes(self, index: int) -> bytes:
        """The content of chunk ``index`` (the last one may be shorter)."""
        length = min(self.chunk, self.size - index * self.chunk)
        return bytes([index % 251]) * length

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for index in range(self.chunks):
            digest.update(self.chunk_bytes(index))
        return digest.hexdigest()

    def body(self) -> Callable[[], AsyncIterator[bytes]]:
        """The answer body for :class:`~support.backends.Answer` (chunked, paced)."""
        pause = self.seconds / self.chunks

        async def produce() -> AsyncIterator[bytes]:
            for index in range(self.chunks):
                yield self.chunk_bytes(index)
                await asyncio.sleep(pause)

        return produce


def load_handler(
    name: str, *, stream_target: str = "/stream", stream: StreamSpec | None = None
) -> Handler:
    """A backend handler for load tests: ``stream_target`` gets the slow stream of ``stream``
    (default :class:`StreamSpec`), ``/slow/<seconds>`` gets ``name`` after that delay,
    anything else gets ``name`` at once."""
    spec = stream or StreamSpec()

    def handle(request: Received) -> Answer:
        path = request.target.split("?", 1)[0]
        if path == stream_target:
            return Answer(body=spec.body())
        if path.startswith(SLOW_PREFIX):
            return Answer(body=name.encode(), delay=float(path[len(SLOW_PREFIX) :]))
        return Answer(body=name.encode())

    return handle


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RequestRecord:
    """One request of a load client and its outcome. Times are ``time.monotonic()``."""

    client: str
    """Which client sent it, e.g. ``keep-alive 2`` or ``new-connection 1``."""
    connection: int
    """Serial number (from 1) of the client's connection that carried the final attempt."""
    connected_at: float
    """When that connection was established (0.0 when it could not be)."""
    started: float
    ended: float
    outcome: str
    status: int | None = None
    detail: str = ""
    """The exception or the unexpected answer behind a failure."""
    retried: bool = False
    """The first attempt, on a reused keep-alive connection, got no answer and was resent."""

    @property
    def failed(self) -> bool:
        return self.outcome != OK


@dataclass
class StreamResult:
    """The long streamed answer, as the stream client saw it."""

    target: str
    expected_size: int
    expected_sha256: str
    started: float = 0.0
    connected_at: float = 0.0
    first_byte: float | None = None
    """When the first body byte arrived (the stream is then in flight through a worker)."""
    ended: float | None = None
    received: int = 0
    status: int | None = None
    sha256: str = ""
    error: str = ""
    local_port: int = 0
    """The client side port of the stream's connection (see :func:`serving_process`)."""

    @property
    def complete(self) -> bool:
        """Every byte arrived, in order, and the chunked answer ended properly."""
        return (
            not self.error
            and self.status == 200
            and self.received == self.expected_size
            and self.sha256 == self.expected_sha256
        )

    def describe(self) -> str:
        if self.complete:
            return f"stream complete ({self.received} bytes)"
        return (
            f"stream status={self.status} received {self.received} of {self.expected_size} "
            f"bytes, error={self.error or '-'}"
        )


@dataclass(frozen=True)
class LoadReport:
    """What the clients saw up to the moment the report was made."""

    records: tuple[RequestRecord, ...]
    stream: StreamResult | None
    idle_closes: int
    """Keep-alive connections found closed by the server while idle (reopened, no request lost)."""
    retries: int
    """Requests resent once after their reused connection ended without any answer."""
    clients: int
    """Keep-alive plus new-connection clients (at most that many requests are in flight)."""

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.records if r.outcome == outcome)

    @property
    def ok(self) -> int:
        return self.count(OK)

    @property
    def refused(self) -> int:
        return self.count(REFUSED)

    @property
    def reset(self) -> int:
        return self.count(RESET)

    @property
    def failures(self) -> list[RequestRecord]:
        """Every request that did not end ``ok``."""
        return [r for r in self.records if r.failed]

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.records)

    def cut_at(self, instant: float) -> tuple[list[RequestRecord], list[RequestRecord]]:
        """Split the failures into those *cut at* ``instant`` — reset or closed, on a
        connection established before it, and ended after it (the requests of a process that
        died then) — and all the others."""
        cut: list[RequestRecord] = []
        others: list[RequestRecord] = []
        for record in self.failures:
            if (
                record.outcome in (RESET, CLOSED)
                and 0.0 < record.connected_at <= instant <= record.ended
            ):
                cut.append(record)
            else:
                others.append(record)
        return cut, others

    def summary(self) -> str:
        """One paragraph for assertion messages: counts by outcome and the first failures."""
        text = (
            f"{len(self.records)} requests by {self.clients} clients: {dict(self.outcomes())}, "
            f"idle closes {self.idle_closes}, retries {self.retries}"
        )
        if self.stream is not None:
            text += f"; {self.stream.describe()}"
        failures = self.failures[:5]
        if failures:
            text += "; first failures: " + "; ".join(
                f"[{r.client} conn {r.connection}] {r.outcome} {r.status or ''} {r.detail}"
                for r in failures
            )
        return text


# --------------------------------------------------------------------------- clients


def _connect_outcome(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return REFUSED
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return CONNECT_ERROR


def _closed_while_idle(connection: HttpConnection) -> bool:
    """True when the server closed (or reset) the connection while it carried no request."""
    sock = connection.sock
    timeout = sock.gettimeout()
    # A socket with a timeout waits (up to the timeout) even with MSG_DONTWAIT: make it
    # non-blocking for the look.
    sock.settimeout(0.0)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False  # nothing to read: the connection is open and quiet
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
    # Readable: either the end of the stream (b"") or bytes that answer no request; the
    # connection is unusable in both cases.
    return True


class _Failure(Exception):
    """A request that got no complete answer; ``nothing`` when not a byte of answer came."""

    def __init__(self, outcome: str, detail: str, *, nothing: bool) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.nothing = nothing


def _exchange(connection: HttpConnection, target: str, host: str) -> HttpAnswer:
    """Send one request and read its answer; raise :class:`_Failure` when none came."""
    try:
        return connection.request("GET", target, host=host)
    except TimeoutError as error:
        raise _Failure(TIMEOUT, repr(error), nothing=not connection.buffer) from None
    except (ConnectionResetError, BrokenPipeError) as error:
        raise _Failure(RESET, repr(error), nothing=not connection.buffer) from None
    except ConnectionClosed as error:
        raise _Failure(CLOSED, str(error), nothing=not connection.buffer) from None
    except OSError as error:
        raise _Failure(RESET, repr(error), nothing=not connection.buffer) from None


class LoadGenerator:
    """Client load on ``127.0.0.1:port`` with ``Host: host``, as a context manager.

    ``keep_alive_clients`` and ``new_connection_clients`` threads send ``GET target`` until
    stopped, ``max_requests`` each, or ``max_seconds`` after the start; ``pause`` seconds
    separate two requests of a client (the backends run in the test process too and need the
    GIL). An answer is ``ok`` when its status is ``expected_status`` and, if
    ``expected_bodies`` is given, its body is one of them. When ``stream_target`` is not None a
    stream client downloads it once (its answer must be the :class:`StreamSpec` ``stream``).

    Entering starts the clients and returns once every client got a first ``ok`` answer and
    the stream's first bytes arrived (so the load is really in flight); leaving stops them.
    :meth:`stop` lets the clients run until the stream finished, then stops them and returns
    the final :class:`LoadReport`.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str,
        target: str = "/",
        keep_alive_clients: int = 3,
        new_connection_clients: int = 3,
        stream_target: str | None = "/stream",
        stream: StreamSpec | None = None,
        expected_status: int = 200,
        expected_bodies: Collection[bytes] | None = None,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        pause: float = 0.01,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.host = host
        self.target = target
        self.keep_alive_clients = keep_alive_clients
        self.new_connection_clients = new_connection_clients
        self.stream_target = stream_target
        self.stream_spec = stream or StreamSpec()
        self.expected_status = expected_status
        self.expected_bodies = None if expected_bodies is None else frozenset(expected_bodies)
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self.timeout = timeout
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stream_thread: threading.Thread | None = None
        self._idle_closes = 0
        self._retries = 0
        self._deadline = 0.0
        self.stream_result: StreamResult | None = None
        self._final: LoadReport | None = None

    # ------------------------------------------------------------------ life

    def start(self, *, ready_timeout: float = 15.0) -> LoadGenerator:
        self._deadline = time.monotonic() + self.max_seconds
        for number in range(1, self.keep_alive_clients + 1):
            self._spawn(f"keep-alive {number}", self._keep_alive_client)
        for number in range(1, self.new_connection_clients + 1):
            self._spawn(f"new-connection {number}", self._new_connection_client)
        if self.stream_target is not None:
            spec = self.stream_spec
            self.stream_result = StreamResult(self.stream_target, spec.size, spec.sha256)
            self._stream_thread = threading.Thread(
                target=self._stream_client, daemon=True, name="load stream"
            )
            self._stream_thread.start()
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, run: Callable[[str], None]) -> None:
        thread = threading.Thread(target=run, args=(name,), daemon=True, name=f"load {name}")
        self._threads.append(thread)
        thread.start()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        names = {t.name.removeprefix("load ") for t in self._threads}
        while time.monotonic() < deadline:
            with self._lock:
                served = {r.client for r in self._records if r.outcome == OK}
            stream = self.stream_result
            stream_flowing = stream is None or stream.first_byte is not None
            if served >= names and stream_flowing:
                return
            if stream is not None and stream.ended is not None and not stream.complete:
                raise AssertionError(f"the stream failed at the start: {stream.describe()}")
            time.sleep(0.02)
        raise AssertionError(
            f"the load did not get going within {timeout} s: {self.report().summary()}"
        )

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        # after a failure in the test, do not wait for the stream: the report is not wanted
        self.stop(stream_timeout=None if kind is None else 0.0)

    def stop(self, *, stream_timeout: float | None = None) -> LoadReport:
        """Wait for the stream to end (bounded by ``stream_timeout``, default three times its
        planned duration plus a margin) while the request clients keep going — so the load
        covers all the test did meanwhile — then stop the clients and report."""
        if self._final is not None:
            return self._final
        if self._stream_thread is not None:
            wait = stream_timeout
            if wait is None:
                wait = self.stream_spec.seconds * 3 + self.timeout + 10
            self._stream_thread.join(wait)
            result = self.stream_result
            if self._stream_thread.is_alive() and result is not None and not result.error:
                result.error = f"still running after {wait} s"
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout * 2 + 5)
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._final = self.report()
        if stuck:
            raise AssertionError(f"load clients did not stop: {stuck}")
        return self._final

    def report(self) -> LoadReport:
        """What happened so far (the clients keep running)."""
        with self._lock:
            return LoadReport(
                records=tuple(self._records),
                stream=self.stream_result,
                idle_closes=self._idle_closes,
                retries=self._retries,
                clients=self.keep_alive_clients + self.new_connection_clients,
            )

    def wait_progress(self, count: int = 20, timeout: float = 15.0) -> None:
        """Wait until ``count`` more requests ended ``ok``, and at least one per client kind
        that runs: the proxy still serves both reused and new connections."""
        with self._lock:
            start = len(self._records)
        kinds = set()
        if self.keep_alive_clients:
            kinds.add("keep-alive")
        if self.new_connection_clients:
            kinds.add("new-connection")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                fresh = [r for r in self._records[start:] if r.outcome == OK]
            if len(fresh) >= count and {r.client.rsplit(" ", 1)[0] for r in fresh} >= kinds:
                return
            time.sleep(0.02)
        raise AssertionError(
            f"fewer than {count} requests succeeded within {timeout} s: {self.report().summary()}"
        )

    # ------------------------------------------------------------------ client threads

    def _running(self, sent: int) -> bool:
        return (
            not self._stop.is_set()
            and sent < self.max_requests
            and time.monotonic() < self._deadline
        )

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _judge(self, answer: HttpAnswer) -> tuple[str, str]:
        if answer.status != self.expected_status:
            return BAD_STATUS, f"{answer.status} {answer.body[:120]!r}"
        if self.expected_bodies is not None and answer.body not in self.expected_bodies:
            return BAD_BODY, repr(answer.body[:120])
        return OK, ""

    def _keep_alive_client(self, name: str) -> None:
        connection: HttpConnection | None = None
        serial = 0
        connected_at = 0.0
        used = False  # the connection already carried an exchange
        sent = 0
        try:
            while self._running(sent):
                sent += 1
                started = time.monotonic()
                if connection is not None and used and _closed_while_idle(connection):
                    connection.close()
                    connection = None
                    with self._lock:
                        self._idle_closes += 1
                retried = False
                answer: HttpAnswer | None = None
                failure: _Failure | None = None
                for attempt in (1, 2):
                    if connection is None:
                        serial += 1
                        try:
                            connection = HttpConnection(self.port, timeout=self.timeout)
                        except OSError as error:
                            failure = _Failure(_connect_outcome(error), repr(error), nothing=True)
                            connected_at = 0.0
                            break
                        connected_at = time.monotonic()
                        used = False
                    try:
                        answer = _exchange(connection, self.target, self.host)
                        failure = None
                        break
                    except _Failure as error:
                        failure = error
                        reused = used
                        connection.close()
                        connection = None
                        if attempt == 2 or not (reused and error.nothing):
                            break
                        # the reused connection ended without a byte of answer: resend once
                        retried = True
                        with self._lock:
                            self._retries += 1
                ended = time.monotonic()
                if answer is not None:
                    assert connection is not None
                    used = True
                    outcome, detail = self._judge(answer)
                    record = RequestRecord(
                        name, serial, connected_at, started, ended, outcome,
                        status=answer.status, detail=detail, retried=retried,
                    )  # fmt: skip
                    if (answer.header("connection") or "").lower() == "close":
                        connection.close()
                        connection = None
                else:
                    assert failure is not None
                    record = RequestRecord(
                        name, serial, connected_at, started, ended, failure.outcome,
                        detail=failure.detail, retried=retried,
                    )  # fmt: skip
                self._record(record)
                self._stop.wait(self.pause if answer is not None else max(self.pause, 0.05))
        finally:
            if connection is not None:
                connection.close()

    def _new_connection_client(self, name: str) -> None:
        serial = 0
        while self._running(serial):
            serial += 1
            started = time.monotonic()
            try:
                connection = HttpConnection(self.port, timeout=self.timeout)
            except OSError as error:
                failed = _connect_outcome(error)
                now = time.monotonic()
                self._record(
                    RequestRecord(name, serial, 0.0, started, now, failed, detail=repr(error))
                )
                self._stop.wait(max(self.pause, 0.05))
                continue
            connected_at = time.monotonic()
            try:
                answer = _exchange(connection, self.target, self.host)
            except _Failure as failure:
                outcome, status, detail = failure.outcome, None, failure.detail
            else:
                status = answer.status
                outcome, detail = self._judge(answer)
            finally:
                connection.close()
            self._record(
                RequestRecord(
                    name, serial, connected_at, started, time.monotonic(), outcome, status, detail
                )
            )
            self._stop.wait(self.pause)

    def _stream_client(self) -> None:
        """Download the stream once, checking every byte; never raises."""
        result = self.stream_result
        assert result is not None and self.stream_target is not None
        result.started = time.monotonic()
        digest = hashlib.sha256()
        # a slow producer: allow a generous wait between two pieces of the answer
        per_read = max(self.timeout, self.stream_spec.seconds)
        try:
            connection = HttpConnection(self.port, timeout=per_read)
        except OSError as error:
            result.error = f"{_connect_outcome(error)}: {error!r}"
            result.ended = time.monotonic()
            return
        result.connected_at = time.monotonic()
        result.local_port = connection.sock.getsockname()[1]
        try:
            head = (
                f"GET {self.stream_target} HTTP/1.1\r\nHost: {self.host}\r\n"
                "Connection: close\r\n\r\n"
            )
            connection.send(head.encode("latin-1"))
            answer = connection.read_answer(head_only=True)
            result.status = answer.status
            if answer.status != 200:
                result.error = f"status {answer.status}"
                return
            if (answer.header("transfer-encoding") or "").lower() != "chunked":
                result.error = f"not chunked: {answer.raw_head!r}"
                return
            for piece in _chunks(connection):
                if result.first_byte is None:
                    result.first_byte = time.monotonic()
                digest.update(piece)
                result.received += len(piece)
        except ConnectionClosed as error:
            result.error = f"{CLOSED}: {error}"
        except TimeoutError as error:
            result.error = f"{TIMEOUT}: {error!r}"
        except OSError as error:
            result.error = f"{RESET}: {error!r}"
        except ValueError as error:  # a chunk size line that is not hexadecimal
            result.error = f"bad chunked framing: {error}"
        finally:
            result.sha256 = digest.hexdigest()
            result.ended = time.monotonic()
            connection.close()


def _chunks(connection: HttpConnection) -> Iterable[bytes]:
    """The data of a chunked body as it arrives (piece by piece, not chunk by chunk); ends
    after the last chunk and the trailer section."""

    def fill() -> None:
        data = connection.sock.recv(1 << 16)
        if not data:
            raise ConnectionClosed("the connection ended in the middle of the chunked body")
        connection.buffer += data

    while True:
        while b"\r\n" not in connection.buffer:
            fill()
        line, connection.buffer = connection.buffer.split(b"\r\n", 1)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while not connection.buffer.startswith(b"\r\n"):  # skip trailer fields
                while b"\r\n" not in connection.buffer:
                    fill()
                connection.buffer = connection.buffer.split(b"\r\n", 1)[1]
            connection.buffer = connection.buffer[2:]
            return
        remaining = size
        while remaining:
            if not connection.buffer:
                fill()
            piece = connection.buffer[:remaining]
            connection.buffer = connection.buffer[len(piece) :]
            remaining -= len(piece)
            yield piece
        while len(connection.buffer) < 2:
            fill()
        if connection.buffer[:2] != b"\r\n":
            raise ValueError(f"chunk not followed by CRLF: {connection.buffer[:10]!r}")
        connection.buffer = connection.buffer[2:]


# --------------------------------------------------------------------------- /proc


def _socket_inodes(port: int, peer_port: int) -> set[int]:
    """Inodes of the TCP sockets from 127.0.0.1:``port`` to 127.0.0.1:``peer_port``."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if (
                    int(local.rsplit(":", 1)[1], 16) == port
                    and int(remote.rsplit(":", 1)[1], 16) == peer_port
                ):
                    found.add(inode)
    return found


def serving_process(proxy_port: int, client_port: int, pids: Iterable[int]) -> int | None:
    """The pid (among ``pids``) holding the proxy side of the client connection whose local
    port is ``client_port``, or None when none of them holds it (read from ``/proc``)."""
    inodes = _socket_inodes(proxy_port, client_port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        with contextlib.suppress(OSError):
            for entry in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(entry.path) in wanted:
                        return pid
    return None


def assert_nothing_lost(report: LoadReport, *, minimum_ok: int = 300) -> None:
    """Zero failed and zero refused requests, the download completed, and enough requests
    went through for the check to mean something."""
    assert report.failures == [], report.summary()
    assert report.refused == 0, report.summary()
    assert report.stream is not None and report.stream.complete, report.summary()
    assert report.ok > minimum_ok, report.summary()


@contextlib.contextmanager
def load_backends(stream: StreamSpec) -> Iterator[tuple[HttpBackend, HttpBackend]]:
    """Two backends, ``one`` and ``two``, answering :func:`load_handler` with ``stream``."""
    with (
        HttpBackend("one", load_handler("one", stream=stream)) as one,
        HttpBackend("two", load_handler("two", stream=stream)) as two,
    ):
        yield one, two
