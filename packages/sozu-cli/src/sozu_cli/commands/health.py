"""Backend health: ``cluster health-check set|remove|list`` and ``backend list``.

A health check is part of its cluster in the state (``set_health_check``,
``remove_health_check``, ``query_health_checks``); the backends' health (up, down or draining,
the last check) is the main process's (``list_backends``). The values of ``set`` are validated
by the model the daemon uses: a bad one is a usage error, exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from typing import Any

from sozu_config import (
    HealthCheck,
    ListBackends,
    QueryHealthChecks,
    RemoveHealthCheck,
    SetHealthCheck,
)
from sozu_config.responses import BackendsContent, HealthChecksContent

from ..arguments import given, positive, seconds
from ..context import Context, content_of
from ..declarations import Arg, Command, GlobalOptions
from ..health_view import render_backends, render_health_checks

__all__ = ["BACKEND_LIST", "HEALTH_CHECK"]


def probe_seconds(text: str) -> float:
    """The time a probe may take: a number of seconds above 0 (``0.5``, ``2``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 seconds")
    return value


def health_check_set(ctx: Context) -> int:
    args = ctx.args
    settings = given(args, ("uri", "interval", "healthy_threshold", "unhealthy_threshold", "host"))
    if args.probe_timeout is not None:
        settings["timeout"] = args.probe_timeout
    if args.expected_status is not None:
        settings["expected_status"] = args.expected_status
    check = HealthCheck(fail_open=args.fail_open, **settings)
    return ctx.run(SetHealthCheck(cluster_id=args.id, health_check=check))


def health_check_remove(ctx: Context) -> int:
    return ctx.run(RemoveHealthCheck(cluster_id=ctx.args.id))


def health_check_list(ctx: Context) -> int:
    response = ctx.send(QueryHealthChecks(cluster_id=ctx.args.id))

    def render(content: Any) -> None:
        checks = content_of(response, HealthChecksContent).health_checks
        render_health_checks(ctx.output, checks)

    return ctx.finish(response, render)


def backend_list(ctx: Context) -> int:
    response = ctx.send(ListBackends(cluster_id=ctx.args.id))

    def render(content: Any) -> None:
        backends = content_of(response, BackendsContent).backends
        render_backends(ctx.output, backends, dt.datetime.now(dt.UTC))

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- commands

_CLUSTER_ID = Arg(("-i", "--id"), required=True, metavar="CLUSTER", help="cluster id")

_SET_ARGS = (
    _CLUSTER_ID,
    Arg(
        ("-u", "--uri"),
        metavar="URI",
        help="path of the HTTP probe, e.g. /health (GET; without it: a TCP connection check)",
    ),
    Arg(
        ("--interval",),
        type=seconds,
        metavar="SECONDS",
        help="seconds between two probes of a backend, at least 0.1 (default: 10)",
    ),
    Arg(
        ("--timeout",),
        dest="probe_timeout",
        type=probe_seconds,
        metavar="SECONDS",
        help="seconds a probe may take (default: 5; -t MS is the wait for the daemon)",
    ),
    Arg(
        ("--healthy-threshold",),
        type=positive,
        metavar="N",
        help="successful probes in a row that bring a down backend up (default: 3)",
    ),
    Arg(
        ("--unhealthy-threshold",),
        type=positive,
        metavar="N",
        help="failed probes in a row that take a backend down (default: 3)",
    ),
    Arg(
        ("--expected-status",),
        type=int,
        metavar="N",
        help="the status the HTTP probe must get, 100-599 (default: 0, any 2xx)",
    ),
    Arg(
        ("--host",),
        metavar="HOST",
        help="Host header of the HTTP probe (default: the hostname of the cluster's first "
        "frontend)",
    ),
    Arg(
        ("--no-fail-open",),
        dest="fail_open",
        action="store_false",
        help="when every backend is down, answer 503 (default: send the traffic to them anyway)",
    ),
)

HEALTH_CHECK = Command(
    "health-check",
    help="set, remove or list the active health checks of clusters",
    examples=[
        "sozu -c config.toml cluster health-check set -i api -u /health --interval 5",
        "sozu -c config.toml cluster health-check list",
        "sozu -c config.toml cluster health-check remove -i api",
    ],
    dest="health_check_command",
    subcommands=[
        Command(
            "set",
            help="check a cluster's backends actively (replaces its health check)",
            description="Probe each backend of the cluster once per interval from the main "
            "process (whatever the number of workers): an HTTP GET of URI, or without -u a "
            "TCP connection. A backend goes down after --unhealthy-threshold failed probes in "
            "a row and up after --healthy-threshold successful ones; a down backend gets no "
            "new requests.",
            examples=[
                "sozu -c config.toml cluster health-check set -i api -u /health",
                "sozu -c config.toml cluster health-check set -i api -u /ready --interval 2 "
                "--timeout 1 --expected-status 204 --host api.example.com",
                "sozu -c config.toml cluster health-check set -i db --interval 5 "
                "--unhealthy-threshold 2 --no-fail-open",
            ],
            args=_SET_ARGS,
            global_options=GlobalOptions.SHORT_TIMEOUT,
            handler=health_check_set,
        ),
        Command(
            "remove",
            help="stop checking a cluster's backends actively (passive detection goes on)",
            examples=["sozu -c config.toml cluster health-check remove -i api"],
            args=[_CLUSTER_ID],
            handler=health_check_remove,
        ),
        Command(
            "list",
            help="list the health checks of every cluster, or of one",
            examples=[
                "sozu -c config.toml cluster health-check list",
                "sozu -c config.toml cluster health-check list -i api --json",
            ],
            args=[Arg(("-i", "--id"), metavar="CLUSTER", help="only this cluster")],
            handler=health_check_list,
        ),
    ],
)
"""``cluster health-check set|remove|list``."""

BACKEND_LIST = Command(
    "list",
    help="list the backends with their health: state, since when, why, last check",
    description="List every backend (or those of one cluster) as every worker sees it: up, "
    "down or draining (removed, finishing its requests), since when and why, the last active "
    "check and the failures in a row.",
    examples=[
        "sozu -c config.toml backend list",
        "sozu -c config.toml backend list -i api",
        "sozu -c config.toml backend list --json | jq '.backends[] | select(.state == \"down\")'",
    ],
    args=[Arg(("-i", "--id"), metavar="CLUSTER", help="only the backends of this cluster")],
    handler=backend_list,
)
"""``backend list``."""
