"""What the worker's listeners and sessions ask of the proxy: a narrow interface.

Sessions (HTTP, TCP) and listeners are driven by the :class:`~.proxy.Proxy`, which builds them;
they reach it through :class:`ProxyServices` only — the event loop, the counters, the limits,
the backend pool, request ids, the access log and the few events they report — so that they
depend on this interface, not on the proxy (no import circle, and a test can give them a
stand-in). Backend connections see less still (:class:`.backend.BackendServices`), and so
does accepting (:class:`.accepting.AcceptServices`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from .accepting import AcceptServices
from .access_log import AccessEntry
from .admission import Admission, Connection
from .backend import BackendServices
from .metrics import Metrics
from .pool import BackendPool
from .reading import ReadBuffers
from .routes import ClusterRuntime

__all__ = ["ProxyServices"]


class ProxyServices(BackendServices, AcceptServices, Protocol):
    """The proxy as listeners and sessions see it."""

    loop: asyncio.AbstractEventLoop
    clock: Callable[[], float]
    metrics: Metrics
    admission: Admission
    reads: ReadBuffers
    buffer_size: int
    write_buffer_limit: int
    stopping: bool
    access_logs: bool
    clusters: dict[str, ClusterRuntime]
    pool: BackendPool

    def next_request_id(self) -> bytes:
        """A new request id (unique in this worker, sortable by time)."""
        ...

    def session_opened(self, session: Connection) -> None:
        """A session's transport is up (it counts as an open connection from now on, or
        takes over its handshake's count)."""
        ...

    def session_closed(self, session: Connection) -> None:
        """A session's connection closed."""
        ...

    def no_backend(self, cluster: ClusterRuntime) -> None:
        """``cluster`` has no backend to offer (reported as an event)."""
        ...

    def access_log(self, entry: AccessEntry) -> None:
        """Write an access-log entry (called only when :attr:`access_logs` is on)."""
        ...
