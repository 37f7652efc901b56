"""The main process's handle on one worker: the process, its channel, its pending requests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from pydantic import ValidationError

from sozu_config.protocol import decode_response
from sozu_config.requests import Request
from sozu_config.responses import (
    ErrorKind,
    Event,
    EventContent,
    Response,
    RunState,
    WorkerInfo,
)

from ..channel import Channel
from ..messages import EVENT_ID, HEALTH_ID, Control, WorkerMessage, encode_message
from .replies import fail

log = logging.getLogger("sozu.main")

__all__ = ["WorkerHandle"]

_ids = itertools.count()


class WorkerHandle:
    """A worker process seen from the main process."""

    def __init__(
        self,
        worker_id: int,
        on_event: Callable[[WorkerHandle, Event], None],
        on_exit: Callable[[WorkerHandle], None],
        on_observation: Callable[[WorkerHandle, Event], None] = lambda handle, event: None,
    ) -> None:
        self.id = worker_id
        self.pid = 0
        self.run_state = RunState.STARTING
        self.channel: Channel | None = None
        self.returncode: int | None = None
        self._pidfd = -1
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._on_event = on_event
        self._on_observation = on_observation
        self._on_exit = on_exit
        self._exited = False
        self.expected_exit = False
        """Set when the worker is told to stop (soft stop, upgrade): its exit is no crash."""
        self.version: str | None = None
        self.started_at: dt.datetime | None = None
        """The version and start of the code the worker runs, as it said when set up."""

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            pid=self.pid,
            run_state=self.run_state,
            version=self.version,
            started_at=self.started_at,
        )

    async def spawn(self) -> None:
        """Start the process with one end of a fresh socket pair as its channel."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sozu_runtime.worker",
                    "--id",
                    str(self.id),
                    "--fd",
                    str(child.fileno()),
                ],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        self._watch(process.pid, parent)

    def adopt(self, pid: int, channel_fd: int) -> None:
        """Take over a running worker (after the main process re-executed itself)."""
        self._watch(pid, socket.socket(fileno=channel_fd))

    def _watch(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self.channel = Channel(channel, self._on_line, self._on_close)
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._pidfd = -1  # the channel closing tells that the worker is gone
        else:
            loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        """The process exited (its pidfd is readable): collect it."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        code = -1  # not our child any more (adopted after a re-exec): status unknown
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(self.pid, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status)
        self.returncode = code
        if not self.expected_exit:
            log.warning("worker %d (pid %d) exited with code %s", self.id, self.pid, code)
        if self.channel is not None:
            self.channel.close()

    async def wait(self, timeout: float) -> bool:
        """Wait until the process is gone; False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.running:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    @property
    def running(self) -> bool:
        if self._pidfd >= 0:
            return True
        if self.returncode is not None or self.pid == 0:
            return False
        try:  # no pidfd on this system: ask the kernel
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _on_line(self, line: bytes) -> None:
        try:
            response = decode_response(line)
        except (ValueError, ValidationError) as error:
            log.error("worker %d sent an invalid answer: %s", self.id, error)
            return
        if response.id in (EVENT_ID, HEALTH_ID):
            if isinstance(response.content, EventContent):
                report = self._on_event if response.id == EVENT_ID else self._on_observation
                report(self, response.content.event)
            return
        future = self._pending.get(response.id)
        if future is None:
            return
        if response.final:
            del self._pending[response.id]
            if not future.done():
                future.set_result(response)

    def _on_close(self) -> None:
        if self._exited:
            return
        self._exited = True
        self.run_state = RunState.STOPPED
        for future in self._pending.values():
            if not future.done():
                future.set_result(fail("the worker exited", kind=ErrorKind.UNAVAILABLE))
        self._pending.clear()
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # a worker without its channel is useless
        self._on_exit(self)

    @property
    def alive(self) -> bool:
        return not self._exited and self.channel is not None and not self.channel.closed

    def send(
        self,
        message_id: str | None = None,
        *,
        request: Request | None = None,
        control: Control | None = None,
        fds: list[int] | None = None,
    ) -> asyncio.Future[Response]:
        """Send a message; the future resolves with the worker's final answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        if not self.alive:
            future.set_result(fail("the worker is not running", kind=ErrorKind.UNAVAILABLE))
            return future
        message_id = message_id or f"M{next(_ids)}"
        message = WorkerMessage.model_construct(
            id=message_id, request=request, control=control, fds=len(fds or ())
        )
        self._pending[message_id] = future
        assert self.channel is not None
        try:
            self.channel.send(encode_message(message), fds or [])
        except ConnectionError:
            del self._pending[message_id]
            future.set_result(fail("the worker channel is closed", kind=ErrorKind.UNAVAILABLE))
        return future

    def kill(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
