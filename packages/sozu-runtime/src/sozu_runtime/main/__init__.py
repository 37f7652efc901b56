"""The main process: ``run(config)`` starts the daemon in the foreground until it is stopped."""

from __future__ import annotations

import logging
import sys

from sozu_config.config import Config

from ..logs import configure_main_logging
from ..loops import run as run_loop
from .daemon import Daemon, StartupError

__all__ = ["Daemon", "StartupError", "run"]

log = logging.getLogger("sozu.main")


async def _main(config: Config) -> int:
    daemon = Daemon(config)
    try:
        await daemon.start()
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    daemon.install_signal_handlers()
    return await daemon.finished


def run(config: Config) -> int:
    """Run the daemon for ``config`` until SIGTERM/SIGINT (soft stop; again: hard stop) or a
    stop request. Returns the process exit code (1 when it cannot start)."""
    configure_main_logging(config)
    return run_loop(_main(config))
