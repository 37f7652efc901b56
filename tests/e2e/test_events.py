"""Events pushed to ``subscribe_events`` clients, received through ``CommandClient.events()``.

A subscriber is how tools learn what happens inside the proxy without polling (reference §A.3
item 5): backends going down and coming back, clusters left without a backend, a removed
backend whose last connection closed (the moment it can really be switched off), workers
killed, relaunched and upgraded, configuration changes (naming the request), state files
saved and loaded, and the main process re-executed.

One daemon with a single worker serves the module (one worker makes "the last connection to
a removed backend" and "the backend is down" facts of one process); every test adds the
clusters it needs under its own names, and looks only at the events that follow its own
mark, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received, wait_for
from support.clients import HttpAnswer, HttpConnection, get
from support.daemon import DaemonProcess, EventRecorder, free_port

from sozu_config import (
    AddBackend,
    AddCluster,
    AddHttpFrontend,
    Backend,
    Batch,
    Cluster,
    HttpFrontend,
    ListWorkers,
    LoadState,
    ReloadConfiguration,
    RemoveBackend,
    RemoveCluster,
    SaveState,
    UpgradeMain,
    UpgradeWorker,
)

pytestmark = pytest.mark.e2e


class Proxy:
    """The module's daemon and the address of its HTTP listener."""

    def __init__(self, daemon: DaemonProcess, port: int) -> None:
        self.daemon = daemon
        self.port = port

    def send_ok(self, request: Any) -> str:
        response = self.daemon.send(request)
        assert response.ok, f"{request!r}: {response.message}"
        return response.message

    def add_site(self, cluster_id: str, hostname: str, backends: dict[str, str]) -> None:
        """A cluster with one frontend for ``hostname`` and the ``backends`` (id → address)."""
        requests: list[Any] = [
            AddCluster(cluster=Cluster(cluster_id=cluster_id)),
            AddHttpFrontend(
                frontend=HttpFrontend(
                    address=f"127.0.0.1:{self.port}", hostname=hostname, cluster_id=cluster_id
                )
            ),
        ]
        requests += [
            AddBackend(backend=Backend(cluster_id=cluster_id, backend_id=b, address=a))
            for b, a in backends.items()
        ]
        self.send_ok(Batch(requests=requests))

    def workers(self) -> list[Any]:
        response = self.daemon.send(ListWorkers())
        assert response.ok, response.message
        return list(response.content.workers)  # type: ignore[union-attr]

    def running_worker(self) -> Any:
        running = [w for w in self.workers() if w.run_state == "running"]
        assert len(running) == 1, running
        return running[0]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    port = free_port()
    config = configs.document(configs.http_listener(port), worker_count=1)
    with DaemonProcess(tmp_path_factory.mktemp("events"), config).start() as daemon:
        yield Proxy(daemon, port)


@pytest.fixture
def events(proxy: Proxy) -> Iterator[EventRecorder]:
    with EventRecorder(proxy.daemon) as recorder:
        yield recorder


def repeat_until_event(
    recorder: EventRecorder,
    kind: str,
    predicate: Callable[[Any], bool],
    action: Callable[[], object],
    *,
    since: int,
    timeout: float,
    interval: float = 0.25,
) -> Any:
    """Do ``action`` every ``interval`` seconds until an event of ``kind`` matching
    ``predicate`` arrives (after ``since``); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = recorder.find(kind, predicate, since=since)
        if found:
            return found[0]
        action()
        time.sleep(interval)
    return recorder.wait_for(kind, predicate, since=since, timeout=0.1)


def status_of(port: int, host: str) -> int:
    try:
        return get(port, "/", host=host).status
    except OSError:
        return 0


# --------------------------------------------------------------------------- configuration


def test_configuration_changes_name_their_request(proxy: Proxy, events: EventRecorder) -> None:
    mark = events.mark()
    proxy.send_ok(AddCluster(cluster=Cluster(cluster_id="named")))
    proxy.send_ok(
        AddBackend(backend=Backend(cluster_id="named", backend_id="n1", address="127.0.0.1:9"))
    )
    proxy.send_ok(RemoveBackend(cluster_id="named", backend_id="n1"))
    proxy.send_ok(RemoveCluster(cluster_id="named"))
    refused = proxy.daemon.send(RemoveCluster(cluster_id="named"))
    assert not refused.ok

    def changes() -> list[str]:
        return [e.message for e in events.find("configuration_changed", since=mark)]

    wait_for(lambda: len(changes()) >= 4, timeout=5)
    time.sleep(0.3)  # a refused request must not add a fifth event
    messages = changes()
    assert len(messages) == 4, messages
    assert "add_cluster named" in messages[0]
    assert "add_backend named/n1" in messages[1]
    assert "remove_backend named/n1" in messages[2]
    assert "remove_cluster named" in messages[3]


def test_a_reload_is_announced_with_its_file(proxy: Proxy, events: EventRecorder) -> None:
    daemon = proxy.daemon
    other = daemon.directory / "reload-events.toml"
    other.write_text(
        configs.document(
            daemon.config_path.read_text(),
            configs.cluster("reloaded", backends=[configs.backend(9)]),
        )
    )
    mark = events.mark()
    proxy.send_ok(ReloadConfiguration(path=str(other)))
    reloaded = events.wait_for("configuration_reloaded", since=mark)
    assert str(other) in reloaded.message
    assert events.find("configuration_changed", since=mark), events.snapshot()[mark:]
    # put the daemon back as the module started it
    proxy.send_ok(ReloadConfiguration())


def test_state_saved_and_loaded_name_the_file(
    proxy: Proxy, events: EventRecorder, tmp_path: Path
) -> None:
    path = tmp_path / "events-state.jsonl"
    mark = events.mark()
    proxy.send_ok(SaveState(path=str(path)))
    saved = events.wait_for("state_saved", lambda e: str(path) in e.message, since=mark)
    assert saved.worker_id is None
    proxy.send_ok(LoadState(path=str(path)))
    loaded = events.wait_for("state_loaded", since=mark)
    assert str(path) in loaded.message


# --------------------------------------------------------------------------- backends


def test_no_available_backend(proxy: Proxy, events: EventRecorder) -> None:
    proxy.add_site("empty", "empty.example", {})
    mark = events.mark()
    assert get(proxy.port, "/", host="empty.example").status == 503
    event = events.wait_for("no_available_backends", since=mark)
    assert event.cluster_id == "empty"
    assert event.worker_id == proxy.running_worker().id


def test_removed_backend_is_reported_after_its_last_connection_closes(
    proxy: Proxy, events: EventRecorder
) -> None:
    delay = 2.0
    received_at: list[float] = []

    def slow(request: Received) -> Answer:
        received_at.append(time.monotonic())  # the answer leaves ``delay`` seconds later
        return Answer(body=b"drained", delay=delay if request.target == "/slow" else 0.0)

    with HttpBackend("drain", slow) as backend:
        proxy.add_site("drain", "drain.example", {"leaving": backend.address})
        answers: list[HttpAnswer | BaseException] = []

        def slow_request() -> None:
            try:
                with HttpConnection(proxy.port, timeout=15) as connection:
                    answers.append(connection.request("GET", "/slow", host="drain.example"))
            except BaseException as error:  # reported by the assertion below
                answers.append(error)

        client = threading.Thread(target=slow_request, daemon=True)
        client.start()
        wait_for(lambda: received_at, timeout=5)
        mark = events.mark()
        proxy.send_ok(RemoveBackend(cluster_id="drain", backend_id="leaving"))

        def drained() -> list[Any]:
            return events.find(
                "removed_backend_has_no_connections",
                lambda e: e.backend_id == "leaving",
                since=mark,
            )

        # until the backend answers, its connection is busy: no report yet
        while time.monotonic() < received_at[0] + delay - 0.2:
            assert drained() == [], "reported while a request was still in flight"
            time.sleep(0.05)
        client.join(15)
        assert len(answers) == 1 and isinstance(answers[0], HttpAnswer), answers
        assert answers[0].status == 200 and answers[0].body == b"drained"

        event = events.wait_for(
            "removed_backend_has_no_connections",
            lambda e: e.backend_id == "leaving",
            since=mark,
            timeout=5,
        )
        assert event.cluster_id == "drain"
        assert event.address == backend.address
        # the cluster has no backend left
        assert get(proxy.port, "/", host="drain.example").status == 503


def test_removed_idle_backend_is_reported_at_once(proxy: Proxy, events: EventRecorder) -> None:
    with HttpBackend("idle") as backend:
        proxy.add_site("idle", "idle.example", {"idle-0": backend.address})
        # a request leaves a keep-alive connection to the backend in the worker's pool
        assert get(proxy.port, "/", host="idle.example").body == b"idle"
        mark = events.mark()
        proxy.send_ok(RemoveBackend(cluster_id="idle", backend_id="idle-0"))
        event = events.wait_for(
            "removed_backend_has_no_connections",
            lambda e: e.backend_id == "idle-0",
            since=mark,
            timeout=5,
        )
        assert event.cluster_id == "idle"


def test_backend_down_then_up(proxy: Proxy, events: EventRecorder) -> None:
    """The backend is killed, requests keep coming (each failed connection counts, with the
    backoff in between), and once it is down it is restarted on the same address: the next
    connection attempt finds it up again."""
    backend = HttpBackend("flaky").start()
    address, port = backend.address, backend.port
    proxy.add_site("flaky", "flaky.example", {"flaky-0": address})
    try:
        assert get(proxy.port, "/", host="flaky.example").body == b"flaky"
        backend.stop()
        mark = events.mark()
        statuses: list[int] = []
        down = repeat_until_event(
            events,
            "backend_down",
            lambda e: e.backend_id == "flaky-0",
            lambda: statuses.append(status_of(proxy.port, "flaky.example")),
            since=mark,
            timeout=60,
        )
        assert down.cluster_id == "flaky"
        assert down.address == address
        assert set(statuses) <= {503}, statuses
        # a cluster whose only backend rests in its backoff has no backend available
        assert events.find("no_available_backends", lambda e: e.cluster_id == "flaky", since=mark)
        assert events.find("backend_up", lambda e: e.backend_id == "flaky-0", since=mark) == []

        backend = HttpBackend("flaky").start(port)
        up_mark = events.mark()
        up = repeat_until_event(
            events,
            "backend_up",
            lambda e: e.backend_id == "flaky-0",
            lambda: statuses.append(status_of(proxy.port, "flaky.example")),
            since=up_mark,
            timeout=60,
        )
        assert up.cluster_id == "flaky"
        assert up.address == address
        assert get(proxy.port, "/", host="flaky.example").body == b"flaky"
    finally:
        backend.stop()


# --------------------------------------------------------------------------- workers and main


def test_worker_killed_and_relaunched(proxy: Proxy, events: EventRecorder) -> None:
    victim = proxy.running_worker()
    mark = events.mark()
    os.kill(victim.pid, signal.SIGKILL)
    killed = events.wait_for("worker_killed", since=mark)
    assert killed.worker_id == victim.id
    relaunched = events.wait_for("worker_relaunched", since=mark)
    assert relaunched.worker_id != victim.id
    assert str(victim.id) in relaunched.message
    wait_for(lambda: proxy.running_worker().id == relaunched.worker_id, timeout=10)
    assert proxy.running_worker().pid != victim.pid


def test_worker_upgraded(proxy: Proxy, events: EventRecorder) -> None:
    old = proxy.running_worker()
    mark = events.mark()
    message = proxy.send_ok(UpgradeWorker(worker_id=old.id))
    upgraded = events.wait_for("worker_upgraded", since=mark)
    assert upgraded.worker_id != old.id
    assert str(old.id) in upgraded.message
    assert str(upgraded.worker_id) in message
    wait_for(lambda: proxy.running_worker().id == upgraded.worker_id, timeout=10)
    # an upgrade is no crash
    time.sleep(0.3)
    assert events.find("worker_killed", since=mark) == []
    assert events.find("worker_relaunched", since=mark) == []


def test_main_upgraded(proxy: Proxy) -> None:
    """A subscriber learns that the main process was upgraded, with its (unchanged) pid:
    either its subscription survives the re-execution, or it ends cleanly (no hang) and a
    subscription made again at once (while the new main process starts) is told."""
    daemon = proxy.daemon
    with EventRecorder(daemon, resubscribe=True) as recorder:
        mark = recorder.mark()
        proxy.send_ok(UpgradeMain())
        upgraded = recorder.wait_for("main_upgraded", since=mark, timeout=15)
        assert str(daemon.pid) in upgraded.message
        # the new main process keeps reporting events to its subscribers
        later = recorder.mark()
        proxy.send_ok(AddCluster(cluster=Cluster(cluster_id="after-upgrade")))
        recorder.wait_for(
            "configuration_changed", lambda e: "after-upgrade" in e.message, since=later
        )
