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
import datetime as dt
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
    MainProcessInfo,
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

from .. import __version__
from ..logs import reopen_logs
from ..messages import InitialState, ReopenLogs, Setup
from .audit import AuditLog, FanOut, fan_out
from .command_socket import CommandBudgetExceeded, CommandServer, Peer, unread_bytes
from .systemd import notify, reloading
from .validation import RuntimeCheckError, check_request
from .workers import WorkerHandle

log = logging.getLogger("sozu.main")

__all__ = ["Daemon", "StartupError"]

BACKLOG = 1024  # listen() backlog of the listening sockets (sōzu's)
MAX_SUBSCRIBER_BUFFER = 4 * 1024 * 1024  # an events subscriber that reads slower is dropped
STARTUP_TIMEOUT = 30.0  # seconds a new worker has to take its initial state
REPLAY_WINDOW = 30.0  # seconds after a main upgrade during which new subscribers are told of it
SWITCH_QUIESCE = 5.0  # seconds a main upgrade waits for the requests in flight
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
        self.started_at = dt.datetime.now(dt.UTC)  # when this code started (an upgrade: anew)
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
        # every command connection: its reader, for the hand-over of an upgrade
        self._clients: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        self._busy: set[asyncio.StreamWriter] = set()  # serving a request
        self._inflight = 0
        # during a main upgrade: the outcome the command connections wait for (None: serving)
        self._switching: asyncio.Future[None] | None = None
        self._parked: dict[asyncio.StreamWriter, bytes] = {}  # lines read during the switch
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
        notify(f"READY=1\nSTATUS=serving with {len(self.workers)} workers (version {__version__})")
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
        log.info("starting from the saved state %s (%s)", config.saved_state, state.summary())
        return state

    async def adopt(self, state: ConfigState, data: dict[str, Any]) -> None:
        """Take over from the previous main process (see :mod:`.upgrade`)."""
        self.state = state
        self._worker_ids = itertools.count(int(data["next_worker_id"]))
        for address, fd in data["sockets"].items():
            self.sockets[address] = socket.socket(fileno=int(fd))
        for worker in data["workers"]:
            handle = WorkerHandle(int(worker["id"]), self._worker_event, self._worker_exited)
            try:
                handle.adopt(int(worker["pid"]), int(worker["fd"]))
            except OSError as error:  # its channel did not come through: a new worker serves
                log.error("worker %s could not be taken over: %s", worker["id"], error)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(worker["pid"]), signal.SIGTERM)
                self._spawn(self._relaunch(int(worker["id"])))
                continue
            handle.run_state = RunState(worker["run_state"])
            # a worker the previous code was replacing finishes its requests, then leaves
            handle.expected_exit = handle.run_state is RunState.STOPPING
            handle.version = worker.get("version")
            if worker.get("started_at"):
                handle.started_at = dt.datetime.fromisoformat(worker["started_at"])
            self.workers[handle.id] = handle
        try:
            self._open_audit_logs()
        except StartupError as error:  # the old process is gone: serve on, and say so
            log.error("%s; commands are not audited", error)
        command = socket.socket(fileno=int(data["command_fd"]))
        await self.commands.adopt(command)
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
            len(self.workers),
            len(self.sockets),
            len(clients),
        )
        notify(f"READY=1\nSTATUS=serving with {len(self.workers)} workers (version {__version__})")
        self.emit(upgraded)
        # clients who lost their subscription in the switch learn why when they come back
        self._replay_until = self.loop.time() + REPLAY_WINDOW
        self._replay = [upgraded]
        for handle in list(self.workers.values()):
            if not handle.alive:
                self._worker_exited(handle)
        if data.get("then_workers"):
            self._spawn(self._upgrade_workers_logged())

    async def _upgrade_workers_logged(self) -> None:
        for response in await self.upgrade_all_workers():
            if response.ok:
                log.info("%s", response.message)
            else:
                log.error("%s", response.message)

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
        """nginx's, HAProxy's and systemd's conventions (see the README's table)."""
        handlers = {
            signal.SIGINT: self._on_stop_signal,
            signal.SIGTERM: self._on_stop_signal,
            signal.SIGQUIT: self._on_quit_signal,
            signal.SIGHUP: self._on_reload_signal,
            signal.SIGUSR1: self._on_reopen_signal,
            signal.SIGUSR2: self._on_upgrade_signal,
        }
        for signum, handler in handlers.items():
            self.loop.add_signal_handler(signum, handler)

    def _on_stop_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: finishing the requests in flight (signal again to stop now)")
            self._spawn(self.stop(hard=False))
        else:
            log.info("stopping now")
            self._spawn(self.stop(hard=True))

    def _on_quit_signal(self) -> None:
        log.info("SIGQUIT: stopping now")
        self._spawn(self.stop(hard=True))

    def _on_reload_signal(self) -> None:
        log.info("SIGHUP: reloading %s", self.config.path)
        self._spawn(self._reload_logged())

    async def _reload_logged(self) -> None:
        reloading(f"reloading {self.config.path}")
        response = await self.reload(None)
        if response.ok:
            log.info("reload: %s", response.message)
        else:
            log.error("reload: %s", response.message)
        notify(f"READY=1\nSTATUS={'reloaded' if response.ok else 'reload refused'}: serving")

    def _on_reopen_signal(self) -> None:
        self.reopen_logs()
        log.info("SIGUSR1: log files reopened")  # the first line of the new files

    def reopen_logs(self) -> None:
        """Open every log file again (after a rotation moved them): the main process's logs,
        access logs and audit logs, then each worker's."""
        reopen_logs()
        try:
            self.audit.reopen()
        except OSError as error:
            log.error("cannot reopen the audit log %s: %s", error.filename, error.strerror)
        for worker in self.running_workers(starting=True):
            worker.send(control=ReopenLogs())

    def _on_upgrade_signal(self) -> None:
        log.info("SIGUSR2: upgrading the main process, then every worker")
        self._spawn(self._upgrade_logged())

    async def _upgrade_logged(self) -> None:
        response = await self.upgrade_main(then_workers=True)
        log.error("%s", response.message)  # only a refusal returns

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self, *, hard: bool) -> None:
        if self.stopping and not hard:
            return
        self.stopping = True
        notify(f"STOPPING=1\nSTATUS=stopping ({'hard' if hard else 'soft'})")
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
            if isinstance(response.content, WorkersContent) and response.content.workers:
                described = response.content.workers[0]  # the worker's answer to its set-up
                handle.version, handle.started_at = described.version, described.started_at
        if handle.run_state is RunState.STARTING:
            handle.run_state = RunState.RUNNING
        log.info("worker %d started (pid %d, version %s)", handle.id, handle.pid, handle.version)
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
        if event.time is None:
            event = event.model_copy(update={"time": dt.datetime.now(dt.UTC)})
        if event.kind not in (EventKind.BACKEND_UP, EventKind.BACKEND_DOWN):
            log.info(
                "event %s",
                event.describe(),
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

    async def _client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handed_over: dict[str, Any] | None = None,
    ) -> None:
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
        self._clients[writer] = reader
        if handed_over is not None:
            self._resume_client(writer, handed_over, peer)
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
                if self._switching is not None:
                    # a main upgrade is under way: the line goes to the new code, unless the
                    # upgrade does not happen (then it is served here after all)
                    self._parked[writer] = line
                    await asyncio.shield(self._switching)
                    self._parked.pop(writer, None)
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
            self._clients.pop(writer, None)
            self.subscribers.pop(writer, None)
            with contextlib.suppress(Exception):
                writer.close()

    def _resume_client(
        self, writer: asyncio.StreamWriter, handed_over: dict[str, Any], peer: Peer | None
    ) -> None:
        """A connection the previous main process handed over: its subscription goes on, and
        the client that asked for the upgrade gets the answer (and the audit its record)."""
        subscriber = handed_over.get("subscriber")
        if subscriber is not None:
            self.subscribers[writer] = subscriber
        answer = handed_over.get("answer")
        if answer is not None:
            response = self._upgraded_answer(answer)
            self.audit.record(peer, rq.UpgradeMain(), response, FanOut())
            writer.write(encode_response(response))

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
        self._busy.add(writer)
        tally = FanOut()
        fan_out.set(tally)
        try:
            try:
                if isinstance(request, rq.UpgradeMain):
                    # answered by the new code when it works: returns only when it did not
                    response = await self.upgrade_main(answer=(request_id, writer, peer))
                else:
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
            self._busy.discard(writer)
        if isinstance(request, (rq.SoftStop, rq.HardStop)):
            self._spawn(self.stop(hard=isinstance(request, rq.HardStop)))

    # ------------------------------------------------------------------ requests

    async def handle(self, request: rq.Request, progress: Any = None) -> Response:
        """Answer one request (the same entry for the command socket and internal callers)."""
        kind = request.type
        if kind in rq.MUTATING_TYPES:
            return await self.execute(request)
        if isinstance(request, rq.Status):
            return await self._status()
        if isinstance(request, rq.ListWorkers):
            return _ok(content=WorkersContent(workers=self._worker_infos(), main=self._main_info()))
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
        infos = []
        for worker in sorted(self.workers.values(), key=lambda w: w.id):
            info = worker.info()
            if info.run_state is RunState.RUNNING and not answered.get(worker.id):
                info = info.model_copy(update={"run_state": RunState.NOT_ANSWERING})
            infos.append(info)
        return _ok(
            f"{sum(answered.values())} of {len(infos)} workers answered",
            content=WorkersContent(workers=infos, main=self._main_info()),
        )

    def _worker_infos(self) -> list[WorkerInfo]:
        return [w.info() for w in sorted(self.workers.values(), key=lambda w: w.id)]

    def _main_info(self) -> MainProcessInfo:
        return MainProcessInfo(pid=os.getpid(), version=__version__, started_at=self.started_at)

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
        return _ok(
            f"worker {worker_id} (version {handle.version}) replaced by worker {new.id} "
            f"(version {new.version}, pid {new.pid})",
            content=WorkersContent(workers=[new.info()]),
        )

    async def upgrade_all_workers(self) -> list[Response]:
        """Replace every running worker by a new one, all at once (the new ones start side by
        side; each old one finishes its requests)."""
        running = self.running_workers()
        return list(await asyncio.gather(*(self.upgrade_worker(w.id) for w in running)))

    async def upgrade_main(
        self,
        answer: tuple[str, asyncio.StreamWriter, Peer | None] | None = None,
        *,
        then_workers: bool = False,
    ) -> Response:
        """Re-execute this process with the installed code (see :mod:`.upgrade`).

        Returns only when that did not happen, with the reason (the old code goes on): when
        it works, the new main process answers the client that asked (``answer``: its request
        id, connection and peer), and with ``then_workers`` upgrades every worker next.
        """
        if self.stopping:
            return _fail("the daemon is stopping")
        if self.commands.server is None or self._switching is not None:
            return _fail("the command socket is not served by this process")
        reason = await self._switch(answer, then_workers)
        return _fail(
            f"the main process was not upgraded: {reason}; it goes on with version {__version__}"
        )

    async def _switch(
        self,
        answer: tuple[str, asyncio.StreamWriter, Peer | None] | None,
        then_workers: bool,
    ) -> str:
        """Hand everything over to the new code and exec it; the reason when it did not."""
        from .upgrade import (
            UpgradeRefused,
            check_new_code,
            exec_new_main,
            remove_upgrade_file,
            update_upgrade_file,
            write_upgrade_file,
        )

        self._switching = self.loop.create_future()
        command_fd = os.dup(self.commands.listening_socket.fileno())  # keeps it alive
        self.commands.close()  # new clients wait in the kernel backlog for the new code
        for writer in self._clients:
            _reading(writer, False)
        path: Path | None = None
        descriptors: list[int] = []
        try:
            await self._quiesce(1 if answer is not None else 0)
            async with self.lock:  # no change starts any more
                settings = {"config": self.config.model_dump(mode="json")}
                path = write_upgrade_file(settings, lambda p: write_state_file(self.state, p))
                version = await check_new_code(path)
                # From here to the exec nothing waits: what is handed over (workers that are
                # still there, connections still open) is what exists when the code changes.
                clients, descriptors = self._client_handovers(answer)
                data = self._handover_data(command_fd, clients, then_workers)
                update_upgrade_file(path, data)
                log.info("re-executing the main process: version %s -> %s", __version__, version)
                reloading(f"upgrading the main process to version {version}")
                for handler in logging.getLogger("sozu").handlers:
                    handler.flush()
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                kept = [
                    command_fd,
                    *data["sockets"].values(),
                    *(worker["fd"] for worker in data["workers"]),
                    *descriptors,
                ]
                exec_new_main(path, kept)
                reason = "the new code could not be started"
        except UpgradeRefused as refusal:
            reason = str(refusal)
        except OSError as error:
            reason = f"the new code could not be started: {error.strerror or error}"
        log.error("the main process upgrade did not happen: %s; going on", reason)
        if path is not None:
            remove_upgrade_file(path)
        for fd in descriptors:
            os.close(fd)
        # the same listening socket again: clients waiting in its backlog are served
        await self.commands.adopt(socket.socket(fileno=command_fd))
        for writer in self._clients:
            _reading(writer, True)
        switching, self._switching = self._switching, None
        switching.set_result(None)  # parked connections go on with their lines
        return reason

    async def _quiesce(self, own: int) -> None:
        """Let the requests in flight (``own`` of them: the upgrade's) finish and their answers
        be sent, for a few seconds at most."""
        deadline = self.loop.time() + SWITCH_QUIESCE
        while self._inflight > own and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        while self.loop.time() < deadline and any(
            w.transport.get_write_buffer_size() for w in self._clients
        ):
            await asyncio.sleep(0.01)

    def _client_handovers(
        self, answer: tuple[str, asyncio.StreamWriter, Peer | None] | None
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """What the new code needs of each command connection: a duplicate of its socket, the
        bytes it received and did not read (a parked line first), its subscription, and for
        the one that asked, the answer it waits for. A connection that cannot be handed over
        whole (a request still being served, unsent bytes) is closed: a clean end of stream."""
        asker = answer[1] if answer is not None else None
        clients: list[dict[str, Any]] = []
        descriptors: list[int] = []
        for writer, reader in list(self._clients.items()):
            busy = writer in self._busy and writer is not asker
            sock = writer.get_extra_info("socket")
            if busy or sock is None or writer.transport.get_write_buffer_size():
                writer.close()
                continue
            fd = os.dup(sock.fileno())
            descriptors.append(fd)
            unread = self._parked.get(writer, b"") + unread_bytes(reader)
            record: dict[str, Any] = {
                "fd": fd,
                "unread": unread.hex(),
                "subscriber": self.subscribers.get(writer),
            }
            if answer is not None and writer is asker:
                record["answer"] = {
                    "id": answer[0],
                    "version": __version__,
                    "started_at": self.started_at.isoformat(),
                }
            clients.append(record)
        return clients, descriptors

    def _handover_data(
        self, command_fd: int, clients: list[dict[str, Any]], then_workers: bool
    ) -> dict[str, Any]:
        # a worker whose channel closed (it is leaving) is not taken over: it ends on its own
        workers = [
            w
            for w in self.workers.values()
            if w.alive and w.channel is not None and not w.channel.closed
        ]
        return {
            "config": self.config.model_dump(mode="json"),
            "version": self.state.version,
            "next_worker_id": next(self._worker_ids),
            "workers": [
                {
                    "id": w.id,
                    "pid": w.pid,
                    "fd": w.channel.sock.fileno(),  # type: ignore[union-attr]
                    "run_state": w.run_state.value,
                    "version": w.version,
                    "started_at": w.started_at.isoformat() if w.started_at else None,
                }
                for w in workers
            ],
            "sockets": {address: sock.fileno() for address, sock in self.sockets.items()},
            "command_fd": command_fd,
            "clients": clients,
            "then_workers": then_workers,
        }

    def _upgraded_answer(self, asked: dict[str, Any]) -> Response:
        """The answer to ``upgrade_main``, given by the new code once it serves."""
        before = asked.get("version", "?")
        started = dt.datetime.fromisoformat(asked["started_at"]) if "started_at" in asked else None
        was = f" (started {started.isoformat(timespec='seconds')})" if started else ""
        return Response(
            id=asked["id"],
            status=ResponseStatus.OK,
            message=f"the main process (pid {os.getpid()}) was upgraded from version "
            f"{before}{was} to version {__version__} (started "
            f"{self.started_at.isoformat(timespec='seconds')})",
            content=WorkersContent(workers=self._worker_infos(), main=self._main_info()),
        )


def _reading(writer: asyncio.StreamWriter, on: bool) -> None:
    """Resume or pause reading a command connection."""
    transport: Any = writer.transport
    if transport.is_closing():
        return
    if on:
        transport.resume_reading()
    else:
        transport.pause_reading()


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
