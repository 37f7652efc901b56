"""Client traffic that keeps a daemon busy while a test changes it, every request accounted for.

:class:`Traffic` runs, each in its own thread, *keep-alive* clients (one connection carrying
request after request, a new one only after a failure or a ``Connection: close`` answer) and
*new-connection* clients (a TCP connection per request, closed by the client after the
answer). Everything is bounded: requests per client, seconds overall, and a timeout on every
socket operation.

Clients make no attempt to hide what happened: a request is never resent. Each request ends
as one :class:`Exchange` whose ``outcome`` is ``OK`` (a complete answer, whatever its status:
the status and the start of the body are kept) or a failure:

* ``REFUSED``: the TCP connection was refused (nobody listening);
* ``CONNECT_ERROR``: the connection could not be opened for another reason;
* ``RESET``: the connection was reset before a complete answer;
* ``CLOSED``: the connection ended (EOF) before a complete answer;
* ``TIMEOUT``: no complete answer within the client's timeout.

A request sent on a reused keep-alive connection that the proxy had closed while it was idle
fails as ``CLOSED`` or ``RESET`` with ``nothing_received`` set (an HTTP client would resend
it, RFC 9112 §9.3.1); :meth:`Traffic.idle_losses` picks those out.

:func:`named_handler` is a backend handler for these tests: the body is the backend's name;
``/slow/<seconds>`` is answered after that delay, ``/drip/<seconds>`` is a chunked answer whose
:data:`DRIP_CHUNKS` chunks (each the name) are spread over that many seconds (an answer in
progress), everything else is answered at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .backends import Answer, Handler, Received
from .clients import ConnectionClosed, HttpConnection
from .load import CLOSED, CONNECT_ERROR, OK, REFUSED, RESET, SLOW_PREFIX, TIMEOUT

__all__ = [
    "CLOSED",
    "CONNECT_ERROR",
    "DRIP_CHUNKS",
    "DRIP_PREFIX",
    "OK",
    "REFUSED",
    "RESET",
    "SLOW_PREFIX",
    "TIMEOUT",
    "Exchange",
    "Traffic",
    "named_handler",
]

DRIP_PREFIX = "/drip/"
"""Targets ``/drip/<seconds>`` get a chunked answer spread over that many seconds."""
DRIP_CHUNKS = 10
"""Chunks of a ``/drip/`` answer: its body is the backend's name that many times."""


def named_handler(name: str) -> Handler:
    """Answer ``name`` as the body; ``/slow/<seconds>`` after that many seconds;
    ``/drip/<seconds>`` as :data:`DRIP_CHUNKS` chunks spread over that many seconds."""
    body = name.encode()

    def handle(request: Received) -> Answer:
        path = request.target.split("?", 1)[0]
        if path.startswith(SLOW_PREFIX):
            return Answer(body=body, delay=float(path[len(SLOW_PREFIX) :]))
        if path.startswith(DRIP_PREFIX):
            pause = float(path[len(DRIP_PREFIX) :]) / DRIP_CHUNKS

            async def drip() -> AsyncIterator[bytes]:
                for _ in range(DRIP_CHUNKS):
                    yield body
                    await asyncio.sleep(pause)

            return Answer(body=drip)
        return Answer(body=body)

    return handle


@dataclass(frozen=True)
class Exchange:
    """One request of a traffic client. Times are ``time.monotonic()``."""

    client: str
    """Which client sent it: ``keep-alive 1``, ``new-connection 2``…"""
    connection: int
    """Serial number (from 1) of the client's connection that carried it."""
    connected_at: float
    """When that connection was established (0.0 when it could not be)."""
    started: float
    ended: float
    outcome: str
    status: int | None = None
    body: bytes = b""
    """The first 64 bytes of the answer's body."""
    reused: bool = False
    """Sent on a keep-alive connection that had already carried an answered request."""
    nothing_received: bool = False
    """A failure before a single byte of answer arrived."""
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome != OK


def _exchange(
    connection: HttpConnection,
    *,
    target: str,
    host: str,
    client: str,
    serial: int,
    connected_at: float,
    started: float,
    reused: bool,
) -> tuple[Exchange, bool]:
    """One request on ``connection``: its :class:`Exchange`, and whether the connection may
    carry another request (not after a failure or a ``Connection: close`` answer)."""
    try:
        answer = connection.request("GET", target, host=host)
    except TimeoutError as error:
        outcome, detail = TIMEOUT, repr(error)
    except ConnectionClosed as error:
        outcome, detail = CLOSED, str(error)
    except OSError as error:  # ConnectionResetError, BrokenPipeError
        outcome, detail = RESET, repr(error)
    else:
        answered = Exchange(
            client, serial, connected_at, started, time.monotonic(), OK,
            status=answer.status, body=answer.body[:64], reused=reused,
        )  # fmt: skip
        return answered, (answer.header("connection") or "").lower() != "close"
    failed = Exchange(
        client, serial, connected_at, started, time.monotonic(), outcome,
        reused=reused, nothing_received=not connection.buffer, detail=detail,
    )  # fmt: skip
    return failed, False


class Traffic:
    """``keep_alive`` + ``new_connections`` client threads sending ``GET target`` with
    ``Host: host`` to ``127.0.0.1:port`` until stopped, ``max_requests`` per client, or
    ``max_seconds`` after the start. ``pause`` seconds separate two requests of a client (the
    backends run in the test process and need the GIL too).

    Entering starts the clients and returns once each got a first answer; leaving stops them.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str,
        target: str = "/",
        keep_alive: int = 2,
        new_connections: int = 2,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        pause: float = 0.01,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.host = host
        self.target = target
        self.keep_alive = keep_alive
        self.new_connections = new_connections
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self.timeout = timeout
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    # ------------------------------------------------------------------ life

    def start(self, *, ready_timeout: float = 15.0) -> Traffic:
        self._deadline = time.monotonic() + self.max_seconds
        for number in range(1, self.keep_alive + 1):
            self._spawn(f"keep-alive {number}", self._keep_alive_client)
        for number in range(1, self.new_connections + 1):
            self._spawn(f"new-connection {number}", self._new_connection_client)
        deadline = time.monotonic() + ready_timeout
        names = {t.name for t in self._threads}
        while time.monotonic() < deadline:
            if {e.client for e in self.exchanges if not e.failed} >= names:
                return self
            time.sleep(0.02)
        self.stop()
        raise AssertionError(
            f"the traffic did not get going within {ready_timeout} s: {self.summary()}"
        )

    def _spawn(self, name: str, run: Callable[[str], None]) -> None:
        thread = threading.Thread(target=run, args=(name,), daemon=True, name=name)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> Traffic:
        """Stop the clients (each finishes its request in progress, bounded by the timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout * 2 + 5)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise AssertionError(f"traffic clients did not stop: {stuck}")
        return self

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_progress(self, count: int = 20, timeout: float = 15.0) -> None:
        """Wait until ``count`` more requests were answered, at least one per client kind
        (the proxy still serves both reused and new connections)."""
        start = len(self.exchanges)
        kinds = {t.name.rsplit(" ", 1)[0] for t in self._threads}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [e for e in self.exchanges[start:] if not e.failed]
            if len(fresh) >= count and {e.client.rsplit(" ", 1)[0] for e in fresh} >= kinds:
                return
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} answers within {timeout} s: {self.summary()}")

    def _running(self, sent: int) -> bool:
        return (
            not self._stop.is_set()
            and sent < self.max_requests
            and time.monotonic() < self._deadline
        )

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    # ------------------------------------------------------------------ clients

    def _open(self) -> HttpConnection | tuple[str, str]:
        try:
            return HttpConnection(self.port, timeout=self.timeout)
        except ConnectionRefusedError as error:
            return REFUSED, repr(error)
        except TimeoutError as error:
            return TIMEOUT, repr(error)
        except OSError as error:
            return CONNECT_ERROR, repr(error)

    def _keep_alive_client(self, name: str) -> None:
        connection: HttpConnection | None = None
        serial = 0
        connected_at = 0.0
        reused = False
        sent = 0
        try:
            while self._running(sent):
                sent += 1
                started = time.monotonic()
                if connection is None:
                    serial += 1
                    opened = self._open()
                    if isinstance(opened, tuple):
                        outcome, detail = opened
                        now = time.monotonic()
                        self._record(
                            Exchange(name, serial, 0.0, started, now, outcome, detail=detail)
                        )
                        self._stop.wait(max(self.pause, 0.05))
                        continue
                    connection, connected_at, reused = opened, time.monotonic(), False
                exchange, reusable = _exchange(
                    connection, target=self.target, host=self.host, client=name,
                    serial=serial, connected_at=connected_at, started=started, reused=reused,
                )  # fmt: skip
                self._record(exchange)
                failed = exchange.failed
                if reusable:
                    reused = True
                else:
                    connection.close()
                    connection = None
                self._stop.wait(self.pause if not failed else max(self.pause, 0.05))
        finally:
            if connection is not None:
                connection.close()

    def _new_connection_client(self, name: str) -> None:
        serial = 0
        while self._running(serial):
            serial += 1
            started = time.monotonic()
            opened = self._open()
            if isinstance(opened, tuple):
                outcome, detail = opened
                self._record(
                    Exchange(name, serial, 0.0, started, time.monotonic(), outcome, detail=detail)
                )
                self._stop.wait(max(self.pause, 0.05))
                continue
            connected_at = time.monotonic()
            try:
                exchange, _ = _exchange(
                    opened, target=self.target, host=self.host, client=name, serial=serial,
                    connected_at=connected_at, started=started, reused=False,
                )  # fmt: skip
            finally:
                opened.close()
            self._record(exchange)
            self._stop.wait(self.pause)

    # ------------------------------------------------------------------ results

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def count(self, outcome: str) -> int:
        return sum(1 for e in self.exchanges if e.outcome == outcome)

    def failures(self, *outcomes: str) -> list[Exchange]:
        """Failed requests (only those ending in one of ``outcomes`` when given)."""
        return [e for e in self.exchanges if e.failed and (not outcomes or e.outcome in outcomes)]

    def answers(self) -> Counter[tuple[int | None, bytes]]:
        """Answered requests by (status, body)."""
        return Counter((e.status, e.body) for e in self.exchanges if not e.failed)

    def not_ok(self, status: int = 200, bodies: set[bytes] | None = None) -> list[Exchange]:
        """Requests that failed, or were answered with another status or an unexpected body."""
        return [
            e
            for e in self.exchanges
            if e.failed or e.status != status or (bodies is not None and e.body not in bodies)
        ]

    def idle_losses(self) -> list[Exchange]:
        """Requests lost because their reused keep-alive connection had been closed while
        idle: not a byte of answer, connection ended (what a client may resend)."""
        return [
            e
            for e in self.exchanges
            if e.outcome in (CLOSED, RESET) and e.reused and e.nothing_received
        ]

    def cut_at(self, instant: float) -> list[Exchange]:
        """Failures of requests whose connection was established before ``instant`` and that
        ended after it, reset or closed (the requests of a process that died then)."""
        return [
            e
            for e in self.exchanges
            if e.outcome in (CLOSED, RESET) and 0.0 < e.connected_at <= instant <= e.ended
        ]

    def summary(self) -> str:
        """One paragraph for assertion messages: counts by outcome and the first problems."""
        exchanges = self.exchanges
        outcomes = Counter(e.outcome if e.failed else f"{e.status}" for e in exchanges)
        text = (
            f"{len(exchanges)} requests by {len(self._threads)} clients "
            f"({self.host}{self.target}): {dict(outcomes)}"
        )
        problems = [e for e in exchanges if e.failed or e.status != 200][:5]
        if problems:
            text += "; first problems: " + "; ".join(
                f"[{e.client} conn {e.connection} reused={e.reused}] "
                f"{e.outcome} {e.status or ''} {e.detail or e.body!r}"
                for e in problems
            )
        return text
