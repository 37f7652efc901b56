"""Upgrades and process lifecycle while clients keep coming: no request is lost.

"Never ending software" (reference design-motivation; DESIGN.md §3): a binary upgrade must not
lose traffic, and a crash must not bring the proxy down. Every test here runs the
:class:`~support.load.LoadGenerator` — keep-alive clients, clients opening a connection per
request, and one long download streamed slowly by the backend — and asserts, request by
request, that none failed and no connection was refused, and that the download completed:

* ``upgrade_worker`` of every worker in turn (a new worker takes the sockets and the state;
  the old one finishes what it carries, the download included);
* ``upgrade_main``: the main process re-executes itself in place (same pid), answers again
  within seconds, keeps its workers (same pids) and its state; a command client caught in the
  switch gets an answer or a clean end of stream, never a hang;
* the whole ``sozu upgrade`` (main, then each worker), through the real CLI;
* ``kill -9`` of a worker: only the requests it was carrying may fail (counted and reported),
  every other request succeeds and no connection is refused;
* soft stop and hard stop (the lifecycle items of reference §K ``tests.rs``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.backends import HttpBackend, wait_for
from support.clients import ConnectionClosed, HttpAnswer, HttpConnection, get
from support.configs import single_http_cluster
from support.daemon import DaemonProcess, free_port, serving_process, sozu_command
from support.load import LoadGenerator, assert_nothing_lost
from support.load_handlers import StreamSpec, load_backends

from sozu_config import (
    AddBackend,
    AddCluster,
    AddHttpFrontend,
    Backend,
    Batch,
    Cluster,
    CommandClient,
    CommandTimeout,
    DaemonUnreachable,
    HardStop,
    HttpFrontend,
    ListWorkers,
    QueryState,
    SoftStop,
    Status,
    UpgradeMain,
    UpgradeWorker,
)
from sozu_config.responses import WorkersContent

pytestmark = pytest.mark.e2e

STREAM = StreamSpec(size=4 * 1024 * 1024, seconds=8.0)
HOST = "app.example"
BODIES = {b"one", b"two"}


@dataclass(frozen=True)
class Worker:
    id: int
    pid: int
    run_state: str


@dataclass
class Proxy:
    daemon: DaemonProcess
    port: int

    def send_ok(self, request: Any, *, timeout: float = 60.0) -> str:
        response = self.daemon.send(request, timeout=timeout)
        assert response.ok, f"{request!r}: {response.message}"
        return response.message

    def workers(self) -> list[Worker]:
        response = self.daemon.send(ListWorkers())
        assert response.ok, response.message
        assert isinstance(response.content, WorkersContent), response.content
        return [Worker(w.id, w.pid, w.run_state.value) for w in response.content.workers]

    def running(self) -> list[Worker]:
        return [w for w in self.workers() if w.run_state == "running"]


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[HttpBackend, HttpBackend]]:
    with load_backends(STREAM) as pair:
        yield pair


@pytest.fixture
def proxy(tmp_path: Path, backends: tuple[HttpBackend, HttpBackend]) -> Iterator[Proxy]:
    one, two = backends
    port = free_port()
    config = single_http_cluster(port, [one.address, two.address], hostname=HOST, worker_count=2)
    with DaemonProcess(tmp_path, config).start() as daemon:
        yield Proxy(daemon, port)


def load_on(proxy: Proxy) -> LoadGenerator:
    return LoadGenerator(proxy.port, host=HOST, stream=STREAM, expected_bodies=BODIES, resend=True)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def stream_holder(proxy: Proxy, load: LoadGenerator, pids: list[int]) -> int | None:
    stream = load.stream_result
    assert stream is not None
    return serving_process(proxy.port, stream.local_port, pids)


def slow_requests(port: int, count: int, seconds: float) -> list[Future[HttpAnswer]]:
    """``count`` requests answered after ``seconds``, each on its own connection, sent now."""
    pool = ThreadPoolExecutor(count)

    def one() -> HttpAnswer:
        with HttpConnection(port, timeout=seconds + 30) as connection:
            return connection.request("GET", f"/slow/{seconds}", host=HOST)

    futures = [pool.submit(one) for _ in range(count)]
    pool.shutdown(wait=False)
    return futures


def slow_received(backends: tuple[HttpBackend, HttpBackend], since: int) -> int:
    received = [r for b in backends for r in b.requests if r.target.startswith("/slow/")]
    return len(received) - since


# --------------------------------------------------------------------------- worker upgrades


def test_upgrade_every_worker_under_load(proxy: Proxy) -> None:
    """sōzu ``test_upgrade_async`` (concurrent clients across worker upgrades) and
    ``test_upgrade_new_connections_after``: every worker is upgraded in turn while clients
    keep coming; the download served by an old worker completes through it."""
    before = proxy.running()
    assert len(before) == 2
    with load_on(proxy) as load:
        load.wait_progress(count=200)  # the operation happens amid established traffic
        holder = stream_holder(proxy, load, [w.pid for w in before])
        assert holder is not None, "the download is served by no worker"
        upgraded_at = time.monotonic()
        for old in before:
            message = proxy.send_ok(UpgradeWorker(worker_id=old.id))
            running = proxy.running()
            assert old.id not in [w.id for w in running]
            assert len(running) == 2, running
            fresh = [w for w in running if w.id not in [b.id for b in before]]
            assert fresh and all(w.pid not in [b.pid for b in before] for w in fresh)
            assert str(fresh[-1].id) in message
            load.wait_progress()
        after = proxy.running()
        assert {w.id for w in after}.isdisjoint({w.id for w in before})
        # new connections are served by the new workers only
        with HttpConnection(proxy.port) as connection:
            assert connection.request("GET", "/", host=HOST).status == 200
            served_by = serving_process(
                proxy.port, connection.sock.getsockname()[1], [w.pid for w in after]
            )
            assert served_by in [w.pid for w in after]
        report = load.stop()
    assert_nothing_lost(report)
    assert report.stream is not None and report.stream.ended is not None
    assert report.stream.ended > upgraded_at, "the download ended before the upgrades began"
    # the old workers leave once they have finished (the download was the last thing)
    wait_for(lambda: not any(alive(w.pid) for w in before), timeout=20)


def test_requests_in_flight_complete_across_worker_upgrades(
    proxy: Proxy, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """sōzu ``test_upgrade``, ``test_upgrade_in_flight_request`` and
    ``test_upgrade_multiple_in_flight``: requests waiting for their answer when their worker
    is upgraded get the complete answer; new connections work afterwards."""
    before = proxy.running()
    mark = slow_received(backends, 0)
    answers = slow_requests(proxy.port, 6, 2.0)
    wait_for(lambda: slow_received(backends, mark) == 6, timeout=10)
    for old in before:  # every worker carries none, some or all of them: upgrade them all
        proxy.send_ok(UpgradeWorker(worker_id=old.id))
    for future in answers:
        answer = future.result(timeout=40)
        assert answer.status == 200
        assert answer.body in BODIES
    after = proxy.running()
    assert {w.id for w in after}.isdisjoint({w.id for w in before})
    for _ in range(4):
        assert get(proxy.port, "/", host=HOST).body in BODIES


def test_keep_alive_connections_across_a_worker_upgrade(
    proxy: Proxy, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """sōzu ``test_upgrade_keepalive_reconnect``: on the upgraded worker an idle keep-alive
    connection is closed cleanly (the client sees the end of the stream and reconnects), a
    busy one gets its answer, marked ``Connection: close``, then is closed; reconnecting works
    at once."""
    pids = [w.pid for w in proxy.running()]
    idle = HttpConnection(proxy.port)
    assert idle.request("GET", "/", host=HOST).status == 200
    target = serving_process(proxy.port, idle.sock.getsockname()[1], pids)
    assert target is not None
    # a second connection on the same worker, to be busy during the upgrade
    busy = None
    for _ in range(100):
        candidate = HttpConnection(proxy.port)
        assert candidate.request("GET", "/", host=HOST).status == 200
        if serving_process(proxy.port, candidate.sock.getsockname()[1], pids) == target:
            busy = candidate
            break
        candidate.close()
    assert busy is not None, "no second connection landed on the same worker"
    try:
        mark = slow_received(backends, 0)
        busy.send(f"GET /slow/2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        wait_for(lambda: slow_received(backends, mark) == 1, timeout=10)
        worker = next(w for w in proxy.running() if w.pid == target)
        proxy.send_ok(UpgradeWorker(worker_id=worker.id))

        assert idle.is_closed(timeout=5), "the idle connection of the old worker was kept open"
        answer = busy.read_answer()
        assert answer.status == 200 and answer.body in BODIES
        assert (answer.header("connection") or "").lower() == "close", answer.raw_head
        assert busy.is_closed(timeout=5)
    finally:
        idle.close()
        busy.close()
    with HttpConnection(proxy.port) as again:
        for _ in range(3):
            assert again.request("GET", "/", host=HOST).status == 200
        assert serving_process(proxy.port, again.sock.getsockname()[1], [target]) is None


# --------------------------------------------------------------------------- main upgrade


@dataclass
class CommandOutcomes:
    """What command clients saw while the main process was replaced."""

    answered: int = 0
    ended_cleanly: int = 0
    hung: int = 0
    details: tuple[str, ...] = ()


def hammer_command_socket(daemon: DaemonProcess, stop: threading.Event) -> CommandOutcomes:
    """``status`` on a new connection in a loop until ``stop``; each wait is bounded."""
    outcomes = CommandOutcomes()
    details: list[str] = []
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with CommandClient(daemon.socket_path, timeout=10) as client:
                response = client.send(Status())
            outcomes.answered += response.ok
        except CommandTimeout as error:
            outcomes.hung += 1
            details.append(repr(error))
        except DaemonUnreachable as error:
            outcomes.ended_cleanly += 1
            details.append(repr(error))
        time.sleep(0.01)
    outcomes.details = tuple(details[:5])
    return outcomes


def test_upgrade_main_under_load(proxy: Proxy) -> None:
    daemon = proxy.daemon
    workers = proxy.workers()
    state = daemon.send(QueryState()).content
    waiting = CommandClient(daemon.socket_path, timeout=10).connect()  # idle during the switch
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool, load_on(proxy) as load:
        load.wait_progress(count=200)  # the operation happens amid established traffic
        hammer = pool.submit(hammer_command_socket, daemon, stop)
        try:
            message = proxy.send_ok(UpgradeMain())
            assert str(daemon.pid) in message
            switched = time.monotonic()
            # the main process answers again within seconds
            while True:
                try:
                    if daemon.send(Status(), timeout=10).ok:
                        break
                except DaemonUnreachable:
                    pass
                assert time.monotonic() - switched < 10, "no answer 10 s after the upgrade"
                time.sleep(0.05)
            back_after = time.monotonic() - switched
            time.sleep(0.5)
        finally:
            stop.set()
        outcomes = hammer.result(timeout=30)
        # the client connected before the switch: an answer or a clean end, never a hang
        try:
            late = waiting.send(Status())
            assert late.ok, late.message
        except DaemonUnreachable:
            pass
        finally:
            waiting.close()

        assert daemon.process is not None and daemon.process.poll() is None
        assert proxy.workers() == workers, "the workers changed"
        assert all(parent_of(w.pid) == daemon.pid for w in workers)
        assert daemon.send(QueryState()).content == state, "the state changed"
        load.wait_progress()
        report = load.stop()
    assert outcomes.hung == 0, outcomes
    assert outcomes.answered > 0, outcomes
    assert back_after < 10
    assert_nothing_lost(report)
    # the new main process drives the workers: a change reaches them
    one = daemon.send(QueryState()).content.state.backends[0].address  # type: ignore[union-attr]
    proxy.send_ok(
        Batch(
            requests=[
                AddCluster(cluster=Cluster(cluster_id="later")),
                AddHttpFrontend(
                    frontend=HttpFrontend(
                        address=f"127.0.0.1:{proxy.port}",
                        hostname="later.example",
                        cluster_id="later",
                    )
                ),
                AddBackend(backend=Backend(cluster_id="later", backend_id="l0", address=one)),
            ]
        )
    )
    assert all(get(proxy.port, "/", host="later.example").status == 200 for _ in range(4))


def test_full_upgrade_with_the_cli_under_load(proxy: Proxy) -> None:
    """``sozu upgrade``: the main process, then every worker, while clients keep coming."""
    daemon = proxy.daemon
    before = proxy.running()
    with load_on(proxy) as load:
        load.wait_progress(count=200)  # the operation happens amid established traffic
        result = subprocess.run(
            [*sozu_command(), "-c", str(daemon.config_path), "upgrade"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        load.wait_progress()
        report = load.stop()
    assert_nothing_lost(report)
    after = proxy.running()
    assert len(after) == 2
    assert {w.id for w in after}.isdisjoint({w.id for w in before})
    assert {w.pid for w in after}.isdisjoint({w.pid for w in before})
    assert all(parent_of(w.pid) == daemon.pid for w in after)
    assert daemon.process is not None and daemon.process.poll() is None


# --------------------------------------------------------------------------- crash


def test_kill_9_of_a_worker_under_load(proxy: Proxy) -> None:
    """Only the requests on the killed worker may fail; every other one succeeds, and no
    connection is ever refused (the listening sockets belong to the main process)."""
    before = proxy.running()
    with load_on(proxy) as load:
        load.wait_progress(count=200)  # the operation happens amid established traffic
        holder = stream_holder(proxy, load, [w.pid for w in before])
        assert holder is not None
        victim = next(w for w in before if w.pid != holder)  # the download must survive
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)

        def replaced() -> bool:
            running = proxy.running()
            return len(running) == 2 and victim.id not in [w.id for w in running]

        wait_for(replaced, timeout=10)
        load.wait_progress()
        report = load.stop()
    cut, others = report.cut_at(killed_at)
    print(
        f"kill -9 of worker {victim.id}: {len(cut)} requests cut "
        f"({', '.join(f'{r.client} {r.outcome}' for r in cut) or 'none'}), "
        f"{report.retries} resent after their keep-alive connection ended; {report.summary()}"
    )
    assert others == [], report.summary()
    assert report.refused == 0, report.summary()
    # at most one request per client was in flight on the killed worker
    assert len(cut) <= report.clients, report.summary()
    assert report.stream is not None and report.stream.complete, report.summary()
    replacement = [w for w in proxy.running() if w.id not in [b.id for b in before]]
    assert len(replacement) == 1


# --------------------------------------------------------------------------- stopping


def test_soft_stop_lets_requests_in_flight_finish(
    proxy: Proxy, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """sōzu ``test_soft_stop``: the workers wait for the answers in flight, then everything
    exits cleanly."""
    daemon = proxy.daemon
    mark = slow_received(backends, 0)
    answers = slow_requests(proxy.port, 4, 2.0)
    wait_for(lambda: slow_received(backends, mark) == 4, timeout=10)
    started = time.monotonic()
    proxy.send_ok(SoftStop())
    for future in answers:
        answer = future.result(timeout=30)
        assert answer.status == 200 and answer.body in BODIES
    assert daemon.process is not None
    assert daemon.process.wait(30) == 0
    assert time.monotonic() - started >= 1.0  # it waited for the answers
    assert not daemon.socket_path.exists()


def test_hard_stop_cuts_requests_in_flight(
    proxy: Proxy, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """sōzu ``test_hard_stop``: the workers stop even though backends have not answered."""
    daemon = proxy.daemon
    pids = [w.pid for w in proxy.running()]
    mark = slow_received(backends, 0)
    answers = slow_requests(proxy.port, 2, 30.0)
    wait_for(lambda: slow_received(backends, mark) == 2, timeout=10)
    started = time.monotonic()
    response = daemon.send(HardStop(), timeout=15)
    assert response.ok, response.message
    assert daemon.process is not None
    daemon.process.wait(15)
    assert time.monotonic() - started < 10
    for future in answers:
        with pytest.raises((OSError, ConnectionClosed)):  # cut: closed or reset, not answered
            future.result(timeout=15)
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
