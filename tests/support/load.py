"""Continuous client load against the proxy, counted request by request.

:class:`LoadGenerator` runs, each in its own thread, *keep-alive* clients (one connection
carrying request after request, a new one only after a failure or a ``Connection: close``
answer), *new-connection* clients (a fresh TCP connection per request, closed by the client
after the answer) and, when given a :class:`~support.load_handlers.StreamSpec`, one *stream*
client that downloads a large chunked answer the backend produces slowly, so that one long
response is in flight whatever the test does meanwhile. Everything is bounded: requests per
client, seconds overall, and every socket operation has a timeout.

Every request ends as one :class:`RequestRecord` with exactly one outcome (:data:`OUTCOMES`):

* ``ok``: a complete answer with the expected status (and body, when bodies are checked);
* ``refused``: the TCP connection was refused (nobody listening: the case a proxy that owns
  its listening sockets must never produce);
* ``reset``: the connection was reset (RST) before a complete answer;
* ``closed``: the connection ended (EOF) before a complete answer;
* ``timeout``: no complete answer within the client timeout;
* ``connect_error``: the connection could not be opened for another reason;
* ``bad_status`` / ``bad_body``: an answer, but not the expected one.

What a keep-alive client does when the proxy closes its connection while idle is chosen with
``resend``:

* ``resend=False`` (the default): nothing is hidden. A request sent on a reused connection the
  proxy had closed fails as ``closed`` or ``reset`` with ``nothing_received`` set;
  :meth:`LoadReport.idle_losses` picks those out.
* ``resend=True``: the client behaves as HTTP clients do (RFC 9112 §9.3.1 and §9.6): before
  reusing its connection it checks that the server has not closed it (then it opens a new one:
  counted in ``idle_closes``, not a request), and when a request on a *reused* connection gets
  not a byte of answer, it sends it once more on a new connection (counted in ``retries``; the
  second attempt's outcome is the request's outcome).

What the backends answer is in :mod:`support.load_handlers`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .clients import ConnectionClosed, HttpAnswer, HttpConnection
from .load_handlers import STREAM_TARGET, StreamSpec

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
CUT = (RESET, CLOSED)
"""The outcomes of a request whose connection ended under it."""
KEPT_BODY = 64
"""How many bytes of each answer's body a record keeps."""


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
    body: bytes = b""
    """The first :data:`KEPT_BODY` bytes of the answer's body."""
    detail: str = ""
    """The exception or the unexpected answer behind a failure."""
    reused: bool = False
    """Sent on a keep-alive connection that had already carried an answered request."""
    nothing_received: bool = False
    """A failure before a single byte of answer arrived."""
    retried: bool = False
    """The first attempt, on a reused keep-alive connection, got no answer and was resent."""

    @property
    def failed(self) -> bool:
        return self.outcome != OK

    @property
    def kind(self) -> str:
        """``keep-alive`` or ``new-connection``."""
        return self.client.rsplit(" ", 1)[0]


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
    """The client side port of the stream's connection (see
    :func:`~support.daemon.serving_process`)."""

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
    """Keep-alive connections found closed by the server while idle (reopened, no request
    lost); always 0 without ``resend``."""
    retries: int
    """Requests resent once after their reused connection ended without any answer; always 0
    without ``resend``."""
    clients: int
    """Keep-alive plus new-connection clients (at most that many requests are in flight)."""
    where: str = ""
    """The host and target the clients asked for, for messages."""

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

    def failures(self, *outcomes: str) -> list[RequestRecord]:
        """Every request that did not end ``ok`` (only those ending in one of ``outcomes``
        when given)."""
        return [r for r in self.records if r.failed and (not outcomes or r.outcome in outcomes)]

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.records)

    def answered_after(self, instant: float) -> list[RequestRecord]:
        """The requests started after ``instant`` that ended ``ok``."""
        return [r for r in self.records if r.outcome == OK and r.started > instant]

    def cut_at(self, instant: float) -> tuple[list[RequestRecord], list[RequestRecord]]:
        """Split the failures into those *cut at* ``instant`` — reset or closed, on a
        connection established before it, and ended after it (the requests of a process that
        died then) — and all the others."""
        cut: list[RequestRecord] = []
        others: list[RequestRecord] = []
        for record in self.failures():
            if record.outcome in CUT and 0.0 < record.connected_at <= instant <= record.ended:
                cut.append(record)
            else:
                others.append(record)
        return cut, others

    def idle_losses(self) -> list[RequestRecord]:
        """Requests lost because their reused keep-alive connection had been closed while
        idle: not a byte of answer, connection ended (what an HTTP client may resend)."""
        return [r for r in self.records if r.outcome in CUT and r.reused and r.nothing_received]

    def summary(self) -> str:
        """One paragraph for assertion messages: counts by outcome and the first failures."""
        text = (
            f"{len(self.records)} requests by {self.clients} clients ({self.where}): "
            f"{dict(self.outcomes())}, idle closes {self.idle_closes}, retries {self.retries}"
        )
        if self.stream is not None:
            text += f"; {self.stream.describe()}"
        failures = self.failures()[:5]
        if failures:
            text += "; first failures: " + "; ".join(
                f"[{r.client} conn {r.connection} reused={r.reused}] {r.outcome} "
                f"{r.status or ''} {r.detail}"
                for r in failures
            )
        return text


def assert_nothing_lost(report: LoadReport, *, minimum_ok: int = 300) -> None:
    """Zero failed and zero refused requests, the download completed, and enough requests
    went through for the check to mean something."""
    assert report.failures() == [], report.summary()
    assert report.refused == 0, report.summary()
    assert report.stream is not None and report.stream.complete, report.summary()
    assert report.ok > minimum_ok, report.summary()


# --------------------------------------------------------------------------- one exchange


def _connect_outcome(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return REFUSED
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return CONNECT_ERROR


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
    except ConnectionClosed as error:
        raise _Failure(CLOSED, str(error), nothing=not connection.buffer) from None
    except OSError as error:  # ConnectionResetError, BrokenPipeError…
        raise _Failure(RESET, repr(error), nothing=not connection.buffer) from None


class _KeptConnection:
    """A keep-alive client's connection: opened when needed, numbered, and whether it already
    carried an answered request."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.connection: HttpConnection | None = None
        self.serial = 0
        self.connected_at = 0.0
        self.used = False

    def open(self) -> HttpConnection:
        """The open connection, or a new one (raises :class:`OSError` when none opens)."""
        if self.connection is None:
            self.serial += 1
            self.connected_at = 0.0
            self.connection = HttpConnection(self.port, timeout=self.timeout)
            self.connected_at = time.monotonic()
            self.used = False
        return self.connection

    def drop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# --------------------------------------------------------------------------- the generator


class LoadGenerator:
    """Client load on ``127.0.0.1:port`` with ``Host: host``, as a context manager.

    ``keep_alive_clients`` and ``new_connection_clients`` threads send ``GET target`` until
    stopped, ``max_requests`` each, or ``max_seconds`` after the start; ``pause`` seconds
    separate two requests of a client (the backends run in the test process too and need the
    GIL). An answer is ``ok`` when its status is ``expected_status`` and, if
    ``expected_bodies`` is given, its body is one of them. ``resend`` chooses how keep-alive
    clients treat a connection the proxy closed while idle (see the module's documentation).
    When ``stream`` is given a stream client downloads ``stream_target`` once (its answer must
    be that :class:`~support.load_handlers.StreamSpec`).

    Entering starts the clients and returns once every client got a first ``ok`` answer and
    the stream's first bytes arrived (so the load is really in flight); leaving stops them.
    :meth:`stop` lets the clients run until the stream finished, then stops them and returns
    the final :class:`LoadReport`; :meth:`report` tells what happened so far.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str,
        target: str = "/",
        keep_alive_clients: int = 3,
        new_connection_clients: int = 3,
        stream: StreamSpec | None = None,
        stream_target: str = STREAM_TARGET,
        expected_status: int = 200,
        expected_bodies: Collection[bytes] | None = None,
        resend: bool = False,
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
        self.stream_spec = stream
        self.stream_target = stream_target
        self.expected_status = expected_status
        self.expected_bodies = None if expected_bodies is None else frozenset(expected_bodies)
        self.resend = resend
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
        if self.stream_spec is not None:
            spec = self.stream_spec
            self.stream_result = StreamResult(self.stream_target, spec.size, spec.sha256)
            self._stream_thread = threading.Thread(
                target=self._stream_client, args=(spec,), daemon=True, name="load stream"
            )
            self._stream_thread.start()
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop(stream_timeout=0.0)
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
        covers all the test did meanwhile — then stop the clients and report. Each client
        finishes its request in progress (bounded by the timeout). Stopping again returns the
        same report."""
        if self._final is not None:
            return self._final
        if self._stream_thread is not None and self.stream_spec is not None:
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
                where=f"{self.host}{self.target}",
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
            if len(fresh) >= count and {r.kind for r in fresh} >= kinds:
                return
            time.sleep(0.02)
        raise AssertionError(
            f"fewer than {count} requests succeeded within {timeout} s: {self.report().summary()}"
        )

    # ------------------------------------------------------------------ request clients

    def _running(self, sent: int) -> bool:
        return (
            not self._stop.is_set()
            and sent < self.max_requests
            and time.monotonic() < self._deadline
        )

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _rest(self, *, longer: bool) -> None:
        """The pause before the client's next request (``longer`` after a failure that came
        before any exchange could begin, so that a client does not spin)."""
        self._stop.wait(max(self.pause, 0.05) if longer else self.pause)

    def _answered(
        self,
        answer: HttpAnswer,
        name: str,
        serial: int,
        connected_at: float,
        started: float,
        **flags: bool,
    ) -> RequestRecord:
        """The record of a request that got an answer, ``ok`` or not as expected."""
        outcome, detail = OK, ""
        if answer.status != self.expected_status:
            outcome, detail = BAD_STATUS, f"{answer.status} {answer.body[:120]!r}"
        elif self.expected_bodies is not None and answer.body not in self.expected_bodies:
            outcome, detail = BAD_BODY, repr(answer.body[:120])
        return RequestRecord(
            name, serial, connected_at, started, time.monotonic(), outcome,
            status=answer.status, body=answer.body[:KEPT_BODY], detail=detail, **flags,
        )  # fmt: skip

    def _keep_alive_client(self, name: str) -> None:
        link = _KeptConnection(self.port, self.timeout)
        sent = 0
        try:
            while self._running(sent):
                sent += 1
                record = self._keep_alive_request(name, link)
                self._record(record)
                self._rest(longer=record.status is None)
        finally:
            link.drop()

    def _keep_alive_request(self, name: str, link: _KeptConnection) -> RequestRecord:
        """One request on the client's connection (opened when needed), resent once on a new
        connection when ``resend`` allows it."""
        started = time.monotonic()
        idle = link.connection
        if self.resend and link.used and idle is not None and idle.closed_while_idle():
            link.drop()
            with self._lock:
                self._idle_closes += 1
        retried = False
        while True:
            try:
                connection = link.open()
            except OSError as error:
                return RequestRecord(
                    name, link.serial, 0.0, started, time.monotonic(), _connect_outcome(error),
                    detail=repr(error), retried=retried,
                )  # fmt: skip
            reused = link.used
            try:
                answer = _exchange(connection, self.target, self.host)
            except _Failure as failure:
                link.drop()
                if self.resend and reused and failure.nothing and not retried:
                    retried = True  # the reused connection ended without a byte of answer
                    with self._lock:
                        self._retries += 1
                    continue
                return RequestRecord(
                    name, link.serial, link.connected_at, started, time.monotonic(),
                    failure.outcome, detail=failure.detail, reused=reused,
                    nothing_received=failure.nothing, retried=retried,
                )  # fmt: skip
            link.used = True
            record = self._answered(
                answer, name, link.serial, link.connected_at, started,
                reused=reused, retried=retried,
            )  # fmt: skip
            if (answer.header("connection") or "").lower() == "close":
                link.drop()
            return record

    def _new_connection_client(self, name: str) -> None:
        serial = 0
        while self._running(serial):
            serial += 1
            record = self._one_request(name, serial)
            self._record(record)
            self._rest(longer=record.connected_at == 0.0)

    def _one_request(self, name: str, serial: int) -> RequestRecord:
        """One request on a connection of its own, closed afterwards."""
        started = time.monotonic()
        try:
            connection = HttpConnection(self.port, timeout=self.timeout)
        except OSError as error:
            return RequestRecord(
                name, serial, 0.0, started, time.monotonic(), _connect_outcome(error),
                detail=repr(error),
            )  # fmt: skip
        connected_at = time.monotonic()
        try:
            answer = _exchange(connection, self.target, self.host)
        except _Failure as failure:
            return RequestRecord(
                name, serial, connected_at, started, time.monotonic(), failure.outcome,
                detail=failure.detail, nothing_received=failure.nothing,
            )  # fmt: skip
        finally:
            connection.close()
        return self._answered(answer, name, serial, connected_at, started)

    # ------------------------------------------------------------------ the stream client

    def _stream_client(self, spec: StreamSpec) -> None:
        """Download the stream once, checking every byte; never raises."""
        result = self.stream_result
        assert result is not None
        result.started = time.monotonic()
        digest = hashlib.sha256()
        # a slow producer: allow a generous wait between two pieces of the answer
        per_read = max(self.timeout, spec.seconds)
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
            for piece in connection.iter_chunked():
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
