"""The plan API of the library (``sozu_config.plan``), on in-memory states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.certs import make_certificate

from sozu_config import (
    PLAN_GROUPS,
    AddCluster,
    AddTcpFrontend,
    Batch,
    Cluster,
    ConfigState,
    ErrorKind,
    PlanError,
    RemoveTcpFrontend,
    Response,
    ResponseStatus,
    TcpFrontend,
    field_changes,
    load_config_text,
    plan_states,
)
from sozu_config.models import HttpFrontend, PathRule
from sozu_config.plan import saved_plan


def state_of(text: str) -> ConfigState:
    return load_config_text(text).state


HTTP = """
[[listeners]]
protocol = "http"
address = "127.0.0.1:28080"
"""


def test_a_fresh_proxy_counts_each_listener_once() -> None:
    desired = state_of(HTTP + '[clusters.a]\nprotocol = "http"\n')  # activate_listeners: true
    plan = plan_states(ConfigState(version=7), desired)
    assert plan.version == 7  # the live state's version by default
    assert [(c.op, c.kind, c.group) for c in plan.changes] == [
        ("+", "listener", "listeners"),
        ("+", "cluster", "clusters"),
        ("~", "listener", "activations"),
    ]
    assert plan.changes[2].fields == {"active": (False, True)}
    assert plan.summary() == "2 to add, 0 to change, 0 to remove"
    assert plan.counts() == (2, 0, 0)


def test_removing_an_active_listener_counts_its_deactivation_as_part_of_it() -> None:
    live = state_of(HTTP)
    plan = plan_states(live, ConfigState())
    assert [c.description for c in plan.changes] == [
        "deactivate_listener http 127.0.0.1:28080",
        "remove_listener http 127.0.0.1:28080",
    ]
    assert {c.group for c in plan.changes} == {"removals"}
    assert plan.summary() == "0 to add, 0 to change, 1 to remove"
    # deactivating a listener that stays is a change
    kept = state_of("activate_listeners = false\n" + HTTP)
    only = plan_states(live, kept)
    assert [(c.op, c.description) for c in only.changes] == [
        ("~", "deactivate_listener http 127.0.0.1:28080")
    ]
    assert only.summary() == "0 to add, 1 to change, 0 to remove"


def test_a_rebound_tcp_frontend_is_one_change_line() -> None:
    tcp = """
activate_listeners = false
[[listeners]]
protocol = "tcp"
address = "127.0.0.1:28500"
[clusters.a]
protocol = "tcp"
[clusters.b]
protocol = "tcp"
"""
    live = state_of(tcp)
    live.apply(AddTcpFrontend(frontend=TcpFrontend(address="127.0.0.1:28500", cluster_id="a")))
    desired = state_of(tcp)
    desired.apply(AddTcpFrontend(frontend=TcpFrontend(address="127.0.0.1:28500", cluster_id="b")))
    plan = plan_states(live, desired)
    assert [type(r) for r in plan.requests] == [RemoveTcpFrontend, AddTcpFrontend]
    (change,) = plan.changes
    assert change.op == "~"
    assert change.description == "tcp_frontend 127.0.0.1:28500 -> b (removed and added back)"
    assert change.fields == {"cluster_id": ("a", "b")}
    assert change.requests == plan.requests


def test_field_changes_show_nested_keys_and_whole_lists() -> None:
    old = HttpFrontend(address="127.0.0.1:80", hostname="a.example", tags={"env": "prod"})
    new = HttpFrontend(
        address="127.0.0.1:80",
        hostname="a.example",
        tags={"env": "test", "team": "web"},
        headers=[{"position": "request", "key": "X-A", "value": "1"}],
        path=PathRule(kind="prefix", value="/api"),
    )
    assert field_changes(old, new) == {
        "headers": ([], [{"position": "request", "key": "X-A", "value": "1"}]),
        "path.value": ("", "/api"),
        "tags.env": ("prod", "test"),
        "tags.team": (None, "web"),
    }
    assert field_changes(old, old) == {}


def test_a_certificate_rotation_is_shown_by_names_and_short_fingerprints(tmp_path: Path) -> None:
    old = make_certificate("tls.example.com")
    new = make_certificate("tls.example.com", "www.tls.example.com")
    for name, certificate in (("old", old), ("new", new)):
        (tmp_path / f"{name}.pem").write_text(certificate.cert_pem)
        (tmp_path / f"{name}.key").write_text(certificate.key_pem)

    frontend = 'address = "127.0.0.1:28443", hostname = "tls.example.com"'

    def config(name: str) -> str:
        return f"""
activate_listeners = false
[[listeners]]
protocol = "https"
address = "127.0.0.1:28443"
[clusters.tls]
protocol = "http"
frontends = [{{ {frontend}, certificate = "{name}.pem", key = "{name}.key" }}]
"""

    live = load_config_text(config("old"), base_dir=tmp_path).state
    desired = load_config_text(config("new"), base_dir=tmp_path).state
    plan = plan_states(live, desired)
    (change,) = plan.changes
    assert change.op == "~"
    assert change.kind == "certificate"
    assert change.group == "certificates"
    assert change.fields["fingerprint"] == (old.fingerprint[:16], new.fingerprint[:16])
    assert change.fields["names"] == (
        ["tls.example.com"],
        ["tls.example.com", "www.tls.example.com"],
    )
    assert "certificate" not in change.fields  # no PEM text
    document = json.dumps(plan.to_json())
    assert "PRIVATE KEY" not in document
    assert plan.to_json()["requests"][0]["new_certificate"]["key"] is None
    assert new.key_pem not in repr(plan.changes)


def test_to_json_is_deterministic_and_indexes_the_requests() -> None:
    live = state_of(HTTP + '[clusters.a]\nprotocol = "http"\nload_balancing = "RANDOM"\n')
    desired = state_of(HTTP + '[clusters.a]\nprotocol = "http"\n[clusters.b]\nprotocol = "http"\n')
    first = plan_states(live, desired, 41).to_json()
    second = plan_states(live, desired, 41).to_json()
    assert first == second
    assert first["version"] == 41
    assert first["descriptions"] == ["add_cluster a", "add_cluster b"]
    assert [c["requests"] for c in first["changes"]] == [[0], [1]]
    assert first["changes"][0]["fields"] == {"load_balancing": ["random", "round_robin"]}
    assert first["summary"] == {
        "add": 1,
        "change": 1,
        "remove": 0,
        "text": "1 to add, 1 to change, 0 to remove",
    }
    json.dumps(first)  # plain JSON data


def test_groups_follow_the_order_of_the_requests() -> None:
    plan = plan_states(
        state_of(HTTP + '[clusters.gone]\nprotocol = "http"\n'),
        state_of(HTTP + '[clusters.new]\nprotocol = "http"\n'),
    )
    groups = [c.group for c in plan.changes]
    assert groups == ["clusters", "removals"]
    assert all(group in PLAN_GROUPS for group in groups)
    assert PLAN_GROUPS.index("clusters") < PLAN_GROUPS.index("removals")


def test_apply_needs_a_client_unless_there_is_nothing_to_do() -> None:
    same = state_of(HTTP)
    empty = plan_states(same, same)
    assert empty.empty
    response = empty.apply()
    assert response.ok
    assert response.message == "nothing to do"
    plan = plan_states(ConfigState(), state_of(HTTP))
    with pytest.raises(PlanError, match="no connection to a daemon"):
        plan.apply()


def test_the_plan_is_the_diff() -> None:
    live = state_of(HTTP + '[clusters.a]\nprotocol = "http"\n')
    desired = live.copy()
    desired.apply(AddCluster(cluster=Cluster(cluster_id="a", sticky_session=True)))
    plan = plan_states(live, desired)
    assert plan.requests == live.diff(desired)
    assert [r for c in plan.changes for r in c.requests] == plan.requests
    assert plan.live is live
    assert plan.desired is desired


class Recorder:
    """A client that answers without a daemon: what a plan needs of one is ``send``."""

    def __init__(self, answer: Response) -> None:
        self.answer = answer
        self.sent: list[object] = []

    def send(self, request: object) -> Response:
        self.sent.append(request)
        return self.answer


def test_a_plan_is_applied_by_any_sender_and_reads_the_answer_kind() -> None:
    desired = state_of(HTTP + '[clusters.a]\nprotocol = "http"\n')
    plan = plan_states(ConfigState(version=4), desired)
    refused = Recorder(Response.failure("moved on", kind=ErrorKind.VERSION_MISMATCH))
    with pytest.raises(PlanError) as raised:
        plan.apply(refused)
    assert refused.sent == [Batch(requests=plan.requests, expected_version=4)]
    assert raised.value.version_mismatch
    assert raised.value.kind is ErrorKind.VERSION_MISMATCH
    accepted = Recorder(Response(id="1", status=ResponseStatus.OK, message="applied"))
    assert plan.apply(accepted).message == "applied"
    assert accepted.sent == [plan.batch()]


def test_a_saved_plan_reads_back_as_it_was_keys_included(tmp_path: Path) -> None:
    certificate = make_certificate("saved.example.com")
    (tmp_path / "cert.pem").write_text(certificate.cert_pem)
    (tmp_path / "cert.key").write_text(certificate.key_pem)
    desired = load_config_text(
        HTTP
        + """
[[listeners]]
protocol = "https"
address = "127.0.0.1:28443"
[clusters.web]
protocol = "http"
load_balancing = "RANDOM"
[[clusters.web.frontends]]
address = "127.0.0.1:28443"
hostname = "saved.example.com"
certificate = "cert.pem"
key = "cert.key"
""",
        base_dir=tmp_path,
    ).state
    plan = plan_states(ConfigState(version=7), desired)
    saved = json.loads(json.dumps(plan.to_saved()))
    (added,) = [r for r in saved["requests"] if r["type"] == "add_certificate"]
    assert added["certificate"]["key"] == certificate.key_pem  # to apply later, keys are needed
    assert "PRIVATE KEY" not in json.dumps(plan.to_json())  # to show, never
    again = saved_plan(saved)
    assert again.version == 7
    assert again.requests == plan.requests
    assert again.changes == plan.changes
    assert again.summary() == plan.summary()
    assert again.batch() == plan.batch()
    saved["changes"][0]["requests"] = [99]
    with pytest.raises(PlanError, match="not a saved plan"):
        saved_plan(saved)
    with pytest.raises(PlanError, match="not a saved plan"):
        saved_plan({"version": "x"})


def test_an_addition_lists_the_settings_that_are_not_defaults() -> None:
    plan = plan_states(
        ConfigState(),
        state_of(
            HTTP
            + """
[clusters.web]
protocol = "http"
sticky_session = true
frontends = [{ address = "127.0.0.1:28080", hostname = "w.example.com", tags = { a = "b" } }]
backends = [{ address = "127.0.0.1:29001", backend_id = "w-1", backup = true }]
"""
        ),
    )
    attributes = {c.description.split(" ->")[0]: c.attributes for c in plan.changes}
    assert attributes["add_cluster web"] == {"sticky_session": True}
    assert attributes["add_http_frontend w.example.com on 127.0.0.1:28080"] == {"tags.a": "b"}
    assert attributes["add_backend web/w-1 127.0.0.1:29001"] == {"backup": True}
    assert attributes["add_http_listener 127.0.0.1:28080"] == {}
    assert all(not c.attributes for c in plan.changes if c.op != "+")
