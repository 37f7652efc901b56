"""Addresses, hostname rules, identifiers and the validation and defaults of the models."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from sozu_config import requests as rq
from sozu_config.addresses import normalize_address, split_address
from sozu_config.grammar import parse_hostname_rule
from sozu_config.models import (
    Backend,
    Cluster,
    HeaderEdit,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    LoadBalancingAlgorithm,
    PathRule,
    PathRuleKind,
    RedirectPolicy,
    RulePosition,
    TcpFrontend,
    TcpListenerConfig,
    TlsVersion,
    normalize_hostname_rule,
)

# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("255.255.255.255:65535", "255.255.255.255:65535"),
        ("10.0.0.1:1", "10.0.0.1:1"),
        ("10.0.0.1:080", "10.0.0.1:80"),  # leading zeros of the port are dropped
        ("10.0.0.1:00443", "10.0.0.1:443"),
        ("  10.0.0.1:80 ", "10.0.0.1:80"),  # surrounding spaces are ignored
        ("\t10.0.0.1:80\n", "10.0.0.1:80"),
        ("[::1]:80", "[::1]:80"),
        ("[0:0:0:0:0:0:0:1]:80", "[::1]:80"),
        ("[::]:443", "[::]:443"),
        ("[2001:DB8::0001]:443", "[2001:db8::1]:443"),
        ("[2001:db8:0:0:1:0:0:1]:1", "[2001:db8::1:0:0:1]:1"),
        ("[fe80::1%eth0]:80", "[fe80::1%eth0]:80"),  # the scope is kept
        ("[::1]:65535", "[::1]:65535"),
    ],
)
def test_address_normal_form(text: str, normal: str) -> None:
    assert normalize_address(text) == normal
    assert normalize_address(normal) == normal  # idempotent


def test_two_spellings_of_an_ipv4_mapped_address_are_one() -> None:
    assert normalize_address("[::ffff:127.0.0.1]:80") == normalize_address(
        "[0:0:0:0:0:ffff:7f00:0001]:80"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1:0", "port 0 is not in 1-65535"),
        ("10.0.0.1:65536", "port 65536 is not in 1-65535"),
        ("[::1]:0", "port 0"),
        ("[::1]:99999", "port 99999"),
        ("10.0.0.1:", "the port must be a number"),
        ("10.0.0.1:-1", "the port must be a number"),
        ("10.0.0.1:+80", "the port must be a number"),
        ("10.0.0.1:8o", "the port must be a number"),
        ("10.0.0.1:\u0668\u0660", "the port must be a number"),  # Arabic-Indic digits
        ("10.0.0.1:80 80", "the port must be a number"),
        ("10.0.0.1", "expected 'IP:port'"),
        (":80", "expected 'IP:port'"),
        ("", "expected 'IP:port'"),
        ("127.000.000.001:80", "is not an IPv4 address"),  # leading zeros are ambiguous
        ("010.0.0.1:80", "is not an IPv4 address"),
        ("256.0.0.1:80", "is not an IPv4 address"),
        ("1.2.3:80", "is not an IPv4 address"),
        ("10.0.0.1 :80", "is not an IPv4 address"),
        ("localhost:80", "host names are not accepted"),
        ("example.com:443", "host names are not accepted"),
        ("::1:80", "write IPv6 addresses as '[addr]:port'"),
        ("[::1]80", "expected '[IPv6]:port'"),
        ("[::1]", "expected '[IPv6]:port'"),
        ("[::1:80", "expected '[IPv6]:port'"),
        ("[127.0.0.1]:80", "is not an IPv6 address"),
        ("[::g]:80", "is not an IPv6 address"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        normalize_address(text)


def test_split_address_gives_host_and_port() -> None:
    assert split_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_address("[::1]:443") == ("::1", 443)
    assert split_address(normalize_address("[fe80::1%eth0]:80")) == ("fe80::1%eth0", 80)


def test_models_store_addresses_in_normal_form() -> None:
    listener = HttpListenerConfig(address=" 10.0.0.1:080", public_address="[::0001]:80")
    assert (listener.address, listener.public_address) == ("10.0.0.1:80", "[::1]:80")
    backend = Backend(cluster_id="c", backend_id="b", address="[2001:DB8::1]:08080")
    assert backend.address == "[2001:db8::1]:8080"
    assert TcpFrontend(address="[::1]:0009", cluster_id="c").address == "[::1]:9"
    with pytest.raises(ValidationError, match="host names are not accepted"):
        TcpFrontend(address="localhost:9", cluster_id="c")


# --------------------------------------------------------------------------- hostnames


@pytest.mark.parametrize(
    ("rule", "normal"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),  # one trailing dot: the same name
        ("bücher.de", "xn--bcher-kva.de"),  # IDNA
        ("BÜCHER.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("*.example.com", "*.example.com"),
        ("*.Example.COM.", "*.example.com"),
        ("*.bücher.de", "*.xn--bcher-kva.de"),
        ("*", "*"),
        ("localhost", "localhost"),
        ("a_b.test", "a_b.test"),
        ("123.com", "123.com"),
        ("a-b.c-d.test", "a-b.c-d.test"),
        ("a" * 63 + ".test", "a" * 63 + ".test"),
        ("/api[0-9]+/.example.com", "/api[0-9]+/.example.com"),  # regexes are kept as written
        ("/[A-Z]+/.Example.com", "/[A-Z]+/.Example.com"),
    ],
)
def test_hostname_rule_normal_form(rule: str, normal: str) -> None:
    assert normalize_hostname_rule(rule) == normal
    assert HttpFrontend(address="127.0.0.1:80", hostname=rule).hostname == normal


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("", "must not be empty"),
        ("*.*.example.com", "not a valid domain name"),
        ("a.*.example.com", "'*' is only allowed as the whole leftmost label"),
        ("*example.com", "'*' is only allowed"),
        ("ex*mple.com", "'*' is only allowed"),
        ("**", "'*' is only allowed"),
        ("*.", "not a valid domain name"),
        ("a..b", "not a valid domain name"),
        (".example.com", "not a valid domain name"),
        ("-a.example.com", "not a valid domain name"),
        ("a-.example.com", "not a valid domain name"),
        ("exa mple.com", "not a valid domain name"),
        ("example.com:80", "not a valid domain name"),
        ("a" * 64 + ".test", "not a valid domain name"),
        (".".join(["a" * 50] * 5) + ".test", "not a valid domain name"),  # > 253 characters
        ("/api/x/y", "unmatched '/'"),
        ("/(/.test", "does not compile"),
        ("/[a-/.test", "does not compile"),
    ],
)
def test_bad_hostname_rules_are_refused(rule: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        normalize_hostname_rule(rule)
    with pytest.raises(ValidationError):
        HttpFrontend(address="127.0.0.1:80", hostname=rule)


def test_a_regex_hostname_is_anchored_and_literal_outside_the_slashes() -> None:
    def matches(rule: str, host: str) -> bool:
        pattern = parse_hostname_rule(rule).pattern
        assert pattern is not None
        return pattern.fullmatch(host.encode()) is not None  # as the router matches

    rule = "/api[0-9]+/.example.com"
    assert matches(rule, "api12.example.com")
    assert matches(rule, "API7.Example.COM")
    assert not matches(rule, "xapi1.example.com")  # the whole host
    assert not matches(rule, "api1.example.com.evil")
    assert not matches(rule, "api1xexample.com")  # the dot outside the slashes is literal
    assert not matches(rule, "api.example.com")
    assert matches("/[a-z]+/-/[0-9]+/.test", "abc-42.test")
    assert not matches("/[a-z]+/-/[0-9]+/.test", "abc-x.test")


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("good", ["c", "cluster-1", "my_app.v2", "café", "x" * 256, "a:b/c"])
def test_good_identifiers(good: str) -> None:
    assert Cluster(cluster_id=good).cluster_id == good
    assert Backend(cluster_id=good, backend_id=good, address="10.0.0.1:80").backend_id == good


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "must not be empty"),
        ("x" * 257, "at most 256 characters"),
        ("a b", "spaces or control characters"),
        ("a\tb", "spaces or control characters"),
        ("a\nb", "spaces or control characters"),
        ("a\x00b", "spaces or control characters"),
        ("a\x7fb", "spaces or control characters"),
        (" a", "spaces or control characters"),
    ],
)
def test_bad_identifiers_are_refused(bad: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        Cluster(cluster_id=bad)
    with pytest.raises(ValidationError, match=re.escape(reason)):
        rq.RemoveBackend(cluster_id="c", backend_id=bad)


# --------------------------------------------------------------------------- path rules


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("prefix", ""),
        ("prefix", "/api"),
        ("equals", "/health?full=1"),
        ("regex", "/v[0-9]+/"),
        ("regex", r"^/static/.*\.css$"),
        ("prefix", "/ünïcode"),
    ],
)
def test_good_path_rules(kind: str, value: str) -> None:
    rule = PathRule(kind=kind, value=value)
    assert rule.kind is PathRuleKind(kind)
    assert rule.value == value


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("regex", "/v[0-9", "does not compile"),
        ("regex", "(", "does not compile"),
        ("regex", "*x", "does not compile"),
        ("prefix", "/a b", "must not contain spaces"),
        ("equals", "/a\r\nX-Injected: 1", "must not contain spaces"),
        ("prefix", "/a\x00", "must not contain spaces"),
        ("regex", "/a b", "must not contain spaces"),
    ],
)
def test_bad_path_rules_are_refused(kind: str, value: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        PathRule(kind=kind, value=value)


def test_path_rule_describe_marks_the_kind() -> None:
    assert PathRule(value="/api").describe() == "/api"
    assert PathRule(kind="equals", value="/x").describe() == "=/x"
    assert PathRule(kind="regex", value="^/v[0-9]").describe() == "~^/v[0-9]"


# --------------------------------------------------------------------------- listeners


def test_public_address_and_expect_proxy_exclude_each_other() -> None:
    for model in (HttpListenerConfig, HttpsListenerConfig, TcpListenerConfig):
        with pytest.raises(ValidationError, match="public_address and expect_proxy"):
            model(address="127.0.0.1:80", public_address="10.0.0.1:80", expect_proxy=True)
        assert model(address="127.0.0.1:80", expect_proxy=True).expect_proxy is True
        assert model(address="127.0.0.1:80", public_address="10.0.0.1:80").public_address


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"alpn_protocols": ["spdy/3"]}, "'spdy/3' (supported: h2, http/1.1)"),
        ({"disable_http11": True}, "alpn_protocols offers 'http/1.1'"),
        ({"disable_http11": True, "alpn_protocols": []}, "must offer 'h2'"),
        ({"h2_max_concurrent_streams": 0}, "h2_max_concurrent_streams"),
        ({"h2_initial_connection_window": 65_534}, "h2_initial_connection_window"),
        ({"h2_initial_connection_window": 2**31}, "h2_initial_connection_window"),
        ({"h2_graceful_shutdown_deadline_seconds": -1}, "h2_graceful_shutdown_deadline_seconds"),
        ({"h2_stream_idle_timeout_seconds": 0}, "h2_stream_idle_timeout_seconds"),
        ({"cipher_list": ["TLS_RSA_WITH_RC4_128_MD5"]}, "unknown cipher suite"),
        ({"cipher_list": []}, "at least one cipher suite"),
        ({"tls_versions": []}, "at least one version"),
        ({"tls_versions": ["ssl_v3"]}, "tls_versions"),
        ({"send_tls13_tickets": 17}, "send_tls13_tickets"),
        ({"send_tls13_tickets": -1}, "send_tls13_tickets"),
        ({"default_sni": "*.example.com"}, "default_sni"),
        ({"sticky_name": "has space"}, "is not an HTTP token"),
        ({"sozu_id_header": "X:Id"}, "is not an HTTP token"),
        ({"answers": {600: "HTTP/1.1 600 X\r\n\r\n"}}, "not an HTTP status code"),
        ({"front_timeout": 0}, "front_timeout"),
        ({"connect_timeout": 86_400 * 7 + 1}, "connect_timeout"),
    ],
)
def test_bad_https_listener_settings_are_refused(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        HttpsListenerConfig(address="127.0.0.1:443", **fields)


def test_good_https_listener_settings() -> None:
    listener = HttpsListenerConfig(
        address="127.0.0.1:443",
        cipher_list=["TLS13_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"],
        tls_versions=["tls_v13"],
        default_sni="Example.COM",
        send_tls13_tickets=0,
    )
    assert listener.tls_versions == [TlsVersion.TLS_V13]
    assert listener.default_sni == "example.com"
    assert listener.alpn_protocols == ["h2", "http/1.1"]
    http2_only = HttpsListenerConfig(
        address="127.0.0.1:443", alpn_protocols=["h2", "h2"], disable_http11=True
    )
    assert http2_only.alpn_protocols == ["h2"]
    preferring_http11 = HttpsListenerConfig(
        address="127.0.0.1:443", alpn_protocols=["http/1.1", "h2", "http/1.1"]
    )
    assert preferring_http11.alpn_protocols == ["http/1.1", "h2"]
    zero = HttpsListenerConfig(
        address="127.0.0.1:443",
        h2_graceful_shutdown_deadline_seconds=0,
        h2_max_header_table_size=0,
    )
    assert (zero.h2_graceful_shutdown_deadline_seconds, zero.h2_max_header_table_size) == (0, 0)


# --------------------------------------------------------------------------- other models


@pytest.mark.parametrize(
    ("model", "fields", "reason"),
    [
        (Backend, {"weight": 256}, "weight"),
        (Backend, {"weight": -1}, "weight"),
        (Backend, {"sticky_id": ""}, "sticky_id"),
        (Backend, {"sticky_id": "a;b"}, "sticky_id"),
        (Cluster, {"authorized_hashes": ["user:short"]}, "user:<sha256 hex of password>"),
        (Cluster, {"authorized_hashes": [":" + "a" * 64]}, "user:<sha256 hex of password>"),
        (Cluster, {"www_authenticate": "realm\r\nX: y"}, "CR, LF or NUL"),
        (Cluster, {"https_redirect_port": 0}, "https_redirect_port"),
        (Cluster, {"answers": {99: "x"}}, "not an HTTP status code"),
        (Cluster, {"load_balancing": "fastest"}, "load_balancing"),
        (HttpFrontend, {"method": "GE T"}, "is not an HTTP token"),
        (HttpFrontend, {"rewrite_host": "a\nb"}, "CR, LF or NUL"),
        (HttpFrontend, {"rewrite_port": 70000}, "rewrite_port"),
        (HttpFrontend, {"position": "middle"}, "position"),
        (HeaderEdit, {"key": "Bad Key"}, "is not an HTTP token"),
        (HeaderEdit, {"value": "a\r\nb"}, "CR, LF or NUL"),
    ],
)
def test_bad_model_values_are_refused(model: Any, fields: dict[str, Any], reason: str) -> None:
    base: dict[type, dict[str, Any]] = {
        Backend: {"cluster_id": "c", "backend_id": "b", "address": "10.0.0.1:80"},
        Cluster: {"cluster_id": "c"},
        HttpFrontend: {"address": "127.0.0.1:80", "hostname": "a.test"},
        HeaderEdit: {"position": "request", "key": "X-A", "value": "1"},
    }
    model(**base[model])  # the base is valid
    with pytest.raises(ValidationError, match=re.escape(reason)):
        model(**{**base[model], **fields})


def test_good_authorized_hashes_and_header_edits() -> None:
    digest = "ab" * 32
    assert Cluster(cluster_id="c", authorized_hashes=[f"admin:{digest}"]).authorized_hashes == [
        f"admin:{digest}"
    ]
    edit = HeaderEdit(position="both", key="X-Removed")
    assert edit.value == ""  # an empty value deletes the header


# --------------------------------------------------------------------------- frozen, no extras


@pytest.mark.parametrize(
    "instance",
    [
        HttpListenerConfig(address="127.0.0.1:80"),
        HttpsListenerConfig(address="127.0.0.1:443"),
        TcpListenerConfig(address="127.0.0.1:9"),
        Cluster(cluster_id="c"),
        HttpFrontend(address="127.0.0.1:80", hostname="a.test"),
        TcpFrontend(address="127.0.0.1:9", cluster_id="c"),
        Backend(cluster_id="c", backend_id="b", address="10.0.0.1:80"),
        PathRule(),
        rq.AddCluster(cluster=Cluster(cluster_id="c")),
    ],
    ids=lambda instance: type(instance).__name__,
)
def test_models_are_frozen_and_refuse_unknown_fields(instance: Any) -> None:
    first_field = next(iter(type(instance).model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(instance, first_field, getattr(instance, first_field))
    data = instance.model_dump()
    assert type(instance).model_validate(data) == instance
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        type(instance).model_validate({**data, "unexpected": 1})
    # frozen models are hashable values
    assert hash(PathRule(kind="equals", value="/x")) == hash(PathRule(kind="equals", value="/x"))


def test_unknown_fields_inside_a_request_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        rq.parse_request({"type": "add_cluster", "cluster": {"cluster_id": "c", "sticky": True}})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        rq.parse_request({"type": "status", "verbose": True})


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_ones_sozu_documents() -> None:
    backend = Backend(cluster_id="c", backend_id="b", address="10.0.0.1:80")
    assert backend.weight == 100
    assert backend.backup is False
    assert backend.sticky_id is None
    frontend = HttpFrontend(address="127.0.0.1:80", hostname="a.test")
    assert frontend.position is RulePosition.TREE
    assert frontend.path == PathRule(kind=PathRuleKind.PREFIX, value="")
    assert frontend.redirect is RedirectPolicy.FORWARD
    assert frontend.cluster_id is None
    assert frontend.method is None
    for listener in (
        HttpListenerConfig(address="127.0.0.1:80"),
        HttpsListenerConfig(address="127.0.0.1:443"),
        TcpListenerConfig(address="127.0.0.1:9"),
    ):
        assert listener.front_timeout == 60
        assert listener.back_timeout == 30
        assert listener.connect_timeout == 3
        assert listener.request_timeout == 10
        assert listener.active is False
        assert listener.expect_proxy is False
        assert listener.public_address is None
    http = HttpListenerConfig(address="127.0.0.1:80")
    assert http.sticky_name == "SOZUBALANCEID"
    assert http.sozu_id_header == "Sozu-Id"
    assert http.answers == {}
    https = HttpsListenerConfig(address="127.0.0.1:443")
    assert https.sticky_name == "SOZUBALANCEID"
    assert https.tls_versions == [TlsVersion.TLS_V12, TlsVersion.TLS_V13]
    assert https.alpn_protocols == ["h2", "http/1.1"]
    assert https.disable_http11 is False
    assert https.cipher_list[0] == "TLS13_AES_256_GCM_SHA384"
    assert len(https.cipher_list) == 9
    cluster = Cluster(cluster_id="c")
    assert cluster.load_balancing is LoadBalancingAlgorithm.ROUND_ROBIN
    assert cluster.sticky_session is False
    assert cluster.https_redirect is False
    assert cluster.proxy_protocol is None
    assert cluster.http2 is False
    assert PathRule().kind is PathRuleKind.PREFIX
    assert PathRule().value == ""


def test_defaults_are_not_shared_between_instances() -> None:
    one = HttpsListenerConfig(address="127.0.0.1:443")
    two = HttpsListenerConfig(address="127.0.0.1:444")
    assert one.cipher_list is not two.cipher_list
    assert one.tls_versions is not two.tls_versions
    frontend_one = HttpFrontend(address="127.0.0.1:80", hostname="a.test")
    frontend_two = HttpFrontend(address="127.0.0.1:80", hostname="b.test")
    assert frontend_one.tags is not frontend_two.tags
    assert frontend_one.headers is not frontend_two.headers


def test_enumerations_travel_in_snake_case() -> None:
    frontend = HttpFrontend(
        address="127.0.0.1:80",
        hostname="a.test",
        path=PathRule(kind="equals", value="/x"),
        position="pre",
        redirect="permanent_redirect",
    )
    dumped = frontend.model_dump(mode="json")
    assert dumped["path"] == {"kind": "equals", "value": "/x"}
    assert dumped["position"] == "pre"
    assert dumped["redirect"] == "permanent_redirect"
    cluster = Cluster(cluster_id="c", load_balancing="least_loaded")
    assert cluster.model_dump(mode="json")["load_balancing"] == "least_loaded"
