"""The metrics vocabulary: every metric's name, kind and meaning, the histogram buckets, and the
arithmetic on metric snapshots (merge, filter, percentiles) shared by the workers that count,
the main process that merges and exports, and the tools that read ``query_metrics``.

A **snapshot** of one scope is a dictionary ``name → value`` where the value's form follows the
metric's :class:`Kind`:

* ``counter`` and ``gauge``: an int;
* ``labelled``: a dictionary ``label value → int`` (e.g. ``http.status``: ``{"200": 12}``);
* ``histogram``: ``{"count": n, "sum": µs, "max": µs, "buckets": {"<upper bound µs>": n}}``
  with sparse, non-cumulative buckets whose upper bounds are :data:`BUCKET_BOUNDS_US` (a
  value ``v`` falls in the first bucket whose bound is ``>= v``; past the last bound, in
  ``"inf"``). Answers of the main process add ``p50``, ``p90``, ``p99``, ``p99.9`` (µs, the
  bucket's upper bound, at most ``max``) to each histogram.

Scopes: ``proxy`` (a worker's totals, or all workers merged), ``cluster`` (one cluster's
totals, its backends included) and ``backend``. Times are microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "BUCKET_BOUNDS_NS",
    "BUCKET_BOUNDS_US",
    "CATALOGUE",
    "PERCENTILES",
    "PROMETHEUS_BOUNDS_US",
    "Kind",
    "MetricInfo",
    "Scope",
    "cumulative_buckets",
    "filter_names",
    "histogram_percentile",
    "merge_scope",
    "merge_value",
    "prometheus_name",
    "reference_table",
    "select_clusters",
    "status_classes",
    "with_percentiles",
]


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    LABELLED = "labelled"  # a counter per label value
    HISTOGRAM = "histogram"


class Scope(StrEnum):
    MAIN = "main"
    PROXY = "proxy"
    CLUSTER = "cluster"
    BACKEND = "backend"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One metric: its kind, the scopes it appears at, what it counts, and for a labelled
    counter the name of its label (``code``, ``version`` …)."""

    name: str
    kind: Kind
    scopes: tuple[Scope, ...]
    help: str
    label: str = ""


_P = (Scope.PROXY,)
_PCB = (Scope.PROXY, Scope.CLUSTER, Scope.BACKEND)
_PC = (Scope.PROXY, Scope.CLUSTER)
_M = (Scope.MAIN,)

CATALOGUE: Final[dict[str, MetricInfo]] = {
    m.name: m
    for m in (
        # ------------------------------------------------------------ HTTP exchanges (P, C, B)
        MetricInfo("http.requests", Kind.COUNTER, _PCB, "HTTP requests answered"),
        MetricInfo("http.status", Kind.LABELLED, _PCB, "HTTP answers by status code", label="code"),
        MetricInfo(
            "http.answers",
            Kind.LABELLED,
            _PCB,
            "answers written by the proxy itself (not by a backend), by status code",
            label="code",
        ),
        MetricInfo("http.retries", Kind.COUNTER, _PCB, "requests sent again to a backend"),
        MetricInfo("http.active_requests", Kind.GAUGE, _PCB, "requests in flight on backends"),
        MetricInfo("bytes_in", Kind.COUNTER, _PCB, "bytes received from clients"),
        MetricInfo("bytes_out", Kind.COUNTER, _PCB, "bytes sent to clients"),
        MetricInfo("back_bytes_in", Kind.COUNTER, _PCB, "bytes received from backends"),
        MetricInfo("back_bytes_out", Kind.COUNTER, _PCB, "bytes sent to backends"),
        MetricInfo(
            "request_time",
            Kind.HISTOGRAM,
            _PCB,
            "time from a request's first byte to the last byte of its answer (µs)",
        ),
        MetricInfo(
            "service_time",
            Kind.HISTOGRAM,
            _PCB,
            "time the proxy spent on an exchange, waits for the backend left out (µs)",
        ),
        MetricInfo(
            "backend_response_time",
            Kind.HISTOGRAM,
            _PCB,
            "time from the request sent to the first byte of the backend's answer (µs)",
        ),
        MetricInfo(
            "backend_connection_time",
            Kind.HISTOGRAM,
            _PCB,
            "time to open a new backend connection (µs)",
        ),
        # ------------------------------------------------------------ backend connections
        MetricInfo("backend.connections", Kind.GAUGE, _PCB, "open backend connections"),
        MetricInfo("backend.connections.opened", Kind.COUNTER, _PCB, "backend connections opened"),
        MetricInfo(
            "backend.connections.error", Kind.COUNTER, _PCB, "backend connections that failed"
        ),
        MetricInfo(
            "backend.down",
            Kind.GAUGE,
            _PCB,
            "backends down, by health check or failed connections (1 for a backend, a count "
            "above; counted once, by the main process)",
        ),
        MetricInfo(
            "backend.failures",
            Kind.GAUGE,
            _PCB,
            "consecutive connection failures (of a backend; summed above)",
        ),
        # ------------------------------------------------------------ health (main process)
        MetricInfo("health_check.success", Kind.COUNTER, _PCB, "active health checks passed"),
        MetricInfo("health_check.failure", Kind.COUNTER, _PCB, "active health checks failed"),
        MetricInfo("health_check.up", Kind.COUNTER, _PCB, "times a backend went up again"),
        MetricInfo("health_check.down", Kind.COUNTER, _PCB, "times a backend went down"),
        MetricInfo("health_check.healthy_backends", Kind.GAUGE, _PC, "backends up (not down)"),
        # ------------------------------------------------------------ TCP
        MetricInfo("tcp.sessions", Kind.COUNTER, _PCB, "TCP sessions proxied"),
        MetricInfo("tcp.active_sessions", Kind.GAUGE, _P, "TCP sessions open"),
        # ------------------------------------------------------------ the worker (P)
        MetricInfo("client.connections", Kind.GAUGE, _P, "open client connections"),
        MetricInfo("client.connections.accepted", Kind.COUNTER, _P, "client connections accepted"),
        MetricInfo(
            "client.connections.evicted",
            Kind.COUNTER,
            _P,
            "idle client connections closed to make room for new ones",
        ),
        MetricInfo(
            "client.per_ip_refusals",
            Kind.COUNTER,
            _P,
            "connections refused by a per-address connection limit",
        ),
        MetricInfo(
            "listener.connection_capped",
            Kind.COUNTER,
            _P,
            "times accepting stopped because max_connections was reached",
        ),
        MetricInfo(
            "http.frontend_parse_errors", Kind.COUNTER, _P, "client requests that did not parse"
        ),
        MetricInfo(
            "http.backend_parse_errors", Kind.COUNTER, _P, "backend answers that did not parse"
        ),
        MetricInfo(
            "tls.handshakes", Kind.LABELLED, _P, "TLS handshakes completed", label="version"
        ),
        MetricInfo("tls.handshake_failures", Kind.COUNTER, _P, "TLS handshakes that failed"),
        MetricInfo("proxy_protocol.errors", Kind.COUNTER, _P, "malformed PROXY protocol headers"),
        MetricInfo(
            "http2.connections", Kind.COUNTER, _P, "client connections that chose HTTP/2 (ALPN h2)"
        ),
        MetricInfo("http2.streams", Kind.COUNTER, _P, "HTTP/2 streams opened by clients"),
        MetricInfo("http2.active_streams", Kind.GAUGE, _P, "HTTP/2 streams open"),
        MetricInfo(
            "http2.refused_streams",
            Kind.COUNTER,
            _P,
            "HTTP/2 streams refused (too many at once, or after GOAWAY)",
        ),
        MetricInfo(
            "http2.flood_goaways",
            Kind.COUNTER,
            _P,
            "HTTP/2 connections ended for a flood (GOAWAY ENHANCE_YOUR_CALM)",
        ),
        MetricInfo(
            "http2.protocol_errors",
            Kind.COUNTER,
            _P,
            "HTTP/2 connections ended for a protocol error of the client",
        ),
        MetricInfo(
            "http2.backend_connections",
            Kind.GAUGE,
            _P,
            "HTTP/2 (h2c) connections to backends open",
        ),
        MetricInfo(
            "http2.backend_streams",
            Kind.COUNTER,
            _P,
            "HTTP/2 streams opened to backends (one per request to an http2 cluster)",
        ),
        # ------------------------------------------------------------ the main process
        MetricInfo("workers", Kind.GAUGE, _M, "worker processes"),
        MetricInfo("configuration.clusters", Kind.GAUGE, _M, "clusters in the state"),
        MetricInfo("configuration.frontends", Kind.GAUGE, _M, "frontends in the state"),
        MetricInfo("configuration.backends", Kind.GAUGE, _M, "backends in the state"),
        MetricInfo("state.version", Kind.GAUGE, _M, "version of the routing state"),
    )
}


# --------------------------------------------------------------------------- histograms

# 18 steps per decade (±6 %) from 10 µs to 900 s: bucket upper bounds.
_STEPS: Final = (10, 11, 12, 13, 15, 17, 20, 22, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90)
BUCKET_BOUNDS_US: Final[tuple[int, ...]] = tuple(
    step * 10**decade for decade in range(8) for step in _STEPS
)
BUCKET_BOUNDS_NS: Final[list[int]] = [bound * 1000 for bound in BUCKET_BOUNDS_US]
"""The same bounds in nanoseconds (what the workers' clock gives; ``bisect`` needs a list)."""
PROMETHEUS_BOUNDS_US: Final[tuple[int, ...]] = (
    *(step * 10**decade for decade in range(1, 7) for step in (10, 25, 50)),
    100_000_000,
)
"""The buckets exposed to Prometheus: 1, 2.5 and 5 per decade from 100 µs to 100 s, a subset
of :data:`BUCKET_BOUNDS_US` so that their cumulative counts are exact."""
PERCENTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))


def _bucket_bound(key: str) -> float:
    return float("inf") if key == "inf" else int(key)


def histogram_percentile(histogram: Mapping[str, Any], quantile: float) -> int:
    """The ``quantile`` (0..1) of a histogram snapshot, as the upper bound of the bucket that
    holds it (capped at the maximum seen); 0 for an empty histogram."""
    count = histogram.get("count", 0)
    if not count:
        return 0
    rank = quantile * count
    seen = 0
    maximum = int(histogram.get("max", 0))
    for key, n in sorted(histogram["buckets"].items(), key=lambda item: _bucket_bound(item[0])):
        seen += n
        if seen >= rank:
            bound = _bucket_bound(key)
            return maximum if bound == float("inf") else min(int(bound), maximum)
    return maximum


def cumulative_buckets(
    histogram: Mapping[str, Any], bounds: Iterable[int] = PROMETHEUS_BOUNDS_US
) -> list[tuple[int, int]]:
    """``(upper bound µs, observations <= bound)`` at each of ``bounds`` (all members of
    :data:`BUCKET_BOUNDS_US`, so the counts are exact): what Prometheus' ``_bucket`` shows."""
    buckets = sorted(
        ((_bucket_bound(k), n) for k, n in histogram.get("buckets", {}).items()),
        key=lambda item: item[0],
    )
    out: list[tuple[int, int]] = []
    index = 0
    seen = 0
    for bound in bounds:
        while index < len(buckets) and buckets[index][0] <= bound:
            seen += buckets[index][1]
            index += 1
        out.append((bound, seen))
    return out


# --------------------------------------------------------------------------- snapshots


def merge_value(kind: Kind, into: Any, value: Any) -> Any:
    """``into`` and ``value`` (two values of one metric) combined: counters, gauges and label
    counts add up, histograms add bucket by bucket (the maximum is the larger)."""
    if into is None:
        into = {} if kind is Kind.LABELLED else 0
        if kind is Kind.HISTOGRAM:
            into = {"count": 0, "sum": 0, "max": 0, "buckets": {}}
    if kind is Kind.COUNTER or kind is Kind.GAUGE:
        return into + value
    if kind is Kind.LABELLED:
        for label, n in value.items():
            into[label] = into.get(label, 0) + n
        return into
    into["count"] += value["count"]
    into["sum"] += value["sum"]
    into["max"] = max(into["max"], value["max"])
    buckets = into["buckets"]
    for bound, n in value["buckets"].items():
        buckets[bound] = buckets.get(bound, 0) + n
    return into


def _kind(name: str) -> Kind:
    info = CATALOGUE.get(name)
    return info.kind if info is not None else Kind.COUNTER


def merge_scope(into: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Add the snapshot ``values`` of one scope to ``into`` (in place; returned)."""
    for name, value in values.items():
        into[name] = merge_value(_kind(name), into.get(name), _copy(value))
    return into


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
    return value


def status_classes(statuses: Mapping[str, int]) -> dict[str, int]:
    """``{"2xx": n, …}`` from counts by status code."""
    classes: dict[str, int] = {}
    for code, n in statuses.items():
        key = f"{code[0]}xx" if len(code) == 3 and code.isdigit() else "other"
        classes[key] = classes.get(key, 0) + n
    return dict(sorted(classes.items()))


def with_percentiles(scope: dict[str, Any]) -> dict[str, Any]:
    """The scope with each histogram's percentiles added (:data:`PERCENTILES`), in place."""
    for name, value in scope.items():
        if _kind(name) is Kind.HISTOGRAM and isinstance(value, dict):
            for key, quantile in PERCENTILES:
                value[key] = histogram_percentile(value, quantile)
    return scope


def filter_names(scope: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Only the metrics of ``scope`` named in ``names`` (all of them when ``names`` is
    empty)."""
    wanted = set(names)
    if not wanted:
        return dict(scope)
    return {name: value for name, value in scope.items() if name in wanted}


def select_clusters(
    clusters: Iterable[tuple[str, Mapping[str, Any], Mapping[str, Mapping[str, Any]]]],
    cluster_ids: Iterable[str] = (),
    backend_ids: Iterable[str] = (),
    names: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """The ``clusters`` of a ``query_metrics`` answer from (cluster id, cluster scope, backend
    scopes by id): only the clusters in ``cluster_ids`` and the backends in ``backend_ids``
    (a cluster none of whose backends is wanted is left out), only the metrics in ``names``
    (every one, for each filter left empty)."""
    wanted_clusters, wanted_backends, wanted_names = set(cluster_ids), set(backend_ids), list(names)
    out: dict[str, dict[str, Any]] = {}
    for cluster_id, scope, backends in clusters:
        if wanted_clusters and cluster_id not in wanted_clusters:
            continue
        if wanted_backends:
            backends = {i: v for i, v in backends.items() if i in wanted_backends}
            if not backends:
                continue
        out[cluster_id] = {
            "cluster": filter_names(scope, wanted_names),
            "backends": {i: filter_names(v, wanted_names) for i, v in backends.items()},
        }
    return out


# --------------------------------------------------------------------------- reference


def prometheus_name(name: str, kind: Kind) -> str:
    """The name of a metric's family in the Prometheus exposition: ``sozu_`` + the name with
    dots as underscores, then ``_total`` after counters (labelled ones included) and
    ``_seconds`` after histograms (exposed in seconds; their samples add ``_bucket``,
    ``_sum`` and ``_count``)."""
    base = "sozu_" + name.replace(".", "_")
    if kind is Kind.COUNTER or kind is Kind.LABELLED:
        return base + "_total"
    return base + "_seconds" if kind is Kind.HISTOGRAM else base


def reference_table() -> str:
    """The metrics as a Markdown table (``docs/metrics.md`` is this, kept in step by a test)."""
    lines = [
        "| metric | kind | scopes | Prometheus name | meaning |",
        "|---|---|---|---|---|",
    ]
    for info in sorted(CATALOGUE.values(), key=lambda m: (m.scopes[0] != Scope.PROXY, m.name)):
        kind = f"{info.kind.value} by `{info.label}`" if info.label else info.kind.value
        scopes = ", ".join(scope.value for scope in info.scopes)
        lines.append(
            f"| `{info.name}` | {kind} | {scopes} | `{prometheus_name(info.name, info.kind)}` "
            f"| {info.help} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m sozu_config.metrics: the reference table
    print(reference_table(), end="")
