"""Event subscribers of the main process, over real unix stream connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from sozu_config.protocol import decode_response
from sozu_config.responses import Event, EventContent, EventKind, Response, ResponseStatus
from sozu_runtime.main.events import Subscribers


async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, socket.socket]:
    """A writer on the daemon's side, and the client's end of the connection."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    theirs.setblocking(False)
    return reader, writer, theirs


async def answers(client: socket.socket, count: int) -> list[Response]:
    loop = asyncio.get_running_loop()
    data = b""
    while data.count(b"\n") < count:
        data += await asyncio.wait_for(loop.sock_recv(client, 65536), 5.0)
    return [decode_response(line) for line in data.splitlines()]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_a_subscriber_gets_every_event_with_its_origin() -> None:
    async def test() -> None:
        hub = Subscribers(asyncio.get_running_loop())
        _, writer, client = await connection()
        hub.subscribe(writer, "r1")
        assert hub.subscription(writer) == "r1"
        hub.emit(Event(kind=EventKind.STATE_SAVED, message="/tmp/state"))
        hub.emit(Event(kind=EventKind.BACKEND_DOWN, worker_id=3, message="refused"))
        first, saved, down = await answers(client, 3)
        assert (first.id, first.status, first.message) == (
            "r1",
            ResponseStatus.PROCESSING,
            "subscribed to events",
        )
        assert saved.message == "main" and down.message == "3"
        for response in (saved, down):
            assert response.id == "r1" and response.status is ResponseStatus.PROCESSING
            assert isinstance(response.content, EventContent)
            assert response.content.event.time is not None  # stamped when emitted
        hub.unsubscribe(writer)
        assert hub.subscription(writer) is None
        writer.close()
        client.close()

    run(test)


def test_a_closed_subscriber_is_dropped() -> None:
    async def test() -> None:
        hub = Subscribers(asyncio.get_running_loop())
        _, writer, client = await connection()
        hub.restore(writer, "r2")
        writer.close()
        hub.emit(Event(kind=EventKind.STATE_SAVED))
        assert hub.subscription(writer) is None
        client.close()

    run(test)


def test_new_subscribers_are_told_of_a_replayed_event() -> None:
    async def test() -> None:
        hub = Subscribers(asyncio.get_running_loop())
        upgraded = Event(kind=EventKind.MAIN_UPGRADED, message="pid 1")
        hub.replay(upgraded)
        _, writer, client = await connection()
        hub.subscribe(writer, "r3")
        _, replayed = await answers(client, 2)
        assert isinstance(replayed.content, EventContent)
        assert replayed.content.event.kind is EventKind.MAIN_UPGRADED
        writer.close()
        client.close()

    run(test)
