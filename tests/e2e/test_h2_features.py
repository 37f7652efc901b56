"""End-to-end HTTP/2: the features HTTP/1.1 requests have, over h2 streams (sōzu
``test_redirect_permanent_h2_skips_backend``, ``test_basic_auth_h2_h1``,
``test_response_header_inject_h2_h1``, ``test_h2_custom_error_page_rendering``,
``test_h2_error_response_no_backend`` and the ``_h2_h1`` cells of the feature matrix):
sticky sessions, connection retries, the proxy's answers and templates, redirects, basic
authentication, header edits and host/path rewrites.

Names served (all under the certificate of ``app.example``, ``*.wild.example``): cluster
``app`` for ``app.example`` plus the frontends of :data:`FRONTENDS`; ``sticky`` (two
backends, ``sticky_session``), ``retry`` (a dead backend, then a live one), ``down`` (only a
dead backend, a 503 template).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import configs
from support.backends import Answer, Handler, HttpBackend, Received, wait_for
from support.daemon import free_port
from support.h2client import H2Client, StreamState
from support.h2proxy import HOST, H2Proxy, h2_proxy

from sozu_config import QueryMetrics
from sozu_config.responses import MetricsContent

pytestmark = pytest.mark.e2e

PASSWORD_HASH = hashlib.sha256(b"secret").hexdigest()
TEMPLATE_503 = """HTTP/1.1 503 Service Unavailable
Cache-Control: no-cache
Connection: close
X-Template: custom-503

<h1>Cluster %CLUSTER_ID is resting</h1>
"""
EDITS = [
    {"position": "request", "key": "X-Added", "value": "added"},
    {"position": "request", "key": "X-Remove-Me", "value": ""},
    {"position": "response", "key": "X-Response-Added", "value": "r"},
    {"position": "response", "key": "Server", "value": ""},
    {"position": "both", "key": "X-Both", "value": "b"},
]
FRONTENDS = [
    {"hostname": "edits.wild.example", "headers": EDITS},
    {"hostname": "rewrite.wild.example", "rewrite_host": "backend.internal",
     "rewrite_path": "/internal"},
    {"hostname": "moved.wild.example", "redirect": "permanent"},
    {"hostname": "found.wild.example", "redirect": "found"},
    {"hostname": "auth.wild.example", "required_auth": True},
]  # fmt: skip


def named(name: str) -> Handler:
    def handle(request: Received) -> Answer:
        return Answer(
            headers=[("Server", "backend/1.0"), ("X-Backend", name)],
            body=f"{name} {request.target}".encode(),
        )

    return handle


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[HttpBackend, HttpBackend]]:
    with HttpBackend("one", named("one")) as one, HttpBackend("two", named("two")) as two:
        yield one, two


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, backends: tuple[HttpBackend, HttpBackend]
) -> Iterator[H2Proxy]:
    directory = tmp_path_factory.mktemp("h2-features")
    template = directory / "503.http"
    template.write_text(TEMPLATE_503)
    one, two = backends
    dead = f"127.0.0.1:{free_port()}"

    def clusters(ports: dict[str, int], live: str) -> list[configs.ClusterTable]:
        port = ports["main"]
        return [
            configs.http_cluster(
                "sticky",
                port,
                "sticky.wild.example",
                [
                    configs.backend(one.address, sticky_id="s-one"),
                    configs.backend(two.address, sticky_id="s-two"),
                ],
                sticky_session=True,
            ),
            configs.http_cluster("retry", port, "retry.wild.example", [dead, live, dead]),
            configs.http_cluster(
                "down", port, "down.wild.example", [dead], answers={"503": f"file://{template}"}
            ),
        ]

    with h2_proxy(
        directory,
        named("app"),
        frontends=FRONTENDS,
        extra=clusters,
        cluster_settings={
            "authorized_hashes": [f"admin:{PASSWORD_HASH}"],
            "www_authenticate": "staff",
        },
    ) as proxy:
        yield proxy


def h2_get(proxy: H2Proxy, host: str, path: str = "/", **kwargs: object) -> StreamState:
    with H2Client(proxy.port) as client:
        return client.get(path, authority=host, **kwargs)


def balance_cookie(state: StreamState) -> str | None:
    for name, value in state.headers:
        if name == b"set-cookie" and value.startswith(b"SOZUBALANCEID="):
            return value.decode()
    return None


# --------------------------------------------------------------------------- balancing


def test_sticky_sessions_over_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_stick`` over HTTP/2: the first answer sets ``SOZUBALANCEID`` to the id of
    the backend that answered; the cookie (among other cookie fields, which HTTP/2 splits)
    brings each stream of a connection back to it, and names the other backend as well."""
    first = h2_get(proxy, "sticky.wild.example", "/first")
    backend = first.header("x-backend")
    assert backend in ("one", "two")
    assert balance_cookie(first) == f"SOZUBALANCEID=s-{backend}; Path=/"
    with H2Client(proxy.port) as client:
        for target, sticky in (("one", "s-one"), ("two", "s-two")):
            crumbs = [("cookie", "a=1"), ("cookie", f"SOZUBALANCEID={sticky}"), ("cookie", "b=2")]
            for n in range(4):
                state = client.get(f"/stick/{n}", authority="sticky.wild.example", headers=crumbs)
                assert (state.status, state.header("x-backend")) == (200, target)
                assert balance_cookie(state) is None  # already the right one


def test_connection_retries_over_h2(proxy: H2Proxy) -> None:
    """A stream whose backend refuses the connection is retried on the next backend: every
    stream is answered by the live one."""
    with H2Client(proxy.port) as client:
        streams = [client.request(f"/retry/{n}", authority="retry.wild.example") for n in range(9)]
        for n, stream in enumerate(streams):
            state = client.response(stream, timeout=15)
            assert (state.status, bytes(state.body)) == (200, f"app /retry/{n}".encode())


# --------------------------------------------------------------------------- answers


def test_custom_503_template_over_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_custom_error_page_rendering``, ``test_h2_error_response_no_backend``:
    the cluster's template, its variables filled, as an h2 answer without ``Connection``."""
    state = h2_get(proxy, "down.wild.example", "/x")
    assert state.status == 503
    assert state.header("x-template") == "custom-503"
    assert state.header("connection") is None
    assert bytes(state.body) == b"<h1>Cluster down is resting</h1>\n"  # ended by END_STREAM


def test_failed_connections_leave_the_gauges_at_zero(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_dual_backend_failure_no_gauge_underflow``,
    ``e2e_session_router_connect_failure_no_leak``: streams whose every backend fails (503)
    and streams retried past a dead one leave no active stream and no backend connection
    counted."""
    with H2Client(proxy.port) as client:
        streams = [client.request(f"/down/{n}", authority="down.wild.example") for n in range(5)]
        streams += [client.request(f"/retry/{n}", authority="retry.wild.example") for n in range(5)]
        statuses = [client.response(stream, timeout=15).status for stream in streams]
    assert statuses == [503] * 5 + [200] * 5
    assert wait_for(lambda: proxy.proxying()["http2.active_streams"] == 0)
    response = proxy.daemon.send(QueryMetrics(cluster_ids=["down"]))
    assert isinstance(response.content, MetricsContent)
    backends = response.content.clusters["down"]["backends"]
    assert backends  # the dead backend is counted
    for gauges in backends.values():
        assert gauges["backend.connections"] == 0, gauges
        assert gauges["http.active_requests"] == 0, gauges


def test_default_answer_ends_only_its_stream(proxy: H2Proxy) -> None:
    """sōzu ``test_h2_default_answer_terminates_stream``: a 404 answer (whose HTTP/1.1 form
    closes the connection) ends its stream; the connection serves the next."""
    with H2Client(proxy.port) as client:
        missing = client.get("/nothing", authority="nobody.wild.example")
        assert missing.status == 404 and missing.ended
        assert re.search(rb"404", bytes(missing.body))
        assert client.get("/next").status == 200
        assert client.goaway is None


def test_redirects_over_h2_skip_the_backend(proxy: H2Proxy) -> None:
    """sōzu ``test_redirect_permanent_h2_skips_backend``: 301 and 302 with their Location,
    nothing sent to a backend."""
    before = len(proxy.backend.requests)
    moved = h2_get(proxy, "moved.wild.example", "/page?q=1")
    assert moved.status == 301
    assert moved.header("location") == "https://moved.wild.example/page?q=1"
    found = h2_get(proxy, "found.wild.example", "/p")
    assert found.status == 302 and found.header("location") == "https://found.wild.example/p"
    assert len(proxy.backend.requests) == before


def test_basic_auth_over_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_basic_auth_h2_h1``: 401 with ``WWW-Authenticate`` without or with wrong
    credentials, the backend's answer with the right ones."""

    def auth(user: str, password: str) -> list[tuple[str, str]]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return [("authorization", f"Basic {token}")]

    none = h2_get(proxy, "auth.wild.example", "/a")
    assert (none.status, none.header("www-authenticate")) == (401, 'Basic realm="staff"')
    assert h2_get(proxy, "auth.wild.example", "/a", headers=auth("admin", "nope")).status == 401
    good = h2_get(proxy, "auth.wild.example", "/a", headers=auth("admin", "secret"))
    assert (good.status, bytes(good.body)) == (200, b"app /a")


# --------------------------------------------------------------------------- headers


def test_header_edits_over_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_request_header_inject_h2_h2``, ``test_response_header_inject_h2_h1``: the
    frontend's edits apply both ways on an h2 stream."""
    state = h2_get(
        proxy, "edits.wild.example", "/edited", headers=[("x-remove-me", "s"), ("x-client", "k")]
    )
    assert state.status == 200
    received = next(r for r in proxy.backend.requests if r.target == "/edited")
    assert received.header_values("x-added") == ["added"]
    assert received.header_values("x-both") == ["b"]
    assert received.header("x-remove-me") is None
    assert received.header_values("x-client") == ["k"]
    assert state.header("x-response-added") == "r" and state.header("x-both") == "b"
    assert state.header("server") is None
    assert h2_get(proxy, HOST, "/plain").header("server") == "backend/1.0"


def test_rewrites_over_h2(proxy: H2Proxy) -> None:
    """sōzu ``test_rewrite_path_h1_h2`` (the h2 frontend side): the backend gets the rewritten
    Host and path, the original host in X-Forwarded-Host."""
    assert h2_get(proxy, "rewrite.wild.example", "/public/page").status == 200
    received = next(r for r in proxy.backend.requests if r.target == "/internal")
    assert received.header_values("host") == ["backend.internal"]
    assert received.header_values("x-forwarded-host") == ["rewrite.wild.example"]


def test_feature_answers_match_http11(proxy: H2Proxy, tmp_path: Path) -> None:
    """The same requests with curl over HTTP/1.1 and HTTP/2: same status and Location."""
    cases = [
        ("moved.wild.example", "/m"),
        ("down.wild.example", "/d"),
        ("retry.wild.example", "/r"),
    ]
    for host, path in cases:
        one = proxy.curl(path, host=host, http2=False)
        two = proxy.curl(path, host=host)
        assert (one.version, two.version) == ("1.1", "2")
        assert (two.status, two.header("location")) == (one.status, one.header("location"))
