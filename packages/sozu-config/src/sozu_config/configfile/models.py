"""The tables of ``config.toml`` as written: one pydantic model per kind of table.

Each model names the keys its table may hold, with their TOML type (``weight = "100"`` is an
error, not a coercion: models are validated strictly) and the constraints of the file format
itself; an unknown key is an error at validation (``extra="forbid"``). What a value means for the
routing state (a valid hostname, an HTTP token, a port range…) is checked once, by the state's
models (:mod:`sozu_config.models`) when the requests are built; a key left out means the state's
default. Enumerations are read case-insensitively, ``-`` standing for ``_`` (``ROUND_ROBIN``,
``round_robin``, ``use-same``).

The top-level settings model, :data:`GlobalsFile`, is derived from
:class:`~sozu_config.configfile.settings.Config`, whose fields state the names, defaults and
constraints once: in the file, paths are strings (relative to the file) and arrays are arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from ..addresses import SocketAddress, normalize_address
from ..models import (
    HeaderPosition,
    Hsts,
    HttpsListenerConfig,
    ListenerType,
    LoadBalancingAlgorithm,
    LoadMetric,
    PathRuleKind,
    RedirectPolicy,
    RedirectScheme,
    RulePosition,
    TlsVersion,
)
from ..tls import check_alpn_protocols, check_cipher_list
from .errors import show
from .settings import Config, MetricDetail, StatsdPrefix

__all__ = [
    "AdminFile",
    "BackendFile",
    "ClusterFile",
    "FileModel",
    "GlobalsFile",
    "HeaderFile",
    "HealthCheckFile",
    "HttpFrontendFile",
    "HttpListenerFile",
    "HttpsListenerFile",
    "ListenerFile",
    "MetricsFile",
    "TcpFrontendFile",
    "TcpListenerFile",
    "listener_file_model",
]

_Enum = TypeVar("_Enum", bound=StrEnum)


class FileModel(BaseModel):
    """Base of the file models: strict TOML types, unknown keys refused; validators built on
    first use."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True, defer_build=True
    )


# --------------------------------------------------------------------------- value forms


def _spelled(choices: Mapping[str, StrEnum]) -> BeforeValidator:
    """An enumeration spelt as in sōzu's files: case-insensitive, ``-`` for ``_``; ``choices``
    maps the names accepted (in the order messages list them) to the members."""

    def read(value: object) -> object:
        if type(value) is str:
            found = choices.get(value.upper().replace("-", "_"))
            if found is not None:
                return found
        raise ValueError(f"expected one of {', '.join(choices)}, found {show(value)}")

    return BeforeValidator(read)


def _names(enum: type[_Enum]) -> dict[str, _Enum]:
    return {member.name: member for member in enum}


def _load_balancing(value: object) -> object:
    if type(value) is str and value.upper() in ("HRW", "MAGLEV"):
        raise ValueError(
            f"{value} is only for UDP clusters, not supported (UDP is not implemented)"
        )
    return value


def _tls_versions(value: object) -> object:
    """sōzu's names of TLS versions (``TLS_V12``, ``TLS_V1_2``), without repeats."""
    if type(value) is not list or any(type(name) is not str for name in value):
        raise ValueError(f"expected an array of strings, found {show(value)}")
    versions: list[TlsVersion] = []
    for name in value:
        spelled = name.upper().replace(".", "_")
        if spelled in ("SSL_V2", "SSL_V3"):
            raise ValueError(f"{name} is not supported (only TLS 1.0 to 1.3)")
        version = _TLS_VERSIONS.get(spelled)
        if version is None:
            raise ValueError(
                f"unknown TLS version {name!r} (known: TLS_V12, TLS_V13, TLS_V10, TLS_V11)"
            )
        if version not in versions:
            versions.append(version)
    return versions


_TLS_VERSIONS = {
    **_names(TlsVersion),
    "TLS_V1_0": TlsVersion.TLS_V10,
    "TLS_V1_1": TlsVersion.TLS_V11,
    "TLS_V1_2": TlsVersion.TLS_V12,
    "TLS_V1_3": TlsVersion.TLS_V13,
}


def _ciphers(value: list[str]) -> list[str]:
    check_cipher_list(value)
    return value


def _refused(reason: str) -> AfterValidator:
    """A key that asks for what this proxy does not do: present at all, it is an error."""

    def refuse(value: object) -> object:
        raise ValueError(reason)

    return AfterValidator(refuse)


def _tables(value: object) -> object:
    if type(value) is not list:
        raise ValueError(f"expected an array of tables, found {show(value)}")
    return value


Tables = Annotated[list[Any], BeforeValidator(_tables)]
"""An array of tables; each entry is read with its own model (which depends on its context)."""
Answers = dict[str, Any]
"""``answers``: HTTP status → template text or ``file://<path>`` (checked when read)."""
LegacyAnswerFile = Annotated[
    str | None,
    Field(
        description="sōzu's answer file for this status, relative to the configuration "
        "file (the ``answers`` table wins)."
    ),
]
"""A per-status answer file of sōzu's HTTP listeners."""
# --------------------------------------------------------------------------- [[listeners]]


class TcpListenerFile(FileModel):
    """``[[listeners]]`` with ``protocol = "tcp"``; the keys every listener has. Timeouts left
    out are the top-level ones."""

    protocol: str
    """``tcp``, ``http`` or ``https``: the kind of listener, which decides the other keys it may
    have."""
    address: SocketAddress
    """The socket address it listens on (``0.0.0.0:80``, ``[::]:443``)."""
    public_address: SocketAddress | None = None
    """The address reported in forwarding headers and logs (default: ``address``); not with
    ``expect_proxy``."""
    expect_proxy: bool | None = None
    """Every connection starts with a PROXY protocol header, v1 or v2 (default: false)."""
    front_timeout: int | None = None
    """Seconds a client connection may stay idle (default: the top-level setting of the same
    name)."""
    back_timeout: int | None = None
    """Seconds a backend connection may stay idle (default: the top-level setting of the same
    name)."""
    connect_timeout: int | None = None
    """Seconds to open a connection to a backend (default: the top-level setting of the same
    name)."""
    request_timeout: int | None = None
    """Seconds a client has to send a whole request head (default: the top-level setting of the same
    name)."""


class _LegacyAnswerFiles(FileModel):
    """sōzu's per-status answer files of HTTP listeners (the ``answers`` table wins)."""

    answer_301: LegacyAnswerFile = None
    answer_400: LegacyAnswerFile = None
    answer_401: LegacyAnswerFile = None
    answer_404: LegacyAnswerFile = None
    answer_408: LegacyAnswerFile = None
    answer_413: LegacyAnswerFile = None
    answer_421: LegacyAnswerFile = None
    answer_429: LegacyAnswerFile = None
    answer_502: LegacyAnswerFile = None
    answer_503: LegacyAnswerFile = None
    answer_504: LegacyAnswerFile = None
    answer_507: LegacyAnswerFile = None


def _h2(name: str) -> Any:
    """A field of :class:`_Http2Tuning`: the default and meaning of the listener's setting
    (whose bounds are checked when the listener is built)."""
    info = HttpsListenerConfig.model_fields[name]
    return Field(info.default, description=info.description)


class _Http2Tuning(FileModel):
    """HTTP/2 settings of HTTPS listeners (reference §B.3): sōzu's names and defaults; a
    "window" is one second. An http listener accepts them with a warning and ignores them."""

    h2_max_rst_stream_per_window: int = _h2("h2_max_rst_stream_per_window")
    h2_max_ping_per_window: int = _h2("h2_max_ping_per_window")
    h2_max_settings_per_window: int = _h2("h2_max_settings_per_window")
    h2_max_empty_data_per_window: int = _h2("h2_max_empty_data_per_window")
    h2_max_window_update_stream0_per_window: int = _h2("h2_max_window_update_stream0_per_window")
    h2_max_continuation_frames: int = _h2("h2_max_continuation_frames")
    h2_max_glitch_count: int = _h2("h2_max_glitch_count")
    h2_initial_connection_window: int = _h2("h2_initial_connection_window")
    h2_max_concurrent_streams: int = _h2("h2_max_concurrent_streams")
    h2_stream_shrink_ratio: int = _h2("h2_stream_shrink_ratio")
    h2_max_rst_stream_lifetime: int = _h2("h2_max_rst_stream_lifetime")
    h2_max_rst_stream_abusive_lifetime: int = _h2("h2_max_rst_stream_abusive_lifetime")
    h2_max_rst_stream_emitted_lifetime: int = _h2("h2_max_rst_stream_emitted_lifetime")
    h2_max_header_list_size: int = _h2("h2_max_header_list_size")
    h2_max_header_table_size: int = _h2("h2_max_header_table_size")
    h2_max_header_fields: int = _h2("h2_max_header_fields")
    h2_stream_idle_timeout_seconds: int = _h2("h2_stream_idle_timeout_seconds")
    h2_graceful_shutdown_deadline_seconds: int = _h2("h2_graceful_shutdown_deadline_seconds")


LEGACY_ANSWER_KEYS = tuple(_LegacyAnswerFiles.model_fields)
HTTP2_KEYS = frozenset(_Http2Tuning.model_fields)


class HttpListenerFile(TcpListenerFile, _LegacyAnswerFiles):
    """``[[listeners]]`` with ``protocol = "http"``."""

    sticky_name: str | None = None
    """Name of the sticky-session cookie (default: ``SOZUBALANCEID``)."""
    answers: Answers | None = None
    """The proxy's own answers: HTTP status (``"404"``) to a template text or
    ``file://<path>``."""
    sozu_id_header: str | None = None
    """Header carrying the request id in the proxy's answers (default: ``Sozu-Id``)."""
    elide_x_real_ip: bool | None = None
    """Remove the ``X-Real-IP`` header a client sends (default: false)."""
    send_x_real_ip: bool | None = None
    """Add ``X-Real-IP`` with the client's address to requests (default: false)."""
    trust_forwarded_headers: bool | None = None
    """Keep the ``X-Forwarded-Proto`` and ``X-Forwarded-Port`` a client sends, for a listener only a
    trusted proxy reaches (default: false: they are replaced)."""
    hsts: Hsts | None = None
    """HTTPS: ``{ enabled, max_age, include_subdomains, preload, force_replace_backend }``,
    Strict-Transport-Security on the answers. Refused on plain HTTP listeners (RFC 6797 §7.2),
    with a message saying so."""


class HttpsListenerFile(HttpListenerFile, _Http2Tuning):
    """``[[listeners]]`` with ``protocol = "https"``: TLS settings and an optional certificate
    (added to the listener, and its default when ``default_sni`` is not given)."""

    tls_versions: Annotated[list[TlsVersion], BeforeValidator(_tls_versions)] | None = None
    """TLS versions offered: ``TLS_V12``, ``TLS_V13`` (also ``TLS_V10``, ``TLS_V11``; default: 1.2
    and 1.3)."""
    cipher_list: Annotated[list[str], AfterValidator(_ciphers)] | None = None
    """OpenSSL cipher names for TLS 1.2 and below (default: a modern list)."""
    cipher_suites: Annotated[list[str], AfterValidator(_ciphers)] | None = None
    """Another name of ``cipher_list`` (one of the two may be given)."""
    groups_list: list[str] | None = None
    """Ignored with a warning: the TLS library chooses the key exchange groups."""
    certificate: str | None = None
    """A PEM certificate file, relative to the configuration file: added to the listener, and its
    default certificate when ``default_sni`` is not given."""
    key: str | None = None
    """The PEM private key of ``certificate``."""
    certificate_chain: str | None = None
    """A PEM file of the intermediate certificates sent after ``certificate``."""
    send_tls13_tickets: int | None = None
    """TLS 1.3 session tickets sent after a handshake, 0 to 16 (default: 4)."""
    alpn_protocols: Annotated[list[str], AfterValidator(check_alpn_protocols)] | None = None
    """ALPN protocols offered, in the server's order of preference: ``h2`` and ``http/1.1``
    (default: ``["h2", "http/1.1"]``, or ``["h2"]`` with ``disable_http11 = true``)."""
    strict_sni_binding: bool | None = None
    """Answer 421 when the request's Host is not covered by the certificate served (default:
    true)."""
    disable_http11: bool = False
    """Serve HTTP/2 only: clients that do not negotiate ``h2`` (those sending no ALPN included)
    are dropped. ``alpn_protocols`` must then offer ``h2`` and not ``http/1.1``."""
    default_sni: str | None = None
    """The name whose certificate is served when the client sends no SNI, or a name no certificate
    covers (default: the listener's ``certificate``; without either such handshakes fail)."""


ListenerFile = TcpListenerFile | HttpListenerFile | HttpsListenerFile

_LISTENER_FILE_MODELS: dict[ListenerType, type[ListenerFile]] = {
    ListenerType.HTTP: HttpListenerFile,
    ListenerType.HTTPS: HttpsListenerFile,
    ListenerType.TCP: TcpListenerFile,
}


def listener_file_model(protocol: ListenerType) -> type[ListenerFile]:
    """The model of a listener table, chosen by its ``protocol``."""
    return _LISTENER_FILE_MODELS[protocol]


# --------------------------------------------------------------------------- [clusters.<id>]


Seconds = Annotated[float, Field(allow_inf_nan=False)]
"""A duration in seconds: a float or an integer (``interval = 10`` and ``interval = 2.5``)."""


class HealthCheckFile(FileModel):
    """``[clusters.<id>.health_check]``: active checks of the cluster's backends (sōzu's keys,
    plus ``host`` and ``fail_open``); what each one means and its bounds are those of
    :class:`~sozu_config.models.HealthCheck`. An http cluster's check needs ``uri``; a tcp
    cluster's check opens a connection and has no ``uri``, ``host`` nor ``expected_status``."""

    uri: str | None = None
    """The request-target of the HTTP probe (``/health``); required on http clusters, not allowed on
    tcp ones (whose probe opens a connection)."""
    interval: Seconds | None = None
    """Seconds between two probes of a backend, at least 0.1 (default: 10)."""
    timeout: Seconds | None = None
    """Seconds a probe may take (default: 5)."""
    healthy_threshold: int | None = None
    """Successful probes in a row that bring a down backend up (default: 3)."""
    unhealthy_threshold: int | None = None
    """Failed probes in a row that take a backend down (default: 3)."""
    expected_status: int | None = None
    """The status the HTTP probe must get, 100-599 (default: 0, any 2xx)."""
    host: str | None = None
    """The ``Host`` of the HTTP probe (default: the hostname of the cluster's first frontend)."""
    fail_open: bool | None = None
    """When every backend is down, send traffic to them anyway instead of answering 503 (default:
    true)."""


HTTP_ONLY_HEALTH_CHECK_KEYS = ("uri", "host", "expected_status")
"""Keys of a health check that only an HTTP probe has."""


class ClusterFile(FileModel):
    """``[clusters.<id>]``: the cluster's settings, its frontends and its backends."""

    protocol: str
    """``http`` (for http and https listeners) or ``tcp``."""
    frontends: Tables = []
    """The cluster's routing rules: an array of frontend tables (see *Frontends*)."""
    backends: Tables = []
    """The cluster's servers: an array of backend tables (see *Backends*)."""
    sticky_session: bool | None = None
    """HTTP: a cookie (the listener's ``sticky_name``) keeps a client on one backend (default:
    false)."""
    https_redirect: bool | None = None
    """HTTP: requests arriving on a plain HTTP listener are redirected (301) to https (default:
    false)."""
    https_redirect_port: int | None = None
    """HTTP: the port of the https redirection (default: 443, left out of the URL)."""
    send_proxy: bool = False
    """TCP clusters: send a PROXY header to the backends (relayed when the listener expects
    one)."""
    load_balancing: (
        Annotated[
            LoadBalancingAlgorithm,
            _spelled(_names(LoadBalancingAlgorithm)),
            BeforeValidator(_load_balancing),
        ]
        | None
    ) = None
    """``ROUND_ROBIN`` (default), ``RANDOM``, ``LEAST_LOADED`` or ``POWER_OF_TWO``."""
    load_metric: Annotated[LoadMetric, _spelled(_names(LoadMetric))] | None = None
    """What ``LEAST_LOADED`` and ``POWER_OF_TWO`` compare: ``CONNECTIONS`` (default), ``REQUESTS``
    or ``CONNECTION_TIME``."""
    answer_503: LegacyAnswerFile = None
    """sōzu's 503 answer file for this cluster (``answers`` wins)."""
    answers: Answers | None = None
    """This cluster's own answers: HTTP status to a template text or ``file://<path>`` (override the
    listener's)."""
    authorized_hashes: list[str] | None = None
    """Credentials for frontends with ``required_auth``: ``user:hex(sha256(password))`` entries."""
    www_authenticate: str | None = None
    """Realm sent in ``WWW-Authenticate`` with a 401."""
    max_connections_per_ip: int | None = None
    """Connections one client IP may have open to this cluster, per worker (0: unlimited; default:
    the top-level setting)."""
    retry_after: int | None = None
    """``Retry-After`` seconds of this cluster's 429 (0: no header; default: the top-level
    setting)."""
    http2: bool | None = None
    """HTTP clusters: speak HTTP/2 to the backends, in clear text with prior knowledge (h2c),
    requests sharing connections as streams (default: false, HTTP/1.1). Upgrade requests
    (WebSocket) to such a cluster are answered 502; active health checks stay HTTP/1.1.
    Refused on tcp clusters."""
    health_check: HealthCheckFile | None = None
    """Active checks of the backends (see its table below); without it, passive detection
    only."""
    udp: Annotated[Any, _refused("UDP clusters are not supported yet")] = None
    """sōzu's UDP clusters: refused (not supported yet)."""


HTTP_ONLY_CLUSTER_KEYS = ("sticky_session", "https_redirect", "https_redirect_port")


class HeaderFile(FileModel):
    """An entry of a frontend's ``headers``: set (or, with an empty value, delete) a header."""

    position: Annotated[HeaderPosition, _spelled(_names(HeaderPosition))]
    """``REQUEST``, ``RESPONSE`` or ``BOTH``: on what the header is set."""
    key: str
    """The header's name."""
    value: str = ""
    """The header's value; empty: the header is deleted."""


# sōzu's files know forward/permanent/unauthorized; the other two are the protocol's names.
_REDIRECT_NAMES = {
    "FORWARD": RedirectPolicy.FORWARD,
    "PERMANENT": RedirectPolicy.PERMANENT,
    "UNAUTHORIZED": RedirectPolicy.UNAUTHORIZED,
    "FOUND": RedirectPolicy.FOUND,
    "PERMANENT_REDIRECT": RedirectPolicy.PERMANENT_REDIRECT,
}


class HttpFrontendFile(FileModel):
    """An entry of an http cluster's ``frontends``. With ``certificate`` and ``key`` it is an
    HTTPS frontend and its certificate is added to its listener."""

    address: SocketAddress
    """The listener it routes on (its ``address``)."""
    hostname: str
    """The request's host: an exact name or a wildcard (``*.example.com``)."""
    path: str | None = None
    """The request-target the rule matches (default: every path); its kind is ``path_type``."""
    path_type: Annotated[PathRuleKind, _spelled(_names(PathRuleKind))] | None = None
    """``PREFIX`` (default), ``EQUALS`` or ``REGEX``: how ``path`` matches."""
    method: str | None = None
    """Only requests with this method (default: any)."""
    position: Annotated[RulePosition, _spelled(_names(RulePosition))] = RulePosition.TREE
    """Where the rule sits in the router: ``PRE`` (tried first, in order), ``TREE`` (by
    hostname and path; the default, DESIGN.md §5, where sōzu's files would say PRE) or ``POST``
    (tried last)."""
    tags: dict[str, str] | None = None
    """Labels of the frontend, shown in access logs."""
    redirect: Annotated[RedirectPolicy, _spelled(_REDIRECT_NAMES)] | None = None
    """``FORWARD`` (default: to the cluster), ``PERMANENT`` (301), ``FOUND`` (302),
    ``PERMANENT_REDIRECT`` (308) or ``UNAUTHORIZED`` (401)."""
    redirect_scheme: Annotated[RedirectScheme, _spelled(_names(RedirectScheme))] | None = None
    """Scheme of a redirection: ``USE_SAME`` (default), ``USE_HTTP`` or ``USE_HTTPS``."""
    redirect_template: str | None = None
    """Answer template of a redirection."""
    rewrite_host: str | None = None
    """The Host sent to the backend (or put in a redirection)."""
    rewrite_path: str | None = None
    """The path sent to the backend (or put in a redirection)."""
    rewrite_port: int | None = None
    """The port put in a redirection."""
    required_auth: bool | None = None
    """Requests need HTTP Basic credentials listed in the cluster's ``authorized_hashes`` (default:
    false)."""
    headers: list[HeaderFile] | None = None
    """Headers set or deleted: an array of ``{ position, key, value }`` tables."""
    certificate: str | None = None
    """A PEM certificate file: makes this an HTTPS frontend and adds the certificate to its
    listener."""
    key: str | None = None
    """The PEM private key of ``certificate``."""
    certificate_chain: str | None = None
    """A PEM file of the intermediate certificates of ``certificate``."""
    tls_versions: Annotated[list[TlsVersion], BeforeValidator(_tls_versions)] | None = None
    """The certificate's TLS versions (ignored, with a warning, without a certificate)."""
    hsts: Hsts | None = None
    """``{ enabled, max_age, include_subdomains, preload, force_replace_backend }``: Strict-
    Transport-Security on this HTTPS frontend's answers (replaces the listener's)."""


CERTIFICATE_KEYS = frozenset({"certificate", "key", "certificate_chain"})
# Frontend keys handed to the state's model unchanged.
FRONTEND_PLAIN_KEYS = frozenset(
    {
        "method",
        "tags",
        "redirect",
        "redirect_scheme",
        "redirect_template",
        "rewrite_host",
        "rewrite_path",
        "rewrite_port",
        "required_auth",
    }
)


class TcpFrontendFile(FileModel):
    """An entry of a tcp cluster's ``frontends``: the listener it binds to the cluster."""

    address: SocketAddress
    """The TCP listener bound to this cluster (its ``address``)."""
    tags: dict[str, str] | None = None
    """Labels of the frontend, shown in access logs."""


class BackendFile(FileModel):
    """An entry of a cluster's ``backends``. ``backend_id`` defaults to
    ``<cluster>-<index>-<address>``."""

    address: SocketAddress
    """The server's socket address (``10.0.0.1:8080``; not a wildcard)."""
    weight: int | None = None
    """Share of the traffic, 0 to 255 (default: 100)."""
    sticky_id: str | None = None
    """Sticky-session cookie value that selects this backend (default: ``backend_id``)."""
    backup: bool | None = None
    """Used only when no other backend of the cluster can be reached (default: false)."""
    backend_id: str | None = None
    """The backend's name (default: ``<cluster>-<index>-<address>``)."""


class MetricsFile(FileModel):
    """``[metrics]``: the statsd export (``detail`` spelt ``process``, ``frontend``,
    ``cluster`` or ``backend``, in any case)."""

    address: SocketAddress
    """UDP address of the statsd server."""
    tagged_metrics: bool | None = None
    """InfluxDB-style tags (``,origin=…``) instead of ids in the key (default: false)."""
    prefix: StatsdPrefix | None = None
    """The first component of every statsd key (default: ``sozu``)."""
    detail: Annotated[MetricDetail, _spelled(_names(MetricDetail))] | None = None
    """Scopes sent: ``process``, ``frontend``, ``cluster`` (default) or ``backend``."""


# --------------------------------------------------------------------------- top level

# Top-level keys of sōzu this project does not implement, with the value that asks for nothing
# (no warning then); any other value is ignored with a warning.
IGNORED_GLOBALS: dict[str, Any] = {
    "handle_process_affinity": False,
    "splice_pipe_capacity_bytes": 0,
    "slab_entries_per_connection": 4,
}

_LOG_LEVELS = frozenset({"error", "warn", "info", "debug", "trace", "off"})


def _log_level(spec: str) -> str:
    """An env_logger-style filter: comma-separated ``level`` or ``module=level`` directives.

    Stricter than env_logger, which also takes a bare module name: a bare word must be a
    level, so that a misspelt level is an error instead of a filter that logs nothing useful.
    """
    for directive in spec.split(","):
        level = directive.rpartition("=")[2].strip().lower()
        if level not in _LOG_LEVELS:
            raise ValueError(
                f"invalid directive {directive.strip()!r}: expected a level or module=level, "
                f"the level being one of {', '.join(sorted(_LOG_LEVELS))}"
            )
    return spec


def _log_target(target: str) -> str:
    scheme, sep, rest = target.partition("://")
    if target == "stdout":
        return target
    if sep and scheme in ("udp", "tcp"):
        try:
            normalize_address(rest)
            return target
        except ValueError:
            pass
    elif sep and scheme in ("unix", "file") and rest.startswith("/"):
        return target
    raise ValueError(
        "expected stdout, udp://IP:port, tcp://IP:port, unix:///path or file:///path, "
        f"found {show(target)}"
    )


def _path_text(value: str) -> str:
    if not value:
        raise ValueError("expected a path, found an empty string")
    return value


PathText = Annotated[str, AfterValidator(_path_text)]
"""A path of the settings: relative to the configuration file's directory."""


class AdminFile(FileModel):
    """``[admin]``: the HTTP admin endpoint; ``token_file`` is relative to the file."""

    address: SocketAddress
    """Where the HTTP admin endpoint listens (``127.0.0.1:9180``)."""
    token_file: PathText | None = None
    """A file holding the bearer token every request must carry; required off the loopback
    interface."""


# Settings whose form in the file is not derived from their type in Config.
_GLOBAL_FILE_TYPES: dict[str, Any] = {
    "log_level": Annotated[str, AfterValidator(_log_level)],
    "log_target": Annotated[str, AfterValidator(_log_target)],
    "access_logs_target": Annotated[str, AfterValidator(_log_target)],
    "access_logs_format": Literal["ascii", "json", "protobuf"],
    # sōzu: 0 means the default
    "basic_auth_max_credential_bytes": Annotated[int, Field(ge=0)],
    # a table, read on its own by the loader (rules.read_admin) to locate its errors in it
    "admin": AdminFile,
}
# Fields of Config that are not top-level keys of the file (``metrics`` is the [metrics] table).
_NOT_GLOBAL_KEYS = ("path", "warnings", "state", "metrics")


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = get_origin(annotation)
    return get_args(annotation) if origin is Union or origin is UnionType else (annotation,)


def _file_type(annotation: Any) -> Any:
    """The form a setting takes in the file: a path is a string, a tuple is an array."""
    members = _members(annotation)
    if Path in members:
        return PathText
    for member in members:
        if get_origin(member) is tuple:
            return list[get_args(member)[0]]  # type: ignore[misc]
    return annotation


def _globals_file() -> type[BaseModel]:
    """A model of the top-level keys derived from Config's fields: same names and
    constraints, the file's types (:func:`_file_type`, or :data:`_GLOBAL_FILE_TYPES` where the
    file says more), every key optional."""
    fields: dict[str, Any] = {}
    for name, info in Config.model_fields.items():
        if name in _NOT_GLOBAL_KEYS:
            continue
        file_type = _GLOBAL_FILE_TYPES.get(name)
        if file_type is None:
            file_type = _file_type(info.annotation)
            if info.metadata:
                file_type = Annotated[file_type, *info.metadata]
        fields[name] = (file_type | None, None)
    return create_model("GlobalsFile", __base__=FileModel, __doc__=_GLOBALS_DOC, **fields)


_GLOBALS_DOC = """The top-level settings (every key of Config but the loaded state): the value a
file gives is validated here; a key left out takes Config's default."""

GlobalsFile = _globals_file()
"""The top-level settings as written in the file (see :func:`_globals_file`)."""
GLOBAL_KEYS = frozenset(GlobalsFile.model_fields)
GLOBAL_PATH_KEYS = tuple(
    name
    for name, info in Config.model_fields.items()
    if name not in _NOT_GLOBAL_KEYS and Path in _members(info.annotation)
)
"""Settings that are paths: relative to the configuration file's directory, stored absolute."""
