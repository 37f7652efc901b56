"""Loading sōzu's ``config.toml``: every key checked, then the routing state the file describes.

:func:`load_config` reads the file and returns a :class:`Config`: the global settings as a frozen
model, the non-fatal findings as ``warnings``, and ``state``, the desired
:class:`~sozu_config.state.ConfigState`. The state is built by applying to an empty state, in
this order, the requests sōzu derives from a configuration file (reference §D.7):

1. ``add_http_listener`` for every HTTP listener, then ``add_https_listener``, then
   ``add_tcp_listener`` (file order; listeners created implicitly for frontends on an
   undeclared address follow the declared ones of their protocol), then the certificates
   declared on HTTPS listeners;
2. for every cluster, in file order: ``add_cluster``; for every frontend, in file order, its
   certificate (once per fingerprint and listener) and ``add_https_frontend``, or
   ``add_http_frontend``, or ``add_tcp_frontend``; then ``add_backend`` for every backend;
3. ``activate_listener`` for every listener when ``activate_listeners`` is true.

Rules (reference §B, with this project's decisions):

* unknown top-level keys are ignored, as sōzu does, but named in a warning; unknown keys in
  listener, cluster, frontend, backend and ``[metrics]`` tables are errors;
* keys this project does not implement are accepted with a warning when ignoring them is
  harmless (HTTP/2 tuning, ``metrics``, audit logs, CPU affinity, …) and refused when ignoring
  them would change what the proxy does (``h2`` ALPN, UDP, health checks);
* the models carry content, never paths: certificates, keys and answer templates are read
  while loading. Relative paths of those files are looked up in the configuration file's
  directory first, then in the current working directory (sōzu's rule), so that both layouts
  work; ``command_socket``, ``saved_state``, ``pid_file_path`` and the audit logs are
  relative to the configuration file's directory and stored absolute;
* values must have their TOML type (``weight = "100"`` is an error, not a coercion), and
  enumerations are read case-insensitively (``ROUND_ROBIN``, ``round_robin``, ``use-same``).

Deliberate differences from sōzu:

* frontends default to ``position = TREE`` (DESIGN.md §5), not sōzu's accidental PRE;
* the default ``command_socket`` is ``sozu.sock`` next to the file, not in the working
  directory, and ``pid_file_path`` is relative to the file as well;
* a listener's ``certificate``/``key`` is added to that listener like any certificate (SNI
  picks it) and becomes its ``default_sni``, instead of being copied onto its frontends;
* an HTTPS frontend without a certificate that no certificate of its listener covers is
  accepted with a warning (a certificate can be added at runtime), where sōzu refuses it;
* ``buffer_size`` is at least 16,393 bytes always, two backends of a cluster cannot share a
  ``backend_id``, and ``log_level`` must only name levels (a misspelt level is an error);
* ``max_command_buffer_size`` defaults to 64 MiB (sōzu: 2 MB).

Every problem is a :class:`ConfigError` naming the file, the table and the key; a pydantic
``ValidationError`` never escapes.
"""

from __future__ import annotations

import datetime as dt
import difflib
import gc
import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from . import requests as rq
from .addresses import normalize_address
from .certificates import (
    CertificateAndKey,
    CertificateError,
    certificate_info,
    check_key_matches,
    split_pem_chain,
)
from .files import read_regular, read_regular_text
from .models import (
    Cluster,
    HeaderEdit,
    HeaderPosition,
    Hsts,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    LoadBalancingAlgorithm,
    LoadMetric,
    Model,
    PathRule,
    PathRuleKind,
    ProxyProtocolConfig,
    RedirectPolicy,
    RedirectScheme,
    RulePosition,
    TcpListenerConfig,
    Timeout,
    TlsVersion,
    normalize_hostname_rule,
)
from .state import ConfigState, StateError
from .tls import ALPN_PROTOCOLS, check_cipher_list

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_NAMED_FILE_BYTES",
    "Config",
    "ConfigError",
    "load_config",
    "load_config_text",
]

# Largest configuration file read (100,000 clusters fit), and largest file it names
# (certificate chains, keys, answer templates).
MAX_CONFIG_BYTES = 256 * 1024 * 1024
MAX_NAMED_FILE_BYTES = 4 * 1024 * 1024

_Choice = TypeVar("_Choice")


# --------------------------------------------------------------------------- errors


def _locate(path: Path, table: str | None, key: str | None) -> str:
    """``file: [table] key 'k'`` — where a finding is, as errors and warnings print it."""
    where = str(path)
    if table is not None:
        where += f": [{table}]"
        if key is not None:
            where += f" key '{key}'"
    elif key is not None:
        where += f": top-level key '{key}'"
    return where


class ConfigError(ValueError):
    """A configuration that cannot be used.

    ``str(error)`` is one paragraph naming the file, the table and the key, what was found and
    what was expected, e.g. ``examples/app.toml: [clusters.api.frontends[2]] key 'hostnme':
    unknown key (known keys: address, hostname, path, ...)``. Array entries are numbered from 0,
    as in the default backend ids. ``table`` is ``None`` for top-level keys and for problems of
    the file as a whole (unreadable file, TOML syntax error: then ``line`` and ``column`` say
    where, counted from 1).
    """

    path: Path
    table: str | None
    key: str | None
    reason: str
    line: int | None
    column: int | None

    def __init__(
        self,
        reason: str,
        *,
        path: Path,
        table: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.table = table
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column
        where = _locate(path, table, key)
        if line is not None:
            where += f": line {line}, column {column}"
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------- the settings

_DEFAULT_COMMAND_BUFFER_SIZE = 1_000_000  # sōzu's default
# sōzu: 2 MB. A state file line or a query answer for thousands of certificates needs more.
_DEFAULT_MAX_COMMAND_BUFFER_SIZE = 64 * 1024 * 1024


class Config(Model):
    """The global settings of a configuration file, and the routing state it describes.

    Defaults are sōzu's (reference §B.1) unless noted. Invariants: every path is absolute;
    ``min_buffers <= max_buffers``; ``command_buffer_size <= max_command_buffer_size``;
    ``automatic_state_save`` implies ``saved_state``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path | None = None
    """The file the configuration came from (``None`` when loaded from text)."""
    command_socket: Path
    """Unix socket of the command channel. Default: ``sozu.sock`` next to the configuration
    file (sōzu: in the working directory)."""
    command_buffer_size: Annotated[int, Field(ge=1)] = _DEFAULT_COMMAND_BUFFER_SIZE
    """Initial size of a command channel buffer, in bytes."""
    max_command_buffer_size: Annotated[int, Field(ge=1)] = _DEFAULT_MAX_COMMAND_BUFFER_SIZE
    """Largest command message accepted, in bytes (sōzu: 2 MB; a state file line for thousands
    of certificates needs more)."""
    saved_state: Path | None = None
    """State file loaded at startup, and written by ``automatic_state_save``."""
    automatic_state_save: bool = False
    """Save the state to ``saved_state`` after every accepted change (a no-op in sōzu 2.1)."""
    log_level: str = "info"
    """Log filter: a level (``error``, ``warn``, ``info``, ``debug``, ``trace``, ``off``) or
    comma-separated ``module=level`` directives."""
    log_target: str = "stdout"
    """``stdout``, ``udp://IP:port``, ``tcp://IP:port``, ``unix:///path`` or ``file:///path``."""
    log_colored: bool = False
    access_logs_target: str | None = None
    """Where access logs go (same syntax as ``log_target``; ``None``: with the other logs)."""
    access_logs_format: Literal["ascii"] = "ascii"
    access_logs_colored: bool = False
    """Colours in access logs; when the file does not say, the value of ``log_colored``."""
    worker_count: Annotated[int, Field(ge=1, le=65_535)] = 2
    worker_automatic_restart: bool = True
    worker_timeout: Annotated[int, Field(ge=1)] = 10
    """Seconds the main process waits for a worker's answer."""
    max_connections: Annotated[int, Field(ge=1)] = 10_000
    """Connections per worker; beyond it the worker stops accepting."""
    min_buffers: Annotated[int, Field(ge=0)] = 1
    max_buffers: Annotated[int, Field(ge=1)] = 1_000
    buffer_size: Annotated[int, Field(ge=16_393)] = 16_393
    """Bytes per buffer: at least a 16 KiB HTTP/2 frame and its 9-byte header (sōzu demands
    it only when HTTP/2 is offered; here always)."""
    ctl_command_timeout: Annotated[int, Field(ge=0)] = 1_000
    """Milliseconds the CLI waits for an answer (0: forever)."""
    pid_file_path: Path | None = None
    activate_listeners: bool = True
    """Listeners of the file start accepting at startup (else they wait for
    ``activate_listener``)."""
    front_timeout: Timeout = 60
    back_timeout: Timeout = 30
    connect_timeout: Timeout = 3
    request_timeout: Timeout = 10
    zombie_check_interval: Annotated[int, Field(ge=1)] = 1_800
    accept_queue_timeout: Annotated[int, Field(ge=1)] = 60
    evict_on_queue_full: bool = False
    """At max_connections, close the least recently active 1 % of the connections to make
    room for new ones (instead of leaving new clients in the kernel backlog)."""
    retry_after: Annotated[int, Field(ge=0)] = 60
    """``Retry-After`` seconds of a 429 answer (0: no header)."""
    basic_auth_max_credential_bytes: Annotated[int, Field(ge=1)] = 4_096
    """Largest decoded ``Authorization: Basic`` payload examined (0 in the file: 4096)."""
    command_allowed_uids: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    """User ids allowed on the command socket (``None``: the socket's file mode decides)."""
    disable_cluster_metrics: bool = False
    max_connections_per_ip: Annotated[int, Field(ge=0)] = 0
    """Connections one client IP may have open to one cluster, per worker (0: unlimited);
    a cluster's own setting overrides it. Over it, HTTP gets 429 and TCP is closed."""
    expired_certificates: Literal["refuse", "warn"] = "refuse"
    """What the daemon does with a certificate whose notAfter is past: refuse it, or serve it
    and log a warning. The loader only warns; the daemon applies this policy."""
    soft_stop_timeout: Annotated[int, Field(ge=0)] = 60
    """Seconds a soft stop waits for requests in flight before cutting them (0: no wait)."""
    saved_state_errors: Literal["refuse", "skip"] = "refuse"
    """What the daemon does at start-up when the ``saved_state`` file has records it cannot
    read or apply: refuse to start (naming each line at fault), or start with the good records
    and log each bad one."""
    audit_logs_target: Path | None = None
    """Audit trail of the commands that change the daemon, as text lines (appended; a new file
    is created with mode 0640)."""
    audit_logs_json_target: Path | None = None
    """The same audit trail as JSON lines."""
    warnings: tuple[str, ...] = ()
    """Non-fatal findings (ignored key, expired certificate, implicit listener, …), each
    located like a :class:`ConfigError`."""
    state: ConfigState = Field(default_factory=ConfigState, exclude=True, repr=False)
    """The desired routing state (not part of dumps: it has its own serialisations)."""

    @field_validator(
        "command_socket",
        "saved_state",
        "pid_file_path",
        "audit_logs_target",
        "audit_logs_json_target",
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, found {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.automatic_state_save and self.saved_state is None:
            raise ValueError("automatic_state_save needs saved_state")
        if self.min_buffers > self.max_buffers:
            raise ValueError("min_buffers must not exceed max_buffers")
        if self.command_buffer_size > self.max_command_buffer_size:
            raise ValueError("command_buffer_size must not exceed max_command_buffer_size")
        return self


# --------------------------------------------------------------------------- vocabulary

# Answers that sōzu's listeners accept as legacy ``answer_NNN`` file keys.
_LEGACY_ANSWER_KEYS = tuple(
    f"answer_{status}" for status in (301, 400, 401, 404, 408, 413, 421, 429, 502, 503, 504, 507)
)

# HTTP/2 tuning of sōzu's listeners (reference §B.3): meaningless without HTTP/2.
_H2_KNOBS = frozenset(
    {
        "h2_max_rst_stream_per_window",
        "h2_max_ping_per_window",
        "h2_max_settings_per_window",
        "h2_max_empty_data_per_window",
        "h2_max_window_update_stream0_per_window",
        "h2_max_continuation_frames",
        "h2_max_glitch_count",
        "h2_initial_connection_window",
        "h2_max_concurrent_streams",
        "h2_stream_shrink_ratio",
        "h2_max_rst_stream_lifetime",
        "h2_max_rst_stream_abusive_lifetime",
        "h2_max_rst_stream_emitted_lifetime",
        "h2_max_header_list_size",
        "h2_max_header_table_size",
        "h2_max_header_fields",
        "h2_stream_idle_timeout_seconds",
        "h2_graceful_shutdown_deadline_seconds",
    }
)

_LISTENER_COMMON_KEYS = frozenset(
    {
        "protocol",
        "address",
        "public_address",
        "expect_proxy",
        "front_timeout",
        "back_timeout",
        "connect_timeout",
        "request_timeout",
    }
)
_LISTENER_HTTP_KEYS = (
    _LISTENER_COMMON_KEYS
    | {
        "sticky_name",
        "answers",
        "sozu_id_header",
        "elide_x_real_ip",
        "send_x_real_ip",
        "trust_forwarded_headers",
        "hsts",
    }
    | set(_LEGACY_ANSWER_KEYS)
    | _H2_KNOBS
)
_LISTENER_TLS_KEYS = frozenset(
    {
        "tls_versions",
        "cipher_list",
        "cipher_suites",
        "groups_list",
        "certificate",
        "key",
        "certificate_chain",
        "send_tls13_tickets",
        "alpn_protocols",
        "strict_sni_binding",
        "disable_http11",
        "default_sni",
    }
)
_LISTENER_HTTPS_KEYS = _LISTENER_HTTP_KEYS | _LISTENER_TLS_KEYS
_LISTENER_KEYS = {
    ListenerType.HTTP: _LISTENER_HTTP_KEYS,
    ListenerType.HTTPS: _LISTENER_HTTPS_KEYS,
    ListenerType.TCP: _LISTENER_COMMON_KEYS,
}
_LISTENER_MODELS: dict[
    ListenerType, type[HttpListenerConfig] | type[HttpsListenerConfig] | type[TcpListenerConfig]
] = {
    ListenerType.HTTP: HttpListenerConfig,
    ListenerType.HTTPS: HttpsListenerConfig,
    ListenerType.TCP: TcpListenerConfig,
}
_LISTENER_TIMEOUTS = ("front_timeout", "back_timeout", "connect_timeout", "request_timeout")

_CLUSTER_KEYS = frozenset(
    {
        "protocol",
        "frontends",
        "backends",
        "sticky_session",
        "https_redirect",
        "https_redirect_port",
        "send_proxy",
        "load_balancing",
        "load_metric",
        "answer_503",
        "answers",
        "http2",
        "authorized_hashes",
        "www_authenticate",
        "max_connections_per_ip",
        "retry_after",
        "health_check",
        "udp",
    }
)
# Cluster keys that are refused (or checked) when they ask for what is not implemented.
_UNSUPPORTED_CLUSTER_KEYS = frozenset({"http2", "health_check", "udp"})
_HTTP_FRONTEND_KEYS = frozenset(
    {
        "address",
        "hostname",
        "path",
        "path_type",
        "method",
        "position",
        "tags",
        "redirect",
        "redirect_scheme",
        "redirect_template",
        "rewrite_host",
        "rewrite_path",
        "rewrite_port",
        "required_auth",
        "headers",
        "certificate",
        "key",
        "certificate_chain",
        "tls_versions",
        "hsts",
    }
)
# Frontend keys handed to the model unchanged (same name, TOML type = model type).
_FRONTEND_PLAIN_KEYS = (
    "method",
    "tags",
    "redirect_template",
    "rewrite_host",
    "rewrite_path",
    "rewrite_port",
    "required_auth",
)
_CERTIFICATE_KEYS = frozenset({"certificate", "key", "certificate_chain"})
_TCP_FRONTEND_KEYS = frozenset({"address", "tags"})
_BACKEND_KEYS = frozenset({"address", "weight", "sticky_id", "backup", "backend_id"})
_HEADER_KEYS = frozenset({"position", "key", "value"})
_METRICS_KEYS = frozenset({"address", "tagged_metrics", "prefix", "detail"})
_HSTS_KEYS = frozenset(
    {"enabled", "max_age", "include_subdomains", "preload", "force_replace_backend"}
)

# Top-level keys honoured, with the TOML type expected.
_GLOBAL_KEYS: dict[str, str] = {
    "command_socket": "path",
    "command_buffer_size": "integer",
    "max_command_buffer_size": "integer",
    "saved_state": "path",
    "automatic_state_save": "boolean",
    "log_level": "string",
    "log_target": "string",
    "log_colored": "boolean",
    "access_logs_target": "string",
    "access_logs_format": "string",
    "access_logs_colored": "boolean",
    "worker_count": "integer",
    "worker_automatic_restart": "boolean",
    "worker_timeout": "integer",
    "max_connections": "integer",
    "min_buffers": "integer",
    "max_buffers": "integer",
    "buffer_size": "integer",
    "ctl_command_timeout": "integer",
    "pid_file_path": "path",
    "activate_listeners": "boolean",
    "front_timeout": "integer",
    "back_timeout": "integer",
    "connect_timeout": "integer",
    "request_timeout": "integer",
    "zombie_check_interval": "integer",
    "accept_queue_timeout": "integer",
    "evict_on_queue_full": "boolean",
    "max_connections_per_ip": "integer",
    "retry_after": "integer",
    "basic_auth_max_credential_bytes": "integer",
    "command_allowed_uids": "array of integers",
    "disable_cluster_metrics": "boolean",
    "expired_certificates": "string",
    "soft_stop_timeout": "integer",
    "saved_state_errors": "string",
    "audit_logs_target": "path",
    "audit_logs_json_target": "path",
}

# Paths relative to the configuration file's directory (stored absolute).
_CONFIG_RELATIVE_PATHS = (
    "command_socket",
    "saved_state",
    "pid_file_path",
    "audit_logs_target",
    "audit_logs_json_target",
)

# Top-level keys of sōzu this project does not implement, with the value that asks for nothing
# (no warning then); any other value is ignored with a warning.
_IGNORED_GLOBALS: dict[str, Any] = {
    "handle_process_affinity": False,
    "splice_pipe_capacity_bytes": 0,
    "slab_entries_per_connection": 4,
}

_LOG_LEVELS = frozenset({"error", "warn", "info", "debug", "trace", "off"})

_TLS_VERSIONS: dict[str, TlsVersion] = {
    "TLS_V10": TlsVersion.TLS_V10,
    "TLS_V1_0": TlsVersion.TLS_V10,
    "TLS_V11": TlsVersion.TLS_V11,
    "TLS_V1_1": TlsVersion.TLS_V11,
    "TLS_V12": TlsVersion.TLS_V12,
    "TLS_V1_2": TlsVersion.TLS_V12,
    "TLS_V13": TlsVersion.TLS_V13,
    "TLS_V1_3": TlsVersion.TLS_V13,
}
_LOAD_BALANCING: dict[str, LoadBalancingAlgorithm] = {
    "ROUND_ROBIN": LoadBalancingAlgorithm.ROUND_ROBIN,
    "RANDOM": LoadBalancingAlgorithm.RANDOM,
    "LEAST_LOADED": LoadBalancingAlgorithm.LEAST_LOADED,
    "POWER_OF_TWO": LoadBalancingAlgorithm.POWER_OF_TWO,
}
_LOAD_METRICS: dict[str, LoadMetric] = {
    "CONNECTIONS": LoadMetric.CONNECTIONS,
    "REQUESTS": LoadMetric.REQUESTS,
    "CONNECTION_TIME": LoadMetric.CONNECTION_TIME,
}
_PATH_TYPES: dict[str, PathRuleKind] = {
    "PREFIX": PathRuleKind.PREFIX,
    "REGEX": PathRuleKind.REGEX,
    "EQUALS": PathRuleKind.EQUALS,
}
_POSITIONS: dict[str, RulePosition] = {
    "PRE": RulePosition.PRE,
    "TREE": RulePosition.TREE,
    "POST": RulePosition.POST,
}
# sōzu's TOML knows forward/permanent/unauthorized; the other two are the protocol's names.
_REDIRECTS: dict[str, RedirectPolicy] = {
    "FORWARD": RedirectPolicy.FORWARD,
    "PERMANENT": RedirectPolicy.PERMANENT,
    "UNAUTHORIZED": RedirectPolicy.UNAUTHORIZED,
    "FOUND": RedirectPolicy.FOUND,
    "PERMANENT_REDIRECT": RedirectPolicy.PERMANENT_REDIRECT,
}
_REDIRECT_SCHEMES: dict[str, RedirectScheme] = {
    "USE_SAME": RedirectScheme.USE_SAME,
    "USE_HTTP": RedirectScheme.USE_HTTP,
    "USE_HTTPS": RedirectScheme.USE_HTTPS,
}
_HEADER_POSITIONS: dict[str, HeaderPosition] = {
    "REQUEST": HeaderPosition.REQUEST,
    "RESPONSE": HeaderPosition.RESPONSE,
    "BOTH": HeaderPosition.BOTH,
}

_SYNTAX_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- value display


def _kind(value: object) -> str:
    """The TOML type of a parsed value, as a message names it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, dt.date | dt.time):
        return "date-time"
    return type(value).__name__


def _show(value: object) -> str:
    """A short TOML-like rendering of a value found in the file, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 80 else value[:77] + "...", ensure_ascii=False)
        return f"{text} (a string)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} value(s)"
    if isinstance(value, int | float):
        return str(value)
    return f"{value!s} (a {_kind(value)})"


def _table_key(name: str) -> str:
    """A key as written in a TOML table name (quoted unless it is a bare key)."""
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


_EXPECTED_TYPES = {
    "int_type": "an integer",
    "bool_type": "a boolean (true or false)",
    "string_type": "a string",
    "dict_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
}
_BOUNDS = {"ge": "at least", "le": "at most", "gt": "more than", "lt": "less than"}


def _validation_reason(item: Any) -> str:
    """One pydantic error as a sentence: what was expected and what was found."""
    kind = str(item["type"])
    message = str(item["msg"])
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "is required"
    context = item.get("ctx") or {}
    bound = next((b for b in _BOUNDS if b in context), None)
    if kind in _EXPECTED_TYPES:
        message = f"expected {_EXPECTED_TYPES[kind]}"
    elif bound is not None and kind.endswith(("_than", "_than_equal")):
        message = f"must be {_BOUNDS[bound]} {context[bound]}"
    elif message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    if "input" in item:
        message += f", found {_show(item['input'])}"
    return message


# --------------------------------------------------------------------------- loading state


@dataclass(slots=True)
class _Certificate:
    """A certificate read from files, checked, and ready to be added to listeners."""

    request_body: CertificateAndKey
    fingerprint: str
    names: tuple[str, ...]
    source: Path


@dataclass(slots=True)
class _Listener:
    """A listener of the file (declared, or created for a frontend on an undeclared address)."""

    protocol: ListenerType
    table: str
    model: HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig
    certificate: _Certificate | None = None
    implicit: bool = False

    def describe(self) -> str:
        """Where the listener comes from, for messages."""
        if self.implicit:
            return f"the {self.protocol.value} listener created for [{self.table}]"
        return f"the {self.protocol.value} listener of [{self.table}]"


@dataclass(slots=True)
class _UncoveredCandidate:
    """An HTTPS frontend without certificate, checked against the listener's names at the end."""

    table: str
    address: str
    hostname: str


@dataclass(slots=True)
class _Loader:
    """One load: the file's location, what was found so far, and the requests to apply."""

    source: Path
    base_dir: Path
    warnings: list[str] = field(default_factory=list)
    listeners: dict[str, _Listener] = field(default_factory=dict)
    listener_steps: list[tuple[str, rq.StateRequest]] = field(default_factory=list)
    """``add_certificate`` of the certificates declared on listeners."""
    steps: list[tuple[str, rq.StateRequest]] = field(default_factory=list)
    """The requests of the clusters, in order."""
    files: dict[tuple[str, str], tuple[Path, str]] = field(default_factory=dict)
    certificates: dict[tuple[str, str, str | None, tuple[TlsVersion, ...]], _Certificate] = field(
        default_factory=dict
    )
    certificates_added: dict[tuple[str, str], tuple[TlsVersion, ...]] = field(default_factory=dict)
    expiry_checked: set[str] = field(default_factory=set)
    names_at: dict[str, set[str]] = field(default_factory=dict)
    uncovered: list[_UncoveredCandidate] = field(default_factory=list)
    path_rules: dict[tuple[PathRuleKind, str], PathRule] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    # ------------------------------------------------------------------ findings

    def error(self, table: str | None, key: str | None, reason: str) -> ConfigError:
        return ConfigError(reason, path=self.source, table=table, key=key)

    def warn(self, table: str | None, key: str | None, message: str) -> None:
        self.warnings.append(f"{_locate(self.source, table, key)}: {message}")

    def type_error(self, table: str | None, key: str, value: object, expected: str) -> ConfigError:
        return self.error(table, key, f"expected {expected}, found {_show(value)}")

    def unknown_key(
        self,
        table: str,
        data: dict[str, Any],
        known: frozenset[str],
        hints: dict[str, str] | None = None,
    ) -> NoReturn:
        key = next(k for k in data if k not in known)
        if hints and key in hints:
            raise self.error(table, key, hints[key])
        # the HTTP/2 knobs of listeners are accepted (and ignored): not worth listing
        listed = sorted(k for k in known if not k.startswith("h2_"))
        reason = f"unknown key (known keys: {', '.join(listed)})"
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        if close:
            reason += f"; did you mean '{close[0]}'?"
        raise self.error(table, key, reason)

    def invalid(
        self, error: ValidationError, table: str | None, *, skip: int = 0, key: str | None = None
    ) -> ConfigError:
        """Translate the first error of a model validation; ``skip`` drops the request
        wrapper's field from the location, ``key`` overrides the key found there."""
        item = error.errors(include_url=False)[0]
        location = item["loc"][skip:]
        if key is None and location:
            key = str(location[0])
            if key == "path" and len(location) > 1 and location[1] == "kind":
                key = "path_type"
        return self.error(table, key, _validation_reason(item))

    # ------------------------------------------------------------------ typed reads

    def string(self, table: str | None, data: dict[str, Any], key: str) -> str | None:
        value = data.get(key)
        if value is None or type(value) is str:
            return value
        raise self.type_error(table, key, value, "a string")

    def boolean(self, table: str | None, data: dict[str, Any], key: str) -> bool | None:
        value = data.get(key)
        if value is None or type(value) is bool:
            return value
        raise self.type_error(table, key, value, "a boolean (true or false)")

    def integer(self, table: str | None, data: dict[str, Any], key: str) -> int | None:
        value = data.get(key)
        if value is None or type(value) is int:
            return value
        raise self.type_error(table, key, value, "an integer")

    def subtable(self, table: str | None, data: dict[str, Any], key: str) -> dict[str, Any] | None:
        value = data.get(key)
        if value is None or type(value) is dict:
            return value
        raise self.type_error(table, key, value, "a table")

    def strings(self, table: str | None, data: dict[str, Any], key: str) -> list[str] | None:
        value = data.get(key)
        if value is None:
            return None
        if type(value) is not list or any(type(item) is not str for item in value):
            raise self.type_error(table, key, value, "an array of strings")
        return value

    def tables(self, table: str | None, data: dict[str, Any], key: str) -> list[Any]:
        """An array meant to hold tables; each entry is checked with :meth:`entry`."""
        value = data.get(key)
        if value is None:
            return []
        if type(value) is not list:
            raise self.type_error(table, key, value, "an array of tables")
        return value

    def entry(self, table: str, value: object) -> dict[str, Any]:
        """An entry of an array of tables (``table`` names the entry)."""
        if type(value) is not dict:
            raise self.error(table, None, f"expected a table, found {_show(value)}")
        return value

    def choice(self, table: str, key: str, value: object, choices: dict[str, _Choice]) -> _Choice:
        """An enumeration value: case-insensitive, ``-`` accepted for ``_``."""
        if type(value) is str:
            found = choices.get(value.upper().replace("-", "_"))
            if found is not None:
                return found
        known = ", ".join(choices)
        raise self.error(table, key, f"expected one of {known}, found {_show(value)}")

    def address(self, table: str, data: dict[str, Any], key: str) -> str:
        """A required socket address, in normal form."""
        value = data.get(key)
        if value is None:
            raise self.error(table, key, "is required (an address like '0.0.0.0:8080')")
        if type(value) is not str:
            raise self.type_error(table, key, value, "an address string like '0.0.0.0:8080'")
        try:
            return normalize_address(value)
        except ValueError as error:
            raise self.error(table, key, str(error)) from None

    # ------------------------------------------------------------------ files

    def config_path(self, raw: str) -> Path:
        """A path of the settings: relative ones are relative to the file's directory."""
        return Path(os.path.normpath(self.base_dir / raw))

    def read_file(self, table: str, key: str, raw: str, what: str) -> tuple[Path, str]:
        """Read a file named by the configuration: relative paths are looked up in the
        configuration's directory, then in the working directory (sōzu's rule)."""
        cached = self.files.get((raw, what))
        if cached is not None:
            return cached
        if not raw:
            raise self.error(table, key, f"expected the path of {what}, found an empty string")
        given = Path(raw)
        if given.is_absolute():
            candidates = [given]
        else:
            candidates = list(dict.fromkeys([self.base_dir / given, Path.cwd() / given]))
        chosen = None
        for candidate in candidates:
            try:
                candidate.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, ValueError) as error:  # a name too long, a NUL byte…
                reason = getattr(error, "strerror", None) or str(error)
                raise self.error(table, key, f"cannot read {what} {raw!r}: {reason}") from None
            chosen = candidate
            break
        if chosen is None:
            tried = " and ".join(str(c) for c in candidates)
            raise self.error(table, key, f"{what} {raw!r} not found (looked for {tried})")
        chosen = Path(os.path.normpath(chosen))
        try:
            text = read_regular_text(chosen, MAX_NAMED_FILE_BYTES)
        except UnicodeDecodeError:
            raise self.error(table, key, f"{what} {chosen} is not UTF-8 text") from None
        except OSError as error:
            raise self.error(table, key, f"cannot read {what} {chosen}: {error.strerror}") from None
        self.files[(raw, what)] = (chosen, text)
        return chosen, text

    # ------------------------------------------------------------------ answers

    def answers(
        self, table: str, data: dict[str, Any], legacy_keys: Iterable[str]
    ) -> dict[int, str]:
        """Answer templates by status: legacy ``answer_NNN`` files, then the ``answers`` table
        (which wins on collision). Empty values are ignored."""
        found: dict[int, str] = {}
        for key in legacy_keys:
            raw = self.string(table, data, key)
            if raw:
                found[int(key.removeprefix("answer_"))] = self.read_file(
                    table, key, raw, "answer template"
                )[1]
        entries = self.subtable(table, data, "answers")
        if entries:
            sub = f"{table}.answers"
            for status_text, value in entries.items():
                if not status_text.isascii() or not status_text.isdigit():
                    raise self.error(
                        sub, status_text, "expected an HTTP status code (100-599) as the key"
                    )
                status = int(status_text)
                if not 100 <= status <= 599:
                    raise self.error(sub, status_text, f"{status} is not an HTTP status (100-599)")
                if type(value) is not str:
                    raise self.type_error(
                        sub, status_text, value, "a template text or 'file://<path>'"
                    )
                if not value:
                    continue
                if value.startswith("file://"):
                    value = self.read_file(
                        sub, status_text, value.removeprefix("file://"), "answer template"
                    )[1]
                found[status] = value
        return found

    # ------------------------------------------------------------------ certificates

    def certificate(
        self, table: str, data: dict[str, Any], *, frontend: bool = True
    ) -> _Certificate | None:
        """The certificate of a listener or frontend (``certificate``, ``key``,
        ``certificate_chain``, and a frontend's ``tls_versions``), read and checked; ``None``
        without one. A listener's ``tls_versions`` are its own setting, not the
        certificate's."""
        certificate_path = self.string(table, data, "certificate")
        key_path = self.string(table, data, "key")
        chain_path = self.string(table, data, "certificate_chain")
        versions = (
            tuple(self.tls_versions(table, data)) if frontend and "tls_versions" in data else ()
        )
        if certificate_path is None and key_path is None:
            if chain_path is not None:
                raise self.error(table, "certificate_chain", "needs certificate and key")
            return None
        if certificate_path is None:
            raise self.error(table, "key", "a key is given without its certificate")
        if key_path is None:
            raise self.error(table, "certificate", "a certificate is given without its key")
        cache_key = (certificate_path, key_path, chain_path, tuple(versions))
        cached = self.certificates.get(cache_key)
        if cached is not None:
            return cached
        leaf_file, leaf_text = self.read_file(table, "certificate", certificate_path, "certificate")
        key_file, key_text = self.read_file(table, "key", key_path, "private key")
        blocks = split_pem_chain(leaf_text)
        if not blocks:
            raise self.error(
                table, "certificate", f"{leaf_file} holds no PEM certificate (BEGIN CERTIFICATE)"
            )
        try:
            info = certificate_info(blocks[0])
        except CertificateError as error:
            raise self.error(table, "certificate", f"{leaf_file}: {error}") from None
        # certificates after the leaf in the certificate file (a "fullchain") start the chain
        chain = blocks[1:]
        if chain_path is not None:
            chain_file, chain_text = self.read_file(
                table, "certificate_chain", chain_path, "certificate chain"
            )
            chain_blocks = split_pem_chain(chain_text)
            if not chain_blocks:
                raise self.error(
                    table,
                    "certificate_chain",
                    f"{chain_file} holds no PEM certificate (BEGIN CERTIFICATE)",
                )
            chain.extend(chain_blocks)
        kept: list[str] = []
        for index, pem in enumerate(chain):
            try:
                entry = certificate_info(pem)
            except CertificateError as error:
                raise self.error(
                    table, "certificate_chain", f"chain certificate {index + 1}: {error}"
                ) from None
            if entry.fingerprint != info.fingerprint:  # sōzu drops a copy of the leaf
                kept.append(pem)
        try:
            check_key_matches(blocks[0], key_text)
        except CertificateError as error:
            reason = str(error)
            if "does not match" in reason:
                reason = (
                    f"the private key in {key_file} does not match the certificate in {leaf_file}"
                )
            else:
                reason = f"{key_file}: {reason}"
            raise self.error(table, "key", reason) from None
        if not info.names:
            raise self.error(
                table,
                "certificate",
                f"{leaf_file} ({info.subject}) names no host (no CN, no DNS subject "
                "alternative name)",
            )
        try:
            body = CertificateAndKey.model_validate(
                {
                    "certificate": blocks[0],
                    "certificate_chain": kept,
                    "key": key_text,
                    "versions": list(versions),
                },
                strict=True,
            )
        except ValidationError as error:
            raise self.invalid(error, table, key="certificate") from None
        if info.fingerprint not in self.expiry_checked:
            self.expiry_checked.add(info.fingerprint)
            names = ", ".join(info.names)
            if info.not_after < self.now:
                self.warn(
                    table,
                    "certificate",
                    f"certificate {leaf_file} for names {names} expired on "
                    f"{info.not_after:%Y-%m-%d %H:%M:%S} UTC (the daemon's "
                    "expired_certificates policy decides whether it is served)",
                )
            elif info.not_before > self.now:
                self.warn(
                    table,
                    "certificate",
                    f"certificate {leaf_file} for names {names} is not valid before "
                    f"{info.not_before:%Y-%m-%d %H:%M:%S} UTC",
                )
        loaded = _Certificate(body, info.fingerprint, info.names, leaf_file)
        self.certificates[cache_key] = loaded
        return loaded

    def tls_versions(self, table: str, data: dict[str, Any]) -> list[TlsVersion]:
        names = self.strings(table, data, "tls_versions") or []
        versions: list[TlsVersion] = []
        for name in names:
            spelled = name.upper().replace(".", "_")
            if spelled in ("SSL_V2", "SSL_V3"):
                raise self.error(
                    table, "tls_versions", f"{name} is not supported (only TLS 1.0 to 1.3)"
                )
            version = _TLS_VERSIONS.get(spelled)
            if version is None:
                raise self.error(
                    table,
                    "tls_versions",
                    f"unknown TLS version {name!r} (known: TLS_V12, TLS_V13, TLS_V10, TLS_V11)",
                )
            if version not in versions:
                versions.append(version)
        return versions

    def add_certificate(
        self,
        table: str,
        address: str,
        certificate: _Certificate,
        steps: list[tuple[str, rq.StateRequest]],
    ) -> None:
        """Queue ``add_certificate`` on ``steps`` unless this certificate is already on that
        listener (one request per fingerprint and listener)."""
        versions = tuple(certificate.request_body.versions)
        added = self.certificates_added.get((address, certificate.fingerprint))
        if added is not None:
            if added != versions:
                self.warn(
                    table,
                    "tls_versions",
                    f"certificate {certificate.source} is already on the listener at {address} "
                    "with other tls_versions; the first declaration is kept",
                )
            return
        self.certificates_added[(address, certificate.fingerprint)] = versions
        self.names_at.setdefault(address, set()).update(certificate.names)
        steps.append(
            (table, rq.AddCertificate(address=address, certificate=certificate.request_body))
        )


# --------------------------------------------------------------------------- top level


def _read_globals(loader: _Loader, document: dict[str, Any]) -> Config:
    """The top-level keys, validated (the state is filled in later)."""
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in ("listeners", "clusters"):
            continue
        expected = _GLOBAL_KEYS.get(key)
        if expected is None:
            if key == "metrics":
                _read_metrics(loader, value)
            elif key in _IGNORED_GLOBALS:
                inert = _IGNORED_GLOBALS[key]
                if value != inert or type(value) is not type(inert):
                    loader.warn(None, key, "is not implemented by this proxy and is ignored")
            else:
                close = difflib.get_close_matches(key, _GLOBAL_KEYS, n=1, cutoff=0.75)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                loader.warn(None, key, f"unknown top-level key, ignored{hint}")
            continue
        if expected == "integer":
            loader.integer(None, document, key)
        elif expected == "boolean":
            loader.boolean(None, document, key)
        elif expected in ("string", "path"):
            loader.string(None, document, key)
        values[key] = value

    for key in _CONFIG_RELATIVE_PATHS:
        if key in values:
            if not values[key]:
                raise loader.error(None, key, "expected a path, found an empty string")
            values[key] = loader.config_path(values[key])
    values.setdefault("command_socket", loader.config_path("sozu.sock"))

    uids = values.get("command_allowed_uids")
    if uids is not None:
        if type(uids) is not list or any(type(uid) is not int for uid in uids):
            raise loader.type_error(None, "command_allowed_uids", uids, "an array of integers")
        values["command_allowed_uids"] = tuple(uids)

    if values.get("automatic_state_save") and "saved_state" not in values:
        raise loader.error(
            None,
            "automatic_state_save",
            "automatic_state_save = true needs saved_state (the file to save the state to)",
        )
    _check_log_level(loader, values.get("log_level"))
    for key in ("log_target", "access_logs_target"):
        if key in values:
            _check_log_target(loader, key, values[key])
    log_format = values.pop("access_logs_format", "ascii")
    if log_format == "protobuf":
        loader.warn(
            None,
            "access_logs_format",
            "protobuf access logs are not implemented and are ignored (ascii is used)",
        )
    elif log_format != "ascii":
        raise loader.error(
            None, "access_logs_format", f"expected 'ascii' or 'protobuf', found {_show(log_format)}"
        )
    values.setdefault("access_logs_colored", values.get("log_colored", False))
    if values.get("basic_auth_max_credential_bytes") == 0:
        values["basic_auth_max_credential_bytes"] = 4_096  # sōzu: 0 means the default
    initial = values.get("command_buffer_size", _DEFAULT_COMMAND_BUFFER_SIZE)
    largest = values.get("max_command_buffer_size", _DEFAULT_MAX_COMMAND_BUFFER_SIZE)
    if initial > largest:
        key = (
            "command_buffer_size" if "command_buffer_size" in values else "max_command_buffer_size"
        )
        raise loader.error(
            None,
            key,
            f"command_buffer_size ({initial}) must not be larger than max_command_buffer_size "
            f"({largest})",
        )
    minimum, maximum = values.get("min_buffers", 1), values.get("max_buffers", 1_000)
    if minimum > maximum:
        loader.warn(
            None,
            "min_buffers",
            f"min_buffers ({minimum}) is larger than max_buffers ({maximum}); clamped to {maximum}",
        )
        values["min_buffers"] = maximum
    try:
        return Config.model_validate(values, strict=True)
    except ValidationError as error:
        raise loader.invalid(error, None) from None


def _read_metrics(loader: _Loader, value: object) -> None:
    """``[metrics]`` (statsd export) is checked like sōzu does, then ignored with a warning."""
    if type(value) is not dict:
        raise loader.type_error(None, "metrics", value, "a table")
    if not _METRICS_KEYS.issuperset(value):
        hints = {
            "disable_cluster_metrics": "disable_cluster_metrics is a top-level key, "
            "not a [metrics] key"
        }
        loader.unknown_key("metrics", value, _METRICS_KEYS, hints)
    if "address" not in value:
        raise loader.error("metrics", "address", "is required (the statsd server address)")
    loader.address("metrics", value, "address")
    loader.warn("metrics", None, "statsd metrics export is not implemented; the table is ignored")


def _check_log_level(loader: _Loader, spec: str | None) -> None:
    """An env_logger-style filter: comma-separated ``level`` or ``module=level`` directives.

    Stricter than env_logger, which also takes a bare module name: a bare word must be a
    level, so that a misspelt level is an error instead of a filter that logs nothing useful.
    """
    if spec is None:
        return
    for directive in spec.split(","):
        level = directive.rpartition("=")[2].strip().lower()
        if level not in _LOG_LEVELS:
            raise loader.error(
                None,
                "log_level",
                f"invalid directive {directive.strip()!r}: expected a level or module=level, "
                f"the level being one of {', '.join(sorted(_LOG_LEVELS))}",
            )


def _check_log_target(loader: _Loader, key: str, target: str) -> None:
    scheme, sep, rest = target.partition("://")
    if target == "stdout":
        return
    if sep and scheme in ("udp", "tcp"):
        try:
            normalize_address(rest)
            return
        except ValueError:
            pass
    elif sep and scheme in ("unix", "file") and rest.startswith("/"):
        return
    raise loader.error(
        None,
        key,
        "expected stdout, udp://IP:port, tcp://IP:port, unix:///path or file:///path, "
        f"found {_show(target)}",
    )


# --------------------------------------------------------------------------- listeners


def _read_listener(loader: _Loader, config: Config, index: int, data: object) -> None:
    table = f"listeners[{index}]"
    if type(data) is not dict:
        raise loader.type_error(None, "listeners", data, "an array of [[listeners]] tables")
    protocol_name = loader.string(table, data, "protocol")
    if protocol_name is None:
        raise loader.error(table, "protocol", "is required (http, https or tcp)")
    if protocol_name.lower() == "udp":
        raise loader.error(table, "protocol", "UDP listeners are not supported")
    try:
        protocol = ListenerType(protocol_name.lower())
    except ValueError:
        raise loader.error(
            table, "protocol", f"expected http, https or tcp, found {_show(protocol_name)}"
        ) from None
    known = _LISTENER_KEYS[protocol]
    if not known.issuperset(data):
        hints = dict.fromkeys(
            _LISTENER_TLS_KEYS, f"is only valid on https listeners, this one is {protocol.value}"
        )
        if protocol is ListenerType.TCP:
            hints.update(
                dict.fromkeys(
                    _LISTENER_HTTPS_KEYS - _LISTENER_COMMON_KEYS,
                    "is only valid on http and https listeners, this one is tcp",
                )
            )
        hints.update(
            dict.fromkeys(
                _CLUSTER_KEYS - _LISTENER_HTTPS_KEYS,
                "is a cluster key, not a listener key (put it in [clusters.<id>])",
            )
        )
        for key in ("max_rx_datagram_size", "max_flows"):
            hints[key] = "is a UDP listener key; UDP listeners are not supported"
        loader.unknown_key(table, data, known, hints)
    address = loader.address(table, data, "address")
    previous = loader.listeners.get(address)
    if previous is not None:
        raise loader.error(
            table, "address", f"{address} is already the address of {previous.describe()}"
        )
    fields: dict[str, Any] = {"address": address}
    public_address = loader.string(table, data, "public_address")
    expect_proxy = loader.boolean(table, data, "expect_proxy")
    if public_address is not None:
        if expect_proxy:
            raise loader.error(
                table,
                "public_address",
                "public_address cannot be used with expect_proxy = true (the PROXY header "
                "gives the addresses)",
            )
        fields["public_address"] = public_address
    if expect_proxy is not None:
        fields["expect_proxy"] = expect_proxy
    for key in _LISTENER_TIMEOUTS:
        fields[key] = data[key] if key in data else getattr(config, key)

    certificate: _Certificate | None = None
    if protocol is not ListenerType.TCP:
        for key in (
            "sticky_name",
            "sozu_id_header",
            "elide_x_real_ip",
            "send_x_real_ip",
            "trust_forwarded_headers",
        ):
            if key in data:
                fields[key] = data[key]
        fields["answers"] = loader.answers(table, data, _LEGACY_ANSWER_KEYS)
        if "hsts" in data:
            if protocol is not ListenerType.HTTPS:
                raise loader.error(
                    table,
                    "hsts",
                    "HSTS is only valid on https listeners (RFC 6797 §7.2: browsers ignore it "
                    "over plain HTTP)",
                )
            fields["hsts"] = _hsts(loader, table, data["hsts"])
        for key in sorted(_H2_KNOBS & data.keys()):
            loader.warn(table, key, "HTTP/2 is not implemented; this setting is ignored")
    if protocol is ListenerType.HTTPS:
        certificate = _read_tls_settings(loader, table, data, fields)

    try:
        model = _LISTENER_MODELS[protocol].model_validate(fields, strict=True)
    except ValidationError as error:
        raise loader.invalid(error, table) from None
    loader.listeners[address] = _Listener(protocol, table, model, certificate)
    if certificate is not None:
        loader.add_certificate(table, address, certificate, loader.listener_steps)


def _read_tls_settings(
    loader: _Loader, table: str, data: dict[str, Any], fields: dict[str, Any]
) -> _Certificate | None:
    """The HTTPS part of a listener into ``fields``; returns the listener's certificate."""
    if "tls_versions" in data:
        fields["tls_versions"] = loader.tls_versions(table, data)
    if "cipher_list" in data and "cipher_suites" in data:
        raise loader.error(
            table, "cipher_suites", "give either cipher_list or cipher_suites (the same setting)"
        )
    cipher_key = "cipher_suites" if "cipher_suites" in data else "cipher_list"
    ciphers = loader.strings(table, data, cipher_key)
    if ciphers is not None:
        try:
            check_cipher_list(ciphers)
        except ValueError as error:
            raise loader.error(table, cipher_key, str(error)) from None
        fields["cipher_list"] = list(ciphers)
    alpn = loader.strings(table, data, "alpn_protocols")
    if alpn is not None:
        for name in alpn:
            if name == "h2":
                raise loader.error(
                    table,
                    "alpn_protocols",
                    "HTTP/2 is not supported yet: remove 'h2' (use [\"http/1.1\"])",
                )
            if name not in ALPN_PROTOCOLS:
                raise loader.error(
                    table,
                    "alpn_protocols",
                    f"unknown ALPN protocol {name!r} "
                    f"(supported: {', '.join(sorted(ALPN_PROTOCOLS))})",
                )
        fields["alpn_protocols"] = list(dict.fromkeys(alpn))
    if loader.boolean(table, data, "disable_http11"):
        raise loader.error(
            table,
            "disable_http11",
            "HTTP/2 is not supported yet: disable_http11 = true would refuse every client",
        )
    for key in ("strict_sni_binding", "send_tls13_tickets", "default_sni"):
        if key in data:
            fields[key] = data[key]
    if "groups_list" in data:
        loader.strings(table, data, "groups_list")
        loader.warn(
            table,
            "groups_list",
            "key exchange groups are chosen by the TLS library; this setting is ignored",
        )
    certificate = loader.certificate(table, data, frontend=False)
    if certificate is not None and "default_sni" not in data:
        fields["default_sni"] = _first_exact_name(certificate.names)
        if fields["default_sni"] is None:
            loader.warn(
                table,
                "certificate",
                f"certificate {certificate.source} names no exact host "
                f"({', '.join(certificate.names)}), so it cannot be the default (default_sni)",
            )
    return certificate


def _first_exact_name(names: Iterable[str]) -> str | None:
    """The first name that is a plain host name (not a wildcard): the default SNI."""
    for name in names:
        if name.startswith("*") or "/" in name:
            continue
        try:
            return normalize_hostname_rule(name)
        except ValueError:
            continue
    return None


def _article(protocol: ListenerType) -> str:
    return "a" if protocol is ListenerType.TCP else "an"


def _implicit_listener(
    loader: _Loader, config: Config, table: str, address: str, protocol: ListenerType
) -> _Listener:
    """The listener sōzu creates for a frontend on an address no listener declares."""
    fields = {key: getattr(config, key) for key in _LISTENER_TIMEOUTS}
    fields["address"] = address
    model = _LISTENER_MODELS[protocol].model_validate(fields, strict=True)
    listener = _Listener(protocol, table, model, implicit=True)
    loader.listeners[address] = listener
    loader.warn(
        table,
        "address",
        f"no listener is declared at {address}: {_article(protocol)} {protocol.value} listener "
        "with default options was created",
    )
    return listener


# --------------------------------------------------------------------------- clusters


@dataclass(slots=True)
class _ClusterContext:
    cluster_id: str
    table: str
    protocol: ListenerType
    requires_auth: bool = False


def _read_cluster(loader: _Loader, config: Config, cluster_id: str, data: object) -> None:
    table = f"clusters.{_table_key(cluster_id)}"
    if type(data) is not dict:
        raise loader.type_error("clusters", cluster_id, data, "a [clusters.<id>] table")
    if not _CLUSTER_KEYS.issuperset(data):
        hints = dict.fromkeys(
            _HTTP_FRONTEND_KEYS - _CLUSTER_KEYS,
            "is a frontend key: set it on each entry of frontends",
        )
        hints["sticky_name"] = "is a listener key (the sticky cookie's name is per listener)"
        loader.unknown_key(table, data, _CLUSTER_KEYS, hints)
    protocol_name = loader.string(table, data, "protocol")
    if protocol_name is None:
        raise loader.error(table, "protocol", "is required (http or tcp)")
    spelled = protocol_name.lower()
    if spelled == "http":
        protocol = ListenerType.HTTP
    elif spelled == "tcp":
        protocol = ListenerType.TCP
    elif spelled == "https":
        raise loader.error(
            table, "protocol", 'HTTPS clusters use protocol = "http" (TLS is a frontend matter)'
        )
    elif spelled == "udp":
        raise loader.error(table, "protocol", "UDP clusters are not supported")
    else:
        raise loader.error(table, "protocol", f"expected http or tcp, found {_show(protocol_name)}")
    if not _UNSUPPORTED_CLUSTER_KEYS.isdisjoint(data):
        _refuse_unsupported_cluster_keys(loader, table, data)

    fields: dict[str, Any] = {"cluster_id": cluster_id}
    if "load_balancing" in data:
        value = data["load_balancing"]
        if type(value) is str and value.upper() in ("HRW", "MAGLEV"):
            raise loader.error(
                table,
                "load_balancing",
                f"{value} is only for UDP clusters, not supported (UDP is not implemented)",
            )
        fields["load_balancing"] = loader.choice(table, "load_balancing", value, _LOAD_BALANCING)
    if "load_metric" in data:
        fields["load_metric"] = loader.choice(
            table, "load_metric", data["load_metric"], _LOAD_METRICS
        )
    http_only = ("sticky_session", "https_redirect", "https_redirect_port")
    for key in (*http_only, "authorized_hashes", "www_authenticate"):
        if key in data:
            fields[key] = data[key]
    for key in ("max_connections_per_ip", "retry_after"):
        value = loader.integer(table, data, key)
        if value is not None:
            if value < 0:
                raise loader.error(table, key, f"must be at least 0, found {value}")
            fields[key] = value
    if protocol is ListenerType.TCP:
        for key in http_only:
            if data.get(key):
                loader.warn(table, key, "only applies to http clusters; ignored")
                del fields[key]
    send_proxy = loader.boolean(table, data, "send_proxy") or False
    if send_proxy and protocol is ListenerType.HTTP:
        loader.warn(table, "send_proxy", "only applies to tcp clusters; ignored")
    if "answers" in data or "answer_503" in data:
        fields["answers"] = loader.answers(table, data, ("answer_503",))
    try:
        cluster = Cluster.model_validate(fields, strict=True)
    except ValidationError as error:
        item = error.errors(include_url=False)[0]
        if item["loc"][:1] == ("cluster_id",):
            reason = f"invalid cluster id: {_validation_reason(item)}"
            raise loader.error("clusters", cluster_id, reason) from None
        raise loader.invalid(error, table) from None

    context = _ClusterContext(cluster_id, table, protocol, bool(cluster.authorized_hashes))
    cluster_step = len(loader.steps)
    loader.steps.append((table, rq.AddCluster(cluster=cluster)))
    frontends = loader.tables(table, data, "frontends")
    if protocol is ListenerType.HTTP:
        for index, entry in enumerate(frontends):
            _read_http_frontend(loader, config, context, index, entry)
    else:
        expectations: dict[bool, str] = {}
        for index, entry in enumerate(frontends):
            expect, frontend_table = _read_tcp_frontend(loader, config, context, index, entry)
            expectations.setdefault(expect, frontend_table)
        if len(expectations) > 1:
            raise loader.error(
                f"{table}.frontends",
                "address",
                "the frontends of a tcp cluster must all be on listeners that agree on "
                f"expect_proxy ([{expectations[True]}] expects a PROXY header, "
                f"[{expectations[False]}] does not)",
            )
        expect = next(iter(expectations), False)
        proxy_protocol = (
            ProxyProtocolConfig.RELAY_HEADER
            if send_proxy and expect
            else ProxyProtocolConfig.SEND_HEADER
            if send_proxy
            else ProxyProtocolConfig.EXPECT_HEADER
            if expect
            else None
        )
        if proxy_protocol is not None:
            # a value of the enumeration computed here: nothing left to validate
            cluster = cluster.model_copy(update={"proxy_protocol": proxy_protocol})
            loader.steps[cluster_step] = (table, rq.AddCluster(cluster=cluster))
    _read_backends(loader, context, loader.tables(table, data, "backends"))


def _refuse_unsupported_cluster_keys(loader: _Loader, table: str, data: dict[str, Any]) -> None:
    if loader.boolean(table, data, "http2"):
        raise loader.error(table, "http2", "HTTP/2 to the backends (h2c) is not supported yet")
    if "health_check" in data:
        raise loader.error(table, "health_check", "active health checks are not supported yet")
    if "udp" in data:
        raise loader.error(table, "udp", "UDP clusters are not supported yet")


def _read_http_frontend(
    loader: _Loader, config: Config, cluster: _ClusterContext, index: int, entry: object
) -> None:
    table = f"{cluster.table}.frontends[{index}]"
    data = loader.entry(table, entry)
    if not _HTTP_FRONTEND_KEYS.issuperset(data):
        hints = dict.fromkeys(
            _CLUSTER_KEYS - _HTTP_FRONTEND_KEYS,
            "is a cluster key, not a frontend key (set it in the cluster table)",
        )
        loader.unknown_key(table, data, _HTTP_FRONTEND_KEYS, hints)
    address = loader.address(table, data, "address")
    if "hostname" not in data:
        raise loader.error(table, "hostname", "is required on the frontends of an http cluster")
    fields: dict[str, Any] = {
        "address": address,
        "hostname": data["hostname"],
        "cluster_id": cluster.cluster_id,
        "position": loader.choice(table, "position", data["position"], _POSITIONS)
        if "position" in data
        else RulePosition.TREE,
    }
    if "path" in data or "path_type" in data:
        fields["path"] = _path_rule(loader, table, data)
    for key in _FRONTEND_PLAIN_KEYS:
        if key in data:
            fields[key] = data[key]
    if "redirect" in data:
        fields["redirect"] = loader.choice(table, "redirect", data["redirect"], _REDIRECTS)
    if "redirect_scheme" in data:
        fields["redirect_scheme"] = loader.choice(
            table, "redirect_scheme", data["redirect_scheme"], _REDIRECT_SCHEMES
        )
    if "headers" in data:
        fields["headers"] = _header_edits(loader, table, data)
    if data.get("required_auth") is True and not cluster.requires_auth:
        loader.warn(
            table,
            "required_auth",
            "the cluster has no authorized_hashes: every request to this frontend gets 401",
        )

    certificate = (
        loader.certificate(table, data) if not _CERTIFICATE_KEYS.isdisjoint(data) else None
    )
    listener = loader.listeners.get(address)
    if listener is None:
        protocol = ListenerType.HTTPS if certificate is not None else ListenerType.HTTP
        listener = _implicit_listener(loader, config, table, address, protocol)
    elif listener.protocol is ListenerType.TCP:
        raise loader.error(
            table,
            "address",
            f"the listener at {address} is {listener.describe()}; "
            "an http cluster's frontends need an http or https listener",
        )
    https = listener.protocol is ListenerType.HTTPS
    if certificate is not None and not https:
        raise loader.error(
            table,
            "certificate",
            f"a frontend with a certificate needs an https listener; the listener at {address} "
            f"is {listener.describe()}",
        )
    if "tls_versions" in data and certificate is None:
        loader.warn(table, "tls_versions", "has no effect without certificate and key; ignored")
    if "hsts" in data:
        if not https:
            raise loader.error(
                table,
                "hsts",
                f"HSTS is only valid on https frontends (RFC 6797 §7.2); the listener at "
                f"{address} is {listener.describe()}",
            )
        fields["hsts"] = _hsts(loader, table, data["hsts"])

    request_type: type[rq.AddHttpFrontend | rq.AddHttpsFrontend] = (
        rq.AddHttpsFrontend if https else rq.AddHttpFrontend
    )
    try:
        request = request_type.model_validate({"frontend": fields}, strict=True)
    except ValidationError as error:
        raise loader.invalid(error, table, skip=1) from None
    if certificate is not None:
        loader.add_certificate(table, address, certificate, loader.steps)
    elif https and listener.certificate is None:
        loader.uncovered.append(_UncoveredCandidate(table, address, request.frontend.hostname))
    loader.steps.append((table, request))


def _hsts(loader: _Loader, table: str, value: object) -> Hsts:
    """An ``hsts`` table (``enabled`` required; sōzu's defaults for the rest)."""
    sub = f"{table}.hsts"
    if type(value) is not dict:
        raise loader.type_error(table, "hsts", value, "a table")
    if not _HSTS_KEYS.issuperset(value):
        loader.unknown_key(sub, value, _HSTS_KEYS)
    if "enabled" not in value:
        raise loader.error(sub, "enabled", "is required (true or false)")
    try:
        return Hsts.model_validate(value, strict=True)
    except ValidationError as error:
        raise loader.invalid(error, sub) from None


def _path_rule(loader: _Loader, table: str, data: dict[str, Any]) -> PathRule:
    value = data.get("path", "")
    if type(value) is not str:
        raise loader.type_error(table, "path", value, "a string")
    kind = (
        loader.choice(table, "path_type", data["path_type"], _PATH_TYPES)
        if "path_type" in data
        else PathRuleKind.PREFIX
    )
    rule = loader.path_rules.get((kind, value))
    if rule is None:
        try:
            rule = PathRule.model_validate({"kind": kind, "value": value}, strict=True)
        except ValidationError as error:
            raise loader.invalid(error, table, key="path") from None
        loader.path_rules[(kind, value)] = rule
    return rule


def _header_edits(loader: _Loader, table: str, data: dict[str, Any]) -> list[HeaderEdit]:
    edits: list[HeaderEdit] = []
    for index, value in enumerate(loader.tables(table, data, "headers")):
        sub = f"{table}.headers[{index}]"
        entry = loader.entry(sub, value)
        if not _HEADER_KEYS.issuperset(entry):
            loader.unknown_key(sub, entry, _HEADER_KEYS)
        if "position" not in entry:
            raise loader.error(sub, "position", "is required (request, response or both)")
        if "key" not in entry:
            raise loader.error(sub, "key", "is required (the header name)")
        fields = dict(entry)
        fields["position"] = loader.choice(sub, "position", entry["position"], _HEADER_POSITIONS)
        try:
            edits.append(HeaderEdit.model_validate(fields, strict=True))
        except ValidationError as error:
            raise loader.invalid(error, sub) from None
    return edits


def _read_tcp_frontend(
    loader: _Loader, config: Config, cluster: _ClusterContext, index: int, entry: object
) -> tuple[bool, str]:
    """Queue a TCP frontend; returns whether its listener expects a PROXY header, and its
    table."""
    table = f"{cluster.table}.frontends[{index}]"
    data = loader.entry(table, entry)
    if not _TCP_FRONTEND_KEYS.issuperset(data):
        hints = dict.fromkeys(
            _HTTP_FRONTEND_KEYS,
            "is not valid on a frontend of a tcp cluster (TCP frontends have only address "
            "and tags)",
        )
        loader.unknown_key(table, data, _TCP_FRONTEND_KEYS, hints)
    address = loader.address(table, data, "address")
    listener = loader.listeners.get(address)
    if listener is None:
        listener = _implicit_listener(loader, config, table, address, ListenerType.TCP)
    elif listener.protocol is not ListenerType.TCP:
        raise loader.error(
            table,
            "address",
            f"the listener at {address} is {listener.describe()}; "
            "a tcp cluster's frontends need a tcp listener",
        )
    fields: dict[str, Any] = {"address": address, "cluster_id": cluster.cluster_id}
    if "tags" in data:
        fields["tags"] = data["tags"]
    try:
        request = rq.AddTcpFrontend.model_validate({"frontend": fields}, strict=True)
    except ValidationError as error:
        raise loader.invalid(error, table, skip=1) from None
    loader.steps.append((table, request))
    return listener.model.expect_proxy, table


def _read_backends(loader: _Loader, cluster: _ClusterContext, entries: list[Any]) -> None:
    seen: dict[str, str] = {}
    for index, entry in enumerate(entries):
        table = f"{cluster.table}.backends[{index}]"
        data = loader.entry(table, entry)
        if not _BACKEND_KEYS.issuperset(data):
            loader.unknown_key(table, data, _BACKEND_KEYS)
        address = loader.address(table, data, "address")
        backend_id = data.get("backend_id")
        if backend_id is None:
            backend_id = f"{cluster.cluster_id}-{index}-{address}"
        fields: dict[str, Any] = {
            "cluster_id": cluster.cluster_id,
            "backend_id": backend_id,
            "address": address,
        }
        for key in ("weight", "sticky_id", "backup"):
            if key in data:
                fields[key] = data[key]
        try:
            request = rq.AddBackend.model_validate({"backend": fields}, strict=True)
        except ValidationError as error:
            raise loader.invalid(error, table, skip=1) from None
        first = seen.setdefault(request.backend.backend_id, table)
        if first is not table:
            raise loader.error(
                table,
                "backend_id",
                f"backend id {request.backend.backend_id!r} is already used by [{first}]",
            )
        loader.steps.append((table, request))


# --------------------------------------------------------------------------- state


def _covers(names: set[str], hostname: str) -> bool:
    """Whether a certificate name serves ``hostname`` (exact, or a one-label wildcard)."""
    if hostname in names:
        return True
    head, dot, parent = hostname.partition(".")
    return bool(dot) and head != "*" and f"*.{parent}" in names


def _add_listener_request(
    model: HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig,
) -> rq.StateRequest:
    if isinstance(model, HttpsListenerConfig):
        return rq.AddHttpsListener(listener=model)
    if isinstance(model, HttpListenerConfig):
        return rq.AddHttpListener(listener=model)
    return rq.AddTcpListener(listener=model)


def _first_declaration(
    earlier: list[tuple[str, rq.StateRequest]], request: rq.StateRequest
) -> str | None:
    """The table of the earlier frontend that makes ``request`` a duplicate, if any."""
    if isinstance(request, rq.AddHttpFrontend | rq.AddHttpsFrontend):
        key = request.frontend.key
        for table, other in earlier:
            if (
                isinstance(other, rq.AddHttpFrontend | rq.AddHttpsFrontend)
                and other.frontend.key == key
            ):
                return table
    elif isinstance(request, rq.AddTcpFrontend):
        for table, other in earlier:
            if (
                isinstance(other, rq.AddTcpFrontend)
                and other.frontend.address == request.frontend.address
            ):
                return table
    return None


def _build_state(loader: _Loader, config: Config) -> ConfigState:
    """Apply the queued requests to an empty state: listeners (HTTP, HTTPS, then TCP), their
    certificates, the clusters' requests, then the activations."""
    ordered = [
        listener
        for protocol in (ListenerType.HTTP, ListenerType.HTTPS, ListenerType.TCP)
        for listener in loader.listeners.values()
        if listener.protocol is protocol
    ]
    head: list[tuple[str, rq.StateRequest]] = [
        (listener.table, _add_listener_request(listener.model)) for listener in ordered
    ]
    head.extend(loader.listener_steps)
    tail: list[tuple[str, rq.StateRequest]] = []
    if config.activate_listeners:
        tail = [
            (
                listener.table,
                rq.ActivateListener(address=listener.model.address, proxy=listener.protocol),
            )
            for listener in ordered
        ]

    state = ConfigState()
    steps = [*head, *loader.steps, *tail]
    apply = state.apply
    for position, (table, request) in enumerate(steps):
        try:
            apply(request)
        except StateError as error:
            reason = f"refused by the routing state: {error.message}"
            first = _first_declaration(steps[:position], request)
            if first is not None:
                reason += f" (declared first in [{first}])"
            raise loader.error(table, None, reason) from None

    for candidate in loader.uncovered:
        hostname = candidate.hostname
        if "/" in hostname or hostname == "*":
            continue  # a regex or catch-all rule: which names it serves cannot be checked
        if not _covers(loader.names_at.get(candidate.address, set()), hostname):
            loader.warn(
                candidate.table,
                "hostname",
                f"no certificate on the https listener at {candidate.address} covers "
                f"{hostname!r}: TLS handshakes for it will fail until one is added",
            )
    return state


# --------------------------------------------------------------------------- entry points


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and interpret a ``config.toml`` file.

    Raises :class:`ConfigError` for a missing or unreadable file, a TOML syntax error (with
    ``line`` and ``column``) and every invalid setting.
    """
    source = Path(path)
    try:
        raw = read_regular(source, MAX_CONFIG_BYTES)
    except OSError as error:
        raise ConfigError(
            f"cannot read the configuration file: {error.strerror or error}", path=source
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"the configuration file is not UTF-8 text (byte {error.start})", path=source
        ) from None
    return load_config_text(text, path=source)


def load_config_text(
    text: str, *, path: Path | None = None, base_dir: Path | None = None
) -> Config:
    """Validate and interpret configuration text.

    ``path`` names the text in messages and becomes ``Config.path``; ``base_dir`` is the
    directory relative paths are resolved against (default: the directory of ``path``, else
    the working directory). Errors from text without a path name it ``<string>``.
    """
    source = path if path is not None else Path("<string>")
    if base_dir is None:
        base_dir = path.parent if path is not None else Path.cwd()
    loader = _Loader(source=source, base_dir=Path(os.path.abspath(base_dir)))
    # Loading allocates hundreds of thousands of objects and frees almost none: the cyclic
    # collector would rescan them again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(loader, text, path)
    finally:
        if collecting:
            gc.enable()


def _load(loader: _Loader, text: str, path: Path | None) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _SYNTAX_POSITION.search(message)
        line = column = None
        if position is not None:
            line, column = int(position.group(1)), int(position.group(2))
            message = message[: position.start()]
        raise ConfigError(
            f"TOML syntax error: {message}", path=loader.source, line=line, column=column
        ) from None

    config = _read_globals(loader, document)
    listeners = document.get("listeners", [])
    if type(listeners) is not list:
        raise loader.type_error(None, "listeners", listeners, "an array of [[listeners]] tables")
    for index, entry in enumerate(listeners):
        _read_listener(loader, config, index, entry)
    clusters = loader.subtable(None, document, "clusters") or {}
    for cluster_id, entry in clusters.items():
        _read_cluster(loader, config, cluster_id, entry)
    state = _build_state(loader, config)
    return config.model_copy(
        update={
            "path": Path(os.path.abspath(path)) if path is not None else None,
            "state": state,
            "warnings": tuple(dict.fromkeys(loader.warnings)),
        }
    )
