"""The routing objects: clusters, backends, frontends and listeners (list, add, remove, change).

Every change is one request; the daemon checks it against its state (a frontend needs its
listener and its cluster, …) and answers failure, exit 1, when it does not hold. Values given
on the command line are validated by the same models the daemon uses: a bad one is a usage
error, exit 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from sozu_config import (
    ActivateListener,
    AddBackend,
    AddCluster,
    AddHttpFrontend,
    AddHttpListener,
    AddHttpsFrontend,
    AddHttpsListener,
    AddTcpFrontend,
    AddTcpListener,
    Backend,
    Cluster,
    DeactivateListener,
    Hsts,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    ListFrontends,
    ListListeners,
    LoadBalancingAlgorithm,
    LoadMetric,
    PathRule,
    QueryClusterById,
    QueryClustersByDomain,
    QueryClustersHashes,
    RedirectPolicy,
    RedirectScheme,
    RemoveBackend,
    RemoveCluster,
    RemoveHttpFrontend,
    RemoveHttpsFrontend,
    RemoveListener,
    RemoveTcpFrontend,
    RulePosition,
    TcpFrontend,
    TcpListenerConfig,
    TlsVersion,
    UpdateHttpListener,
    UpdateHttpsListener,
    UpdateTcpListener,
)
from sozu_config.responses import (
    ClusterHashes,
    ClusterInformation,
    ClustersContent,
    FrontendList,
    ListenersList,
)

from ..arguments import (
    Parser,
    add_command,
    address,
    answer,
    enumeration,
    key_values,
    port,
    positive,
    template_file,
)
from ..context import Context, content_of
from ..errors import DaemonFailure, UsageError
from ..output import Output

__all__ = ["register", "show_cluster"]

_POLICIES = tuple(p.value for p in LoadBalancingAlgorithm)
_METRICS = tuple(m.value for m in LoadMetric)
_POSITIONS = tuple(p.value for p in RulePosition)
_REDIRECTS = tuple(r.value for r in RedirectPolicy)
_SCHEMES = tuple(s.value for s in RedirectScheme)
_TLS_VERSIONS = tuple(v.value for v in TlsVersion)
_HEADER_POSITIONS = ("request", "response", "both")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that were given (None means: not given)."""
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


# --------------------------------------------------------------------------- clusters


def show_cluster(output: Output, info: ClusterInformation) -> None:
    """A cluster's settings, frontends and backends."""
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
                ("www-authenticate", cluster.www_authenticate),
                ("authorized users", [h.partition(":")[0] for h in cluster.authorized_hashes]),
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
        output.table(
            ["BACKEND", "ADDRESS", "WEIGHT", "STICKY ID", "BACKUP"],
            [[b.backend_id, b.address, b.weight, b.sticky_id, b.backup] for b in info.backends],
            title="backends",
        )


def cluster_list(ctx: Context) -> int:
    """By id, by domain, or every cluster with its hash (as sōzu's ``cluster list``)."""
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
                if output.json_mode:
                    output.json({"status": "failure", "message": missing})
                raise DaemonFailure(f"{missing} (see 'sozu cluster list')")

        def render(content: Any) -> None:
            for info in content_of(response, ClustersContent).clusters:
                show_cluster(output, info)

        return ctx.finish(response, render)
    response = ctx.send(QueryClustersHashes())

    def render_hashes(content: Any) -> None:
        hashes = content_of(response, ClusterHashes).hashes
        if not hashes:
            output.print("no cluster")
            return
        output.table(["CLUSTER", "HASH"], sorted(hashes.items()))

    return ctx.finish(response, render_hashes)


def cluster_add(ctx: Context) -> int:
    args = ctx.args
    settings = _given(
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
        **settings,
    )
    return ctx.run(AddCluster(cluster=cluster))


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
        **_given(args, ("weight", "sticky_id")),
    )
    return ctx.run(AddBackend(backend=backend))


def backend_remove(ctx: Context) -> int:
    args = ctx.args
    return ctx.run(
        RemoveBackend(cluster_id=args.id, backend_id=args.backend_id, address=args.address)
    )


# --------------------------------------------------------------------------- frontends


def _path_rule(args: argparse.Namespace) -> PathRule:
    if args.path_regex is not None:
        return PathRule(kind="regex", value=args.path_regex)
    if args.path_equals is not None:
        return PathRule(kind="equals", value=args.path_equals)
    return PathRule(kind="prefix", value=args.path_prefix or "")


def _header(text: str) -> dict[str, str]:
    """``request:Name=value`` (or ``response:``, ``both:``) as a header edit."""
    position, sep, rest = text.partition(":")
    name, equals, value = rest.partition("=")
    if not sep or not equals or position.strip().lower() not in _HEADER_POSITIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not POSITION:Name=value (POSITION: request, response or both; "
            "an empty value deletes the header)"
        )
    return {"position": position.strip().lower(), "key": name.strip(), "value": value}


_header.__name__ = "header"


def _http_frontend(args: argparse.Namespace) -> HttpFrontend:
    settings = _given(
        args,
        (
            "method",
            "position",
            "redirect",
            "redirect_scheme",
            "redirect_template",
            "rewrite_host",
            "rewrite_path",
            "rewrite_port",
        ),
    )
    hsts = _hsts(args)
    if hsts is not None:
        settings["hsts"] = hsts
    return HttpFrontend(
        address=args.address,
        hostname=args.hostname,
        path=_path_rule(args),
        cluster_id=None if getattr(args, "deny", False) else args.id,
        tags=args.tags or {},
        required_auth=bool(getattr(args, "required_auth", False)),
        headers=getattr(args, "header", None) or [],
        **settings,
    )


def _hsts(args: argparse.Namespace) -> Hsts | None:
    """The HSTS of ``--hsts``/``--no-hsts`` and the ``--hsts-*`` details (None: not given)."""
    enabled = getattr(args, "hsts", None)
    details = _given(
        args,
        ("hsts_max_age", "hsts_include_subdomains", "hsts_preload", "hsts_force_replace_backend"),
    )
    if enabled is None:
        if details:
            option = "--" + next(iter(details)).replace("_", "-")
            raise UsageError(f"{option} needs --hsts")
        return None
    return Hsts(enabled=enabled, **{name.removeprefix("hsts_"): v for name, v in details.items()})


def _hsts_arguments(parser: Parser, *, off: str) -> None:
    """``--hsts`` and its details (HTTPS listeners and frontends only); ``off`` says what
    ``--no-hsts`` means there."""
    parser.add_argument(
        "--hsts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"add Strict-Transport-Security to the answers (--no-hsts: {off})",
    )
    parser.add_argument(
        "--hsts-max-age", type=int, metavar="SECONDS", help="max-age (default: one year)"
    )
    for name, text in (
        ("include-subdomains", "add includeSubDomains"),
        ("preload", "add preload"),
        ("force-replace-backend", "replace a Strict-Transport-Security of the backend"),
    ):
        parser.add_argument(f"--hsts-{name}", action="store_true", default=None, help=text)


def frontend_http_add(ctx: Context) -> int:
    frontend = _http_frontend(ctx.args)
    if ctx.args.protocol == "https":
        return ctx.run(AddHttpsFrontend(frontend=frontend))
    return ctx.run(AddHttpFrontend(frontend=frontend))


def frontend_http_remove(ctx: Context) -> int:
    frontend = _http_frontend(ctx.args)
    if ctx.args.protocol == "https":
        return ctx.run(RemoveHttpsFrontend(frontend=frontend))
    return ctx.run(RemoveHttpFrontend(frontend=frontend))


def frontend_tcp_add(ctx: Context) -> int:
    args = ctx.args
    frontend = TcpFrontend(address=args.address, cluster_id=args.id, tags=args.tags or {})
    return ctx.run(AddTcpFrontend(frontend=frontend))


def frontend_tcp_remove(ctx: Context) -> int:
    args = ctx.args
    frontend = TcpFrontend(address=args.address, cluster_id=args.id, tags=args.tags or {})
    return ctx.run(RemoveTcpFrontend(frontend=frontend))


def frontend_list(ctx: Context) -> int:
    args = ctx.args
    response = ctx.send(
        ListFrontends(http=args.http, https=args.https, tcp=args.tcp, domain=args.domain)
    )

    def render(content: Any) -> None:
        frontends = content_of(response, FrontendList)
        rows: list[list[object]] = []
        for protocol, items in (("http", frontends.http), ("https", frontends.https)):
            rows += [
                [
                    protocol,
                    f.address,
                    f.hostname,
                    f.path.describe() or "/",
                    f.method,
                    f.cluster_id or "(deny)",
                    f.position.value,
                    f.tags,
                ]
                for f in items
            ]
        rows += [
            ["tcp", f.address, None, None, None, f.cluster_id, None, f.tags] for f in frontends.tcp
        ]
        if not rows:
            ctx.output.print("no frontend")
            return
        ctx.output.table(
            ["PROTOCOL", "ADDRESS", "HOSTNAME", "PATH", "METHOD", "CLUSTER", "POSITION", "TAGS"],
            rows,
        )

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- listeners

_LISTENER_FIELDS = (
    "public_address",
    "expect_proxy",
    "front_timeout",
    "back_timeout",
    "connect_timeout",
    "request_timeout",
)
_HTTP_FIELDS = (
    "sticky_name",
    "sozu_id_header",
    "elide_x_real_ip",
    "send_x_real_ip",
    "trust_forwarded_headers",
)
_TLS_FIELDS = (
    "tls_versions",
    "cipher_list",
    "alpn_protocols",
    "strict_sni_binding",
    "send_tls13_tickets",
    "default_sni",
)
_PROTOCOL_FIELDS = {
    "http": _LISTENER_FIELDS + _HTTP_FIELDS,
    "https": _LISTENER_FIELDS + _HTTP_FIELDS + _TLS_FIELDS,
    "tcp": _LISTENER_FIELDS,
}


def _listener_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = _given(args, _PROTOCOL_FIELDS[args.protocol])
    if args.protocol == "https":
        hsts = _hsts(args)
        if hsts is not None:
            settings["hsts"] = hsts if hsts.enabled else ""
    if args.protocol != "tcp":
        answers = dict(getattr(args, "answer", None) or [])
        for status in (404, 503):
            template = getattr(args, f"answer_{status}", None)
            if template is not None:
                answers[status] = template
        if answers:
            settings["answers"] = answers
    return settings


def listener_add(ctx: Context) -> int:
    args = ctx.args
    settings = _listener_settings(args)
    if args.protocol == "http":
        return ctx.run(
            AddHttpListener(listener=HttpListenerConfig(address=args.address, **settings))
        )
    if args.protocol == "https":
        return ctx.run(
            AddHttpsListener(listener=HttpsListenerConfig(address=args.address, **settings))
        )
    return ctx.run(AddTcpListener(listener=TcpListenerConfig(address=args.address, **settings)))


def listener_update(ctx: Context) -> int:
    args = ctx.args
    patch = _listener_settings(args)
    if not patch:
        raise UsageError(
            f"nothing to update: give at least one setting to change (see 'sozu listener "
            f"{args.protocol} update --help')"
        )
    if args.protocol == "http":
        return ctx.run(UpdateHttpListener(address=args.address, **patch))
    if args.protocol == "https":
        return ctx.run(UpdateHttpsListener(address=args.address, **patch))
    return ctx.run(UpdateTcpListener(address=args.address, **patch))


def listener_remove(ctx: Context) -> int:
    args = ctx.args
    return ctx.run(RemoveListener(address=args.address, proxy=ListenerType(args.protocol)))


def listener_activate(ctx: Context) -> int:
    args = ctx.args
    return ctx.run(ActivateListener(address=args.address, proxy=ListenerType(args.protocol)))


def listener_deactivate(ctx: Context) -> int:
    args = ctx.args
    return ctx.run(DeactivateListener(address=args.address, proxy=ListenerType(args.protocol)))


def listener_list(ctx: Context) -> int:
    response = ctx.send(ListListeners())

    def render(content: Any) -> None:
        listeners = content_of(response, ListenersList)
        rows = [
            [
                protocol,
                item.address,
                item.active,
                item.public_address,
                item.expect_proxy,
                f"{item.front_timeout}/{item.back_timeout}/{item.connect_timeout}/{item.request_timeout}",
            ]
            for protocol, items in (
                ("http", listeners.http),
                ("https", listeners.https),
                ("tcp", listeners.tcp),
            )
            for item in items
        ]
        if not rows:
            ctx.output.print("no listener")
            return
        ctx.output.table(
            ["PROTOCOL", "ADDRESS", "ACTIVE", "PUBLIC ADDRESS", "EXPECT PROXY", "TIMEOUTS F/B/C/R"],
            rows,
        )

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- parsers


def _cluster_parsers(subcommands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    cluster = add_command(
        subcommands,
        "cluster",
        help="list, add or remove clusters",
        examples=[
            "sozu -c config.toml cluster list",
            "sozu -c config.toml cluster add -i api --load-balancing-policy round_robin",
            "sozu -c config.toml cluster remove -i api",
        ],
    )
    verbs = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    parser = add_command(
        verbs,
        "list",
        help="list the clusters (with their hash), or show one by id or by domain",
        examples=[
            "sozu -c config.toml cluster list",
            "sozu -c config.toml cluster list -i api",
            "sozu -c config.toml cluster list -d example.com --json",
        ],
        parents=[common],
        handler=cluster_list,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("-i", "--id", metavar="CLUSTER", help="show this cluster")
    which.add_argument(
        "-d",
        "--domain",
        metavar="HOSTNAME",
        help="clusters with a frontend on exactly this hostname",
    )

    parser = add_command(
        verbs,
        "add",
        help="add a cluster, or replace the settings of an existing one",
        examples=[
            "sozu -c config.toml cluster add -i api --load-balancing-policy round_robin",
            "sozu -c config.toml cluster add -i web --sticky-session --https-redirect",
            "sozu -c config.toml cluster add -i db --send-proxy",
        ],
        parents=[common],
        handler=cluster_add,
    )
    parser.add_argument("-i", "--id", required=True, metavar="CLUSTER", help="cluster id")
    parser.add_argument(
        "--load-balancing-policy",
        dest="load_balancing",
        type=enumeration(_POLICIES),
        metavar="POLICY",
        help=f"{', '.join(_POLICIES)} (default: round_robin)",
    )
    parser.add_argument(
        "--load-metric", type=enumeration(_METRICS), metavar="METRIC", help=", ".join(_METRICS)
    )
    parser.add_argument(
        "-s", "--sticky-session", action="store_true", help="keep a client on its backend (cookie)"
    )
    parser.add_argument(
        "-r", "--https-redirect", action="store_true", help="redirect plain HTTP requests to https"
    )
    parser.add_argument(
        "--https-redirect-port", type=port, metavar="PORT", help="port of the https redirection"
    )
    parser.add_argument(
        "--send-proxy", action="store_true", help="TCP: send a PROXY header to the backends"
    )
    parser.add_argument(
        "--expect-proxy",
        action="store_true",
        help="TCP: the listener receives PROXY headers (with --send-proxy: relay them)",
    )
    parser.add_argument("--www-authenticate", metavar="REALM", help="realm of the 401 answers")
    parser.add_argument(
        "--max-connections-per-ip",
        type=int,
        metavar="N",
        help="connections one client IP may have open to this cluster, per worker "
        "(0: unlimited; default: the global setting)",
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        metavar="SECONDS",
        help="Retry-After of the 429 answers (0: none; default: the global setting)",
    )
    parser.add_argument(
        "--authorized-hash",
        action="append",
        metavar="USER:SHA256",
        help="credentials for frontends with --required-auth (repeatable)",
    )
    parser.add_argument(
        "--answer",
        action="append",
        type=answer,
        metavar="STATUS=FILE",
        help="custom answer template (repeatable)",
    )

    parser = add_command(
        verbs,
        "remove",
        help="remove a cluster with its frontends and backends",
        examples=["sozu -c config.toml cluster remove -i api"],
        parents=[common],
        handler=cluster_remove,
    )
    parser.add_argument("-i", "--id", required=True, metavar="CLUSTER", help="cluster id")


def _backend_parsers(subcommands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    backend = add_command(
        subcommands,
        "backend",
        help="add or remove backends of a cluster",
        examples=[
            "sozu -c config.toml backend add -i api --backend-id api-1 -a 10.0.0.1:8080",
            "sozu -c config.toml backend remove -i api --backend-id api-1",
        ],
    )
    verbs = backend.add_subparsers(dest="backend_command", required=True, metavar="COMMAND")
    parser = add_command(
        verbs,
        "add",
        help="add a backend, or replace the one with the same id",
        examples=[
            "sozu -c config.toml backend add -i api --backend-id api-1 -a 10.0.0.1:8080",
            "sozu -c config.toml backend add -i api --backend-id api-2 -a 10.0.0.2:8080 "
            "--weight 50 --backup",
        ],
        parents=[common],
        handler=backend_add,
    )
    parser.add_argument("-i", "--id", required=True, metavar="CLUSTER", help="cluster id")
    parser.add_argument("--backend-id", required=True, metavar="ID", help="backend id")
    parser.add_argument(
        "-a", "--address", required=True, type=address, metavar="ADDR", help="IP:port of the server"
    )
    parser.add_argument("--weight", type=int, metavar="N", help="0-255 (default 100)")
    parser.add_argument(
        "--sticky-id", metavar="S", help="sticky-session cookie value (default: backend id)"
    )
    parser.add_argument(
        "--backup", action="store_true", help="used only when no other backend answers"
    )
    parser = add_command(
        verbs,
        "remove",
        help="remove a backend (its connections in flight finish)",
        examples=[
            "sozu -c config.toml backend remove -i api --backend-id api-1",
            "sozu -c config.toml backend remove -i api --backend-id api-1 -a 10.0.0.1:8080",
        ],
        parents=[common],
        handler=backend_remove,
    )
    parser.add_argument("-i", "--id", required=True, metavar="CLUSTER", help="cluster id")
    parser.add_argument("--backend-id", required=True, metavar="ID", help="backend id")
    parser.add_argument(
        "-a", "--address", type=address, metavar="ADDR", help="only if the backend has this address"
    )


def _http_frontend_arguments(parser: Parser, *, adding: bool, https: bool = False) -> None:
    parser.add_argument(
        "-a", "--address", required=True, type=address, metavar="ADDR", help="listener address"
    )
    parser.add_argument(
        "--hostname", required=True, metavar="HOST", help="example.com, *.example.com or /regex/"
    )
    path = parser.add_mutually_exclusive_group()
    path.add_argument(
        "-p", "--path-prefix", metavar="PREFIX", help="path prefix (default: every path)"
    )
    path.add_argument(
        "--path-regex", metavar="REGEX", help="path regular expression (anchored at the start)"
    )
    path.add_argument("--path-equals", metavar="PATH", help="exact path")
    parser.add_argument("-m", "--method", metavar="METHOD", help="only this HTTP method")
    target = parser.add_mutually_exclusive_group(required=adding)
    target.add_argument(
        "-i", "--id", metavar="CLUSTER", help="send matching requests to this cluster"
    )
    target.add_argument("--deny", action="store_true", help="answer 401 to matching requests")
    parser.add_argument("--tags", type=key_values, metavar="'k=v,k2=v2'", help="tags for logs")
    if not adding:
        return
    if https:
        _hsts_arguments(parser, off="none for this frontend, whatever its listener says")
    parser.add_argument(
        "--position",
        type=enumeration(_POSITIONS),
        metavar="POSITION",
        help="pre, tree (default: most specific match) or post",
    )
    parser.add_argument(
        "--redirect", type=enumeration(_REDIRECTS), metavar="POLICY", help=", ".join(_REDIRECTS)
    )
    parser.add_argument(
        "--redirect-scheme", type=enumeration(_SCHEMES), metavar="SCHEME", help=", ".join(_SCHEMES)
    )
    parser.add_argument(
        "--redirect-template", metavar="TEMPLATE", help="answer template of redirections"
    )
    parser.add_argument("--rewrite-host", metavar="HOST", help="rewrite the Host header")
    parser.add_argument("--rewrite-path", metavar="PATH", help="rewrite the path")
    parser.add_argument("--rewrite-port", type=port, metavar="PORT", help="rewrite the port")
    parser.add_argument("--required-auth", action="store_true", help="require basic authentication")
    parser.add_argument(
        "--header",
        action="append",
        type=_header,
        metavar="POSITION:Name=value",
        help="set a header on requests, responses or both (repeatable)",
    )


def _frontend_parsers(subcommands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    frontend = add_command(
        subcommands,
        "frontend",
        help="list, add or remove frontends (routing rules)",
        examples=[
            "sozu -c config.toml frontend list",
            "sozu -c config.toml frontend http add -a 0.0.0.0:80 --hostname example.com --id web",
            "sozu -c config.toml frontend tcp add -i db -a 0.0.0.0:5432",
        ],
    )
    kinds = frontend.add_subparsers(dest="frontend_command", required=True, metavar="COMMAND")
    for protocol in ("http", "https"):
        port_text = "80" if protocol == "http" else "443"
        command = f"sozu -c config.toml frontend {protocol}"
        listener = f"-a 0.0.0.0:{port_text}"
        group = add_command(
            kinds,
            protocol,
            help=f"add or remove {protocol.upper()} frontends",
            examples=[
                f"{command} add {listener} --hostname example.com -p /api --id api",
                f"{command} remove {listener} --hostname example.com -p /api",
            ],
        )
        group.set_defaults(protocol=protocol)
        verbs = group.add_subparsers(dest="verb", required=True, metavar="COMMAND")
        parser = add_command(
            verbs,
            "add",
            help=f"route {protocol.upper()} requests for a host (and path, method) to a cluster",
            examples=[
                f"{command} add {listener} --hostname example.com --id web",
                f"{command} add {listener} --hostname example.com -p /api -m GET --tags 'team=api' "
                "--id api",
                f"{command} add {listener} --hostname example.com --path-equals /admin --deny",
            ],
            parents=[common],
            handler=frontend_http_add,
        )
        _http_frontend_arguments(parser, adding=True, https=protocol == "https")
        parser = add_command(
            verbs,
            "remove",
            help=f"remove the {protocol.upper()} frontend of this address, host, path and method",
            examples=[
                f"{command} remove {listener} --hostname example.com",
                f"{command} remove {listener} --hostname example.com -p /api",
            ],
            parents=[common],
            handler=frontend_http_remove,
        )
        _http_frontend_arguments(parser, adding=False)

    group = add_command(
        kinds,
        "tcp",
        help="bind or unbind a TCP listener to a cluster",
        examples=["sozu -c config.toml frontend tcp add -i db -a 0.0.0.0:5432"],
    )
    group.set_defaults(protocol="tcp")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for verb, handler, text in (
        ("add", frontend_tcp_add, "send the connections of a TCP listener to a cluster"),
        ("remove", frontend_tcp_remove, "unbind a TCP listener from its cluster"),
    ):
        parser = add_command(
            verbs,
            verb,
            help=text,
            examples=[f"sozu -c config.toml frontend tcp {verb} -i db -a 0.0.0.0:5432"],
            parents=[common],
            handler=handler,
        )
        parser.add_argument("-i", "--id", required=True, metavar="CLUSTER", help="cluster id")
        parser.add_argument(
            "-a",
            "--address",
            required=True,
            type=address,
            metavar="ADDR",
            help="TCP listener address",
        )
        parser.add_argument("--tags", type=key_values, metavar="'k=v,k2=v2'", help="tags for logs")

    parser = add_command(
        kinds,
        "list",
        help="list the frontends",
        examples=[
            "sozu -c config.toml frontend list",
            "sozu -c config.toml frontend list --https -d example.com",
        ],
        parents=[common],
        handler=frontend_list,
    )
    parser.add_argument("--http", action="store_true", help="HTTP frontends")
    parser.add_argument("--https", action="store_true", help="HTTPS frontends")
    parser.add_argument("--tcp", action="store_true", help="TCP frontends")
    parser.add_argument("-d", "--domain", metavar="TEXT", help="only hostnames containing TEXT")


def _listener_arguments(parser: Parser, protocol: str, *, update: bool) -> None:
    bool_action = argparse.BooleanOptionalAction
    parser.add_argument(
        "-a", "--address", required=True, type=address, metavar="ADDR", help="listener address"
    )
    parser.add_argument(
        "--public-address", type=address, metavar="ADDR", help="address shown in forwarding headers"
    )
    if update:
        parser.add_argument(
            "--no-public-address",
            dest="public_address",
            action="store_const",
            const="",
            help="forget the public address",
        )
    parser.add_argument(
        "--expect-proxy",
        action=bool_action,
        default=None,
        help="connections start with a PROXY header",
    )
    for name in ("front", "back", "connect", "request"):
        parser.add_argument(
            f"--{name}-timeout", type=positive, metavar="SECONDS", help=f"{name} timeout"
        )
    if protocol == "tcp":
        return
    parser.add_argument("--sticky-name", metavar="NAME", help="sticky-session cookie name")
    parser.add_argument("--sozu-id-header", metavar="NAME", help="name of the request id header")
    parser.add_argument(
        "--elide-x-real-ip", action=bool_action, default=None, help="remove X-Real-IP"
    )
    parser.add_argument("--send-x-real-ip", action=bool_action, default=None, help="add X-Real-IP")
    parser.add_argument(
        "--trust-forwarded-headers",
        action=bool_action,
        default=None,
        help="keep the X-Forwarded-Proto and -Port clients send (a trusted proxy in front)",
    )
    parser.add_argument(
        "--answer-404", type=template_file, metavar="FILE", help="answer template for 404"
    )
    parser.add_argument(
        "--answer-503", type=template_file, metavar="FILE", help="answer template for 503"
    )
    parser.add_argument(
        "--answer",
        action="append",
        type=answer,
        metavar="STATUS=FILE",
        help="answer template (repeatable)"
        + ("; replaces all the listener's templates" if update else ""),
    )
    if protocol != "https":
        return
    parser.add_argument(
        "--tls-versions",
        nargs="+",
        type=enumeration(_TLS_VERSIONS),
        metavar="VERSION",
        help=", ".join(_TLS_VERSIONS),
    )
    parser.add_argument(
        "--cipher-list", nargs="+", metavar="CIPHER", help="TLS 1.2 cipher suites (OpenSSL names)"
    )
    parser.add_argument(
        "--alpn-protocols", nargs="+", metavar="PROTOCOL", help="ALPN protocols (http/1.1)"
    )
    parser.add_argument(
        "--strict-sni-binding",
        action=bool_action,
        default=None,
        help="answer 421 when Host differs from SNI",
    )
    parser.add_argument(
        "--send-tls13-tickets", type=int, metavar="N", help="TLS 1.3 session tickets (0-16)"
    )
    parser.add_argument("--default-sni", metavar="NAME", help="name served to clients without SNI")
    _hsts_arguments(parser, off="no HSTS on this listener")
    if update:
        parser.add_argument(
            "--no-default-sni",
            dest="default_sni",
            action="store_const",
            const="",
            help="forget the default SNI",
        )


def _listener_parsers(subcommands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    listener = add_command(
        subcommands,
        "listener",
        help="list, add, remove, activate, deactivate or update listeners",
        examples=[
            "sozu -c config.toml listener list",
            "sozu -c config.toml listener http add -a 0.0.0.0:80",
            "sozu -c config.toml listener http activate -a 0.0.0.0:80",
        ],
    )
    kinds = listener.add_subparsers(dest="listener_command", required=True, metavar="COMMAND")
    for protocol in ("http", "https", "tcp"):
        default_port = {"http": "80", "https": "443", "tcp": "5432"}[protocol]
        group = add_command(
            kinds,
            protocol,
            help=f"manage {protocol.upper()} listeners",
            examples=[
                f"sozu -c config.toml listener {protocol} add -a 0.0.0.0:{default_port}",
                f"sozu -c config.toml listener {protocol} activate -a 0.0.0.0:{default_port}",
            ],
        )
        group.set_defaults(protocol=protocol)
        verbs = group.add_subparsers(dest="verb", required=True, metavar="COMMAND")
        command = f"sozu -c config.toml listener {protocol}"
        listener_address = f"-a 0.0.0.0:{default_port}"
        add_examples = [f"{command} add {listener_address}"]
        if protocol == "https":
            add_examples.append(f"{command} add {listener_address} --tls-versions tls_v12 tls_v13")
        else:
            add_examples.append(f"{command} add {listener_address} --expect-proxy")
        parser = add_command(
            verbs,
            "add",
            help=f"add an {protocol.upper()} listener (inactive until activated)",
            examples=add_examples,
            parents=[common],
            handler=listener_add,
        )
        _listener_arguments(parser, protocol, update=False)
        parser = add_command(
            verbs,
            "update",
            help=f"change settings of an {protocol.upper()} listener (the others are kept)",
            examples=[
                f"{command} update {listener_address} --front-timeout 120",
                f"{command} update {listener_address} --no-expect-proxy",
            ],
            parents=[common],
            handler=listener_update,
        )
        _listener_arguments(parser, protocol, update=True)
        for verb, handler, text in (
            ("remove", listener_remove, "remove a listener (its frontends must be removed first)"),
            ("activate", listener_activate, "start accepting connections"),
            (
                "deactivate",
                listener_deactivate,
                "stop accepting connections (those in flight go on)",
            ),
        ):
            parser = add_command(
                verbs,
                verb,
                help=text,
                examples=[
                    f"sozu -c config.toml listener {protocol} {verb} -a 0.0.0.0:{default_port}"
                ],
                parents=[common],
                handler=handler,
            )
            parser.add_argument(
                "-a",
                "--address",
                required=True,
                type=address,
                metavar="ADDR",
                help="listener address",
            )
    add_command(
        kinds,
        "list",
        help="list the listeners",
        examples=["sozu -c config.toml listener list", "sozu -c config.toml listener list --json"],
        parents=[common],
        handler=listener_list,
    )


def register(subcommands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``cluster``, ``backend``, ``frontend`` and ``listener``."""
    _cluster_parsers(subcommands, common)
    _backend_parsers(subcommands, common)
    _frontend_parsers(subcommands, common)
    _listener_parsers(subcommands, common)
