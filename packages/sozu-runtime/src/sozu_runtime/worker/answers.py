"""Answers the proxy writes itself: built-in defaults and custom templates, sans-I/O.

When the proxy answers a request on its own (no route, no backend, a timeout, a bad request, a
redirect, ...) it renders an *answer template*: the complete text of an HTTP/1.1 response in
which ``%NAME`` variables stand for per-request values (reference §E.8, §E.9).

Templates arrive as text from the configuration (this module never reads files). Parsing
validates the text once and precompiles it into literal byte segments and variable slots, so
that rendering on the data path is a single pass of substitutions followed by a join.

Rules a template obeys (checked by :meth:`AnswerTemplate.parse`):

* It is an HTTP/1.x response: status line, header fields, an empty line, then the body.
  Line endings of the head may be ``\\n`` or ``\\r\\n``; both are written as ``\\r\\n``.
  The body is kept byte for byte.
* It is not chunked (no ``Transfer-Encoding`` at all): the proxy sends the whole answer at once.
* In a header field a variable must be the whole value (``Location: %REDIRECT_LOCATION``);
  such a header line is dropped when its value renders empty. In the body, variables may
  appear anywhere. ``%`` followed by anything other than a known variable name is literal text.
* A ``Content-Length`` field is recomputed after substitution. A template without one can only
  delimit its body by closing the connection, so it gets ``Connection: close`` and
  :attr:`AnswerTemplate.closes_connection` is true.

Values never reach the head unfiltered: control characters (CR and LF first of all) are
stripped from values substituted into header fields, so a value cannot add a header line or end
the head early. Built-in defaults additionally escape the values they place in HTML text and in
their JSON block, so the page stays well-formed and the JSON stays parseable whatever the values.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Final

from sozu_config.grammar import (
    FIELD_VALUE_BYTES,
    SAME_BYTE,
    check_request_id_header,
    is_token_bytes,
)

__all__ = [
    "DEFAULT_STATUSES",
    "VARIABLES",
    "AnswerTemplate",
    "Answers",
    "TemplateError",
    "default_template",
]


class TemplateError(ValueError):
    """An answer template is invalid; the message names the template and what is wrong.

    ``template_name`` is the name given to :meth:`AnswerTemplate.parse` (may be empty) and
    ``reason`` the problem alone, without the template name.
    """

    def __init__(self, template_name: str, reason: str) -> None:
        self.template_name = template_name
        self.reason = reason
        label = f"answer template {template_name!r}" if template_name else "answer template"
        super().__init__(f"{label}: {reason}")


# Variables a template may use, written %NAME (reference §E.9). Values are passed to render()
# under the bare name, without the percent sign.
VARIABLES: Final[frozenset[str]] = frozenset(
    {
        "REQUEST_ID",
        "ROUTE",
        "CLUSTER_ID",
        "BACKEND_ID",
        "DURATION",
        "CAPACITY",
        "PHASE",
        "MESSAGE",
        "SUCCESSFULLY_PARSED",
        "PARTIALLY_PARSED",
        "INVALID",
        "REDIRECT_LOCATION",
        "WWW_AUTHENTICATE",
        "RETRY_AFTER",
        "TEMPLATE_NAME",
    }
)

# Older sōzu templates (the sample ones among them) name the request id %SOZU_ID.
_ALIASES: Final[Mapping[str, str]] = {"SOZU_ID": "REQUEST_ID"}

# Longest names first: regex alternation is leftmost-first, so a name that happened to be a
# prefix of another must not shadow it.
_VARIABLE_PATTERN: Final[re.Pattern[bytes]] = re.compile(
    b"%("
    + b"|".join(
        re.escape(name.encode("ascii"))
        for name in sorted((*VARIABLES, *_ALIASES), key=lambda n: (-len(n), n))
    )
    + b")"
)

# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]. The space before
# an empty reason phrase is optional here, as most hand-written templates omit it.
_STATUS_LINE: Final[re.Pattern[bytes]] = re.compile(
    rb"HTTP/1\.(?P<minor>[01]) (?P<code>[0-9]{3})(?: (?P<reason>[\t\x20-\x7e\x80-\xff]*))?"
)
_CRLF: Final = b"\r\n"

# Header fields whose meaning is decided here, at parse time, from the template text.
_CONTENT_LENGTH: Final = b"content-length"
_TRANSFER_ENCODING: Final = b"transfer-encoding"
_CONNECTION: Final = b"connection"

# Every C0 control but HTAB, and DEL: none may appear in a header value (RFC 9110 §5.5), and CR
# or LF would let a value add header lines or end the head.
_HEADER_CONTROLS: Final[dict[int, None]] = dict.fromkeys((*range(0x09), *range(0x0A, 0x20), 0x7F))


# --- escaping of substituted values -----------------------------------------------------------

_Escape = Callable[[str], bytes]


def _encode(value: str) -> bytes:
    # Values may come from undecodable request bytes; an answer must still be produced.
    return value.encode("utf-8", errors="replace")


def _escape_raw(value: str) -> bytes:
    """Body of a custom template: the value as given (the author chose the context)."""
    return _encode(value)


def _escape_header_value(value: str) -> bytes:
    """Header field value: control characters removed, surrounding whitespace trimmed."""
    return _encode(value.translate(_HEADER_CONTROLS).strip(" \t"))


def _escape_html_text(value: str) -> bytes:
    """Built-in HTML text: markup characters and quotes become character references."""
    return _encode(html.escape(value, quote=True))


def _escape_json_string(value: str) -> bytes:
    """Contents of a JSON string literal inside the built-ins' ``<pre>`` block.

    ``json.dumps`` escapes quotes, backslashes and control characters; ``<``, ``>`` and ``&``
    are written as ``\\u003c``, ``\\u003e``, ``\\u0026`` (still valid JSON) so a value cannot
    close the ``<pre>`` element or start an HTML character reference.
    """
    quoted = json.dumps(value, ensure_ascii=False)[1:-1]
    return _encode(quoted.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _custom_body_escape(body: bytes, offset: int) -> _Escape:
    """Escape of a body slot in a custom template: raw values wherever the slot is."""
    return _escape_raw


def _built_in_body_escape(body: bytes, offset: int) -> _Escape:
    """Escape of a body slot in a built-in default: JSON inside ``<pre>``, HTML elsewhere.

    Built-ins only place variables inside JSON string literals within their ``<pre>`` block.
    """
    opened = body.rfind(b"<pre>", 0, offset)
    closed = body.rfind(b"</pre>", 0, offset)
    return _escape_json_string if opened > closed else _escape_html_text


# --- compiled segments ------------------------------------------------------------------------


@dataclass(frozen=True)
class _BodySlot:
    """A variable in the body, replaced by its escaped value (empty when missing)."""

    variable: str
    escape: _Escape

    def fill(self, variables: Mapping[str, str]) -> bytes:
        return self.escape(variables.get(self.variable, ""))


@dataclass(frozen=True)
class _HeaderSlot:
    """A header line whose whole value is a variable; the line is dropped if the value is empty.

    ``prefix`` is ``b"Name: "``.
    """

    prefix: bytes
    variable: str

    def fill(self, variables: Mapping[str, str], body_length: int) -> bytes:
        value = _escape_header_value(variables.get(self.variable, ""))
        return self.prefix + value + _CRLF if value else b""


@dataclass(frozen=True)
class _ContentLengthSlot:
    """The template's Content-Length line, its value recomputed from the rendered body."""

    prefix: bytes

    def fill(self, variables: Mapping[str, str], body_length: int) -> bytes:
        return self.prefix + str(body_length).encode("ascii") + _CRLF


_HeadSegment = bytes | _HeaderSlot | _ContentLengthSlot
_BodySegment = bytes | _BodySlot


# --- templates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerTemplate:
    """A validated, precompiled answer template. Immutable, so it can be shared freely.

    ``status`` is the status code of its status line; ``name`` identifies it in error messages;
    ``closes_connection`` is true when the client connection must be closed after the answer
    is sent (the template says ``Connection: close``, its body has no Content-Length, or it is
    an HTTP/1.0 response without ``Connection: keep-alive``).
    """

    status: int
    name: str
    closes_connection: bool
    _head: tuple[_HeadSegment, ...] = field(repr=False)
    _body: tuple[_BodySegment, ...] = field(repr=False)

    @classmethod
    def parse(
        cls, text: str | bytes, *, status: int | None = None, name: str = ""
    ) -> AnswerTemplate:
        """Validate ``text`` as an answer template and precompile it.

        Line endings of the head (``\\n`` or ``\\r\\n``) are normalised to ``\\r\\n``, including a
        lone ``\\n`` forming the empty line that ends the head; the body is kept as is. The text
        must be an HTTP/1.x response with a status line, well-formed header fields and the empty
        line ending the head; it must not use ``Transfer-Encoding``; when ``status`` is given its
        status code must equal it. Raises :class:`TemplateError`, naming ``name``, otherwise.
        """
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return _compile(raw, status=status, name=name, body_escape=_custom_body_escape)

    def render(self, variables: Mapping[str, str]) -> bytes:
        """The bytes of the answer with ``variables`` (bare names, no ``%``) substituted.

        Missing variables render as the empty string. Header lines whose variable renders empty
        are dropped; control characters are stripped from values placed in the head. The
        Content-Length field, when the template has one, is the length of the rendered body.
        """
        body = b"".join(
            [
                segment if isinstance(segment, bytes) else segment.fill(variables)
                for segment in self._body
            ]
        )
        body_length = len(body)
        head = b"".join(
            [
                segment if isinstance(segment, bytes) else segment.fill(variables, body_length)
                for segment in self._head
            ]
        )
        return head + body


def _compile(
    raw: bytes,
    *,
    status: int | None,
    name: str,
    body_escape: Callable[[bytes, int], _Escape],
) -> AnswerTemplate:
    """Parse ``raw`` and build its segments; ``body_escape`` picks each body slot's escaping."""

    def fail(reason: str) -> TemplateError:
        return TemplateError(name, reason)

    lines, body = _split_head(raw, fail)
    status_line, *field_lines = lines
    code, minor = _status_of(status_line, status, fail)
    head: list[_HeadSegment] = [status_line + _CRLF]
    fields = _Fields(head)
    for line in field_lines:
        fields.add(line, fail)

    closes = b"close" in fields.connection_tokens
    if not fields.content_length_seen and not closes:
        if fields.connection_seen:
            raise fail(
                "it has no Content-Length, so its body ends when the connection closes, "
                "but its Connection header does not say close"
            )
        head.append(b"Connection: close" + _CRLF)
        closes = True
    if minor == b"0" and b"keep-alive" not in fields.connection_tokens:
        # HTTP/1.0 connections close after the response unless keep-alive was announced.
        closes = True
    head.append(_CRLF)

    return AnswerTemplate(
        status=code,
        name=name,
        closes_connection=closes,
        _head=_merge_literals(head),
        _body=_body_segments(body, body_escape),
    )


_Fail = Callable[[str], TemplateError]


def _split_head(raw: bytes, fail: _Fail) -> tuple[list[bytes], bytes]:
    """The head's lines (at least the status line) and the body. The first empty line ends
    the head. Lines end with LF, optionally preceded by CR (RFC 9112 §2.2 lets a recipient
    accept a bare LF as a line terminator)."""
    lines: list[bytes] = []
    position = 0
    while True:
        newline = raw.find(b"\n", position)
        if newline < 0:
            if not lines and not raw[position:].strip():
                raise fail("it is empty, an HTTP/1.x status line is expected")
            raise fail("the head does not end with an empty line before the body")
        line = raw[position:newline]
        if line.endswith(b"\r"):
            line = line[:-1]
        position = newline + 1
        if not line:
            break
        lines.append(line)
    if not lines:
        raise fail("it has no status line, an HTTP/1.x status line is expected")
    return lines, raw[position:]


def _status_of(status_line: bytes, status: int | None, fail: _Fail) -> tuple[int, bytes]:
    """The status code and HTTP minor version of a checked status line."""
    if b"\r" in status_line:
        raise fail(f"bare CR in the status line {_show(status_line)}")
    status_match = _STATUS_LINE.fullmatch(status_line)
    if status_match is None:
        raise fail(
            f"the first line {_show(status_line)} is not an HTTP/1.x status line "
            "such as 'HTTP/1.1 404 Not Found'"
        )
    code = int(status_match["code"])
    if not 200 <= code <= 599:
        raise fail(f"status {code} cannot be an answer (a final status 200..599 is expected)")
    if status is not None and code != status:
        raise fail(f"its status line says {code} but it is the template for status {status}")
    if _VARIABLE_PATTERN.search(status_line):
        raise fail("variables cannot be used in the status line")
    minor: bytes = status_match["minor"]
    return code, minor


class _Fields:
    """The header fields of a template, checked and turned into head segments one by one."""

    def __init__(self, head: list[_HeadSegment]) -> None:
        self.head = head
        self.content_length_seen = False
        self.connection_seen = False
        self.connection_tokens: set[bytes] = set()

    def add(self, line: bytes, fail: _Fail) -> None:
        if line[:1] in (b" ", b"\t"):
            raise fail(f"line {_show(line)} is a folded header line, which HTTP/1.1 forbids")
        colon = line.find(b":")
        if colon < 0:
            raise fail(f"line {_show(line)} is not a header field ('Name: value')")
        field_name = line[:colon]
        field_value = line[colon + 1 :].strip(b" \t")
        if not is_token_bytes(field_name):
            raise fail(f"header line {_show(line)} has an invalid field name")
        if field_value.translate(SAME_BYTE, FIELD_VALUE_BYTES):
            raise fail(f"header {_show(field_name)} has control characters in its value")
        if _VARIABLE_PATTERN.search(field_name):
            raise fail(f"header name {_show(field_name)} contains a variable")
        lowered = field_name.lower()
        prefix = field_name + b": "

        if lowered == _TRANSFER_ENCODING:
            raise fail(
                "Transfer-Encoding (chunked or any other) is not supported, an answer is sent whole"
            )
        if lowered == _CONTENT_LENGTH:
            if self.content_length_seen:
                raise fail("it has several Content-Length headers")
            self.content_length_seen = True
            # The value written in the template is a placeholder, recomputed at render time.
            self.head.append(_ContentLengthSlot(prefix))
            return

        variable = _whole_value_variable(field_value)
        if variable is None and _VARIABLE_PATTERN.search(field_value):
            raise fail(
                f"header {_show(field_name)} has a variable inside a longer value; "
                "in headers a variable must be the whole value"
            )
        if lowered == _CONNECTION:
            if variable is not None:
                # Whether the connection closes is decided now, from the template text.
                raise fail("the Connection header cannot be a variable")
            self.connection_seen = True
            self.connection_tokens.update(
                token.strip(b" \t").lower() for token in field_value.split(b",")
            )
        if variable is not None:
            self.head.append(_HeaderSlot(prefix, variable))
        else:
            self.head.append(prefix + field_value + _CRLF)


def _body_segments(
    body: bytes, body_escape: Callable[[bytes, int], _Escape]
) -> tuple[_BodySegment, ...]:
    """The body as literal bytes and variable slots."""
    segments: list[_BodySegment] = []
    start = 0
    for match in _VARIABLE_PATTERN.finditer(body):
        if match.start() > start:
            segments.append(body[start : match.start()])
        variable_name = match[1].decode("ascii")
        segments.append(
            _BodySlot(_ALIASES.get(variable_name, variable_name), body_escape(body, match.start()))
        )
        start = match.end()
    if start < len(body):
        segments.append(body[start:])
    return tuple(segments)


def _whole_value_variable(value: bytes) -> str | None:
    """The canonical variable name when ``value`` is exactly ``%NAME``, else None."""
    match = _VARIABLE_PATTERN.fullmatch(value)
    if match is None:
        return None
    variable_name = match[1].decode("ascii")
    return _ALIASES.get(variable_name, variable_name)


def _merge_literals(segments: list[_HeadSegment]) -> tuple[_HeadSegment, ...]:
    """Join runs of adjacent literal segments so rendering touches fewer pieces."""
    merged: list[_HeadSegment] = []
    for segment in segments:
        if isinstance(segment, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += segment
        else:
            merged.append(segment)
    return tuple(merged)


def _show(text: bytes) -> str:
    """A short printable rendering of template bytes for error messages."""
    shown = text.decode("utf-8", errors="replace")
    return repr(shown if len(shown) <= 60 else shown[:57] + "...")


# --- built-in defaults ------------------------------------------------------------------------

# Reason phrases of the statuses the proxy produces on its own (RFC 9110 §15, RFC 6585 for
# 429/431, RFC 4918 for 507; 413 keeps sōzu's older wording).
_REASONS: Final[Mapping[int, str]] = {
    301: "Moved Permanently",
    302: "Found",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}

DEFAULT_STATUSES: Final[frozenset[int]] = frozenset(_REASONS)
"""Statuses that have a built-in default answer."""

_REDIRECTS: Final[frozenset[int]] = frozenset({301, 302, 308})

# One sentence per status saying what happened. Variables here are HTML-escaped.
_SENTENCES: Final[Mapping[int, str]] = {
    400: "The proxy could not parse this request. %MESSAGE",
    401: "This resource needs credentials, and none valid were sent with the request.",
    404: "No frontend of this proxy matches the host and path of the request.",
    408: "The request did not arrive in full within %DURATION.",
    413: "The request head does not fit in the %CAPACITY bytes the proxy allows. %MESSAGE",
    414: "The request target is longer than the proxy accepts. %MESSAGE",
    421: (
        "The host of this request is not served by the TLS connection it came on; "
        "send it again on a new connection made for that host."
    ),
    429: "Too many requests from your address are in progress for this service; retry later.",
    431: "The request header fields are larger than the proxy accepts. %MESSAGE",
    502: "The backend sent a response the proxy could not understand. %MESSAGE",
    503: "No backend server is able to handle this request at the moment. %MESSAGE",
    504: "The backend server did not answer within %DURATION.",
    507: (
        "The backend response head does not fit in the %CAPACITY bytes the proxy allows. %MESSAGE"
    ),
}

# Extra members of the JSON block, after status_code, route, request_id (and the cluster and
# backend ids of 5xx answers). Each is a (JSON key, variable) pair rendered as a JSON string.
_PARSE_DETAILS: Final = (
    ("phase", "PHASE"),
    ("successfully_parsed", "SUCCESSFULLY_PARSED"),
    ("partially_parsed", "PARTIALLY_PARSED"),
    ("invalid", "INVALID"),
    ("message", "MESSAGE"),
)
_JSON_DETAILS: Final[Mapping[int, tuple[tuple[str, str], ...]]] = {
    400: _PARSE_DETAILS,
    408: (("duration", "DURATION"),),
    413: (("capacity", "CAPACITY"), ("phase", "PHASE"), ("message", "MESSAGE")),
    414: (("message", "MESSAGE"),),
    429: (("retry_after", "RETRY_AFTER"),),
    431: (("message", "MESSAGE"),),
    502: _PARSE_DETAILS,
    503: (("message", "MESSAGE"),),
    504: (("duration", "DURATION"),),
    507: (("capacity", "CAPACITY"), ("phase", "PHASE"), ("message", "MESSAGE")),
}


def default_template(status: int, *, sozu_id_header: str = "Sozu-Id") -> AnswerTemplate:
    """The built-in answer for ``status``, carrying the request id in ``sozu_id_header``.

    Every built-in closes the connection. Redirects (301, 302, 308) have an empty body and a
    ``Location: %REDIRECT_LOCATION`` field; the others a small HTML page whose ``<pre>`` block
    is JSON that stays valid whatever the variable values. Raises KeyError for a status without
    a built-in (see :data:`DEFAULT_STATUSES`) and ValueError for an unusable header name.
    """
    if status not in _REASONS:
        raise KeyError(status)
    try:
        check_request_id_header(sozu_id_header)
    except ValueError as error:
        raise ValueError(f"sozu_id_header {sozu_id_header!r} is unusable: {error}") from None
    return _built_in(status, sozu_id_header)


@cache
def _built_in(status: int, sozu_id_header: str) -> AnswerTemplate:
    """Compile (once per status and header name) the built-in answer text."""
    return _compile(
        _built_in_text(status, sozu_id_header).encode("utf-8"),
        status=status,
        name=f"built-in {status}",
        body_escape=_built_in_body_escape,
    )


def _built_in_text(status: int, sozu_id_header: str) -> str:
    """The text of a built-in answer, in the shape of sōzu's defaults."""
    reason = _REASONS[status]
    if status in _REDIRECTS:
        return (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Location: %REDIRECT_LOCATION\r\n"
            "Connection: close\r\n"
            f"{sozu_id_header}: %REQUEST_ID\r\n"
            "Content-Length: 0\r\n"
            "\r\n"
        )
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Cache-Control: no-cache",
        "Connection: close",
    ]
    if status == 401:
        head.append("WWW-Authenticate: %WWW_AUTHENTICATE")
    if status == 429:
        head.append("Retry-After: %RETRY_AFTER")
    head += [
        f"{sozu_id_header}: %REQUEST_ID",
        "Content-Type: text/html; charset=utf-8",
        "Content-Length: 0",
    ]

    members = [("route", "ROUTE"), ("request_id", "REQUEST_ID")]
    if status >= 500:
        members += [("cluster_id", "CLUSTER_ID"), ("backend_id", "BACKEND_ID")]
    members += _JSON_DETAILS.get(status, ())
    json_lines = [f'  "status_code": {status}'] + [
        f'  "{key}": "%{variable}"' for key, variable in members
    ]
    body = (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        f"<title>{status} {reason}</title></head><body>\n"
        f"<h1>{status} {reason}</h1>\n"
        f"<p>{_SENTENCES[status]}</p>\n"
        "<pre>\n{\n" + ",\n".join(json_lines) + "\n}\n</pre>\n"
        "<footer>Answer written by the sōzu proxy.</footer>\n"
        "</body></html>\n"
    )
    return "\r\n".join(head) + "\r\n\r\n" + body


# --- per-listener registry --------------------------------------------------------------------


class Answers:
    """The answer templates of one listener, with per-cluster overrides.

    Lookup order for a status: the cluster's template, then the listener's, then the built-in
    default. Every stored template has been validated against the status it is registered for;
    a failed update leaves the registry as it was.
    """

    __slots__ = ("_clusters", "_listener", "_sozu_id_header")

    def __init__(
        self,
        listener_templates: Mapping[int, str] | None = None,
        *,
        sozu_id_header: str = "Sozu-Id",
    ) -> None:
        """Parse every listener template; TemplateError on the first invalid one.

        ``sozu_id_header`` names the header carrying the request id in the built-in defaults
        (custom templates spell their own headers).
        """
        # Validated now so that a bad name fails at configuration time, not on the data path.
        default_template(404, sozu_id_header=sozu_id_header)
        self._sozu_id_header = sozu_id_header
        self._listener = _parse_set(listener_templates or {}, owner="listener")
        self._clusters: dict[str, dict[int, AnswerTemplate]] = {}

    @property
    def sozu_id_header(self) -> str:
        """The header name carrying the request id in built-in answers."""
        return self._sozu_id_header

    def set_cluster(self, cluster_id: str, templates: Mapping[int, str]) -> None:
        """Replace the set of templates of ``cluster_id`` (an empty set removes it).

        All templates are validated first; on TemplateError nothing changes.
        """
        parsed = _parse_set(templates, owner=f"cluster {cluster_id!r}")
        if parsed:
            self._clusters[cluster_id] = parsed
        else:
            self._clusters.pop(cluster_id, None)

    def remove_cluster(self, cluster_id: str) -> None:
        """Forget the templates of ``cluster_id``; a cluster without templates is a no-op."""
        self._clusters.pop(cluster_id, None)

    def template_for(self, status: int, cluster_id: str | None = None) -> AnswerTemplate:
        """The template answering ``status``: cluster's, else listener's, else built-in.

        Raises KeyError when no template exists and there is no built-in for ``status``.
        """
        if cluster_id is not None:
            cluster = self._clusters.get(cluster_id)
            if cluster is not None:
                template = cluster.get(status)
                if template is not None:
                    return template
        template = self._listener.get(status)
        if template is not None:
            return template
        return _built_in_for(status, self._sozu_id_header)

    def render(
        self,
        status: int,
        variables: Mapping[str, str],
        cluster_id: str | None = None,
    ) -> tuple[bytes, bool]:
        """Render the answer for ``status``: (bytes to send, close the client connection after).

        Raises KeyError when no template exists and there is no built-in for ``status``.
        """
        template = self.template_for(status, cluster_id)
        return template.render(variables), template.closes_connection


def _built_in_for(status: int, sozu_id_header: str) -> AnswerTemplate:
    """A built-in whose header name was already validated; KeyError for unknown statuses."""
    if status not in _REASONS:
        raise KeyError(status)
    return _built_in(status, sozu_id_header)


def _parse_set(templates: Mapping[int, str], *, owner: str) -> dict[int, AnswerTemplate]:
    """Parse a status → text mapping, each template checked against its status."""
    return {
        status: AnswerTemplate.parse(text, status=status, name=f"{owner} {status}")
        for status, text in templates.items()
    }
