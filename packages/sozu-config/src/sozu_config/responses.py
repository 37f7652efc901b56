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
    HealthCheck,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    Model,
    TcpFrontend,
    TcpListenerConfig,
)

__all__ = [
    "BackendHealth",
    "BackendState",
    "BackendsContent",
    "BatchResult",
    "BatchResults",
    "CertificatesContent",
    "ClusterHashes",
    "ClusterInformation",
    "ClustersContent",
    "ErrorKind",
    "Event",
    "EventContent",
    "EventKind",
    "FrontendList",
    "HealthChecksContent",
    "ListenersList",
    "MainProcessInfo",
    "MetricsContent",
    "ProbeResult",
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


class ErrorKind(StrEnum):
    """Why a request failed, for programs: a ``failure`` answer carries one in ``kind`` (its
    ``message`` is for people and may change between versions)."""

    NOT_FOUND = "not_found"
    """Something the request names does not exist (cluster, listener, frontend, certificate,
    worker)."""
    ALREADY_EXISTS = "already_exists"
    """The object to add exists already (and adding it is not an upsert)."""
    IN_USE = "in_use"
    """The object to remove is still used (a listener with frontends or certificates)."""
    INVALID = "invalid"
    """The request is well-formed but refused by the rules: bad settings, bad certificate,
    a batch inside a batch, a setting no worker could serve."""
    VERSION_MISMATCH = "version_mismatch"
    """A batch's ``expected_version`` is not the state's version any more: plan again."""
    BAD_REQUEST = "bad_request"
    """The message is not a valid request (not JSON, unknown type, invalid fields)."""
    UNAUTHORIZED = "unauthorized"
    """The client's user may not send commands."""
    LIMIT = "limit"
    """A limit of the command socket was exceeded (message size, commands per connection)."""
    UNSUPPORTED = "unsupported"
    """This daemon cannot do that (unknown verb, no configuration file, not its socket)."""
    UNAVAILABLE = "unavailable"
    """The daemon cannot do it now (it is stopping, a worker did not start)."""
    OS_ERROR = "os_error"
    """The operating system refused (binding an address, reading or writing a file)."""
    WORKER_REFUSED = "worker_refused"
    """The main process applied the change but a worker refused it (it is being replaced)."""
    TIMEOUT = "timeout"
    """A worker did not answer in time."""
    NOT_SAVED = "not_saved"
    """The change is live but could not be saved to the state file."""
    INTERNAL = "internal"
    """A bug: the daemon failed unexpectedly."""


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
    """Metric snapshots (forms in :mod:`sozu_config.metrics`): ``main``, the main process's
    own; ``proxying``, the proxy-wide totals; ``clusters``, by cluster id ``{"cluster":
    {…}, "backends": {backend_id: {…}}}``; ``workers``, by worker id ``{"proxying": {…},
    "clusters": {…}}`` when asked; ``names``, the metric names when only those were asked."""

    type: Literal["metrics"] = "metrics"
    main: dict[str, Any] = Field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    clusters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    proxying: dict[str, Any] = Field(default_factory=dict)
    names: list[str] = Field(default_factory=list)


class HealthChecksContent(Model):
    """The health check of each cluster that has one, by cluster id."""

    type: Literal["health_checks"] = "health_checks"
    health_checks: dict[str, HealthCheck] = Field(default_factory=dict)


class BackendState(StrEnum):
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    """Removed from the configuration; its connections finish their requests."""


class ProbeResult(Model):
    """The outcome of one active check of a backend."""

    time: dt.datetime
    ok: bool
    latency: float
    """Seconds the probe took (until the status line, or the connection for TCP)."""
    detail: str = ""
    """The status received (``200``), or why the probe failed (``connection refused``)."""


class BackendHealth(Model):
    """A backend as every worker sees it: its state, since when and why, its last check."""

    cluster_id: str
    backend_id: str
    address: str
    state: BackendState
    since: dt.datetime | None = None
    """When the backend entered its state (None: up since it was added)."""
    reason: str = ""
    """Why it is down (or came back up)."""
    checked: bool = False
    """Its cluster has an active health check."""
    last_check: ProbeResult | None = None
    consecutive_failures: int = 0
    """Failed probes in a row, or failed connections in a row without an active check."""


class BackendsContent(Model):
    type: Literal["backends"] = "backends"
    backends: list[BackendHealth] = Field(default_factory=list)


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
    | HealthChecksContent
    | BackendsContent
    | EventContent
    | BatchResults
    | WorkerResponses,
    Field(discriminator="type"),
]


class Response(Model):
    """One answer to the request with the same ``id``.

    A ``failure`` may say why in ``kind``, and for a batch which of its requests (0-based) in
    ``index``; both are absent on other answers.
    """

    id: str
    status: ResponseStatus
    message: str = ""
    content: ResponseContent | None = None
    kind: ErrorKind | None = None
    """Why the request failed (failures only)."""
    index: int | None = None
    """The position in the batch of the request at fault (failures of a batch only)."""

    @classmethod
    def failure(
        cls,
        message: str,
        *,
        kind: ErrorKind | None,
        index: int | None = None,
        content: ResponseContent | None = None,
        id: str = "",
    ) -> Response:
        """A ``failure`` answer; ``kind`` says why (``None`` only where no kind is known)."""
        return cls(
            id=id,
            status=ResponseStatus.FAILURE,
            message=message,
            content=content,
            kind=kind,
            index=index,
        )

    @property
    def ok(self) -> bool:
        return self.status is ResponseStatus.OK

    @property
    def final(self) -> bool:
        return self.status is not ResponseStatus.PROCESSING
