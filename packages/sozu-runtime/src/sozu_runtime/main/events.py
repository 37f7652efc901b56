"""Events of the daemon and the command connections subscribed to them.

An event is logged (backend up and down excepted) and written to every subscriber as a
``processing`` answer to its ``subscribe_events`` request. A subscriber that reads slower than
events come is dropped rather than letting the main process buffer without bound. After a
main-process upgrade, new subscribers are told of it for a while: a client whose subscription
ended with the switch learns why when it comes back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sozu_config.protocol import encode_response
from sozu_config.responses import Event, EventContent, EventKind, Response

from .replies import progress

log = logging.getLogger("sozu.main")

__all__ = ["MAX_SUBSCRIBER_BUFFER", "REPLAY_WINDOW", "Subscribers", "event_response"]

MAX_SUBSCRIBER_BUFFER = 4 * 1024 * 1024  # an events subscriber that reads slower is dropped
REPLAY_WINDOW = 30.0  # seconds after a main upgrade during which new subscribers are told of it

# events not logged here: the health monitor logs them, with their level
_QUIET = (EventKind.BACKEND_UP, EventKind.BACKEND_DOWN)


def event_response(request_id: str, event: Event) -> Response:
    """How ``event`` reaches the subscriber whose request was ``request_id``."""
    origin = str(event.worker_id) if event.worker_id is not None else "main"
    return progress(request_id, origin, content=EventContent(event=event))


class Subscribers:
    """The command connections subscribed to events, each with its request id."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._subscribers: dict[asyncio.StreamWriter, str] = {}
        self._replay: list[Event] = []  # events new subscribers get (main upgrade, for a while)
        self._replay_until = 0.0

    def emit(self, event: Event) -> None:
        """Log ``event`` and send it to every subscriber."""
        if event.time is None:
            event = event.model_copy(update={"time": dt.datetime.now(dt.UTC)})
        if event.kind not in _QUIET:
            log.info("event %s", event.describe())
        for writer, request_id in list(self._subscribers.items()):
            transport = writer.transport
            if transport.is_closing() or transport.get_write_buffer_size() > MAX_SUBSCRIBER_BUFFER:
                self._subscribers.pop(writer, None)
                writer.close()
                continue
            writer.write(encode_response(event_response(request_id, event)))

    def subscribe(self, writer: asyncio.StreamWriter, request_id: str) -> None:
        """Subscribe a connection: it is told so, then of the events to replay, if any."""
        self._subscribers[writer] = request_id
        writer.write(encode_response(progress(request_id, "subscribed to events")))
        if self._replay and self._loop.time() < self._replay_until:
            for event in self._replay:
                writer.write(encode_response(event_response(request_id, event)))

    def restore(self, writer: asyncio.StreamWriter, request_id: str) -> None:
        """Go on with a subscription the previous main process handed over."""
        self._subscribers[writer] = request_id

    def unsubscribe(self, writer: asyncio.StreamWriter) -> None:
        self._subscribers.pop(writer, None)

    def subscription(self, writer: asyncio.StreamWriter) -> str | None:
        """The request id of the connection's subscription, None when it has none."""
        return self._subscribers.get(writer)

    def replay(self, event: Event) -> None:
        """Tell ``event`` to every connection that subscribes in the next
        :data:`REPLAY_WINDOW` seconds."""
        self._replay_until = self._loop.time() + REPLAY_WINDOW
        self._replay = [event]
