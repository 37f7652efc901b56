"""The main process's handle on one worker: the process, its channel, its pending requests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from pydantic import ValidationError

from sozu_config.protocol import decode_response
from sozu_config.responses import Event, EventContent, Response, ResponseStatus, RunState

from ..channel import Channel
from ..messages import EVENT_ID, WorkerMessage, encode_message

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
    ) -> None:
        self.id = worker_id
        self.pid = 0
        self.run_state = RunState.RUNNING
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._on_event = on_event
        self._on_exit = on_exit
        self._exited = False
        self.expected_exit = False
        """Set when the worker is told to stop (soft stop, upgrade): its exit is no crash."""

    async def spawn(self) -> None:
        """Start the process with one end of a fresh socket pair as its channel."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sozu_runtime.worker",
                "--id",
                str(self.id),
                "--fd",
                str(child.fileno()),
                pass_fds=[child.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=False,
            )
        finally:
            child.close()
        self.pid = self.process.pid
        self.channel = Channel(parent, self._on_line, self._on_close)
        asyncio.get_running_loop().create_task(self._wait())

    async def _wait(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        if not self.expected_exit:
            log.warning("worker %d (pid %d) exited with code %s", self.id, self.pid, code)
        if self.channel is not None:
            self.channel.close()

    def _on_line(self, line: bytes) -> None:
        try:
            response = decode_response(line)
        except (ValueError, ValidationError) as error:
            log.error("worker %d sent an invalid answer: %s", self.id, error)
            return
        if response.id == EVENT_ID:
            if isinstance(response.content, EventContent):
                self._on_event(self, response.content.event)
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
                future.set_result(
                    Response(id="", status=ResponseStatus.FAILURE, message="the worker exited")
                )
        self._pending.clear()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
        self._on_exit(self)

    @property
    def alive(self) -> bool:
        return not self._exited and self.channel is not None and not self.channel.closed

    def send(self, message_id: str | None = None, *, request: object = None, control: object = None, fds: list[int] | None = None) -> asyncio.Future[Response]:
        """Send a message; the future resolves with the worker's final answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        if not self.alive:
            future.set_result(Response(id="", status=ResponseStatus.FAILURE, message="the worker is not running"))
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
            future.set_result(Response(id="", status=ResponseStatus.FAILURE, message="the worker channel is closed"))
        return future

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
