"""Messages on the main↔worker channel (JSON lines), beyond the command protocol's requests.

The main process sends :class:`WorkerMessage` lines: either a request of the command protocol
(applied by the worker to its state copy) or a control message of the daemon itself. A message
announces how many listening sockets travel with it (``fds``). The worker answers with the
command protocol's :class:`~sozu_config.responses.Response`, same ``id``; events it reports go
up as ``processing`` responses with the id ``"event"``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from sozu_config.models import Model
from sozu_config.requests import Request, StateRequest

__all__ = [
    "EVENT_ID",
    "Control",
    "InitialState",
    "ReopenLogs",
    "Setup",
    "WorkerMessage",
    "decode_message",
]

EVENT_ID = "event"


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


Control = Annotated[Setup | InitialState | ReopenLogs, Field(discriminator="type")]


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
