"""What the backends answer under client load (for :class:`~support.backends.HttpBackend`).

:func:`named_handler` answers the backend's name, so that a test can tell which backend served
a request; a few targets stand for the kinds of exchange a change must not disturb:

* ``/slow/<seconds>``: the name, after that delay (a request in flight);
* ``/drip/<seconds>``: a chunked answer of :data:`DRIP_CHUNKS` chunks, each the name, spread
  over that many seconds (an answer in progress);
* the *stream target* (``/stream`` unless told otherwise), when a :class:`StreamSpec` is
  given: a large answer produced slowly, every byte of it checkable by the client.

:func:`load_handler` is the same with a stream always on; :func:`load_backends` starts the two
backends ``one`` and ``two`` that the upgrade tests balance between.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from .backends import Answer, Handler, HttpBackend, Received

__all__ = [
    "DRIP_CHUNKS",
    "DRIP_PREFIX",
    "SLOW_PREFIX",
    "STREAM_TARGET",
    "StreamSpec",
    "load_backends",
    "load_handler",
    "named_handler",
]

SLOW_PREFIX = "/slow/"
"""Targets ``/slow/<seconds>`` are answered after that delay."""
DRIP_PREFIX = "/drip/"
"""Targets ``/drip/<seconds>`` get a chunked answer spread over that many seconds."""
DRIP_CHUNKS = 10
"""Chunks of a ``/drip/`` answer: its body is the backend's name that many times."""
STREAM_TARGET = "/stream"
"""Where the slow stream of a :class:`StreamSpec` is served unless told otherwise."""


@dataclass(frozen=True)
class StreamSpec:
    """A large answer produced slowly: ``size`` bytes in chunks of ``chunk`` bytes, spread
    evenly over ``seconds``. The content is deterministic (chunk ``i`` repeats the byte
    ``i % 251``), so the client checks every byte through :attr:`sha256`."""

    size: int = 4 * 1024 * 1024
    seconds: float = 8.0
    chunk: int = 64 * 1024

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk)

    def chunk_bytes(self, index: int) -> bytes:
        """The content of chunk ``index`` (the last one may be shorter)."""
        length = min(self.chunk, self.size - index * self.chunk)
        return bytes([index % 251]) * length

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for index in range(self.chunks):
            digest.update(self.chunk_bytes(index))
        return digest.hexdigest()

    def body(self) -> Callable[[], AsyncIterator[bytes]]:
        """The answer body for :class:`~support.backends.Answer` (chunked, paced)."""
        pause = self.seconds / self.chunks

        async def produce() -> AsyncIterator[bytes]:
            for index in range(self.chunks):
                yield self.chunk_bytes(index)
                await asyncio.sleep(pause)

        return produce


def _drip(body: bytes, seconds: float) -> Callable[[], AsyncIterator[bytes]]:
    pause = seconds / DRIP_CHUNKS

    async def drip() -> AsyncIterator[bytes]:
        for _ in range(DRIP_CHUNKS):
            yield body
            await asyncio.sleep(pause)

    return drip


def named_handler(
    name: str, *, stream: StreamSpec | None = None, stream_target: str = STREAM_TARGET
) -> Handler:
    """Answer ``name`` as the body; ``/slow/<seconds>`` after that many seconds;
    ``/drip/<seconds>`` as :data:`DRIP_CHUNKS` chunks spread over that many seconds; and, when
    ``stream`` is given, ``stream_target`` with that slow stream."""
    body = name.encode()

    def handle(request: Received) -> Answer:
        path = request.target.split("?", 1)[0]
        if stream is not None and path == stream_target:
            return Answer(body=stream.body())
        if path.startswith(SLOW_PREFIX):
            return Answer(body=body, delay=float(path[len(SLOW_PREFIX) :]))
        if path.startswith(DRIP_PREFIX):
            return Answer(body=_drip(body, float(path[len(DRIP_PREFIX) :])))
        return Answer(body=body)

    return handle


def load_handler(
    name: str, *, stream_target: str = STREAM_TARGET, stream: StreamSpec | None = None
) -> Handler:
    """:func:`named_handler` with the slow stream on: ``stream`` (default :class:`StreamSpec`)
    at ``stream_target``."""
    return named_handler(name, stream=stream or StreamSpec(), stream_target=stream_target)


@contextlib.contextmanager
def load_backends(stream: StreamSpec) -> Iterator[tuple[HttpBackend, HttpBackend]]:
    """Two backends, ``one`` and ``two``, answering :func:`load_handler` with ``stream``."""
    with (
        HttpBackend("one", load_handler("one", stream=stream)) as one,
        HttpBackend("two", load_handler("two", stream=stream)) as two,
    ):
        yield one, two
