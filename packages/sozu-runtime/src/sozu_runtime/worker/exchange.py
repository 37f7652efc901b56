"""One request/response exchange, whatever carries it, and the phases of a client session.

An :class:`Exchange` holds what one request and its answer need, independently of the wire
protocol: the facts of the request head (method, version, host and target, through
:meth:`Exchange.request_head`), the routing result (route, cluster), the request id, the
stickiness (cookie received, ``Set-Cookie`` to send), the backends tried and the request kept
for a retry, and whether the answer has begun. An HTTP/1.1 session carries one exchange at a
time (its current request) and reuses the object from one request to the next; an HTTP/2
stream is the same unit.

What belongs to the connection stays on the session: the transport, bytes waiting to be read
(pipelining), keep-alive, the peer, the served certificate's names, the per-IP slot, the
framing of the request body on the wire, and the connection's one timer (``deadline``, checked
by the worker's sweeper; see the lifecycle in :mod:`.http`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from . import h1
from .h1 import HttpError

if TYPE_CHECKING:
    from .balancing import Backend
    from .routes import ClusterRuntime, Route

__all__ = [
    "CLOSING",
    "CONNECTING",
    "HEAD",
    "IDLE",
    "PHASE_NAMES",
    "REQUEST_BODY",
    "TUNNEL",
    "WAITING",
    "Exchange",
]

# Phases of a client session (see the lifecycle in :mod:`.http`).
IDLE: Final = 0  # waiting for a request head (fresh or keep-alive connection)
HEAD: Final = 1  # part of a head received
CONNECTING: Final = 2  # head complete, waiting for a backend connection
REQUEST_BODY: Final = 3  # streaming the request body to the backend
WAITING: Final = 4  # request sent, waiting for (the rest of) the response
TUNNEL: Final = 5  # upgraded: raw bytes both ways
CLOSING: Final = 6  # answer written, closing

PHASE_NAMES: Final = {
    IDLE: "idle",
    HEAD: "request head",
    CONNECTING: "connecting to backend",
    REQUEST_BODY: "request body",
    WAITING: "waiting for response",
    TUNNEL: "tunnel",
    CLOSING: "closing",
}

_LAZY_HEAD_LIMIT = 1 << 20  # a head taken by the fast path was already read whole


class Exchange:
    """One request and its answer.

    * ``request_id``: the id sent to the backend and the client (``X-Request-Id`` and the
      listener's id header). It stays after :meth:`reset`: it names the connection's last
      exchange until the next one begins.
    * ``head``: the parsed request head, or None when the fast path forwarded the request
      from ``fast_raw`` without building it (:meth:`request_head` builds it on demand; its
      host and target are then in ``fast_host`` and ``fast_target``).
    * ``method``, ``version`` (10 or 11), ``upgrade`` (the Upgrade value of a request asking
      for a protocol switch): head facts the answer's framing depends on.
    * ``route``, ``cluster``: where the request goes (None until routed, and for answers
      given without a route).
    * ``sticky``: the sticky id of the request's cookie; ``set_cookie``: the ``Set-Cookie``
      line for the answer when another backend was chosen (b"" when none).
    * ``attempts``, ``tried``: new backend connections opened for this request, and the
      backends tried (not chosen again); ``replay``: the whole forwarded request while it
      can be sent again (None once part of the body went out).
    * ``response_started``: a byte of the answer reached the client, so a failure from now
      on cuts the connection instead of answering.
    * What the metrics and the access log need (cleared by
      :meth:`.http.FrontendSession.end_exchange`, which runs before :meth:`reset`):
      ``backend`` (the backend that carried the request, None before one did), ``status``
      (of the answer, 0 until its head), the clock (``monotonic_ns``) at each phase:
      ``t_start`` (the request's first byte; 0 when no request began), ``t_sent`` (the
      request handed to a backend), ``t_first`` (the answer's first byte); ``connect_ns``
      (time spent opening backend connections); bytes from and to the client (``bytes_in``,
      ``bytes_out``) and the backend (``back_in``, ``back_out``).
    """

    __slots__ = (
        "attempts",
        "back_in",
        "back_out",
        "backend",
        "bytes_in",
        "bytes_out",
        "cluster",
        "connect_ns",
        "fast_host",
        "fast_raw",
        "fast_target",
        "head",
        "method",
        "replay",
        "request_id",
        "response_started",
        "route",
        "set_cookie",
        "status",
        "sticky",
        "t_first",
        "t_sent",
        "t_start",
        "tried",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.request_id = b""
        self.tried: list[Backend] = []
        self.fast_host = self.fast_target = b""
        self.reset()
        # the figures of the metrics, cleared by FrontendSession.end_exchange (not by reset)
        self.backend: Backend | None = None
        self.status = 0
        self.t_start = self.t_sent = self.t_first = self.connect_ns = 0
        self.bytes_in = self.bytes_out = self.back_in = self.back_out = 0

    def reset(self) -> None:
        """Forget the exchange (the one place per-request state is cleared): called when its
        answer is complete, before the connection's next request is read."""
        self.head: h1.RequestHead | None = None
        self.fast_raw = b""  # (fast_host and fast_target are read only while it is set)
        self.method = b""
        self.version = 11
        self.upgrade: bytes | None = None
        self.route: Route | None = None
        self.cluster: ClusterRuntime | None = None
        self.sticky: str | None = None
        self.set_cookie = b""
        self.attempts = 0
        if self.tried:
            self.tried.clear()
        self.replay: bytes | None = None
        self.response_started = False

    def begin(self, request_id: bytes, head: h1.RequestHead) -> None:
        """A request whose head was parsed starts."""
        self.request_id = request_id
        self.head = head
        self.method = head.method
        self.version = head.version
        self.upgrade = head.upgrade

    def request_head(self) -> h1.RequestHead | None:
        """The request's head (parsed now if the fast path skipped it), None before a head
        was read."""
        if self.head is None and self.fast_raw:
            try:
                self.head = h1.parse_request_head(self.fast_raw, _LAZY_HEAD_LIMIT)
            except HttpError:
                return None
        return self.head
