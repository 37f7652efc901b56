"""Serving the command connections: who may send, reading request lines, answering them,
event subscriptions, and what a main-process upgrade needs of each connection.

The transport and its limits (size of a message, bytes held, number of connections) are
:mod:`.command_socket`'s; this module serves each connection it accepts. A connection is one
task: it reads one line, answers it (``processing`` answers may come first), then reads the
next. During a main-process upgrade the connections stop reading; a line read meanwhile is
parked and goes to the new code with the bytes not read yet — or, when the upgrade does not
happen, is served here after all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from sozu_config import requests as rq
from sozu_config.config import Config
from sozu_config.protocol import ProtocolError, decode_request, encode_response
from sozu_config.responses import ErrorKind, Response

from .audit import FanOut, fan_out
from .command_socket import CommandBudgetExceeded, Peer, unread_bytes
from .events import Subscribers
from .replies import fail

log = logging.getLogger("sozu.main")

__all__ = ["Asker", "CommandConnections", "CommandService"]

PEER_REFUSAL_READ = 5.0  # seconds a refused peer has to send the line its refusal answers


@dataclass(frozen=True, slots=True)
class Asker:
    """The client waiting for an answer: its request id, its connection and its peer."""

    request_id: str
    writer: asyncio.StreamWriter
    peer: Peer | None


class CommandService(Protocol):
    """What the command connections need of the daemon."""

    async def handle(self, request: rq.Request) -> Response:
        """The answer to ``request``."""
        ...

    async def upgrade_main(
        self, asker: Asker | None = None, *, then_workers: bool = False
    ) -> Response:
        """Upgrade the main process; returns only when that did not happen."""
        ...

    def upgraded_answer(self, asked: dict[str, Any]) -> Response:
        """The answer the new code gives to the client that asked for the upgrade."""
        ...

    def audit_record(
        self, peer: Peer | None, request: rq.Request, response: Response, tally: FanOut
    ) -> None:
        """Record an answered command in the audit logs."""
        ...

    def stop_later(self, *, hard: bool) -> None:
        """Stop the daemon once the current answer is sent."""
        ...


class CommandConnections:
    """The open command connections and what is under way on them."""

    def __init__(self, config: Config, subscribers: Subscribers, service: CommandService) -> None:
        self.config = config
        self.subscribers = subscribers
        self._service = service
        # every command connection: its reader, for the hand-over of an upgrade
        self._clients: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        self._busy: set[asyncio.StreamWriter] = set()  # serving a request
        self._inflight = 0
        # during a main upgrade: the outcome the command connections wait for (None: serving)
        self.switching: asyncio.Future[None] | None = None
        self._parked: dict[asyncio.StreamWriter, bytes] = {}  # lines read during the switch

    def _allowed(self, peer: Peer | None) -> bool:
        """``command_allowed_uids``: only those users may send requests (SO_PEERCRED)."""
        allowed = self.config.command_allowed_uids
        if allowed is None:
            return True
        return peer is not None and peer.uid in allowed

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handed_over: dict[str, Any] | None = None,
    ) -> None:
        """Serve one connection until it closes (``handed_over``: what the previous main
        process handed over of it)."""
        peer = Peer.of(writer.get_extra_info("socket"))
        if not self._allowed(peer):
            await _refuse_peer(reader, writer)
            return
        self._clients[writer] = reader
        if handed_over is not None:
            self._resume(writer, handed_over, peer)
        try:
            while (line := await self._next_line(reader, writer)) is not None:
                if not line.strip():
                    continue
                try:
                    message = decode_request(line)
                except ProtocolError as error:
                    writer.write(
                        encode_response(
                            fail(str(error), kind=error.kind, request_id=error.request_id or "")
                        )
                    )
                    await writer.drain()
                    continue
                await self._serve_request(message.id, message.request, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.pop(writer, None)
            self.subscribers.unsubscribe(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _next_line(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The next request line; None when the connection ends (the client left, possibly
        in the middle of a line, or sent more than it may)."""
        try:
            line = await reader.readline()
        except CommandBudgetExceeded as refused:
            writer.write(encode_response(fail(str(refused), kind=ErrorKind.LIMIT)))
            await writer.drain()
            return None
        except ValueError:  # a line over the size limit
            limit = self.config.max_command_buffer_size
            message = f"message too large (max_command_buffer_size is {limit} bytes)"
            writer.write(encode_response(fail(message, kind=ErrorKind.LIMIT)))
            return None
        if not line or not line.endswith(b"\n"):
            return None
        if self.switching is not None:
            # a main upgrade is under way: the line goes to the new code, unless the upgrade
            # does not happen (then it is served here after all)
            self._parked[writer] = line
            await asyncio.shield(self.switching)
            self._parked.pop(writer, None)
        return line

    def _resume(
        self, writer: asyncio.StreamWriter, handed_over: dict[str, Any], peer: Peer | None
    ) -> None:
        """A connection the previous main process handed over: its subscription goes on, and
        the client that asked for the upgrade gets the answer (and the audit its record)."""
        subscriber = handed_over.get("subscriber")
        if subscriber is not None:
            self.subscribers.restore(writer, subscriber)
        answer = handed_over.get("answer")
        if answer is not None:
            response = self._service.upgraded_answer(answer)
            self._service.audit_record(peer, rq.UpgradeMain(), response, FanOut())
            writer.write(encode_response(response))

    async def _serve_request(
        self,
        request_id: str,
        request: rq.Request,
        writer: asyncio.StreamWriter,
        peer: Peer | None = None,
    ) -> None:
        if isinstance(request, rq.SubscribeEvents):
            self.subscribers.subscribe(writer, request_id)
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
                    response = await self._service.upgrade_main(Asker(request_id, writer, peer))
                else:
                    response = await self._service.handle(request)
            except Exception as error:  # a bug must not take the daemon down
                log.exception("request %s failed", request.type)
                response = fail(f"internal error: {error}", kind=ErrorKind.INTERNAL)
            self._service.audit_record(peer, request, response, tally)
            response = response.model_copy(update={"id": request_id})
            writer.write(encode_response(response))
            await writer.drain()
        finally:
            self._inflight -= 1
            self._busy.discard(writer)
        if isinstance(request, (rq.SoftStop, rq.HardStop)):
            self._service.stop_later(hard=isinstance(request, rq.HardStop))

    # ------------------------------------------------------------------ main-process upgrade

    def begin_switch(self) -> asyncio.Future[None]:
        """Stop reading every connection: what arrives now waits for the new code."""
        self.switching = asyncio.get_running_loop().create_future()
        for writer in self._clients:
            _reading(writer, False)
        return self.switching

    def end_switch(self) -> None:
        """The switch did not happen: read again, and serve the parked lines here."""
        for writer in self._clients:
            _reading(writer, True)
        switching, self.switching = self.switching, None
        if switching is not None:
            switching.set_result(None)

    async def quiesce(self, own: int, deadline: float) -> None:
        """Let the requests in flight (``own`` of them: the upgrade's) finish and their
        answers be sent, until the loop time ``deadline`` at most."""
        loop = asyncio.get_running_loop()
        while self._inflight > own and loop.time() < deadline:
            await asyncio.sleep(0.01)
        while loop.time() < deadline and any(
            w.transport.get_write_buffer_size() for w in self._clients
        ):
            await asyncio.sleep(0.01)

    def handovers(
        self, asker: Asker | None, answer: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """What the new code needs of each command connection: a duplicate of its socket, the
        bytes it received and did not read (a parked line first), its subscription, and for
        the one that asked, what its answer needs (``answer`` and its request id). A
        connection that cannot be handed over whole (a request still being served, unsent
        bytes) is closed: a clean end of stream. Returns the records and the duplicates."""
        asking = asker.writer if asker is not None else None
        clients: list[dict[str, Any]] = []
        descriptors: list[int] = []
        for writer, reader in list(self._clients.items()):
            busy = writer in self._busy and writer is not asking
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
                "subscriber": self.subscribers.subscription(writer),
            }
            if asker is not None and writer is asking:
                record["answer"] = {"id": asker.request_id, **answer}
            clients.append(record)
        return clients, descriptors


async def _refuse_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer the first line of a user not in ``command_allowed_uids``, then disconnect."""
    with contextlib.suppress(Exception):
        line = await asyncio.wait_for(reader.readline(), PEER_REFUSAL_READ)
        request_id = ""
        with contextlib.suppress(ProtocolError):
            request_id = decode_request(line).id
        refusal = "unauthorized: your user id is not in command_allowed_uids"
        writer.write(
            encode_response(fail(refusal, kind=ErrorKind.UNAUTHORIZED, request_id=request_id))
        )
        await writer.drain()
    writer.close()


def _reading(writer: asyncio.StreamWriter, on: bool) -> None:
    """Resume or pause reading a command connection."""
    transport: Any = writer.transport
    if transport.is_closing():
        return
    if on:
        transport.resume_reading()
    else:
        transport.pause_reading()
