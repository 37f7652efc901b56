"""The ``sozu`` command: start the proxy, inspect it and change it.

Every subcommand (see ``sozu --help``) turns its arguments into one request of the command
protocol (a few send several), sends it to the daemon's command socket and shows the answer:
rich tables on a terminal, plain aligned text in pipes, plain JSON with ``--json``.

Exit codes: 0 success; 1 the daemon answered failure; 2 bad usage or bad input (arguments,
unreadable or invalid files, invalid addresses); 3 no daemon answers on the command socket. A
user mistake is one sentence on stderr, never a traceback; with ``--json`` stdout then carries
``{"status": "failure", "kind": …, "message": …}`` (kinds: ``unreachable``, ``usage``,
``failure``, ``timeout``, or the daemon's own).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Collection
from functools import cache, partial

from pydantic import ValidationError

from sozu_config.client import MUTATION_TIMEOUT
from sozu_config.protocol import validation_message

from . import apply as apply_command
from . import commands
from .arguments import Parser, add_version, non_negative
from .completion import SHELLS, script
from .context import Context
from .declarations import Arg, Command, Completer, GlobalOptions, add_arguments, add_commands
from .errors import CommandError, ExitCode
from .output import Output

__all__ = ["COMMANDS", "PROGRAMS", "build_parser", "main"]

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


PROGRAMS = ("sozu", "sozu-apply")
"""The commands ``sozu completion`` writes scripts for."""


def _completion(ctx: Context) -> int:
    parser = build_parser() if ctx.args.program == "sozu" else apply_command.build_parser()
    sys.stdout.write(script(parser, ctx.args.shell))
    return 0


def _apply(ctx: Context) -> int:
    return apply_command.run(ctx.args, ctx.output)


def _global_options(
    *, repeated: bool, socket: bool = True, long_timeout: bool = True
) -> tuple[Arg, ...]:
    """``-c``, ``--socket``, ``-t`` and ``-j``: before the subcommand, or ``repeated`` after
    it (``sozu status --json``). Repeated, their defaults are suppressed so that an option
    given before the subcommand is not reset by the subcommand's parser when it is not
    repeated there. Without ``long_timeout`` the wait is ``-t`` only (the command has a
    ``--timeout`` of its own)."""
    default = argparse.SUPPRESS if repeated else None
    changes = "changes" if repeated else "changes and upgrades"
    options = [
        Arg(
            ("-c", "--config"),
            metavar="FILE",
            default=default,
            completer=Completer.FILE,
            help="configuration file (default: $SOZU_CONFIG); its command_socket is used",
        )
    ]
    if socket:
        options.append(
            Arg(
                ("--socket",),
                metavar="PATH",
                default=default,
                completer=Completer.FILE,
                help="command socket to talk to, without a configuration file",
            )
        )
    options += [
        Arg(
            ("-t", "--timeout") if long_timeout else ("-t",),
            dest="timeout",
            metavar="MS",
            type=non_negative,
            default=default,
            help="milliseconds to wait for an answer (default: the file's ctl_command_timeout; "
            f"{changes} wait at least {MUTATION_TIMEOUT:g} s; 0: no limit)",
        ),
        Arg(
            ("-j", "--json"),
            action="store_true",
            default=argparse.SUPPRESS if repeated else False,
            help="print plain JSON on stdout",
        ),
    ]
    return tuple(options)


def _repeated_options(*, socket: bool, long_timeout: bool = True) -> list[Parser]:
    """The parent parser of the global options repeated after a subcommand."""
    parser = Parser(add_help=False)
    group = parser.add_argument_group("global options")
    add_arguments(group, _global_options(repeated=True, socket=socket, long_timeout=long_timeout))
    return [parser]


COMMANDS: tuple[Command, ...] = (
    *commands.COMMANDS,
    Command(
        "apply",
        help="make the proxy match a configuration file (same as sozu-apply)",
        description="Show the plan that makes the live proxy (or every --socket) match FILE, "
        "then apply it as one all-or-nothing batch; --dry-run, --check, --watch.",
        examples=apply_command.EXAMPLES,
        global_options=GlobalOptions.WITHOUT_SOCKET,
        extend=partial(apply_command.add_arguments, standalone=False),
        handler=_apply,
    ),
    Command(
        "completion",
        help="print a shell completion script",
        examples=[
            "source <(sozu completion bash)",
            "source <(sozu completion bash sozu-apply)",
            "sozu completion zsh > ~/.zfunc/_sozu",
            "sozu completion fish | source",
        ],
        args=[
            Arg(("shell",), choices=SHELLS, metavar="SHELL", help=", ".join(SHELLS)),
            Arg(
                ("program",),
                nargs="?",
                choices=PROGRAMS,
                default="sozu",
                metavar="COMMAND",
                help=f"the command to complete: {' or '.join(PROGRAMS)} (default: sozu)",
            ),
        ],
        global_options=GlobalOptions.NONE,
        handler=_completion,
    ),
)
"""Every subcommand of ``sozu``."""


def build_parser(words: Collection[str] | None = None) -> Parser:
    """The whole ``sozu`` parser (also the source of the completion scripts). With ``words``,
    the command line about to be parsed, only the parsers of the command it names are built
    whole; the others are their name and help line (see :func:`add_commands`)."""
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
    add_arguments(parser, _global_options(repeated=False))
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(
        subcommands,
        COMMANDS,
        {
            GlobalOptions.ALL: cache(partial(_repeated_options, socket=True)),
            GlobalOptions.WITHOUT_SOCKET: cache(partial(_repeated_options, socket=False)),
            GlobalOptions.SHORT_TIMEOUT: cache(
                partial(_repeated_options, socket=True, long_timeout=False)
            ),
            GlobalOptions.NONE: list,
        },
        only=None if words is None else frozenset(words),
    )
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The parsed arguments. With ``-j``/``--json`` among them, a usage error also prints the
    JSON failure document on stdout (the parser's own line still goes to stderr)."""
    words = sys.argv[1:] if argv is None else argv
    if not {"-j", "--json"} & set(words):
        return build_parser(words).parse_args(words)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return build_parser(words).parse_args(words)
    except SystemExit as stop:
        if stop.code == ExitCode.USAGE:
            lines = captured.getvalue().strip().splitlines()
            Output(json_mode=True).failure("usage", lines[-1] if lines else "invalid arguments")
        raise
    finally:
        sys.stderr.write(captured.getvalue())
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sozu``: parse, run the subcommand, translate errors to exit codes."""
    args = _parse(argv)
    output = Output(json_mode=bool(args.json))
    ctx = Context(args, output)
    try:
        code: int = args.handler(ctx)
        return code
    except CommandError as error:
        output.error(error.message)
        output.failure(error.kind, error.message)
        return error.code
    except ValidationError as error:
        message = f"invalid value: {validation_message(error)} (see '{_prog(args)} --help')"
        output.error(message)
        output.failure("usage", message)
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
