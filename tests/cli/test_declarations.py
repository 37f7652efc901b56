"""The parsers built from the command tables: the same ``--help`` and the same parsed values as
the hand-built parsers they replaced, enumerations read from the models, and the generic
builder on a small table of its own."""

from __future__ import annotations

import argparse
from enum import StrEnum
from pathlib import Path

import pytest

from sozu_cli.arguments import Parser
from sozu_cli.declarations import (
    COMPLETER,
    Arg,
    Command,
    Completer,
    GlobalOptions,
    OneOf,
    add_commands,
)
from sozu_cli.main import build_parser
from sozu_config import LoadBalancingAlgorithm, RulePosition, TlsVersion

HELP = Path(__file__).parent / "help"


@pytest.mark.parametrize("expected", sorted(HELP.glob("*.txt")), ids=lambda path: path.stem)
def test_help_is_what_the_hand_built_parsers_printed(
    expected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is named after its command's words joined by ``_``."""
    monkeypatch.setenv("COLUMNS", "100")
    parser = _leaf(build_parser(), expected.stem.split("_")[1:])
    assert parser.format_help() == expected.read_text()


def parse(*argv: str) -> dict[str, object]:
    namespace = vars(build_parser().parse_args(list(argv)))
    namespace.pop("handler")
    return namespace


def test_parsed_values_of_representative_commands() -> None:
    assert parse(
        "-j", "cluster", "add", "-i", "api", "--load-balancing-policy", "LEAST-LOADED"
    ) == {
        "config": None,
        "socket": None,
        "timeout": None,
        "json": True,
        "command": "cluster",
        "cluster_command": "add",
        "id": "api",
        "load_balancing": "least_loaded",
        "load_metric": None,
        "sticky_session": False,
        "https_redirect": False,
        "https_redirect_port": None,
        "send_proxy": False,
        "expect_proxy": False,
        "www_authenticate": None,
        "http2": False,
        "max_connections_per_ip": None,
        "retry_after": None,
        "authorized_hash": None,
        "answer": None,
    }
    update = parse(
        "listener",
        "https",
        "update",
        "-a",
        "127.0.0.1:8443",
        "--no-public-address",
        "--tls-versions",
        "TLS_V12",
        "tls_v13",
        "--no-hsts",
        "--no-default-sni",
        "-t",
        "5",
    )
    assert update["protocol"] == "https"
    assert update["verb"] == "update"
    assert update["address"] == "127.0.0.1:8443"
    assert update["public_address"] == ""
    assert update["default_sni"] == ""
    assert update["tls_versions"] == ["tls_v12", "tls_v13"]
    assert update["hsts"] is False
    assert update["hsts_preload"] is None
    assert update["expect_proxy"] is None
    assert update["timeout"] == 5
    assert update["disable_http11"] is None
    assert update["h2_max_concurrent_streams"] is None
    http2 = parse(
        "listener",
        "https",
        "update",
        "-a",
        "127.0.0.1:8443",
        "--disable-http11",
        "--h2-max-concurrent-streams",
        "20",
        "--h2-graceful-shutdown-deadline-seconds",
        "0",
    )
    assert http2["disable_http11"] is True
    assert http2["alpn_protocols"] is None  # chosen by the handler: h2 alone
    assert (http2["h2_max_concurrent_streams"], http2["h2_graceful_shutdown_deadline_seconds"]) == (
        20,
        0,
    )
    assert parse("listener", "https", "update", "-a", "127.0.0.1:8443", "--reset-alpn")[
        "alpn_protocols"
    ] == ["h2", "http/1.1"]
    assert parse("cluster", "h2", "disable", "-i", "api")["h2_switch"] == "disable"
    frontend = parse(
        "frontend", "http", "remove", "-a", "0.0.0.0:80", "--hostname", "a.example", "-i", "web"
    )
    assert frontend == {
        "config": None,
        "socket": None,
        "timeout": None,
        "json": False,
        "command": "frontend",
        "frontend_command": "http",
        "verb": "remove",
        "protocol": "http",
        "address": "0.0.0.0:80",
        "hostname": "a.example",
        "path_prefix": None,
        "path_regex": None,
        "path_equals": None,
        "method": None,
        "id": "web",
        "deny": False,
        "tags": None,
    }
    assert parse("logging", "debug")["level"] == "debug"
    assert parse("metrics", "clear")["metrics_command"] == "clear"


def test_enumerations_come_from_the_models() -> None:
    parser = build_parser()
    options = {
        option: action
        for path in (["cluster", "add"], ["frontend", "https", "add"], ["listener", "https", "add"])
        for action in _leaf(parser, path)._actions
        for option in action.option_strings
    }
    assert getattr(options["--load-balancing-policy"], COMPLETER) == tuple(LoadBalancingAlgorithm)
    assert getattr(options["--position"], COMPLETER) == tuple(RulePosition)
    assert getattr(options["--tls-versions"], COMPLETER) == tuple(TlsVersion)


def _leaf(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser:
    for word in path:
        (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = subparsers.choices[word]
    return parser


class Colour(StrEnum):
    RED = "red"
    DARK_BLUE = "dark_blue"


def _paint(ctx: object) -> int:
    return 0


TABLE = (
    Command(
        "paint",
        help="paint things",
        examples=["demo paint wall --colour red"],
        subcommands=[
            Command(
                "wall",
                help="paint a wall",
                examples=["demo paint wall --colour red"],
                args=[
                    Arg(("--colour",), one_of=Colour, metavar="COLOUR", help="a colour"),
                    OneOf(
                        (
                            Arg(("--inside",), action="store_true", help="inside"),
                            Arg(("--outside",), action="store_true", help="outside"),
                        ),
                        required=True,
                    ),
                    Arg(
                        ("plan",),
                        nargs="?",
                        metavar="FILE",
                        completer=Completer.FILE,
                        help="a plan",
                    ),
                ],
                defaults={"surface": "wall"},
                handler=_paint,
            )
        ],
    ),
)


def _demo() -> Parser:
    parser = Parser(prog="demo")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = Parser(add_help=False)
    shared.add_argument("--verbose", action="store_true")
    add_commands(
        subcommands,
        TABLE,
        {
            GlobalOptions.ALL: lambda: [shared],
            GlobalOptions.WITHOUT_SOCKET: list,
            GlobalOptions.NONE: list,
        },
    )
    return parser


def test_the_generic_builder(capsys: pytest.CaptureFixture[str]) -> None:
    args = _demo().parse_args(["paint", "wall", "--colour", "Dark-Blue", "--inside", "--verbose"])
    assert args.command == "paint"
    assert args.paint_command == "wall"
    assert args.colour == "dark_blue"
    assert args.inside is True
    assert args.verbose is True
    assert args.surface == "wall"
    assert args.plan is None
    assert args.handler is _paint
    with pytest.raises(SystemExit) as refused:
        _demo().parse_args(["paint", "wall", "--colour", "green", "--inside"])
    assert refused.value.code == 2
    assert "'green' is not one of: red, dark_blue" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _demo().parse_args(["paint", "wall", "--inside", "--outside"])
    assert "not allowed with argument" in capsys.readouterr().err
    wall = _leaf(_demo(), ["paint", "wall"])
    assert wall.epilog == "examples:\n  demo paint wall --colour red"
    assert wall.description == "Paint a wall."
    completers = {a.dest: getattr(a, COMPLETER, None) for a in wall._actions}
    assert completers["plan"] == Completer.FILE
    assert completers["colour"] == ("red", "dark_blue")
    assert completers["verbose"] is None


def test_a_parser_for_one_command_line_builds_only_the_command_it_names() -> None:
    """``build_parser(words)`` builds the named command whole and the others as their name and
    help line: the top-level help and the command's own parsing are those of the whole
    parser."""
    words = ["--socket", "/run/sozu.sock", "cluster", "list", "--json"]
    whole, partial = build_parser(), build_parser(words)
    assert vars(partial.parse_args(words)) == vars(whole.parse_args(words))
    assert partial.format_help() == whole.format_help()
    assert (
        _leaf(partial, ["cluster", "list"]).format_help()
        == _leaf(whole, ["cluster", "list"]).format_help()
    )
    status = _leaf(partial, ["status"])  # not named: its name and help only
    assert status.format_usage() != _leaf(whole, ["status"]).format_usage()
    backend = _leaf(partial, ["backend"])
    assert [a for a in backend._actions if isinstance(a, argparse._SubParsersAction)] == []
    with pytest.raises(SystemExit):
        partial.parse_args(["no-such-command"])
