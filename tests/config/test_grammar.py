"""The shared grammar: tokens, header values, hostnames, certificate coverage, host:port."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sozu_config.grammar import (
    TCHAR,
    TCHAR_BYTES,
    HostKind,
    check_header_value,
    check_request_id_header,
    check_token,
    compile_path_regex,
    encode_path_value,
    fold_hostname,
    folded_names_cover,
    is_field_value,
    is_token,
    is_token_bytes,
    name_covers,
    names_cover,
    normalize_certificate_name,
    normalize_hostname,
    normalize_hostname_rule,
    parse_authority,
    parse_hostname_rule,
    parse_port,
    split_host_port,
    unbracket,
    wildcard_parent,
)
from sozu_config.models import HeaderEdit, HttpFrontend, HttpListenerConfig, PathRule

# --------------------------------------------------------------------------- tokens


def test_tchar_is_rfc_9110() -> None:
    assert set(TCHAR) == set(
        "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    )
    assert TCHAR.encode("ascii") == TCHAR_BYTES


@pytest.mark.parametrize("good", ["GET", "X-Forwarded-For", "!#$%&'*+-.^_`|~", "a"])
def test_tokens(good: str) -> None:
    assert is_token(good)
    assert is_token_bytes(good.encode())
    assert check_token(good) == good


@pytest.mark.parametrize("bad", ["", "GE T", "X:Id", "a\r", "é", "(x)", "a/b", '"q"', "a,b"])
def test_not_tokens(bad: str) -> None:
    assert not is_token(bad)
    assert not is_token_bytes(bad.encode("utf-8"))
    with pytest.raises(ValueError, match="is not an HTTP token"):
        check_token(bad)


@given(st.text(max_size=8))
def test_token_str_and_bytes_agree(text: str) -> None:
    assert is_token(text) == is_token_bytes(text.encode("utf-8"))


# --------------------------------------------------------------------------- header values


@pytest.mark.parametrize("good", ["", "sozu", "a b\tc", "max-age=1; preload", "café", "\xff"])
def test_header_values(good: str) -> None:
    assert is_field_value(good)
    assert check_header_value(good) == good


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("a\r\nb", "CR, LF or NUL"),
        ("a\nb", "CR, LF or NUL"),
        ("a\x00", "CR, LF or NUL"),
        ("a\x01", "no control character"),
        ("a\x7f", "no control character"),
        ("€", "above U+00FF"),  # a head is written in latin-1
    ],
)
def test_bad_header_values(bad: str, reason: str) -> None:
    assert not is_field_value(bad)
    with pytest.raises(ValueError, match=re.escape(reason)):
        check_header_value(bad)
    with pytest.raises(ValidationError):
        HeaderEdit(position="request", key="X-A", value=bad)


@pytest.mark.parametrize("bad", ["", "X Id", "X-%Id", "Content-Length", "CONNECTION"])
def test_request_id_header_names(bad: str) -> None:
    assert check_request_id_header("X-Request-Id") == "X-Request-Id"
    with pytest.raises(ValueError):
        check_request_id_header(bad)
    with pytest.raises(ValidationError):
        HttpListenerConfig(address="127.0.0.1:80", sozu_id_header=bad)


# --------------------------------------------------------------------------- path rules


def test_path_rules_are_bytes_of_the_request_target() -> None:
    assert encode_path_value("/é") == "/é".encode()
    assert compile_path_regex("/v[0-9]+").match(b"/v12/x")
    for bad in ["/a b", "/a\r", "/a\n", "/a\x00", "/\ud800"]:
        with pytest.raises(ValueError):
            encode_path_value(bad)
    # what a bytes pattern refuses, the configuration refuses too
    for bad in ["(?u)/x", r"\N{BULLET}", "/("]:
        with pytest.raises(ValueError, match="does not compile"):
            compile_path_regex(bad)
        with pytest.raises(ValidationError):
            PathRule(kind="regex", value=bad)


# --------------------------------------------------------------------------- hostnames


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),  # one trailing dot: the same name
        ("bücher.de", "xn--bcher-kva.de"),
        ("a" * 63 + ".test", "a" * 63 + ".test"),
        (".".join(["a" * 49] * 5) + ".tst", ".".join(["a" * 49] * 5) + ".tst"),  # 253
        ("_srv.a-b.test", "_srv.a-b.test"),
    ],
)
def test_exact_hostnames(text: str, normal: str) -> None:
    assert normalize_hostname(text) == normal
    rule = parse_hostname_rule(text)
    assert (rule.kind, rule.key, rule.name, rule.pattern) == (HostKind.EXACT, normal, normal, None)


@pytest.mark.parametrize(
    "bad",
    [
        "a" * 64 + ".test",  # a 64-character label
        ".".join(["a" * 49] * 5) + ".test",  # 254 characters
        "-a.test",
        "a-.test",
        "a..b",
        "example.com..",
        "[::1]",  # an IPv6 literal is not a rule hostname
        "a b.test",
        "a:80",
        "",
    ],
)
def test_invalid_hostnames(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_hostname(bad)
    with pytest.raises(ValueError):
        parse_hostname_rule(bad)


def test_wildcards_any_and_regex_rules() -> None:
    wildcard = parse_hostname_rule("*.Example.COM.")
    assert (wildcard.kind, wildcard.key, wildcard.name) == (
        HostKind.WILDCARD,
        "*.example.com",
        "example.com",
    )
    assert parse_hostname_rule("*").kind is HostKind.ANY
    regex = parse_hostname_rule("/api[0-9]+/.Example.com")
    assert regex.kind is HostKind.REGEX
    assert regex.key == normalize_hostname_rule("/api[0-9]+/.Example.com")
    assert regex.key == "/api[0-9]+/.Example.com"  # kept as written
    assert regex.pattern is not None
    assert regex.pattern.fullmatch(b"API7.example.com")
    assert not regex.pattern.fullmatch(b"x.api7.example.com")
    for bad in ["*.*.a", "a.*.b", "**", "*.", "*.[::1]", "*.a" + "b" * 63, "//.a", "/a/.ü"]:
        with pytest.raises(ValueError):
            parse_hostname_rule(bad)


def test_certificate_names() -> None:
    assert normalize_certificate_name("*.Example.COM.") == "*.example.com"
    assert normalize_certificate_name("Bücher.de") == "xn--bcher-kva.de"
    with pytest.raises(ValueError):
        normalize_certificate_name("a.*.b")


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"Example.COM:8080", b"example.com"),
        (b"example.com.", b"example.com"),
        (b"a" * 64 + b".test", b"a" * 64 + b".test"),  # a host no rule can name: 404, not 400
        (b"[::1]:80", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"::1", None),  # an IPv6 host needs its brackets
        (b"example.com:0", None),
        (b"example.com:", None),
        (b"a@b", None),
    ],
)
def test_request_authorities(authority: bytes, host: bytes | None) -> None:
    assert parse_authority(authority) == host


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize(
    ("name", "host", "covered"),
    [
        ("example.com", "example.com", True),
        ("Example.COM", "example.com.", True),  # case and one trailing dot ignored
        ("*.example.com", "a.example.com", True),
        ("*.EXAMPLE.com", "A.Example.Com", True),  # an uppercase wildcard
        ("*.example.com", "a.example.com.", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "b.a.example.com", False),  # one label only
        ("*.example.com", ".example.com", False),
        ("*.example.com", "*.example.com", True),  # a wildcard rule, by the same name
        ("*.com", "*.example.com", False),
        ("example.com", "a.example.com", False),
        ("[::1]", "[::1]", True),
        ("*.1]", "[::ffff:1.2.3.1]", False),
    ],
)
def test_name_covers(name: str, host: str, covered: bool) -> None:
    assert name_covers(name, host) is covered
    assert names_cover(["other.test", name], host) is covered
    assert names_cover([], host) is False
    # the per-request form, on names and host folded beforehand, agrees
    folded = (fold_hostname("other.test"), fold_hostname(name))
    assert folded_names_cover(folded, fold_hostname(host)) is covered


def test_fold_and_wildcard_parent() -> None:
    assert fold_hostname("A.B.") == "a.b"
    assert fold_hostname("a.b..") == "a.b."  # only one dot is the absolute form
    assert wildcard_parent("a.b.c") == "b.c"
    assert wildcard_parent("a") == ""
    assert wildcard_parent(".b") == ""


# --------------------------------------------------------------------------- host:port


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("127.0.0.1:80", ("127.0.0.1", "80")),
        ("example.com", ("example.com", None)),
        ("example.com:", ("example.com", "")),
        ("[::1]:443", ("[::1]", "443")),
        ("[::1]", ("[::1]", None)),
        ("[fe80::1%eth0]:80", ("[fe80::1%eth0]", "80")),
    ],
)
def test_split_host_port(text: str, parts: tuple[str, str | None]) -> None:
    assert split_host_port(text) == parts


@pytest.mark.parametrize("bad", ["::1:80", "::1", "[::1", "[::1]80", "[::1]x:80"])
def test_split_host_port_refuses_ambiguous_ipv6(bad: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(bad)


def test_unbracket_and_ports() -> None:
    assert unbracket("[::1]") == "::1"
    assert unbracket("10.0.0.1") == "10.0.0.1"
    assert parse_port("8080") == 8080
    assert parse_port("080") == 80
    for bad in ["", "0", "65536", "-1", "+1", "8o", "\u0668\u0660", "8 0"]:
        with pytest.raises(ValueError):
            parse_port(bad)


def test_frontend_hostnames_follow_the_grammar() -> None:
    frontend = HttpFrontend(address="127.0.0.1:80", hostname="*.Example.COM.")
    assert frontend.hostname == "*.example.com"
    with pytest.raises(ValidationError):
        HttpFrontend(address="127.0.0.1:80", hostname="a" * 64 + ".test")
