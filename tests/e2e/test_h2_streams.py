"""End-to-end HTTP/2: streams side by side and their HTTP/1.1 backends (sōzu ``h2_tests.rs``,
``h2_correctness_tests.rs`` and ``h2_security_session.rs`` items on multiplexing, flow
control, backend failures, PROXY protocol and stalled peers).

Cluster ``app`` (``app.example``) answers ``/slow/<s>`` after ``s`` seconds, ``/chunked/<n>``
and ``/close/<n>`` with n bytes chunked or ended by closing, ``/cut/length`` and
``/cut/chunked`` with an answer cut in the middle; ``early.wild.example`` is a backend that
answers 413 as soon as it has a request head.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame
from support import configs
from support.backends import Answer, Received, ScriptedBackend, wait_for
from support.clients import proxy_v2_header
from support.h2client import NO_ERROR, PROTOCOL_ERROR, H2Client
from support.h2proxy import HOST, H2Proxy, h2_proxy

pytestmark = pytest.mark.e2e


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def chunks(data: bytes) -> AsyncIterator[bytes]:
    async def produce() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 50_000):
            yield data[start : start + 50_000]

    return produce()


def handle(request: Received) -> Answer:
    target = request.target
    kind, _, arg = target.strip("/").partition("/")
    if kind == "slow":
        return Answer(body=f"slow {arg}".encode(), delay=float(arg))
    if kind == "chunked":
        data = payload(int(arg))
        return Answer(body=lambda: chunks(data))
    if kind == "close":
        return Answer(body=payload(int(arg)), close_delimited=True)
    if target == "/cut/length":
        return Answer(
            raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000, close=True
        )
    if target == "/cut/chunked":
        return Answer(
            raw=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", close=True
        )
    if kind == "status":  # a status line that is not one
        return Answer(
            raw=b"HTTP/1.1 %s OK\r\nContent-Length: 2\r\n\r\nhi" % arg.encode(), close=True
        )
    if kind == "big":
        return Answer(body=payload(int(arg)))
    if kind == "echo":
        return Answer(body=request.body)
    return Answer(body=f"ok {target}".encode())  # fmt: skip


async def answer_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """413 as soon as the head is read, without waiting for the body."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!"
    )
    await writer.drain()
    await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Proxy]:
    with ScriptedBackend(answer_early) as early:

        def clusters(ports: dict[str, int], backend: str) -> list[configs.ClusterTable]:
            return [
                configs.http_cluster("early", ports["main"], "early.wild.example", [early.address])
            ]

        with h2_proxy(
            tmp_path_factory.mktemp("h2-streams"),
            handle,
            listeners={"proxied": {"expect_proxy": True}},
            extra=clusters,
        ) as proxy:
            yield proxy


# --------------------------------------------------------------------------- multiplexing


def test_reset_of_one_stream_spares_the_others(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_rst_stream_per_stream_independence``."""
    with H2Client(proxy.port) as client:
        streams = [client.request(f"/slow/0.{n + 5}") for n in range(4)]
        wait_for(
            lambda: len([r for r in proxy.backend.requests if r.target.startswith("/slow/0.")]) >= 4
        )
        client.send_frame(RstStreamFrame(streams[1], error_code=0x8))
        for n, stream in enumerate(streams):
            if n == 1:
                continue
            state = client.response(stream)
            assert (state.status, bytes(state.body)) == (200, f"slow 0.{n + 5}".encode())
        assert not client.stream(streams[1]).headers
        assert client.goaway is None


def test_a_slow_stream_does_not_hold_a_fast_one(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_slow_stream_does_not_block_fast_stream``."""
    with H2Client(proxy.port) as client:
        slow = client.request("/slow/2")
        fast = client.request("/fast")
        started = time.monotonic()
        assert client.response(fast).status == 200
        assert time.monotonic() - started < 1.5
        assert not client.stream(slow).done
        assert client.response(slow, timeout=5).status == 200


@pytest.mark.parametrize("kind", ["chunked", "close", "big"])
def test_large_answers_of_every_framing(proxy: H2Proxy, kind: str) -> None:
    """sōzu ``test_h2_large_h1_response_chunked``, ``test_h2_large_h1_response_close_delimited``,
    ``test_h2_large_h1_response_content_length``, ``test_h2_close_delimited_large_response``,
    ``test_h2_concurrent_large_transfers``: three 3 MB answers at once on one connection,
    byte for byte, each ended by END_STREAM."""
    size = 3_000_000
    with H2Client(proxy.port) as client:
        streams = [client.request(f"/{kind}/{size}") for _ in range(3)]
        for stream in streams:
            state = client.response(stream, timeout=30)
            assert state.status == 200 and state.ended
            assert hashlib.sha256(state.body).digest() == hashlib.sha256(payload(size)).digest()


@pytest.mark.parametrize("target", ["/cut/length", "/cut/chunked"])
def test_an_answer_cut_by_its_backend_resets_the_stream(proxy: H2Proxy, target: str) -> None:
    """sōzu ``test_h2_rst_stream_on_backend_disconnect``, ``test_h2_content_length_mismatch``,
    ``test_h2_chunked_backend_crash_mid_stream_rsts``: the client is not told the answer is
    complete (RST_STREAM, no END_STREAM); the connection goes on."""
    with H2Client(proxy.port) as client:
        state = client.get(target)
        assert state.reset is not None and not state.ended
        assert client.get("/after-cut").status == 200
        assert client.goaway is None


def test_backend_answering_before_the_body_ends(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_backend_early_response``: a 413 sent before the upload is complete is
    the stream's answer; the proxy then resets the stream with NO_ERROR (the client may stop
    sending) and the connection serves on."""
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        fields = [(":method", "POST"), (":scheme", "https"), (":authority", "early.wild.example")]
        client.send_headers(stream, [*fields, (":path", "/upload")], end_stream=False)
        client.send_data(stream, b"x" * 10_000, end_stream=False)
        state = client.stream(stream)
        assert client.read_until(lambda: state.done)
        assert (state.status, bytes(state.body)) == (413, b"big!")
        client.read_until(lambda: state.reset is not None, 2)
        assert state.reset in (None, NO_ERROR)
        assert client.get("/after-early").status == 200


def test_expect_100_continue(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_to_h1_100_continue``, ``test_h2_to_h1_1xx_informational_forwarded``:
    ``expect: 100-continue`` gets its 100 as an interim HEADERS frame before the body."""
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        fields = [(":method", "POST"), (":scheme", "https"), (":authority", HOST)]
        client.send_headers(
            stream, [*fields, (":path", "/echo/continue"), ("expect", "100-continue"),
                     ("content-length", "5")], end_stream=False,
        )  # fmt: skip
        state = client.stream(stream)
        assert client.read_until(lambda: state.informational)
        assert state.informational[0][0] == (b":status", b"100")
        client.send_data(stream, b"hello")
        assert client.response(stream).status == 200
        assert bytes(state.body) == b"hello"


def test_a_get_with_a_body_is_one_request(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_to_h1_body_with_get``: a GET with DATA reaches the backend as one
    request whose body is framed (chunked), not as a second request hidden in the body."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: app.example\r\n\r\n"
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        fields = [(":method", "GET"), (":scheme", "https"), (":authority", HOST)]
        client.send_headers(stream, [*fields, (":path", "/echo/get-body")], end_stream=False)
        client.send_data(stream, smuggled)
        state = client.response(stream)
    assert (state.status, bytes(state.body)) == (200, smuggled)
    (request,) = [r for r in proxy.backend.requests if r.target == "/echo/get-body"]
    assert request.method == "GET" and request.body == smuggled
    assert not [r for r in proxy.backend.requests if r.target == "/smuggled"]


def test_many_large_header_fields(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_to_h1_large_headers``: 20 fields of 200 bytes each arrive intact."""
    fields = [(f"x-large-{n}", chr(ord("a") + n) * 200) for n in range(20)]
    with H2Client(proxy.port) as client:
        assert client.get("/large-headers", headers=fields).status == 200
    (request,) = [r for r in proxy.backend.requests if r.target == "/large-headers"]
    for name, value in fields:
        assert request.header_values(name) == [value]


@pytest.mark.parametrize("status", ["abc", "20", "+200", "00200", "2000"])
def test_an_invalid_backend_status_is_a_502(proxy: H2Proxy, status: str) -> None:
    """sōzu ``test_h2_invalid_status_rejected``: a backend status line that is not three
    digits never reaches the client as a status: 502, and the connection serves on."""
    with H2Client(proxy.port) as client:
        state = client.get(f"/status/{status}")
        assert (state.status, state.ended) == (502, True)
        assert client.get("/after-status").status == 200


# --------------------------------------------------------------------------- flow control


def test_data_of_refused_streams_is_credited(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_flow_control_on_orphaned_data``: DATA already sent on streams the
    proxy refused (1.2 MB, more than the 1 MiB connection window) is given back to the
    connection's window: an upload after it is served."""
    with H2Client(proxy.port) as client:
        fields = [(":method", "POST"), (":authority", HOST), (":path", "/orphan")]
        for _ in range(20):
            stream = client.new_stream_id()
            client.send_headers(stream, [*fields, (":scheme", "ftp")], end_stream=False)
            client.send_data(stream, b"z" * 60_000)
        stream = client.new_stream_id()
        client.send_headers(stream, [*fields[:2], (":scheme", "https"), (":path", "/echo/orphan")],
                            end_stream=False)  # fmt: skip
        client.send_data(stream, b"y" * 60_000)
        state = client.response(stream)
        assert (state.status, len(state.body)) == (200, 60_000)
        credited = sum(
            f.window_increment
            for f in client.frames
            if isinstance(f, WindowUpdateFrame) and f.stream_id == 0
        )
        assert credited >= 20 * 60_000
        assert client.goaway is None


def test_connection_window_exhaustion_and_recovery(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_connection_window_exhaustion_recovery``,
    ``test_h2_large_response_flow_control_pressure``: a client that gives no window gets 65,535
    bytes and no more; its WINDOW_UPDATEs bring the rest, byte for byte."""
    size = 300_000
    with H2Client(proxy.port, window=65_535, credit=False) as client:
        stream = client.request(f"/big/{size}")
        state = client.stream(stream)
        client.read_until(lambda: len(state.body) >= 65_535)
        client.read_until(lambda: False, 0.5)  # nothing more may come
        assert len(state.body) == 65_535 and not state.done
        client.send_frame(
            WindowUpdateFrame(0, window_increment=size),
            WindowUpdateFrame(stream, window_increment=size),
        )
        client.response(stream)
        assert hashlib.sha256(state.body).digest() == hashlib.sha256(payload(size)).digest()


def test_settings_changed_mid_connection(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_settings_change_mid_connection``: new SETTINGS (a smaller stream
    window, a smaller frame size) are acknowledged and followed."""
    with H2Client(proxy.port) as client:
        assert client.get("/before-settings").status == 200

        def acks():
            return [f for f in client.frames if isinstance(f, SettingsFrame) and "ACK" in f.flags]

        count = len(acks())
        client.send_frame(SettingsFrame(0, settings={0x4: 1000}))  # INITIAL_WINDOW_SIZE
        assert client.read_until(lambda: len(acks()) > count)
        state = client.get("/big/50000")
        assert state.status == 200 and len(state.body) == 50_000
        data_sizes = [
            len(f.data) for f in client.frames if getattr(f, "data", None) and f.stream_id == 3
        ]
        assert max(data_sizes) <= 1000


# --------------------------------------------------------------------------- the client goes


@pytest.mark.parametrize(
    ("during", "code"),
    [(False, NO_ERROR), (True, NO_ERROR), (True, PROTOCOL_ERROR)],
    ids=["idle", "during an answer", "PROTOCOL_ERROR then reset"],
)
def test_client_goaway_closes_the_connection(proxy: H2Proxy, during: bool, code: int) -> None:
    """sōzu ``test_h2_peer_goaway_no_error_clean_close``,
    ``test_h2_peer_goaway_during_response_body``,
    ``test_h2_peer_goaway_protocol_error_then_rst_clean_drain``: the proxy closes the
    connection (or the client resets it at once); no stream is left and the worker serves
    others."""
    with H2Client(proxy.port, window=65_535, credit=False) as client:
        if during:
            stream = client.request("/big/1000000")
            client.read_until(lambda: len(client.stream(stream).body) >= 65_535)
        client.send_frame(GoAwayFrame(0, last_stream_id=0, error_code=code))
        if code == NO_ERROR:
            assert client.wait_closed()
        else:  # and a TCP reset straight after
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with H2Client(proxy.port) as other:
        assert other.get("/after-goaway").status == 200
    assert wait_for(lambda: proxy.proxying()["http2.active_streams"] == 0)


def test_proxy_protocol_before_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_with_proxy_protocol_v2``: on an ``expect_proxy`` listener the PROXY
    header's source is the client of every stream."""
    port = proxy.ports["proxied"]
    header = proxy_v2_header(("203.0.113.5", 40_000), ("127.0.0.1", port))
    with H2Client(port, proxy_header=header) as client:
        for n in range(2):
            assert client.get(f"/pp/{n}").status == 200
    for n in range(2):
        (request,) = [r for r in proxy.backend.requests if r.target == f"/pp/{n}"]
        assert request.header_values("x-forwarded-for") == ["203.0.113.5"]
        assert 'for="203.0.113.5:40000"' in (request.header("forwarded") or "")


def test_a_stalled_tls_peer_does_not_hold_others(proxy: H2Proxy) -> None:
    """sōzu ``e2e_socket_bad_tls_peer_does_not_starve_others``: connections that send half a
    ClientHello and wait; an h2 client is served at once meanwhile."""
    stalled = []
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            stalled.append(sock)
        started = time.monotonic()
        with H2Client(proxy.port) as client:
            assert client.get("/not-starved").status == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in stalled:
            sock.close()
