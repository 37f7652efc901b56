"""End-to-end HTTP/2 on an HTTPS listener (reference §E.10, §F ALPN; sōzu ``h2_tests.rs``
and the compliance items of ``h2_security_tests.rs``): curl and h2load over TLS, the raw
client of :mod:`support.h2client` where a test needs exact frames; an HTTP/1.1 backend.

One daemon serves the module with three HTTPS listeners: ``main`` (ALPN ``h2``,
``http/1.1``, the default), ``h11`` (``alpn_protocols = ["http/1.1"]``) and ``h2only``
(``alpn_protocols = ["h2"]``, ``disable_http11 = true``). Cluster ``app`` serves
``app.example`` (and ``localhost``, for h2load) on each, plus a redirecting frontend and one
that requires basic authentication; cluster ``api`` serves ``app.example/api``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import configs
from support.backends import Answer, Received, ScriptedBackend, wait_for
from support.clients import ConnectionClosed, HttpConnection, tls_client_context, tls_handshake
from support.h2client import H2Client
from support.h2proxy import HOST, H2Proxy, h2_proxy

pytestmark = pytest.mark.e2e

PASSWORD_HASH = hashlib.sha256(b"wonderland").hexdigest()
TRAILERS_ANSWER = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: c0ffee\r\n\r\n"
)


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def handle(request: Received) -> Answer:
    target = request.target
    if target.startswith("/big/"):
        return Answer(body=payload(int(target.rsplit("/", 1)[1])))
    if target == "/204":
        return Answer(status=204)
    if target == "/trailers":
        return Answer(raw=TRAILERS_ANSWER)
    if target == "/cookies":
        return Answer(headers=[("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")], body=b"c")
    if target.startswith("/echo"):
        return Answer(body=request.body, headers=[("X-Method", request.method)])
    return Answer(body=f"app {request.method} {target}".encode())


async def trailers_script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads one chunked request to its trailers' end, answers 200 ``ok``."""
    await reader.readuntil(b"\r\n0\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


@pytest.fixture(scope="module")
def recorder() -> Iterator[ScriptedBackend]:
    with ScriptedBackend(trailers_script) as backend:
        yield backend


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, recorder: ScriptedBackend) -> Iterator[H2Proxy]:
    directory = tmp_path_factory.mktemp("h2-frontend")

    def extra_clusters(ports: dict[str, int], backend: str) -> list[configs.ClusterTable]:
        return [
            configs.cluster(
                "api",
                frontends=[configs.frontend(ports["main"], HOST, path="/api")],
                backends=[configs.backend(backend)],
            ),
            configs.http_cluster("raw", ports["main"], "raw.wild.example", [recorder.address]),
        ]

    with h2_proxy(
        directory,
        handle,
        listeners={
            "h11": {"alpn_protocols": ["http/1.1"]},
            "h2only": {"alpn_protocols": ["h2"], "disable_http11": True},
        },
        frontends=[
            {"hostname": "localhost"},
            {"hostname": "other.example", "redirect": "permanent"},
            {"hostname": "auth.wild.example", "required_auth": True},
        ],
        extra=extra_clusters,
        cluster_settings={"authorized_hashes": [f"alice:{PASSWORD_HASH}"]},
        top={"access_logs_target": f"file://{directory / 'access.log'}"},
    ) as proxy:
        yield proxy


def received(proxy: H2Proxy, target: str) -> Received:
    """The backend's record of the (one) request for ``target``."""
    found = wait_for(lambda: [r for r in proxy.backend.requests if r.target == target])
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- curl


def test_get_over_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_basic_request``, ``test_h2_basic_request_response``: curl negotiates h2
    and gets the backend's answer."""
    answer = proxy.curl("/hello")
    assert (answer.returncode, answer.version, answer.status) == (0, "2", 200), answer.stderr
    assert answer.body == b"app GET /hello"
    assert answer.header("connection") is None  # no connection-specific field in HTTP/2


def test_post_body_reaches_the_backend(proxy: H2Proxy, tmp_path: Path) -> None:
    """sōzu ``test_h2_post_with_body``, ``test_h2_post_body_forwarding``,
    ``test_h2_to_h1_chunked_encoding``: a 1 MB body in
    many DATA frames (beyond the initial windows) arrives whole at the HTTP/1.1 backend."""
    body = payload(1_000_000, seed=3)
    (tmp_path / "body").write_bytes(body)
    answer = proxy.curl("--data-binary", f"@{tmp_path / 'body'}", "/echo/post")
    assert (answer.version, answer.status) == ("2", 200), answer.stderr
    assert hashlib.sha256(answer.body).digest() == hashlib.sha256(body).digest()
    request = received(proxy, "/echo/post")
    assert request.method == "POST"
    assert request.body_sha256 == hashlib.sha256(body).hexdigest()


def test_post_without_content_length_is_sent_chunked(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_to_h1_streaming_body_no_content_length``: a body without
    ``content-length`` reaches the backend with ``Transfer-Encoding: chunked``."""
    with H2Client(proxy.port) as client:
        stream = client.request("/echo/chunked", method="PUT", body=b"part-one|part-two")
        state = client.response(stream)
    assert (state.status, bytes(state.body)) == (200, b"part-one|part-two")
    request = received(proxy, "/echo/chunked")
    assert request.header("transfer-encoding") == "chunked"
    assert request.header("content-length") is None


def test_head_has_no_body(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_head_request_no_body``: HEAD answers the length without a body."""
    answer = proxy.curl("-I", "/big/5000")
    assert (answer.version, answer.status) == ("2", 200), answer.stderr
    assert answer.header("content-length") == "5000"
    with H2Client(proxy.port) as client:
        state = client.get("/big/5000", method="HEAD")
    assert state.status == 200 and state.ended and bytes(state.body) == b""


def test_204_has_no_body(proxy: H2Proxy) -> None:
    answer = proxy.curl("/204")
    assert (answer.version, answer.status, answer.body) == ("2", 204, b""), answer.stderr


def test_large_response(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_large_payload``, ``test_h2_1mb_response_flow_control_verified``,
    ``test_h2_large_response_completes``: 4 MB through the windows, byte for byte."""
    answer = proxy.curl("/big/4000000")
    assert (answer.version, answer.status) == ("2", 200), answer.stderr
    assert hashlib.sha256(answer.body).digest() == hashlib.sha256(payload(4_000_000)).digest()


def test_response_trailers_from_a_chunked_backend(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_trailer_forwarding``: the chunked answer's trailers end the stream as a
    HEADERS frame after the DATA."""
    with H2Client(proxy.port) as client:
        state = client.get("/trailers")
    assert (state.status, bytes(state.body)) == (200, b"hello world")
    assert state.trailers == [(b"x-checksum", b"c0ffee")]
    assert state.header("transfer-encoding") is None


def test_request_trailers_reach_the_backend(proxy: H2Proxy, recorder: ScriptedBackend) -> None:
    """sōzu ``test_h2_to_h1_trailer_mapping``: a body without ``content-length`` then a
    trailing HEADERS frame reach the HTTP/1.1 backend as a chunked body and its trailers."""
    with H2Client(proxy.port) as client:
        stream = client.new_stream_id()
        fields = [(":method", "POST"), (":scheme", "https"), (":authority", "raw.wild.example")]
        client.send_headers(stream, [*fields, (":path", "/up")], end_stream=False)
        client.send_data(stream, b"payload", end_stream=False)
        client.send_headers(stream, [("x-digest", "abc")], end_stream=True)
        state = client.response(stream)
    assert (state.status, bytes(state.body)) == (200, b"ok")
    sent = bytes(wait_for(lambda: [r for r in recorder.received if b"POST /up" in r])[0])
    head, _, body = sent.partition(b"\r\n\r\n")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    assert body == b"7\r\npayload\r\n0\r\nx-digest: abc\r\n\r\n"


# --------------------------------------------------------------------------- ALPN


def test_alpn_prefers_h2_and_falls_back_to_http11(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_alpn_negotiation``, ``test_h1_still_works_on_h2_listener``,
    ``test_h2_mixed_h1_h2_traffic``."""
    both = tls_client_context(alpn=["http/1.1", "h2"])
    assert tls_handshake(proxy.port, HOST, context=both).alpn == "h2"
    only_h1 = tls_client_context(alpn=["http/1.1"])
    assert tls_handshake(proxy.port, HOST, context=only_h1).alpn == "http/1.1"
    answer = proxy.curl("/h1", http2=False)
    assert (answer.version, answer.status, answer.body) == ("1.1", 200, b"app GET /h1")
    with H2Client(proxy.port) as client:
        assert client.alpn == "h2"
        assert client.get("/mixed").status == 200


def test_http11_only_listener_serves_an_h2_client_in_http11(proxy: H2Proxy) -> None:
    """sōzu ``test_alpn_http11_only_listener``."""
    both = tls_client_context(alpn=["h2", "http/1.1"])
    assert tls_handshake(proxy.ports["h11"], HOST, context=both).alpn == "http/1.1"
    answer = proxy.curl("/h11", listener="h11")
    assert (answer.version, answer.status, answer.body) == ("1.1", 200, b"app GET /h11")


def test_disable_http11_drops_clients_without_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_listener_rejects_alpn_absent``: with ``disable_http11`` a client that
    offers only ``http/1.1``, or no ALPN, is dropped at the handshake; h2 is served."""
    port = proxy.ports["h2only"]
    for alpn in (["http/1.1"], None):
        context = tls_client_context(alpn=alpn)
        with (
            pytest.raises((ssl.SSLError, OSError, ConnectionClosed)),
            HttpConnection(port, tls=context, server_hostname=HOST, timeout=5) as connection,
        ):
            connection.request("GET", "/refused", host=HOST)
    assert proxy.curl("/refused", listener="h2only", http2=False).returncode != 0
    answer = proxy.curl("/h2only", listener="h2only")
    assert (answer.version, answer.status, answer.body) == ("2", 200, b"app GET /h2only")


# --------------------------------------------------------------------------- load


def test_h2load_100_concurrent_streams_on_one_connection(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_concurrent_streams``: 2000 requests, 100 at a time on one connection,
    all answered 200."""
    assert shutil.which("h2load"), "h2load (nghttp2-client) is needed"
    before = proxy.proxying()["http2.connections"]
    done = subprocess.run(
        ["h2load", "-n", "2000", "-c", "1", "-m", "100", "-T", "60",
         f"https://localhost:{proxy.port}/load"],
        capture_output=True,
        timeout=120,
        check=False,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded", done.stdout)
    assert re.search(r"status codes: 2000 2xx", done.stdout), done.stdout
    assert "Application protocol: h2" in done.stdout
    assert proxy.proxying()["http2.connections"] == before + 1


def test_many_streams_answer_without_crosstalk(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_50_concurrent_streams_no_crosstalk``: 50 streams sent at once, each
    answer is its own."""
    with H2Client(proxy.port) as client:
        streams = {client.request(f"/x/{n}"): n for n in range(50)}
        for stream_id, n in streams.items():
            state = client.response(stream_id, timeout=10)
            assert (state.status, bytes(state.body)) == (200, f"app GET /x/{n}".encode())


# --------------------------------------------------------------------------- headers


def test_forwarding_headers_match_http11_and_cannot_be_erased(proxy: H2Proxy) -> None:
    """Reference §E.3 over HTTP/2: X-Forwarded-For and Forwarded are extended with the
    client, X-Forwarded-Proto/-Port are the listener's, whatever the client says; the same
    fields as an HTTP/1.1 client on the same listener gets."""
    lies = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;proto=http"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-port", "80"),
    ]
    with H2Client(proxy.port) as client:
        assert client.get("/fwd/h2", headers=lies).status == 200
        h2_port = client.local_port
    with HttpConnection(proxy.port, tls=tls_client_context(alpn=["http/1.1"]),
                        server_hostname=HOST) as connection:  # fmt: skip
        assert connection.request("GET", "/fwd/h1", host=HOST, headers=lies).status == 200
        h1_port = connection.sock.getsockname()[1]
    over_h2, over_h1 = received(proxy, "/fwd/h2"), received(proxy, "/fwd/h1")
    assert over_h2.header_values("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert over_h2.header_values("x-forwarded-proto") == ["https"]
    assert over_h2.header_values("x-forwarded-port") == [str(proxy.port)]
    forwarded = over_h2.header_values("forwarded")
    assert len(forwarded) == 1 and forwarded[0].startswith("for=203.0.113.9;proto=http, ")
    assert f'for="127.0.0.1:{h2_port}"' in forwarded[0] and "proto=https" in forwarded[0]
    for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-port", "forwarded"):
        h1_values = [v.replace(str(h1_port), "PORT") for v in over_h1.header_values(name)]
        h2_values = [v.replace(str(h2_port), "PORT") for v in over_h2.header_values(name)]
        assert h2_values == h1_values, name
    assert over_h2.header("sozu-id")


def test_cookies_are_joined_and_set_cookie_split(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_cookie_concatenation``, ``test_h2_cookie_splitting`` (RFC 9113
    §8.2.3): cookie fields become one ``Cookie`` line; each ``Set-Cookie`` stays a field."""
    with H2Client(proxy.port) as client:
        crumbs = [("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2"), ("cookie", "c=3")]
        assert client.get("/cookies/in", headers=crumbs).status == 200
        state = client.get("/cookies")
    assert received(proxy, "/cookies/in").header_values("cookie") == ["a=1; b=2; c=3"]
    assert [v for n, v in state.headers if n == b"set-cookie"] == [b"a=1; Path=/", b"b=2"]


def test_authority_becomes_the_one_host(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_host_authority_match_deduplicated``, ``test_h2_headers``: ``:authority``
    is the backend's ``Host``; a ``host`` equal to it gives one Host line; without
    ``:authority``, ``host`` routes; an unknown authority is the 404 answer."""
    with H2Client(proxy.port) as client:
        assert client.get("/host/authority", headers=[("x-custom", "kept")]).status == 200
        assert client.get("/host/both", headers=[("host", HOST)]).status == 200
        no_authority = [(":method", "GET"), (":scheme", "https"), (":path", "/host/only"),
                        ("host", HOST)]  # fmt: skip
        stream = client.new_stream_id()
        client.send_headers(stream, no_authority)
        assert client.response(stream).status == 200
        assert client.get("/host/unknown", authority="unknown.wild.example").status == 404
    for target in ("/host/authority", "/host/both", "/host/only"):
        request = received(proxy, target)
        assert request.header_values("host") == [HOST], request.head
    assert received(proxy, "/host/authority").header("x-custom") == "kept"


def test_routing_answers_redirects_and_auth_match_http11(proxy: H2Proxy) -> None:
    """The proxy's own answers and routing are the same over HTTP/2 as over HTTP/1.1
    (status, Location, WWW-Authenticate, body), minus ``Connection``."""
    cases = [
        ("/api/v1", HOST, ()),
        ("/plain", HOST, ()),
        ("/moved?x=1", "other.example", ()),
        ("/secret", "auth.wild.example", ()),
        ("/secret", "auth.wild.example", ("-u", "alice:wonderland")),
        ("/secret", "auth.wild.example", ("-u", "alice:wrong")),
        ("/nowhere", "nobody.wild.example", ()),
    ]
    for path, host, options in cases:
        one = proxy.curl(*options, path, host=host, http2=False)
        two = proxy.curl(*options, path, host=host)
        assert (one.version, two.version) == ("1.1", "2"), (path, host)
        assert two.status == one.status, (path, host, one.status, two.status)
        for name in ("location", "www-authenticate", "content-type"):
            assert two.header(name) == one.header(name), (path, host, name)
        body_one = re.sub(rb"[0-9A-Z]{26}", b"ID", one.body)
        body_two = re.sub(rb"[0-9A-Z]{26}", b"ID", two.body)
        assert body_two == body_one, (path, host)
        assert two.header("connection") is None, (path, host)
    assert proxy.curl("/api/v1").body == b"app GET /api/v1"
    statuses = [proxy.curl(*o, p, host=h).status for p, h, o in cases]
    assert statuses == [200, 200, 301, 401, 200, 401, 404]


# --------------------------------------------------------------------------- logs, metrics


def test_access_log_and_metrics_count_h2_streams(proxy: H2Proxy) -> None:
    """Each stream is one exchange in the access log (protocol HTTP2) and in the metrics;
    the connection is counted once."""
    before = proxy.proxying()
    with H2Client(proxy.port) as client:
        for n in range(3):
            assert client.get(f"/logged/{n}").status == 200
    after = wait_for(
        lambda: (m := proxy.proxying())["http2.streams"] >= before["http2.streams"] + 3 and m
    )
    assert after["http2.streams"] == before["http2.streams"] + 3
    assert after["http2.connections"] == before["http2.connections"] + 1
    log = proxy.directory / "access.log"

    def logged() -> list[str]:
        text = log.read_text() if log.exists() else ""
        return [line for line in text.splitlines() if "/logged/" in line]

    wait_for(lambda: len(logged()) == 3)
    lines = sorted(logged(), key=lambda line: line[-12:])
    assert len(lines) == 3
    for n, line in enumerate(lines):
        assert re.search(rf" HTTP2-TLS1\.[23] {HOST} GET /logged/{n} 200$", line), line
