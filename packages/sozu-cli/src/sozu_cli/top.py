"""What ``sozu top`` shows, computed from two metric samples: rates, error shares and
percentiles over the interval between them, per cluster and per backend.

Pure functions of snapshots (forms in :mod:`sozu_config.metrics`) and of the time between
them; :mod:`sozu_cli.commands.top` fetches the samples and draws the frames. A counter that
went down between two samples (the metrics were cleared, or a worker was replaced) restarts
from zero: its rate over the interval is its new value over the interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sozu_config.metrics import histogram_percentile
from sozu_config.responses import MetricsContent, RunState, WorkersContent

from .metrics_view import milliseconds

__all__ = [
    "COLUMNS",
    "Frame",
    "Row",
    "Sample",
    "build_frame",
    "counter_rate",
    "error_share",
    "frame_cells",
    "header_text",
    "histogram_delta",
    "interval_percentile",
    "scope_row",
    "uptime_text",
]

COLUMNS = (
    "CLUSTER / BACKEND",
    "STATE",
    "REQ/S",
    "5XX %",
    "P50 ms",
    "P99 ms",
    "BACKEND CONN",
    "ACTIVE REQ",
)
"""The table's columns: rates, 5xx share and times over the last interval; backend
connections and requests in flight now."""


@dataclass(frozen=True)
class Sample:
    """The answer to ``query_metrics`` and when it arrived (monotonic seconds)."""

    at: float
    metrics: MetricsContent


@dataclass(frozen=True)
class Row:
    """One line of the table: the proxy's totals, a cluster, or (``depth`` 1) a backend.
    ``None``: not known (no earlier sample, nothing in the interval, or not in the
    snapshot)."""

    name: str
    depth: int = 0
    state: str = "-"
    requests_per_second: float | None = None
    error_share: float | None = None
    """5xx answers over all answers in the interval (0..1)."""
    p50_us: int | None = None
    p99_us: int | None = None
    backend_connections: int | None = None
    active_requests: int | None = None


@dataclass(frozen=True)
class Frame:
    """One refresh of the view."""

    uptime_seconds: float | None
    workers_running: int
    workers_total: int
    state_version: int | None
    total: Row
    rows: list[Row] = field(default_factory=list)
    workers: list[tuple[str, str, str]] = field(default_factory=list)
    """``(worker id, pid, run state)`` for each worker."""
    client_connections: int | None = None
    problem: str = ""
    """Why this frame repeats the previous figures (the daemon did not answer), if it does."""


# --------------------------------------------------------------------------- arithmetic


def counter_rate(before: int | None, after: int | None, elapsed: float) -> float | None:
    """Increase per second of a counter between two samples ``elapsed`` seconds apart."""
    if before is None or after is None or elapsed <= 0:
        return None
    increase = after - before if after >= before else after
    return increase / elapsed


def _increase(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    if sum(after.values()) < sum(before.values()):  # restarted from zero
        return dict(after)
    return {key: n - before.get(key, 0) for key, n in after.items()}


def error_share(before: Mapping[str, int] | None, after: Mapping[str, int] | None) -> float | None:
    """The share of 5xx answers among the answers counted between two ``http.status``
    snapshots; None without an earlier snapshot or when nothing was answered."""
    if before is None or after is None:
        return None
    increase = _increase(before, after)
    answered = sum(increase.values())
    if answered <= 0:
        return None
    errors = sum(n for code, n in increase.items() if code.startswith("5"))
    return errors / answered


def histogram_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The observations of ``after`` that ``before`` had not seen (``max`` stays the
    cumulative one: an upper bound for the interval)."""
    if after.get("count", 0) < before.get("count", 0):  # restarted from zero
        return dict(after)
    old = before.get("buckets", {})
    buckets = {
        bound: n - old.get(bound, 0)
        for bound, n in after.get("buckets", {}).items()
        if n - old.get(bound, 0) > 0
    }
    return {
        "count": after.get("count", 0) - before.get("count", 0),
        "sum": after.get("sum", 0) - before.get("sum", 0),
        "max": after.get("max", 0),
        "buckets": buckets,
    }


def interval_percentile(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, quantile: float
) -> int | None:
    """The ``quantile`` (µs) of the observations between two histogram snapshots (of all of
    ``after`` without an earlier one); None when there are none."""
    if not after or "count" not in after:
        return None
    histogram = histogram_delta(before, after) if before else dict(after)
    if not histogram.get("count") or not histogram.get("buckets"):
        return None
    return histogram_percentile(histogram, quantile)


# --------------------------------------------------------------------------- rows


def _state(scope: Mapping[str, Any], workers: int) -> str:
    """A backend's state from ``backend.down`` (the number of workers that see it down):
    ``up``, ``down``, or ``down 1/3`` when only some workers do; ``-`` when unknown."""
    down = scope.get("backend.down")
    if not isinstance(down, int) or isinstance(down, bool):
        return "-"
    if down == 0:
        return "up"
    return "down" if workers <= 0 or down >= workers else f"down {down}/{workers}"


def _gauge(scope: Mapping[str, Any], name: str) -> int | None:
    value = scope.get(name)
    return value if isinstance(value, int) else None


def scope_row(
    name: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    elapsed: float,
    depth: int = 0,
    workers: int = 0,
) -> Row:
    """The row of one scope from its snapshots at two samples ``elapsed`` seconds apart
    (``before`` None: the first sample). A backend's (``depth`` 1) state reads its
    ``backend.down`` against the number of ``workers``."""
    earlier = before or {}
    has_earlier = before is not None
    return Row(
        name=name,
        depth=depth,
        state=_state(after, workers) if depth else "-",
        requests_per_second=counter_rate(
            earlier.get("http.requests", 0) if has_earlier else None,
            after.get("http.requests", 0),
            elapsed,
        ),
        error_share=error_share(
            earlier.get("http.status", {}) if has_earlier else None, after.get("http.status", {})
        ),
        p50_us=interval_percentile(earlier.get("request_time"), after.get("request_time"), 0.5),
        p99_us=interval_percentile(earlier.get("request_time"), after.get("request_time"), 0.99),
        backend_connections=_gauge(after, "backend.connections"),
        active_requests=_gauge(after, "http.active_requests"),
    )


def _layout(metrics: MetricsContent, known: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Every cluster (from the snapshot and from ``known``) with its backends, sorted."""
    layout: dict[str, set[str]] = {cid: set(backends) for cid, backends in known.items()}
    for cluster_id, data in metrics.clusters.items():
        layout.setdefault(cluster_id, set()).update(data.get("backends", {}))
    return {cid: sorted(layout[cid]) for cid in sorted(layout)}


def _cluster_rows(
    previous: MetricsContent | None,
    current: MetricsContent,
    elapsed: float,
    layout: Mapping[str, Sequence[str]],
    workers: int,
) -> list[Row]:
    """A row per cluster followed by a row per backend; a scope missing from the earlier
    sample counts from zero (it just appeared)."""
    rows: list[Row] = []
    for cluster_id, backend_ids in layout.items():
        now = current.clusters.get(cluster_id, {})
        then = previous.clusters.get(cluster_id, {}) if previous is not None else None
        before = None if then is None else then.get("cluster", {})
        rows.append(scope_row(cluster_id, before, now.get("cluster", {}), elapsed))
        for backend_id in backend_ids:
            earlier = None if then is None else then.get("backends", {}).get(backend_id, {})
            later = now.get("backends", {}).get(backend_id, {})
            rows.append(scope_row(backend_id, earlier, later, elapsed, 1, workers))
    return rows


def build_frame(
    previous: Sample | None,
    current: Sample,
    workers: WorkersContent | None = None,
    known: Mapping[str, Sequence[str]] | None = None,
    now: dt.datetime | None = None,
) -> Frame:
    """The frame for ``current`` (rates over the time since ``previous``): ``workers`` from
    ``status``; ``known``: the clusters of the routing state and their backend ids, listed
    even before they have metrics."""
    before = previous.metrics if previous is not None else None
    after = current.metrics
    elapsed = current.at - previous.at if previous is not None else 0.0
    uptime = None
    infos: list[tuple[str, str, str]] = []
    running = 0
    if workers is not None:
        if workers.main is not None:
            moment = now or dt.datetime.now(dt.UTC)
            uptime = max(0.0, (moment - workers.main.started_at).total_seconds())
        for info in workers.workers:
            infos.append((str(info.id), str(info.pid), info.run_state.value))
            running += info.run_state is RunState.RUNNING
    version = after.main.get("state.version")
    total = len(infos) if workers is not None else int(after.main.get("workers", 0))
    return Frame(
        uptime_seconds=uptime,
        workers_running=running,
        workers_total=total,
        state_version=version if isinstance(version, int) else None,
        total=scope_row("all", before.proxying if before else None, after.proxying, elapsed),
        rows=_cluster_rows(before, after, elapsed, _layout(after, known or {}), total),
        workers=infos,
        client_connections=_gauge(after.proxying, "client.connections"),
    )


# --------------------------------------------------------------------------- text


def uptime_text(seconds: float | None) -> str:
    """``42s``, ``5m07s``, ``1h02m``, ``3d04h``."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _time(value: int | None) -> str:
    return "-" if value is None else milliseconds(value)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _cells(row: Row) -> list[str]:
    share = None if row.error_share is None else row.error_share * 100
    return [
        ("  └ " if row.depth else "") + row.name,
        row.state,
        _number(row.requests_per_second),
        _number(share),
        _time(row.p50_us),
        _time(row.p99_us),
        _count(row.backend_connections),
        _count(row.active_requests),
    ]


def header_text(frame: Frame) -> str:
    """The line above the table: uptime, workers, state version, totals."""
    total = frame.total
    share = None if total.error_share is None else total.error_share * 100
    parts = [
        f"up {uptime_text(frame.uptime_seconds)}",
        f"workers {frame.workers_running}/{frame.workers_total}",
        f"state v{_count(frame.state_version)}",
        f"req/s {_number(total.requests_per_second)}",
        f"5xx {_number(share)} %",
        f"p50 {_time(total.p50_us)} ms",
        f"p99 {_time(total.p99_us)} ms",
        f"connections {_count(frame.client_connections)} client"
        f" / {_count(total.backend_connections)} backend",
    ]
    text = "  ".join(parts)
    return f"{text}  ({frame.problem})" if frame.problem else text


def frame_cells(frame: Frame) -> list[list[str]]:
    """The rows of the table (:data:`COLUMNS`), clusters each followed by its backends."""
    return [_cells(row) for row in frame.rows]
