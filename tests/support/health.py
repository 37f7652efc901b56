"""Backends and views for the tests of backend health (active checks and passive detection).

* :class:`HealthBackend`: an HTTP backend whose health uri answers what the test chooses (a
  status, after a delay), changed while it runs; it records every probe with its arrival time,
  apart from the requests it serves, and can be started again on the same port.
* :class:`Traffic`: a thread sending requests through the proxy, one after another, each on a
  fresh connection, and recording every outcome (so a test can prove that none failed).
* :func:`backends_health` and :func:`wait_state`: the ``list_backends`` view of a daemon.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from sozu_config import ListBackends
from sozu_config.responses import BackendHealth, BackendsContent

from .backends import Answer, HttpBackend, Received
from .clients import get
from .daemon import DaemonProcess

HEALTH_URI = "/health"
SLOW_TARGET = "/slow"


class HealthBackend(HttpBackend):
    """An HTTP backend for health checks.

    A request for ``health_uri`` is a probe: it is recorded in ``probes`` (arrival time on the
    monotonic clock, request) and answered ``health_status`` after ``health_delay`` seconds.
    Every other request is recorded in ``served`` and answered 200 with the backend's name
    (``/slow`` after ``slow_delay`` seconds). The three settings may be changed at any time.
    """

    def __init__(
        self,
        name: str,
        *,
        health_uri: str = HEALTH_URI,
        health_status: int = 200,
        health_delay: float = 0.0,
        slow_delay: float = 2.0,
    ) -> None:
        super().__init__(name, self._answer_for)
        self.health_uri = health_uri
        self.health_status = health_status
        self.health_delay = health_delay
        self.slow_delay = slow_delay
        self.probes: list[tuple[float, Received]] = []
        self.served: list[Received] = []

    def _answer_for(self, request: Received) -> Answer:
        if request.target == self.health_uri:
            self.probes.append((time.monotonic(), request))
            status = self.health_status
            body = b"" if status in (204, 304) else f"{self.name} {status}".encode()
            return Answer(status=status, body=body, delay=self.health_delay)
        self.served.append(request)
        delay = self.slow_delay if request.target == SLOW_TARGET else 0.0
        return Answer(body=self.name.encode(), delay=delay)

    def probe_count(self, since: float = 0.0) -> int:
        """Probes arrived at or after ``since`` (monotonic time)."""
        return sum(1 for arrived, _ in list(self.probes) if arrived >= since)

    def probe_requests(self, since: float = 0.0) -> list[Received]:
        return [request for arrived, request in list(self.probes) if arrived >= since]

    def restart(self) -> Self:
        """Listen again on the same port after :meth:`stop` (what it recorded is kept)."""
        port = self.port
        self._ready = threading.Event()
        self._loop = None
        self._server = None
        return self.start(port)


class Traffic:
    """Requests ``GET target`` for ``host`` sent to the proxy at ``port`` by a thread, one
    after another (``pause`` seconds apart), each on a fresh connection, until :meth:`stop` or
    ``limit`` seconds. ``outcomes`` holds (monotonic time, status, body) for each: status 0
    when the exchange failed (the error's text is the body)."""

    def __init__(
        self,
        port: int,
        host: str,
        *,
        target: str = "/",
        pause: float = 0.03,
        timeout: float = 5.0,
        limit: float = 60.0,
    ) -> None:
        self.port = port
        self.host = host
        self.target = target
        self.pause = pause
        self.timeout = timeout
        self.limit = limit
        self.outcomes: list[tuple[float, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                answer = get(self.port, self.target, host=self.host)
                outcome = (time.monotonic(), answer.status, answer.body)
            except OSError as error:  # reported through ``failures``
                outcome = (time.monotonic(), 0, repr(error).encode())
            self.outcomes.append(outcome)
            self._stop.wait(self.pause)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(self.timeout + 5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, since: float = 0.0) -> int:
        return sum(1 for at, _, _ in list(self.outcomes) if at >= since)

    def failures(self, since: float = 0.0) -> list[tuple[int, bytes]]:
        """The exchanges (status, body) that did not end in a 200."""
        return [(s, b) for at, s, b in list(self.outcomes) if at >= since and s != 200]

    def bodies(self, since: float = 0.0) -> list[bytes]:
        return [b for at, s, b in list(self.outcomes) if at >= since and s == 200]


def backends_health(daemon: DaemonProcess, cluster_id: str | None = None) -> list[BackendHealth]:
    """The ``list_backends`` answer of the daemon (of one cluster, when given)."""
    response = daemon.send(ListBackends(cluster_id=cluster_id), timeout=10)
    assert response.ok, f"list_backends: {response.message}"
    content = response.content
    assert isinstance(content, BackendsContent), content
    return list(content.backends)


def backend_health(daemon: DaemonProcess, cluster_id: str, backend_id: str) -> BackendHealth | None:
    """The ``list_backends`` entry of one backend, or None when it is not listed."""
    for entry in backends_health(daemon, cluster_id):
        if entry.backend_id == backend_id:
            return entry
    return None


def wait_state(
    daemon: DaemonProcess,
    cluster_id: str,
    backend_id: str,
    state: Any,
    *,
    timeout: float = 5.0,
) -> BackendHealth:
    """The ``list_backends`` entry of the backend once it is in ``state`` (a
    :class:`~sozu_config.responses.BackendState`, or None: no longer listed); fails after
    ``timeout`` seconds saying what it was."""
    deadline = time.monotonic() + timeout
    while True:
        entry = backend_health(daemon, cluster_id, backend_id)
        if (entry is None and state is None) or (entry is not None and entry.state == state):
            return entry  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{cluster_id}/{backend_id} not {state} within {timeout} s: {entry!r}"
            )
        time.sleep(0.05)
