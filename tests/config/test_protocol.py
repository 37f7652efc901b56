"""The command protocol: line framing, request and response envelopes, and the JSON Schema."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from support.certs import cached_certificate

from sozu_config import requests as rq
from sozu_config.certificates import CertificateAndKey, CertificateSummary
from sozu_config.models import (
    Backend,
    Cluster,
    HeaderEdit,
    HealthCheck,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    PathRule,
    TcpFrontend,
    TcpListenerConfig,
)
from sozu_config.protocol import (
    PROTOCOL_VERSION,
    LineReader,
    MessageTooLarge,
    ProtocolError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from sozu_config.responses import (
    BackendHealth,
    BackendsContent,
    BatchResult,
    BatchResults,
    CertificatesContent,
    ClusterHashes,
    ClusterInformation,
    ClustersContent,
    Event,
    EventContent,
    FrontendList,
    HealthChecksContent,
    ListenersList,
    MetricsContent,
    ProbeResult,
    RequestCounts,
    Response,
    ResponseContent,
    ResponseStatus,
    StateContent,
    StateSnapshot,
    WorkerInfo,
    WorkerResponses,
    WorkersContent,
)
from sozu_config.schema import SCHEMA_PATH

HTTP = "127.0.0.1:8080"
HTTPS = "127.0.0.1:8443"
TCP = "127.0.0.1:9000"

# --------------------------------------------------------------------------- LineReader


def test_line_reader_splits_lines() -> None:
    reader = LineReader()
    assert reader.feed(b"one\ntwo\nthree\n") == [b"one", b"two", b"three"]
    assert reader.pending == 0


def test_line_reader_keeps_partial_lines_until_their_end_arrives() -> None:
    reader = LineReader()
    assert reader.feed(b'{"id":') == []
    assert reader.pending == 6
    assert reader.feed(b'"1"}\n{"id"') == [b'{"id":"1"}']
    assert reader.pending == 5
    assert reader.feed(b':"2"}') == []
    assert reader.feed(b"\n") == [b'{"id":"2"}']
    assert reader.pending == 0


def test_line_reader_fed_byte_by_byte_gives_the_same_lines() -> None:
    stream = b'{"a":1}\n\n{"b":"x\\ny"}\nlast\n'
    reader = LineReader()
    lines: list[bytes] = []
    for byte in stream:
        lines.extend(reader.feed(bytes([byte])))
    assert lines == [b'{"a":1}', b'{"b":"x\\ny"}', b"last"]


def test_line_reader_skips_empty_and_blank_lines() -> None:
    reader = LineReader()
    assert reader.feed(b"\n\n  \n\t\r\nx\n\n") == [b"x"]
    assert reader.feed(b"\n") == []


def test_line_reader_accepts_a_line_of_exactly_the_maximum_size() -> None:
    reader = LineReader(max_size=10)
    assert reader.feed(b"0123456789\n") == [b"0123456789"]
    assert reader.feed(b"01234") == []
    assert reader.feed(b"56789") == []
    assert reader.feed(b"\n") == [b"0123456789"]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"0123456789A\n"],  # one line, one chunk
        [b"ok\n0123456789A\n"],  # after a good line
        [b"012345", b"6789A"],  # no newline yet, but already too long
        [b"0123456789", b"A\n"],
    ],
    ids=["whole", "after-good-line", "partial", "split"],
)
def test_line_reader_refuses_a_line_over_the_maximum(chunks: list[bytes]) -> None:
    reader = LineReader(max_size=10)
    with pytest.raises(MessageTooLarge, match="maximum size of 10 bytes") as raised:
        for chunk in chunks:
            reader.feed(chunk)
    assert isinstance(raised.value, ProtocolError)


def test_line_reader_memory_stays_bounded_on_an_endless_line() -> None:
    limit = 1000
    reader = LineReader(max_size=limit)
    chunk = b"x" * 64
    fed = 0
    with pytest.raises(MessageTooLarge):
        while fed < 100 * limit:
            reader.feed(chunk)
            fed += len(chunk)
            assert reader.pending <= limit  # never more than the limit is kept
    # it is refused as soon as the line is known to be too long, not at its end
    assert fed <= limit
    assert reader.pending == 0  # what was held is dropped


def test_a_line_ending_in_crlf_still_decodes() -> None:
    reader = LineReader()
    (line,) = reader.feed(b'{"id":"r1","request":{"type":"status"}}\r\n')
    assert decode_request(line).request == rq.Status()


# --------------------------------------------------------------------------- requests


def certificate(generation: int = 0) -> CertificateAndKey:
    made = cached_certificate("proto.test", generation=generation)
    return CertificateAndKey(certificate=made.cert_pem, key=made.key_pem, names=["proto.test"])


def one_of_each_request() -> dict[type, Any]:
    """One instance of every request class, with most fields set to non-default values."""
    frontend = HttpFrontend(
        address=HTTP,
        hostname="*.example.com",
        path=PathRule(kind="regex", value="/v[0-9]+/"),
        method="POST",
        cluster_id="c1",
        position="pre",
        tags={"team": "web"},
        redirect="permanent",
        redirect_scheme="use_https",
        rewrite_host="backend.local",
        rewrite_port=8081,
        required_auth=True,
        headers=[HeaderEdit(position="both", key="X-Proxy", value="sozu")],
    )
    instances: list[Any] = [
        rq.AddCluster(
            cluster=Cluster(
                cluster_id="c1",
                sticky_session=True,
                load_balancing="least_loaded",
                load_metric="requests",
                answers={503: "HTTP/1.1 503 Busy\r\n\r\n"},
                authorized_hashes=["admin:" + "0f" * 32],
                http2=True,
            )
        ),
        rq.RemoveCluster(cluster_id="c1"),
        rq.SetHealthCheck(
            cluster_id="c1",
            health_check=HealthCheck(
                uri="/health", interval=0.5, expected_status=204, host="app.test", fail_open=False
            ),
        ),
        rq.RemoveHealthCheck(cluster_id="c1"),
        rq.AddHttpListener(
            listener=HttpListenerConfig(address=HTTP, answers={404: "x"}, active=True)
        ),
        rq.AddHttpsListener(
            listener=HttpsListenerConfig(
                address=HTTPS,
                tls_versions=["tls_v13"],
                default_sni="a.b",
                alpn_protocols=["h2"],
                disable_http11=True,
                h2_max_concurrent_streams=10,
                h2_graceful_shutdown_deadline_seconds=0,
            )
        ),
        rq.AddTcpListener(listener=TcpListenerConfig(address=TCP, expect_proxy=True)),
        rq.UpdateHttpListener(address=HTTP, front_timeout=5, answers={503: "y"}),
        rq.UpdateHttpsListener(
            address=HTTPS,
            alpn_protocols=["h2"],
            default_sni="",
            disable_http11=True,
            h2_max_rst_stream_per_window=7,
            h2_max_header_table_size=0,
        ),
        rq.UpdateTcpListener(address=TCP, public_address="", connect_timeout=2),
        rq.RemoveListener(address=TCP, proxy="tcp"),
        rq.ActivateListener(address=HTTP, proxy="http", from_scm=True),
        rq.DeactivateListener(address=HTTPS, proxy="https", to_scm=True),
        rq.AddHttpFrontend(frontend=frontend),
        rq.RemoveHttpFrontend(frontend=frontend),
        rq.AddHttpsFrontend(frontend=frontend.model_copy(update={"address": HTTPS})),
        rq.RemoveHttpsFrontend(frontend=frontend.model_copy(update={"cluster_id": None})),
        rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1", tags={"a": "b"})),
        rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")),
        rq.AddBackend(
            backend=Backend(
                cluster_id="c1",
                backend_id="b1",
                address="[::1]:8000",
                weight=7,
                sticky_id="s1",
                backup=True,
            )
        ),
        rq.RemoveBackend(cluster_id="c1", backend_id="b1", address="[::1]:8000"),
        rq.AddCertificate(address=HTTPS, certificate=certificate(), expired_at=1_900_000_000),
        rq.ReplaceCertificate(
            address=HTTPS,
            new_certificate=certificate(1),
            old_fingerprint="ab" * 32,
            new_expired_at=5,
        ),
        rq.RemoveCertificate(address=HTTPS, fingerprint="AB:" * 31 + "AB"),
        rq.Batch(
            requests=[
                rq.AddCluster(cluster=Cluster(cluster_id="c2")),
                rq.AddCertificate(address=HTTPS, certificate=certificate()),
            ],
            expected_version=12,
        ),
        rq.ConfigureMetrics(configuration="clear"),
        rq.Logging(level="debug"),
        rq.Status(),
        rq.ListWorkers(),
        rq.ListFrontends(http=True, tcp=True, domain="example"),
        rq.ListListeners(),
        rq.QueryClusterById(cluster_id="c1"),
        rq.QueryClustersByDomain(hostname="a.example.com", path="/api"),
        rq.QueryClustersHashes(),
        rq.QueryCertificates(domain="proto.test", fingerprint="cd" * 32),
        rq.QueryCertificatesFromWorkers(domain="proto.test"),
        rq.CountRequests(),
        rq.QueryState(),
        rq.QueryMetrics(cluster_ids=["c1", "c2"], workers=True),
        rq.QueryHealthChecks(cluster_id="c1"),
        rq.ListBackends(),
        rq.SaveState(path="/var/lib/sozu/state.jsonl"),
        rq.LoadState(path="state.jsonl"),
        rq.ReloadConfiguration(path="/etc/sozu/config.toml"),
        rq.SoftStop(),
        rq.HardStop(),
        rq.UpgradeMain(),
        rq.UpgradeWorker(worker_id=3),
        rq.SubscribeEvents(),
    ]
    return {type(instance): instance for instance in instances}


def request_classes() -> set[type]:
    """Every request model named in ``requests.__all__``."""
    found = set()
    for name in rq.__all__:
        value = getattr(rq, name)
        if inspect.isclass(value) and issubclass(value, rq._Request):
            found.add(value)
    return found


REQUESTS = one_of_each_request()


def test_there_is_one_instance_of_every_request_class() -> None:
    classes = request_classes()
    assert len(classes) >= 45
    assert set(REQUESTS) == classes
    types = {instance.type for instance in REQUESTS.values()}
    assert len(types) == len(REQUESTS)  # every class has its own type name
    union = set(typing.get_args(typing.get_args(rq.Request)[0]))
    assert union == classes  # the Request union knows every class


@pytest.mark.parametrize("request_", list(REQUESTS.values()), ids=lambda r: r.type)
def test_every_request_survives_encode_and_decode(request_: Any) -> None:
    line = encode_request(request_, "req-42")
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # PEM newlines and answer templates are escaped
    raw = json.loads(line)
    assert raw["id"] == "req-42"
    assert raw["request"]["type"] == request_.type
    message = decode_request(line)
    assert message.id == "req-42"
    assert message.version == PROTOCOL_VERSION
    assert message.request == request_
    assert type(message.request) is type(request_)
    assert rq.parse_request(raw["request"]) == request_
    assert rq.parse_request(json.dumps(raw["request"])) == request_
    assert decode_request(line.decode()) == message  # text lines work too


def test_update_patches_survive_the_wire_with_their_meaning() -> None:
    message = decode_request(encode_request(REQUESTS[rq.UpdateTcpListener], "u"))
    assert isinstance(message.request, rq.UpdateTcpListener)
    assert message.request.patch() == {"public_address": None, "connect_timeout": 2}


def test_request_ids_with_quotes_and_unicode_are_echoed() -> None:
    weird = 'id "quoted" \\ ünï 🚀'
    message = decode_request(encode_request(rq.Status(), weird))
    assert message.id == weird


# --------------------------------------------------------------------------- decode errors


@pytest.mark.parametrize(
    ("line", "request_id", "reason"),
    [
        (b'{"id":"x1","request":{"type":"nope"}}', "x1", "'nope'"),
        (b'{"id":"x2","request":{"type":"add_cluster"}}', "x2", "request.add_cluster.cluster"),
        (b'{"id":"x3","request":{"type":"status"},"extra":1}', "x3", "extra"),
        (b'{"id":"x4"}', "x4", "request"),
        (b'{"id":"x5","request":{"type":"add_backend","backend":{}}}', "x5", "backend_id"),
        (b'{"request":{"type":"status"}}', None, "id"),
        (b'{"id":7,"request":{"type":"status"}}', None, "id"),
        (b'{"id":"x8",', None, "not valid JSON"),
        (b"not json at all", None, "not valid JSON"),
        (b"\xff\xfe{}", None, "not valid JSON"),
        (b"[1, 2]", None, "object"),
        (b'"just a string"', None, "object"),
    ],
    ids=[
        "unknown-type",
        "missing-field",
        "extra-envelope-field",
        "no-request",
        "bad-payload",
        "missing-id",
        "numeric-id",
        "cut-json",
        "not-json",
        "not-utf8",
        "array",
        "string",
    ],
)
def test_decode_errors_say_what_is_wrong_and_carry_the_id_when_readable(
    line: bytes, request_id: str | None, reason: str
) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_request(line)
    assert raised.value.request_id == request_id
    assert reason in str(raised.value)


def test_decode_errors_do_not_echo_a_private_key() -> None:
    made = cached_certificate("proto.test", generation=0)
    body = {
        "type": "add_certificate",
        "address": HTTPS,
        "certificate": {"key": made.key_pem, "names": ["x"]},  # the certificate is missing
    }
    line = json.dumps({"id": "k1", "request": body}).encode()
    with pytest.raises(ProtocolError) as raised:
        decode_request(line)
    assert raised.value.request_id == "k1"
    assert "certificate" in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value)
    secret = [ln for ln in made.key_pem.splitlines() if not ln.startswith("-----")]
    assert all(ln[:20] not in str(raised.value) for ln in secret)


def test_decode_response_refuses_garbage() -> None:
    for line in (b"garbage", b'{"id":"1"}', b'{"id":"1","status":"maybe"}', b"[]"):
        with pytest.raises(ProtocolError, match="invalid response from the daemon"):
            decode_response(line)


# --------------------------------------------------------------------------- responses


def sample_snapshot() -> StateSnapshot:
    made = cached_certificate("proto.test", generation=0)
    return StateSnapshot(
        http_listeners=[HttpListenerConfig(address=HTTP, active=True)],
        https_listeners=[HttpsListenerConfig(address=HTTPS)],
        tcp_listeners=[TcpListenerConfig(address=TCP, public_address="10.0.0.1:9000")],
        clusters=[Cluster(cluster_id="c1", answers={503: "busy"})],
        http_frontends=[HttpFrontend(address=HTTP, hostname="a.test", cluster_id="c1")],
        https_frontends=[HttpFrontend(address=HTTPS, hostname="a.test")],
        tcp_frontends=[TcpFrontend(address=TCP, cluster_id="c1")],
        backends=[Backend(cluster_id="c1", backend_id="b1", address="10.0.0.2:80")],
        certificates=[
            CertificateSummary(
                address=HTTPS,
                fingerprint="ab" * 32,
                names=["proto.test"],
                not_after=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                expired_at=1_900_000_000,
                versions=["tls_v12"],
                certificate=made.cert_pem,
            )
        ],
    )


def one_of_each_content() -> dict[type, Any]:
    snapshot = sample_snapshot()
    info = ClusterInformation(
        cluster=snapshot.clusters[0],
        http_frontends=snapshot.http_frontends,
        tcp_frontends=snapshot.tcp_frontends,
        backends=snapshot.backends,
    )
    contents: list[Any] = [
        WorkersContent(
            workers=[
                WorkerInfo(id=0, pid=1234, run_state="running"),
                WorkerInfo(id=1, pid=1235, run_state="not_answering"),
            ]
        ),
        StateContent(version=17, state=snapshot),
        FrontendList(
            http=snapshot.http_frontends,
            https=snapshot.https_frontends,
            tcp=snapshot.tcp_frontends,
        ),
        ListenersList(
            http=snapshot.http_listeners,
            https=snapshot.https_listeners,
            tcp=snapshot.tcp_listeners,
        ),
        ClustersContent(clusters=[info, ClusterInformation()]),
        ClusterHashes(hashes={"c1": "0123456789abcdef", "c2": "fedcba9876543210"}),
        CertificatesContent(certificates=snapshot.certificates),
        RequestCounts(counts={"add_cluster": 3, "batch": 1}),
        MetricsContent(
            main={"uptime": 12.5},
            workers={"0": {"requests": 10, "bytes_in": 2048}},
            clusters={"c1": {"http.status.2xx": 9}},
            proxying={"connections": 1},
        ),
        HealthChecksContent(health_checks={"c1": HealthCheck(), "c2": HealthCheck(uri="/up")}),
        BackendsContent(
            backends=[
                BackendHealth(
                    cluster_id="c1",
                    backend_id="b1",
                    address="10.0.0.2:80",
                    state="down",
                    since=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                    reason="3 failed checks: connection refused",
                    checked=True,
                    last_check=ProbeResult(
                        time=dt.datetime(2026, 1, 2, 3, 4, 6, tzinfo=dt.UTC),
                        ok=False,
                        latency=0.0002,
                        detail="connection refused",
                    ),
                    consecutive_failures=4,
                ),
                BackendHealth(
                    cluster_id="c1", backend_id="b2", address="10.0.0.3:80", state="draining"
                ),
            ]
        ),
        EventContent(
            event=Event(
                kind="backend_down",
                cluster_id="c1",
                backend_id="b1",
                address="10.0.0.2:80",
                worker_id=0,
                message="connection refused",
            )
        ),
        BatchResults(
            version=18,
            results=[
                BatchResult(index=0, request="add_cluster c1", status="ok"),
                BatchResult(index=1, request="remove_cluster x", status="failure", message="no"),
            ],
        ),
        WorkerResponses(
            responses={
                "0": RequestCounts(counts={"status": 1}),
                "1": None,
                "main": ClusterHashes(hashes={"c1": "00"}),
            }
        ),
    ]
    return {type(content): content for content in contents}


CONTENTS = one_of_each_content()


def test_there_is_one_instance_of_every_content_type() -> None:
    union = set(typing.get_args(typing.get_args(ResponseContent)[0]))
    assert set(CONTENTS) == union


@pytest.mark.parametrize("content", list(CONTENTS.values()), ids=lambda c: c.type)
@pytest.mark.parametrize("status", list(ResponseStatus))
def test_every_response_content_survives_encode_and_decode(
    content: Any, status: ResponseStatus
) -> None:
    response = Response(id="r-1", status=status, message="done", content=content)
    line = encode_response(response)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    decoded = decode_response(line)
    assert decoded == response
    assert json.loads(line)["content"]["type"] == content.type
    assert type(decoded.content) is type(content)
    assert decoded.final is (status is not ResponseStatus.PROCESSING)
    assert decoded.ok is (status is ResponseStatus.OK)


def test_a_response_without_content_is_short() -> None:
    answer = Response(id="r-2", status=ResponseStatus.FAILURE, message="no such cluster")
    line = encode_response(answer)
    assert json.loads(line) == {"id": "r-2", "status": "failure", "message": "no such cluster"}
    assert decode_response(line) == answer
    assert decode_response(line).final
    assert not decode_response(line).ok


# --------------------------------------------------------------------------- JSON Schema


def test_the_committed_schema_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sozu_config.schema", "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


class SchemaViolation(AssertionError):
    """An instance that does not match the schema."""


# Annotations that do not constrain instances (JSON Schema 2020-12, §9 of the validation spec)
_ANNOTATIONS = frozenset({"title", "description", "default", "format", "discriminator", "$defs"})


class SchemaChecker:
    """A small JSON Schema validator for the keywords pydantic emits. Any keyword it does not
    know makes it fail, so that it never silently accepts what it cannot check."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, reference: str) -> dict[str, Any]:
        assert reference.startswith("#/"), reference
        node: Any = self.root
        for part in reference[2:].split("/"):
            node = node[part]
        return typing.cast(dict[str, Any], node)

    def matches(self, instance: Any, schema: dict[str, Any]) -> bool:
        try:
            self.check(instance, schema)
        except SchemaViolation:
            return False
        return True

    def check(self, instance: Any, schema: dict[str, Any], where: str = "$") -> None:
        for keyword, value in schema.items():
            if keyword in _ANNOTATIONS:
                continue
            if keyword == "$ref":
                self.check(instance, self.resolve(value), where)
            elif keyword == "type":
                self.check_type(instance, value, where)
            elif keyword == "enum":
                if instance not in value:
                    raise SchemaViolation(f"{where}: {instance!r} not in {value}")
            elif keyword == "const":
                if instance != value:
                    raise SchemaViolation(f"{where}: {instance!r} != {value!r}")
            elif keyword == "properties":
                if isinstance(instance, dict):
                    for name, sub in value.items():
                        if name in instance:
                            self.check(instance[name], sub, f"{where}.{name}")
            elif keyword == "required":
                if isinstance(instance, dict):
                    missing = [name for name in value if name not in instance]
                    if missing:
                        raise SchemaViolation(f"{where}: missing {missing}")
            elif keyword == "additionalProperties":
                if isinstance(instance, dict):
                    known = schema.get("properties", {})
                    for name, item in instance.items():
                        if name in known:
                            continue
                        if value is False:
                            raise SchemaViolation(f"{where}: unexpected property {name!r}")
                        if isinstance(value, dict):
                            self.check(item, value, f"{where}.{name}")
            elif keyword == "items":
                if isinstance(instance, list):
                    for index, item in enumerate(instance):
                        self.check(item, value, f"{where}[{index}]")
            elif keyword in ("minLength", "maxLength"):
                if isinstance(instance, str):
                    ok = (
                        len(instance) >= value if keyword == "minLength" else len(instance) <= value
                    )
                    if not ok:
                        raise SchemaViolation(f"{where}: length {len(instance)} vs {keyword}")
            elif keyword in ("minimum", "maximum"):
                if isinstance(instance, int | float) and not isinstance(instance, bool):
                    ok = instance >= value if keyword == "minimum" else instance <= value
                    if not ok:
                        raise SchemaViolation(f"{where}: {instance} vs {keyword} {value}")
            elif keyword == "anyOf":
                if not any(self.matches(instance, sub) for sub in value):
                    raise SchemaViolation(f"{where}: matches none of anyOf")
            elif keyword == "oneOf":
                count = sum(self.matches(instance, sub) for sub in value)
                if count != 1:
                    raise SchemaViolation(f"{where}: matches {count} of oneOf")
            elif keyword == "allOf":
                for sub in value:
                    self.check(instance, sub, where)
            else:
                raise AssertionError(f"the test validator does not know keyword {keyword!r}")

    @staticmethod
    def check_type(instance: Any, expected: str | list[str], where: str) -> None:
        kinds = [expected] if isinstance(expected, str) else expected
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        if not any(checks[kind](instance) for kind in kinds):
            raise SchemaViolation(f"{where}: {instance!r} is not {expected}")


@pytest.fixture(scope="module")
def schema_checker() -> SchemaChecker:
    return SchemaChecker(json.loads(Path(SCHEMA_PATH).read_text(encoding="utf-8")))


def test_the_schema_knows_every_request_and_content_type(schema_checker: SchemaChecker) -> None:
    request = schema_checker.resolve("#/$defs/RequestMessage")["properties"]["request"]
    assert set(request["discriminator"]["mapping"]) == {r.type for r in REQUESTS.values()}
    content = schema_checker.resolve("#/$defs/Response")["properties"]["content"]
    mappings = [
        option["discriminator"]["mapping"]
        for option in content["anyOf"]
        if "discriminator" in option
    ]
    assert [set(m) for m in mappings] == [{c.type for c in CONTENTS.values()}]


@pytest.mark.parametrize(
    "request_",
    [
        REQUESTS[rq.Status],
        REQUESTS[rq.AddCluster],
        REQUESTS[rq.AddHttpsListener],
        REQUESTS[rq.AddHttpFrontend],
        REQUESTS[rq.AddCertificate],
        REQUESTS[rq.UpdateTcpListener],
        REQUESTS[rq.Batch],
        REQUESTS[rq.QueryMetrics],
    ],
    ids=lambda r: r.type,
)
def test_encoded_requests_match_the_schema(schema_checker: SchemaChecker, request_: Any) -> None:
    message = json.loads(encode_request(request_, "s-1"))
    schema_checker.check(message, {"$ref": "#/$defs/RequestMessage"})
    schema_checker.check(message, schema_checker.root)  # the document's own oneOf


@pytest.mark.parametrize(
    "content",
    [CONTENTS[StateContent], CONTENTS[EventContent], CONTENTS[WorkerResponses], None],
    ids=["state", "event", "worker-responses", "none"],
)
def test_encoded_responses_match_the_schema(schema_checker: SchemaChecker, content: Any) -> None:
    response = Response(id="s-2", status="processing", message="m", content=content)
    schema_checker.check(json.loads(encode_response(response)), {"$ref": "#/$defs/Response"})


@pytest.mark.parametrize(
    "message",
    [
        {"id": "s", "request": {"type": "nope"}},
        {"request": {"type": "status"}},
        {"id": "", "request": {"type": "status"}},
        {"id": "s", "request": {"type": "status"}, "extra": True},
        {"id": "s", "request": {"type": "remove_cluster"}},
        {"id": "s", "request": {"type": "upgrade_worker", "worker_id": "three"}},
        {"id": "s", "request": {"type": "list_frontends", "http": "maybe"}},
    ],
    ids=["unknown-type", "no-id", "empty-id", "extra", "missing-field", "bad-int", "bad-bool"],
)
def test_the_schema_refuses_bad_requests(schema_checker: SchemaChecker, message: Any) -> None:
    with pytest.raises(SchemaViolation):
        schema_checker.check(message, {"$ref": "#/$defs/RequestMessage"})
    with pytest.raises(ProtocolError):  # and so does the decoder: they agree
        decode_request(json.dumps(message))
