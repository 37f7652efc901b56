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

from .accepting import Handshake, accept_batch
from .answers import Answers
from .headers import ForwardingHeaders
from .proxy_reader import PendingConnection
from .router import Router
from .routes import ClusterRuntime, Route, hsts_line
from .services import ProxyServices
from .tls import TlsRuntime

ListenerConfig = HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig

if TYPE_CHECKING:
    from sozu_config.state import ConfigState

log = logging.getLogger("sozu.worker")

__all__ = ["HttpListener", "Listener", "TcpListener"]

# Stands for "accepting" in Listener.server when the listener accepts through its own reader
# (expect_proxy) rather than an asyncio server.
_ACCEPTING: Any = object()


class Listener:
    """What HTTP, HTTPS and TCP listeners share: the socket, accepting, timeouts."""

    tls = False

    def __init__(self, proxy: ProxyServices, config: ListenerConfig) -> None:
        self.proxy = proxy
        self.address: str = config.address
        self.sock: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self.active = False
        self._starting: asyncio.Task[None] | None = None
        self.reconfigure(config)

    def reconfigure(self, config: ListenerConfig) -> None:
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
        session_class: Callable[[HttpListener], asyncio.Protocol],
        take_over_h2: Callable[[Any, Any], None] | None = None,
    ) -> None:
        # the protocol of this listener's connections (given by the proxy, which knows them)
        self.session_class = session_class
        # (session, transport): an HTTPS connection that chose h2 changes protocol
        self.take_over_h2 = take_over_h2
        self.router: Router[Route] = Router()
        # (Host, target, method) → route (or None): the lookups of the fast path, cleared
        # whenever a frontend of this listener is added or removed
        self.route_cache: dict[tuple[bytes, bytes, bytes], Route | None] = {}
        self.tls = isinstance(config, HttpsListenerConfig)
        self.tls_runtime: TlsRuntime | None = None
        super().__init__(proxy, config)

    def reconfigure(self, config: ListenerConfig) -> None:
        assert not isinstance(config, TcpListenerConfig)
        super().reconfigure(config)
        proxy = self.proxy
        self.max_head = proxy.buffer_size
        self.strict_sni = bool(getattr(config, "strict_sni_binding", False))
        # the headers this listener's requests and answers get (see headers)
        self.forwarding = ForwardingHeaders(config, self.public_ip, self.public_port)
        # Strict-Transport-Security of this listener's answers (HTTPS only), b"" when none
        hsts = getattr(config, "hsts", None)
        self.hsts_line = hsts_line(hsts)
        self.hsts_force = hsts is not None and hsts.force_replace_backend
        old = getattr(self, "answers", None)
        answers = Answers(config.answers, sozu_id_header=config.sozu_id_header)
        if old is not None:
            for cluster in proxy.clusters.values():
                if cluster.config.answers:
                    answers.set_cluster(cluster.cluster_id, cluster.config.answers)
        self.answers = answers
        if isinstance(config, HttpsListenerConfig):
            if self.tls_runtime is None:
                self.tls_runtime = TlsRuntime(config)
            else:
                self.tls_runtime.reconfigure(config)

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
        self,
        proxy: ProxyServices,
        config: TcpListenerConfig,
        session_class: Callable[[TcpListener], asyncio.Protocol],
    ) -> None:
        self.session_class = session_class
        self.cluster: ClusterRuntime | None = None
        super().__init__(proxy, config)

    def protocol_factory(self) -> asyncio.Protocol:
        return self.session_class(self)
