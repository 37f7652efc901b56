"""Request routing for one HTTP or HTTPS listener, without I/O.

A :class:`Router` maps a request's host, request-target and method to a *route* (whatever the
worker attaches to a frontend: a cluster, a deny marker, a rich frontend). Each listener of each
worker owns one router; frontends are added and removed live with :meth:`Router.add` and
:meth:`Router.remove`, and every request is resolved with :meth:`Router.lookup`.

Host of a request
    The ``Host`` header (HTTP/1.1) or ``:authority`` (HTTP/2) is validated with
    :func:`parse_authority`: ``hostname[:port]`` where the hostname is dot-separated labels of
    ASCII letters, digits, ``-`` and ``_`` (or an IPv6 literal in brackets) and the port, if
    present, is 1-65535. The port and one trailing dot are dropped and the hostname is
    lowercased. An invalid authority is answered with 400.

Hostname rules
    Every rule names a hostname, parsed and normalised when it is added by
    :func:`sozu_config.grammar.parse_hostname_rule`, the rule the configuration applies too:
    internationalised labels are converted to their ASCII ``xn--`` form (IDNA 2003, Python's
    ``idna`` codec, which maps ``ß`` to ``ss``; write the ``xn--`` form to route an IDNA 2008
    name), the whole is lowercased and one trailing dot is dropped; labels are letters, digits,
    ``_`` and inner ``-``, 1-63 characters, 253 in all. A hostname is one of:

    * **exact** -- ``example.com`` matches that host only (not an IPv6 literal);
    * **wildcard** -- ``*.example.com`` matches a host with exactly one more label on the left
      (``a.example.com``), neither ``example.com`` nor ``b.a.example.com``; a ``*`` anywhere
      else in a hostname is invalid;
    * **any** -- ``*`` alone matches every host;
    * **regex** -- a hostname containing ``/``: each ``/.../`` pair encloses a regular expression
      (Python ``re`` syntax, ASCII only), the text outside the slashes is literal, and the whole
      must match the full request host, case-insensitively. ``/[a-z]+/.example.com`` matches
      ``api.example.com``; ``/api-[0-9]+\\.example\\.com/`` matches ``api-7.example.com``. Each
      regex part must be a valid expression on its own.

Path rules, matched against the raw request-target (origin-form, query string included)
    * **prefix** -- the target starts with the value (the empty prefix matches everything);
    * **equals** -- the target is exactly the value, query string included;
    * **regex** -- the expression matches at the start of the target (``re.match``: anchored at
      the start, not at the end unless the expression ends with ``$``); case-sensitive.

Method rules
    A rule either names one method (an RFC 9110 token), compared byte for byte with the
    request's (``GET`` does not match ``get``), or applies to any method. A rule naming another
    method never matches: the lookup goes on as if the rule did not exist.

Lookup order
    1. **PRE** rules, in the order they were added: the first rule whose hostname, path and
       method all match wins.
    2. Else the **TREE**. First the most specific *host entry* is selected: the exact hostname,
       else the wildcard of the host's parent domain, else the first regex hostname that
       matches (regex hostnames are kept in the order their first TREE rule was added; a regex
       hostname whose last TREE rule is removed loses its place), else ``*``. Only that entry is
       searched -- when none of its rules match, the lookup does not fall back to a less
       specific hostname (sōzu's and nginx's server-name semantics). Within the entry:

       a. an **equals** rule equal to the target; a rule for the request's method beats an
          any-method rule;
       b. else the first matching **regex** rule, in the order added; a rule for the request's
          method beats any any-method rule;
       c. else the longest matching **prefix**; at equal length a rule for the request's method
          beats an any-method rule.
    3. Else **POST** rules, like PRE.
    4. Else no route: the proxy answers 404.

A rule is a :class:`RouteRule`. Two rules are the same rule when their normalised hostname, path
kind, path value, method and position are equal; adding a rule twice is an error, and every
kind of rule, equals rules included, can be removed.

Departures from sōzu 2.1, on purpose: path regexes are anchored at the start instead of matching
anywhere; equals rules can be removed; hostnames are compared case-insensitively; a ``*`` label
means the same thing in every position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from sozu_config.grammar import (
    HostKind,
    HostnameRule,
    compile_path_regex,
    encode_path_value,
    is_token,
    parse_authority,
    parse_hostname_rule,
)
from sozu_config.models import HttpFrontend, PathRuleKind, RulePosition

__all__ = ["R", "RouteRule", "Router", "RouterError", "parse_authority"]

R = TypeVar("R")


class RouterError(ValueError):
    """A rule cannot be added or removed: invalid hostname, path regex, method, kind or
    position, a duplicate on add, or an unknown rule on remove."""


# Path kinds and host kinds as small ints: the hot path compares ints, not enum members.
_PATH_KIND_CODES: Final[dict[PathRuleKind, int]] = {
    kind: code for code, kind in enumerate(PathRuleKind)
}
_PREFIX: Final = _PATH_KIND_CODES[PathRuleKind.PREFIX]
_EQUALS: Final = _PATH_KIND_CODES[PathRuleKind.EQUALS]
_REGEX: Final = _PATH_KIND_CODES[PathRuleKind.REGEX]

_HOST_EXACT: Final = int(HostKind.EXACT)
_HOST_WILDCARD: Final = int(HostKind.WILDCARD)
_HOST_REGEX: Final = int(HostKind.REGEX)


@dataclass(frozen=True)
class RouteRule:
    """What a frontend asks the router to match: hostname, path rule, method (None: any) and
    position. Kinds and positions may be given by their wire names (``"prefix"``, ``"tree"``);
    an unknown name raises :class:`RouterError`."""

    hostname: str
    path_kind: PathRuleKind = PathRuleKind.PREFIX
    path_value: str = ""
    method: str | None = None
    position: RulePosition = RulePosition.TREE

    def __post_init__(self) -> None:
        try:
            kind = PathRuleKind(self.path_kind)
        except ValueError:
            raise RouterError(f"unknown path kind {self.path_kind!r}") from None
        try:
            position = RulePosition(self.position)
        except ValueError:
            raise RouterError(f"unknown position {self.position!r}") from None
        object.__setattr__(self, "path_kind", kind)
        object.__setattr__(self, "position", position)

    @classmethod
    def of(cls, frontend: HttpFrontend) -> RouteRule:
        """The rule of an HTTP frontend of the configuration."""
        return cls(
            frontend.hostname,
            frontend.path.kind,
            frontend.path.value,
            frontend.method,
            frontend.position,
        )


def _parse_hostname(hostname: str) -> HostnameRule:
    """The parsed hostname of a rule (see :func:`sozu_config.grammar.parse_hostname_rule`)."""
    try:
        return parse_hostname_rule(hostname)
    except (ValueError, TypeError) as error:
        raise RouterError(str(error)) from error


def _parse_method(method: str | None) -> bytes | None:
    """Return the method as bytes (None for any method); it must be an RFC 9110 token."""
    if method is None:
        return None
    if not is_token(method):
        raise RouterError(f"invalid method {method!r}")
    return method.encode("ascii")


# --- rules and host entries ------------------------------------------------------------------


class _Rule(Generic[R]):
    """One rule with everything the hot path needs pre-computed.

    `host_name` is the exact hostname, or for a wildcard the suffix ``.parent`` that the host
    must end with (PRE/POST matching). `path` is the prefix or equals value in bytes;
    `path_pattern` is set for regex paths. `method` None means any method. Rules compare by
    identity, so two rules are never confused when one is removed.
    """

    __slots__ = (
        "host_kind",
        "host_name",
        "host_pattern",
        "method",
        "path",
        "path_kind",
        "path_pattern",
        "route",
    )

    def __init__(
        self,
        *,
        host_kind: int,
        host_name: bytes,
        host_pattern: re.Pattern[bytes] | None,
        path_kind: int,
        path: bytes,
        path_pattern: re.Pattern[bytes] | None,
        method: bytes | None,
        route: R,
    ) -> None:
        self.host_kind = host_kind
        self.host_name = host_name
        self.host_pattern = host_pattern
        self.path_kind = path_kind
        self.path = path
        self.path_pattern = path_pattern
        self.method = method
        self.route = route


# A regex path rule as stored in a host entry: its compiled pattern next to it, so that the
# scan calls the pattern without going through the optional attribute.
_RegexRule = tuple[re.Pattern[bytes], _Rule[R]]


class _MethodSlot(Generic[R]):
    """The rules sharing one equals value or one prefix in a host entry: at most one per
    method and at most one for any method (duplicates are refused on add)."""

    __slots__ = ("any_method", "by_method")

    def __init__(self) -> None:
        self.by_method: dict[bytes, _Rule[R]] = {}
        self.any_method: _Rule[R] | None = None

    def pick(self, method: bytes) -> _Rule[R] | None:
        """The rule for `method` if there is one, else the any-method rule, else None."""
        rule = self.by_method.get(method)
        return rule if rule is not None else self.any_method

    def put(self, rule: _Rule[R]) -> None:
        """Store `rule` under its method."""
        if rule.method is None:
            self.any_method = rule
        else:
            self.by_method[rule.method] = rule

    def take(self, method: bytes | None) -> None:
        """Forget the rule stored under `method`."""
        if method is None:
            self.any_method = None
        else:
            del self.by_method[method]

    def __bool__(self) -> bool:
        return self.any_method is not None or bool(self.by_method)


class _HostEntry(Generic[R]):
    """The TREE rules of one hostname, indexed for the within-entry precedence.

    Invariants: `prefixes` holds each key of `prefix_slots` exactly once, ordered by
    decreasing length (so the first match is the longest); regex lists hold (compiled path
    regex, rule) pairs in insertion order; `size` is the number of rules, and an entry with
    size 0 is removed from the router.
    """

    __slots__ = (
        "equals",
        "prefix_slots",
        "prefixes",
        "regex_any_method",
        "regex_by_method",
        "size",
    )

    def __init__(self) -> None:
        self.equals: dict[bytes, _MethodSlot[R]] = {}
        self.regex_by_method: dict[bytes, list[_RegexRule[R]]] = {}
        self.regex_any_method: list[_RegexRule[R]] = []
        self.prefix_slots: dict[bytes, _MethodSlot[R]] = {}
        self.prefixes: list[tuple[bytes, _MethodSlot[R]]] = []
        self.size = 0

    def find(self, path: bytes, method: bytes) -> _Rule[R] | None:
        """The rule of this entry for `path` and `method`: equals, else regex, else the
        longest prefix; None when no rule matches."""
        if self.equals:
            slot = self.equals.get(path)
            if slot is not None:
                rule = slot.pick(method)
                if rule is not None:
                    return rule
        if self.regex_by_method:
            for pattern, rule in self.regex_by_method.get(method, ()):
                if pattern.match(path) is not None:
                    return rule
        for pattern, rule in self.regex_any_method:
            if pattern.match(path) is not None:
                return rule
        for prefix, slot in self.prefixes:
            if path.startswith(prefix):
                rule = slot.pick(method)
                if rule is not None:
                    return rule
        return None

    def insert(self, rule: _Rule[R]) -> None:
        """Index `rule` (the caller has checked that it is not a duplicate)."""
        if rule.path_kind == _EQUALS:
            self.equals.setdefault(rule.path, _MethodSlot()).put(rule)
        elif rule.path_pattern is not None:
            pair = (rule.path_pattern, rule)
            if rule.method is None:
                self.regex_any_method.append(pair)
            else:
                self.regex_by_method.setdefault(rule.method, []).append(pair)
        else:
            slot = self.prefix_slots.get(rule.path)
            if slot is None:
                slot = self.prefix_slots[rule.path] = _MethodSlot()
                self.prefixes.append((rule.path, slot))
                # Stable sort: reconfiguration is rare, lookups are not.
                self.prefixes.sort(key=lambda item: len(item[0]), reverse=True)
            slot.put(rule)
        self.size += 1

    def delete(self, rule: _Rule[R]) -> None:
        """Remove `rule`, which must have been inserted."""
        if rule.path_kind == _EQUALS:
            slot = self.equals[rule.path]
            slot.take(rule.method)
            if not slot:
                del self.equals[rule.path]
        elif rule.path_pattern is not None:
            if rule.method is None:
                self.regex_any_method = [
                    pair for pair in self.regex_any_method if pair[1] is not rule
                ]
            else:
                same_method = [
                    pair for pair in self.regex_by_method[rule.method] if pair[1] is not rule
                ]
                if same_method:
                    self.regex_by_method[rule.method] = same_method
                else:
                    del self.regex_by_method[rule.method]
        else:
            slot = self.prefix_slots[rule.path]
            slot.take(rule.method)
            if not slot:
                del self.prefix_slots[rule.path]
                self.prefixes = [item for item in self.prefixes if item[1] is not slot]
        self.size -= 1


def _remove_identical(items: list[_Rule[R]], rule: _Rule[R]) -> None:
    """Remove `rule` itself (by identity, not by value) from `items`, which holds it."""
    for index, item in enumerate(items):
        if item is rule:
            del items[index]
            return


def _first_listed(rules: list[_Rule[R]], hostname: bytes, path: bytes, method: bytes) -> R | None:
    """The route of the first rule of a PRE or POST list matching all three criteria."""
    for rule in rules:
        if rule.method is not None and rule.method != method:
            continue
        kind = rule.host_kind
        if kind == _HOST_EXACT:
            if hostname != rule.host_name:
                continue
        elif kind == _HOST_WILDCARD:
            # host_name is '.parent': the host ends with it and its first '.' starts it,
            # so exactly one non-empty label precedes it. No slicing: nothing is allocated.
            start = len(hostname) - len(rule.host_name)
            if start <= 0 or not hostname.endswith(rule.host_name):
                continue
            if hostname.find(b".") != start:
                continue
        elif kind == _HOST_REGEX and (
            rule.host_pattern is None or rule.host_pattern.fullmatch(hostname) is None
        ):
            continue
        kind = rule.path_kind
        if kind == _PREFIX:
            if not path.startswith(rule.path):
                continue
        elif kind == _EQUALS:
            if path != rule.path:
                continue
        elif rule.path_pattern is None or rule.path_pattern.match(path) is None:
            continue
        return rule.route
    return None


_RuleKey = tuple[str, PathRuleKind, str, str | None, RulePosition]


def _key(host: HostnameRule, rule: RouteRule) -> _RuleKey:
    """The identity of a rule: its normalised hostname and the rest as given."""
    return (host.key, rule.path_kind, rule.path_value, rule.method, rule.position)


class Router(Generic[R]):
    """The routing table of one listener: PRE rules, a TREE of host entries, POST rules.

    Not thread-safe; a worker mutates and queries it from its event loop only. Lookups do a
    handful of dict operations and scan short lists; regexes run only when regex rules exist.
    """

    __slots__ = ("_any", "_exact", "_post", "_pre", "_regex_entries", "_rules", "_wildcard")

    def __init__(self) -> None:
        # Every rule by its identity (normalised hostname, kind, value, method, position).
        self._rules: dict[_RuleKey, _Rule[R]] = {}
        self._pre: list[_Rule[R]] = []
        self._post: list[_Rule[R]] = []
        # TREE host entries: exact hostnames, wildcards by parent domain, regex hostnames by
        # normalised text with their compiled pattern (a dict keeps insertion order, which is
        # their lookup order), and '*'.
        self._exact: dict[bytes, _HostEntry[R]] = {}
        self._wildcard: dict[bytes, _HostEntry[R]] = {}
        self._regex_entries: dict[str, tuple[re.Pattern[bytes], _HostEntry[R]]] = {}
        self._any: _HostEntry[R] | None = None

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: RouteRule, route: R) -> None:
        """Add ``rule``, leading to ``route``. Raises RouterError when the hostname, the path or
        the method is invalid, or when the same rule (after normalisation) exists."""
        host = _parse_hostname(rule.hostname)
        key = _key(host, rule)
        if key in self._rules:
            raise RouterError(f"duplicate rule {key!r}")
        kind = _PATH_KIND_CODES[rule.path_kind]
        try:
            path = encode_path_value(rule.path_value)
            path_pattern = compile_path_regex(rule.path_value) if kind == _REGEX else None
        except ValueError as error:
            raise RouterError(str(error)) from error
        # A wildcard is stored as '.parent' in PRE/POST rules (suffix test) but as 'parent'
        # in the TREE (dict key); the rule keeps the former.
        name = host.name.encode("ascii")
        host_name = b"." + name if host.kind is HostKind.WILDCARD else name
        entry: _Rule[R] = _Rule(
            host_kind=int(host.kind),
            host_name=host_name,
            host_pattern=host.pattern,
            path_kind=kind,
            path=path,
            path_pattern=path_pattern,
            method=_parse_method(rule.method),
            route=route,
        )
        if rule.position is RulePosition.PRE:
            self._pre.append(entry)
        elif rule.position is RulePosition.POST:
            self._post.append(entry)
        else:
            self._ensure_tree_entry(host).insert(entry)
        self._rules[key] = entry

    def remove(self, rule: RouteRule) -> R:
        """Remove ``rule`` and return its route; RouterError if absent. Every kind of rule,
        EQUALS included, can be removed."""
        host = _parse_hostname(rule.hostname)
        key = _key(host, rule)
        entry = self._rules.pop(key, None)
        if entry is None:
            raise RouterError(f"no rule {key!r}")
        if rule.position is RulePosition.PRE:
            _remove_identical(self._pre, entry)
        elif rule.position is RulePosition.POST:
            _remove_identical(self._post, entry)
        else:
            # The entry exists: a TREE rule is only ever indexed in its host's entry.
            tree_entry = self._ensure_tree_entry(host)
            tree_entry.delete(entry)
            if tree_entry.size == 0:
                self._drop_tree_entry(host)
        return entry.route

    def lookup(self, hostname: bytes, path: bytes, method: bytes) -> R | None:
        """hostname as returned by parse_authority; path = the request-target (origin-form,
        query included); method as received. None → the proxy answers 404."""
        if self._pre:
            route = _first_listed(self._pre, hostname, path, method)
            if route is not None:
                return route
        entry = self._exact.get(hostname)
        if entry is None and self._wildcard:
            dot = hostname.find(b".")
            if dot > 0:
                entry = self._wildcard.get(hostname[dot + 1 :])
        if entry is None:
            for pattern, candidate in self._regex_entries.values():
                if pattern.fullmatch(hostname) is not None:
                    entry = candidate
                    break
            else:
                entry = self._any
        if entry is not None:
            rule = entry.find(path, method)
            if rule is not None:
                return rule.route
        if self._post:
            return _first_listed(self._post, hostname, path, method)
        return None

    def _ensure_tree_entry(self, host: HostnameRule) -> _HostEntry[R]:
        """The TREE entry of `host`, created empty when missing."""
        if host.kind is HostKind.ANY:
            if self._any is None:
                self._any = _HostEntry()
            return self._any
        if host.kind is HostKind.REGEX:
            assert host.pattern is not None, "a regex hostname always has a pattern"
            pattern_and_entry = self._regex_entries.get(host.key)
            if pattern_and_entry is None:
                pattern_and_entry = self._regex_entries[host.key] = (host.pattern, _HostEntry())
            return pattern_and_entry[1]
        table = self._exact if host.kind is HostKind.EXACT else self._wildcard
        name = host.name.encode("ascii")
        entry = table.get(name)
        if entry is None:
            entry = table[name] = _HostEntry()
        return entry

    def _drop_tree_entry(self, host: HostnameRule) -> None:
        """Forget the (empty) TREE entry of `host`."""
        if host.kind is HostKind.ANY:
            self._any = None
        elif host.kind is HostKind.REGEX:
            del self._regex_entries[host.key]
        elif host.kind is HostKind.EXACT:
            del self._exact[host.name.encode("ascii")]
        else:
            del self._wildcard[host.name.encode("ascii")]
