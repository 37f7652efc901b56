"""The daemon's metrics: the workers' counters summed, and the main process's own figures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sozu_config.responses import MetricsContent, Response
from sozu_config.state import ConfigState

__all__ = ["main_figures", "merge_counts", "merge_metrics"]


def merge_counts(into: dict[str, Any], values: dict[str, Any]) -> None:
    """Add the numbers of ``values`` to those of ``into``, nested dictionaries key by key
    (booleans are flags, not counts: they are left out)."""
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            into[key] = into.get(key, 0) + value
        elif isinstance(value, dict):
            merge_counts(into.setdefault(key, {}), value)


def main_figures(state: ConfigState, workers: int) -> dict[str, Any]:
    """What the main process counts itself: workers, routing objects, the state version."""
    return {
        "workers": workers,
        "clusters": len(state.clusters),
        "frontends": len(state.http_frontends)
        + len(state.https_frontends)
        + len(state.tcp_frontends),
        "backends": sum(len(b) for b in state.backends.values()),
        "version": state.version,
    }


def merge_metrics(
    answers: Iterable[tuple[int, Response]], main: dict[str, Any], *, per_worker: bool
) -> MetricsContent:
    """The answer to ``query_metrics`` from the workers' answers (by worker id): proxying
    counters summed over the workers, each cluster's request count summed, and with
    ``per_worker`` each worker's own figures too. Answers without metrics are left out."""
    workers: dict[str, dict[str, Any]] = {}
    proxying: dict[str, Any] = {}
    clusters: dict[str, dict[str, Any]] = {}
    for worker_id, answer in answers:
        content = answer.content
        if not isinstance(content, MetricsContent):
            continue
        workers[str(worker_id)] = {"proxying": content.proxying, "clusters": content.clusters}
        merge_counts(proxying, content.proxying)
        for cluster_id, data in content.clusters.items():
            merge_counts(clusters.setdefault(cluster_id, {}), {"requests": data.get("requests", 0)})
    return MetricsContent(
        main=main,
        workers=workers if per_worker else {},
        clusters=clusters,
        proxying=proxying,
    )
