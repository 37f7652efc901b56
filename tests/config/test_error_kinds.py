"""Refusals carry a machine-readable kind (and, for a batch, the index of the request at fault)
from the state to the answer on the wire."""

from __future__ import annotations

import pytest

from sozu_config import requests as rq
from sozu_config.models import Cluster, HttpFrontend, HttpListenerConfig, ListenerType
from sozu_config.protocol import (
    MessageTooLarge,
    ProtocolError,
    decode_request,
    decode_response,
    encode_response,
)
from sozu_config.responses import ErrorKind, Response, ResponseStatus
from sozu_config.schema import protocol_schema
from sozu_config.state import (
    AlreadyExists,
    ConfigState,
    InUse,
    InvalidRequest,
    NotFound,
    StateError,
    VersionMismatch,
    failure_from,
)

HTTP = "127.0.0.1:28080"


def small_state() -> ConfigState:
    state = ConfigState()
    state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP)))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="a")))
    state.apply(
        rq.AddHttpFrontend(frontend=HttpFrontend(address=HTTP, hostname="a.test", cluster_id="a"))
    )
    return state


def refusal(state: ConfigState, request: rq.Request) -> StateError:
    before = state.copy()
    version = state.version
    with pytest.raises(StateError) as raised:
        state.apply(request)
    assert state == before
    assert state.version == version
    return raised.value


@pytest.mark.parametrize(
    ("request_", "error_type", "kind"),
    [
        (rq.RemoveCluster(cluster_id="ghost"), NotFound, ErrorKind.NOT_FOUND),
        (
            rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP)),
            AlreadyExists,
            ErrorKind.ALREADY_EXISTS,
        ),
        (rq.RemoveListener(address=HTTP, proxy=ListenerType.HTTP), InUse, ErrorKind.IN_USE),
        (rq.RemoveCertificate(address=HTTP, fingerprint="xyz"), InvalidRequest, ErrorKind.INVALID),
    ],
    ids=["not_found", "already_exists", "in_use", "invalid"],
)
def test_a_single_refusal_has_its_kind_and_no_index(
    request_: rq.Request, error_type: type[StateError], kind: ErrorKind
) -> None:
    error = refusal(small_state(), request_)
    assert type(error) is error_type
    assert error.kind is kind
    assert error.index is None


def test_a_listener_in_use_is_still_an_invalid_request() -> None:
    """The finer kind does not change what callers catching InvalidRequest see."""
    error = refusal(small_state(), rq.RemoveListener(address=HTTP, proxy=ListenerType.HTTP))
    assert isinstance(error, InvalidRequest)
    assert "still has 1 frontend(s)" in error.message


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_refused_batch_names_the_request_at_fault(position: int) -> None:
    state = small_state()
    requests: list[rq.StateRequest] = [
        rq.AddCluster(cluster=Cluster(cluster_id="b")),
        rq.AddCluster(cluster=Cluster(cluster_id="c")),
    ]
    requests.insert(position, rq.RemoveCluster(cluster_id="ghost"))
    error = refusal(state, rq.Batch(requests=requests))
    assert isinstance(error, NotFound)
    assert error.kind is ErrorKind.NOT_FOUND
    assert error.index == position
    assert error.message.startswith(f"request {position + 1} of 3 (remove_cluster ghost) failed")

    response = failure_from(error, prefix="refused by the main process: ")
    assert response.status is ResponseStatus.FAILURE
    assert response.kind is ErrorKind.NOT_FOUND
    assert response.index == position
    assert response.message == f"refused by the main process: {error.message}"
    # the kind and the index travel on the wire
    again = decode_response(encode_response(response.model_copy(update={"id": "7"})))
    assert (again.id, again.kind, again.index) == ("7", ErrorKind.NOT_FOUND, position)


def test_a_batch_refused_for_its_version_has_no_index() -> None:
    state = small_state()
    batch = rq.Batch(
        requests=[rq.AddCluster(cluster=Cluster(cluster_id="b"))],
        expected_version=state.version + 1,
    )
    error = refusal(state, batch)
    assert isinstance(error, VersionMismatch)
    assert error.kind is ErrorKind.VERSION_MISMATCH
    assert error.index is None
    response = failure_from(error)
    assert (response.kind, response.index) == (ErrorKind.VERSION_MISMATCH, None)
    assert response.message == error.message


def test_a_batch_of_a_listener_in_use_keeps_the_finer_kind() -> None:
    state = small_state()
    batch = rq.Batch(
        requests=[
            rq.AddCluster(cluster=Cluster(cluster_id="b")),
            rq.RemoveListener(address=HTTP, proxy=ListenerType.HTTP),
        ]
    )
    error = refusal(state, batch)
    assert (type(error), error.kind, error.index) == (InUse, ErrorKind.IN_USE, 1)


def test_answers_without_a_failure_carry_no_kind_on_the_wire() -> None:
    ok = Response(id="1", status=ResponseStatus.OK, message="done")
    assert b"kind" not in encode_response(ok)
    assert b"index" not in encode_response(ok)
    assert decode_response(b'{"id":"3","status":"failure","message":"old"}').kind is None


def test_failure_builds_a_failure_answer() -> None:
    response = Response.failure("busy", kind=ErrorKind.LIMIT, index=3, id="x")
    assert response.status is ResponseStatus.FAILURE
    assert not response.ok
    assert response.final
    assert (response.id, response.message, response.kind, response.index) == (
        "x",
        "busy",
        ErrorKind.LIMIT,
        3,
    )


def test_protocol_errors_say_their_kind() -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_request(b'{"id":"1","request":{"type":"nonsense"}}')
    assert raised.value.kind is ErrorKind.BAD_REQUEST
    assert MessageTooLarge("too large").kind is ErrorKind.LIMIT


def test_the_schema_describes_kind_and_index() -> None:
    schema = protocol_schema()
    properties = schema["$defs"]["Response"]["properties"]
    assert {"kind", "index"} <= set(properties)
    kinds = [option.get("$ref") for option in properties["kind"]["anyOf"]]
    assert "#/$defs/ErrorKind" in kinds
    assert {"type": "integer"} in properties["index"]["anyOf"]
    assert schema["$defs"]["ErrorKind"]["enum"] == [kind.value for kind in ErrorKind]
    assert "kind" not in schema["$defs"]["Response"].get("required", [])
    assert "index" not in schema["$defs"]["Response"].get("required", [])
