"""How metric snapshots read as text (forms in :mod:`sozu_config.metrics`).

A scope (the proxy's totals, one cluster, one backend) is shown as two tables: its counters
and gauges as values, labelled counters as ``label=count`` lists (status codes followed by
their classes, ``2xx=…``), and its histograms as ``count p50 p90 p99 p99.9 max`` in
milliseconds. Values the catalogue does not know (a backend's ``down`` flag …) are shown as
they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sozu_config.metrics import CATALOGUE, PERCENTILES, Kind, histogram_percentile, status_classes
from sozu_config.responses import MetricsContent

from .output import Output

__all__ = [
    "HISTOGRAM_COLUMNS",
    "ScopeView",
    "histogram_cells",
    "labelled_text",
    "milliseconds",
    "render_metrics",
    "scope_view",
    "scopes",
]

HISTOGRAM_COLUMNS = ("TIME (ms)", "COUNT", *(key.upper() for key, _ in PERCENTILES), "MAX")


def milliseconds(microseconds: float) -> str:
    """Microseconds as milliseconds with three significant figures or so (``0.011``,
    ``1.25``, ``12.5``, ``1250``)."""
    value = microseconds / 1000
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def labelled_text(name: str, counts: Mapping[str, int]) -> str:
    """``200=12, 404=1`` in label order; counts by status code get their classes too:
    ``200=12, 404=1 (2xx=12, 4xx=1)``."""
    if not counts:
        return "-"
    text = ", ".join(f"{label}={counts[label]}" for label in sorted(counts))
    info = CATALOGUE.get(name)
    if info is not None and info.label == "code":
        classes = ", ".join(f"{key}={n}" for key, n in status_classes(counts).items())
        text += f" ({classes})"
    return text


def histogram_cells(histogram: Mapping[str, Any]) -> list[str]:
    """``count``, the percentiles and the maximum (ms) of a histogram snapshot; percentiles
    the answer lacks are computed from its buckets."""
    cells = [str(histogram.get("count", 0))]
    for key, quantile in PERCENTILES:
        value = histogram.get(key)
        if value is None:
            value = histogram_percentile(histogram, quantile) if histogram.get("buckets") else 0
        cells.append(milliseconds(value))
    cells.append(milliseconds(histogram.get("max", 0)))
    return cells


def _is_histogram(name: str, value: Any) -> bool:
    info = CATALOGUE.get(name)
    return (
        info is not None
        and info.kind is Kind.HISTOGRAM
        and isinstance(value, Mapping)
        and "count" in value
    )


@dataclass
class ScopeView:
    """One scope as table rows: ``values`` (metric, value text) and ``histograms`` (metric
    followed by :func:`histogram_cells`)."""

    title: str
    values: list[list[str]] = field(default_factory=list)
    histograms: list[list[str]] = field(default_factory=list)


def _value_text(name: str, value: Any) -> str:
    info = CATALOGUE.get(name)
    if info is not None and info.kind is Kind.LABELLED and isinstance(value, Mapping):
        return labelled_text(name, value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    return str(value)


def scope_view(title: str, scope: Mapping[str, Any]) -> ScopeView:
    """The rows of one scope, metrics in name order."""
    view = ScopeView(title)
    for name in sorted(scope):
        value = scope[name]
        if _is_histogram(name, value):
            view.histograms.append([name, *histogram_cells(value)])
        else:
            view.values.append([name, _value_text(name, value)])
    return view


def _cluster_scopes(
    prefix: str, clusters: Mapping[str, Mapping[str, Any]]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for cluster_id in sorted(clusters):
        data = clusters[cluster_id]
        yield f"{prefix}cluster {cluster_id}", data.get("cluster", {})
        backends = data.get("backends", {})
        for backend_id in sorted(backends):
            yield f"{prefix}backend {cluster_id}/{backend_id}", backends[backend_id]


def scopes(content: MetricsContent) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every scope of an answer but the main process's, titled, in the order shown: the
    proxy's totals, each cluster followed by its backends, then each worker's own."""
    if content.proxying:
        yield "proxy", content.proxying
    yield from _cluster_scopes("", content.clusters)
    for worker_id in sorted(content.workers, key=lambda w: (len(w), w)):
        own = content.workers[worker_id]
        if own.get("proxying"):
            yield f"worker {worker_id}: proxy", own["proxying"]
        yield from _cluster_scopes(f"worker {worker_id}: ", own.get("clusters", {}))


def render_metrics(output: Output, content: MetricsContent) -> None:
    """The whole answer: the main process's figures, then every scope (:func:`scopes`)."""
    if content.names:
        for name in content.names:
            output.print(name)
        return
    if content.main:
        figures = [(name, content.main[name]) for name in sorted(content.main)]
        output.pairs(figures, title="main process")
    shown = False
    for title, scope in scopes(content):
        view = scope_view(title, scope)
        if view.values or view.histograms:
            output.print()
        if view.values:
            output.table(["METRIC", "VALUE"], view.values, title=title)
            shown = True
        if view.histograms:
            output.table(HISTOGRAM_COLUMNS, view.histograms, title=f"{title}: times")
            shown = True
    if not shown:
        output.print("no worker metrics (none matched, or metrics are disabled)", style="dim")
