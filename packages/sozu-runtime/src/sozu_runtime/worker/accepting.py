"""Connections the worker accepts itself, one by one: TLS listeners and ``expect_proxy`` ones.

Plain HTTP and TCP listeners accept through the event loop's server (the fastest path). A TLS
connection, though, only reaches its protocol once its handshake completes, so the event loop
would hold it uncounted while the handshake lasts: a flood of silent connections to an HTTPS
port would escape ``max_connections`` and the file-descriptor limit. Here every such connection
is counted from ``accept()`` on, as a :class:`Handshake`, with a deadline, and handed over to
its session (without changing the count) when the handshake completes.

The accept loop itself is bounded (a batch per wake-up, like the event loop's own) and says
why it cannot accept when the process runs out of file descriptors, instead of failing every
client silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from typing import Any, Protocol

from .admission import Admission, Connection
from .metrics import Metrics
from .proxy_protocol import ProxyHeader

log = logging.getLogger("sozu.worker")


class AcceptServices(Protocol):
    """What accepting uses of the worker."""

    loop: asyncio.AbstractEventLoop
    metrics: Metrics
    admission: Admission
    # session protocol → its handshake, while the connection's handshake is in progress
    handshakes: dict[object, Handshake]


class Listener(Protocol):
    """What accepting needs of a listener (see :class:`.listeners.Listener`)."""

    @property
    def proxy(self) -> AcceptServices: ...

    address: str
    request_timeout: float

    @property
    def server(self) -> Any: ...

    def protocol_factory(self) -> asyncio.Protocol: ...

    def tls_context(self) -> ssl.SSLContext | None: ...

    def accepted(self, connection: socket.socket) -> None: ...

    def pause_accepting(self) -> None: ...

    def resume_accepting(self) -> None: ...


__all__ = ["AcceptServices", "Handshake", "accept_batch", "apply_header"]

ACCEPT_BATCH = 64  # connections accepted per wake-up of a listening socket
# Out of file descriptors: accepting pauses this long (connections wait in the backlog), and
# the warning is repeated at most this often.
DESCRIPTORS_PAUSE = 0.5
DESCRIPTORS_WARNING_INTERVAL = 10.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_last_warning = 0.0


def accept_batch(listener: Listener, sock: socket.socket) -> None:
    """Accept what is waiting on ``sock`` (at most ACCEPT_BATCH) for ``listener``."""
    for _ in range(ACCEPT_BATCH):
        try:
            connection, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            if error.errno in _OUT_OF_DESCRIPTORS:
                _out_of_descriptors(listener, error)
            return
        connection.setblocking(False)
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.accepted(connection)
        if listener.server is None:  # that connection filled the worker: accepting paused
            return


def _out_of_descriptors(listener: Listener, error: OSError) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= DESCRIPTORS_WARNING_INTERVAL:
        _last_warning = now
        log.warning(
            "cannot accept on %s: %s; new connections wait in the backlog (lower "
            "max_connections, or raise the open files limit: ulimit -n)",
            listener.address,
            error.strerror,
        )
    listener.pause_accepting()
    listener.proxy.loop.call_later(DESCRIPTORS_PAUSE, listener.resume_accepting)


class ProxiedSession(Protocol):
    """A session protocol of an ``expect_proxy`` listener, as its PROXY header sets it."""

    peer_ip: str
    peer_port: int
    proxy_header: ProxyHeader | None


def apply_header(protocol: ProxiedSession, header: ProxyHeader) -> None:
    """Give a connection's protocol what its PROXY header says of the client: the source
    address replaces the peer's (a LOCAL header, from a health check, keeps the peer)."""
    if header.command == "proxy" and header.source is not None:
        protocol.peer_ip, protocol.peer_port = header.source
    protocol.proxy_header = header


class Handshake:
    """An accepted connection whose transport is being set up (its TLS handshake, mostly).

    It is an open connection for the worker's limits and sweeper: it has a ``deadline`` and
    can be aborted. When the handshake completes, the session created for it takes its place
    (:meth:`Proxy.session_opened`); when it fails or times out, it simply ends.
    """

    __slots__ = ("closed", "deadline", "listener", "protocol", "sock", "task")

    def __init__(
        self, listener: Listener, sock: socket.socket, header: ProxyHeader | None = None
    ) -> None:
        self.listener = listener
        self.sock = sock
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        proxy = listener.proxy
        protocol: Any = listener.protocol_factory()
        if header is not None:
            apply_header(protocol, header)
        self.protocol = protocol
        # the handshake has its own timeout; the deadline is the sweeper's backstop
        self.deadline = proxy.loop.time() + listener.request_timeout + 1.0

    def start(self, previous: Connection | None = None) -> None:
        """Count the connection (taking over from ``previous``, a connection that read the
        PROXY header) and set its transport up."""
        proxy = self.listener.proxy
        if previous is not None:
            proxy.admission.replaced(previous, self)
        elif not proxy.admission.opened(self):
            self.closed = True
            self.sock.close()  # accepted past the limit
            return
        proxy.handshakes[self.protocol] = self
        self.task = proxy.loop.create_task(self._run())

    async def _run(self) -> None:
        listener = self.listener
        proxy = listener.proxy
        context = listener.tls_context()
        kwargs: dict[str, Any] = {}
        if context is not None:
            kwargs = {"ssl": context, "ssl_handshake_timeout": listener.request_timeout}
        try:
            transport, _ = await proxy.loop.connect_accepted_socket(
                lambda: self.protocol, self.sock, **kwargs
            )
            if context is not None:
                ssl_object = transport.get_extra_info("ssl_object")
                version = (ssl_object.version() if ssl_object is not None else None) or "unknown"
                handshakes = proxy.metrics.tls_handshakes
                handshakes[version] = handshakes.get(version, 0) + 1
        except asyncio.CancelledError:
            self.sock.close()  # a no-op when the event loop closed it already
            raise
        except Exception as error:  # a failed handshake ends this connection only
            if context is not None:
                proxy.metrics.tls_handshake_failures += 1
            log.debug("connection on %s ended in its handshake: %r", listener.address, error)
            self.sock.close()  # a no-op when the event loop closed it already
        finally:
            self.finish()

    def finish(self) -> None:
        """The handshake is over: stop counting it (a session counts itself from now on)."""
        proxy = self.listener.proxy
        if proxy.handshakes.get(self.protocol) is self:
            del proxy.handshakes[self.protocol]
            proxy.admission.closed(self)

    # ------------------------------------------------------------------ connection interface

    def check_deadline(self, now: float) -> None:
        self.abort()

    def soft_stop(self) -> None:
        """Let the handshake end: the session it becomes answers one request and closes."""

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.task is not None:
                self.task.cancel()
            else:
                self.sock.close()
            self.finish()

    @property
    def transport(self) -> Handshake:  # the hard stop aborts connections through this
        return self
