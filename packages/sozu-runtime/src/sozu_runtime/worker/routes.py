"""What a frontend rule leads to, as the data path sees it: the cluster (its balancer and
settings), the route (redirects, authentication, rewrites, header edits, HSTS), and the rules
they apply (basic-authentication check, the Strict-Transport-Security line).

Sessions read these objects; the proxy builds them from the state. Nothing here knows about
sockets or sessions: answering a redirect or an authentication failure is the session's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from sozu_config.models import (
    Cluster,
    HeaderPosition,
    Hsts,
    HttpFrontend,
    RedirectPolicy,
)

from . import balancing
from .metrics import Counters

__all__ = ["ClusterRuntime", "Route", "check_basic_auth", "hsts_line"]

_CRLF = b"\r\n"
_TO_REQUEST = frozenset({HeaderPosition.REQUEST, HeaderPosition.BOTH})
_TO_RESPONSE = frozenset({HeaderPosition.RESPONSE, HeaderPosition.BOTH})


class ClusterRuntime:
    """A cluster as the data path sees it: settings and the balancer of its backends."""

    __slots__ = (
        "authorized",
        "balancer",
        "cluster_id",
        "config",
        "https_redirect",
        "https_redirect_port",
        "per_ip_limit",
        "proxy_protocol",
        "retry_after",
        "stats",
        "sticky_session",
        "www_authenticate",
    )

    def __init__(self, config: Cluster, per_ip_limit: int = 0, retry_after: int = 60) -> None:
        self.cluster_id = config.cluster_id
        self.balancer = balancing.Cluster(config.cluster_id)
        self.stats = Counters()  # the cluster's own figures (see metrics.Metrics.cluster)
        self.configure(config, per_ip_limit, retry_after)

    def configure(self, config: Cluster, per_ip_limit: int = 0, retry_after: int = 60) -> None:
        """``per_ip_limit`` and ``retry_after``: the worker's defaults, which the cluster's own
        settings override."""
        self.config = config
        # connections per client IP to this cluster (0: unlimited), Retry-After of its 429
        self.per_ip_limit = (
            per_ip_limit if config.max_connections_per_ip is None else config.max_connections_per_ip
        )
        self.retry_after = retry_after if config.retry_after is None else config.retry_after
        self.sticky_session = config.sticky_session
        self.https_redirect = config.https_redirect
        self.https_redirect_port = config.https_redirect_port
        self.www_authenticate = config.www_authenticate
        self.proxy_protocol = config.proxy_protocol
        self.authorized = frozenset(
            (user, digest.lower())
            for user, _, digest in (entry.partition(":") for entry in config.authorized_hashes)
        )
        self.balancer.configure(config.load_balancing, config.load_metric)
        check = config.health_check
        self.balancer.set_checked(check is not None, check is None or check.fail_open)


class Route:
    """What a frontend rule leads to. ``special`` routes (redirects, authentication) are
    answered by the session before any backend is involved."""

    __slots__ = (
        "cluster",
        "frontend",
        "hsts_force",
        "hsts_line",
        "request_added",
        "request_edits",
        "response_added",
        "response_edits",
        "rewrites",
        "special",
        "tags",
    )

    def __init__(self, frontend: HttpFrontend, cluster: ClusterRuntime | None) -> None:
        self.frontend = frontend
        self.cluster = cluster
        self.tags = frontend.tags
        # the frontend's own HSTS (None: the listener's applies)
        self.hsts_line = None if frontend.hsts is None else hsts_line(frontend.hsts)
        self.hsts_force = frontend.hsts is not None and frontend.hsts.force_replace_backend
        self.special = frontend.redirect is not RedirectPolicy.FORWARD or frontend.required_auth
        # forwarded requests get a rewritten Host and/or path (the original Host goes in
        # X-Forwarded-Host)
        self.rewrites = frontend.redirect is RedirectPolicy.FORWARD and (
            frontend.rewrite_host is not None
            or frontend.rewrite_path is not None
            or frontend.rewrite_port is not None
        )
        request_edits: set[bytes] = set()
        response_edits: set[bytes] = set()
        request_added: list[tuple[bytes, bytes]] = []
        response_added: list[tuple[bytes, bytes]] = []
        for edit in frontend.headers:
            key = edit.key.encode("latin-1")
            value = edit.value.encode("latin-1")
            if edit.position in _TO_REQUEST:
                request_edits.add(key.lower())
                if value:
                    request_added.append((key, value))
            if edit.position in _TO_RESPONSE:
                response_edits.add(key.lower())
                if value:
                    response_added.append((key, value))
        self.request_edits = frozenset(request_edits)
        self.response_edits = frozenset(response_edits)
        self.request_added = tuple(request_added)
        self.response_added = tuple(response_added)


def hsts_line(hsts: Hsts | None) -> bytes:
    """The Strict-Transport-Security header line an HSTS setting adds (b"" when off)."""
    if hsts is None or not hsts.enabled:
        return b""
    return b"Strict-Transport-Security: " + hsts.header_value().encode() + _CRLF


def check_basic_auth(header: bytes | None, authorized: frozenset[tuple[str, str]]) -> bool:
    """``Authorization: Basic`` credentials against ``user:sha256(password)`` pairs, compared
    in constant time."""
    if not header or header[:6].lower() != b"basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except ValueError:
        return False
    if len(decoded) > 4096:
        return False
    user, sep, password = decoded.partition(b":")
    if not sep:
        return False
    digest = hashlib.sha256(password).hexdigest()
    found = False
    for known_user, known_digest in authorized:
        same_user = hmac.compare_digest(known_user.encode(), user)
        same_digest = hmac.compare_digest(known_digest, digest)
        found |= same_user and same_digest
    return found
