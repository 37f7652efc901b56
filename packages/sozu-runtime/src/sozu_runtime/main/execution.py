"""Executing a request: the one dispatch of every request type, and the path of a change.

A change (a state request or a batch) is checked with the workers' own code, applied to the
main state first — refused there if invalid, so that no worker ever sees it — then sent to
every worker; the answer comes when all workers have answered, or when ``worker_timeout``
passes (a failure naming the slow worker). A worker that refuses what the main state accepted,
or does not answer, is replaced by a new worker started from the main state, and the answer
says so. Changes run one at a time (:attr:`Execution.lock`).

Queries are answered from the main state, or by asking the workers and merging their answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, assert_never

from sozu_config import requests as rq
from sozu_config.config import Config
from sozu_config.responses import (
    BackendsContent,
    BatchResult,
    BatchResults,
    ErrorKind,
    Event,
    EventKind,
    MainProcessInfo,
    Response,
    ResponseContent,
    ResponseStatus,
    RunState,
    StateContent,
    WorkerResponses,
    WorkersContent,
)
from sozu_config.state import ConfigState, StateError, failure_from

from ..health import HealthMonitor
from ..logs import set_level
from .metrics import main_figures, merge_metrics
from .persistence import StateFiles
from .pool import WorkerPool
from .reload import reload
from .replies import fail, ok
from .sockets import ListenError, ListeningSockets
from .validation import RuntimeCheckError, check_request
from .workers import WorkerHandle

log = logging.getLogger("sozu.main")

__all__ = ["Execution"]


class Execution:
    """Answers requests (the same entry for the command socket and internal callers)."""

    # Complexity: the main process's parts, given explicitly by the daemon that composes them.
    def __init__(  # noqa: PLR0913
        self,
        config: Config,
        state: ConfigState,
        pool: WorkerPool,
        sockets: ListeningSockets,
        state_files: StateFiles,
        health: HealthMonitor,
        *,
        emit: Callable[[Event], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        upgrade_worker: Callable[[int], Awaitable[Response]],
        upgrade_main: Callable[[], Awaitable[Response]],
        main_info: Callable[[], MainProcessInfo],
    ) -> None:
        self.config = config
        self.state = state
        self.pool = pool
        self.sockets = sockets
        self.state_files = state_files
        self.health = health
        self.lock = asyncio.Lock()
        """Held while a change is applied (and by a main upgrade: no change starts then)."""
        self._emit = emit
        self._spawn = spawn
        self._upgrade_worker = upgrade_worker
        self._upgrade_main = upgrade_main
        self._main_info = main_info

    # Complexity: one exhaustive match over the request types (mypy checks that every type is here).
    async def handle(self, request: rq.Request) -> Response:  # noqa: C901, PLR0911, PLR0912
        """Answer ``request`` (its ``id`` is set by the caller)."""
        if rq.is_mutating(request):  # every state request and the batch: the path of a change
            return await self.execute(request)
        match request:
            case rq.Status():
                return await self.status()
            case rq.ListWorkers():
                return ok(content=WorkersContent(workers=self.pool.infos(), main=self._main_info()))
            case rq.QueryState():
                return ok(
                    content=StateContent(version=self.state.version, state=self.state.snapshot())
                )
            case rq.QueryMetrics():
                return await self._metrics(request)
            case rq.QueryCertificatesFromWorkers():
                return await self._per_worker(request)
            case (
                rq.QueryClusterById()
                | rq.QueryClustersByDomain()
                | rq.QueryClustersHashes()
                | rq.ListFrontends()
                | rq.ListListeners()
                | rq.QueryCertificates()
                | rq.CountRequests()
                | rq.QueryHealthChecks()
            ):
                try:
                    return ok(content=self.state.answer_query(request))
                except StateError as error:
                    return failure_from(error)
            case rq.ListBackends():
                if request.cluster_id is not None and request.cluster_id not in self.state.clusters:
                    return fail(f"no cluster {request.cluster_id!r}", kind=ErrorKind.NOT_FOUND)
                return ok(
                    content=BackendsContent(backends=self.health.statuses(request.cluster_id))
                )
            case rq.SaveState():
                return self.state_files.save(request.path)
            case rq.LoadState():
                return await self.state_files.load(request.path, self.execute)
            case rq.ReloadConfiguration():
                return await self.reload(request.path)
            case rq.UpgradeWorker():
                return await self._upgrade_worker(request.worker_id)
            case rq.UpgradeMain():
                return await self._upgrade_main()
            case rq.Logging() | rq.ConfigureMetrics():
                return await self._configure(request)
            case rq.SoftStop() | rq.HardStop():
                kind = request.type.replace("_", " ")
                return ok(f"stopping {len(self.pool)} workers ({kind})")
            case rq.SubscribeEvents():  # served by the command connection itself
                return fail(
                    f"{request.type} is not supported by this daemon", kind=ErrorKind.UNSUPPORTED
                )
            case _:
                assert_never(request)

    async def _configure(self, request: rq.Logging | rq.ConfigureMetrics) -> Response:
        """Log level and metrics: set here (the level), then in every worker."""
        if isinstance(request, rq.Logging):
            set_level(request.level)
            await self.pool.fanout(request)
            return ok(f"log level set to {request.level}")
        self.health.configure_metrics(request.configuration)
        await self.pool.fanout(request)
        return ok(f"metrics {request.configuration}")

    async def reload(self, path: str | None) -> Response:
        """Re-read the configuration file (or ``path``) and apply the difference."""
        source = Path(path) if path else self.config.path
        return await reload(source, self.state, execute=self.execute, emit=self._emit)

    # ------------------------------------------------------------------ changes

    async def execute(self, request: rq.Request) -> Response:
        """Apply a change to the main state, then to every worker."""
        async with self.lock:
            try:
                check_request(request, self.state, self.config)
            except RuntimeCheckError as error:
                refused = _refused_batch(request, error.index, str(error))
                return fail(str(error), kind=error.kind, index=error.index, content=refused)
            inner = request.requests if isinstance(request, rq.Batch) else [request]
            addresses = [r.address for r in inner if isinstance(r, rq.ActivateListener)]
            try:
                fresh = self.sockets.open(addresses)
            except ListenError as error:
                return fail(
                    f"cannot listen on {error.address}: {error.reason}; nothing was applied",
                    kind=ErrorKind.OS_ERROR,
                )
            # one descriptor per activation, in order (a batch may activate an address twice)
            fds = [self.sockets.fileno(address) for address in addresses]
            try:
                self.state.apply(request)
            except StateError as error:
                self.sockets.discard(fresh)
                refused = _refused_batch(request, error.index, error.message)
                return failure_from(error, prefix="refused by the main process: ", content=refused)
            self.health.sync()  # probes follow; workers hear of health changes before the change
            results = await self.pool.fanout(request, fds)
            listeners = self.state.listeners()
            self.sockets.release(a for a, listener in listeners.items() if listener.active)
            self._emit(Event(kind=EventKind.CONFIGURATION_CHANGED, message=request.describe()))
            saved, save_error = self.state_files.automatic_save()
        return self._applied(request, results, saved, save_error)

    def _applied(
        self,
        request: rq.Request,
        results: list[tuple[WorkerHandle, Response]],
        saved: str,
        save_error: str,
    ) -> Response:
        """The answer to a change the main state took: workers that did not follow are
        replaced; a failed automatic save makes it a failure (the change would be lost at
        the next restart)."""
        failed = [(w, r) for w, r in results if not r.ok]
        if failed:
            for worker, _ in failed:
                self._spawn(self.pool.replace(worker, "resynchronisation"))
            details = "; ".join(f"worker {w.id}: {r.message}" for w, r in failed)
            timed_out = all(r.kind == ErrorKind.TIMEOUT for _, r in failed)
            return fail(
                f"applied to the main state, but {details}; "
                f"{'this worker is' if len(failed) == 1 else 'these workers are'} "
                "being replaced by "
                "new ones started from the main state",
                kind=ErrorKind.TIMEOUT if timed_out else ErrorKind.WORKER_REFUSED,
            )
        message = f"applied to {len(results)} worker{'s' if len(results) != 1 else ''}"
        if save_error:
            return fail(
                f"{message}, but {save_error}; the change is live but not saved",
                kind=ErrorKind.NOT_SAVED,
            )
        if saved:
            message += f"; {saved}"
        content = None
        if isinstance(request, rq.Batch):
            content = BatchResults(version=self.state.version, results=_applied_batch(request))
        return ok(message, content=content)

    # ------------------------------------------------------------------ queries

    async def status(self, timeout: float | None = None) -> Response:
        """The answer to ``status``: each worker has ``timeout`` seconds to answer (default:
        ``worker_timeout``)."""
        results = await self.pool.fanout(rq.Status(), timeout=timeout)
        answered = {w.id: r.ok for w, r in results}
        infos = []
        for info in self.pool.infos():
            if info.run_state is RunState.RUNNING and not answered.get(info.id):
                info = info.model_copy(update={"run_state": RunState.NOT_ANSWERING})
            infos.append(info)
        return ok(
            f"{sum(answered.values())} of {len(infos)} workers answered",
            content=WorkersContent(workers=infos, main=self._main_info()),
        )

    async def _metrics(self, request: rq.QueryMetrics) -> Response:
        results = await self.pool.fanout(request)
        answers = [(worker.id, answer) for worker, answer in results]
        main = main_figures(self.state, len(self.pool))
        return ok(content=merge_metrics(answers, main, request, self.health.metrics()))

    async def _per_worker(self, request: rq.Request) -> Response:
        responses: dict[str, ResponseContent | None] = {}
        for worker, answer in await self.pool.fanout(request):
            responses[str(worker.id)] = answer.content
        return ok(content=WorkerResponses(responses=responses))


# --------------------------------------------------------------------------- batch results


def _batch_results(batch: rq.Batch, failed: int | None, message: str) -> list[BatchResult]:
    """Per-request outcome of a refused batch: the failed one (``failed``, the index the
    refusal carries) with the reason, those before it undone, those after it (or all, when no
    request failed by itself, as on a version mismatch: ``None``) not applied."""
    results = []
    for index, request in enumerate(batch.requests):
        if index == failed:
            status_message = message
        elif failed is not None and index < failed:
            status_message = "undone"
        else:
            status_message = "not applied"
        results.append(
            BatchResult(
                index=index,
                request=request.describe(),
                status=ResponseStatus.FAILURE,
                message=status_message,
            )
        )
    return results


def _refused_batch(request: rq.Request, failed: int | None, message: str) -> BatchResults | None:
    """The per-request outcome of a refused change, when it is a batch."""
    if not isinstance(request, rq.Batch):
        return None
    return BatchResults(results=_batch_results(request, failed, message))


def _applied_batch(batch: rq.Batch) -> list[BatchResult]:
    """Per-request outcome of an applied batch: every request applied."""
    return [
        BatchResult(index=i, request=r.describe(), status=ResponseStatus.OK)
        for i, r in enumerate(batch.requests)
    ]
