"""The daemon's metrics: the workers' snapshots merged, and the main process's own figures.

The forms of the snapshots are those of :mod:`sozu_config.metrics`; each worker answers
``query_metrics`` with its ``proxying`` scope and its ``clusters`` (filters already applied),
and :func:`merge_metrics` sums them into the answer of the main process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sozu_config import requests as rq
from sozu_config.metrics import (
    CATALOGUE,
    filter_names,
    merge_scope,
    select_clusters,
    with_percentiles,
)
from sozu_config.responses import MetricsContent, Response
from sozu_config.state import ConfigState

__all__ = ["main_figures", "merge_clusters", "merge_metrics", "metric_names"]


def main_figures(state: ConfigState, workers: int) -> dict[str, Any]:
    """What the main process counts itself: workers, routing objects, the state version."""
    return {
        "workers": workers,
        "configuration.clusters": len(state.clusters),
        "configuration.frontends": len(state.http_frontends)
        + len(state.https_frontends)
        + len(state.tcp_frontends),
        "configuration.backends": sum(len(b) for b in state.backends.values()),
        "state.version": state.version,
    }


def metric_names() -> list[str]:
    """Every metric name, main process's and workers' (the answer to ``list``)."""
    return sorted(CATALOGUE)


def merge_clusters(into: dict[str, dict[str, Any]], clusters: dict[str, dict[str, Any]]) -> None:
    """Add one worker's clusters (``{"cluster": {…}, "backends": {id: {…}}}`` by cluster id) to
    ``into``."""
    for cluster_id, data in clusters.items():
        merged = into.setdefault(cluster_id, {"cluster": {}, "backends": {}})
        merge_scope(merged["cluster"], data.get("cluster", {}))
        backends = merged["backends"]
        for backend_id, values in data.get("backends", {}).items():
            merge_scope(backends.setdefault(backend_id, {}), values)


def _finished(clusters: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for data in clusters.values():
        with_percentiles(data["cluster"])
        for values in data["backends"].values():
            with_percentiles(values)
    return clusters


def merge_metrics(
    answers: Iterable[tuple[int, Response]],
    main: dict[str, Any],
    request: rq.QueryMetrics,
    health: dict[str, dict[str, Any]] | None = None,
) -> MetricsContent:
    """The answer to ``query_metrics`` from the workers' answers (by worker id): the
    workers' proxy-wide figures and clusters summed, histograms with their percentiles, each
    worker's own figures too when ``request.workers``; then the main process's ``health``
    figures by cluster (see :meth:`.health.HealthBoard.metrics`), filtered as the request says.
    Answers without metrics (a worker whose metrics are disabled) are left out."""
    if request.list:
        return MetricsContent(names=metric_names())
    workers: dict[str, dict[str, Any]] = {}
    proxying: dict[str, Any] = {}
    clusters: dict[str, dict[str, Any]] = {}
    for worker_id, answer in answers:
        content = answer.content
        if not isinstance(content, MetricsContent):
            continue
        merge_scope(proxying, content.proxying)
        merge_clusters(clusters, content.clusters)
        if request.workers:
            own: dict[str, dict[str, Any]] = {}
            merge_clusters(own, content.clusters)
            workers[str(worker_id)] = {
                "proxying": with_percentiles(merge_scope({}, content.proxying)),
                "clusters": _finished(own),
            }
    if health:
        for data in health.values():
            merge_scope(proxying, filter_names(data["cluster"], request.metric_names))
        if not request.no_clusters:
            scopes = ((i, data["cluster"], data["backends"]) for i, data in health.items())
            selected = select_clusters(
                scopes, request.cluster_ids, request.backend_ids, request.metric_names
            )
            merge_clusters(clusters, selected)
    return MetricsContent(
        main=filter_names(main, request.metric_names),
        workers=workers,
        clusters=_finished(clusters),
        proxying=with_percentiles(proxying),
    )
