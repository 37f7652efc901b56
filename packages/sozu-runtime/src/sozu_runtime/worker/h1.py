"""HTTP/1.1 message heads and body framing for the proxy's data path, without I/O.

The worker's protocols hand this module the bytes they have buffered; it answers with a parsed
head (:class:`RequestHead`, :class:`ResponseHead`) or ``None`` when more bytes are needed, and
with body-framing decisions (:func:`request_body_kind`, :func:`response_body_kind`,
:class:`ChunkedTracker`). Bodies are never re-assembled: the proxy forwards body bytes unchanged
and only needs to know where each message ends.

llhttp (through httptools) does the byte-level validation of a head: token characters in
field names, control characters in field values, CRLF line endings, obs-fold, Content-Length
syntax and the Content-Length/Transfer-Encoding conflict. This module adds what a proxy needs
on top and what llhttp tolerates: exactly one SP between the request-line parts, HTTP/1.0 and
HTTP/1.1 only, Host presence and syntax, request-target forms, size limits, Transfer-Encoding
rules, trailing whitespace of field values, status codes outside 100-599, control characters
in the reason phrase, and the hop-by-hop header set (RFC 9110 §7.6.1).

Every refused message raises :class:`HttpError`; no partially parsed head is ever returned.
"""

from __future__ import annotations

import re
from typing import Final

import httptools

from sozu_config.grammar import (
    AUTHORITY_BYTES,
    FIELD_VALUE_BYTES,
    SAME_BYTE,
    TCHAR_BYTES,
    TOKEN_CLASS,
)

__all__ = [
    "BODY_CHUNKED",
    "BODY_CLOSE",
    "BODY_LENGTH",
    "BODY_NONE",
    "BODY_TUNNEL",
    "MAX_HEADER_FIELDS",
    "MAX_LEADING_EMPTY_LINES",
    "MAX_REQUEST_LINE",
    "SEEN_ADDED",
    "SEEN_AUTHORIZATION",
    "SEEN_COOKIE",
    "SEEN_FORWARDED",
    "SEEN_X_FORWARDED_FOR",
    "SEEN_X_FORWARDED_PORT",
    "SEEN_X_FORWARDED_PROTO",
    "SEEN_X_REAL_IP",
    "SEEN_X_REQUEST_ID",
    "ChunkedTracker",
    "HttpError",
    "RequestHead",
    "ResponseHead",
    "parse_request_head",
    "parse_response_head",
    "request_body_kind",
    "response_body_kind",
    "simple_request",
    "simple_response",
]

# ---------------------------------------------------------------------------------------------
# Limits and grammar (one place, each with where it comes from)
# ---------------------------------------------------------------------------------------------

# Longest request line accepted, whatever the buffer size (Apache's LimitRequestLine default).
MAX_REQUEST_LINE: Final = 8190
# Most header fields in one head (Apache's LimitRequestFields default).
MAX_HEADER_FIELDS: Final = 100
# Empty lines tolerated before a request line (RFC 9112 §2.2 says "at least one"; bounded here).
MAX_LEADING_EMPTY_LINES: Final = 8
# Content-Length digits: 15 decimal digits stay far below 2**63 and above any real body.
_MAX_CONTENT_LENGTH_DIGITS: Final = 15
# chunk-size hex digits (RFC 9112 §7.1): 16 digits are the 64-bit sizes other proxies accept.
_MAX_CHUNK_SIZE_DIGITS: Final = 16

# Body framing of one message (RFC 9112 §6.3).
BODY_NONE: Final = 0  # no body: the message ends with its head
BODY_LENGTH: Final = 1  # Content-Length bytes follow the head
BODY_CHUNKED: Final = 2  # chunked coding: follow it with a ChunkedTracker
BODY_CLOSE: Final = 3  # the body ends when the server closes the connection
BODY_TUNNEL: Final = 4  # the connection becomes an opaque byte pipe (101, 2xx to CONNECT)

# tchar (RFC 9110 §5.6.2), the authority alphabet (RFC 3986 §3.2) and the field-value alphabet
# (RFC 9110 §5.5), which the reason-phrase shares (RFC 9112 §4): see sozu_config.grammar.
_TCHAR: Final = TCHAR_BYTES
_AUTHORITY: Final = AUTHORITY_BYTES
_REASON_PHRASE: Final = FIELD_VALUE_BYTES
# HEXDIG (RFC 5234 B.1), case-insensitive as in RFC 9112 §7.1.
_HEXDIG: Final = b"0123456789abcdefABCDEF"

# chunk-ext (RFC 9112 §7.1.1) with quoted-string and quoted-pair (RFC 9110 §5.6.4), matched
# in full so that a quoted string can never hide a line ending from this parser.
_TOKEN: Final = TOKEN_CLASS.encode("ascii") + b"+"
_CHUNK_EXTENSIONS: Final = re.compile(
    rb"(?:[ \t]*;[ \t]*%s"
    rb'(?:[ \t]*=[ \t]*(?:%s|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]'
    rb'|\\[\t \x21-\x7e\x80-\xff])*"))?)*' % (_TOKEN, _TOKEN)
)
# ``value.translate(_SAME_BYTE, allowed)`` deletes the allowed bytes, so a non-empty result
# means a byte outside the alphabet (one C pass, no regex).
_SAME_BYTE: Final = SAME_BYTE
# Fast paths of the chunked framing, for the lines nearly every body is made of: a size line
# without extensions, and the CRLF after chunk data followed by such a line. Anything they
# do not match goes through the general, validating path.
_PLAIN_SIZE_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
_DATA_END_AND_SIZE_LINE: Final = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")
# A line feed, found with the regex engine when the data is a memoryview (which has no find()).
_LINE_FEED: Final = re.compile(b"\n")

# Field names this module looks at, lowercased, mapped to what they are.
_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _UPGRADE, _EXPECT, _HOP_BY_HOP = range(7)
# Fields the proxy itself looks at or rewrites when forwarding: their presence is recorded as
# bits of ``seen`` (powers of two above the kinds above, in the same lookup table).
SEEN_X_FORWARDED_FOR: Final = 1 << 4
SEEN_FORWARDED: Final = 1 << 5
SEEN_X_FORWARDED_PROTO: Final = 1 << 6
SEEN_X_FORWARDED_PORT: Final = 1 << 7
SEEN_X_REQUEST_ID: Final = 1 << 8
SEEN_COOKIE: Final = 1 << 9
SEEN_X_REAL_IP: Final = 1 << 10
SEEN_AUTHORIZATION: Final = 1 << 11
SEEN_ADDED: Final = SEEN_X_FORWARDED_PROTO | SEEN_X_FORWARDED_PORT
_FIRST_SEEN: Final = SEEN_X_FORWARDED_FOR
_FIELD_KIND: Final[dict[bytes, int]] = {
    b"x-forwarded-for": SEEN_X_FORWARDED_FOR,
    b"forwarded": SEEN_FORWARDED,
    b"x-forwarded-proto": SEEN_X_FORWARDED_PROTO,
    b"x-forwarded-port": SEEN_X_FORWARDED_PORT,
    b"x-request-id": SEEN_X_REQUEST_ID,
    b"cookie": SEEN_COOKIE,
    b"x-real-ip": SEEN_X_REAL_IP,
    b"authorization": SEEN_AUTHORIZATION,
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    # Always hop-by-hop (RFC 9110 §7.6.1; Proxy-Connection is the legacy spelling of Connection).
    b"keep-alive": _HOP_BY_HOP,
    b"proxy-connection": _HOP_BY_HOP,
    b"te": _HOP_BY_HOP,
}
# Fields that take a head off the fast path (see _fast_request / _fast_response): any of them
# present means the general parser with the full field list.
_REQUEST_RARE: Final = re.compile(
    rb"\r\n(?:"
    + b"|".join(
        re.escape(n)
        for n in sorted(_FIELD_KIND, key=len, reverse=True)
        if n not in (b"host", b"connection")  # the two handled by simple_request itself
    )
    + rb"):"
)
# (Strict-Transport-Security: the proxy adds its own HSTS only when the backend sent none.)
_RESPONSE_RARE: Final = re.compile(
    rb"\r\n(?:transfer-encoding|keep-alive|proxy-connection|te|upgrade|x-real-ip"
    rb"|strict-transport-security):"
)
# llhttp validates heads without calling back into Python (no on_* callbacks on this object).
_VALIDATE_ONLY: Final = object()
# Connection options that do not name an extra header to remove: either connection options
# proper, headers removed anyway, or headers that carry framing or routing and must survive
# (removing Host or Content-Length on a client's say-so would change how the message is read).
_CONNECTION_TOKENS_NOT_NAMING_EXTRA: Final = frozenset(
    (
        b"close",
        b"keep-alive",
        b"upgrade",
        b"connection",
        b"proxy-connection",
        b"te",
        b"host",
        b"content-length",
        b"transfer-encoding",
    )
)
_NO_TOKENS: Final[frozenset[bytes]] = frozenset()
# The Connection values browsers and servers send, pre-split, so that the common case does
# not split, strip and lowercase on every message.
_COMMON_CONNECTION_VALUES: Final[dict[bytes, frozenset[bytes]]] = {
    value: frozenset(token.strip().lower() for token in value.split(b","))
    for value in (
        b"keep-alive",
        b"Keep-Alive",
        b"close",
        b"Close",
        b"upgrade",
        b"Upgrade",
        b"keep-alive, Upgrade",
        b"Keep-Alive, Upgrade",
    )
}

_CONNECTION_UPGRADE: Final = (b"Connection", b"upgrade")


class HttpError(Exception):
    """A message that must be refused.

    ``status`` is the answer the proxy sends: on the request side 400 (malformed), 414
    (request line too long) or 431 (head too large, too many fields); on the response side
    always 502 (the caller answers the client with a bad-gateway page). ``reason`` is a short
    human-readable cause, suitable for logs and for the ``%MESSAGE`` answer variable.
    """

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class _Head:
    """What request and response heads share, and the llhttp callback that fills it.

    httptools calls :meth:`on_header` once per field, in order, while it validates the head.
    Fields the proxy looks at (framing, routing, hop-by-hop) are noted on the way, so that
    settling the head afterwards only looks at those few instead of every field again.
    """

    __slots__ = (
        "_connection_upgrade_index",
        "_drop",
        "_noted",
        "chunked",
        "content_length",
        "headers",
        "hop_by_hop",
        "keep_alive",
        "length",
        "raw",
        "seen",
        "version",
    )

    headers: list[tuple[bytes, bytes]]
    # Bits (SEEN_*) of the fields the proxy rewrites or checks that the head carries.
    seen: int
    version: int
    content_length: int
    chunked: bool
    keep_alive: bool
    hop_by_hop: bool
    length: int
    raw: bytes
    # (kind from _FIELD_KIND, index in headers, value) of each field this module looks at.
    _noted: list[tuple[int, int, bytes]]
    # Indices in ``headers`` of the fields forward_headers() leaves out, ascending.
    _drop: list[int]
    # Index in ``headers`` of the Connection field forwarded as ``Connection: upgrade``, or -1.
    _connection_upgrade_index: int

    def __init__(self) -> None:
        self.headers = []
        self._noted = []
        self.seen = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        """llhttp callback: one complete field, name as received, value without leading OWS."""
        # llhttp strips leading whitespace only; trailing OWS is not part of the value
        # (RFC 9110 §5.5). rstrip returns the same object when there is nothing to strip.
        value = value.rstrip(b" \t")
        kind = _FIELD_KIND.get(name.lower())
        if kind is not None:
            if kind >= _FIRST_SEEN:
                self.seen |= kind
            else:
                self._noted.append((kind, len(self.headers), value))
        self.headers.append((name, value))

    def forward_headers(self) -> list[tuple[bytes, bytes]]:
        """The fields to forward: ``headers`` without the hop-by-hop ones, in order.

        Removed: Connection and every field it names (except Host, Content-Length and
        Transfer-Encoding), Keep-Alive, Proxy-Connection, TE, Trailer, and Upgrade unless the
        message switches protocols. When it does (a request with ``upgrade`` set, a 101
        response), Upgrade is kept and the first Connection field becomes
        ``Connection: upgrade`` so that the next hop sees the switch too. Transfer-Encoding is
        kept: the chunked body is forwarded as is. Always a new list the caller may extend.
        """
        headers = self.headers
        drop = self._drop
        rewritten = self._connection_upgrade_index
        if rewritten >= 0:
            dropped = set(drop)
            return [
                _CONNECTION_UPGRADE if index == rewritten else field
                for index, field in enumerate(headers)
                if index not in dropped
            ]
        if not drop:
            return headers.copy()
        if len(drop) == 1:
            index = drop[0]
            return headers[:index] + headers[index + 1 :]
        dropped = set(drop)
        return [field for index, field in enumerate(headers) if index not in dropped]

    # Complexity: per-request hot path: the head's framing rules (RFC 9112 §6) decided in one frame.
    def _settle(self, version: int, request: bool, switching: bool) -> _RequestFields:  # noqa: C901, PLR0912, PLR0915
        """Decide framing, keep-alive and the hop-by-hop set from the noted fields.

        ``request``: the head is a request's (its Transfer-Encoding must end with chunked,
        and in HTTP/1.1 ``Connection: upgrade`` with an Upgrade field switches protocols);
        ``switching``: the message switches protocols whatever its fields (a 101
        response). Sets ``content_length``,
        ``chunked``, ``keep_alive`` (from version and Connection only) and ``hop_by_hop``,
        and returns what only a request uses. Raises ValueError with a reason when the
        framing is invalid; the callers turn it into the status their side answers with.
        """
        hosts: list[bytes] | None = None
        host_index = -1
        lengths: list[bytes] | None = None
        codings: list[bytes] | None = None
        connection: list[bytes] | None = None
        upgrades: list[bytes] | None = None
        expect_continue = False
        drop: list[int] = []
        for kind, index, value in self._noted:
            if kind == _HOST:
                if hosts is None:
                    hosts = [value]
                    host_index = index
                else:
                    hosts.append(value)
            elif kind == _CONNECTION:
                drop.append(index)
                if connection is None:
                    connection = [value]
                else:
                    connection.append(value)
            elif kind == _CONTENT_LENGTH:
                if lengths is None:
                    lengths = [value]
                else:
                    lengths.append(value)
            elif kind == _TRANSFER_ENCODING:
                if codings is None:
                    codings = [value]
                else:
                    codings.append(value)
            elif kind == _UPGRADE:
                drop.append(index)
                if upgrades is None:
                    upgrades = [value]
                else:
                    upgrades.append(value)
            elif kind == _EXPECT:
                if value.lower() == b"100-continue":
                    expect_continue = True
            else:
                drop.append(index)

        # llhttp already refuses several Content-Length fields, CL with TE and (in requests)
        # a TE not ending with chunked; they are checked again because the framing decided
        # here must not depend on how a given llhttp version or leniency flag behaves.
        if lengths is None:
            self.content_length = -1
        else:
            if len(lengths) > 1:
                raise ValueError("several Content-Length fields")
            value = lengths[0]
            if not value.isdigit() or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
                raise ValueError("invalid Content-Length")
            self.content_length = int(value)
        if codings is None:
            self.chunked = False
        else:
            if lengths is not None:
                raise ValueError("conflicting Content-Length and Transfer-Encoding")
            if version == 10:
                # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
                raise ValueError("Transfer-Encoding in an HTTP/1.0 message")
            self.chunked = _ends_with_chunked(codings)
            if request and not self.chunked:
                # RFC 9112 §6.3 item 4: the length of such a request cannot be determined.
                raise ValueError("Transfer-Encoding does not end with chunked")

        if connection is None:
            tokens = _NO_TOKENS
        else:
            tokens = _connection_tokens(connection)
            if not tokens <= _CONNECTION_TOKENS_NOT_NAMING_EXTRA:
                drop = self._with_named_fields(drop, tokens - _CONNECTION_TOKENS_NOT_NAMING_EXTRA)
        if version == 11:
            self.keep_alive = b"close" not in tokens
        else:
            self.keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        upgrade: bytes | None = None
        if request and version == 11 and upgrades is not None and b"upgrade" in tokens:
            upgrade = b", ".join(upgrades)
            if _offers_h2c(upgrade):
                # h2c smuggling: a backend that switched would take HTTP/2 straight from the
                # client through the tunnel, past every routing rule. Forwarded as a plain
                # request, without Upgrade (RFC 9113 §3.1 drops h2c upgrades anyway).
                upgrade = None
            else:
                switching = True
        self._connection_upgrade_index = -1
        if switching:
            drop = self._keep_upgrade_fields(drop)
        self._drop = drop
        self.hop_by_hop = bool(drop) or self._connection_upgrade_index >= 0
        return hosts, host_index, upgrade, expect_continue

    def _with_named_fields(self, drop: list[int], names: frozenset[bytes]) -> list[int]:
        """``drop`` plus the fields named by Connection options (rare path).

        ``seen`` is recomputed from the fields that stay: a forwarding field the client named
        in Connection is removed, so the proxy must add its own (otherwise a client could
        erase every forwarding field the backend relies on).
        """
        dropped = set(drop)
        seen = 0
        for index, (name, _) in enumerate(self.headers):
            lower = name.lower()
            if lower in names:
                dropped.add(index)
            elif index not in dropped:
                kind = _FIELD_KIND.get(lower, 0)
                if kind >= _FIRST_SEEN:
                    seen |= kind
        self.seen = seen
        return sorted(dropped)

    def _keep_upgrade_fields(self, drop: list[int]) -> list[int]:
        """Protocol switch: forward Upgrade, and Connection reduced to its ``upgrade`` option.

        A single ``Connection: upgrade`` field is forwarded as received; otherwise the first
        Connection field is rewritten by forward_headers() and any other one dropped.
        Returns ``drop`` without the kept fields.
        """
        headers = self.headers
        connections = [i for i in drop if headers[i][0].lower() == b"connection"]
        keep = {i for i in drop if headers[i][0].lower() == b"upgrade"}
        if connections:
            first = connections[0]
            keep.add(first)
            if len(connections) > 1 or headers[first][1].lower() != b"upgrade":
                self._connection_upgrade_index = first
        return [index for index in drop if index not in keep]


# What _Head._settle returns for the request parser: the Host values (None when absent) and
# the index of the first one in ``headers``, the Upgrade value when the request switches
# protocols, and whether it expects 100-continue.
_RequestFields = tuple[list[bytes] | None, int, bytes | None, bool]


class RequestHead(_Head):
    """A request head that passed every check and may be forwarded.

    Attributes (all set by :func:`parse_request_head`):

    * ``method``: the method token as received (case-sensitive; CONNECT never appears).
    * ``target``: origin-form (``/path?query``) or ``*`` (OPTIONS only). An absolute-form
      target (``http://host/path``) is converted: its authority becomes ``host`` and the Host
      field's value (RFC 9112 §3.2.2), its path and query become ``target``.
    * ``version``: 10 or 11.
    * ``headers``: (name as received, value without surrounding OWS), in received order.
    * ``host``: the authority to route on: the Host value, the absolute-form authority, or
      ``b""`` for an HTTP/1.0 request without either. Made of authority characters only.
    * ``content_length``: the declared body length, -1 when absent.
    * ``chunked``: the body uses the chunked coding (its last transfer coding).
    * ``keep_alive``: the client connection may be reused after this exchange (HTTP/1.1
      without ``Connection: close``, or HTTP/1.0 with ``Connection: keep-alive``).
    * ``upgrade``: the Upgrade value when an HTTP/1.1 request asks for a protocol switch
      (``Connection: upgrade`` and an Upgrade field), else None.
    * ``expect_continue``: an HTTP/1.1 request with ``Expect: 100-continue``.
    * ``hop_by_hop``: ``raw`` must not be forwarded as is; forward ``method``, ``target``,
      ``version`` and :meth:`forward_headers` instead. True when at least one field must be
      removed or rewritten (which includes every absolute-form request).
    * ``length``: bytes of the buffer consumed: leading empty lines, head, final CRLFCRLF.
      The next message (body or pipelined request) starts at ``buf[length:]``.
    * ``raw``: the received head from the request line to the final CRLFCRLF included.
    """

    __slots__ = ("expect_continue", "host", "method", "target", "upgrade")

    method: bytes
    target: bytes
    host: bytes
    upgrade: bytes | None
    expect_continue: bool

    def __repr__(self) -> str:
        return (
            f"RequestHead(method={self.method!r}, target={self.target!r}, "
            f"version={self.version}, host={self.host!r}, length={self.length})"
        )


class ResponseHead(_Head):
    """A response head that passed every check and may be forwarded.

    Attributes (all set by :func:`parse_response_head`):

    * ``status``: 100 to 599. ``version``: 10 or 11.
    * ``headers``, ``content_length``, ``chunked``, ``hop_by_hop``, ``length``, ``raw``: as
      for :class:`RequestHead` (``chunked`` False with a Transfer-Encoding that does not end
      with chunked: such a body is close-delimited).
    * ``keep_alive``: the backend connection is reusable after this response: the version
      and Connection allow it and the body does not run until the connection closes (a
      response without Content-Length or chunked framing is not reusable, even to a HEAD
      request, which only costs a new connection).
    * ``status_line_end``: offset in ``raw`` just after the status line's CRLF, where a
      header can be inserted.
    """

    __slots__ = ("status", "status_line_end")

    status: int
    status_line_end: int

    def __repr__(self) -> str:
        return f"ResponseHead(status={self.status}, version={self.version}, length={self.length})"


def _ends_with_chunked(values: list[bytes]) -> bool:
    """Whether the transfer codings listed in ``values`` end with chunked (RFC 9112 §6.1).

    Raises ValueError when the list is empty or chunked is applied more than once.
    """
    if len(values) == 1:
        value = values[0]
        if value == b"chunked":  # the only value seen in practice
            return True
    else:
        value = b",".join(values)
    codings = [coding.strip(b" \t").lower() for coding in value.split(b",")]
    # Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
    codings = [coding for coding in codings if coding]
    if not codings:
        raise ValueError("empty Transfer-Encoding")
    if codings.count(b"chunked") > 1:
        raise ValueError("chunked transfer coding applied more than once")
    return codings[-1] == b"chunked"


def _offers_h2c(upgrade: bytes) -> bool:
    """Whether an Upgrade value lists the h2c protocol (RFC 9113 §3.1), in any letter case."""
    return any(
        token.strip(b" \t").partition(b"/")[0].lower() == b"h2c" for token in upgrade.split(b",")
    )


def _connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """The lowercased connection options of the Connection fields (RFC 9110 §7.6.1)."""
    if len(values) == 1:
        common = _COMMON_CONNECTION_VALUES.get(values[0])
        if common is not None:
            return common
    tokens = (token.strip(b" \t").lower() for value in values for token in value.split(b","))
    return frozenset(token for token in tokens if token)


def _skip_empty_lines(buf: bytes | bytearray) -> int:
    """Offset of the request line after the empty lines RFC 9112 §2.2 lets a server skip.

    Returns -1 when ``buf`` ends in the middle of an empty line. Raises HttpError(400) on a
    bare LF or more than MAX_LEADING_EMPTY_LINES empty lines.
    """
    start = 0
    while buf.startswith(b"\r\n", start):
        start += 2
        if start > 2 * MAX_LEADING_EMPTY_LINES:
            raise HttpError(400, "too many empty lines before the request line")
    following = buf[start : start + 1]
    if following == b"\n":
        raise HttpError(400, "bare LF line ending")
    if following == b"\r" and len(buf) == start + 1:
        return -1
    return start


def _refuse_incomplete_request(buf: bytes | bytearray, start: int, max_head: int) -> None:
    """Raise when an incomplete request head can already be refused; return otherwise."""
    line_limit = max_head if max_head < MAX_REQUEST_LINE else MAX_REQUEST_LINE
    line_end = buf.find(b"\r\n", start)
    if line_end < 0:
        if len(buf) - start > line_limit or len(buf) >= max_head:
            raise HttpError(414, "request line too long")
    elif line_end - start > line_limit:
        raise HttpError(414, "request line too long")
    else:
        # A complete request line is judged now: an HTTP/0.9 request ("GET /") never sends
        # the empty line that would end a head, so waiting for it would only hold the
        # connection until request_timeout.
        _split_request_line(bytes(buf[start:line_end]))
    if len(buf) >= max_head:
        raise HttpError(431, "request head too large")
    # A valid head ends at the first CRLFCRLF; two LFs in a row can only be bare LF endings,
    # refused now rather than after waiting for bytes that a bare-LF client never sends.
    if buf.find(b"\n\n", start) >= 0:
        raise HttpError(400, "bare LF line ending")


def _split_request_line(line: bytes) -> tuple[bytes, bytes, int]:
    """(method, target, version 10 or 11) of a request line without its CRLF.

    Raises HttpError(400) for anything but ``method SP target SP HTTP/1.x``: this covers
    HTTP/0.9 (``GET /``), whitespace inside the target, doubled spaces and other versions.
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version_name = parts
    if version_name == b"HTTP/1.1":
        return method, target, 11
    if version_name == b"HTTP/1.0":
        return method, target, 10
    raise HttpError(400, "unsupported HTTP version")


def _split_absolute_form(target: bytes) -> tuple[bytes, bytes]:
    """(authority, origin-form target) of an http or https absolute-form target (RFC 9112 §3.2.2).

    Raises HttpError(400) for any other scheme or form, or an empty authority.
    """
    scheme = target[:8].lower()
    if scheme.startswith(b"http://"):
        rest = target[7:]
    elif scheme == b"https://":
        rest = target[8:]
    else:
        raise HttpError(400, "request target is not origin-form, absolute-form or asterisk-form")
    path_start = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter, 0, path_start)
        if found >= 0:
            path_start = found
    authority = rest[:path_start]
    if not authority:
        raise HttpError(400, "absolute-form target without authority")
    path = rest[path_start:]
    if not path.startswith(b"/"):
        path = b"/" + path  # "http://a?q" means "/?q" (RFC 9112 §3.2.1: empty path is "/")
    return authority, path


def _feed_request(raw: bytes, method: bytes) -> RequestHead:
    """Validate the head bytes with llhttp; the returned head holds the fields, classified."""
    head = RequestHead()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # llhttp pauses after a complete head that asks for a protocol switch
    except httptools.HttpParserInvalidMethodError:
        # llhttp knows a fixed list of methods; any other token is a valid extension method
        # (RFC 9110 §9.1). The rest of the head is validated under a stand-in method.
        if not method or method.translate(_SAME_BYTE, _TCHAR):
            raise HttpError(400, "method is not a token") from None
        return _feed_request(b"GET" + raw[len(method) :], b"GET")
    except httptools.HttpParserError as exc:
        raise HttpError(400, f"malformed request head: {exc}") from None
    return head


# Complexity: per-request fast path: a simple head recognised in one frame, each exit a fallback.
def simple_request(data: bytes, end: int) -> tuple[bytes, bytes, bytes, int, bool, int, int] | None:  # noqa: C901, PLR0911, PLR0912
    """(method, target, host, version, keep_alive, cut_start, cut_end) when ``data`` is
    exactly one complete request head (``end`` = offset of its final CRLFCRLF) of the common
    kind — origin-form, HTTP/1.x, one Host, no body, no hop-by-hop field but at most one
    ``Connection: keep-alive|close`` line (at ``data[cut_start:cut_end]``, 0/0 when absent), no
    forwarding or other field the proxy must look at — that passes every check of
    :func:`parse_request_head`; None otherwise (use the general parser: it gives the precise
    answer). No object is built: this is the hot path."""
    line_end = data.find(b"\r\n")
    if line_end > MAX_REQUEST_LINE or end + 4 > 16384:
        return None
    parts = data[:line_end].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version_name = parts
    if version_name == b"HTTP/1.1":
        keep_alive = True
        version = 11
    elif version_name == b"HTTP/1.0":
        keep_alive = False
        version = 10
    else:
        return None
    if target[:1] != b"/" or b"#" in target or method == b"CONNECT":
        return None
    if not method or method.translate(_SAME_BYTE, _TCHAR):
        return None  # llhttp skips leading line feeds that the general parser refuses
    low = data.lower()
    if _REQUEST_RARE.search(low, line_end) is not None:
        return None
    host_at = low.find(b"\r\nhost:", line_end)
    if host_at < 0 or low.find(b"\r\nhost:", host_at + 7) >= 0:
        return None
    if low.count(b"\r\n", line_end) - 2 > MAX_HEADER_FIELDS:
        return None
    cut_start = cut_end = 0
    at = low.find(b"\r\nconnection:", line_end)
    if at >= 0:
        if low.find(b"\r\nconnection:", at + 13) >= 0:
            return None
        line = low.find(b"\r\n", at + 13)
        token = low[at + 13 : line].strip(b" \t")
        if token == b"close":
            keep_alive = False
        elif token == b"keep-alive":
            keep_alive = True
        else:
            return None
        cut_start, cut_end = at + 2, line + 2
    try:
        httptools.HttpRequestParser(_VALIDATE_ONLY).feed_data(data)
    except httptools.HttpParserError:
        return None
    host = data[host_at + 7 : data.find(b"\r\n", host_at + 7)].strip(b" \t")
    if not host or host.translate(_SAME_BYTE, _AUTHORITY):
        return None
    return method, target, host, version, keep_alive, cut_start, cut_end


# Complexity: per-response fast path: a simple head recognised in one frame, each exit a fallback.
def simple_response(data: bytes, end: int) -> tuple[int, int, bool, int, int, int] | None:  # noqa: C901, PLR0911, PLR0912
    """(status, content_length, keep_alive, cut_start, cut_end, status_line_end) when ``data``
    starts with a complete response head (final CRLFCRLF at ``end``) of the common kind — no
    Transfer-Encoding, no hop-by-hop field but at most one ``Connection: keep-alive|close``
    line (at ``data[cut_start:cut_end]``, 0/0 when absent), no Strict-Transport-Security, not
    1xx — that passes every check of :func:`parse_response_head`; None otherwise.
    content_length is -1 when absent."""
    line_end = data.find(b"\r\n")
    if line_end < 12 or data[8:9] != b" ":
        return None
    version_name = data[:8]
    if version_name == b"HTTP/1.1":
        keep_alive = True
    elif version_name == b"HTTP/1.0":
        keep_alive = False
    else:
        return None
    code = data[9:12]
    if not code.isdigit():
        return None
    status = int(code)
    if status < 200 or status > 599:
        return None
    if line_end > 12 and (
        data[12:13] != b" " or data[13:line_end].translate(_SAME_BYTE, _REASON_PHRASE)
    ):
        return None
    head = data[: end + 4]
    low = head.lower()
    if _RESPONSE_RARE.search(low, line_end) is not None:
        return None
    if low.count(b"\r\n", line_end) - 2 > MAX_HEADER_FIELDS:
        return None
    try:
        httptools.HttpResponseParser(_VALIDATE_ONLY).feed_data(head)
    except httptools.HttpParserError:
        return None
    content_length = -1
    at = low.find(b"\r\ncontent-length:", line_end)
    if at >= 0:
        value = head[at + 17 : head.find(b"\r\n", at + 17)].strip(b" \t")
        if not value.isdigit() or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
            return None
        content_length = int(value)  # a second Content-Length was refused by llhttp
    cut_start = cut_end = 0
    at = low.find(b"\r\nconnection:", line_end)
    if at >= 0:
        if low.find(b"\r\nconnection:", at + 13) >= 0:
            return None
        line = low.find(b"\r\n", at + 13)
        token = low[at + 13 : line].strip(b" \t")
        if token == b"keep-alive":
            keep_alive = True
        elif token == b"close":
            keep_alive = False
        else:
            return None
        cut_start, cut_end = at + 2, line + 2
    if content_length < 0 and status not in (204, 304):
        keep_alive = False  # close-delimited body: the connection ends with it
    return status, content_length, keep_alive, cut_start, cut_end, line_end + 2


# Complexity: per-request hot path: the head checked in one frame, one branch per rule.
def parse_request_head(  # noqa: C901, PLR0912
    buf: bytes | bytearray, max_head: int, max_fields: int = MAX_HEADER_FIELDS
) -> RequestHead | None:
    """Parse the request head at the start of ``buf``.

    Returns None when ``buf`` holds no complete head yet and ``len(buf) < max_head`` (the
    caller reads more and calls again with the grown buffer). Leading empty lines (at most
    MAX_LEADING_EMPTY_LINES) are skipped and counted in ``length``.

    Raises HttpError: 414 when the request line alone is longer than ``max_head`` or
    MAX_REQUEST_LINE bytes; 431 when the head (with leading empty lines) is longer than
    ``max_head`` or has more than ``max_fields`` fields; 400 for everything malformed.
    """
    start = 0
    if buf[:1] in b"\r\n":  # also true for an empty buffer, which _skip_empty_lines passes
        start = _skip_empty_lines(buf)
        if start < 0:
            return None
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _refuse_incomplete_request(buf, start, max_head)
        return None
    length = end + 4
    line_length = buf.find(b"\r\n", start) - start
    if line_length > MAX_REQUEST_LINE or line_length > max_head:
        raise HttpError(414, "request line too long")
    if length > max_head:
        raise HttpError(431, "request head too large")
    raw = buf[start:length] if type(buf) is bytes else bytes(memoryview(buf)[start:length])

    method, target, version = _split_request_line(raw[:line_length])
    if method == b"CONNECT":
        raise HttpError(400, "CONNECT is not supported")
    authority: bytes | None = None
    if target[:1] != b"/":
        if target == b"*":
            if method != b"OPTIONS":
                raise HttpError(400, "asterisk-form target outside OPTIONS")
        else:
            authority, target = _split_absolute_form(target)
    if b"#" in target:
        raise HttpError(400, "fragment in request target")

    head = _feed_request(raw, method)
    headers = head.headers
    if len(headers) > max_fields:
        raise HttpError(431, "too many header fields")
    try:
        hosts, host_index, upgrade, expect_continue = head._settle(version, True, False)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None

    if hosts is None:
        if version == 11:
            raise HttpError(400, "HTTP/1.1 request without Host")
        host = b""
    elif len(hosts) > 1:
        raise HttpError(400, "several Host fields")
    else:
        host = hosts[0]
        if not host or host.translate(_SAME_BYTE, _AUTHORITY):
            raise HttpError(400, "Host is not an authority")
    if authority is not None:
        if authority.translate(_SAME_BYTE, _AUTHORITY):
            raise HttpError(400, "request target authority is not an authority")
        host = authority
        if hosts is not None:
            # A proxy replaces Host with the target's authority (RFC 9112 §3.2.2).
            headers[host_index] = (headers[host_index][0], authority)
        head.hop_by_hop = True  # the request line and Host differ from raw
    head.expect_continue = expect_continue and version == 11
    head.method = method
    head.target = target
    head.version = version
    head.host = host
    head.upgrade = upgrade
    head.length = length
    head.raw = raw
    return head


# Complexity: per-response hot path: the head checked in one frame, one branch per rule.
def parse_response_head(  # noqa: C901, PLR0912
    buf: bytes | bytearray, max_head: int, start: int = 0
) -> ResponseHead | None:
    """Parse the response head at ``buf[start:]`` (a start past interim 1xx answers costs no
    copy of the rest of the buffer).

    Returns None when ``buf[start:]`` holds no complete head yet and is shorter than
    ``max_head``. Raises HttpError(502) when the head is malformed, longer than ``max_head``
    or has more than MAX_HEADER_FIELDS fields: the caller answers the client with 502. The
    head's ``length`` counts from ``start``.
    """
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        if len(buf) - start >= max_head:
            raise HttpError(502, "response head too large")
        if buf.find(b"\n\n", start) >= 0:
            raise HttpError(502, "bare LF line ending in response head")
        return None
    length = end + 4 - start
    if length > max_head:
        raise HttpError(502, "response head too large")
    if type(buf) is bytes:
        raw = buf[start : start + length] if start or length < len(buf) else buf
    else:
        raw = bytes(memoryview(buf)[start : start + length])

    # status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ] (RFC 9112 §4). The SP before
    # an empty reason is often omitted by servers; both spellings are accepted.
    line_end = raw.find(b"\r\n")
    version_name = raw[:8]
    if version_name == b"HTTP/1.1":
        version = 11
    elif version_name == b"HTTP/1.0":
        version = 10
    else:
        raise HttpError(502, "unsupported or malformed response version")
    code = raw[9:12]
    if raw[8:9] != b" " or len(code) != 3 or not code.isdigit() or line_end < 12:
        raise HttpError(502, "malformed status line")
    status = int(code)
    if status < 100 or status > 599:
        raise HttpError(502, "status code outside 100-599")
    if line_end > 12:
        if raw[12:13] != b" ":
            raise HttpError(502, "malformed status line")
        if raw[13:line_end].translate(_SAME_BYTE, _REASON_PHRASE):
            raise HttpError(502, "control character in reason phrase")

    head = ResponseHead()
    parser = httptools.HttpResponseParser(head)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # a 101 with Upgrade: llhttp pauses after the complete head
    except httptools.HttpParserError as exc:
        raise HttpError(502, f"malformed response head: {exc}") from None
    if len(head.headers) > MAX_HEADER_FIELDS:
        raise HttpError(502, "too many header fields in response")
    try:
        head._settle(version, False, status == 101)
    except ValueError as exc:
        raise HttpError(502, str(exc)) from None
    if head.keep_alive and not head.chunked and head.content_length < 0 and _has_body(status):
        head.keep_alive = False  # close-delimited body: the connection ends with it
    head.status = status
    head.version = version
    head.length = length
    head.raw = raw
    head.status_line_end = line_end + 2
    return head


def _has_body(status: int) -> bool:
    """Whether a response with this status may have a body at all (RFC 9112 §6.3 item 1)."""
    return status >= 200 and status not in {204, 304}


def response_body_kind(head: ResponseHead, request_method: bytes) -> int:
    """How the body of ``head`` is framed, given the method of the request it answers.

    RFC 9112 §6.3 in order: 101 switches protocols (TUNNEL); a response to HEAD, any other
    1xx, 204 and 304 have no body (NONE); a 2xx to CONNECT is a tunnel (TUNNEL); chunked as
    last transfer coding (CHUNKED); Content-Length (LENGTH, or NONE when 0); anything else,
    including a Transfer-Encoding not ending with chunked, runs until the server closes
    (CLOSE). Whether a 101 answers a request that asked for an upgrade is for the caller.
    """
    status = head.status
    if status == 101:
        return BODY_TUNNEL
    if request_method == b"HEAD" or not _has_body(status):
        return BODY_NONE
    if status < 300 and request_method == b"CONNECT":
        return BODY_TUNNEL
    if head.chunked:
        return BODY_CHUNKED
    content_length = head.content_length
    if content_length > 0:
        return BODY_LENGTH
    if content_length == 0:
        return BODY_NONE
    return BODY_CLOSE


def request_body_kind(head: RequestHead) -> int:
    """How the body of a request is framed: BODY_NONE, BODY_LENGTH or BODY_CHUNKED.

    A request without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3 item 7);
    requests are never close-delimited.
    """
    if head.chunked:
        return BODY_CHUNKED
    if head.content_length > 0:
        return BODY_LENGTH
    return BODY_NONE


# ChunkedTracker states: where in the chunked grammar (RFC 9112 §7.1) the next byte falls.
_CHUNK_SIZE_LINE: Final = 0  # chunk-size [ chunk-ext ] CRLF
_CHUNK_DATA: Final = 1  # chunk-data, skipped by arithmetic
_CHUNK_DATA_CR: Final = 2  # the CR after chunk-data
_CHUNK_DATA_LF: Final = 3  # the LF after chunk-data
_TRAILER_SECTION: Final = 4  # trailer fields, then the final empty line
_BODY_DONE: Final = 5


class ChunkedTracker:
    """Follows the chunked framing (RFC 9112 §7.1) of a body that is forwarded unchanged.

    Feed it the body bytes as they arrive; it answers where the body ends. Chunk data is
    skipped by arithmetic, so the work is proportional to the number of chunks, not bytes.
    Chunk extensions and trailer fields are validated and passed through. Once :meth:`feed`
    has raised, the tracker's state is meaningless: the connection must be closed.

    ``done`` becomes True when the last chunk, the trailer section and the final CRLF have
    all been seen.
    """

    __slots__ = (
        "_max_line",
        "_max_trailers",
        "_pending",
        "_remaining",
        "_state",
        "_trailer_bytes",
        "done",
    )

    def __init__(self, max_line: int = 4096, max_trailers: int = 16384) -> None:
        """``max_line``: longest chunk-size line with extensions, without CRLF (a size line
        without extensions, at most 16 hex digits, is always accepted); ``max_trailers``:
        largest trailer section (its field lines with their CRLFs, not the final CRLF)."""
        self.done = False
        self._max_line = max_line
        self._max_trailers = max_trailers
        self._state = _CHUNK_SIZE_LINE
        self._remaining = 0  # chunk-data bytes still to skip in _CHUNK_DATA
        self._pending = b""  # start of a line split across feeds (bounded by the limits)
        self._trailer_bytes = 0

    # Complexity: per-chunk hot path: the chunked-coding state machine in one frame.
    def feed(self, data: bytes | bytearray | memoryview, start: int = 0) -> int:  # noqa: C901, PLR0912
        """Consume ``data[start:]``.

        Returns the offset in ``data`` just past the end of the chunked body (last chunk,
        trailer section and final CRLF) when the body ends inside this data; bytes from that
        offset on belong to the next message. Returns -1 when everything was consumed and
        more is expected. Once ``done``, returns ``start`` (nothing of ``data`` is body).

        Raises HttpError(400) on invalid framing: an empty, non-hex or longer than 16 digits
        chunk size, invalid chunk extensions, a chunk-size line longer than ``max_line``,
        chunk data not followed by CRLF, a trailer section larger than ``max_trailers``, an
        invalid trailer field, a bare LF or bare CR.
        """
        if self.done:
            return start
        end = len(data)
        pos = start
        state = self._state
        while pos < end:
            if state == _CHUNK_DATA:
                remaining = self._remaining
                if end - pos < remaining:
                    self._remaining = remaining - (end - pos)
                    self._state = state
                    return -1
                pos += remaining
                # Usual case: the CRLF after the data and a plain size line follow at once.
                match = _DATA_END_AND_SIZE_LINE.match(data, pos)
                if match is None:
                    state = _CHUNK_DATA_CR
                    continue
                size = int(match.group(1), 16)
                pos = match.end()
            elif state == _CHUNK_SIZE_LINE:
                match = None if self._pending else _PLAIN_SIZE_LINE.match(data, pos)
                if match is not None:
                    size = int(match.group(1), 16)
                    pos = match.end()
                else:
                    line, pos = self._take_line(data, pos, end, self._max_line + 2)
                    if line is None:
                        break
                    size = _chunk_size(line)
            elif state == _CHUNK_DATA_CR:
                if data[pos] != 0x0D:
                    raise HttpError(400, "missing CRLF after chunk data")
                pos += 1
                state = _CHUNK_DATA_LF
                continue
            elif state == _CHUNK_DATA_LF:
                if data[pos] != 0x0A:
                    raise HttpError(400, "missing CRLF after chunk data")
                pos += 1
                state = _CHUNK_SIZE_LINE
                continue
            else:  # _TRAILER_SECTION
                # An empty line ends the section; it is always allowed, even at the limit.
                budget = self._max_trailers - self._trailer_bytes
                line, pos = self._take_line(data, pos, end, budget if budget > 2 else 2)
                if line is None:
                    break
                if not line:
                    self.done = True
                    self._state = _BODY_DONE
                    return pos
                _check_trailer_field(line)
                self._trailer_bytes += len(line) + 2
                continue
            # A chunk-size line was just read.
            if size:
                self._remaining = size
                state = _CHUNK_DATA
            else:
                state = _TRAILER_SECTION
        self._state = state
        return -1

    def _take_line(
        self, data: bytes | bytearray | memoryview, pos: int, end: int, limit: int
    ) -> tuple[bytes | None, int]:
        """The next CRLF-terminated line (without its CRLF) and the offset after it.

        ``limit`` bounds the whole line with its CRLF, including any part kept from earlier
        feeds. Returns (None, end) after keeping an incomplete line for the next feed.
        """
        pending = self._pending
        window_end = min(pos + limit - len(pending), end)
        if type(data) is memoryview:
            match = _LINE_FEED.search(data, pos, window_end)
            line_feed = match.start() if match is not None else -1
        else:
            line_feed = data.find(b"\n", pos, window_end)
        if line_feed < 0:
            if len(pending) + window_end - pos >= limit:
                raise HttpError(400, "chunk-size or trailer line too long")
            self._pending = pending + bytes(data[pos:end])
            return None, end
        line = pending + bytes(data[pos:line_feed]) if pending else bytes(data[pos:line_feed])
        self._pending = b""
        if line[-1:] != b"\r":
            raise HttpError(400, "bare LF line ending in chunked body")
        return line[:-1], line_feed + 1


def _chunk_size(line: bytes) -> int:
    """The size announced by a chunk-size line (without CRLF); validates its extensions."""
    semicolon = line.find(b";")
    if semicolon < 0:
        digits = line
    else:
        digits = line[:semicolon].rstrip(b" \t")  # BWS before ";" (RFC 9112 §7.1.1)
        if _CHUNK_EXTENSIONS.fullmatch(line, len(digits)) is None:
            raise HttpError(400, "invalid chunk extension")
    if not digits or len(digits) > _MAX_CHUNK_SIZE_DIGITS or digits.translate(_SAME_BYTE, _HEXDIG):
        raise HttpError(400, "invalid chunk size")
    return int(digits, 16)


def _check_trailer_field(line: bytes) -> None:
    """Refuse a trailer line that is not ``token ":" OWS value OWS`` with visible characters."""
    name, colon, value = line.partition(b":")
    if not colon or not name or name.translate(_SAME_BYTE, _TCHAR):
        raise HttpError(400, "invalid trailer field name")
    if value.translate(_SAME_BYTE, _REASON_PHRASE):  # field-value has the reason-phrase alphabet
        raise HttpError(400, "control character in trailer field")
