"""How health checks and the backends' health look on a terminal or in a pipe.

A health check reads as its probe and interval (``GET /health every 10s``, from
:meth:`~sozu_config.models.HealthCheck.describe`), then what moves a backend from one state to
the other. A backend's health is a row: its state (coloured on a terminal: up green, down red,
draining yellow), since when (``3m ago``), why, its last check (``200 in 3 ms, 2s ago``,
``connection refused, 1s ago``) and its failures in a row. Times are relative to ``now``, which
the caller gives: the rendering is a function of its inputs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from sozu_config import HealthCheck
from sozu_config.responses import BackendHealth, BackendState, ProbeResult

from .output import Output, Styled, plural

__all__ = [
    "BACKEND_COLUMNS",
    "HEALTH_CHECK_COLUMNS",
    "ago",
    "backend_row",
    "backends_summary",
    "check_summary",
    "health_check_row",
    "last_check",
    "render_backends",
    "render_health_checks",
]

STATE_STYLES = {
    BackendState.UP: "green",
    BackendState.DOWN: "bold red",
    BackendState.DRAINING: "yellow",
}

HEALTH_CHECK_COLUMNS = (
    "CLUSTER",
    "PROBE",
    "INTERVAL",
    "TIMEOUT",
    "HEALTHY",
    "UNHEALTHY",
    "EXPECTED STATUS",
    "HOST",
    "FAIL OPEN",
)
"""``HEALTHY``/``UNHEALTHY``: the successes (failures) in a row that bring a backend up
(down)."""

BACKEND_COLUMNS = (
    "CLUSTER",
    "BACKEND",
    "ADDRESS",
    "STATE",
    "SINCE",
    "REASON",
    "LAST CHECK",
    "FAILURES",
)


# --------------------------------------------------------------------------- times


def _aware(moment: dt.datetime) -> dt.datetime:
    """A time without a zone is taken as UTC (the daemon writes UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def ago(moment: dt.datetime, now: dt.datetime) -> str:
    """``12s ago``, ``3m ago``, ``2h ago``, ``4d ago`` (whole units, rounded down; a moment
    after ``now``, from a clock ahead of this one, is ``0s ago``)."""
    seconds = max(0.0, (_aware(now) - _aware(moment)).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _latency(seconds: float) -> str:
    milliseconds = seconds * 1000
    return "<1 ms" if milliseconds < 1 else f"{milliseconds:.0f} ms"


def last_check(probe: ProbeResult | None, now: dt.datetime) -> str:
    """``200 in 3 ms, 2s ago`` for a probe that passed, ``connection refused, 1s ago`` for
    one that failed, ``-`` when there was none."""
    if probe is None:
        return "-"
    when = ago(probe.time, now)
    if probe.ok:
        return f"{probe.detail or 'ok'} in {_latency(probe.latency)}, {when}"
    return f"{probe.detail or 'failed'}, {when}"


# --------------------------------------------------------------------------- health checks


def _seconds(value: float) -> str:
    return f"{value:g}s"


def check_summary(check: HealthCheck) -> str:
    """One line: ``GET /health every 10s, timeout 5s, down after 3 failures, up after 3
    successes`` (then the expected status, the Host and ``fail closed`` when they are not the
    defaults)."""
    parts = [
        check.describe(),
        f"timeout {_seconds(check.timeout)}",
        f"down after {plural(check.unhealthy_threshold, 'failure')}",
        f"up after {plural(check.healthy_threshold, 'success', 'successes')}",
    ]
    if check.uri is not None and check.expected_status:
        parts.append(f"expects {check.expected_status}")
    if check.uri is not None and check.host is not None:
        parts.append(f"Host {check.host}")
    if not check.fail_open:
        parts.append("fail closed")
    return ", ".join(parts)


def health_check_row(cluster_id: str, check: HealthCheck) -> list[object]:
    """The row of :data:`HEALTH_CHECK_COLUMNS` of a cluster's check."""
    http = check.uri is not None
    if not http:
        status, host = None, None
    else:
        status = str(check.expected_status) if check.expected_status else "2xx"
        host = check.host or "(first frontend)"
    return [
        cluster_id,
        f"GET {check.uri}" if http else "TCP connect",
        _seconds(check.interval),
        _seconds(check.timeout),
        check.healthy_threshold,
        check.unhealthy_threshold,
        status,
        host,
        check.fail_open,
    ]


def render_health_checks(output: Output, checks: Mapping[str, HealthCheck]) -> None:
    """The table of the clusters' health checks (or that there is none)."""
    if not checks:
        output.print("no health check")
        return
    output.table(
        HEALTH_CHECK_COLUMNS,
        [health_check_row(cluster_id, checks[cluster_id]) for cluster_id in sorted(checks)],
    )


# --------------------------------------------------------------------------- backends


def backend_row(backend: BackendHealth, now: dt.datetime) -> list[object]:
    """The row of :data:`BACKEND_COLUMNS` of a backend."""
    return [
        backend.cluster_id,
        backend.backend_id,
        backend.address,
        Styled(backend.state.value, STATE_STYLES[backend.state]),
        ago(backend.since, now) if backend.since is not None else None,
        backend.reason,
        last_check(backend.last_check, now),
        backend.consecutive_failures,
    ]


def render_backends(output: Output, backends: Iterable[BackendHealth], now: dt.datetime) -> None:
    """The table of the backends' health, by cluster and backend id (or that there is
    none)."""
    ordered = sorted(backends, key=lambda b: (b.cluster_id, b.backend_id, b.address))
    if not ordered:
        output.print("no backend")
        return
    output.table(BACKEND_COLUMNS, [backend_row(backend, now) for backend in ordered])


def backends_summary(backends: Sequence[BackendHealth]) -> str:
    """``2/3 up`` (draining backends are not counted, but named: ``2/3 up, 1 draining``);
    ``none`` for a cluster without backends."""
    draining = sum(1 for b in backends if b.state is BackendState.DRAINING)
    serving = len(backends) - draining
    if not backends:
        return "none"
    up = sum(1 for b in backends if b.state is BackendState.UP)
    text = f"{up}/{serving} up"
    if draining:
        text += f", {draining} draining"
    return text
