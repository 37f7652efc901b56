"""HTTP/1.1 proxying, the client side: one :class:`FrontendSession` per client connection.

The hot path, per request: one read from the client, one write to a (pooled, already open)
backend connection, one read of the answer, one write to the client. Heads are parsed by
:mod:`.h1` (llhttp); the forwarded request head is the received head with the forwarding
headers appended, rebuilt only when hop-by-hop headers must go (:mod:`.headers`); the answer
is read and relayed by the :class:`~.backend.BackendConnection` carrying the request. Bodies
are never re-assembled: bytes flow through while :mod:`.h1` tracks where messages end, with
flow control in both directions (``pause_reading`` when the other side's write buffer is
full), so the memory of a connection is bounded whatever the body size.

No Task, no timer and no logging call per request: timeouts are deadlines checked by the
worker's sweeper (:meth:`FrontendSession.check_deadline`), new backend connections are the
only coroutines (one per connection, not per request, see :mod:`.pool`), access logs are
built only when on.

Lifecycle of a session
----------------------

A session is the connection; the request in flight is its :class:`~.exchange.Exchange`
(reset when its answer is complete). The session has one timer, ``deadline``, and
``deadline_status`` says what its expiry does: 0 closes silently, an HTTP status is answered
(503 in CONNECTING whatever it says), -1 cuts the connection (an answer has begun, or the
connection is closing). Phases (:mod:`.exchange`) and the deadline armed in each:

============  =====================================================  ======================
phase         entered when                                           deadline, on expiry
============  =====================================================  ======================
IDLE          connection made; an answer completed (keep-alive)      request_timeout (new
                                                                     connection), else
                                                                     front_timeout: close
HEAD          part of a head received                                request_timeout: 408
CONNECTING    head complete, a new backend connection is opening     connect_timeout +
              (up to CONNECT_ATTEMPTS backends when it fails)        back_timeout: 503
REQUEST_BODY  head sent, body bytes still to come from the client    front_timeout, re-armed
                                                                     per read: 408
WAITING       request sent, waiting for the answer                   back_timeout: 504
(answering)   the answer's head reached the client                   back_timeout, re-armed
              (``response_started``, phase unchanged)                per read: cut
TUNNEL        a 101 answered an upgrade request                      front_timeout /
                                                                     back_timeout per read
                                                                     of each side: cut
CLOSING       an answer given by the proxy, or the connection ends   front_timeout: cut
============  =====================================================  ======================

* Keep-alive: when the answer is complete (:meth:`FrontendSession.response_done`) the
  exchange is reset, the backend connection goes back to the pool, and the session returns to
  IDLE, or closes when the client or the answer said so, or the worker stops.
* Pipelining: bytes that arrive while a request is in flight are kept (``pending``; reading
  pauses past ``max_head`` bytes) and read as the next head once the answer is complete.
* A reused backend connection that closes before any byte of the answer gets the request
  again on a new connection, when the whole request is still at hand (``replay``).
* Upgrade: a request with ``Connection: upgrade`` answered by 101 turns the session into a
  TUNNEL: raw bytes both ways, half-closes passed on, closed when both sides ended.
* A client half-close (EOF) while its request is in flight still gets the answer; the
  connection then closes.
* Soft stop: an idle keep-alive connection closes at once; a connection that has not sent its
  first request yet is served once; a busy one closes after its answer (``Connection: close``).
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns
from typing import TYPE_CHECKING, Any, Final

from sozu_config.grammar import folded_names_cover, parse_authority

from . import h1
from .access_log import AccessEntry, exchange_entry
from .exchange import (
    CLOSING,
    CONNECTING,
    HEAD,
    IDLE,
    PHASE_NAMES,
    REQUEST_BODY,
    TUNNEL,
    WAITING,
    Exchange,
)
from .h1 import BODY_LENGTH, BODY_NONE, HttpError
from .headers import with_hsts
from .metrics import FOLD_AT, Counters, Sample
from .special import redirect_location, special_answer

if TYPE_CHECKING:
    from .backend import BackendConnection
    from .balancing import Backend
    from .listeners import HttpListener
    from .proxy_protocol import ProxyHeader
    from .routes import ClusterRuntime, Route
    from .services import ProxyServices

__all__ = ["FrontendSession"]

CONNECT_ATTEMPTS: Final = 3  # sōzu's CONN_RETRIES: connection attempts per request before 503
ROUTE_CACHE_SIZE: Final = 4096  # (host, target, method) → route entries kept per listener
_MISSING: Any = object()


class FrontendSession(asyncio.Protocol):
    """One client connection on an HTTP or HTTPS listener."""

    __slots__ = (
        "_closed",
        "_paused_for_pipeline",
        "backend",
        "backend_paused",
        "chunks",
        "deadline",
        "deadline_status",
        "exchange",
        "fwd_static",
        "ip_slot",
        "keep_alive",
        "listener",
        "max_fields",
        "peer_ip",
        "peer_port",
        "pending",
        "phase",
        "proxy",
        "proxy_header",
        "remaining",
        "session_id",
        "sni_checked",
        "sni_names",
        "started",
        "tls_facts",
        "transport",
    )

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.proxy: ProxyServices = listener.proxy
        self.transport: Any = None
        self.phase = IDLE
        self.exchange = Exchange()  # the request in flight (one at a time, reused)
        self.pending = b""  # bytes of the next head (or pipelined requests)
        self.backend: BackendConnection | None = None
        self.remaining = 0  # request body bytes still to forward (BODY_LENGTH)
        self.chunks: h1.ChunkedTracker | None = None  # request body framing (BODY_CHUNKED)
        self.keep_alive = True
        self.max_fields = h1.MAX_HEADER_FIELDS  # fields a request head may have (431 beyond)
        self.deadline = 0.0
        self.deadline_status = 0
        self.started = 0.0  # when the connection was made
        self.session_id = ""  # the connection's id in access logs (given with the first entry)
        self.tls_facts: tuple[str, str, str] | None = None  # for access logs (_tls_facts)
        self.sni_names: tuple[str, ...] | None = None
        self.sni_checked = b""  # the last Host found covered by the served certificate
        # the cluster whose per-IP slot this connection holds (max_connections_per_ip)
        self.ip_slot: ClusterRuntime | None = None
        self.peer_ip = ""
        self.peer_port = 0
        self.proxy_header: ProxyHeader | None = (
            None  # the PROXY protocol header, on expect_proxy listeners
        )
        self.fwd_static = b""  # the forwarding headers of this client (headers.for_peer)
        self._closed = False
        # this session paused the reading of its backend (a full client write buffer); the
        # backend connection resumes it when the answer is complete
        self.backend_paused = False
        self._paused_for_pipeline = False

    # ----------------------------------------------------------------- connection events

    def connection_made(self, transport: Any) -> None:
        listener = self.listener
        self._learn_peer(transport)
        if listener.tls_runtime is not None and self._speaks_h2(transport):
            return
        self.transport = transport
        # what waits to be sent to this client is bounded: past it, the backend is not read
        transport.set_write_buffer_limits(listener.proxy.write_buffer_limit)
        self._register()
        now = self.proxy.clock()
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
        exchange = self.exchange
        if exchange.t_start or exchange.bytes_in or exchange.bytes_out:
            self.end_exchange("cut" if exchange.status else "")
        self._unregister()

    def _learn_peer(self, transport: Any) -> None:
        """The facts of the connection its requests need: the client's address, its
        forwarding headers, the names of the certificate served."""
        listener = self.listener
        if self.peer_ip == "":  # not already set from a PROXY protocol header
            peer = transport.get_extra_info("peername")
            if peer:
                self.peer_ip, self.peer_port = peer[0], peer[1]
        self.fwd_static = listener.forwarding.for_peer(self.peer_ip, self.peer_port)
        tls = listener.tls_runtime
        if tls is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.sni_names = tls.names_for(ssl_object)

    def _register(self) -> None:
        """Count the connection (:class:`.h2_stream.StreamSession` is not one)."""
        self.proxy.session_opened(self)

    def _unregister(self) -> None:
        self.proxy.session_closed(self)

    def _speaks_h2(self, transport: Any) -> bool:
        """The TLS handshake chose HTTP/2 (ALPN ``h2``): an :class:`.h2_front.H2Session`
        takes the connection over, in this protocol's place. True when this session is not
        used: taken over, or dropped (``disable_http11`` and no ``h2``)."""
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn != "h2":
            if getattr(self.listener.config, "disable_http11", False):
                transport.abort()
                return True
            return False
        take_over = self.listener.take_over_h2
        if take_over is None:
            return False
        take_over(self, transport)
        return True

    def pause_writing(self) -> None:
        # the client reads slower than the backend sends: stop reading the backend
        backend = self.backend
        if backend is not None and not self.backend_paused:
            self.backend_paused = True
            backend.transport.pause_reading()

    def resume_writing(self) -> None:
        backend = self.backend
        if backend is not None and self.backend_paused:
            self.backend_paused = False
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
        if self.phase in (CONNECTING, WAITING) and not self.exchange.response_started:
            self.keep_alive = False
            return True
        if self.phase == WAITING:
            self.keep_alive = False
            return True
        return None

    # ----------------------------------------------------------------- reading

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        self.exchange.bytes_in += len(data)
        if phase == IDLE and not self.pending:
            end = data.find(b"\r\n\r\n")
            if end + 4 == len(data):
                simple = h1.simple_request(data, end)
                if simple is not None and self._fast(data, end, simple):
                    return
        if phase == TUNNEL:
            self.backend.transport.write(data)  # type: ignore[union-attr]
            self.exchange.back_out += len(data)
            self.deadline = self.proxy.clock() + self.listener.front_timeout
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
            if hostname is None or not folded_names_cover(
                self.sni_names, hostname.decode("latin-1")
            ):
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
        # from here on the request is this path's (the exchange was reset by the last answer)
        exchange = self.exchange
        exchange.t_start = monotonic_ns()
        rid = proxy.next_request_id()
        exchange.request_id = rid
        exchange.fast_raw = data
        exchange.fast_host = host
        exchange.fast_target = target
        exchange.method = method
        exchange.version = version
        exchange.route = route
        exchange.cluster = cluster
        self.keep_alive = keep_alive
        request = listener.forwarding.simple_request(
            data, end, cut_start, cut_end, self.fwd_static, rid
        )
        exchange.replay = request
        pool = proxy.pool
        connection = pool.take(backend)
        if connection is None:  # a new connection to the chosen backend
            self.phase = CONNECTING
            self.deadline = now + listener.connect_timeout + listener.back_timeout
            self.deadline_status = 503
            exchange.attempts = 1
            exchange.tried.append(backend)
            backend.active_connections += 1
            pool.connect(backend, self, request, True, listener.connect_timeout)
            return True
        self.backend = connection
        exchange.backend = backend
        backend.active_requests += 1
        connection.send_request(request, self)
        exchange.t_sent = exchange.t_start  # handed over at once (buckets start at 10 µs)
        self.phase = WAITING
        self.deadline = now + listener.back_timeout
        self.deadline_status = 504
        return True

    def _read_head(self, data: bytes) -> None:
        listener = self.listener
        if not self.exchange.t_start:
            self.exchange.t_start = monotonic_ns()
        try:
            head = h1.parse_request_head(data, listener.max_head, self.max_fields)
        except HttpError as error:
            self.proxy.metrics.frontend_parse_errors += 1
            self.answer(error.status, message=error.reason)
            return
        if head is None:
            self.pending = data
            if self.phase == IDLE:
                self.phase = HEAD
                self.deadline = self.proxy.clock() + listener.request_timeout
                self.deadline_status = 408
            return
        rest = data[head.length :] if len(data) > head.length else b""
        self._start(head, rest)

    # ----------------------------------------------------------------- a request

    def _start(self, head: h1.RequestHead, rest: bytes) -> None:
        listener = self.listener
        proxy = self.proxy
        exchange = self.exchange
        exchange.begin(proxy.next_request_id(), head)
        self.keep_alive = head.keep_alive
        host = parse_authority(head.host) if head.host else None
        if host is None:
            self.answer(400, message="missing or invalid Host")
            return
        if (
            self.sni_names is not None
            and listener.strict_sni
            and not folded_names_cover(self.sni_names, host.decode("latin-1"))
        ):
            self.answer(
                421, message="the Host is not covered by the certificate of this connection"
            )
            return
        route = listener.router.lookup(host, head.target, head.method)
        if route is None:
            self.answer(404)
            return
        exchange.route = route
        if route.special and self._answer_special(route, host, head):
            return
        cluster = route.cluster
        exchange.cluster = cluster
        if cluster is None:  # deny rule
            self.answer(401)
            return
        if cluster.https_redirect and not listener.tls:
            self.redirect(301, "https", host, cluster.https_redirect_port, head.target)
            return
        if self.ip_slot is not cluster and not self._hold_ip_slot(cluster):
            self.answer(429, message="too many connections from this address to this cluster")
            return
        if cluster.sticky_session:
            exchange.sticky = listener.forwarding.sticky_id(head)
        framed = self._frame_body(head, rest)
        if framed is None:
            return
        body, self.pending = framed
        forwarded = listener.forwarding.request_head(
            head,
            route,
            self.fwd_static,
            self.peer_ip,
            self.peer_port,
            exchange.request_id,
            exchange.sticky,
        )
        request = forwarded + body if body else forwarded
        complete = self.remaining == 0
        exchange.replay = request if complete else None
        self.phase = CONNECTING
        now = proxy.clock()
        self.deadline = now + listener.connect_timeout + listener.back_timeout
        self.deadline_status = 503
        self._send(request, complete)

    def _frame_body(self, head: h1.RequestHead, rest: bytes) -> tuple[bytes, bytes] | None:
        """(body bytes to send with the head, bytes of the next request) of what came after
        the head, setting the body's framing (``remaining``, ``chunks``); None when the
        request was answered (a malformed chunked body)."""
        kind = h1.request_body_kind(head)
        if kind == BODY_NONE:
            self.remaining = 0
            self.chunks = None
            return b"", rest
        if kind == BODY_LENGTH:
            length = head.content_length
            self.chunks = None
            if len(rest) >= length:
                self.remaining = 0
                return rest[:length], rest[length:]
            self.remaining = length - len(rest)
            return rest, b""
        tracker = h1.ChunkedTracker()
        try:
            end = tracker.feed(rest)
        except HttpError as error:
            self.answer(400, message=error.reason)
            return None
        if end < 0:
            self.chunks = tracker
            self.remaining = -1
            return rest, b""
        self.chunks = None
        self.remaining = 0
        return rest[:end], rest[end:]

    def _answer_special(self, route: Route, host: bytes, head: h1.RequestHead) -> bool:
        """Redirects and authentication of a ``special`` route (see :mod:`.special`). True
        when answered."""
        answer = special_answer(route, host, head, self.listener.tls)
        if answer is None:
            return False
        self.exchange.cluster = route.cluster
        status, location = answer
        self.answer(status, location=location)
        return True

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

    def _send(self, request: bytes, complete: bool) -> None:
        """Send the request to a backend of the cluster: a pooled connection if one is idle,
        else a new connection (retried on other backends when it fails)."""
        exchange = self.exchange
        cluster = exchange.cluster
        assert cluster is not None
        proxy = self.proxy
        pool = proxy.pool
        now = proxy.clock()
        while True:
            backend = cluster.balancer.choose(now, sticky=exchange.sticky, exclude=exchange.tried)
            if backend is None:
                proxy.no_backend(cluster)
                self.answer(503, message="no backend available")
                return
            if cluster.sticky_session and backend.sticky_id != exchange.sticky:
                exchange.set_cookie = self.listener.forwarding.set_cookie(backend.sticky_id)
            connection = pool.take(backend)
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
        exchange.attempts += 1
        exchange.tried.append(backend)
        backend.active_connections += 1
        pool.connect(backend, self, request, complete, self.listener.connect_timeout)

    def _attach(self, connection: BackendConnection) -> None:
        self.backend = connection
        self.exchange.backend = connection.backend
        connection.backend.active_requests += 1

    def connected(self, connection: BackendConnection, request: bytes, complete: bool) -> None:
        """A new backend connection for this session is up: send the request."""
        if self._closed or self.phase != CONNECTING:
            connection.release_or_close(reusable=True)
            return
        self.exchange.connect_ns += connection.connect_ns
        self._attach(connection)
        connection.send_request(request, self)
        if complete:
            self._request_sent()
            return
        self.phase = REQUEST_BODY
        self.deadline = self.proxy.clock() + self.listener.front_timeout
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
        exchange = self.exchange
        if exchange.attempts >= CONNECT_ATTEMPTS or exchange.replay is None:
            self.answer(503, message="could not connect to a backend")
            return
        backend.stats.retries += 1
        self._send(exchange.replay, True)

    def retry_after_reset(self, connection: BackendConnection) -> bool:
        """A reused connection closed before answering: send the request again on a new one
        (only when nothing of the answer was sent and the whole request is still here)."""
        exchange = self.exchange
        if exchange.replay is None or exchange.response_started or self._closed:
            return False
        self.backend = None
        self.phase = CONNECTING
        backend = connection.backend
        backend.stats.retries += 1
        exchange.attempts += 1
        backend.active_connections += 1
        self.proxy.pool.connect(backend, self, exchange.replay, True, self.listener.connect_timeout)
        return True

    def _request_sent(self) -> None:
        self.exchange.t_sent = monotonic_ns()
        self.phase = WAITING
        self.deadline = self.proxy.clock() + self.listener.back_timeout
        self.deadline_status = 504

    def _forward_body(self, data: bytes) -> None:
        backend = self.backend
        assert backend is not None
        self.exchange.replay = None
        self.deadline = self.proxy.clock() + self.listener.front_timeout
        if self.remaining > 0:
            if len(data) <= self.remaining:
                backend.transport.write(data)
                self.exchange.back_out += len(data)
                self.remaining -= len(data)
                if self.remaining == 0:
                    self._request_sent()
                return
            backend.transport.write(data[: self.remaining])
            self.exchange.back_out += self.remaining
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
            self.exchange.back_out += len(data)
            return
        backend.transport.write(data[:end])
        self.exchange.back_out += end
        self.pending = data[end:]
        self.chunks = None
        self.remaining = 0
        self._request_sent()

    # ----------------------------------------------------------------- the answer

    def response_head_started(self) -> None:
        self.exchange.response_started = True
        self.deadline = self.proxy.clock() + self.listener.back_timeout
        self.deadline_status = -1  # abort: the answer has begun

    def response_done(self) -> None:
        """The backend's answer was forwarded completely: the exchange ends."""
        self.backend = None
        self.end_exchange()
        self.exchange.reset()
        if self.phase == REQUEST_BODY or not self.keep_alive or self.proxy.stopping:
            # answered before the request was complete (e.g. an early 413), or closing
            self.close()
            return
        self.phase = IDLE
        self.deadline = self.proxy.clock() + self.listener.front_timeout
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
        if not self.exchange.response_started:
            self.answer(status, message=message)
        else:
            self.abort()

    def start_tunnel(self) -> None:
        self.phase = TUNNEL
        self.deadline = self.proxy.clock() + self.listener.front_timeout
        self.deadline_status = -1
        if self.pending and self.backend is not None:
            self.backend.transport.write(self.pending)
            self.exchange.back_out += len(self.pending)
            self.pending = b""

    # ----------------------------------------------------------------- the end of an exchange

    def end_exchange(self, message: str = "", own: bool = False) -> None:
        """The exchange ends (answered, or cut): its figures go to the metrics of its backend
        (else its cluster, else the worker), its entry to the access log. ``own``: the proxy
        wrote the answer itself; ``message``: why."""
        exchange = self.exchange
        status = exchange.status
        proxy = self.proxy
        recording = proxy.metrics.enabled
        if status and exchange.t_start:
            now = monotonic_ns()
            t_sent = exchange.t_sent
            t_first = exchange.t_first
            total = now - exchange.t_start
            sample = (
                status,
                total,
                # the service time: the waits for the backend (connecting, answering) left out
                total - exchange.connect_ns - ((t_first or now) - t_sent if t_sent else 0),
                t_first - t_sent,  # (<= 0 when no backend answered: not counted)
                exchange.bytes_in,
                exchange.bytes_out,
                exchange.back_in,
                exchange.back_out,
            )
            if recording:
                backend = exchange.backend
                stats = backend.stats if backend is not None else self._stats_without_backend()
                samples = stats.samples
                samples.append(sample)
                if len(samples) >= FOLD_AT:
                    stats.fold()
                if own:
                    answers = stats.answers
                    answers[status] = answers.get(status, 0) + 1
            if proxy.access_logs:
                proxy.access_log(self._access_entry(sample, message))
        elif recording and (exchange.bytes_in or exchange.bytes_out):  # bytes of no answer
            own_stats = proxy.metrics.own
            own_stats.bytes_in += exchange.bytes_in
            own_stats.bytes_out += exchange.bytes_out
            own_stats.back_bytes_in += exchange.back_in
            own_stats.back_bytes_out += exchange.back_out
        exchange.backend = None
        exchange.status = exchange.t_start = exchange.t_sent = exchange.t_first = 0
        exchange.connect_ns = 0
        exchange.bytes_in = exchange.bytes_out = exchange.back_in = exchange.back_out = 0

    def _tls_facts(self) -> tuple[str, str, str]:
        """(TLS version, cipher, name asked for) of this connection, read once."""
        facts = self.tls_facts
        if facts is None:
            transport = self.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport else None
            tls = self.listener.tls_runtime
            if ssl_object is None or tls is None:
                return ("", "", "")
            cipher = ssl_object.cipher()
            facts = self.tls_facts = (
                ssl_object.version() or "",
                cipher[0] if cipher else "",
                tls.requested_name(ssl_object),
            )
        return facts

    def _stats_without_backend(self) -> Counters:
        """Where an exchange no backend carried counts: its cluster's own figures, else the
        worker's."""
        cluster = self.exchange.cluster
        return cluster.stats if cluster is not None else self.proxy.metrics.own

    def _access_entry(self, sample: Sample, message: str) -> AccessEntry:
        if not self.session_id:  # named when its first entry is written
            self.session_id = self.proxy.next_request_id().decode()
        return exchange_entry(
            self.exchange,
            sample,
            message,
            self.session_id,
            (self.peer_ip, self.peer_port),
            self._tls_facts() if self.listener.tls else None,
        )

    # ----------------------------------------------------------------- answering directly

    def answer(self, status: int, *, message: str = "", location: str = "") -> None:
        """Send a default (or custom) answer and close the connection."""
        listener = self.listener
        proxy = self.proxy
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.abandon()
        exchange = self.exchange
        head = exchange.request_head()
        if head is None:  # no request was read (unparsable, timeout): the answer gets its own id
            exchange.request_id = proxy.next_request_id()
        route = ""
        if head is not None:
            route = (head.method + b" " + head.host + head.target).decode("latin-1")
        cluster = exchange.cluster
        variables = {
            "REQUEST_ID": exchange.request_id.decode() if exchange.request_id else "",
            "ROUTE": route,
            "CLUSTER_ID": cluster.cluster_id if cluster is not None else "",
            "BACKEND_ID": "",
            "MESSAGE": message,
            "REDIRECT_LOCATION": location,
            "WWW_AUTHENTICATE": f'Basic realm="{cluster.www_authenticate}"'
            if cluster is not None and cluster.www_authenticate
            else "",
            "DURATION": f"{(proxy.loop.time() - self.started) * 1000:.0f}ms",
            "PHASE": PHASE_NAMES.get(self.phase, ""),
            "RETRY_AFTER": str(cluster.retry_after)
            if status == 429 and cluster is not None and cluster.retry_after
            else "",
        }
        data, _close = listener.answers.render(
            status, variables, cluster.cluster_id if cluster is not None else None
        )
        hsts = self.hsts()[0]
        if hsts:
            data = with_hsts(data, hsts)
        if head is not None and head.method == b"HEAD":
            data = data[: data.find(b"\r\n\r\n") + 4]
        self.phase = CLOSING
        self.deadline = proxy.loop.time() + listener.front_timeout
        self.deadline_status = -1
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            exchange.bytes_out += len(data)
            transport.close()
        if not exchange.t_start:  # answered before a request began (a timeout)
            exchange.t_start = monotonic_ns()
        exchange.status = status
        self.end_exchange(message, own=True)

    def hsts(self) -> tuple[bytes, bool]:
        """(Strict-Transport-Security line or b"", replace the backend's) for the current
        answer: the route's frontend setting, else the listener's (HTTPS only)."""
        route = self.exchange.route
        if route is not None and route.hsts_line is not None:
            return route.hsts_line, route.hsts_force
        listener = self.listener
        return listener.hsts_line, listener.hsts_force

    def redirect(
        self, status: int, scheme: str, host: bytes, port: int | None, target: bytes
    ) -> None:
        self.answer(status, location=redirect_location(scheme, host, port, target))

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
        if status == -1 or self.exchange.response_started:
            self.abort()
            return
        if phase == CONNECTING:
            status = 503
        elif phase == WAITING and self.exchange.backend is not None:
            # the backend took the request and said nothing in time: a passive failure
            self.proxy.pool.answer_timed_out(self.exchange.backend, self.listener.back_timeout)
        self.answer(status, message="timeout")

    def soft_stop(self) -> None:
        """Soft stop: an idle keep-alive connection closes now, a busy one after its answer.
        A connection that has not sent its first request yet was accepted a moment ago (its
        request may already be on the way): that request is answered, then it closes."""
        if self.phase == IDLE and self.exchange.request_id and not self.pending:
            self.close()
        else:
            self.keep_alive = False
