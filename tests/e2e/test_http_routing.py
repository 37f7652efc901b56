"""End-to-end routing of HTTP/1.1 requests: which cluster a request reaches, or which error.

One daemon (one worker, one HTTP listener) serves every test of this module. Each cluster has
its own backend answering with the cluster's name, so the body of an answer says which route
was taken. Rules follow the router's documented semantics (``worker/router.py``): PRE rules
first (first match), then the TREE (most specific host entry; within it EQUALS, then REGEX
anchored at the start, then the longest PREFIX), then POST rules; frontends from the config
file are TREE rules unless they say otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from support import configs
from support.backends import HttpBackend
from support.clients import HttpAnswer, HttpConnection, get
from support.daemon import DaemonProcess, free_port

pytestmark = pytest.mark.e2e

# cluster id → the settings of its frontends (without the address)
FRONTENDS: dict[str, list[dict[str, str]]] = {
    # precedence: PRE beats a longer TREE prefix, TREE beats POST
    "pre": [{"hostname": "prec.test", "path": "/a", "position": "PRE"}],
    "tree": [{"hostname": "prec.test", "path": "/"}, {"hostname": "prec.test", "path": "/a/b"}],
    "post": [
        {"hostname": "*", "path": "/post-only", "position": "POST"},
        {"hostname": "prec.test", "path": "/x", "position": "POST"},
    ],
    # the shorter prefix is declared first: a first-match list would pick it
    "api": [{"hostname": "paths.test", "path": "/api"}],
    "apiv2": [{"hostname": "paths.test", "path": "/api/v2"}],
    "regex": [{"hostname": "paths.test", "path": "/r[0-9]+", "path_type": "REGEX"}],
    "equals": [
        {"hostname": "paths.test", "path": "/eq?x=1", "path_type": "EQUALS"},
        {"hostname": "paths.test", "path": "/api/v2/exact", "path_type": "EQUALS"},
    ],
    "exact": [{"hostname": "www.wild.test"}],
    "wild": [{"hostname": "*.wild.test"}],
    "sozu": [{"hostname": "*.sozu.io"}],
    "sozu_api": [{"hostname": "*.sozu.io", "path": "/api"}],
    "regexhost": [{"hostname": "/api-[0-9]+/.regex.test"}],
    "post_method": [{"hostname": "method.test", "path": "/m", "method": "POST"}],
    "any_method": [{"hostname": "method.test", "path": "/m"}],
    "idna": [{"hostname": "bücher.test"}],
}


@dataclass
class Routing:
    port: int
    daemon: DaemonProcess
    backends: dict[str, HttpBackend]

    def route(
        self, host: str, target: str = "/", method: str = "GET", body: bytes | None = None
    ) -> str:
        """The cluster that answered, or ``<status>`` when the proxy answered itself."""
        with HttpConnection(self.port) as connection:
            answer = connection.request(method, target, host=host, body=body)
        return answered_by(answer)

    def forwarded_requests(self) -> int:
        return sum(len(backend.requests) for backend in self.backends.values())


def answered_by(answer: HttpAnswer) -> str:
    if answer.status == 200:
        return answer.body.decode()
    return f"<{answer.status}>"


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routing]:
    port = free_port()
    backends = {name: HttpBackend(name).start() for name in FRONTENDS}
    try:
        clusters = [
            configs.cluster(
                name,
                frontends=[configs.frontend(port, **fields) for fields in frontends],
                backends=[configs.backend(backends[name].address)],
            )
            for name, frontends in FRONTENDS.items()
        ]
        config = configs.document(configs.http_listener(port), *clusters, worker_count=1)
        with DaemonProcess(tmp_path_factory.mktemp("routing"), config).start() as daemon:
            yield Routing(port, daemon, backends)
    finally:
        for backend in backends.values():
            backend.stop()


def test_pre_rules_win_over_tree_and_tree_over_post(routing: Routing) -> None:
    # PRE "/a" wins although the TREE has the longer prefix "/a/b"
    assert routing.route("prec.test", "/a/b/c") == "pre"
    assert routing.route("prec.test", "/a") == "pre"
    # TREE answers what PRE does not match; a POST rule for the same host is never reached
    assert routing.route("prec.test", "/zz") == "tree"
    assert routing.route("prec.test", "/x") == "tree"
    # POST only when neither PRE nor the TREE has anything for the host
    assert routing.route("nowhere.test", "/post-only/1") == "post"
    assert routing.route("nowhere.test", "/elsewhere") == "<404>"


def test_config_frontends_are_tree_rules_where_the_longest_prefix_wins(routing: Routing) -> None:
    """sōzu ``test_wildcard`` (longest prefix within a trie leaf), and the TREE default of
    config frontends (DESIGN.md §5): the shorter prefix is declared first, so a first-match
    (PRE) list would have picked it."""
    assert routing.route("paths.test", "/api/v2/users") == "apiv2"
    assert routing.route("paths.test", "/api/v2") == "apiv2"
    assert routing.route("paths.test", "/api/users") == "api"
    assert routing.route("paths.test", "/api") == "api"
    # a prefix is a byte prefix, not a path-segment prefix
    assert routing.route("paths.test", "/apix") == "api"
    assert routing.route("paths.test", "/ap") == "<404>"


def test_exact_hostname_beats_wildcard_and_wildcard_covers_exactly_one_label(
    routing: Routing,
) -> None:
    assert routing.route("www.wild.test") == "exact"
    assert routing.route("a.wild.test") == "wild"
    assert routing.route("wild.test") == "<404>"
    assert routing.route("b.a.wild.test") == "<404>"


def test_wildcard_frontend_with_a_path_for_another_cluster(routing: Routing) -> None:
    """sōzu ``test_wildcard``: ``*.sozu.io`` routes ``www.sozu.io``; a second ``*.sozu.io``
    frontend with path ``/api`` sends ``/api`` to its own cluster."""
    assert routing.route("www.sozu.io", "/") == "sozu"
    assert routing.route("www.sozu.io", "/api/list") == "sozu_api"
    assert routing.route("other.sozu.io", "/api") == "sozu_api"
    assert routing.route("other.sozu.io", "/apps") == "sozu"


def test_regex_hostname_matches_the_whole_host(routing: Routing) -> None:
    assert routing.route("api-7.regex.test") == "regexhost"
    assert routing.route("api-123.regex.test") == "regexhost"
    assert routing.route("api-x.regex.test") == "<404>"
    assert routing.route("xapi-7.regex.test") == "<404>"
    assert routing.route("api-7.regex.test.evil") == "<404>"


def test_regex_path_is_anchored_at_the_start(routing: Routing) -> None:
    assert routing.route("paths.test", "/r12") == "regex"
    assert routing.route("paths.test", "/r12/anything?q=1") == "regex"
    assert routing.route("paths.test", "/x/r12") == "<404>"
    assert routing.route("paths.test", "/rx") == "<404>"


def test_equals_path_is_the_whole_target_and_beats_a_matching_prefix(routing: Routing) -> None:
    assert routing.route("paths.test", "/eq?x=1") == "equals"
    assert routing.route("paths.test", "/eq?x=2") == "<404>"
    assert routing.route("paths.test", "/eq") == "<404>"
    assert routing.route("paths.test", "/eq?x=1&y=2") == "<404>"
    # "/api/v2" (PREFIX) also matches, the EQUALS rule wins
    assert routing.route("paths.test", "/api/v2/exact") == "equals"
    assert routing.route("paths.test", "/api/v2/exactly") == "apiv2"


def test_method_rules_compare_the_method_exactly(routing: Routing) -> None:
    assert routing.route("method.test", "/m", method="POST", body=b"x") == "post_method"
    assert routing.route("method.test", "/m", method="GET") == "any_method"
    assert routing.route("method.test", "/m", method="PUT", body=b"x") == "any_method"
    # methods are case-sensitive (RFC 9110 §9.1): "post" is another method
    assert routing.route("method.test", "/m", method="post", body=b"x") == "any_method"


def test_nothing_matches_gives_the_builtin_404_then_close(routing: Routing) -> None:
    """sōzu ``test_builtin_404_default_answer_closes_connection`` and the 404 step of
    ``test_http_behaviors``: an unknown host gets ``HTTP/1.1 404 Not Found`` with the
    built-in page, then EOF; no backend is contacted."""
    before = routing.forwarded_requests()
    for host, target in (("unknown.test", "/"), ("paths.test", "/nothing-here")):
        with HttpConnection(routing.port) as connection:
            answer = connection.request("GET", target, host=host)
            assert answer.raw_head.startswith(b"HTTP/1.1 404 Not Found\r\n")
            assert b"<h1>404 Not Found</h1>" in answer.body
            assert answer.header("sozu-id")
            assert connection.is_closed(timeout=3)
    assert routing.forwarded_requests() == before


BAD_HOSTS = {
    "empty": [b"Host: "],
    "port_overflow": [b"Host: www.wild.test:99999"],
    "port_too_big": [b"Host: www.wild.test:65536"],
    "port_zero": [b"Host: www.wild.test:0"],
    "port_not_a_number": [b"Host: www.wild.test:http"],
    "port_empty": [b"Host: www.wild.test:"],
    "space_inside": [b"Host: www.wild .test"],
    "userinfo": [b"Host: user@www.wild.test"],
    "two_hosts_same": [b"Host: www.wild.test", b"Host: www.wild.test"],
    "two_hosts_different": [b"Host: www.wild.test", b"Host: a.wild.test"],
}


@pytest.mark.parametrize("lines", BAD_HOSTS.values(), ids=BAD_HOSTS.keys())
def test_a_bad_host_is_answered_400_and_not_routed(routing: Routing, lines: list[bytes]) -> None:
    """sōzu ``test_h1_multiple_host_headers``, ``test_h1_host_port_overflow_not_routed``,
    ``test_h1_host_port_zero_not_routed``: 400, the connection closed, no backend reached."""
    before = routing.forwarded_requests()
    with HttpConnection(routing.port) as connection:
        connection.send(b"GET / HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n")
        answer = connection.read_answer()
        assert answer.raw_head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"<h1>400 Bad Request</h1>" in answer.body
        assert connection.is_closed(timeout=3)
    # the next, valid request is served: it is the only one the backends saw
    assert routing.route("www.wild.test") == "exact"
    assert routing.forwarded_requests() == before + 1


def test_host_letter_case_port_and_trailing_dot_do_not_change_the_route(routing: Routing) -> None:
    assert routing.route("WWW.Wild.TEST") == "exact"
    assert routing.route("A.WILD.TEST") == "wild"
    assert routing.route("PATHS.test", "/api/v2/x") == "apiv2"
    assert routing.route("www.wild.test:8080") == "exact"
    assert routing.route("a.wild.test:1") == "wild"
    assert routing.route("www.wild.test.") == "exact"
    assert routing.route("www.wild.test.:443") == "exact"


def test_idna_hostname_rule_matches_its_ascii_form(routing: Routing) -> None:
    assert routing.route("xn--bcher-kva.test") == "idna"


def test_absolute_form_target_is_routed_by_its_authority(routing: Routing) -> None:
    """RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host; the backend
    receives the origin form."""
    backend = routing.backends["exact"]
    with HttpConnection(routing.port) as connection:
        connection.send(b"GET http://www.wild.test/abs?q=1 HTTP/1.1\r\nHost: www.wild.test\r\n\r\n")
        assert answered_by(connection.read_answer()) == "exact"
        connection.send(b"GET http://www.wild.test:80/other HTTP/1.1\r\nHost: paths.test\r\n\r\n")
        assert answered_by(connection.read_answer()) == "exact"
    first, second = backend.requests[-2:]
    assert first.head.startswith(b"GET /abs?q=1 HTTP/1.1\r\n")
    assert first.header_values("host") == ["www.wild.test"]
    assert second.head.startswith(b"GET /other HTTP/1.1\r\n")
    assert second.header_values("host") == ["www.wild.test:80"]


def test_the_curl_client_is_routed_like_the_raw_client(routing: Routing) -> None:
    """The same routes through a real third-party client (curl when installed, else aiohttp)."""
    results = {
        (host, target): fetch_with_a_real_client(routing.port, host, target)
        for host, target in (
            ("www.wild.test", "/"),
            ("paths.test", "/api/v2/z"),
            ("unknown.test", "/"),
        )
    }
    assert results == {
        ("www.wild.test", "/"): (200, "exact"),
        ("paths.test", "/api/v2/z"): (200, "apiv2"),
        ("unknown.test", "/"): (404, None),
    }
    assert get(routing.port, "/", host="a.wild.test").body == b"wild"


def fetch_with_a_real_client(port: int, host: str, target: str) -> tuple[int, str | None]:
    """(status, body when 200) fetched by curl, or by aiohttp where curl is missing."""
    curl = shutil.which("curl")
    url = f"http://127.0.0.1:{port}{target}"
    if curl is not None:
        result = subprocess.run(
            [
                curl,
                "-sS",
                "--max-time",
                "10",
                "-H",
                f"Host: {host}",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                url,
            ],
            capture_output=True,
            timeout=20,
            check=True,
        )
        body, _, status = result.stdout.rpartition(b"\n")
    else:

        async def fetch() -> tuple[bytes, bytes]:
            timeout = aiohttp.ClientTimeout(total=10)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, headers={"Host": host}) as response,
            ):
                return await response.read(), str(response.status).encode()

        body, status = asyncio.run(fetch())
    code = int(status)
    return code, body.decode() if code == 200 else None
