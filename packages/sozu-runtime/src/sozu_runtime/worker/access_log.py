"""Access logs: one entry per answered exchange (HTTP) or per ended TCP session, built only
when access logs are on, and written as one line (``ascii`` or ``json``).
"""

from __future__ import annotations

__all__ = ["AccessEntry"]


class AccessEntry:
    """What an access-log line says about one exchange (or one TCP session).

    Times are integers: ``time_ns`` is the wall clock (ns since the epoch) when the exchange
    ended; ``request_time_us`` from the request's first byte to the answer's last byte;
    ``service_time_us`` the time the proxy spent itself (waits for the backend left out);
    ``response_time_us`` from the request sent to the first byte of the answer (-1: no
    backend answered). Strings are empty when unknown (``-`` in the ascii form, null in JSON);
    ``status`` is 0 for a TCP session. ``protocol``: ``HTTP``, ``HTTPS``, ``TCP`` …;
    ``tls_version``/``tls_cipher``/``tls_sni`` on TLS connections; ``tags``: the frontend's
    tags; ``message``: why the proxy answered itself (empty otherwise).
    """

    __slots__ = (
        "authority",
        "backend_address",
        "backend_id",
        "bytes_in",
        "bytes_out",
        "client_address",
        "client_port",
        "cluster_id",
        "message",
        "method",
        "path",
        "protocol",
        "request_id",
        "request_time_us",
        "response_time_us",
        "service_time_us",
        "session_id",
        "status",
        "tags",
        "time_ns",
        "tls_cipher",
        "tls_sni",
        "tls_version",
        "user_agent",
    )

    def __init__(self) -> None:
        self.time_ns = 0
        self.session_id = ""
        self.request_id = ""
        self.cluster_id = ""
        self.backend_id = ""
        self.backend_address = ""
        self.client_address = ""
        self.client_port = 0
        self.protocol = ""
        self.method = ""
        self.authority = ""
        self.path = ""
        self.status = 0
        self.message = ""
        self.request_time_us = 0
        self.service_time_us = 0
        self.response_time_us = -1
        self.bytes_in = 0
        self.bytes_out = 0
        self.user_agent = ""
        self.tls_version = ""
        self.tls_cipher = ""
        self.tls_sni = ""
        self.tags: dict[str, str] = {}
