"""The header edits of the worker (worker/headers.py), driven with parsed heads, no socket."""

from __future__ import annotations

from sozu_config.models import (
    Cluster,
    HeaderEdit,
    HeaderPosition,
    Hsts,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
)
from sozu_runtime.worker import h1, headers
from sozu_runtime.worker.headers import (
    ForwardingHeaders,
    client_response_head,
    has_field,
    strip_cookie,
    with_hsts,
)
from sozu_runtime.worker.routes import ClusterRuntime, Route, hsts_line

ADDRESS = "127.0.0.1:8080"
PEER = ("10.0.0.7", 5555)
RID = b"01RID"


def forwarding(**settings: object) -> ForwardingHeaders:
    config = HttpListenerConfig(address=ADDRESS, **settings)  # type: ignore[arg-type]
    return ForwardingHeaders(config, "127.0.0.1", 8080)


def route(**frontend: object) -> Route:
    cluster = ClusterRuntime(Cluster(cluster_id="app"))
    spec = HttpFrontend(address=ADDRESS, hostname="example.com", cluster_id="app", **frontend)  # type: ignore[arg-type]
    return Route(spec, cluster)


def request(raw: bytes) -> h1.RequestHead:
    head = h1.parse_request_head(raw, 65536)
    assert head is not None
    return head


def response(raw: bytes) -> h1.ResponseHead:
    head = h1.parse_response_head(raw, 65536)
    assert head is not None
    return head


def forward(fwd: ForwardingHeaders, raw: bytes, plain: Route, sticky: str | None = None) -> bytes:
    head = request(raw)
    block = fwd.for_peer(*PEER)
    return fwd.request_head(head, plain, block, PEER[0], PEER[1], RID, sticky)


# ---------------------------------------------------------------------- forwarding headers


def test_the_forwarding_block_of_a_client() -> None:
    block = forwarding().for_peer(*PEER)
    assert block == (
        b"X-Forwarded-For: 10.0.0.7\r\n"
        b'Forwarded: proto=http;for="10.0.0.7:5555";by=127.0.0.1\r\n'
        b"X-Forwarded-Port: 8080\r\n"
        b"X-Forwarded-Proto: http\r\n"
    )


def test_https_listeners_say_https_and_ipv6_peers_are_bracketed() -> None:
    config = HttpsListenerConfig(address="[::1]:8443", send_x_real_ip=True)
    fwd = ForwardingHeaders(config, "::1", 8443)
    block = fwd.for_peer("2001:db8::1", 4000)
    assert b'Forwarded: proto=https;for="[2001:db8::1]:4000";by="[::1]"\r\n' in block
    assert b"X-Real-IP: 2001:db8::1\r\n" in block
    assert block.endswith(b"X-Forwarded-Port: 8443\r\nX-Forwarded-Proto: https\r\n")


def test_the_block_of_each_connection_names_its_own_port_and_address() -> None:
    # the pieces kept per client address make the blocks: only the port differs between two
    # connections of one address, and every address gets its own
    fwd = forwarding(send_x_real_ip=True)
    first, second = fwd.for_peer("10.0.0.7", 5555), fwd.for_peer("10.0.0.7", 6)
    assert first == second.replace(b":6", b":5555")
    assert b'for="10.0.0.7:6";' in second
    other = fwd.for_peer("10.0.0.8", 5555)
    assert other == first.replace(b"10.0.0.7", b"10.0.0.8")
    for number in range(headers.PEER_PIECES_SIZE + 2):  # more addresses than are kept
        ip = f"10.1.{number // 256}.{number % 256}"
        assert fwd.for_peer(ip, number).startswith(b"X-Forwarded-For: %s\r\n" % ip.encode())
    assert fwd.for_peer("10.0.0.7", 5555) == first


def test_a_trusted_clients_own_fields_leave_the_block() -> None:
    fwd = forwarding(trust_forwarded_headers=True)
    full = fwd.for_peer(*PEER)
    for seen, field in (
        (h1.SEEN_X_FORWARDED_FOR, b"X-Forwarded-For"),
        (h1.SEEN_FORWARDED, b"Forwarded"),
        (h1.SEEN_X_FORWARDED_PORT, b"X-Forwarded-Port"),
        (h1.SEEN_X_FORWARDED_PROTO, b"X-Forwarded-Proto"),
    ):
        lines = [line for line in full.split(b"\r\n") if not line.startswith(field + b":")]
        assert fwd.for_peer(*PEER, seen) == b"\r\n".join(lines)
    assert fwd.for_peer(*PEER, h1.SEEN_X_FORWARDED_FOR | h1.SEEN_FORWARDED) == (
        b"X-Forwarded-Port: 8080\r\nX-Forwarded-Proto: http\r\n"
    )


def test_a_plain_request_is_forwarded_as_received_plus_the_block() -> None:
    fwd = forwarding()
    raw = b"GET /a HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    out = forward(fwd, raw, route())
    assert out == (
        raw[:-2] + fwd.for_peer(*PEER) + b"X-Request-Id: 01RID\r\nSozu-Id: 01RID\r\n\r\n"
    )


def test_the_fast_path_head_drops_the_connection_line() -> None:
    fwd = forwarding(sozu_id_header="X-Trace")
    data = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n"
    end = data.find(b"\r\n\r\n")
    simple = h1.simple_request(data, end)
    assert simple is not None
    _, _, _, _, _, cut_start, cut_end = simple
    out = fwd.simple_request(data, end, cut_start, cut_end, b"B: 1\r\n", RID)
    assert out == (
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nB: 1\r\n"
        b"X-Request-Id: 01RID\r\nX-Trace: 01RID\r\n\r\n"
    )


def test_a_client_chain_is_extended_and_its_proto_replaced() -> None:
    fwd = forwarding()
    raw = (
        b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.2.3.4\r\n"
        b"Forwarded: for=1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Request-Id: mine\r\n\r\n"
    )
    out = forward(fwd, raw, route())
    assert b"X-Forwarded-For: 1.2.3.4, 10.0.0.7\r\n" in out
    assert b'Forwarded: for=1.2.3.4, proto=http;for="10.0.0.7:5555";by=127.0.0.1\r\n' in out
    assert b"X-Forwarded-Proto: https" not in out  # an untrusted client's value is replaced
    assert out.count(b"X-Forwarded-Proto: http\r\n") == 1
    assert b"X-Request-Id: mine\r\n" in out and b"X-Request-Id: 01RID" not in out
    assert out.endswith(b"Sozu-Id: 01RID\r\n\r\n")


def test_a_trusted_client_keeps_its_proto_and_port() -> None:
    fwd = forwarding(trust_forwarded_headers=True)
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n"
    out = forward(fwd, raw, route())
    assert b"X-Forwarded-Proto: https\r\n" in out
    assert b"X-Forwarded-Proto: http\r\n" not in out
    assert b"X-Forwarded-Port: 8080\r\n" in out


def test_hop_by_hop_fields_go_and_x_real_ip_is_elided() -> None:
    fwd = forwarding(elide_x_real_ip=True)
    raw = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: 5\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n"
    )
    out = forward(fwd, raw, route())
    for gone in (b"Connection:", b"X-Secret", b"Keep-Alive", b"X-Real-IP"):
        assert gone not in out
    assert out.startswith(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n")


def test_the_sticky_cookie_is_stripped_and_found() -> None:
    fwd = forwarding(sticky_name="LB")
    head = request(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: x=1; lb=back2; y=2\r\n\r\n")
    assert fwd.sticky_id(head) == "back2"
    out = forward(fwd, head.raw, route(), sticky="back2")
    assert b"Cookie: x=1; y=2\r\n" in out
    only = forward(fwd, b"GET / HTTP/1.1\r\nHost: a\r\nCookie: LB=b\r\n\r\n", route(), "b")
    assert b"Cookie" not in only
    assert fwd.set_cookie("back2") == b"Set-Cookie: LB=back2; Path=/\r\n"
    assert strip_cookie(b"a=1;LB=2 ; c=3", b"lb") == b"a=1; c=3"


def test_frontend_request_edits_and_host_rewrite() -> None:
    edits = [
        HeaderEdit(position=HeaderPosition.REQUEST, key="X-Drop"),
        HeaderEdit(position=HeaderPosition.BOTH, key="X-Env", value="prod"),
    ]
    fwd = forwarding()
    head = request(b"GET /old?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-Drop: 1\r\n\r\n")
    edited = route(headers=edits, rewrite_host="internal", rewrite_path="/new")
    block = fwd.for_peer(*PEER)
    out = fwd.request_head(head, edited, block, *PEER, RID, None)
    assert out.startswith(b"GET /new?q=1 HTTP/1.1\r\n")
    assert b"Host: internal:8080\r\nX-Forwarded-Host: example.com:8080\r\n" in out
    assert b"X-Drop" not in out
    assert b"X-Env: prod\r\n" in out


# ---------------------------------------------------------------------- response heads


def test_response_fields() -> None:
    fwd = forwarding()
    assert fwd.response_fields(RID, b"", b"", False, 11) == b"Sozu-Id: 01RID\r\n"
    cookie = fwd.set_cookie("b1")
    hsts = b"Strict-Transport-Security: max-age=1\r\n"
    assert fwd.response_fields(RID, cookie, hsts, True, 11) == (
        b"Sozu-Id: 01RID\r\n" + cookie + hsts + b"Connection: close\r\n"
    )
    assert fwd.response_fields(RID, b"", b"", False, 10).endswith(b"Connection: keep-alive\r\n")


def test_a_response_head_gets_its_fields_after_the_status_line() -> None:
    head = response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n")
    out = client_response_head(head, b"Sozu-Id: x\r\n", None, b"", False)
    assert out == b"HTTP/1.1 200 OK\r\nSozu-Id: x\r\nContent-Length: 2\r\n\r\n"


def test_hsts_is_added_kept_or_replaced() -> None:
    line = hsts_line(Hsts(enabled=True, max_age=10))
    assert line.startswith(b"Strict-Transport-Security: max-age=10")
    plain = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert line in client_response_head(plain, b"", None, line, False)
    own = response(b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\n\r\n")
    assert has_field(own, b"strict-transport-security")
    kept = client_response_head(own, b"", None, line, False)
    assert b"max-age=1\r\n" in kept and line not in kept
    replaced = client_response_head(own, b"", None, line, True)
    assert b"max-age=1\r\n" not in replaced and line in replaced
    answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert with_hsts(answer, line) == b"HTTP/1.1 404 Not Found\r\n" + line + answer[24:]
    assert with_hsts(with_hsts(answer, line), line) == with_hsts(answer, line)


def test_response_edits_and_hop_by_hop_removal() -> None:
    edits = [
        HeaderEdit(position=HeaderPosition.RESPONSE, key="Server"),
        HeaderEdit(position=HeaderPosition.RESPONSE, key="X-Frame-Options", value="DENY"),
    ]
    head = response(
        b"HTTP/1.1 200 OK\r\nServer: secret\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = client_response_head(head, b"Sozu-Id: x\r\n", route(headers=edits), b"", False)
    assert out == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSozu-Id: x\r\nX-Frame-Options: DENY\r\n\r\n"
    )
