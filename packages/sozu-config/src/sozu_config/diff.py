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
    out: list[rq.StateRequest] = []
    src_tables, dst_tables = _tables(source), _tables(target)

    # addresses whose listener protocol changes: clear them first (phase 0)
    src_type = {a: t for t in _ORDER for a in src_tables[t]}
    dst_type = {a: t for t in _ORDER for a in dst_tables[t]}
    switching = sorted(a for a, t in src_type.items() if dst_type.get(a, t) != t)
    cleared: set[str] = set(switching)
    for address in switching:
        kind = src_type[address]
        listener = src_tables[kind][address]
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

    # phase 1: listeners added (inactive) or changed
    activations: list[rq.StateRequest] = []
    deactivations: list[rq.StateRequest] = []
    listener_removals: list[rq.StateRequest] = []
    for kind in _ORDER:
        src, dst = src_tables[kind], dst_tables[kind]
        for address in sorted(dst):
            new = dst[address]
            old = src.get(address)
            if old is None:
                out.append(_ADD_LISTENER[kind](listener=new.model_copy(update={"active": False})))
                if new.active:
                    activations.append(rq.ActivateListener(address=address, proxy=kind))
                continue
            changes = _listener_changes(old, new)
            if changes:
                out.append(_UPDATE_LISTENER[kind](address=address, **changes))
            if new.active and not old.active:
                activations.append(rq.ActivateListener(address=address, proxy=kind))
            elif old.active and not new.active:
                deactivations.append(rq.DeactivateListener(address=address, proxy=kind))
        for address in sorted(src):
            if address in dst or address in cleared:
                continue
            if src[address].active:
                deactivations.append(rq.DeactivateListener(address=address, proxy=kind))
            listener_removals.append(rq.RemoveListener(address=address, proxy=kind))

    # phase 2: clusters
    for cluster_id in sorted(target.clusters):
        cluster = target.clusters[cluster_id]
        if source.clusters.get(cluster_id) != cluster:
            out.append(rq.AddCluster(cluster=cluster))

    # phase 3: certificates
    certificate_removals: list[rq.StateRequest] = []
    for address in sorted(set(source.certificates) | set(target.certificates)):
        old_certs = {} if address in cleared else source.certificates.get(address, {})
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
            if old_certs[fingerprint] != new_certs[fingerprint]:  # names/versions/expiry changed
                out.append(_replace(target, address, fingerprint, fingerprint))
        out.extend(
            _replace(target, address, old.fingerprint, new.fingerprint) for old, new in pairs
        )
        certificate_removals.extend(
            rq.RemoveCertificate(address=address, fingerprint=old.fingerprint)
            for old in removed
            if old.fingerprint not in paired_old
        )

    # phase 4: frontends (changed ones: remove + add, side by side)
    frontend_removals: list[rq.StateRequest] = []
    for src_map, dst_map, add, remove in (
        (source.http_frontends, target.http_frontends, rq.AddHttpFrontend, rq.RemoveHttpFrontend),
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
                out.append(remove(frontend=old_frontend))
            out.append(add(frontend=new_frontend))
        frontend_removals.extend(
            remove(frontend=src_map[key])
            for key in sorted(src_map)
            if key not in dst_map and key[0] not in cleared
        )
    for address in sorted(target.tcp_frontends):
        new_tcp = target.tcp_frontends[address]
        old_tcp = None if address in cleared else source.tcp_frontends.get(address)
        if old_tcp == new_tcp:
            continue
        if old_tcp is not None:
            out.append(rq.RemoveTcpFrontend(frontend=old_tcp))
        out.append(rq.AddTcpFrontend(frontend=new_tcp))
    tcp_removals = [
        rq.RemoveTcpFrontend(frontend=source.tcp_frontends[a])
        for a in sorted(source.tcp_frontends)
        if a not in target.tcp_frontends and a not in cleared
    ]

    # phase 5: backends
    backend_removals: list[rq.StateRequest] = []
    for cluster_id in sorted(set(source.backends) | set(target.backends)):
        old_backends = source.backends.get(cluster_id, {})
        new_backends = target.backends.get(cluster_id, {})
        for backend_id in sorted(new_backends):
            backend = new_backends[backend_id]
            if old_backends.get(backend_id) != backend:
                out.append(rq.AddBackend(backend=backend))
        backend_removals.extend(
            rq.RemoveBackend(cluster_id=cluster_id, backend_id=b, address=old_backends[b].address)
            for b in sorted(old_backends)
            if b not in new_backends
        )

    # phase 6: activations, then phase 7: removals in reverse dependency order
    out.extend(activations)
    out.extend(deactivations)
    out.extend(backend_removals)
    out.extend(tcp_removals)
    out.extend(reversed_kinds(frontend_removals))
    out.extend(certificate_removals)
    out.extend(
        rq.RemoveCluster(cluster_id=c) for c in sorted(source.clusters) if c not in target.clusters
    )
    out.extend(listener_removals)
    return out


def reversed_kinds(removals: list[rq.StateRequest]) -> list[rq.StateRequest]:
    """HTTPS frontend removals before HTTP ones (the reverse of the order they are added in)."""
    https = [r for r in removals if r.type == "remove_https_frontend"]
    http = [r for r in removals if r.type != "remove_https_frontend"]
    return https + http
