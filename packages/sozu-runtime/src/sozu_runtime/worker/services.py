"""What the worker's listeners and sessions ask of the proxy: a narrow interface.

Sessions (HTTP, TCP) and listeners are driven by the :class:`~.proxy.Proxy`, which builds them;
they reach it through :class:`ProxyServices` only — the event loop, the counters, the limits,
backend connections and the few events they report — so that they depend on this interface,
not on the proxy (no import circle, and a test can give them a stand-in).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .admission import Admission
from .balancing import Backend
from .metrics import Metrics
from .reading import ReadBuffers

__all__ = ["ProxyServices"]


class ProxyServices(Protocol):
    """The proxy as listeners and sessions see it."""

    loop: asyncio.AbstractEventLoop
    clock: Callable[[], float]
    metrics: Metrics
    admission: Admission
    reads: ReadBuffers
    handshakes: dict[Any, Any]
    buffer_size: int
    write_buffer_limit: int
    stopping: bool
    access_logs: bool
    clusters: dict[str, Any]

    def next_request_id(self) -> bytes: ...

    def session_opened(self, session: Any) -> None: ...

    def session_closed(self, session: Any) -> None: ...

    def connect(self, backend: Backend, session: Any, request: bytes, complete: bool) -> None: ...

    def take_idle(self, backend: Backend) -> Any: ...

    def release_idle(self, connection: Any) -> None: ...

    def backend_closed(self, connection: Any) -> None: ...

    def no_backend(self, cluster: Any) -> None: ...

    def access_log(self, session: Any, status: int, message: str) -> None: ...
