"""End-to-end strictness of the HTTP/1.1 parsing, on both sides of the proxy.

A request the proxy must refuse (request smuggling shapes, malformed heads, oversized heads)
gets 400, 414 or 431 with the built-in page, its connection is closed, and NOT ONE BYTE of it
reaches a backend: the backend here records every byte it receives. A backend answer with
broken framing gets the client a 502 (nothing of it had been sent yet), and never leaves a
connection out of step: the next request, on a fresh connection, is answered correctly.

One daemon (one worker) serves the module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received, ScriptedBackend
from support.clients import HttpConnection
from support.daemon import DaemonProcess, free_port

pytestmark = pytest.mark.e2e


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body (extensions and trailers allowed); return it as received."""
    raw = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        raw += line
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                raw += line
            return raw + line
        raw += await reader.readexactly(size + 2)


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal keep-alive backend: consumes each request (and its body) and answers ok."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            await read_chunked(reader)
        elif b"content-length:" in lowered:
            await reader.readexactly(int(lowered.split(b"content-length:")[1].split(b"\r\n")[0]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


# Answers of the "broken" backend by request target (written on a kept-alive connection).
BROKEN_ANSWERS = {
    "status_code_too_long": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "status_code_not_a_number": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
    "bad_version": b"HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "not_http": b"this is not http at all\r\n\r\n",
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "two_content_lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "invalid_content_length": b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
    "invalid_chunk_size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n"
    b"0\r\n\r\n",
    "space_in_field_name": b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "unrequested_switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: upgrade\r\n\r\n",
}


def broken_backend(request: Received) -> Answer:
    case = request.target.strip("/")
    if case in BROKEN_ANSWERS:
        return Answer(raw=BROKEN_ANSWERS[case])
    if case == "closed_without_answer":
        return Answer(raw=b"", close=True)
    if case == "answer_then_garbage":
        return Answer(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    return Answer(body=b"fine:" + request.target.encode())


@dataclass
class Parsing:
    port: int
    daemon: DaemonProcess
    recorder: ScriptedBackend  # cluster "strict", host strict.test
    broken: HttpBackend  # cluster "broken", host broken.test


@pytest.fixture(scope="module")
def parsing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parsing]:
    port = free_port()
    with ScriptedBackend(answer_ok) as recorder, HttpBackend("broken", broken_backend) as broken:
        address = f"127.0.0.1:{port}"
        config = configs.document(
            configs.http_listener(address),
            configs.http_cluster("strict", address, "strict.test", [recorder.address]),
            configs.http_cluster("broken", address, "broken.test", [broken.address]),
            worker_count=1,
        )
        with DaemonProcess(tmp_path_factory.mktemp("parsing"), config).start() as daemon:
            yield Parsing(port, daemon, recorder, broken)


H = b"Host: strict.test\r\n"
# name → (raw request, expected status); every request is otherwise routable to strict.test
REFUSED_REQUESTS: dict[str, tuple[bytes, int]] = {
    # sōzu test_h1_smuggling_te_cl, mux test_h1_rejects_ambiguous_cl_te
    "cl_then_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "te_then_cl": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    # sōzu test_h1_smuggling_te_te_obfuscated
    "te_xchunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    "te_chunked_identity": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_space_before_colon": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_chunked_twice": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_vertical_tab": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_in_http10": (
        b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # sōzu test_h1_smuggling_double_content_length
    "two_content_lengths": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "two_equal_content_lengths": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    "content_length_list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    "content_length_negative": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    "content_length_plus": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    "content_length_hex": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    # chunked framing refused before anything is forwarded
    "invalid_chunk_size": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_size_too_long": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_without_crlf": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
    ),
    "chunk_bare_lf": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        400,
    ),
    # field syntax
    "obs_fold": (b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\n\r\n", 400),
    "control_character_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-Ctl: a\x01b\r\n\r\n", 400),
    "nul_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-Nul: a\x00b\r\n\r\n", 400),
    "cr_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-Cr: a\rb\r\n\r\n", 400),
    "space_in_field_name": (b"GET / HTTP/1.1\r\n" + H + b"Bad Header: x\r\n\r\n", 400),
    "field_without_colon": (b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", 400),
    "bare_lf_head": (b"GET / HTTP/1.1\nHost: strict.test\n\n", 400),
    # request line
    "missing_host_http11": (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    # sōzu test_h1_http09_request_rejection
    "http09": (b"GET /\r\n\r\n", 400),
    "http2_preface_on_http1": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    # sōzu test_http_behaviors (garbage request line)
    "garbage_request_line": (b"GARBAGE\r\n\r\n", 400),
    "space_in_target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "double_space": (b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "connect_method": (b"CONNECT strict.test:443 HTTP/1.1\r\n" + H + b"\r\n", 400),
    # sōzu test_h1_invalid_utf8_method_no_crash
    "invalid_utf8_method": (b"\xc3\x28 / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # sōzu test_h1_tolerant_high_byte_method_no_ub
    "high_byte_method": (b"G\xffT / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # sizes (sōzu test_h1_oversized_headers): the proxy answers 414 / 431, not 413
    "request_line_too_long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    "head_too_large": (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431),
    "too_many_fields": (
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-F%d: v\r\n" % i for i in range(150)) + b"\r\n",
        431,
    ),
}
REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


@pytest.mark.parametrize("case", REFUSED_REQUESTS.values(), ids=REFUSED_REQUESTS.keys())
def test_refused_request_never_reaches_the_backend(
    parsing: Parsing, case: tuple[bytes, int]
) -> None:
    """sōzu ``test_h1_smuggling_te_cl``, ``test_h1_smuggling_te_te_obfuscated``,
    ``test_h1_smuggling_double_content_length``, ``test_h1_oversized_headers``,
    ``test_h1_http09_request_rejection``, ``test_h1_invalid_utf8_method_no_crash``,
    ``test_h1_tolerant_high_byte_method_no_ub``, mux ``test_h1_rejects_ambiguous_cl_te`` and
    ``test_http_behaviors`` (garbage request line): the refusal status, the built-in page, a
    closed connection, nothing forwarded — and the proxy still serves the next client."""
    raw, status = case
    before = [len(record) for record in parsing.recorder.received]
    with HttpConnection(parsing.port) as connection:
        connection.send(raw)
        answer = connection.read_answer()
        assert answer.raw_head.startswith(b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status]))
        assert b"<h1>%d %s</h1>" % (status, REASONS[status]) in answer.body
        assert connection.is_closed(timeout=3)
    # a valid request afterwards is served, and it is all the backend received since
    with HttpConnection(parsing.port) as connection:
        marker = connection.request("GET", "/marker", host="strict.test")
        assert marker.status == 200 and marker.body == b"ok"
    time.sleep(0.1)  # what a faulty proxy forwarded would have arrived by now
    records = parsing.recorder.received
    new = b"".join(
        bytes(record[before[index] if index < len(before) else 0 :])
        for index, record in enumerate(records)
    )
    assert new.startswith(b"GET /marker HTTP/1.1\r\nHost: strict.test\r\n"), new[:200]
    assert new.count(b"\r\n\r\n") == 1 and new.endswith(b"\r\n\r\n"), new


def test_an_http09_request_is_refused_at_once(parsing: Parsing) -> None:
    """An HTTP/0.9 request (``GET /`` and one CRLF) never sends the empty line that would end
    a head: the proxy refuses it as soon as its line is complete, without waiting for
    request_timeout (10 s here)."""
    with HttpConnection(parsing.port, timeout=3.0) as connection:
        connection.send(b"GET /\r\n")
        answer = connection.read_answer()
        assert answer.status == 400
        assert connection.is_closed(timeout=2)


def test_valid_chunked_edge_cases_are_forwarded_unchanged(parsing: Parsing) -> None:
    """sōzu ``test_h1_chunked_encoding_edge_cases``: extensions (quoted too), upper-case hex,
    leading zeros, an extension on the last chunk, trailers — accepted and forwarded as is."""
    body = (
        b'5;a=b;c="d e"\r\nhello\r\n'
        b"000A\r\n0123456789\r\n"
        b"b\r\n-elevenbyte\r\n"
        b"0;end=1\r\n"
        b"X-Trailer: t\r\n"
        b"\r\n"
    )
    with HttpConnection(parsing.port) as connection:
        connection.send(
            b"POST /edge HTTP/1.1\r\nHost: strict.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        )
        assert connection.read_answer().body == b"ok"
        # the connection stays in step
        assert connection.request("GET", "/edge-after", host="strict.test").body == b"ok"
    forwarded = bytes(parsing.recorder.received[-1])
    start = forwarded.rindex(b"POST /edge HTTP/1.1")
    assert forwarded[start:].split(b"\r\n\r\n", 1)[1].startswith(body)


@pytest.mark.parametrize(
    "case", [*BROKEN_ANSWERS, "closed_without_answer"], ids=[*BROKEN_ANSWERS, "closed"]
)
def test_broken_backend_answer_gives_502_and_no_desync(parsing: Parsing, case: str) -> None:
    """sōzu ``test_http_behaviors`` (unparsable backend response → 502; backend closes after
    reading the request without answering → 502)."""
    with HttpConnection(parsing.port) as connection:
        connection.send(f"GET /{case} HTTP/1.1\r\nHost: broken.test\r\n\r\n".encode())
        answer = connection.read_answer()
        assert answer.raw_head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), answer.raw_head
        assert b"<h1>502 Bad Gateway</h1>" in answer.body
        assert connection.is_closed(timeout=3)
    for attempt in range(3):
        with HttpConnection(parsing.port) as connection:
            follow = connection.request("GET", f"/after-{case}-{attempt}", host="broken.test")
            assert follow.status == 200
            assert follow.body == f"fine:/after-{case}-{attempt}".encode()


def test_bytes_after_a_complete_answer_do_not_leak_into_the_next_one(parsing: Parsing) -> None:
    with HttpConnection(parsing.port) as connection:
        first = connection.request("GET", "/answer_then_garbage", host="broken.test")
        assert first.status == 200 and first.body == b"ok"
        second = connection.request("GET", "/after-garbage", host="broken.test")
        assert second.status == 200 and second.body == b"fine:/after-garbage"
