"""Listeners in a worker: accepting on the sockets the main process hands over.

The main process owns the listening sockets (they survive any worker); a worker receives a
descriptor for each active listener. A plain HTTP or TCP listener is served with
``loop.create_server(sock=...)`` on a duplicate, so that it can stop accepting (backpressure at
``max_connections``, soft stop, deactivation) by closing its duplicate while connections wait
in the kernel backlog, and start again from the descriptor it keeps. TLS and ``expect_proxy``
listeners accept themselves (:mod:`.accepting`): their connections count before their
handshake or PROXY header is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sozu_config.addresses import split_address
from sozu_config.models import HttpListenerConfig, HttpsListenerConfig, TcpListenerConfig

from . import h1
from .accepting import Handshake, accept_batch
from .answers import Answers
from .router import Router
from .routes import ClusterRuntime, Route, hsts_line
from .services import ProxyServices

# What a listener makes for each connection: given the listener, the connection's protocol.
SessionClass = Callable[[Any], asyncio.Protocol]

if TYPE_CHECKING:
    from sozu_config.state import ConfigState

    from .tls import TlsRuntime

log = logging.getLogger("sozu.worker")

__all__ = ["HttpListener", "Listener", "SessionClass", "TcpListener"]

_CRLF = b"\r\n"
# Stands for "accepting" in Listener.server when the listener accepts through its own reader
# (expect_proxy) rather than an asyncio server.
_ACCEPTING: Any = object()


class Listener:
    """What HTTP, HTTPS and TCP listeners share: the socket, accepting, timeouts."""

    tls = False

    def __init__(self, proxy: ProxyServices, config: Any, session_class: SessionClass) -> None:
        self.proxy = proxy
        # the protocol of this listener's connections (given by the proxy, which knows them)
        self.session_class = session_class
        self.address: str = config.address
        self.sock: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self.active = False
        self._starting: asyncio.Task[None] | None = None
        self.reconfigure(config)

    def reconfigure(self, config: Any) -> None:
        self.config = config
        self.front_timeout = float(config.front_timeout)
        self.back_timeout = float(config.back_timeout)
        self.connect_timeout = float(config.connect_timeout)
        self.request_timeout = float(config.request_timeout)
        self.expect_proxy = config.expect_proxy
        public = config.public_address or config.address
        self.public_ip, self.public_port = split_address(public)

    # ------------------------------------------------------------------ accepting

    def protocol_factory(self) -> asyncio.Protocol:
        raise NotImplementedError

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of this listener's connections (None: plain)."""
        return None

    async def activate(self, sock: socket.socket) -> None:
        if self.sock is not None and self.sock is not sock:
            self.sock.close()
        self.sock = sock
        self.active = True
        await self._serve()

    async def _serve(self) -> None:
        if self.server is not None or self.sock is None or not self.active:
            return
        if self.expect_proxy or self.tls_context() is not None:
            # connections counted from accept() on (see accepting): PROXY header, TLS handshake
            self.sock.setblocking(False)
            self.proxy.loop.add_reader(self.sock.fileno(), self._accept_ready)
            self.server = _ACCEPTING
            return
        duplicate = socket.socket(fileno=os.dup(self.sock.fileno()))
        duplicate.setblocking(False)
        self.server = await self.proxy.loop.create_server(
            self.protocol_factory, sock=duplicate, backlog=1024
        )

    def _accept_ready(self) -> None:
        if self.sock is not None and self.server is not None:
            accept_batch(self, self.sock)

    def accepted(self, connection: socket.socket) -> None:
        """A connection accepted by :func:`.accepting.accept_batch`."""
        if self.expect_proxy:
            from .proxy_reader import PendingConnection

            PendingConnection(self, connection).start()
        else:
            Handshake(self, connection).start()

    def pause_accepting(self) -> None:
        """Stop accepting; connections wait in the kernel backlog (or go to another worker)."""
        server = self.server
        if server is None:
            return
        self.server = None
        if server is _ACCEPTING:
            if self.sock is not None:
                with contextlib.suppress(Exception):
                    self.proxy.loop.remove_reader(self.sock.fileno())
        else:
            server.close()

    def resume_accepting(self) -> None:
        if self.active and self.server is None:
            self._starting = self.proxy.loop.create_task(self._serve())

    async def deactivate(self) -> None:
        self.active = False
        self.pause_accepting()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class HttpListener(Listener):
    """An HTTP or HTTPS listener: router, answers, forwarding-header settings (and TLS)."""

    def __init__(
        self,
        proxy: ProxyServices,
        config: HttpListenerConfig | HttpsListenerConfig,
        session_class: SessionClass,
    ) -> None:
        self.router: Router[Route] = Router()
        # (Host, target, method) → route (or None): the lookups of the fast path, cleared
        # whenever a frontend of this listener is added or removed
        self.route_cache: dict[tuple[bytes, bytes, bytes], Route | None] = {}
        self.tls = isinstance(config, HttpsListenerConfig)
        self.tls_runtime: TlsRuntime | None = None
        super().__init__(proxy, config, session_class)

    def reconfigure(self, config: HttpListenerConfig | HttpsListenerConfig) -> None:
        super().reconfigure(config)
        proxy = self.proxy
        self.max_head = proxy.buffer_size
        self.sticky_name = config.sticky_name.encode()
        self.sticky_name_lower = self.sticky_name.lower()
        self.sozu_id_prefix = config.sozu_id_header.encode() + b": "
        self.elide_x_real_ip = config.elide_x_real_ip
        self.send_x_real_ip = config.send_x_real_ip
        self.strict_sni = bool(getattr(config, "strict_sni_binding", False))
        # Client fields that make the forwarded head a rebuilt one: the chains the proxy
        # extends, and the fields it replaces (X-Real-IP when elided; X-Forwarded-Proto and
        # -Port unless the client is a trusted proxy).
        self.trust_forwarded = config.trust_forwarded_headers
        self.rebuild_mask = h1.SEEN_X_FORWARDED_FOR | h1.SEEN_FORWARDED
        if self.elide_x_real_ip:
            self.rebuild_mask |= h1.SEEN_X_REAL_IP
        if not self.trust_forwarded:
            self.rebuild_mask |= h1.SEEN_ADDED
        self.proto = b"https" if self.tls else b"http"
        # Strict-Transport-Security of this listener's answers (HTTPS only), b"" when none
        hsts = getattr(config, "hsts", None)
        self.hsts_line = hsts_line(hsts)
        self.hsts_force = hsts is not None and hsts.force_replace_backend
        self._public_port = str(self.public_port).encode()
        self._by = _forwarded_node(self.public_ip)
        old = getattr(self, "answers", None)
        answers = Answers(config.answers, sozu_id_header=config.sozu_id_header)
        if old is not None:
            for cluster in proxy.clusters.values():
                if cluster.config.answers:
                    answers.set_cluster(cluster.cluster_id, cluster.config.answers)
        self.answers = answers
        if isinstance(config, HttpsListenerConfig):
            from .tls import TlsRuntime

            if self.tls_runtime is None:
                self.tls_runtime = TlsRuntime(config)
            else:
                self.tls_runtime.reconfigure(config)

    def forwarded_value(self, ip: str, port: int) -> bytes:
        node = _forwarded_node(ip)
        return b'proto=%s;for="%s:%d";by=%s' % (self.proto, node.strip(b'"'), port, self._by)

    def forwarding_headers(self, ip: str, port: int, seen: int = 0) -> bytes:
        """The headers added to every request from ``ip:port`` (X-Forwarded-Port and -Proto
        only when ``seen`` says the client did not send them, which a caller says only for a
        trusted client); precomputed once per connection for the common case."""
        peer = ip.encode()
        out = []
        if not seen & h1.SEEN_X_FORWARDED_FOR:
            out.append(b"X-Forwarded-For: " + peer + _CRLF)
        if not seen & h1.SEEN_FORWARDED:
            out.append(b"Forwarded: " + self.forwarded_value(ip, port) + _CRLF)
        if self.send_x_real_ip:
            out.append(b"X-Real-IP: " + peer + _CRLF)
        if not seen & h1.SEEN_X_FORWARDED_PORT:
            out.append(b"X-Forwarded-Port: " + self._public_port + _CRLF)
        if not seen & h1.SEEN_X_FORWARDED_PROTO:
            out.append(b"X-Forwarded-Proto: " + self.proto + _CRLF)
        return b"".join(out)

    def protocol_factory(self) -> asyncio.Protocol:
        return self.session_class(self)

    def tls_context(self) -> ssl.SSLContext | None:
        return self.tls_runtime.context if self.tls_runtime is not None else None

    def sync_certificates(self, state: ConfigState) -> None:
        if self.tls_runtime is not None:
            self.tls_runtime.sync(state.certificates.get(self.address, {}), state, self.address)


class TcpListener(Listener):
    """A TCP listener: bound to one cluster by its TCP frontend."""

    def __init__(
        self, proxy: ProxyServices, config: TcpListenerConfig, session_class: SessionClass
    ) -> None:
        self.cluster: ClusterRuntime | None = None
        super().__init__(proxy, config, session_class)

    def protocol_factory(self) -> asyncio.Protocol:
        return self.session_class(self)


def _forwarded_node(ip: str) -> bytes:
    """A node of the Forwarded header (RFC 7239): IPv6 (the addresses with a colon) quoted and
    bracketed."""
    if ":" in ip:
        return f'"[{ip}]"'.encode()
    return ip.encode()
