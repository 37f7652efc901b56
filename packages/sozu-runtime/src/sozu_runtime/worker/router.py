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
    Every rule names a hostname, normalised when it is added: internationalised labels are
    converted to their ASCII ``xn--`` form (IDNA 2003, Python's ``idna`` codec, which maps
    ``ß`` to ``ss``; write the ``xn--`` form to route an IDNA 2008 name), the whole is
    lowercased and one trailing dot is dropped. A hostname is one of:

    * **exact** -- ``example.com`` matches that host only;
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

Two rules are the same rule when their normalised hostname, path kind, path value, method and
position are equal; adding a rule twice is an error, and every kind of rule, equals rules
included, can be removed.

Departures from sōzu 2.1, on purpose: path regexes are anchored at the start instead of matching
anywhere; equals rules can be removed; hostnames are compared case-insensitively; a ``*`` label
means the same thing in every position.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["R", "Router", "RouterError", "parse_authority"]

R = TypeVar("R")


class RouterError(ValueError):
    """A rule cannot be added or removed: invalid hostname, path regex, method, kind or
    position, a duplicate on add, or an unknown rule on remove."""


# --- grammar ---------------------------------------------------------------------------------

# A hostname label: RFC 1123 letters, digits and '-', plus '_', which sōzu accepts in tolerant
# mode and real deployments use (service records, internal names). No length limits: the
# header size limit already bounds the input.
_LABEL = rb"[A-Za-z0-9_-]+"
_DNS_HOSTNAME = re.compile(rb"%s(?:\.%s)*" % (_LABEL, _LABEL))
# Characters allowed in the literal text of a regex hostname.
_HOSTNAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
# An IPv6 literal (RFC 3986 §3.2.2); '.' for IPv4-suffixed forms. The address itself is
# checked with `ipaddress`; zone identifiers are not accepted in a Host header.
_IPV6_LITERAL = rb"\[[0-9A-Fa-f:.]+\]"
# A port is 1-65535: RFC 3986 §3.2.3 allows any number of digits, more than five can only
# overflow. The range is checked after the match.
_MAX_PORT = 65535
# The request authority `host[:port]` (RFC 9110 §7.2), with one optional trailing dot after a
# DNS name (the absolute form, RFC 1034 §3.1). The label grammar is unambiguous (labels are
# separated by '.'), so matching is linear in the input length.
_AUTHORITY = re.compile(
    rb"(?:(%s(?:\.%s)*)\.?|(%s))(?::([0-9]{1,5}))?" % (_LABEL, _LABEL, _IPV6_LITERAL)
)
# RFC 9110 §5.6.2 token characters, the grammar of a method name.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

# Path kinds, positions and host kinds as small ints: the hot path compares ints, not strings.
_PREFIX = 0
_EQUALS = 1
_REGEX = 2
_PATH_KINDS = {"prefix": _PREFIX, "equals": _EQUALS, "regex": _REGEX}
_POSITIONS = frozenset({"pre", "tree", "post"})

_HOST_ANY = 0
_HOST_EXACT = 1
_HOST_WILDCARD = 2
_HOST_REGEX = 3


def _is_ipv6_address(address: bytes) -> bool:
    """True when `address` (without brackets) is a valid IPv6 address."""
    try:
        ipaddress.IPv6Address(address.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def parse_authority(authority: bytes) -> bytes | None:
    """Validate a request authority (`Host` value) `hostname[:port]` and return the hostname to
    route on, lowercased, without port and without one trailing dot; None when invalid (the proxy
    answers 400). hostname: labels of ASCII letters, digits, '-' and '_', separated by '.', or an
    IPv6 literal in brackets (returned with its brackets, lowercased); port: 1-65535, digits only.
    Empty host, empty port after ':', '@', spaces, anything else → None."""
    # One compiled grammar match is the cheapest validation available in Python; this runs
    # for every request.
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        return None
    name, ipv6, port = match.groups()
    if port is not None and not 0 < int(port) <= _MAX_PORT:
        return None
    if name is not None:
        return name.lower()
    if _is_ipv6_address(ipv6[1:-1]):
        return ipv6.lower()
    return None


def _is_rule_hostname(host: str) -> bool:
    """True when a normalised rule hostname is a DNS name or a bracketed IPv6 literal."""
    encoded = host.encode("ascii")
    if _DNS_HOSTNAME.fullmatch(encoded) is not None:
        return True
    return encoded.startswith(b"[") and encoded.endswith(b"]") and _is_ipv6_address(encoded[1:-1])


# --- rule normalisation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HostRule:
    """A parsed hostname rule.

    `key` is the normalised text that identifies the rule; `name` is the exact hostname
    (exact), the parent domain without the leading ``*.`` (wildcard) or empty (any, regex);
    `pattern` is set for regex hostnames only and must match the whole host.
    """

    kind: int
    key: str
    name: bytes
    pattern: re.Pattern[bytes] | None


def _normalise_hostname(text: str) -> str:
    """Return `text` as an ASCII, lowercased hostname without its trailing dot, or raise
    :class:`RouterError` when it is neither a DNS name nor a bracketed IPv6 literal."""
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise RouterError(f"hostname {text!r} cannot be converted with IDNA") from error
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if not _is_rule_hostname(text):
        raise RouterError(f"invalid hostname {text!r}")
    return text


def _compile_regex_hostname(hostname: str) -> _HostRule:
    """Compile a regex hostname: ``/.../`` parts are regular expressions, the rest literal
    hostname text; the result must match the full host, ignoring ASCII case."""
    if not hostname.isascii():
        raise RouterError(
            f"regex hostname {hostname!r} must be ASCII; write internationalised labels "
            "in their xn-- form"
        )
    pattern_parts: list[str] = []
    key_parts: list[str] = []
    index = 0
    while index < len(hostname):
        if hostname[index] == "/":
            end = hostname.find("/", index + 1)
            if end < 0:
                raise RouterError(f"regex hostname {hostname!r} has an unclosed '/'")
            fragment = hostname[index + 1 : end]
            if not fragment:
                raise RouterError(f"regex hostname {hostname!r} has an empty '//' part")
            # Each fragment is compiled alone first: wrapped in a group, an unbalanced
            # fragment such as 'a)(b' would otherwise be balanced by the wrapping.
            try:
                re.compile(fragment.encode("ascii"))
            except re.error as error:
                raise RouterError(f"invalid regex {fragment!r} in {hostname!r}: {error}") from error
            pattern_parts.append(f"(?:{fragment})")
            key_parts.append(hostname[index : end + 1])
            index = end + 1
        else:
            end = hostname.find("/", index)
            if end < 0:
                end = len(hostname)
            literal = hostname[index:end].lower()
            if literal.encode("ascii").translate(None, _HOSTNAME_CHARS):
                raise RouterError(f"invalid literal {literal!r} in regex hostname {hostname!r}")
            pattern_parts.append(re.escape(literal))
            key_parts.append(literal)
            index = end
    try:
        pattern = re.compile("".join(pattern_parts).encode("ascii"), re.IGNORECASE)
    except re.error as error:
        raise RouterError(f"invalid regex hostname {hostname!r}: {error}") from error
    return _HostRule(_HOST_REGEX, "".join(key_parts), b"", pattern)


def _parse_hostname_rule(hostname: str) -> _HostRule:
    """Classify and normalise a rule's hostname (see the module documentation)."""
    if "/" in hostname:
        return _compile_regex_hostname(hostname)
    if hostname == "*":
        return _HostRule(_HOST_ANY, "*", b"", None)
    if hostname.startswith("*."):
        parent = _normalise_hostname(hostname[2:])
        if "*" in parent or parent.startswith("["):
            raise RouterError(f"invalid wildcard hostname {hostname!r}")
        return _HostRule(_HOST_WILDCARD, f"*.{parent}", parent.encode("ascii"), None)
    # '*' is not a label character, so a misplaced one is rejected here.
    exact = _normalise_hostname(hostname)
    return _HostRule(_HOST_EXACT, exact, exact.encode("ascii"), None)


def _parse_method(method: str | None) -> bytes | None:
    """Return the method as bytes (None for any method); it must be an RFC 9110 token."""
    if method is None:
        return None
    if not method or not _TOKEN_CHARS.issuperset(method):
        raise RouterError(f"invalid method {method!r}")
    return method.encode("ascii")


# --- rules and host entries ------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Rule(Generic[R]):
    """One rule with everything the hot path needs pre-computed.

    `host_name` is the exact hostname, or for a wildcard the suffix ``.parent`` that the host
    must end with (PRE/POST matching). `path` is the prefix or equals value in bytes;
    `path_pattern` is set for regex paths. `method` None means any method. Rules compare by
    identity, so two rules are never confused when one is removed.
    """

    host_kind: int
    host_name: bytes
    host_pattern: re.Pattern[bytes] | None
    path_kind: int
    path: bytes
    path_pattern: re.Pattern[bytes] | None
    method: bytes | None
    route: R


# A regex path rule as stored in a host entry: its compiled pattern next to it, so that the
# scan calls the pattern without going through the optional attribute.
_RegexRule = tuple[re.Pattern[bytes], _Rule[R]]


@dataclass(slots=True, eq=False)
class _MethodSlot(Generic[R]):
    """The rules sharing one equals value or one prefix in a host entry: at most one per
    method and at most one for any method (duplicates are refused on add)."""

    by_method: dict[bytes, _Rule[R]] = field(default_factory=dict)
    any_method: _Rule[R] | None = None

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


@dataclass(slots=True, eq=False)
class _HostEntry(Generic[R]):
    """The TREE rules of one hostname, indexed for the within-entry precedence.

    Invariants: `prefixes` holds each key of `prefix_slots` exactly once, ordered by
    decreasing length (so the first match is the longest); regex lists hold (compiled path
    regex, rule) pairs in insertion order; `size` is the number of rules, and an entry with
    size 0 is removed from the router.
    """

    equals: dict[bytes, _MethodSlot[R]] = field(default_factory=dict)
    regex_by_method: dict[bytes, list[_RegexRule[R]]] = field(default_factory=dict)
    regex_any_method: list[_RegexRule[R]] = field(default_factory=list)
    prefix_slots: dict[bytes, _MethodSlot[R]] = field(default_factory=dict)
    prefixes: list[tuple[bytes, _MethodSlot[R]]] = field(default_factory=list)
    size: int = 0

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


_RuleKey = tuple[str, str, str, str | None, str]


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

    def add(
        self,
        hostname: str,
        path_kind: str,
        path_value: str,
        method: str | None,
        position: str,
        route: R,
    ) -> None:
        """path_kind: "prefix" | "regex" | "equals"; position: "pre" | "tree" | "post".
        Raises RouterError when the hostname or the regex is invalid, or when a rule with the same
        (hostname, path_kind, path_value, method, position) exists."""
        host = _parse_hostname_rule(hostname)
        key = self._key(host, path_kind, path_value, method, position)
        if key in self._rules:
            raise RouterError(f"duplicate rule {key!r}")
        kind = _PATH_KINDS[path_kind]
        path = path_value.encode("utf-8")
        path_pattern: re.Pattern[bytes] | None = None
        if kind == _REGEX:
            try:
                path_pattern = re.compile(path)
            except re.error as error:
                raise RouterError(f"invalid path regex {path_value!r}: {error}") from error
        # A wildcard is stored as '.parent' in PRE/POST rules (suffix test) but as 'parent'
        # in the TREE (dict key); the rule keeps the former.
        host_name = b"." + host.name if host.kind == _HOST_WILDCARD else host.name
        rule: _Rule[R] = _Rule(
            host.kind,
            host_name,
            host.pattern,
            kind,
            path,
            path_pattern,
            _parse_method(method),
            route,
        )
        if position == "pre":
            self._pre.append(rule)
        elif position == "post":
            self._post.append(rule)
        else:
            self._ensure_tree_entry(host).insert(rule)
        self._rules[key] = rule

    def remove(
        self,
        hostname: str,
        path_kind: str,
        path_value: str,
        method: str | None,
        position: str,
    ) -> R:
        """Removes the rule and returns its route; RouterError if absent. EQUALS rules can be
        removed."""
        host = _parse_hostname_rule(hostname)
        key = self._key(host, path_kind, path_value, method, position)
        rule = self._rules.pop(key, None)
        if rule is None:
            raise RouterError(f"no rule {key!r}")
        if position == "pre":
            _remove_identical(self._pre, rule)
        elif position == "post":
            _remove_identical(self._post, rule)
        else:
            # The entry exists: a TREE rule is only ever indexed in its host's entry.
            entry = self._ensure_tree_entry(host)
            entry.delete(rule)
            if entry.size == 0:
                self._drop_tree_entry(host)
        return rule.route

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

    @staticmethod
    def _key(
        host: _HostRule, path_kind: str, path_value: str, method: str | None, position: str
    ) -> _RuleKey:
        """The identity of a rule, after checking the kind and position names."""
        if path_kind not in _PATH_KINDS:
            raise RouterError(f"unknown path kind {path_kind!r}")
        if position not in _POSITIONS:
            raise RouterError(f"unknown position {position!r}")
        return (host.key, path_kind, path_value, method, position)

    def _ensure_tree_entry(self, host: _HostRule) -> _HostEntry[R]:
        """The TREE entry of `host`, created empty when missing."""
        if host.kind == _HOST_ANY:
            if self._any is None:
                self._any = _HostEntry()
            return self._any
        if host.kind == _HOST_REGEX:
            assert host.pattern is not None, "a regex hostname always has a pattern"
            pattern_and_entry = self._regex_entries.get(host.key)
            if pattern_and_entry is None:
                pattern_and_entry = self._regex_entries[host.key] = (host.pattern, _HostEntry())
            return pattern_and_entry[1]
        table = self._exact if host.kind == _HOST_EXACT else self._wildcard
        entry = table.get(host.name)
        if entry is None:
            entry = table[host.name] = _HostEntry()
        return entry

    def _drop_tree_entry(self, host: _HostRule) -> None:
        """Forget the (empty) TREE entry of `host`."""
        if host.kind == _HOST_ANY:
            self._any = None
        elif host.kind == _HOST_REGEX:
            del self._regex_entries[host.key]
        elif host.kind == _HOST_EXACT:
            del self._exact[host.name]
        else:
            del self._wildcard[host.name]
