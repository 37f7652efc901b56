"""The statsd export of ``[metrics]`` (reference §I.1): once a second, the main process asks
the workers for their metrics and sends what changed to a statsd server over UDP.

Three parts, the first two without I/O:

* :class:`StatsdLines` turns snapshots (the forms of :mod:`sozu_config.metrics`) into statsd
  lines. It remembers the last value it saw of every key, so that counters are sent as their
  increase since the last send (``|c``), gauges only when they changed (``|g``) and histograms
  as one timing line per bucket that gained observations, in milliseconds, with the statsd
  sample rate saying how many observations the line stands for (``request_time:1.5|ms|@0.25``:
  four observations of at most 1.5 ms). A key that did not change is not sent. The scopes of a
  worker that no worker answer carries any more are forgotten after :data:`FORGET_AFTER`.
* :func:`datagrams` packs lines into UDP payloads of at most :data:`MAX_DATAGRAM` bytes.
* :class:`StatsdExport` is the main process's task: it queries the workers, sends the
  datagrams from a non-blocking socket (a datagram that would block is dropped: the event loop
  never waits for statsd) and stops with the daemon.

Origins: ``WRK-NN`` for a worker's figures (its id, two digits at least), ``MAIN`` for the main
process's own (:func:`.metrics.main_figures`).

The workers' snapshots are cumulative (since the worker started, or since ``metrics clear``):
a value lower than the one remembered means the count started again, and its whole value is the
increase. A main process that takes over after an upgrade first records what the workers it
adopted have counted, without sending it (the previous main process sent it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sozu_config import requests as rq
from sozu_config.addresses import split_address
from sozu_config.config import MetricDetail, MetricsSettings
from sozu_config.metrics import BUCKET_BOUNDS_US, CATALOGUE, Kind, status_classes
from sozu_config.responses import MetricsContent
from sozu_config.state import ConfigState

from .metrics import main_figures
from .pool import WorkerPool

log = logging.getLogger("sozu.main")

__all__ = [
    "FORGET_AFTER",
    "MAX_DATAGRAM",
    "SEND_INTERVAL",
    "Figure",
    "StatsdExport",
    "StatsdLines",
    "datagrams",
    "flatten",
    "worker_origin",
]

SEND_INTERVAL = 1.0
"""Seconds between two sends (each key at most once per interval)."""
FORGET_AFTER = 600.0
"""Seconds after which the remembered values of a scope no answer carries are dropped."""
MAX_DATAGRAM = 1_400
"""Largest UDP payload sent, in bytes (fits a 1,500-byte MTU with the headers)."""
QUERY_TIMEOUT = 2.0
"""Seconds the export waits for the workers' metrics (a slow worker is left out of a send)."""
MAIN_ORIGIN = "MAIN"

# What a labelled counter is called in statsd, by catalogue name: sōzu's spelling.
_LABELLED_KEYS: dict[str, Callable[[str], str]] = {
    "http.status": lambda code: f"http.status.{code}",
    "http.answers": lambda code: f"http.{code}.errors",
    "tls.handshakes": lambda version: f"tls.handshakes.{version}",
}

ScopeKey = tuple[str, str | None, str | None]
"""(origin, cluster id, backend id) — the ids ``None`` for a proxy-wide or main scope."""


def worker_origin(worker_id: int | str) -> str:
    return f"WRK-{int(worker_id):02d}"


# --------------------------------------------------------------------------- snapshot → keys


class Figure(NamedTuple):
    """One statsd key of a snapshot, before it is compared with what was sent."""

    key: str
    """The statsd key: ``http.requests``, ``http.status.200``, ``request_time`` …"""
    type: str
    """``c`` (counter: ``value`` is cumulative), ``g`` (gauge) or ``ms`` (``value``: the
    observations so far in the bucket whose upper bound is ``timing``)."""
    value: int
    timing: str = ""


def _is_count(value: object) -> bool:
    return type(value) is int


def _millis(micros: float) -> str:
    return f"{micros / 1000:.10g}"


def _labelled(name: str, labels: Mapping[str, Any]) -> Iterator[tuple[str, Figure]]:
    spell = _LABELLED_KEYS.get(name)
    counts = {_tag(str(label)): n for label, n in labels.items() if _is_count(n)}
    for label, n in counts.items():
        key = spell(label) if spell is not None else f"{name}.{label}"
        yield key, Figure(key, "c", n)
    if name == "http.status":
        for cls, n in status_classes(counts).items():
            key = f"http.status.{cls}"
            yield key, Figure(key, "c", n)


_BOUNDS_MS = {str(bound): _millis(bound) for bound in BUCKET_BOUNDS_US}


def _histogram(name: str, histogram: Mapping[str, Any]) -> Iterator[tuple[str, Figure]]:
    buckets = histogram.get("buckets")
    if not isinstance(buckets, Mapping):
        return
    largest = histogram.get("max", 0)
    for bound, n in buckets.items():
        if not _is_count(n):
            continue
        timing = _BOUNDS_MS.get(bound)
        if timing is None and bound == "inf":
            timing = _millis(largest if _is_count(largest) else 0)
        elif timing is None and str(bound).isdigit():
            timing = _millis(int(bound))
        elif timing is None:
            continue
        yield f"{name}|{bound}", Figure(name, "ms", n, timing)


def _figures(name: str, value: Any) -> dict[str, Figure]:
    """The statsd keys of one metric, by the name they are remembered under (a histogram has
    one per bucket); none for a name the catalogue does not know or a value not in its kind's
    form."""
    info = CATALOGUE.get(name)
    if info is None:
        return {}
    if info.kind is Kind.COUNTER:
        return {name: Figure(name, "c", value)} if _is_count(value) else {}
    if info.kind is Kind.GAUGE:
        # a signed gauge value is a change in statsd: never below 0
        return {name: Figure(name, "g", max(value, 0))} if _is_count(value) else {}
    if not isinstance(value, Mapping):
        return {}
    if info.kind is Kind.LABELLED:
        return dict(_labelled(name, value))
    return dict(_histogram(name, value))


def flatten(snapshot: Mapping[str, Any]) -> dict[str, Figure]:
    """The statsd keys of one scope's snapshot (see :func:`_figures`)."""
    out: dict[str, Figure] = {}
    for name, value in snapshot.items():
        out.update(_figures(name, value))
    return out


# --------------------------------------------------------------------------- keys → lines


@dataclass(slots=True)
class _Remembered:
    snapshot: Mapping[str, Any]
    """The scope's last snapshot (compared whole first: an idle scope costs no more)."""
    seen: float


@dataclass(frozen=True, slots=True)
class LineFormat:
    """How a key is written: sōzu's hierarchical keys, or InfluxDB-style tags."""

    prefix: str
    tagged: bool
    version: str

    def name(self, scope: ScopeKey, key: str) -> str:
        origin, cluster_id, backend_id = scope
        if self.tagged:
            tags = f"origin={origin},version={self.version}"
            if cluster_id is None:
                return f"{self.prefix}.{key},{tags}"
            if backend_id is None:
                return f"{self.prefix}.cluster.{key},{tags},cluster_id={_tag(cluster_id)}"
            return (
                f"{self.prefix}.backend.{key},{tags},cluster_id={_tag(cluster_id)},"
                f"backend_id={_tag(backend_id)}"
            )
        if cluster_id is None:
            return f"{self.prefix}.{origin}.{key}"
        if backend_id is None:
            return f"{self.prefix}.{origin}.cluster.{_part(cluster_id)}.{key}"
        return (
            f"{self.prefix}.{origin}.cluster.{_part(cluster_id)}.backend.{_part(backend_id)}.{key}"
        )


# Ids hold no whitespace, but may hold the separators of the statsd line.
_LINE_SEPARATORS = str.maketrans(dict.fromkeys(":|@#,=", "_"))
_KEY_SEPARATORS = str.maketrans(dict.fromkeys(":|@#,=.", "_"))


def _tag(identifier: str) -> str:
    return identifier.translate(_LINE_SEPARATORS)


def _part(identifier: str) -> str:
    """An id as one component of a dotted key."""
    return identifier.translate(_KEY_SEPARATORS)


def _increase(before: int | None, now: int) -> int:
    """A cumulative count's increase (a count lower than the one remembered started again:
    all of it is new)."""
    return now - before if before is not None and before <= now else now


def _sampled(n: int) -> str:
    return "" if n == 1 else f"|@{1 / n:.10g}"


class StatsdLines:
    """Snapshots in, the statsd lines of what changed out (see the module's description).

    ``clock`` gives seconds (monotonic); ``baseline``: the ids of workers whose first snapshot
    is only recorded (counters and timings not sent), those a main process adopts from the
    previous one. The snapshots given are kept as they are (not copied): give new ones each
    time."""

    def __init__(
        self,
        settings: MetricsSettings,
        *,
        version: str,
        disable_cluster_metrics: bool = False,
        clock: Callable[[], float] = time.monotonic,
        baseline: Iterable[int] = (),
    ) -> None:
        self.format = LineFormat(settings.prefix, settings.tagged_metrics, version)
        self._name = functools.lru_cache(maxsize=1 << 16)(self.format.name)
        detail = MetricDetail.PROCESS if disable_cluster_metrics else settings.detail
        # no metric is frontend-scoped: ``frontend`` sends what ``cluster`` does
        self.clusters = detail is not MetricDetail.PROCESS
        self.backends = detail is MetricDetail.BACKEND
        self._clock = clock
        self._memory: dict[ScopeKey, _Remembered] = {}
        self._baseline = {worker_origin(w) for w in baseline}
        self._last_send: float | None = None

    def __len__(self) -> int:
        """The number of scopes remembered."""
        return len(self._memory)

    def remembers(self, scope: ScopeKey) -> bool:
        return scope in self._memory

    def lines(
        self,
        main: Mapping[str, Any],
        workers: Mapping[Any, Mapping[str, Any]],
        now: float | None = None,
        health: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The lines to send at ``now`` (default: the clock's time): ``main``, the main
        process's figures; ``workers``, by worker id, ``{"proxying": {…}, "clusters": {…}}``
        (the workers that answered); ``health``, the main process's health figures by cluster
        (as ``clusters``). Less than :data:`SEND_INTERVAL` after the previous send, nothing
        (what changed meanwhile is sent next time)."""
        now = self._clock() if now is None else now
        if self._last_send is not None and now - self._last_send < SEND_INTERVAL:
            return []
        self._last_send = now
        out = self._scope((MAIN_ORIGIN, None, None), main, now, baseline=False)
        for scope, snapshot in self._scopes(MAIN_ORIGIN, {"clusters": health or {}}):
            out += self._scope(scope, snapshot, now, baseline=False)
        for worker_id, data in workers.items():
            origin = worker_origin(worker_id)
            baseline = origin in self._baseline
            self._baseline.discard(origin)
            for scope, snapshot in self._scopes(origin, data):
                out += self._scope(scope, snapshot, now, baseline=baseline)
        self._forget(now)
        return out

    def _scopes(
        self, origin: str, data: Mapping[str, Any]
    ) -> Iterator[tuple[ScopeKey, Mapping[str, Any]]]:
        proxying = data.get("proxying")
        if isinstance(proxying, Mapping):
            yield (origin, None, None), proxying
        clusters = data.get("clusters")
        if not self.clusters or not isinstance(clusters, Mapping):
            return
        for cluster_id, scopes in clusters.items():
            if not isinstance(scopes, Mapping):
                continue
            cluster = scopes.get("cluster")
            if isinstance(cluster, Mapping):
                yield (origin, str(cluster_id), None), cluster
            backends = scopes.get("backends")
            if self.backends and isinstance(backends, Mapping):
                for backend_id, snapshot in backends.items():
                    if isinstance(snapshot, Mapping):
                        yield (origin, str(cluster_id), str(backend_id)), snapshot

    def _scope(
        self, scope: ScopeKey, snapshot: Mapping[str, Any], now: float, *, baseline: bool
    ) -> list[str]:
        remembered = self._memory.get(scope)
        if remembered is not None and remembered.snapshot == snapshot:
            remembered.seen = now
            return []
        previous = remembered.snapshot if remembered is not None else {}
        self._memory[scope] = _Remembered(snapshot, now)
        out: list[str] = []
        for name, value in snapshot.items():
            if name in previous and previous[name] == value:
                continue
            # keys missing from the previous snapshot count from zero
            last = _figures(name, previous[name]) if name in previous else {}
            out += self._changes(scope, _figures(name, value), last, baseline=baseline)
        return out

    def _changes(
        self,
        scope: ScopeKey,
        figures: Mapping[str, Figure],
        last: Mapping[str, Figure],
        *,
        baseline: bool,
    ) -> list[str]:
        """The lines of one metric's ``figures`` given their ``last`` values."""
        out: list[str] = []
        for memory_key, figure in figures.items():
            before = last[memory_key].value if memory_key in last else None
            if figure.type == "g":
                if before != figure.value:
                    out.append(f"{self._name(scope, figure.key)}:{figure.value}|g")
                continue
            if baseline and before is None:
                continue
            increase = _increase(before, figure.value)
            if increase <= 0:
                continue
            name = self._name(scope, figure.key)
            if figure.type == "c":
                out.append(f"{name}:{increase}|c")
            else:
                out.append(f"{name}:{figure.timing}|ms{_sampled(increase)}")
        return out

    def _forget(self, now: float) -> None:
        """Drop the scopes of workers and clusters no answer carried for
        :data:`FORGET_AFTER` seconds (a removed cluster, a worker gone)."""
        old = [
            scope
            for scope, remembered in self._memory.items()
            if (scope[0] != MAIN_ORIGIN or scope[1] is not None)
            and now - remembered.seen >= FORGET_AFTER
        ]
        for scope in old:
            del self._memory[scope]


# --------------------------------------------------------------------------- datagrams


def datagrams(lines: Iterable[str], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """``lines`` packed into payloads of at most ``limit`` bytes, each line ending with a
    newline (a line too long for any payload is left out)."""
    out: list[bytes] = []
    current = bytearray()
    for line in lines:
        encoded = line.encode() + b"\n"
        if len(encoded) > limit:
            log.debug("statsd line of %d bytes left out: %s", len(encoded), line[:80])
            continue
        if len(current) + len(encoded) > limit:
            out.append(bytes(current))
            current.clear()
        current += encoded
    if current:
        out.append(bytes(current))
    return out


# --------------------------------------------------------------------------- the task


@dataclass(slots=True)
class _Sent:
    datagrams: int = 0
    dropped: int = 0
    reported_at: float = field(default=float("-inf"))


class StatsdExport:
    """The main process's statsd task: every :data:`SEND_INTERVAL`, the workers' metrics and
    the main process's own figures, as statsd lines, to ``settings.address``.

    ``paused()`` true skips a send (during a main-process upgrade the workers' channels are
    being handed over)."""

    def __init__(
        self,
        settings: MetricsSettings,
        pool: WorkerPool,
        state: ConfigState,
        *,
        version: str,
        disable_cluster_metrics: bool = False,
        paused: Callable[[], bool] = lambda: False,
        baseline: Iterable[int] = (),
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.state = state
        self.paused = paused
        self.builder = StatsdLines(
            settings,
            version=version,
            disable_cluster_metrics=disable_cluster_metrics,
            baseline=baseline,
        )
        host, port = split_address(settings.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.target = (host, port)
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.sent = _Sent()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="statsd")
        log.info(
            "exporting metrics to statsd at %s (%s, prefix %s, detail %s)",
            self.settings.address,
            "tagged" if self.settings.tagged_metrics else "untagged",
            self.settings.prefix,
            self.settings.detail,
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.socket.close()

    async def _run(self) -> None:
        """Send, then wait a full :data:`SEND_INTERVAL` from the end of that send: two sends
        are never closer, however long the workers take to answer."""
        while True:
            next_send = time.monotonic() + SEND_INTERVAL
            while (wait := next_send - time.monotonic()) > 0:  # a timer may fire a bit early
                await asyncio.sleep(wait)
            if self.paused():
                continue
            try:
                await self.send_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the export must outlive any bad snapshot: say it, go on
                log.exception("the statsd export failed to send")

    async def send_once(self, now: float | None = None) -> None:
        """Query the workers and send what changed (``now``: the time of this send, see
        :meth:`StatsdLines.lines`)."""
        request = rq.QueryMetrics(no_clusters=not self.builder.clusters)
        answers = await self.pool.fanout(request, timeout=QUERY_TIMEOUT)
        workers: dict[int, dict[str, Any]] = {}
        for worker, answer in answers:
            content = answer.content
            # a worker whose metrics are disabled answers nothing: what it counted stays known
            if isinstance(content, MetricsContent) and (content.proxying or content.clusters):
                workers[worker.id] = {"proxying": content.proxying, "clusters": content.clusters}
        main = main_figures(self.state, len(self.pool))
        health = self.pool.health.metrics() if self.pool.health is not None else {}
        self.send(self.builder.lines(main, workers, now, health))

    def send(self, lines: Iterable[str]) -> None:
        """Send ``lines`` without ever waiting: a datagram the socket cannot take now is
        dropped."""
        for payload in datagrams(lines):
            try:
                self.socket.sendto(payload, self.target)
                self.sent.datagrams += 1
            except OSError as error:  # BlockingIOError included: dropped
                self.sent.dropped += 1
                self._report(error)

    def _report(self, error: OSError) -> None:
        """Log dropped datagrams, at most once a minute."""
        now = time.monotonic()
        if now - self.sent.reported_at >= 60.0:
            self.sent.reported_at = now
            log.warning(
                "statsd datagrams to %s dropped (%d so far): %s",
                self.settings.address,
                self.sent.dropped,
                error.strerror or error,
            )
