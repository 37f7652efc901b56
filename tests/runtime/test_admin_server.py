"""The admin endpoint served on a real loopback socket, in front of a main process that answers
from a real routing state and canned metric snapshots: authentication, refusals, the JSON
views, and the bound on fan-outs (concurrent scrapes share one)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from support.daemon import free_port

from sozu_config import requests as rq
from sozu_config.config import AdminSettings
from sozu_config.models import Backend, Cluster, HttpFrontend, HttpListenerConfig
from sozu_config.responses import (
    MainProcessInfo,
    MetricsContent,
    Response,
    ResponseStatus,
    RunState,
    StateContent,
    WorkerInfo,
    WorkersContent,
)
from sozu_config.state import ConfigState
from sozu_runtime.admin import AdminListenError, AdminServer
from sozu_runtime.admin.api import HIDDEN, health_view

T = TypeVar("T")
TOKEN = "s3cret-token"
HASH = "a" * 64
WAIT = 10.0  # seconds any single step of a test may take


def routing_state() -> ConfigState:
    state = ConfigState()
    for request in (
        rq.AddHttpListener(listener=HttpListenerConfig(address="127.0.0.1:8080")),
        rq.AddCluster(cluster=Cluster(cluster_id="app", authorized_hashes=[f"admin:{HASH}"])),
        rq.AddCluster(cluster=Cluster(cluster_id="idle")),
        rq.AddHttpFrontend(
            frontend=HttpFrontend(
                address="127.0.0.1:8080", hostname="app.example", cluster_id="app"
            )
        ),
        rq.AddBackend(
            backend=Backend(cluster_id="app", backend_id="app-0", address="127.0.0.1:9001")
        ),
        rq.AddBackend(
            backend=Backend(cluster_id="app", backend_id="app-1", address="127.0.0.1:9002")
        ),
    ):
        state.apply(request)
    return state


def ok(content: Any) -> Response:
    return Response(id="", status=ResponseStatus.OK, content=content)


class Main:
    """A main process answering from a real state, with canned metrics and worker states;
    ``hold`` (when set) keeps every answer waiting until it is set."""

    def __init__(self, states: tuple[RunState, ...] = (RunState.RUNNING, RunState.RUNNING)) -> None:
        self.state = routing_state()
        self.states = states
        self.stopping = False
        self.asked: list[str] = []
        self.hold: asyncio.Event | None = None
        self.metrics = MetricsContent(
            main={"workers": len(states), "configuration.clusters": 2},
            proxying={"http.requests": 5},
            workers={"0": {"proxying": {"http.requests": 5}, "clusters": {}}},
            clusters={
                "app": {
                    "cluster": {"http.requests": 5},
                    "backends": {"app-0": {"http.requests": 5, "bytes_out": 100}},
                }
            },
        )

    async def handle(self, request: rq.QueryRequests) -> Response:
        self.asked.append(request.type)
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(request, rq.QueryMetrics):
            return ok(self.metrics)
        if isinstance(request, rq.QueryState):
            return ok(StateContent(version=self.state.version, state=self.state.snapshot()))
        return ok(self.state.answer_query(request))

    async def status(self, timeout: float) -> Response:
        self.asked.append("status")
        if self.hold is not None:
            await self.hold.wait()
        now = dt.datetime.now(dt.UTC)
        workers = [WorkerInfo(id=i, pid=100 + i, run_state=s) for i, s in enumerate(self.states)]
        main = MainProcessInfo(pid=99, version="0.1.0", started_at=now)
        return ok(WorkersContent(workers=workers, main=main))


def serve(
    test: Callable[[str, Main], Awaitable[T]], main: Main | None = None, token: str | None = None
) -> T:
    """Run ``test(base_url, main)`` against an admin server on an ephemeral loopback port."""
    main = main if main is not None else Main()

    async def run() -> T:
        server = AdminServer(
            AdminSettings(address=f"127.0.0.1:{free_port()}", token=token), main, expected_workers=2
        )
        await server.start()
        try:
            return await asyncio.wait_for(test(f"http://{server.address}", main), WAIT)
        finally:
            await server.stop()

    return asyncio.run(run())


async def get(url: str, **headers: str) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        body = await answer.read()
        document = await answer.json() if answer.content_type == "application/json" else body
        return answer.status, dict(answer.headers), document


# --------------------------------------------------------------------------- authentication


def test_a_configured_token_is_required_on_every_path() -> None:
    async def test(base: str, main: Main) -> None:
        for path in ("/metrics", "/healthz", "/api/v1/state", "/nowhere"):
            status, headers, document = await get(base + path)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in document
        status, headers, _ = await get(base + "/healthz", Authorization="Bearer wrong")
        assert status == 401
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        status, _, _ = await get(base + "/healthz", Authorization=f"Basic {TOKEN}")
        assert status == 401
        status, _, _ = await get(base + "/healthz", Authorization=f"bearer {TOKEN}")
        assert status == 200
        assert main.asked == ["status"]  # refused requests asked nothing

    serve(test, token=TOKEN)


def test_without_a_token_nothing_is_asked_for() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/healthz")
        assert (status, document["status"]) == (200, "ok")

    serve(test)


# --------------------------------------------------------------------------- refusals


def test_unknown_paths_and_other_methods_are_refused_in_json() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/api/v2/state")
        assert status == 404
        assert document == {"error": "not found"}
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/metrics", data=b"x") as answer:
                assert answer.status == 405
                assert "GET" in answer.headers["Allow"]
                assert (await answer.json())["error"]
            async with session.delete(base + "/api/v1/clusters/app") as answer:
                assert answer.status == 405
        assert main.asked == []

    serve(test)


def test_oversized_request_heads_are_refused() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, _ = await get(base + "/healthz", **{"X-Big": "x" * 10_000})
        assert 400 <= status < 500
        status, _, _ = await get(base + "/metrics?" + "q" * 10_000)
        assert 400 <= status < 500
        assert main.asked == []

    serve(test)


def test_the_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = AdminServer(AdminSettings(address=f"127.0.0.1:{port}"), Main(), expected_workers=1)
        with pytest.raises(AdminListenError, match=rf"127\.0\.0\.1:{port}.*in use"):
            asyncio.run(server.start())


# --------------------------------------------------------------------------- bounded cost


def test_concurrent_scrapes_share_one_question() -> None:
    async def test(base: str, main: Main) -> None:
        main.hold = asyncio.Event()
        scrapes = [asyncio.ensure_future(get(base + "/metrics")) for _ in range(8)]
        for _ in range(200):  # bounded: until the first question is asked
            if main.asked:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the other scrapes arrive while it is answered
        main.hold.set()
        answers = await asyncio.gather(*scrapes)
        assert [status for status, _, _ in answers] == [200] * 8
        assert main.asked == ["query_metrics"]
        status, _, _ = await get(base + "/metrics")  # a later scrape asks again
        assert status == 200
        assert main.asked == ["query_metrics", "query_metrics"]

    serve(test)


# --------------------------------------------------------------------------- the views


def test_metrics_are_served_in_the_text_format() -> None:
    async def test(base: str, main: Main) -> None:
        status, headers, body = await get(base + "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        assert "sozu_http_requests_total 5\n" in text
        assert 'sozu_http_requests_total{worker="0"} 5\n' in text
        assert "sozu_workers 2\n" in text

    serve(test)


def test_healthz_fails_when_a_worker_does_not_answer_or_is_missing() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/healthz")
        assert status == 503
        assert document["status"] == "failing"
        assert document["workers"] == {"0": "running", "1": "not_answering"}

    serve(test, Main((RunState.RUNNING, RunState.NOT_ANSWERING)))


def test_health_rules() -> None:
    def verdict(*states: RunState, stopping: bool = False) -> bool:
        workers = [WorkerInfo(id=i, pid=1, run_state=s) for i, s in enumerate(states)]
        healthy, document = health_view(WorkersContent(workers=workers), 2, stopping=stopping)
        assert document["status"] == ("ok" if healthy else "failing")
        return healthy

    running, starting, stopping = RunState.RUNNING, RunState.STARTING, RunState.STOPPING
    assert verdict(running, running)
    assert not verdict(running)  # a worker died: failing until its replacement runs
    assert not verdict(running, starting)
    assert verdict(running, running, starting)  # an upgrade: the old one still serves
    assert verdict(stopping, running, running)
    assert not verdict(running, running, RunState.NOT_ANSWERING)
    assert not verdict(running, running, stopping=True)


def test_status_lists_the_main_process_and_the_workers() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/api/v1/status")
        assert status == 200
        assert document["main"]["pid"] == 99
        assert [w["run_state"] for w in document["workers"]] == ["running", "running"]

    serve(test)


def test_state_hides_password_hashes() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/api/v1/state")
        assert status == 200
        assert document["version"] == main.state.version
        clusters = {c["cluster_id"]: c for c in document["state"]["clusters"]}
        assert clusters["app"]["authorized_hashes"] == [f"admin:{HIDDEN}"]
        assert HASH not in str(document)

    serve(test)


def test_clusters_with_their_counts_and_request_totals() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/api/v1/clusters")
        assert status == 200
        assert document["clusters"] == [
            {"cluster_id": "app", "frontends": 1, "backends": 2, "requests": 5, "tcp_sessions": 0},
            {"cluster_id": "idle", "frontends": 0, "backends": 0, "requests": 0, "tcp_sessions": 0},
        ]

    serve(test)


def test_one_cluster_with_its_frontends_and_backends_metrics() -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(base + "/api/v1/clusters/app")
        assert status == 200
        assert document["cluster"]["cluster_id"] == "app"
        assert document["cluster"]["authorized_hashes"] == [f"admin:{HIDDEN}"]
        assert [(f["protocol"], f["hostname"]) for f in document["frontends"]] == [
            ("http", "app.example")
        ]
        backends = {b["backend_id"]: b for b in document["backends"]}
        assert backends["app-0"]["metrics"] == {"http.requests": 5, "bytes_out": 100}
        assert backends["app-1"]["metrics"] == {}
        assert document["metrics"] == {"http.requests": 5}

    serve(test)


@pytest.mark.parametrize("cluster_id", ["nope", "with%20space"])
def test_an_unknown_cluster_is_a_404_document(cluster_id: str) -> None:
    async def test(base: str, main: Main) -> None:
        status, _, document = await get(f"{base}/api/v1/clusters/{cluster_id}")
        assert status == 404
        assert "no cluster" in document["error"]

    serve(test)
