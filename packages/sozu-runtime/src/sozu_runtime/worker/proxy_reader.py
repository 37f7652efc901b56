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

from .accepting import Handshake, Listener
from .proxy_protocol import MAX_HEADER_LENGTH, ProxyProtocolError, parse

log = logging.getLogger("sozu.worker")

__all__ = ["PendingConnection"]


class PendingConnection:
    """An accepted connection whose PROXY header is not read yet (an open connection for the
    worker's limits and sweeper)."""

    __slots__ = ("buffer", "closed", "deadline", "listener", "sock")

    def __init__(self, listener: Listener, sock: socket.socket) -> None:
        self.listener = listener
        self.sock = sock
        self.buffer = b""
        self.closed = False
        proxy = listener.proxy
        self.deadline = proxy.loop.time() + listener.request_timeout

    def start(self) -> None:
        proxy = self.listener.proxy
        if not proxy.admission.opened(self):
            self.closed = True
            self.sock.close()  # accepted past the limit
            return
        proxy.loop.add_reader(self.sock.fileno(), self._readable)

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
            self.listener.proxy.metrics.proxy_protocol_errors += 1
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
        self.closed = True
        self._stop_reading()
        Handshake(self.listener, sock, header).start(previous=self)

    def _stop_reading(self) -> None:
        with contextlib.suppress(Exception):
            self.listener.proxy.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_reading()
            self.sock.close()
            self.listener.proxy.admission.closed(self)

    # the sweeper's and the soft stop's interface
    def check_deadline(self, now: float) -> None:
        self.close()

    def soft_stop(self) -> None:
        """Let the header come (or the deadline pass): the connection is then served once."""

    def abort(self) -> None:
        self.close()

    @property
    def transport(self) -> PendingConnection:  # a hard stop aborts connections through it
        return self
