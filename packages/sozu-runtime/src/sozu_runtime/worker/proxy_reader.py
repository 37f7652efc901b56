"""Reading the PROXY protocol header that starts every connection of an ``expect_proxy``
listener, then handing the connection to the real protocol (HTTP, HTTPS or TCP).

The header's source address replaces the peer address (forwarding headers, logs); a LOCAL
header (health checks) keeps the real peer. A missing or malformed header closes the
connection; so does a header not complete within the listener's ``request_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .proxy_protocol import ProxyProtocolError, parse

if TYPE_CHECKING:
    from .listeners import Listener

log = logging.getLogger("sozu.worker")

__all__ = ["ProxyHeaderReader"]


class ProxyHeaderReader(asyncio.Protocol):
    __slots__ = ("buffer", "deadline", "inner", "listener", "transport")

    def __init__(self, listener: Listener, inner: Any) -> None:
        self.listener = listener
        self.inner = inner
        self.buffer = b""
        self.transport: Any = None
        self.deadline = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        proxy = self.listener.proxy
        proxy.sessions.add(self)
        self.deadline = proxy.loop.time() + self.listener.request_timeout

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            parsed = parse(self.buffer)
        except ProxyProtocolError as error:
            log.debug("closing a connection with an invalid PROXY header: %s", error)
            self.listener.proxy.metrics.frontend_parse_errors += 1
            self.transport.abort()
            return
        if parsed is None:
            return
        header, consumed = parsed
        rest = self.buffer[consumed:]
        self.buffer = b""
        self.listener.proxy.sessions.discard(self)
        inner = self.inner
        if header.command == "proxy" and header.source is not None:
            inner.peer_ip, inner.peer_port = header.source
        inner.proxy_header = header
        context = self.listener.server_tls_after_proxy()
        if context is not None:
            self.listener.proxy.loop.create_task(self._start_tls(context, rest))
            return
        self.transport.set_protocol(inner)
        inner.connection_made(self.transport)
        if rest:
            inner.data_received(rest)

    async def _start_tls(self, context: Any, rest: bytes) -> None:
        loop = self.listener.proxy.loop
        transport = self.transport
        if rest:
            # bytes of the ClientHello already read: hand them back through a fresh protocol
            transport.pause_reading()
        try:
            tls_transport = await loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self.listener.request_timeout,
            )
        except Exception as error:  # any handshake failure ends this connection only
            log.debug("TLS handshake after a PROXY header failed: %s", error)
            transport.abort()
            return
        inner = self.inner
        if tls_transport is None:
            transport.abort()
            return
        tls_transport.set_protocol(inner)
        inner.connection_made(tls_transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.proxy.sessions.discard(self)

    def check_deadline(self, now: float) -> None:
        self.listener.proxy.sessions.discard(self)
        self.transport.abort()

    def soft_stop(self) -> None:
        self.transport.close()
