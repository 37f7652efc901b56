"""Clusters and their backends: list, add (or replace) and remove; the listing shows their
health (``backends: 2/3 up``, the health check) when the daemon tells it.

Every change is one request; the daemon checks it against its state and answers failure, exit
1, when it does not hold. Values given on the command line are validated by the same models the
daemon uses: a bad one is a usage error, exit 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sozu_config import (
    AddBackend,
    AddCluster,
    Backend,
    Cluster,
    ListBackends,
    LoadBalancingAlgorithm,
    LoadMetric,
    QueryClusterById,
    QueryClustersByDomain,
    QueryClustersHashes,
    QueryHealthChecks,
    RemoveBackend,
    RemoveCluster,
)
from sozu_config.responses import (
    BackendHealth,
    BackendsContent,
    ClusterHashes,
    ClusterInformation,
    ClustersContent,
    ErrorKind,
    HealthChecksContent,
    Response,
)

from ..arguments import address, answer, given, port
from ..context import Context, content_of
from ..declarations import Arg, Command, Completer, OneOf, listing
from ..errors import UsageError
from ..health_view import STATE_STYLES, backends_summary, check_summary
from ..output import Output, Styled
from .health import BACKEND_LIST, HEALTH_CHECK

__all__ = ["CLUSTER_CHOICE", "COMMANDS", "cluster_list", "show_cluster"]


def show_cluster(
    output: Output, info: ClusterInformation, health: Sequence[BackendHealth] | None = None
) -> None:
    """A cluster's settings, frontends and backends; with ``health`` (the cluster's backends
    as ``list_backends`` tells them), how many are up and the state of each."""
    cluster = info.cluster
    if cluster is not None:
        output.pairs(
            [
                ("load balancing", cluster.load_balancing.value),
                ("load metric", cluster.load_metric.value if cluster.load_metric else None),
                ("sticky session", cluster.sticky_session),
                ("https redirect", cluster.https_redirect),
                ("https redirect port", cluster.https_redirect_port),
                (
                    "proxy protocol",
                    cluster.proxy_protocol.value if cluster.proxy_protocol else None,
                ),
                ("answers", sorted(cluster.answers)),
                ("http2 to backends", cluster.http2),
                ("www-authenticate", cluster.www_authenticate),
                ("authorized users", [h.partition(":")[0] for h in cluster.authorized_hashes]),
                (
                    "health check",
                    check_summary(cluster.health_check) if cluster.health_check else None,
                ),
                *([("backends", backends_summary(health))] if health is not None else []),
            ],
            title=f"cluster {cluster.cluster_id}",
        )
    rows: list[list[object]] = [
        ["http", f.address, f.hostname, f.path.describe() or "/", f.method, f.position.value]
        for f in info.http_frontends
    ]
    rows += [
        ["https", f.address, f.hostname, f.path.describe() or "/", f.method, f.position.value]
        for f in info.https_frontends
    ]
    rows += [["tcp", f.address, None, None, None, None] for f in info.tcp_frontends]
    if rows:
        output.table(
            ["PROTOCOL", "ADDRESS", "HOSTNAME", "PATH", "METHOD", "POSITION"],
            rows,
            title="frontends",
        )
    if info.backends:
        columns = ["BACKEND", "ADDRESS", "WEIGHT", "STICKY ID", "BACKUP"]
        rows = [[b.backend_id, b.address, b.weight, b.sticky_id, b.backup] for b in info.backends]
        if health is not None:
            states = {(b.backend_id, b.address): b.state for b in health}
            columns.append("STATE")
            for row, backend in zip(rows, info.backends, strict=True):
                state = states.get((backend.backend_id, backend.address))
                row.append(Styled(state.value, STATE_STYLES[state]) if state else None)
        output.table(columns, rows, title="backends")


def _backends_health(ctx: Context, cluster_id: str | None = None) -> list[BackendHealth] | None:
    """The backends' health (of one cluster), or None when the daemon does not tell it (it
    answered a failure: an older daemon, say). Not asked for ``--json``, whose document is
    the listing's alone."""
    if ctx.output.json_mode:
        return None
    response = ctx.send(ListBackends(cluster_id=cluster_id))
    if not response.ok or not isinstance(response.content, BackendsContent):
        return None
    return response.content.backends


def _health_checks(ctx: Context) -> dict[str, str] | None:
    """Each cluster's health check summed up (``GET /health every 10s``), or None when the
    daemon does not tell them."""
    if ctx.output.json_mode:
        return None
    response = ctx.send(QueryHealthChecks())
    if not response.ok or not isinstance(response.content, HealthChecksContent):
        return None
    return {cid: check.describe() for cid, check in response.content.health_checks.items()}


def _hashes_table(ctx: Context, hashes: dict[str, int]) -> tuple[list[str], list[list[object]]]:
    """``CLUSTER HASH``, then ``BACKENDS`` and ``HEALTH CHECK`` when the daemon tells
    them."""
    columns = ["CLUSTER", "HASH"]
    rows: list[list[object]] = [[cid, value] for cid, value in sorted(hashes.items())]
    health = _backends_health(ctx)
    if health is not None:
        by_cluster: dict[str, list[BackendHealth]] = {}
        for backend in health:
            by_cluster.setdefault(backend.cluster_id, []).append(backend)
        columns.append("BACKENDS")
        for row in rows:
            row.append(backends_summary(by_cluster.get(str(row[0]), [])))
    checks = _health_checks(ctx)
    if checks is not None:
        columns.append("HEALTH CHECK")
        for row in rows:
            row.append(checks.get(str(row[0])))
    return columns, rows


def cluster_list(ctx: Context) -> int:
    """By id, by domain, or every cluster with its hash (as sōzu's ``cluster list``), with
    the backends' health when the daemon tells it."""
    args, output = ctx.args, ctx.output
    if args.id is not None or args.domain is not None:
        if args.id is not None:
            response = ctx.send(QueryClusterById(cluster_id=args.id))
        else:
            response = ctx.send(QueryClustersByDomain(hostname=args.domain))
        if response.ok:
            clusters = [
                c for c in content_of(response, ClustersContent).clusters if c.cluster is not None
            ]
            if not clusters:
                missing = (
                    f"no cluster {args.id!r}"
                    if args.id is not None
                    else f"no cluster has a frontend on exactly {args.domain!r}"
                )
                return ctx.finish(Response.failure(missing, kind=ErrorKind.NOT_FOUND))

        def render(content: Any) -> None:
            infos = content_of(response, ClustersContent).clusters
            health = _backends_health(ctx, args.id)
            for info in infos:
                mine = None
                if health is not None and info.cluster is not None:
                    cid = info.cluster.cluster_id
                    mine = [b for b in health if b.cluster_id == cid]
                show_cluster(output, info, mine)

        return ctx.finish(response, render)
    response = ctx.send(QueryClustersHashes())

    def render_hashes(content: Any) -> None:
        hashes = content_of(response, ClusterHashes).hashes
        if not hashes:
            output.print("no cluster")
            return
        output.table(*_hashes_table(ctx, hashes))

    return ctx.finish(response, render_hashes)


def cluster_add(ctx: Context) -> int:
    args = ctx.args
    settings = given(
        args,
        (
            "load_balancing",
            "load_metric",
            "https_redirect_port",
            "www_authenticate",
            "max_connections_per_ip",
            "retry_after",
        ),
    )
    if args.send_proxy and args.expect_proxy:
        settings["proxy_protocol"] = "relay_header"
    elif args.send_proxy:
        settings["proxy_protocol"] = "send_header"
    elif args.expect_proxy:
        settings["proxy_protocol"] = "expect_header"
    cluster = Cluster(
        cluster_id=args.id,
        sticky_session=args.sticky_session,
        https_redirect=args.https_redirect,
        answers=dict(args.answer or []),
        authorized_hashes=args.authorized_hash or [],
        http2=args.http2,
        **settings,
    )
    return ctx.run(AddCluster(cluster=cluster))


def cluster_h2(ctx: Context) -> int:
    """``cluster h2 enable|disable``: the cluster's settings as the daemon has them, with
    ``http2`` switched, sent back as an ``add_cluster`` (an upsert)."""
    args = ctx.args
    response = ctx.send(QueryClusterById(cluster_id=args.id))
    if not response.ok:
        return ctx.finish(response)
    found = [c for c in content_of(response, ClustersContent).clusters if c.cluster]
    if not found or found[0].cluster is None:
        return ctx.finish(Response.failure(f"no cluster {args.id!r}", kind=ErrorKind.NOT_FOUND))
    info, cluster = found[0], found[0].cluster
    if info.tcp_frontends or cluster.proxy_protocol is not None:
        raise UsageError(
            f"cluster {args.id!r} is a tcp cluster: HTTP/2 to the backends is for http clusters"
        )
    wanted = args.h2_switch == "enable"
    return ctx.run(AddCluster(cluster=cluster.model_copy(update={"http2": wanted})))


def cluster_remove(ctx: Context) -> int:
    return ctx.run(RemoveCluster(cluster_id=ctx.args.id))


# --------------------------------------------------------------------------- backends


def backend_add(ctx: Context) -> int:
    args = ctx.args
    backend = Backend(
        cluster_id=args.id,
        backend_id=args.backend_id,
        address=args.address,
        backup=args.backup,
        **given(args, ("weight", "sticky_id")),
    )
    return ctx.run(AddBackend(backend=backend))


def backend_remove(ctx: Context) -> int:
    args = ctx.args
    return ctx.run(
        RemoveBackend(cluster_id=args.id, backend_id=args.backend_id, address=args.address)
    )


# --------------------------------------------------------------------------- commands

CLUSTER_CHOICE = OneOf(
    (
        Arg(("-i", "--id"), metavar="CLUSTER", help="show this cluster"),
        Arg(
            ("-d", "--domain"),
            metavar="HOSTNAME",
            help="clusters with a frontend on exactly this hostname",
        ),
    )
)
"""``-i CLUSTER`` or ``-d HOSTNAME``: the clusters :func:`cluster_list` shows."""

_CLUSTER_ID = Arg(("-i", "--id"), required=True, metavar="CLUSTER", help="cluster id")
_BACKEND_ID = Arg(("--backend-id",), required=True, metavar="ID", help="backend id")

_CLUSTER_ADD_ARGS = (
    _CLUSTER_ID,
    Arg(
        ("--load-balancing-policy",),
        dest="load_balancing",
        one_of=LoadBalancingAlgorithm,
        metavar="POLICY",
        help=f"{listing(LoadBalancingAlgorithm)} (default: round_robin)",
    ),
    Arg(("--load-metric",), one_of=LoadMetric, metavar="METRIC", help=listing(LoadMetric)),
    Arg(
        ("-s", "--sticky-session"),
        action="store_true",
        help="keep a client on its backend (cookie)",
    ),
    Arg(
        ("-r", "--https-redirect"),
        action="store_true",
        help="redirect plain HTTP requests to https",
    ),
    Arg(
        ("--https-redirect-port",),
        type=port,
        metavar="PORT",
        help="port of the https redirection",
    ),
    Arg(("--send-proxy",), action="store_true", help="TCP: send a PROXY header to the backends"),
    Arg(
        ("--expect-proxy",),
        action="store_true",
        help="TCP: the listener receives PROXY headers (with --send-proxy: relay them)",
    ),
    Arg(("--www-authenticate",), metavar="REALM", help="realm of the 401 answers"),
    Arg(
        ("--http2",),
        action="store_true",
        help="speak HTTP/2 to the backends (h2c, prior knowledge)",
    ),
    Arg(
        ("--max-connections-per-ip",),
        type=int,
        metavar="N",
        help="connections one client IP may have open to this cluster, per worker "
        "(0: unlimited; default: the global setting)",
    ),
    Arg(
        ("--retry-after",),
        type=int,
        metavar="SECONDS",
        help="Retry-After of the 429 answers (0: none; default: the global setting)",
    ),
    Arg(
        ("--authorized-hash",),
        action="append",
        metavar="USER:SHA256",
        help="credentials for frontends with --required-auth (repeatable)",
    ),
    Arg(
        ("--answer",),
        action="append",
        type=answer,
        metavar="STATUS=FILE",
        completer=Completer.FILE,
        help="custom answer template (repeatable)",
    ),
)

CLUSTER = Command(
    "cluster",
    help="list, add or remove clusters; set their health checks",
    examples=[
        "sozu -c config.toml cluster list",
        "sozu -c config.toml cluster add -i api --load-balancing-policy round_robin",
        "sozu -c config.toml cluster remove -i api",
        "sozu -c config.toml cluster health-check set -i api -u /health",
        "sozu -c config.toml cluster h2 enable -i api",
    ],
    subcommands=[
        Command(
            "list",
            help="list the clusters (with their hash), or show one by id or by domain",
            examples=[
                "sozu -c config.toml cluster list",
                "sozu -c config.toml cluster list -i api",
                "sozu -c config.toml cluster list -d example.com --json",
            ],
            args=[CLUSTER_CHOICE],
            handler=cluster_list,
        ),
        Command(
            "add",
            help="add a cluster, or replace the settings of an existing one",
            examples=[
                "sozu -c config.toml cluster add -i api --load-balancing-policy round_robin",
                "sozu -c config.toml cluster add -i web --sticky-session --https-redirect",
                "sozu -c config.toml cluster add -i db --send-proxy",
            ],
            args=_CLUSTER_ADD_ARGS,
            handler=cluster_add,
        ),
        Command(
            "remove",
            help="remove a cluster with its frontends and backends",
            examples=["sozu -c config.toml cluster remove -i api"],
            args=[_CLUSTER_ID],
            handler=cluster_remove,
        ),
        Command(
            "h2",
            help="speak HTTP/2 (h2c) or HTTP/1.1 to a cluster's backends",
            examples=[
                "sozu -c config.toml cluster h2 enable -i api",
                "sozu -c config.toml cluster h2 disable -i api",
            ],
            dest="h2_switch",
            subcommands=[
                Command(
                    verb,
                    help=text,
                    examples=[f"sozu -c config.toml cluster h2 {verb} -i api"],
                    args=[_CLUSTER_ID],
                    handler=cluster_h2,
                )
                for verb, text in (
                    ("enable", "speak HTTP/2 to the backends (h2c, prior knowledge)"),
                    ("disable", "speak HTTP/1.1 to the backends"),
                )
            ],
        ),
        HEALTH_CHECK,
    ],
)

BACKEND = Command(
    "backend",
    help="list the backends with their health, add or remove backends of a cluster",
    examples=[
        "sozu -c config.toml backend list",
        "sozu -c config.toml backend add -i api --backend-id api-1 -a 10.0.0.1:8080",
        "sozu -c config.toml backend remove -i api --backend-id api-1",
    ],
    subcommands=[
        BACKEND_LIST,
        Command(
            "add",
            help="add a backend, or replace the one with the same id",
            examples=[
                "sozu -c config.toml backend add -i api --backend-id api-1 -a 10.0.0.1:8080",
                "sozu -c config.toml backend add -i api --backend-id api-2 -a 10.0.0.2:8080 "
                "--weight 50 --backup",
            ],
            args=[
                _CLUSTER_ID,
                _BACKEND_ID,
                Arg(
                    ("-a", "--address"),
                    required=True,
                    type=address,
                    metavar="ADDR",
                    help="IP:port of the server",
                ),
                Arg(("--weight",), type=int, metavar="N", help="0-255 (default 100)"),
                Arg(
                    ("--sticky-id",),
                    metavar="S",
                    help="sticky-session cookie value (default: backend id)",
                ),
                Arg(
                    ("--backup",),
                    action="store_true",
                    help="used only when no other backend answers",
                ),
            ],
            handler=backend_add,
        ),
        Command(
            "remove",
            help="remove a backend (its connections in flight finish)",
            examples=[
                "sozu -c config.toml backend remove -i api --backend-id api-1",
                "sozu -c config.toml backend remove -i api --backend-id api-1 -a 10.0.0.1:8080",
            ],
            args=[
                _CLUSTER_ID,
                _BACKEND_ID,
                Arg(
                    ("-a", "--address"),
                    type=address,
                    metavar="ADDR",
                    help="only if the backend has this address",
                ),
            ],
            handler=backend_remove,
        ),
    ],
)

COMMANDS = (CLUSTER, BACKEND)
"""``cluster`` and ``backend``."""
