"""End-to-end answers the proxy writes itself (reference §E.8, §E.9): the built-in pages, each
produced for real; custom templates per listener and per cluster with their variables
rendered; redirects (cluster ``https_redirect``, frontend ``redirect``), deny rules and basic
authentication — none of which ever reaches a backend.

One daemon (one worker) with two listeners serves the module: ``defaults`` (built-in answers,
1 s request and back timeouts) and ``custom`` (custom 404 and 301 templates).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.clients import HttpAnswer, HttpConnection
from support.daemon import DaemonProcess, free_port

from sozu_config import AddHttpFrontend, HttpFrontend, RedirectPolicy

pytestmark = pytest.mark.e2e

REQUEST_ID = re.compile(r"[0-9A-Z]{26}")
PASSWORD_HASH = hashlib.sha256(b"secret").hexdigest()

CUSTOM_503 = """HTTP/1.1 503 Service Unavailable
Cache-Control: no-cache
Connection: close
Sozu-Id: %REQUEST_ID

<h1>Cluster %CLUSTER_ID is resting</h1>
<p>request %REQUEST_ID for %ROUTE</p>
"""
CUSTOM_301 = """HTTP/1.1 301 Moved Permanently
Location: %REDIRECT_LOCATION
Connection: close
Content-Length: 0
X-Template: custom-301

"""


def backend_answer(request: Received) -> Answer:
    if request.target.startswith("/garbage"):
        return Answer(raw=b"definitely not HTTP\r\n\r\n")
    if request.target.startswith("/slow"):
        return Answer(body=b"too late", delay=3.0)
    return Answer(body=b"ok:" + request.target.encode())


@dataclass
class Answers:
    daemon: DaemonProcess
    defaults: int
    custom: int
    backend: HttpBackend  # every cluster with a live backend uses this one
    dead: str  # an address where nothing listens

    def ask(self, port: int, raw: bytes) -> tuple[HttpAnswer, bool]:
        """Send ``raw`` on a new connection: (answer, the proxy closed the connection)."""
        with HttpConnection(port) as connection:
            connection.send(raw)
            answer = connection.read_answer()
            return answer, connection.is_closed(timeout=3)

    def get(self, port: int, host: str, target: str = "/", headers: str = "") -> HttpAnswer:
        answer, _ = self.ask(
            port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()
        )
        return answer


def dead_address() -> str:
    """127.0.0.1:<port> where nothing listens (connections are refused at once)."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory, sozu_data: Path) -> Iterator[Answers]:
    directory = tmp_path_factory.mktemp("answers")
    defaults, custom = free_port(), free_port()
    template_503 = directory / "custom_503.http"
    template_503.write_text(CUSTOM_503)
    template_301 = directory / "custom_301.http"
    template_301.write_text(CUSTOM_301)
    custom_404 = sozu_data / "command__assets__custom_404.html"
    dead = dead_address()
    with HttpBackend("answers", backend_answer) as backend:
        a, c = f"127.0.0.1:{defaults}", f"127.0.0.1:{custom}"
        live = [configs.backend(backend.address)]
        down = [configs.backend(dead)]

        def on_both(hostname: str) -> list[dict[str, object]]:
            return [configs.frontend(a, hostname), configs.frontend(c, hostname)]

        # the redirect frontends are written as an array of tables, the file's other syntax
        redirects = f"""
[clusters.redirects]
protocol = "http"
backends = [{{ address = "{backend.address}" }}]

[[clusters.redirects.frontends]]
address = "{a}"
hostname = "permanent.test"
redirect = "permanent"

[[clusters.redirects.frontends]]
address = "{a}"
hostname = "permanent-https.test"
redirect = "permanent"
redirect_scheme = "USE_HTTPS"

[[clusters.redirects.frontends]]
address = "{a}"
hostname = "found.test"
redirect = "found"

[[clusters.redirects.frontends]]
address = "{a}"
hostname = "permanent-redirect.test"
redirect = "permanent_redirect"

[[clusters.redirects.frontends]]
address = "{a}"
hostname = "unauthorized.test"
redirect = "unauthorized"

[[clusters.redirects.frontends]]
address = "{a}"
hostname = "moved.test"
redirect = "permanent"
redirect_scheme = "USE_HTTPS"
rewrite_host = "new.test"
rewrite_port = 8443
"""
        config = configs.document(
            configs.http_listener(a, request_timeout=1, back_timeout=1),
            configs.http_listener(
                c, answers={"404": f"file://{custom_404}", "301": f"file://{template_301}"}
            ),
            configs.cluster("ok", frontends=[configs.frontend(a, "ok.test")], backends=live),
            configs.cluster("down", frontends=on_both("down.test"), backends=down),
            configs.cluster("empty", frontends=[configs.frontend(a, "empty.test")]),
            configs.cluster(
                "resting",
                frontends=on_both("resting.test"),
                backends=down,
                answers={"503": f"file://{template_503}"},
            ),
            configs.cluster(
                "secure", frontends=on_both("secure.test"), backends=live, https_redirect=True
            ),
            configs.cluster(
                "secure_port",
                frontends=[configs.frontend(a, "secureport.test")],
                backends=live,
                https_redirect=True,
                https_redirect_port=8443,
            ),
            redirects,
            configs.cluster(
                "auth",
                frontends=[configs.frontend(a, "auth.test", required_auth=True)],
                backends=live,
                authorized_hashes=[f"alice:{PASSWORD_HASH}"],
                www_authenticate="staff",
            ),
            worker_count=1,
        )
        with DaemonProcess(directory, config).start() as daemon:
            for frontend in (
                HttpFrontend(address=a, hostname="deny.test"),
                HttpFrontend(
                    address=a, hostname="clusterless.test", redirect=RedirectPolicy.PERMANENT
                ),
            ):
                response = daemon.send(AddHttpFrontend(frontend=frontend))
                assert response.ok, response.message
            yield Answers(daemon, defaults, custom, backend, dead)


def assert_builtin(
    answer: HttpAnswer, closed: bool, status: int, reason: str, *, with_id: bool = True
) -> None:
    """The built-in page for ``status``: status line, ``<h1>``, request id (when
    ``with_id``; see test_answers_to_unparsable_requests_carry_a_request_id), then close."""
    assert answer.raw_head.startswith(f"HTTP/1.1 {status} {reason}\r\n".encode()), answer.raw_head
    assert f"<h1>{status} {reason}</h1>".encode() in answer.body, answer.body
    if with_id:
        request_id = answer.header("sozu-id")
        assert request_id is not None and REQUEST_ID.fullmatch(request_id), answer.raw_head
    assert (answer.header("connection") or "").lower() == "close"
    assert closed, "the connection stayed open after a default answer"


# Requests answered before their head could be parsed, by the status they get.
UNPARSABLE = {
    "400": b"GARBAGE\r\n\r\n",
    "408": b"GET / HTTP/1.1\r\nHost: ok.test\r\n",
    "414": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: ok.test\r\n\r\n",
    "431": b"GET / HTTP/1.1\r\nHost: ok.test\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("raw", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_answers_to_unparsable_requests_carry_a_request_id(answers: Answers, raw: bytes) -> None:
    """Reference §E.9: every built-in answer has ``Sozu-Id: %REQUEST_ID``, and its JSON block
    the same id — also when the request could not be parsed (the id then names the exchange,
    for the logs)."""
    answer, _ = answers.ask(answers.defaults, raw)
    request_id = answer.header("sozu-id")
    assert request_id is not None and REQUEST_ID.fullmatch(request_id), answer.raw_head
    assert f'"request_id": "{request_id}"'.encode() in answer.body


def test_400_for_an_unparsable_request(answers: Answers) -> None:
    """sōzu ``test_http_behaviors`` (garbage request line → 400)."""
    answer, closed = answers.ask(answers.defaults, UNPARSABLE["400"])
    assert_builtin(answer, closed, 400, "Bad Request", with_id=False)


def test_404_when_no_frontend_matches(answers: Answers) -> None:
    """sōzu ``test_builtin_404_default_answer_closes_connection``."""
    answer, closed = answers.ask(answers.defaults, b"GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n")
    assert_builtin(answer, closed, 404, "Not Found")


def test_408_when_the_head_does_not_arrive_in_time(answers: Answers) -> None:
    started = time.monotonic()
    answer, closed = answers.ask(answers.defaults, UNPARSABLE["408"])
    elapsed = time.monotonic() - started
    assert_builtin(answer, closed, 408, "Request Timeout", with_id=False)
    assert 0.7 < elapsed < 3.5, f"408 after {elapsed:.2f} s with request_timeout = 1"


def test_431_for_an_oversized_head_in_place_of_413(answers: Answers) -> None:
    """The proxy answers an oversized request head with 431 (RFC 6585), where sōzu's legacy
    path said 413; no 413 is produced for request heads."""
    answer, closed = answers.ask(answers.defaults, UNPARSABLE["431"])
    assert_builtin(answer, closed, 431, "Request Header Fields Too Large", with_id=False)


def test_414_for_an_oversized_request_line(answers: Answers) -> None:
    answer, closed = answers.ask(answers.defaults, UNPARSABLE["414"])
    assert_builtin(answer, closed, 414, "URI Too Long", with_id=False)


def test_502_for_an_unparsable_backend_answer(answers: Answers) -> None:
    answer, closed = answers.ask(
        answers.defaults, b"GET /garbage HTTP/1.1\r\nHost: ok.test\r\n\r\n"
    )
    assert_builtin(answer, closed, 502, "Bad Gateway")
    assert b'"cluster_id": "ok"' in answer.body


@pytest.mark.parametrize("host", ["down.test", "empty.test"])
def test_503_when_no_backend_can_answer(answers: Answers, host: str) -> None:
    """sōzu ``test_http_behaviors`` (a frontend without backends → 503), and a cluster whose
    only backend refuses connections."""
    started = time.monotonic()
    answer, closed = answers.ask(
        answers.defaults, f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    assert_builtin(answer, closed, 503, "Service Unavailable")
    cluster_id = host.removesuffix(".test")
    assert f'"cluster_id": "{cluster_id}"'.encode() in answer.body
    assert time.monotonic() - started < 2


def test_504_when_the_backend_is_silent(answers: Answers) -> None:
    started = time.monotonic()
    answer, closed = answers.ask(answers.defaults, b"GET /slow HTTP/1.1\r\nHost: ok.test\r\n\r\n")
    elapsed = time.monotonic() - started
    assert_builtin(answer, closed, 504, "Gateway Timeout")
    assert 0.7 < elapsed < 2.9, f"504 after {elapsed:.2f} s with back_timeout = 1"


def test_builtin_json_block_names_route_and_request_id(answers: Answers) -> None:
    answer = answers.get(answers.defaults, "down.test", "/some/path?q=1")
    assert answer.status == 503
    request_id = answer.header("sozu-id")
    assert f'"request_id": "{request_id}"'.encode() in answer.body
    assert b'"route": "GET down.test/some/path?q=1"' in answer.body


def test_custom_listener_template_for_404(answers: Answers) -> None:
    """A listener ``answers = { "404" = "file://..." }`` (sōzu's sample custom_404.html, which
    spells the request id ``%SOZU_ID``)."""
    answer, closed = answers.ask(answers.custom, b"GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n")
    assert answer.raw_head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    request_id = answer.header("sozu-id")
    assert request_id is not None and REQUEST_ID.fullmatch(request_id)
    assert b"<h1>My own 404 error page</h1>" in answer.body
    assert f"Your request {request_id} found no frontend".encode() in answer.body
    assert closed
    # the other listener keeps the built-in page
    assert b"My own" not in answers.get(answers.defaults, "nobody.test").body


def test_custom_cluster_template_for_503_renders_its_variables(answers: Answers) -> None:
    """sōzu ``test_per_cluster_503_template``: ``%REQUEST_ID`` is the request id (the Sozu-Id
    header), ``%CLUSTER_ID`` the cluster, ``%ROUTE`` the method, host and target."""
    for port in (answers.defaults, answers.custom):
        answer, closed = answers.ask(
            port, b"GET /some/path?q=1 HTTP/1.1\r\nHost: resting.test\r\n\r\n"
        )
        assert answer.raw_head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        request_id = answer.header("sozu-id")
        assert request_id is not None and REQUEST_ID.fullmatch(request_id)
        assert (
            answer.body
            == (
                f"<h1>Cluster resting is resting</h1>\n"
                f"<p>request {request_id} for GET resting.test/some/path?q=1</p>\n"
            ).encode()
        )
        assert closed
    # another cluster without a template still gets the built-in 503
    plain = answers.get(answers.custom, "down.test")
    assert plain.status == 503 and b"<h1>503 Service Unavailable</h1>" in plain.body


def test_https_redirect_of_a_cluster(answers: Answers) -> None:
    """sōzu ``test_https_redirect``: ``GET /redirected?true`` → 301 to
    ``https://<host>/redirected?true`` (built-in page and custom 301 template with
    ``%REDIRECT_LOCATION``); the port of the Host is dropped; the backend is not contacted."""
    before = len(answers.backend.requests)
    answer, closed = answers.ask(
        answers.defaults, b"GET /redirected?true HTTP/1.1\r\nHost: secure.test\r\n\r\n"
    )
    assert answer.raw_head.startswith(b"HTTP/1.1 301 Moved Permanently\r\n")
    assert answer.header("location") == "https://secure.test/redirected?true"
    assert closed
    with_port = answers.get(answers.defaults, "secure.test:8080", "/p")
    assert with_port.header("location") == "https://secure.test/p"
    custom, _ = answers.ask(
        answers.custom, b"GET /redirected?true HTTP/1.1\r\nHost: secure.test\r\n\r\n"
    )
    assert custom.status == 301 and custom.header("x-template") == "custom-301"
    assert custom.header("location") == "https://secure.test/redirected?true"
    assert len(answers.backend.requests) == before


def test_https_redirect_port(answers: Answers) -> None:
    answer = answers.get(answers.defaults, "secureport.test", "/x?y=1")
    assert answer.status == 301
    assert answer.header("location") == "https://secureport.test:8443/x?y=1"


REDIRECTS = {
    # sōzu test_redirect_permanent_h1_skips_backend
    "permanent": ("permanent.test", 301, "Moved Permanently", "http://permanent.test/a/b?c=d"),
    "permanent_https": (
        "permanent-https.test",
        301,
        "Moved Permanently",
        "https://permanent-https.test/a/b?c=d",
    ),
    # sōzu test_redirect_found_h1_emits_302
    "found": ("found.test", 302, "Found", "http://found.test/a/b?c=d"),
    # sōzu test_redirect_permanent_redirect_h1_emits_308
    "permanent_redirect": (
        "permanent-redirect.test",
        308,
        "Permanent Redirect",
        "http://permanent-redirect.test/a/b?c=d",
    ),
    # sōzu test_redirect_permanent_uses_rewrite_host_and_template (Location part)
    "rewritten": ("moved.test", 301, "Moved Permanently", "https://new.test:8443/a/b?c=d"),
}


@pytest.mark.parametrize("case", REDIRECTS.values(), ids=REDIRECTS.keys())
def test_frontend_redirects_skip_the_backend(
    answers: Answers, case: tuple[str, int, str, str]
) -> None:
    """sōzu ``test_redirect_permanent_h1_skips_backend``, ``test_redirect_found_h1_emits_302``,
    ``test_redirect_permanent_redirect_h1_emits_308`` and the Location part of
    ``test_redirect_permanent_uses_rewrite_host_and_template``."""
    host, status, reason, location = case
    before = len(answers.backend.requests)
    answer, closed = answers.ask(
        answers.defaults, f"GET /a/b?c=d HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    assert answer.raw_head.startswith(f"HTTP/1.1 {status} {reason}\r\n".encode())
    assert answer.header("location") == location
    assert answer.header("sozu-id")
    assert closed
    assert len(answers.backend.requests) == before


def test_clusterless_permanent_redirect(answers: Answers) -> None:
    """sōzu ``test_clusterless_permanent_redirect_emits_301``: a redirect frontend without a
    cluster answers 301, not 401."""
    answer = answers.get(answers.defaults, "clusterless.test", "/here")
    assert answer.status == 301
    assert answer.header("location") == "http://clusterless.test/here"


@pytest.mark.parametrize("host", ["unauthorized.test", "deny.test"])
def test_unauthorized_redirect_and_deny_rule_answer_401(answers: Answers, host: str) -> None:
    """sōzu ``test_redirect_unauthorized_h1_emits_401``, and a frontend without a cluster (a
    deny rule, added over the command socket)."""
    before = len(answers.backend.requests)
    answer, closed = answers.ask(
        answers.defaults, f"GET /secret HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    assert_builtin(answer, closed, 401, "Unauthorized")
    assert len(answers.backend.requests) == before


def basic(credentials: bytes) -> str:
    return f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        basic(b"alice:wrong"),
        basic(b"bob:secret"),
        basic(b"alice"),
        "Authorization: Basic !!!not-base64!!!\r\n",
        "Authorization: Bearer alice:secret\r\n",
    ],
    ids=["none", "wrong_password", "unknown_user", "no_colon", "not_base64", "bearer"],
)
def test_required_auth_refuses_missing_or_wrong_credentials(
    answers: Answers, authorization: str
) -> None:
    """sōzu ``test_basic_auth_h1_h1`` (no header → 401, wrong credentials → 401)."""
    before = len(answers.backend.requests)
    answer, closed = answers.ask(
        answers.defaults,
        f"GET /private HTTP/1.1\r\nHost: auth.test\r\n{authorization}\r\n".encode(),
    )
    assert_builtin(answer, closed, 401, "Unauthorized")
    assert answer.header("www-authenticate") == 'Basic realm="staff"'
    assert len(answers.backend.requests) == before


def test_required_auth_lets_the_right_credentials_through(answers: Answers) -> None:
    """sōzu ``test_basic_auth_h1_h1`` (good credentials → 200)."""
    with HttpConnection(answers.defaults) as connection:
        for index in range(2):
            answer = connection.request(
                "GET",
                f"/private/{index}",
                host="auth.test",
                headers=[("Authorization", "Basic " + base64.b64encode(b"alice:secret").decode())],
            )
            assert answer.status == 200 and answer.body == f"ok:/private/{index}".encode()
