"""CommandClient and AsyncCommandClient against a small real daemon on a unix socket.

The daemon is an asyncio unix server running in a thread, on a socket in ``tmp_path``. Each
test gives it a behaviour: a function that maps each request it reads to the bytes it writes
back and what it does next (go on reading, close the connection, or hang).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from sozu_config import requests as rq
from sozu_config.client import (
    AsyncCommandClient,
    ClientError,
    CommandClient,
    CommandFailed,
    CommandTimeout,
    DaemonUnreachable,
)
from sozu_config.live import fetch_live_state, load_plan, mutation_timeout
from sozu_config.models import Backend, Cluster
from sozu_config.plan import PlanError, plan_states
from sozu_config.protocol import ProtocolError, RequestMessage, decode_request, encode_response
from sozu_config.responses import (
    BatchResult,
    BatchResults,
    ErrorKind,
    Event,
    EventContent,
    EventKind,
    RequestCounts,
    Response,
    ResponseStatus,
    StateContent,
)
from sozu_config.state import ConfigState, InvalidRequest

Next = Literal["continue", "close", "hang", "late"]
"""After reading a request: go on, close the connection, stop answering, or write the answer
only after LATE seconds (then go on)."""
LATE = 0.8
Behaviour = Callable[[RequestMessage], tuple[list[bytes], Next]]


@dataclass
class Daemon:
    """A command socket served by an asyncio loop in a thread."""

    path: Path
    behaviour: Behaviour
    connections: int = 0
    disconnected: int = 0
    """Connections the client closed (end of file read)."""
    received: list[RequestMessage] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Daemon:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(
                asyncio.start_unix_server(self._serve, path=str(self.path))
            )
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                server.close()
                self._loop.run_until_complete(server.wait_closed())
                for task in asyncio.all_tasks(self._loop):
                    task.cancel()
                self._loop.run_until_complete(asyncio.sleep(0))
                self._loop.close()

        self._thread = threading.Thread(target=run, name="test-daemon", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the test daemon did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    self.disconnected += 1
                    break
                message = decode_request(line)
                self.received.append(message)
                chunks, next_step = self.behaviour(message)
                if next_step == "late":
                    await asyncio.sleep(LATE)
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                if next_step == "close":
                    break
                if next_step == "hang":
                    await asyncio.sleep(3600)
        except (asyncio.CancelledError, ConnectionError):
            pass  # the test is over, or the client went away: nothing to report
        finally:
            writer.close()


Serve = Callable[[Behaviour], Daemon]
"""Start a daemon with a behaviour on the test's socket (stopped at the end of the test)."""


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    path = tmp_path / "sozu.sock"
    assert len(str(path)) < 100  # unix socket paths are limited to about 108 bytes
    return path


@pytest.fixture
def serve(socket_path: Path) -> Iterator[Serve]:
    daemons: list[Daemon] = []

    def start(behaviour: Behaviour) -> Daemon:
        daemon = Daemon(socket_path, behaviour).start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def line(response: Response) -> bytes:
    return encode_response(response)


def progress_then_ok(message: RequestMessage) -> tuple[list[bytes], Next]:
    """Two processing answers, then an ok carrying the request type in its content."""
    steps = [Response(id=message.id, status="processing", message=f"step {n}") for n in (1, 2)]
    final = Response(
        id=message.id,
        status="ok",
        message=f"done {message.request.type}",
        content=RequestCounts(counts={message.request.type: 1}),
    )
    return [line(r) for r in [*steps, final]], "continue"


# --------------------------------------------------------------------------- answers


def test_send_returns_the_final_answer_after_the_processing_ones(
    serve: Serve, socket_path: Path
) -> None:
    daemon = serve(progress_then_ok)
    seen: list[Response] = []
    with CommandClient(socket_path, timeout=5) as client:
        response = client.send(rq.Status(), on_processing=seen.append)
    assert response.status is ResponseStatus.OK
    assert response.message == "done status"
    assert response.content == RequestCounts(counts={"status": 1})
    assert [r.message for r in seen] == ["step 1", "step 2"]
    assert all(r.status is ResponseStatus.PROCESSING for r in seen)
    assert {r.id for r in seen} == {response.id} == {daemon.received[0].id}


def test_responses_yields_every_answer_with_the_final_one_last(
    serve: Serve, socket_path: Path
) -> None:
    serve(progress_then_ok)
    with CommandClient(socket_path, timeout=5) as client:
        answers = list(client.responses(rq.ListWorkers(), request_id="mine-1"))
    assert [a.status for a in answers] == ["processing", "processing", "ok"]
    assert {a.id for a in answers} == {"mine-1"}


def test_several_requests_share_one_connection(serve: Serve, socket_path: Path) -> None:
    daemon = serve(progress_then_ok)
    requests = [rq.Status(), rq.ListListeners(), rq.CountRequests()]
    with CommandClient(socket_path, timeout=5) as client:
        answers = [client.send(request) for request in requests]
    assert [a.message for a in answers] == [f"done {r.type}" for r in requests]
    assert daemon.connections == 1
    assert [m.request for m in daemon.received] == requests
    assert len({m.id for m in daemon.received}) == 3  # each request has its own id


def test_a_failure_answer_is_returned_not_raised(serve: Serve, socket_path: Path) -> None:
    def refuse(message: RequestMessage) -> tuple[list[bytes], Next]:
        return [line(Response(id=message.id, status="failure", message="no"))], "continue"

    serve(refuse)
    with CommandClient(socket_path, timeout=5) as client:
        response = client.send(rq.RemoveCluster(cluster_id="c"))
    assert response.status is ResponseStatus.FAILURE
    assert response.message == "no"
    assert not response.ok


def test_an_answer_split_over_several_writes_is_reassembled(
    serve: Serve, socket_path: Path
) -> None:
    def dribble(message: RequestMessage) -> tuple[list[bytes], Next]:
        data = line(Response(id=message.id, status="ok", message="x" * 5000))
        return [data[i : i + 7] for i in range(0, len(data), 7)], "continue"

    serve(dribble)
    with CommandClient(socket_path, timeout=5) as client:
        assert client.send(rq.Status()).message == "x" * 5000


# --------------------------------------------------------------------------- failures


def test_no_final_answer_in_time_raises_command_timeout(serve: Serve, socket_path: Path) -> None:
    def hang(message: RequestMessage) -> tuple[list[bytes], Next]:
        return [line(Response(id=message.id, status="processing"))], "hang"

    serve(hang)
    started = time.monotonic()
    with (
        pytest.raises(CommandTimeout, match="no answer"),
        CommandClient(socket_path, timeout=0.3) as client,
    ):
        client.send(rq.Status())
    assert time.monotonic() - started < 5


def test_after_a_timeout_the_next_request_gets_its_own_answer(
    serve: Serve, socket_path: Path
) -> None:
    """A timed-out request may still be answered later; that stale answer must not be taken for
    the answer to the next request, nor blamed on the daemon as a protocol error."""

    def first_late(message: RequestMessage) -> tuple[list[bytes], Next]:
        answer = [line(Response(id=message.id, status="ok", message=message.request.type))]
        return answer, ("late" if message.request.type == "status" else "continue")

    serve(first_late)
    with CommandClient(socket_path, timeout=LATE / 3) as client:
        with pytest.raises(CommandTimeout):
            client.send(rq.Status())
        time.sleep(LATE)  # the late answer to the status request arrives meanwhile
        client.timeout = 5
        response = client.send(rq.ListWorkers())
    assert response.message == "list_workers"


def test_an_absent_socket_file_raises_daemon_unreachable(socket_path: Path) -> None:
    with pytest.raises(DaemonUnreachable) as raised:
        CommandClient(socket_path, timeout=1).send(rq.Status())
    message = str(raised.value)
    assert str(socket_path) in message
    assert "does not exist" in message
    assert isinstance(raised.value, ClientError)


def test_a_stale_socket_file_raises_daemon_unreachable(socket_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # the file stays, nobody listens
    assert socket_path.exists()
    with pytest.raises(DaemonUnreachable) as raised:
        CommandClient(socket_path, timeout=1).send(rq.Status())
    message = str(raised.value)
    assert str(socket_path) in message
    assert "nobody listens" in message


def test_an_answer_that_is_not_json_raises_protocol_error(serve: Serve, socket_path: Path) -> None:
    serve(lambda message: ([b"this is not json\n"], "continue"))
    with (
        pytest.raises(ProtocolError, match="invalid response"),
        CommandClient(socket_path, timeout=5) as client,
    ):
        client.send(rq.Status())


def test_an_answer_to_another_request_raises_protocol_error(
    serve: Serve, socket_path: Path
) -> None:
    serve(lambda message: ([line(Response(id="someone-else", status="ok"))], "continue"))
    with (
        pytest.raises(ProtocolError, match="'someone-else'") as raised,
        CommandClient(socket_path, timeout=5) as client,
    ):
        client.send(rq.Status())
    assert "instead of" in str(raised.value)


def test_the_daemon_closing_mid_answer_raises_daemon_unreachable(
    serve: Serve, socket_path: Path
) -> None:
    def cut(message: RequestMessage) -> tuple[list[bytes], Next]:
        whole = line(Response(id=message.id, status="ok", message="complete"))
        return [whole[: len(whole) // 2]], "close"

    serve(cut)
    with (
        pytest.raises(DaemonUnreachable, match="closed the connection"),
        CommandClient(socket_path, timeout=5) as client,
    ):
        client.send(rq.Status())


def test_the_daemon_closing_without_answer_raises_daemon_unreachable(
    serve: Serve, socket_path: Path
) -> None:
    serve(lambda message: ([], "close"))
    with pytest.raises(DaemonUnreachable), CommandClient(socket_path, timeout=5) as client:
        client.send(rq.Status())


# --------------------------------------------------------------------------- events


def events_then_ok(message: RequestMessage) -> tuple[list[bytes], Next]:
    if message.request.type != "subscribe_events":
        return [line(Response(id=message.id, status="failure", message="?"))], "continue"
    events = [
        Event(kind=EventKind.BACKEND_DOWN, cluster_id="c1", backend_id="b1", address="10.0.0.1:80"),
        Event(kind=EventKind.BACKEND_UP, cluster_id="c1", backend_id="b1"),
        Event(kind=EventKind.WORKER_KILLED, worker_id=2, message="signal 9"),
    ]
    chunks = [
        line(Response(id=message.id, status="processing", content=EventContent(event=e)))
        for e in events
    ]
    # a processing answer without an event is not an event
    chunks.insert(1, line(Response(id=message.id, status="processing", message="subscribed")))
    chunks.append(line(Response(id=message.id, status="ok")))
    return chunks, "continue"


def test_events_yields_event_objects(serve: Serve, socket_path: Path) -> None:
    daemon = serve(events_then_ok)
    with CommandClient(socket_path, timeout=5) as client:
        events = list(client.events())
        assert client.timeout == 5  # restored after the subscription
    assert all(isinstance(e, Event) for e in events)
    assert [e.kind for e in events] == [
        EventKind.BACKEND_DOWN,
        EventKind.BACKEND_UP,
        EventKind.WORKER_KILLED,
    ]
    assert events[0].address == "10.0.0.1:80"
    assert events[2].worker_id == 2
    assert daemon.received[0].request == rq.SubscribeEvents()


# --------------------------------------------------------------------------- asyncio client


def test_async_send_returns_the_final_answer_after_the_processing_ones(
    serve: Serve, socket_path: Path
) -> None:
    daemon = serve(progress_then_ok)
    seen: list[Response] = []

    async def scenario() -> list[Response]:
        async with AsyncCommandClient(socket_path, timeout=5) as client:
            first = await client.send(rq.Status(), on_processing=seen.append)
            second = await client.send(rq.QueryClustersHashes())
            return [first, second]

    first, second = asyncio.run(scenario())
    assert first.message == "done status"
    assert second.message == "done query_clusters_hashes"
    assert [r.message for r in seen] == ["step 1", "step 2"]
    assert daemon.connections == 1
    assert len(daemon.received) == 2


def test_async_timeout_raises_command_timeout(serve: Serve, socket_path: Path) -> None:
    serve(lambda message: ([], "hang"))

    async def scenario() -> None:
        async with AsyncCommandClient(socket_path, timeout=0.3) as client:
            await client.send(rq.Status())

    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        asyncio.run(scenario())
    assert time.monotonic() - started < 5


def test_async_after_a_timeout_the_next_request_gets_its_own_answer(
    serve: Serve, socket_path: Path
) -> None:
    def first_late(message: RequestMessage) -> tuple[list[bytes], Next]:
        answer = [line(Response(id=message.id, status="ok", message=message.request.type))]
        return answer, ("late" if message.request.type == "status" else "continue")

    serve(first_late)

    async def scenario() -> Response:
        async with AsyncCommandClient(socket_path, timeout=LATE / 3) as client:
            with pytest.raises(CommandTimeout):
                await client.send(rq.Status())
            await asyncio.sleep(LATE)
            client.timeout = 5
            return await client.send(rq.ListWorkers())

    assert asyncio.run(scenario()).message == "list_workers"


@pytest.mark.parametrize("stale", [False, True], ids=["absent", "stale"])
def test_async_unreachable_daemon(socket_path: Path, stale: bool) -> None:
    if stale:
        leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        leftover.bind(str(socket_path))
        leftover.close()

    async def scenario() -> None:
        await AsyncCommandClient(socket_path, timeout=1).send(rq.Status())

    with pytest.raises(DaemonUnreachable) as raised:
        asyncio.run(scenario())
    assert str(socket_path) in str(raised.value)
    assert ("nobody listens" if stale else "does not exist") in str(raised.value)


@pytest.mark.parametrize(
    ("behaviour", "error", "match"),
    [
        (lambda m: ([b"{not json}\n"], "continue"), ProtocolError, "invalid response"),
        (
            lambda m: ([encode_response(Response(id="other", status="ok"))], "continue"),
            ProtocolError,
            "'other'",
        ),
        (lambda m: ([b'{"id":"' + m.id.encode()], "close"), DaemonUnreachable, "closed"),
    ],
    ids=["garbage", "other-id", "closed-mid-answer"],
)
def test_async_protocol_failures(
    serve: Serve,
    socket_path: Path,
    behaviour: Behaviour,
    error: type[Exception],
    match: str,
) -> None:
    serve(behaviour)

    async def scenario() -> None:
        async with AsyncCommandClient(socket_path, timeout=5) as client:
            await client.send(rq.Status())

    with pytest.raises(error, match=match):
        asyncio.run(scenario())


def test_async_events_yields_event_objects(serve: Serve, socket_path: Path) -> None:
    serve(events_then_ok)

    async def scenario() -> list[Event]:
        async with AsyncCommandClient(socket_path, timeout=5) as client:
            return [event async for event in client.events()]

    events = asyncio.run(scenario())
    assert [e.kind for e in events] == [
        EventKind.BACKEND_DOWN,
        EventKind.BACKEND_UP,
        EventKind.WORKER_KILLED,
    ]
    assert all(isinstance(e, Event) for e in events)


def test_request_ids_are_unique_across_clients(serve: Serve, socket_path: Path) -> None:
    daemon = serve(progress_then_ok)
    for _ in itertools.repeat(None, 3):
        with CommandClient(socket_path, timeout=5) as client:
            client.send(rq.Status())
    assert daemon.connections == 3
    assert len({m.id for m in daemon.received}) == 3


# --------------------------------------------------------------------------- error kinds


def refuse_with(kind: ErrorKind | None, index: int | None, message: str = "refused") -> Behaviour:
    def behaviour(request: RequestMessage) -> tuple[list[bytes], Next]:
        answer = Response.failure(message, kind=kind, index=index, id=request.id)
        return [line(answer)], "continue"

    return behaviour


def test_send_returns_the_kind_and_index_of_a_failure(serve: Serve, socket_path: Path) -> None:
    serve(refuse_with(ErrorKind.NOT_FOUND, 2))
    with CommandClient(socket_path, timeout=5) as client:
        response = client.send(rq.RemoveCluster(cluster_id="c"))
    assert response.status is ResponseStatus.FAILURE
    assert (response.kind, response.index) == (ErrorKind.NOT_FOUND, 2)


def test_call_raises_command_failed_with_the_kind_and_index(
    serve: Serve, socket_path: Path
) -> None:
    serve(refuse_with(ErrorKind.IN_USE, 4, "still used"))
    with CommandClient(socket_path, timeout=5) as client, pytest.raises(CommandFailed) as raised:
        client.call(rq.RemoveCluster(cluster_id="c"))
    error = raised.value
    assert isinstance(error, ClientError)
    assert (error.kind, error.index, error.message) == (ErrorKind.IN_USE, 4, "still used")
    assert str(error) == "still used"
    assert error.response.status is ResponseStatus.FAILURE


def test_call_returns_an_ok_answer(serve: Serve, socket_path: Path) -> None:
    serve(progress_then_ok)
    seen: list[Response] = []
    with CommandClient(socket_path, timeout=5) as client:
        response = client.call(rq.Status(), on_processing=seen.append)
    assert response.ok
    assert len(seen) == 2


def test_a_failure_from_a_daemon_without_kinds_has_none(serve: Serve, socket_path: Path) -> None:
    serve(lambda m: ([b'{"id":"' + m.id.encode() + b'","status":"failure"}\n'], "continue"))
    with CommandClient(socket_path, timeout=5) as client, pytest.raises(CommandFailed) as raised:
        client.call(rq.Status())
    assert (raised.value.kind, raised.value.index) == (None, None)
    assert raised.value.message == "the daemon refused the request"


def test_async_call_raises_command_failed_with_the_kind(serve: Serve, socket_path: Path) -> None:
    serve(refuse_with(ErrorKind.UNSUPPORTED, None))

    async def scenario() -> None:
        async with AsyncCommandClient(socket_path, timeout=5) as client:
            await client.call(rq.UpgradeMain())

    with pytest.raises(CommandFailed) as raised:
        asyncio.run(scenario())
    assert (raised.value.kind, raised.value.index) == (ErrorKind.UNSUPPORTED, None)


# --------------------------------------------------------------------------- plans on a daemon


def small_plan() -> tuple[ConfigState, ConfigState]:
    live = ConfigState(version=5)
    desired = ConfigState()
    desired.apply(rq.AddCluster(cluster=Cluster(cluster_id="a")))
    desired.apply(rq.AddCluster(cluster=Cluster(cluster_id="b")))
    return live, desired


def test_a_plan_is_sent_as_one_guarded_batch(serve: Serve, socket_path: Path) -> None:
    def accept(message: RequestMessage) -> tuple[list[bytes], Next]:
        batch = message.request
        assert isinstance(batch, rq.Batch)
        results = [
            BatchResult(index=i, request=r.describe(), status=ResponseStatus.OK)
            for i, r in enumerate(batch.requests)
        ]
        content = BatchResults(version=6, results=results)
        return [line(Response(id=message.id, status="ok", content=content))], "continue"

    daemon = serve(accept)
    plan = plan_states(*small_plan())
    with CommandClient(socket_path, timeout=5) as client:
        response = plan.apply(client)
    assert response.ok
    (sent,) = [m.request for m in daemon.received]
    assert sent == rq.Batch(requests=plan.requests, expected_version=5) == plan.batch()


@pytest.mark.parametrize(
    ("kind", "message", "mismatch"),
    [
        (ErrorKind.VERSION_MISMATCH, "the state moved", True),
        (ErrorKind.NOT_FOUND, "refused: expected version of the truth", False),
        (None, "the state changed (expected version 5, now 6): nothing was applied", False),
        (None, "refused by the main process", False),
    ],
    ids=["kind-says-so", "kind-wins-over-words", "words-are-never-read", "kindless-other"],
)
def test_a_refused_plan_says_its_kind(
    serve: Serve,
    socket_path: Path,
    kind: ErrorKind | None,
    message: str,
    mismatch: bool,
) -> None:
    serve(refuse_with(kind, 1 if kind is ErrorKind.NOT_FOUND else None, message))
    plan = plan_states(*small_plan())
    with CommandClient(socket_path, timeout=5) as client, pytest.raises(PlanError) as raised:
        plan.apply(client)
    error = raised.value
    assert error.message == message
    assert error.version_mismatch is mismatch
    assert error.kind == (ErrorKind.VERSION_MISMATCH if mismatch else kind)
    assert error.index == (1 if kind is ErrorKind.NOT_FOUND else None)
    assert error.response is not None
    assert error.response.kind is kind


def test_an_empty_plan_is_not_sent(serve: Serve, socket_path: Path) -> None:
    daemon = serve(progress_then_ok)
    live, _ = small_plan()
    with CommandClient(socket_path, timeout=5) as client:
        response = plan_states(live, live.copy()).apply(client)
    assert (response.ok, response.message) == (True, "nothing to do")
    assert daemon.received == []


def test_fetch_live_state_reads_the_state_and_its_version(serve: Serve, socket_path: Path) -> None:
    _, desired = small_plan()

    def state(message: RequestMessage) -> tuple[list[bytes], Next]:
        assert message.request == rq.QueryState()
        content = StateContent(version=42, state=desired.snapshot())
        return [line(Response(id=message.id, status="ok", content=content))], "continue"

    serve(state)
    with CommandClient(socket_path, timeout=5) as client:
        live = fetch_live_state(client)
    assert live == desired
    assert live.version == 42


def test_fetch_live_state_refused_raises_plan_error(serve: Serve, socket_path: Path) -> None:
    serve(refuse_with(ErrorKind.UNAVAILABLE, None, "stopping"))
    with CommandClient(socket_path, timeout=5) as client, pytest.raises(PlanError) as raised:
        fetch_live_state(client)
    assert raised.value.message == "the daemon did not give its state: stopping"
    assert raised.value.kind is ErrorKind.UNAVAILABLE


def test_fetch_live_state_of_an_inconsistent_snapshot_raises_state_error(
    serve: Serve, socket_path: Path
) -> None:
    def orphan(message: RequestMessage) -> tuple[list[bytes], Next]:
        orphan = Backend(cluster_id="ghost", backend_id="b", address="10.0.0.1:80")
        broken = ConfigState().snapshot().model_copy(update={"backends": [orphan]})
        content = StateContent(version=1, state=broken)
        return [line(Response(id=message.id, status="ok", content=content))], "continue"

    serve(orphan)
    with (
        CommandClient(socket_path, timeout=5) as client,
        pytest.raises(InvalidRequest, match="inconsistent snapshot: backends of missing cluster"),
    ):
        fetch_live_state(client)


def test_mutation_timeout_is_at_least_the_default_wait() -> None:
    assert mutation_timeout(0) is None
    assert mutation_timeout(1_000) == 30.0
    assert mutation_timeout(45_000) == 45.0


def test_load_plan_closes_its_own_connection_when_the_state_is_refused(
    serve: Serve, socket_path: Path, tmp_path: Path
) -> None:
    daemon = serve(refuse_with(ErrorKind.INTERNAL, None, "no state for you"))
    config = tmp_path / "config.toml"
    config.write_text(f"command_socket = {str(socket_path)!r}\n")
    with pytest.raises(PlanError, match="no state for you") as raised:
        load_plan(config)
    # the traceback (kept by ``raised``) holds load_plan's frame: only an explicit close ends
    # the connection while the caller still looks at the error
    assert raised.traceback
    deadline = time.monotonic() + 5
    while daemon.disconnected < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert daemon.disconnected == 1
