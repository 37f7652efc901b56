"""HTTP/1.1 proxying: the client-side session and the backend connection, as asyncio Protocols.

The hot path, per request: one read from the client, one write to a (pooled, already open)
backend connection, one read of the answer, one write to the client. Heads are parsed by
:mod:`.h1` (llhttp); the forwarded request head is the received head with the forwarding
headers appended (rebuilt only when hop-by-hop headers must go); the response head is passed
through with the request id inserted after its status line (rebuilt only when it must change).
Bodies are never re-assembled: bytes flow through while :mod:`.h1` tracks where messages end,
with flow control in both directions (``pause_reading`` when the other side's write buffer is
full), so the memory of a connection is bounded whatever the body size.

No Task, no timer and no logging call per request: timeouts are deadlines checked by the
worker's sweeper (:meth:`FrontendSession.check_deadline`), new backend connections are the
only coroutines (one per connection, not per request), access logs are built only when on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import h1
from .h1 import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, BODY_TUNNEL, HttpError
from .router import parse_authority

if TYPE_CHECKING:
    from .balancing import Backend
    from .listeners import HttpListener
    from .routes import ClusterRuntime, Route
    from .services import ProxyServices

__all__ = ["BackendConnection", "FrontendSession"]

# Session phases.
IDLE = 0  # waiting for a request head (fresh or keep-alive connection)
HEAD = 1  # part of a head received
CONNECTING = 2  # head complete, waiting for a backend connection
REQUEST_BODY = 3  # streaming the request body to the backend
WAITING = 4  # request sent, waiting for (the rest of) the response
TUNNEL = 5  # upgraded: raw bytes both ways
CLOSING = 6  # answer written, closing

CONNECT_ATTEMPTS = 3  # sōzu's CONN_RETRIES: connection attempts per request before 503
# Interim (1xx) responses relayed before the final one; past it, 502. Real servers send one
# or two (100 Continue, 103 Early Hints): the bound stops a backend from keeping a worker
# busy relaying an endless stream of them.
MAX_INTERIM_RESPONSES = 32
ROUTE_CACHE_SIZE = 4096  # (host, target, method) → route entries kept per listener
SMALL_BODY = 8192  # body bytes copied next to the head into one buffer; larger ones are not
_MISSING: Any = object()
_CRLF = b"\r\n"
# Set by the proxy from the listener; a client's copy is dropped unless it is trusted.
_PROTO_PORT_FIELDS = frozenset((b"x-forwarded-proto", b"x-forwarded-port"))


class FrontendSession(asyncio.Protocol):
    """One client connection on an HTTP or HTTPS listener."""

    __slots__ = (
        "_closed",
        "_fwd_static",
        "_paused_for_pipeline",
        "_peer_paused",
        "attempts",
        "backend",
        "chunks",
        "cluster",
        "deadline",
        "deadline_status",
        "fast_raw",
        "head",
        "ip_slot",
        "keep_alive",
        "listener",
        "method",
        "peer_ip",
        "peer_port",
        "pending",
        "phase",
        "proxy",
        "proxy_header",
        "remaining",
        "replay",
        "request_id",
        "response_started",
        "route",
        "set_cookie",
        "sni_checked",
        "sni_names",
        "started",
        "sticky",
        "transport",
        "tried",
        "upgrade",
        "version",
    )

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.proxy: ProxyServices = listener.proxy
        self.transport: Any = None
        self.phase = IDLE
        self.pending = b""  # bytes of the next head (or pipelined requests)
        self.head: h1.RequestHead | None = None
        self.fast_raw = b""  # the head of a request taken by the fast path (head parsed on demand)
        self.method = b""
        self.version = 11
        self.upgrade: bytes | None = None
        self.route: Route | None = None
        self.cluster: ClusterRuntime | None = None
        self.backend: BackendConnection | None = None
        self.remaining = 0  # request body bytes still to forward (BODY_LENGTH)
        self.chunks: h1.ChunkedTracker | None = None  # request body framing (BODY_CHUNKED)
        self.replay: bytes | None = None  # the whole request, while it can be sent again
        self.keep_alive = True
        self.request_id = b""
        self.sticky: str | None = None
        self.set_cookie = b""
        self.attempts = 0
        self.tried: list[Backend] = []
        self.response_started = False
        self.deadline = 0.0
        self.deadline_status = 0
        self.started = 0.0
        self.sni_names: tuple[str, ...] | None = None
        self.sni_checked = b""  # the last Host found covered by the served certificate
        # the cluster whose per-IP slot this connection holds (max_connections_per_ip)
        self.ip_slot: ClusterRuntime | None = None
        self.peer_ip = ""
        self.peer_port = 0
        self.proxy_header: Any = None  # the PROXY protocol header, on expect_proxy listeners
        self._fwd_static = b""
        self._closed = False
        self._peer_paused = False
        self._paused_for_pipeline = False

    # ----------------------------------------------------------------- connection events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        listener = self.listener
        # what waits to be sent to this client is bounded: past it, the backend is not read
        transport.set_write_buffer_limits(listener.proxy.write_buffer_limit)
        if self.peer_ip == "":  # not already set from a PROXY protocol header
            peer = transport.get_extra_info("peername")
            if peer:
                self.peer_ip, self.peer_port = peer[0], peer[1]
        self._fwd_static = listener.forwarding_headers(self.peer_ip, self.peer_port)
        tls = listener.tls_runtime
        if tls is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.sni_names = tls.names_for(ssl_object)
        self.proxy.session_opened(self)
        now = self.proxy.loop.time()
        self.started = now
        self.deadline = now + listener.request_timeout
        self.deadline_status = 0  # nothing received yet: close silently when it expires

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.abandon()
        if self.ip_slot is not None:
            self.proxy.admission.release_ip_slot(self.ip_slot.cluster_id, self.peer_ip)
            self.ip_slot = None
        self.proxy.session_closed(self)

    def pause_writing(self) -> None:
        # the client reads slower than the backend sends: stop reading the backend
        backend = self.backend
        if backend is not None and not self._peer_paused:
            self._peer_paused = True
            backend.transport.pause_reading()

    def resume_writing(self) -> None:
        backend = self.backend
        if backend is not None and self._peer_paused:
            self._peer_paused = False
            backend.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes after sending its request still gets the answer (and in a
        # tunnel the half-close is passed on); otherwise there is nothing left to do.
        if self.phase == TUNNEL and self.backend is not None:
            backend = self.backend
            if backend.eof:  # both directions ended: the pipe is done
                self.close()
                backend.close()
                return None
            self.keep_alive = False  # marks the client's half-close in a tunnel
            if backend.transport.can_write_eof():
                backend.transport.write_eof()
            return True
        if self.phase in (CONNECTING, WAITING) and not self.response_started:
            self.keep_alive = False
            return True
        if self.phase == WAITING:
            self.keep_alive = False
            return True
        return None

    # ----------------------------------------------------------------- reading

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == IDLE and not self.pending:
            end = data.find(b"\r\n\r\n")
            if end + 4 == len(data):
                simple = h1.simple_request(data, end)
                if simple is not None and self._fast(data, end, simple):
                    return
        if phase == TUNNEL:
            self.backend.transport.write(data)  # type: ignore[union-attr]
            self.deadline = self.proxy.loop.time() + self.listener.front_timeout
            return
        if phase == REQUEST_BODY:
            self._forward_body(data)
            return
        if phase <= HEAD:
            if self.pending:
                data = self.pending + data
                self.pending = b""
            self._read_head(data)
            return
        if phase == CLOSING:
            return
        # CONNECTING or WAITING: the next (pipelined) request, kept until this one is done
        self.pending += data
        if len(self.pending) > self.listener.max_head and not self._paused_for_pipeline:
            self._paused_for_pipeline = True
            self.transport.pause_reading()

    def _fast(
        self, data: bytes, end: int, simple: tuple[bytes, bytes, bytes, int, bool, int, int]
    ) -> bool:
        """The common request (see :func:`.h1.simple_request`) to a plain route with an idle
        pooled backend connection: forwarded with the least work. False (nothing done) when
        any condition is not met: the general path takes the request."""
        method, target, host, version, keep_alive, cut_start, cut_end = simple
        listener = self.listener
        cache = listener.route_cache
        key = (host, target, method)
        route = cache.get(key, _MISSING)
        if route is _MISSING:
            hostname = parse_authority(host)
            if hostname is None:
                return False
            route = listener.router.lookup(hostname, target, method)
            if len(cache) >= ROUTE_CACHE_SIZE:
                cache.clear()
            cache[key] = route
        if route is None or route.special or route.request_edits or route.rewrites:
            return False
        if self.sni_names is not None and listener.strict_sni and host != self.sni_checked:
            hostname = parse_authority(host)
            if hostname is None or not _covered(hostname, self.sni_names):
                return False  # the general path answers 421
            self.sni_checked = host
        cluster = route.cluster
        if (
            cluster is None
            or cluster.sticky_session
            or (cluster.https_redirect and not listener.tls)
            or ((cluster.per_ip_limit or self.ip_slot is not None) and self.ip_slot is not cluster)
        ):
            return False
        proxy = self.proxy
        now = proxy.clock()
        backend = cluster.balancer.choose(now)
        if backend is None:
            return False
        # from here on the request is this path's
        proxy.metrics.requests += 1
        cluster.requests += 1
        rid = proxy.next_request_id()
        self.request_id = rid
        self.head = None
        self.fast_raw = data
        self.method = method
        self.version = version
        self.upgrade = None
        self.keep_alive = keep_alive
        self.route = route
        self.cluster = cluster
        self.response_started = False
        self.set_cookie = b""
        self.sticky = None
        self.attempts = 0
        if self.tried:
            self.tried.clear()
        # the client's head without its Connection line (hop-by-hop), then ours
        request = b"".join(
            (
                data[:cut_start] + data[cut_end : end + 2] if cut_start else data[: end + 2],
                self._fwd_static,
                b"X-Request-Id: ",
                rid,
                _CRLF,
                listener.sozu_id_prefix,
                rid,
                b"\r\n\r\n",
            )
        )
        self.replay = request
        connection = proxy.take_idle(backend)
        if connection is None:  # a new connection to the chosen backend
            self.phase = CONNECTING
            self.deadline = now + listener.connect_timeout + listener.back_timeout
            self.deadline_status = 503
            self.attempts = 1
            self.tried.append(backend)
            backend.active_connections += 1
            proxy.connect(backend, self, request, True)
            return True
        self.backend = connection
        connection.session = self
        backend.active_requests += 1
        connection.head_done = False
        connection.received = False
        connection.interim = 0
        connection.transport.write(request)
        self.phase = WAITING
        self.deadline = now + listener.back_timeout
        self.deadline_status = 504
        return True

    def request_head(self) -> h1.RequestHead | None:
        """The current request's head (parsed now if the fast path skipped it)."""
        if self.head is None and self.fast_raw:
            try:
                self.head = h1.parse_request_head(self.fast_raw, 1 << 20)
            except HttpError:
                return None
        return self.head

    def _read_head(self, data: bytes) -> None:
        listener = self.listener
        try:
            head = h1.parse_request_head(data, listener.max_head)
        except HttpError as error:
            self.proxy.metrics.frontend_parse_errors += 1
            self.answer(error.status, message=error.reason)
            return
        if head is None:
            self.pending = data
            if self.phase == IDLE:
                self.phase = HEAD
                self.deadline = self.proxy.loop.time() + listener.request_timeout
                self.deadline_status = 408
            return
        rest = data[head.length :] if len(data) > head.length else b""
        self._start(head, rest)

    # ----------------------------------------------------------------- a request

    def _start(self, head: h1.RequestHead, rest: bytes) -> None:
        listener = self.listener
        proxy = self.proxy
        proxy.metrics.requests += 1
        self.head = head
        self.fast_raw = b""
        self.method = head.method
        self.version = head.version
        self.upgrade = head.upgrade
        self.request_id = proxy.next_request_id()
        self.keep_alive = head.keep_alive
        self.response_started = False
        self.attempts = 0
        self.tried.clear()
        self.set_cookie = b""
        self.sticky = None
        host = parse_authority(head.host) if head.host else None
        if host is None:
            self.answer(400, message="missing or invalid Host")
            return
        if (
            self.sni_names is not None
            and listener.strict_sni
            and not _covered(host, self.sni_names)
        ):
            self.answer(
                421, message="the Host is not covered by the certificate of this connection"
            )
            return
        route = listener.router.lookup(host, head.target, head.method)
        if route is None:
            self.answer(404)
            return
        self.route = route
        if route.special and route.answer_special(self, host):
            return
        cluster = route.cluster
        self.cluster = cluster
        if cluster is None:  # deny rule
            self.answer(401)
            return
        if cluster.https_redirect and not listener.tls:
            self.redirect(301, "https", host, cluster.https_redirect_port, head.target)
            return
        if self.ip_slot is not cluster and not self._hold_ip_slot(cluster):
            self.answer(429, message="too many connections from this address to this cluster")
            return
        cluster.requests += 1
        if cluster.sticky_session:
            self.sticky = _sticky_cookie(head, listener.sticky_name_lower)
        # framing of the request body
        kind = h1.request_body_kind(head)
        body = b""
        if kind == BODY_NONE:
            self.remaining = 0
            self.chunks = None
            pipelined = rest
        elif kind == BODY_LENGTH:
            length = head.content_length
            if len(rest) >= length:
                body, pipelined = rest[:length], rest[length:]
                self.remaining = 0
            else:
                body, pipelined = rest, b""
                self.remaining = length - len(rest)
            self.chunks = None
        else:
            tracker = h1.ChunkedTracker()
            try:
                end = tracker.feed(rest)
            except HttpError as error:
                self.answer(400, message=error.reason)
                return
            if end < 0:
                body, pipelined = rest, b""
                self.chunks = tracker
                self.remaining = -1
            else:
                body, pipelined = rest[:end], rest[end:]
                self.chunks = None
                self.remaining = 0
        self.pending = pipelined
        request = (
            self._forwarded_head(head, route) + body if body else self._forwarded_head(head, route)
        )
        complete = self.remaining == 0
        self.replay = request if complete else None
        self.phase = CONNECTING
        now = proxy.loop.time()
        self.deadline = now + listener.connect_timeout + listener.back_timeout
        self.deadline_status = 503
        self._send(request, complete)

    def _hold_ip_slot(self, cluster: ClusterRuntime) -> bool:
        """Hold a per-IP slot of ``cluster`` (instead of one of another cluster); False when
        this client IP has max_connections_per_ip connections to it already."""
        admission = self.proxy.admission
        held = self.ip_slot
        if held is not None:
            admission.release_ip_slot(held.cluster_id, self.peer_ip)
            self.ip_slot = None
        limit = cluster.per_ip_limit
        if not limit:
            return True
        if not admission.take_ip_slot(cluster.cluster_id, self.peer_ip, limit):
            return False
        self.ip_slot = cluster
        return True

    def _forwarded_head(self, head: h1.RequestHead, route: Route) -> bytes:
        """The head sent to the backend: the client's, with forwarding headers appended."""
        listener = self.listener
        seen = head.seen
        if (
            head.hop_by_hop
            or seen & listener.rebuild_mask
            or self.sticky is not None
            or route.request_edits
            or route.rewrites
        ):
            return self._rebuild_head(head, route)
        # fast path: the received head as is, plus the precomputed forwarding headers
        rid = self.request_id
        return b"".join(
            (
                head.raw[:-2],
                self._fwd_dynamic(seen) if seen & h1.SEEN_ADDED else self._fwd_static,
                b"" if seen & h1.SEEN_X_REQUEST_ID else b"X-Request-Id: " + rid + _CRLF,
                listener.sozu_id_prefix,
                rid,
                b"\r\n\r\n",
            )
        )

    def _fwd_dynamic(self, seen: int) -> bytes:
        """Forwarding headers when the client sent some of them (rare)."""
        return self.listener.forwarding_headers(self.peer_ip, self.peer_port, seen)

    def _rebuild_head(self, head: h1.RequestHead, route: Route) -> bytes:
        listener = self.listener
        headers = head.forward_headers() if head.hop_by_hop else list(head.headers)
        peer = self.peer_ip.encode()
        seen = head.seen
        version = b" HTTP/1.1\r\n" if head.version == 11 else b" HTTP/1.0\r\n"
        frontend = route.frontend
        target = head.target
        host_value: bytes | None = None
        if route.rewrites:
            if frontend.rewrite_path is not None:
                query = target.partition(b"?")[2]
                target = frontend.rewrite_path.encode() + (b"?" + query if query else b"")
            if frontend.rewrite_host is not None or frontend.rewrite_port is not None:
                host_name, host_port = _split_authority(head.host.decode("latin-1"))
                host_name = frontend.rewrite_host or host_name
                if frontend.rewrite_port is not None:
                    host_port = str(frontend.rewrite_port)
                host_value = (f"{host_name}:{host_port}" if host_port else host_name).encode()
        out: list[bytes] = [head.method, b" ", target, version]
        sticky_name = listener.sticky_name_lower
        drop_real_ip = listener.elide_x_real_ip
        replace_proto_port = not listener.trust_forwarded and seen & h1.SEEN_ADDED
        if replace_proto_port:
            seen &= ~h1.SEEN_ADDED  # the proxy's own values are added below
        edits = route.request_edits
        for name, value in headers:
            lower = name.lower()
            if replace_proto_port and lower in _PROTO_PORT_FIELDS:
                continue
            if lower == b"x-forwarded-for":
                value = value + b", " + peer
            elif lower == b"forwarded":
                value = value + b", " + listener.forwarded_value(self.peer_ip, self.peer_port)
            elif lower == b"cookie" and self.sticky is not None:
                value = _strip_cookie(value, sticky_name)
                if not value:
                    continue
            elif lower == b"x-real-ip" and drop_real_ip:
                continue
            elif lower == b"host" and host_value is not None:
                out += (name, b": ", host_value, _CRLF, b"X-Forwarded-Host: ", value, _CRLF)
                continue
            if edits and lower in edits:
                continue
            out += (name, b": ", value, _CRLF)
        out.append(listener.forwarding_headers(self.peer_ip, self.peer_port, seen))
        for name, value in route.request_added:
            out += (name, b": ", value, _CRLF)
        if not (seen & h1.SEEN_X_REQUEST_ID):
            out += (b"X-Request-Id: ", self.request_id, _CRLF)
        out += (listener.sozu_id_prefix, self.request_id, b"\r\n\r\n")
        return b"".join(out)

    def _send(self, request: bytes, complete: bool) -> None:
        """Send the request to a backend of the cluster: a pooled connection if one is idle,
        else a new connection (retried on other backends when it fails)."""
        cluster = self.cluster
        assert cluster is not None
        proxy = self.proxy
        now = proxy.loop.time()
        while True:
            backend = cluster.balancer.choose(now, sticky=self.sticky, exclude=self.tried)
            if backend is None:
                proxy.no_backend(cluster)
                self.answer(503, message="no backend available")
                return
            if cluster.sticky_session and backend.sticky_id != self.sticky:
                self.set_cookie = listener_cookie(self.listener, backend.sticky_id)
            connection = proxy.take_idle(backend)
            if connection is None:
                break
            self._attach(connection)
            connection.send_request(request, self)
            if complete:
                self._request_sent()
            else:
                self.phase = REQUEST_BODY
                self.deadline = now + self.listener.front_timeout
                self.deadline_status = 408
            return
        self.attempts += 1
        self.tried.append(backend)
        backend.active_connections += 1
        proxy.connect(backend, self, request, complete)

    def _attach(self, connection: BackendConnection) -> None:
        self.backend = connection
        connection.session = self
        connection.backend.active_requests += 1

    def connected(self, connection: BackendConnection, request: bytes, complete: bool) -> None:
        """A new backend connection for this session is up: send the request."""
        if self._closed or self.phase != CONNECTING:
            connection.release_or_close(reusable=True)
            return
        self._attach(connection)
        connection.send_request(request, self)
        if complete:
            self._request_sent()
            return
        self.phase = REQUEST_BODY
        self.deadline = self.proxy.loop.time() + self.listener.front_timeout
        self.deadline_status = 408
        # body bytes that arrived while the connection was being opened
        if self._paused_for_pipeline:
            self._paused_for_pipeline = False
            self.transport.resume_reading()
        if self.pending:
            data, self.pending = self.pending, b""
            self._forward_body(data)

    def connect_failed(self, backend: Backend) -> None:
        """A backend connection could not be opened: try another backend, or answer 503."""
        if self._closed or self.phase != CONNECTING:
            return
        if self.attempts >= CONNECT_ATTEMPTS or self.replay is None:
            self.answer(503, message="could not connect to a backend")
            return
        self._send(self.replay, True)

    def retry_after_reset(self, connection: BackendConnection) -> bool:
        """A reused connection closed before answering: send the request again on a new one
        (only when nothing of the answer was sent and the whole request is still here)."""
        if self.replay is None or self.response_started or self._closed:
            return False
        self.backend = None
        self.phase = CONNECTING
        backend = connection.backend
        self.attempts += 1
        backend.active_connections += 1
        self.proxy.connect(backend, self, self.replay, True)
        return True

    def _request_sent(self) -> None:
        self.phase = WAITING
        self.deadline = self.proxy.loop.time() + self.listener.back_timeout
        self.deadline_status = 504

    def _forward_body(self, data: bytes) -> None:
        backend = self.backend
        assert backend is not None
        self.replay = None
        self.deadline = self.proxy.loop.time() + self.listener.front_timeout
        if self.remaining > 0:
            if len(data) <= self.remaining:
                backend.transport.write(data)
                self.remaining -= len(data)
                if self.remaining == 0:
                    self._request_sent()
                return
            backend.transport.write(data[: self.remaining])
            self.pending = data[self.remaining :]
            self.remaining = 0
            self._request_sent()
            return
        tracker = self.chunks
        assert tracker is not None
        try:
            end = tracker.feed(data)
        except HttpError as error:
            self.answer(400, message=error.reason)
            return
        if end < 0:
            backend.transport.write(data)
            return
        backend.transport.write(data[:end])
        self.pending = data[end:]
        self.chunks = None
        self.remaining = 0
        self._request_sent()

    # ----------------------------------------------------------------- the answer

    def response_head_started(self) -> None:
        self.response_started = True
        self.deadline = self.proxy.loop.time() + self.listener.back_timeout
        self.deadline_status = -1  # abort: the answer has begun

    def response_done(self) -> None:
        """The backend's answer was forwarded completely."""
        self.backend = None
        self.route = None
        self.cluster = None
        self.replay = None
        if self._peer_paused:
            self._peer_paused = False
        if self.phase == REQUEST_BODY or not self.keep_alive or self.proxy.stopping:
            # answered before the request was complete (e.g. an early 413), or closing
            self.close()
            return
        self.phase = IDLE
        self.head = None
        self.fast_raw = b""
        now = self.proxy.loop.time()
        self.deadline = now + self.listener.front_timeout
        self.deadline_status = 0
        if self._paused_for_pipeline:
            self._paused_for_pipeline = False
            self.transport.resume_reading()
        if self.pending:
            data, self.pending = self.pending, b""
            self._read_head(data)

    def response_failed(self, status: int, message: str) -> None:
        """The backend failed before any byte of the answer was sent."""
        self.backend = None
        if not self.response_started:
            self.answer(status, message=message)
        else:
            self.abort()

    def start_tunnel(self) -> None:
        self.phase = TUNNEL
        self.deadline = self.proxy.loop.time() + self.listener.front_timeout
        self.deadline_status = -1
        if self.pending and self.backend is not None:
            self.backend.transport.write(self.pending)
            self.pending = b""

    # ----------------------------------------------------------------- answering directly

    def answer(self, status: int, *, message: str = "", location: str = "") -> None:
        """Send a default (or custom) answer and close the connection."""
        listener = self.listener
        proxy = self.proxy
        proxy.metrics.count_status(status)
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.abandon()
        head = self.request_head()
        if head is None:  # no request was read (unparsable, timeout): the answer gets its own id
            self.request_id = proxy.next_request_id()
        route = ""
        if head is not None:
            route = (head.method + b" " + head.host + head.target).decode("latin-1")
        cluster = self.cluster
        variables = {
            "REQUEST_ID": self.request_id.decode() if self.request_id else "",
            "ROUTE": route,
            "CLUSTER_ID": cluster.cluster_id if cluster is not None else "",
            "BACKEND_ID": "",
            "MESSAGE": message,
            "REDIRECT_LOCATION": location,
            "WWW_AUTHENTICATE": f'Basic realm="{cluster.www_authenticate}"'
            if cluster is not None and cluster.www_authenticate
            else "",
            "DURATION": f"{(proxy.loop.time() - self.started) * 1000:.0f}ms",
            "PHASE": _PHASE_NAMES.get(self.phase, ""),
            "RETRY_AFTER": str(cluster.retry_after)
            if status == 429 and cluster is not None and cluster.retry_after
            else "",
        }
        data, _close = listener.answers.render(
            status, variables, cluster.cluster_id if cluster is not None else None
        )
        hsts = self.hsts()[0]
        if hsts:
            data = _with_hsts(data, hsts)
        if head is not None and head.method == b"HEAD":
            data = data[: data.find(b"\r\n\r\n") + 4]
        self.phase = CLOSING
        self.deadline = proxy.loop.time() + listener.front_timeout
        self.deadline_status = -1
        if proxy.access_logs:
            proxy.access_log(self, status, message)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            transport.close()

    def hsts(self) -> tuple[bytes, bool]:
        """(Strict-Transport-Security line or b"", replace the backend's) for the current
        answer: the route's frontend setting, else the listener's (HTTPS only)."""
        route = self.route
        if route is not None and route.hsts_line is not None:
            return route.hsts_line, route.hsts_force
        listener = self.listener
        return listener.hsts_line, listener.hsts_force

    def redirect(
        self, status: int, scheme: str, host: bytes, port: int | None, target: bytes
    ) -> None:
        default = 443 if scheme == "https" else 80
        authority = host.decode("latin-1")
        if port is not None and port != default:
            authority = f"{authority}:{port}"
        self.answer(status, location=f"{scheme}://{authority}{target.decode('latin-1')}")

    def close(self) -> None:
        """Close after what was written is flushed."""
        self.phase = CLOSING
        self.deadline_status = -1
        transport = self.transport
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        """Cut the connection (an answer cannot be completed)."""
        self.phase = CLOSING
        transport = self.transport
        if transport is not None:
            transport.abort()

    # ----------------------------------------------------------------- timeouts

    def check_deadline(self, now: float) -> None:
        """Called by the worker's sweeper when ``now`` passed ``deadline``."""
        status = self.deadline_status
        phase = self.phase
        if phase == CLOSING:
            self.abort()
            return
        if status == 0:  # idle: nothing to say
            self.close()
            return
        if status == -1 or self.response_started:
            self.abort()
            return
        if phase == CONNECTING:
            status = 503
        self.answer(status, message="timeout")

    def soft_stop(self) -> None:
        """Soft stop: an idle keep-alive connection closes now, a busy one after its answer.
        A connection that has not sent its first request yet was accepted a moment ago (its
        request may already be on the way): that request is answered, then it closes."""
        if self.phase == IDLE and self.request_id and not self.pending:
            self.close()
        else:
            self.keep_alive = False


_PHASE_NAMES = {
    IDLE: "idle",
    HEAD: "request head",
    CONNECTING: "connecting to backend",
    REQUEST_BODY: "request body",
    WAITING: "waiting for response",
    TUNNEL: "tunnel",
    CLOSING: "closing",
}


def listener_cookie(listener: HttpListener, sticky_id: str) -> bytes:
    name: bytes = listener.sticky_name
    return b"Set-Cookie: " + name + b"=" + sticky_id.encode() + b"; Path=/\r\n"


def _sticky_cookie(head: h1.RequestHead, name_lower: bytes) -> str | None:
    if not (head.seen & h1.SEEN_COOKIE):
        return None
    prefix = name_lower + b"="
    for header, value in head.headers:
        if header.lower() != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part[: len(prefix)].lower() == prefix:
                return part[len(prefix) :].decode("latin-1")
    return None


def _strip_cookie(value: bytes, name_lower: bytes) -> bytes:
    prefix = name_lower + b"="
    kept = [p.strip() for p in value.split(b";") if p.strip()[: len(prefix)].lower() != prefix]
    return b"; ".join(p for p in kept if p)


def _has_field(head: h1.ResponseHead, name: bytes) -> bool:
    """Whether the head has a field called ``name`` (lowercase)."""
    return any(field.lower() == name for field, _ in head.headers)


def _with_hsts(answer: bytes, line: bytes) -> bytes:
    """A default answer with the Strict-Transport-Security line after its status line, unless
    its template has one already (never twice)."""
    head_end = answer.find(b"\r\n\r\n")
    if b"\r\nstrict-transport-security:" in answer[:head_end].lower():
        return answer
    cut = answer.find(b"\r\n") + 2
    return answer[:cut] + line + answer[cut:]


def _split_authority(authority: str) -> tuple[str, str]:
    """(host, port or "") of a Host value; IPv6 literals keep their brackets."""
    if authority.startswith("["):
        host, _, rest = authority.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else ""
    host, sep, port = authority.rpartition(":")
    return (host, port) if sep else (authority, "")


def _covered(host: bytes, names: tuple[str, ...]) -> bool:
    """RFC 6125 matching of a Host against the served certificate's names (wildcards cover
    exactly one leftmost label)."""
    text = host.decode("latin-1")
    if text.startswith("["):
        return text in names
    for name in names:
        if name == text:
            return True
        if name.startswith("*.") and "." in text and text.partition(".")[2] == name[2:]:
            return True
    return False


# ------------------------------------------------------------------------- backend side


class BackendConnection(asyncio.BufferedProtocol):
    """A connection to a backend: carries one request at a time, then goes back to the pool.

    It reads into the worker's buffer (see :mod:`.reading`): a small read once the client's
    write buffer holds data, so that a client that stops reading costs a bounded amount."""

    __slots__ = (
        "_client_paused",
        "_closed",
        "backend",
        "body",
        "buf",
        "chunks",
        "eof",
        "head_done",
        "interim",
        "keep_alive",
        "proxy",
        "received",
        "remaining",
        "reused",
        "session",
        "transport",
    )

    def __init__(self, proxy: ProxyServices, backend: Backend) -> None:
        self.proxy = proxy
        self.backend = backend
        self.transport: Any = None
        self.session: FrontendSession | None = None
        self.buf = b""
        self.head_done = False
        self.interim = 0  # interim responses relayed for the current request
        self.body = BODY_NONE
        self.remaining = 0
        self.chunks: h1.ChunkedTracker | None = None
        self.keep_alive = True
        self.received = False  # any byte of the current answer received
        self.eof = False  # the backend ended its side (matters in a tunnel)
        self.reused = False
        self._closed = False
        self._client_paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # what waits to be sent to the backend is bounded: past it, the client is not read
        transport.set_write_buffer_limits(self.proxy.write_buffer_limit)

    def send_request(self, request: bytes, session: FrontendSession) -> None:
        self.session = session
        self.buf = b""
        self.head_done = False
        self.received = False
        self.interim = 0
        self.transport.write(request)

    def get_buffer(self, sizehint: int) -> memoryview:
        session = self.session
        reads = self.proxy.reads
        if session is not None and session.transport.get_write_buffer_size():
            return reads.small
        return reads.large

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.proxy.reads.take(nbytes))

    # flow control: the backend's send buffer is full → stop reading the client
    def pause_writing(self) -> None:
        session = self.session
        if session is not None and not self._client_paused:
            self._client_paused = True
            session.transport.pause_reading()

    def resume_writing(self) -> None:
        session = self.session
        if session is not None and self._client_paused:
            self._client_paused = False
            session.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            # an idle pooled connection must not speak: drop it
            self.close()
            return
        self.received = True
        if session.phase == TUNNEL:
            session.transport.write(data)
            session.deadline = self.proxy.loop.time() + session.listener.back_timeout
            return
        if not self.head_done:
            if self.buf:
                data = self.buf + data
                self.buf = b""
            elif self._fast(session, data):
                return
            self._read_head(session, data)
            return
        self._forward(session, data)

    def _fast(self, session: FrontendSession, data: bytes) -> bool:
        """A complete common answer in one read (see :func:`.h1.simple_response`), forwarded
        in one write. False (nothing done) otherwise: the general path takes it."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        simple = h1.simple_response(data, end)
        if simple is None:
            return False
        status, length, keep_alive, cut_start, cut_end, line = simple
        received = len(data) - end - 4  # body bytes in this read
        if length < 0 or received > length or session.method == b"HEAD":
            return False
        route = session.route
        if route is not None and route.response_edits:
            return False
        proxy = self.proxy
        listener = session.listener
        extra = listener.sozu_id_prefix + session.request_id + _CRLF
        if session.set_cookie:
            extra += session.set_cookie
        hsts = listener.hsts_line if route is None or route.hsts_line is None else route.hsts_line
        if hsts:  # on this path the backend sent no Strict-Transport-Security of its own
            extra += hsts
        if not session.keep_alive or proxy.stopping:
            session.keep_alive = False
            extra += b"Connection: close\r\n"
        elif session.version == 10:
            extra += b"Connection: keep-alive\r\n"
        proxy.metrics.count_status(status)
        if proxy.access_logs:
            proxy.access_log(session, status, "")
        if received <= SMALL_BODY:  # one buffer, one write
            if cut_start:
                out = b"".join((data[:line], extra, data[line:cut_start], data[cut_end:]))
            else:
                out = b"".join((data[:line], extra, data[line:]))
            session.transport.write(out)
        else:  # a large first part of the body is written as is, not copied into the head
            head_end = end + 4
            if cut_start:
                head = b"".join((data[:line], extra, data[line:cut_start], data[cut_end:head_end]))
            else:
                head = b"".join((data[:line], extra, data[line:head_end]))
            session.transport.writelines((head, memoryview(data)[head_end:]))
        self.keep_alive = keep_alive
        if received == length:
            session.response_started = True
            self._done(session, b"")
            return True
        # the rest of the body follows: stream it (see _forward)
        self.head_done = True
        self.body = BODY_LENGTH
        self.remaining = length - received
        session.response_head_started()
        return True

    def _read_head(self, session: FrontendSession, data: bytes) -> None:
        listener = session.listener
        start = 0
        while True:
            try:
                head = h1.parse_response_head(data, listener.max_head, start)
            except HttpError as error:
                self.proxy.metrics.backend_parse_errors += 1
                self.close()
                session.response_failed(502, error.reason)
                return
            if head is None:
                self.buf = data[start:] if start else data
                return
            status = head.status
            if 100 <= status < 200 and status != 101:
                # interim answer (100 Continue, 103 Early Hints): relay it, read the final one
                self.interim += 1
                if self.interim > MAX_INTERIM_RESPONSES:
                    self.proxy.metrics.backend_parse_errors += 1
                    self.close()
                    session.response_failed(502, "too many interim (1xx) responses")
                    return
                session.transport.write(head.raw)
                start += head.length
                if start == len(data):
                    return
                continue
            if start:
                data = data[start:]
            break
        kind = h1.response_body_kind(head, session.method)
        if kind == BODY_TUNNEL and session.upgrade is None:
            self.close()
            session.response_failed(502, "the backend switched protocols without being asked")
            return
        rest: bytes | memoryview = (
            data[head.length :]
            if len(data) - head.length <= SMALL_BODY
            else memoryview(data)[head.length :]  # not copied: written as it came
        )
        tracker: h1.ChunkedTracker | None = None
        end = -1
        if kind == BODY_CHUNKED:
            # check the framing of what came with the head before anything reaches the client
            tracker = h1.ChunkedTracker()
            try:
                end = tracker.feed(rest)
            except HttpError as error:
                self.proxy.metrics.backend_parse_errors += 1
                self.close()
                session.response_failed(502, error.reason)
                return
        self.head_done = True
        self.body = kind
        self.keep_alive = head.keep_alive and kind not in (BODY_CLOSE, BODY_TUNNEL)
        session.response_head_started()
        out_head = self._client_head(session, head, kind)
        self.proxy.metrics.count_status(status)
        if self.proxy.access_logs:
            self.proxy.access_log(session, status, "")
        transport = session.transport
        if kind == BODY_TUNNEL:
            transport.writelines((out_head, rest)) if rest else transport.write(out_head)
            self.keep_alive = False
            session.start_tunnel()
            return
        if kind == BODY_NONE:
            transport.write(out_head)
            self._done(session, rest)
            return
        if kind == BODY_LENGTH:
            self.remaining = head.content_length
            if len(rest) < self.remaining:
                transport.writelines((out_head, rest)) if rest else transport.write(out_head)
                self.remaining -= len(rest)
                return
            body, extra = rest[: self.remaining], rest[self.remaining :]
            transport.writelines((out_head, body))
            self._done(session, extra)
            return
        if tracker is not None:
            if end < 0:
                self.chunks = tracker
                transport.writelines((out_head, rest)) if rest else transport.write(out_head)
                return
            transport.writelines((out_head, rest[:end]))
            self._done(session, rest[end:])
            return
        # close-delimited: everything until the backend closes
        transport.writelines((out_head, rest)) if rest else transport.write(out_head)

    def _client_head(self, session: FrontendSession, head: h1.ResponseHead, kind: int) -> bytes:
        """The response head for the client: the backend's, with the request id added after
        the status line, and rebuilt only when headers must be removed or changed."""
        listener = session.listener
        extra = listener.sozu_id_prefix + session.request_id + _CRLF
        if session.set_cookie:
            extra += session.set_cookie
        closing = not session.keep_alive or session.proxy.stopping or kind == BODY_CLOSE
        if closing:
            session.keep_alive = False
            extra += b"Connection: close\r\n"
        elif session.version == 10:
            extra += b"Connection: keep-alive\r\n"
        route = session.route
        edits = route.response_edits if route is not None else None
        hsts, force = session.hsts()
        replace_hsts = False
        if hsts:
            if not _has_field(head, b"strict-transport-security"):
                extra += hsts
            elif force:
                extra += hsts
                replace_hsts = True
        raw = head.raw
        if head.version == 10:  # a proxy sends its own version (RFC 9110 §6.2)
            raw = b"HTTP/1.1" + raw[8:]
        if not head.hop_by_hop and not edits and not replace_hsts:
            cut = head.status_line_end
            return raw[:cut] + extra + raw[cut:]
        lines = [raw[: head.status_line_end]]
        for name, value in head.forward_headers():
            lower = name.lower()
            if (edits and lower in edits) or (
                replace_hsts and lower == b"strict-transport-security"
            ):
                continue
            lines += (name, b": ", value, _CRLF)
        lines.append(extra)
        if route is not None:
            for name, value in route.response_added:
                lines += (name, b": ", value, _CRLF)
        lines.append(_CRLF)
        return b"".join(lines)

    def _forward(self, session: FrontendSession, data: bytes) -> None:
        transport = session.transport
        session.deadline = self.proxy.loop.time() + session.listener.back_timeout
        kind = self.body
        if kind == BODY_LENGTH:
            remaining = self.remaining
            if len(data) < remaining:
                transport.write(data)
                self.remaining = remaining - len(data)
                return
            transport.write(data[:remaining] if len(data) > remaining else data)
            self._done(session, data[remaining:])
            return
        if kind == BODY_CHUNKED:
            tracker = self.chunks
            assert tracker is not None
            try:
                end = tracker.feed(data)
            except HttpError:
                self.close()
                session.abort()
                return
            if end < 0:
                transport.write(data)
                return
            transport.write(data[:end])
            self.chunks = None
            self._done(session, data[end:])
            return
        transport.write(data)  # close-delimited

    def _done(self, session: FrontendSession, extra: bytes | memoryview) -> None:
        """The answer is complete: back to the pool (or closed), the session goes on."""
        backend = self.backend
        backend.active_requests -= 1
        self.session = None
        reusable = self.keep_alive and not extra and session.phase != REQUEST_BODY
        if self._client_paused:
            self._client_paused = False
            session.transport.resume_reading()
        if session._peer_paused:
            session._peer_paused = False
            self.transport.resume_reading()
        self.release_or_close(reusable)
        session.response_done()

    def release_or_close(self, reusable: bool) -> None:
        if reusable and not self._closed and not self.backend.removed:
            self.reused = True
            self.session = None
            self.proxy.release_idle(self)
        else:
            self.close()

    def eof_received(self) -> bool | None:
        session = self.session
        self.eof = True
        if session is not None and session.phase == TUNNEL:
            if not session.keep_alive:  # the client had half-closed too: the pipe is done
                session.close()
                return None
            if session.transport.can_write_eof():
                session.transport.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            self.proxy.backend_closed(self)
            return
        self._closed = True
        session = self.session
        self.session = None
        self.proxy.backend_closed(self)
        if session is None:
            return
        self.backend.active_requests -= 1
        if session.phase == TUNNEL:
            session.close()
            return
        if not self.head_done:
            if not self.received and self.reused and session.retry_after_reset(self):
                return
            session.response_failed(502, "the backend closed the connection before answering")
            return
        if self.body == BODY_CLOSE:
            session.backend = None
            session.keep_alive = False
            session.close()  # the close-delimited answer is complete
            return
        session.backend = None
        session.abort()  # the answer was cut short

    def close(self) -> None:
        """Close the connection (the request it carried, if any, is given up)."""
        if self.session is not None:
            self.backend.active_requests -= 1
            self.session = None
        if not self._closed:
            self._closed = True
            if self.transport is not None:
                self.transport.close()
            self.proxy.backend_closed(self)

    abandon = close  # the client went away, or was answered directly
