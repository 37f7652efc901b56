"""The JSON documents of the admin endpoint, built from the main process's answers.

Plain functions from answer contents to JSON-ready dictionaries: the HTTP side
(:mod:`.server`) only asks the questions and sends what these return. Nothing secret leaves:
``query_state`` already leaves the private keys out, and the password hashes of a cluster's
``authorized_hashes`` are hidden here (the user names stay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sozu_config.responses import (
    ClusterInformation,
    MetricsContent,
    RunState,
    StateContent,
    StateSnapshot,
    WorkersContent,
)

__all__ = [
    "HIDDEN",
    "REQUEST_TOTALS",
    "cluster_view",
    "clusters_view",
    "health_view",
    "state_view",
    "status_view",
]

HIDDEN: Final = "hidden"
"""What stands for a password hash in the views."""
REQUEST_TOTALS: Final = ("http.requests", "tcp.sessions")
"""The metrics the cluster list shows (all that :func:`clusters_view` reads)."""


def health_view(
    content: WorkersContent, expected_workers: int, *, stopping: bool
) -> tuple[bool, dict[str, Any]]:
    """Whether the daemon is healthy, and the document that says so: healthy when it is not
    stopping, no worker failed to answer, and at least ``expected_workers`` workers run (a
    worker that died counts until its replacement runs). Workers starting or stopping (an
    upgrade) are listed but do not make it fail."""
    states = {str(w.id): w.run_state.value for w in content.workers}
    running = sum(1 for w in content.workers if w.run_state is RunState.RUNNING)
    silent = any(w.run_state is RunState.NOT_ANSWERING for w in content.workers)
    healthy = not stopping and not silent and running >= expected_workers
    document = {
        "status": "ok" if healthy else "failing",
        "workers": states,
        "expected_workers": expected_workers,
    }
    if stopping:
        document["stopping"] = True
    return healthy, document


def status_view(content: WorkersContent, message: str) -> dict[str, Any]:
    """The main process and the workers (pid, version, start, state)."""
    return {
        "message": message,
        "main": content.main.model_dump(mode="json") if content.main is not None else None,
        "workers": [w.model_dump(mode="json") for w in content.workers],
    }


def state_view(content: StateContent) -> dict[str, Any]:
    """The routing state and its version."""
    state = content.state.model_dump(mode="json")
    state["clusters"] = [_hide_hashes(c) for c in state["clusters"]]
    return {"version": content.version, "state": state}


def clusters_view(state: StateSnapshot, metrics: MetricsContent) -> dict[str, Any]:
    """Every cluster: its frontend and backend counts and its request totals."""
    frontends: dict[str, int] = {}
    owners = [f.cluster_id for f in (*state.http_frontends, *state.https_frontends)]
    for cluster_id in (*owners, *(f.cluster_id for f in state.tcp_frontends)):
        if cluster_id is not None:
            frontends[cluster_id] = frontends.get(cluster_id, 0) + 1
    backends: dict[str, int] = {}
    for backend in state.backends:
        backends[backend.cluster_id] = backends.get(backend.cluster_id, 0) + 1
    clusters = []
    for cluster in sorted(state.clusters, key=lambda c: c.cluster_id):
        cluster_id = cluster.cluster_id
        figures = metrics.clusters.get(cluster_id, {}).get("cluster", {})
        clusters.append(
            {
                "cluster_id": cluster_id,
                "frontends": frontends.get(cluster_id, 0),
                "backends": backends.get(cluster_id, 0),
                "requests": _count(figures, "http.requests"),
                "tcp_sessions": _count(figures, "tcp.sessions"),
            }
        )
    return {"clusters": clusters}


def cluster_view(information: ClusterInformation, metrics: MetricsContent) -> dict[str, Any]:
    """One cluster: its settings, its frontends, its backends each with its metrics, and the
    cluster's own metrics (summed over the workers, histograms with their percentiles)."""
    assert information.cluster is not None
    cluster_id = information.cluster.cluster_id
    merged = metrics.clusters.get(cluster_id, {})
    backend_metrics = merged.get("backends", {})
    frontends = [
        {"protocol": protocol, **frontend.model_dump(mode="json")}
        for protocol, listed in (
            ("http", information.http_frontends),
            ("https", information.https_frontends),
            ("tcp", information.tcp_frontends),
        )
        for frontend in listed
    ]
    return {
        "cluster": _hide_hashes(information.cluster.model_dump(mode="json")),
        "frontends": frontends,
        "backends": [
            {**b.model_dump(mode="json"), "metrics": backend_metrics.get(b.backend_id, {})}
            for b in information.backends
        ],
        "metrics": merged.get("cluster", {}),
    }


def _count(figures: Mapping[str, Any], name: str) -> int:
    value = figures.get(name, 0)
    return value if isinstance(value, int) else 0


def _hide_hashes(cluster: dict[str, Any]) -> dict[str, Any]:
    hashes = cluster.get("authorized_hashes") or []
    cluster["authorized_hashes"] = [f"{entry.partition(':')[0]}:{HIDDEN}" for entry in hashes]
    return cluster
