"""Reading the PROXY protocol header that starts every connection of an ``expect_proxy``
listener, then handing the connection to the real protocol (HTTP, HTTPS or TCP).

The header is read at the socket level, before any asyncio transport exists: bytes are
*peeked*, and only the header's own bytes are consumed, so whatever follows it in the same
packet (a TLS ClientHello, an HTTP request) stays in the socket for the real protocol — TLS
included. The header's source address then replaces the peer address (forwarding headers,
logs); a LOCAL header (health checks) keeps the real peer. A missing or malformed header closes
the connection; so does a header not complete within the listener's ``request_timeout``; a
connection closed before any byte is closed silently (the health-check pattern).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from .proxy_protocol import MAX_HEADER_LENGTH, ProxyHeader, ProxyProtocolError, parse

if TYPE_CHECKING:
    from .listeners import Listener

log = logging.getLogger("sozu.worker")

__all__ = ["PendingConnection"]


class PendingConnection:
    """An accepted connection whose PROXY header is not read yet."""

    __slots__ = ("buffer", "closed", "deadline", "listener", "sock")

    def __init__(self, listener: Listener, sock: socket.socket) -> None:
        self.listener = listener
        self.sock = sock
        self.buffer = b""
        self.closed = False
        proxy = listener.proxy
        self.deadline = proxy.loop.time() + listener.request_timeout
        proxy.sessions.add(self)
        proxy.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self.sock
        try:
            peeked = sock.recv(MAX_HEADER_LENGTH - len(self.buffer), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not peeked:
            self.close()  # closed before a whole header: a health check, or a broken client
            return
        data = self.buffer + peeked
        try:
            parsed = parse(data)
        except ProxyProtocolError as error:
            log.debug("closing a connection with an invalid PROXY header: %s", error)
            self.listener.proxy.metrics.frontend_parse_errors += 1
            self.close()
            return
        try:
            if parsed is None:
                # every byte seen so far belongs to the header: take them and wait for more
                sock.recv(len(peeked))
                self.buffer = data
                if len(data) >= MAX_HEADER_LENGTH:
                    self.close()
                return
            header, consumed = parsed
            sock.recv(consumed - len(self.buffer))  # exactly the rest of the header
        except OSError:
            self.close()
            return
        self._detach()
        self.listener.proxy.loop.create_task(self.listener.adopt(sock, header))

    def _detach(self) -> None:
        proxy = self.listener.proxy
        proxy.sessions.discard(self)
        with contextlib.suppress(Exception):
            proxy.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._detach()
            self.sock.close()

    # the sweeper's and the soft stop's interface
    def check_deadline(self, now: float) -> None:
        self.close()

    def soft_stop(self) -> None:
        self.close()

    def abort(self) -> None:
        self.close()

    @property
    def transport(self) -> Any:  # a hard stop aborts every session through its transport
        return self


def apply_header(protocol: Any, header: ProxyHeader) -> None:
    """Give the real protocol what the header says of the client."""
    if header.command == "proxy" and header.source is not None:
        protocol.peer_ip, protocol.peer_port = header.source
    protocol.proxy_header = header
