"""Tests of answer templates: parsing, rendering, built-in defaults and per-cluster lookup.

Rendered answers are checked by parsing them back as HTTP responses with httptools (llhttp),
the parser the worker itself uses, plus a by-hand split of head and body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from sozu_runtime.worker.answers import (
    DEFAULT_STATUSES,
    VARIABLES,
    Answers,
    AnswerTemplate,
    TemplateError,
    default_template,
)

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "sozu-data"
SAMPLE_404 = (SAMPLES / "command__assets__custom_404.html").read_bytes()
SAMPLE_503 = (SAMPLES / "command__assets__custom_503.html").read_bytes()

REASONS = {
    301: "Moved Permanently",
    302: "Found",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}


@dataclass
class Response:
    """A response as httptools saw it, plus the raw bytes after the head."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool
    keep_alive: bool
    tail: bytes = field(default=b"")

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def value(self, name: bytes) -> bytes:
        (only,) = self.values(name)
        return only


class _Collector:
    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Asked here: llhttp resets its keep-alive answer once the message is complete.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def parse_response(raw: bytes) -> Response:
    """Parse ``raw`` as exactly one HTTP/1.1 response; fail the test if it is not one."""
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    collector.parser = parser
    parser.feed_data(raw)
    assert collector.headers_done, "the head was not complete"
    head_end = raw.index(b"\r\n\r\n") + 4
    return Response(
        status=parser.get_status_code(),
        reason=collector.reason,
        headers=collector.headers,
        body=collector.body,
        complete=collector.complete,
        keep_alive=collector.keep_alive,
        tail=raw[head_end:],
    )


def parse_framed(raw: bytes) -> Response:
    """Parse a response framed by Content-Length and check the body is exactly that long."""
    response = parse_response(raw)
    length = int(response.value(b"Content-Length"))
    assert response.complete, "Content-Length did not frame a complete message"
    assert len(response.body) == length
    # Nothing after the announced body: the tail is the body, byte for byte.
    assert response.tail == response.body
    return response


def pre_json(body: bytes) -> dict[str, object]:
    """The JSON object inside the first <pre> block of a built-in body."""
    match = re.search(rb"<pre>(.*?)</pre>", body, re.DOTALL)
    assert match is not None, body
    loaded = json.loads(match[1].decode("utf-8"))
    assert isinstance(loaded, dict)
    return loaded


# --- the sample templates ---------------------------------------------------------------------


def test_sample_404_parses_and_substitutes_the_sozu_id_alias() -> None:
    template = AnswerTemplate.parse(SAMPLE_404, status=404, name="custom_404")

    assert template.status == 404
    assert template.name == "custom_404"
    assert template.closes_connection is True
    raw = template.render({"REQUEST_ID": "01HXYZREQ"})
    response = parse_response(raw)
    assert response.status == 404
    assert response.reason == b"Not Found"
    assert response.headers == [
        (b"Cache-Control", b"no-cache"),
        (b"Connection", b"close"),
        (b"Sozu-Id", b"01HXYZREQ"),
    ]
    # No Content-Length in the template: none is added, the body runs to the end, CRLFs kept.
    assert response.tail == (
        b"<h1>My own 404 error page</h1>\r\n"
        b"<p>Your request 01HXYZREQ found no frontend and cannot be redirected.</p>"
    )
    assert response.keep_alive is False


def test_sample_503_parses_and_keeps_unknown_percent_names_literal() -> None:
    template = AnswerTemplate.parse(SAMPLE_503.decode("utf-8"), status=503, name="custom_503")

    assert template.status == 503
    assert template.closes_connection is True
    raw = template.render({"REQUEST_ID": "req-7", "MESSAGE": "unused"})
    response = parse_response(raw)
    assert response.status == 503
    assert response.values(b"Sozu-Id") == [b"req-7"]
    # "%Content-Length" is a (strange but legal) field name, not Content-Length.
    assert response.values(b"%Content-Length") == [b"%CONTENT_LENGTH"]
    assert response.values(b"Content-Length") == []
    assert b"could not redirect request req-7." in response.tail
    assert b"%DETAILS" in response.tail
    assert b"%SOZU_ID" not in raw


def test_status_mismatch_is_an_error_naming_the_template() -> None:
    with pytest.raises(TemplateError) as caught:
        AnswerTemplate.parse(SAMPLE_404, status=503, name="cluster api 503")

    message = str(caught.value)
    assert "cluster api 503" in message
    assert "404" in message
    assert "503" in message
    assert caught.value.template_name == "cluster api 503"


def test_status_comes_from_the_status_line_when_not_given() -> None:
    template = AnswerTemplate.parse(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n")

    assert template.status == 418
    assert parse_framed(template.render({})).status == 418


# --- malformed templates ----------------------------------------------------------------------


def test_chunked_template_is_refused() -> None:
    text = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Transfer-Encoding: chunked\r\n"
        "\r\n"
        "5\r\nhello\r\n0\r\n\r\n"
    )

    with pytest.raises(TemplateError, match="chunked"):
        AnswerTemplate.parse(text, status=503, name="chunky")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("Cache-Control: no-cache\r\n\r\nbody", "status line", id="no-status-line"),
        pytest.param("\r\nHTTP/1.1 404 Not Found\r\n\r\n", "no status line", id="blank-first"),
        pytest.param("GET / HTTP/1.1\r\nHost: a\r\n\r\n", "status line", id="a-request"),
        pytest.param("HTTP/2 404 Not Found\r\n\r\n", "status line", id="http2-version"),
        pytest.param("HTTP/1.1 4040 Not Found\r\n\r\n", "status line", id="four-digit-code"),
        pytest.param("HTTP/1.1 100 Continue\r\n\r\n", "cannot be an answer", id="interim-status"),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\nno colon on this line\r\n\r\n",
            "not a header field",
            id="line-without-colon",
        ),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\nBad Name: x\r\n\r\n",
            "invalid field name",
            id="space-in-name",
        ),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\n: empty name\r\n\r\n",
            "invalid field name",
            id="empty-name",
        ),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\nX-A: one\r\n  folded\r\n\r\n",
            "folded",
            id="folded-line",
        ),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\nX-A: one\rtwo\r\n\r\n",
            "control characters",
            id="bare-cr-in-value",
        ),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\nConnection: close\r\n",
            "empty line",
            id="missing-blank-line",
        ),
        pytest.param("HTTP/1.1 404 Not Found", "empty line", id="single-unterminated-line"),
        pytest.param(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "several Content-Length",
            id="two-content-lengths",
        ),
    ],
)
def test_malformed_templates_are_refused(text: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        AnswerTemplate.parse(text, name="listener 404")

    assert problem in caught.value.reason
    assert "listener 404" in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        "X-Request: req-%REQUEST_ID",
        "Location: %REDIRECT_LOCATION/extra",
        "Location: %REDIRECT_LOCATIONS",
        "Retry-After: in %RETRY_AFTER seconds",
        "X-Old: id=%SOZU_ID",
    ],
)
def test_variable_inside_a_longer_header_value_is_refused(line: str) -> None:
    text = f"HTTP/1.1 302 Found\r\n{line}\r\nContent-Length: 0\r\n\r\n"

    with pytest.raises(TemplateError, match="whole value"):
        AnswerTemplate.parse(text, status=302, name="redirect")


def test_variables_are_refused_in_status_line_header_names_and_connection() -> None:
    with pytest.raises(TemplateError, match="status line"):
        AnswerTemplate.parse("HTTP/1.1 404 %MESSAGE\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(TemplateError, match="header name"):
        AnswerTemplate.parse("HTTP/1.1 404 Not Found\r\nX-%ROUTE: 1\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(TemplateError, match="Connection"):
        AnswerTemplate.parse("HTTP/1.1 404 Not Found\r\nConnection: %MESSAGE\r\n\r\n")


def test_a_percent_sign_not_followed_by_a_variable_is_literal_text() -> None:
    template = AnswerTemplate.parse(
        "HTTP/1.1 200 OK\r\nX-Load: 100%\r\nContent-Length: 1\r\n\r\n100% %route %UNKNOWN %"
    )

    response = parse_framed(template.render({"ROUTE": "GET a/"}))
    assert response.value(b"X-Load") == b"100%"
    assert response.body == b"100% %route %UNKNOWN %"


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "route"),
    [
        ("", ""),
        ("short", "GET example.com/"),
        ("a much longer message " * 40, "POST api.example.com/v1/items?x=1"),
        ("multibyte: é 漢字 🚀", "GET xn--caf-dma.example/ü"),
    ],
)
def test_content_length_is_recomputed_after_substitution(message: str, route: str) -> None:
    template = AnswerTemplate.parse(
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Length: 12345\r\n"
        "\r\n"
        "<p>%MESSAGE</p><p>route %ROUTE, id %REQUEST_ID</p>",
        status=503,
    )

    raw = template.render({"MESSAGE": message, "ROUTE": route, "REQUEST_ID": "r1"})

    response = parse_framed(raw)
    expected = f"<p>{message}</p><p>route {route}, id r1</p>".encode()
    assert response.body == expected
    assert response.value(b"Content-Length") == str(len(expected)).encode()
    # A framed template without Connection: close keeps the client connection open.
    assert template.closes_connection is False
    assert response.keep_alive is True
    assert response.values(b"Connection") == []


def test_head_line_endings_are_normalised_and_the_body_is_kept() -> None:
    template = AnswerTemplate.parse(
        "HTTP/1.1 404 Not Found\nCache-Control: no-cache\r\nContent-Length: 0\n"
        "\nline one\nline two\r\n",
        status=404,
    )

    raw = template.render({})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head == b"HTTP/1.1 404 Not Found\r\nCache-Control: no-cache\r\nContent-Length: 19"
    assert body == b"line one\nline two\r\n"
    assert parse_framed(raw).body == body


def test_bytes_templates_and_missing_variables() -> None:
    template = AnswerTemplate.parse(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n[%CLUSTER_ID|%BACKEND_ID]",
        status=404,
    )

    assert parse_framed(template.render({})).body == b"[|]"
    assert parse_framed(template.render({"CLUSTER_ID": "c", "OTHER": "x"})).body == b"[c|]"


def test_empty_www_authenticate_drops_the_header() -> None:
    template = AnswerTemplate.parse(
        "HTTP/1.1 401 Unauthorized\r\n"
        "WWW-Authenticate: %WWW_AUTHENTICATE\r\n"
        "Retry-After: %RETRY_AFTER\r\n"
        "Content-Length: 0\r\n"
        "\r\n",
        status=401,
    )

    without = parse_framed(template.render({"WWW_AUTHENTICATE": ""}))
    assert without.values(b"WWW-Authenticate") == []
    assert without.values(b"Retry-After") == []
    with_realm = parse_framed(template.render({"WWW_AUTHENTICATE": 'Basic realm="api"'}))
    assert with_realm.values(b"WWW-Authenticate") == [b'Basic realm="api"']

    built_in = default_template(401)
    assert parse_framed(built_in.render({})).values(b"WWW-Authenticate") == []
    assert parse_framed(built_in.render({"WWW_AUTHENTICATE": "Bearer"})).values(
        b"WWW-Authenticate"
    ) == [b"Bearer"]


def test_retry_after_of_the_built_in_429() -> None:
    built_in = default_template(429)

    assert parse_framed(built_in.render({})).values(b"Retry-After") == []
    assert parse_framed(built_in.render({"RETRY_AFTER": "30"})).values(b"Retry-After") == [b"30"]


@pytest.mark.parametrize(
    "hostile",
    [
        "https://a.example/\r\nSet-Cookie: session=stolen",
        "https://a.example/\nSet-Cookie: session=stolen",
        "https://a.example/\rSet-Cookie: session=stolen",
        "https://a.example/\r\n\r\nSet-Cookie: session=stolen",
        "https://a.example/\x00\x0bSet-Cookie: session=stolen",
    ],
)
def test_crlf_injection_into_the_head_is_stripped(hostile: str) -> None:
    custom = AnswerTemplate.parse(
        "HTTP/1.1 302 Found\r\nLocation: %REDIRECT_LOCATION\r\nContent-Length: 0\r\n\r\n",
        status=302,
    )

    for template in (custom, default_template(302)):
        response = parse_framed(
            template.render({"REDIRECT_LOCATION": hostile, "REQUEST_ID": hostile})
        )
        assert response.values(b"Set-Cookie") == []
        assert response.value(b"Location") == b"https://a.example/Set-Cookie: session=stolen"
        assert response.body == b""


def test_a_value_made_only_of_line_breaks_drops_its_header() -> None:
    response = parse_framed(default_template(404).render({"REQUEST_ID": "\r\n\r\n"}))

    assert response.values(b"Sozu-Id") == []


def test_template_without_content_length_is_forced_to_close() -> None:
    template = AnswerTemplate.parse(
        "HTTP/1.1 404 Not Found\r\nCache-Control: no-cache\r\n\r\n<p>%MESSAGE</p>",
        status=404,
    )

    assert template.closes_connection is True
    raw = template.render({"MESSAGE": "gone"})
    response = parse_response(raw)
    assert response.values(b"Connection") == [b"close"]
    assert response.values(b"Content-Length") == []
    assert response.keep_alive is False
    assert response.tail == b"<p>gone</p>"


def test_template_without_content_length_cannot_ask_for_keep_alive() -> None:
    with pytest.raises(TemplateError, match="Content-Length"):
        AnswerTemplate.parse("HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\n\r\nbody")


def test_connection_close_in_a_framed_template_closes() -> None:
    template = AnswerTemplate.parse(
        "HTTP/1.1 404 Not Found\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
    )

    assert template.closes_connection is True
    assert parse_framed(template.render({})).values(b"Connection") == [b"Close"]


def test_http_1_0_template_closes_unless_keep_alive() -> None:
    plain = AnswerTemplate.parse("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    kept = AnswerTemplate.parse(
        "HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    )

    assert plain.closes_connection is True
    assert kept.closes_connection is False


# --- built-in defaults ------------------------------------------------------------------------


def test_built_in_statuses_are_the_ones_the_proxy_produces() -> None:
    assert set(REASONS) == DEFAULT_STATUSES
    with pytest.raises(KeyError):
        default_template(500)


SAMPLE_VALUES = {
    "REQUEST_ID": "01J0REQUEST",
    "ROUTE": "GET example.com/path",
    "CLUSTER_ID": "cluster-1",
    "BACKEND_ID": "backend-1",
    "DURATION": "30s",
    "CAPACITY": "16384",
    "PHASE": "Headers",
    "MESSAGE": "something went wrong",
    "REDIRECT_LOCATION": "https://example.com/path",
    "WWW_AUTHENTICATE": 'Basic realm="x"',
    "RETRY_AFTER": "5",
}


@pytest.mark.parametrize("status", sorted(REASONS))
def test_every_built_in_renders_as_a_valid_closing_response(status: int) -> None:
    template = default_template(status)

    assert template.status == status
    assert template.closes_connection is True
    response = parse_framed(template.render(SAMPLE_VALUES))
    assert response.status == status
    assert response.reason == REASONS[status].encode()
    assert response.values(b"Connection") == [b"close"]
    assert response.keep_alive is False
    assert response.value(b"Sozu-Id") == b"01J0REQUEST"
    if status in (301, 302, 308):
        assert response.value(b"Location") == b"https://example.com/path"
        assert response.body == b""
        return
    assert response.value(b"Cache-Control") == b"no-cache"
    assert f"<h1>{status} {REASONS[status]}</h1>".encode() in response.body
    data = pre_json(response.body)
    assert data["status_code"] == status
    assert data["route"] == "GET example.com/path"
    assert data["request_id"] == "01J0REQUEST"
    if status >= 500:
        assert data["cluster_id"] == "cluster-1"
        assert data["backend_id"] == "backend-1"
    else:
        assert "cluster_id" not in data


@pytest.mark.parametrize("status", sorted(set(REASONS) - {301, 302, 308}))
def test_built_in_json_and_html_survive_hostile_values(status: int) -> None:
    hostile = '"quoted" back\\slash </pre><script>alert(1)</script> &amp; \x01 é'

    raw = default_template(status).render(dict.fromkeys(VARIABLES, hostile))

    response = parse_framed(raw)
    block = re.search(rb"<pre>(.*?)</pre>", response.body, re.DOTALL)
    assert block is not None
    # No value can open or close markup inside the JSON block.
    assert b"<" not in block[1]
    assert b">" not in block[1]
    data = pre_json(response.body)
    assert data["status_code"] == status
    assert data["route"] == hostile
    assert data["request_id"] == hostile
    for key, value in data.items():
        if key != "status_code":
            assert value == hostile, key
    # The page structure is intact: one <pre> block, no markup smuggled in by a value.
    assert response.body.count(b"</pre>") == 1
    assert b"<script>" not in response.body


def test_built_ins_with_all_variables_missing_still_render() -> None:
    for status in DEFAULT_STATUSES:
        response = parse_framed(default_template(status).render({}))
        assert response.status == status
        if status not in (301, 302, 308):
            assert pre_json(response.body)["route"] == ""


# --- Answers: lookup, updates, header name ----------------------------------------------------


def _custom(status: int, marker: str) -> str:
    return (
        f"HTTP/1.1 {status} Custom\r\nConnection: close\r\nContent-Length: 0\r\n\r\n{marker} %ROUTE"
    )


def _keep_alive(status: int, marker: str) -> str:
    return f"HTTP/1.1 {status} Custom\r\nContent-Length: 0\r\n\r\n{marker}"


def test_lookup_order_is_cluster_then_listener_then_built_in() -> None:
    answers = Answers({404: _custom(404, "listener-404"), 503: _keep_alive(503, "listener-503")})
    answers.set_cluster("api", {404: _custom(404, "api-404")})
    variables = {"ROUTE": "GET a/", "REQUEST_ID": "r"}

    def body(status: int, cluster_id: str | None) -> bytes:
        raw, _closes = answers.render(status, variables, cluster_id)
        return parse_framed(raw).body

    assert body(404, "api") == b"api-404 GET a/"
    assert body(404, "web") == b"listener-404 GET a/"
    assert body(404, None) == b"listener-404 GET a/"
    assert body(503, "api") == b"listener-503"
    assert b"<h1>504 Gateway Timeout</h1>" in body(504, "api")
    assert answers.render(503, variables, "api")[1] is False
    assert answers.render(404, variables, "api")[1] is True
    assert answers.template_for(404, "api").name == "cluster 'api' 404"

    answers.remove_cluster("api")
    assert body(404, "api") == b"listener-404 GET a/"
    answers.remove_cluster("never-added")


def test_set_cluster_replaces_the_whole_set() -> None:
    answers = Answers()
    answers.set_cluster("api", {404: _custom(404, "first"), 503: _custom(503, "first-503")})
    answers.set_cluster("api", {404: _custom(404, "second")})

    assert parse_framed(answers.render(404, {}, "api")[0]).body == b"second "
    assert (
        b"<h1>503 Service Unavailable</h1>" in parse_framed(answers.render(503, {}, "api")[0]).body
    )


def test_set_cluster_is_atomic_on_error() -> None:
    answers = Answers()
    answers.set_cluster("api", {404: _custom(404, "kept")})

    with pytest.raises(TemplateError) as caught:
        answers.set_cluster(
            "api",
            {404: _custom(404, "replacement"), 503: "HTTP/1.1 503 Oops\r\nbroken header\r\n\r\n"},
        )
    assert "api" in str(caught.value)
    assert "503" in str(caught.value)
    assert parse_framed(answers.render(404, {}, "api")[0]).body == b"kept "
    assert b"<h1>503" in parse_framed(answers.render(503, {}, "api")[0]).body

    with pytest.raises(TemplateError):
        answers.set_cluster("new", {503: _custom(404, "wrong status")})
    assert b"<h1>503" in parse_framed(answers.render(503, {}, "new")[0]).body


def test_listener_templates_are_validated_against_their_status() -> None:
    with pytest.raises(TemplateError, match="listener 503"):
        Answers({404: _custom(404, "ok"), 503: _custom(502, "mismatch")})


def test_sozu_id_header_is_renamed_in_built_ins() -> None:
    answers = Answers(sozu_id_header="X-Proxy-Request")

    for status in (301, 404, 503):
        response = parse_framed(answers.render(status, {"REQUEST_ID": "abc"})[0])
        assert response.values(b"X-Proxy-Request") == [b"abc"]
        assert response.values(b"Sozu-Id") == []
    direct = parse_framed(default_template(404, sozu_id_header="X-Id").render({"REQUEST_ID": "z"}))
    assert direct.values(b"X-Id") == [b"z"]
    # The default spelling is unaffected by another listener's choice.
    assert parse_framed(Answers().render(404, {"REQUEST_ID": "d"})[0]).values(b"Sozu-Id") == [b"d"]


@pytest.mark.parametrize("bad_name", ["", "Sozu Id", "Sozu:Id", "X-%ROUTE", "Content-Length"])
def test_unusable_sozu_id_header_names_are_refused(bad_name: str) -> None:
    with pytest.raises(ValueError, match="sozu_id_header"):
        Answers(sozu_id_header=bad_name)


def test_unknown_status_without_template_is_a_key_error() -> None:
    answers = Answers({500: _custom(500, "custom 500")})

    assert parse_framed(answers.render(500, {})[0]).status == 500
    with pytest.raises(KeyError):
        answers.render(501, {})
