"""Metric snapshots in the Prometheus text exposition format, version 0.0.4.

Names: ``sozu_`` then the catalogue's name with ``.`` turned into ``_``. Counters end in
``_total``; a labelled counter is one counter with its label
(``sozu_http_status_total{code="200"}``); histograms are in seconds and end in ``_seconds``
(``_bucket`` at :data:`~sozu_config.metrics.PROMETHEUS_BOUNDS_US` and ``+Inf``, ``_sum``,
``_count``); gauges keep their name.

Series — one scheme for every metric, so that no series is exposed twice with the same labels:

* the main process's figures: no label;
* proxy-wide figures: the sum over the workers without a label, and each worker's own with
  ``worker="<id>"``;
* cluster figures (the sum over the workers): ``cluster_id``; backend figures: ``cluster_id``
  and ``backend_id``.

Only metrics of the catalogue are exposed, at the scopes the catalogue gives them; a value
whose form does not fit its kind is left out rather than failing the whole scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Final

from sozu_config.metrics import (
    CATALOGUE,
    Kind,
    MetricInfo,
    Scope,
    cumulative_buckets,
    prometheus_name,
)
from sozu_config.responses import MetricsContent

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_TYPES: Final = {
    Kind.COUNTER: "counter",
    Kind.LABELLED: "counter",
    Kind.GAUGE: "gauge",
    Kind.HISTOGRAM: "histogram",
}
_US_PER_SECOND: Final = 1_000_000

Labels = tuple[tuple[str, str], ...]


def render(content: MetricsContent) -> str:
    """Every metric of the catalogue present in ``content`` (an answer to ``query_metrics``
    with ``workers`` set), with its ``# HELP`` and ``# TYPE`` lines."""
    lines: list[str] = []
    for info in CATALOGUE.values():
        family = prometheus_name(info.name, info.kind)
        found = [
            line
            for labels, value in _series(info, content)
            for line in _samples(info, family, labels, value)
        ]
        if found:
            lines.append(f"# HELP {family} {_help(info)}")
            lines.append(f"# TYPE {family} {_TYPES[info.kind]}")
            lines.extend(found)
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- series


def _series(info: MetricInfo, content: MetricsContent) -> Iterator[tuple[Labels, Any]]:
    """``(labels, value)`` of every series of the metric ``info`` in ``content``."""
    name = info.name
    if Scope.MAIN in info.scopes and name in content.main:
        yield (), content.main[name]
    if Scope.PROXY in info.scopes:
        if name in content.proxying:
            yield (), content.proxying[name]
        for worker_id in sorted(content.workers, key=_worker_order):
            proxying = content.workers[worker_id].get("proxying", {})
            if name in proxying:
                yield (("worker", worker_id),), proxying[name]
    if Scope.CLUSTER not in info.scopes and Scope.BACKEND not in info.scopes:
        return
    for cluster_id, data in sorted(content.clusters.items()):
        cluster = (("cluster_id", cluster_id),)
        if Scope.CLUSTER in info.scopes and name in data.get("cluster", {}):
            yield cluster, data["cluster"][name]
        if Scope.BACKEND in info.scopes:
            for backend_id, values in sorted(data.get("backends", {}).items()):
                if name in values:
                    yield (*cluster, ("backend_id", backend_id)), values[name]


def _worker_order(worker_id: str) -> tuple[int, str]:
    return (int(worker_id), "") if worker_id.isdigit() else (-1, worker_id)


def _samples(info: MetricInfo, family: str, labels: Labels, value: Any) -> list[str]:
    """The sample lines of one series (none when ``value`` does not have its kind's form)."""
    if info.kind is Kind.COUNTER or info.kind is Kind.GAUGE:
        return [f"{family}{_labels(labels)} {_number(value)}"] if _is_number(value) else []
    if info.kind is Kind.LABELLED:
        if not isinstance(value, Mapping):
            return []
        label = info.label or "label"
        return [
            f"{family}{_labels((*labels, (label, str(key))))} {_number(n)}"
            for key, n in sorted(value.items())
            if _is_number(n)
        ]
    return _histogram(family, labels, value)


def _histogram(family: str, labels: Labels, value: Any) -> list[str]:
    if not isinstance(value, Mapping) or not _is_number(value.get("count")):
        return []
    if not isinstance(value.get("buckets", {}), Mapping) or not _is_number(value.get("sum", 0)):
        return []
    lines = [
        f"{family}_bucket{_labels((*labels, ('le', _seconds(bound))))} {seen}"
        for bound, seen in cumulative_buckets(value)
    ]
    count = value["count"]
    lines.append(f"{family}_bucket{_labels((*labels, ('le', '+Inf')))} {_number(count)}")
    lines.append(f"{family}_sum{_labels(labels)} {_number(value.get('sum', 0) / _US_PER_SECOND)}")
    lines.append(f"{family}_count{_labels(labels)} {_number(count)}")
    return lines


# --------------------------------------------------------------------------- text forms


def _help(info: MetricInfo) -> str:
    """The catalogue's help, in the unit exposed, escaped (backslash and line feed)."""
    text = info.help
    if info.kind is Kind.HISTOGRAM:
        text = text.replace("(µs)", "(seconds)")
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels) + "}"


def _escape(value: str) -> str:
    """A label value escaped as the format asks: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _seconds(bound_us: int) -> str:
    return repr(bound_us / _US_PER_SECOND)
