"""In-memory counters of a worker (answered by ``query_metrics``).

Plain integer attributes incremented on the data path (one attribute add each: no dictionary
of names, no locking — a worker is single-threaded).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics"]


class Metrics:
    __slots__ = (
        "backend_connect_errors",
        "backend_parse_errors",
        "backpressure",
        "connections",
        "enabled",
        "evicted_connections",
        "frontend_parse_errors",
        "per_ip_refusals",
        "requests",
        "statuses",
        "tcp_connections",
        "tls_handshake_failures",
    )

    def __init__(self) -> None:
        self.enabled = True
        self.clear()

    def clear(self) -> None:
        self.requests = 0
        self.connections = 0
        self.tcp_connections = 0
        self.frontend_parse_errors = 0
        self.backend_parse_errors = 0
        self.backend_connect_errors = 0
        self.backpressure = 0
        self.tls_handshake_failures = 0
        self.evicted_connections = 0
        self.per_ip_refusals = 0
        self.statuses: dict[int, int] = {}

    def count_status(self, status: int) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        classes: dict[str, int] = {}
        for status, count in self.statuses.items():
            key = f"{status // 100}xx"
            classes[key] = classes.get(key, 0) + count
        return {
            "requests": self.requests,
            "connections": self.connections,
            "tcp_connections": self.tcp_connections,
            "frontend_parse_errors": self.frontend_parse_errors,
            "backend_parse_errors": self.backend_parse_errors,
            "backend_connect_errors": self.backend_connect_errors,
            "backpressure": self.backpressure,
            "tls_handshake_failures": self.tls_handshake_failures,
            "evicted_connections": self.evicted_connections,
            "per_ip_refusals": self.per_ip_refusals,
            "status_classes": dict(sorted(classes.items())),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }
