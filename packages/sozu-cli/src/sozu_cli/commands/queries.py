"""Reading the proxy: ``query state|metrics|certificates|clusters|workers`` and
``metrics get|enable|disable|clear``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sozu_config import (
    ConfigureMetrics,
    ListWorkers,
    QueryMetrics,
    QueryState,
)
from sozu_config.responses import MetricsContent, StateContent, WorkersContent

from ..context import Context, content_of
from ..declarations import Arg, Command
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
                ["CLUSTER", "LOAD BALANCING", "STICKY", "HTTPS REDIRECT"],
                [
                    [c.cluster_id, c.load_balancing.value, c.sticky_session, c.https_redirect]
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


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), value[key])
    else:
        yield prefix, value


def metrics_get(ctx: Context) -> int:
    args = ctx.args
    response = ctx.send(QueryMetrics(cluster_ids=args.clusters or [], workers=args.workers))

    def render(content: Any) -> None:
        metrics = content_of(response, MetricsContent)
        rows = list(_flatten("main", metrics.main))
        rows += list(_flatten("proxying", metrics.proxying))
        rows += list(_flatten("clusters", metrics.clusters))
        rows += list(_flatten("workers", metrics.workers))
        ctx.output.table(["METRIC", "VALUE"], rows)

    return ctx.finish(response, render)


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
    Arg(("-k", "--clusters"), nargs="+", metavar="CLUSTER", help="only these clusters"),
    Arg(("-w", "--workers"), action="store_true", help="also each worker's own numbers"),
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
    examples=["sozu -c config.toml metrics get", "sozu -c config.toml metrics disable"],
    subcommands=[
        Command(
            "get",
            help="the workers' counters: requests, connections, answers by status, per cluster",
            examples=[
                "sozu -c config.toml metrics get",
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
