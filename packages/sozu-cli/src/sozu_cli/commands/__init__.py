"""The subcommands of ``sozu``, declared as data (see :mod:`sozu_cli.declarations`), one module
per command group, each beside the handlers it names:

* :mod:`.daemon` — the daemon's life: ``start``, ``status``, ``shutdown``, ``upgrade``,
  ``reload``, ``state``, ``logging``, ``events``;
* :mod:`.clusters` — ``cluster`` and ``backend``;
* :mod:`.frontends` — ``frontend``;
* :mod:`.listeners` — ``listener``;
* :mod:`.certificates` — ``certificate``;
* :mod:`.queries` — ``query`` and ``metrics``;
* :mod:`.top` — ``top``, the live view;
* :mod:`.configuration` — ``config check``.

Each module has ``COMMANDS``, its table; every leaf names its ``handler``, a function of the
:class:`~sozu_cli.context.Context` returning the exit code.
"""

from __future__ import annotations

from ..declarations import Command
from . import (
    certificates,
    clusters,
    configuration,
    daemon,
    frontends,
    listeners,
    queries,
    top,
)

__all__ = ["COMMANDS"]

COMMANDS: tuple[Command, ...] = (
    *daemon.COMMANDS,
    *clusters.COMMANDS,
    *frontends.COMMANDS,
    *listeners.COMMANDS,
    *certificates.COMMANDS,
    *queries.COMMANDS,
    *top.COMMANDS,
    *configuration.COMMANDS,
)
"""The subcommands of ``sozu`` that talk to the daemon or read its files, in help order."""
