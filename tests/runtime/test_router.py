"""Tests of the sans-I/O HTTP router: precedence, hostname and path rule kinds, live add and
remove, authority parsing, and a model-based comparison with a plain reference router."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sozu_runtime.worker.router import Router, RouterError, RouteRule, parse_authority


def router_with(*rules: tuple[str, str, str, str | None, str, str]) -> Router[str]:
    """A router holding `rules` (hostname, path kind, path value, method, position, route),
    added in order."""
    router: Router[str] = Router()
    for hostname, kind, value, method, position, route in rules:
        router.add(RouteRule(hostname, kind, value, method, position), route)
    return router


# --- stages: PRE, TREE, POST -----------------------------------------------------------------


def test_pre_beats_tree_and_tree_beats_post() -> None:
    router = router_with(
        ("example.com", "prefix", "/", None, "post", "post"),
        ("example.com", "prefix", "/", None, "tree", "tree"),
        ("example.com", "prefix", "/", None, "pre", "pre"),
    )
    assert router.lookup(b"example.com", b"/x", b"GET") == "pre"
    router.remove(RouteRule("example.com", "prefix", "/", None, "pre"))
    assert router.lookup(b"example.com", b"/x", b"GET") == "tree"
    router.remove(RouteRule("example.com", "prefix", "/", None, "tree"))
    assert router.lookup(b"example.com", b"/x", b"GET") == "post"
    router.remove(RouteRule("example.com", "prefix", "/", None, "post"))
    assert router.lookup(b"example.com", b"/x", b"GET") is None


def test_pre_rule_that_does_not_match_lets_the_tree_answer() -> None:
    router = router_with(
        ("example.com", "prefix", "/admin", None, "pre", "pre-admin"),
        ("other.com", "prefix", "/", None, "pre", "pre-other"),
        ("example.com", "prefix", "/", None, "tree", "tree"),
    )
    assert router.lookup(b"example.com", b"/admin/x", b"GET") == "pre-admin"
    assert router.lookup(b"example.com", b"/public", b"GET") == "tree"


def test_pre_and_post_take_the_first_match_in_insertion_order_not_the_longest() -> None:
    router = router_with(
        ("example.com", "prefix", "/", None, "pre", "short-first"),
        ("example.com", "prefix", "/api", None, "pre", "long-second"),
        ("*", "prefix", "/", None, "post", "any-first"),
        ("other.com", "equals", "/x", None, "post", "exact-second"),
    )
    assert router.lookup(b"example.com", b"/api/v1", b"GET") == "short-first"
    assert router.lookup(b"other.com", b"/x", b"GET") == "any-first"


def test_post_answers_when_the_selected_tree_entry_has_no_matching_path() -> None:
    router = router_with(
        ("example.com", "prefix", "/api", None, "tree", "api"),
        ("*", "prefix", "/", None, "post", "fallback"),
    )
    assert router.lookup(b"example.com", b"/api", b"GET") == "api"
    assert router.lookup(b"example.com", b"/other", b"GET") == "fallback"
    assert router.lookup(b"unknown.org", b"/", b"GET") == "fallback"


def test_pre_and_post_rules_match_on_every_criterion() -> None:
    router = router_with(
        ("*.example.com", "equals", "/x?y", "GET", "pre", "wild-equals-get"),
        ("/api[0-9]/.example.com", "regex", "/v[0-9]+/", None, "post", "regex-host"),
    )
    assert router.lookup(b"a.example.com", b"/x?y", b"GET") == "wild-equals-get"
    assert router.lookup(b"a.example.com", b"/x?y", b"POST") is None
    assert router.lookup(b"a.example.com", b"/x", b"GET") is None
    assert router.lookup(b"example.com", b"/x?y", b"GET") is None
    assert router.lookup(b"b.a.example.com", b"/x?y", b"GET") is None
    assert router.lookup(b"api7.example.com", b"/v2/users", b"PUT") == "regex-host"
    assert router.lookup(b"api7.example.com", b"/users/v2/", b"PUT") is None
    assert router.lookup(b"api77.example.com", b"/v2/", b"PUT") is None


# --- host entry selection in the TREE --------------------------------------------------------


def test_host_precedence_exact_then_wildcard_then_regex_then_any() -> None:
    router = router_with(
        ("*", "prefix", "/", None, "tree", "any"),
        ("/[a-z]+/.example.com", "prefix", "/", None, "tree", "regex"),
        ("*.example.com", "prefix", "/", None, "tree", "wildcard"),
        ("api.example.com", "prefix", "/", None, "tree", "exact"),
    )
    assert router.lookup(b"api.example.com", b"/", b"GET") == "exact"
    router.remove(RouteRule("api.example.com", "prefix", "/", None, "tree"))
    assert router.lookup(b"api.example.com", b"/", b"GET") == "wildcard"
    router.remove(RouteRule("*.example.com", "prefix", "/", None, "tree"))
    assert router.lookup(b"api.example.com", b"/", b"GET") == "regex"
    router.remove(RouteRule("/[a-z]+/.example.com", "prefix", "/", None, "tree"))
    assert router.lookup(b"api.example.com", b"/", b"GET") == "any"
    router.remove(RouteRule("*", "prefix", "/", None, "tree"))
    assert router.lookup(b"api.example.com", b"/", b"GET") is None


def test_no_fallback_to_a_less_specific_host_when_paths_do_not_match() -> None:
    router = router_with(
        ("*", "prefix", "", None, "tree", "any"),
        ("/w[a-z]+/.example.org", "prefix", "/w", None, "tree", "regex-org"),
        ("/.*/", "prefix", "", None, "tree", "regex"),
        ("*.example.com", "prefix", "", None, "tree", "wildcard"),
        ("api.example.com", "prefix", "/api", None, "tree", "exact-api"),
        ("web.example.com", "equals", "/", "GET", "tree", "web-root"),
    )
    assert router.lookup(b"api.example.com", b"/api/x", b"GET") == "exact-api"
    assert router.lookup(b"api.example.com", b"/other", b"GET") is None
    assert router.lookup(b"web.example.com", b"/", b"POST") is None
    assert router.lookup(b"other.example.com", b"/anything", b"GET") == "wildcard"
    assert router.lookup(b"www.example.org", b"/x", b"GET") is None
    assert router.lookup(b"other.org", b"/x", b"GET") == "regex"


def test_regex_hostnames_are_tried_in_insertion_order_and_lose_their_place_when_emptied() -> None:
    router = router_with(
        ("/[a-z]+/.example.com", "prefix", "/", None, "tree", "letters"),
        ("/api.*/", "prefix", "/", None, "tree", "api-anything"),
    )
    assert router.lookup(b"api.example.com", b"/", b"GET") == "letters"
    assert router.lookup(b"api.example.org", b"/", b"GET") == "api-anything"
    router.remove(RouteRule("/[a-z]+/.example.com", "prefix", "/", None, "tree"))
    router.add(RouteRule("/[a-z]+/.example.com", "prefix", "/", None, "tree"), "letters-again")
    assert router.lookup(b"api.example.com", b"/", b"GET") == "api-anything"
    assert router.lookup(b"web.example.com", b"/", b"GET") == "letters-again"


def test_regex_hostname_keeps_its_place_while_it_has_rules() -> None:
    router = router_with(
        ("/[a-z]+/.example.com", "prefix", "/a", None, "tree", "letters-a"),
        ("/api.*/", "prefix", "/", None, "tree", "api-anything"),
        ("/[a-z]+/.example.com", "prefix", "/", None, "tree", "letters-root"),
    )
    router.remove(RouteRule("/[a-z]+/.example.com", "prefix", "/a", None, "tree"))
    assert router.lookup(b"api.example.com", b"/x", b"GET") == "letters-root"


@pytest.mark.parametrize("position", ["pre", "tree", "post"])
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"a.example.com", "wildcard"),
        (b"x-1_y.example.com", "wildcard"),
        (b"example.com", None),
        (b"b.a.example.com", None),
        (b"aexample.com", None),
        (b"a.example.com.evil", None),
        (b"a.example.org", None),
    ],
)
def test_wildcard_matches_exactly_one_extra_label(
    position: str, host: bytes, expected: str | None
) -> None:
    router = router_with(("*.example.com", "prefix", "", None, position, "wildcard"))
    assert router.lookup(host, b"/", b"GET") == expected


@pytest.mark.parametrize("position", ["pre", "tree", "post"])
def test_star_alone_matches_every_host(position: str) -> None:
    router = router_with(("*", "prefix", "/", None, position, "any"))
    for host in (b"example.com", b"a.b.c.d", b"localhost", b"127.0.0.1", b"[::1]"):
        assert router.lookup(host, b"/", b"GET") == "any"


@pytest.mark.parametrize(
    "hostname",
    [
        "*example.com",
        "a.*.example.com",
        "example.*",
        "*.*.example.com",
        "**.example.com",
        "*.",
        "*.[::1]",
        "ex*ample.com",
    ],
)
def test_misplaced_star_is_invalid(hostname: str) -> None:
    with pytest.raises(RouterError):
        Router[str]().add(RouteRule(hostname, "prefix", "/", None, "tree"), "x")


@pytest.mark.parametrize("position", ["pre", "tree", "post"])
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"api.example.com", "regex"),
        (b"API.Example.COM", "regex"),
        (b"evil.api.example.com", None),
        (b"api.example.com.evil.org", None),
        (b"api-example.com", None),
        (b"api.exampleXcom", None),
        (b"1.example.com", None),
    ],
)
def test_regex_hostname_is_anchored_case_insensitive_and_literal_outside_slashes(
    position: str, host: bytes, expected: str | None
) -> None:
    router = router_with(("/[a-z]+/.example.com", "prefix", "/", None, position, "regex"))
    assert router.lookup(host, b"/", b"GET") == expected


def test_whole_regex_hostname_between_slashes() -> None:
    router = router_with(("/api-[0-9]+\\.example\\.com/", "prefix", "/", None, "tree", "api"))
    assert router.lookup(b"api-42.example.com", b"/", b"GET") == "api"
    assert router.lookup(b"api-.example.com", b"/", b"GET") is None
    assert router.lookup(b"x.api-42.example.com", b"/", b"GET") is None
    assert router.lookup(b"api-42.example.com.x", b"/", b"GET") is None


def test_regex_hostname_with_several_regex_parts() -> None:
    router = router_with(("/[a-z]+/.example./com|org/", "prefix", "/", None, "tree", "multi"))
    assert router.lookup(b"www.example.com", b"/", b"GET") == "multi"
    assert router.lookup(b"www.example.org", b"/", b"GET") == "multi"
    # The alternation is grouped inside its own part, it does not split the whole pattern.
    assert router.lookup(b"org", b"/", b"GET") is None
    assert router.lookup(b"www.example.net", b"/", b"GET") is None


@pytest.mark.parametrize(
    "hostname",
    [
        "/[a-z/.example.com",  # unclosed slash
        "/[a-z+/.example.com/",  # unterminated character class
        "/a)(b/.example.com",  # balanced only by the grouping around it
        "//.example.com",  # empty expression
        "/(?P<x>a)/./(?P<x>b)/",  # the same group name in two parts
        "/a/.ex ample.com",  # space in the literal part
        "/a/.*.com",  # star in the literal part
        "/ü/.example.com",  # not ASCII
    ],
)
def test_invalid_regex_hostnames_raise(hostname: str) -> None:
    router: Router[str] = Router()
    with pytest.raises(RouterError):
        router.add(RouteRule(hostname, "prefix", "/", None, "tree"), "x")
    assert len(router) == 0


# --- hostname normalisation ------------------------------------------------------------------


@pytest.mark.parametrize("position", ["pre", "tree", "post"])
def test_uppercase_idna_and_trailing_dot_hostnames_are_normalised(position: str) -> None:
    router = router_with(
        ("Bücher.Example", "prefix", "/", None, position, "idna"),
        ("EXAMPLE.COM.", "prefix", "/", None, position, "upper"),
        ("*.Straße.DE", "prefix", "/", None, position, "wild-idna"),
    )
    assert router.lookup(b"xn--bcher-kva.example", b"/", b"GET") == "idna"
    assert router.lookup(b"example.com", b"/", b"GET") == "upper"
    assert router.lookup(b"www.strasse.de", b"/", b"GET") == "wild-idna"


def test_differently_spelled_hostnames_are_the_same_rule() -> None:
    router = router_with(("Bücher.Example", "prefix", "/", None, "tree", "idna"))
    with pytest.raises(RouterError):
        router.add(RouteRule("xn--bcher-kva.example.", "prefix", "/", None, "tree"), "again")
    assert router.remove(RouteRule("BÜCHER.example", "prefix", "/", None, "tree")) == "idna"
    assert len(router) == 0


def test_ipv6_literal_hostname_is_refused_as_the_configuration_refuses_it() -> None:
    # A rule hostname is a domain name (the configuration's rule): a request naming an IPv6
    # literal host is routed by the '*' and regex rules only.
    with pytest.raises(RouterError):
        router_with(("[::1]", "prefix", "/", None, "tree", "loopback"))
    router = router_with(("*", "prefix", "/", None, "tree", "any"))
    assert router.lookup(b"[::1]", b"/", b"GET") == "any"


@pytest.mark.parametrize(
    "hostname", ["a" * 64 + ".test", "-a.test", "a-.test", ".".join(["a" * 50] * 5) + ".test"]
)
def test_hostnames_the_configuration_refuses_are_refused(hostname: str) -> None:
    with pytest.raises(RouterError):
        Router[str]().add(RouteRule(hostname), "x")


@pytest.mark.parametrize(
    "hostname",
    ["", ".", "a..b", ".a", "a b", "a@b", "a:80", "[::g]", "[::1", "é..com", "a\x00"],
)
def test_invalid_hostnames_raise(hostname: str) -> None:
    with pytest.raises(RouterError):
        Router[str]().add(RouteRule(hostname, "prefix", "/", None, "tree"), "x")


# --- path rules inside an entry --------------------------------------------------------------


def test_equals_beats_regex_beats_prefix() -> None:
    router = router_with(
        ("example.com", "prefix", "/api/users", None, "tree", "prefix"),
        ("example.com", "regex", "/api/[a-z]+", None, "tree", "regex"),
        ("example.com", "equals", "/api/users", None, "tree", "equals"),
    )
    assert router.lookup(b"example.com", b"/api/users", b"GET") == "equals"
    assert router.lookup(b"example.com", b"/api/users/1", b"GET") == "regex"
    assert router.lookup(b"example.com", b"/api/users?x=1", b"GET") == "regex"
    router.remove(RouteRule("example.com", "regex", "/api/[a-z]+", None, "tree"))
    assert router.lookup(b"example.com", b"/api/users/1", b"GET") == "prefix"
    router.remove(RouteRule("example.com", "equals", "/api/users", None, "tree"))
    assert router.lookup(b"example.com", b"/api/users", b"GET") == "prefix"


def test_equals_compares_the_whole_target_with_its_query() -> None:
    router = router_with(("example.com", "equals", "/search?q=1", None, "tree", "equals"))
    assert router.lookup(b"example.com", b"/search?q=1", b"GET") == "equals"
    assert router.lookup(b"example.com", b"/search", b"GET") is None
    assert router.lookup(b"example.com", b"/search?q=12", b"GET") is None


def test_longest_prefix_wins_whatever_the_insertion_order() -> None:
    router = router_with(
        ("example.com", "prefix", "/api/v1", None, "tree", "v1"),
        ("example.com", "prefix", "", None, "tree", "empty"),
        ("example.com", "prefix", "/api/v1/users", None, "tree", "users"),
        ("example.com", "prefix", "/api", None, "tree", "api"),
    )
    assert router.lookup(b"example.com", b"/api/v1/users/7", b"GET") == "users"
    assert router.lookup(b"example.com", b"/api/v1/groups", b"GET") == "v1"
    assert router.lookup(b"example.com", b"/api/v2", b"GET") == "api"
    assert router.lookup(b"example.com", b"/", b"GET") == "empty"
    assert router.lookup(b"example.com", b"*", b"OPTIONS") == "empty"


def test_prefix_is_a_byte_prefix_not_a_segment_prefix() -> None:
    router = router_with(("example.com", "prefix", "/api", None, "tree", "api"))
    assert router.lookup(b"example.com", b"/apiary", b"GET") == "api"
    assert router.lookup(b"example.com", b"/ap", b"GET") is None


def test_first_matching_regex_in_insertion_order() -> None:
    router = router_with(
        ("example.com", "regex", "/[a-z]+/[0-9]+", None, "tree", "first"),
        ("example.com", "regex", "/users/[0-9]+", None, "tree", "second"),
    )
    assert router.lookup(b"example.com", b"/users/12", b"GET") == "first"
    router.remove(RouteRule("example.com", "regex", "/[a-z]+/[0-9]+", None, "tree"))
    router.add(RouteRule("example.com", "regex", "/[a-z]+/[0-9]+", None, "tree"), "first-again")
    assert router.lookup(b"example.com", b"/users/12", b"GET") == "second"


@pytest.mark.parametrize("position", ["pre", "tree", "post"])
def test_path_regex_is_anchored_at_the_start_only(position: str) -> None:
    router = router_with(
        ("example.com", "regex", "/api/[0-9]+", None, position, "open-end"),
        ("other.com", "regex", "/api/[0-9]+$", None, position, "closed-end"),
    )
    router.add(RouteRule("example.com", "regex", "/get/[0-9]+", "GET", position), "get-open-end")
    assert router.lookup(b"example.com", b"/api/12/more", b"GET") == "open-end"
    assert router.lookup(b"example.com", b"/v2/api/12", b"GET") is None
    assert router.lookup(b"example.com", b"/get/12/more", b"GET") == "get-open-end"
    assert router.lookup(b"example.com", b"/v2/get/12", b"GET") is None
    assert router.lookup(b"other.com", b"/api/12", b"GET") == "closed-end"
    assert router.lookup(b"other.com", b"/api/12/more", b"GET") is None
    assert router.lookup(b"other.com", b"/x/api/12", b"GET") is None


def test_path_regex_is_case_sensitive() -> None:
    router = router_with(("example.com", "regex", "/api", None, "tree", "api"))
    assert router.lookup(b"example.com", b"/API", b"GET") is None


def test_invalid_path_regex_raises() -> None:
    router: Router[str] = Router()
    with pytest.raises(RouterError):
        router.add(RouteRule("example.com", "regex", "/api/(", None, "tree"), "x")
    assert len(router) == 0


# --- methods ---------------------------------------------------------------------------------


def test_exact_method_beats_any_method_for_equals() -> None:
    router = router_with(
        ("example.com", "equals", "/x", None, "tree", "any"),
        ("example.com", "equals", "/x", "POST", "tree", "post"),
    )
    assert router.lookup(b"example.com", b"/x", b"POST") == "post"
    assert router.lookup(b"example.com", b"/x", b"GET") == "any"


def test_exact_method_beats_an_earlier_any_method_regex() -> None:
    router = router_with(
        ("example.com", "regex", "/x", None, "tree", "any"),
        ("example.com", "regex", "/x/[0-9]+", "DELETE", "tree", "delete"),
    )
    assert router.lookup(b"example.com", b"/x/1", b"DELETE") == "delete"
    assert router.lookup(b"example.com", b"/x/1", b"GET") == "any"


def test_exact_method_beats_any_method_at_equal_prefix_length_only() -> None:
    router = router_with(
        ("example.com", "prefix", "/api", None, "tree", "any-api"),
        ("example.com", "prefix", "/api", "GET", "tree", "get-api"),
        ("example.com", "prefix", "/", "GET", "tree", "get-root"),
        ("example.com", "prefix", "/api/long", None, "tree", "any-long"),
    )
    assert router.lookup(b"example.com", b"/api/x", b"GET") == "get-api"
    assert router.lookup(b"example.com", b"/api/x", b"PUT") == "any-api"
    assert router.lookup(b"example.com", b"/api/long", b"GET") == "any-long"
    assert router.lookup(b"example.com", b"/other", b"GET") == "get-root"
    assert router.lookup(b"example.com", b"/other", b"PUT") is None


def test_rules_for_another_method_never_match_and_lookup_goes_on() -> None:
    router = router_with(
        ("example.com", "equals", "/x", "POST", "tree", "equals-post"),
        ("example.com", "regex", "/x", "PUT", "tree", "regex-put"),
        ("example.com", "prefix", "/x", "PATCH", "tree", "prefix-patch"),
        ("example.com", "prefix", "/", None, "tree", "root"),
    )
    assert router.lookup(b"example.com", b"/x", b"GET") == "root"
    assert router.lookup(b"example.com", b"/x", b"PUT") == "regex-put"
    assert router.lookup(b"example.com", b"/x", b"PATCH") == "prefix-patch"


def test_method_comparison_is_exact_bytes() -> None:
    router = router_with(("example.com", "prefix", "/", "GET", "pre", "get"))
    assert router.lookup(b"example.com", b"/", b"GET") == "get"
    assert router.lookup(b"example.com", b"/", b"get") is None
    assert router.lookup(b"example.com", b"/", b"GETX") is None


@pytest.mark.parametrize("method", ["", "GE T", "GET\r\n", "GÉT"])
def test_invalid_method_raises(method: str) -> None:
    with pytest.raises(RouterError):
        Router[str]().add(RouteRule("example.com", "prefix", "/", method, "tree"), "x")


# --- add, remove, errors ---------------------------------------------------------------------

ALL_HOST_KINDS = ["www.example.com", "*.example.com", "*", "/[a-z]+/.example.com"]
ALL_PATH_RULES = [("prefix", "/a"), ("regex", "/a"), ("equals", "/a")]


@pytest.mark.parametrize("position", ["pre", "tree", "post"])
@pytest.mark.parametrize("hostname", ALL_HOST_KINDS)
@pytest.mark.parametrize(("kind", "value"), ALL_PATH_RULES)
@pytest.mark.parametrize("method", [None, "GET"])
def test_add_remove_and_add_again_every_kind_of_rule(
    position: str, hostname: str, kind: str, value: str, method: str | None
) -> None:
    router: Router[str] = Router()
    router.add(RouteRule(hostname, kind, value, method, position), "first")
    assert len(router) == 1
    assert router.lookup(b"www.example.com", b"/a", b"GET") == "first"
    assert router.remove(RouteRule(hostname, kind, value, method, position)) == "first"
    assert len(router) == 0
    assert router.lookup(b"www.example.com", b"/a", b"GET") is None
    with pytest.raises(RouterError):
        router.remove(RouteRule(hostname, kind, value, method, position))
    router.add(RouteRule(hostname, kind, value, method, position), "second")
    assert len(router) == 1
    assert router.lookup(b"www.example.com", b"/a", b"GET") == "second"


def test_removing_one_rule_leaves_its_neighbours() -> None:
    router = router_with(
        ("example.com", "equals", "/a", None, "tree", "equals-any"),
        ("example.com", "equals", "/a", "GET", "tree", "equals-get"),
        ("example.com", "prefix", "/a", None, "tree", "prefix-any"),
        ("example.com", "prefix", "/a", "GET", "tree", "prefix-get"),
        ("example.com", "regex", "/b", "GET", "tree", "regex-get"),
        ("example.com", "regex", "/b", "POST", "tree", "regex-post"),
    )
    assert router.remove(RouteRule("example.com", "equals", "/a", "GET", "tree")) == "equals-get"
    assert router.lookup(b"example.com", b"/a", b"GET") == "equals-any"
    assert router.remove(RouteRule("example.com", "equals", "/a", None, "tree")) == "equals-any"
    assert router.lookup(b"example.com", b"/a", b"GET") == "prefix-get"
    assert router.remove(RouteRule("example.com", "prefix", "/a", "GET", "tree")) == "prefix-get"
    assert router.lookup(b"example.com", b"/a", b"GET") == "prefix-any"
    assert router.remove(RouteRule("example.com", "regex", "/b", "GET", "tree")) == "regex-get"
    assert router.lookup(b"example.com", b"/b", b"GET") is None
    assert router.lookup(b"example.com", b"/b", b"POST") == "regex-post"
    assert len(router) == 2


def test_duplicate_add_raises_and_keeps_the_first_route() -> None:
    router = router_with(("example.com", "prefix", "/", None, "tree", "first"))
    with pytest.raises(RouterError):
        router.add(RouteRule("example.com", "prefix", "/", None, "tree"), "second")
    assert router.lookup(b"example.com", b"/", b"GET") == "first"
    assert len(router) == 1


def test_rules_differing_in_one_field_are_not_duplicates() -> None:
    router = router_with(
        ("example.com", "prefix", "/", None, "tree", "base"),
        ("example.com", "prefix", "/", None, "pre", "position"),
        ("example.com", "prefix", "/", "GET", "tree", "method"),
        ("example.com", "equals", "/", None, "tree", "kind"),
        ("example.com", "prefix", "/x", None, "tree", "value"),
        ("www.example.com", "prefix", "/", None, "tree", "host"),
    )
    assert len(router) == 6


def test_remove_of_an_unknown_rule_raises_and_changes_nothing() -> None:
    router = router_with(("example.com", "prefix", "/", "GET", "tree", "route"))
    for hostname, kind, value, method, position in [
        ("other.com", "prefix", "/", "GET", "tree"),
        ("example.com", "equals", "/", "GET", "tree"),
        ("example.com", "prefix", "/x", "GET", "tree"),
        ("example.com", "prefix", "/", None, "tree"),
        ("example.com", "prefix", "/", "GET", "pre"),
    ]:
        with pytest.raises(RouterError):
            router.remove(RouteRule(hostname, kind, value, method, position))
    assert len(router) == 1
    assert router.lookup(b"example.com", b"/", b"GET") == "route"


def test_unknown_path_kind_or_position_raises() -> None:
    router: Router[str] = Router()
    with pytest.raises(RouterError):
        router.add(RouteRule("example.com", "suffix", "/", None, "tree"), "x")
    with pytest.raises(RouterError):
        router.add(RouteRule("example.com", "prefix", "/", None, "middle"), "x")
    with pytest.raises(RouterError):
        router.remove(RouteRule("example.com", "PREFIX", "/", None, "tree"))
    assert len(router) == 0


def test_router_error_is_a_value_error() -> None:
    assert issubclass(RouterError, ValueError)


# --- parse_authority -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (b"example.com", b"example.com"),
        (b"example.com:8080", b"example.com"),
        (b"Example.COM", b"example.com"),
        (b"example.com.", b"example.com"),
        (b"example.com.:443", b"example.com"),
        (b"a_b-c.example.com", b"a_b-c.example.com"),
        (b"localhost", b"localhost"),
        (b"127.0.0.1:80", b"127.0.0.1"),
        (b"x:1", b"x"),
        (b"x:65535", b"x"),
        (b"x:080", b"x"),
        (b"[::1]", b"[::1]"),
        (b"[::1]:8443", b"[::1]"),
        (b"[2001:DB8::A]", b"[2001:db8::a]"),
        (b"[::ffff:192.0.2.1]:80", b"[::ffff:192.0.2.1]"),
        (b"", None),
        (b":80", None),
        (b"example.com:", None),
        (b"example.com:0", None),
        (b"example.com:00000", None),
        (b"example.com:65536", None),
        (b"example.com:999999", None),
        (b"example.com:8o", None),
        (b"example.com:-1", None),
        (b"example.com:+80", None),
        (b"example.com:80:80", None),
        (b"example.com..", None),
        (b".", None),
        (b".example.com", None),
        (b"a..b", None),
        (b"a b", None),
        (b" example.com", None),
        (b"example.com\n", None),
        (b"user@host", None),
        (b"user@host:80", None),
        (b"exa*mple.com", None),
        (b"ex%61mple.com", None),
        (b"ex\xc3\xa9mple.com", None),
        (b"example.com:\xd9\xa1", None),
        (b"[::1].", None),
        (b"[::1]x", None),
        (b"[::1]:", None),
        (b"[::1]:0", None),
        (b"[::1", None),
        (b"[]", None),
        (b"[::g]", None),
        (b"[1.2.3.4]", None),
        (b"[fe80::1%25eth0]", None),
        (b"::1", None),
    ],
)
def test_parse_authority(authority: bytes, expected: bytes | None) -> None:
    assert parse_authority(authority) == expected


_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def reference_parse_authority(authority: bytes) -> bytes | None:
    """The authority grammar written the plain way: split, then check each piece."""
    text = authority.decode("latin-1")

    def fits_port_range(port: str) -> bool:
        digits = 1 <= len(port) <= 5 and all(c in "0123456789" for c in port)
        return digits and 1 <= int(port) <= 65535

    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not (rest.startswith(":") and fits_port_range(rest[1:])):
            return None
        inner = host[1:-1]
        if not inner or any(c not in "0123456789abcdefABCDEF:." for c in inner):
            return None
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return None
        return host.lower().encode()
    host, colon, port = text.partition(":")
    if colon and not fits_port_range(port):
        return None
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if not all(label and set(label) <= _LABEL_CHARACTERS for label in labels):
        return None
    return host.lower().encode()


@settings(max_examples=500)
@given(st.text(alphabet="aZ9-_.:[]@ %f01256", max_size=14))
def test_parse_authority_agrees_with_a_plain_reference(text: str) -> None:
    authority = text.encode("ascii")
    assert parse_authority(authority) == reference_parse_authority(authority)


# --- model-based comparison with a reference router ------------------------------------------

# Rule hostnames of every kind; the regex ones map to the expression they stand for.
REFERENCE_REGEX_HOSTS = {"/[ab]/.a.com": r"[ab]\.a\.com", "/.+/.com": r".+\.com"}
RULE_HOSTS = ["a.com", "b.a.com", "*.a.com", "*.com", "*", *REFERENCE_REGEX_HOSTS]
RULE_PATHS = {
    "prefix": ["", "/", "/a", "/ab"],
    "equals": ["/", "/a", "/ab?x"],
    "regex": ["/a", "/[ab]+$", "/a.", "b"],
}
RULE_METHODS = [None, "GET", "POST"]
POSITIONS = ["pre", "tree", "post"]
REQUEST_HOSTS = ["a.com", "b.a.com", "c.a.com", "x.b.a.com", "com", "b.com"]
REQUEST_PATHS = ["/", "/a", "/ab", "/ab?x", "/b", "/a/b", "/ba"]
REQUEST_METHODS = ["GET", "POST", "PUT"]


@dataclass(frozen=True)
class ReferenceRule:
    host: str
    kind: str
    value: str
    method: str | None
    position: str
    route: int

    @property
    def key(self) -> tuple[str, str, str, str | None, str]:
        return (self.host, self.kind, self.value, self.method, self.position)


def reference_host_matches(rule_host: str, host: str) -> bool:
    if rule_host == "*":
        return True
    if rule_host in REFERENCE_REGEX_HOSTS:
        return re.fullmatch(REFERENCE_REGEX_HOSTS[rule_host], host, re.IGNORECASE) is not None
    if rule_host.startswith("*."):
        labels = host.split(".")
        return len(labels) >= 2 and labels[0] != "" and ".".join(labels[1:]) == rule_host[2:]
    return host == rule_host


def reference_path_matches(kind: str, value: str, path: str) -> bool:
    if kind == "prefix":
        return path.startswith(value)
    if kind == "equals":
        return path == value
    return re.match(value, path) is not None


class ReferenceRouter:
    """The documented semantics computed naively from a flat list of rules."""

    def __init__(self) -> None:
        self.rules: list[ReferenceRule] = []
        # Regex hostnames in the order their first TREE rule was added.
        self.regex_host_order: list[str] = []

    def add(self, new: ReferenceRule) -> None:
        self.rules.append(new)
        if (
            new.position == "tree"
            and new.host in REFERENCE_REGEX_HOSTS
            and new.host not in self.regex_host_order
        ):
            self.regex_host_order.append(new.host)

    def remove(self, key: tuple[str, str, str, str | None, str]) -> int:
        (old,) = [r for r in self.rules if r.key == key]
        self.rules.remove(old)
        if old.host in self.regex_host_order and not any(
            r.position == "tree" and r.host == old.host for r in self.rules
        ):
            self.regex_host_order.remove(old.host)
        return old.route

    def listed(self, position: str, host: str, path: str, method: str) -> int | None:
        for r in self.rules:
            if (
                r.position == position
                and r.method in (None, method)
                and reference_host_matches(r.host, host)
                and reference_path_matches(r.kind, r.value, path)
            ):
                return r.route
        return None

    def tree_entry(self, host: str) -> list[ReferenceRule]:
        """The TREE rules of the most specific hostname matching `host`, in insertion order."""
        tree = [r for r in self.rules if r.position == "tree"]
        hosts = {r.host for r in tree}
        candidates = [h for h in hosts if "*" not in h and "/" not in h and h == host]
        candidates += [h for h in hosts if h.startswith("*.") and reference_host_matches(h, host)]
        candidates += [h for h in self.regex_host_order if reference_host_matches(h, host)]
        candidates += [h for h in hosts if h == "*"]
        return [r for r in tree if candidates and r.host == candidates[0]]

    @staticmethod
    def tree(entry: list[ReferenceRule], path: str, method: str) -> int | None:
        usable = [r for r in entry if r.method in (None, method)]

        def best(rules: list[ReferenceRule]) -> ReferenceRule | None:
            exact = [r for r in rules if r.method == method]
            candidates = exact or rules
            return candidates[0] if candidates else None

        equals = best([r for r in usable if r.kind == "equals" and r.value == path])
        if equals is not None:
            return equals.route
        regexes = best([r for r in usable if r.kind == "regex" and re.match(r.value, path)])
        if regexes is not None:
            return regexes.route
        prefixes = [r for r in usable if r.kind == "prefix" and path.startswith(r.value)]
        if not prefixes:
            return None
        longest = max(len(r.value) for r in prefixes)
        chosen = best([r for r in prefixes if len(r.value) == longest])
        assert chosen is not None
        return chosen.route

    def lookup(self, host: str, path: str, method: str, entry: list[ReferenceRule]) -> int | None:
        """The route for a request; `entry` is ``self.tree_entry(host)``, computed once per
        host by the caller."""
        found = self.listed("pre", host, path, method)
        if found is None:
            found = self.tree(entry, path, method)
        if found is None:
            found = self.listed("post", host, path, method)
        return found


rule_specs = st.tuples(
    st.sampled_from(RULE_HOSTS),
    st.sampled_from([(kind, value) for kind, values in RULE_PATHS.items() for value in values]),
    st.sampled_from(RULE_METHODS),
    st.sampled_from(POSITIONS),
)


class RouterComparison(RuleBasedStateMachine):
    """Random add/remove sequences; after each step every request of the small alphabet must
    get the same route from the router and from the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.router: Router[int] = Router()
        self.reference = ReferenceRouter()
        self.next_route = 0

    @rule(spec=rule_specs)
    def add(self, spec: tuple[str, tuple[str, str], str | None, str]) -> None:
        host, (kind, value), method, position = spec
        self.next_route += 1
        new = ReferenceRule(host, kind, value, method, position, self.next_route)
        if any(r.key == new.key for r in self.reference.rules):
            with pytest.raises(RouterError):
                self.router.add(RouteRule(host, kind, value, method, position), new.route)
        else:
            self.router.add(RouteRule(host, kind, value, method, position), new.route)
            self.reference.add(new)

    @rule(spec=rule_specs)
    def remove_any(self, spec: tuple[str, tuple[str, str], str | None, str]) -> None:
        host, (kind, value), method, position = spec
        key = (host, kind, value, method, position)
        if any(r.key == key for r in self.reference.rules):
            assert self.router.remove(RouteRule(*key)) == self.reference.remove(key)
        else:
            with pytest.raises(RouterError):
                self.router.remove(RouteRule(*key))

    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        if not self.reference.rules:
            return
        existing = data.draw(st.sampled_from(self.reference.rules))
        assert self.router.remove(RouteRule(*existing.key)) == self.reference.remove(existing.key)

    @invariant()
    def same_routes(self) -> None:
        assert len(self.router) == len(self.reference.rules)
        for host in REQUEST_HOSTS:
            entry = self.reference.tree_entry(host)
            for path in REQUEST_PATHS:
                for method in REQUEST_METHODS:
                    expected = self.reference.lookup(host, path, method, entry)
                    found = self.router.lookup(host.encode(), path.encode(), method.encode())
                    assert found == expected, (host, path, method)


# No explain phase: on a failure it replays the machine hundreds of times (over a minute) to
# annotate the report; the shrunk step list is what a reader needs.
RouterComparison.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
test_router_agrees_with_the_reference = RouterComparison.TestCase
