"""Signals of the main process, in nginx's, HAProxy's and systemd's conventions (see the
README's table): TERM and INT stop softly (a second one: at once), QUIT stops at once, HUP
reloads the configuration file, USR1 reopens the log files, USR2 upgrades the main process and
then every worker."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from sozu_config.responses import Response

from .systemd import notify, reloading

log = logging.getLogger("sozu.main")

__all__ = ["SignalHandlers", "Signalled"]


class Signalled(Protocol):
    """What the signals act on."""

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...

    async def stop(self, *, hard: bool) -> None: ...

    async def reload(self, path: str | None) -> Response: ...

    def reopen_logs(self) -> None: ...

    async def upgrade_main(self, *, then_workers: bool = False) -> Response: ...


class SignalHandlers:
    """The handlers, and how many stop signals came."""

    def __init__(self, daemon: Signalled, configuration: Path | None) -> None:
        self._daemon = daemon
        self._configuration = configuration
        self._stops = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        handlers = {
            signal.SIGINT: self._on_stop,
            signal.SIGTERM: self._on_stop,
            signal.SIGQUIT: self._on_quit,
            signal.SIGHUP: self._on_reload,
            signal.SIGUSR1: self._on_reopen,
            signal.SIGUSR2: self._on_upgrade,
        }
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)

    def _on_stop(self) -> None:
        self._stops += 1
        if self._stops == 1:
            log.info("stopping: finishing the requests in flight (signal again to stop now)")
            self._daemon.spawn(self._daemon.stop(hard=False))
        else:
            log.info("stopping now")
            self._daemon.spawn(self._daemon.stop(hard=True))

    def _on_quit(self) -> None:
        log.info("SIGQUIT: stopping now")
        self._daemon.spawn(self._daemon.stop(hard=True))

    def _on_reload(self) -> None:
        log.info("SIGHUP: reloading %s", self._configuration)
        self._daemon.spawn(self._reload())

    async def _reload(self) -> None:
        reloading(f"reloading {self._configuration}")
        response = await self._daemon.reload(None)
        if response.ok:
            log.info("reload: %s", response.message)
        else:
            log.error("reload: %s", response.message)
        notify(f"READY=1\nSTATUS={'reloaded' if response.ok else 'reload refused'}: serving")

    def _on_reopen(self) -> None:
        self._daemon.reopen_logs()
        log.info("SIGUSR1: log files reopened")  # the first line of the new files

    def _on_upgrade(self) -> None:
        log.info("SIGUSR2: upgrading the main process, then every worker")
        self._daemon.spawn(self._upgrade())

    async def _upgrade(self) -> None:
        response = await self._daemon.upgrade_main(then_workers=True)
        log.error("%s", response.message)  # only a refusal returns
