"""The grammar of names and values, shared by the configuration, the main process and the workers.

One home for each rule, so that what the configuration accepts is exactly what a worker
accepts:

* HTTP tokens (method names, header field names) and header field values;
* hostnames: the hostname of a routing rule (exact, ``*.`` wildcard, ``*``, regex), the name
  a certificate serves, and the host a request names in its ``Host`` header;
* certificate-name coverage: which hosts a certificate name serves;
* ``host:port`` splitting, with IPv6 literals in brackets.

Everything here is a pure function or a frozen constant. The workers call some of these per
request: those work on ``bytes`` with precompiled patterns and translation tables.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Final

__all__ = [
    "ALPHA_DIGIT",
    "AUTHORITY_BYTES",
    "FIELD_VALUE_BYTES",
    "FRAMING_FIELD_NAMES",
    "MAX_HOSTNAME_LENGTH",
    "MAX_LABEL_LENGTH",
    "SAME_BYTE",
    "TCHAR",
    "TCHAR_BYTES",
    "TOKEN_CLASS",
    "HostKind",
    "HostnameRule",
    "check_header_value",
    "check_origin_form",
    "check_request_id_header",
    "check_single_line",
    "check_token",
    "compile_path_regex",
    "encode_path_value",
    "fold_hostname",
    "folded_names_cover",
    "is_field_value",
    "is_token",
    "is_token_bytes",
    "name_covers",
    "names_cover",
    "normalize_certificate_name",
    "normalize_hostname",
    "normalize_hostname_rule",
    "parse_authority",
    "parse_hostname_rule",
    "parse_port",
    "split_host_port",
    "unbracket",
    "wildcard_parent",
]

# --------------------------------------------------------------------------- HTTP tokens

ALPHA_DIGIT: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# tchar (RFC 9110 §5.6.2): the characters of a token (methods, field names).
TCHAR: Final = ALPHA_DIGIT + "!#$%&'*+-.^_`|~"
TCHAR_BYTES: Final = TCHAR.encode("ascii")
# The same set as a regular-expression character class, for patterns that embed a token.
TOKEN_CLASS: Final = "[" + re.escape(TCHAR) + "]"
_TCHAR_SET: Final = frozenset(TCHAR)

# Identity translation table: ``data.translate(SAME_BYTE, alphabet)`` deletes the bytes of the
# alphabet, so a non-empty result means a byte outside it (one C pass, no regex).
SAME_BYTE: Final = bytes(range(256))

# field-value (RFC 9110 §5.5) = *( VCHAR / obs-text / SP / HTAB ): no control but HTAB.
# The reason phrase of a status line has the same alphabet (RFC 9112 §4).
FIELD_VALUE_BYTES: Final = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
# A configured header value is written in a head as latin-1: the same alphabet, as text.
_FIELD_VALUE_TEXT: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# What would end a head line, or a C string, early.
_LINE_BREAKS: Final = re.compile(r"[\r\n\x00]")

# authority (RFC 3986 §3.2): unreserved / pct-encoded / sub-delims / ":" / IP-literal brackets.
# Not "@" (userinfo is refused), no whitespace, no controls, no "/", "?" or "#".
AUTHORITY_BYTES: Final = (ALPHA_DIGIT + "-._~%!$&'()*+,;=:[]").encode("ascii")


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 9110 token (a method or a header field name)."""
    return bool(text) and _TCHAR_SET.issuperset(text)


def is_token_bytes(data: bytes) -> bool:
    """:func:`is_token` for bytes."""
    return bool(data) and not data.translate(SAME_BYTE, TCHAR_BYTES)


def check_token(text: str) -> str:
    """Return ``text`` when it is an HTTP token, else raise ``ValueError``."""
    if not isinstance(text, str) or not is_token(text):
        raise ValueError(f"{text!r} is not an HTTP token")
    return text


def is_field_value(text: str) -> bool:
    """True when ``text`` can be written as a header field value (latin-1, no control but
    HTAB)."""
    return _FIELD_VALUE_TEXT.fullmatch(text) is not None


def check_header_value(text: str) -> str:
    """Return ``text`` when it is a header field value a configuration may set, else raise
    ``ValueError``."""
    check_single_line(text)
    if not is_field_value(text):
        raise ValueError(
            f"header value {text!r} must contain no control character but tab and no "
            "character above U+00FF (header values are written in latin-1)"
        )
    return text


def check_single_line(text: str) -> str:
    """Return ``text`` when it cannot end a head line (no CR, LF or NUL), else raise
    ``ValueError``. For texts the proxy places in a head after escaping them itself."""
    if _LINE_BREAKS.search(text):
        raise ValueError("a header value must not contain CR, LF or NUL")
    return text


# Fields that frame a message: a header the proxy adds to its own answers must not be one.
FRAMING_FIELD_NAMES: Final = frozenset({"content-length", "transfer-encoding", "connection"})


def check_request_id_header(name: str) -> str:
    """Return ``name`` when it can name the header carrying the request id in the proxy's
    answers, else raise ``ValueError``: an HTTP token, without ``%`` (answer templates mark
    their variables with it), and not a framing field."""
    check_token(name)
    if "%" in name:
        raise ValueError(f"{name!r} must not contain '%' (it marks answer template variables)")
    if name.lower() in FRAMING_FIELD_NAMES:
        raise ValueError(f"{name!r} would replace a framing header of the answers")
    return name


# --------------------------------------------------------------------------- path rules


# A request-target never contains these (RFC 9112 §3.2), so a rule holding one could never match.
_NOT_IN_TARGET: Final = re.compile(r"[\r\n\x00 ]")


def encode_path_value(value: str) -> bytes:
    """The value of a path rule as the bytes compared with the raw request-target (UTF-8);
    ``ValueError`` when it contains a space, CR, LF or NUL, or cannot be encoded."""
    if _NOT_IN_TARGET.search(value):
        raise ValueError("a path rule must not contain spaces, CR, LF or NUL")
    try:
        return value.encode("utf-8")
    except UnicodeError:
        raise ValueError(f"path rule {value!r} is not valid Unicode text") from None


# An origin-form request-target (RFC 9112 §3.2.1) the proxy writes itself: visible ASCII only.
_ORIGIN_FORM: Final = re.compile(r"/[\x21-\x7e]*")


def check_origin_form(target: str) -> str:
    """Return ``target`` when it is an origin-form request-target (``/`` then visible ASCII:
    no space, control or non-ASCII character), else raise ``ValueError``."""
    if _ORIGIN_FORM.fullmatch(target) is None:
        raise ValueError(
            f"{target!r} must start with '/' and hold only visible ASCII characters "
            "(no space or control character; percent-encode the others)"
        )
    return target


def compile_path_regex(value: str) -> re.Pattern[bytes]:
    """The pattern of a regex path rule, matched against the raw request-target (bytes, the
    rule's text in UTF-8), anchored at its start by ``match``; ``ValueError`` if it does not
    compile."""
    try:
        return re.compile(encode_path_value(value))
    except re.error as error:
        raise ValueError(f"path regex {value!r} does not compile: {error}") from None


# --------------------------------------------------------------------------- hostnames

# RFC 1035 §2.3.4: a label is at most 63 octets, a name at most 255 octets on the wire, which
# is 253 characters in dotted text without the trailing dot.
MAX_LABEL_LENGTH: Final = 63
MAX_HOSTNAME_LENGTH: Final = 253

# A label of a rule hostname, lowercased: RFC 1123 letters, digits and inner '-', plus '_',
# which sōzu accepts and real deployments use (service records, internal names).
_RULE_LABEL: Final = re.compile(rf"[a-z0-9_](?:[a-z0-9_-]{{0,{MAX_LABEL_LENGTH - 2}}}[a-z0-9_])?")
# Characters of the literal text of a regex hostname (outside its slashes).
_REGEX_LITERAL: Final = re.compile(r"[a-z0-9_.-]*")


class HostKind(IntEnum):
    """What a rule hostname matches."""

    ANY = 0  # ``*``: every host
    EXACT = 1  # ``example.com``: that host
    WILDCARD = 2  # ``*.example.com``: one more label on the left of the parent domain
    REGEX = 3  # contains ``/``: regular expressions between slashes, literal text outside


@dataclass(frozen=True, slots=True)
class HostnameRule:
    """A parsed rule hostname.

    ``key`` is the text identifying the rule: the normal form of an exact or wildcard name (two
    spellings of one name share it), a regex hostname as written;
    ``name`` is the hostname (EXACT), the parent domain without ``*.`` (WILDCARD) or empty;
    ``pattern`` (REGEX only) must match the whole request host, and ignores ASCII case.
    """

    kind: HostKind
    key: str
    name: str
    pattern: re.Pattern[bytes] | None = None


def _invalid(original: str) -> ValueError:
    return ValueError(
        f"hostname {original!r} is not a valid domain name "
        "(labels are letters, digits, '-' and '_'; a '*' is only allowed as '*.domain')"
    )


def fold_hostname(name: str) -> str:
    """``name`` lowercased, without one trailing dot (the absolute form, RFC 1034 §3.1)."""
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def _exact_hostname(name: str, original: str) -> str:
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise _invalid(original) from None
    name = fold_hostname(name)
    if not name or len(name) > MAX_HOSTNAME_LENGTH:
        raise _invalid(original)
    for label in name.split("."):
        if _RULE_LABEL.fullmatch(label) is None:
            raise _invalid(original)
    return name


def normalize_hostname(name: str) -> str:
    """An exact hostname in normal form: internationalised labels in their ASCII ``xn--``
    form (IDNA 2003, Python's ``idna`` codec), lowercase, one trailing dot removed; labels of
    letters, digits, ``_`` and inner ``-``, 1-63 characters, 253 in all. Raises ValueError."""
    return _exact_hostname(name, name)


def normalize_certificate_name(name: str) -> str:
    """A name a certificate serves: ``example.com`` or ``*.example.com``, in normal form."""
    if name.startswith("*."):
        return "*." + _exact_hostname(name[2:], name)
    return _exact_hostname(name, name)


def _regex_hostname_source(hostname: str) -> str:
    """The pattern source of a regex hostname: ``/.../`` parts are regular expressions, the
    rest literal hostname text."""
    if not hostname.isascii():
        raise ValueError(
            f"regex hostname {hostname!r} must be ASCII; write internationalised labels "
            "in their xn-- form"
        )
    pattern: list[str] = []
    index = 0
    while index < len(hostname):
        if hostname[index] == "/":
            end = hostname.find("/", index + 1)
            if end < 0:
                raise ValueError(f"regex hostname {hostname!r} has an unmatched '/'")
            fragment = hostname[index + 1 : end]
            if not fragment:
                raise ValueError(f"regex hostname {hostname!r} has an empty '//' part")
            # Each part is compiled alone first: wrapped in a group, an unbalanced part such
            # as 'a)(b' would otherwise be balanced by the wrapping.
            try:
                re.compile(fragment.encode("ascii"))
            except re.error as error:
                raise ValueError(
                    f"regex hostname {hostname!r} does not compile: {fragment!r}: {error}"
                ) from None
            pattern.append(f"(?:{fragment})")
            index = end + 1
        else:
            end = hostname.find("/", index)
            end = len(hostname) if end < 0 else end
            literal = hostname[index:end].lower()
            if _REGEX_LITERAL.fullmatch(literal) is None:
                raise ValueError(f"invalid literal {literal!r} in regex hostname {hostname!r}")
            pattern.append(re.escape(literal))
            index = end
    return "".join(pattern)


@lru_cache(maxsize=4096)
def parse_hostname_rule(hostname: str) -> HostnameRule:
    """Classify and normalise the hostname of a routing rule, or raise ``ValueError``.

    * ``example.com``: EXACT, see :func:`normalize_hostname`;
    * ``*.example.com``: WILDCARD, one extra leftmost label; ``*`` alone: ANY;
    * a hostname containing ``/``: REGEX, each ``/.../`` pair encloses a regular expression
      (Python ``re``, ASCII), the text outside is literal; the whole must match the full host.
    """
    if not isinstance(hostname, str) or not hostname:
        raise ValueError("hostname must not be empty")
    if "/" in hostname:
        source = _regex_hostname_source(hostname)
        try:
            pattern = re.compile(source.encode("ascii"), re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"regex hostname {hostname!r} does not compile: {error}") from None
        return HostnameRule(HostKind.REGEX, hostname, "", pattern)
    if hostname == "*":
        return HostnameRule(HostKind.ANY, "*", "")
    if hostname.startswith("*."):
        parent = _exact_hostname(hostname[2:], hostname)
        return HostnameRule(HostKind.WILDCARD, "*." + parent, parent)
    if "*" in hostname:
        raise ValueError(
            f"hostname {hostname!r}: '*' is only allowed as the whole leftmost label ('*.domain')"
        )
    exact = _exact_hostname(hostname, hostname)
    return HostnameRule(HostKind.EXACT, exact, exact)


def normalize_hostname_rule(hostname: str) -> str:
    """The hostname of a routing rule as the configuration stores it and the router keys it:
    exact and wildcard names in normal form, ``*``, regex hostnames validated and kept as
    written."""
    return parse_hostname_rule(hostname).key


# A label of a request host (RFC 1123 letters, digits, '-', and '_'). No length limits here:
# the header size limit bounds the input, and a host no rule can name gets a 404, not a 400.
_REQUEST_LABEL: Final = rb"[A-Za-z0-9_-]+"
# An IPv6 literal (RFC 3986 §3.2.2); '.' for IPv4-suffixed forms. The address itself is
# checked with `ipaddress`; zone identifiers are not accepted in a Host header.
_IPV6_LITERAL: Final = rb"\[[0-9A-Fa-f:.]+\]"
# The request authority `host[:port]` (RFC 9110 §7.2), with one optional trailing dot after a
# DNS name (the absolute form, RFC 1034 §3.1). The label grammar is unambiguous (labels are
# separated by '.'), so matching is linear in the input length.
_AUTHORITY: Final = re.compile(
    rb"(?:(%s(?:\.%s)*)\.?|(%s))(?::([0-9]{1,5}))?"
    % (_REQUEST_LABEL, _REQUEST_LABEL, _IPV6_LITERAL)
)
# A port is 1-65535 (RFC 3986 §3.2.3 allows any number of digits; more can only overflow).
_MAX_PORT: Final = 65535


def _is_ipv6_address(address: bytes) -> bool:
    try:
        ipaddress.IPv6Address(address.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def parse_authority(authority: bytes) -> bytes | None:
    """The host to route a request on, from its authority (``Host`` value) ``host[:port]``:
    lowercased, without the port and one trailing dot; None when invalid (answered with 400).

    host: labels of ASCII letters, digits, ``-`` and ``_`` separated by ``.``, or an IPv6
    literal in brackets (returned with its brackets); port: 1-65535, digits only. Empty host,
    empty port after ``:``, ``@``, spaces, anything else: None.
    """
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


# --------------------------------------------------------------------------- coverage


def wildcard_parent(host: str) -> str:
    """The parent domain a one-label wildcard must name to cover ``host`` (``b.c`` for
    ``a.b.c``); empty when no wildcard can cover it (no dot, or an empty first label)."""
    dot = host.find(".")
    return host[dot + 1 :] if dot > 0 else ""


def name_covers(cert_name: str, host: str) -> bool:
    """Whether a certificate name serves ``host`` (RFC 6125 §6.4): the same name, or a
    wildcard ``*.parent`` and a host of exactly one more label. Case-insensitive, one trailing
    dot ignored; an IPv6 literal host is only covered by the same literal."""
    cert_name = fold_hostname(cert_name)
    host = fold_hostname(host)
    if cert_name == host:
        return True
    if not cert_name.startswith("*.") or host.startswith("["):
        return False
    parent = wildcard_parent(host)
    return bool(parent) and parent == cert_name[2:]


def names_cover(names: Iterable[str], host: str) -> bool:
    """Whether any of a certificate's ``names`` serves ``host`` (see :func:`name_covers`)."""
    return folded_names_cover({fold_hostname(name) for name in names}, fold_hostname(host))


def folded_names_cover(names: Collection[str], host: str) -> bool:
    """:func:`names_cover` for names and a host already folded (:func:`fold_hostname`): the
    per-request form, for names folded once when a certificate is loaded."""
    if host in names:
        return True
    if host.startswith("["):
        return False
    parent = wildcard_parent(host)
    return bool(parent) and "*." + parent in names


# --------------------------------------------------------------------------- addresses


def split_host_port(text: str) -> tuple[str, str | None]:
    """Split ``host[:port]`` into the host as written (an IPv6 literal keeps its brackets) and
    the port text, None when there is no ``:port`` (an empty string when the text ends with
    ``:``). Raises ``ValueError`` for an unclosed ``[``, text after ``]`` that is not a port,
    and an IPv6 address without brackets (its port would be ambiguous)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: '[' without ']'")
        rest = text[end + 1 :]
        if not rest:
            return text, None
        if rest[0] != ":":
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        return text[: end + 1], rest[1:]
    host, colon, port = text.rpartition(":")
    if not colon:
        return text, None
    if ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses as '[addr]:port'")
    return host, port


def unbracket(host: str) -> str:
    """``host`` without the brackets of an IPv6 literal."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def parse_port(text: str) -> int:
    """A port 1-65535 written in ASCII decimal digits, or ``ValueError``."""
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"the port must be a number from 1 to 65535, not {text!r}")
    port = int(text)
    if not 1 <= port <= _MAX_PORT:
        raise ValueError(f"port {port} is not in 1-65535")
    return port
