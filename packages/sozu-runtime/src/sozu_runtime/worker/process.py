"""A worker process: one event loop, one channel to the main process, one :class:`Proxy`.

Started by the main process as ``python -m sozu_runtime.worker --id N --fd FD`` with one end
of a socket pair inherited as ``FD``. Messages from the main process are handled one at a time
in arrival order (a request is fully applied before the next one is looked at), so the worker's
state follows the main state request by request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import resource
import signal
import socket
import sys
from typing import assert_never

from pydantic import ValidationError

from sozu_config import requests as rq
from sozu_config.protocol import encode_response, validation_message
from sozu_config.responses import (
    CertificatesContent,
    ErrorKind,
    Event,
    EventContent,
    MetricsContent,
    Response,
    ResponseContent,
    ResponseStatus,
    RunState,
    WorkerInfo,
    WorkersContent,
)
from sozu_config.state import StateError

from .. import __version__
from ..channel import Channel
from ..logs import configure_logging, reopen_logs, set_level
from ..messages import (
    EVENT_ID,
    HEALTH_ID,
    Control,
    HealthUpdate,
    InitialState,
    ReopenLogs,
    Setup,
    WorkerMessage,
    decode_message,
)
from .proxy import Proxy

log = logging.getLogger("sozu.worker")

__all__ = ["WorkerProcess", "main"]

SWEEP_INTERVAL = 0.25  # seconds between deadline checks
STARTED_AT = dt.datetime.now(dt.UTC)  # when this worker's code started
DESCRIPTORS_RESERVED = 64  # descriptors a worker needs besides its connections (sockets, logs)
ACCEPTED_GRACE = 0.05  # seconds a soft stop waits for connections accepted at the last moment


class WorkerProcess:
    def __init__(self, worker_id: int, fd: int) -> None:
        self.worker_id = worker_id
        self.fd = fd
        self.proxy: Proxy | None = None
        self.channel: Channel | None = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.soft_stop_timeout = 60.0
        self._stopping: asyncio.Task[None] | None = None

    async def run(self) -> int:
        sock = socket.socket(fileno=self.fd)
        self.channel = Channel(sock, self.queue.put_nowait, lambda: self.queue.put_nowait(None))
        consumer = asyncio.get_running_loop().create_task(self._consume())
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            return await self.done
        finally:
            consumer.cancel()
            sweeper.cancel()
            if self.proxy is not None:
                self.proxy.close_access_log()  # the lines still buffered are written

    # ------------------------------------------------------------------ messages

    async def _consume(self) -> None:
        while True:
            line = await self.queue.get()
            if line is None:  # the main process is gone: finish what is in flight and leave
                log.warning("the channel to the main process closed: stopping")
                await self._soft_stop(None)
                return
            try:
                message = decode_message(line)
            except ValidationError as error:
                log.error("invalid message from the main process: %s", validation_message(error))
                continue
            try:
                await self._handle(message)
            except Exception as error:  # one bad request never stops the worker
                log.exception("request %s failed", message.id)
                self._fail(message.id, f"worker error: {error}", ErrorKind.INTERNAL)

    def _answer(
        self,
        request_id: str,
        status: ResponseStatus,
        message: str = "",
        content: ResponseContent | None = None,
    ) -> None:
        self._send(Response(id=request_id, status=status, message=message, content=content))

    def _fail(
        self, request_id: str, message: str, kind: ErrorKind, index: int | None = None
    ) -> None:
        self._send(Response.failure(message, kind=kind, index=index, id=request_id))

    def _send(self, response: Response) -> None:
        channel = self.channel
        if channel is None or channel.closed:
            return
        channel.send(encode_response(response))

    def emit(self, event: Event) -> None:
        if event.time is None:
            event = event.model_copy(update={"time": dt.datetime.now(dt.UTC)})
        self._answer(EVENT_ID, ResponseStatus.PROCESSING, "", EventContent(event=event))

    def observe(self, event: Event) -> None:
        """Tell the main process what real traffic shows of a backend (see
        :data:`~sozu_runtime.messages.HEALTH_ID`)."""
        self._answer(HEALTH_ID, ResponseStatus.PROCESSING, "", EventContent(event=event))

    async def _handle(self, message: WorkerMessage) -> None:
        assert self.channel is not None
        fds = self.channel.take_fds(message.fds) if message.fds else []
        control = message.control
        if control is not None:
            await self._control(message.id, control, fds)
            return
        request = message.request
        if request is None:
            self._fail(message.id, "empty message", ErrorKind.BAD_REQUEST)
            return
        proxy = self.proxy
        if proxy is None:
            self._fail(message.id, "the worker is not set up yet", ErrorKind.UNAVAILABLE)
            return
        await self._dispatch(message.id, proxy, request, fds)

    async def _dispatch(
        self, message_id: str, proxy: Proxy, request: rq.Request, fds: list[int]
    ) -> None:
        """Handle a request: one case per request type (mypy names this place when a new one
        is declared)."""
        if rq.is_mutating(request):  # every state request and the batch
            await self._apply(message_id, proxy, request, fds)
            return
        for fd in fds:  # nothing else carries sockets
            os.close(fd)
        match request:
            case rq.SoftStop():
                # drained in the background: messages go on being handled (a hard stop may come)
                if self._stopping is None:
                    loop = asyncio.get_running_loop()
                    self._stopping = loop.create_task(self._soft_stop(message_id))
            case rq.HardStop():
                proxy.hard_stop()
                self._answer(message_id, ResponseStatus.OK)
                await self._flush()
                self._finish(0)
            case rq.Logging():
                set_level(request.level)
                self._answer(message_id, ResponseStatus.OK)
            case rq.ConfigureMetrics():
                proxy.configure_metrics(request.configuration)
                self._answer(message_id, ResponseStatus.OK)
            case rq.QueryMetrics():
                self._answer(message_id, ResponseStatus.OK, content=self._metrics(proxy, request))
            case rq.QueryCertificatesFromWorkers():
                found = proxy.state.certificate_list(
                    domain=request.domain, fingerprint=request.fingerprint
                )
                certificates = CertificatesContent(certificates=found)
                self._answer(message_id, ResponseStatus.OK, content=certificates)
            case rq.Status():
                self._answer(message_id, ResponseStatus.OK)
            case (
                rq.ListWorkers()
                | rq.ListFrontends()
                | rq.ListListeners()
                | rq.QueryClusterById()
                | rq.QueryClustersByDomain()
                | rq.QueryClustersHashes()
                | rq.QueryCertificates()
                | rq.CountRequests()
                | rq.QueryState()
                | rq.QueryHealthChecks()
                | rq.ListBackends()
                | rq.SaveState()
                | rq.LoadState()
                | rq.ReloadConfiguration()
                | rq.UpgradeMain()
                | rq.UpgradeWorker()
                | rq.SubscribeEvents()
            ):
                # answered from the state (the main process's own verbs change nothing here)
                content = proxy.state.answer_query(request)
                self._answer(message_id, ResponseStatus.OK, content=content)
            case _:
                assert_never(request)

    async def _apply(
        self, message_id: str, proxy: Proxy, request: rq.MutatingRequest, fds: list[int]
    ) -> None:
        try:
            await proxy.apply(request, fds)
        except StateError as error:
            self._fail(message_id, error.message, error.kind, error.index)
            return
        self._answer(message_id, ResponseStatus.OK)

    def _metrics(self, proxy: Proxy, request: rq.QueryMetrics) -> MetricsContent:
        if not proxy.metrics.enabled or request.list:
            return MetricsContent()  # disabled metrics are not reported
        return proxy.metrics_content(request)

    async def _control(self, request_id: str, control: Control, fds: list[int]) -> None:
        match control:
            case Setup():
                self._set_up(request_id, control)
            case ReopenLogs():
                reopen_logs()
                if self.proxy is not None:
                    self.proxy.reopen_access_log()
                self._answer(request_id, ResponseStatus.OK)
            case HealthUpdate():
                if self.proxy is not None:
                    self.proxy.set_health(control.down, control.up, control.reset)
                self._answer(request_id, ResponseStatus.OK)
            case InitialState():
                assert self.proxy is not None
                for request in control.requests:
                    await self.proxy.apply(request, fds)
                self.proxy.state.version = control.version
                self._answer(request_id, ResponseStatus.OK)
            case _:
                assert_never(control)

    def _set_up(self, request_id: str, control: Setup) -> None:
        tag = f"WRK-{control.worker_id:02d}"
        configure_logging(control.log_level, tag, target=control.log_target)
        self.soft_stop_timeout = control.soft_stop_timeout
        check_descriptor_limit(control.max_connections)
        self.proxy = Proxy(
            worker_id=control.worker_id,
            buffer_size=control.buffer_size,
            max_connections=control.max_connections,
            max_connections_per_ip=control.max_connections_per_ip,
            retry_after=control.retry_after,
            evict_on_queue_full=control.evict_on_queue_full,
            emit_event=self.emit,
            observe=self.observe,
            expired_certificates=control.expired_certificates,
        )
        self.proxy.configure_access_logs(
            control.access_logs_target, control.access_logs_format, tag
        )
        me = WorkerInfo(
            id=control.worker_id,
            pid=os.getpid(),
            run_state=RunState.STARTING,
            version=__version__,
            started_at=STARTED_AT,
        )
        self._answer(request_id, ResponseStatus.OK, content=WorkersContent(workers=[me]))

    # ------------------------------------------------------------------ stopping

    async def _soft_stop(self, request_id: str | None) -> None:
        proxy = self.proxy
        if proxy is not None:
            await proxy.stop_listening()
            # Connections the event loop accepted just before the listeners closed have their
            # connection_made still queued: let it run, so that they are drained with the
            # others instead of being cut when the process exits.
            await asyncio.sleep(ACCEPTED_GRACE)
            proxy.soft_stop()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.soft_stop_timeout
            while proxy.sessions and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if proxy.sessions:
                log.warning("soft stop: %d connections cut at the deadline", len(proxy.sessions))
                proxy.hard_stop()
        if request_id is not None:
            self._answer(request_id, ResponseStatus.OK)
            await self._flush()
        self._finish(0)

    async def _flush(self) -> None:
        if self.channel is not None and not self.channel.closed:
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(self.channel.drain(), 2.0)

    def _finish(self, code: int) -> None:
        if not self.done.done():
            self.done.set_result(code)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            if self.proxy is not None:
                try:
                    self.proxy.sweep()
                except Exception:
                    log.exception("sweep failed")


def check_descriptor_limit(max_connections: int) -> None:
    """Raise the open files limit to what the system allows, and warn when it is still too
    low for ``max_connections`` (a proxied connection needs two descriptors: the client's and
    the backend's): at the limit, accepting fails and clients wait or are refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    needed = 2 * max_connections + DESCRIPTORS_RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "max_connections = %d needs about %d open files, but this worker may open %d: "
            "raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections",
            max_connections,
            needed,
            soft,
        )


async def _run(worker_id: int, fd: int) -> int:
    loop = asyncio.get_running_loop()
    for signum in (
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        # the main process decides what workers do; a Ctrl-C on the terminal (or a closed
        # terminal's SIGHUP) reaches the whole process group and must not act behind its back
        loop.add_signal_handler(signum, lambda: None)
    worker = WorkerProcess(worker_id, fd)
    return await worker.run()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sozu-worker", description="a sozu worker process")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    from ..loops import run

    return run(_run(args.id, args.fd))


if __name__ == "__main__":
    sys.exit(main())
