"""The header edits of the proxy, in one place: what a forwarded request head gets and loses,
and what a client-bound response head gets and loses.

Request heads (to the backend):

* the forwarding headers (``X-Forwarded-For``, ``Forwarded`` (RFC 7239), ``X-Real-IP`` when
  the listener sends it, ``X-Forwarded-Port`` and ``X-Forwarded-Proto``), appended, or
  extending the client's chains; a client's ``X-Forwarded-Proto``/``-Port`` are replaced
  unless the listener trusts its clients;
* ``X-Request-Id`` (unless the client sent one) and the listener's id header;
* hop-by-hop fields removed (RFC 9110 §7.6.1), the sticky cookie stripped, the frontend's
  header edits, and the rewritten Host (the original one moved to ``X-Forwarded-Host``).

Response heads (to the client): the listener's id header, the sticky ``Set-Cookie``, the
Strict-Transport-Security line, ``Connection`` when the connection closes (or an HTTP/1.0
client keeps it), hop-by-hop fields removed, the frontend's response edits.

The common request is forwarded as received plus a precomputed block of headers
(:meth:`ForwardingHeaders.for_peer`, once per connection, from pieces kept per client address:
a new connection costs one formatting); a head is rebuilt field by field
only when something in it must go or change (the client's own forwarding chain, hop-by-hop
fields, a sticky cookie, edits). Everything here is a plain function of bytes and settings:
tests drive it without sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sozu_config.grammar import split_host_port
from sozu_config.models import HttpFrontend, HttpListenerConfig, HttpsListenerConfig

from . import h1

if TYPE_CHECKING:
    from .routes import Route

__all__ = [
    "ForwardingHeaders",
    "client_response_head",
    "has_field",
    "rewrite",
    "strip_cookie",
    "with_hsts",
]

_CRLF: Final = b"\r\n"
# Set by the proxy from the listener; a client's copy is dropped unless it is trusted.
_PROTO_PORT_FIELDS: Final = frozenset((b"x-forwarded-proto", b"x-forwarded-port"))
_CLOSE: Final = b"Connection: close\r\n"
_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
# Client addresses whose forwarding block pieces a listener keeps (emptied when full).
PEER_PIECES_SIZE: Final = 1024


class ForwardingHeaders:
    """A listener's header settings, and the heads they make.

    Built from the listener's configuration (and rebuilt when it changes); sessions hold the
    block :meth:`for_peer` returns for their client and call the builders per request.
    """

    __slots__ = (
        "_by",
        "_peer_pieces",
        "_public_port",
        "elide_x_real_ip",
        "proto",
        "rebuild_mask",
        "send_x_real_ip",
        "sozu_id_prefix",
        "sticky_name",
        "sticky_name_lower",
        "trust_forwarded",
    )

    def __init__(
        self,
        config: HttpListenerConfig | HttpsListenerConfig,
        public_ip: str,
        public_port: int,
    ) -> None:
        self.proto = b"https" if isinstance(config, HttpsListenerConfig) else b"http"
        self.sticky_name = config.sticky_name.encode()
        self.sticky_name_lower = self.sticky_name.lower()
        self.sozu_id_prefix = config.sozu_id_header.encode() + b": "
        self.elide_x_real_ip = config.elide_x_real_ip
        self.send_x_real_ip = config.send_x_real_ip
        self.trust_forwarded = config.trust_forwarded_headers
        # Client fields that make the forwarded head a rebuilt one: the chains the proxy
        # extends, and the fields it replaces (X-Real-IP when elided; X-Forwarded-Proto and
        # -Port unless the client is a trusted proxy).
        mask = h1.SEEN_X_FORWARDED_FOR | h1.SEEN_FORWARDED
        if self.elide_x_real_ip:
            mask |= h1.SEEN_X_REAL_IP
        if not self.trust_forwarded:
            mask |= h1.SEEN_ADDED
        self.rebuild_mask = mask
        self._public_port = str(public_port).encode()
        self._by = _forwarded_node(public_ip)
        # client IP → the block of for_peer (nothing seen) before and after the client's port
        self._peer_pieces: dict[str, tuple[bytes, bytes]] = {}

    # ------------------------------------------------------------------ forwarding headers

    def forwarded_value(self, ip: str, port: int) -> bytes:
        """The element this proxy adds to ``Forwarded`` for a client at ``ip:port``."""
        before, after = self._forwarded_around_port(ip)
        return b"%s%d%s" % (before, port, after)

    def _forwarded_around_port(self, ip: str) -> tuple[bytes, bytes]:
        """That element for a client at ``ip``, before and after its port."""
        node = _forwarded_node(ip).strip(b'"')
        return b'proto=%s;for="%s:' % (self.proto, node), b'";by=%s' % self._by

    def for_peer(self, ip: str, port: int, seen: int = 0) -> bytes:
        """The headers added to every request from ``ip:port`` (X-Forwarded-Port and -Proto
        only when ``seen`` says the client did not send them, which a caller says only for a
        trusted client); precomputed once per connection for the common case, from the
        pieces kept for the client's address."""
        if seen:
            head, tail = self._pieces(ip, seen)
            if seen & h1.SEEN_FORWARDED:  # the port is in Forwarded only
                return head + tail
        else:
            cached = self._peer_pieces.get(ip)
            if cached is None:
                peer_pieces = self._peer_pieces
                if len(peer_pieces) >= PEER_PIECES_SIZE:
                    peer_pieces.clear()
                cached = peer_pieces[ip] = self._pieces(ip, 0)
            head, tail = cached
        return b"%s%d%s" % (head, port, tail)

    def _pieces(self, ip: str, seen: int) -> tuple[bytes, bytes]:
        """The block of :meth:`for_peer`, cut where the client's port goes (in
        ``Forwarded``; the tail is empty when that is not added)."""
        peer = ip.encode()
        head = b"" if seen & h1.SEEN_X_FORWARDED_FOR else b"X-Forwarded-For: " + peer + _CRLF
        tail = b""
        if not seen & h1.SEEN_FORWARDED:
            before, after = self._forwarded_around_port(ip)
            head += b"Forwarded: " + before
            tail = after + _CRLF
        if self.send_x_real_ip:
            tail += b"X-Real-IP: " + peer + _CRLF
        if not seen & h1.SEEN_X_FORWARDED_PORT:
            tail += b"X-Forwarded-Port: " + self._public_port + _CRLF
        if not seen & h1.SEEN_X_FORWARDED_PROTO:
            tail += b"X-Forwarded-Proto: " + self.proto + _CRLF
        return head, tail

    # ------------------------------------------------------------------ request heads

    def simple_request(
        self, data: bytes, end: int, cut_start: int, cut_end: int, peer: bytes, rid: bytes
    ) -> bytes:
        """The head of a request taken by the fast path (see :func:`.h1.simple_request`):
        the client's without its Connection line (``cut_start:cut_end``, hop-by-hop), then
        the connection's forwarding block ``peer`` and the request id."""
        return b"".join(
            (
                data[:cut_start] + data[cut_end : end + 2] if cut_start else data[: end + 2],
                peer,
                b"X-Request-Id: ",
                rid,
                _CRLF,
                self.sozu_id_prefix,
                rid,
                b"\r\n\r\n",
            )
        )

    def request_head(
        self,
        head: h1.RequestHead,
        route: Route,
        peer: bytes,
        peer_ip: str,
        peer_port: int,
        rid: bytes,
        sticky: str | None,
    ) -> bytes:
        """The head sent to the backend: the client's, with forwarding headers appended (and
        its target and Host rewritten when the route says so).

        ``peer`` is the connection's precomputed :meth:`for_peer` block; ``sticky`` the
        sticky id found in the request's cookie (the cookie is then stripped)."""
        seen = head.seen
        if (
            head.hop_by_hop
            or seen & self.rebuild_mask
            or sticky is not None
            or route.request_edits
            or route.rewrites
        ):
            return self._rebuilt_request_head(head, route, peer_ip, peer_port, rid, sticky)
        # the received head as is, plus the precomputed forwarding headers
        return b"".join(
            (
                head.raw[:-2],
                self.for_peer(peer_ip, peer_port, seen) if seen & h1.SEEN_ADDED else peer,
                b"" if seen & h1.SEEN_X_REQUEST_ID else b"X-Request-Id: " + rid + _CRLF,
                self.sozu_id_prefix,
                rid,
                b"\r\n\r\n",
            )
        )

    def _rebuilt_request_head(
        self,
        head: h1.RequestHead,
        route: Route,
        peer_ip: str,
        peer_port: int,
        rid: bytes,
        sticky: str | None,
    ) -> bytes:
        headers = head.forward_headers() if head.hop_by_hop else list(head.headers)
        peer = peer_ip.encode()
        seen = head.seen
        version = b" HTTP/1.1\r\n" if head.version == 11 else b" HTTP/1.0\r\n"
        target, host_value = (
            rewrite(head, route.frontend) if route.rewrites else (head.target, None)
        )
        out: list[bytes] = [head.method, b" ", target, version]
        sticky_name = self.sticky_name_lower
        drop_real_ip = self.elide_x_real_ip
        replace_proto_port = not self.trust_forwarded and seen & h1.SEEN_ADDED
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
                value = value + b", " + self.forwarded_value(peer_ip, peer_port)
            elif lower == b"cookie" and sticky is not None:
                value = strip_cookie(value, sticky_name)
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
        out.append(self.for_peer(peer_ip, peer_port, seen))
        for name, value in route.request_added:
            out += (name, b": ", value, _CRLF)
        if not (seen & h1.SEEN_X_REQUEST_ID):
            out += (b"X-Request-Id: ", rid, _CRLF)
        out += (self.sozu_id_prefix, rid, b"\r\n\r\n")
        return b"".join(out)

    # ------------------------------------------------------------------ stickiness

    def sticky_id(self, head: h1.RequestHead) -> str | None:
        """The sticky id in the request's cookie named after the listener's sticky name."""
        if not (head.seen & h1.SEEN_COOKIE):
            return None
        prefix = self.sticky_name_lower + b"="
        for header, value in head.headers:
            if header.lower() != b"cookie":
                continue
            for part in value.split(b";"):
                part = part.strip()
                if part[: len(prefix)].lower() == prefix:
                    return part[len(prefix) :].decode("latin-1")
        return None

    def set_cookie(self, sticky_id: str) -> bytes:
        """The ``Set-Cookie`` line that pins a client to the backend of ``sticky_id``."""
        return b"Set-Cookie: " + self.sticky_name + b"=" + sticky_id.encode() + b"; Path=/\r\n"

    # ------------------------------------------------------------------ response heads

    def response_fields(
        self, rid: bytes, set_cookie: bytes, hsts: bytes, closing: bool, version: int
    ) -> bytes:
        """The fields the proxy adds after the status line of an answer: its id, the sticky
        ``Set-Cookie``, ``hsts`` (a Strict-Transport-Security line or b""), and
        ``Connection`` when it closes (or keeps an HTTP/1.0 client's connection)."""
        extra = self.sozu_id_prefix + rid + _CRLF
        if set_cookie:
            extra += set_cookie
        if hsts:
            extra += hsts
        if closing:
            extra += _CLOSE
        elif version == 10:
            extra += _KEEP_ALIVE
        return extra


def client_response_head(
    head: h1.ResponseHead,
    extra: bytes,
    route: Route | None,
    hsts: bytes,
    force_hsts: bool,
) -> bytes:
    """The response head for the client: the backend's, with ``extra`` (see
    :meth:`ForwardingHeaders.response_fields`, without HSTS) added after the status line, and
    rebuilt only when headers must be removed or changed. ``hsts`` is added when the backend
    sent none, or replaces the backend's when ``force_hsts``."""
    edits = route.response_edits if route is not None else None
    replace_hsts = False
    if hsts:
        if not has_field(head, b"strict-transport-security"):
            extra += hsts
        elif force_hsts:
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
        if (edits and lower in edits) or (replace_hsts and lower == b"strict-transport-security"):
            continue
        lines += (name, b": ", value, _CRLF)
    lines.append(extra)
    if route is not None:
        for name, value in route.response_added:
            lines += (name, b": ", value, _CRLF)
    lines.append(_CRLF)
    return b"".join(lines)


def strip_cookie(value: bytes, name_lower: bytes) -> bytes:
    """A Cookie value without the cookie called ``name_lower`` (any case)."""
    prefix = name_lower + b"="
    kept = [p.strip() for p in value.split(b";") if p.strip()[: len(prefix)].lower() != prefix]
    return b"; ".join(p for p in kept if p)


def has_field(head: h1.ResponseHead, name: bytes) -> bool:
    """Whether the head has a field called ``name`` (lowercase)."""
    return any(field.lower() == name for field, _ in head.headers)


def with_hsts(answer: bytes, line: bytes) -> bytes:
    """A default answer with the Strict-Transport-Security line after its status line, unless
    its template has one already (never twice)."""
    head_end = answer.find(b"\r\n\r\n")
    if b"\r\nstrict-transport-security:" in answer[:head_end].lower():
        return answer
    cut = answer.find(b"\r\n") + 2
    return answer[:cut] + line + answer[cut:]


def _forwarded_node(ip: str) -> bytes:
    """A node of the Forwarded header (RFC 7239): IPv6 (the addresses with a colon) quoted and
    bracketed."""
    if ":" in ip:
        return f'"[{ip}]"'.encode()
    return ip.encode()


def rewrite(head: h1.RequestHead, frontend: HttpFrontend) -> tuple[bytes, bytes | None]:
    """(target, Host value or None) of a request to a frontend that rewrites them."""
    target = head.target
    host_value: bytes | None = None
    if frontend.rewrite_path is not None:
        query = target.partition(b"?")[2]
        target = frontend.rewrite_path.encode() + (b"?" + query if query else b"")
    if frontend.rewrite_host is not None or frontend.rewrite_port is not None:
        host_name, port_text = split_host_port(head.host.decode("latin-1"))
        host_port = port_text or ""
        host_name = frontend.rewrite_host or host_name
        if frontend.rewrite_port is not None:
            host_port = str(frontend.rewrite_port)
        host_value = (f"{host_name}:{host_port}" if host_port else host_name).encode()
    return target, host_value
