"""End-to-end PROXY protocol (HAProxy's "PROXY protocol" v1 and v2; reference §G; sōzu
``mux_tests.rs`` proxy-protocol items, ``tcp_tests.rs``, and the forwarding items of
``tests.rs``), checked byte for byte against backends that record what they receive.

One daemon (one worker) serves the module:

* ``http``: an HTTP listener with ``expect_proxy = true`` (and ``request_timeout = 2``,
  ``elide_x_real_ip`` and ``send_x_real_ip``);
* ``https``: an HTTPS listener with ``expect_proxy = true``: the header comes first, in clear,
  then the TLS handshake;
* ``tcp``: a TCP listener with ``expect_proxy = true`` whose cluster does not send one: the
  header is consumed and only the payload reaches the backend;
* ``send``: a plain TCP listener whose cluster has ``send_proxy = true``: the backend gets a v2
  header describing the client, then the payload;
* ``relay``: ``expect_proxy`` listener and ``send_proxy`` cluster: the header the client sent is
  relayed to the backend unchanged (a v1 line stays a v1 line).

The headers are written here by hand from the specification (doc/proxy-protocol.txt §2.1,
§2.2), independently of the daemon's own encoder. Unlike sōzu, which reads only v2, this
daemon accepts v1 and v2 on ``expect_proxy`` listeners; both are tested.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import configs
from support.backends import (
    Answer,
    HttpBackend,
    Received,
    ScriptedBackend,
    TcpEchoBackend,
    wait_for,
)
from support.certs import make_certificate
from support.clients import HttpAnswer, HttpConnection, tls_client_context
from support.daemon import DaemonProcess, free_ports

from sozu_config import QueryMetrics
from sozu_config.responses import MetricsContent

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT = 2  # seconds, on the HTTP listener: bounds a stalled header (3 s on HTTPS)

# --------------------------------------------------------------------------- headers (spec §2)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LOCAL, PROXY = 0x0, 0x1
AF_UNSPEC, TCP_OVER_IPV4, TCP_OVER_IPV6 = 0x00, 0x11, 0x21


def v2_header(command: int, family: int, addresses: bytes = b"") -> bytes:
    """A v2 header: signature, version 2 with ``command``, family/transport byte, length of
    the address block, address block."""
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family])
        + struct.pack("!H", len(addresses))
        + addresses
    )


def v2_ipv4(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    addresses = (
        socket.inet_aton(source[0])
        + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return v2_header(PROXY, TCP_OVER_IPV4, addresses)


def v2_ipv6(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    addresses = (
        socket.inet_pton(socket.AF_INET6, source[0])
        + socket.inet_pton(socket.AF_INET6, destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return v2_header(PROXY, TCP_OVER_IPV6, addresses)


def v1_tcp4(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    return f"PROXY TCP4 {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


# --------------------------------------------------------------------------- the daemon


@dataclass
class ProxyProtocolProxy:
    daemon: DaemonProcess
    ports: dict[str, int]
    web: HttpBackend  # HTTP and HTTPS listeners, host pp.test
    websocket: ScriptedBackend  # host ws.pp.test
    stripped: TcpEchoBackend  # behind "tcp"
    sent: TcpEchoBackend  # behind "send"
    relayed: TcpEchoBackend  # behind "relay"
    certificate_pem: str

    def destination(self, listener: str) -> tuple[str, int]:
        return ("127.0.0.1", self.ports[listener])


async def websocket_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """101, then echo every byte back prefixed with ``echo:``."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    await writer.drain()
    while True:
        data = await reader.read(1 << 16)
        if not data:
            return
        writer.write(b"echo:" + data)
        await writer.drain()


def echo_target(request: Received) -> Answer:
    return Answer(body=f"web {request.target}".encode())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProtocolProxy]:
    directory = tmp_path_factory.mktemp("proxy-protocol")
    certificate = make_certificate("pp.test")
    (directory / "pp.pem").write_text(certificate.cert_pem)
    (directory / "pp.key").write_text(certificate.key_pem)
    with (
        HttpBackend("web", echo_target) as web,
        ScriptedBackend(websocket_backend) as websocket,
        TcpEchoBackend() as stripped,
        TcpEchoBackend() as sent,
        TcpEchoBackend() as relayed,
    ):
        names = ("http", "https", "tcp", "send", "relay")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        config = configs.document(
            configs.http_listener(
                ports["http"],
                expect_proxy=True,
                request_timeout=REQUEST_TIMEOUT,
                elide_x_real_ip=True,
                send_x_real_ip=True,
            ),
            configs.https_listener(
                ports["https"], expect_proxy=True, request_timeout=REQUEST_TIMEOUT + 1
            ),
            configs.tcp_listener(ports["tcp"], expect_proxy=True),
            configs.tcp_listener(ports["send"]),
            configs.tcp_listener(ports["relay"], expect_proxy=True),
            configs.cluster(
                "web",
                frontends=[
                    configs.frontend(ports["http"], "pp.test"),
                    configs.frontend(ports["https"], "pp.test", certificate="pp.pem", key="pp.key"),
                ],
                backends=[configs.backend(web.address)],
            ),
            configs.http_cluster("ws", ports["http"], "ws.pp.test", [websocket.address]),
            configs.tcp_cluster("stripped", ports["tcp"], [stripped.address]),
            configs.tcp_cluster("sent", ports["send"], [sent.address], send_proxy=True),
            configs.tcp_cluster("relayed", ports["relay"], [relayed.address], send_proxy=True),
            worker_count=1,
        )
        with DaemonProcess(directory, config).start() as daemon:
            yield ProxyProtocolProxy(
                daemon, ports, web, websocket, stripped, sent, relayed, certificate.cert_pem
            )


# --------------------------------------------------------------------------- clients


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def http_with_header(port: int, header: bytes, target: str, *, host: str = "pp.test") -> HttpAnswer:
    """A connection that starts with ``header`` then sends one GET."""
    with HttpConnection(port) as connection:
        connection.send(header)
        return connection.request("GET", target, host=host)


def closed_without_answer(sock: socket.socket, limit: float = 5.0) -> bool:
    """True when the proxy closes ``sock`` (FIN or reset) within ``limit`` without a byte."""
    sock.settimeout(limit)
    try:
        return sock.recv(1 << 16) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def received_by(backend: HttpBackend, target: str) -> Received:
    """The request for ``target`` the backend received (waited for, bounded)."""
    found: Received = wait_for(
        lambda: next((r for r in backend.requests if r.target == target), None)
    )
    return found


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


# --------------------------------------------------------------------------- HTTP listeners


def test_proxy_protocol_request(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_proxy_protocol_request``: a v2 PROXY header then an HTTP request: the
    header's source, not the TCP peer, is the client in X-Forwarded-For and Forwarded."""
    header = v2_ipv4(("192.0.2.10", 56324), proxy.destination("http"))
    answer = http_with_header(proxy.ports["http"], header, "/pp-v2")
    assert (answer.status, answer.body) == (200, b"web /pp-v2")
    received = received_by(proxy.web, "/pp-v2")
    assert received.header("x-forwarded-for") == "192.0.2.10"
    assert received.header("forwarded") == 'proto=http;for="192.0.2.10:56324";by=127.0.0.1'
    assert received.head.startswith(b"GET /pp-v2 HTTP/1.1\r\n"), "the header must be consumed"


def test_proxy_protocol_v1_request(proxy: ProxyProtocolProxy) -> None:
    """A v1 (text) header is accepted the same way (this daemon reads v1 and v2)."""
    header = v1_tcp4(("198.51.100.7", 40000), proxy.destination("http"))
    answer = http_with_header(proxy.ports["http"], header, "/pp-v1")
    assert (answer.status, answer.body) == (200, b"web /pp-v1")
    received = received_by(proxy.web, "/pp-v1")
    assert received.header("x-forwarded-for") == "198.51.100.7"
    assert received.header("forwarded") == 'proto=http;for="198.51.100.7:40000";by=127.0.0.1'


def test_x_real_ip_send_and_elide(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_x_real_ip_send_and_elide``: with ``elide_x_real_ip`` and
    ``send_x_real_ip`` a spoofed X-Real-IP from the client is removed and the one added holds
    the source of the v2 PROXY header."""
    header = v2_ipv4(("192.0.2.99", 1999), proxy.destination("http"))
    with HttpConnection(proxy.ports["http"]) as connection:
        connection.send(header)
        answer = connection.request(
            "GET", "/pp-real-ip", host="pp.test", headers=[("X-Real-IP", "6.6.6.6")]
        )
    assert answer.status == 200
    received = received_by(proxy.web, "/pp-real-ip")
    assert received.header_values("x-real-ip") == ["192.0.2.99"]


def test_forwarded_ipv6_brackets_via_proxy_v2(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_forwarded_ipv6_brackets_via_proxy_v2``: an IPv6 source from a v2 header is
    bracketed and quoted in ``Forwarded: for=`` (RFC 7239) and plain in X-Forwarded-For."""
    header = v2_ipv6(("2001:db8::7", 4433), ("2001:db8::1", proxy.ports["http"]))
    answer = http_with_header(proxy.ports["http"], header, "/pp-v6")
    assert answer.status == 200
    received = received_by(proxy.web, "/pp-v6")
    assert received.header("x-forwarded-for") == "2001:db8::7"
    assert received.header("forwarded") == 'proto=http;for="[2001:db8::7]:4433";by=127.0.0.1'


def test_proxy_protocol_local_healthcheck(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_proxy_protocol_local_healthcheck``: a LOCAL header (a health check) is
    accepted; the connection is then the sender's own: closing it sends nothing to the
    backend, and a request on it is forwarded with the real peer address."""
    before = len(proxy.web.requests)
    with connect(proxy.ports["http"]) as probe:
        probe.sendall(v2_header(LOCAL, TCP_OVER_IPV4, bytes(12)))
    answer = http_with_header(proxy.ports["http"], v2_header(LOCAL, AF_UNSPEC), "/pp-local")
    assert (answer.status, answer.body) == (200, b"web /pp-local")
    received = received_by(proxy.web, "/pp-local")
    assert received.header("x-forwarded-for") == "127.0.0.1"
    assert [r.target for r in proxy.web.requests[before:]] == ["/pp-local"]


def test_proxy_protocol_af_unspec_healthcheck(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_proxy_protocol_af_unspec_healthcheck``: a PROXY command with AF_UNSPEC
    (no addresses) is accepted and the real peer address is used."""
    with connect(proxy.ports["http"]) as probe:
        probe.sendall(v2_header(PROXY, AF_UNSPEC))
    answer = http_with_header(proxy.ports["http"], v2_header(PROXY, AF_UNSPEC), "/pp-unspec")
    assert (answer.status, answer.body) == (200, b"web /pp-unspec")
    assert received_by(proxy.web, "/pp-unspec").header("x-forwarded-for") == "127.0.0.1"


MALFORMED = {
    "missing": b"GET /pp-missing HTTP/1.1\r\nHost: pp.test\r\n\r\n",
    "v1-bad-address": b"PROXY TCP4 300.1.2.3 127.0.0.1 1000 80\r\nGET /pp-bad HTTP/1.1\r\n"
    b"Host: pp.test\r\n\r\n",
    "v1-bad-protocol": b"PROXY TCP5 1.2.3.4 127.0.0.1 1000 80\r\nGET /pp-bad HTTP/1.1\r\n"
    b"Host: pp.test\r\n\r\n",
    "v2-bad-version": V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12) + b"GET / HTTP/1.1\r\n\r\n",
    "v2-bad-family": V2_SIGNATURE + b"\x21\x51\x00\x0c" + bytes(12) + b"GET / HTTP/1.1\r\n\r\n",
    "v2-bad-signature": b"\r\n\r\n\x00\r\nQUIZ\n\x21\x11\x00\x0c" + bytes(12),
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_missing_or_malformed_header_closes_connection(
    proxy: ProxyProtocolProxy, case: str
) -> None:
    """A connection that does not start with a valid PROXY header is closed without an
    answer, and nothing reaches the backend."""
    before = (len(proxy.web.requests), proxy.web.connections)
    with connect(proxy.ports["http"]) as client:
        client.sendall(MALFORMED[case])
        assert closed_without_answer(client), "the connection must be closed, silently"
    local = v2_header(LOCAL, AF_UNSPEC)
    assert http_with_header(proxy.ports["http"], local, "/pp-ok").status == 200
    assert [r.target for r in proxy.web.requests[before[0] :]] == ["/pp-ok"]


def test_proxy_protocol_partial_header(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_proxy_protocol_partial_header``: half a header then a disconnect leaves
    no trace; half a header then silence is closed after ``request_timeout``."""
    before = len(proxy.web.requests)
    header = v2_ipv4(("192.0.2.20", 1234), proxy.destination("http"))
    with connect(proxy.ports["http"]) as client:
        client.sendall(header[:10])
    with connect(proxy.ports["http"]) as client:
        client.sendall(header[:20])
        started = time.monotonic()
        assert closed_without_answer(client, REQUEST_TIMEOUT + 8)
        waited = time.monotonic() - started
    assert REQUEST_TIMEOUT - 1 <= waited <= REQUEST_TIMEOUT + 3, waited
    assert len(proxy.web.requests) == before
    answer = http_with_header(proxy.ports["http"], header, "/pp-after-partial")
    assert answer.status == 200


def test_proxy_protocol_keepalive_hup(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_proxy_protocol_keepalive_hup`` and ``test_proxy_protocol_hup``: one header
    serves every request of a keep-alive connection; a client hanging up in the middle of a
    request leaves the proxy serving."""
    header = v2_ipv4(("192.0.2.30", 5555), proxy.destination("http"))
    with HttpConnection(proxy.ports["http"]) as connection:
        connection.send(header)
        for index in range(3):
            answer = connection.request("GET", f"/pp-ka/{index}", host="pp.test")
            assert (answer.status, answer.body) == (200, f"web /pp-ka/{index}".encode())
        connection.send(b"GET /pp-ka/cut HTTP/1.1\r\nHost: pp.te")
    for index in range(3):
        received = received_by(proxy.web, f"/pp-ka/{index}")
        assert received.header("x-forwarded-for") == "192.0.2.30"
    answer = http_with_header(proxy.ports["http"], header, "/pp-ka/after")
    assert answer.status == 200
    assert not any(r.target == "/pp-ka/cut" for r in proxy.web.requests)


def active_backend_gauges(daemon: DaemonProcess, cluster_id: str) -> dict[str, dict[str, int]]:
    """Backends of ``cluster_id`` (``"<worker>/<backend>"``) that count an active connection
    or request in a worker's metrics; waits (bounded) for them to settle to none."""
    active: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = daemon.send(QueryMetrics(cluster_ids=[cluster_id], workers=True))
        assert response.ok and isinstance(response.content, MetricsContent), response.message
        active = {
            f"{worker}/{backend}": gauges
            for worker, data in response.content.workers.items()
            for backend, gauges in data["clusters"].get(cluster_id, {}).get("backends", {}).items()
            if gauges["backend.connections"] or gauges["http.active_requests"]
        }
        if not active:
            break
        time.sleep(0.05)
    return active


def test_proxy_protocol_websocket_upgrade(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_proxy_protocol_websocket_upgrade``: header, upgrade request, 101, then a
    byte pipe in both directions; once closed, the pipe is no longer counted as an active
    connection or request of the backend."""
    header = v2_ipv4(("192.0.2.40", 6000), proxy.destination("http"))
    with HttpConnection(proxy.ports["http"]) as connection:
        connection.send(
            header + b"GET /socket HTTP/1.1\r\nHost: ws.pp.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        assert connection.read_answer(head_only=True).status == 101
        for index in range(3):
            message = f"message {index}".encode()
            connection.send(message)
            expected = b"echo:" + message
            while len(connection.buffer) < len(expected):
                assert connection._fill(), "the pipe closed"
            assert connection.buffer == expected
            connection.buffer = b""
    record = wait_for(lambda: next(iter(proxy.websocket.received[-1:]), None))
    head = bytes(record).split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"GET /socket HTTP/1.1\r\n")
    assert b"X-Forwarded-For: 192.0.2.40\r\n" in head
    assert active_backend_gauges(proxy.daemon, "ws") == {}, "the closed pipe is still counted"


def test_rapid_proxy_protocol_healthchecks(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_rapid_proxy_protocol_healthchecks`` and
    ``test_proxy_protocol_mixed_traffic``: 100 LOCAL health checks in a row (connect, header,
    close), interleaved with real requests, leave the proxy serving every request."""
    header = v2_ipv4(("192.0.2.50", 7000), proxy.destination("http"))
    deadline = time.monotonic() + 30
    for index in range(100):
        assert time.monotonic() < deadline, "health checks too slow"
        with connect(proxy.ports["http"]) as probe:
            probe.sendall(v2_header(LOCAL, AF_UNSPEC))
        if index % 20 == 0:
            answer = http_with_header(proxy.ports["http"], header, f"/pp-mixed/{index}")
            assert (answer.status, answer.body) == (200, f"web /pp-mixed/{index}".encode())
    answer = http_with_header(proxy.ports["http"], header, "/pp-mixed/end")
    assert answer.status == 200


# --------------------------------------------------------------------------- HTTPS listener


class BioTlsClient:
    """A TLS client over memory buffers, so that the test decides how the bytes are cut into
    writes (a PROXY header and the ClientHello in one segment, as load balancers send them)."""

    def __init__(self, sock: socket.socket, server_name: str) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = tls_client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_name
        )

    def handshake(self, prefix: bytes = b"") -> None:
        """Complete the handshake; ``prefix`` goes out in the same write as the ClientHello."""
        pending = prefix
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.sock.sendall(pending + self.outgoing.read())
                pending = b""
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                self.incoming.write(data)
                continue
            self.sock.sendall(pending + self.outgoing.read())
            return

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def read_answer(self) -> tuple[bytes, bytes]:
        """(head, body) of one Content-Length answer."""
        data = b""
        while True:
            head, separator, body = data.partition(b"\r\n\r\n")
            if separator:
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(body) >= length:
                    return head, body[:length]
            try:
                data += self.tls.read(1 << 16)
            except ssl.SSLWantReadError:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("closed before the answer") from None
                self.incoming.write(chunk)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("segments", ["separate", "coalesced"])
def test_https_listener_expects_proxy_header(
    proxy: ProxyProtocolProxy, version: str, segments: str
) -> None:
    """sōzu ``test_h2_with_proxy_protocol_v2`` in HTTP/1.1: on an HTTPS listener with
    ``expect_proxy`` the header comes first, in clear, then the TLS handshake; the header's
    source reaches the backend. The header and the ClientHello may arrive in one segment."""
    source = ("203.0.113.9", 42424) if version == "v2" else ("203.0.113.8", 42425)
    destination = proxy.destination("https")
    header = v2_ipv4(source, destination) if version == "v2" else v1_tcp4(source, destination)
    target = f"/pp-https/{version}/{segments}"
    with connect(proxy.ports["https"]) as sock:
        client = BioTlsClient(sock, "pp.test")
        if segments == "separate":
            sock.sendall(header)
            time.sleep(0.2)
            client.handshake()
        else:
            client.handshake(prefix=header)
        client.send(f"GET {target} HTTP/1.1\r\nHost: pp.test\r\n\r\n".encode())
        head, body = client.read_answer()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert body == f"web {target}".encode()
    received = received_by(proxy.web, target)
    assert received.header("x-forwarded-for") == source[0]
    assert received.header("x-forwarded-proto") == "https"
    assert received.header("forwarded") == (
        f'proto=https;for="{source[0]}:{source[1]}";by=127.0.0.1'
    )


def test_https_listener_without_header_is_closed(proxy: ProxyProtocolProxy) -> None:
    """A TLS client that starts its handshake without a PROXY header is cut, not served."""
    before = len(proxy.web.requests)
    with (
        connect(proxy.ports["https"]) as raw,
        pytest.raises((ssl.SSLError, OSError)),
        tls_client_context().wrap_socket(raw, server_hostname="pp.test") as tls,
    ):
        tls.sendall(b"GET /pp-no-header HTTP/1.1\r\nHost: pp.test\r\n\r\n")
        tls.recv(1 << 16)
    assert len(proxy.web.requests) == before


# --------------------------------------------------------------------------- TCP listeners


def test_tcp_proxy_protocol_v2(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_tcp_proxy_protocol_v2``: on a TCP listener with ``expect_proxy`` the
    header (v2, then v1) is stripped and only the payload reaches the backend."""
    for header in (
        v2_ipv4(("192.0.2.60", 8000), proxy.destination("tcp")),
        v1_tcp4(("192.0.2.61", 8001), proxy.destination("tcp")),
    ):
        before = len(proxy.stripped.received)
        with connect(proxy.ports["tcp"]) as client:
            client.sendall(header + b"payload after the header")
            assert receive_exactly(client, 24) == b"payload after the header"
            client.sendall(b" and more")
            assert receive_exactly(client, 9) == b" and more"
        # the echo came back: the backend has recorded everything it received
        assert bytes(proxy.stripped.received[before]) == b"payload after the header and more"


def test_tcp_expect_proxy_without_header(proxy: ProxyProtocolProxy) -> None:
    """A TCP connection without a header on an ``expect_proxy`` listener is closed and no
    backend connection is made."""
    before = len(proxy.stripped.received)
    with connect(proxy.ports["tcp"]) as client:
        client.sendall(b"no header here\r\n")
        assert closed_without_answer(client)
    time.sleep(0.2)
    assert len(proxy.stripped.received) == before


def test_send_proxy_writes_v2_header_with_client_address(proxy: ProxyProtocolProxy) -> None:
    """``send_proxy = true`` on a TCP cluster: the backend receives a v2 PROXY header whose
    source is the client's address and port and destination the listener's, then exactly
    the payload."""
    before = len(proxy.sent.received)
    with connect(proxy.ports["send"]) as client:
        source = client.getsockname()
        expected = v2_ipv4((source[0], source[1]), proxy.destination("send")) + b"hello backend"
        client.sendall(b"hello backend")
        # the echo backend sends back everything it received, the proxy's header included
        assert receive_exactly(client, len(expected)) == expected
    wait_for(lambda: len(proxy.sent.received) > before)
    assert bytes(proxy.sent.received[before]) == expected


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_relay_forwards_the_client_header_verbatim(proxy: ProxyProtocolProxy, version: str) -> None:
    """``expect_proxy`` listener + ``send_proxy`` cluster: the backend receives exactly the
    header bytes the client sent (a v1 line stays v1), then the payload."""
    source = ("192.0.2.70", 9000)
    header = (
        v2_ipv4(source, proxy.destination("relay"))
        if version == "v2"
        else v1_tcp4(source, proxy.destination("relay"))
    )
    before = len(proxy.relayed.received)
    with connect(proxy.ports["relay"]) as client:
        client.sendall(header + b"relayed payload")
        # the echo backend sends back everything it received, header included
        assert receive_exactly(client, len(header) + 15) == header + b"relayed payload"
    wait_for(lambda: len(proxy.relayed.received) > before)
    assert bytes(proxy.relayed.received[before]) == header + b"relayed payload"


def test_rapid_connect_disconnect(proxy: ProxyProtocolProxy) -> None:
    """sōzu ``test_rapid_connect_disconnect`` on an ``expect_proxy`` listener: 100
    connections closed before sending anything are closed silently; the proxy still serves."""
    for _ in range(100):
        connect(proxy.ports["http"]).close()
    header = v2_ipv4(("192.0.2.80", 9100), proxy.destination("http"))
    assert http_with_header(proxy.ports["http"], header, "/pp-rapid").status == 200
