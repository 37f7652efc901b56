"""Reading the proxy: ``query state|metrics|certificates|clusters|workers`` and
``metrics get|enable|disable|clear``."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from sozu_config import (
    ConfigureMetrics,
    ListWorkers,
    QueryMetrics,
    QueryState,
)
from sozu_config.metrics import CATALOGUE
from sozu_config.responses import MetricsContent, StateContent, WorkersContent

from ..arguments import seconds
from ..context import Context, content_of
from ..declarations import Arg, Command
from ..metrics_view import render_metrics
from . import certificates, clusters
from .daemon import show_processes

__all__ = ["COMMANDS"]


# --------------------------------------------------------------------------- state


def query_state(ctx: Context) -> int:
    response = ctx.send(QueryState())
    output = ctx.output

    def render(content: Any) -> None:
        state = content_of(response, StateContent)
        snapshot = state.state
        output.pairs(
            [
                ("version", state.version),
                (
                    "listeners",
                    len(snapshot.http_listeners)
                    + len(snapshot.https_listeners)
                    + len(snapshot.tcp_listeners),
                ),
                ("clusters", len(snapshot.clusters)),
                (
                    "frontends",
                    len(snapshot.http_frontends)
                    + len(snapshot.https_frontends)
                    + len(snapshot.tcp_frontends),
                ),
                ("backends", len(snapshot.backends)),
                ("certificates", len(snapshot.certificates)),
            ],
            title="state",
        )
        listeners = [
            [protocol, item.address, item.active]
            for protocol, items in (
                ("http", snapshot.http_listeners),
                ("https", snapshot.https_listeners),
                ("tcp", snapshot.tcp_listeners),
            )
            for item in items
        ]
        if listeners:
            output.table(["PROTOCOL", "ADDRESS", "ACTIVE"], listeners, title="listeners")
        if snapshot.clusters:
            output.table(
                ["CLUSTER", "LOAD BALANCING", "STICKY", "HTTPS REDIRECT", "HEALTH CHECK"],
                [
                    [
                        c.cluster_id,
                        c.load_balancing.value,
                        c.sticky_session,
                        c.https_redirect,
                        c.health_check.describe() if c.health_check else None,
                    ]
                    for c in snapshot.clusters
                ],
                title="clusters",
            )
        frontends: list[list[object]] = [
            [
                protocol,
                f.address,
                f.hostname,
                f.path.describe() or "/",
                f.method,
                f.cluster_id or "(deny)",
            ]
            for protocol, items in (
                ("http", snapshot.http_frontends),
                ("https", snapshot.https_frontends),
            )
            for f in items
        ]
        frontends += [
            ["tcp", f.address, None, None, None, f.cluster_id] for f in snapshot.tcp_frontends
        ]
        if frontends:
            output.table(
                ["PROTOCOL", "ADDRESS", "HOSTNAME", "PATH", "METHOD", "CLUSTER"],
                frontends,
                title="frontends",
            )
        if snapshot.backends:
            output.table(
                ["CLUSTER", "BACKEND", "ADDRESS", "WEIGHT", "BACKUP"],
                [
                    [b.cluster_id, b.backend_id, b.address, b.weight, b.backup]
                    for b in snapshot.backends
                ],
                title="backends",
            )
        if snapshot.certificates:
            certificates.show_certificates(
                output, list(snapshot.certificates), title="certificates"
            )

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- metrics


def metric_name(text: str) -> str:
    """A metric of the catalogue."""
    if text not in CATALOGUE:
        raise argparse.ArgumentTypeError(
            f"no metric named {text!r} ('sozu metrics get --list' names them)"
        )
    return text


def metrics_request(args: argparse.Namespace) -> QueryMetrics:
    """The query of ``metrics get`` (a bare ``sozu metrics`` has none of its options)."""
    return QueryMetrics(
        list=bool(getattr(args, "list", False)),
        cluster_ids=getattr(args, "clusters", None) or [],
        backend_ids=getattr(args, "backends", None) or [],
        metric_names=getattr(args, "names", None) or [],
        workers=bool(getattr(args, "workers", False)),
        no_clusters=bool(getattr(args, "no_clusters", False)),
    )


def metrics_get(ctx: Context) -> int:
    """The metrics once, or every ``--refresh`` seconds until Ctrl-C (which exits 0)."""
    request = metrics_request(ctx.args)
    interval: float | None = getattr(ctx.args, "refresh", None)
    if interval is None:
        response = ctx.send(request)
        return ctx.finish(
            response, lambda _: render_metrics(ctx.output, content_of(response, MetricsContent))
        )
    output = ctx.output
    due = time.monotonic()
    try:
        while True:
            response = ctx.send(request)
            if not response.ok:
                return ctx.finish(response)
            content = content_of(response, MetricsContent)
            if output.json_mode:
                output.json(content, compact=True)  # one document per line
            else:
                output.heading(dt.datetime.now().strftime("%H:%M:%S"))
                render_metrics(output, content)
            due = max(due + interval, time.monotonic())  # late: at once, no burst
            time.sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        return 0


def _configure(configuration: str) -> Any:
    def handler(ctx: Context) -> int:
        return ctx.run(ConfigureMetrics(configuration=configuration))

    return handler


def query_workers(ctx: Context) -> int:
    response = ctx.send(ListWorkers())

    def render(content: Any) -> None:
        show_processes(ctx.output, content_of(response, WorkersContent))

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- commands

_METRICS_OPTIONS = (
    Arg(("-l", "--list"), action="store_true", help="only the names of the metrics"),
    Arg(
        ("-n", "--names"),
        nargs="+",
        metavar="NAME",
        type=metric_name,
        completer=tuple(sorted(CATALOGUE)),
        help="only these metrics (see --list)",
    ),
    Arg(("-k", "--clusters"), nargs="+", metavar="CLUSTER", help="only these clusters"),
    Arg(
        ("-b", "--backends"),
        nargs="+",
        metavar="BACKEND",
        help="only these backends (by id, in any cluster)",
    ),
    Arg(("--no-clusters",), action="store_true", help="the proxy-wide metrics only"),
    Arg(("-w", "--workers"), action="store_true", help="also each worker's own numbers"),
    Arg(
        ("-r", "--refresh"),
        metavar="SECONDS",
        type=seconds,
        help="show them again every SECONDS until Ctrl-C (with --json: one document a line)",
    ),
)

_METRICS_SWITCHES = {
    "enable": ("enabled", "report the counters again, starting from zero"),
    "disable": ("disabled", "stop reporting the counters"),
    "clear": ("clear", "reset the counters to zero"),
}
"""Each ``metrics`` verb that switches the counters: its configuration and its help."""

QUERY = Command(
    "query",
    help="read the proxy's state, metrics, certificates, clusters or workers",
    examples=[
        "sozu -c config.toml query state",
        "sozu -c config.toml query state --json | jq .state.clusters",
        "sozu -c config.toml query metrics",
    ],
    subcommands=[
        Command(
            "state",
            help="the whole routing state and its version (no private keys)",
            examples=[
                "sozu -c config.toml query state",
                "sozu -c config.toml query state --json",
            ],
            handler=query_state,
        ),
        Command(
            "metrics",
            help="the workers' counters (same as 'metrics get')",
            examples=[
                "sozu -c config.toml query metrics",
                "sozu -c config.toml query metrics -k api --workers",
            ],
            args=_METRICS_OPTIONS,
            handler=metrics_get,
        ),
        Command(
            "certificates",
            help="the certificates (same as 'certificate list')",
            examples=["sozu -c config.toml query certificates -d example.com"],
            args=certificates.LIST_ARGS,
            handler=certificates.certificate_list,
        ),
        Command(
            "clusters",
            help="the clusters (same as 'cluster list')",
            examples=[
                "sozu -c config.toml query clusters",
                "sozu -c config.toml query clusters -i api",
            ],
            args=[clusters.CLUSTER_CHOICE],
            handler=clusters.cluster_list,
        ),
        Command(
            "workers",
            help="the workers as the main process sees them",
            examples=["sozu -c config.toml query workers"],
            handler=query_workers,
        ),
    ],
)

METRICS = Command(
    "metrics",
    help="read, enable, disable or clear the workers' metrics",
    description="Read, enable, disable or clear the metrics; alone, 'sozu metrics' shows them "
    "as 'sozu metrics get' does.",
    examples=[
        "sozu -c config.toml metrics",
        "sozu -c config.toml metrics get -k api -n http.requests http.status request_time",
        "sozu -c config.toml metrics disable",
    ],
    handler=metrics_get,
    subcommands=[
        Command(
            "get",
            help="the metrics: proxy-wide, per cluster and per backend, and the main process's",
            description="The metrics: the main process's figures, the workers' totals, then "
            "each cluster and each of its backends. Counters and gauges as values, counts by "
            "status code with their classes (2xx=…), times as count, p50, p90, p99, p99.9 and "
            "max in milliseconds.",
            examples=[
                "sozu -c config.toml metrics get",
                "sozu -c config.toml metrics get --list",
                "sozu -c config.toml metrics get -k api -b api-1 -n request_time http.status",
                "sozu -c config.toml metrics get --no-clusters -r 2",
                "sozu -c config.toml metrics get -k api -w --json",
            ],
            args=_METRICS_OPTIONS,
            handler=metrics_get,
        ),
        *(
            Command(
                verb,
                help=text,
                examples=[f"sozu -c config.toml metrics {verb}"],
                handler=_configure(configuration),
            )
            for verb, (configuration, text) in _METRICS_SWITCHES.items()
        ),
    ],
)

COMMANDS = (QUERY, METRICS)
"""``query`` and ``metrics``."""
