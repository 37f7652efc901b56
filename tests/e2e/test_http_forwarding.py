"""End-to-end forwarding of HTTP/1.1 heads: what the backend receives, what the client gets back.

Reference §E.3: the client's head is forwarded with its fields in order, followed by
``X-Forwarded-For``, ``Forwarded``, (``X-Real-IP``), ``X-Forwarded-Port``, ``X-Forwarded-Proto``,
``X-Request-Id`` and the request id header (``Sozu-Id``); fields the client already sent are
extended (``X-Forwarded-For``, ``Forwarded``) or trusted (``X-Forwarded-Proto``,
``X-Forwarded-Port``, ``X-Request-Id``). Hop-by-hop fields (RFC 9110 §7.6.1) never cross the
proxy, in either direction.

One daemon with several listeners (one per forwarding setting) serves the whole module.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.clients import PROXY_V2_SIGNATURE, HttpAnswer, HttpConnection, proxy_v2_header
from support.daemon import DaemonProcess, free_port

pytestmark = pytest.mark.e2e

PUBLIC_ADDRESS = "198.51.100.1:8443"
PROXY_SOURCE_V4 = ("198.51.100.7", 4242)
PROXY_SOURCE_V6 = ("2001:db8::7", 4243)
REQUEST_ID = re.compile(r"[0-9A-Z]{26}")

# what the backend answers, by request target
HOP_BY_HOP_RESPONSE = [
    ("Connection", "X-Backend-Secret"),
    ("X-Backend-Secret", "z"),
    ("Keep-Alive", "timeout=5, max=100"),
    ("Proxy-Connection", "keep-alive"),
    ("X-Kept", "k"),
]
EDITED_RESPONSE = [("Server", "backend/1.0"), ("X-Backend-Kept", "yes")]


def answer(request: Received) -> Answer:
    if request.target == "/hop-response":
        return Answer(headers=HOP_BY_HOP_RESPONSE, body=b"hop")
    if request.target == "/edited-response":
        return Answer(headers=EDITED_RESPONSE, body=b"edited")
    return Answer(body=b"fwd")


@dataclass
class Forwarding:
    daemon: DaemonProcess
    backend: HttpBackend
    plain: int
    renamed: int
    send_real_ip: int
    elide_real_ip: int
    send_and_elide: int
    proxied: int
    public: int
    trusted: int
    ipv6: int | None

    def exchange(
        self, port: int, raw: bytes, *, host: str = "127.0.0.1"
    ) -> tuple[HttpAnswer, Received, int]:
        """Send ``raw`` on a new connection: (answer, what the backend received, client port)."""
        before = len(self.backend.requests)
        with HttpConnection(port, host=host) as connection:
            client_port = connection.sock.getsockname()[1]
            connection.send(raw)
            response = connection.read_answer()
        assert len(self.backend.requests) == before + 1, "the backend did not get one request"
        return response, self.backend.requests[-1], client_port


def free_port_v6() -> int | None:
    """A free port on [::1], or None when this machine has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
            return int(sock.getsockname()[1])
    except OSError:
        return None


@pytest.fixture(scope="module")
def forwarding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forwarding]:
    ports = {
        "plain": free_port(),
        "renamed": free_port(),
        "send_real_ip": free_port(),
        "elide_real_ip": free_port(),
        "send_and_elide": free_port(),
        "proxied": free_port(),
        "public": free_port(),
        "trusted": free_port(),
    }
    settings: dict[str, dict[str, object]] = {
        "plain": {},
        "renamed": {"sozu_id_header": "X-Trace-Id"},
        "send_real_ip": {"send_x_real_ip": True},
        "elide_real_ip": {"elide_x_real_ip": True},
        "send_and_elide": {"send_x_real_ip": True, "elide_x_real_ip": True},
        "proxied": {"expect_proxy": True, "send_x_real_ip": True, "elide_x_real_ip": True},
        "public": {"public_address": PUBLIC_ADDRESS},
        "trusted": {"trust_forwarded_headers": True},
    }
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    ipv6 = free_port_v6()
    if ipv6 is not None:
        settings["ipv6"] = {}
        addresses["ipv6"] = f"[::1]:{ipv6}"
    with HttpBackend("fwd", answer) as backend:
        plain = addresses["plain"]
        edits = [
            {"position": "request", "key": "X-Added", "value": "added"},
            {"position": "request", "key": "X-Remove-Me", "value": ""},
            {"position": "response", "key": "X-Response-Added", "value": "r"},
            {"position": "response", "key": "Server", "value": ""},
            {"position": "both", "key": "X-Both", "value": "b"},
        ]
        frontends = [configs.frontend(a, "fwd.test") for a in addresses.values()]
        frontends += [
            configs.frontend(plain, "edits.test", headers=edits),
            configs.frontend(
                plain, "rewrite.test", rewrite_host="backend.internal", rewrite_path="/internal"
            ),
        ]
        config = configs.document(
            *(configs.http_listener(addresses[name], **extra) for name, extra in settings.items()),
            configs.cluster(
                "fwd", frontends=frontends, backends=[configs.backend(backend.address)]
            ),
            worker_count=1,
        )
        with DaemonProcess(tmp_path_factory.mktemp("forwarding"), config).start() as daemon:
            yield Forwarding(daemon, backend, **ports, ipv6=ipv6)


def head_lines(received: Received) -> list[bytes]:
    return received.head.split(b"\r\n")[:-2]


# LOCAL commands (health checks of a load balancer): AF_UNSPEC without addresses, and
# AF_INET with addresses that must be ignored.
PROXY_V2_LOCAL = {
    "af_unspec": PROXY_V2_SIGNATURE + b"\x20\x00\x00\x00",
    "ipv4": PROXY_V2_SIGNATURE
    + b"\x20\x11\x00\x0c"
    + bytes([203, 0, 113, 9, 127, 0, 0, 1])
    + struct.pack("!HH", 1111, 80),
}


def test_forwarding_headers_follow_the_client_head_byte_exact(forwarding: Forwarding) -> None:
    """Reference §E.3, wire order: the client's fields untouched and in order (duplicates,
    letter case and inner spaces included), then X-Forwarded-For, Forwarded,
    X-Forwarded-Port, X-Forwarded-Proto, X-Request-Id, Sozu-Id."""
    client_head = (
        b"GET /exact?x=1 HTTP/1.1\r\n"
        b"Host: fwd.test\r\n"
        b"User-Agent: exact-test/1.0\r\n"
        b"Accept: text/html\r\n"
        b"x-lower-case: Value With  Spaces\r\n"
        b"Accept: application/json\r\n"
    )
    response, received, client_port = forwarding.exchange(forwarding.plain, client_head + b"\r\n")
    assert response.status == 200
    request_id = received.header("sozu-id")
    assert request_id is not None and REQUEST_ID.fullmatch(request_id)
    expected = client_head + (
        b"X-Forwarded-For: 127.0.0.1\r\n"
        b'Forwarded: proto=http;for="127.0.0.1:%d";by=127.0.0.1\r\n'
        b"X-Forwarded-Port: %d\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Request-Id: %s\r\n"
        b"Sozu-Id: %s\r\n"
        b"\r\n"
    ) % (client_port, forwarding.plain, request_id.encode(), request_id.encode())
    # compared line by line so that a failure shows which field differs
    assert received.head.split(b"\r\n") == expected.split(b"\r\n")


def test_added_forwarding_header_values(forwarding: Forwarding) -> None:
    """The values of the added fields, whatever their order (smoke of §E.3)."""
    response, received, client_port = forwarding.exchange(
        forwarding.plain, b"GET /values HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    )
    assert response.status == 200
    assert received.header_values("x-forwarded-for") == ["127.0.0.1"]
    assert received.header_values("forwarded") == [
        f'proto=http;for="127.0.0.1:{client_port}";by=127.0.0.1'
    ]
    assert received.header_values("x-forwarded-proto") == ["http"]
    assert received.header_values("x-forwarded-port") == [str(forwarding.plain)]
    assert received.header_values("x-request-id") == received.header_values("sozu-id")
    assert head_lines(received)[:2] == [b"GET /values HTTP/1.1", b"Host: fwd.test"]


def test_request_id_is_new_per_request_and_echoed_on_the_response(
    forwarding: Forwarding,
) -> None:
    ids = []
    with HttpConnection(forwarding.plain) as connection:
        for _ in range(3):
            response = connection.request("GET", "/ids", host="fwd.test")
            received = forwarding.backend.requests[-1]
            assert response.status == 200
            assert response.header_values("sozu-id") == received.header_values("sozu-id")
            ids.append(response.header("sozu-id"))
    assert len(set(ids)) == 3


def test_client_forwarding_chains_are_extended_in_place(forwarding: Forwarding) -> None:
    raw = (
        b"GET /chain HTTP/1.1\r\n"
        b"Host: fwd.test\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\n"
        b"Accept: */*\r\n"
        b"Forwarded: for=203.0.113.7;proto=https\r\n"
        b"X-After: 1\r\n"
        b"\r\n"
    )
    response, received, client_port = forwarding.exchange(forwarding.plain, raw)
    assert response.status == 200
    xff = "203.0.113.7, 127.0.0.1"
    forwarded = (
        f'for=203.0.113.7;proto=https, proto=http;for="127.0.0.1:{client_port}";by=127.0.0.1'
    )
    assert received.header_values("x-forwarded-for") == [xff]
    assert received.header_values("forwarded") == [forwarded]
    # the extended fields stay where the client put them
    lines = head_lines(received)
    assert lines[1:6] == [
        b"Host: fwd.test",
        b"X-Forwarded-For: " + xff.encode(),
        b"Accept: */*",
        b"Forwarded: " + forwarded.encode(),
        b"X-After: 1",
    ]


SPOOFED_PROTO_PORT = (
    b"GET /trusted HTTP/1.1\r\n"
    b"Host: fwd.test\r\n"
    b"X-Forwarded-Proto: https\r\n"
    b"X-Before: 1\r\n"
    b"X-Forwarded-Port: 443\r\n"
    b"X-Request-Id: client-chosen-id\r\n"
    b"\r\n"
)


def test_client_proto_and_port_are_replaced_by_the_listener_s_own(
    forwarding: Forwarding,
) -> None:
    """A client on a plain-HTTP listener must not make the backend believe the request came
    over TLS: its X-Forwarded-Proto and -Port are replaced by the listener's values."""
    response, received, _ = forwarding.exchange(forwarding.plain, SPOOFED_PROTO_PORT)
    assert response.status == 200
    assert received.header_values("x-forwarded-proto") == ["http"]
    assert received.header_values("x-forwarded-port") == [str(forwarding.plain)]
    assert received.header_values("x-before") == ["1"]
    # the client's request id is still its own (it names the request, it grants nothing)
    assert received.header_values("x-request-id") == ["client-chosen-id"]


def test_client_proto_port_and_request_id_are_trusted_and_sozu_id_always_added(
    forwarding: Forwarding,
) -> None:
    """``trust_forwarded_headers = true`` (a listener only a trusted proxy reaches): the
    values the client sends are kept, as sōzu does."""
    response, received, _ = forwarding.exchange(forwarding.trusted, SPOOFED_PROTO_PORT)
    assert response.status == 200
    assert received.header_values("x-forwarded-proto") == ["https"]
    assert received.header_values("x-forwarded-port") == ["443"]
    assert received.header_values("x-request-id") == ["client-chosen-id"]
    sozu_ids = received.header_values("sozu-id")
    assert len(sozu_ids) == 1 and REQUEST_ID.fullmatch(sozu_ids[0])
    assert response.header_values("sozu-id") == sozu_ids


def test_hop_by_hop_request_fields_do_not_reach_the_backend(forwarding: Forwarding) -> None:
    """RFC 9110 §7.6.1: Connection and the fields it names, Keep-Alive, TE and
    Proxy-Connection are removed; every other field goes through, in order."""
    raw = (
        b"GET /hop HTTP/1.1\r\n"
        b"Host: fwd.test\r\n"
        b"Connection: keep-alive, X-Secret\r\n"
        b"X-Before: 1\r\n"
        b"X-Secret: do-not-forward\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"TE: trailers\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"X-After: 2\r\n"
        b"\r\n"
    )
    response, received, _ = forwarding.exchange(forwarding.plain, raw)
    assert response.status == 200
    names = [name.lower() for name, _ in received.headers]
    for hop in ("x-secret", "keep-alive", "te", "proxy-connection"):
        assert hop not in names, received.head
    for value in received.header_values("connection"):
        assert value.lower() in ("keep-alive", "close"), received.head
    client_fields = [line for line in head_lines(received)[1:] if line.startswith(b"X-B")]
    client_fields += [line for line in head_lines(received)[1:] if line.startswith(b"X-A")]
    assert client_fields == [b"X-Before: 1", b"X-After: 2"]
    assert head_lines(received)[1] == b"Host: fwd.test"


@pytest.mark.parametrize("listener", ["plain", "trusted"])
def test_connection_cannot_erase_the_proxy_s_forwarding_fields(
    forwarding: Forwarding, listener: str
) -> None:
    """The class of CVE-2024-45410: fields named in Connection are hop-by-hop and removed,
    but the proxy's own forwarding fields must still reach the backend."""
    raw = (
        b"GET /ok HTTP/1.1\r\n"
        b"Host: fwd.test\r\n"
        b"Connection: close, Forwarded, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Port, "
        b"X-Request-Id\r\n"
        b"X-Forwarded-For: 1\r\n"
        b"Forwarded: for=1\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Port: 443\r\n"
        b"X-Request-Id: a\r\n"
        b"\r\n"
    )
    port = getattr(forwarding, listener)
    response, received, client_port = forwarding.exchange(port, raw)
    assert response.status == 200
    assert received.header_values("x-forwarded-for") == ["127.0.0.1"]
    assert received.header_values("forwarded") == [
        f'proto=http;for="127.0.0.1:{client_port}";by=127.0.0.1'
    ]
    assert received.header_values("x-forwarded-proto") == ["http"]
    assert received.header_values("x-forwarded-port") == [str(port)]
    request_id = received.header_values("sozu-id")
    assert len(request_id) == 1 and received.header_values("x-request-id") == request_id


def test_an_h2c_upgrade_is_forwarded_as_a_plain_request(forwarding: Forwarding) -> None:
    """h2c smuggling: a backend that accepted the switch would take HTTP/2 from the client
    through a tunnel, past every path rule. The upgrade offer never reaches it."""
    raw = (
        b"GET /h2c HTTP/1.1\r\n"
        b"Host: fwd.test\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        b"\r\n"
    )
    response, received, _ = forwarding.exchange(forwarding.plain, raw)
    assert response.status == 200
    names = {name.lower() for name, _ in received.headers}
    assert not names & {"upgrade", "http2-settings", "connection"}, received.head


def test_hop_by_hop_response_fields_do_not_reach_the_client(forwarding: Forwarding) -> None:
    with HttpConnection(forwarding.plain) as connection:
        response = connection.request("GET", "/hop-response", host="fwd.test")
        assert response.status == 200 and response.body == b"hop"
        names = [name.lower() for name, _ in response.headers]
        for hop in ("x-backend-secret", "keep-alive", "proxy-connection"):
            assert hop not in names, response.raw_head
        for value in response.header_values("connection"):
            assert value.lower() in ("keep-alive", "close"), response.raw_head
        assert response.header_values("x-kept") == ["k"]
        # the connection is still usable: the removed fields did not disturb the framing
        assert connection.request("GET", "/after", host="fwd.test").body == b"fwd"


def test_sozu_id_header_can_be_renamed(forwarding: Forwarding) -> None:
    response, received, _ = forwarding.exchange(
        forwarding.renamed, b"GET /renamed HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    )
    assert response.status == 200
    assert received.header("sozu-id") is None
    trace = received.header_values("x-trace-id")
    assert len(trace) == 1 and REQUEST_ID.fullmatch(trace[0])
    assert received.header_values("x-request-id") == trace
    assert response.header_values("x-trace-id") == trace
    assert response.header("sozu-id") is None
    # the proxy's own answers carry the renamed header too
    with HttpConnection(forwarding.renamed) as connection:
        not_found = connection.request("GET", "/", host="unknown.test")
    assert not_found.status == 404
    assert not_found.header("x-trace-id") and not_found.header("sozu-id") is None


X_REAL_IP_CASES = {
    # sōzu test_x_real_ip_neither: the client's field passes, nothing injected
    "neither": ("plain", ["6.6.6.6"], []),
    # sōzu test_x_real_ip_send_only: the peer address is added
    "send_only": ("send_real_ip", ["6.6.6.6", "127.0.0.1"], ["127.0.0.1"]),
    # sōzu test_x_real_ip_elide_only: the spoofed field is removed
    "elide_only": ("elide_real_ip", [], []),
    # both: only the proxy's value
    "send_and_elide": ("send_and_elide", ["127.0.0.1"], ["127.0.0.1"]),
}


@pytest.mark.parametrize("case", X_REAL_IP_CASES.values(), ids=X_REAL_IP_CASES.keys())
def test_x_real_ip_settings(forwarding: Forwarding, case: tuple[str, list[str], list[str]]) -> None:
    """sōzu ``test_x_real_ip_neither``, ``test_x_real_ip_send_only``,
    ``test_x_real_ip_elide_only``: with and without a client-sent X-Real-IP."""
    listener, with_spoof, without_spoof = case
    port = getattr(forwarding, listener)
    spoofed = b"GET /real-ip HTTP/1.1\r\nHost: fwd.test\r\nX-Real-IP: 6.6.6.6\r\n\r\n"
    _, received, _ = forwarding.exchange(port, spoofed)
    assert received.header_values("x-real-ip") == with_spoof
    _, received, _ = forwarding.exchange(port, b"GET /real-ip HTTP/1.1\r\nHost: fwd.test\r\n\r\n")
    assert received.header_values("x-real-ip") == without_spoof


def test_x_real_ip_send_and_elide_take_the_address_of_the_proxy_protocol_header(
    forwarding: Forwarding,
) -> None:
    """sōzu ``test_x_real_ip_send_and_elide``: elide + send + PROXY v2 — the spoofed field is
    removed and every forwarding field names the source from the PROXY header."""
    header = proxy_v2_header(PROXY_SOURCE_V4, ("127.0.0.1", forwarding.proxied))
    raw = header + b"GET /proxied HTTP/1.1\r\nHost: fwd.test\r\nX-Real-IP: 6.6.6.6\r\n\r\n"
    response, received, _ = forwarding.exchange(forwarding.proxied, raw)
    assert response.status == 200
    assert received.header_values("x-real-ip") == ["198.51.100.7"]
    assert received.header_values("x-forwarded-for") == ["198.51.100.7"]
    assert received.header_values("forwarded") == [
        'proto=http;for="198.51.100.7:4242";by=127.0.0.1'
    ]


def test_forwarded_brackets_an_ipv6_peer_from_the_proxy_protocol_header(
    forwarding: Forwarding,
) -> None:
    """sōzu ``test_forwarded_ipv6_brackets_via_proxy_v2``: ``for="[addr]:port"``."""
    header = proxy_v2_header(PROXY_SOURCE_V6, ("2001:db8::1", 80))
    raw = header + b"GET /proxied-v6 HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    response, received, _ = forwarding.exchange(forwarding.proxied, raw)
    assert response.status == 200
    assert received.header_values("x-forwarded-for") == ["2001:db8::7"]
    assert received.header_values("x-real-ip") == ["2001:db8::7"]
    [forwarded] = received.header_values("forwarded")
    assert forwarded.startswith('proto=http;for="[2001:db8::7]:4243";by=')


def test_ipv6_listener_brackets_both_forwarded_nodes(forwarding: Forwarding) -> None:
    if forwarding.ipv6 is None:
        # No ::1 on this machine: show the same bracketing with an IPv6 source given by a
        # PROXY v2 header instead.
        test_forwarded_brackets_an_ipv6_peer_from_the_proxy_protocol_header(forwarding)
        return
    response, received, client_port = forwarding.exchange(
        forwarding.ipv6, b"GET /v6 HTTP/1.1\r\nHost: fwd.test\r\n\r\n", host="::1"
    )
    assert response.status == 200
    assert received.header_values("x-forwarded-for") == ["::1"]
    assert received.header_values("forwarded") == [
        f'proto=http;for="[::1]:{client_port}";by="[::1]"'
    ]
    assert received.header_values("x-forwarded-port") == [str(forwarding.ipv6)]


def test_public_address_is_what_forwarding_fields_report(forwarding: Forwarding) -> None:
    response, received, client_port = forwarding.exchange(
        forwarding.public, b"GET /public HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    )
    assert response.status == 200
    assert received.header_values("x-forwarded-port") == ["8443"]
    assert received.header_values("forwarded") == [
        f'proto=http;for="127.0.0.1:{client_port}";by=198.51.100.1'
    ]


def test_frontend_header_edits_add_and_delete_both_ways(forwarding: Forwarding) -> None:
    """sōzu ``test_request_header_inject_h1_h1``, ``test_request_header_delete_h1_h1``,
    ``test_response_header_inject_h1_h1``, ``test_response_header_delete_h1_h1``."""
    raw = (
        b"GET /edited-response HTTP/1.1\r\n"
        b"Host: edits.test\r\n"
        b"X-Remove-Me: secret\r\n"
        b"X-Client: kept\r\n"
        b"\r\n"
    )
    response, received, _ = forwarding.exchange(forwarding.plain, raw)
    assert response.status == 200 and response.body == b"edited"
    assert received.header_values("x-added") == ["added"]
    assert received.header_values("x-both") == ["b"]
    assert received.header("x-remove-me") is None
    assert received.header_values("x-client") == ["kept"]
    assert response.header_values("x-response-added") == ["r"]
    assert response.header_values("x-both") == ["b"]
    assert response.header("server") is None
    assert response.header_values("x-backend-kept") == ["yes"]
    # edits belong to their frontend: the same backend answer through another one is intact
    with HttpConnection(forwarding.plain) as connection:
        plain = connection.request("GET", "/edited-response", host="fwd.test")
    assert plain.header_values("server") == ["backend/1.0"]
    assert plain.header("x-response-added") is None


def test_rewrite_host_and_path_on_a_forwarding_frontend(forwarding: Forwarding) -> None:
    """sōzu ``test_rewrite_host_h1_h1`` and ``test_rewrite_path_h1_h1`` (reference §E.2 step 6):
    the backend receives the rewritten Host and path, the original host in X-Forwarded-Host."""
    response, received, _ = forwarding.exchange(
        forwarding.plain, b"GET /public/page HTTP/1.1\r\nHost: rewrite.test\r\n\r\n"
    )
    assert response.status == 200
    assert received.header_values("host") == ["backend.internal"]
    assert received.target == "/internal"
    assert received.header_values("x-forwarded-host") == ["rewrite.test"]


# --------------------------------------------------------------------------- PROXY protocol


def test_proxy_protocol_keep_alive_requests_then_hang_up(forwarding: Forwarding) -> None:
    """mux ``test_proxy_protocol_request`` and ``test_proxy_protocol_keepalive_hup``: the PROXY
    source is the client of every request of the connection; a hang-up in the middle of a
    request harms nothing."""
    header = proxy_v2_header(PROXY_SOURCE_V4, ("127.0.0.1", forwarding.proxied))
    start = len(forwarding.backend.requests)
    with HttpConnection(forwarding.proxied) as connection:
        connection.send(header)
        for index in range(3):
            answer = connection.request("GET", f"/pp/{index}", host="fwd.test")
            assert answer.status == 200
        connection.send(b"GET /pp/cut HTTP/1.1\r\nHost: fwd.te")
    received = forwarding.backend.requests[start:]
    assert [r.target for r in received] == ["/pp/0", "/pp/1", "/pp/2"]
    assert {r.header("x-forwarded-for") for r in received} == {"198.51.100.7"}
    response, _, _ = forwarding.exchange(
        forwarding.proxied, header + b"GET /pp/after HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    )
    assert response.status == 200


def test_proxy_protocol_request_then_hang_up(forwarding: Forwarding) -> None:
    """mux ``test_proxy_protocol_hup``: PROXY header, a request, and the client leaves
    without reading the answer."""
    header = proxy_v2_header(PROXY_SOURCE_V4, ("127.0.0.1", forwarding.proxied))
    for _ in range(5):
        with HttpConnection(forwarding.proxied) as connection:
            connection.send(header + b"GET /pp-hup HTTP/1.1\r\nHost: fwd.test\r\n\r\n")
    # the abandoned requests were complete: they may still reach the backend, or not
    with HttpConnection(forwarding.proxied) as connection:
        connection.send(header + b"GET /pp-after-hup HTTP/1.1\r\nHost: fwd.test\r\n\r\n")
        assert connection.read_answer().status == 200
    [received] = [r for r in forwarding.backend.requests if r.target == "/pp-after-hup"]
    assert received.header("x-forwarded-for") == "198.51.100.7"


@pytest.mark.parametrize("local", PROXY_V2_LOCAL.values(), ids=PROXY_V2_LOCAL.keys())
def test_proxy_protocol_local_health_checks(forwarding: Forwarding, local: bytes) -> None:
    """mux ``test_proxy_protocol_local_healthcheck`` and
    ``test_proxy_protocol_af_unspec_healthcheck``: a LOCAL header then a disconnect is a
    health check; a LOCAL header before a request keeps the real peer as the client."""
    for _ in range(3):
        with HttpConnection(forwarding.proxied) as connection:
            connection.send(local)
    response, received, client_port = forwarding.exchange(
        forwarding.proxied, local + b"GET /local HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    )
    assert response.status == 200
    assert received.header_values("x-forwarded-for") == ["127.0.0.1"]
    assert received.header_values("forwarded") == [
        f'proto=http;for="127.0.0.1:{client_port}";by=127.0.0.1'
    ]


def test_proxy_protocol_rapid_health_checks_mixed_with_traffic(forwarding: Forwarding) -> None:
    """mux ``test_rapid_proxy_protocol_healthchecks`` (100 quick LOCAL checks) and
    ``test_proxy_protocol_mixed_traffic`` (checks interleaved with real requests)."""
    header = proxy_v2_header(PROXY_SOURCE_V4, ("127.0.0.1", forwarding.proxied))
    deadline = time.monotonic() + 20
    for index in range(100):
        assert time.monotonic() < deadline
        with socket.create_connection(("127.0.0.1", forwarding.proxied), timeout=5) as sock:
            sock.sendall(PROXY_V2_LOCAL["af_unspec"])
        if index % 10 == 0:
            response, received, _ = forwarding.exchange(
                forwarding.proxied,
                header + b"GET /mixed/%d HTTP/1.1\r\nHost: fwd.test\r\n\r\n" % index,
            )
            assert response.status == 200
            assert received.header("x-forwarded-for") == "198.51.100.7"


def test_proxy_protocol_partial_header_then_disconnect(forwarding: Forwarding) -> None:
    """mux ``test_proxy_protocol_partial_header``: a client that sends part of a PROXY header
    and leaves; the listener keeps serving."""
    header = proxy_v2_header(PROXY_SOURCE_V4, ("127.0.0.1", forwarding.proxied))
    for cut in (1, 5, 12, 15, len(header) - 1):
        with HttpConnection(forwarding.proxied) as connection:
            connection.send(header[:cut])
    response, _, _ = forwarding.exchange(
        forwarding.proxied, header + b"GET /after-partial HTTP/1.1\r\nHost: fwd.test\r\n\r\n"
    )
    assert response.status == 200
