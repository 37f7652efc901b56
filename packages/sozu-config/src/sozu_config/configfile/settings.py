"""The global settings of a configuration file, and the routing state it describes."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from ..addresses import SocketAddress, split_address
from ..models import Model, Timeout
from ..state import ConfigState

__all__ = [
    "DEFAULT_COMMAND_BUFFER_SIZE",
    "DEFAULT_MAX_COMMAND_BUFFER_SIZE",
    "AdminSettings",
    "Config",
    "MetricDetail",
    "MetricsSettings",
    "StatsdPrefix",
    "is_loopback",
]

# --------------------------------------------------------------------------- the settings


def is_loopback(address: str) -> bool:
    """Whether the socket address ``address`` (normal form) is on the loopback interface."""
    host, _ = split_address(address)
    return ipaddress.ip_address(host.partition("%")[0]).is_loopback


class AdminSettings(Model):
    """``[admin]``: the read-only HTTP admin endpoint of the main process (metrics, health,
    JSON views). Invariant: an address off the loopback interface has a ``token``."""

    address: SocketAddress
    """Where the endpoint listens (``127.0.0.1:9180``)."""
    token: Annotated[str, Field(min_length=1)] | None = Field(default=None, repr=False)
    """The bearer token every request must carry (read from ``token_file``; ``None``: no
    token is asked for, which only a loopback address allows)."""

    @model_validator(mode="after")
    def _guarded(self) -> AdminSettings:
        if self.token is None and not is_loopback(self.address):
            raise ValueError(
                f"the admin endpoint on {self.address} (not a loopback address) needs "
                "token_file: anyone who reaches it would read the metrics and the state"
            )
        return self


DEFAULT_COMMAND_BUFFER_SIZE = 1_000_000  # sōzu's default
# sōzu: 2 MB. A state file line or a query answer for thousands of certificates needs more.
DEFAULT_MAX_COMMAND_BUFFER_SIZE = 64 * 1024 * 1024


# --------------------------------------------------------------------------- [metrics]


class MetricDetail(StrEnum):
    """The scopes the statsd export sends, each level adding to the previous one: ``process``
    (proxy-wide and main-process keys), ``frontend`` (the same: there are no frontend-scoped
    metrics), ``cluster`` (plus each cluster's), ``backend`` (plus each backend's)."""

    PROCESS = "process"
    FRONTEND = "frontend"
    CLUSTER = "cluster"
    BACKEND = "backend"


# A statsd key is ``name:value|type``, tags are ``,name=value``: a prefix holds none of those
# separators, no '@' (sample rates) and no '#', space or control character.
_PREFIX = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


def _statsd_prefix(value: str) -> str:
    if _PREFIX.fullmatch(value) is None:
        raise ValueError(
            "expected dot-separated words of letters, digits, '_' and '-' (like 'sozu' or "
            f"'edge.sozu'), found {value!r}"
        )
    return value


StatsdPrefix = Annotated[str, AfterValidator(_statsd_prefix)]
"""The first component of every statsd key."""


class MetricsSettings(Model):
    """``[metrics]``: the statsd export of the main process (reference §I.1)."""

    address: SocketAddress
    """UDP address of the statsd server."""
    tagged_metrics: bool = False
    """InfluxDB-style tags (``,origin=…,version=…``) instead of the origin and ids in the key."""
    prefix: StatsdPrefix = "sozu"
    """The first component of every statsd key."""
    detail: MetricDetail = MetricDetail.CLUSTER
    """The scopes sent (sōzu's default: cluster)."""


# --------------------------------------------------------------------------- the settings


class Config(Model):
    """The global settings of a configuration file, and the routing state it describes.

    Defaults are sōzu's (reference §B.1) unless noted. Invariants: every path is absolute;
    ``min_buffers <= max_buffers``; ``command_buffer_size <= max_command_buffer_size``;
    ``automatic_state_save`` implies ``saved_state``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, use_attribute_docstrings=True)

    path: Path | None = None
    """The file the configuration came from (``None`` when loaded from text)."""
    command_socket: Path
    """Unix socket of the command channel. Default: ``sozu.sock`` next to the configuration
    file (sōzu: in the working directory)."""
    command_buffer_size: Annotated[int, Field(ge=1)] = DEFAULT_COMMAND_BUFFER_SIZE
    """Initial size of a command channel buffer, in bytes."""
    max_command_buffer_size: Annotated[int, Field(ge=1)] = DEFAULT_MAX_COMMAND_BUFFER_SIZE
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
    """Colours in the logs (ANSI escapes)."""
    access_logs_target: str | None = None
    """Where access logs go (same syntax as ``log_target``; ``None``: no access logs)."""
    access_logs_format: Literal["ascii", "json"] = "ascii"
    """``ascii``: sōzu's access line; ``json``: one JSON object per line (sōzu's ``protobuf``
    is read as ``ascii``, with a warning)."""
    access_logs_colored: bool = False
    """Colours in access logs; when the file does not say, the value of ``log_colored``."""
    worker_count: Annotated[int, Field(ge=1, le=65_535)] = 2
    """Worker processes proxying traffic (1 to 65535)."""
    worker_automatic_restart: bool = True
    """A worker that dies is replaced by a new one with the same state."""
    worker_timeout: Annotated[int, Field(ge=1)] = 10
    """Seconds the main process waits for a worker's answer."""
    max_connections: Annotated[int, Field(ge=1)] = 10_000
    """Connections per worker; beyond it the worker stops accepting."""
    min_buffers: Annotated[int, Field(ge=0)] = 1
    """sōzu's buffer pool: buffers allocated at start-up. Accepted for compatibility; larger than
    max_buffers, it is clamped with a warning."""
    max_buffers: Annotated[int, Field(ge=1)] = 1_000
    """sōzu's buffer pool: most buffers allocated at once. Accepted for compatibility."""
    buffer_size: Annotated[int, Field(ge=16_393)] = 16_393
    """Bytes per buffer: at least a 16 KiB HTTP/2 frame and its 9-byte header (sōzu demands
    it only when HTTP/2 is offered; here always)."""
    ctl_command_timeout: Annotated[int, Field(ge=0)] = 1_000
    """Milliseconds the CLI waits for an answer (0: forever)."""
    pid_file_path: Path | None = None
    """File the main process writes its pid to at start-up (removed when it stops); relative to the
    configuration file."""
    activate_listeners: bool = True
    """Listeners of the file start accepting at startup (else they wait for
    ``activate_listener``)."""
    front_timeout: Timeout = 60
    """Seconds a client connection may stay idle (default of every listener)."""
    back_timeout: Timeout = 30
    """Seconds a backend connection may stay idle, waiting for the answer (default of every
    listener)."""
    connect_timeout: Timeout = 3
    """Seconds to open a connection to a backend (default of every listener)."""
    request_timeout: Timeout = 10
    """Seconds a client has to send a whole request head (default of every listener)."""
    zombie_check_interval: Annotated[int, Field(ge=1)] = 1_800
    """sōzu's check for stuck sessions, in seconds. Accepted for compatibility, without effect."""
    accept_queue_timeout: Annotated[int, Field(ge=1)] = 60
    """sōzu's limit, in seconds, on how long an accepted connection may wait to be handled. Accepted
    for compatibility, without effect."""
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
    """Cluster and backend metrics are not exported to statsd (``[metrics]`` sends the
    process level only)."""
    metrics: MetricsSettings | None = None
    """``[metrics]``: where and how the main process exports metrics to statsd (``None``: no
    export)."""
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
    admin: AdminSettings | None = None
    """The HTTP admin endpoint (``None``: off)."""
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
