"""Messages on the main↔worker channel (JSON lines), beyond the command protocol's requests.

The main process sends :class:`WorkerMessage` lines: either a request of the command protocol
(applied by the worker to its state copy) or a control message of the daemon itself. A message
announces how many listening sockets travel with it (``fds``). The worker answers with the
command protocol's :class:`~sozu_config.responses.Response`, same ``id``; events it reports go
up as ``processing`` responses with the id ``"event"``, and what it observes of the backends'
health (see :data:`HEALTH_ID`) with the id ``"health"``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from sozu_config.models import Model
from sozu_config.requests import Request, StateRequest

__all__ = [
    "EVENT_ID",
    "HEALTH_ID",
    "Control",
    "HealthUpdate",
    "InitialState",
    "ReopenLogs",
    "Setup",
    "WorkerMessage",
    "decode_message",
]

EVENT_ID = "event"

HEALTH_ID = "health"
"""The id of a worker's reports of what real traffic shows of a backend's health, each an
:class:`~sozu_config.responses.EventContent`: ``backend_down`` means "a connection to this
backend failed" (``message``: why), ``backend_up`` "a connection to it succeeded after
failures". The main process decides from them, for every worker, whether the backend is down
(and emits the public events, once per change)."""


class Setup(Model):
    """First message to a new worker: its settings."""

    type: Literal["setup"] = "setup"
    worker_id: int
    buffer_size: int = 16393
    max_connections: int = 10_000
    max_connections_per_ip: int = 0
    retry_after: int = 60
    evict_on_queue_full: bool = False
    log_level: str = "info"
    log_target: str = "stdout"
    access_logs_target: str | None = None
    access_logs_format: Literal["ascii", "json"] = "ascii"
    expired_certificates: str = "refuse"
    soft_stop_timeout: float = 60.0


class InitialState(Model):
    """The whole state, as requests, for a worker that starts."""

    type: Literal["initial_state"] = "initial_state"
    requests: list[StateRequest]
    version: int = 0


class ReopenLogs(Model):
    """Open the log files again (the main process got SIGUSR1)."""

    type: Literal["reopen_logs"] = "reopen_logs"


class HealthUpdate(Model):
    """The shared health of backends, decided by the main process: ``down`` lists the backends
    (cluster id, backend id) now down, ``up`` those up again. With ``reset``, ``down`` is the
    complete list (a worker that starts, or a new main process): every other backend is up."""

    type: Literal["health"] = "health"
    down: list[tuple[str, str]] = []
    up: list[tuple[str, str]] = []
    reset: bool = False


Control = Annotated[Setup | InitialState | ReopenLogs | HealthUpdate, Field(discriminator="type")]


class WorkerMessage(Model):
    id: str
    request: Request | None = None
    control: Control | None = None
    fds: int = 0
    """How many listening sockets come with this message (SCM_RIGHTS, in order of use)."""


_ADAPTER: TypeAdapter[WorkerMessage] = TypeAdapter(WorkerMessage)


def decode_message(line: bytes) -> WorkerMessage:
    return _ADAPTER.validate_json(line)


def encode_message(message: WorkerMessage) -> bytes:
    return message.model_dump_json().encode() + b"\n"
