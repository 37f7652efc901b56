"""HTTP/1.1 heads and body framing (worker/h1.py), driven by feeding bytes, no sockets.

Every strictness rule is checked through the public parsers, whether llhttp or this module
enforces it, so that a change of llhttp version cannot silently let a rule go.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sozu_runtime.worker.h1 import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    BODY_TUNNEL,
    MAX_HEADER_FIELDS,
    MAX_LEADING_EMPTY_LINES,
    MAX_REQUEST_LINE,
    SEEN_COOKIE,
    SEEN_X_FORWARDED_PORT,
    ChunkedTracker,
    HttpError,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
    request_body_kind,
    response_body_kind,
)

MAX_HEAD = 16384


def request(*lines: str | bytes, first: bytes = b"GET / HTTP/1.1") -> bytes:
    """A request head with CRLF endings: ``first`` line, then ``lines``, then the empty line."""
    encoded = [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    return b"\r\n".join([first, *encoded]) + b"\r\n\r\n"


def response(*lines: str | bytes, first: bytes = b"HTTP/1.1 200 OK") -> bytes:
    """A response head with CRLF endings."""
    return request(*lines, first=first)


def parse(raw: bytes, max_head: int = MAX_HEAD) -> RequestHead:
    head = parse_request_head(raw, max_head)
    assert head is not None, raw
    return head


def parse_response(raw: bytes, max_head: int = MAX_HEAD) -> ResponseHead:
    head = parse_response_head(raw, max_head)
    assert head is not None, raw
    return head


def refused(raw: bytes, max_head: int = MAX_HEAD) -> HttpError:
    with pytest.raises(HttpError) as caught:
        parse_request_head(raw, max_head)
    return caught.value


def refused_response(raw: bytes, max_head: int = MAX_HEAD) -> HttpError:
    with pytest.raises(HttpError) as caught:
        parse_response_head(raw, max_head)
    return caught.value


def head_fields(head: RequestHead | ResponseHead) -> dict[str, object]:
    """Every public attribute of a head, to compare two parses of the same bytes."""
    names = [
        "version",
        "headers",
        "content_length",
        "chunked",
        "keep_alive",
        "hop_by_hop",
        "length",
        "raw",
    ]
    if isinstance(head, RequestHead):
        names += ["method", "target", "host", "upgrade", "expect_continue"]
    else:
        names += ["status", "status_line_end"]
    fields = {name: getattr(head, name) for name in names}
    fields["forward_headers"] = head.forward_headers()
    return fields


# --- request heads: what a valid head looks like ---------------------------------------------


def test_simple_request_fields() -> None:
    raw = request("Host: example.com", "User-Agent:  curl/8 \t", "Accept: */*")
    head = parse(raw + b"body follows")
    assert head.method == b"GET"
    assert head.target == b"/"
    assert head.version == 11
    assert head.host == b"example.com"
    # Leading and trailing OWS are not part of a value.
    assert head.headers == [
        (b"Host", b"example.com"),
        (b"User-Agent", b"curl/8"),
        (b"Accept", b"*/*"),
    ]
    assert head.content_length == -1
    assert not head.chunked
    assert head.keep_alive
    assert head.upgrade is None
    assert not head.expect_continue
    assert not head.hop_by_hop
    assert head.forward_headers() == head.headers
    assert head.length == len(raw)
    assert head.raw == raw
    assert request_body_kind(head) == BODY_NONE


def test_names_keep_their_case_and_values_their_inner_whitespace() -> None:
    head = parse(request("hOsT: a.example", "X-Thing: a \t b", "x-empty:"))
    assert head.headers == [(b"hOsT", b"a.example"), (b"X-Thing", b"a \t b"), (b"x-empty", b"")]
    assert head.host == b"a.example"


def test_bytearray_buffer_gives_bytes() -> None:
    raw = request("Host: a")
    head = parse_request_head(bytearray(raw + b"tail"), MAX_HEAD)
    assert head is not None
    assert type(head.raw) is bytes
    assert head.raw == raw


def test_http10_request_without_host() -> None:
    head = parse(request(first=b"GET /x HTTP/1.0"))
    assert head.version == 10
    assert head.host == b""
    assert not head.keep_alive


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"HTTP/1.1", None, True),
        (b"HTTP/1.1", "close", False),
        (b"HTTP/1.1", "Close", False),
        (b"HTTP/1.1", "keep-alive", True),
        (b"HTTP/1.1", "Keep-Alive, close", False),
        (b"HTTP/1.1", " foo ,  CLOSE ", False),
        (b"HTTP/1.0", None, False),
        (b"HTTP/1.0", "keep-alive", True),
        (b"HTTP/1.0", "Keep-Alive", True),
        (b"HTTP/1.0", "keep-alive, close", False),
        (b"HTTP/1.0", "close", False),
    ],
)
def test_request_keep_alive(version: bytes, connection: str | None, keep_alive: bool) -> None:
    lines = ["Host: a"] + ([f"Connection: {connection}"] if connection is not None else [])
    head = parse(request(*lines, first=b"GET / " + version))
    assert head.keep_alive is keep_alive


def test_connection_split_over_several_fields() -> None:
    head = parse(request("Host: a", "Connection: keep-alive", "Connection: close"))
    assert not head.keep_alive


def test_expect_continue() -> None:
    assert parse(request("Host: a", "Expect: 100-continue", "Content-Length: 3")).expect_continue
    assert parse(request("Host: a", "Expect: 100-Continue", "Content-Length: 3")).expect_continue
    assert not parse(request("Host: a", "Expect: something-else")).expect_continue
    # RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
    head = parse(request("Expect: 100-continue", first=b"POST / HTTP/1.0"))
    assert not head.expect_continue


def test_content_length_request() -> None:
    head = parse(request("Host: a", "Content-Length: 42", first=b"POST /form HTTP/1.1"))
    assert head.content_length == 42
    assert request_body_kind(head) == BODY_LENGTH
    zero = parse(request("Host: a", "Content-Length: 0", first=b"POST / HTTP/1.1"))
    assert zero.content_length == 0
    assert request_body_kind(zero) == BODY_NONE
    # Trailing OWS is not part of the value; leading zeros are digits.
    spaced = parse(request("Host: a", "Content-Length:  007  ", first=b"POST / HTTP/1.1"))
    assert spaced.content_length == 7
    longest = parse(request("Host: a", "Content-Length: 999999999999999"))
    assert longest.content_length == 999_999_999_999_999


@pytest.mark.parametrize(
    "codings",
    [["chunked"], ["ChUnKeD"], ["gzip, chunked"], ["gzip", "chunked"], [", chunked"]],
)
def test_chunked_request(codings: list[str]) -> None:
    lines = ["Host: a"] + [f"Transfer-Encoding: {value}" for value in codings]
    head = parse(request(*lines, first=b"POST / HTTP/1.1"))
    assert head.chunked
    assert head.content_length == -1
    assert request_body_kind(head) == BODY_CHUNKED
    # Transfer-Encoding is forwarded: the body is forwarded as is.
    assert not head.hop_by_hop
    assert head.forward_headers() == head.headers


def test_extension_method_is_a_token() -> None:
    for method in (b"FOO", b"get", b"M-SEARCH", b"X_CUSTOM!"):
        head = parse(request("Host: a", first=method + b" / HTTP/1.1"))
        assert head.method == method
    known = parse(request("Host: a", first=b"PROPFIND /dav HTTP/1.1"))
    assert known.method == b"PROPFIND"


def test_extension_method_head_is_still_validated() -> None:
    assert refused(request("Host: a", "X: a\x01b", first=b"FOO / HTTP/1.1")).status == 400
    assert refused(request("Host: a", "Host: b", first=b"FOO / HTTP/1.1")).status == 400


def test_options_asterisk_form() -> None:
    head = parse(request("Host: a", first=b"OPTIONS * HTTP/1.1"))
    assert head.target == b"*"


def test_origin_form_with_query_and_double_slash() -> None:
    with_query = parse(request("Host: a", first=b"GET /a/b?c=d&e=%20 HTTP/1.1"))
    assert with_query.target == b"/a/b?c=d&e=%20"
    assert parse(request("Host: a", first=b"GET //a//b HTTP/1.1")).target == b"//a//b"


@pytest.mark.parametrize(
    "host",
    [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:443", b"xn--bcher-kva.example"],
)
def test_host_authorities_accepted(host: bytes) -> None:
    assert parse(request(b"Host: " + host)).host == host


# --- absolute-form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "authority", "origin_form"),
    [
        (b"http://example.com:8080/a/b?x=1", b"example.com:8080", b"/a/b?x=1"),
        (b"http://example.com", b"example.com", b"/"),
        (b"https://example.com?q=1", b"example.com", b"/?q=1"),
        (b"HTTP://Example.COM/p", b"Example.COM", b"/p"),
        (b"hTtPs://[::1]:8443/x/", b"[::1]:8443", b"/x/"),
        (b"http://a.example/?next=http://b/", b"a.example", b"/?next=http://b/"),
    ],
)
def test_absolute_form_is_converted(target: bytes, authority: bytes, origin_form: bytes) -> None:
    raw = request("Host: other.example", "Accept: */*", first=b"GET " + target + b" HTTP/1.1")
    head = parse(raw)
    assert head.target == origin_form
    assert head.host == authority
    # RFC 9112 §3.2.2: the received Host is replaced by the target's authority.
    assert head.headers == [(b"Host", authority), (b"Accept", b"*/*")]
    assert head.forward_headers() == [(b"Host", authority), (b"Accept", b"*/*")]
    # raw keeps the absolute-form request line, so it must not be forwarded as is.
    assert head.hop_by_hop
    assert head.raw == raw


def test_absolute_form_http10_without_host() -> None:
    head = parse(request(first=b"GET http://example.com/x HTTP/1.0"))
    assert head.host == b"example.com"
    assert head.target == b"/x"
    assert head.headers == []


@pytest.mark.parametrize(
    "target",
    [
        b"ftp://example.com/x",  # neither http nor https
        b"http:/example.com/x",
        b"http:///x",  # empty authority
        b"http://user@example.com/",  # userinfo
        b"http://user:pass@example.com/",
        b"example.com:443",  # authority-form outside CONNECT
        b"x/y",  # relative reference
        b"/a#fragment",
        b"http://example.com/a#fragment",
    ],
)
def test_bad_targets_refused(target: bytes) -> None:
    assert refused(request("Host: a", first=b"GET " + target + b" HTTP/1.1")).status == 400


# --- request strictness: each rule through the public parser ---------------------------------

REFUSED_REQUESTS: dict[str, bytes] = {
    # Versions: only HTTP/1.0 and HTTP/1.1.
    "http/0.9 request line": b"GET /\r\n\r\n",
    "http/0.9 with fields": b"GET /\r\nHost: a\r\n\r\n",
    "HTTP/0.9 version": request("Host: a", first=b"GET / HTTP/0.9"),
    "HTTP/1.2": request("Host: a", first=b"GET / HTTP/1.2"),
    "HTTP/2.0": request("Host: a", first=b"GET / HTTP/2.0"),
    "h2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "PRI over HTTP/1.1": request("Host: a", first=b"PRI * HTTP/1.1"),
    "HTTP/3.0": request("Host: a", first=b"GET / HTTP/3.0"),
    "lowercase http": request("Host: a", first=b"GET / http/1.1"),
    "RTSP": request("Host: a", first=b"GET / RTSP/1.0"),
    # Request-line shape.
    "two spaces": request("Host: a", first=b"GET  / HTTP/1.1"),
    "space after version": request("Host: a", first=b"GET / HTTP/1.1 "),
    "space in target": request("Host: a", first=b"GET /a b HTTP/1.1"),
    "tab separator": request("Host: a", first=b"GET\t/ HTTP/1.1"),
    "control in target": request("Host: a", first=b"GET /a\x01b HTTP/1.1"),
    "high byte in target": request("Host: a", first=b"GET /a\xffb HTTP/1.1"),
    # Host.
    "no Host in 1.1": request("Accept: */*"),
    "two Host": request("Host: a", "Host: b"),
    "two equal Host": request("Host: a", "Host: a"),
    "Host case variants": request("Host: a", "host: a"),
    "empty Host": request("Host:"),
    "Host with space": request("Host: a b"),
    "Host with tab": request("Host: a\tb"),
    "Host with userinfo": request("Host: user@a"),
    "Host with path": request("Host: a/b"),
    "Host with control": request("Host: a\x01b"),
    "Host with high byte": request(b"Host: a\xe9b"),
    "two Host in 1.0": request("Host: a", "Host: b", first=b"GET / HTTP/1.0"),
    # Content-Length / Transfer-Encoding.
    "CL then TE": request("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked"),
    "TE then CL": request("Host: a", "Transfer-Encoding: chunked", "Content-Length: 3"),
    "two equal CL": request("Host: a", "Content-Length: 3", "Content-Length: 3"),
    "two different CL": request("Host: a", "Content-Length: 3", "Content-Length: 4"),
    "CL list": request("Host: a", "Content-Length: 3, 3"),
    "CL plus sign": request("Host: a", "Content-Length: +3"),
    "CL minus sign": request("Host: a", "Content-Length: -3"),
    "CL space inside": request("Host: a", "Content-Length: 1 3"),
    "CL hex": request("Host: a", "Content-Length: 0x3"),
    "CL letters": request("Host: a", "Content-Length: abc"),
    "CL empty": request("Host: a", "Content-Length:"),
    "CL 16 digits": request("Host: a", "Content-Length: 1000000000000000"),
    "CL overflow": request("Host: a", "Content-Length: 123456789012345678901234567890"),
    "TE gzip only": request("Host: a", "Transfer-Encoding: gzip"),
    "TE chunked then gzip": request("Host: a", "Transfer-Encoding: chunked, gzip"),
    "TE chunked twice": request("Host: a", "Transfer-Encoding: chunked, chunked"),
    "TE chunked in two fields": request(
        "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"
    ),
    "TE chunked field then gzip field": request(
        "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip"
    ),
    "TE obfuscated xchunked": request("Host: a", "Transfer-Encoding: xchunked"),
    "TE chunked with parameter": request("Host: a", "Transfer-Encoding: chunked;q=1"),
    "TE empty": request("Host: a", "Transfer-Encoding:"),
    "TE space before colon": request("Host: a", "Transfer-Encoding : chunked"),
    "TE in 1.0": request("Transfer-Encoding: chunked", first=b"POST / HTTP/1.0"),
    "TE in 1.0 with CL": request(
        "Transfer-Encoding: chunked", "Content-Length: 3", first=b"POST / HTTP/1.0"
    ),
    # Field syntax.
    "obs-fold space": request("Host: a", "X: a", " b"),
    "obs-fold tab": request("Host: a", "X: a", "\tb"),
    "value NUL": request("Host: a", "X: a\x00b"),
    "value control": request("Host: a", "X: a\x01b"),
    "value ESC": request("Host: a", "X: a\x1bb"),
    "value DEL": request("Host: a", "X: a\x7fb"),
    "value bare CR": request("Host: a", "X: a\rb"),
    "name control": request("Host: a", "X\x01: b"),
    "name DEL": request("Host: a", "X\x7f: b"),
    "name high byte": request("Host: a", b"X\xff: b"),
    "name with space": request("Host: a", "X Y: b"),
    "space before colon": request("Host: a", "X : b"),
    "tab before colon": request("Host: a", "X\t: b"),
    "empty name": request("Host: a", ": b"),
    "no colon": request("Host: a", "NoColon"),
    # Line endings.
    "bare LF everywhere": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare LF after request line": b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    "bare LF after field": b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    "bare LF final line": b"GET / HTTP/1.1\r\nHost: a\r\n\n\r\n\r\n",
    "bare CR after field": b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    "leading bare LF": b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "leading CRLF then bare LF": b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "too many leading empty lines": b"\r\n" * (MAX_LEADING_EMPTY_LINES + 1) + request("Host: a"),
    # Methods and targets.
    "CONNECT": request("Host: a:443", first=b"CONNECT a:443 HTTP/1.1"),
    "CONNECT with origin-form": request("Host: a", first=b"CONNECT / HTTP/1.1"),
    "asterisk with GET": request("Host: a", first=b"GET * HTTP/1.1"),
    "asterisk with POST": request("Host: a", first=b"POST * HTTP/1.1"),
    "method with @": request("Host: a", first=b"G@T / HTTP/1.1"),
    "method with parenthesis": request("Host: a", first=b"GE(T / HTTP/1.1"),
    "method with high byte": request("Host: a", first=b"G\xffT / HTTP/1.1"),
    "method invalid UTF-8": request("Host: a", first=b"\xc3\x28 / HTTP/1.1"),
    "method with control": request("Host: a", first=b"G\x01T / HTTP/1.1"),
    "empty method": request("Host: a", first=b" / HTTP/1.1"),
}


@pytest.mark.parametrize("raw", REFUSED_REQUESTS.values(), ids=REFUSED_REQUESTS.keys())
def test_request_refused_with_400(raw: bytes) -> None:
    error = refused(raw)
    assert error.status == 400
    assert error.reason
    # The same bytes followed by more data (a body, a pipelined request) are refused too.
    assert refused(raw + request("Host: a")).status == 400


def test_http_error_carries_status_and_reason() -> None:
    error = refused(request("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked"))
    assert error.status == 400
    assert "Content-Length" in error.reason
    assert str(error).startswith("400 ")
    assert isinstance(error, Exception)


def test_leading_empty_lines_are_skipped_and_counted() -> None:
    raw = request("Host: a")
    for count in range(1, MAX_LEADING_EMPTY_LINES + 1):
        head = parse(b"\r\n" * count + raw)
        assert head.length == 2 * count + len(raw)
        assert head.raw == raw
        assert head.method == b"GET"


def test_only_empty_lines_wait_for_more() -> None:
    assert parse_request_head(b"", MAX_HEAD) is None
    assert parse_request_head(b"\r", MAX_HEAD) is None
    assert parse_request_head(b"\r\n", MAX_HEAD) is None
    assert parse_request_head(b"\r\n\r", MAX_HEAD) is None
    assert parse_request_head(b"\r\n" * MAX_LEADING_EMPTY_LINES, MAX_HEAD) is None


# --- sizes: 414, 431 -------------------------------------------------------------------------


def test_request_line_longer_than_limit_is_414() -> None:
    long_target = b"/" + b"a" * MAX_REQUEST_LINE
    raw = request("Host: a", first=b"GET " + long_target + b" HTTP/1.1")
    assert refused(raw, max_head=65536).status == 414
    # Incomplete: the request line alone is already over the limit.
    assert refused(b"GET " + long_target, max_head=65536).status == 414
    at_limit = b"GET /" + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(at_limit) == MAX_REQUEST_LINE
    assert parse(request("Host: a", first=at_limit), max_head=65536).target.startswith(b"/a")


def test_request_line_longer_than_max_head_is_414() -> None:
    raw = request("Host: a", first=b"GET /" + b"a" * 200 + b" HTTP/1.1")
    assert refused(raw, max_head=100).status == 414
    assert refused(raw[:150], max_head=100).status == 414


def test_head_larger_than_max_head_is_431() -> None:
    raw = request("Host: a", "X-Big: " + "b" * 300)
    assert refused(raw, max_head=len(raw) - 1).status == 431
    assert parse(raw, max_head=len(raw)).length == len(raw)
    # Incomplete but already as long as max_head: it cannot fit any more.
    assert refused(raw[:200], max_head=200).status == 431
    assert parse_request_head(raw[:199], max_head=200) is None


def test_leading_empty_lines_count_toward_max_head() -> None:
    raw = b"\r\n\r\n" + request("Host: a")
    assert refused(raw, max_head=len(raw) - 1).status == 431
    assert parse(raw, max_head=len(raw)).length == len(raw)


def test_header_field_count_limit_is_431() -> None:
    fields = ["Host: a"] + [f"X-{i}: v" for i in range(MAX_HEADER_FIELDS - 1)]
    assert len(parse(request(*fields)).headers) == MAX_HEADER_FIELDS
    error = refused(request(*fields, "X-One-Too-Many: v"))
    assert error.status == 431


# --- incremental parsing and pipelining ------------------------------------------------------

INCREMENTAL_REQUESTS = [
    request("Host: example.com", "User-Agent: test", "Accept: */*"),
    request("Host: a", "Content-Length: 5", first=b"POST /submit?x=1 HTTP/1.1"),
    b"\r\n\r\n" + request("Host: a", "Transfer-Encoding: chunked", first=b"PUT /up HTTP/1.1"),
    request(
        "Host: ignored",
        "Connection: keep-alive, X-Hop",
        "X-Hop: 1",
        first=b"GET http://h/p HTTP/1.1",
    ),
    request("Connection: upgrade", "Upgrade: websocket", "Host: ws", first=b"GET /chat HTTP/1.1"),
    request(first=b"OPTIONS * HTTP/1.0"),
]


@pytest.mark.parametrize("raw", INCREMENTAL_REQUESTS)
def test_request_split_at_every_point(raw: bytes) -> None:
    expected = head_fields(parse(raw))
    for split in range(len(raw)):
        assert parse_request_head(raw[:split], MAX_HEAD) is None, split
    assert head_fields(parse(raw)) == expected
    # More bytes after the head change nothing of the head.
    assert head_fields(parse(raw + b"GET / HTTP/1.1\r\n")) == expected


INCREMENTAL_RESPONSES = [
    response("Content-Length: 5", "Server: test"),
    response("Transfer-Encoding: chunked", first=b"HTTP/1.1 404 Not Found"),
    response("Connection: close", first=b"HTTP/1.0 200"),
    response("Connection: Upgrade", "Upgrade: websocket", first=b"HTTP/1.1 101 Switching"),
]


@pytest.mark.parametrize("raw", INCREMENTAL_RESPONSES)
def test_response_split_at_every_point(raw: bytes) -> None:
    expected = head_fields(parse_response(raw))
    for split in range(len(raw)):
        assert parse_response_head(raw[:split], MAX_HEAD) is None, split
    assert head_fields(parse_response(raw + b"body")) == expected


def test_pipelined_requests() -> None:
    first = request("Host: a", first=b"GET /one HTTP/1.1")
    second = request("Host: b", "Connection: close", first=b"GET /two HTTP/1.1")
    buf = first + second
    head = parse(buf)
    assert head.length == len(first)
    assert head.target == b"/one"
    following = parse(buf[head.length :])
    assert following.target == b"/two"
    assert following.length == len(second)
    assert not following.keep_alive


def test_pipelined_requests_with_a_body_between() -> None:
    first = request("Host: a", "Content-Length: 4", first=b"POST /one HTTP/1.1")
    second = request("Host: a", first=b"GET /two HTTP/1.1")
    buf = first + b"data" + second
    head = parse(buf)
    assert request_body_kind(head) == BODY_LENGTH
    next_start = head.length + head.content_length
    assert buf[head.length : next_start] == b"data"
    assert parse(buf[next_start:]).target == b"/two"


def test_pipelined_request_after_leading_empty_lines() -> None:
    first = b"\r\n\r\n" + request("Host: a", first=b"GET /one HTTP/1.1")
    second = request("Host: a", first=b"GET /two HTTP/1.1")
    head = parse(first + second)
    assert head.length == len(first)
    assert parse((first + second)[head.length :]).target == b"/two"


# --- the request corpus of the reference implementation --------------------------------------


def corpus_requests(sozu_data: Path) -> list[bytes]:
    """The corpus' requests, separated by empty lines, with CRLF line endings.

    The file's line endings are normalised first, so that it reads the same whether it is
    stored with LF or CRLF endings.
    """
    text = (sozu_data / "lib__assets__http-requests.txt").read_bytes()
    text = text.replace(b"\r\n", b"\n")
    blocks = [block.strip(b"\n") for block in text.split(b"\n\n")]
    return [block.replace(b"\n", b"\r\n") + b"\r\n\r\n" for block in blocks if block]


def test_corpus_requests_all_parse(sozu_data: Path) -> None:
    requests = corpus_requests(sozu_data)
    assert len(requests) == 55
    for raw in requests:
        head = parse(raw)
        assert head.length == len(raw)
        assert head.method == b"GET"
        assert head.version == 11
        assert head.host
        assert head.target.startswith(b"/")
        assert head.keep_alive
        # Every corpus request says "Connection: keep-alive": removed before forwarding.
        assert head.hop_by_hop
        forwarded = head.forward_headers()
        assert len(forwarded) == len(head.headers) - 1
        assert all(name.lower() != b"connection" for name, _ in forwarded)


def test_corpus_as_one_pipelined_stream(sozu_data: Path) -> None:
    requests = corpus_requests(sozu_data)
    stream = b"".join(requests)
    hosts = []
    offset = 0
    while offset < len(stream):
        head = parse(stream[offset:])
        hosts.append(head.host)
        offset += head.length
    assert offset == len(stream)
    assert len(hosts) == 55
    assert hosts[0] == b"www.reddit.com"


# --- hop-by-hop fields -----------------------------------------------------------------------


def test_hop_by_hop_fields_removed() -> None:
    head = parse(
        request(
            "Host: a",
            "Connection: keep-alive, X-Private , x-other",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Checksum",  # announces trailers: end to end (RFC 9110 §6.6.2)
            "Upgrade: h2c",
            "X-Private: secret",
            "X-OTHER: secret too",
            "Transfer-Encoding: chunked",
            "Accept: */*",
            first=b"POST / HTTP/1.1",
        )
    )
    assert head.hop_by_hop
    assert head.upgrade is None  # Connection does not list "upgrade"
    assert head.forward_headers() == [
        (b"Host", b"a"),
        (b"Trailer", b"X-Checksum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Accept", b"*/*"),
    ]
    # The received fields stay available as they came.
    assert len(head.headers) == 11


def test_connection_cannot_remove_framing_or_routing_fields() -> None:
    head = parse(
        request(
            "Host: a",
            "Content-Length: 2",
            "Connection: Host, Content-Length, Transfer-Encoding, X-Gone",
            "X-Gone: 1",
            first=b"POST / HTTP/1.1",
        )
    )
    assert head.forward_headers() == [(b"Host", b"a"), (b"Content-Length", b"2")]
    assert head.host == b"a"
    assert head.content_length == 2


@pytest.mark.parametrize(
    "name", ["Keep-Alive", "keep-alive", "Proxy-Connection", "TE", "te", "Upgrade"]
)
def test_each_always_hop_by_hop_field(name: str) -> None:
    head = parse(request("Host: a", f"{name}: x", "Accept: */*"))
    assert head.hop_by_hop
    assert head.forward_headers() == [(b"Host", b"a"), (b"Accept", b"*/*")]


def test_forward_headers_is_a_new_list() -> None:
    head = parse(request("Host: a"))
    forwarded = head.forward_headers()
    forwarded.append((b"X-Forwarded-For", b"127.0.0.1"))
    assert head.headers == [(b"Host", b"a")]
    assert head.forward_headers() == [(b"Host", b"a")]


def test_upgrade_request() -> None:
    head = parse(
        request(
            "Host: a",
            "Connection: keep-alive, Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
        )
    )
    assert head.upgrade == b"websocket"
    assert head.hop_by_hop
    # The switch must reach the backend: Upgrade kept, Connection reduced to "upgrade".
    assert head.forward_headers() == [
        (b"Host", b"a"),
        (b"Connection", b"upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Version", b"13"),
    ]


def test_upgrade_request_with_plain_connection_upgrade_forwards_raw() -> None:
    head = parse(request("Host: a", "Connection: Upgrade", "Upgrade: websocket"))
    assert head.upgrade == b"websocket"
    assert not head.hop_by_hop
    assert head.forward_headers() == head.headers


def test_upgrade_needs_connection_upgrade_and_http11() -> None:
    without_connection = parse(request("Host: a", "Upgrade: websocket"))
    assert without_connection.upgrade is None
    assert without_connection.forward_headers() == [(b"Host", b"a")]
    http10 = parse(request("Connection: upgrade", "Upgrade: websocket", first=b"GET / HTTP/1.0"))
    assert http10.upgrade is None
    assert http10.forward_headers() == []


# --- responses -------------------------------------------------------------------------------


def test_simple_response_fields() -> None:
    raw = response("Content-Type: text/plain", "Content-Length: 12 ")
    head = parse_response(raw + b"hello world!")
    assert head.status == 200
    assert head.version == 11
    assert head.headers == [(b"Content-Type", b"text/plain"), (b"Content-Length", b"12")]
    assert head.content_length == 12
    assert not head.chunked
    assert head.keep_alive
    assert not head.hop_by_hop
    assert head.length == len(raw)
    assert head.raw == raw
    assert head.status_line_end == len(b"HTTP/1.1 200 OK\r\n")
    assert raw[: head.status_line_end].endswith(b"\r\n")


@pytest.mark.parametrize(
    "first", [b"HTTP/1.1 204", b"HTTP/1.1 204 ", b"HTTP/1.1 204 No\tContent \xe9"]
)
def test_reason_phrase_forms(first: bytes) -> None:
    head = parse_response(response(first=first))
    assert head.status == 204
    assert head.status_line_end == len(first) + 2


@pytest.mark.parametrize(
    ("first", "lines", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK", ["Content-Length: 1"], True),
        (b"HTTP/1.1 200 OK", ["Content-Length: 1", "Connection: close"], False),
        (b"HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"], True),
        (b"HTTP/1.0 200 OK", ["Content-Length: 1"], False),
        (b"HTTP/1.0 200 OK", ["Content-Length: 1", "Connection: keep-alive"], True),
        # Close-delimited bodies end with the connection.
        (b"HTTP/1.1 200 OK", [], False),
        (b"HTTP/1.1 200 OK", ["Transfer-Encoding: gzip"], False),
        (b"HTTP/1.0 200 OK", ["Connection: keep-alive"], False),
        # No body at all: nothing forces a close.
        (b"HTTP/1.1 204 No Content", [], True),
        (b"HTTP/1.1 304 Not Modified", [], True),
        (b"HTTP/1.1 100 Continue", [], True),
    ],
)
def test_response_keep_alive(first: bytes, lines: list[str], keep_alive: bool) -> None:
    assert parse_response(response(*lines, first=first)).keep_alive is keep_alive


def test_response_hop_by_hop() -> None:
    head = parse_response(
        response(
            "Connection: keep-alive, X-Backend-Private",
            "Keep-Alive: timeout=5",
            "Upgrade: h2,h2c",
            "Trailer: X-Checksum",
            "X-Backend-Private: 1",
            "Transfer-Encoding: chunked",
            "Server: test",
        )
    )
    assert head.hop_by_hop
    assert head.forward_headers() == [
        (b"Trailer", b"X-Checksum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Server", b"test"),
    ]


def test_101_keeps_upgrade() -> None:
    head = parse_response(
        response(
            "Connection: Upgrade, keep-alive",
            "Upgrade: websocket",
            "Sec-WebSocket-Accept: abc=",
            first=b"HTTP/1.1 101 Switching Protocols",
        )
    )
    assert head.status == 101
    assert head.hop_by_hop
    assert head.forward_headers() == [
        (b"Connection", b"upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Accept", b"abc="),
    ]
    assert response_body_kind(head, b"GET") == BODY_TUNNEL


def test_response_transfer_encoding_not_ending_with_chunked_is_close_delimited() -> None:
    for value in ("gzip", "chunked, gzip"):
        head = parse_response(response(f"Transfer-Encoding: {value}"))
        assert not head.chunked
        assert head.content_length == -1
        assert response_body_kind(head, b"GET") == BODY_CLOSE


REFUSED_RESPONSES: dict[str, bytes] = {
    "no status line": b"\r\n\r\n",
    "leading empty line": b"\r\n" + response(),
    "HTTP/2.0": response(first=b"HTTP/2.0 200 OK"),
    "HTTP/0.9": response(first=b"HTTP/0.9 200 OK"),
    "HTTP/1.2": response(first=b"HTTP/1.2 200 OK"),
    "lowercase http": response(first=b"http/1.1 200 OK"),
    "ICE": response(first=b"ICE/1.0 200 OK"),
    "no status code": response(first=b"HTTP/1.1"),
    "two digits": response(first=b"HTTP/1.1 20 OK"),
    "four digits": response(first=b"HTTP/1.1 2000 OK"),
    "letters": response(first=b"HTTP/1.1 abc OK"),
    "double space": response(first=b"HTTP/1.1  200 OK"),
    "no space after code": response(first=b"HTTP/1.1 200OK"),
    "status 099": response(first=b"HTTP/1.1 099 Low"),
    "status 600": response(first=b"HTTP/1.1 600 High"),
    "status 999": response(first=b"HTTP/1.1 999 High"),
    "control in reason": response(first=b"HTTP/1.1 200 O\x01K"),
    "DEL in reason": response(first=b"HTTP/1.1 200 O\x7fK"),
    "bare CR in reason": response(first=b"HTTP/1.1 200 O\rK"),
    "CL then TE": response("Content-Length: 3", "Transfer-Encoding: chunked"),
    "TE then CL": response("Transfer-Encoding: chunked", "Content-Length: 3"),
    "two equal CL": response("Content-Length: 3", "Content-Length: 3"),
    "two different CL": response("Content-Length: 3", "Content-Length: 4"),
    "CL sign": response("Content-Length: +3"),
    "CL space inside": response("Content-Length: 1 3"),
    "CL letters": response("Content-Length: x"),
    "CL 16 digits": response("Content-Length: 1000000000000000"),
    "TE chunked twice": response("Transfer-Encoding: chunked, chunked"),
    "TE chunked in two fields": response(
        "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"
    ),
    "TE in HTTP/1.0": response("Transfer-Encoding: chunked", first=b"HTTP/1.0 200 OK"),
    "obs-fold": response("X: a", " b"),
    "value control": response("X: a\x01b"),
    "value DEL": response("X: a\x7fb"),
    "name control": response("X\x01: b"),
    "space before colon": response("X : b"),
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "bare LF after status line": b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    "101 without Upgrade": response(first=b"HTTP/1.1 101 Switching Protocols"),
    "too many fields": response(*[f"X-{i}: v" for i in range(MAX_HEADER_FIELDS + 1)]),
}


@pytest.mark.parametrize("raw", REFUSED_RESPONSES.values(), ids=REFUSED_RESPONSES.keys())
def test_response_refused_with_502(raw: bytes) -> None:
    error = refused_response(raw)
    assert error.status == 502
    assert error.reason


def test_response_size_limits() -> None:
    raw = response("X-Big: " + "b" * 300)
    assert refused_response(raw, max_head=len(raw) - 1).status == 502
    assert parse_response(raw, max_head=len(raw)).length == len(raw)
    assert refused_response(raw[:100], max_head=100).status == 502
    assert parse_response_head(raw[:99], max_head=100) is None
    fields = [f"X-{i}: v" for i in range(MAX_HEADER_FIELDS)]
    assert len(parse_response(response(*fields)).headers) == MAX_HEADER_FIELDS


def test_pipelined_responses() -> None:
    first = response("Content-Length: 0")
    second = response("Content-Length: 0", first=b"HTTP/1.1 404 Not Found")
    head = parse_response(first + second)
    assert head.length == len(first)
    assert parse_response((first + second)[head.length :]).status == 404


# --- body framing (RFC 9112 §6.3) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "lines", "method", "kind"),
    [
        # 1. HEAD, 1xx, 204 and 304 have no body, whatever the fields say.
        (b"HTTP/1.1 200 OK", ["Content-Length: 10"], b"HEAD", BODY_NONE),
        (b"HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"], b"HEAD", BODY_NONE),
        (b"HTTP/1.1 200 OK", [], b"HEAD", BODY_NONE),
        (b"HTTP/1.1 100 Continue", [], b"POST", BODY_NONE),
        (b"HTTP/1.1 103 Early Hints", ["Link: </a.css>"], b"GET", BODY_NONE),
        (b"HTTP/1.1 204 No Content", ["Content-Length: 10"], b"GET", BODY_NONE),
        (b"HTTP/1.1 304 Not Modified", ["Content-Length: 10"], b"GET", BODY_NONE),
        (b"HTTP/1.1 304 Not Modified", ["Transfer-Encoding: chunked"], b"GET", BODY_NONE),
        # 101 switches protocols.
        (b"HTTP/1.1 101 Switching", ["Connection: upgrade", "Upgrade: ws"], b"GET", BODY_TUNNEL),
        # 2. A 2xx to CONNECT is a tunnel; any other answer to CONNECT is a normal message.
        (b"HTTP/1.1 200 OK", ["Content-Length: 10"], b"CONNECT", BODY_TUNNEL),
        (b"HTTP/1.1 200 OK", [], b"CONNECT", BODY_TUNNEL),
        (b"HTTP/1.1 407 Auth", ["Content-Length: 10"], b"CONNECT", BODY_LENGTH),
        # 4. chunked as final coding.
        (b"HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"], b"GET", BODY_CHUNKED),
        (b"HTTP/1.1 200 OK", ["Transfer-Encoding: gzip, chunked"], b"GET", BODY_CHUNKED),
        (b"HTTP/1.1 500 Oops", ["Transfer-Encoding: chunked"], b"POST", BODY_CHUNKED),
        # 4. another final coding: read until close.
        (b"HTTP/1.1 200 OK", ["Transfer-Encoding: gzip"], b"GET", BODY_CLOSE),
        # 6. Content-Length.
        (b"HTTP/1.1 200 OK", ["Content-Length: 10"], b"GET", BODY_LENGTH),
        (b"HTTP/1.1 404 Not Found", ["Content-Length: 0"], b"GET", BODY_NONE),
        (b"HTTP/1.0 200 OK", ["Content-Length: 10"], b"GET", BODY_LENGTH),
        # 8. Nothing: close-delimited.
        (b"HTTP/1.1 200 OK", [], b"GET", BODY_CLOSE),
        (b"HTTP/1.0 200 OK", [], b"POST", BODY_CLOSE),
    ],
)
def test_response_body_kind(first: bytes, lines: list[str], method: bytes, kind: int) -> None:
    head = parse_response(response(*lines, first=first))
    assert response_body_kind(head, method) == kind


def test_request_body_kind_never_close_delimited() -> None:
    assert request_body_kind(parse(request("Host: a", first=b"POST / HTTP/1.1"))) == BODY_NONE
    assert request_body_kind(parse(request(first=b"POST / HTTP/1.0"))) == BODY_NONE


# --- ChunkedTracker --------------------------------------------------------------------------

SIMPLE_BODY = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def feed_bytewise(body: bytes, tracker: ChunkedTracker | None = None) -> int:
    """Feed one byte at a time; the offset in ``body`` where the tracker says it ended."""
    tracker = tracker or ChunkedTracker()
    for index in range(len(body)):
        end = tracker.feed(body[index : index + 1])
        if end >= 0:
            assert end == 1
            return index + 1
    return -1


def test_chunked_one_shot() -> None:
    tracker = ChunkedTracker()
    assert tracker.feed(SIMPLE_BODY) == len(SIMPLE_BODY)
    assert tracker.done


def test_chunked_byte_at_a_time_equals_one_shot() -> None:
    for body in (SIMPLE_BODY, b"0\r\n\r\n", b"A;x=1\r\n0123456789\r\n0\r\nT: v\r\n\r\n"):
        assert feed_bytewise(body) == ChunkedTracker().feed(body) == len(body)


def test_chunked_not_done_until_final_crlf() -> None:
    tracker = ChunkedTracker()
    assert tracker.feed(SIMPLE_BODY[:-1]) == -1
    assert not tracker.done
    assert tracker.feed(SIMPLE_BODY[-1:]) == 1
    assert tracker.done


def test_chunked_end_offset_exact_before_pipelined_request() -> None:
    following = request("Host: a", first=b"GET /next HTTP/1.1")
    data = SIMPLE_BODY + following
    end = ChunkedTracker().feed(data)
    assert end == len(SIMPLE_BODY)
    assert parse(data[end:]).target == b"/next"


def test_chunked_start_offset_and_memoryview() -> None:
    head = request("Host: a", "Transfer-Encoding: chunked", first=b"POST / HTTP/1.1")
    data = head + SIMPLE_BODY + b"NEXT"
    parsed = parse(data)
    assert ChunkedTracker().feed(data, parsed.length) == len(head) + len(SIMPLE_BODY)
    view = memoryview(data)
    assert ChunkedTracker().feed(view, parsed.length) == len(head) + len(SIMPLE_BODY)
    assert ChunkedTracker().feed(bytearray(data), parsed.length) == len(head) + len(SIMPLE_BODY)
    tracker = ChunkedTracker()
    assert all(tracker.feed(view[i : i + 1]) == -1 for i in range(len(head), len(data) - 5))
    assert tracker.feed(view[len(data) - 5 :]) == 1


def test_chunked_done_tracker_consumes_nothing() -> None:
    tracker = ChunkedTracker()
    assert tracker.feed(SIMPLE_BODY) == len(SIMPLE_BODY)
    assert tracker.feed(b"GET / HTTP/1.1\r\n", 3) == 3


def test_chunked_large_chunk_is_skipped_by_arithmetic() -> None:
    tracker = ChunkedTracker()
    assert tracker.feed(b"100000\r\n") == -1  # 1 MiB chunk announced
    piece = memoryview(bytes(65536))
    for _ in range(16):
        assert tracker.feed(piece) == -1
    assert tracker.feed(b"\r\n0\r\n\r\n") == 7
    # The same chunk size in uppercase hex, with leading zeros, up to 16 digits.
    padded = b"000000000000000A\r\n0123456789\r\n0\r\n\r\n"
    assert ChunkedTracker().feed(padded + b"next") == len(padded)


def test_chunk_extensions_accepted() -> None:
    body = (
        b"5;name=value\r\nhello\r\n"
        b'5 ; a ; b = c ;quoted="with space, \\"escape\\" and ; semicolon"\r\nworld\r\n'
        b"0;last=yes\r\n\r\n"
    )
    assert ChunkedTracker().feed(body) == len(body)
    assert feed_bytewise(body) == len(body)


def test_trailers_accepted() -> None:
    body = b"3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n"
    assert ChunkedTracker().feed(body + b"GET") == len(body)
    assert feed_bytewise(body) == len(body)


@pytest.mark.parametrize(
    "body",
    [
        b"g\r\nx\r\n0\r\n\r\n",  # non-hex size
        b"\r\n\r\n",  # empty size
        b";ext\r\n0\r\n\r\n",  # extension without size
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size without extension
        b"5_0\r\n",
        b"00000000000000005\r\nhello\r\n0\r\n\r\n",  # 17 hex digits
        b"5\r\nhelloX\r\n0\r\n\r\n",  # missing CRLF after chunk data
        b"5\r\nhello\n0\r\n\r\n",  # LF without CR after chunk data
        b"5\r\nhelloX\n0\r\n\r\n",  # another byte in place of the CR after chunk data
        b"5\r\nhello\rX0\r\n\r\n",  # CR not followed by LF after chunk data
        b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
        b"5\r\r\nhello\r\n0\r\n\r\n",  # bare CR in the size line
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",  # bare CR in an extension
        b"5;\r\nhello\r\n0\r\n\r\n",  # empty extension name
        b"5;a=\r\nhello\r\n0\r\n\r\n",  # empty extension value
        b'5;a="open\r\nhello\r\n0\r\n\r\n',  # unterminated quoted string
        b"5;a b\r\nhello\r\n0\r\n\r\n",
        b"5;a\x00\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX: a\nY: b\r\n\r\n",  # bare LF in the trailers
        b"0\r\n\n",  # bare LF as the final line
        b"0\r\nNoColon\r\n\r\n",
        b"0\r\n: empty name\r\n\r\n",
        b"0\r\nX : space before colon\r\n\r\n",
        b"0\r\nX: a\r\n folded\r\n\r\n",  # obs-fold
        b"0\r\nX: a\x01b\r\n\r\n",
        b"0\r\nX: a\x7fb\r\n\r\n",
    ],
)
def test_invalid_chunked_framing_raises_400(body: bytes) -> None:
    with pytest.raises(HttpError) as one_shot:
        ChunkedTracker().feed(body)
    assert one_shot.value.status == 400
    with pytest.raises(HttpError) as bytewise:
        feed_bytewise(body)
    assert bytewise.value.status == 400


def test_chunk_size_line_limit() -> None:
    extension = b";" + b"e" * 40
    body = b"5" + extension + b"\r\nhello\r\n0\r\n\r\n"
    line_length = len(b"5" + extension)
    assert ChunkedTracker(max_line=line_length).feed(body) == len(body)
    assert feed_bytewise(body, ChunkedTracker(max_line=line_length)) == len(body)
    with pytest.raises(HttpError):
        ChunkedTracker(max_line=line_length - 1).feed(body)
    with pytest.raises(HttpError):
        feed_bytewise(body, ChunkedTracker(max_line=line_length - 1))
    # Refused as soon as the limit is passed, without waiting for the end of the line.
    tracker = ChunkedTracker(max_line=64)
    with pytest.raises(HttpError):
        for _ in range(100):
            tracker.feed(b";xxxxxxxx")


def test_trailer_section_limit() -> None:
    trailers = b"X-A: 1234\r\nX-B: 5678\r\n"
    body = b"0\r\n" + trailers + b"\r\n"
    assert ChunkedTracker(max_trailers=len(trailers)).feed(body) == len(body)
    assert feed_bytewise(body, ChunkedTracker(max_trailers=len(trailers))) == len(body)
    with pytest.raises(HttpError):
        ChunkedTracker(max_trailers=len(trailers) - 1).feed(body)
    with pytest.raises(HttpError):
        feed_bytewise(body, ChunkedTracker(max_trailers=len(trailers) - 1))
    endless = ChunkedTracker(max_trailers=1000)
    endless.feed(b"0\r\n")
    with pytest.raises(HttpError):
        for index in range(200):
            endless.feed(b"X-%d: v\r\n" % index)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A valid chunked body with random sizes, extensions and trailers, and split points."""
    sizes = draw(st.lists(st.integers(min_value=1, max_value=300), max_size=12))
    parts = []
    for size in sizes:
        size_text = draw(st.sampled_from(["%x", "%X", "%04x"])) % size
        extension = draw(st.sampled_from(["", ";a", ";a=b", ' ;q="x;y"']))
        parts.append(size_text.encode() + extension.encode() + b"\r\n")
        parts.append(draw(st.binary(min_size=size, max_size=size)) + b"\r\n")
    parts.append(b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n")
    trailer_count = draw(st.integers(min_value=0, max_value=3))
    parts.extend(b"X-T%d: v%d\r\n" % (i, i) for i in range(trailer_count))
    parts.append(b"\r\n")
    body = b"".join(parts)
    splits = draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=10))
    return body, sorted(set(splits))


@settings(max_examples=300, deadline=None)
@given(
    case=chunked_bodies(),
    following=st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"0\r\n\r\n", b"\r\n"]),
    as_view=st.booleans(),
)
def test_chunked_random_bodies_and_splits(
    case: tuple[bytes, list[int]], following: bytes, as_view: bool
) -> None:
    body, splits = case
    data = body + following
    tracker = ChunkedTracker()
    bounds = [0, *[s for s in splits if s < len(data)], len(data)]
    end = -1
    for low, high in itertools.pairwise(bounds):
        piece = memoryview(data)[low:high] if as_view else data[low:high]
        result = tracker.feed(piece)
        if result >= 0:
            end = low + result
            break
    assert end == len(body)
    assert tracker.done
    assert ChunkedTracker().feed(data) == len(body)


# --- what a client cannot do through hop-by-hop fields ---------------------------------------


def test_forwarding_fields_named_in_connection_are_no_longer_seen() -> None:
    """A forwarding field the client names in Connection is removed, so the proxy must add
    its own: the field does not count as sent by the client."""
    head = parse(
        request(
            "Host: a",
            "Connection: close, X-Forwarded-For, Forwarded, X-Request-Id, X-Forwarded-Proto",
            "X-Forwarded-For: 1",
            "Forwarded: for=1",
            "X-Request-Id: a",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Port: 443",
            "Cookie: c=1",
        )
    )
    assert head.seen == SEEN_X_FORWARDED_PORT | SEEN_COOKIE
    assert head.forward_headers() == [
        (b"Host", b"a"),
        (b"X-Forwarded-Port", b"443"),
        (b"Cookie", b"c=1"),
    ]


@pytest.mark.parametrize("offer", ["h2c", "H2C", "websocket, h2c", "h2c/1"])
def test_an_h2c_upgrade_is_not_a_protocol_switch(offer: str) -> None:
    head = parse(
        request(
            "Host: a",
            "Connection: Upgrade, HTTP2-Settings",
            f"Upgrade: {offer}",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        )
    )
    assert head.upgrade is None
    assert head.forward_headers() == [(b"Host", b"a")]


@pytest.mark.parametrize(
    "raw", [b"GET /\r\n", b"GET / HTTP/2.0\r\n", b"GET  / HTTP/1.1\r\nHost: a\r\n", b"GARBAGE\r\n"]
)
def test_a_bad_request_line_is_refused_before_the_head_ends(raw: bytes) -> None:
    with pytest.raises(HttpError) as refused:
        parse_request_head(raw, MAX_HEAD)
    assert refused.value.status == 400


def test_a_good_request_line_waits_for_the_rest_of_the_head() -> None:
    assert parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX_HEAD) is None
