"""HTTP/1.1 messages read back into their parts (worker/h1_decode.py), and HTTP/2 request
header lists turned into HTTP/1.1 heads (worker/h2_stream.py), without sockets."""

from __future__ import annotations

import pytest

from sozu_runtime.worker import h1
from sozu_runtime.worker.h1 import HttpError
from sozu_runtime.worker.h1_decode import MessageReader
from sozu_runtime.worker.h2_stream import Refused, request_head


class Sink:
    def __init__(self) -> None:
        self.heads: list[h1.RequestHead | h1.ResponseHead] = []
        self.body = b""
        self.pieces = 0
        self.trailers: list[tuple[bytes, bytes]] | None = None

    def message_head(self, head: h1.RequestHead | h1.ResponseHead) -> None:
        self.heads.append(head)

    def message_data(self, data: bytes | memoryview) -> None:
        assert data
        self.body += bytes(data)
        self.pieces += 1

    def message_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        assert self.trailers is None, "ended twice"
        self.trailers = trailers


def read(raw: bytes, *, request: bool = False, method: bytes = b"GET", step: int = 0) -> Sink:
    sink = Sink()
    reader = MessageReader(sink, request=request, max_head=8192, method=method)
    if step:
        for start in range(0, len(raw), step):
            reader.feed(raw[start : start + step])
    else:
        reader.feed(raw)
    return sink


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\nx-other:  d \r\n\r\n"
)


@pytest.mark.parametrize("step", [0, 1, 3, 7])
def test_a_chunked_answer_is_decoded_with_its_trailers_whatever_the_reads(step: int) -> None:
    sink = read(CHUNKED, step=step)
    assert [head.status for head in sink.heads] == [200]  # type: ignore[union-attr]
    assert sink.body == b"hello world"
    assert sink.trailers == [(b"x-checksum", b"abc"), (b"x-other", b"d")]


@pytest.mark.parametrize("step", [0, 2])
def test_a_content_length_answer_ends_with_its_last_byte(step: int) -> None:
    sink = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", step=step)
    assert sink.body == b"0123456789"
    assert sink.trailers == []


def test_a_large_body_is_passed_on_without_being_gathered() -> None:
    sink = Sink()
    reader = MessageReader(sink, request=False, max_head=8192)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n")
    for _ in range(3):
        reader.feed(memoryview(b"x" * 100_000))
    assert sink.pieces == 3 and len(sink.body) == 300_000
    assert reader.done


def test_an_answer_to_head_and_a_204_have_no_body() -> None:
    head = read(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", method=b"HEAD")
    assert head.trailers == [] and head.body == b""
    no_content = read(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert no_content.trailers == [] and no_content.body == b""


def test_interim_answers_come_before_the_final_head() -> None:
    sink = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert [head.status for head in sink.heads] == [100, 201]  # type: ignore[union-attr]
    assert sink.body == b"ok"


def test_a_close_delimited_body_ends_when_the_writer_closes() -> None:
    sink = Sink()
    reader = MessageReader(sink, request=False, max_head=8192)
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    reader.feed(b"def")
    assert sink.trailers is None
    assert reader.close()
    assert sink.body == b"abcdef" and sink.trailers == []


def test_a_body_cut_short_is_not_complete() -> None:
    sink = Sink()
    reader = MessageReader(sink, request=False, max_head=8192)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    assert not reader.close()
    assert sink.trailers is None


def test_bytes_after_the_message_are_refused() -> None:
    with pytest.raises(HttpError):
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    with pytest.raises(HttpError):
        read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nEXTRA")


def test_a_protocol_switch_cannot_be_translated() -> None:
    with pytest.raises(HttpError):
        read(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n")


def test_a_chunked_request_is_read_too() -> None:
    raw = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    sink = read(raw, request=True, step=4)
    assert isinstance(sink.heads[0], h1.RequestHead)
    assert sink.heads[0].target == b"/up"
    assert sink.body == b"abc" and sink.trailers == []


# ------------------------------------------------------------------ HTTP/2 request heads

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]


def test_an_h2_request_becomes_the_http11_head_it_stands_for() -> None:
    built = request_head(
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"example.com"),
            (b":path", b"/a?b"),
            (b"cookie", b"a=1"),
            (b"accept", b"*/*"),
            (b"cookie", b"b=2"),
            (b"te", b"trailers"),
        ],
        ended=True,
    )
    assert not isinstance(built, Refused)
    raw, method, chunked = built
    head = h1.parse_request_head(raw, 8192)
    assert head is not None and method == b"GET" and not chunked
    assert (head.method, head.target, head.host) == (b"GET", b"/a?b", b"example.com")
    assert (b"cookie", b"a=1; b=2") in head.headers
    # TE: trailers stays (an HTTP/2 backend is told it again; the forwarding drops the field,
    # hop-by-hop, for an HTTP/1.1 one); any other TE does not cross
    assert [value for name, value in head.headers if name == b"te"] == [b"trailers"]
    assert head.hop_by_hop
    assert head.content_length == -1 and not head.chunked
    other = request_head([*GET, (b":authority", b"a"), (b"te", b"gzip")], ended=True)
    assert not isinstance(other, Refused)
    assert b"te:" not in other[0]


def test_a_body_without_length_is_sent_chunked_and_one_with_a_length_as_is() -> None:
    built = request_head([*GET, (b":authority", b"a")], ended=False)
    assert not isinstance(built, Refused)
    head = h1.parse_request_head(built[0], 8192)
    assert head is not None and head.chunked and built[2]
    built = request_head([*GET, (b":authority", b"a"), (b"content-length", b"5")], ended=False)
    assert not isinstance(built, Refused)
    head = h1.parse_request_head(built[0], 8192)
    assert head is not None and head.content_length == 5 and not built[2]


@pytest.mark.parametrize(
    ("headers", "ended", "status"),
    [
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a")], True, 0),
        ([*GET, (b":authority", b"a"), (b"host", b"b")], True, 0),
        ([(b":method", b"GET"), (b":scheme", b"javascript"), (b":path", b"/")], True, 0),
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"rel")], True, 0),
        ([*GET, (b":authority", b"a"), (b"content-length", b"10")], True, 0),
        (GET, True, 400),
    ],
    ids=["no path", "host differs", "scheme", "path not origin-form", "length denied", "no host"],
)
def test_malformed_h2_requests_are_refused(
    headers: list[tuple[bytes, bytes]], ended: bool, status: int
) -> None:
    refused = request_head(headers, ended)
    assert isinstance(refused, Refused)
    assert refused.status == status and refused.reason


def test_host_stands_for_a_missing_authority_and_options_may_ask_for_star() -> None:
    built = request_head([*GET, (b"host", b"h.test")], ended=True)
    assert not isinstance(built, Refused)
    head = h1.parse_request_head(built[0], 8192)
    assert head is not None and head.host == b"h.test"
    options = [(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":path", b"*")]
    assert not isinstance(request_head([*options, (b":authority", b"a")], True), Refused)
    zero = [*GET, (b":authority", b"a"), (b"content-length", b"0")]
    assert not isinstance(request_head(zero, True), Refused)
