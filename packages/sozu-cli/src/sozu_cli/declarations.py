"""The commands as data: each command is a :class:`Command` (its name, help, examples, arguments
and handler), each argument an :class:`Arg`; :func:`add_commands` turns a table of them into
argparse parsers. The parsers (and the completion scripts generated from them) never restate
what a declaration says.

An argument whose values are an enumeration of :mod:`sozu_config.models` is declared with
``one_of=TheEnum``: the values are read from the enumeration, matched case-insensitively
(``ROUND_ROBIN`` as in config.toml works too) and offered by the completion scripts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, get_args

from .arguments import Handler, Parser, add_command, enumeration

__all__ = [
    "COMPLETER",
    "Arg",
    "Argument",
    "Command",
    "Completer",
    "GlobalOptions",
    "OneOf",
    "add_arguments",
    "add_commands",
    "listing",
    "literal_values",
    "values_of",
]

COMPLETER = "sozu_completer"
"""The attribute of an argparse action that says how a shell completes its value: a
:class:`Completer`, or a tuple of the words it may be."""


class Completer(StrEnum):
    """How a shell completes the value of an argument (beyond choices)."""

    FILE = "file"
    """A file name."""


class GlobalOptions(StrEnum):
    """Which of the global options (``-c``, ``--socket``, ``-t``, ``-j``) a command repeats."""

    ALL = "all"
    WITHOUT_SOCKET = "without_socket"
    SHORT_TIMEOUT = "short_timeout"
    """All of them, the wait spelt ``-t`` only: the command has a ``--timeout`` of its own
    (``cluster health-check set --timeout``, the probe's)."""
    NONE = "none"


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""The value of a field that is not passed on to ``add_argument`` (its default applies)."""


def values_of(enumeration_type: type[StrEnum]) -> tuple[str, ...]:
    """The values of an enumeration, in declaration order."""
    return tuple(member.value for member in enumeration_type)


def literal_values(model: Any, name: str) -> tuple[str, ...]:
    """The values a ``Literal[...]`` field of a pydantic model accepts, in declaration order."""
    return tuple(str(value) for value in get_args(model.model_fields[name].annotation))


def listing(enumeration_type: type[StrEnum]) -> str:
    """``a, b, c``: the values of an enumeration, for a help text."""
    return ", ".join(values_of(enumeration_type))


Enumeration = type[StrEnum]
ActionClass = type[argparse.Action]


@dataclass(frozen=True)
class Arg:
    """One argument: an option (``flags`` start with ``-``) or a positional (one name)."""

    flags: tuple[str, ...]
    help: str
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    one_of: Enumeration | None = None
    """Values of this enumeration, case-insensitive (converted by the argument type)."""
    choices: Sequence[str] | None = None
    """Exact values (argparse's own ``choices``)."""
    action: str | ActionClass | None = None
    nargs: str | int | None = None
    required: bool = False
    dest: str | None = None
    default: Any = UNSET
    const: Any = UNSET
    completer: Completer | tuple[str, ...] | None = None
    """How a shell completes the value: a :class:`Completer`, or the words it may be."""

    def add_to(self, container: argparse._ActionsContainer) -> argparse.Action:
        """Add this argument to a parser or a group of one."""
        settings: dict[str, Any] = {"help": self.help}
        given = {
            "metavar": self.metavar,
            "type": self.type,
            "choices": self.choices,
            "action": self.action,
            "nargs": self.nargs,
            "dest": self.dest,
        }
        settings.update({name: value for name, value in given.items() if value is not None})
        if self.one_of is not None:
            settings["type"] = enumeration(values_of(self.one_of))
        if self.required:
            settings["required"] = True
        if self.default is not UNSET:
            settings["default"] = self.default
        if self.const is not UNSET:
            settings["const"] = self.const
        action = container.add_argument(*self.flags, **settings)
        if self.completer is not None:
            setattr(action, COMPLETER, self.completer)
        elif self.one_of is not None:
            setattr(action, COMPLETER, values_of(self.one_of))
        return action


@dataclass(frozen=True)
class OneOf:
    """Arguments of which at most one (exactly one when ``required``) may be given."""

    args: tuple[Arg, ...]
    required: bool = False


Argument = Arg | OneOf


@dataclass(frozen=True)
class Command:
    """A command: a leaf runs ``handler``; a group has ``subcommands``, and when it also has a
    ``handler`` that handler runs when no subcommand is given (``sozu metrics``)."""

    name: str
    help: str
    examples: Sequence[str]
    args: Sequence[Argument] = ()
    handler: Handler | None = None
    subcommands: Sequence[Command] = ()
    description: str | None = None
    """The text of ``--help`` (default: the help line as a sentence)."""
    global_options: GlobalOptions = GlobalOptions.ALL
    """The global options a leaf repeats (a group has none)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Attributes set on the parsed arguments of this command and its subcommands."""
    dest: str | None = None
    """Where the chosen subcommand's name goes (default: ``<name>_command``)."""
    extend: Callable[[Parser], None] | None = None
    """Adds arguments declared elsewhere (``sozu apply`` shares those of ``sozu-apply``)."""


def add_arguments(parser: argparse._ActionsContainer, arguments: Sequence[Argument]) -> None:
    """Add ``arguments`` in order (mutually exclusive groups where declared)."""
    for argument in arguments:
        if isinstance(argument, OneOf):
            group = parser.add_mutually_exclusive_group(required=argument.required)
            for member in argument.args:
                member.add_to(group)
        else:
            argument.add_to(parser)


def add_commands(
    subcommands: argparse._SubParsersAction[Parser],
    commands: Sequence[Command],
    global_options: Mapping[GlobalOptions, Callable[[], Sequence[Parser]]],
    *,
    only: Collection[str] | None = None,
) -> None:
    """Add the parsers of ``commands`` (and of their subcommands) to ``subcommands``.

    ``global_options`` gives the parent parsers that hold each set of global options (made
    when first needed). With ``only``, the commands not named in it are added with their name
    and help line alone, enough for the parent's ``--help`` and for refusing an unknown
    command: a run that parses ``only`` (its command line's words) builds the parsers of the
    command it runs and not those of the eighty others."""
    for command in commands:
        if only is not None and command.name not in only:
            add_command(
                subcommands,
                command.name,
                help=command.help,
                description=command.description,
                examples=command.examples,
                handler=command.handler,
            )
            continue
        parents: Sequence[Parser] = ()
        if not command.subcommands:
            parents = global_options[command.global_options]()
        parser = add_command(
            subcommands,
            command.name,
            help=command.help,
            description=command.description,
            examples=command.examples,
            parents=parents,
            handler=command.handler,
        )
        if command.defaults:
            parser.set_defaults(**command.defaults)
        add_arguments(parser, command.args)
        if command.extend is not None:
            command.extend(parser)
        if command.subcommands:
            children = parser.add_subparsers(
                dest=command.dest or f"{command.name}_command",
                required=command.handler is None,
                metavar="COMMAND",
            )
            add_commands(children, command.subcommands, global_options)
