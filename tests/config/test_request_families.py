"""The request families: each declared once, everything else derived from them."""

from __future__ import annotations

import inspect
from typing import Literal, get_args, get_origin

import pytest
from pydantic import ValidationError

import sozu_config
from sozu_config import requests as rq


def literal_type(model: type) -> str:
    annotation = model.model_fields["type"].annotation  # type: ignore[attr-defined]
    assert get_origin(annotation) is Literal, model
    (value,) = get_args(annotation)
    assert isinstance(value, str)
    return value


def concrete_request_models() -> list[type]:
    """Every class of the module that is a request one can send: a ``_Request`` whose
    ``type`` is one Literal."""
    found = []
    for _, value in inspect.getmembers(rq, inspect.isclass):
        if not issubclass(value, rq._Request) or value is rq._Request:
            continue
        annotation = value.model_fields["type"].annotation
        if get_origin(annotation) is Literal:
            found.append(value)
    return found


FAMILIES = {
    "state": rq.StateRequests,
    "batch": rq.Batch,
    "query": rq.QueryRequests,
    "lifecycle": rq.LifecycleRequests,
}


def test_every_request_model_belongs_to_exactly_one_family() -> None:
    where: dict[type, list[str]] = {}
    for name, family in FAMILIES.items():
        for model in rq.members(family):
            where.setdefault(model, []).append(name)
    models = concrete_request_models()
    assert len(models) == 49
    assert {model: where.get(model, []) for model in models if len(where.get(model, [])) != 1} == {}
    assert set(where) == set(models)


def test_the_type_sets_are_the_literals_of_the_union_members() -> None:
    def literals(*families: object) -> set[str]:
        return {literal_type(m) for family in families for m in rq.members(family)}

    assert literals(rq.StateRequests) == rq.STATE_TYPES
    assert literals(rq.StateRequests, rq.Batch) == rq.MUTATING_TYPES
    assert literals(rq.MutatingRequest) == rq.MUTATING_TYPES
    assert literals(rq.QueryRequests) == literals(rq.QueryRequest) == rq.QUERY_TYPES
    assert literals(rq.LifecycleRequests) == literals(rq.LifecycleRequest) == rq.LIFECYCLE_TYPES
    assert literals(rq.Request) == rq.MUTATING_TYPES | rq.QUERY_TYPES | rq.LIFECYCLE_TYPES
    # disjoint families, and no two models share a type
    total = len(rq.MUTATING_TYPES) + len(rq.QUERY_TYPES) + len(rq.LIFECYCLE_TYPES)
    assert total == len(rq.members(rq.Request)) == len(literals(rq.Request))


def test_the_sets_hold_the_expected_types() -> None:
    assert "batch" in rq.MUTATING_TYPES
    assert "batch" not in rq.STATE_TYPES
    assert {"add_cluster", "remove_certificate", "update_tcp_listener"} <= rq.STATE_TYPES
    assert {"status", "query_state", "query_metrics"} <= rq.QUERY_TYPES
    assert {"soft_stop", "logging", "configure_metrics", "subscribe_events"} <= rq.LIFECYCLE_TYPES
    assert not rq.QUERY_TYPES & rq.LIFECYCLE_TYPES


@pytest.mark.parametrize("model", concrete_request_models(), ids=lambda m: m.__name__)
def test_the_adapters_follow_the_families(model: type) -> None:
    kind = literal_type(model)
    data = {"type": kind}
    try:
        request = model.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError:
        return  # needs fields: the type set tests cover it
    assert type(rq.parse_request(data)) is model
    assert rq.is_state_request(request) is (kind in rq.STATE_TYPES)
    assert rq.is_query(request) is (kind in rq.QUERY_TYPES)
    if kind in rq.STATE_TYPES:
        assert type(rq.STATE_REQUEST_ADAPTER.validate_python(data)) is model
    else:
        with pytest.raises(ValidationError):
            rq.STATE_REQUEST_ADAPTER.validate_python(data)


def test_a_batch_holds_state_requests_only() -> None:
    rq.Batch.model_validate({"requests": [{"type": "remove_cluster", "cluster_id": "a"}]})
    for refused in ({"type": "status"}, {"type": "batch", "requests": []}):
        with pytest.raises(ValidationError):
            rq.Batch.model_validate({"requests": [refused]})


def test_every_request_name_is_public() -> None:
    for model in concrete_request_models():
        assert model.__name__ in rq.__all__
        assert getattr(sozu_config, model.__name__) is model
    for name in ("Request", "StateRequest", "MutatingRequest", "QueryRequest", "LifecycleRequest"):
        assert name in rq.__all__
        assert name in sozu_config.__all__
    assert len(set(rq.__all__)) == len(rq.__all__)
    assert all(hasattr(rq, name) for name in rq.__all__)


@pytest.mark.parametrize("model", rq.members(rq.Request), ids=lambda m: m.__name__)
def test_the_family_guards_follow_the_type_sets(model: type) -> None:
    request = model.model_construct()  # type: ignore[attr-defined]  # no fields needed to ask
    kind = literal_type(model)
    assert rq.is_mutating(request) is (kind in rq.MUTATING_TYPES)
    assert rq.is_state_request(request) is (kind in rq.STATE_TYPES)
    assert rq.is_query(request) is (kind in rq.QUERY_TYPES)
