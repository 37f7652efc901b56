"""The fast paths of h1 (simple_request, simple_response) agree with the general parsers.

Whenever a fast path accepts a head, the general parser must accept it too and describe it the
same way; whenever the general parser refuses a head, the fast path must not accept it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sozu_runtime.worker import h1

REQUEST_LINES = [
    b"GET / HTTP/1.1",
    b"GET /index.html?x=1 HTTP/1.1",
    b"HEAD /a HTTP/1.1",
    b"POST /form HTTP/1.1",
    b"GET / HTTP/1.0",
    b"GET http://example.com/ HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"GET /a#frag HTTP/1.1",
    b"GET  / HTTP/1.1",
    b"get / HTTP/1.1",
    b"GET / HTTP/2.0",
    b"CONNECT a:443 HTTP/1.1",
    # found by the fuzzing session: llhttp skips a leading bare LF, the general parser refuses it
    b"\nGET / HTTP/1.1",
    b"\n\nGET / HTTP/1.1",
    b"\tGET / HTTP/1.1",
]
REQUEST_FIELDS = [
    b"Host: example.com",
    b"Host: Example.COM:8080",
    b"HOST: a",
    b"Host: ",
    b"Host: a b",
    b"Host: a@b",
    b"User-Agent: wrk",
    b"Accept: */*",
    b"Content-Length: 5",
    b"Transfer-Encoding: chunked",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"X-Forwarded-For: 1.2.3.4",
    b"Cookie: a=b",
    b"Keep-Alive: timeout=5",
    b"X-Custom: value  ",
    b"X-Bad: a\x01b",
    b"Bad Name: x",
    b" folded",
]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(REQUEST_LINES),
    st.lists(st.sampled_from(REQUEST_FIELDS), max_size=6),
)
def test_simple_request_agrees_with_the_general_parser(line: bytes, fields: list[bytes]) -> None:
    data = b"\r\n".join([line, *fields]) + b"\r\n\r\n"
    end = data.find(b"\r\n\r\n")
    simple = h1.simple_request(data, end) if end + 4 == len(data) else None
    try:
        general = h1.parse_request_head(data, 16384)
    except h1.HttpError:
        general = None
    if simple is None:
        return
    assert general is not None, f"fast path accepted what the general parser refuses: {data!r}"
    method, target, host, version, keep_alive, cut_start, cut_end = simple
    assert (method, target, host, version) == (
        general.method,
        general.target,
        general.host,
        general.version,
    )
    assert general.content_length == -1 and not general.chunked
    assert general.upgrade is None and not general.expect_continue
    assert general.seen == 0
    assert general.keep_alive == keep_alive
    assert general.length == len(data)
    assert general.hop_by_hop == bool(cut_start)
    # the head without the cut line carries exactly the fields the general parser forwards
    spliced = data[:cut_start] + data[cut_end:] if cut_start else data
    assert _normalise(spliced) == _normalise(
        data[: data.find(b"\r\n") + 2]
        + b"".join(n + b": " + v + b"\r\n" for n, v in general.forward_headers())
        + b"\r\n"
    )


STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 200",
    b"HTTP/1.1 404 Not Found",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 600 Nope",
    b"HTTP/2 200 OK",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 200 O\x01K",
]
RESPONSE_FIELDS = [
    b"Content-Length: 12",
    b"Content-Length: 0",
    b"content-length:5",
    b"Content-Length: 1x",
    b"Content-Length: 123456789012345678",
    b"Transfer-Encoding: chunked",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Connection: Keep-Alive",
    b"Connection: upgrade",
    b"Keep-Alive: timeout=5",
    b"Server: nginx",
    b"Set-Cookie: a=b",
    b"X-Bad: a\x00",
    b" folded",
]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(STATUS_LINES),
    st.lists(st.sampled_from(RESPONSE_FIELDS), max_size=5),
    st.sampled_from([b"", b"hello world\n", b"12345"]),
)
def test_simple_response_agrees_with_the_general_parser(
    line: bytes, fields: list[bytes], body: bytes
) -> None:
    data = b"\r\n".join([line, *fields]) + b"\r\n\r\n" + body
    end = data.find(b"\r\n\r\n")
    simple = h1.simple_response(data, end)
    try:
        general = h1.parse_response_head(data, 16384)
    except h1.HttpError:
        general = None
    if simple is None:
        return
    assert general is not None, f"fast path accepted what the general parser refuses: {data!r}"
    status, length, keep_alive, cut_start, cut_end, line_end = simple
    assert status == general.status
    assert length == general.content_length
    assert keep_alive == general.keep_alive
    assert not general.chunked
    assert line_end == general.status_line_end
    # the spliced head equals the head rebuilt from the forwarded fields
    extra = b"Sozu-Id: x\r\n"
    head = data[: end + 4]
    if cut_start:
        spliced = head[:line_end] + extra + head[line_end:cut_start] + head[cut_end:]
    else:
        spliced = head[:line_end] + extra + head[line_end:]
    rebuilt = (
        head[:line_end]
        + extra
        + b"".join(n + b": " + v + b"\r\n" for n, v in general.forward_headers())
        + b"\r\n"
    )
    assert _normalise(spliced) == _normalise(rebuilt)


def _normalise(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    out = []
    for line in lines:
        if line:
            name, _, value = line.partition(b":")
            out.append((name.lower(), value.strip()))
    return sorted(out)


def test_the_benchmark_shapes_take_the_fast_paths() -> None:
    request = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n"
    assert h1.simple_request(request, request.find(b"\r\n\r\n")) == (
        b"GET",
        b"/",
        b"bench.local",
        11,
        True,
        0,
        0,
    )
    closing = b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n"
    simple_close = h1.simple_request(closing, closing.find(b"\r\n\r\n"))
    assert simple_close is not None and simple_close[4] is False
    assert closing[simple_close[5] : simple_close[6]] == b"Connection: close\r\n"
    response = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
        b"hello world\n"
    )
    simple = h1.simple_response(response, response.find(b"\r\n\r\n"))
    assert simple is not None
    status, length, keep_alive, cut_start, cut_end, _ = simple
    assert (status, length, keep_alive) == (200, 12, True)
    assert response[cut_start:cut_end] == b"Connection: keep-alive\r\n"
