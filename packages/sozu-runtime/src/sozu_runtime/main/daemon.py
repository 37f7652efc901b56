"""The main process: the composition of its parts, its start, its take-over after an upgrade,
and its stop.

Where each job of the main process lives:

* :mod:`.startup` — what a start claims (command socket path, audit logs, pid file) and
  :class:`StartupError`.
* :mod:`.sockets` — binding the listening sockets, the table of them, releasing them.
* :mod:`.pool` and :mod:`.workers` — the workers: starting, replacing, relaunching,
  soft-stopping them, and sending a request to all of them (``fanout``); one worker's process
  and channel.
* :mod:`.command_socket` — the command socket's transport and limits; :mod:`.connections` —
  serving each command connection (peer check, request lines, answers, audit).
* :mod:`.execution` — executing a request: the one dispatch of every request type, the path
  of a change (check, main state, workers), queries, batch results.
* :mod:`.validation` — the checks a change passes before the main state takes it.
* :mod:`.metrics` — merging the workers' counters; :mod:`.statsd` — the statsd export.
* :mod:`.events` — events and their subscribers.
* :mod:`.persistence` — the saved state at start, ``save_state``, ``load_state``, the
  automatic save; :mod:`.reload` — applying the configuration file again.
* :mod:`.upgrade` — worker upgrades and the main-process upgrade (the hand-over);
  :mod:`.resume` — the new main process taking over.
* :mod:`.signals` — the signals; :mod:`.systemd` — ``sd_notify``; :mod:`.audit` — the
  audit logs; :mod:`.replies` — building answers (every failure in one place).
* :mod:`sozu_runtime.admin` — the HTTP admin endpoint (``[admin]``), which asks its questions
  through :meth:`Daemon.handle` and :meth:`Daemon.status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from sozu_config import requests as rq
from sozu_config.config import Config
from sozu_config.protocol import build_validators
from sozu_config.responses import (
    ErrorKind,
    Event,
    EventKind,
    MainProcessInfo,
    Response,
    WorkersContent,
)
from sozu_config.state import ConfigState, StateError

from .. import __version__
from ..compiled import mode as hot_path_mode
from ..health import HealthMonitor
from ..logs import reopen_logs
from ..messages import ReopenLogs
from .audit import AuditLog, FanOut
from .command_socket import CommandServer, Peer
from .connections import Asker, CommandConnections
from .events import Subscribers
from .execution import Execution
from .persistence import StateFiles, state_at_start
from .pool import WorkerPool
from .replies import fail
from .signals import SignalHandlers
from .sockets import ListenError, ListeningSockets
from .startup import (
    StartupError,
    claim_command_socket,
    open_audit_logs,
    serve_commands,
    write_pid_file,
)
from .statsd import StatsdExport
from .systemd import notify
from .upgrade import MainUpgrade, upgrade_worker, upgrade_workers_logged, upgraded_answer
from .validation import RuntimeCheckError, check_request

if TYPE_CHECKING:
    from ..admin import AdminServer

log = logging.getLogger("sozu.main")

__all__ = ["Daemon", "StartupError"]


class Daemon:
    """One sōzu instance (``state``: the state to go on with, after a main upgrade)."""

    def __init__(self, config: Config, state: ConfigState | None = None) -> None:
        build_validators()  # before the command socket listens, not at the first command
        self.config = config
        self.started_at = dt.datetime.now(dt.UTC)  # when this code started (an upgrade: anew)
        self.state = state if state is not None else ConfigState(version=time.time_ns() // 1000)
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[int] = self.loop.create_future()
        self.audit = AuditLog()
        self._background: set[asyncio.Task[Any]] = set()
        self.events = Subscribers(self.loop)
        self.sockets = ListeningSockets()
        self.pool = WorkerPool(
            config,
            self.state,
            self.sockets,
            emit=self.emit,
            spawn=self.spawn,
            stopping=lambda: self.stopping,
        )
        self.health = HealthMonitor(
            self.state,
            emit=self.emit,
            broadcast=self.pool.broadcast,
            workers=lambda: [w.id for w in self.pool.running(starting=True)],
        )
        self.pool.health = self.health
        self.state_files = StateFiles(config, self.state, self.loop, self.emit)
        self.execution = Execution(
            config,
            self.state,
            self.pool,
            self.sockets,
            self.state_files,
            self.health,
            emit=self.emit,
            spawn=self.spawn,
            upgrade_worker=self.upgrade_worker,
            upgrade_main=self.upgrade_main,
            main_info=self.main_info,
        )
        self.connections = CommandConnections(config, self.events, self)
        self.commands = CommandServer(
            self.connections.serve, max_message=config.max_command_buffer_size
        )
        self.main_upgrade = MainUpgrade(
            config,
            self.state,
            self.pool,
            self.sockets,
            self.commands,
            self.connections,
            self.health,
            lock=self.execution.lock,
            started_at=self.started_at,
        )
        self.admin: AdminServer | None = None
        if config.admin is not None:
            from ..admin import AdminServer  # aiohttp is loaded only when the endpoint is on

            self.admin = AdminServer(config.admin, self, expected_workers=config.worker_count)
        self.statsd: StatsdExport | None = None

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Check the configuration, bind the sockets, start the workers. Raises StartupError."""
        config = self.config
        for warning in config.warnings:
            log.warning("%s", warning)
        claim_command_socket(config)
        self.audit = open_audit_logs(config)
        plan = ConfigState().diff(state_at_start(config))
        if plan:
            try:
                check_request(rq.Batch(requests=plan), self.state, config)
                self.state.apply(rq.Batch(requests=plan))
            except (StateError, RuntimeCheckError) as error:
                raise StartupError(f"{config.path}: {error}") from None
        listeners = self.state.listeners()
        try:
            self.sockets.open(a for a, listener in sorted(listeners.items()) if listener.active)
        except ListenError as refused:
            raise StartupError(
                f"{config.path}: cannot listen on {refused.address}: {refused.error.strerror}"
            ) from None
        admin_refused = await self._start_admin()
        if admin_refused:
            raise StartupError(f"{config.path}: [admin] {admin_refused}")
        await serve_commands(self.commands, config)
        starts = [self.pool.start() for _ in range(config.worker_count)]
        for handle in await asyncio.gather(*starts):
            if handle is None:
                await self.pool.shutdown(hard=True)
                raise StartupError("a worker failed to start (see the messages above)")
        self.state_files.automatic_save()
        self.health.start()
        self._export_metrics()
        write_pid_file(config)
        self._notify_serving()
        log.info(
            "sozu is ready: %d workers, %d listeners, %d clusters, command socket %s; hot path %s",
            len(self.pool),
            len(self.state.listeners()),
            len(self.state.clusters),
            config.command_socket,
            hot_path_mode()[1],
        )

    async def adopt(self, data: dict[str, Any]) -> None:
        """Take over from the previous main process (see :mod:`.upgrade`): ``data`` is what
        it handed over."""
        self.sockets.adopt(data["sockets"])
        self.pool.adopt(data["workers"], int(data["next_worker_id"]))
        self.health.start()
        self.health.restore(data.get("health", []))
        try:
            self.audit = open_audit_logs(self.config)
        except StartupError as error:  # the old process is gone: serve on, and say so
            log.error("%s; commands are not audited", error)
        await self.commands.adopt(socket.socket(fileno=int(data["command_fd"])))
        upgraded = Event(
            kind=EventKind.MAIN_UPGRADED,
            message=f"pid {os.getpid()}, version {__version__}",
        )
        clients = data.get("clients", [])
        for client in clients:
            with contextlib.suppress(OSError):
                await self.commands.adopt_client(
                    socket.socket(fileno=int(client["fd"])), bytes.fromhex(client["unread"]), client
                )
        log.info(
            "main process upgraded (pid %d, version %s): %d workers, %d listeners, "
            "%d command connections kept",
            os.getpid(),
            __version__,
            len(self.pool),
            len(self.sockets),
            len(clients),
        )
        self._notify_serving()
        # what the adopted workers counted was sent by the previous main process
        self._export_metrics(baseline=list(self.pool.workers))
        self.emit(upgraded)
        # clients who lost their subscription in the switch learn why when they come back
        self.events.replay(upgraded)
        self.pool.collect_gone()
        refused = await self._start_admin()  # the previous code's socket closed with the exec
        if refused:
            log.error("%s; the admin endpoint is off", refused)
        if data.get("then_workers"):
            self.spawn(upgrade_workers_logged(self.pool))

    async def _start_admin(self) -> str:
        """Start the admin endpoint when there is one: why it cannot listen, or ``""``."""
        if self.admin is None:
            return ""
        from ..admin import AdminListenError

        try:
            await self.admin.start()
        except AdminListenError as error:
            return str(error)
        return ""

    def install_signal_handlers(self) -> None:
        """nginx's, HAProxy's and systemd's conventions (see :mod:`.signals`)."""
        SignalHandlers(self, self.config.path).install(self.loop)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in the background (kept until it is done)."""
        task: asyncio.Task[Any] = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stop_later(self, *, hard: bool) -> None:
        self.spawn(self.stop(hard=hard))

    async def stop(self, *, hard: bool) -> None:
        if self.stopping and not hard:
            return
        self.stopping = True
        notify(f"STOPPING=1\nSTATUS=stopping ({'hard' if hard else 'soft'})")
        self.emit(Event(kind=EventKind.STOP_REQUESTED, message="hard" if hard else "soft"))
        if self.statsd is not None:
            await self.statsd.stop()
        await self.health.stop()
        await self.pool.shutdown(hard=hard)
        if self.admin is not None:
            await self.admin.stop()
        self.sockets.close()
        self.commands.close()
        self.audit.close()
        with contextlib.suppress(FileNotFoundError):
            self.config.command_socket.unlink()
        if self.config.pid_file_path is not None:
            with contextlib.suppress(OSError):
                self.config.pid_file_path.unlink()
        if not self.finished.done():
            self.finished.set_result(0)

    def reopen_logs(self) -> None:
        """Open every log file again (after a rotation moved them): the main process's logs,
        access logs and audit logs, then each worker's."""
        reopen_logs()
        try:
            self.audit.reopen()
        except OSError as error:
            log.error("cannot reopen the audit log %s: %s", error.filename, error.strerror)
        for worker in self.pool.running(starting=True):
            worker.send(control=ReopenLogs())

    # ------------------------------------------------------------------ what the parts use

    def emit(self, event: Event) -> None:
        if event.kind is EventKind.REMOVED_BACKEND_HAS_NO_CONNECTIONS:
            self.health.drained(event)
        self.events.emit(event)

    def main_info(self) -> MainProcessInfo:
        return MainProcessInfo(pid=os.getpid(), version=__version__, started_at=self.started_at)

    async def handle(self, request: rq.Request) -> Response:
        """Answer one request (the same entry for the command socket and internal callers)."""
        return await self.execution.handle(request)

    async def status(self, timeout: float) -> Response:
        """The answer to ``status``, each worker given ``timeout`` seconds to answer."""
        return await self.execution.status(timeout)

    async def reload(self, path: str | None) -> Response:
        return await self.execution.reload(path)

    async def upgrade_worker(self, worker_id: int) -> Response:
        return await upgrade_worker(self.pool, worker_id)

    async def upgrade_main(
        self, asker: Asker | None = None, *, then_workers: bool = False
    ) -> Response:
        """Re-execute this process with the installed code; returns only when that did not
        happen (see :meth:`.upgrade.MainUpgrade.upgrade`)."""
        if self.stopping:
            return fail("the daemon is stopping", kind=ErrorKind.UNAVAILABLE)
        return await self.main_upgrade.upgrade(asker, then_workers=then_workers)

    def upgraded_answer(self, asked: dict[str, Any]) -> Response:
        workers = WorkersContent(workers=self.pool.infos(), main=self.main_info())
        return upgraded_answer(asked, workers, self.started_at)

    def audit_record(
        self, peer: Peer | None, request: rq.Request, response: Response, tally: FanOut
    ) -> None:
        self.audit.record(peer, request, response, tally)

    def _export_metrics(self, baseline: list[int] | None = None) -> None:
        """Start the statsd export when ``[metrics]`` asks for it (``baseline``: the workers
        whose counts so far are not sent, see :mod:`.statsd`)."""
        settings = self.config.metrics
        if settings is None:
            return
        try:
            self.statsd = StatsdExport(
                settings,
                self.pool,
                self.state,
                version=__version__,
                disable_cluster_metrics=self.config.disable_cluster_metrics,
                paused=lambda: self.connections.switching is not None,
                baseline=baseline or (),
            )
        except OSError as error:  # no UDP socket: the proxy serves on without the export
            log.error("cannot export metrics to statsd: %s", error.strerror or error)
            return
        self.statsd.start()

    def _notify_serving(self) -> None:
        """Tell systemd (when it watches) that the daemon serves."""
        notify(f"READY=1\nSTATUS=serving with {len(self.pool)} workers (version {__version__})")
