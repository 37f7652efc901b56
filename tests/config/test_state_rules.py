"""The dispatch rules of ``ConfigState.apply``, its queries, snapshots and targeted diffs.

Each test builds small states by hand and checks one rule: what is accepted, what is refused
with which error, and that a refused request leaves the state exactly as it was (content,
version, request counts and private keys).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from support.certs import cached_certificate

from sozu_config import requests as rq
from sozu_config.certificates import CertificateAndKey, fingerprint_of
from sozu_config.models import (
    Backend,
    Cluster,
    Hsts,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    PathRule,
    TcpFrontend,
    TcpListenerConfig,
)
from sozu_config.responses import (
    CertificatesContent,
    ClusterHashes,
    ClustersContent,
    FrontendList,
    ListenersList,
    RequestCounts,
)
from sozu_config.state import (
    AlreadyExists,
    ConfigState,
    InvalidRequest,
    NotFound,
    StateError,
    VersionMismatch,
)

HTTP = "127.0.0.1:8080"
HTTPS = "127.0.0.1:8443"
TCP = "127.0.0.1:9000"
SPARE = "127.0.0.1:7000"


# --------------------------------------------------------------------------- building blocks


def certificate(*names: str, generation: int = 0, **fields: Any) -> CertificateAndKey:
    """A certificate for ``names``; another ``generation`` is a renewal (other fingerprint)."""
    made = cached_certificate(*names, generation=generation)
    return CertificateAndKey(certificate=made.cert_pem, key=made.key_pem, **fields)


def fingerprint(cert: CertificateAndKey) -> str:
    return fingerprint_of(cert.certificate)


def frontend(
    hostname: str = "a.test",
    cluster_id: str | None = "c1",
    address: str = HTTP,
    **fields: Any,
) -> HttpFrontend:
    return HttpFrontend(address=address, hostname=hostname, cluster_id=cluster_id, **fields)


def backend(backend_id: str, cluster_id: str = "c1", address: str = "10.0.0.1:80") -> Backend:
    return Backend(cluster_id=cluster_id, backend_id=backend_id, address=address)


def listeners_only() -> ConfigState:
    """One listener of each protocol (HTTP active), no cluster."""
    state = ConfigState()
    state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP, active=True)))
    state.apply(rq.AddHttpsListener(listener=HttpsListenerConfig(address=HTTPS)))
    state.apply(rq.AddTcpListener(listener=TcpListenerConfig(address=TCP)))
    return state


def populated() -> ConfigState:
    """Every kind of object: three listeners, two clusters, frontends of every kind (one deny
    rule), backends and a certificate."""
    state = listeners_only()
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c2", sticky_session=True)))
    state.apply(rq.AddCertificate(address=HTTPS, certificate=certificate("a.test")))
    state.apply(rq.AddHttpFrontend(frontend=frontend()))
    state.apply(
        rq.AddHttpFrontend(frontend=frontend(path=PathRule(kind="equals", value="/health")))
    )
    state.apply(rq.AddHttpFrontend(frontend=frontend("deny.test", cluster_id=None)))
    state.apply(rq.AddHttpFrontend(frontend=frontend("b.test", cluster_id="c2")))
    state.apply(rq.AddHttpsFrontend(frontend=frontend(address=HTTPS)))
    state.apply(rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")))
    state.apply(rq.AddBackend(backend=backend("b1")))
    state.apply(rq.AddBackend(backend=backend("b2", address="10.0.0.2:80")))
    state.apply(rq.AddBackend(backend=backend("b1", cluster_id="c2", address="10.0.1.1:80")))
    return state


def observable(state: ConfigState) -> tuple[Any, ...]:
    """Everything a refused request must leave untouched, private keys included."""
    keys = {
        (address, fp): state.private_key(address, fp)
        for address, certificates in state.certificates.items()
        for fp in certificates
    }
    return (
        state.snapshot().model_dump_json(),
        state.version,
        dict(state.request_counts),
        keys,
    )


def assert_refused(
    state: ConfigState, request: rq.Request, error: type[StateError], match: str
) -> StateError:
    before = observable(state)
    reference = state.copy()
    with pytest.raises(error, match=match) as raised:
        state.apply(request)
    assert observable(state) == before
    assert state == reference
    assert state.problems() == []
    return raised.value


# --------------------------------------------------------------------------- listeners


def test_listeners_are_created_inactive_unless_active_is_given() -> None:
    state = listeners_only()
    assert set(state.http_listeners) == {HTTP}
    assert set(state.https_listeners) == {HTTPS}
    assert set(state.tcp_listeners) == {TCP}
    assert state.http_listeners[HTTP].active is True
    assert state.https_listeners[HTTPS].active is False
    assert state.tcp_listeners[TCP].active is False
    assert state.listener_type(HTTPS) is ListenerType.HTTPS
    assert state.listener_type(SPARE) is None


@pytest.mark.parametrize(
    "request_",
    [
        rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP)),
        rq.AddHttpsListener(listener=HttpsListenerConfig(address=HTTP)),
        rq.AddTcpListener(listener=TcpListenerConfig(address=HTTP)),
        rq.AddHttpListener(listener=HttpListenerConfig(address=TCP)),
        rq.AddTcpListener(listener=TcpListenerConfig(address=HTTPS)),
    ],
    ids=["http-on-http", "https-on-http", "tcp-on-http", "http-on-tcp", "tcp-on-https"],
)
def test_a_listener_address_is_unique_across_protocols(request_: rq.Request) -> None:
    state = listeners_only()
    assert_refused(state, request_, AlreadyExists, "listener already exists at")


def test_two_spellings_of_one_address_are_the_same_listener() -> None:
    state = ConfigState()
    state.apply(rq.AddTcpListener(listener=TcpListenerConfig(address="[::1]:9000")))
    duplicate = rq.AddHttpListener(listener=HttpListenerConfig(address="[0:0::1]:09000"))
    assert_refused(state, duplicate, AlreadyExists, r"tcp listener already exists at \[::1\]:9000")


def test_update_listener_changes_only_the_given_fields() -> None:
    state = listeners_only()
    before = state.http_listeners[HTTP]
    state.apply(rq.UpdateHttpListener(address=HTTP, front_timeout=5, sticky_name="LB"))
    after = state.http_listeners[HTTP]
    assert after.front_timeout == 5
    assert after.sticky_name == "LB"
    assert after.model_copy(update={"front_timeout": 60, "sticky_name": "SOZUBALANCEID"}) == before
    assert after.active is True  # activation is not a patchable field

    state.apply(
        rq.UpdateHttpsListener(address=HTTPS, strict_sni_binding=False, default_sni="A.Test")
    )
    https = state.https_listeners[HTTPS]
    assert https.strict_sni_binding is False
    assert https.default_sni == "a.test"  # validated and normalised like at creation
    assert https.alpn_protocols == ["h2", "http/1.1"]

    state.apply(rq.UpdateTcpListener(address=TCP, public_address="10.1.1.1:9000"))
    assert state.tcp_listeners[TCP].public_address == "10.1.1.1:9000"
    assert state.problems() == []


def test_update_listener_keeps_null_fields_and_clears_with_an_empty_string() -> None:
    state = listeners_only()
    state.apply(rq.UpdateHttpListener(address=HTTP, public_address="10.1.1.1:80"))
    state.apply(rq.UpdateHttpListener(address=HTTP, public_address=None, front_timeout=4))
    assert state.http_listeners[HTTP].public_address == "10.1.1.1:80"
    assert state.http_listeners[HTTP].front_timeout == 4
    state.apply(rq.UpdateHttpListener(address=HTTP, public_address=""))
    assert state.http_listeners[HTTP].public_address is None
    state.apply(rq.UpdateHttpsListener(address=HTTPS, default_sni="a.test"))
    state.apply(rq.UpdateHttpsListener(address=HTTPS, default_sni=""))
    assert state.https_listeners[HTTPS].default_sni is None


def test_update_listener_without_fields_changes_nothing() -> None:
    state = listeners_only()
    reference = state.copy()
    state.apply(rq.UpdateHttpListener(address=HTTP))
    assert state == reference
    assert rq.UpdateHttpListener(address=HTTP).patch() == {}


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (rq.UpdateHttpListener(address=HTTP, sticky_name="bad name"), "sticky_name"),
        (rq.UpdateHttpListener(address=HTTP, sozu_id_header=""), "sozu_id_header"),
        (rq.UpdateHttpListener(address=HTTP, answers={999: "x"}), "999"),
        (rq.UpdateHttpsListener(address=HTTPS, alpn_protocols=["h3"]), "h3"),
        (rq.UpdateHttpsListener(address=HTTPS, cipher_list=["RC4-MD5"]), "RC4-MD5"),
        (rq.UpdateHttpsListener(address=HTTPS, tls_versions=[]), "tls_versions"),
        (rq.UpdateHttpsListener(address=HTTPS, send_tls13_tickets=99), "send_tls13_tickets"),
        (rq.UpdateHttpsListener(address=HTTPS, default_sni="not a name"), "default_sni"),
    ],
    ids=["sticky", "id-header", "answer-status", "alpn-h3", "cipher", "versions", "tickets", "sni"],
)
def test_update_listener_validation_error_leaves_the_state_unchanged(
    request_: rq.Request, match: str
) -> None:
    state = populated()
    assert_refused(state, request_, InvalidRequest, match)


def test_update_listener_refuses_public_address_together_with_expect_proxy() -> None:
    state = listeners_only()
    state.apply(rq.UpdateTcpListener(address=TCP, expect_proxy=True))
    request = rq.UpdateTcpListener(address=TCP, public_address="10.0.0.9:9000")
    assert_refused(state, request, InvalidRequest, "public_address and expect_proxy")
    # both in one patch are accepted when the result is consistent
    state.apply(rq.UpdateTcpListener(address=TCP, expect_proxy=False, public_address="10.0.0.9:1"))
    assert state.tcp_listeners[TCP].public_address == "10.0.0.9:1"


@pytest.mark.parametrize(
    "request_",
    [
        rq.UpdateHttpListener(address=SPARE, front_timeout=5),
        rq.UpdateHttpListener(address=HTTPS, front_timeout=5),
        rq.UpdateHttpsListener(address=HTTP, front_timeout=5),
        rq.UpdateTcpListener(address=HTTP, front_timeout=5),
    ],
    ids=["absent", "http-patch-on-https", "https-patch-on-http", "tcp-patch-on-http"],
)
def test_update_listener_needs_a_listener_of_that_protocol(request_: rq.Request) -> None:
    state = listeners_only()
    assert_refused(state, request_, NotFound, "listener at")


@pytest.mark.parametrize(
    ("dependent", "proxy", "address"),
    [
        (rq.AddHttpFrontend(frontend=frontend()), ListenerType.HTTP, HTTP),
        (rq.AddHttpsFrontend(frontend=frontend(address=HTTPS)), ListenerType.HTTPS, HTTPS),
        (
            rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")),
            ListenerType.TCP,
            TCP,
        ),
        (
            rq.AddCertificate(address=HTTPS, certificate=certificate("a.test")),
            ListenerType.HTTPS,
            HTTPS,
        ),
        (rq.AddHttpFrontend(frontend=frontend(cluster_id=None)), ListenerType.HTTP, HTTP),
    ],
    ids=["http-frontend", "https-frontend", "tcp-frontend", "certificate", "deny-frontend"],
)
def test_remove_listener_is_refused_while_something_sits_on_it(
    dependent: rq.Request, proxy: ListenerType, address: str
) -> None:
    state = listeners_only()
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    state.apply(dependent)
    assert_refused(
        state,
        rq.RemoveListener(address=address, proxy=proxy),
        InvalidRequest,
        "remove them first",
    )


def test_remove_listener_succeeds_once_its_dependents_are_gone() -> None:
    state = populated()
    for key in list(state.http_frontends):
        state.apply(rq.RemoveHttpFrontend(frontend=state.http_frontends[key]))
    state.apply(rq.RemoveListener(address=HTTP, proxy=ListenerType.HTTP))
    assert HTTP not in state.http_listeners
    state.apply(rq.RemoveCertificate(address=HTTPS, fingerprint=fingerprint(certificate("a.test"))))
    state.apply(rq.RemoveHttpsFrontend(frontend=frontend(address=HTTPS)))
    state.apply(rq.RemoveListener(address=HTTPS, proxy=ListenerType.HTTPS))
    state.apply(rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")))
    state.apply(rq.RemoveListener(address=TCP, proxy=ListenerType.TCP))
    assert state.listeners() == {}
    assert state.problems() == []


@pytest.mark.parametrize(
    "request_",
    [
        rq.RemoveListener(address=SPARE, proxy=ListenerType.HTTP),
        rq.RemoveListener(address=HTTP, proxy=ListenerType.TCP),
        rq.ActivateListener(address=SPARE, proxy=ListenerType.HTTP),
        rq.ActivateListener(address=HTTPS, proxy=ListenerType.HTTP),
        rq.DeactivateListener(address=SPARE, proxy=ListenerType.TCP),
        rq.DeactivateListener(address=TCP, proxy=ListenerType.HTTPS),
    ],
    ids=["remove", "remove-wrong-protocol", "activate", "activate-wrong", "deactivate", "de-wrong"],
)
def test_listener_verbs_on_an_absent_listener_are_not_found(request_: rq.Request) -> None:
    state = listeners_only()
    assert_refused(state, request_, NotFound, "listener at")


def test_activate_and_deactivate_set_active() -> None:
    state = listeners_only()
    state.apply(rq.ActivateListener(address=TCP, proxy=ListenerType.TCP))
    assert state.tcp_listeners[TCP].active is True
    state.apply(rq.ActivateListener(address=TCP, proxy=ListenerType.TCP))  # idempotent
    assert state.tcp_listeners[TCP].active is True
    state.apply(rq.DeactivateListener(address=HTTP, proxy=ListenerType.HTTP))
    assert state.http_listeners[HTTP].active is False
    # the rest of the listener is untouched
    assert state.http_listeners[HTTP] == HttpListenerConfig(address=HTTP)


# --------------------------------------------------------------------------- clusters


def test_add_cluster_is_an_upsert() -> None:
    state = populated()
    changed = Cluster(cluster_id="c1", load_balancing="random", https_redirect=True)
    state.apply(rq.AddCluster(cluster=changed))
    assert state.clusters["c1"] == changed
    # its frontends and backends stay in place
    assert len(state.cluster_information("c1").http_frontends) == 2
    assert set(state.backends["c1"]) == {"b1", "b2"}
    assert state.problems() == []


def test_remove_cluster_removes_its_frontends_of_every_kind_and_its_backends() -> None:
    state = populated()
    state.apply(rq.RemoveCluster(cluster_id="c1"))
    assert "c1" not in state.clusters
    assert "c1" not in state.backends
    assert all(f.cluster_id != "c1" for f in state.http_frontends.values())
    assert state.https_frontends == {}
    assert state.tcp_frontends == {}
    # the deny rule and the other cluster are untouched
    assert {f.hostname for f in state.http_frontends.values()} == {"deny.test", "b.test"}
    assert set(state.backends["c2"]) == {"b1"}
    assert state.problems() == []
    # the indexes followed: the TCP listener is free again, and a new c1 starts with nothing
    state.apply(rq.RemoveListener(address=TCP, proxy=ListenerType.TCP))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    info = state.cluster_information("c1")
    assert (info.http_frontends, info.https_frontends, info.backends) == ([], [], [])


def test_remove_unknown_cluster_is_not_found() -> None:
    state = populated()
    assert_refused(state, rq.RemoveCluster(cluster_id="nope"), NotFound, "no cluster 'nope'")


# --------------------------------------------------------------------------- frontends


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (rq.AddHttpFrontend(frontend=frontend(address=HTTPS)), r"listener there is https"),
        (rq.AddHttpsFrontend(frontend=frontend(address=HTTP)), r"listener there is http"),
        (rq.AddHttpFrontend(frontend=frontend(address=TCP)), r"listener there is tcp"),
        (rq.AddHttpFrontend(frontend=frontend(address=SPARE)), r"no HTTP listener at"),
        (rq.AddTcpFrontend(frontend=TcpFrontend(address=HTTP, cluster_id="c1")), "is http"),
        (rq.AddTcpFrontend(frontend=TcpFrontend(address=SPARE, cluster_id="c1")), "no TCP"),
    ],
    ids=["http-on-https", "https-on-http", "http-on-tcp", "http-nowhere", "tcp-on-http", "tcp"],
)
def test_a_frontend_needs_a_listener_of_its_protocol(request_: rq.Request, match: str) -> None:
    state = listeners_only()
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    assert_refused(state, request_, NotFound, match)


@pytest.mark.parametrize(
    "request_",
    [
        rq.AddHttpFrontend(frontend=frontend(cluster_id="ghost")),
        rq.AddHttpsFrontend(frontend=frontend(address=HTTPS, cluster_id="ghost")),
        rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="ghost")),
    ],
    ids=["http", "https", "tcp"],
)
def test_a_frontend_needs_its_cluster(request_: rq.Request) -> None:
    state = listeners_only()
    assert_refused(state, request_, NotFound, "no cluster 'ghost'")


def test_a_deny_frontend_needs_no_cluster() -> None:
    state = listeners_only()
    deny = frontend("deny.test", cluster_id=None)
    state.apply(rq.AddHttpFrontend(frontend=deny))
    state.apply(rq.AddHttpsFrontend(frontend=deny.model_copy(update={"address": HTTPS})))
    assert state.http_frontends[deny.key] == deny
    assert len(state.https_frontends) == 1
    assert state.problems() == []


@pytest.mark.parametrize(
    "duplicate",
    [
        frontend(),
        frontend(cluster_id="c2"),
        frontend(cluster_id=None),
        frontend(position="pre", tags={"x": "y"}),
        frontend("A.TEST."),
    ],
    ids=["identical", "other-cluster", "deny", "other-position-and-tags", "other-spelling"],
)
def test_a_frontend_key_exists_once(duplicate: HttpFrontend) -> None:
    state = listeners_only()
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c2")))
    state.apply(rq.AddHttpFrontend(frontend=frontend()))
    assert_refused(state, rq.AddHttpFrontend(frontend=duplicate), AlreadyExists, "already exists")


def test_method_and_path_are_part_of_the_frontend_key() -> None:
    state = listeners_only()
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    variants = [
        frontend(),
        frontend(method="GET"),
        frontend(path=PathRule(kind="prefix", value="/api")),
        frontend(path=PathRule(kind="equals", value="/api")),
        frontend(path=PathRule(kind="regex", value="/api")),
    ]
    for variant in variants:
        state.apply(rq.AddHttpFrontend(frontend=variant))
    assert len(state.http_frontends) == len(variants)
    assert state.http_frontends[variants[3].key].path.kind.value == "equals"


def test_frontends_are_removed_by_key_whatever_their_cluster_and_tags() -> None:
    state = populated()
    equals = frontend(path=PathRule(kind="equals", value="/health"))
    assert equals.key in state.http_frontends
    # cluster_id, tags and position are not part of the key
    state.apply(
        rq.RemoveHttpFrontend(
            frontend=equals.model_copy(update={"cluster_id": "c2", "tags": {"t": "1"}})
        )
    )
    assert equals.key not in state.http_frontends
    state.apply(rq.RemoveHttpFrontend(frontend=frontend("deny.test", cluster_id="c1")))
    state.apply(rq.RemoveHttpsFrontend(frontend=frontend(address=HTTPS, cluster_id=None)))
    assert state.https_frontends == {}
    assert state.problems() == []
    # the cluster index followed: c1 now has only its prefix HTTP frontend
    info = state.cluster_information("c1")
    assert [f.path.value for f in info.http_frontends] == [""]
    assert info.https_frontends == []


@pytest.mark.parametrize(
    "request_",
    [
        rq.RemoveHttpFrontend(frontend=frontend(method="GET")),
        rq.RemoveHttpFrontend(frontend=frontend(path=PathRule(kind="prefix", value="/health"))),
        rq.RemoveHttpFrontend(frontend=frontend(path=PathRule(kind="equals", value="/"))),
        rq.RemoveHttpFrontend(frontend=frontend("z.test")),
        rq.RemoveHttpsFrontend(frontend=frontend()),
        rq.RemoveHttpFrontend(frontend=frontend(address=HTTPS)),
    ],
    ids=["method", "path-kind", "path-value", "hostname", "wrong-protocol", "wrong-table"],
)
def test_removing_an_absent_frontend_is_not_found(request_: rq.Request) -> None:
    state = populated()
    assert_refused(state, request_, NotFound, "no https? frontend")


def test_a_tcp_listener_is_bound_to_one_cluster() -> None:
    state = populated()
    for cluster_id in ("c1", "c2"):
        assert_refused(
            state,
            rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id=cluster_id)),
            AlreadyExists,
            "already bound to cluster 'c1'",
        )
    assert_refused(
        state,
        rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c2")),
        NotFound,
        "no tcp frontend of cluster 'c2'",
    )
    state.apply(rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")))
    assert_refused(
        state,
        rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")),
        NotFound,
        "no tcp frontend",
    )
    state.apply(rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c2")))
    assert state.tcp_frontends[TCP].cluster_id == "c2"
    assert state.cluster_information("c2").tcp_frontends == [state.tcp_frontends[TCP]]
    assert state.cluster_information("c1").tcp_frontends == []


# --------------------------------------------------------------------------- backends


def test_add_backend_is_an_upsert_keyed_by_backend_id() -> None:
    state = populated()
    moved = Backend(cluster_id="c1", backend_id="b1", address="10.9.9.9:81", weight=7, backup=True)
    state.apply(rq.AddBackend(backend=moved))
    assert state.backends["c1"]["b1"] == moved
    assert set(state.backends["c1"]) == {"b1", "b2"}


def test_a_backend_needs_its_cluster() -> None:
    state = listeners_only()
    assert_refused(
        state, rq.AddBackend(backend=backend("b1", cluster_id="ghost")), NotFound, "ghost"
    )


def test_remove_backend_checks_the_address_when_given() -> None:
    state = populated()
    wrong = rq.RemoveBackend(cluster_id="c1", backend_id="b1", address="10.0.0.2:80")
    assert_refused(state, wrong, NotFound, r"no backend 'b1' at 10\.0\.0\.2:80 in cluster 'c1'")
    state.apply(rq.RemoveBackend(cluster_id="c1", backend_id="b1", address="10.0.0.1:80"))
    assert set(state.backends["c1"]) == {"b2"}
    state.apply(rq.RemoveBackend(cluster_id="c1", backend_id="b2"))  # no address: by id only
    assert "c1" not in state.backends


@pytest.mark.parametrize(
    "request_",
    [
        rq.RemoveBackend(cluster_id="c1", backend_id="b9"),
        rq.RemoveBackend(cluster_id="ghost", backend_id="b1"),
    ],
    ids=["unknown-backend", "unknown-cluster"],
)
def test_removing_an_absent_backend_is_not_found(request_: rq.Request) -> None:
    state = populated()
    assert_refused(state, request_, NotFound, "no backend")


def test_removing_the_last_backend_leaves_no_empty_entry() -> None:
    state = populated()
    state.apply(rq.RemoveBackend(cluster_id="c2", backend_id="b1"))
    assert "c2" not in state.backends
    assert "c2" in state.clusters
    assert state.cluster_information("c2").backends == []
    fresh = populated()
    fresh.apply(rq.RemoveBackend(cluster_id="c2", backend_id="b1"))
    assert fresh == state


# --------------------------------------------------------------------------- certificates


@pytest.mark.parametrize(
    ("address", "match"),
    [(SPARE, "no HTTPS listener at"), (HTTP, "listener there is http"), (TCP, "is tcp")],
    ids=["no-listener", "http-listener", "tcp-listener"],
)
def test_a_certificate_needs_an_https_listener(address: str, match: str) -> None:
    state = listeners_only()
    request = rq.AddCertificate(address=address, certificate=certificate("a.test"))
    assert_refused(state, request, NotFound, match)


@pytest.mark.parametrize(
    "broken",
    [
        {"certificate": "not a certificate"},
        {"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        {"certificate_chain": ["garbage"]},
        {"key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
    ],
    ids=["no-pem", "bad-der", "bad-chain", "bad-key"],
)
def test_a_certificate_that_does_not_parse_is_refused(broken: dict[str, Any]) -> None:
    state = populated()
    bad = certificate("b.test").model_copy(update=broken)
    assert_refused(
        state, rq.AddCertificate(address=HTTPS, certificate=bad), InvalidRequest, "refused"
    )


def test_a_certificate_with_another_key_is_refused() -> None:
    state = populated()
    mismatched = certificate("b.test").model_copy(update={"key": certificate("c.test").key})
    assert_refused(
        state,
        rq.AddCertificate(address=HTTPS, certificate=mismatched),
        InvalidRequest,
        "does not match",
    )


def test_certificate_names_come_from_cn_and_san_unless_given() -> None:
    state = listeners_only()
    both = certificate("a.test", "www.a.test")
    state.apply(rq.AddCertificate(address=HTTPS, certificate=both, expired_at=1234))
    entry = state.certificates[HTTPS][fingerprint(both)]
    assert entry.names == ["a.test", "www.a.test"]
    assert entry.expired_at == 1234
    assert entry.address == HTTPS
    assert state.private_key(HTTPS, entry.fingerprint) == both.key
    named = certificate("b.test", names=["Other.Test."])
    state.apply(rq.AddCertificate(address=HTTPS, certificate=named))
    assert state.certificates[HTTPS][fingerprint(named)].names == ["other.test"]


def test_adding_a_known_fingerprint_again_changes_nothing() -> None:
    state = populated()
    reference = state.copy()
    again = certificate("a.test", names=["renamed.test"], versions=["tls_v13"])
    state.apply(rq.AddCertificate(address=HTTPS, certificate=again, expired_at=99))
    assert state == reference
    entry = state.certificates[HTTPS][fingerprint(again)]
    assert entry.names == ["a.test"]
    assert entry.expired_at is None


def test_replace_certificate_swaps_old_for_new_in_one_request() -> None:
    state = populated()
    old, new = certificate("a.test"), certificate("a.test", generation=1)
    assert fingerprint(old) != fingerprint(new)
    state.apply(
        rq.ReplaceCertificate(
            address=HTTPS, old_fingerprint=fingerprint(old), new_certificate=new, new_expired_at=5
        )
    )
    assert set(state.certificates[HTTPS]) == {fingerprint(new)}
    assert state.certificates[HTTPS][fingerprint(new)].expired_at == 5
    assert state.private_key(HTTPS, fingerprint(new)) == new.key
    assert state.private_key(HTTPS, fingerprint(old)) is None
    assert state.problems() == []


def test_replace_with_the_same_fingerprint_updates_the_names() -> None:
    state = populated()
    same = certificate("a.test", names=["x.test", "y.test"])
    state.apply(
        rq.ReplaceCertificate(
            address=HTTPS, old_fingerprint=fingerprint(same), new_certificate=same
        )
    )
    assert list(state.certificates[HTTPS]) == [fingerprint(same)]
    assert state.certificates[HTTPS][fingerprint(same)].names == ["x.test", "y.test"]
    assert state.private_key(HTTPS, fingerprint(same)) == same.key


def test_replace_with_an_unusable_new_certificate_keeps_the_old_one() -> None:
    state = populated()
    old = certificate("a.test")
    broken = certificate("a.test", generation=1).model_copy(update={"key": certificate("z").key})
    request = rq.ReplaceCertificate(
        address=HTTPS, old_fingerprint=fingerprint(old), new_certificate=broken
    )
    assert_refused(state, request, InvalidRequest, "does not match")
    assert set(state.certificates[HTTPS]) == {fingerprint(old)}


@pytest.mark.parametrize(
    "request_",
    [
        rq.ReplaceCertificate(
            address=HTTPS,
            old_fingerprint="ab" * 32,
            new_certificate=certificate("a.test", generation=1),
        ),
        rq.RemoveCertificate(address=HTTPS, fingerprint="ab" * 32),
        rq.RemoveCertificate(address=HTTP, fingerprint="ab" * 32),
    ],
    ids=["replace", "remove", "remove-on-http-listener"],
)
def test_an_unknown_fingerprint_is_not_found(request_: rq.Request) -> None:
    state = populated()
    assert_refused(state, request_, NotFound, "no certificate abababab")


@pytest.mark.parametrize("text", ["zz" * 32, "ab" * 31, "", "ab" * 33])
def test_a_malformed_fingerprint_is_invalid(text: str) -> None:
    state = populated()
    assert_refused(
        state, rq.RemoveCertificate(address=HTTPS, fingerprint=text), InvalidRequest, "SHA-256"
    )


def colon_upper(fp: str) -> str:
    return ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()


def test_fingerprints_with_colons_and_uppercase_are_accepted() -> None:
    state = populated()
    old, new = certificate("a.test"), certificate("a.test", generation=1)
    assert colon_upper(fingerprint(old)).count(":") == 31
    state.apply(
        rq.ReplaceCertificate(
            address=HTTPS, old_fingerprint=colon_upper(fingerprint(old)), new_certificate=new
        )
    )
    assert set(state.certificates[HTTPS]) == {fingerprint(new)}
    state.apply(rq.RemoveCertificate(address=HTTPS, fingerprint=colon_upper(fingerprint(new))))
    assert HTTPS not in state.certificates
    state.apply(rq.AddCertificate(address=HTTPS, certificate=old))
    found = state.certificate_list(fingerprint=fingerprint(old).upper())
    assert [entry.fingerprint for entry in found] == [fingerprint(old)]


def secret_lines(pair: CertificateAndKey) -> list[str]:
    """The base64 lines of the private key that do not also appear in the certificate (a key
    holds its public half, which the certificate shows too)."""
    public = "".join(pair.certificate.split())
    lines = [
        line
        for line in pair.key.splitlines()
        if line and not line.startswith("-----") and line[:24] not in public
    ]
    assert lines  # a check against no line would prove nothing
    return lines


def assert_no_key(text: str, pair: CertificateAndKey) -> None:
    for line in secret_lines(pair):
        assert line not in text
        assert line[:24] not in text
    assert "PRIVATE KEY-----" not in text


def test_the_private_key_is_never_shown() -> None:
    state = populated()
    cert = certificate("a.test")
    new = certificate("a.test", generation=1)
    requests: list[Any] = [
        cert,
        rq.AddCertificate(address=HTTPS, certificate=cert),
        rq.ReplaceCertificate(
            address=HTTPS, old_fingerprint=fingerprint(cert), new_certificate=new
        ),
        rq.Batch(requests=[rq.AddCertificate(address=HTTPS, certificate=cert)]),
    ]
    for shown in requests:
        assert_no_key(repr(shown), cert)
        assert_no_key(str(shown), cert)
        assert_no_key(repr(shown), new)
        assert_no_key(str(shown), new)
    for request in requests[1:]:
        assert_no_key(request.describe(), cert)
    assert_no_key(repr(state), cert)
    assert_no_key(str(state), cert)
    assert_no_key(repr(state.certificates), cert)
    assert_no_key(state.snapshot().model_dump_json(), cert)
    assert_no_key(repr(state.certificate_list()), cert)
    assert_no_key(repr(state.answer_query(rq.QueryCertificates())), cert)
    # errors: a mismatching key, a key in a batch that fails, an unknown fingerprint
    mismatched = certificate("b.test").model_copy(update={"key": cert.key})
    errors: list[StateError] = []
    for request in (
        rq.AddCertificate(address=HTTPS, certificate=mismatched),
        rq.AddCertificate(address=SPARE, certificate=cert),
        rq.Batch(
            requests=[
                rq.AddCertificate(address=HTTPS, certificate=new),
                rq.RemoveCluster(cluster_id="ghost"),
            ]
        ),
        rq.ReplaceCertificate(address=HTTPS, old_fingerprint="0" * 64, new_certificate=new),
    ):
        with pytest.raises(StateError) as raised:
            state.apply(request)
        errors.append(raised.value)
    for error in errors:
        for text in (str(error), repr(error), error.message):
            assert_no_key(text, cert)
            assert_no_key(text, new)


# --------------------------------------------------------------------------- batches


def test_a_batch_applies_its_requests_in_order_and_counts_once() -> None:
    state = listeners_only()
    version = state.version
    state.apply(
        rq.Batch(
            requests=[
                rq.AddCluster(cluster=Cluster(cluster_id="c1")),
                rq.AddHttpFrontend(frontend=frontend()),  # needs the cluster added just before
                rq.AddBackend(backend=backend("b1")),
                rq.AddCertificate(address=HTTPS, certificate=certificate("a.test")),
            ]
        )
    )
    assert state.version == version + 1
    assert state.request_counts["batch"] == 1
    assert state.request_counts["add_cluster"] == 1
    assert state.request_counts["add_certificate"] == 1
    assert frontend().key in state.http_frontends
    assert state.problems() == []


def test_a_failing_batch_undoes_every_kind_of_change() -> None:
    state = populated()
    reference = state.copy()
    before = observable(state)
    indexes = (
        {c: dict(r) for c, r in state._cluster_refs.items()},
        {a: dict(r) for a, r in state._frontends_at.items()},
    )
    old_cert, new_cert = certificate("a.test"), certificate("a.test", generation=1)
    batch = rq.Batch(
        requests=[
            rq.AddTcpListener(listener=TcpListenerConfig(address=SPARE)),
            rq.UpdateHttpListener(address=HTTP, front_timeout=1, sticky_name="X"),
            rq.ActivateListener(address=HTTPS, proxy=ListenerType.HTTPS),
            rq.DeactivateListener(address=HTTP, proxy=ListenerType.HTTP),
            rq.AddCluster(cluster=Cluster(cluster_id="c3")),
            rq.AddCluster(cluster=Cluster(cluster_id="c2", load_balancing="random")),
            rq.AddHttpFrontend(frontend=frontend("new.test", cluster_id="c3")),
            rq.RemoveHttpFrontend(frontend=frontend()),
            rq.AddTcpFrontend(frontend=TcpFrontend(address=SPARE, cluster_id="c3")),
            rq.AddBackend(backend=backend("b9", cluster_id="c3")),
            rq.AddBackend(backend=backend("b1", address="10.7.7.7:80")),
            rq.RemoveBackend(cluster_id="c2", backend_id="b1"),
            rq.ReplaceCertificate(
                address=HTTPS, old_fingerprint=fingerprint(old_cert), new_certificate=new_cert
            ),
            rq.AddCertificate(address=HTTPS, certificate=certificate("b.test")),
            rq.RemoveCluster(cluster_id="c1"),  # cascades frontends and backends
            rq.RemoveListener(address=TCP, proxy=ListenerType.TCP),  # free after the cascade
            rq.RemoveCluster(cluster_id="ghost"),  # fails: everything above is undone
        ]
    )
    error = assert_refused(state, batch, NotFound, "nothing was applied")
    assert "request 17 of 17" in error.message
    assert "remove_cluster ghost" in error.message
    assert observable(state) == before
    assert state == reference
    assert state.private_key(HTTPS, fingerprint(old_cert)) == old_cert.key
    assert state.private_key(HTTPS, fingerprint(new_cert)) is None
    # the derived indexes are restored too: they decide cascades and refusals later on
    assert (state._cluster_refs, state._frontends_at) == indexes
    assert_refused(
        state, rq.RemoveListener(address=TCP, proxy=ListenerType.TCP), InvalidRequest, "first"
    )
    state.apply(rq.RemoveCluster(cluster_id="c1"))
    assert state.tcp_frontends == {}
    assert state.problems() == []


def test_a_batch_that_fails_on_its_first_request_changes_nothing() -> None:
    state = populated()
    batch = rq.Batch(
        requests=[rq.RemoveCluster(cluster_id="ghost"), rq.RemoveCluster(cluster_id="c1")]
    )
    error = assert_refused(state, batch, NotFound, "request 1 of 2")
    assert isinstance(error.__cause__, NotFound)


def test_a_batch_with_the_expected_version_is_applied() -> None:
    state = populated()
    version = state.version
    state.apply(rq.Batch(requests=[rq.RemoveCluster(cluster_id="c2")], expected_version=version))
    assert "c2" not in state.clusters
    assert state.version == version + 1


def test_a_batch_with_another_expected_version_is_refused() -> None:
    state = populated()
    batch = rq.Batch(
        requests=[rq.RemoveCluster(cluster_id="c2")], expected_version=state.version - 1
    )
    error = assert_refused(state, batch, VersionMismatch, "changed since the plan was made")
    assert f"now {state.version}" in error.message
    assert error.kind == "version_mismatch"


def test_a_batch_inside_a_batch_is_refused() -> None:
    inner = {"type": "batch", "requests": []}
    with pytest.raises(ValueError, match="batch"):
        rq.parse_request({"type": "batch", "requests": [inner]})
    with pytest.raises(ValueError, match="batch"):
        rq.Batch(requests=[rq.Batch(requests=[])])
    # a nested batch built without validation is still refused by the state
    state = populated()
    nested = rq.Batch.model_construct(
        type="batch",
        requests=[
            rq.AddCluster(cluster=Cluster(cluster_id="c9")),
            rq.Batch.model_construct(type="batch", requests=[], expected_version=None),  # type: ignore[list-item]
        ],
        expected_version=None,
    )
    assert_refused(state, nested, InvalidRequest, "batch")


# --------------------------------------------------------------------------- counting


def test_version_counts_accepted_mutating_requests_only() -> None:
    state = ConfigState()
    assert state.version == 0
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    assert state.version == 1
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))  # an accepted upsert
    assert state.version == 2
    for query in (rq.Status(), rq.QueryState(), rq.ListFrontends(), rq.SoftStop()):
        state.apply(query)
    assert state.version == 2
    with pytest.raises(NotFound):
        state.apply(rq.RemoveCluster(cluster_id="ghost"))
    assert state.version == 2
    assert ConfigState(version=41).version == 41
    assert state.copy().version == 2


def test_request_counts_count_accepted_requests_by_type() -> None:
    state = ConfigState()
    state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP)))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c2")))
    with pytest.raises(AlreadyExists):
        state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP)))
    with pytest.raises(NotFound):
        state.apply(
            rq.Batch(requests=[rq.RemoveCluster(cluster_id="c1"), rq.RemoveCluster(cluster_id="x")])
        )
    assert dict(state.request_counts) == {"add_http_listener": 1, "add_cluster": 2}
    state.apply(rq.Batch(requests=[rq.RemoveCluster(cluster_id="c1")]))
    assert dict(state.request_counts) == {
        "add_http_listener": 1,
        "add_cluster": 2,
        "remove_cluster": 1,
        "batch": 1,
    }
    assert state.answer_query(rq.CountRequests()) == RequestCounts(
        counts={"add_cluster": 2, "add_http_listener": 1, "batch": 1, "remove_cluster": 1}
    )


# --------------------------------------------------------------------------- value semantics


def test_equality_ignores_versions_request_counts_and_keys() -> None:
    state = populated()
    twin = ConfigState.from_snapshot(state.snapshot(), version=999)
    assert twin == state
    assert twin.version == 999
    assert dict(twin.request_counts) == {}
    assert twin.private_key(HTTPS, fingerprint(certificate("a.test"))) is None
    again = populated()
    again.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1")))  # same content, one more step
    assert again == state
    assert again.version != state.version
    assert state != object()
    assert (state == object()) is False


@pytest.mark.parametrize(
    "change",
    [
        rq.UpdateHttpListener(address=HTTP, front_timeout=2),
        rq.DeactivateListener(address=HTTP, proxy=ListenerType.HTTP),
        rq.AddCluster(cluster=Cluster(cluster_id="c2")),
        rq.RemoveHttpFrontend(frontend=frontend("deny.test")),
        rq.AddBackend(backend=backend("b1", address="10.0.0.9:80")),
        rq.ReplaceCertificate(
            address=HTTPS,
            old_fingerprint=fingerprint(certificate("a.test")),
            new_certificate=certificate("a.test", names=["other.test"]),
        ),
    ],
    ids=["listener", "activity", "cluster", "frontend", "backend", "certificate-names"],
)
def test_equality_sees_every_content_change(change: rq.Request) -> None:
    state = populated()
    state.apply(change)
    assert state != populated()


def test_a_copy_is_independent() -> None:
    original = populated()
    reference = observable(original)
    copy = original.copy()
    assert copy == original
    copy.apply(rq.RemoveCluster(cluster_id="c1"))
    copy.apply(rq.UpdateHttpListener(address=HTTP, front_timeout=9))
    copy.apply(rq.AddBackend(backend=backend("b7", cluster_id="c2")))
    copy.apply(
        rq.ReplaceCertificate(
            address=HTTPS,
            old_fingerprint=fingerprint(certificate("a.test")),
            new_certificate=certificate("a.test", generation=1),
        )
    )
    copy.apply(rq.RemoveListener(address=TCP, proxy=ListenerType.TCP))
    assert observable(original) == reference
    assert original.problems() == []
    # the original's indexes were not shared: its cascade still finds c1's frontends
    original.apply(rq.RemoveCluster(cluster_id="c1"))
    assert original.tcp_frontends == {}
    assert original.problems() == []


# --------------------------------------------------------------------------- queries


def test_frontend_list_filters_by_protocol_and_domain() -> None:
    state = populated()
    everything = state.frontend_list()
    assert len(everything.http) == 4
    assert len(everything.https) == 1
    assert [f.cluster_id for f in everything.tcp] == ["c1"]
    assert everything.http == [state.http_frontends[k] for k in sorted(state.http_frontends)]
    only_https = state.frontend_list(https=True)
    assert (only_https.http, len(only_https.https), only_https.tcp) == ([], 1, [])
    two = state.frontend_list(http=True, tcp=True)
    assert (len(two.http), two.https, len(two.tcp)) == (4, [], 1)
    by_domain = state.frontend_list(domain="a.te")  # a substring of the hostname
    assert {f.hostname for f in by_domain.http} == {"a.test"}
    assert len(by_domain.https) == 1
    assert by_domain.tcp == []  # TCP frontends have no hostname
    assert state.frontend_list(tcp=True, domain="a").tcp == []
    assert state.frontend_list(domain="nothing") == FrontendList()


def test_listeners_list_gives_every_listener_by_protocol() -> None:
    state = populated()
    state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address="127.0.0.1:80")))
    listed = state.listeners_list()
    assert [listener.address for listener in listed.http] == ["127.0.0.1:80", HTTP]
    assert listed.https == [state.https_listeners[HTTPS]]
    assert listed.tcp == [state.tcp_listeners[TCP]]


def test_cluster_information_gathers_a_cluster_and_its_parts() -> None:
    state = populated()
    info = state.cluster_information("c1")
    assert info.cluster == Cluster(cluster_id="c1")
    assert [f.path.value for f in info.http_frontends] == ["/health", ""]  # key order
    assert [f.address for f in info.https_frontends] == [HTTPS]
    assert info.tcp_frontends == [TcpFrontend(address=TCP, cluster_id="c1")]
    assert [b.backend_id for b in info.backends] == ["b1", "b2"]
    unknown = state.cluster_information("ghost")
    assert unknown.cluster is None
    assert (unknown.http_frontends, unknown.backends) == ([], [])


def test_clusters_by_domain_matches_the_hostname_exactly_and_the_path_value() -> None:
    state = populated()
    assert [i.cluster.cluster_id for i in state.clusters_by_domain("a.test") if i.cluster] == ["c1"]
    assert [i.cluster.cluster_id for i in state.clusters_by_domain("b.test") if i.cluster] == ["c2"]
    assert state.clusters_by_domain("a.tes") == []
    assert state.clusters_by_domain("deny.test") == []  # a deny rule routes to no cluster
    assert len(state.clusters_by_domain("a.test", "/health")) == 1
    assert state.clusters_by_domain("a.test", "/other") == []
    state.apply(rq.AddHttpFrontend(frontend=frontend("b.test", cluster_id="c1", method="GET")))
    found = state.clusters_by_domain("b.test")
    assert [i.cluster.cluster_id for i in found if i.cluster] == ["c1", "c2"]


HASH_CHANGES: list[tuple[str, list[rq.Request], set[str]]] = [
    (
        "cluster settings",
        [rq.AddCluster(cluster=Cluster(cluster_id="c1", sticky_session=True))],
        {"c1"},
    ),
    ("backend added", [rq.AddBackend(backend=backend("b3"))], {"c1"}),
    (
        "backend changed",
        [rq.AddBackend(backend=backend("b1", cluster_id="c2", address="10.3.3.3:1"))],
        {"c2"},
    ),
    ("backend removed", [rq.RemoveBackend(cluster_id="c1", backend_id="b2")], {"c1"}),
    ("http frontend", [rq.AddHttpFrontend(frontend=frontend("n.test", cluster_id="c2"))], {"c2"}),
    ("https frontend", [rq.RemoveHttpsFrontend(frontend=frontend(address=HTTPS))], {"c1"}),
    (
        "tcp frontend moved",
        [
            rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")),
            rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c2")),
        ],
        {"c1", "c2"},
    ),
    ("listener", [rq.UpdateHttpListener(address=HTTP, front_timeout=3)], set()),
    ("deny frontend", [rq.AddHttpFrontend(frontend=frontend("d2.test", cluster_id=None))], set()),
    ("certificate", [rq.AddCertificate(address=HTTPS, certificate=certificate("b.test"))], set()),
    (
        "upsert of the same cluster",
        [rq.AddCluster(cluster=Cluster(cluster_id="c2", sticky_session=True))],
        set(),
    ),
]


@pytest.mark.parametrize(
    ("what", "changes", "changed"), HASH_CHANGES, ids=[c[0] for c in HASH_CHANGES]
)
def test_cluster_hashes_change_exactly_when_a_cluster_part_changes(
    what: str, changes: list[rq.Request], changed: set[str]
) -> None:
    state = populated()
    before = state.cluster_hashes()
    assert set(before) == {"c1", "c2"}
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in before.values())
    for change in changes:
        state.apply(change)
    after = state.cluster_hashes()
    assert {c for c in before if before[c] != after[c]} == changed, what


def test_cluster_hashes_come_back_when_a_change_is_undone() -> None:
    state = populated()
    before = state.cluster_hashes()
    state.apply(rq.AddBackend(backend=backend("b3")))
    assert state.cluster_hashes() != before
    state.apply(rq.RemoveBackend(cluster_id="c1", backend_id="b3"))
    assert state.cluster_hashes() == before


def test_equal_states_have_equal_cluster_hashes_whatever_the_insertion_order() -> None:
    """The hash describes content: two equal states (``==``) must give the same hashes, even when
    their dictionaries (tags, answers) were filled in another order."""

    def build(tags: dict[str, str], answers: dict[int, str]) -> ConfigState:
        state = listeners_only()
        state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c1", answers=answers)))
        state.apply(rq.AddHttpFrontend(frontend=frontend(tags=tags)))
        return state

    one = build({"team": "x", "env": "prod"}, {503: "a", 404: "b"})
    two = build({"env": "prod", "team": "x"}, {404: "b", 503: "a"})
    assert one == two
    assert one.cluster_hashes() == two.cluster_hashes()


HASH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from sozu_config.requests import parse_request
    from sozu_config.state import ConfigState

    state = ConfigState()
    for line in json.loads(sys.stdin.read()):
        state.apply(parse_request(line))
    print(json.dumps(state.cluster_hashes(), sort_keys=True))
    """
)


def test_cluster_hashes_are_the_same_in_another_process() -> None:
    state = ConfigState()
    lines = []
    for request in populated().generate_requests():
        if request.type == "add_certificate":
            continue  # certificates are not part of cluster hashes
        state.apply(request)
        lines.append(request.model_dump_json())
    expected = state.cluster_hashes()
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", HASH_SCRIPT],
            input=json.dumps(lines),
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=60,
        )
        assert json.loads(result.stdout) == expected


def test_answer_query_answers_each_state_query() -> None:
    state = populated()
    cert_fp = fingerprint(certificate("a.test"))
    frontends = state.answer_query(rq.ListFrontends(https=True))
    assert isinstance(frontends, FrontendList)
    assert frontends == state.frontend_list(https=True)
    listeners = state.answer_query(rq.ListListeners())
    assert isinstance(listeners, ListenersList)
    assert listeners == state.listeners_list()
    by_id = state.answer_query(rq.QueryClusterById(cluster_id="c2"))
    assert by_id == ClustersContent(clusters=[state.cluster_information("c2")])
    by_domain = state.answer_query(rq.QueryClustersByDomain(hostname="a.test", path="/health"))
    assert by_domain == ClustersContent(clusters=state.clusters_by_domain("a.test", "/health"))
    hashes = state.answer_query(rq.QueryClustersHashes())
    assert hashes == ClusterHashes(hashes=state.cluster_hashes())
    certificates = state.answer_query(rq.QueryCertificates())
    assert isinstance(certificates, CertificatesContent)
    assert [c.fingerprint for c in certificates.certificates] == [cert_fp]
    assert state.answer_query(rq.QueryCertificates(domain="a.test")) == certificates
    assert state.answer_query(rq.QueryCertificates(domain="b.test")) == CertificatesContent(
        certificates=[]
    )
    by_fp = state.answer_query(rq.QueryCertificates(fingerprint=colon_upper(cert_fp)))
    assert by_fp == certificates
    with pytest.raises(InvalidRequest, match="SHA-256"):
        state.answer_query(rq.QueryCertificates(fingerprint="nope"))
    counts = state.answer_query(rq.CountRequests())
    assert counts == RequestCounts(counts=dict(state.request_counts))
    for not_a_state_query in (
        rq.Status(),
        rq.QueryState(),
        rq.SoftStop(),
        rq.AddCluster(cluster=Cluster(cluster_id="c1")),
    ):
        assert state.answer_query(not_a_state_query) is None


# --------------------------------------------------------------------------- snapshots


def test_a_snapshot_has_no_keys_and_rebuilds_an_equal_state() -> None:
    state = populated()
    snapshot = state.snapshot()
    text = snapshot.model_dump_json()
    assert_no_key(text, certificate("a.test"))
    assert '"key"' not in text
    rebuilt = ConfigState.from_snapshot(snapshot)
    assert rebuilt == state
    assert rebuilt.problems() == []
    # the rebuilt indexes work: a cascade and a listener refusal behave as in the original
    assert rebuilt.cluster_information("c1") == state.cluster_information("c1")
    with pytest.raises(InvalidRequest, match="remove them first"):
        rebuilt.apply(rq.RemoveListener(address=TCP, proxy=ListenerType.TCP))
    rebuilt.apply(rq.RemoveCluster(cluster_id="c1"))
    assert rebuilt.problems() == []


def test_a_state_rebuilt_from_a_snapshot_can_be_diffed() -> None:
    live = populated()
    desired = populated()
    desired.apply(rq.RemoveCluster(cluster_id="c2"))
    desired.apply(
        rq.ReplaceCertificate(
            address=HTTPS,
            old_fingerprint=fingerprint(certificate("a.test")),
            new_certificate=certificate("a.test", generation=1),
        )
    )
    seen = ConfigState.from_snapshot(live.snapshot())
    plan = seen.diff(desired)
    assert plan == live.diff(desired)
    for request in plan:
        live.apply(request)
    assert live == desired
    assert ConfigState.from_snapshot(desired.snapshot()).diff(desired) == []


def test_generate_requests_on_a_snapshot_state_fails_clearly() -> None:
    seen = ConfigState.from_snapshot(populated().snapshot())
    with pytest.raises(InvalidRequest, match="no private key"):
        seen.generate_requests()
    with pytest.raises(InvalidRequest, match="query_state"):
        seen.certificate_and_key(HTTPS, fingerprint(certificate("a.test")))
    # without certificates nothing needs a key
    no_certificates = populated()
    no_certificates.apply(
        rq.RemoveCertificate(address=HTTPS, fingerprint=fingerprint(certificate("a.test")))
    )
    plain = ConfigState.from_snapshot(no_certificates.snapshot())
    assert len(plain.generate_requests()) == len(no_certificates.generate_requests())


def test_an_inconsistent_snapshot_is_refused() -> None:
    snapshot = populated().snapshot()
    orphan = snapshot.model_copy(update={"clusters": []})
    with pytest.raises(InvalidRequest, match="inconsistent snapshot"):
        ConfigState.from_snapshot(orphan)
    headless = snapshot.model_copy(update={"https_listeners": []})
    with pytest.raises(InvalidRequest, match=r"no HTTPS listener|has no listener"):
        ConfigState.from_snapshot(headless)


# --------------------------------------------------------------------------- targeted diffs


def test_a_certificate_rotation_is_one_replace_certificate() -> None:
    source = populated()
    target = populated()
    old, new = certificate("a.test"), certificate("a.test", generation=1)
    target.apply(
        rq.ReplaceCertificate(address=HTTPS, old_fingerprint=fingerprint(old), new_certificate=new)
    )
    plan = source.diff(target)
    assert len(plan) == 1
    (replace,) = plan
    assert isinstance(replace, rq.ReplaceCertificate)
    assert replace.address == HTTPS
    assert replace.old_fingerprint == fingerprint(old)
    assert fingerprint(replace.new_certificate) == fingerprint(new)
    assert replace.new_certificate.key == new.key
    source.apply(replace)
    assert source == target


def test_moving_a_tcp_frontend_to_another_cluster_is_an_adjacent_remove_and_add() -> None:
    source = populated()
    target = populated()
    target.apply(rq.RemoveTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c1")))
    target.apply(rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c2")))
    plan = source.diff(target)
    assert [r.type for r in plan] == ["remove_tcp_frontend", "add_tcp_frontend"]
    assert isinstance(plan[0], rq.RemoveTcpFrontend)
    assert isinstance(plan[1], rq.AddTcpFrontend)
    assert plan[0].frontend.cluster_id == "c1"
    assert plan[1].frontend.cluster_id == "c2"
    # with other changes around, the pair stays side by side
    target.apply(rq.AddCluster(cluster=Cluster(cluster_id="c0")))
    target.apply(rq.AddBackend(backend=backend("b5", cluster_id="c2")))
    plan = source.diff(target)
    kinds = [r.type for r in plan]
    position = kinds.index("remove_tcp_frontend")
    assert kinds[position + 1] == "add_tcp_frontend"
    assert kinds.index("add_cluster") < position


def test_switching_the_protocol_of_an_address_clears_it_first() -> None:
    source = populated()
    target = ConfigState()
    target.apply(rq.AddHttpsListener(listener=HttpsListenerConfig(address=HTTP, active=True)))
    target.apply(rq.AddHttpsListener(listener=HttpsListenerConfig(address=HTTPS)))
    target.apply(rq.AddTcpListener(listener=TcpListenerConfig(address=TCP)))
    for request in populated().generate_requests():
        if request.type in ("add_cluster", "add_backend", "add_certificate", "add_tcp_frontend"):
            target.apply(request)
    target.apply(rq.AddHttpsFrontend(frontend=frontend(address=HTTPS)))
    target.apply(rq.AddHttpsFrontend(frontend=frontend("moved.test")))  # on the new HTTPS at HTTP
    plan = source.diff(target)
    described = [r.describe() for r in plan]
    assert described == [
        f"deactivate_listener http {HTTP}",
        f"remove_http_frontend a.test=/health on {HTTP}",
        f"remove_http_frontend a.test on {HTTP}",
        f"remove_http_frontend b.test on {HTTP}",
        f"remove_http_frontend deny.test on {HTTP}",
        f"remove_listener http {HTTP}",
        f"add_https_listener {HTTP}",
        f"add_https_frontend moved.test on {HTTP} -> c1",
        f"activate_listener https {HTTP}",
    ]
    current = source.copy()
    for request in plan:
        current.apply(request)
        assert current.problems() == []
    assert current == target


def test_a_listener_field_change_is_one_update_with_only_the_changed_fields() -> None:
    source = populated()
    target = populated()
    target.apply(
        rq.UpdateHttpsListener(address=HTTPS, front_timeout=7, alpn_protocols=["h2", "http/1.1"])
    )
    target.apply(rq.UpdateHttpsListener(address=HTTPS, strict_sni_binding=False))
    target.apply(rq.UpdateTcpListener(address=TCP, expect_proxy=True))
    plan = source.diff(target)
    assert [r.type for r in plan] == ["update_https_listener", "update_tcp_listener"]
    https_update, tcp_update = plan
    assert isinstance(https_update, rq.UpdateHttpsListener)
    assert isinstance(tcp_update, rq.UpdateTcpListener)
    assert https_update.address == HTTPS
    assert https_update.patch() == {"front_timeout": 7, "strict_sni_binding": False}
    assert tcp_update.patch() == {"expect_proxy": True}
    # the patch survives the wire: only the changed fields travel
    wire = json.loads(https_update.model_dump_json(exclude_unset=True))
    assert set(wire) == {"address", "front_timeout", "strict_sni_binding"}
    for request in plan:
        source.apply(request)
    assert source == target


def test_a_listener_activation_change_is_an_activate_or_deactivate_only() -> None:
    source = populated()
    target = populated()
    target.apply(rq.ActivateListener(address=TCP, proxy=ListenerType.TCP))
    target.apply(rq.DeactivateListener(address=HTTP, proxy=ListenerType.HTTP))
    plan = source.diff(target)
    assert [r.describe() for r in plan] == [
        f"activate_listener tcp {TCP}",
        f"deactivate_listener http {HTTP}",
    ]


# --------------------------------------------------------------------------- hardening rules


def test_hsts_is_refused_on_a_plain_http_frontend() -> None:
    """RFC 6797 §7.2 (sōzu ``test_hsts_on_http_frontend_rejected`` and
    ``test_hsts_explicit_disable_on_http_rejected``): enabled or not, never on HTTP."""
    state = populated()
    before = observable(state)
    for enabled in (True, False):
        with pytest.raises(InvalidRequest, match="only valid on https frontends"):
            state.apply(rq.AddHttpFrontend(frontend=frontend("h.test", hsts=Hsts(enabled=enabled))))
    assert observable(state) == before
    state.apply(
        rq.AddHttpsFrontend(frontend=frontend("h.test", address=HTTPS, hsts=Hsts(enabled=True)))
    )


def test_listener_hsts_and_trust_are_patched_and_cleared() -> None:
    state = populated()
    state.apply(rq.UpdateHttpsListener(address=HTTPS, hsts=Hsts(enabled=True, max_age=60)))
    listener = state.https_listeners[HTTPS]
    assert listener.hsts is not None and listener.hsts.max_age == 60
    state.apply(rq.UpdateHttpsListener(address=HTTPS, hsts=""))
    assert state.https_listeners[HTTPS].hsts is None
    state.apply(rq.UpdateHttpListener(address=HTTP, trust_forwarded_headers=True))
    assert state.http_listeners[HTTP].trust_forwarded_headers


@pytest.mark.parametrize("address", ["0.0.0.0:80", "[::]:8080"])
def test_a_backend_cannot_be_the_unspecified_address(address: str) -> None:
    with pytest.raises(ValueError, match="unspecified address"):
        backend("b9", address=address)
