"""End-to-end HTTP/2: malformed frames and requests (sōzu ``h2_security_tests.rs``,
``h2_security_parser.rs``, ``h2_security_header_injection.rs``, ``h2_security_sni.rs``).

The reactions (see :mod:`sozu_runtime.worker.h2_front`): what the ``h2`` library finds
malformed ends the connection with GOAWAY (PROTOCOL_ERROR; FRAME_SIZE_ERROR for a frame of a
wrong size; FLOW_CONTROL_ERROR for a window overflow), what it lets through and the proxy
finds malformed resets the one stream (RST_STREAM(PROTOCOL_ERROR)), and a request the proxy
can read but not accept gets its answer (400, 421). None of these requests reaches the
backend, and the worker goes on serving other connections.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hyperframe.frame import HeadersFrame, PingFrame, WindowUpdateFrame
from support.backends import Answer, Received
from support.h2client import (
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    H2Client,
    frame_bytes,
)
from support.h2proxy import HOST, H2Proxy, h2_proxy

pytestmark = pytest.mark.e2e

Fields = list[tuple[str, str]]


def request(path: str = "/", authority: str = HOST, scheme: str = "https") -> Fields:
    return [(":method", "GET"), (":scheme", scheme), (":authority", authority), (":path", path)]


def handle(request: Received) -> Answer:
    return Answer(body=b"ok " + request.target.encode())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Proxy]:
    with h2_proxy(
        tmp_path_factory.mktemp("h2-parser"),
        handle,
        listeners={"lenient": {"strict_sni_binding": False}},
        frontends=[{"hostname": "localhost"}, {"hostname": "evil.org"}],
    ) as proxy:
        yield proxy


def reached(proxy: H2Proxy, marker: str) -> list[Received]:
    """The backend's requests whose head holds ``marker``."""
    return [r for r in proxy.backend.requests if marker.encode() in r.head]


def served(proxy: H2Proxy) -> None:
    with H2Client(proxy.port) as client:
        state = client.get("/served")
        assert (state.status, bytes(state.body)) == (200, b"ok /served")


def outcome_of(
    proxy: H2Proxy, fields: Fields, *, end_stream: bool = True
) -> tuple[str, int | None]:
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        client.send_headers(stream, fields, end_stream=end_stream)
        return client.outcome(stream)


# --------------------------------------------------------------------------- pseudo-fields

BASE = request("/pseudo")
MALFORMED_HEADS: dict[str, Fields] = {
    "missing :path": [f for f in BASE if f[0] != ":path"],
    "missing :method": [f for f in BASE if f[0] != ":method"],
    "missing :scheme": [f for f in BASE if f[0] != ":scheme"],
    "duplicate :method": [*BASE, (":method", "POST")],
    "duplicate :path": [*BASE, (":path", "/other")],
    "unknown pseudo-field": [*BASE, (":foo", "x")],
    "pseudo-field after a regular one": [*BASE[:3], ("accept", "*/*"), BASE[3]],
    "response pseudo-field": [*BASE, (":status", "200")],
    "empty :path": [*BASE[:3], (":path", "")],
    "connection": [*BASE, ("connection", "keep-alive")],
    "keep-alive": [*BASE, ("keep-alive", "timeout=5")],
    "proxy-connection": [*BASE, ("proxy-connection", "keep-alive")],
    "transfer-encoding": [*BASE, ("transfer-encoding", "chunked")],
    "upgrade": [*BASE, ("upgrade", "websocket")],
    "te other than trailers": [*BASE, ("te", "gzip")],
    "CR LF in a value": [*BASE, ("x-a", "a\r\nx-injected: 1")],
    "LF in a value": [*BASE, ("x-a", "a\nx-injected: 1")],
    "NUL in a cookie": [*BASE, ("cookie", "a=\x00x-injected")],
    "uppercase name": [*BASE, ("X-Injected", "1")],
    "empty name": [*BASE, ("", "x-injected")],
    "CR LF in :authority": request("/pseudo", authority=HOST + "\r\nx-injected: 1"),
    "host other than :authority": [*BASE, ("host", "x-injected.example")],
    "empty content-length": [*BASE, ("content-length", "")],
    "signed content-length": [*BASE, ("content-length", "+0")],
    "two content-lengths": [*BASE, ("content-length", "0"), ("content-length", "1")],
    "content-length and transfer-encoding": [
        *BASE,
        ("content-length", "0"),
        ("transfer-encoding", "chunked"),
    ],
}


@pytest.mark.parametrize("case", MALFORMED_HEADS)
def test_malformed_request_ends_the_connection(proxy: H2Proxy, case: str) -> None:
    """sōzu ``test_h2_missing_pseudo_headers``, ``test_h2_duplicate_pseudo_headers``,
    ``test_h2_pseudo_headers_after_regular``, ``test_h2_connection_specific_headers``,
    ``test_h2_te_header_filtering``, ``test_h2_uppercase_header_name``,
    ``test_h2_zero_length_header_name``, ``test_h2_header_value_crlf_rejected``,
    ``test_h2_cookie_value_nul_rejected``, ``test_h2_authority_injection_crlf``,
    ``test_h2_host_authority_mismatch_rejected``, ``test_h2_desync_authority_host_conflict``,
    ``test_h2_empty_content_length``, ``test_h2_multiple_content_length_values``,
    ``test_h2_cl_te_conflict``, ``test_h2_content_length_strict_syntax``: GOAWAY
    (PROTOCOL_ERROR), nothing forwarded."""
    before = len(proxy.backend.requests)
    assert outcome_of(proxy, MALFORMED_HEADS[case]) == ("goaway", PROTOCOL_ERROR)
    served(proxy)
    assert len(proxy.backend.requests) == before + 1  # the /served request only
    assert not reached(proxy, "x-injected") and not reached(proxy, "/pseudo")


MALFORMED_STREAMS: dict[str, tuple[Fields, tuple[str, int]]] = {
    ":path not origin-form": (request("pseudo"), ("reset", PROTOCOL_ERROR)),
    ":path *": (request("*"), ("reset", PROTOCOL_ERROR)),
    ":path with a fragment": (request("/pseudo#frag"), ("status", 400)),
    ":scheme ftp": (request("/pseudo", scheme="ftp"), ("reset", PROTOCOL_ERROR)),
    ":scheme javascript": (request("/pseudo", scheme="javascript"), ("reset", PROTOCOL_ERROR)),
    "END_STREAM with content-length 5": (
        [*request("/pseudo"), ("content-length", "5")],
        ("reset", PROTOCOL_ERROR),
    ),
    "content-length overflowing": (
        [*request("/pseudo"), ("content-length", "9" * 30)],
        ("reset", PROTOCOL_ERROR),
    ),
}


@pytest.mark.parametrize("case", MALFORMED_STREAMS)
def test_malformed_request_resets_its_stream(proxy: H2Proxy, case: str) -> None:
    """sōzu ``test_h2_desync_path_no_leading_slash``, ``test_h2_path_syntax_enforced``,
    ``test_h2_desync_path_with_fragment``, ``test_h2_invalid_scheme_rejected``,
    ``test_h2_end_stream_nonzero_content_length_rejected``,
    ``test_h2_content_length_integer_overflow``: the stream is refused, the connection goes
    on."""
    fields, expected = MALFORMED_STREAMS[case]
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        client.send_headers(stream, fields)
        assert client.outcome(stream) == expected
        assert client.get("/next").status == 200
        assert client.goaway is None
    assert not reached(proxy, "/pseudo")


def test_te_trailers_and_zero_content_length_are_accepted(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_end_stream_zero_content_length_accepted``; ``te: trailers`` is the one
    TE value HTTP/2 allows (RFC 9113 §8.2.2)."""
    fields = [*request("/te-trailers"), ("te", "trailers"), ("content-length", "0")]
    assert outcome_of(proxy, fields) == ("status", 200)
    assert reached(proxy, "/te-trailers")


@pytest.mark.parametrize("body", [b"12345", b"123456789012"], ids=["shorter", "longer"])
def test_body_other_than_its_content_length(proxy: H2Proxy, body: bytes) -> None:
    """``test_h2_content_length_format_fuzzing``, ``test_h2_content_length_mismatch``
    (client side): a body shorter or longer than its ``content-length`` (10) ends the
    connection with GOAWAY(PROTOCOL_ERROR); nothing of it is forwarded."""
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        fields = [*request("/length-mismatch"), ("content-length", "10")]
        fields[0] = (":method", "POST")
        client.send_headers(stream, fields, end_stream=False)
        client.send_data(stream, body)
        assert client.outcome(stream) == ("goaway", PROTOCOL_ERROR)
    assert not reached(proxy, "/length-mismatch")
    served(proxy)


def test_a_pseudo_field_in_trailers_ends_the_connection(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_pseudo_header_in_trailer`` (RFC 9113 §8.1): GOAWAY(PROTOCOL_ERROR)."""
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        fields = [(":method", "POST"), *request("/trailer-pseudo")[1:]]
        client.send_headers(stream, fields, end_stream=False)
        client.send_data(stream, b"abc", end_stream=False)
        client.send_headers(stream, [(":path", "/evil")], end_stream=True)
        assert client.outcome(stream) == ("goaway", PROTOCOL_ERROR)
    assert not reached(proxy, "/evil")
    served(proxy)


# --------------------------------------------------------------------------- stream ids


def test_stream_id_reuse_ends_the_connection(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_stream_id_reuse_after_goaway``: HEADERS on a closed stream."""
    with H2Client(proxy.port) as client:
        assert client.get("/first").status == 200
        client.request("/reused", stream_id=1)
        assert client.wait_goaway() in {PROTOCOL_ERROR, 0x5}  # STREAM_CLOSED allowed (§5.1)
    assert not reached(proxy, "/reused")
    served(proxy)


@pytest.mark.parametrize("first", [None, 5])
def test_even_or_decreasing_stream_id_ends_the_connection(
    proxy: H2Proxy, first: int | None
) -> None:
    """sōzu ``test_h2_headers_on_even_stream_id``, ``test_h2_stream_id_regression``."""
    with H2Client(proxy.port) as client:
        if first is None:
            stream = 2
        else:
            assert client.response(client.request("/five", stream_id=first)).status == 200
            stream = 3
        client.request("/wrong-id", stream_id=stream)
        assert client.outcome(stream) == ("goaway", PROTOCOL_ERROR)
    assert not reached(proxy, "/wrong-id")
    served(proxy)


def test_continuation_on_another_stream_ends_the_connection(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_continuation_wrong_stream_id``."""
    with H2Client(proxy.port) as client:
        block = client.header_block(request("/split-wrong"))
        client.send_raw(frame_bytes(0x1, 0x1, 1, block[:5]) + frame_bytes(0x9, 0x4, 3, block[5:]))
        assert client.wait_goaway() == PROTOCOL_ERROR
    served(proxy)


def test_the_last_stream_id_is_served(proxy: H2Proxy) -> None:
    """sōzu ``e2e_session_stream_id_exhaustion_graceful``: a client jumping to the highest
    stream id (2^31-1) is served on it; a stream id cannot go past it."""
    with H2Client(proxy.port) as client:
        last = 0x7FFF_FFFF
        state = client.response(client.request("/last-id", stream_id=last))
        assert (state.status, bytes(state.body)) == (200, b"ok /last-id")
        assert client.goaway is None
    served(proxy)


# --------------------------------------------------------------------------- frames

FRAME_ERRORS: dict[str, tuple[bytes, int]] = {
    "SETTINGS of 7 bytes": (frame_bytes(0x4, 0, 0, b"\0" * 7), FRAME_SIZE_ERROR),
    "SETTINGS ACK with a payload": (frame_bytes(0x4, 0x1, 0, b"\0" * 6), FRAME_SIZE_ERROR),
    "SETTINGS with 70 entries": (
        frame_bytes(0x4, 0, 0, b"\0\x03\0\0\0\x64" * 70),
        FRAME_SIZE_ERROR,
    ),
    "PING of 7 bytes": (frame_bytes(0x6, 0, 0, b"\0" * 7), FRAME_SIZE_ERROR),
    "GOAWAY of 4 bytes": (frame_bytes(0x7, 0, 0, b"\0" * 4), FRAME_SIZE_ERROR),
    "GOAWAY on stream 1": (frame_bytes(0x7, 0, 1, b"\0" * 8), PROTOCOL_ERROR),
    "RST_STREAM on stream 0": (frame_bytes(0x3, 0, 0, b"\0" * 4), PROTOCOL_ERROR),
    "PRIORITY on stream 0": (frame_bytes(0x2, 0, 0, b"\0" * 5), PROTOCOL_ERROR),
    "PUSH_PROMISE": (frame_bytes(0x5, 0x4, 1, b"\0\0\0\x02\x82"), PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (frame_bytes(0x9, 0x4, 1, b"\x82"), PROTOCOL_ERROR),
    "DATA on an idle stream": (frame_bytes(0x0, 0x1, 1, b"abc"), PROTOCOL_ERROR),
    "WINDOW_UPDATE on an idle stream": (frame_bytes(0x8, 0, 9, b"\0\0\0\x01"), PROTOCOL_ERROR),
    "WINDOW_UPDATE of 0": (frame_bytes(0x8, 0, 0, b"\0" * 4), PROTOCOL_ERROR),
    "window overflow": (
        frame_bytes(0x8, 0, 0, (0x7FFF_FFFF).to_bytes(4, "big")),
        FLOW_CONTROL_ERROR,
    ),
}


@pytest.mark.parametrize("case", FRAME_ERRORS)
def test_invalid_frame_ends_the_connection(proxy: H2Proxy, case: str) -> None:
    """sōzu ``test_h2_invalid_settings_frame_length``,
    ``test_h2_settings_ack_with_payload_rejected``, ``e2e_h2_flood_settings_entries_cap``,
    ``e2e_h2_parser_reject_short_goaway``, ``test_h2_goaway_on_nonzero_stream``,
    ``test_h2_rst_stream_on_stream_zero``, ``test_h2_push_promise_from_client``,
    ``e2e_h2_parser_reject_push_promise_from_client``,
    ``e2e_h2_parser_reject_standalone_continuation``,
    ``test_h2_continuation_without_initial_headers``, ``test_h2_data_on_idle_stream``,
    ``test_h2_window_update_overflow``, ``test_h2_malformed_frames_no_crash``."""
    data, code = FRAME_ERRORS[case]
    with H2Client(proxy.port) as client:
        assert client.read_until(lambda: client.server_settings)  # past the preface
        client.send_raw(data)
        assert client.wait_goaway() == code, client.frames[-3:]
        assert client.wait_closed()
    served(proxy)


def test_a_corrupted_preface_is_closed(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_connection_preface_corruption``."""
    with H2Client(proxy.port, preface=False) as client:
        client.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        assert client.wait_closed()
        assert not any(isinstance(f, HeadersFrame) for f in client.frames)
    served(proxy)


@pytest.mark.parametrize(
    "frame",
    [
        frame_bytes(0xFF, 0, 0, b"unknown"),
        frame_bytes(0xFF, 0, 1, b"on a stream"),
        frame_bytes(0x10, 0, 0, b"\0\0\0\x01u=1, i"),  # PRIORITY_UPDATE (RFC 9218)
        frame_bytes(0x2, 0, 7, b"\0\0\0\x05\x10"),  # PRIORITY on an idle stream
    ],
    ids=["unknown type", "unknown type on a stream", "PRIORITY_UPDATE", "PRIORITY"],
)
def test_frames_to_ignore_are_ignored(proxy: H2Proxy, frame: bytes) -> None:
    """sōzu ``e2e_h2_parser_ignore_unknown_frame_type`` (RFC 9113 §5.5),
    ``e2e_h2_parser_ignore_priority_update_frame``, ``test_h2_stream_priority_basic``."""
    with H2Client(proxy.port) as client:
        client.send_raw(frame)
        assert client.get("/after-ignored").status == 200
        assert client.goaway is None


def test_the_reserved_bit_is_ignored_and_never_sent(proxy: H2Proxy) -> None:
    """sōzu ``e2e_h2_parser_serializer_masks_reserved_bit`` (RFC 9113 §4.1): a HEADERS frame
    whose stream id has the reserved bit set is stream 1; no frame the proxy sends has it."""
    with H2Client(proxy.port) as client:
        client.send_raw(frame_bytes(0x1, 0x5, 0x8000_0001, client.header_block(request("/r"))))
        state = client.response(1)
        assert (state.status, bytes(state.body)) == (200, b"ok /r")
        assert client.frame_headers and all(h[5] & 0x80 == 0 for h in client.frame_headers)


def test_padding_is_stripped(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_padded_data_body_and_credit``, ``e2e_h2_parser_accept_all_padding_data``:
    padded HEADERS and DATA, one DATA frame all padding: the body is the data."""
    with H2Client(proxy.port) as client:
        block = client.header_block([(":method", "POST"), *request("/padded")[1:]])
        client.send_raw(
            frame_bytes(0x1, 0x4 | 0x8, 1, bytes([10]) + block + b"\0" * 10)
            + frame_bytes(0x0, 0x8, 1, bytes([5]) + b"hello" + b"\0" * 5)
            + frame_bytes(0x0, 0x8, 1, bytes([3]) + b"\0" * 3)
            + frame_bytes(0x0, 0x9, 1, bytes([0]) + b"!")
        )
        assert client.response(1).status == 200
    assert [r.body for r in reached(proxy, "/padded")] == [b"hello!"]


@pytest.mark.parametrize(
    "frames",
    [
        [(0x1, 0x4, b""), (0x0, 0x9, bytes([5]) + b"abc")],  # padding longer than the frame
        [(0x1, 0x4 | 0x8 | 0x20, bytes([200]) + b"\0\0\0\0\x10")],  # PADDED|PRIORITY underflow
    ],
    ids=["DATA", "HEADERS"],
)
def test_padding_past_the_frame_ends_the_connection(
    proxy: H2Proxy, frames: list[tuple[int, int, bytes]]
) -> None:
    """sōzu ``e2e_h2_parser_reject_overflowing_padding``,
    ``e2e_h2_parser_reject_padded_priority_underflow``."""
    with H2Client(proxy.port) as client:
        block = client.header_block([(":method", "POST"), *request("/bad-pad")[1:]])
        for kind, flags, payload in frames:
            client.send_raw(frame_bytes(kind, flags, 1, payload + (block if kind == 1 else b"")))
        assert client.wait_goaway() == PROTOCOL_ERROR
    assert not reached(proxy, "/bad-pad")
    served(proxy)


def test_window_update_on_closed_streams(proxy: H2Proxy) -> None:
    """sōzu ``e2e_h2_flood_window_update_on_closed_stream``: one WINDOW_UPDATE for a stream
    just closed is ignored; a stream of them is a flood of faults (``h2_max_glitch_count``,
    100): GOAWAY(ENHANCE_YOUR_CALM)."""
    with H2Client(proxy.port) as client:
        assert client.get("/closed").status == 200
        client.send_frame(WindowUpdateFrame(1, window_increment=1))
        assert client.get("/open").status == 200
        client.send_frame(*[WindowUpdateFrame(1, window_increment=1) for _ in range(150)])
        assert client.wait_goaway() == ENHANCE_YOUR_CALM
    served(proxy)


def test_ping_echoes_its_data_and_table_size_zero_is_honoured(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_ping_pong_correctness``, ``test_h2_hpack_table_size_zero``,
    ``test_h2_connection_reuse_sequential``, ``test_h2_half_closed_stream_response``: PING
    answered with the same 8 bytes; with SETTINGS_HEADER_TABLE_SIZE 0 the answers decode
    without a dynamic table; three requests one after the other on the connection."""
    with H2Client(proxy.port, settings={0x1: 0}) as client:
        client.decoder.max_allowed_table_size = 0
        client.send_frame(PingFrame(0, opaque_data=b"\x01\x02\x03\x04\x05\x06\x07\x08"))
        pongs = lambda: [f for f in client.frames if isinstance(f, PingFrame)]  # noqa: E731
        assert client.read_until(pongs)
        assert pongs()[0].opaque_data == b"\x01\x02\x03\x04\x05\x06\x07\x08"
        for n in range(3):
            state = client.get(f"/seq/{n}")
            assert (state.status, bytes(state.body)) == (200, f"ok /seq/{n}".encode())
            assert state.header("sozu-id")


# --------------------------------------------------------------------------- SNI


@pytest.mark.parametrize(
    ("listener", "authority", "expected"),
    [
        ("main", HOST, 200),  # e2e_h2_sni_strict_match_happy_path
        ("main", "evil.org", 421),  # e2e_h2_sni_authority_mismatch_blocked
        ("main", "*.wild.example", 400),  # e2e_h2_sni_wildcard_authority_not_expanded
        ("main", "localhost", 200),  # e2e_h2_coalescing_multi_san_accepted
        # e2e_h2_sni_authority_mismatch_allowed_when_strict_binding_disabled
        ("lenient", "evil.org", 200),
    ],
)
def test_authority_against_the_sni(
    proxy: H2Proxy, listener: str, authority: str, expected: int
) -> None:
    """sōzu ``h2_security_sni.rs``: the connection's SNI is ``app.example`` (certificate
    names: app.example, other.example, *.wild.example, localhost)."""
    with H2Client(proxy.ports[listener]) as client:
        state = client.get("/sni", authority=authority)
        assert state.status == expected, bytes(state.body)[:300]
