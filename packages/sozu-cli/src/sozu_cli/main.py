"""The ``sozu`` command: start the proxy, inspect it and change it.

Every subcommand (see ``sozu --help``) turns its arguments into one request of the command
protocol (a few send several), sends it to the daemon's command socket and shows the answer:
rich tables on a terminal, plain aligned text in pipes, plain JSON with ``--json``.

Exit codes: 0 success; 1 the daemon answered failure; 2 bad usage or bad input (arguments,
unreadable or invalid files, invalid addresses); 3 no daemon answers on the command socket. A
user mistake is one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from sozu_config.protocol import validation_message

from . import apply as apply_command
from .arguments import Parser, add_command, add_version, common_options, non_negative
from .commands import certificates, configuration, daemon, queries, routing
from .completion import SHELLS, script
from .context import Context
from .errors import CommandError, ExitCode
from .output import Output

__all__ = ["build_parser", "main"]

EXAMPLES = [
    "sozu -c config.toml start",
    "sozu -c config.toml status",
    "sozu -c config.toml cluster add -i api --load-balancing-policy round_robin",
    "sozu -c config.toml frontend http add -a 0.0.0.0:80 --hostname example.com --id api",
    "sozu -c config.toml backend add -i api --backend-id api-1 -a 10.0.0.1:8080",
    "sozu -c config.toml query state --json",
    "sozu apply config.toml --dry-run",
    "sozu --socket /run/sozu/sozu.sock shutdown",
]


def _completion(ctx: Context) -> int:
    sys.stdout.write(script(build_parser(), ctx.args.shell))
    return 0


def _apply(ctx: Context) -> int:
    return apply_command.run(ctx.args, ctx.output)


def build_parser() -> Parser:
    """The whole ``sozu`` parser (also the source of the completion scripts)."""
    parser = Parser(
        prog="sozu",
        description="Start, inspect and change the sōzu reverse proxy. Commands that talk to a "
        "running proxy use the command_socket of the configuration file (-c FILE or "
        "$SOZU_CONFIG), or --socket PATH.",
        epilog="examples:\n"
        + "\n".join(f"  {example}" for example in EXAMPLES)
        + "\n\nexit codes: 0 success, 1 the daemon refused, 2 bad usage or input, "
        "3 daemon unreachable",
    )
    add_version(parser)
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="configuration file (default: $SOZU_CONFIG); its command_socket is used",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help="command socket to talk to, without a configuration file",
    )
    parser.add_argument(
        "-t",
        "--timeout",
        metavar="MS",
        type=non_negative,
        default=None,
        help="milliseconds to wait for an answer (default: the file's ctl_command_timeout; changes "
        "and upgrades wait at least 30 s; 0: no limit)",
    )
    parser.add_argument(
        "-j", "--json", action="store_true", default=False, help="print plain JSON on stdout"
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    daemon.register(subcommands, common)
    routing.register(subcommands, common)
    certificates.register(subcommands, common)
    queries.register(subcommands, common)
    configuration.register(subcommands, common)

    apply_parser = add_command(
        subcommands,
        "apply",
        help="make the proxy match a configuration file (same as sozu-apply)",
        description="Show the plan that makes the live proxy (or every --socket) match FILE, "
        "then apply it as one all-or-nothing batch; --dry-run, --check, --watch.",
        examples=apply_command.EXAMPLES,
        parents=[common_options(socket=False)],
        handler=_apply,
    )
    apply_command.add_arguments(apply_parser, standalone=False)

    completion = add_command(
        subcommands,
        "completion",
        help="print a shell completion script",
        examples=[
            "source <(sozu completion bash)",
            "sozu completion zsh > ~/.zfunc/_sozu",
            "sozu completion fish | source",
        ],
        handler=_completion,
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help=", ".join(SHELLS))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sozu``: parse, run the subcommand, translate errors to exit codes."""
    args = build_parser().parse_args(argv)
    output = Output(json_mode=bool(args.json))
    ctx = Context(args, output)
    try:
        code: int = args.handler(ctx)
        return code
    except CommandError as error:
        output.error(error.message)
        return error.code
    except ValidationError as error:
        output.error(f"invalid value: {validation_message(error)} (see '{_prog(args)} --help')")
        return ExitCode.USAGE
    except KeyboardInterrupt:
        output.note("interrupted")
        return 130
    except BrokenPipeError:
        # the reader went away (sozu … | head): not an error of the command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


def _prog(args: argparse.Namespace) -> str:
    words = ["sozu"]
    for name in ("command", *sorted(k for k in vars(args) if k.endswith("_command")), "verb"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value not in words:
            words.append(value)
    return " ".join(words)


if __name__ == "__main__":
    sys.exit(main())
