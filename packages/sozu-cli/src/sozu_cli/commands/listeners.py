"""Listeners: list them; add, update, remove, activate or deactivate HTTP, HTTPS and TCP ones.

A listener is added inactive; ``activate`` makes the workers accept connections on it.
``update`` changes only the settings given and keeps the others.
"""

from __future__ import annotations

import argparse
from typing import Any

from sozu_config import (
    DEFAULT_ALPN_PROTOCOLS,
    H2_LISTENER_FIELDS,
    ActivateListener,
    AddHttpListener,
    AddHttpsListener,
    AddTcpListener,
    DeactivateListener,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    ListListeners,
    RemoveListener,
    TcpListenerConfig,
    TlsVersion,
    UpdateHttpListener,
    UpdateHttpsListener,
    UpdateTcpListener,
)
from sozu_config.responses import ListenersList

from ..arguments import address, answer, given, positive, template_file
from ..context import Context, content_of
from ..declarations import Arg, Argument, Command, Completer, OneOf, listing
from ..errors import UsageError
from .hsts import hsts_args, hsts_of

__all__ = ["COMMANDS"]


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
    "disable_http11",
    *H2_LISTENER_FIELDS,
)
_PROTOCOL_FIELDS = {
    "http": _LISTENER_FIELDS + _HTTP_FIELDS,
    "https": _LISTENER_FIELDS + _HTTP_FIELDS + _TLS_FIELDS,
    "tcp": _LISTENER_FIELDS,
}


def _listener_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = given(args, _PROTOCOL_FIELDS[args.protocol])
    if args.protocol == "https":
        hsts = hsts_of(args)
        if hsts is not None:
            settings["hsts"] = hsts if hsts.enabled else ""
        _alpn_of_http11_switch(settings)
    if args.protocol != "tcp":
        answers = dict(getattr(args, "answer", None) or [])
        for status in (404, 503):
            template = getattr(args, f"answer_{status}", None)
            if template is not None:
                answers[status] = template
        if answers:
            settings["answers"] = answers
    return settings


def _alpn_of_http11_switch(settings: dict[str, Any]) -> None:
    """``--disable-http11`` offers h2 alone, ``--enable-http11`` h2 and http/1.1, unless
    ``--alpn-protocols`` says otherwise (as ``disable_http11`` in ``config.toml``)."""
    disabled = settings.get("disable_http11")
    if disabled is not None and "alpn_protocols" not in settings:
        settings["alpn_protocols"] = ["h2"] if disabled else list(DEFAULT_ALPN_PROTOCOLS)


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


# --------------------------------------------------------------------------- commands

_ADDRESS = Arg(
    ("-a", "--address"), required=True, type=address, metavar="ADDR", help="listener address"
)


def _listener_args(protocol: ListenerType, *, update: bool) -> tuple[Argument, ...]:
    """The settings of a listener of ``protocol`` (``update``: with ways to forget some)."""
    switch = argparse.BooleanOptionalAction
    found: list[Argument] = [
        _ADDRESS,
        Arg(
            ("--public-address",),
            type=address,
            metavar="ADDR",
            help="address shown in forwarding headers",
        ),
    ]
    if update:
        found.append(
            Arg(
                ("--no-public-address",),
                dest="public_address",
                action="store_const",
                const="",
                help="forget the public address",
            )
        )
    found.append(
        Arg(
            ("--expect-proxy",),
            action=switch,
            default=None,
            help="connections start with a PROXY header",
        )
    )
    found += [
        Arg((f"--{name}-timeout",), type=positive, metavar="SECONDS", help=f"{name} timeout")
        for name in ("front", "back", "connect", "request")
    ]
    if protocol != ListenerType.TCP:
        found += _http_listener_args(update=update)
    if protocol == ListenerType.HTTPS:
        found += _tls_listener_args(update=update)
    return tuple(found)


def _http_listener_args(*, update: bool) -> list[Argument]:
    switch = argparse.BooleanOptionalAction
    return [
        Arg(("--sticky-name",), metavar="NAME", help="sticky-session cookie name"),
        Arg(("--sozu-id-header",), metavar="NAME", help="name of the request id header"),
        Arg(("--elide-x-real-ip",), action=switch, default=None, help="remove X-Real-IP"),
        Arg(("--send-x-real-ip",), action=switch, default=None, help="add X-Real-IP"),
        Arg(
            ("--trust-forwarded-headers",),
            action=switch,
            default=None,
            help="keep the X-Forwarded-Proto and -Port clients send (a trusted proxy in front)",
        ),
        *(
            Arg(
                (f"--answer-{status}",),
                type=template_file,
                metavar="FILE",
                completer=Completer.FILE,
                help=f"answer template for {status}",
            )
            for status in (404, 503)
        ),
        Arg(
            ("--answer",),
            action="append",
            type=answer,
            metavar="STATUS=FILE",
            completer=Completer.FILE,
            help="answer template (repeatable)"
            + ("; replaces all the listener's templates" if update else ""),
        ),
    ]


def _tls_listener_args(*, update: bool) -> list[Argument]:
    found: list[Argument] = [
        Arg(
            ("--tls-versions",),
            nargs="+",
            one_of=TlsVersion,
            metavar="VERSION",
            help=listing(TlsVersion),
        ),
        Arg(
            ("--cipher-list",),
            nargs="+",
            metavar="CIPHER",
            help="TLS 1.2 cipher suites (OpenSSL names)",
        ),
        Arg(
            ("--alpn-protocols",),
            nargs="+",
            choices=DEFAULT_ALPN_PROTOCOLS,
            metavar="PROTOCOL",
            help="ALPN protocols offered, preferred first: h2, http/1.1 (default: both)",
        ),
        Arg(
            ("--strict-sni-binding",),
            action=argparse.BooleanOptionalAction,
            default=None,
            help="answer 421 when Host differs from SNI",
        ),
        Arg(
            ("--send-tls13-tickets",),
            type=int,
            metavar="N",
            help="TLS 1.3 session tickets (0-16)",
        ),
        Arg(("--default-sni",), metavar="NAME", help="name served to clients without SNI"),
        *hsts_args(off="no HSTS on this listener"),
        OneOf(
            (
                Arg(
                    ("--disable-http11",),
                    dest="disable_http11",
                    action="store_const",
                    const=True,
                    help="serve HTTP/2 only: drop clients that do not negotiate h2 (ALPN: h2, "
                    "unless --alpn-protocols)",
                ),
                Arg(
                    ("--enable-http11",),
                    dest="disable_http11",
                    action="store_const",
                    const=False,
                    help="serve HTTP/1.1 too (ALPN: h2 http/1.1, unless --alpn-protocols)",
                ),
            )
        ),
        *(
            Arg(
                ("--" + name.replace("_", "-"),),
                type=int,
                metavar="SECONDS" if name.endswith("_seconds") else "N",
                help=_H2_HELP[name],
            )
            for name in H2_LISTENER_FIELDS
        ),
    ]
    if update:
        found.append(
            Arg(
                ("--reset-alpn",),
                dest="alpn_protocols",
                action="store_const",
                const=list(DEFAULT_ALPN_PROTOCOLS),
                help="offer the default ALPN protocols again: h2 http/1.1",
            )
        )
        found.append(
            Arg(
                ("--no-default-sni",),
                dest="default_sni",
                action="store_const",
                const="",
                help="forget the default SNI",
            )
        )
    return found


_H2_HELP = {
    "h2_max_rst_stream_per_window": "HTTP/2: RST_STREAM frames a client may send per second",
    "h2_max_ping_per_window": "HTTP/2: PING frames a client may send per second",
    "h2_max_settings_per_window": "HTTP/2: SETTINGS frames a client may send per second",
    "h2_max_empty_data_per_window": "HTTP/2: empty DATA frames a client may send per second",
    "h2_max_window_update_stream0_per_window": "HTTP/2: connection WINDOW_UPDATE frames a "
    "client may send per second",
    "h2_max_continuation_frames": "HTTP/2: CONTINUATION frames of one header block",
    "h2_max_glitch_count": "HTTP/2: protocol misbehaviours a connection may accumulate",
    "h2_initial_connection_window": "HTTP/2: bytes of the connection's receive window",
    "h2_max_concurrent_streams": "HTTP/2: streams a client may have open at once",
    "h2_stream_shrink_ratio": "HTTP/2: capacity/open streams ratio over which the stream "
    "table shrinks",
    "h2_max_rst_stream_lifetime": "HTTP/2: RST_STREAM frames a client may send per connection",
    "h2_max_rst_stream_abusive_lifetime": "HTTP/2: streams a client may reset before their "
    "answer, per connection",
    "h2_max_rst_stream_emitted_lifetime": "HTTP/2: RST_STREAM frames the proxy may send per "
    "connection",
    "h2_max_header_list_size": "HTTP/2: bytes of a decoded header list",
    "h2_max_header_table_size": "HTTP/2: bytes of the HPACK dynamic table (0: none)",
    "h2_max_header_fields": "HTTP/2: header fields of one header block",
    "h2_stream_idle_timeout_seconds": "HTTP/2: seconds a stream may stay idle",
    "h2_graceful_shutdown_deadline_seconds": "HTTP/2: seconds open streams get to finish on "
    "soft stop (0: no limit)",
}
"""One line of ``--help`` for each HTTP/2 setting (the documentation says more)."""

_DEFAULT_PORTS = {ListenerType.HTTP: "80", ListenerType.HTTPS: "443", ListenerType.TCP: "5432"}


def _protocol_group(protocol: ListenerType) -> Command:
    """``listener http``, ``listener https`` or ``listener tcp``."""
    name = protocol.upper()
    command = f"sozu -c config.toml listener {protocol}"
    listener_address = f"-a 0.0.0.0:{_DEFAULT_PORTS[protocol]}"
    if protocol == ListenerType.HTTPS:
        second_example = f"{command} add {listener_address} --tls-versions tls_v12 tls_v13"
    else:
        second_example = f"{command} add {listener_address} --expect-proxy"
    return Command(
        str(protocol),
        help=f"manage {name} listeners",
        examples=[
            f"{command} add {listener_address}",
            f"{command} activate {listener_address}",
        ],
        defaults={"protocol": str(protocol)},
        dest="verb",
        subcommands=[
            Command(
                "add",
                help=f"add an {name} listener (inactive until activated)",
                examples=[f"{command} add {listener_address}", second_example],
                args=_listener_args(protocol, update=False),
                handler=listener_add,
            ),
            Command(
                "update",
                help=f"change settings of an {name} listener (the others are kept)",
                examples=[
                    f"{command} update {listener_address} --front-timeout 120",
                    f"{command} update {listener_address} --no-expect-proxy",
                ],
                args=_listener_args(protocol, update=True),
                handler=listener_update,
            ),
            *(
                Command(
                    verb,
                    help=text,
                    examples=[f"{command} {verb} {listener_address}"],
                    args=[_ADDRESS],
                    handler=handler,
                )
                for verb, handler, text in (
                    (
                        "remove",
                        listener_remove,
                        "remove a listener (its frontends must be removed first)",
                    ),
                    ("activate", listener_activate, "start accepting connections"),
                    (
                        "deactivate",
                        listener_deactivate,
                        "stop accepting connections (those in flight go on)",
                    ),
                )
            ),
        ],
    )


LISTENER = Command(
    "listener",
    help="list, add, remove, activate, deactivate or update listeners",
    examples=[
        "sozu -c config.toml listener list",
        "sozu -c config.toml listener http add -a 0.0.0.0:80",
        "sozu -c config.toml listener http activate -a 0.0.0.0:80",
    ],
    subcommands=[
        *(_protocol_group(protocol) for protocol in ListenerType),
        Command(
            "list",
            help="list the listeners",
            examples=[
                "sozu -c config.toml listener list",
                "sozu -c config.toml listener list --json",
            ],
            handler=listener_list,
        ),
    ],
)

COMMANDS = (LISTENER,)
"""``listener``."""
