"""The traffic shapes of the benchmark, as data.

Every load is one wrk configuration: which path, how many concurrent connections, plain HTTP
or TLS, and whether connections are kept alive or closed after each answer. All requests carry
``Host: bench.local`` so that the proxies route them the way a real deployment would.
"""

from __future__ import annotations

from dataclasses import dataclass

# The virtual host every proxy routes to the origin.
HOSTNAME = "bench.local"


@dataclass(frozen=True)
class Load:
    """One traffic shape.

    ``keep_alive`` false sends ``Connection: close``, so every request pays for a new TCP
    connection (and, with ``tls``, a new TLS handshake).
    """

    name: str
    path: str
    connections: int
    tls: bool
    keep_alive: bool
    description: str

    def headers(self) -> tuple[str, ...]:
        """The request headers wrk adds for this load."""
        close = () if self.keep_alive else ("Connection: close",)
        return (f"Host: {HOSTNAME}", *close)


LOADS: tuple[Load, ...] = (
    Load("small-50", "/", 50, False, True, "GET / (12-byte body), keep-alive, 50 connections"),
    Load("small-200", "/", 200, False, True, "GET / (12-byte body), keep-alive, 200 connections"),
    Load("64k", "/64k", 50, False, True, "GET /64k (64 KiB body), keep-alive, 50 connections"),
    Load("1m", "/1m", 10, False, True, "GET /1m (1 MiB body), keep-alive, 10 connections"),
    Load("newconn", "/", 50, False, False, "GET /, a new TCP connection per request, 50 conns"),
    Load("tls-handshake", "/", 50, True, False, "HTTPS GET /, a new TLS handshake per request"),
    Load("tls-keepalive", "/", 50, True, True, "HTTPS GET /, keep-alive, 50 connections"),
)

LOADS_BY_NAME = {load.name: load for load in LOADS}
