"""The routing state as pydantic models: listeners, clusters, frontends, backends, certificates.

Every model is frozen (a value: safe to share between states) and refuses unknown fields.
Defaults are the ones of sōzu's ``config.toml`` (reference §B), so that a request that omits a
field means the same as a configuration file that omits the key. Enumerations are written in
snake_case on the wire (``round_robin``, ``prefix``); the TOML loader also accepts sōzu's
SCREAMING_SNAKE_CASE spellings.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .addresses import SocketAddress, split_address
from .grammar import (
    check_header_value,
    check_origin_form,
    check_request_id_header,
    check_single_line,
    check_token,
    compile_path_regex,
    encode_path_value,
    normalize_hostname,
    normalize_hostname_rule,
    parse_authority,
)
from .tls import (
    DEFAULT_ALPN_PROTOCOLS,
    DEFAULT_CIPHER_LIST,
    check_alpn_protocols,
    check_cipher_list,
)

__all__ = [
    "H2_LISTENER_FIELDS",
    "Backend",
    "Cluster",
    "HeaderEdit",
    "HeaderPosition",
    "HealthCheck",
    "Hsts",
    "HttpFrontend",
    "HttpListenerConfig",
    "HttpsListenerConfig",
    "ListenerType",
    "LoadBalancingAlgorithm",
    "LoadMetric",
    "Model",
    "PathRule",
    "PathRuleKind",
    "ProxyProtocolConfig",
    "RedirectPolicy",
    "RedirectScheme",
    "RulePosition",
    "TcpFrontend",
    "TcpListenerConfig",
    "TlsVersion",
    "check_http2_only",
    "normalize_hostname_rule",
]


class Model(BaseModel):
    """Base of every model: frozen, unknown fields are errors.

    The validators are built when a model is first used, not when its class is defined
    (``defer_build``): a command that sends one request does not pay for all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False, defer_build=True)


# --------------------------------------------------------------------------- enumerations


class ListenerType(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"


class LoadBalancingAlgorithm(StrEnum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    LEAST_LOADED = "least_loaded"
    POWER_OF_TWO = "power_of_two"


class LoadMetric(StrEnum):
    CONNECTIONS = "connections"
    REQUESTS = "requests"
    CONNECTION_TIME = "connection_time"


class PathRuleKind(StrEnum):
    PREFIX = "prefix"
    REGEX = "regex"
    EQUALS = "equals"


class RulePosition(StrEnum):
    """Where a frontend's rule sits in the router: PRE and POST lists are first-match in
    insertion order, evaluated before and after the TREE (hostname trie, most specific match)."""

    PRE = "pre"
    TREE = "tree"
    POST = "post"


class RedirectPolicy(StrEnum):
    FORWARD = "forward"
    PERMANENT = "permanent"  # 301
    FOUND = "found"  # 302
    PERMANENT_REDIRECT = "permanent_redirect"  # 308
    UNAUTHORIZED = "unauthorized"  # 401


class RedirectScheme(StrEnum):
    USE_SAME = "use_same"
    USE_HTTP = "use_http"
    USE_HTTPS = "use_https"


class HeaderPosition(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"
    BOTH = "both"


class TlsVersion(StrEnum):
    TLS_V10 = "tls_v10"
    TLS_V11 = "tls_v11"
    TLS_V12 = "tls_v12"
    TLS_V13 = "tls_v13"


class ProxyProtocolConfig(StrEnum):
    EXPECT_HEADER = "expect_header"
    SEND_HEADER = "send_header"
    RELAY_HEADER = "relay_header"


# --------------------------------------------------------------------------- value checks

_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _identifier(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 256:
        raise ValueError("must be at most 256 characters")
    if _CONTROL.search(value):
        raise ValueError(f"{value!r} must not contain spaces or control characters")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
"""A cluster or backend id: 1-256 characters, no whitespace or control characters."""

Token = Annotated[str, AfterValidator(check_token)]
"""An HTTP token (RFC 9110 §5.6.2): a method or a header field name."""

HeaderValue = Annotated[str, AfterValidator(check_header_value)]
"""A header field value (RFC 9110 §5.5) as written in a head: latin-1, no control but tab."""

SingleLine = Annotated[str, AfterValidator(check_single_line)]
"""Text the proxy places in a head after escaping it: no CR, LF or NUL."""

RuleHostname = Annotated[str, AfterValidator(normalize_hostname_rule)]
"""The hostname of a routing rule (see :func:`sozu_config.grammar.parse_hostname_rule`)."""


def _answers(value: dict[int, str]) -> dict[int, str]:
    for status in value:
        if not 100 <= status <= 599:
            raise ValueError(f"answer status {status} is not an HTTP status code (100-599)")
    return value


Answers = Annotated[dict[int, str], AfterValidator(_answers)]
"""Custom answer templates by HTTP status: the full text of an HTTP/1.1 response."""

Timeout = Annotated[int, Field(ge=1, le=86_400 * 7)]
Port = Annotated[int, Field(ge=1, le=65535)]

H2Count = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""An HTTP/2 limit: a number of frames, streams, fields or bytes, at least 1."""
H2Size = Annotated[int, Field(ge=0, le=2**31 - 1)]
"""An HTTP/2 size where 0 means none (the HPACK dynamic table)."""
H2Window = Annotated[int, Field(ge=65_535, le=2**31 - 1)]
"""An HTTP/2 flow-control window: at least the protocol's initial 65 535 bytes (RFC 9113
§6.9.2), at most 2^31-1."""
H2Ratio = Annotated[int, Field(ge=2, le=1_000)]
"""A ratio of the HTTP/2 stream table (sōzu: at least 2)."""
H2Deadline = Annotated[int, Field(ge=0, le=86_400 * 7)]
"""Seconds, 0 meaning no limit."""


# --------------------------------------------------------------------------- HSTS

# One year: sōzu's default max-age, and the minimum the HSTS preload list asks for.
HSTS_DEFAULT_MAX_AGE = 31_536_000


class Hsts(Model):
    """HTTP Strict Transport Security (RFC 6797) on the answers of an HTTPS listener or
    frontend: ``Strict-Transport-Security: max-age=N[; includeSubDomains][; preload]``.

    Never valid on plain HTTP (RFC 6797 §7.2: a browser ignores it there). A frontend's
    setting replaces its listener's; ``enabled = false`` on a frontend turns it off there.
    """

    enabled: bool
    max_age: Annotated[int, Field(ge=0, le=2**31 - 1)] = HSTS_DEFAULT_MAX_AGE
    include_subdomains: bool = False
    preload: bool = False
    force_replace_backend: bool = False
    """Replace a ``Strict-Transport-Security`` the backend sent (default: keep the backend's)."""

    def header_value(self) -> str:
        value = f"max-age={self.max_age}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


# --------------------------------------------------------------------------- listeners


class ListenerBase(Model):
    """What every listener has."""

    address: SocketAddress
    public_address: SocketAddress | None = None
    """Address reported in forwarding headers and logs (default: ``address``)."""
    expect_proxy: bool = False
    """Every connection starts with a PROXY protocol header (v1 or v2)."""
    front_timeout: Timeout = 60
    back_timeout: Timeout = 30
    connect_timeout: Timeout = 3
    request_timeout: Timeout = 10
    active: bool = False
    """Accepting connections. Listeners are created inactive; ``activate_listener`` starts them."""

    @model_validator(mode="after")
    def _public_vs_proxy(self) -> ListenerBase:
        if self.public_address is not None and self.expect_proxy:
            raise ValueError("public_address and expect_proxy cannot be used together")
        return self


class HttpListenerConfig(ListenerBase):
    """A plain HTTP listener."""

    sticky_name: Token = "SOZUBALANCEID"
    """Name of the sticky-session cookie."""
    answers: Answers = Field(default_factory=dict)
    sozu_id_header: Annotated[str, AfterValidator(check_request_id_header)] = "Sozu-Id"
    """Header carrying the request id in the proxy's answers (a token, no ``%``, not a
    framing field)."""
    elide_x_real_ip: bool = False
    send_x_real_ip: bool = False
    trust_forwarded_headers: bool = False
    """Keep the ``X-Forwarded-Proto`` and ``X-Forwarded-Port`` a client sends (for a listener
    that only a trusted proxy reaches). Otherwise they are replaced by the listener's own:
    a client must not be able to claim that a plain-HTTP request came over TLS."""


class HttpsListenerConfig(HttpListenerConfig):
    """An HTTPS listener: TLS termination, certificate chosen by SNI."""

    tls_versions: list[TlsVersion] = Field(
        default_factory=lambda: [TlsVersion.TLS_V12, TlsVersion.TLS_V13]
    )
    cipher_list: list[str] = Field(default_factory=lambda: list(DEFAULT_CIPHER_LIST))
    alpn_protocols: list[str] = Field(default_factory=lambda: list(DEFAULT_ALPN_PROTOCOLS))
    """Protocols offered by ALPN, in the server's order of preference: ``h2`` and
    ``http/1.1``."""
    disable_http11: bool = False
    """Serve HTTP/2 only: clients that do not negotiate ``h2`` (those sending no ALPN
    included) are dropped. Needs ``h2``, and not ``http/1.1``, in ``alpn_protocols``."""
    strict_sni_binding: bool = True
    """Answer 421 when the request's Host is not covered by the certificate served."""
    send_tls13_tickets: Annotated[int, Field(ge=0, le=16)] = 4
    default_sni: str | None = None
    """Name to serve a certificate for when the client sends no SNI or a name no certificate
    covers. ``None``: such handshakes fail (the connection is closed during the handshake)."""
    hsts: Hsts | None = None
    """Strict-Transport-Security added to the answers of this listener (see :class:`Hsts`)."""

    # HTTP/2 (reference §B.3): sōzu's names and defaults. A "window" is one second.
    h2_max_rst_stream_per_window: H2Count = Field(
        100,
        description="RST_STREAM frames a client may send per second before the connection is "
        "closed with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).",
    )
    h2_max_ping_per_window: H2Count = Field(
        100,
        description="PING frames a client may send per second before GOAWAY "
        "ENHANCE_YOUR_CALM (ping flood).",
    )
    h2_max_settings_per_window: H2Count = Field(
        50,
        description="SETTINGS frames a client may send per second before GOAWAY "
        "ENHANCE_YOUR_CALM (settings flood).",
    )
    h2_max_empty_data_per_window: H2Count = Field(
        100,
        description="DATA frames without payload nor END_STREAM a client may send per second "
        "before GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_window_update_stream0_per_window: H2Count = Field(
        100,
        description="WINDOW_UPDATE frames on the connection (stream 0) a client may send per "
        "second before GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_continuation_frames: H2Count = Field(
        20,
        description="CONTINUATION frames one header block may have; more is a flood "
        "(CVE-2024-27316) answered with GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_glitch_count: H2Count = Field(
        100,
        description="Protocol misbehaviours (refused or malformed frames and streams) a "
        "connection may accumulate in a second (the count halves each second) before GOAWAY "
        "ENHANCE_YOUR_CALM.",
    )
    h2_initial_connection_window: H2Window = Field(
        1_048_576,
        description="Bytes the connection's receive window is opened to (flow control), "
        "65 535 to 2^31-1.",
    )
    h2_max_concurrent_streams: H2Count = Field(
        100,
        description="Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); "
        "extra ones are reset with REFUSED_STREAM.",
    )
    h2_stream_shrink_ratio: H2Ratio = Field(
        2,
        description="A connection's stream table gives its memory back when its capacity "
        "exceeds this many times the streams open (at least 2).",
    )
    h2_max_rst_stream_lifetime: H2Count = Field(
        10_000,
        description="RST_STREAM frames a client may send over a connection's life before "
        "GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_rst_stream_abusive_lifetime: H2Count = Field(
        50,
        description="Streams a client may reset before their answer starts, over a "
        "connection's life, before GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_rst_stream_emitted_lifetime: H2Count = Field(
        500,
        description="RST_STREAM frames the proxy may send on a connection over its life "
        "before closing it with GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_header_list_size: H2Count = Field(
        65_536,
        description="Bytes of a decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE); a larger "
        "one is refused (HPACK bomb).",
    )
    h2_max_header_table_size: H2Size = Field(
        65_536,
        description="Bytes of the HPACK dynamic table kept for a client's headers "
        "(SETTINGS_HEADER_TABLE_SIZE; 0: none).",
    )
    h2_max_header_fields: H2Count = Field(
        128,
        description="Header fields one header block may carry; more is refused.",
    )
    h2_stream_idle_timeout_seconds: Timeout = Field(
        30,
        description="Seconds a stream may stay without activity before it is reset.",
    )
    h2_graceful_shutdown_deadline_seconds: H2Deadline = Field(
        5,
        description="Seconds a soft stop or an upgrade lets open streams finish after GOAWAY "
        "(0: wait for them without limit).",
    )

    @model_validator(mode="after")
    def _http11(self) -> HttpsListenerConfig:
        if self.disable_http11:
            check_http2_only(self.alpn_protocols)
        return self

    @field_validator("tls_versions")
    @classmethod
    def _versions(cls, value: list[TlsVersion]) -> list[TlsVersion]:
        if not value:
            raise ValueError("tls_versions must list at least one version")
        return value

    @field_validator("cipher_list")
    @classmethod
    def _ciphers(cls, value: list[str]) -> list[str]:
        check_cipher_list(value)
        return value

    @field_validator("alpn_protocols")
    @classmethod
    def _alpn(cls, value: list[str]) -> list[str]:
        return check_alpn_protocols(value)

    @field_validator("default_sni")
    @classmethod
    def _default_sni(cls, value: str | None) -> str | None:
        return None if value is None else normalize_hostname(value)


H2_LISTENER_FIELDS: tuple[str, ...] = tuple(
    name for name in HttpsListenerConfig.model_fields if name.startswith("h2_")
)
"""The HTTP/2 settings of an HTTPS listener, in sōzu's order."""


def check_http2_only(alpn_protocols: list[str]) -> None:
    """``ValueError`` when ``alpn_protocols`` does not fit ``disable_http11 = true``."""
    if "http/1.1" in alpn_protocols:
        raise ValueError(
            "disable_http11 = true drops the clients that do not negotiate h2, but "
            "alpn_protocols offers 'http/1.1': offer h2 alone (alpn_protocols = [\"h2\"])"
        )
    if "h2" not in alpn_protocols:
        raise ValueError(
            "disable_http11 = true serves HTTP/2 only: alpn_protocols must offer 'h2' "
            '(alpn_protocols = ["h2"])'
        )


class TcpListenerConfig(ListenerBase):
    """A TCP listener: byte pipes to the backends of the one cluster it is bound to."""


ListenerConfig = HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig


# --------------------------------------------------------------------------- clusters


class HealthCheck(Model):
    """Active checks of a cluster's backends, run by the main process: each backend is probed
    once per ``interval`` (whatever the number of workers), jittered. With a ``uri`` the probe
    is an HTTP ``GET`` that must answer ``expected_status`` (0: any 2xx) within ``timeout``;
    without one it is a TCP connection that must open within ``timeout``. A backend goes down
    after ``unhealthy_threshold`` failed probes in a row and up again after
    ``healthy_threshold`` successful ones; a backend that is down gets no new requests. When
    every backend of the cluster is down, ``fail_open`` sends traffic to them anyway (as if
    they were not checked); without it the cluster answers 503."""

    uri: str | None = None
    """The request-target of the HTTP probe (``/health``); None: a TCP connection check."""
    interval: Annotated[float, Field(ge=0.1, le=86_400)] = 10.0
    """Seconds between two probes of a backend (at least 0.1)."""
    timeout: Annotated[float, Field(gt=0, le=3_600)] = 5.0
    """Seconds a probe may take (connection and, for HTTP, the status line)."""
    healthy_threshold: Annotated[int, Field(ge=1, le=1_000)] = 3
    unhealthy_threshold: Annotated[int, Field(ge=1, le=1_000)] = 3
    expected_status: Annotated[int, Field(ge=0, le=599)] = 0
    """The status the HTTP probe must get (100-599); 0: any 2xx."""
    host: str | None = None
    """The ``Host`` of the HTTP probe; None: the hostname of the cluster's first frontend
    (else the backend's address)."""
    fail_open: bool = True

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        return None if value is None else check_origin_form(value)

    @field_validator("expected_status")
    @classmethod
    def _status(cls, value: int) -> int:
        if value and not 100 <= value <= 599:
            raise ValueError(f"{value} is not an HTTP status code (100-599, or 0 for any 2xx)")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and parse_authority(value.encode("utf-8", "replace")) is None:
            raise ValueError(f"{value!r} is not a host name or address (with an optional port)")
        return value

    def describe(self) -> str:
        """Short human form: ``GET /health every 10s`` or ``TCP connect every 2s``."""
        probe = f"GET {self.uri}" if self.uri is not None else "TCP connect"
        return f"{probe} every {self.interval:g}s"


class Cluster(Model):
    """A set of backends and how traffic is spread over them."""

    cluster_id: Identifier
    sticky_session: bool = False
    https_redirect: bool = False
    """Requests arriving on an HTTP listener are redirected (301) to https."""
    https_redirect_port: Port | None = None
    proxy_protocol: ProxyProtocolConfig | None = None
    """TCP clusters: send a PROXY header to the backends (send), or relay the one received."""
    load_balancing: LoadBalancingAlgorithm = LoadBalancingAlgorithm.ROUND_ROBIN
    load_metric: LoadMetric | None = None
    answers: Answers = Field(default_factory=dict)
    """Custom answer templates for this cluster (override the listener's)."""
    authorized_hashes: list[str] = Field(default_factory=list)
    """Credentials for frontends with ``required_auth``: ``user:hex(sha256(password))``."""
    www_authenticate: str | None = None
    """Realm sent in ``WWW-Authenticate`` with a 401."""
    max_connections_per_ip: Annotated[int, Field(ge=0)] | None = None
    """Connections one client IP may have open to this cluster, per worker (0: unlimited;
    ``None``: the global ``max_connections_per_ip``). Over it, HTTP gets 429 and TCP is closed."""
    retry_after: Annotated[int, Field(ge=0)] | None = None
    """``Retry-After`` seconds of this cluster's 429 (0: no header; ``None``: the global)."""
    health_check: HealthCheck | None = None
    """Active checks of the backends (see :class:`HealthCheck`); None: passive detection
    only (connection failures on real traffic)."""
    http2: bool = False
    """HTTP clusters: speak HTTP/2 to the backends, in clear text with prior knowledge (h2c);
    the requests share backend connections as streams, up to each backend's
    MAX_CONCURRENT_STREAMS."""

    @field_validator("authorized_hashes")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for entry in value:
            user, sep, digest = entry.partition(":")
            if not sep or not user or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(
                    f"authorized hash {entry!r} must be 'user:<sha256 hex of password>'"
                )
        return value

    @field_validator("www_authenticate")
    @classmethod
    def _realm(cls, value: str | None) -> str | None:
        return None if value is None else check_single_line(value)


# --------------------------------------------------------------------------- frontends


class PathRule(Model):
    """How a frontend matches the request-target (path and query)."""

    kind: PathRuleKind = PathRuleKind.PREFIX
    value: str = ""
    """PREFIX: byte prefix ("" matches everything); EQUALS: the whole target; REGEX: Python
    regular expression anchored at the start of the target."""

    @model_validator(mode="after")
    def _check(self) -> PathRule:
        if self.kind is PathRuleKind.REGEX:
            compile_path_regex(self.value)
        else:
            encode_path_value(self.value)
        return self

    def describe(self) -> str:
        """Short human form: ``/api`` (prefix), ``=/x`` (equals), ``~^/v[0-9]`` (regex)."""
        marker = {PathRuleKind.PREFIX: "", PathRuleKind.EQUALS: "=", PathRuleKind.REGEX: "~"}
        return marker[self.kind] + self.value


class HeaderEdit(Model):
    """A header set on requests, responses or both; an empty value deletes the header."""

    position: HeaderPosition
    key: Token
    value: HeaderValue = ""


FrontendKey = tuple[str, str, str, str, str]
"""(address, hostname, path kind, path value, method or "") — what identifies an HTTP frontend."""


class HttpFrontend(Model):
    """An HTTP or HTTPS routing rule: which requests go to which cluster."""

    address: SocketAddress
    hostname: RuleHostname
    path: PathRule = Field(default_factory=PathRule)
    method: Token | None = None
    cluster_id: Identifier | None = None
    """``None`` makes a deny rule: matching requests get 401."""
    position: RulePosition = RulePosition.TREE
    tags: dict[str, str] = Field(default_factory=dict)
    redirect: RedirectPolicy = RedirectPolicy.FORWARD
    redirect_scheme: RedirectScheme = RedirectScheme.USE_SAME
    redirect_template: str | None = None
    rewrite_host: str | None = None
    rewrite_path: str | None = None
    rewrite_port: Port | None = None
    required_auth: bool = False
    headers: list[HeaderEdit] = Field(default_factory=list)
    hsts: Hsts | None = None
    """HTTPS frontends only: replaces the listener's HSTS setting for this frontend."""

    @property
    def key(self) -> FrontendKey:
        return (
            self.address,
            self.hostname,
            self.path.kind.value,
            self.path.value,
            self.method or "",
        )

    def describe(self) -> str:
        method = f" {self.method}" if self.method else ""
        return f"{self.hostname}{self.path.describe()}{method} on {self.address}"

    @field_validator("rewrite_host", "rewrite_path")
    @classmethod
    def _rewrite(cls, value: str | None) -> str | None:
        return None if value is None else check_single_line(value)


class TcpFrontend(Model):
    """Binds a TCP listener to a cluster (one cluster per TCP listener)."""

    address: SocketAddress
    cluster_id: Identifier
    tags: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- backends


class Backend(Model):
    """A server of a cluster. Identified by (cluster_id, backend_id)."""

    cluster_id: Identifier
    backend_id: Identifier
    address: SocketAddress
    weight: Annotated[int, Field(ge=0, le=255)] = 100
    sticky_id: str | None = None
    """Sticky-session cookie value that selects this backend (default: backend_id)."""
    backup: bool = False
    """Used only when no other backend of the cluster can be reached."""

    @field_validator("address")
    @classmethod
    def _reachable(cls, value: str) -> str:
        # addresses are in normal form: the unspecified ones are spelt exactly so
        host = split_address(value)[0].partition("%")[0]
        if host not in ("0.0.0.0", "::"):
            return value
        raise ValueError(
            f"backend address {value} is the unspecified address: a backend needs the address "
            "of a server (e.g. 127.0.0.1), not a wildcard to listen on"
        )

    @field_validator("sticky_id")
    @classmethod
    def _sticky(cls, value: str | None) -> str | None:
        if value is not None and (not value or re.search(r"[\x00-\x20\x7f;,\"\\]", value)):
            raise ValueError(f"sticky_id {value!r} must be a non-empty cookie value")
        return value
