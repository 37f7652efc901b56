"""End-to-end passive detection of backend health: no health check, real traffic only.

Each worker reports to the main process the connections to a backend that fail (at most once
per backoff window) and the first that succeeds again; the main process marks the backend down
after three failures in a row and up after a success, and says so ONCE in a ``backend_down`` /
``backend_up`` event whatever the number of workers. Requests meanwhile go to the other
backend (a failed connection is retried), so none fails.

One daemon with two workers serves the module; each test adds its own cluster and removes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import configs
from support.backends import HttpBackend, wait_for
from support.daemon import DaemonProcess, EventRecorder, free_port
from support.health import Traffic, backend_health

from sozu_config import (
    AddBackend,
    AddCluster,
    AddHttpFrontend,
    Backend,
    Batch,
    Cluster,
    HttpFrontend,
    RemoveCluster,
)
from sozu_config.responses import BackendState

pytestmark = pytest.mark.e2e

DOWN_WITHIN = 10.0
"""Seconds from a backend's death to its ``backend_down`` event under steady traffic: three
reported failures, each worker reporting at most once per backoff window (1 s at first)."""
UP_WITHIN = 20.0
"""Seconds from a backend's return to its ``backend_up`` event: the next attempt waits for the
backoff window, which grows (randomly) with the failures."""


class Proxy:
    def __init__(self, daemon: DaemonProcess, port: int) -> None:
        self.daemon = daemon
        self.port = port

    def add_site(self, cluster_id: str, backends: dict[str, str]) -> str:
        """Cluster ``cluster_id`` for ``<cluster_id>.example`` with ``backends`` (id →
        address), without a health check; its hostname is returned."""
        hostname = f"{cluster_id}.example"
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
        response = self.daemon.send(Batch(requests=requests))
        assert response.ok, response.message
        return hostname

    def remove_site(self, cluster_id: str) -> None:
        self.daemon.send(RemoveCluster(cluster_id=cluster_id))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    port = free_port()
    config = configs.document(configs.http_listener(port), worker_count=2)
    with DaemonProcess(tmp_path_factory.mktemp("passive"), config).start() as daemon:
        assert len(daemon.worker_pids()) == 2
        yield Proxy(daemon, port)


@pytest.fixture
def events(proxy: Proxy) -> Iterator[EventRecorder]:
    with EventRecorder(proxy.daemon) as recorder:
        yield recorder


def about(cluster_id: str, backend_id: str) -> Any:
    return lambda e: e.cluster_id == cluster_id and e.backend_id == backend_id


def test_a_backend_killed_under_traffic_goes_down_once_then_up_once(
    proxy: Proxy, events: EventRecorder
) -> None:
    survivor = HttpBackend("survivor").start()
    victim = HttpBackend("victim").start()
    victim_port = victim.port
    host = proxy.add_site("passive", {"survivor": survivor.address, "victim": victim.address})
    traffic = Traffic(proxy.port, host, limit=UP_WITHIN + DOWN_WITHIN + 20)
    try:
        traffic.start()
        wait_for(lambda: victim.requests and survivor.requests, timeout=5)

        mark = events.mark()
        victim.stop()
        down = events.wait_for(
            "backend_down", about("passive", "victim"), since=mark, timeout=DOWN_WITHIN
        )
        assert down.address == victim.address
        assert down.message, down
        assert down.worker_id is None  # decided by the main process, for every worker
        time.sleep(1.0)
        downs = events.find("backend_down", about("passive", "victim"), since=mark)
        assert len(downs) == 1, [e.describe() for e in downs]
        assert traffic.failures() == [], traffic.failures()[:5]
        assert set(traffic.bodies()) == {b"survivor", b"victim"}

        up_mark = events.mark()
        victim = HttpBackend("victim").start(victim_port)
        up = events.wait_for(
            "backend_up", about("passive", "victim"), since=up_mark, timeout=UP_WITHIN
        )
        assert up.address == victim.address
        assert up.worker_id is None
        back = time.monotonic()
        time.sleep(1.0)
        ups = events.find("backend_up", about("passive", "victim"), since=up_mark)
        assert len(ups) == 1, [e.describe() for e in ups]
        # the backend takes traffic again
        wait_for(lambda: b"victim" in traffic.bodies(since=back), timeout=5)
        traffic.stop()
        assert traffic.failures() == [], traffic.failures()[:5]
        assert len(events.find("backend_down", about("passive", "victim"), since=mark)) == 1
        entry = backend_health(proxy.daemon, "passive", "victim")
        assert entry is not None and entry.state == BackendState.UP, entry
    finally:
        traffic.stop()
        proxy.remove_site("passive")
        survivor.stop()
        victim.stop()


def test_list_backends_shows_a_backend_found_down_by_traffic(
    proxy: Proxy, events: EventRecorder
) -> None:
    """Nothing listens at the second backend's address: connections to it are refused."""
    with HttpBackend("present") as present:
        absent = f"127.0.0.1:{free_port()}"
        host = proxy.add_site("refusing", {"present": present.address, "absent": absent})
        traffic = Traffic(proxy.port, host, limit=DOWN_WITHIN + 10)
        try:
            mark = events.mark()
            with traffic:
                down = events.wait_for(
                    "backend_down", about("refusing", "absent"), since=mark, timeout=DOWN_WITHIN
                )
            assert traffic.failures() == [], traffic.failures()[:5]
            assert set(traffic.bodies()) == {b"present"}

            entry = backend_health(proxy.daemon, "refusing", "absent")
            assert entry is not None, "the backend is not listed"
            assert (entry.address, entry.state, entry.checked) == (absent, "down", False), entry
            assert "refused" in entry.reason.lower(), entry
            assert entry.reason == down.message, (entry.reason, down.message)
            assert entry.since is not None, entry
            assert entry.last_check is None, entry  # no active check: no probe
            assert entry.consecutive_failures >= 3, entry
            alive = backend_health(proxy.daemon, "refusing", "present")
            assert alive is not None and alive.state == BackendState.UP, alive
            assert alive.consecutive_failures == 0, alive
        finally:
            traffic.stop()
            proxy.remove_site("refusing")
