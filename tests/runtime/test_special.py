"""What special routes answer by themselves (worker/special.py), without sockets."""

from __future__ import annotations

import base64
import hashlib

import pytest

from sozu_config.models import Cluster, HttpFrontend, RedirectPolicy, RedirectScheme
from sozu_runtime.worker import h1
from sozu_runtime.worker.routes import ClusterRuntime, Route
from sozu_runtime.worker.special import redirect_location, special_answer

DIGEST = hashlib.sha256(b"secret").hexdigest()


def route(cluster: Cluster | None = None, **frontend: object) -> Route:
    runtime = ClusterRuntime(cluster or Cluster(cluster_id="app"))
    spec = HttpFrontend(
        address="127.0.0.1:80", hostname="example.com", cluster_id="app", **frontend
    )  # type: ignore[arg-type]
    return Route(spec, runtime)


def head(extra: bytes = b"") -> h1.RequestHead:
    parsed = h1.parse_request_head(
        b"GET /a?b HTTP/1.1\r\nHost: example.com\r\n" + extra + b"\r\n", 4096
    )
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        (RedirectPolicy.PERMANENT, 301),
        (RedirectPolicy.FOUND, 302),
        (RedirectPolicy.PERMANENT_REDIRECT, 308),
    ],
)
def test_redirects_keep_the_scheme_host_and_target(policy: RedirectPolicy, status: int) -> None:
    answer = special_answer(route(redirect=policy), b"example.com", head(), tls=False)
    assert answer == (status, "http://example.com/a?b")
    answer = special_answer(route(redirect=policy), b"example.com", head(), tls=True)
    assert answer == (status, "https://example.com/a?b")


def test_redirects_apply_the_frontend_rewrites_and_the_cluster_https_port() -> None:
    rewritten = route(
        redirect=RedirectPolicy.FOUND,
        redirect_scheme=RedirectScheme.USE_HTTPS,
        rewrite_host="www.example.com",
        rewrite_path="/b",
    )
    assert special_answer(rewritten, b"example.com", head(), tls=False) == (
        302,
        "https://www.example.com/b",
    )
    port = route(
        Cluster(cluster_id="app", https_redirect_port=8443),
        redirect=RedirectPolicy.FOUND,
        redirect_scheme=RedirectScheme.USE_HTTPS,
    )
    assert special_answer(port, b"example.com", head(), tls=False) == (
        302,
        "https://example.com:8443/a?b",
    )


def test_unauthorized_and_basic_authentication() -> None:
    assert special_answer(route(redirect=RedirectPolicy.UNAUTHORIZED), b"h", head(), False) == (
        401,
        "",
    )
    guarded = route(
        Cluster(cluster_id="app", authorized_hashes=[f"ann:{DIGEST}"]), required_auth=True
    )
    assert special_answer(guarded, b"h", head(), False) == (401, "")
    wrong = b"Authorization: Basic " + base64.b64encode(b"ann:nope") + b"\r\n"
    assert special_answer(guarded, b"h", head(wrong), False) == (401, "")
    good = b"Authorization: Basic " + base64.b64encode(b"ann:secret") + b"\r\n"
    assert special_answer(guarded, b"h", head(good), False) is None


def test_redirect_locations_leave_default_ports_out() -> None:
    assert redirect_location("https", b"a", 443, b"/") == "https://a/"
    assert redirect_location("http", b"a", 80, b"/") == "http://a/"
    assert redirect_location("http", b"a", 8080, b"/x") == "http://a:8080/x"
    assert redirect_location("https", b"[::1]", None, b"/") == "https://[::1]/"
