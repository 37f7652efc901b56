"""Passive detection of a backend that accepts requests and never answers (no health check):
each answer timeout is a failure the workers report, three in a row take the backend down
(one event for 2 workers), and a backend that then answers again comes back up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import configs
from support.backends import HttpBackend, ScriptedBackend
from support.clients import get
from support.daemon import DaemonProcess, EventRecorder, free_port

from sozu_config import ListBackends
from sozu_config.responses import BackendState

pytestmark = pytest.mark.e2e

BACK_TIMEOUT = 1


ANSWERING = threading.Event()  # the hung backend answers again once set


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read requests; say nothing until :data:`ANSWERING`, then answer each with 200."""
    while True:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        if ANSWERING.is_set():
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nback")
            await writer.drain()


@pytest.fixture
def backends() -> Iterator[tuple[HttpBackend, ScriptedBackend]]:
    ANSWERING.clear()
    with HttpBackend("live") as live, ScriptedBackend(silent) as hung:
        yield live, hung


def test_a_backend_that_stops_answering_goes_down_once_and_up_when_it_answers(
    tmp_path: Path, backends: tuple[HttpBackend, ScriptedBackend]
) -> None:
    live, hung = backends
    port = free_port()
    text = configs.document(
        configs.http_listener(port, back_timeout=BACK_TIMEOUT),
        configs.http_cluster(
            "slow",
            port,
            "slow.example",
            [
                configs.backend(live.address, backend_id="live"),
                configs.backend(hung.address, backend_id="hung"),
            ],
        ),
        worker_count=2,
    )
    with DaemonProcess(tmp_path, text).start() as daemon, EventRecorder(daemon) as events:
        mark = events.mark()
        statuses: list[int] = []

        def traffic(stop: threading.Event) -> list[threading.Thread]:
            def client() -> None:
                deadline = time.monotonic() + 30
                while not stop.is_set() and time.monotonic() < deadline:
                    statuses.append(get(port, "/", host="slow.example").status)

            threads = [threading.Thread(target=client) for _ in range(4)]
            for thread in threads:
                thread.start()
            return threads

        def wait(stop: threading.Event, threads: list[threading.Thread]) -> None:
            stop.set()
            for thread in threads:  # a request in flight ends within back_timeout
                thread.join(15)

        stop = threading.Event()
        threads = traffic(stop)
        try:
            down = events.wait_for(
                "backend_down", lambda e: e.backend_id == "hung", since=mark, timeout=20
            )
        finally:
            wait(stop, threads)  # no request left waiting on the silent backend
        assert down.message.startswith("3 failed connections: no answer within 1 s")
        assert down.worker_id is None  # the main process's decision
        [hung_status] = [
            b
            for b in daemon.send(ListBackends(cluster_id="slow")).content.backends  # type: ignore[union-attr]
            if b.backend_id == "hung"
        ]
        assert hung_status.state is BackendState.DOWN and not hung_status.checked
        assert "no answer within 1 s" in hung_status.reason

        # it answers again: real traffic finds it (no active check), and says so once
        ANSWERING.set()
        stop = threading.Event()
        threads = traffic(stop)
        try:
            up = events.wait_for(
                "backend_up", lambda e: e.backend_id == "hung", since=mark, timeout=25
            )
            assert up.message == "an answer came"
            time.sleep(1.0)
        finally:
            wait(stop, threads)
        seen = [(e.kind, e.message) for e in events.snapshot()[mark:] if e.backend_id == "hung"]
        assert [kind for kind, _ in seen] == ["backend_down", "backend_up"], seen
        assert set(statuses) <= {200, 504}, statuses
