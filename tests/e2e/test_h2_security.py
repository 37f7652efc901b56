"""End-to-end HTTP/2 protections (reference §B.3 ``h2_*`` knobs, §E.10; sōzu
``h2_tests.rs`` security items, ``h2_security_tests.rs`` floods): each attack gets the reaction
:mod:`sozu_runtime.worker.h2_front` documents, and a client on another connection, opened
before the attack, keeps being served.

* floods (rapid reset CVE-2023-44487, CONTINUATION CVE-2024-27316, SETTINGS, PING, empty
  DATA, WINDOW_UPDATE) end the connection with GOAWAY(ENHANCE_YOUR_CALM);
* a header list over ``h2_max_header_list_size`` (an HPACK bomb) ends it the same way;
* more than ``h2_max_header_fields`` fields: RST_STREAM(PROTOCOL_ERROR), the connection goes on;
* more than ``h2_max_concurrent_streams`` streams: RST_STREAM(REFUSED_STREAM) for the extra
  ones, the others are answered.

The module's daemon has the default limits on ``main`` and small ones on ``tight``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from support.backends import Answer, Received, wait_for
from support.h2client import (
    ENHANCE_YOUR_CALM,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2Client,
    frame_bytes,
)
from support.h2proxy import H2Proxy, h2_proxy

pytestmark = pytest.mark.e2e

SLOW = 1.5  # seconds the backend takes on /slow
TIGHT = {
    "h2_max_concurrent_streams": 4,
    "h2_max_header_fields": 20,
    "h2_max_header_list_size": 8192,
}
REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "app.example"), (":path", "/")]


def handle(request: Received) -> Answer:
    if request.target.startswith("/slow"):
        return Answer(body=b"slow " + request.target.encode(), delay=SLOW)
    return Answer(body=b"ok " + request.target.encode())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Proxy]:
    with h2_proxy(
        tmp_path_factory.mktemp("h2-security"), handle, listeners={"tight": TIGHT}
    ) as proxy:
        yield proxy


@pytest.fixture
def bystander(proxy: H2Proxy) -> Iterator[H2Client]:
    """A client connected before the attack; :func:`still_served` checks it afterwards."""
    with H2Client(proxy.port) as client:
        assert client.get("/before").status == 200
        yield client


def still_served(proxy: H2Proxy, bystander: H2Client) -> None:
    """The connection opened before the attack and a new one are both served."""
    assert bystander.get("/bystander").status == 200
    assert bystander.goaway is None
    with H2Client(proxy.port) as client:
        state = client.get("/after")
        assert (state.status, bytes(state.body)) == (200, b"ok /after")


def calmed(client: H2Client) -> None:
    """The attacker got GOAWAY(ENHANCE_YOUR_CALM) and the connection was closed."""
    assert client.wait_goaway(5) == ENHANCE_YOUR_CALM, client.frames[-5:]
    assert client.wait_closed(5)


def floods_counted(proxy: H2Proxy, before: int) -> None:
    wait_for(lambda: proxy.proxying()["http2.flood_goaways"] > before)


# --------------------------------------------------------------------------- floods


def test_rapid_reset_is_calmed(proxy: H2Proxy, bystander: H2Client) -> None:
    """sōzu ``test_h2_rapid_reset_triggers_goaway``, ``e2e_h2_flood_rapid_reset_abusive_lifetime``
    (CVE-2023-44487): streams opened and reset before their answer, in a burst."""
    floods = proxy.proxying()["http2.flood_goaways"]
    with H2Client(proxy.port) as attacker:
        burst = []
        for _ in range(80):
            stream = attacker.new_stream_id()
            block = attacker.header_block([*REQUEST[:3], (":path", f"/slow/{stream}")])
            burst += [
                HeadersFrame(stream, block, flags=["END_HEADERS", "END_STREAM"]),
                RstStreamFrame(stream, error_code=0x8),
            ]
        attacker.send_frame(*burst)
        calmed(attacker)
    floods_counted(proxy, floods)
    still_served(proxy, bystander)


def test_resets_after_answers_are_not_a_flood(proxy: H2Proxy) -> None:
    """The limit is on resets of unanswered streams and on their rate: a client that resets
    streams it was answered on, now and then, is served on."""
    with H2Client(proxy.port) as client:
        for n in range(60):
            stream = client.request(f"/fine/{n}")
            assert client.response(stream).status == 200
            client.send_frame(RstStreamFrame(stream, error_code=0x8))
        assert client.get("/still").status == 200
        assert client.goaway is None


def test_continuation_flood_is_calmed(proxy: H2Proxy, bystander: H2Client) -> None:
    """sōzu ``test_h2_continuation_flood_triggers_goaway`` (CVE-2024-27316): a header block
    in more CONTINUATION frames than ``h2_max_continuation_frames`` (20)."""
    with H2Client(proxy.port) as attacker:
        block = attacker.header_block([*REQUEST, *[(f"x-h{i}", "v" * 8) for i in range(40)]])
        pieces = [block[i : i + 12] for i in range(0, len(block), 12)]
        assert len(pieces) > 25
        frames = [HeadersFrame(1, pieces[0], flags=["END_STREAM"])]
        frames += [ContinuationFrame(1, piece) for piece in pieces[1:-1]]
        frames.append(ContinuationFrame(1, pieces[-1], flags=["END_HEADERS"]))
        attacker.send_frame(*frames)
        calmed(attacker)
    still_served(proxy, bystander)


def test_a_header_block_within_the_continuation_limit_is_served(proxy: H2Proxy) -> None:
    """The same kind of block in 10 frames is an ordinary request."""
    with H2Client(proxy.port) as client:
        block = client.header_block(
            [*REQUEST[:3], (":path", "/split"), *[(f"x-h{i}", "v") for i in range(20)]]
        )
        size = len(block) // 9 + 1
        pieces = [block[i : i + size] for i in range(0, len(block), size)]
        frames = [HeadersFrame(1, pieces[0], flags=["END_STREAM"])]
        frames += [ContinuationFrame(1, piece) for piece in pieces[1:-1]]
        frames.append(ContinuationFrame(1, pieces[-1], flags=["END_HEADERS"]))
        client.send_frame(*frames)
        assert client.response(1).status == 200


@pytest.mark.parametrize(
    ("flood", "count"),
    [
        ("settings", 60),  # h2_max_settings_per_window 50
        ("ping", 120),  # h2_max_ping_per_window 100
        ("window_update", 120),  # h2_max_window_update_stream0_per_window 100
    ],
)
def test_control_frame_floods_are_calmed(
    proxy: H2Proxy, bystander: H2Client, flood: str, count: int
) -> None:
    """sōzu ``test_h2_settings_flood_triggers_goaway`` (CVE-2019-9515),
    ``test_h2_ping_flood_triggers_goaway`` (CVE-2019-9512), WINDOW_UPDATE on the connection:
    more than the limit within a second."""
    make = {
        "settings": lambda: SettingsFrame(0),
        "ping": lambda: PingFrame(0, opaque_data=b"12345678"),
        "window_update": lambda: WindowUpdateFrame(0, window_increment=1),
    }[flood]
    with H2Client(proxy.port) as attacker:
        attacker.send_frame(*[make() for _ in range(count)])
        calmed(attacker)
    still_served(proxy, bystander)


def test_control_frames_under_the_limits_are_answered(proxy: H2Proxy) -> None:
    """40 SETTINGS and 80 PINGs in a second: each acknowledged, the connection serves."""
    with H2Client(proxy.port) as client:
        client.send_frame(*[SettingsFrame(0) for _ in range(40)])
        client.send_frame(*[PingFrame(0, opaque_data=b"%08d" % n) for n in range(80)])
        pongs = lambda: [f for f in client.frames if isinstance(f, PingFrame)]  # noqa: E731
        assert client.read_until(lambda: len(pongs()) == 80)
        assert [p.opaque_data for p in pongs()] == [b"%08d" % n for n in range(80)]
        assert all("ACK" in p.flags for p in pongs())
        assert client.get("/calm").status == 200
        assert client.goaway is None


def test_empty_data_flood_is_calmed(proxy: H2Proxy, bystander: H2Client) -> None:
    """sōzu ``test_h2_empty_data_flood`` (CVE-2019-9518): empty DATA frames without
    END_STREAM on an open stream."""
    with H2Client(proxy.port) as attacker:
        stream = attacker.new_stream_id()
        attacker.send_headers(stream, [*REQUEST[:3], (":path", "/slow/upload")], end_stream=False)
        attacker.send_frame(*[DataFrame(stream, b"") for _ in range(120)])
        calmed(attacker)
    still_served(proxy, bystander)


# --------------------------------------------------------------------------- header limits


def test_hpack_bomb_is_calmed(proxy: H2Proxy, bystander: H2Client) -> None:
    """sōzu ``test_h2_hpack_bomb``, ``e2e_h2_parser_reject_header_field_bomb``: one 4 KB field
    put in the dynamic table, then referenced by index until the decoded list passes
    ``h2_max_header_list_size`` (64 KiB) from a HEADERS frame of a few KB."""
    with H2Client(proxy.port) as attacker:
        big = ("x-bomb", "b" * 4000)
        block = attacker.header_block([*REQUEST, big])  # literal, indexed: entry 62
        block += bytes([0x80 | 62]) * 30  # 30 references: 120 KB decoded
        assert len(block) < 5000
        attacker.send_frame(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]))
        calmed(attacker)
    assert not [r for r in proxy.backend.requests if r.header("x-bomb")]
    still_served(proxy, bystander)


def test_header_list_over_the_listener_limit(proxy: H2Proxy) -> None:
    """``h2_max_header_list_size = 8192`` on ``tight``: the limit is announced in SETTINGS and
    a 9 KB list ends the connection; a 7 KB one is served."""
    port = proxy.ports["tight"]
    with H2Client(port) as client:
        assert client.get("/small", headers=[("x-fill", "f" * 7000)]).status == 200
        assert client.server_settings[0x6] == 8192  # SETTINGS_MAX_HEADER_LIST_SIZE
    with H2Client(port) as client:
        client.request("/large", headers=[("x-fill", "f" * 9000)])
        calmed(client)


def test_too_many_header_fields_reset_the_stream(proxy: H2Proxy) -> None:
    """``h2_max_header_fields`` (128 on ``main``, 20 on ``tight``): one more field gives
    RST_STREAM(PROTOCOL_ERROR); the request does not reach the backend and the connection
    serves the next stream."""
    for port, limit in ((proxy.port, 128), (proxy.ports["tight"], 20)):
        with H2Client(port) as client:
            fields = [(f"x-f{i}", "v") for i in range(limit - 4)]  # with the 4 pseudo-fields
            assert client.get(f"/fields/{port}/ok", headers=fields).status == 200
            over = [*fields, ("x-one-more", "v")]
            state = client.get(f"/fields/{port}/over", headers=over)
            assert (state.reset, state.status) == (PROTOCOL_ERROR, None)
            assert client.get("/next").status == 200
            assert client.goaway is None
        assert not [r for r in proxy.backend.requests if r.target == f"/fields/{port}/over"]


# --------------------------------------------------------------------------- streams


def test_too_many_concurrent_streams_are_refused(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_max_concurrent_streams_rst_not_goaway``,
    ``test_h2_exceed_max_concurrent_refused``, ``test_h2_stream_limit_recovery_after_close``:
    ``h2_max_concurrent_streams = 4`` is announced; a fifth open stream gets
    RST_STREAM(REFUSED_STREAM), the four are answered, then new streams are served."""
    refused = proxy.proxying()["http2.refused_streams"]
    with H2Client(proxy.ports["tight"]) as client:
        assert client.read_until(lambda: 0x3 in client.server_settings)
        assert client.server_settings[0x3] == 4  # SETTINGS_MAX_CONCURRENT_STREAMS
        streams = [client.request(f"/slow/{n}") for n in range(5)]
        fifth = client.response(streams[4], timeout=SLOW / 2)
        assert fifth.reset == REFUSED_STREAM
        for stream in streams[:4]:
            state = client.response(stream, timeout=SLOW + 5)
            assert (state.status, bytes(state.body)) == (
                200,
                f"slow /slow/{streams.index(stream)}".encode(),
            )
        assert client.get("/slow/again", timeout=SLOW + 5).status == 200
        assert client.goaway is None
    assert proxy.proxying()["http2.refused_streams"] == refused + 1


def test_a_flood_of_streams_past_the_limit_is_calmed(proxy: H2Proxy, bystander: H2Client) -> None:
    """sōzu ``test_h2_headers_flood_no_end_stream``: with 4 uploads open (no END_STREAM), a
    client opening stream after stream gets each refused, then, past ``h2_max_glitch_count``
    (100) refusals, GOAWAY(ENHANCE_YOUR_CALM)."""
    with H2Client(proxy.ports["tight"]) as attacker:
        fields = [(":method", "POST"), *REQUEST[1:3], (":path", "/slow/held")]
        burst = [
            HeadersFrame(attacker.new_stream_id(), attacker.header_block(fields),
                         flags=["END_HEADERS"])
            for _ in range(4 + 110)
        ]  # fmt: skip
        attacker.send_frame(*burst)
        calmed(attacker)
        refused = [f for f in attacker.frames if isinstance(f, RstStreamFrame)]
        assert len(refused) >= 100 and all(f.error_code == REFUSED_STREAM for f in refused)
    still_served(proxy, bystander)


def test_streams_beyond_the_default_limit_are_refused(proxy: H2Proxy) -> None:
    """The default limit is 100: of 105 slow streams opened at once, 5 are refused."""
    with H2Client(proxy.port) as client:
        streams = [client.request(f"/slow/many/{n}") for n in range(105)]
        states = [client.response(s, timeout=SLOW + 20) for s in streams]
    assert [s.reset for s in states].count(REFUSED_STREAM) == 5
    assert [s.status for s in states].count(200) == 100


def test_abandoned_uploads_leave_nothing_behind(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_client_disconnect_mid_upload``,
    ``test_h2_session_teardown_clean_with_active_backends``,
    ``test_h2_upstream_close_with_many_streams``: 10 connections each open 40 uploads, send part of
    each body and vanish. Every stream is dropped (no active stream left, the backend connections
    closed) and the worker does not grow without bound (loosely: less than 64 MB for the lot)."""
    (worker,) = proxy.daemon.worker_pids()

    def rss() -> int:
        status = Path(f"/proc/{worker}/status").read_text()
        line = next(ln for ln in status.splitlines() if ln.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    start = rss()
    idle = proxy.backend.open_connections
    deadline = time.monotonic() + 60
    for round_ in range(10):
        with H2Client(proxy.port) as client:
            for n in range(40):
                stream = client.new_stream_id()
                fields = [(":method", "POST"), *REQUEST[1:3], (":path", f"/mem/{round_}/{n}")]
                client.send_headers(stream, fields, end_stream=False)
                client.send_data(stream, b"x" * 1000, end_stream=False)
            assert client.get("/mem/check").status == 200  # all 41 streams were taken
            assert proxy.proxying()["http2.active_streams"] >= 40
        assert time.monotonic() < deadline
    assert wait_for(lambda: proxy.proxying()["http2.active_streams"] == 0)
    # (a /mem/check request may leave one more connection idle in the pool, for the next)
    assert wait_for(lambda: proxy.backend.open_connections <= idle + 1)
    grown = rss() - start
    assert grown < 64 * 1024 * 1024, grown
    still_served_fresh(proxy)


def test_priority_frames_in_their_thousands_hold_nothing(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_priority_flood``, ``e2e_h2_flood_priority_map_cap``: 5000 PRIORITY
    frames on idle streams are ignored; the connection serves on and the worker keeps no
    state for them (loosely: less than 16 MB more)."""
    (worker,) = proxy.daemon.worker_pids()
    status = Path(f"/proc/{worker}/status")
    rss = lambda: int(  # noqa: E731
        next(ln for ln in status.read_text().splitlines() if ln.startswith("VmRSS:")).split()[1]
    )
    start = rss()
    with H2Client(proxy.port) as client:
        burst = b"".join(frame_bytes(0x2, 0, 2 * n + 1001, b"\0\0\0\x01\x10") for n in range(5000))
        client.send_raw(burst)
        assert client.get("/after-priorities").status == 200
        assert client.goaway is None
    assert (rss() - start) * 1024 < 16 * 1024 * 1024


def test_streams_reset_by_the_proxy_are_counted(proxy: H2Proxy, bystander: H2Client) -> None:
    """sōzu ``test_h2_outbound_flood_from_rst_stream``, ``test_h2_outbound_flood_from_goaway``:
    a client making the proxy reset stream after stream (malformed requests) is a flood of
    faults past ``h2_max_glitch_count`` (100): GOAWAY(ENHANCE_YOUR_CALM), one GOAWAY only."""
    with H2Client(proxy.port) as attacker:
        for _ in range(110):
            stream = attacker.new_stream_id()
            attacker.send_headers(stream, [*REQUEST[:1], (":scheme", "ftp"), *REQUEST[2:]])
        calmed(attacker)
        resets = [f for f in attacker.frames if isinstance(f, RstStreamFrame)]
        assert 90 <= len(resets) <= 101
        assert sum(isinstance(f, GoAwayFrame) for f in attacker.frames) == 1
    still_served(proxy, bystander)


def still_served_fresh(proxy: H2Proxy) -> None:
    with H2Client(proxy.port) as client:
        assert client.get("/fresh").status == 200
