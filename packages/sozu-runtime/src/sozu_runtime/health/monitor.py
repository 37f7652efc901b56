"""The main process's health monitor: it probes the backends of the clusters that have a
health check, takes the workers' reports of real traffic, and keeps every worker told of the
one health it decides (see :mod:`.board`).

Each checked backend has one probe loop (a task that sleeps between probes, never a task per
probe), whatever the number of workers: its first probe comes at a random moment of the
first interval, and each next one an interval later, give or take 10 %, so that a large
cluster is not probed in bursts. At most :data:`MAX_CONCURRENT_PROBES` probes run at once;
the others wait their turn. The probes run in the main process, beside the control plane:
nothing here is on the workers' data path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from sozu_config.grammar import parse_port, split_host_port, unbracket
from sozu_config.models import HealthCheck, ProxyProtocolConfig
from sozu_config.responses import BackendHealth, Event, EventKind
from sozu_config.state import ConfigState

from ..messages import HealthUpdate
from .board import BackendKey, HealthBoard, Transition
from .probes import probe

log = logging.getLogger("sozu.health")

__all__ = ["MAX_CONCURRENT_PROBES", "HealthMonitor"]

MAX_CONCURRENT_PROBES: Final = 256
JITTER: Final = 0.1  # each interval is drawn in [1 - JITTER, 1 + JITTER] times the setting


@dataclass(frozen=True, slots=True)
class _Target:
    """What one backend's probe loop does; a change restarts the loop."""

    check: HealthCheck
    address: str
    host_header: str
    proxy_header: bool


class HealthMonitor:
    """Probe loops, the board, and what the workers and subscribers are told."""

    def __init__(
        self,
        state: ConfigState,
        *,
        emit: Callable[[Event], None],
        broadcast: Callable[[HealthUpdate], None],
        workers: Callable[[], Iterable[int]],
        rng: random.Random | None = None,
    ) -> None:
        self.state = state
        self.board = HealthBoard()
        self._emit = emit
        self._broadcast = broadcast
        self._workers = workers
        self._rng = rng or random.Random()
        self._loops: dict[BackendKey, tuple[_Target, asyncio.Task[None]]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PROBES)
        self._running = False
        self.reporting = True
        """Whether the health figures are reported (``configure_metrics``)."""

    # ------------------------------------------------------------------ following the state

    def start(self) -> None:
        """Probe from now on (after the first :meth:`sync`)."""
        self._running = True
        self.sync()

    def sync(self) -> None:
        """Follow the state after a change: backends added, removed or moved, health checks
        set, changed or removed. Probe loops start and stop accordingly."""
        now = dt.datetime.now(dt.UTC)
        self._apply(self.board.sync(self.state, self._workers(), now))
        if self._running:
            self._restart_loops()

    def _restart_loops(self) -> None:
        wanted = self._targets()
        for key, (target, task) in list(self._loops.items()):
            if wanted.get(key) != target:
                task.cancel()
                del self._loops[key]
        loop = asyncio.get_running_loop()
        for key, target in wanted.items():
            if key not in self._loops:
                task = loop.create_task(self._probe_loop(key, target), name=f"health {key}")
                self._loops[key] = (target, task)

    def _targets(self) -> dict[BackendKey, _Target]:
        state = self.state
        targets = {}
        for cluster_id, cluster in state.clusters.items():
            check = cluster.health_check
            if check is None:
                continue
            host = check.host or _first_hostname(state, cluster_id)
            proxy_header = cluster.proxy_protocol in (
                ProxyProtocolConfig.SEND_HEADER,
                ProxyProtocolConfig.RELAY_HEADER,
            )
            for backend_id, backend in state.backends.get(cluster_id, {}).items():
                targets[(cluster_id, backend_id)] = _Target(
                    check, backend.address, host or backend.address, proxy_header
                )
        return targets

    async def stop(self) -> None:
        """Stop every probe loop."""
        self._running = False
        loops, self._loops = self._loops, {}
        for _, task in loops.values():
            task.cancel()
        for _, task in loops.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ probing

    async def _probe_loop(self, key: BackendKey, target: _Target) -> None:
        loop = asyncio.get_running_loop()
        interval = target.check.interval
        host, port = _host_port(target.address)
        next_start = loop.time() + self._rng.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, next_start - loop.time()))
            started = loop.time()
            try:
                async with self._slots:
                    result = await probe(
                        target.check,
                        host,
                        port,
                        host_header=target.host_header,
                        proxy_header=target.proxy_header,
                    )
                transition = self.board.probed(key, result)
                if transition is not None:
                    self._apply([transition])
            except Exception:  # one bad probe never ends the checks of a backend
                log.exception("the health check of %s/%s failed", *key)
            spread = self._rng.uniform(1 - JITTER, 1 + JITTER)
            next_start = max(started + interval * spread, loop.time())

    # ------------------------------------------------------------------ what workers report

    def observed(self, worker_id: int, event: Event) -> None:
        """A worker's report of real traffic (see :data:`~sozu_runtime.messages.HEALTH_ID`)."""
        if event.cluster_id is None or event.backend_id is None:
            return
        failed = event.kind is EventKind.BACKEND_DOWN
        transition = self.board.observed(
            (event.cluster_id, event.backend_id),
            failed,
            event.message,
            event.time or dt.datetime.now(dt.UTC),
        )
        if transition is not None:
            self._apply([transition])

    def drained(self, event: Event) -> None:
        """A worker has no connection left to a removed backend."""
        if event.cluster_id is not None and event.backend_id is not None:
            worker = -1 if event.worker_id is None else event.worker_id
            self.board.drained(event.cluster_id, event.backend_id, event.address, worker)

    def worker_gone(self, worker_id: int) -> None:
        self.board.worker_gone(worker_id)

    # ------------------------------------------------------------------ telling

    def _apply(self, transitions: list[Transition]) -> None:
        """Tell every worker, emit one event per transition, and log it."""
        if not transitions:
            return
        down = [t.record.key for t in transitions if t.down]
        up = [t.record.key for t in transitions if not t.down]
        self._broadcast(HealthUpdate(down=down, up=up))
        for transition in transitions:
            record = transition.record
            if transition.down:
                log.warning(
                    "backend %s/%s (%s) is down: %s",
                    record.cluster_id,
                    record.backend_id,
                    record.address,
                    transition.reason,
                )
            else:
                log.info(
                    "backend %s/%s (%s) is up: %s",
                    record.cluster_id,
                    record.backend_id,
                    record.address,
                    transition.reason,
                )
            self._emit(
                Event(
                    kind=EventKind.BACKEND_DOWN if transition.down else EventKind.BACKEND_UP,
                    cluster_id=record.cluster_id,
                    backend_id=record.backend_id,
                    address=record.address,
                    message=transition.reason,
                )
            )

    def update(self) -> HealthUpdate:
        """The whole health, for a worker that starts."""
        return HealthUpdate(down=self.board.down(), reset=True)

    # ------------------------------------------------------------------ reading

    def statuses(self, cluster_id: str | None = None) -> list[BackendHealth]:
        return self.board.statuses(cluster_id)

    def metrics(self) -> dict[str, dict[str, Any]]:
        """The health figures by cluster; none while metrics are disabled."""
        return self.board.metrics() if self.reporting else {}

    def configure_metrics(self, configuration: str) -> None:
        """``enabled``, ``disabled`` or ``clear`` (``configure_metrics``): as the workers'
        figures, the health figures are reported or not, and cleared."""
        if configuration == "clear" or (configuration == "enabled" and not self.reporting):
            self.board.clear_counters()
        if configuration != "clear":
            self.reporting = configuration == "enabled"

    # ------------------------------------------------------------------ main-process upgrade

    def handover(self) -> list[dict[str, Any]]:
        return self.board.handover()

    def restore(self, down: Iterable[dict[str, Any]]) -> None:
        """Go on from what the previous main process decided: the backends it found down
        stay down, and every worker is told the whole health again."""
        self.board.restore(down)
        self._broadcast(self.update())


def _first_hostname(state: ConfigState, cluster_id: str) -> str | None:
    """The hostname of the cluster's first HTTP(S) frontend that names one host (not a
    wildcard or a pattern), or None."""
    for table in (state.http_frontends, state.https_frontends):
        for frontend in table.values():
            name = frontend.hostname
            if frontend.cluster_id == cluster_id and not name.startswith(("*", "~")):
                return name
    return None


def _host_port(address: str) -> tuple[str, int]:
    host, port = split_host_port(address)
    return unbracket(host), parse_port(port or "")
