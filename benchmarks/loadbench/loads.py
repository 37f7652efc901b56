"""The traffic shapes of the benchmark, as data.

Every load is one wrk configuration: which path, how many concurrent connections, plain HTTP
or TLS, and whether connections are kept alive or closed after each answer. All requests carry
``Host: bench.local`` so that the proxies route them the way a real deployment would.

The HTTP/2 loads (``streams`` above zero) are h2load configurations instead: TLS with ALPN
``h2`` to the proxy, ``streams`` concurrent streams on each connection, and the backend the
proxy forwards to either the HTTP/1.1 origin or, with ``backend = "h2c"``, the origin's h2c
listener (HTTP/2 in clear text with prior knowledge).
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
    # Concurrent streams per connection (h2load's ``-m``); 0 for the HTTP/1.1 loads of wrk.
    streams: int = 0
    # What the proxy speaks to the origin: ``h1`` (HTTP/1.1) or ``h2c``.
    backend: str = "h1"

    @property
    def http2(self) -> bool:
        """Whether the client speaks HTTP/2 (the load is run by h2load, not wrk)."""
        return self.streams > 0

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
    Load(
        "h2-small-10",
        "/",
        10,
        True,
        True,
        "HTTP/2 over TLS GET /, 10 connections x 10 streams, HTTP/1.1 to the origin",
        streams=10,
    ),
    Load(
        "h2-h2c-small-10",
        "/h2c",
        10,
        True,
        True,
        "HTTP/2 over TLS GET /h2c, 10 connections x 10 streams, h2c to the origin",
        streams=10,
        backend="h2c",
    ),
)

LOADS_BY_NAME = {load.name: load for load in LOADS}
