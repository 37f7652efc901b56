"""The main process: the state, the command socket, the listening sockets, the workers.

Every mutating request (a batch included) is checked, applied to the main state first —
refused there if invalid, so that no worker ever sees it — then sent to every worker; the
client is answered when all workers have answered, or when ``worker_timeout`` passes (a failure
naming the slow worker). A worker that refuses what the main state accepted, or does not answer,
is replaced by a new worker started from the main state, and the answer says so.

The main process owns the listening sockets: it binds a listener's socket when the listener is
activated and hands a descriptor to every worker; a worker that dies never takes a socket down,
clients wait in the kernel backlog until the replacement (started at once, with the current
state) accepts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

from sozu_config import requests as rq
from sozu_config.addresses import split_address
from sozu_config.config import Config, ConfigError, load_config
from sozu_config.protocol import ProtocolError, decode_request, encode_response, failure
from sozu_config.responses import (
    BatchResult,
    BatchResults,
    Event,
    EventContent,
    EventKind,
    MetricsContent,
    Response,
    ResponseContent,
    ResponseStatus,
    RunState,
    StateContent,
    WorkerInfo,
    WorkerResponses,
    WorkersContent,
)
from sozu_config.state import ConfigState, StateError
from sozu_config.statefile import (
    StateFileError,
    iter_state_file,
    read_state_file,
    remove_stale_temporaries,
    write_state_file,
)

from ..messages import InitialState, Setup
from .audit import AuditLog, FanOut, fan_out
from .command_socket import CommandBudgetExceeded, CommandServer, Peer
from .validation import RuntimeCheckError, check_request
from .workers import WorkerHandle

log = logging.getLogger("sozu.main")

__all__ = ["Daemon", "StartupError"]

BACKLOG = 1024  # listen() backlog of the listening sockets (sōzu's)
MAX_SUBSCRIBER_BUFFER = 4 * 1024 * 1024  # an events subscriber that reads slower is dropped
STARTUP_TIMEOUT = 30.0  # seconds a new worker has to take its initial state
REPLAY_WINDOW = 30.0  # seconds after a main upgrade during which new subscribers are told of it
LOAD_STATE_BATCH = 256  # state file records read per trip to the reading thread


class StartupError(Exception):
    """The daemon cannot start; the message is for the user (one paragraph)."""


def bind_listener(address: str) -> socket.socket:
    """A listening TCP socket for ``address`` (the main process keeps it for its lifetime)."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Daemon:
    """One sōzu instance."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = ConfigState(version=time.time_ns() // 1000)
        self.workers: dict[int, WorkerHandle] = {}
        self._worker_ids = itertools.count()
        self.sockets: dict[str, socket.socket] = {}
        self.lock = asyncio.Lock()
        self.subscribers: dict[asyncio.StreamWriter, str] = {}
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[int] = self.loop.create_future()
        self.commands = CommandServer(self._client, max_message=config.max_command_buffer_size)
        self.audit = AuditLog()
        self._signals = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._inflight = 0
        self._replay: list[Event] = []  # events new subscribers get (main upgrade, for a while)
        self._replay_until = 0.0

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Check the configuration, bind the sockets, start the workers. Raises StartupError."""
        config = self.config
        for warning in config.warnings:
            log.warning("%s", warning)
        self._claim_command_socket()
        self._open_audit_logs()
        desired = config.state
        saved = config.saved_state
        if saved is not None:
            for stale in remove_stale_temporaries(saved):
                log.warning("removed %s, left by an interrupted state save", stale)
        if saved is not None and saved.exists() and saved.stat().st_size > 0:
            desired = self._saved_state(config)
        plan = ConfigState().diff(desired)
        if plan:
            try:
                self._check(rq.Batch(requests=plan))
                self.state.apply(rq.Batch(requests=plan))
            except (StateError, RuntimeCheckError) as error:
                raise StartupError(f"{config.path}: {error}") from None
        for address, listener in sorted(self.state.listeners().items()):
            if listener.active:
                try:
                    self.sockets[address] = bind_listener(address)
                except OSError as error:
                    self._close_sockets()
                    raise StartupError(
                        f"{config.path}: cannot listen on {address}: {error.strerror}"
                    ) from None
        await self._serve_commands()
        starts = [self.start_worker() for _ in range(config.worker_count)]
        for handle in await asyncio.gather(*starts):
            if handle is None:
                await self._shutdown_workers(hard=True)
                raise StartupError("a worker failed to start (see the messages above)")
        self._automatic_save()
        self._write_pid_file()
        log.info(
            "sozu is ready: %d workers, %d listeners, %d clusters, command socket %s",
            len(self.workers),
            len(self.state.listeners()),
            len(self.state.clusters),
            config.command_socket,
        )

    @staticmethod
    def _saved_state(config: Config) -> ConfigState:
        """The state to start from when ``saved_state`` exists: it holds the configuration's
        objects and every change made at runtime since, so it replaces the file's routing (a
        restart then serves exactly what was served before)."""
        assert config.saved_state is not None
        try:
            state, errors = read_state_file(
                config.saved_state, max_record_bytes=config.max_command_buffer_size
            )
        except StateFileError as error:
            raise StartupError(f"saved_state: {error}") from None
        if errors:
            listed = "; ".join(str(e) for e in errors[:10])
            more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
            if config.saved_state_errors == "refuse":
                raise StartupError(
                    f"the saved state has {len(errors)} bad record(s): {listed}{more}. Fix or "
                    'remove the file, or set saved_state_errors = "skip" to start with the '
                    "good records"
                )
            for bad in errors:
                log.error("saved state record skipped: %s", bad)
        log.info("starting from the saved state %s (%r)", config.saved_state, state)
        return state

    async def adopt(self, state: ConfigState, data: dict[str, Any]) -> None:
        """Take over from the previous main process (see :mod:`.upgrade`)."""
        self.state = state
        self._worker_ids = itertools.count(int(data["next_worker_id"]))
        for address, fd in data["sockets"].items():
            self.sockets[address] = socket.socket(fileno=int(fd))
        for worker in data["workers"]:
            handle = WorkerHandle(int(worker["id"]), self._worker_event, self._worker_exited)
            handle.adopt(int(worker["pid"]), int(worker["fd"]))
            handle.run_state = RunState(worker["run_state"])
            self.workers[handle.id] = handle
        try:
            self._open_audit_logs()
        except StartupError as error:  # the old process is gone: serve on, and say so
            log.error("%s; commands are not audited", error)
        command = socket.socket(fileno=int(data["command_fd"]))
        await self.commands.adopt(command)
        log.info(
            "main process upgraded (pid %d): %d workers, %d listeners kept",
            os.getpid(),
            len(self.workers),
            len(self.sockets),
        )
        upgraded = Event(kind=EventKind.MAIN_UPGRADED, message=f"pid {os.getpid()}")
        self.emit(upgraded)
        # subscribers were disconnected by the switch: those who subscribe again soon learn why
        self._replay_until = self.loop.time() + REPLAY_WINDOW
        self._replay = [upgraded]
        for handle in list(self.workers.values()):
            if not handle.alive:
                self._worker_exited(handle)

    def _write_pid_file(self) -> None:
        path = self.config.pid_file_path
        if path is None:
            return
        try:
            path.write_text(f"{os.getpid()}\n")
        except OSError as error:
            log.error("cannot write the pid file %s: %s", path, error.strerror)

    def _claim_command_socket(self) -> None:
        path = self.config.command_socket
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(os.fspath(path))
            except OSError:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: nobody listens
            else:
                raise StartupError(
                    f"another sozu daemon is running on the command socket {path}: stop it first "
                    "(sozu shutdown), or use another command_socket"
                )
            finally:
                probe.close()
        if not path.parent.is_dir():
            raise StartupError(
                f"{self.config.path}: command_socket {path}: "
                f"the folder {path.parent} does not exist"
            )

    async def _serve_commands(self) -> None:
        path = os.fspath(self.config.command_socket)
        try:
            await self.commands.listen(path)
        except OSError as error:
            raise StartupError(
                f"cannot create the command socket {path}: {error.strerror}"
            ) from None

    def _open_audit_logs(self) -> None:
        config = self.config
        try:
            self.audit = AuditLog.open(config.audit_logs_target, config.audit_logs_json_target)
        except OSError as error:
            raise StartupError(
                f"{config.path}: cannot open the audit log {error.filename}: {error.strerror}"
            ) from None

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(signum, self._on_signal)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: finishing the requests in flight (signal again to stop now)")
            self._spawn(self.stop(hard=False))
        else:
            log.info("stopping now")
            self._spawn(self.stop(hard=True))

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self, *, hard: bool) -> None:
        self.stopping = True
        self.emit(Event(kind=EventKind.STOP_REQUESTED, message="hard" if hard else "soft"))
        await self._shutdown_workers(hard=hard)
        self._close_sockets()
        self.commands.close()
        self.audit.close()
        with contextlib.suppress(FileNotFoundError):
            self.config.command_socket.unlink()
        if self.config.pid_file_path is not None:
            with contextlib.suppress(OSError):
                self.config.pid_file_path.unlink()
        if not self.finished.done():
            self.finished.set_result(0)

    async def _shutdown_workers(self, *, hard: bool) -> None:
        workers = list(self.workers.values())
        for handle in workers:
            handle.expected_exit = True
        request: rq.Request = rq.HardStop() if hard else rq.SoftStop()
        futures = [h.send(request=request) for h in workers if h.alive]
        if futures:
            timeout = 5.0 if hard else self.config.soft_stop_timeout + 10.0
            await asyncio.wait(futures, timeout=timeout)
        for handle in workers:
            if not await handle.wait(3.0):
                handle.kill()

    def _close_sockets(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()

    # ------------------------------------------------------------------ workers

    async def start_worker(self) -> WorkerHandle | None:
        """Start a worker with the current state and the listening sockets."""
        handle = WorkerHandle(next(self._worker_ids), self._worker_event, self._worker_exited)
        try:
            await handle.spawn()
        except OSError as error:
            log.error("cannot start a worker: %s", error)
            return None
        config = self.config
        setup = Setup(
            worker_id=handle.id,
            buffer_size=config.buffer_size,
            max_connections=config.max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
            retry_after=config.retry_after,
            evict_on_queue_full=config.evict_on_queue_full,
            log_level=config.log_level,
            log_target=config.log_target,
            access_logs_target=config.access_logs_target,
            expired_certificates=config.expired_certificates,
            soft_stop_timeout=float(config.soft_stop_timeout),
        )
        ready = handle.send(control=setup)
        initial = self._initial_state(handle)
        self.workers[handle.id] = handle
        for future in (ready, initial):
            try:
                response = await asyncio.wait_for(
                    future, max(STARTUP_TIMEOUT, config.worker_timeout)
                )
            except TimeoutError:
                response = Response(id="", status=ResponseStatus.FAILURE, message="no answer")
            if not response.ok:
                log.error("worker %d failed to start: %s", handle.id, response.message)
                handle.expected_exit = True
                handle.kill()
                self.workers.pop(handle.id, None)
                return None
        if handle.run_state is RunState.STARTING:
            handle.run_state = RunState.RUNNING
        log.info("worker %d started (pid %d)", handle.id, handle.pid)
        return handle

    def _initial_state(self, handle: WorkerHandle) -> asyncio.Future[Response]:
        requests = self.state.generate_requests()
        fds = [
            self.sockets[r.address].fileno()
            for r in requests
            if isinstance(r, rq.ActivateListener) and r.address in self.sockets
        ]
        return handle.send(
            control=InitialState(requests=requests, version=self.state.version),
            fds=fds,
        )

    def _worker_event(self, handle: WorkerHandle, event: Event) -> None:
        self.emit(event.model_copy(update={"worker_id": handle.id}))

    def _worker_exited(self, handle: WorkerHandle) -> None:
        if self.workers.get(handle.id) is not handle:
            return
        del self.workers[handle.id]
        if handle.expected_exit or self.stopping:
            return
        self.emit(Event(kind=EventKind.WORKER_KILLED, worker_id=handle.id, message="exited"))
        if self.config.worker_automatic_restart:
            self._spawn(self._relaunch(handle.id))

    async def _relaunch(self, old_id: int) -> None:
        handle = await self.start_worker()
        if handle is not None:
            self.emit(
                Event(
                    kind=EventKind.WORKER_RELAUNCHED,
                    worker_id=handle.id,
                    message=f"replaces worker {old_id}",
                )
            )

    async def replace_worker(self, handle: WorkerHandle, reason: str) -> WorkerHandle | None:
        """A new worker from the main state takes over; the old one finishes its requests."""
        new = await self.start_worker()
        if new is None:
            return None
        handle.expected_exit = True
        handle.run_state = RunState.STOPPING
        self._spawn(self._soft_stop_worker(handle))
        self.emit(
            Event(
                kind=EventKind.WORKER_UPGRADED
                if reason == "upgrade"
                else EventKind.WORKER_RESYNCHRONIZED,
                worker_id=new.id,
                message=f"replaces worker {handle.id} ({reason})",
            )
        )
        return new

    async def _soft_stop_worker(self, handle: WorkerHandle) -> None:
        future = handle.send(request=rq.SoftStop())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, self.config.soft_stop_timeout + 10.0)
        if not await handle.wait(5.0):
            handle.kill()
        self.workers.pop(handle.id, None)

    def running_workers(self, *, starting: bool = False) -> list[WorkerHandle]:
        """Workers that serve (and, with ``starting``, those still taking their state)."""
        states = (RunState.RUNNING, RunState.STARTING) if starting else (RunState.RUNNING,)
        return [w for w in self.workers.values() if w.alive and w.run_state in states]

    async def fanout(
        self, request: rq.Request, fds: list[int] | None = None, *, timeout: float | None = None
    ) -> list[tuple[WorkerHandle, Response]]:
        """Send ``request`` to every running worker and collect the answers. Changes also go
        to workers still starting (they apply them after their initial state, in order)."""
        changes = request.type in rq.MUTATING_TYPES
        workers = self.running_workers(starting=changes)
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
                    (
                        worker,
                        Response(
                            id="",
                            status=ResponseStatus.FAILURE,
                            message=f"did not answer within {wait:g} s",
                        ),
                    )
                )
        return results

    # ------------------------------------------------------------------ events

    def emit(self, event: Event) -> None:
        if event.kind not in (EventKind.BACKEND_UP, EventKind.BACKEND_DOWN):
            log.info(
                "event %s %s",
                event.kind.value,
                event.model_dump(exclude_defaults=True, exclude={"kind"}),
            )
        for writer, request_id in list(self.subscribers.items()):
            transport = writer.transport
            if transport.is_closing() or transport.get_write_buffer_size() > MAX_SUBSCRIBER_BUFFER:
                self.subscribers.pop(writer, None)
                writer.close()
                continue
            writer.write(encode_response(_event_response(request_id, event)))

    # ------------------------------------------------------------------ the command socket

    def _peer_allowed(self, peer: Peer | None) -> bool:
        """``command_allowed_uids``: only those users may send requests (SO_PEERCRED)."""
        allowed = self.config.command_allowed_uids
        if allowed is None:
            return True
        return peer is not None and peer.uid in allowed

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer.of(writer.get_extra_info("socket"))
        if not self._peer_allowed(peer):
            with contextlib.suppress(Exception):
                line = await asyncio.wait_for(reader.readline(), 5.0)
                request_id = ""
                with contextlib.suppress(ProtocolError):
                    request_id = decode_request(line).id
                refusal = "unauthorized: your user id is not in command_allowed_uids"
                writer.write(encode_response(failure(request_id, refusal)))
                await writer.drain()
            writer.close()
            return
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except CommandBudgetExceeded as refused:
                    writer.write(encode_response(failure("", str(refused))))
                    await writer.drain()
                    break
                except ValueError:  # a line over the size limit
                    writer.write(
                        encode_response(
                            failure(
                                "",
                                f"message too large (max_command_buffer_size is "
                                f"{self.config.max_command_buffer_size} bytes)",
                            )
                        )
                    )
                    break
                if not line or not line.endswith(b"\n"):
                    break  # the client left (possibly in the middle of a line)
                if not line.strip():
                    continue
                try:
                    message = decode_request(line)
                except ProtocolError as error:
                    writer.write(encode_response(failure(error.request_id or "", str(error))))
                    await writer.drain()
                    continue
                await self._serve_request(message.id, message.request, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            self.subscribers.pop(writer, None)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_request(
        self,
        request_id: str,
        request: rq.Request,
        writer: asyncio.StreamWriter,
        peer: Peer | None = None,
    ) -> None:
        def progress(message: str) -> None:
            writer.write(
                encode_response(
                    Response(id=request_id, status=ResponseStatus.PROCESSING, message=message)
                )
            )

        if isinstance(request, rq.SubscribeEvents):
            self.subscribers[writer] = request_id
            progress("subscribed to events")
            if self._replay and self.loop.time() < self._replay_until:
                for event in self._replay:
                    writer.write(encode_response(_event_response(request_id, event)))
            await writer.drain()
            return
        self._inflight += 1
        tally = FanOut()
        fan_out.set(tally)
        try:
            try:
                response = await self.handle(request, progress)
            except Exception as error:  # a bug must not take the daemon down
                log.exception("request %s failed", request.type)
                response = _fail(f"internal error: {error}")
            self.audit.record(peer, request, response, tally)
            response = response.model_copy(update={"id": request_id})
            writer.write(encode_response(response))
            await writer.drain()
        finally:
            self._inflight -= 1
        if isinstance(request, (rq.SoftStop, rq.HardStop)):
            self._spawn(self.stop(hard=isinstance(request, rq.HardStop)))
        elif isinstance(request, rq.UpgradeMain) and response.ok:
            self._spawn(self._exec_upgrade())

    # ------------------------------------------------------------------ requests

    async def handle(self, request: rq.Request, progress: Any = None) -> Response:
        """Answer one request (the same entry for the command socket and internal callers)."""
        kind = request.type
        if kind in rq.MUTATING_TYPES:
            return await self.execute(request)
        if isinstance(request, rq.Status):
            return await self._status()
        if isinstance(request, rq.ListWorkers):
            return _ok(content=WorkersContent(workers=self._worker_infos()))
        if isinstance(request, rq.QueryState):
            return _ok(
                content=StateContent(version=self.state.version, state=self.state.snapshot())
            )
        if isinstance(request, rq.QueryMetrics):
            return await self._metrics(request)
        if isinstance(request, rq.QueryCertificatesFromWorkers):
            return await self._per_worker(request)
        if isinstance(
            request, (rq.QueryClusterById, rq.QueryClustersByDomain, rq.QueryClustersHashes)
        ):
            # answered from the main state; the workers' views are added per worker
            main = self.state.answer_query(request)
            responses: dict[str, ResponseContent | None] = {"main": main}
            for worker, answer in await self.fanout(request):
                responses[str(worker.id)] = answer.content
            return _ok(content=main if main is not None else WorkerResponses(responses=responses))
        if kind in rq.QUERY_TYPES:
            try:
                return _ok(content=self.state.answer_query(request))
            except StateError as error:
                return _fail(error.message)
        if isinstance(request, rq.SaveState):
            return self.save_state(request.path)
        if isinstance(request, rq.LoadState):
            return await self.load_state(request.path)
        if isinstance(request, rq.ReloadConfiguration):
            return await self.reload(request.path)
        if isinstance(request, rq.UpgradeWorker):
            return await self.upgrade_worker(request.worker_id)
        if isinstance(request, rq.UpgradeMain):
            return await self.upgrade_main()
        if isinstance(request, rq.Logging):
            from ..logs import set_level

            set_level(request.level)
            await self.fanout(request)
            return _ok(f"log level set to {request.level}")
        if isinstance(request, rq.ConfigureMetrics):
            await self.fanout(request)
            return _ok(f"metrics {request.configuration}")
        if isinstance(request, (rq.SoftStop, rq.HardStop)):
            return _ok(f"stopping {len(self.workers)} workers ({kind.replace('_', ' ')})")
        return _fail(f"{kind} is not supported by this daemon")

    def _check(self, request: rq.Request) -> None:
        check_request(request, self.state, self.config)

    async def execute(self, request: rq.Request) -> Response:
        """Apply a mutating request to the main state, then to every worker."""
        async with self.lock:
            try:
                self._check(request)
            except RuntimeCheckError as error:
                content = None
                if isinstance(request, rq.Batch):
                    content = BatchResults(results=_batch_results(request, error.index, str(error)))
                return Response(
                    id="", status=ResponseStatus.FAILURE, message=str(error), content=content
                )
            inner = request.requests if isinstance(request, rq.Batch) else [request]
            activations = [r for r in inner if isinstance(r, rq.ActivateListener)]
            fresh: list[str] = []
            fds: list[int] = []
            for activation in activations:
                sock = self.sockets.get(activation.address)
                if sock is None:
                    try:
                        sock = bind_listener(activation.address)
                    except OSError as error:
                        for address in fresh:
                            self.sockets.pop(address).close()
                        reason = error.strerror or str(error)
                        if error.errno == errno.EADDRINUSE:
                            reason = "the address is already in use"
                        return _fail(
                            f"cannot listen on {activation.address}: {reason}; nothing was applied"
                        )
                    self.sockets[activation.address] = sock
                    fresh.append(activation.address)
                fds.append(sock.fileno())
            try:
                self.state.apply(request)
            except StateError as error:
                for address in fresh:
                    self.sockets.pop(address).close()
                content = None
                if isinstance(request, rq.Batch):
                    content = BatchResults(
                        results=_batch_results(request, _failed_index(error), error.message)
                    )
                return Response(
                    id="",
                    status=ResponseStatus.FAILURE,
                    message=f"refused by the main process: {error.message}",
                    content=content,
                )
            results = await self.fanout(request, fds)
            self._release_sockets()
            self.emit(Event(kind=EventKind.CONFIGURATION_CHANGED, message=request.describe()))
            saved, save_error = self._automatic_save()
        failed = [(w, r) for w, r in results if not r.ok]
        if failed:
            for worker, _ in failed:
                self._spawn(self.replace_worker(worker, "resynchronisation"))
            details = "; ".join(f"worker {w.id}: {r.message}" for w, r in failed)
            return _fail(
                f"applied to the main state, but {details}; "
                f"{'this worker is' if len(failed) == 1 else 'these workers are'} "
                "being replaced by "
                "new ones started from the main state"
            )
        message = f"applied to {len(results)} worker{'s' if len(results) != 1 else ''}"
        if save_error:
            # the change serves, but would be lost at the next restart: not a success
            return _fail(f"{message}, but {save_error}; the change is live but not saved")
        if saved:
            message += f"; {saved}"
        content = None
        if isinstance(request, rq.Batch):
            content = BatchResults(
                version=self.state.version,
                results=[
                    BatchResult(index=i, request=r.describe(), status=ResponseStatus.OK)
                    for i, r in enumerate(request.requests)
                ],
            )
        return _ok(message, content=content)

    def _release_sockets(self) -> None:
        listeners = self.state.listeners()
        for address in [a for a in self.sockets if a not in listeners or not listeners[a].active]:
            self.sockets.pop(address).close()

    def _automatic_save(self) -> tuple[str, str]:
        """``automatic_state_save``: (what was saved, or "") and (why it failed, or "")."""
        config = self.config
        if not config.automatic_state_save or config.saved_state is None:
            return "", ""
        try:
            count = write_state_file(self.state, config.saved_state)
        except OSError as error:
            reason = (
                f"the automatic state save to {config.saved_state} failed: "
                f"{error.strerror or error}"
            )
            log.error("%s", reason)
            return "", reason
        self.emit(Event(kind=EventKind.STATE_SAVED, message=str(config.saved_state)))
        return f"state saved ({count} requests)", ""

    async def _status(self) -> Response:
        results = await self.fanout(rq.Status())
        answered = {w.id: r.ok for w, r in results}
        infos = [
            WorkerInfo(
                id=w.id,
                pid=w.pid,
                run_state=(
                    w.run_state
                    if w.run_state is not RunState.RUNNING
                    else RunState.RUNNING
                    if answered.get(w.id)
                    else RunState.NOT_ANSWERING
                ),
            )
            for w in sorted(self.workers.values(), key=lambda w: w.id)
        ]
        return _ok(
            f"{sum(answered.values())} of {len(infos)} workers answered",
            content=WorkersContent(workers=infos),
        )

    def _worker_infos(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(id=w.id, pid=w.pid, run_state=w.run_state)
            for w in sorted(self.workers.values(), key=lambda w: w.id)
        ]

    async def _metrics(self, request: rq.QueryMetrics) -> Response:
        results = await self.fanout(request)
        workers: dict[str, dict[str, Any]] = {}
        proxying: dict[str, Any] = {}
        clusters: dict[str, dict[str, Any]] = {}
        for worker, answer in results:
            content = answer.content
            if not isinstance(content, MetricsContent):
                continue
            workers[str(worker.id)] = {"proxying": content.proxying, "clusters": content.clusters}
            _merge_counts(proxying, content.proxying)
            for cluster_id, data in content.clusters.items():
                _merge_counts(
                    clusters.setdefault(cluster_id, {}), {"requests": data.get("requests", 0)}
                )
        main = {
            "workers": len(self.workers),
            "clusters": len(self.state.clusters),
            "frontends": len(self.state.http_frontends)
            + len(self.state.https_frontends)
            + len(self.state.tcp_frontends),
            "backends": sum(len(b) for b in self.state.backends.values()),
            "version": self.state.version,
        }
        return _ok(
            content=MetricsContent(
                main=main,
                workers=workers if request.workers else {},
                clusters=clusters,
                proxying=proxying,
            )
        )

    async def _per_worker(self, request: rq.Request) -> Response:
        responses: dict[str, ResponseContent | None] = {}
        for worker, answer in await self.fanout(request):
            responses[str(worker.id)] = answer.content
        return _ok(content=WorkerResponses(responses=responses))

    # ------------------------------------------------------------------ state files and reload

    def save_state(self, path: str) -> Response:
        target = Path(path)
        try:
            count = write_state_file(self.state, target)
        except OSError as error:
            return _fail(f"cannot save the state to {target}: {error.strerror or error}")
        self.emit(Event(kind=EventKind.STATE_SAVED, message=str(target)))
        return _ok(f"saved {count} requests to {target}")

    async def load_state(self, path: str) -> Response:
        """Apply the records of a state file (a merge: records the state refuses, e.g. objects
        that exist already, are counted and skipped).

        The file is read in a thread, a batch of records at a time, each record at most
        ``max_command_buffer_size`` bytes: the command plane never waits on a slow disk, and a
        path that never ends (``/dev/zero``, a FIFO) is refused, not read forever."""
        source = Path(path)
        applied = skipped = 0
        errors: list[str] = []
        records: Generator[tuple[int, rq.StateRequest], None, None] = iter_state_file(
            source, max_record_bytes=self.config.max_command_buffer_size
        )
        try:
            while True:
                batch, stop = await self.loop.run_in_executor(
                    None, _take, records, LOAD_STATE_BATCH
                )
                for number, request in batch:
                    response = await self.execute(request)
                    if response.ok:
                        applied += 1
                    else:
                        skipped += 1
                        if len(errors) < 5:
                            errors.append(f"line {number}: {response.message}")
                if stop is not None:
                    return _fail(
                        f"loading the state stopped at {stop}; {applied} requests applied before it"
                    )
                if not batch:
                    break
        finally:
            records.close()
        self.emit(Event(kind=EventKind.STATE_LOADED, message=str(source)))
        message = f"loaded {source}: {applied} requests applied, {skipped} skipped"
        if errors:
            message += " (" + "; ".join(errors) + ")"
        return _ok(message)

    async def reload(self, path: str | None) -> Response:
        """Re-read the configuration file and apply the difference as one batch."""
        source = Path(path) if path else self.config.path
        if source is None:
            return _fail("no configuration file to reload")
        try:
            desired = await self.loop.run_in_executor(None, load_config, source)
        except ConfigError as error:
            return _fail(f"the configuration was not reloaded: {error}")
        plan = self.state.diff(desired.state)
        if not plan:
            return _ok(f"{source}: nothing to change")
        response = await self.execute(rq.Batch(requests=plan, expected_version=self.state.version))
        if response.ok:
            self.emit(Event(kind=EventKind.CONFIGURATION_RELOADED, message=str(source)))
            return _ok(
                f"{source}: applied {len(plan)} changes; {response.message}",
                content=response.content,
            )
        return response.model_copy(
            update={"message": f"the configuration was not reloaded: {response.message}"}
        )

    async def upgrade_worker(self, worker_id: int) -> Response:
        handle = self.workers.get(worker_id)
        if handle is None or not handle.alive or handle.run_state is not RunState.RUNNING:
            return _fail(f"no running worker {worker_id}")
        new = await self.replace_worker(handle, "upgrade")
        if new is None:
            return _fail(f"worker {worker_id} was not upgraded: the new worker did not start")
        return _ok(f"worker {worker_id} replaced by worker {new.id} (pid {new.pid})")

    async def upgrade_main(self) -> Response:
        if self.stopping:
            return _fail("the daemon is stopping")
        if self.commands.server is None:
            return _fail("the command socket is not served by this process")
        return _ok(
            f"the main process (pid {os.getpid()}) is being replaced by a new one running the "
            "installed code; workers, sockets and state are kept"
        )

    async def _exec_upgrade(self) -> None:
        """Re-execute this process (see :mod:`.upgrade`); never returns when it works."""
        from .upgrade import exec_new_main, write_upgrade_file

        async with self.lock:  # no mutating request in flight, none starts
            command_fd = os.dup(self.commands.listening_socket.fileno())  # keeps it alive
            self.commands.close()  # stop accepting: new clients wait in the kernel backlog
            deadline = self.loop.time() + 5.0
            while self._inflight > 0 and self.loop.time() < deadline:
                await asyncio.sleep(0.01)
            for writer in list(self._clients):
                writer.close()  # connected clients see the end of the stream: a clean error
            await asyncio.sleep(0)
            workers = [w for w in self.workers.values() if w.alive and w.channel is not None]
            sockets = {address: sock.fileno() for address, sock in self.sockets.items()}
            channels = [w.channel.sock.fileno() for w in workers if w.channel is not None]
            data: dict[str, Any] = {
                "config": self.config.model_dump(mode="json"),
                "version": self.state.version,
                "next_worker_id": next(self._worker_ids),
                "workers": [
                    {"id": w.id, "pid": w.pid, "fd": fd, "run_state": w.run_state.value}
                    for w, fd in zip(workers, channels, strict=True)
                ],
                "sockets": sockets,
                "command_fd": command_fd,
            }
            try:
                path = write_upgrade_file(data, lambda p: write_state_file(self.state, p))
                descriptors = [command_fd, *sockets.values(), *channels]
                log.info("re-executing the main process")
                for handler in logging.getLogger("sozu").handlers:
                    handler.flush()
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                exec_new_main(path, descriptors)
            except OSError as error:
                log.error("the main process upgrade failed: %s; going on with the old one", error)
                os.close(command_fd)
                await self._serve_commands()


def _take(
    records: Iterator[tuple[int, rq.StateRequest]], count: int
) -> tuple[list[tuple[int, rq.StateRequest]], StateFileError | None]:
    """The next ``count`` records (fewer at the end), and the error that stopped the reading
    after them, if any. Run in a thread."""
    batch: list[tuple[int, rq.StateRequest]] = []
    try:
        for record in records:
            batch.append(record)
            if len(batch) >= count:
                break
    except StateFileError as error:
        return batch, error
    return batch, None


def _event_response(request_id: str, event: Event) -> Response:
    return Response(
        id=request_id,
        status=ResponseStatus.PROCESSING,
        message=str(event.worker_id) if event.worker_id is not None else "main",
        content=EventContent(event=event),
    )


def _ok(message: str = "", *, content: ResponseContent | None = None) -> Response:
    return Response(id="", status=ResponseStatus.OK, message=message, content=content)


def _fail(message: str) -> Response:
    return Response(id="", status=ResponseStatus.FAILURE, message=message)


def _merge_counts(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            into[key] = into.get(key, 0) + value
        elif isinstance(value, dict):
            _merge_counts(into.setdefault(key, {}), value)


def _failed_index(error: StateError) -> int:
    """The index of the request a batch refusal names ("request N of M …"), -1 if none."""
    text = error.message
    if text.startswith("request "):
        with contextlib.suppress(ValueError, IndexError):
            return int(text.split()[1]) - 1
    return -1


def _batch_results(batch: rq.Batch, failed: int, message: str) -> list[BatchResult]:
    """Per-request outcome of a refused batch: the failed one (when known) with the reason,
    those before it undone, those after it (or all, when no request failed by itself, as on
    a version mismatch) not applied."""
    results = []
    for index, request in enumerate(batch.requests):
        if index == failed:
            status_message = message
        elif failed >= 0 and index < failed:
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
