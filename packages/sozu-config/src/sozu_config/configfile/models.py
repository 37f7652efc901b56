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
    """Base of the file models: strict TOML types, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


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


def _refused_if_true(reason: str) -> AfterValidator:
    def refuse(value: bool) -> bool:
        if value:
            raise ValueError(reason)
        return value

    return AfterValidator(refuse)


def _tables(value: object) -> object:
    if type(value) is not list:
        raise ValueError(f"expected an array of tables, found {show(value)}")
    return value


Tables = Annotated[list[Any], BeforeValidator(_tables)]
"""An array of tables; each entry is read with its own model (which depends on its context)."""
Answers = dict[str, Any]
"""``answers``: HTTP status → template text or ``file://<path>`` (checked when read)."""
Unchecked = Any
"""A value this proxy ignores (with a warning): any TOML value is accepted."""


# --------------------------------------------------------------------------- [[listeners]]


class TcpListenerFile(FileModel):
    """``[[listeners]]`` with ``protocol = "tcp"``; the keys every listener has. Timeouts left
    out are the top-level ones."""

    protocol: str
    address: SocketAddress
    public_address: SocketAddress | None = None
    expect_proxy: bool | None = None
    front_timeout: int | None = None
    back_timeout: int | None = None
    connect_timeout: int | None = None
    request_timeout: int | None = None


class _LegacyAnswerFiles(FileModel):
    """sōzu's per-status answer files of HTTP listeners (the ``answers`` table wins)."""

    answer_301: str | None = None
    answer_400: str | None = None
    answer_401: str | None = None
    answer_404: str | None = None
    answer_408: str | None = None
    answer_413: str | None = None
    answer_421: str | None = None
    answer_429: str | None = None
    answer_502: str | None = None
    answer_503: str | None = None
    answer_504: str | None = None
    answer_507: str | None = None


class _Http2Tuning(FileModel):
    """HTTP/2 tuning of sōzu's listeners (reference §B.3): accepted, and ignored with a
    warning, since this proxy does not speak HTTP/2."""

    h2_max_rst_stream_per_window: Unchecked = None
    h2_max_ping_per_window: Unchecked = None
    h2_max_settings_per_window: Unchecked = None
    h2_max_empty_data_per_window: Unchecked = None
    h2_max_window_update_stream0_per_window: Unchecked = None
    h2_max_continuation_frames: Unchecked = None
    h2_max_glitch_count: Unchecked = None
    h2_initial_connection_window: Unchecked = None
    h2_max_concurrent_streams: Unchecked = None
    h2_stream_shrink_ratio: Unchecked = None
    h2_max_rst_stream_lifetime: Unchecked = None
    h2_max_rst_stream_abusive_lifetime: Unchecked = None
    h2_max_rst_stream_emitted_lifetime: Unchecked = None
    h2_max_header_list_size: Unchecked = None
    h2_max_header_table_size: Unchecked = None
    h2_max_header_fields: Unchecked = None
    h2_stream_idle_timeout_seconds: Unchecked = None
    h2_graceful_shutdown_deadline_seconds: Unchecked = None


LEGACY_ANSWER_KEYS = tuple(_LegacyAnswerFiles.model_fields)
HTTP2_KEYS = frozenset(_Http2Tuning.model_fields)


class HttpListenerFile(TcpListenerFile, _LegacyAnswerFiles, _Http2Tuning):
    """``[[listeners]]`` with ``protocol = "http"``."""

    sticky_name: str | None = None
    answers: Answers | None = None
    sozu_id_header: str | None = None
    elide_x_real_ip: bool | None = None
    send_x_real_ip: bool | None = None
    trust_forwarded_headers: bool | None = None
    hsts: Hsts | None = None
    """Refused on plain HTTP listeners (RFC 6797 §7.2), with a message saying so."""


class HttpsListenerFile(HttpListenerFile):
    """``[[listeners]]`` with ``protocol = "https"``: TLS settings and an optional certificate
    (added to the listener, and its default when ``default_sni`` is not given)."""

    tls_versions: Annotated[list[TlsVersion], BeforeValidator(_tls_versions)] | None = None
    cipher_list: Annotated[list[str], AfterValidator(_ciphers)] | None = None
    cipher_suites: Annotated[list[str], AfterValidator(_ciphers)] | None = None
    """Another name of ``cipher_list`` (one of the two may be given)."""
    groups_list: list[str] | None = None
    """Ignored with a warning: the TLS library chooses the key exchange groups."""
    certificate: str | None = None
    key: str | None = None
    certificate_chain: str | None = None
    send_tls13_tickets: int | None = None
    alpn_protocols: Annotated[list[str], AfterValidator(check_alpn_protocols)] | None = None
    strict_sni_binding: bool | None = None
    disable_http11: Annotated[
        bool,
        _refused_if_true(
            "HTTP/2 is not supported yet: disable_http11 = true would refuse every client"
        ),
    ] = False
    default_sni: str | None = None


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
    interval: Seconds | None = None
    timeout: Seconds | None = None
    healthy_threshold: int | None = None
    unhealthy_threshold: int | None = None
    expected_status: int | None = None
    host: str | None = None
    fail_open: bool | None = None


HTTP_ONLY_HEALTH_CHECK_KEYS = ("uri", "host", "expected_status")
"""Keys of a health check that only an HTTP probe has."""


class ClusterFile(FileModel):
    """``[clusters.<id>]``: the cluster's settings, its frontends and its backends."""

    protocol: str
    frontends: Tables = []
    backends: Tables = []
    sticky_session: bool | None = None
    https_redirect: bool | None = None
    https_redirect_port: int | None = None
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
    load_metric: Annotated[LoadMetric, _spelled(_names(LoadMetric))] | None = None
    answer_503: str | None = None
    answers: Answers | None = None
    authorized_hashes: list[str] | None = None
    www_authenticate: str | None = None
    max_connections_per_ip: int | None = None
    retry_after: int | None = None
    http2: Annotated[
        bool, _refused_if_true("HTTP/2 to the backends (h2c) is not supported yet")
    ] = False
    health_check: HealthCheckFile | None = None
    udp: Annotated[Any, _refused("UDP clusters are not supported yet")] = None


HTTP_ONLY_CLUSTER_KEYS = ("sticky_session", "https_redirect", "https_redirect_port")


class HeaderFile(FileModel):
    """An entry of a frontend's ``headers``: set (or, with an empty value, delete) a header."""

    position: Annotated[HeaderPosition, _spelled(_names(HeaderPosition))]
    key: str
    value: str = ""


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
    hostname: str
    path: str | None = None
    path_type: Annotated[PathRuleKind, _spelled(_names(PathRuleKind))] | None = None
    method: str | None = None
    position: Annotated[RulePosition, _spelled(_names(RulePosition))] = RulePosition.TREE
    """TREE by default (DESIGN.md §5), where sōzu's files would say PRE."""
    tags: dict[str, str] | None = None
    redirect: Annotated[RedirectPolicy, _spelled(_REDIRECT_NAMES)] | None = None
    redirect_scheme: Annotated[RedirectScheme, _spelled(_names(RedirectScheme))] | None = None
    redirect_template: str | None = None
    rewrite_host: str | None = None
    rewrite_path: str | None = None
    rewrite_port: int | None = None
    required_auth: bool | None = None
    headers: list[HeaderFile] | None = None
    certificate: str | None = None
    key: str | None = None
    certificate_chain: str | None = None
    tls_versions: Annotated[list[TlsVersion], BeforeValidator(_tls_versions)] | None = None
    """The certificate's TLS versions (ignored, with a warning, without a certificate)."""
    hsts: Hsts | None = None


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
    tags: dict[str, str] | None = None


class BackendFile(FileModel):
    """An entry of a cluster's ``backends``. ``backend_id`` defaults to
    ``<cluster>-<index>-<address>``."""

    address: SocketAddress
    weight: int | None = None
    sticky_id: str | None = None
    backup: bool | None = None
    backend_id: str | None = None


class MetricsFile(FileModel):
    """``[metrics]``: the statsd export (``detail`` spelt ``process``, ``frontend``,
    ``cluster`` or ``backend``, in any case)."""

    address: SocketAddress
    tagged_metrics: bool | None = None
    prefix: StatsdPrefix | None = None
    detail: Annotated[MetricDetail, _spelled(_names(MetricDetail))] | None = None


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
    token_file: PathText | None = None


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
