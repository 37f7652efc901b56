"""The workers of the main process: starting them, replacing them, stopping them, and sending
a request to all of them.

A new worker gets its settings (:class:`~sozu_runtime.messages.Setup`), then the current state
with the listening sockets; it serves once it has answered both. A worker that exits without
being told to is replaced at once (``worker_automatic_restart``). A worker being replaced
(upgrade, resynchronisation) is soft-stopped once its successor serves: it finishes its
requests and leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from sozu_config import requests as rq
from sozu_config.config import Config
from sozu_config.responses import (
    ErrorKind,
    Event,
    EventKind,
    Response,
    RunState,
    WorkerInfo,
    WorkersContent,
)
from sozu_config.state import ConfigState

from ..health import HealthMonitor
from ..messages import HealthUpdate, InitialState, Setup
from .audit import fan_out
from .replies import fail
from .sockets import ListeningSockets
from .workers import WorkerHandle

log = logging.getLogger("sozu.main")

__all__ = ["STARTUP_TIMEOUT", "WorkerPool"]

STARTUP_TIMEOUT = 30.0  # seconds a new worker has to take its initial state
STOP_GRACE = 10.0  # seconds a soft-stopped worker has beyond soft_stop_timeout to answer


class WorkerPool:
    """The workers, by id (ids are never reused, across main-process upgrades too)."""

    def __init__(
        self,
        config: Config,
        state: ConfigState,
        sockets: ListeningSockets,
        *,
        emit: Callable[[Event], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.health: HealthMonitor | None = None
        """The backends' shared health: a new worker is told it; workers report to it."""
        self.config = config
        self.state = state
        self.sockets = sockets
        self.workers: dict[int, WorkerHandle] = {}
        self._ids = itertools.count()
        self._emit = emit
        self._spawn = spawn
        self._stopping = stopping

    def __len__(self) -> int:
        return len(self.workers)

    def running(self, *, starting: bool = False) -> list[WorkerHandle]:
        """Workers that serve (and, with ``starting``, those still taking their state)."""
        states = (RunState.RUNNING, RunState.STARTING) if starting else (RunState.RUNNING,)
        return [w for w in self.workers.values() if w.alive and w.run_state in states]

    def infos(self) -> list[WorkerInfo]:
        """Every worker, by id."""
        return [w.info() for w in sorted(self.workers.values(), key=lambda w: w.id)]

    # ------------------------------------------------------------------ start

    def _handle(self, worker_id: int) -> WorkerHandle:
        return WorkerHandle(worker_id, self._on_event, self._on_exit, self._on_observation)

    async def start(self) -> WorkerHandle | None:
        """Start a worker with the current state and the listening sockets (None: it did
        not start, and the log says why)."""
        handle = self._handle(next(self._ids))
        try:
            await handle.spawn()
        except OSError as error:
            log.error("cannot start a worker: %s", error)
            return None
        ready = handle.send(control=self._setup(handle.id))
        initial = self._initial_state(handle)
        if self.health is not None:  # applied after the state, in order
            handle.send(control=self.health.update())
        self.workers[handle.id] = handle
        for future in (ready, initial):
            try:
                response = await asyncio.wait_for(
                    future, max(STARTUP_TIMEOUT, self.config.worker_timeout)
                )
            except TimeoutError:
                response = fail("no answer", kind=ErrorKind.TIMEOUT)
            if not response.ok:
                log.error("worker %d failed to start: %s", handle.id, response.message)
                handle.expected_exit = True
                handle.kill()
                self.workers.pop(handle.id, None)
                return None
            if isinstance(response.content, WorkersContent) and response.content.workers:
                described = response.content.workers[0]  # the worker's answer to its set-up
                handle.version, handle.started_at = described.version, described.started_at
        if handle.run_state is RunState.STARTING:
            handle.run_state = RunState.RUNNING
        log.info("worker %d started (pid %d, version %s)", handle.id, handle.pid, handle.version)
        return handle

    def _setup(self, worker_id: int) -> Setup:
        config = self.config
        return Setup(
            worker_id=worker_id,
            buffer_size=config.buffer_size,
            max_connections=config.max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
            retry_after=config.retry_after,
            evict_on_queue_full=config.evict_on_queue_full,
            log_level=config.log_level,
            log_target=config.log_target,
            access_logs_target=config.access_logs_target,
            access_logs_format=config.access_logs_format,
            expired_certificates=config.expired_certificates,
            soft_stop_timeout=float(config.soft_stop_timeout),
        )

    def _initial_state(self, handle: WorkerHandle) -> asyncio.Future[Response]:
        requests = self.state.generate_requests()
        activated = (r.address for r in requests if isinstance(r, rq.ActivateListener))
        fds = list(self.sockets.descriptors(activated).values())
        return handle.send(
            control=InitialState(requests=requests, version=self.state.version),
            fds=fds,
        )

    # ------------------------------------------------------------------ exits and replacements

    def _on_event(self, handle: WorkerHandle, event: Event) -> None:
        self._emit(event.model_copy(update={"worker_id": handle.id}))

    def _on_observation(self, handle: WorkerHandle, event: Event) -> None:
        if self.health is not None:
            self.health.observed(handle.id, event)

    def broadcast(self, update: HealthUpdate) -> None:
        """Tell every worker (those starting too) of a change of the backends' health."""
        for handle in self.running(starting=True):
            handle.send(control=update)

    def _on_exit(self, handle: WorkerHandle) -> None:
        if self.health is not None:
            self.health.worker_gone(handle.id)
        if self.workers.get(handle.id) is not handle:
            return
        del self.workers[handle.id]
        if handle.expected_exit or self._stopping():
            return
        self._emit(Event(kind=EventKind.WORKER_KILLED, worker_id=handle.id, message="exited"))
        if self.config.worker_automatic_restart:
            self._spawn(self.relaunch(handle.id))

    async def relaunch(self, old_id: int) -> None:
        """Start a worker in place of ``old_id``, which is gone."""
        handle = await self.start()
        if handle is not None:
            self._emit(
                Event(
                    kind=EventKind.WORKER_RELAUNCHED,
                    worker_id=handle.id,
                    message=f"replaces worker {old_id}",
                )
            )

    async def replace(self, handle: WorkerHandle, reason: str) -> WorkerHandle | None:
        """A new worker from the main state takes over; the old one finishes its requests."""
        new = await self.start()
        if new is None:
            return None
        handle.expected_exit = True
        handle.run_state = RunState.STOPPING
        self._spawn(self._soft_stop(handle))
        self._emit(
            Event(
                kind=EventKind.WORKER_UPGRADED
                if reason == "upgrade"
                else EventKind.WORKER_RESYNCHRONIZED,
                worker_id=new.id,
                message=f"replaces worker {handle.id} ({reason})",
            )
        )
        return new

    async def _soft_stop(self, handle: WorkerHandle) -> None:
        future = handle.send(request=rq.SoftStop())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, self.config.soft_stop_timeout + STOP_GRACE)
        if not await handle.wait(5.0):
            handle.kill()
        self.workers.pop(handle.id, None)

    async def shutdown(self, *, hard: bool) -> None:
        """Stop every worker: soft (they finish their requests) or hard; those that do not
        leave in time are killed."""
        workers = list(self.workers.values())
        for handle in workers:
            handle.expected_exit = True
        request: rq.Request = rq.HardStop() if hard else rq.SoftStop()
        futures = [h.send(request=request) for h in workers if h.alive]
        if futures:
            timeout = 5.0 if hard else self.config.soft_stop_timeout + STOP_GRACE
            await asyncio.wait(futures, timeout=timeout)
        for handle in workers:
            if not await handle.wait(3.0):
                handle.kill()

    # ------------------------------------------------------------------ fan-out

    async def fanout(
        self, request: rq.Request, fds: list[int] | None = None, *, timeout: float | None = None
    ) -> list[tuple[WorkerHandle, Response]]:
        """Send ``request`` to every running worker and collect the answers (a worker that
        does not answer in time gets a failure saying so). Changes also go to workers still
        starting (they apply them after their initial state, in order)."""
        changes = request.type in rq.MUTATING_TYPES
        workers = self.running(starting=changes)
        futures = [(w, w.send(request=request, fds=fds)) for w in workers]
        if not futures:
            return []
        wait = self.config.worker_timeout if timeout is None else timeout
        if any(w.run_state is RunState.STARTING for w in workers):
            wait = max(wait, STARTUP_TIMEOUT)  # a starting worker answers after its start-up
        await asyncio.wait([f for _, f in futures], timeout=wait)
        tally = fan_out.get()
        if tally is not None:
            tally.sent += len(futures)
            tally.applied += sum(1 for _, f in futures if f.done() and f.result().ok)
        results = []
        for worker, future in futures:
            if future.done():
                results.append((worker, future.result()))
            else:
                future.cancel()
                results.append(
                    (worker, fail(f"did not answer within {wait:g} s", kind=ErrorKind.TIMEOUT))
                )
        return results

    # ------------------------------------------------------------------ main-process upgrade

    def handover(self) -> tuple[list[dict[str, Any]], int]:
        """What the new main process needs of each worker (its channel's descriptor among
        it), and the next worker id. A worker whose channel closed (it is leaving) is not
        handed over: it ends on its own."""
        workers = [
            w
            for w in self.workers.values()
            if w.alive and w.channel is not None and not w.channel.closed
        ]
        records = [
            {
                "id": w.id,
                "pid": w.pid,
                "fd": w.channel.sock.fileno(),  # type: ignore[union-attr]
                "run_state": w.run_state.value,
                "version": w.version,
                "started_at": w.started_at.isoformat() if w.started_at else None,
            }
            for w in workers
        ]
        return records, next(self._ids)

    def adopt(self, records: Iterable[dict[str, Any]], next_id: int) -> None:
        """Take over the workers the previous main process handed over; one whose channel
        did not come through is stopped and replaced."""
        self._ids = itertools.count(next_id)
        for worker in records:
            handle = self._handle(int(worker["id"]))
            try:
                handle.adopt(int(worker["pid"]), int(worker["fd"]))
            except OSError as error:  # its channel did not come through: a new worker serves
                log.error("worker %s could not be taken over: %s", worker["id"], error)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(worker["pid"]), signal.SIGTERM)
                self._spawn(self.relaunch(int(worker["id"])))
                continue
            handle.run_state = RunState(worker["run_state"])
            # a worker the previous code was replacing finishes its requests, then leaves
            handle.expected_exit = handle.run_state is RunState.STOPPING
            handle.version = worker.get("version")
            if worker.get("started_at"):
                handle.started_at = dt.datetime.fromisoformat(worker["started_at"])
            self.workers[handle.id] = handle

    def collect_gone(self) -> None:
        """Treat the adopted workers that died during the switch as exited."""
        for handle in list(self.workers.values()):
            if not handle.alive:
                self._on_exit(handle)
