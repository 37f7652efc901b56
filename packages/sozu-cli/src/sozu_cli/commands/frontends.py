"""Frontends, the routing rules: list them, add or remove HTTP, HTTPS and TCP ones.

An HTTP(S) frontend sends the requests for a host (and path, method) arriving on a listener to
a cluster, or denies them; a TCP frontend binds a TCP listener to a cluster.
"""

from __future__ import annotations

import argparse
from typing import Any

from sozu_config import (
    AddHttpFrontend,
    AddHttpsFrontend,
    AddTcpFrontend,
    HeaderPosition,
    HttpFrontend,
    ListFrontends,
    PathRule,
    PathRuleKind,
    RedirectPolicy,
    RedirectScheme,
    RemoveHttpFrontend,
    RemoveHttpsFrontend,
    RemoveTcpFrontend,
    RulePosition,
    TcpFrontend,
)
from sozu_config.responses import FrontendList

from ..arguments import address, given, key_values, port
from ..context import Context, content_of
from ..declarations import Arg, Argument, Command, OneOf, listing, values_of
from .hsts import hsts_args, hsts_of

__all__ = ["COMMANDS"]

_HEADER_POSITIONS = values_of(HeaderPosition)


def _path_rule(args: argparse.Namespace) -> PathRule:
    if args.path_regex is not None:
        return PathRule(kind=PathRuleKind.REGEX, value=args.path_regex)
    if args.path_equals is not None:
        return PathRule(kind=PathRuleKind.EQUALS, value=args.path_equals)
    return PathRule(kind=PathRuleKind.PREFIX, value=args.path_prefix or "")


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
    settings = given(
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
    hsts = hsts_of(args)
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

# --------------------------------------------------------------------------- commands

_TAGS = Arg(("--tags",), type=key_values, metavar="'k=v,k2=v2'", help="tags for logs")


def _http_frontend_args(*, adding: bool, https: bool = False) -> tuple[Argument, ...]:
    """What identifies an HTTP(S) frontend, and when ``adding``, what it does."""
    identity: tuple[Argument, ...] = (
        Arg(
            ("-a", "--address"),
            required=True,
            type=address,
            metavar="ADDR",
            help="listener address",
        ),
        Arg(
            ("--hostname",),
            required=True,
            metavar="HOST",
            help="example.com, *.example.com or /regex/",
        ),
        OneOf(
            (
                Arg(
                    ("-p", "--path-prefix"),
                    metavar="PREFIX",
                    help="path prefix (default: every path)",
                ),
                Arg(
                    ("--path-regex",),
                    metavar="REGEX",
                    help="path regular expression (anchored at the start)",
                ),
                Arg(("--path-equals",), metavar="PATH", help="exact path"),
            )
        ),
        Arg(("-m", "--method"), metavar="METHOD", help="only this HTTP method"),
        OneOf(
            (
                Arg(
                    ("-i", "--id"),
                    metavar="CLUSTER",
                    help="send matching requests to this cluster",
                ),
                Arg(("--deny",), action="store_true", help="answer 401 to matching requests"),
            ),
            required=adding,
        ),
        _TAGS,
    )
    if not adding:
        return identity
    hsts = hsts_args(off="none for this frontend, whatever its listener says") if https else ()
    return (
        *identity,
        *hsts,
        Arg(
            ("--position",),
            one_of=RulePosition,
            metavar="POSITION",
            help="pre, tree (default: most specific match) or post",
        ),
        Arg(("--redirect",), one_of=RedirectPolicy, metavar="POLICY", help=listing(RedirectPolicy)),
        Arg(
            ("--redirect-scheme",),
            one_of=RedirectScheme,
            metavar="SCHEME",
            help=listing(RedirectScheme),
        ),
        Arg(("--redirect-template",), metavar="TEMPLATE", help="answer template of redirections"),
        Arg(("--rewrite-host",), metavar="HOST", help="rewrite the Host header"),
        Arg(("--rewrite-path",), metavar="PATH", help="rewrite the path"),
        Arg(("--rewrite-port",), type=port, metavar="PORT", help="rewrite the port"),
        Arg(("--required-auth",), action="store_true", help="require basic authentication"),
        Arg(
            ("--header",),
            action="append",
            type=_header,
            metavar="POSITION:Name=value",
            help="set a header on requests, responses or both (repeatable)",
        ),
    )


def _http_group(protocol: str) -> Command:
    """``frontend http`` or ``frontend https``."""
    name = protocol.upper()
    command = f"sozu -c config.toml frontend {protocol}"
    listener = "-a 0.0.0.0:80" if protocol == "http" else "-a 0.0.0.0:443"
    return Command(
        protocol,
        help=f"add or remove {name} frontends",
        examples=[
            f"{command} add {listener} --hostname example.com -p /api --id api",
            f"{command} remove {listener} --hostname example.com -p /api",
        ],
        defaults={"protocol": protocol},
        dest="verb",
        subcommands=[
            Command(
                "add",
                help=f"route {name} requests for a host (and path, method) to a cluster",
                examples=[
                    f"{command} add {listener} --hostname example.com --id web",
                    f"{command} add {listener} --hostname example.com -p /api -m GET "
                    "--tags 'team=api' --id api",
                    f"{command} add {listener} --hostname example.com --path-equals /admin --deny",
                ],
                args=_http_frontend_args(adding=True, https=protocol == "https"),
                handler=frontend_http_add,
            ),
            Command(
                "remove",
                help=f"remove the {name} frontend of this address, host, path and method",
                examples=[
                    f"{command} remove {listener} --hostname example.com",
                    f"{command} remove {listener} --hostname example.com -p /api",
                ],
                args=_http_frontend_args(adding=False),
                handler=frontend_http_remove,
            ),
        ],
    )


_TCP_FRONTEND_ARGS = (
    Arg(("-i", "--id"), required=True, metavar="CLUSTER", help="cluster id"),
    Arg(
        ("-a", "--address"),
        required=True,
        type=address,
        metavar="ADDR",
        help="TCP listener address",
    ),
    _TAGS,
)

_TCP_GROUP = Command(
    "tcp",
    help="bind or unbind a TCP listener to a cluster",
    examples=["sozu -c config.toml frontend tcp add -i db -a 0.0.0.0:5432"],
    defaults={"protocol": "tcp"},
    dest="verb",
    subcommands=[
        Command(
            verb,
            help=text,
            examples=[f"sozu -c config.toml frontend tcp {verb} -i db -a 0.0.0.0:5432"],
            args=_TCP_FRONTEND_ARGS,
            handler=handler,
        )
        for verb, handler, text in (
            ("add", frontend_tcp_add, "send the connections of a TCP listener to a cluster"),
            ("remove", frontend_tcp_remove, "unbind a TCP listener from its cluster"),
        )
    ],
)

FRONTEND = Command(
    "frontend",
    help="list, add or remove frontends (routing rules)",
    examples=[
        "sozu -c config.toml frontend list",
        "sozu -c config.toml frontend http add -a 0.0.0.0:80 --hostname example.com --id web",
        "sozu -c config.toml frontend tcp add -i db -a 0.0.0.0:5432",
    ],
    subcommands=[
        _http_group("http"),
        _http_group("https"),
        _TCP_GROUP,
        Command(
            "list",
            help="list the frontends",
            examples=[
                "sozu -c config.toml frontend list",
                "sozu -c config.toml frontend list --https -d example.com",
            ],
            args=[
                Arg(("--http",), action="store_true", help="HTTP frontends"),
                Arg(("--https",), action="store_true", help="HTTPS frontends"),
                Arg(("--tcp",), action="store_true", help="TCP frontends"),
                Arg(("-d", "--domain"), metavar="TEXT", help="only hostnames containing TEXT"),
            ],
            handler=frontend_list,
        ),
    ],
)

COMMANDS = (FRONTEND,)
"""``frontend``."""
