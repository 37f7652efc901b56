"""The ordered list of requests that turns one state into another.

Ordering rule: every prefix of the list, applied to the source state, is a valid state, and
traffic keeps flowing — a route never points at something absent, a certificate is not removed
while a frontend may still need it, a listener is not removed while frontends sit on it. The
list is built in phases:

0. listeners whose address changes protocol (e.g. http → https) are cleared and removed first
   (their frontends and certificates cannot survive the change anyway);
1. listeners added (inactive) and changed (``update_*_listener`` with the fields that differ);
2. clusters added or changed (``add_cluster`` is an upsert);
3. certificates: a certificate that takes the place of another for the same names is one
   ``replace_certificate`` (a rotation never leaves the names uncovered); others are added;
4. frontends added; a changed frontend is removed and added back, next to each other;
5. backends added or changed (``add_backend`` is an upsert);
6. listeners activated (new active ones, and inactive ones becoming active);
7. then the removals, in the reverse dependency order: listeners deactivated, backends,
   frontends, certificates, clusters, listeners.

Within a phase, objects are taken in sorted order, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import requests as rq
from .certificates import CertificateAndKey, CertificateSummary
from .models import (
    Backend,
    Cluster,
    FrontendKey,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    TcpFrontend,
    TcpListenerConfig,
)

__all__ = ["StateTables", "diff_states"]


class StateTables(Protocol):
    """What a diff reads of a state (:class:`~sozu_config.state.ConfigState` has it all)."""

    @property
    def http_listeners(self) -> Mapping[str, HttpListenerConfig]: ...
    @property
    def https_listeners(self) -> Mapping[str, HttpsListenerConfig]: ...
    @property
    def tcp_listeners(self) -> Mapping[str, TcpListenerConfig]: ...
    @property
    def clusters(self) -> Mapping[str, Cluster]: ...
    @property
    def http_frontends(self) -> Mapping[FrontendKey, HttpFrontend]: ...
    @property
    def https_frontends(self) -> Mapping[FrontendKey, HttpFrontend]: ...
    @property
    def tcp_frontends(self) -> Mapping[str, TcpFrontend]: ...
    @property
    def backends(self) -> Mapping[str, Mapping[str, Backend]]: ...
    @property
    def certificates(self) -> Mapping[str, Mapping[str, CertificateSummary]]: ...

    def certificate_and_key(self, address: str, fingerprint: str) -> CertificateAndKey: ...


_ADD_LISTENER: dict[ListenerType, Any] = {
    ListenerType.HTTP: rq.AddHttpListener,
    ListenerType.HTTPS: rq.AddHttpsListener,
    ListenerType.TCP: rq.AddTcpListener,
}
_UPDATE_LISTENER: dict[ListenerType, Any] = {
    ListenerType.HTTP: rq.UpdateHttpListener,
    ListenerType.HTTPS: rq.UpdateHttpsListener,
    ListenerType.TCP: rq.UpdateTcpListener,
}
_ORDER = (ListenerType.HTTP, ListenerType.HTTPS, ListenerType.TCP)

Listener = HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig


def _tables(state: StateTables) -> dict[ListenerType, Mapping[str, Any]]:
    return {
        ListenerType.HTTP: state.http_listeners,
        ListenerType.HTTPS: state.https_listeners,
        ListenerType.TCP: state.tcp_listeners,
    }


def _listener_changes(old: Listener, new: Listener) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in type(new).model_fields:
        if name in ("address", "active"):
            continue
        value = getattr(new, name)
        if getattr(old, name) != value:
            changes[name] = "" if value is None else value  # "" clears an optional setting
    return changes


def _certificate_request(
    target: StateTables, address: str, fingerprint: str
) -> tuple[CertificateAndKey, int | None]:
    entry = target.certificates[address][fingerprint]
    return target.certificate_and_key(address, fingerprint), entry.expired_at


def _replace(
    target: StateTables, address: str, old_fingerprint: str, new_fingerprint: str
) -> rq.ReplaceCertificate:
    certificate, expired_at = _certificate_request(target, address, new_fingerprint)
    return rq.ReplaceCertificate(
        address=address,
        new_certificate=certificate,
        old_fingerprint=old_fingerprint,
        new_expired_at=expired_at,
    )


def _pair_rotations(
    removed: list[CertificateSummary], added: list[CertificateSummary]
) -> list[tuple[CertificateSummary, CertificateSummary]]:
    """Pair each added certificate with a removed one it replaces: same names first, then any
    overlap of names. Deterministic (inputs are sorted by fingerprint)."""
    pairs: list[tuple[CertificateSummary, CertificateSummary]] = []
    free = list(removed)
    pending: list[CertificateSummary] = []
    for new in added:
        match = next((old for old in free if sorted(old.names) == sorted(new.names)), None)
        if match is None:
            pending.append(new)
            continue
        free.remove(match)
        pairs.append((match, new))
    for new in pending:
        names = set(new.names)
        match = next((old for old in free if names & set(old.names)), None)
        if match is not None:
            free.remove(match)
            pairs.append((match, new))
    return pairs


def diff_states(source: StateTables, target: StateTables) -> list[rq.StateRequest]:
    """See the module documentation for the order of the result."""
    diff = _Diff(source, target)
    diff.clear_switching_listeners()  # phase 0
    diff.listeners()  # phase 1
    diff.clusters()  # phase 2
    diff.certificates()  # phase 3
    diff.http_frontends()  # phase 4
    diff.tcp_frontends()
    diff.backends()  # phase 5
    return diff.finish()  # phase 6: activations, phase 7: removals


@dataclass
class _Diff:
    """One computation of :func:`diff_states`: the requests emitted so far (``out``) and the
    activations and removals held back until every addition is out."""

    source: StateTables
    target: StateTables
    out: list[rq.StateRequest] = field(default_factory=list)
    cleared: set[str] = field(default_factory=set)
    """Addresses whose listener changes protocol: emptied and removed in phase 0."""
    activations: list[rq.StateRequest] = field(default_factory=list)
    deactivations: list[rq.StateRequest] = field(default_factory=list)
    listener_removals: list[rq.StateRequest] = field(default_factory=list)
    certificate_removals: list[rq.StateRequest] = field(default_factory=list)
    frontend_removals: list[rq.StateRequest] = field(default_factory=list)
    tcp_removals: list[rq.StateRequest] = field(default_factory=list)
    backend_removals: list[rq.StateRequest] = field(default_factory=list)
    src_tables: dict[ListenerType, Mapping[str, Any]] = field(init=False)
    dst_tables: dict[ListenerType, Mapping[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.src_tables, self.dst_tables = _tables(self.source), _tables(self.target)

    def clear_switching_listeners(self) -> None:
        """Addresses whose listener protocol changes are cleared first."""
        source, out = self.source, self.out
        src_type = {a: t for t in _ORDER for a in self.src_tables[t]}
        dst_type = {a: t for t in _ORDER for a in self.dst_tables[t]}
        switching = sorted(a for a, t in src_type.items() if dst_type.get(a, t) != t)
        self.cleared = set(switching)
        for address in switching:
            kind = src_type[address]
            listener = self.src_tables[kind][address]
            if listener.active:
                out.append(rq.DeactivateListener(address=address, proxy=kind))
            if address in source.tcp_frontends:
                out.append(rq.RemoveTcpFrontend(frontend=source.tcp_frontends[address]))
            for key in sorted(k for k in source.https_frontends if k[0] == address):
                out.append(rq.RemoveHttpsFrontend(frontend=source.https_frontends[key]))
            for key in sorted(k for k in source.http_frontends if k[0] == address):
                out.append(rq.RemoveHttpFrontend(frontend=source.http_frontends[key]))
            for fingerprint in sorted(source.certificates.get(address, {})):
                out.append(rq.RemoveCertificate(address=address, fingerprint=fingerprint))
            out.append(rq.RemoveListener(address=address, proxy=kind))

    def listeners(self) -> None:
        """Listeners added (inactive) or changed; (de)activations and removals held back."""
        for kind in _ORDER:
            src, dst = self.src_tables[kind], self.dst_tables[kind]
            for address in sorted(dst):
                new = dst[address]
                old = src.get(address)
                if old is None:
                    listener = new.model_copy(update={"active": False})
                    self.out.append(_ADD_LISTENER[kind](listener=listener))
                    if new.active:
                        self.activations.append(rq.ActivateListener(address=address, proxy=kind))
                    continue
                changes = _listener_changes(old, new)
                if changes:
                    self.out.append(_UPDATE_LISTENER[kind](address=address, **changes))
                if new.active and not old.active:
                    self.activations.append(rq.ActivateListener(address=address, proxy=kind))
                elif old.active and not new.active:
                    self.deactivations.append(rq.DeactivateListener(address=address, proxy=kind))
            for address in sorted(src):
                if address in dst or address in self.cleared:
                    continue
                if src[address].active:
                    self.deactivations.append(rq.DeactivateListener(address=address, proxy=kind))
                self.listener_removals.append(rq.RemoveListener(address=address, proxy=kind))

    def clusters(self) -> None:
        source, target = self.source, self.target
        for cluster_id in sorted(target.clusters):
            cluster = target.clusters[cluster_id]
            if source.clusters.get(cluster_id) != cluster:
                self.out.append(rq.AddCluster(cluster=cluster))

    def certificates(self) -> None:
        source, target, out = self.source, self.target, self.out
        for address in sorted(set(source.certificates) | set(target.certificates)):
            old_certs = {} if address in self.cleared else source.certificates.get(address, {})
            new_certs = target.certificates.get(address, {})
            removed = [old_certs[f] for f in sorted(old_certs) if f not in new_certs]
            added = [new_certs[f] for f in sorted(new_certs) if f not in old_certs]
            pairs = _pair_rotations(removed, added)
            paired_new = {new.fingerprint for _, new in pairs}
            paired_old = {old.fingerprint for old, _ in pairs}
            # plain additions first: a rotation to a certificate with fewer names must find the
            # other names already covered
            for new in added:
                if new.fingerprint not in paired_new:
                    certificate, expired_at = _certificate_request(target, address, new.fingerprint)
                    out.append(
                        rq.AddCertificate(
                            address=address, certificate=certificate, expired_at=expired_at
                        )
                    )
            for fingerprint in sorted(set(old_certs) & set(new_certs)):
                if old_certs[fingerprint] != new_certs[fingerprint]:  # names/versions/expiry
                    out.append(_replace(target, address, fingerprint, fingerprint))
            out.extend(
                _replace(target, address, old.fingerprint, new.fingerprint) for old, new in pairs
            )
            self.certificate_removals.extend(
                rq.RemoveCertificate(address=address, fingerprint=old.fingerprint)
                for old in removed
                if old.fingerprint not in paired_old
            )

    def http_frontends(self) -> None:
        """Changed frontends: remove + add, side by side."""
        source, target, cleared = self.source, self.target, self.cleared
        for src_map, dst_map, add, remove in (
            (
                source.http_frontends,
                target.http_frontends,
                rq.AddHttpFrontend,
                rq.RemoveHttpFrontend,
            ),
            (
                source.https_frontends,
                target.https_frontends,
                rq.AddHttpsFrontend,
                rq.RemoveHttpsFrontend,
            ),
        ):
            for key in sorted(dst_map):
                new_frontend: HttpFrontend = dst_map[key]
                old_frontend = None if key[0] in cleared else src_map.get(key)
                if old_frontend == new_frontend:
                    continue
                if old_frontend is not None:
                    self.out.append(remove(frontend=old_frontend))
                self.out.append(add(frontend=new_frontend))
            self.frontend_removals.extend(
                remove(frontend=src_map[key])
                for key in sorted(src_map)
                if key not in dst_map and key[0] not in cleared
            )

    def tcp_frontends(self) -> None:
        source, target, cleared = self.source, self.target, self.cleared
        for address in sorted(target.tcp_frontends):
            new_tcp = target.tcp_frontends[address]
            old_tcp = None if address in cleared else source.tcp_frontends.get(address)
            if old_tcp == new_tcp:
                continue
            if old_tcp is not None:
                self.out.append(rq.RemoveTcpFrontend(frontend=old_tcp))
            self.out.append(rq.AddTcpFrontend(frontend=new_tcp))
        self.tcp_removals = [
            rq.RemoveTcpFrontend(frontend=source.tcp_frontends[a])
            for a in sorted(source.tcp_frontends)
            if a not in target.tcp_frontends and a not in cleared
        ]

    def backends(self) -> None:
        source, target = self.source, self.target
        for cluster_id in sorted(set(source.backends) | set(target.backends)):
            old_backends = source.backends.get(cluster_id, {})
            new_backends = target.backends.get(cluster_id, {})
            for backend_id in sorted(new_backends):
                backend = new_backends[backend_id]
                if old_backends.get(backend_id) != backend:
                    self.out.append(rq.AddBackend(backend=backend))
            self.backend_removals.extend(
                rq.RemoveBackend(
                    cluster_id=cluster_id, backend_id=b, address=old_backends[b].address
                )
                for b in sorted(old_backends)
                if b not in new_backends
            )

    def finish(self) -> list[rq.StateRequest]:
        """Activations, then removals in reverse dependency order."""
        out = self.out
        out.extend(self.activations)
        out.extend(self.deactivations)
        out.extend(self.backend_removals)
        out.extend(self.tcp_removals)
        out.extend(reversed_kinds(self.frontend_removals))
        out.extend(self.certificate_removals)
        out.extend(
            rq.RemoveCluster(cluster_id=c)
            for c in sorted(self.source.clusters)
            if c not in self.target.clusters
        )
        out.extend(self.listener_removals)
        return out


def reversed_kinds(removals: list[rq.StateRequest]) -> list[rq.StateRequest]:
    """HTTPS frontend removals before HTTP ones (the reverse of the order they are added in)."""
    https = [r for r in removals if r.type == "remove_https_frontend"]
    http = [r for r in removals if r.type != "remove_https_frontend"]
    return https + http
