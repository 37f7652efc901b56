"""What the configuration state accepts, a worker accepts too.

A worker that refuses an object the main process accepted is replaced: the rules they share
(hostnames, path rules, methods, header edits, addresses, balancing names) must agree. These
properties feed the same generated text to the state and to the worker's own structures.
"""

from __future__ import annotations

from typing import Any

import pytest
from config.strategies import states
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sozu_config import requests as rq
from sozu_config.models import Cluster, HttpListenerConfig, LoadBalancingAlgorithm, LoadMetric
from sozu_config.state import ConfigState, StateError
from sozu_runtime.worker import balancing
from sozu_runtime.worker.answers import Answers
from sozu_runtime.worker.router import Router, RouterError, RouteRule
from sozu_runtime.worker.routes import ClusterRuntime, Route

LISTENER = "127.0.0.1:8080"

# Text near the edges of the grammar: long labels, case, dots, stars, slashes, brackets, IDNA.
labels = st.one_of(
    st.text(alphabet="aZ9-_", min_size=0, max_size=4),
    st.sampled_from(["a" * 63, "b" * 64, "xn--bcher-kva", "Bücher", "ß", "-a", "a-", "*"]),
)
dns_names = st.lists(labels, min_size=1, max_size=5).map(".".join)
hostnames = st.one_of(
    dns_names,
    dns_names.map(lambda name: "*." + name),
    dns_names.map(lambda name: name + "."),
    st.sampled_from(
        [
            "*",
            "[::1]",
            "/api[0-9]+/.test",
            "/[A-Z]+/.Example.com",
            "//.test",
            "/a)(b/.test",
            "/ü/.test",
            "/a/.ex ample.test",
            "/(?P<x>a)/./(?P<x>b)/",
            ".".join(["a" * 63] * 4),
            ".".join(["a" * 62] * 4),
        ]
    ),
    st.text(alphabet="aZ9-_.*/[]:()+ é", max_size=16),
)
path_values = st.one_of(
    st.text(alphabet="/aZ9.?=&%()[]*+^$\\ é", max_size=10),
    st.sampled_from(["", "/", "(?u)/x", r"\N{BULLET}", "/v[0-9]+", "/a\x00", "/\t"]),
)
methods = st.one_of(
    st.none(), st.text(alphabet="GETPOST-_ :é", min_size=0, max_size=6), st.just("GET")
)
header_text = st.text(
    alphabet=st.characters(codec="utf-8", max_codepoint=0x20AC, exclude_categories=["Cs"]),
    max_size=6,
)


def base_state() -> ConfigState:
    state = ConfigState()
    state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=LISTENER)))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="c")))
    return state


def state_accepts(state: ConfigState, request_type: type[Any], body: dict[str, Any]) -> Any:
    """The validated request when the main process would accept it (wire validation, then the
    state), else None."""
    try:
        request = request_type.model_validate(body)
        state.apply(request)
    except (ValidationError, StateError):
        return None
    return request


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    hostname=hostnames,
    kind=st.sampled_from(["prefix", "equals", "regex"]),
    value=path_values,
    method=methods,
    position=st.sampled_from(["pre", "tree", "post"]),
)
def test_frontends_the_state_accepts_the_router_accepts_and_only_those(
    hostname: str, kind: str, value: str, method: str | None, position: str
) -> None:
    body = {
        "address": LISTENER,
        "hostname": hostname,
        "path": {"kind": kind, "value": value},
        "method": method,
        "cluster_id": "c",
        "position": position,
    }
    request = state_accepts(base_state(), rq.AddHttpFrontend, {"frontend": body})
    router: Router[str] = Router()
    if request is not None:
        router.add(RouteRule.of(request.frontend), "route")
        assert len(router) == 1
        router.remove(RouteRule.of(request.frontend))
        assert len(router) == 0
    else:
        # one grammar: a rule the configuration refuses is refused by the router too
        with pytest.raises(RouterError):
            router.add(RouteRule(hostname, kind, value, method, position), "route")


@settings(max_examples=200)
@given(st.lists(st.tuples(hostnames, st.sampled_from(["/", "/a"])), max_size=6))
def test_distinct_frontends_of_the_state_are_distinct_rules_of_the_router(
    specs: list[tuple[str, str]],
) -> None:
    state = base_state()
    router: Router[str] = Router()
    for hostname, value in specs:
        body = {"address": LISTENER, "hostname": hostname, "path": {"value": value}}
        request = state_accepts(state, rq.AddHttpFrontend, {"frontend": body})
        if request is not None:
            router.add(RouteRule.of(request.frontend), hostname)
    assert len(router) == len(state.http_frontends)


@settings(max_examples=300)
@given(
    key=header_text, value=header_text, position=st.sampled_from(["request", "response", "both"])
)
def test_header_edits_the_state_accepts_the_worker_can_write(
    key: str, value: str, position: str
) -> None:
    body = {
        "address": LISTENER,
        "hostname": "a.test",
        "cluster_id": "c",
        "headers": [{"position": position, "key": key, "value": value}],
    }
    request = state_accepts(base_state(), rq.AddHttpFrontend, {"frontend": body})
    if request is not None:
        route = Route(request.frontend, ClusterRuntime(Cluster(cluster_id="c")))
        assert key.encode("latin-1").lower() in route.request_edits | route.response_edits


@settings(max_examples=300)
@given(sozu_id_header=header_text, sticky_name=header_text)
def test_listener_names_the_state_accepts_the_worker_answers_with(
    sozu_id_header: str, sticky_name: str
) -> None:
    body = {"address": LISTENER, "sozu_id_header": sozu_id_header, "sticky_name": sticky_name}
    request = state_accepts(ConfigState(), rq.AddHttpListener, {"listener": body})
    if request is not None:
        answers = Answers(request.listener.answers, sozu_id_header=sozu_id_header)
        assert answers.sozu_id_header == sozu_id_header


addresses = st.one_of(
    st.tuples(
        st.sampled_from(["10.0.0.1", "[::1]", "[fd00::1]", "[fe80::1%eth0]", "::1", "host"]),
        st.sampled_from(["", ":", ":0", ":1", ":080", ":65535", ":65536", ":x"]),
    ).map("".join),
    st.text(alphabet="0123456789.:[]af%", max_size=12),
)


@settings(max_examples=300)
@given(
    address=addresses,
    algorithm=st.sampled_from(list(LoadBalancingAlgorithm)),
    metric=st.sampled_from([None, *LoadMetric]),
)
def test_backends_and_policies_the_state_accepts_balancing_accepts(
    address: str, algorithm: LoadBalancingAlgorithm, metric: LoadMetric | None
) -> None:
    state = ConfigState()
    cluster = {"cluster_id": "c", "load_balancing": algorithm.value, "load_metric": metric}
    assert state_accepts(state, rq.AddCluster, {"cluster": cluster}) is not None
    backend = {"cluster_id": "c", "backend_id": "b", "address": address}
    request = state_accepts(state, rq.AddBackend, {"backend": backend})
    runtime = ClusterRuntime(state.clusters["c"])
    assert (runtime.balancer.algorithm, runtime.balancer.metric) == (algorithm, metric)
    if request is not None:
        config = request.backend
        added = runtime.balancer.upsert_backend(config.backend_id, config.address)
        assert (added.host, added.port) == balancing._split_address(config.address)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_every_object_of_a_random_state_is_accepted_by_a_worker(state: ConfigState) -> None:
    routers: dict[str, Router[Route]] = {}
    clusters = {cid: ClusterRuntime(cluster) for cid, cluster in state.clusters.items()}
    for listener in [*state.http_listeners.values(), *state.https_listeners.values()]:
        Answers(listener.answers, sozu_id_header=listener.sozu_id_header)
    for frontend in [*state.http_frontends.values(), *state.https_frontends.values()]:
        cluster = clusters.get(frontend.cluster_id) if frontend.cluster_id else None
        route = Route(frontend, cluster)
        routers.setdefault(frontend.address, Router()).add(RouteRule.of(frontend), route)
    for cluster_id, backends in state.backends.items():
        for backend in backends.values():
            clusters[cluster_id].balancer.upsert_backend(
                backend.backend_id, backend.address, weight=backend.weight, backup=backend.backup
            )
