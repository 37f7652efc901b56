"""Exit codes of ``sozu`` and ``sozu-apply``, and the errors that end a command with one.

A command that cannot do what it was asked raises a :class:`CommandError`; ``main`` prints its
message (one sentence: what is wrong, what to do) on stderr and exits with its code; with
``--json`` it also prints ``{"status": "failure", "kind": …, "message": …}`` on stdout unless the
command already printed its answer there. Nothing else reaches the user as a traceback.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CommandError", "DaemonFailure", "ExitCode", "Unreachable", "UsageError"]


class ExitCode(IntEnum):
    """What a process exit status means (the same for every command)."""

    OK = 0
    FAILURE = 1
    """The daemon answered with a failure (or the change was not made)."""
    USAGE = 2
    """Bad usage or bad input: wrong arguments, unreadable or invalid files, invalid
    addresses. (``sozu-apply`` has codes of its own: :class:`sozu_cli.targets.ApplyExit`.)"""
    UNREACHABLE = 3
    """No daemon answers on the command socket (no socket, refused, connection timed out)."""


class CommandError(Exception):
    """A command ends with ``code`` and ``message`` on stderr."""

    code = ExitCode.FAILURE
    kind = "failure"
    """What went wrong, for programs (the ``kind`` of the JSON document of ``--json``)."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class UsageError(CommandError):
    """The user asked for something impossible or gave bad input."""

    code = ExitCode.USAGE
    kind = "usage"


class DaemonFailure(CommandError):
    """The daemon refused the request or did not answer in time."""

    code = ExitCode.FAILURE


class Unreachable(CommandError):
    """Nothing answers on the command socket."""

    code = ExitCode.UNREACHABLE
    kind = "unreachable"
