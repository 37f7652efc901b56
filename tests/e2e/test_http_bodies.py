"""End-to-end message bodies through the proxy: every framing both ways, large streams with the
worker's memory watched, bodiless answers, interim (1xx) answers and protocol switches
(reference §E.4).

One daemon (one worker: its memory is the one sampled) serves the module. The ``bodies.test``
cluster is an :class:`HttpBackend` answering by request target; the ``raw.test`` cluster is a
:class:`ScriptedBackend` that records the exact bytes it receives and speaks WebSocket-style
after a 101.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received, ScriptedBackend
from support.clients import HttpConnection, proxy_v2_header
from support.daemon import DaemonProcess, free_port

from sozu_config import QueryMetrics

pytestmark = pytest.mark.e2e

MIB = 1 << 20
LARGE = 64 * MIB
STREAM_CHUNK = 256 * 1024
# Growth of the worker's resident memory allowed while LARGE bytes flow: a worker that held
# the body (or let a fast side fill its buffers) would grow by about LARGE.
RSS_GROWTH_LIMIT = 32 * MIB

CHUNKED_BODY = (
    b"5;ext=1\r\nhello\r\n"
    b'6;name="quoted value"\r\n world\r\n'
    b"A\r\n0123456789\r\n"
    b"0\r\n"
    b"X-Checksum: abc\r\n"
    b"X-Other-Trailer: 2\r\n"
    b"\r\n"
)
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Other-Trailer\r\n"
    b"\r\n" + CHUNKED_BODY
)
EARLY_HINTS = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints"
)
FINAL_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# A backend that would keep a worker busy relaying interim answers (about 5 MB of them).
INTERIM_FLOOD = b"HTTP/1.1 100 Continue\r\n\r\n" * 200_000 + FINAL_OK
MAX_INTERIM_RESPONSES = 32  # the proxy's bound
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
)
UPGRADE_REQUEST = (
    b"GET %s HTTP/1.1\r\nHost: raw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def pattern(size: int) -> bytes:
    """``size`` bytes of a repeating, position-dependent pattern (corruption shows)."""
    block = bytes(range(251)) * (STREAM_CHUNK // 251 + 1)
    return block[:size]


def stream_digest(total: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        piece = pattern(min(STREAM_CHUNK, total - sent))
        digest.update(piece)
        sent += len(piece)
    return digest.hexdigest()


def generated(total: int) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            piece = pattern(min(STREAM_CHUNK, total - sent))
            sent += len(piece)
            yield piece

    return chunks()


def digest_and_close(request: Received) -> Answer:
    """Answers ``<length> <sha256>`` of the body and closes: every request to this backend
    travels on a new backend connection."""
    return Answer(body=f"{request.body_length} {request.body_sha256}".encode(), close=True)


def answer_by_target(request: Received) -> Answer:
    target = request.target
    if target == "/cl":
        return Answer(body=b"content-length body")
    if target == "/chunked":
        return Answer(raw=CHUNKED_RESPONSE)
    if target == "/close-delimited":
        return Answer(body=b"x" * 200_000 + b"end", close_delimited=True)
    if target == "/head":
        return Answer(headers=[("Content-Length", "1234")], body=b"")
    if target == "/204":
        return Answer(status=204)
    if target == "/304":
        return Answer(status=304, headers=[("ETag", '"v1"')])
    if target == "/early-hints":
        return Answer(raw=EARLY_HINTS)
    if target == "/interim-flood":
        return Answer(raw=INTERIM_FLOOD)
    if target == "/some-interim":
        return Answer(raw=b"HTTP/1.1 103 Early Hints\r\n\r\n" * 5 + FINAL_OK)
    if target == "/download-chunked":
        return Answer(body=lambda: generated(LARGE))
    if target == "/download-length":
        return Answer(body=lambda: generated(LARGE), length=LARGE)
    if target == "/expect-close":
        return Answer(body=b"expected:" + request.body, close_delimited=True)
    if request.method in ("POST", "PUT"):
        return Answer(body=f"{request.body_length} {request.body_sha256}".encode())
    return Answer(body=target.encode())


async def read_chunked(reader: asyncio.StreamReader) -> None:
    """Consume a chunked body (with extensions and trailers) from ``reader``."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)


async def raw_script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers requests with ``ok``; after an upgrade request, switches to a byte pipe that
    greets first and then echoes every read prefixed with ``echo:``."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lowered = head.lower()
        if b"upgrade: websocket" in lowered:
            bogus = b"Transfer-Encoding: chunked\r\n" if b" /chat-te " in head else b""
            writer.write(SWITCHING + bogus + b"\r\n" + b"server-hello")
            while data := await reader.read(65536):
                writer.write(b"echo:" + data)
                await writer.drain()
            return
        if b"transfer-encoding: chunked" in lowered:
            await read_chunked(reader)
        elif b"content-length:" in lowered:
            length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def slow_sink_script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads Content-Length uploads, pausing 1 s before reading each body (the proxy must
    hold the client back meanwhile), and answers ``<length> <sha256>``."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lowered = head.lower()
        length = 0
        if b"content-length:" in lowered:
            length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
            await asyncio.sleep(1.0)
        digest = hashlib.sha256()
        remaining = length
        while remaining:
            data = await reader.read(min(remaining, 1 << 16))
            if not data:
                return
            digest.update(data)
            remaining -= len(data)
        body = f"{length} {digest.hexdigest()}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()


@dataclass
class Bodies:
    port: int
    proxied: int  # a listener with expect_proxy = true
    daemon: DaemonProcess
    backend: HttpBackend
    raw: ScriptedBackend
    sink: ScriptedBackend
    fresh: HttpBackend

    def worker_rss(self) -> int:
        """Resident memory of the (single) worker process, in bytes."""
        [pid] = self.daemon.worker_pids()
        return read_rss(pid)

    def active_requests(self, cluster_id: str) -> list[int]:
        response = self.daemon.send(QueryMetrics(cluster_ids=[cluster_id], workers=True))
        [worker] = response.content.workers.values()  # type: ignore[union-attr]
        backends: dict[str, Any] = worker["clusters"][cluster_id]["backends"]
        return [b["http.active_requests"] for b in backends.values()]


def read_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bodies]:
    port, proxied = free_port(), free_port()
    with (
        HttpBackend("bodies", answer_by_target, keep_bodies=False) as backend,
        ScriptedBackend(raw_script) as raw,
        ScriptedBackend(slow_sink_script) as sink,
        HttpBackend("fresh", digest_and_close, keep_bodies=False) as fresh,
    ):
        address = f"127.0.0.1:{port}"
        config = configs.document(
            configs.http_listener(address),
            configs.http_listener(proxied, expect_proxy=True),
            configs.http_cluster("bodies", address, "bodies.test", [backend.address]),
            configs.cluster(
                "raw",
                frontends=[
                    configs.frontend(address, "raw.test"),
                    configs.frontend(proxied, "raw.test"),
                ],
                backends=[configs.backend(raw.address)],
            ),
            configs.http_cluster("sink", address, "sink.test", [sink.address]),
            configs.http_cluster("fresh", address, "fresh.test", [fresh.address]),
            worker_count=1,
        )
        with DaemonProcess(tmp_path_factory.mktemp("bodies"), config).start() as daemon:
            yield Bodies(port, proxied, daemon, backend, raw, sink, fresh)


def read_exactly(connection: HttpConnection, size: int) -> bytes:
    while len(connection.buffer) < size:
        assert connection._fill(), f"closed after {connection.buffer!r}"
    data, connection.buffer = connection.buffer[:size], connection.buffer[size:]
    return data


# --------------------------------------------------------------------------- response framing


def test_content_length_response(bodies: Bodies) -> None:
    """sōzu ``test_http_behaviors`` (a valid response with Content-Length is forwarded)."""
    with HttpConnection(bodies.port) as connection:
        answer = connection.request("GET", "/cl", host="bodies.test")
        assert answer.status == 200 and answer.body == b"content-length body"
        assert answer.header("content-length") == "19"
        assert connection.request("GET", "/next", host="bodies.test").body == b"/next"


def test_chunked_response_with_extensions_and_trailers_is_forwarded_byte_exact(
    bodies: Bodies,
) -> None:
    """mux ``test_h1_chunked_trailer_forwarded``: chunk extensions and trailer fields reach
    the client unchanged, and the connection stays in step for the next request."""
    with HttpConnection(bodies.port) as connection:
        connection.send(b"GET /chunked HTTP/1.1\r\nHost: bodies.test\r\n\r\n")
        answer = connection.read_answer(head_only=True)
        assert answer.status == 200
        assert answer.header("transfer-encoding") == "chunked"
        assert read_exactly(connection, len(CHUNKED_BODY)) == CHUNKED_BODY
        assert connection.request("GET", "/after-chunked", host="bodies.test").body == (
            b"/after-chunked"
        )


def test_trailer_field_announcing_trailers_is_forwarded(bodies: Bodies) -> None:
    """``Trailer`` is an end-to-end field (RFC 9110 §6.6.2; it is not in the hop-by-hop list
    of §7.6.1): the trailers are forwarded, so is their announcement."""
    with HttpConnection(bodies.port) as connection:
        connection.send(b"GET /chunked HTTP/1.1\r\nHost: bodies.test\r\n\r\n")
        answer = connection.read_answer(head_only=True)
        read_exactly(connection, len(CHUNKED_BODY))
    assert answer.header("trailer") == "X-Checksum, X-Other-Trailer"


def test_close_delimited_response_is_fully_delivered_then_closed(bodies: Bodies) -> None:
    """mux ``test_h1_close_delimited_response_fully_delivered`` and ``test_http_behaviors``
    (a response without length is forwarded until the backend closes)."""
    with HttpConnection(bodies.port) as connection:
        answer = connection.request("GET", "/close-delimited", host="bodies.test")
        assert answer.status == 200
        assert answer.body == b"x" * 200_000 + b"end"
        assert connection.is_closed(timeout=3)


def test_head_answer_has_no_body(bodies: Bodies) -> None:
    """sōzu ``test_head``: a HEAD answer with Content-Length but no body ends right after the
    head; the next answer on the connection is read correctly."""
    with HttpConnection(bodies.port) as connection:
        answer = connection.request("HEAD", "/head", host="bodies.test")
        assert answer.status == 200 and answer.header("content-length") == "1234"
        assert not connection.buffer
        follow = connection.request("GET", "/after-head", host="bodies.test")
        assert follow.body == b"/after-head"


def test_204_and_304_have_no_body(bodies: Bodies) -> None:
    with HttpConnection(bodies.port) as connection:
        no_content = connection.request("GET", "/204", host="bodies.test")
        assert no_content.status == 204 and not connection.buffer
        not_modified = connection.request(
            "GET", "/304", host="bodies.test", headers=[("If-None-Match", '"v1"')]
        )
        assert not_modified.status == 304 and not_modified.header("etag") == '"v1"'
        assert not connection.buffer
        assert connection.request("GET", "/after", host="bodies.test").body == b"/after"


# --------------------------------------------------------------------------- request bodies


def test_content_length_and_chunked_uploads(bodies: Bodies) -> None:
    payload = pattern(100_000)
    expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
    with HttpConnection(bodies.port) as connection:
        assert connection.request("POST", "/upload", host="bodies.test", body=payload).body == (
            expected
        )
        chunks = [payload[i : i + 30_000] for i in range(0, len(payload), 30_000)]
        chunked = b"".join(b"%x;part=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        answer = connection.request(
            "POST",
            "/upload-chunked",
            host="bodies.test",
            headers=[("Transfer-Encoding", "chunked")],
            body=chunked,
        )
        assert answer.body == expected


def test_chunked_upload_is_forwarded_byte_exact_with_extensions_and_trailers(
    bodies: Bodies,
) -> None:
    before = bodies.raw.connections
    with HttpConnection(bodies.port) as connection:
        connection.send(
            b"POST /trailers HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + CHUNKED_BODY
        )
        assert connection.read_answer().body == b"ok"
    assert bodies.raw.connections >= before
    received = bytes(bodies.raw.received[-1])
    head_end = received.index(b"POST /trailers ")
    forwarded = received[head_end:]
    assert forwarded.split(b"\r\n\r\n", 1)[1].startswith(CHUNKED_BODY)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upload_on_a_new_backend_connection_is_forwarded_whole(
    bodies: Bodies, framing: str
) -> None:
    """The body bytes that arrive while the proxy is still opening the backend connection
    are forwarded too: this backend closes after every answer, so each upload waits for a
    new connection while the client keeps sending."""
    payload = pattern(STREAM_CHUNK) * 4
    expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
    for attempt in range(2):
        with HttpConnection(bodies.port, timeout=15) as connection:
            if framing == "chunked":
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
                headers = [("Transfer-Encoding", "chunked")]
            else:
                body, headers = payload, []
            answer = connection.request(
                "POST", f"/fresh/{attempt}", host="fresh.test", headers=headers, body=body
            )
        assert answer.status == 200
        assert answer.body == expected


def test_expect_100_continue_is_relayed_before_the_body(bodies: Bodies) -> None:
    """sōzu ``test_http_behaviors`` (Expect: 100-continue) and mux
    ``test_100_continue_no_double_decrement``."""
    with HttpConnection(bodies.port) as connection:
        connection.send(
            b"POST /expect HTTP/1.1\r\nHost: bodies.test\r\nExpect: 100-continue\r\n"
            b"Content-Length: 9\r\n\r\n"
        )
        interim = connection.read_answer()
        assert interim.status == 100
        connection.send(b"body-data")
        final = connection.read_answer()
        assert final.status == 200
        assert final.body == f"9 {hashlib.sha256(b'body-data').hexdigest()}".encode()
        assert connection.request("GET", "/after-expect", host="bodies.test").status == 200
    assert bodies.backend.requests[-2].header("expect") == "100-continue"
    time.sleep(0.2)
    assert bodies.active_requests("bodies") == [0]


def test_expect_100_continue_with_connection_close(bodies: Bodies) -> None:
    """sōzu ``test_http_behaviors``: an Expect request with ``Connection: close`` gets the
    100, then a close-delimited 200 with the body."""
    with HttpConnection(bodies.port) as connection:
        connection.send(
            b"POST /expect-close HTTP/1.1\r\nHost: bodies.test\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\nContent-Length: 4\r\n\r\n"
        )
        assert connection.read_answer().status == 100
        connection.send(b"data")
        final = connection.read_answer()
        assert final.status == 200
        assert connection.is_closed(timeout=3)
    # keep_bodies=False: the backend recorded the length, not the bytes
    assert bodies.backend.requests[-1].body_length == 4
    assert final.body == b"expected:"


def test_early_hints_are_relayed_before_the_final_answer(bodies: Bodies) -> None:
    """sōzu ``test_http_behaviors`` (103 Early Hints relayed before the final response)."""
    with HttpConnection(bodies.port) as connection:
        hints = connection.request("GET", "/early-hints", host="bodies.test")
        assert hints.status == 103
        assert hints.header("link") == "</style.css>; rel=preload; as=style"
        final = connection.read_answer()
        assert final.status == 200 and final.body == b"hints"
        assert connection.request("GET", "/after-hints", host="bodies.test").status == 200


def test_a_few_interim_answers_are_all_relayed(bodies: Bodies) -> None:
    with HttpConnection(bodies.port) as connection:
        connection.send(b"GET /some-interim HTTP/1.1\r\nHost: bodies.test\r\n\r\n")
        statuses = [connection.read_answer().status for _ in range(6)]
        assert statuses == [103] * 5 + [200]


def test_an_endless_stream_of_interim_answers_is_cut_with_502(bodies: Bodies) -> None:
    """A backend sending 200,000 ``100 Continue`` would hold the worker (and every other
    client of it) for seconds: the proxy relays at most MAX_INTERIM_RESPONSES, then answers
    502 and drops that backend connection."""
    with HttpConnection(bodies.port) as connection:
        connection.send(b"GET /interim-flood HTTP/1.1\r\nHost: bodies.test\r\n\r\n")
        relayed = 0
        answer = connection.read_answer()
        while answer.status == 100 and relayed <= MAX_INTERIM_RESPONSES:
            relayed += 1
            answer = connection.read_answer()
        assert relayed == MAX_INTERIM_RESPONSES
        assert answer.status == 502
    with HttpConnection(bodies.port) as connection:
        assert connection.request("GET", "/after-flood", host="bodies.test").status == 200


# --------------------------------------------------------------------------- protocol switch


@pytest.mark.parametrize("target", [b"/chat", b"/chat-te"], ids=["plain", "bogus_te"])
def test_upgrade_to_websocket_becomes_a_two_way_byte_pipe(bodies: Bodies, target: bytes) -> None:
    """sōzu ``test_http_behaviors`` (101, even with a bogus Transfer-Encoding, switches to a raw
    pipe both ways) and mux ``test_websocket_upgrade``."""
    with HttpConnection(bodies.port) as connection:
        connection.send(UPGRADE_REQUEST % target)
        switched = connection.read_answer()
        assert switched.status == 101
        assert (switched.header("upgrade") or "").lower() == "websocket"
        assert "upgrade" in (switched.header("connection") or "").lower()
        # the backend spoke first, then echoes what the client sends
        assert read_exactly(connection, len(b"server-hello")) == b"server-hello"
        for message in (b"ping", b"\x00\x01binary\xff", b"x" * 100_000):
            connection.send(message)
            assert read_echo(connection, len(message)) == message
    forwarded = bytes(bodies.raw.received[-1])
    assert b"\r\nUpgrade: websocket\r\n" in forwarded
    assert b"\r\nConnection: upgrade\r\n" in forwarded.replace(b"Upgrade\r\n", b"upgrade\r\n")


def test_upgrade_after_a_proxy_protocol_header(bodies: Bodies) -> None:
    """mux ``test_proxy_protocol_websocket_upgrade``: PROXY v2, then an upgrade request, then
    the byte pipe; the backend sees the PROXY source as the client."""
    header = proxy_v2_header(("198.51.100.7", 4242), ("127.0.0.1", bodies.proxied))
    with HttpConnection(bodies.proxied) as connection:
        connection.send(header + UPGRADE_REQUEST % b"/chat")
        assert connection.read_answer().status == 101
        assert read_exactly(connection, len(b"server-hello")) == b"server-hello"
        connection.send(b"through the proxy header")
        assert read_echo(connection, 24) == b"through the proxy header"
    forwarded = bytes(bodies.raw.received[-1])
    assert b"\r\nX-Forwarded-For: 198.51.100.7\r\n" in forwarded


def read_echo(connection: HttpConnection, size: int) -> bytes:
    """``size`` bytes echoed by the scripted backend (each of its reads comes prefixed)."""
    collected = b""
    while len(collected.replace(b"echo:", b"")) < size:
        if not connection.buffer:
            assert connection._fill(), f"closed after {collected!r}"
        collected += connection.buffer
        connection.buffer = b""
    assert collected.startswith(b"echo:")
    return collected.replace(b"echo:", b"")


def test_tunnel_is_released_once_both_sides_have_closed(
    tmp_path: Path,
) -> None:
    """After a protocol switch, when the client and then the backend close, the proxy closes
    its side of both connections: nothing is left that would hold a soft stop until the
    front timeout (30 s here)."""
    port = free_port()
    with ScriptedBackend(raw_script) as raw:
        address = f"127.0.0.1:{port}"
        config = configs.single_http_cluster(
            address,
            [raw.address],
            hostname="raw.test",
            cluster_id="raw",
            worker_count=1,
            front_timeout=30,
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            with HttpConnection(port) as connection:
                connection.send(UPGRADE_REQUEST % b"/chat")
                assert connection.read_answer().status == 101
                connection.send(b"bye")
                assert read_exactly(connection, len(b"server-hello")) == b"server-hello"
                assert read_echo(connection, 3) == b"bye"
                connection.sock.shutdown(socket.SHUT_WR)
                # the backend sees the end of the client's stream, closes, and so do we
                deadline = time.monotonic() + 5
                while not connection.is_closed(timeout=0.5):
                    assert time.monotonic() < deadline, "the tunnel was not closed"
            started = time.monotonic()
            assert daemon.stop(timeout=10) == 0
            assert time.monotonic() - started < 5, "a finished tunnel held the soft stop"


# --------------------------------------------------------------------------- large streams


class RssSampler:
    """Samples a process's resident memory every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(read_rss(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def warm_up(bodies: Bodies) -> int:
    """Run a few exchanges so that lazy allocations are done, then return the RSS.

    Bodiless requests go first so that each backend has an open, pooled connection: the
    large transfers then measure streaming, not the opening of backend connections (uploads
    on a new backend connection have their own test).
    """
    with HttpConnection(bodies.port) as connection:
        for host in ("bodies.test", "sink.test"):
            assert connection.request("GET", "/warm", host=host).status == 200
        for _ in range(5):
            answer = connection.request(
                "POST", "/warm", host="bodies.test", body=pattern(STREAM_CHUNK)
            )
            assert answer.status == 200
    return bodies.worker_rss()


@pytest.mark.parametrize("target", ["/download-chunked", "/download-length"])
def test_large_download_streams_with_flat_worker_memory(bodies: Bodies, target: str) -> None:
    """64 MiB from the backend to a client that stops reading for a second midway: the
    proxy must push back on the backend instead of buffering."""
    baseline = warm_up(bodies)
    [pid] = bodies.daemon.worker_pids()
    digest = hashlib.sha256()
    received = 0
    with RssSampler(pid) as sampler, HttpConnection(bodies.port, timeout=30) as connection:
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        connection.send(f"GET {target} HTTP/1.1\r\nHost: bodies.test\r\n\r\n".encode())
        head = connection.read_answer(head_only=True)
        assert head.status == 200
        deadline = time.monotonic() + 60
        paused = False
        raw = connection.buffer
        connection.buffer = b""
        chunked = head.header("transfer-encoding") == "chunked"
        stream = bytearray(raw)
        while True:
            assert time.monotonic() < deadline, f"only {received} bytes in 60 s"
            if not paused and len(stream) + received > 8 * MIB:
                paused = True
                time.sleep(1.0)
            data = connection.sock.recv(1 << 20)
            assert data, "the proxy closed the connection in the middle of the body"
            stream += data
            if chunked:
                consumed, payload, done = parse_chunks(stream)
                del stream[:consumed]
            else:
                payload, done = bytes(stream), received + len(stream) >= LARGE
                stream.clear()
            digest.update(payload)
            received += len(payload)
            if done:
                break
    assert received == LARGE
    assert digest.hexdigest() == stream_digest(LARGE)
    growth = max(sampler.samples) - baseline
    assert growth < RSS_GROWTH_LIMIT, f"worker RSS grew by {growth / MIB:.1f} MiB"


def parse_chunks(stream: bytearray) -> tuple[int, bytes, bool]:
    """(bytes consumed, payload decoded, last chunk seen) from the start of ``stream``."""
    position = 0
    payload = bytearray()
    while True:
        line_end = stream.find(b"\r\n", position)
        if line_end < 0:
            return position, bytes(payload), False
        size = int(stream[position:line_end].split(b";")[0], 16)
        if size == 0:
            if stream.find(b"\r\n\r\n", line_end) < 0 and stream[line_end : line_end + 4] != (
                b"\r\n\r\n"
            ):
                return position, bytes(payload), False
            return len(stream), bytes(payload), True
        end = line_end + 2 + size + 2
        if end > len(stream):
            return position, bytes(payload), False
        payload += stream[line_end + 2 : end - 2]
        position = end


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_upload_streams_with_flat_worker_memory(bodies: Bodies, framing: str) -> None:
    """64 MiB from the client to a backend that waits a second before reading: the proxy must
    push back on the client instead of buffering."""
    baseline = warm_up(bodies)
    [pid] = bodies.daemon.worker_pids()
    host = "sink.test" if framing == "content-length" else "bodies.test"
    failure: list[BaseException] = []

    def send_all(connection: HttpConnection) -> None:
        try:
            sent = 0
            while sent < LARGE:
                piece = pattern(min(STREAM_CHUNK, LARGE - sent))
                if framing == "chunked":
                    connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    connection.send(piece)
                sent += len(piece)
            if framing == "chunked":
                connection.send(b"0\r\n\r\n")
        except BaseException as error:  # reported by the test thread
            failure.append(error)

    with RssSampler(pid) as sampler, HttpConnection(bodies.port, timeout=60) as connection:
        framing_header = (
            f"Content-Length: {LARGE}"
            if framing == "content-length"
            else "Transfer-Encoding: chunked"
        )
        connection.send(
            f"PUT /upload HTTP/1.1\r\nHost: {host}\r\n{framing_header}\r\n\r\n".encode()
        )
        sender = threading.Thread(target=send_all, args=(connection,), daemon=True)
        sender.start()
        sender.join(90)
        assert not sender.is_alive(), "the upload did not complete in 90 s"
        assert not failure, failure
        answer = connection.read_answer()
    assert answer.status == 200
    assert answer.body == f"{LARGE} {stream_digest(LARGE)}".encode()
    growth = max(sampler.samples) - baseline
    assert growth < RSS_GROWTH_LIMIT, f"worker RSS grew by {growth / MIB:.1f} MiB"
