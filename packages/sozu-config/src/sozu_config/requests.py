"""Requests: everything a client can ask of the proxy, as one discriminated union on ``type``.

Four families, each declared once (at the end of the models) as a union:
* **state requests** (:data:`StateRequests`) change the routing state one object at a time
  (``add_cluster``, ``remove_backend``, ``replace_certificate`` …): the main process applies
  them to its state, then to every worker;
* the **batch** holds several state requests, applied all or nothing; with the state requests
  it makes the *mutating* requests (:data:`MutatingRequest`, :data:`MUTATING_TYPES`);
* **queries** (:data:`QueryRequests`) read (``status``, ``list_frontends``, ``query_state`` …);
* **lifecycle** requests (:data:`LifecycleRequests`) act on the daemon itself (``soft_stop``,
  ``upgrade_worker``, ``save_state``, ``logging`` …).

The discriminated unions (:data:`Request`, :data:`StateRequest`, :data:`QueryRequest` …) and
the sets of type names are derived from the families, so that a dispatcher can ``match`` on a
family and mypy names every place a new type must be handled.

On the wire a request travels inside a :class:`sozu_config.protocol.RequestMessage` envelope
that adds the client's ``id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, get_args, get_origin

from pydantic import ConfigDict, Field, TypeAdapter, model_validator
from typing_extensions import TypeIs

from .addresses import SocketAddress
from .certificates import CertificateAndKey
from .models import (
    Backend,
    Cluster,
    H2Count,
    H2Deadline,
    H2Ratio,
    H2Size,
    H2Window,
    HealthCheck,
    Hsts,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    Identifier,
    ListenerType,
    Model,
    TcpFrontend,
    TcpListenerConfig,
    Timeout,
    TlsVersion,
)


class _Request(Model):
    type: str

    def describe(self) -> str:
        """One-line human description (used in plans, logs and events)."""
        return self.type


# --------------------------------------------------------------------------- mutating: clusters


class AddCluster(_Request):
    """Add a cluster, or replace the settings of an existing one (upsert)."""

    type: Literal["add_cluster"] = "add_cluster"
    cluster: Cluster

    def describe(self) -> str:
        return f"add_cluster {self.cluster.cluster_id}"


class RemoveCluster(_Request):
    """Remove a cluster together with its frontends and backends."""

    type: Literal["remove_cluster"] = "remove_cluster"
    cluster_id: Identifier

    def describe(self) -> str:
        return f"remove_cluster {self.cluster_id}"


class SetHealthCheck(_Request):
    """Check the cluster's backends actively (replaces its health check, if any)."""

    type: Literal["set_health_check"] = "set_health_check"
    cluster_id: Identifier
    health_check: HealthCheck

    def describe(self) -> str:
        return f"set_health_check {self.cluster_id} ({self.health_check.describe()})"


class RemoveHealthCheck(_Request):
    """Stop checking the cluster's backends actively (passive detection goes on)."""

    type: Literal["remove_health_check"] = "remove_health_check"
    cluster_id: Identifier

    def describe(self) -> str:
        return f"remove_health_check {self.cluster_id}"


# --------------------------------------------------------------------------- mutating: listeners


class AddHttpListener(_Request):
    type: Literal["add_http_listener"] = "add_http_listener"
    listener: HttpListenerConfig

    def describe(self) -> str:
        return f"add_http_listener {self.listener.address}"


class AddHttpsListener(_Request):
    type: Literal["add_https_listener"] = "add_https_listener"
    listener: HttpsListenerConfig

    def describe(self) -> str:
        return f"add_https_listener {self.listener.address}"


class AddTcpListener(_Request):
    type: Literal["add_tcp_listener"] = "add_tcp_listener"
    listener: TcpListenerConfig

    def describe(self) -> str:
        return f"add_tcp_listener {self.listener.address}"


class _UpdateListener(_Request):
    """Change some settings of an existing listener; absent (null) fields are kept. An
    optional setting is cleared with an empty string (``"public_address": ""``)."""

    address: SocketAddress
    public_address: SocketAddress | Literal[""] | None = None
    expect_proxy: bool | None = None
    front_timeout: Timeout | None = None
    back_timeout: Timeout | None = None
    connect_timeout: Timeout | None = None
    request_timeout: Timeout | None = None

    def patch(self) -> dict[str, Any]:
        """The settings to change: every non-null field but type and address ("" → None)."""
        return {
            name: (None if value == "" else value)
            for name in type(self).model_fields
            if name not in ("type", "address") and (value := getattr(self, name)) is not None
        }

    def describe(self) -> str:
        return f"{self.type} {self.address} ({', '.join(sorted(self.patch()))})"


class UpdateTcpListener(_UpdateListener):
    type: Literal["update_tcp_listener"] = "update_tcp_listener"


class _HttpListenerPatch(_UpdateListener):
    sticky_name: str | None = None
    answers: dict[int, str] | None = None
    sozu_id_header: str | None = None
    elide_x_real_ip: bool | None = None
    send_x_real_ip: bool | None = None
    trust_forwarded_headers: bool | None = None


class UpdateHttpListener(_HttpListenerPatch):
    type: Literal["update_http_listener"] = "update_http_listener"


class UpdateHttpsListener(_HttpListenerPatch):
    type: Literal["update_https_listener"] = "update_https_listener"
    tls_versions: list[TlsVersion] | None = None
    cipher_list: list[str] | None = None
    alpn_protocols: list[str] | None = None
    strict_sni_binding: bool | None = None
    send_tls13_tickets: int | None = None
    default_sni: str | None = None
    """Name served to clients without (known) SNI; "" clears it."""
    hsts: Hsts | Literal[""] | None = None
    """HSTS of the listener's answers; "" clears it."""
    disable_http11: bool | None = None
    """HTTP/2 only; ``true`` needs ``alpn_protocols`` without ``http/1.1`` (in the same
    request when the listener's list has it)."""
    h2_max_rst_stream_per_window: H2Count | None = None
    h2_max_ping_per_window: H2Count | None = None
    h2_max_settings_per_window: H2Count | None = None
    h2_max_empty_data_per_window: H2Count | None = None
    h2_max_window_update_stream0_per_window: H2Count | None = None
    h2_max_continuation_frames: H2Count | None = None
    h2_max_glitch_count: H2Count | None = None
    h2_initial_connection_window: H2Window | None = None
    h2_max_concurrent_streams: H2Count | None = None
    h2_stream_shrink_ratio: H2Ratio | None = None
    h2_max_rst_stream_lifetime: H2Count | None = None
    h2_max_rst_stream_abusive_lifetime: H2Count | None = None
    h2_max_rst_stream_emitted_lifetime: H2Count | None = None
    h2_max_header_list_size: H2Count | None = None
    h2_max_header_table_size: H2Size | None = None
    h2_max_header_fields: H2Count | None = None
    h2_stream_idle_timeout_seconds: Timeout | None = None
    h2_graceful_shutdown_deadline_seconds: H2Deadline | None = None


class RemoveListener(_Request):
    """Remove a listener; refused while frontends or certificates sit on it."""

    type: Literal["remove_listener"] = "remove_listener"
    address: SocketAddress
    proxy: ListenerType

    def describe(self) -> str:
        return f"remove_listener {self.proxy.value} {self.address}"


class ActivateListener(_Request):
    """Start accepting connections on a listener."""

    type: Literal["activate_listener"] = "activate_listener"
    address: SocketAddress
    proxy: ListenerType
    from_scm: bool = False

    def describe(self) -> str:
        return f"activate_listener {self.proxy.value} {self.address}"


class DeactivateListener(_Request):
    """Stop accepting connections on a listener (connections in flight go on)."""

    type: Literal["deactivate_listener"] = "deactivate_listener"
    address: SocketAddress
    proxy: ListenerType
    to_scm: bool = False

    def describe(self) -> str:
        return f"deactivate_listener {self.proxy.value} {self.address}"


# --------------------------------------------------------------------------- mutating: frontends


class AddHttpFrontend(_Request):
    type: Literal["add_http_frontend"] = "add_http_frontend"
    frontend: HttpFrontend

    def describe(self) -> str:
        return (
            f"add_http_frontend {self.frontend.describe()} -> {self.frontend.cluster_id or 'deny'}"
        )


class RemoveHttpFrontend(_Request):
    """Remove the HTTP frontend with the same address, hostname, path and method."""

    type: Literal["remove_http_frontend"] = "remove_http_frontend"
    frontend: HttpFrontend

    def describe(self) -> str:
        return f"remove_http_frontend {self.frontend.describe()}"


class AddHttpsFrontend(_Request):
    type: Literal["add_https_frontend"] = "add_https_frontend"
    frontend: HttpFrontend

    def describe(self) -> str:
        return (
            f"add_https_frontend {self.frontend.describe()} -> {self.frontend.cluster_id or 'deny'}"
        )


class RemoveHttpsFrontend(_Request):
    type: Literal["remove_https_frontend"] = "remove_https_frontend"
    frontend: HttpFrontend

    def describe(self) -> str:
        return f"remove_https_frontend {self.frontend.describe()}"


class AddTcpFrontend(_Request):
    type: Literal["add_tcp_frontend"] = "add_tcp_frontend"
    frontend: TcpFrontend

    def describe(self) -> str:
        return f"add_tcp_frontend {self.frontend.address} -> {self.frontend.cluster_id}"


class RemoveTcpFrontend(_Request):
    type: Literal["remove_tcp_frontend"] = "remove_tcp_frontend"
    frontend: TcpFrontend

    def describe(self) -> str:
        return f"remove_tcp_frontend {self.frontend.address}"


# --------------------------------------------------------------------------- mutating: backends


class AddBackend(_Request):
    """Add a backend, or replace the one with the same (cluster_id, backend_id)."""

    type: Literal["add_backend"] = "add_backend"
    backend: Backend

    def describe(self) -> str:
        b = self.backend
        return f"add_backend {b.cluster_id}/{b.backend_id} {b.address}"


class RemoveBackend(_Request):
    """Remove a backend; connections in flight finish first. ``address``, when given, must match."""

    type: Literal["remove_backend"] = "remove_backend"
    cluster_id: Identifier
    backend_id: Identifier
    address: SocketAddress | None = None

    def describe(self) -> str:
        return f"remove_backend {self.cluster_id}/{self.backend_id}"


# --------------------------------------------------------------------------- mutating: certificates


class AddCertificate(_Request):
    """Add a certificate to an HTTPS listener. Adding a known fingerprint again changes nothing."""

    type: Literal["add_certificate"] = "add_certificate"
    address: SocketAddress
    certificate: CertificateAndKey
    expired_at: int | None = None
    """Unix time used instead of the notAfter date when several certificates serve a name."""

    def describe(self) -> str:
        from .certificates import certificate_info

        try:
            info = certificate_info(self.certificate.certificate)
            names = ",".join(self.certificate.names or info.names)
            return f"add_certificate {self.address} {names} {info.fingerprint[:16]}"
        except ValueError:
            return f"add_certificate {self.address}"


class ReplaceCertificate(_Request):
    """Swap a certificate for a new one in one step (the names are never left uncovered)."""

    type: Literal["replace_certificate"] = "replace_certificate"
    address: SocketAddress
    new_certificate: CertificateAndKey
    old_fingerprint: str
    new_expired_at: int | None = None

    def describe(self) -> str:
        from .certificates import certificate_info

        try:
            info = certificate_info(self.new_certificate.certificate)
            return (
                f"replace_certificate {self.address} {self.old_fingerprint[:16]} -> "
                f"{info.fingerprint[:16]} ({','.join(self.new_certificate.names or info.names)})"
            )
        except ValueError:
            return f"replace_certificate {self.address} {self.old_fingerprint[:16]}"


class RemoveCertificate(_Request):
    type: Literal["remove_certificate"] = "remove_certificate"
    address: SocketAddress
    fingerprint: str

    def describe(self) -> str:
        return f"remove_certificate {self.address} {self.fingerprint[:16]}"


# --------------------------------------------------------------------------- lifecycle: settings


class ConfigureMetrics(_Request):
    """Enable, disable or clear the workers' in-memory metrics."""

    type: Literal["configure_metrics"] = "configure_metrics"
    configuration: Literal["enabled", "disabled", "clear"]


class Logging(_Request):
    """Change the log level of the main process and the workers (error, warn, info, debug)."""

    type: Literal["logging"] = "logging"
    level: Literal["error", "warn", "info", "debug", "trace"]


# --------------------------------------------------------------------------- the families
#
# Each family is declared once, here; the unions, the type-name sets and ``__all__`` below are
# derived from these declarations. A new request type is a model above plus its name in one
# family.

StateRequests: TypeAlias = (
    AddCluster
    | RemoveCluster
    | SetHealthCheck
    | RemoveHealthCheck
    | AddHttpListener
    | AddHttpsListener
    | AddTcpListener
    | UpdateHttpListener
    | UpdateHttpsListener
    | UpdateTcpListener
    | RemoveListener
    | ActivateListener
    | DeactivateListener
    | AddHttpFrontend
    | RemoveHttpFrontend
    | AddHttpsFrontend
    | RemoveHttpsFrontend
    | AddTcpFrontend
    | RemoveTcpFrontend
    | AddBackend
    | RemoveBackend
    | AddCertificate
    | ReplaceCertificate
    | RemoveCertificate
)
"""The requests that change the routing state, one object at a time (what a batch holds)."""

StateRequest = Annotated[StateRequests, Field(discriminator="type")]
"""A request that changes the routing state (what a batch may contain)."""


class Batch(_Request):
    """Several state requests applied all-or-nothing, in order.

    When ``expected_version`` is given, the batch is refused unless the state version (as
    reported by ``query_state``) still equals it: nothing changed since the plan was made.
    """

    type: Literal["batch"] = "batch"
    requests: list[StateRequest]
    expected_version: int | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Batch:
        if len(self.requests) > 1_000_000:
            raise ValueError("a batch holds at most 1,000,000 requests")
        return self

    def describe(self) -> str:
        return f"batch of {len(self.requests)} requests"


MutatingRequest = Annotated[StateRequests | Batch, Field(discriminator="type")]
"""A request that changes the routing state: one state request, or a batch of them."""


# --------------------------------------------------------------------------- queries


class Status(_Request):
    """Ask every worker whether it answers; content: workers."""

    type: Literal["status"] = "status"


class ListWorkers(_Request):
    """The workers as the main process sees them; content: workers."""

    type: Literal["list_workers"] = "list_workers"


class ListFrontends(_Request):
    """Frontends, optionally only some protocols and hostnames containing ``domain``."""

    type: Literal["list_frontends"] = "list_frontends"
    http: bool = False
    https: bool = False
    tcp: bool = False
    domain: str | None = None


class ListListeners(_Request):
    type: Literal["list_listeners"] = "list_listeners"


class QueryClusterById(_Request):
    type: Literal["query_cluster_by_id"] = "query_cluster_by_id"
    cluster_id: Identifier


class QueryClustersByDomain(_Request):
    """Clusters with a frontend on exactly ``hostname`` (and ``path``, when given)."""

    type: Literal["query_clusters_by_domain"] = "query_clusters_by_domain"
    hostname: str
    path: str | None = None


class QueryClustersHashes(_Request):
    type: Literal["query_clusters_hashes"] = "query_clusters_hashes"


class QueryCertificates(_Request):
    """Certificates in the state (fingerprints and names, never keys)."""

    type: Literal["query_certificates"] = "query_certificates"
    domain: str | None = None
    fingerprint: str | None = None


class QueryCertificatesFromWorkers(_Request):
    """Certificates as each worker holds them."""

    type: Literal["query_certificates_from_workers"] = "query_certificates_from_workers"
    domain: str | None = None
    fingerprint: str | None = None


class CountRequests(_Request):
    """How many requests of each type the state accepted."""

    type: Literal["count_requests"] = "count_requests"


class QueryState(_Request):
    """The whole routing state (without private keys) and its version, in one answer."""

    type: Literal["query_state"] = "query_state"


class QueryHealthChecks(_Request):
    """The health checks of every cluster, or of ``cluster_id``; content: health_checks."""

    type: Literal["query_health_checks"] = "query_health_checks"
    cluster_id: Identifier | None = None


class ListBackends(_Request):
    """Every backend with its health (up, down or draining, the last check), or only those
    of ``cluster_id``; content: backends."""

    type: Literal["list_backends"] = "list_backends"
    cluster_id: Identifier | None = None


_Names: TypeAlias = list[str]  # (the field ``list`` of QueryMetrics shadows the builtin)


class QueryMetrics(_Request):
    """The metrics of the main process and the workers (see :mod:`sozu_config.metrics`).

    ``list``: only the names of the metrics available; ``cluster_ids``/``backend_ids``: only
    these clusters and backends (a backend is named by its id in any cluster);
    ``metric_names``: only these metrics; ``workers``: each worker's metrics too, besides the
    merged ones; ``no_clusters``: the proxy-wide metrics only."""

    type: Literal["query_metrics"] = "query_metrics"
    list: bool = False
    cluster_ids: _Names = Field(default_factory=_Names)
    backend_ids: _Names = Field(default_factory=_Names)
    metric_names: _Names = Field(default_factory=_Names)
    workers: bool = False
    no_clusters: bool = False


# --------------------------------------------------------------------------- lifecycle


class SaveState(_Request):
    """Write the state to a file (JSON lines of requests)."""

    type: Literal["save_state"] = "save_state"
    path: str


class LoadState(_Request):
    """Apply the requests of a state file (a merge: existing objects are left as they are)."""

    type: Literal["load_state"] = "load_state"
    path: str


class ReloadConfiguration(_Request):
    """Re-read the configuration file (or ``path``) and apply the difference, all-or-nothing."""

    type: Literal["reload_configuration"] = "reload_configuration"
    path: str | None = None


class SoftStop(_Request):
    """Stop accepting, finish the requests in flight, then exit."""

    type: Literal["soft_stop"] = "soft_stop"


class HardStop(_Request):
    """Exit now, cutting the connections."""

    type: Literal["hard_stop"] = "hard_stop"


class UpgradeMain(_Request):
    """Re-execute the main process (new code) keeping sockets, workers and state."""

    type: Literal["upgrade_main"] = "upgrade_main"


class UpgradeWorker(_Request):
    """Replace worker ``worker_id`` by a new one; the old one finishes its requests."""

    type: Literal["upgrade_worker"] = "upgrade_worker"
    worker_id: int


class SubscribeEvents(_Request):
    """Receive events (as ``processing`` answers) until the connection closes."""

    type: Literal["subscribe_events"] = "subscribe_events"


QueryRequests: TypeAlias = (
    Status
    | ListWorkers
    | ListFrontends
    | ListListeners
    | QueryClusterById
    | QueryClustersByDomain
    | QueryClustersHashes
    | QueryCertificates
    | QueryCertificatesFromWorkers
    | CountRequests
    | QueryState
    | QueryMetrics
    | QueryHealthChecks
    | ListBackends
)
"""The requests that read the routing state or the daemon's condition and change nothing."""

LifecycleRequests: TypeAlias = (
    ConfigureMetrics
    | Logging
    | SaveState
    | LoadState
    | ReloadConfiguration
    | SoftStop
    | HardStop
    | UpgradeMain
    | UpgradeWorker
    | SubscribeEvents
)
"""The requests that act on the daemon itself (its processes, files, logs, metrics and event
subscriptions) rather than on the routing state."""

QueryRequest = Annotated[QueryRequests, Field(discriminator="type")]
LifecycleRequest = Annotated[LifecycleRequests, Field(discriminator="type")]

Request = Annotated[
    StateRequests | Batch | QueryRequests | LifecycleRequests, Field(discriminator="type")
]
"""Any request."""

REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request, config=ConfigDict(defer_build=True))
STATE_REQUEST_ADAPTER: TypeAdapter[StateRequest] = TypeAdapter(
    StateRequest, config=ConfigDict(defer_build=True)
)
"""Validators of any request and of the state requests, built on first use."""


def members(family: Any) -> tuple[type[_Request], ...]:
    """The request models of a family (a union of models, annotated or not), in order."""
    if get_origin(family) is Annotated:
        family = get_args(family)[0]
    return get_args(family) or (family,)


def type_names(family: Any) -> frozenset[str]:
    """The ``type`` values of a family's models, read from their ``type`` Literal."""
    return frozenset(
        get_args(model.model_fields["type"].annotation)[0] for model in members(family)
    )


STATE_TYPES = type_names(StateRequests)
"""Types of the requests a batch may hold."""

MUTATING_TYPES = STATE_TYPES | type_names(Batch)
"""Types of the requests that change the routing state."""

QUERY_TYPES = type_names(QueryRequests)
"""Types of the requests that only read."""

LIFECYCLE_TYPES = type_names(LifecycleRequests)
"""Types of the requests that act on the daemon itself."""

_STATE_MODELS = members(StateRequests)
_MUTATING_MODELS: tuple[type[_Request], ...] = (*_STATE_MODELS, Batch)
_QUERY_MODELS = members(QueryRequests)


def is_state_request(request: object) -> TypeIs[StateRequests]:
    """True for a state request (narrows the type for mypy, both ways)."""
    return isinstance(request, _STATE_MODELS)


def is_mutating(request: object) -> TypeIs[StateRequests | Batch]:
    """True for a request that changes the routing state: a state request or a batch (narrows
    the type for mypy, both ways: a dispatcher handles the other families case by case)."""
    return isinstance(request, _MUTATING_MODELS)


def is_query(request: object) -> TypeIs[QueryRequests]:
    """True for a query (narrows the type for mypy, both ways)."""
    return isinstance(request, _QUERY_MODELS)


def parse_request(data: str | bytes | dict[str, Any]) -> Request:
    """Validate a request given as a dict or JSON text; raises ``pydantic.ValidationError``."""
    if isinstance(data, dict):
        return REQUEST_ADAPTER.validate_python(data)
    return REQUEST_ADAPTER.validate_json(data)


__all__ = [
    "LIFECYCLE_TYPES",
    "MUTATING_TYPES",
    "QUERY_TYPES",
    "REQUEST_ADAPTER",
    "STATE_REQUEST_ADAPTER",
    "STATE_TYPES",
    "LifecycleRequest",
    "LifecycleRequests",
    "MutatingRequest",
    "QueryRequest",
    "QueryRequests",
    "Request",
    "StateRequest",
    "StateRequests",
    "is_mutating",
    "is_query",
    "is_state_request",
    "members",
    "parse_request",
    "type_names",
]
__all__ += [model.__name__ for model in members(Request)]  # every request model
