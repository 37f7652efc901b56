"""Logging of the main process and workers: one line per event, prefixed with a tag.

``<time> <pid> <LEVEL> <TAG>  <message>`` on standard output (the daemon runs in the
foreground; a supervisor collects its output). Access logs (one line per request) go to the
``sozu.access`` logger, enabled by ``access_logs_target`` or ``log_level = "debug"``; when they
are off, the data path does not call the logging module at all.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["LEVELS", "configure_logging", "set_level"]

LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


class _Formatter(logging.Formatter):
    def __init__(self, tag: str) -> None:
        super().__init__(
            fmt=f"%(asctime)s.%(msecs)03d {os.getpid()} %(levelname)-5s {tag}\t%(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )


def configure_logging(level: str, tag: str, *, access_logs: bool = False) -> None:
    """Send the ``sozu`` loggers to standard output with ``tag`` (``MAIN``, ``WRK-00``)."""
    root = logging.getLogger("sozu")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(tag))
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    access = logging.getLogger("sozu.access")
    access.setLevel(logging.INFO if access_logs else logging.CRITICAL + 1)


def set_level(level: str) -> None:
    logging.getLogger("sozu").setLevel(LEVELS.get(level.lower(), logging.INFO))
