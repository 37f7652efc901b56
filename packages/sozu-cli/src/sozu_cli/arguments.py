"""The argument parser of the commands: its error style, how a subcommand is added, and the
argument types that turn text into valid values (or a usage error naming the argument).

A bad argument ends the command with exit code 2 and one line on stderr:
``sozu backend add: error: argument -a/--address: invalid address 'x': … (see 'sozu backend
add --help')``.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sozu_config import normalize_address
from sozu_config.files import read_regular_text

from .errors import ExitCode

__all__ = [
    "Handler",
    "Parser",
    "add_command",
    "address",
    "answer",
    "enumeration",
    "given",
    "key_values",
    "non_negative",
    "pem_file",
    "port",
    "positive",
    "seconds",
    "template_file",
]

SHORTEST_INTERVAL = 0.1
"""The shortest refresh interval (seconds) of the commands that repeat a query."""

Handler = Callable[[Any], int]
"""What a leaf command runs: takes the :class:`~sozu_cli.context.Context`, returns the exit
code."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line pointing at ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # raw: the examples of the epilog keep their lines; the description is filled here
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if kwargs.get("description"):
            kwargs["description"] = textwrap.fill(kwargs["description"], width=88)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(ExitCode.USAGE)


def add_command(
    subcommands: argparse._SubParsersAction[Parser],
    name: str,
    *,
    help: str,
    examples: Sequence[str],
    parents: Sequence[Parser] = (),
    description: str | None = None,
    handler: Handler | None = None,
) -> Parser:
    """A subcommand with its help line, a description and an epilog of examples."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    parser = subcommands.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=epilog,
        parents=list(parents),
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that were given (None means: not given)."""
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


# --------------------------------------------------------------------------- argument types


def address(text: str) -> str:
    """``IP:port`` in normal form."""
    try:
        return normalize_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _integer(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def seconds(text: str) -> float:
    """An interval in seconds (``0.5``, ``2``), at least :data:`SHORTEST_INTERVAL`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < SHORTEST_INTERVAL:
        raise argparse.ArgumentTypeError(f"{text} must be at least {SHORTEST_INTERVAL} seconds")
    return value


def port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 1-65535")
    return value


def enumeration(choices: Sequence[str]) -> Callable[[str], str]:
    """One of ``choices``, case-insensitive (``ROUND_ROBIN`` as in config.toml works too)."""

    def convert(text: str) -> str:
        value = text.strip().lower().replace("-", "_")
        if value not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of: {', '.join(choices)}")
        return value

    convert.__name__ = "choice"
    return convert


def key_values(text: str) -> dict[str, str]:
    """``'k=v, k2=v2'`` as a dict."""
    found: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(
                f"{part!r} is not key=value (e.g. 'env=prod,team=web')"
            )
        found[name.strip()] = value.strip()
    return found


def _read_text(path_text: str, what: str) -> str:
    from sozu_config.config import MAX_NAMED_FILE_BYTES

    path = Path(path_text)
    try:
        return read_regular_text(path, MAX_NAMED_FILE_BYTES)
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{what} file {path_text!r} does not exist") from None
    except IsADirectoryError:
        raise argparse.ArgumentTypeError(f"{what} file {path_text!r} is a directory") from None
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"cannot read {what} file {path_text!r}: {error.strerror or error}"
        ) from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{what} file {path_text!r} is not UTF-8 text") from None


def pem_file(text: str) -> str:
    """The content of a PEM file (certificate, chain or key)."""
    content = _read_text(text, "PEM")
    if "-----BEGIN " not in content:
        raise argparse.ArgumentTypeError(f"{text!r} is not a PEM file (no '-----BEGIN' line)")
    return content


def answer(text: str) -> tuple[int, str]:
    """``STATUS=FILE``: an answer template read from FILE for an HTTP status."""
    status_text, sep, path = text.partition("=")
    if not sep or not status_text.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not STATUS=FILE (e.g. '503=maintenance.http')"
        )
    status = int(status_text)
    if not 100 <= status <= 599:
        raise argparse.ArgumentTypeError(f"{status} is not an HTTP status (100-599)")
    return status, _read_text(path.strip(), "answer template")


def template_file(text: str) -> str:
    """The content of an answer template file."""
    return _read_text(text, "answer template")


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the versions of the three packages and of Python."""
    import platform

    import sozu_runtime
    from sozu_config import __version__ as config_version

    from . import __version__

    parser.add_argument(
        "--version",
        action="version",
        version=f"{parser.prog} {__version__} (sozu-config {config_version}, sozu-runtime "
        f"{sozu_runtime.__version__}; Python {platform.python_version()})",
    )
