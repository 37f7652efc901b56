"""``ConfigState``: the routing state as a value, the one place where requests get their meaning.

The main process and every worker run this same ``apply``, so they cannot disagree about what a
request does. The rules (reference §D.2, with the deliberate deviations of the design):

* nothing may reference something absent: a frontend needs its listener (of the right protocol)
  and its cluster, a backend its cluster, a certificate an HTTPS listener at its address;
* a listener is not removed while frontends or certificates sit on it;
* removing a cluster removes its frontends and backends (no orphans);
* ``add_cluster`` and ``add_backend`` are upserts; adding an existing frontend, listener or
  TCP binding is an :class:`AlreadyExists` error; removing something absent is :class:`NotFound`;
* a refused request leaves the state exactly as it was; a ``batch`` is all-or-nothing.

``version`` counts accepted changes; a ``batch`` with ``expected_version`` is refused when the
state moved on since the plan was computed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Never, NoReturn

from pydantic import ValidationError

from . import requests as rq
from .certificates import CertificateAndKey, CertificateError, CertificateSummary, inspect
from .grammar import normalize_hostname_rule
from .models import (
    Backend,
    Cluster,
    FrontendKey,
    HealthCheck,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    TcpFrontend,
    TcpListenerConfig,
)
from .responses import (
    CertificatesContent,
    ClusterHashes,
    ClusterInformation,
    ClustersContent,
    ErrorKind,
    FrontendList,
    HealthChecksContent,
    ListenersList,
    RequestCounts,
    Response,
    ResponseContent,
    StateSnapshot,
)

__all__ = [
    "AlreadyExists",
    "ConfigState",
    "InUse",
    "InvalidRequest",
    "NotFound",
    "StateError",
    "VersionMismatch",
    "failure_from",
]

_MISSING: Any = object()


class StateError(Exception):
    """A request the state refuses. The state is unchanged.

    ``kind`` says why, for programs (what a failure answer carries); ``index`` is, for a
    refused batch, the 0-based position of the request at fault (``None`` otherwise, and for
    a batch refused as a whole).
    """

    kind: ErrorKind = ErrorKind.INVALID

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


class AlreadyExists(StateError):
    kind = ErrorKind.ALREADY_EXISTS


class NotFound(StateError):
    kind = ErrorKind.NOT_FOUND


class InvalidRequest(StateError):
    kind = ErrorKind.INVALID


class InUse(InvalidRequest):
    """The object to remove is still used by others."""

    kind = ErrorKind.IN_USE


class VersionMismatch(StateError):
    kind = ErrorKind.VERSION_MISMATCH


def failure_from(
    error: StateError, *, prefix: str = "", content: ResponseContent | None = None
) -> Response:
    """The ``failure`` answer to a refused request: ``prefix`` then the error's message, with
    its kind and (for a batch) the index of the request at fault."""
    return Response.failure(
        prefix + error.message, kind=error.kind, index=error.index, content=content
    )


def normalize_fingerprint(fingerprint: str) -> str:
    """Fingerprints are lowercase hex; colons (``AB:CD:…``) are accepted and removed."""
    value = fingerprint.replace(":", "").strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidRequest(f"{fingerprint!r} is not a SHA-256 fingerprint (64 hex digits)")
    return value


_Ref = tuple[str, Any]  # ("http"|"https", FrontendKey) or ("tcp", address)


class ConfigState:
    """The routing state. ``ConfigState()`` is empty."""

    __slots__ = (
        "_cluster_refs",
        "_frontends_at",
        "_journal",
        "_keys",
        "backends",
        "certificates",
        "clusters",
        "http_frontends",
        "http_listeners",
        "https_frontends",
        "https_listeners",
        "request_counts",
        "tcp_frontends",
        "tcp_listeners",
        "version",
    )

    def __init__(self, *, version: int = 0) -> None:
        self.http_listeners: dict[str, HttpListenerConfig] = {}
        self.https_listeners: dict[str, HttpsListenerConfig] = {}
        self.tcp_listeners: dict[str, TcpListenerConfig] = {}
        self.clusters: dict[str, Cluster] = {}
        self.http_frontends: dict[FrontendKey, HttpFrontend] = {}
        self.https_frontends: dict[FrontendKey, HttpFrontend] = {}
        self.tcp_frontends: dict[str, TcpFrontend] = {}  # by listener address
        self.backends: dict[str, dict[str, Backend]] = {}  # cluster_id → backend_id → backend
        self.certificates: dict[str, dict[str, CertificateSummary]] = {}  # address → fp → cert
        self._keys: dict[tuple[str, str], str] = {}  # (address, fingerprint) → PEM private key
        self.request_counts: Counter[str] = Counter()
        self.version = version
        # indexes kept in step with the maps above (derived data)
        self._cluster_refs: dict[str, dict[_Ref, None]] = {}
        self._frontends_at: dict[str, dict[_Ref, None]] = {}
        self._journal: list[tuple[MutableMapping[Any, Any], Any, Any]] | None = None

    # ------------------------------------------------------------------ value semantics

    def _content(self) -> tuple[Any, ...]:
        return (
            self.http_listeners,
            self.https_listeners,
            self.tcp_listeners,
            self.clusters,
            self.http_frontends,
            self.https_frontends,
            self.tcp_frontends,
            {c: b for c, b in self.backends.items() if b},
            {a: c for a, c in self.certificates.items() if c},
        )

    def __eq__(self, other: object) -> bool:
        """Equal routing content. Versions, request counts and private keys are not compared
        (a state read back from ``query_state`` has no keys and equals the daemon's)."""
        if not isinstance(other, ConfigState):
            return NotImplemented
        return self._content() == other._content()

    __hash__ = None  # type: ignore[assignment]

    def summary(self) -> str:
        """``3 listeners, 2 clusters, 4 frontends, 5 backends, 1 certificates``."""
        frontends = len(self.http_frontends) + len(self.https_frontends) + len(self.tcp_frontends)
        return (
            f"{len(self.listeners())} listeners, {len(self.clusters)} clusters, "
            f"{frontends} frontends, {sum(len(b) for b in self.backends.values())} backends, "
            f"{sum(len(c) for c in self.certificates.values())} certificates"
        )

    def __repr__(self) -> str:
        return f"<ConfigState v{self.version}: {self.summary()}>"

    def copy(self) -> ConfigState:
        """An independent copy (models are immutable and shared)."""
        new = ConfigState(version=self.version)
        new.http_listeners = dict(self.http_listeners)
        new.https_listeners = dict(self.https_listeners)
        new.tcp_listeners = dict(self.tcp_listeners)
        new.clusters = dict(self.clusters)
        new.http_frontends = dict(self.http_frontends)
        new.https_frontends = dict(self.https_frontends)
        new.tcp_frontends = dict(self.tcp_frontends)
        new.backends = {c: dict(b) for c, b in self.backends.items()}
        new.certificates = {a: dict(c) for a, c in self.certificates.items()}
        new._keys = dict(self._keys)
        new.request_counts = Counter(self.request_counts)
        new._cluster_refs = {c: dict(r) for c, r in self._cluster_refs.items()}
        new._frontends_at = {a: dict(r) for a, r in self._frontends_at.items()}
        return new

    def listeners(self) -> dict[str, HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig]:
        """Every listener by address (addresses are unique across protocols)."""
        found: dict[str, HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig] = {}
        found.update(self.http_listeners)
        found.update(self.https_listeners)
        found.update(self.tcp_listeners)
        return found

    def listener_type(self, address: str) -> ListenerType | None:
        if address in self.http_listeners:
            return ListenerType.HTTP
        if address in self.https_listeners:
            return ListenerType.HTTPS
        if address in self.tcp_listeners:
            return ListenerType.TCP
        return None

    def private_key(self, address: str, fingerprint: str) -> str | None:
        """The PEM key of a certificate, when this state holds it (not after ``query_state``)."""
        return self._keys.get((address, fingerprint))

    def certificate_and_key(self, address: str, fingerprint: str) -> CertificateAndKey:
        """Rebuild the request form of a stored certificate (needs the private key)."""
        entry = self.certificates[address][fingerprint]
        key = self._keys.get((address, fingerprint))
        if key is None:
            raise InvalidRequest(
                f"certificate {fingerprint[:16]} on {address} has no private key in this state "
                "(states read from query_state carry none)"
            )
        return CertificateAndKey(
            certificate=entry.certificate,
            certificate_chain=list(entry.certificate_chain),
            key=key,
            versions=list(entry.versions),
            names=list(entry.names),
        )

    # ------------------------------------------------------------------ journalled primitives

    def _put(self, mapping: MutableMapping[Any, Any], key: Any, value: Any) -> None:
        if self._journal is not None:
            self._journal.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def _pop(self, mapping: MutableMapping[Any, Any], key: Any) -> None:
        if self._journal is not None:
            self._journal.append((mapping, key, mapping[key]))
        del mapping[key]

    def _rollback(self, journal: list[tuple[MutableMapping[Any, Any], Any, Any]]) -> None:
        for mapping, key, old in reversed(journal):
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old

    def _ref_add(self, index: dict[str, dict[_Ref, None]], owner: str, ref: _Ref) -> None:
        refs = index.get(owner)
        if refs is None:
            refs = {}
            self._put(index, owner, refs)
        self._put(refs, ref, None)

    def _ref_remove(self, index: dict[str, dict[_Ref, None]], owner: str, ref: _Ref) -> None:
        refs = index[owner]
        self._pop(refs, ref)
        if not refs:
            self._pop(index, owner)

    # ------------------------------------------------------------------ apply

    def apply(self, request: rq.Request) -> None:
        """Apply a request, or raise :class:`StateError` and leave the state unchanged.

        Queries and lifecycle verbs are accepted and change nothing. Each accepted mutating
        request (a batch counts once) increments ``version``.
        """
        if isinstance(request, rq.Batch):
            self._apply_batch(request)
            return
        if not rq.is_state_request(request):
            return
        kind = request.type
        journal: list[tuple[MutableMapping[Any, Any], Any, Any]] = []
        outer = self._journal
        self._journal = journal
        try:
            self._dispatch(request)
        except BaseException:
            self._journal = outer
            self._rollback(journal)
            raise
        self._journal = outer
        if outer is not None:
            outer.extend(journal)
        elif journal:  # a request that changed nothing does not move the version
            self.version += 1
        self.request_counts[kind] += 1

    def _apply_batch(self, batch: rq.Batch) -> None:
        if self._journal is not None:
            raise InvalidRequest("a batch cannot contain another batch")
        if batch.expected_version is not None and batch.expected_version != self.version:
            raise VersionMismatch(
                f"the state changed since the plan was made (expected version "
                f"{batch.expected_version}, now {self.version}): nothing was applied, plan again"
            )
        journal: list[tuple[MutableMapping[Any, Any], Any, Any]] = []
        counts = Counter(self.request_counts)
        self._journal = journal
        index = 0
        try:
            for request in batch.requests:
                self._dispatch(request)
                self.request_counts[request.type] += 1
                index += 1
        except StateError as error:
            self._rollback(journal)
            self.request_counts = counts
            raise type(error)(
                f"request {index + 1} of {len(batch.requests)} ({batch.requests[index].describe()})"
                f" failed: {error.message}; nothing was applied",
                index=index,
            ) from error
        except BaseException:
            self._rollback(journal)
            self.request_counts = counts
            raise
        finally:
            self._journal = None
        if journal:
            self.version += 1
        self.request_counts["batch"] += 1

    # Complexity: one exhaustive match over the state request types (mypy checks each is here).
    def _dispatch(self, request: rq.StateRequests | rq.Batch) -> None:  # noqa: C901, PLR0912
        """Apply one state request (journalled by the caller). Every state request type has
        its case: mypy names this match when a type is added to the family."""
        match request:
            case rq.AddHttpListener():
                self._add_listener(request.listener, self.http_listeners)
            case rq.AddHttpsListener():
                self._add_listener(request.listener, self.https_listeners)
            case rq.AddTcpListener():
                self._add_listener(request.listener, self.tcp_listeners)
            case rq.UpdateHttpListener():
                self._update_listener(request, ListenerType.HTTP)
            case rq.UpdateHttpsListener():
                self._update_listener(request, ListenerType.HTTPS)
            case rq.UpdateTcpListener():
                self._update_listener(request, ListenerType.TCP)
            case rq.RemoveListener():
                self._remove_listener(request)
            case rq.ActivateListener():
                self._set_active(request.address, request.proxy, True)
            case rq.DeactivateListener():
                self._set_active(request.address, request.proxy, False)
            case rq.AddCluster():
                self._add_cluster(request)
            case rq.RemoveCluster():
                self._remove_cluster(request)
            case rq.SetHealthCheck():
                self._set_health_check(request.cluster_id, request.health_check)
            case rq.RemoveHealthCheck():
                self._set_health_check(request.cluster_id, None)
            case rq.AddHttpFrontend():
                self._add_http_frontend(request)
            case rq.RemoveHttpFrontend():
                self._remove_http_frontend_from(request.frontend, self.http_frontends, "http")
            case rq.AddHttpsFrontend():
                self._add_https_frontend(request)
            case rq.RemoveHttpsFrontend():
                self._remove_http_frontend_from(request.frontend, self.https_frontends, "https")
            case rq.AddTcpFrontend():
                self._add_tcp_frontend(request)
            case rq.RemoveTcpFrontend():
                self._remove_tcp_frontend(request)
            case rq.AddBackend():
                self._add_backend(request)
            case rq.RemoveBackend():
                self._remove_backend(request)
            case rq.AddCertificate():
                self._add_certificate(request)
            case rq.ReplaceCertificate():
                self._replace_certificate(request)
            case rq.RemoveCertificate():
                self._remove_certificate(request)
            case rq.Batch():
                raise InvalidRequest("a batch cannot contain another batch")
            case _:
                _not_a_state_request(request)

    # --- listeners

    def _add_listener(
        self,
        listener: HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig,
        table: dict[str, Any],
    ) -> None:
        existing = self.listener_type(listener.address)
        if existing is not None:
            raise AlreadyExists(f"a {existing.value} listener already exists at {listener.address}")
        self._put(table, listener.address, listener)

    def _table(self, proxy: ListenerType) -> dict[str, Any]:
        tables: dict[ListenerType, dict[str, Any]] = {
            ListenerType.HTTP: self.http_listeners,
            ListenerType.HTTPS: self.https_listeners,
            ListenerType.TCP: self.tcp_listeners,
        }
        return tables[proxy]

    def _update_listener(self, request: rq._UpdateListener, proxy: ListenerType) -> None:
        table = self._table(proxy)
        current = table.get(request.address)
        if current is None:
            raise NotFound(f"no {proxy.value} listener at {request.address}")
        patch = request.patch()
        if not patch:
            return
        data = current.model_dump()
        data.update(patch)
        try:
            updated = type(current).model_validate(data)
        except ValidationError as error:
            raise InvalidRequest(_validation_message(error)) from None
        if updated != current:
            self._put(table, request.address, updated)

    def _remove_listener(self, request: rq.RemoveListener) -> None:
        table = self._table(request.proxy)
        if request.address not in table:
            raise NotFound(f"no {request.proxy.value} listener at {request.address}")
        frontends = len(self._frontends_at.get(request.address, ()))
        certificates = len(self.certificates.get(request.address, ()))
        if frontends or certificates:
            raise InUse(
                f"the {request.proxy.value} listener at {request.address} still has "
                f"{frontends} frontend(s) and {certificates} certificate(s): remove them first"
            )
        self._pop(table, request.address)

    def _set_active(self, address: str, proxy: ListenerType, active: bool) -> None:
        table = self._table(proxy)
        current = table.get(address)
        if current is None:
            raise NotFound(f"no {proxy.value} listener at {address}")
        if current.active != active:
            self._put(table, address, current.model_copy(update={"active": active}))

    # --- clusters

    def _add_cluster(self, request: rq.AddCluster) -> None:
        self._put(self.clusters, request.cluster.cluster_id, request.cluster)

    def _remove_cluster(self, request: rq.RemoveCluster) -> None:
        cluster_id = request.cluster_id
        if cluster_id not in self.clusters:
            raise NotFound(f"no cluster {cluster_id!r}")
        for ref in list(self._cluster_refs.get(cluster_id, ())):
            kind, key = ref
            if kind == "http":
                self._drop_http_frontend(self.http_frontends, "http", key)
            elif kind == "https":
                self._drop_http_frontend(self.https_frontends, "https", key)
            else:
                self._drop_tcp_frontend(key)
        if cluster_id in self.backends:
            self._pop(self.backends, cluster_id)
        self._pop(self.clusters, cluster_id)

    def _set_health_check(self, cluster_id: str, health_check: HealthCheck | None) -> None:
        cluster = self.clusters.get(cluster_id)
        if cluster is None:
            raise NotFound(f"no cluster {cluster_id!r}")
        if health_check is None and cluster.health_check is None:
            raise NotFound(f"cluster {cluster_id!r} has no health check")
        self._put(
            self.clusters, cluster_id, cluster.model_copy(update={"health_check": health_check})
        )

    def health_checks(self, cluster_id: str | None = None) -> dict[str, HealthCheck]:
        """The health check of each cluster that has one (of ``cluster_id`` only, when given:
        ``NotFound`` if there is no such cluster)."""
        if cluster_id is not None and cluster_id not in self.clusters:
            raise NotFound(f"no cluster {cluster_id!r}")
        return {
            cid: cluster.health_check
            for cid, cluster in sorted(self.clusters.items())
            if cluster.health_check is not None and cluster_id in (None, cid)
        }

    # --- frontends

    def _check_cluster(self, cluster_id: str | None, what: str) -> None:
        if cluster_id is not None and cluster_id not in self.clusters:
            raise NotFound(f"{what}: no cluster {cluster_id!r} (add the cluster first)")

    def _add_http_frontend_to(
        self,
        frontend: HttpFrontend,
        table: dict[FrontendKey, HttpFrontend],
        listeners: dict[str, Any],
        kind: str,
    ) -> None:
        key = frontend.key
        cluster_id = frontend.cluster_id
        if (
            frontend.address not in listeners
            or (cluster_id is not None and cluster_id not in self.clusters)
            or key in table
        ):
            what = f"{kind} frontend {frontend.describe()}"
            if frontend.address not in listeners:
                other = self.listener_type(frontend.address)
                hint = f" (the listener there is {other.value})" if other else ""
                raise NotFound(f"{what}: no {kind.upper()} listener at {frontend.address}{hint}")
            self._check_cluster(cluster_id, what)
            raise AlreadyExists(f"{what} already exists")
        self._put(table, key, frontend)
        if cluster_id is not None:
            self._ref_add(self._cluster_refs, cluster_id, (kind, key))
        self._ref_add(self._frontends_at, frontend.address, (kind, key))

    def _drop_http_frontend(
        self, table: dict[FrontendKey, HttpFrontend], kind: str, key: FrontendKey
    ) -> None:
        frontend = table[key]
        self._pop(table, key)
        if frontend.cluster_id is not None:
            self._ref_remove(self._cluster_refs, frontend.cluster_id, (kind, key))
        self._ref_remove(self._frontends_at, frontend.address, (kind, key))

    def _remove_http_frontend_from(
        self, frontend: HttpFrontend, table: dict[FrontendKey, HttpFrontend], kind: str
    ) -> None:
        key = frontend.key
        if key not in table:
            raise NotFound(f"no {kind} frontend {frontend.describe()}")
        self._drop_http_frontend(table, kind, key)

    def _add_http_frontend(self, request: rq.AddHttpFrontend) -> None:
        if request.frontend.hsts is not None:
            raise InvalidRequest(
                f"http frontend {request.frontend.describe()}: hsts is only valid on https "
                "frontends (RFC 6797 §7.2: browsers ignore it over plain HTTP)"
            )
        self._add_http_frontend_to(
            request.frontend, self.http_frontends, self.http_listeners, "http"
        )

    def _add_https_frontend(self, request: rq.AddHttpsFrontend) -> None:
        self._add_http_frontend_to(
            request.frontend, self.https_frontends, self.https_listeners, "https"
        )

    def _add_tcp_frontend(self, request: rq.AddTcpFrontend) -> None:
        frontend = request.frontend
        what = f"tcp frontend {frontend.address} -> {frontend.cluster_id}"
        if frontend.address not in self.tcp_listeners:
            other = self.listener_type(frontend.address)
            hint = f" (the listener there is {other.value})" if other else ""
            raise NotFound(f"{what}: no TCP listener at {frontend.address}{hint}")
        self._check_cluster(frontend.cluster_id, what)
        existing = self.tcp_frontends.get(frontend.address)
        if existing is not None:
            raise AlreadyExists(
                f"{what}: the TCP listener at {frontend.address} is already bound to cluster "
                f"{existing.cluster_id!r} (remove that frontend first)"
            )
        self._put(self.tcp_frontends, frontend.address, frontend)
        self._ref_add(self._cluster_refs, frontend.cluster_id, ("tcp", frontend.address))
        self._ref_add(self._frontends_at, frontend.address, ("tcp", frontend.address))

    def _drop_tcp_frontend(self, address: str) -> None:
        frontend = self.tcp_frontends[address]
        self._pop(self.tcp_frontends, address)
        self._ref_remove(self._cluster_refs, frontend.cluster_id, ("tcp", address))
        self._ref_remove(self._frontends_at, address, ("tcp", address))

    def _remove_tcp_frontend(self, request: rq.RemoveTcpFrontend) -> None:
        frontend = request.frontend
        existing = self.tcp_frontends.get(frontend.address)
        if existing is None or existing.cluster_id != frontend.cluster_id:
            raise NotFound(
                f"no tcp frontend of cluster {frontend.cluster_id!r} at {frontend.address}"
            )
        self._drop_tcp_frontend(frontend.address)

    # --- backends

    def _add_backend(self, request: rq.AddBackend) -> None:
        backend = request.backend
        self._check_cluster(backend.cluster_id, f"backend {backend.backend_id}")
        backends = self.backends.get(backend.cluster_id)
        if backends is None:
            backends = {}
            self._put(self.backends, backend.cluster_id, backends)
        self._put(backends, backend.backend_id, backend)

    def _remove_backend(self, request: rq.RemoveBackend) -> None:
        backends = self.backends.get(request.cluster_id, {})
        backend = backends.get(request.backend_id)
        if backend is None or (request.address is not None and backend.address != request.address):
            at = f" at {request.address}" if request.address else ""
            raise NotFound(
                f"no backend {request.backend_id!r}{at} in cluster {request.cluster_id!r}"
            )
        self._pop(backends, request.backend_id)
        if not backends:
            self._pop(self.backends, request.cluster_id)

    # --- certificates

    def _store_certificate(
        self, address: str, certificate: CertificateAndKey, expired_at: int | None
    ) -> str:
        try:
            info = inspect(certificate)
        except CertificateError as error:
            raise InvalidRequest(f"certificate refused: {error}") from None
        entry = CertificateSummary(
            address=address,
            fingerprint=info.fingerprint,
            names=list(info.names),
            not_after=info.not_after,
            expired_at=expired_at,
            versions=list(certificate.versions),
            certificate=certificate.certificate,
            certificate_chain=list(certificate.certificate_chain),
        )
        certificates = self.certificates.get(address)
        if certificates is None:
            certificates = {}
            self._put(self.certificates, address, certificates)
        if certificates.get(info.fingerprint) != entry:
            self._put(certificates, info.fingerprint, entry)
        self._put(self._keys, (address, info.fingerprint), certificate.key)
        return info.fingerprint

    def _need_https_listener(self, address: str, what: str) -> None:
        if address not in self.https_listeners:
            other = self.listener_type(address)
            hint = f" (the listener there is {other.value})" if other else ""
            raise NotFound(f"{what}: no HTTPS listener at {address}{hint}")

    def _add_certificate(self, request: rq.AddCertificate) -> None:
        self._need_https_listener(request.address, "add_certificate")
        known = self.certificates.get(request.address, {})
        if known:
            try:
                from .certificates import fingerprint_of

                if fingerprint_of(request.certificate.certificate) in known:
                    return  # adding a known certificate again changes nothing
            except CertificateError:
                pass  # reported by _store_certificate
        self._store_certificate(request.address, request.certificate, request.expired_at)

    def _replace_certificate(self, request: rq.ReplaceCertificate) -> None:
        self._need_https_listener(request.address, "replace_certificate")
        old = normalize_fingerprint(request.old_fingerprint)
        certificates = self.certificates.get(request.address, {})
        if old not in certificates:
            raise NotFound(f"no certificate {old[:16]}… on {request.address}")
        new = self._store_certificate(
            request.address, request.new_certificate, request.new_expired_at
        )
        if new != old:
            self._drop_certificate(request.address, old)

    def _drop_certificate(self, address: str, fingerprint: str) -> None:
        certificates = self.certificates[address]
        self._pop(certificates, fingerprint)
        self._pop(self._keys, (address, fingerprint))
        if not certificates:
            self._pop(self.certificates, address)

    def _remove_certificate(self, request: rq.RemoveCertificate) -> None:
        fingerprint = normalize_fingerprint(request.fingerprint)
        if fingerprint not in self.certificates.get(request.address, {}):
            raise NotFound(f"no certificate {fingerprint[:16]}… on {request.address}")
        self._drop_certificate(request.address, fingerprint)

    # ------------------------------------------------------------------ invariants

    def problems(self) -> list[str]:
        """Broken references (an empty list for every state reachable through ``apply``)."""
        found: list[str] = []
        addresses: Counter[str] = Counter()
        for table in (self.http_listeners, self.https_listeners, self.tcp_listeners):
            addresses.update(table.keys())
        found.extend(f"several listeners at {a}" for a, n in addresses.items() if n > 1)
        found.extend(self._frontend_problems())
        found.extend(self._backend_problems())
        for address, certificates in self.certificates.items():
            if address not in self.https_listeners:
                found.append(f"certificates at {address} have no HTTPS listener")
            for fingerprint, entry in certificates.items():
                if entry.fingerprint != fingerprint or entry.address != address:
                    found.append(f"certificate {fingerprint} stored under a wrong key")
        return found

    def _frontend_problems(self) -> Iterator[str]:
        frontend_tables: tuple[tuple[dict[FrontendKey, HttpFrontend], dict[str, Any], str], ...] = (
            (self.http_frontends, self.http_listeners, "http"),
            (self.https_frontends, self.https_listeners, "https"),
        )
        for frontends, listeners, kind in frontend_tables:
            for key, frontend in frontends.items():
                if key != frontend.key:
                    yield f"{kind} frontend stored under a wrong key {key}"
                if frontend.address not in listeners:
                    yield f"{kind} frontend {frontend.describe()} has no listener"
                if frontend.cluster_id is not None and frontend.cluster_id not in self.clusters:
                    yield f"{kind} frontend {frontend.describe()} has no cluster"
        for address, tcp in self.tcp_frontends.items():
            if address not in self.tcp_listeners:
                yield f"tcp frontend {address} has no listener"
            if tcp.cluster_id not in self.clusters:
                yield f"tcp frontend {address} has no cluster"

    def _backend_problems(self) -> Iterator[str]:
        for cluster_id, backends in self.backends.items():
            if cluster_id not in self.clusters:
                yield f"backends of missing cluster {cluster_id}"
            for backend_id, backend in backends.items():
                if backend.backend_id != backend_id or backend.cluster_id != cluster_id:
                    yield f"backend {cluster_id}/{backend_id} stored under a wrong key"

    # ------------------------------------------------------------------ requests out

    def generate_requests(self) -> list[rq.StateRequest]:
        """Requests that rebuild this state from an empty one, in dependency order:
        listeners (inactive), clusters, certificates, frontends, backends, then activations."""
        return ConfigState().diff(self)

    def diff(self, target: ConfigState) -> list[rq.StateRequest]:
        """Requests that turn this state into ``target``; every prefix, applied to this state,
        is a valid state. Deterministic. See :mod:`sozu_config.diff` for the ordering."""
        from .diff import diff_states

        return diff_states(self, target)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> StateSnapshot:
        """The whole state without private keys, in a stable order."""
        return StateSnapshot(
            http_listeners=[self.http_listeners[a] for a in sorted(self.http_listeners)],
            https_listeners=[self.https_listeners[a] for a in sorted(self.https_listeners)],
            tcp_listeners=[self.tcp_listeners[a] for a in sorted(self.tcp_listeners)],
            clusters=[self.clusters[c] for c in sorted(self.clusters)],
            http_frontends=[self.http_frontends[k] for k in sorted(self.http_frontends)],
            https_frontends=[self.https_frontends[k] for k in sorted(self.https_frontends)],
            tcp_frontends=[self.tcp_frontends[a] for a in sorted(self.tcp_frontends)],
            backends=[
                b for c in sorted(self.backends) for _, b in sorted(self.backends[c].items())
            ],
            certificates=[
                entry
                for a in sorted(self.certificates)
                for _, entry in sorted(self.certificates[a].items())
            ],
        )

    @classmethod
    def from_snapshot(cls, snapshot: StateSnapshot, *, version: int = 0) -> ConfigState:
        """Rebuild a state from a snapshot (no private keys: it can be diffed, not replayed)."""
        state = cls(version=version)
        for listener in snapshot.http_listeners:
            state.http_listeners[listener.address] = listener
        for https in snapshot.https_listeners:
            state.https_listeners[https.address] = https
        for tcp in snapshot.tcp_listeners:
            state.tcp_listeners[tcp.address] = tcp
        for cluster in snapshot.clusters:
            state.clusters[cluster.cluster_id] = cluster
        for kind, frontends, table in (
            ("http", snapshot.http_frontends, state.http_frontends),
            ("https", snapshot.https_frontends, state.https_frontends),
        ):
            for frontend in frontends:
                table[frontend.key] = frontend
                if frontend.cluster_id is not None:
                    state._ref_add(state._cluster_refs, frontend.cluster_id, (kind, frontend.key))
                state._ref_add(state._frontends_at, frontend.address, (kind, frontend.key))
        for tcp_frontend in snapshot.tcp_frontends:
            state.tcp_frontends[tcp_frontend.address] = tcp_frontend
            ref = ("tcp", tcp_frontend.address)
            state._ref_add(state._cluster_refs, tcp_frontend.cluster_id, ref)
            state._ref_add(state._frontends_at, tcp_frontend.address, ref)
        for backend in snapshot.backends:
            state.backends.setdefault(backend.cluster_id, {})[backend.backend_id] = backend
        for certificate in snapshot.certificates:
            state.certificates.setdefault(certificate.address, {})[certificate.fingerprint] = (
                certificate
            )
        problems = state.problems()
        if problems:
            raise InvalidRequest("inconsistent snapshot: " + "; ".join(problems[:5]))
        return state

    # ------------------------------------------------------------------ queries

    def cluster_information(self, cluster_id: str) -> ClusterInformation:
        refs = self._cluster_refs.get(cluster_id, {})
        return ClusterInformation(
            cluster=self.clusters.get(cluster_id),
            http_frontends=sorted(
                (self.http_frontends[k] for kind, k in refs if kind == "http"), key=_frontend_key
            ),
            https_frontends=sorted(
                (self.https_frontends[k] for kind, k in refs if kind == "https"), key=_frontend_key
            ),
            tcp_frontends=sorted(
                (self.tcp_frontends[a] for kind, a in refs if kind == "tcp"),
                key=lambda f: f.address,
            ),
            backends=[b for _, b in sorted(self.backends.get(cluster_id, {}).items())],
        )

    def clusters_by_domain(
        self, hostname: str, path: str | None = None
    ) -> list[ClusterInformation]:
        """Clusters with an HTTP/HTTPS frontend on exactly ``hostname`` (and ``path``)."""
        found: dict[str, None] = {}
        try:
            hostname = normalize_hostname_rule(hostname)
        except ValueError:
            return []
        for frontend in _chain(self.http_frontends.values(), self.https_frontends.values()):
            if frontend.hostname != hostname or frontend.cluster_id is None:
                continue
            if path is not None and frontend.path.value != path:
                continue
            found[frontend.cluster_id] = None
        return [self.cluster_information(c) for c in sorted(found)]

    def cluster_hashes(self) -> dict[str, str]:
        """A stable digest per cluster of its settings, backends and frontends (changes when any
        of them changes; equal across processes and restarts)."""
        hashes: dict[str, str] = {}
        for cluster_id in sorted(self.clusters):
            info = self.cluster_information(cluster_id).model_dump(mode="json")
            canonical = json.dumps(info, sort_keys=True, separators=(",", ":"))
            digest = hashlib.blake2b(canonical.encode(), digest_size=8)
            hashes[cluster_id] = digest.hexdigest()
        return hashes

    def frontend_list(
        self,
        *,
        http: bool = False,
        https: bool = False,
        tcp: bool = False,
        domain: str | None = None,
    ) -> FrontendList:
        every = not (http or https or tcp)

        def keep(frontend: HttpFrontend) -> bool:
            return domain is None or domain in frontend.hostname

        return FrontendList(
            http=[f for _, f in sorted(self.http_frontends.items()) if keep(f)]
            if every or http
            else [],
            https=[f for _, f in sorted(self.https_frontends.items()) if keep(f)]
            if every or https
            else [],
            tcp=[f for _, f in sorted(self.tcp_frontends.items())]
            if (every or tcp) and domain is None
            else [],
        )

    def listeners_list(self) -> ListenersList:
        return ListenersList(
            http=[self.http_listeners[a] for a in sorted(self.http_listeners)],
            https=[self.https_listeners[a] for a in sorted(self.https_listeners)],
            tcp=[self.tcp_listeners[a] for a in sorted(self.tcp_listeners)],
        )

    def certificate_list(
        self, *, domain: str | None = None, fingerprint: str | None = None
    ) -> list[CertificateSummary]:
        wanted = normalize_fingerprint(fingerprint) if fingerprint else None
        return [
            entry
            for address in sorted(self.certificates)
            for fp, entry in sorted(self.certificates[address].items())
            if (wanted is None or fp == wanted) and (domain is None or domain in entry.names)
        ]

    # Complexity: one case per query the state answers alone.
    def answer_query(self, request: rq.Request) -> ResponseContent | None:  # noqa: PLR0911
        """The content answering a query computed from the state alone (None if it is not one)."""
        match request:
            case rq.ListFrontends():
                return self.frontend_list(
                    http=request.http, https=request.https, tcp=request.tcp, domain=request.domain
                )
            case rq.ListListeners():
                return self.listeners_list()
            case rq.QueryClusterById():
                return ClustersContent(clusters=[self.cluster_information(request.cluster_id)])
            case rq.QueryClustersByDomain():
                return ClustersContent(
                    clusters=self.clusters_by_domain(request.hostname, request.path)
                )
            case rq.QueryClustersHashes():
                return ClusterHashes(hashes=self.cluster_hashes())
            case rq.QueryCertificates():
                found = self.certificate_list(
                    domain=request.domain, fingerprint=request.fingerprint
                )
                return CertificatesContent(certificates=found)
            case rq.CountRequests():
                return RequestCounts(counts=dict(sorted(self.request_counts.items())))
            case rq.QueryHealthChecks():
                return HealthChecksContent(health_checks=self.health_checks(request.cluster_id))
        return None

    # ------------------------------------------------------------------ state files

    def to_jsonl(self) -> Iterator[str]:
        """The state file: one JSON request per line, as :meth:`generate_requests` orders them."""
        for request in self.generate_requests():
            yield request.model_dump_json()


def _frontend_key(frontend: HttpFrontend) -> FrontendKey:
    return frontend.key


def _chain(*iterables: Iterable[HttpFrontend]) -> Iterator[HttpFrontend]:
    for iterable in iterables:
        yield from iterable


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def _not_a_state_request(request: Never) -> NoReturn:
    """Refuse what is not a state request (only reachable by building models without
    validation). Typed ``Never``: mypy reports the match above when a case is missing."""
    raise InvalidRequest(f"{getattr(request, 'type', request)} does not change the state")
