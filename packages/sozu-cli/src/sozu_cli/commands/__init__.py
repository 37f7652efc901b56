"""The subcommands of ``sozu``, one module per concern:

* :mod:`.daemon` — the daemon's life: ``start``, ``status``, ``shutdown``, ``upgrade``,
  ``reload``, ``state``, ``logging``, ``events``;
* :mod:`.routing` — the routing objects: ``cluster``, ``backend``, ``frontend``, ``listener``;
* :mod:`.certificates` — ``certificate``;
* :mod:`.queries` — ``query`` and ``metrics``;
* :mod:`.configuration` — ``config check``.

Each module has ``register(subcommands, common)``, which adds its parsers; every leaf parser
sets ``handler``, a function of the :class:`~sozu_cli.context.Context` returning the exit code.
"""
