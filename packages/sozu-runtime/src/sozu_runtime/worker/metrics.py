"""A worker's metrics (the vocabulary is :mod:`sozu_config.metrics`).

Recording costs one ``list.append`` per exchange: when an exchange ends, its figures (status,
times, bytes) go as one tuple into the pending samples of **one** :class:`Counters` — its
backend's, else its cluster's own, else the worker's own. Samples are folded into the counters
and the bounded histograms (:meth:`Counters.fold`: C-speed ``sum``, ``Counter``, ``sorted`` and
one ``bisect`` per bucket bound, whatever the number of samples) when the metrics are read,
every sweep of the worker, and when a scope holds :data:`FOLD_AT` of them, so memory stays
bounded. Times come from one ``monotonic_ns`` read per phase. Cluster and proxy-wide figures
are sums computed when asked (:meth:`Metrics.snapshot`), as are the gauges (open connections,
requests in flight), read from the live objects.

A backend removed from the configuration has its figures added to its cluster's own
(:meth:`Metrics.retire_backend`), and a removed cluster's go to the worker's own, so that the
totals never go down; connections still open on them go on counting there.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Protocol

from sozu_config.metrics import BUCKET_BOUNDS_NS, BUCKET_BOUNDS_US, merge_scope

__all__ = [
    "FOLD_AT",
    "ClusterCounters",
    "Counters",
    "Histogram",
    "Metrics",
    "Sample",
]

FOLD_AT: Final = 1024  # pending samples of one scope folded at once
_BOUNDS: Final = BUCKET_BOUNDS_NS
_LABELS: Final = (*(str(bound) for bound in BUCKET_BOUNDS_US), "inf")

Sample = tuple[int, int, int, int, int, int, int, int]
"""One ended exchange, as the data path records it: (status, request time, service time,
backend response time (<= 0: no backend answered), bytes from the client, to the client, from
the backend, to the backend); times in ns."""


class Histogram:
    """Observations in nanoseconds, by bucket index (see ``BUCKET_BOUNDS_NS``)."""

    __slots__ = ("buckets", "maximum", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.total = 0
        self.maximum = 0

    def observe(self, ns: int) -> None:
        buckets = self.buckets
        index = bisect_left(_BOUNDS, ns)
        buckets[index] = buckets.get(index, 0) + 1
        self.total += ns
        self.maximum = max(self.maximum, ns)

    def observe_sorted(self, values: list[int]) -> None:
        """Observe every value of ``values`` (sorted): one bisection per bucket bound."""
        if not values:
            return
        buckets = self.buckets
        count = len(values)
        start = 0
        first = bisect_left(_BOUNDS, values[0])
        for index in range(first, len(_BOUNDS)):
            end = bisect_right(values, _BOUNDS[index], start)
            if end > start:
                buckets[index] = buckets.get(index, 0) + end - start
                start = end
                if end == count:
                    break
        if start < count:  # past the last bound
            index = len(_BOUNDS)
            buckets[index] = buckets.get(index, 0) + count - start
        self.total += sum(values)
        self.maximum = max(self.maximum, values[-1])

    def add(self, other: Histogram) -> None:
        buckets = self.buckets
        for index, n in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def snapshot(self) -> dict[str, Any]:
        return {
            "count": sum(self.buckets.values()),
            "sum": self.total // 1000,
            "max": self.maximum // 1000,
            "buckets": {_LABELS[i]: n for i, n in sorted(self.buckets.items())},
        }


def _add_labelled(into: dict[int | str, int], values: Mapping[int | str, int]) -> None:
    for key, n in values.items():
        into[key] = into.get(key, 0) + n


class Counters:
    """The counters and histograms of one scope (a backend, a cluster's own, the worker's
    own), and its pending ``samples`` (see :meth:`fold`)."""

    __slots__ = (
        "answers",
        "back_bytes_in",
        "back_bytes_out",
        "bytes_in",
        "bytes_out",
        "connect_errors",
        "connect_time",
        "connections_opened",
        "request_time",
        "requests",
        "response_time",
        "retries",
        "samples",
        "service_time",
        "statuses",
        "tcp_sessions",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Every figure back to zero."""
        self.samples: list[Sample] = []
        self.requests = 0
        self.statuses: dict[int | str, int] = {}
        self.answers: dict[int | str, int] = {}
        self.retries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.back_bytes_in = 0
        self.back_bytes_out = 0
        self.connections_opened = 0
        self.connect_errors = 0
        self.tcp_sessions = 0
        self.request_time = Histogram()
        self.service_time = Histogram()
        self.response_time = Histogram()
        self.connect_time = Histogram()

    def connection_opened(self, elapsed_ns: int) -> None:
        """A backend connection opened in ``elapsed_ns``."""
        self.connections_opened += 1
        self.connect_time.observe(elapsed_ns)

    def fold(self) -> None:
        """Count the pending samples (see :data:`Sample`) into the counters and histograms."""
        samples = self.samples
        if not samples:
            return
        self.samples = []
        statuses, totals, services, responses, *sizes = zip(*samples, strict=True)
        self.requests += len(samples)
        _add_labelled(self.statuses, Counter(statuses))
        self.bytes_in += sum(sizes[0])
        self.bytes_out += sum(sizes[1])
        self.back_bytes_in += sum(sizes[2])
        self.back_bytes_out += sum(sizes[3])
        self.request_time.observe_sorted(sorted(totals))
        self.service_time.observe_sorted(sorted(services))
        answered = sorted(responses)
        self.response_time.observe_sorted(answered[bisect_right(answered, 0) :])

    def add(self, other: Counters) -> None:
        """Add ``other``'s figures to these."""
        other.fold()
        self.fold()
        self.requests += other.requests
        _add_labelled(self.statuses, other.statuses)
        _add_labelled(self.answers, other.answers)
        self.retries += other.retries
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.back_bytes_in += other.back_bytes_in
        self.back_bytes_out += other.back_bytes_out
        self.connections_opened += other.connections_opened
        self.connect_errors += other.connect_errors
        self.tcp_sessions += other.tcp_sessions
        self.request_time.add(other.request_time)
        self.service_time.add(other.service_time)
        self.response_time.add(other.response_time)
        self.connect_time.add(other.connect_time)

    def snapshot(self) -> dict[str, Any]:
        self.fold()
        return {
            "http.requests": self.requests,
            "http.status": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "http.answers": {str(k): v for k, v in sorted(self.answers.items(), key=str)},
            "http.retries": self.retries,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "back_bytes_in": self.back_bytes_in,
            "back_bytes_out": self.back_bytes_out,
            "backend.connections.opened": self.connections_opened,
            "backend.connections.error": self.connect_errors,
            "tcp.sessions": self.tcp_sessions,
            "request_time": self.request_time.snapshot(),
            "service_time": self.service_time.snapshot(),
            "backend_response_time": self.response_time.snapshot(),
            "backend_connection_time": self.connect_time.snapshot(),
        }


class LiveBackend(Protocol):
    """What the gauges read of a backend (:class:`.balancing.Backend`)."""

    backend_id: str
    active_connections: int
    active_requests: int
    failures: int


class ClusterCounters:
    """A cluster's own figures (exchanges that reached no backend) and its backends'."""

    __slots__ = ("backends", "own")

    def __init__(self) -> None:
        self.own = Counters()
        self.backends: dict[str, Counters] = {}


def _gauges(backends: Iterable[LiveBackend]) -> dict[str, int]:
    connections = requests = failures = 0
    for backend in backends:
        connections += backend.active_connections
        requests += backend.active_requests
        failures += backend.failures
    return {
        "backend.connections": connections,
        "http.active_requests": requests,
        "backend.failures": failures,
    }


class Metrics:
    """The worker's metrics: its own counters (proxy scope only), and by cluster and backend
    the :class:`Counters` the data path records into."""

    __slots__ = (
        "accepted",
        "backend_parse_errors",
        "backpressure",
        "clusters",
        "enabled",
        "evicted_connections",
        "frontend_parse_errors",
        "h2_backend_streams",
        "h2_connections",
        "h2_floods",
        "h2_protocol_errors",
        "h2_refused_streams",
        "h2_streams",
        "own",
        "per_ip_refusals",
        "proxy_protocol_errors",
        "tls_handshake_failures",
        "tls_handshakes",
    )

    def __init__(self) -> None:
        self.enabled = True
        self.clusters: dict[str, ClusterCounters] = {}
        self.own = Counters()
        self.clear()

    def clear(self) -> None:
        """Every figure back to zero (the objects the data path holds are kept)."""
        self.own.reset()
        self.accepted = 0
        self.frontend_parse_errors = 0
        self.backend_parse_errors = 0
        self.backpressure = 0
        self.tls_handshakes: dict[str, int] = {}
        self.tls_handshake_failures = 0
        self.evicted_connections = 0
        self.per_ip_refusals = 0
        self.proxy_protocol_errors = 0
        self.h2_connections = self.h2_streams = self.h2_refused_streams = 0
        self.h2_floods = self.h2_protocol_errors = 0
        self.h2_backend_streams = 0
        for cluster in self.clusters.values():
            cluster.own.reset()
            for counters in cluster.backends.values():
                counters.reset()

    # ----------------------------------------------------------------- the registry

    def cluster(self, cluster_id: str) -> Counters:
        """The own counters of ``cluster_id`` (created on first use)."""
        cluster = self.clusters.get(cluster_id)
        if cluster is None:
            cluster = self.clusters[cluster_id] = ClusterCounters()
        return cluster.own

    def backend(self, cluster_id: str, backend_id: str) -> Counters:
        """The counters of a backend (created on first use; the same object while the backend
        stays in the configuration, whatever its address)."""
        self.cluster(cluster_id)
        backends = self.clusters[cluster_id].backends
        counters = backends.get(backend_id)
        if counters is None:
            counters = backends[backend_id] = Counters()
        return counters

    def retire_backend(self, cluster_id: str, backend_id: str) -> Counters:
        """A backend left the configuration: its figures go to its cluster's own counters,
        returned (where its remaining connections count from now on)."""
        cluster = self.clusters.get(cluster_id)
        if cluster is None:
            return self.own
        counters = cluster.backends.pop(backend_id, None)
        if counters is not None:
            cluster.own.add(counters)
        return cluster.own

    def retire_cluster(self, cluster_id: str) -> Counters:
        """A cluster left the configuration: its figures go to the worker's own counters,
        returned."""
        cluster = self.clusters.pop(cluster_id, None)
        if cluster is not None:
            self.own.add(cluster.own)
            for counters in cluster.backends.values():
                self.own.add(counters)
        return self.own

    # ----------------------------------------------------------------- reading

    def fold(self) -> None:
        """Fold the pending samples of every scope (called by the worker's sweeper)."""
        self.own.fold()
        for cluster in self.clusters.values():
            cluster.own.fold()
            for counters in cluster.backends.values():
                counters.fold()

    def cluster_snapshots(
        self, backends: Mapping[str, Iterable[LiveBackend]]
    ) -> Iterator[tuple[str, dict[str, Any], dict[str, dict[str, Any]]]]:
        """``(cluster id, cluster scope, {backend id: backend scope})`` of each cluster, in
        id order. ``backends``: the live backends by cluster (for the gauges)."""
        for cluster_id, cluster in sorted(self.clusters.items()):
            live = {b.backend_id: b for b in backends.get(cluster_id, ())}
            scope = cluster.own.snapshot()
            scope.update(_gauges(()))
            chosen: dict[str, dict[str, Any]] = {}
            for backend_id, counters in sorted(cluster.backends.items()):
                values = counters.snapshot()
                backend = live.get(backend_id)
                values.update(_gauges((backend,) if backend is not None else ()))
                merge_scope(scope, values)
                chosen[backend_id] = values
            yield cluster_id, scope, chosen

    def proxy_snapshot(
        self, clusters: Iterable[dict[str, Any]], gauges: dict[str, int]
    ) -> dict[str, Any]:
        """The worker's proxy-wide figures: its own, the sum of every cluster scope
        (``clusters``: all of them, unfiltered) and the gauges read from live objects."""
        scope = self.own.snapshot()
        scope.update(_gauges(()))
        for cluster in clusters:
            merge_scope(scope, cluster)
        scope.update(gauges)
        scope.update(
            {
                "client.connections.accepted": self.accepted,
                "client.connections.evicted": self.evicted_connections,
                "client.per_ip_refusals": self.per_ip_refusals,
                "listener.connection_capped": self.backpressure,
                "http.frontend_parse_errors": self.frontend_parse_errors,
                "http.backend_parse_errors": self.backend_parse_errors,
                "tls.handshakes": dict(sorted(self.tls_handshakes.items())),
                "tls.handshake_failures": self.tls_handshake_failures,
                "proxy_protocol.errors": self.proxy_protocol_errors,
                "http2.connections": self.h2_connections,
                "http2.streams": self.h2_streams,
                "http2.refused_streams": self.h2_refused_streams,
                "http2.flood_goaways": self.h2_floods,
                "http2.protocol_errors": self.h2_protocol_errors,
                "http2.backend_streams": self.h2_backend_streams,
            }
        )
        return scope
