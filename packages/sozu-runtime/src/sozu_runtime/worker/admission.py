"""Which connections a worker takes on, and how many: the worker's connection limits.

* ``max_connections``: every open connection counts from the moment it is accepted — a TLS
  handshake in progress and a connection whose PROXY header is not read yet included (reference
  §H.6). At the limit the worker stops accepting: new clients wait in the kernel backlog (or are
  taken by another worker); it accepts again below 90 % of the limit.
* ``evict_on_queue_full``: at the limit the worker goes on accepting, and each connection
  accepted past it closes the least recently active 1 % (at least one) of the others — the
  ones whose inactivity deadline comes first.
* ``max_connections_per_ip``: connections one client IP may have open to one cluster (per
  worker, as in sōzu). An HTTP connection holds a slot of the cluster of its current request;
  a TCP connection one of its listener's cluster. Over the limit, HTTP answers 429 (with
  ``Retry-After``) and TCP closes the connection without a byte.

After a burst of connections (a handshake flood, say) the memory of the connections that closed
is handed back to the system, so that a worker's size follows its load down as well as up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("sozu.worker")

__all__ = ["Abortable", "Admission", "Connection", "return_free_memory"]

RESUME_RATIO = 0.9  # accepting resumes below this share of max_connections (sōzu's)
EVICTED_SHARE = 0.01  # share of max_connections evicted at once when full (sōzu's 1 %)
# Memory is handed back when the open connections fell to half of their peak (and at least
# this many closed), at most once per TRIM_INTERVAL seconds.
TRIM_MIN_CLOSED = 64
TRIM_INTERVAL = 5.0


def _libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``: freed heap memory goes back to the system (without it, memory
    freed in the middle of the heap stays in the process). None on other C libraries."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Any = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _libc_trim()


def return_free_memory() -> bool:
    """Hand the heap's free memory back to the system; False when the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Abortable(Protocol):
    def abort(self) -> None:
        """Cut the connection now."""


class Connection(Protocol):
    """An open connection as the worker's limits, its sweeper and its stops see it: a session,
    a TLS handshake in progress, a connection whose PROXY header is not read yet."""

    @property
    def deadline(self) -> float:
        """The loop time past which :meth:`check_deadline` is called."""
        ...

    @property
    def transport(self) -> Abortable | None:
        """What a hard stop or an eviction aborts."""
        ...

    def check_deadline(self, now: float) -> None:
        """``now`` passed the deadline: answer, close or abort, as the phase says."""

    def soft_stop(self) -> None:
        """The worker stops: close when idle, else after the answer in flight."""


class Admission:
    """The open connections of a worker and the limits they are held to."""

    __slots__ = (
        "_peak",
        "_per_ip",
        "_set_accepting",
        "_trim",
        "_trimmed_at",
        "connections",
        "evict_on_queue_full",
        "max_connections",
        "metrics",
        "paused",
    )

    def __init__(
        self,
        set_accepting: Callable[[bool], None],
        metrics: Metrics,
        *,
        max_connections: int,
        evict_on_queue_full: bool = False,
        trim: Callable[[], bool] = return_free_memory,
    ) -> None:
        self._set_accepting = set_accepting
        self._trim = trim  # hands free memory back (see :func:`return_free_memory`)
        self.metrics = metrics
        self.max_connections = max_connections
        self.evict_on_queue_full = evict_on_queue_full
        # Every open connection: sessions, TLS handshakes, connections awaiting a PROXY header.
        self.connections: set[Connection] = set()
        self.paused = False
        self._per_ip: dict[tuple[str, str], int] = {}
        self._peak = 0
        self._trimmed_at = 0.0

    # ------------------------------------------------------------------ max_connections

    def opened(self, connection: Connection) -> bool:
        """Count a connection just accepted. False when it must be refused at once (accepted
        past the limit in the same batch of accepts, eviction being off)."""
        connections = self.connections
        connections.add(connection)
        count = len(connections)
        self._peak = max(self._peak, count)
        if count < self.max_connections:
            return True
        if self.evict_on_queue_full:
            if count > self.max_connections:  # full: room is made for the newcomer
                self._evict(connection)
            return True
        if not self.paused:
            self.paused = True
            self._set_accepting(False)
        if count > self.max_connections:
            connections.discard(connection)
            return False
        return True

    def closed(self, connection: Connection) -> None:
        connections = self.connections
        connections.discard(connection)
        if self.paused and len(connections) < RESUME_RATIO * self.max_connections:
            self.paused = False
            self._set_accepting(True)

    def replaced(self, old: Connection, new: Connection) -> None:
        """``new`` continues ``old`` (a session whose TLS handshake completed): the count
        does not change, so no limit is checked again."""
        self.connections.discard(old)
        self.connections.add(new)

    def _evict(self, keep: Connection) -> None:
        """Close the connections whose inactivity deadline comes first (never ``keep``)."""
        count = max(1, int(self.max_connections * EVICTED_SHARE))
        candidates = (c for c in self.connections if c is not keep)
        for victim in heapq.nsmallest(count, candidates, key=_deadline):
            self.connections.discard(victim)
            self.metrics.evicted_connections += 1
            transport = victim.transport
            if transport is not None:
                transport.abort()

    # ------------------------------------------------------------------ per (cluster, IP)

    def take_ip_slot(self, cluster_id: str, ip: str, limit: int) -> bool:
        """One more connection of ``ip`` to ``cluster_id``, if ``limit`` allows it."""
        key = (cluster_id, ip)
        held = self._per_ip.get(key, 0)
        if held >= limit:
            self.metrics.per_ip_refusals += 1
            return False
        self._per_ip[key] = held + 1
        return True

    def release_ip_slot(self, cluster_id: str, ip: str) -> None:
        key = (cluster_id, ip)
        held = self._per_ip.get(key, 0)
        if held <= 1:
            self._per_ip.pop(key, None)
        else:
            self._per_ip[key] = held - 1

    def ip_slots(self, cluster_id: str, ip: str) -> int:
        return self._per_ip.get((cluster_id, ip), 0)

    # ------------------------------------------------------------------ memory

    def sweep(self, now: float, idle: bool) -> None:
        """After a burst, give the memory of the closed connections back (see module doc):
        when the open connections fell to half their peak, and once more when the worker
        has become ``idle`` (no connection of any kind) after some traffic."""
        count = len(self.connections)
        peak = self._peak
        fell = peak - count >= TRIM_MIN_CLOSED and count <= peak // 2
        quiet = idle and peak > 0
        if not (fell or quiet) or now - self._trimmed_at < TRIM_INTERVAL:
            return
        self._trimmed_at = now
        self._peak = count
        self._trim()


def _deadline(connection: Connection) -> float:
    return connection.deadline
