"""Answers and events.

Every request gets answers carrying its ``id``: zero or more ``processing`` answers (progress,
or events for a subscriber) and then exactly one final answer, ``ok`` or ``failure``. The
optional ``content`` is a discriminated union on ``type``.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from .certificates import CertificateSummary
from .models import (
    Backend,
    Cluster,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    Model,
    TcpFrontend,
    TcpListenerConfig,
)

__all__ = [
    "BatchResult",
    "BatchResults",
    "CertificatesContent",
    "ClusterHashes",
    "ClusterInformation",
    "ClustersContent",
    "Event",
    "EventContent",
    "EventKind",
    "FrontendList",
    "ListenersList",
    "MainProcessInfo",
    "MetricsContent",
    "RequestCounts",
    "Response",
    "ResponseContent",
    "ResponseStatus",
    "RunState",
    "StateContent",
    "StateSnapshot",
    "WorkerInfo",
    "WorkerResponses",
    "WorkersContent",
]


class ResponseStatus(StrEnum):
    OK = "ok"
    PROCESSING = "processing"
    FAILURE = "failure"


class RunState(StrEnum):
    STARTING = "starting"  # receiving its initial state: gets changes, not yet queries
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    NOT_ANSWERING = "not_answering"


class WorkerInfo(Model):
    id: int
    pid: int
    run_state: RunState
    version: str | None = None
    """The version of the code the worker runs."""
    started_at: dt.datetime | None = None
    """When the worker's code started (UTC)."""


class MainProcessInfo(Model):
    """The main process: its pid, and the version and start (UTC) of the code it runs (an
    upgrade re-executes it: same pid, new code, new start)."""

    pid: int
    version: str
    started_at: dt.datetime


class EventKind(StrEnum):
    BACKEND_DOWN = "backend_down"
    BACKEND_UP = "backend_up"
    NO_AVAILABLE_BACKENDS = "no_available_backends"
    REMOVED_BACKEND_HAS_NO_CONNECTIONS = "removed_backend_has_no_connections"
    CONFIGURATION_CHANGED = "configuration_changed"
    CONFIGURATION_RELOADED = "configuration_reloaded"
    WORKER_KILLED = "worker_killed"
    WORKER_RELAUNCHED = "worker_relaunched"
    WORKER_UPGRADED = "worker_upgraded"
    WORKER_RESYNCHRONIZED = "worker_resynchronized"
    MAIN_UPGRADED = "main_upgraded"
    STATE_SAVED = "state_saved"
    STATE_LOADED = "state_loaded"
    STOP_REQUESTED = "stop_requested"


class Event(Model):
    """Something that happened in the proxy, pushed to ``subscribe_events`` clients."""

    kind: EventKind
    cluster_id: str | None = None
    backend_id: str | None = None
    address: str | None = None
    worker_id: int | None = None
    message: str = ""
    time: dt.datetime | None = None
    """When it happened (UTC), set by the process where it happened."""

    def describe(self) -> str:
        """``kind key=value … message``: one line for logs and terminals (time excluded)."""
        details = [
            f"{name}={value}"
            for name, value in (
                ("cluster", self.cluster_id),
                ("backend", self.backend_id),
                ("address", self.address),
                ("worker", self.worker_id),
            )
            if value is not None
        ]
        if self.message:
            details.append(self.message)
        return " ".join([self.kind.value, *details])


class StateSnapshot(Model):
    """The whole routing state, private keys excluded (what ``query_state`` answers)."""

    http_listeners: list[HttpListenerConfig] = Field(default_factory=list)
    https_listeners: list[HttpsListenerConfig] = Field(default_factory=list)
    tcp_listeners: list[TcpListenerConfig] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    http_frontends: list[HttpFrontend] = Field(default_factory=list)
    https_frontends: list[HttpFrontend] = Field(default_factory=list)
    tcp_frontends: list[TcpFrontend] = Field(default_factory=list)
    backends: list[Backend] = Field(default_factory=list)
    certificates: list[CertificateSummary] = Field(default_factory=list)


class ClusterInformation(Model):
    cluster: Cluster | None = None
    http_frontends: list[HttpFrontend] = Field(default_factory=list)
    https_frontends: list[HttpFrontend] = Field(default_factory=list)
    tcp_frontends: list[TcpFrontend] = Field(default_factory=list)
    backends: list[Backend] = Field(default_factory=list)


# --------------------------------------------------------------------------- contents


class WorkersContent(Model):
    type: Literal["workers"] = "workers"
    workers: list[WorkerInfo]
    main: MainProcessInfo | None = None


class StateContent(Model):
    type: Literal["state"] = "state"
    version: int
    state: StateSnapshot


class FrontendList(Model):
    type: Literal["frontend_list"] = "frontend_list"
    http: list[HttpFrontend] = Field(default_factory=list)
    https: list[HttpFrontend] = Field(default_factory=list)
    tcp: list[TcpFrontend] = Field(default_factory=list)


class ListenersList(Model):
    type: Literal["listeners_list"] = "listeners_list"
    http: list[HttpListenerConfig] = Field(default_factory=list)
    https: list[HttpsListenerConfig] = Field(default_factory=list)
    tcp: list[TcpListenerConfig] = Field(default_factory=list)


class ClustersContent(Model):
    type: Literal["clusters"] = "clusters"
    clusters: list[ClusterInformation]


class ClusterHashes(Model):
    type: Literal["cluster_hashes"] = "cluster_hashes"
    hashes: dict[str, str]


class CertificatesContent(Model):
    type: Literal["certificates"] = "certificates"
    certificates: list[CertificateSummary]


class RequestCounts(Model):
    type: Literal["request_counts"] = "request_counts"
    counts: dict[str, int]


class MetricsContent(Model):
    type: Literal["metrics"] = "metrics"
    main: dict[str, Any] = Field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    clusters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    proxying: dict[str, Any] = Field(default_factory=dict)


class EventContent(Model):
    type: Literal["event"] = "event"
    event: Event


class BatchResult(Model):
    index: int
    request: str
    status: ResponseStatus
    message: str = ""


class BatchResults(Model):
    """Per-request outcome of a batch (on failure: which request failed, which were undone)."""

    type: Literal["batch_results"] = "batch_results"
    version: int | None = None
    results: list[BatchResult]


class WorkerResponses(Model):
    """One content per worker (key: worker id as text; "main" for the main process)."""

    type: Literal["worker_responses"] = "worker_responses"
    responses: dict[str, ResponseContent | None]


ResponseContent = Annotated[
    WorkersContent
    | StateContent
    | FrontendList
    | ListenersList
    | ClustersContent
    | ClusterHashes
    | CertificatesContent
    | RequestCounts
    | MetricsContent
    | EventContent
    | BatchResults
    | WorkerResponses,
    Field(discriminator="type"),
]


class Response(Model):
    """One answer to the request with the same ``id``."""

    id: str
    status: ResponseStatus
    message: str = ""
    content: ResponseContent | None = None

    @property
    def ok(self) -> bool:
        return self.status is ResponseStatus.OK

    @property
    def final(self) -> bool:
        return self.status is not ResponseStatus.PROCESSING


WorkerResponses.model_rebuild()
Response.model_rebuild()
