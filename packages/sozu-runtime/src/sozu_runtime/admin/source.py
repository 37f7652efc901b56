"""Where the admin endpoint gets its data: the main process's own execution of queries.

:class:`MainProcess` is all the endpoint knows of the main process: it executes queries (which
change nothing: the type admits no other request) and a ``status`` with a timeout of its own.
:class:`Questions` keeps the workers' cost of the endpoint bounded: a question asked while the
same one is being answered shares that answer (N concurrent scrapes cost one fan-out), and
at most :data:`MAX_QUESTIONS` different questions are answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from sozu_config import requests as rq
from sozu_config.responses import Response

__all__ = ["MAX_QUESTIONS", "MainProcess", "Questions"]

MAX_QUESTIONS: Final = 2
"""Different questions answered at once (each may be a fan-out to every worker)."""


class MainProcess(Protocol):
    """What the admin endpoint asks of the main process."""

    @property
    def stopping(self) -> bool:
        """Whether the daemon is stopping."""
        ...

    async def handle(self, request: rq.QueryRequests) -> Response:
        """The answer to a query, as the command socket would give it."""
        ...

    async def status(self, timeout: float) -> Response:
        """The answer to ``status``, each worker given ``timeout`` seconds to answer."""
        ...


class Questions:
    """The endpoint's questions to the main process, shared while they are answered."""

    def __init__(self, main: MainProcess) -> None:
        self._main = main
        self._gate = asyncio.Semaphore(MAX_QUESTIONS)
        self._pending: dict[str, asyncio.Task[Response]] = {}

    @property
    def stopping(self) -> bool:
        return self._main.stopping

    async def ask(self, request: rq.QueryRequests) -> Response:
        """The answer to the query ``request``."""
        return await self._shared(request.model_dump_json(), lambda: self._main.handle(request))

    async def status(self, timeout: float) -> Response:
        """The answer to ``status`` within ``timeout`` seconds per worker."""
        return await self._shared(f"status {timeout}", lambda: self._main.status(timeout))

    async def close(self) -> None:
        """Drop the questions still being answered."""
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _shared(self, key: str, ask: Callable[[], Awaitable[Response]]) -> Response:
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._gated(key, ask))
            self._pending[key] = task
        # one asker going away (its client left) does not cancel the others' answer
        return await asyncio.shield(task)

    async def _gated(self, key: str, ask: Callable[[], Awaitable[Response]]) -> Response:
        try:
            async with self._gate:
                return await ask()
        finally:
            self._pending.pop(key, None)
