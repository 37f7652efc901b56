"""The global settings of a configuration file, and the routing state it describes."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..addresses import SocketAddress, split_address
from ..models import Model, Timeout
from ..state import ConfigState

__all__ = [
    "DEFAULT_COMMAND_BUFFER_SIZE",
    "DEFAULT_MAX_COMMAND_BUFFER_SIZE",
    "AdminSettings",
    "Config",
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
