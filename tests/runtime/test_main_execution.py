"""Executing requests in the main process, without workers: the dispatch, the path of a change
(checks, listening sockets, the main state, the automatic save) and the batch results."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sozu_config import requests as rq
from sozu_config.config import Config
from sozu_config.models import Cluster, HttpListenerConfig, ListenerType
from sozu_config.responses import (
    BatchResults,
    ErrorKind,
    Event,
    EventKind,
    MainProcessInfo,
    Response,
    ResponseStatus,
    StateContent,
    WorkersContent,
)
from sozu_config.state import ConfigState, StateError
from sozu_runtime.health import HealthMonitor
from sozu_runtime.main.execution import Execution, _batch_results
from sozu_runtime.main.persistence import StateFiles
from sozu_runtime.main.pool import WorkerPool
from sozu_runtime.main.replies import fail
from sozu_runtime.main.sockets import ListeningSockets, bind_listener

T = TypeVar("T")


class Bench:
    """An Execution wired as the daemon wires it, with no worker."""

    def __init__(self, config: Config) -> None:
        self.events: list[Event] = []
        self.state = ConfigState(version=1)
        self.sockets = ListeningSockets()
        self.pool = WorkerPool(
            config, self.state, self.sockets, emit=self.events.append, spawn=_drop, stopping=_no
        )
        files = StateFiles(config, self.state, asyncio.get_running_loop(), self.events.append)
        self.execution = Execution(
            config,
            self.state,
            self.pool,
            self.sockets,
            files,
            HealthMonitor(
                self.state,
                emit=self.events.append,
                broadcast=self.pool.broadcast,
                workers=lambda: [w.id for w in self.pool.running(starting=True)],
            ),
            emit=self.events.append,
            spawn=_drop,
            upgrade_worker=_refused_upgrade_worker,
            upgrade_main=_refused_upgrade_main,
            main_info=lambda: MainProcessInfo(pid=os.getpid(), version="test", started_at=STARTED),
        )

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]


STARTED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _drop(coroutine: Coroutine[Any, Any, Any]) -> None:
    coroutine.close()


def _no() -> bool:
    return False


async def _refused_upgrade_worker(worker_id: int) -> Response:
    return fail(f"no running worker {worker_id}", kind=ErrorKind.NOT_FOUND)


async def _refused_upgrade_main() -> Response:
    return fail("not upgraded", kind=ErrorKind.UNAVAILABLE)


def run(tmp_path: Path, test: Callable[[Bench], Awaitable[T]], **settings: Any) -> T:
    config = Config(command_socket=tmp_path / "sozu.sock", **settings)

    async def main() -> T:
        bench = Bench(config)
        try:
            return await test(bench)
        finally:
            bench.sockets.close()

    return asyncio.run(main())


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def add(cluster_id: str) -> rq.AddCluster:
    return rq.AddCluster(cluster=Cluster(cluster_id=cluster_id))


def test_a_change_is_applied_to_the_main_state(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        response = await bench.execution.handle(add("app"))
        assert response.ok, response.message
        assert response.message == "applied to 0 workers"
        assert "app" in bench.state.clusters
        assert bench.kinds() == [EventKind.CONFIGURATION_CHANGED]

    run(tmp_path, test)


def test_a_refused_batch_changes_nothing_and_says_which_request(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        version = bench.state.version
        batch = rq.Batch(requests=[add("one"), rq.RemoveCluster(cluster_id="ghost"), add("two")])
        response = await bench.execution.handle(batch)
        assert response.status is ResponseStatus.FAILURE
        assert response.message.startswith("refused by the main process: request 2 of 3")
        assert (response.kind, response.index) == (ErrorKind.NOT_FOUND, 1)
        assert isinstance(response.content, BatchResults)
        outcomes = [r.message for r in response.content.results]
        assert outcomes[0] == "undone"
        assert outcomes[1].startswith("request 2 of 3 (remove_cluster ghost) failed")
        assert outcomes[2] == "not applied"
        assert bench.state.version == version
        assert not bench.state.clusters
        assert bench.events == []

    run(tmp_path, test)


def test_an_applied_batch_lists_every_request(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        batch = rq.Batch(requests=[add("one"), add("two")], expected_version=1)
        response = await bench.execution.handle(batch)
        assert response.ok, response.message
        assert isinstance(response.content, BatchResults)
        assert response.content.version == bench.state.version == 2
        assert [(r.index, r.request, r.status) for r in response.content.results] == [
            (0, "add_cluster one", ResponseStatus.OK),
            (1, "add_cluster two", ResponseStatus.OK),
        ]

    run(tmp_path, test)


def test_a_version_mismatch_applies_nothing(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        batch = rq.Batch(requests=[add("one"), add("two")], expected_version=99)
        response = await bench.execution.handle(batch)
        assert not response.ok
        assert isinstance(response.content, BatchResults)
        assert [r.message for r in response.content.results] == ["not applied"] * 2
        assert (response.kind, response.index) == (ErrorKind.VERSION_MISMATCH, None)

    run(tmp_path, test)


def test_listener_sockets_follow_activation(tmp_path: Path) -> None:
    address = free_address()
    listener = HttpListenerConfig(address=address)

    async def test(bench: Bench) -> None:
        execution = bench.execution
        assert (await execution.handle(rq.AddHttpListener(listener=listener))).ok
        assert address not in bench.sockets
        activate = rq.ActivateListener(address=address, proxy=ListenerType.HTTP)
        assert (await execution.handle(activate)).ok
        assert address in bench.sockets
        assert accepts(address)
        deactivate = rq.DeactivateListener(address=address, proxy=ListenerType.HTTP)
        assert (await execution.handle(deactivate)).ok
        assert address not in bench.sockets
        assert not accepts(address)

    run(tmp_path, test)


def test_a_busy_address_refuses_the_activation(tmp_path: Path) -> None:
    taken = bind_listener(free_address())
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    listener = HttpListenerConfig(address=address)

    async def test(bench: Bench) -> None:
        batch = rq.Batch(
            requests=[
                rq.AddHttpListener(listener=listener),
                rq.ActivateListener(address=address, proxy=ListenerType.HTTP),
            ]
        )
        response = await bench.execution.handle(batch)
        assert response.message == (
            f"cannot listen on {address}: the address is already in use; nothing was applied"
        )
        assert not response.ok
        assert response.kind is ErrorKind.OS_ERROR
        assert address not in bench.state.listeners()
        assert len(bench.sockets) == 0

    try:
        run(tmp_path, test)
    finally:
        taken.close()


def test_queries_are_answered_from_the_main_state(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        execution = bench.execution
        await execution.handle(add("app"))
        state = await execution.handle(rq.QueryState())
        assert isinstance(state.content, StateContent)
        assert state.content.version == bench.state.version
        workers = await execution.handle(rq.ListWorkers())
        assert isinstance(workers.content, WorkersContent)
        assert workers.content.workers == []
        assert workers.content.main is not None and workers.content.main.version == "test"
        status = await execution.handle(rq.Status())
        assert status.message == "0 of 0 workers answered"
        stop = await execution.handle(rq.HardStop())
        assert stop.message == "stopping 0 workers (hard stop)"
        subscribe = await execution.handle(rq.SubscribeEvents())
        assert subscribe.message == "subscribe_events is not supported by this daemon"
        assert subscribe.kind is ErrorKind.UNSUPPORTED
        metrics = await execution.handle(rq.ConfigureMetrics(configuration="clear"))
        assert metrics.message == "metrics clear"
        upgrade = await execution.handle(rq.UpgradeWorker(worker_id=3))
        assert upgrade.message == "no running worker 3"

    run(tmp_path, test)


def test_save_and_load_state(tmp_path: Path) -> None:
    target = tmp_path / "state.jsonl"
    listener = rq.AddHttpListener(listener=HttpListenerConfig(address="127.0.0.1:1"))

    async def save(bench: Bench) -> None:
        await bench.execution.handle(listener)
        await bench.execution.handle(add("two"))
        response = await bench.execution.handle(rq.SaveState(path=str(target)))
        assert response.message == f"saved 2 requests to {target}"

    async def load(bench: Bench) -> None:
        await bench.execution.handle(listener)
        await bench.execution.handle(add("one"))
        response = await bench.execution.handle(rq.LoadState(path=str(target)))
        assert response.ok, response.message
        assert response.message == f"loaded {target}: 1 requests applied, 1 skipped"
        assert isinstance(response.content, BatchResults)
        (skipped,) = response.content.results
        assert (skipped.index, skipped.request) == (1, "add_http_listener 127.0.0.1:1")
        assert skipped.message.startswith("refused by the main process")
        assert set(bench.state.clusters) == {"one", "two"}
        assert bench.kinds()[-1] is EventKind.STATE_LOADED

    run(tmp_path, save)
    run(tmp_path, load)


def test_automatic_save_after_a_change(tmp_path: Path) -> None:
    saved = tmp_path / "saved.jsonl"

    async def test(bench: Bench) -> None:
        response = await bench.execution.handle(add("app"))
        assert response.message == "applied to 0 workers; state saved (1 requests)"
        assert saved.exists()
        assert bench.kinds() == [EventKind.CONFIGURATION_CHANGED, EventKind.STATE_SAVED]

    run(tmp_path, test, saved_state=saved, automatic_state_save=True)


def test_the_refused_request_of_a_batch_is_the_index_the_state_gives(tmp_path: Path) -> None:
    batch = rq.Batch(requests=[add("a"), add("b"), rq.RemoveCluster(cluster_id="ghost")])
    with pytest.raises(StateError) as refused:
        ConfigState().apply(batch)
    assert refused.value.index == 2

    async def test(bench: Bench) -> None:
        response = await bench.execution.handle(batch)
        assert (response.kind, response.index) == (ErrorKind.NOT_FOUND, 2)
        assert isinstance(response.content, BatchResults)
        assert [r.message for r in response.content.results] == [
            "undone",
            "undone",
            refused.value.message,
        ]

    run(tmp_path, test)


def test_batch_results_of_a_refusal() -> None:
    batch = rq.Batch(requests=[add("a"), add("b"), add("c")])
    results = _batch_results(batch, 1, "why")
    assert [(r.index, r.request, r.status, r.message) for r in results] == [
        (0, "add_cluster a", ResponseStatus.FAILURE, "undone"),
        (1, "add_cluster b", ResponseStatus.FAILURE, "why"),
        (2, "add_cluster c", ResponseStatus.FAILURE, "not applied"),
    ]
    assert [r.message for r in _batch_results(batch, None, "why")] == ["not applied"] * 3


# --------------------------------------------------------------------------- failure kinds


def test_a_request_no_worker_could_serve_is_invalid(tmp_path: Path) -> None:
    broken = rq.AddCluster(cluster=Cluster(cluster_id="broken", answers={503: ""}))

    async def test(bench: Bench) -> None:
        alone = await bench.execution.handle(broken)
        assert (alone.status, alone.kind, alone.index) == (
            ResponseStatus.FAILURE,
            ErrorKind.INVALID,
            None,
        )
        batch = await bench.execution.handle(rq.Batch(requests=[add("fine"), broken]))
        assert (batch.kind, batch.index) == (ErrorKind.INVALID, 1)
        assert batch.message.startswith("request 2 of 2 (add_cluster broken) refused")
        assert not bench.state.clusters

    run(tmp_path, test)


def test_a_state_query_refusal_carries_its_kind(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        query = rq.QueryCertificates(fingerprint="not hex")
        response = await bench.execution.handle(query)
        assert (response.status, response.kind) == (ResponseStatus.FAILURE, ErrorKind.INVALID)
        assert "is not a SHA-256 fingerprint" in response.message

    run(tmp_path, test)


def test_state_files_that_cannot_be_written_or_read(tmp_path: Path) -> None:
    nowhere = tmp_path / "missing" / "state.jsonl"
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"type": "no_such_request"}\n')

    async def test(bench: Bench) -> None:
        saved = await bench.execution.handle(rq.SaveState(path=str(nowhere)))
        assert (saved.status, saved.kind) == (ResponseStatus.FAILURE, ErrorKind.OS_ERROR)
        assert saved.message.startswith(f"cannot save the state to {nowhere}")
        missing = await bench.execution.handle(rq.LoadState(path=str(nowhere)))
        assert (missing.status, missing.kind) == (ResponseStatus.FAILURE, ErrorKind.OS_ERROR)
        invalid = await bench.execution.handle(rq.LoadState(path=str(garbage)))
        assert (invalid.status, invalid.kind) == (ResponseStatus.FAILURE, ErrorKind.INVALID)
        assert invalid.message.startswith(f"loading the state stopped at {garbage}, line 1")

    run(tmp_path, test)


def test_a_change_that_could_not_be_saved_is_not_saved(tmp_path: Path) -> None:
    async def test(bench: Bench) -> None:
        response = await bench.execution.handle(add("app"))
        assert (response.status, response.kind) == (ResponseStatus.FAILURE, ErrorKind.NOT_SAVED)
        assert response.message.endswith("the change is live but not saved")
        assert "app" in bench.state.clusters

    saved = tmp_path / "missing" / "saved.jsonl"
    run(tmp_path, test, saved_state=saved, automatic_state_save=True)


def test_reload_failures(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("this is not = = toml\n")

    async def test(bench: Bench) -> None:
        nothing = await bench.execution.handle(rq.ReloadConfiguration())
        assert (nothing.kind, nothing.message) == (
            ErrorKind.UNSUPPORTED,
            "no configuration file to reload",
        )
        invalid = await bench.execution.handle(rq.ReloadConfiguration(path=str(broken)))
        assert invalid.kind is ErrorKind.INVALID
        assert invalid.message.startswith("the configuration was not reloaded: ")

    run(tmp_path, test)
