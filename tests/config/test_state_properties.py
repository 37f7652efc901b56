"""Properties of ConfigState over random valid states (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from strategies import state_pairs, states

from sozu_config import requests as rq
from sozu_config.protocol import RequestMessage, decode_request, encode_request
from sozu_config.responses import StateSnapshot
from sozu_config.state import ConfigState

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(state_pairs())
def test_diff_turns_a_into_b_through_valid_states(pair: tuple[ConfigState, ConfigState]) -> None:
    a, b = pair
    plan = a.diff(b)
    current = a.copy()
    for request in plan:
        current.apply(request)  # raises if a step is refused
        assert current.problems() == [], f"invalid intermediate state after {request.describe()}"
    assert current == b
    # listeners keep serving: no step deactivates a listener that stays active in b
    for request in plan:
        if isinstance(request, rq.DeactivateListener):
            target = b.listeners().get(request.address)
            assert (
                target is None
                or not target.active
                or b.listener_type(request.address) != request.proxy
            )


@SETTINGS
@given(states())
def test_diff_with_itself_is_empty(a: ConfigState) -> None:
    assert a.diff(a) == []
    assert a.diff(a.copy()) == []


@SETTINGS
@given(states())
def test_generate_requests_rebuilds_the_state(a: ConfigState) -> None:
    rebuilt = ConfigState()
    for request in a.generate_requests():
        rebuilt.apply(request)
    assert rebuilt == a
    assert rebuilt.problems() == []


@SETTINGS
@given(states(), states())
def test_diff_is_deterministic(a: ConfigState, b: ConfigState) -> None:
    first = [r.model_dump_json() for r in a.diff(b)]
    second = [r.model_dump_json() for r in a.copy().diff(b.copy())]
    assert first == second


@SETTINGS
@given(states())
def test_requests_and_snapshots_survive_json(a: ConfigState) -> None:
    for index, request in enumerate(a.generate_requests()):
        line = encode_request(request, f"id-{index}")
        message = decode_request(line)
        assert isinstance(message, RequestMessage)
        assert message.id == f"id-{index}"
        assert message.request == request
        assert rq.parse_request(json.loads(line)["request"]) == request
    snapshot = a.snapshot()
    again = StateSnapshot.model_validate_json(snapshot.model_dump_json())
    assert again == snapshot
    assert ConfigState.from_snapshot(again) == a


@SETTINGS
@given(states(), states())
def test_snapshot_state_diffs_like_the_original(a: ConfigState, b: ConfigState) -> None:
    """A state read back from query_state (no private keys) plans the same requests."""
    live = ConfigState.from_snapshot(a.snapshot())
    assert [r.model_dump_json() for r in live.diff(b)] == [r.model_dump_json() for r in a.diff(b)]


@SETTINGS
@given(state_pairs())
def test_batch_of_a_diff_is_all_or_nothing(pair: tuple[ConfigState, ConfigState]) -> None:
    a, b = pair
    plan = a.diff(b)
    if not plan:
        return
    good = a.copy()
    good.apply(rq.Batch(requests=plan, expected_version=good.version))
    assert good == b
    # the same plan with a failing request appended changes nothing
    broken = a.copy()
    before_version = broken.version
    bad = [*plan, rq.RemoveCluster(cluster_id="no-such-cluster")]
    try:
        broken.apply(rq.Batch(requests=bad))
    except Exception as error:
        assert "nothing was applied" in str(error)
    else:
        raise AssertionError("the batch should have been refused")
    assert broken == a
    assert broken.version == before_version


def _covered(state: ConfigState, address: str, hostname: str) -> bool:
    for entry in state.certificates.get(address, {}).values():
        for name in entry.names:
            if name == hostname or (
                name.startswith("*.") and hostname.partition(".")[2] == name[2:] and "." in hostname
            ):
                return True
    return False


@SETTINGS
@given(state_pairs())
def test_names_covered_before_and_after_stay_covered_at_every_step(
    pair: tuple[ConfigState, ConfigState],
) -> None:
    """A certificate change never leaves an HTTPS name without a certificate midway (rotation
    is one replace_certificate; additions come before removals)."""
    a, b = pair
    names = {
        (address, name)
        for address in set(a.certificates) & set(b.certificates)
        for entries in (a.certificates[address], b.certificates[address])
        for entry in entries.values()
        for name in entry.names
        if not name.startswith("*")
    }
    stable = {(ad, n) for ad, n in names if _covered(a, ad, n) and _covered(b, ad, n)}
    current = a.copy()
    for request in a.diff(b):
        current.apply(request)
        for address, name in stable:
            if b.listener_type(address) == a.listener_type(address):
                assert _covered(current, address, name), (
                    f"{name} uncovered after {request.describe()}"
                )


@SETTINGS
@given(state_pairs())
def test_routes_that_survive_are_never_interrupted(pair: tuple[ConfigState, ConfigState]) -> None:
    """A frontend present and identical in both states, with its cluster unchanged and its
    listener active in both, stays routable at every step."""
    a, b = pair
    stable = [
        (table, key)
        for table in ("http_frontends", "https_frontends")
        for key, frontend in getattr(a, table).items()
        if getattr(b, table).get(key) == frontend
        and (
            frontend.cluster_id is None
            or a.clusters.get(frontend.cluster_id) == b.clusters.get(frontend.cluster_id)
        )
        and a.listeners()[frontend.address].active
        and b.listeners()[frontend.address].active
    ]
    current = a.copy()
    for request in a.diff(b):
        current.apply(request)
        for table, key in stable:
            frontend = getattr(current, table).get(key)
            assert frontend is not None, f"{key} dropped by {request.describe()}"
            assert current.listeners()[frontend.address].active
