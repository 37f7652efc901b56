"""Hypothesis strategies for random valid routing states.

Objects are drawn from small pools (addresses, hostnames, ids) so that two random states share
many objects: diffs then mix additions, removals, changes and protocol switches.
"""

from __future__ import annotations

from hypothesis import strategies as st
from support.certs import cached_certificate

from sozu_config import requests as rq
from sozu_config.certificates import CertificateAndKey
from sozu_config.models import (
    Backend,
    Cluster,
    HeaderEdit,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    PathRule,
    TcpFrontend,
    TcpListenerConfig,
)
from sozu_config.state import AlreadyExists, ConfigState

ADDRESSES = [f"127.0.0.1:{8000 + i}" for i in range(5)] + ["[::1]:9443"]
HOSTNAMES = ["a.test", "b.test", "*.test", "/api[0-9]+/.test", "*"]
PATHS = [("prefix", ""), ("prefix", "/api"), ("equals", "/health"), ("regex", "/v[0-9]+/")]
CLUSTERS = ["c0", "c1", "c2", "c3"]
BACKENDS = ["b0", "b1", "b2"]
# (names, generation): two generations of some names make rotations appear in diffs
CERT_NAMES = [
    (("a.test",), 0),
    (("a.test",), 1),
    (("b.test",), 0),
    (("a.test", "b.test"), 0),
    (("a.test", "b.test", "c.test"), 0),
    (("*.test",), 0),
    (("*.test",), 1),
]


def certificate(index: int) -> CertificateAndKey:
    names, generation = CERT_NAMES[index]
    made = cached_certificate(*names, generation=generation)
    return CertificateAndKey(certificate=made.cert_pem, key=made.key_pem)


timeouts = st.sampled_from([1, 3, 10, 60])


@st.composite
def listeners(draw: st.DrawFn, address: str, kind: str | None = None) -> rq.StateRequest:
    if kind is None:
        kind = draw(st.sampled_from(["http", "https", "tcp"]))
    common = {
        "address": address,
        "front_timeout": draw(timeouts),
        "back_timeout": draw(timeouts),
        "active": draw(st.booleans()),
    }
    if kind == "http":
        return rq.AddHttpListener(
            listener=HttpListenerConfig(**common, sticky_name=draw(st.sampled_from(["S", "T"])))
        )
    if kind == "https":
        return rq.AddHttpsListener(
            listener=HttpsListenerConfig(
                **common,
                strict_sni_binding=draw(st.booleans()),
                default_sni=draw(st.sampled_from([None, "a.test"])),
            )
        )
    return rq.AddTcpListener(listener=TcpListenerConfig(**common))


@st.composite
def states(draw: st.DrawFn, kinds: dict[str, str] | None = None) -> ConfigState:
    """A random valid state; with ``kinds`` (address → listener protocol), the listeners are
    drawn among those addresses with those protocols."""
    state = ConfigState()
    pool = sorted(kinds) if kinds else ADDRESSES
    for address in draw(st.lists(st.sampled_from(pool), unique=True, max_size=5)):
        state.apply(draw(listeners(address, kinds[address] if kinds else None)))
    for cluster_id in draw(st.lists(st.sampled_from(CLUSTERS), unique=True, max_size=4)):
        state.apply(
            rq.AddCluster(
                cluster=Cluster(
                    cluster_id=cluster_id,
                    sticky_session=draw(st.booleans()),
                    load_balancing=draw(st.sampled_from(["round_robin", "random", "least_loaded"])),
                )
            )
        )
    clusters = sorted(state.clusters)
    for address in sorted(state.https_listeners):
        for index in draw(st.lists(st.integers(0, len(CERT_NAMES) - 1), unique=True, max_size=3)):
            state.apply(rq.AddCertificate(address=address, certificate=certificate(index)))
    for table, add in (
        (state.http_listeners, rq.AddHttpFrontend),
        (state.https_listeners, rq.AddHttpsFrontend),
    ):
        for address in sorted(table):
            count = draw(st.integers(0, 4))
            for _ in range(count):
                kind, value = draw(st.sampled_from(PATHS))
                frontend = HttpFrontend(
                    address=address,
                    hostname=draw(st.sampled_from(HOSTNAMES)),
                    path=PathRule(kind=kind, value=value),
                    method=draw(st.sampled_from([None, "GET"])),
                    cluster_id=draw(st.sampled_from([None, *clusters])),
                    position=draw(st.sampled_from(["pre", "tree", "post"])),
                    tags=draw(st.sampled_from([{}, {"team": "x"}])),
                    headers=draw(
                        st.sampled_from(
                            [[], [HeaderEdit(position="request", key="X-A", value="1")]]
                        )
                    ),
                )
                try:
                    state.apply(add(frontend=frontend))
                except AlreadyExists:  # a duplicate key: skip it
                    pass
    if clusters:
        for address in sorted(state.tcp_listeners):
            if draw(st.booleans()):
                state.apply(
                    rq.AddTcpFrontend(
                        frontend=TcpFrontend(
                            address=address, cluster_id=draw(st.sampled_from(clusters))
                        )
                    )
                )
    for cluster_id in clusters:
        for backend_id in draw(st.lists(st.sampled_from(BACKENDS), unique=True, max_size=3)):
            state.apply(
                rq.AddBackend(
                    backend=Backend(
                        cluster_id=cluster_id,
                        backend_id=backend_id,
                        address=draw(
                            st.sampled_from(["10.0.0.1:80", "10.0.0.2:80", "[fd00::1]:80"])
                        ),
                        weight=draw(st.sampled_from([0, 50, 100])),
                        backup=draw(st.booleans()),
                    )
                )
            )
    return state


@st.composite
def state_pairs(draw: st.DrawFn) -> tuple[ConfigState, ConfigState]:
    """Two states: independent ones, or (more often) ones whose listeners share protocols, so
    that the same objects appear on both sides with small differences."""
    if draw(st.integers(0, 3)) == 0:
        return draw(states()), draw(states())
    kinds = {a: draw(st.sampled_from(["http", "https", "https", "tcp"])) for a in ADDRESSES[:3]}
    return draw(states(kinds)), draw(states(kinds))
