"""Changes applied to a running daemon while clients keep it busy.

In every test a :class:`~support.load.LoadGenerator` runs keep-alive clients and clients that
open a new connection per request, on a route the change leaves alone; afterwards not one of
their requests may have failed or been answered with anything but 200 (a keep-alive
connection dropped by the proxy counts as a failed request: the clients never resend). The
change itself is checked with requests of its own, including requests in flight while it
happens (slow backend answers): a removed frontend, backend or listener stops taking new work
but finishes what it started."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from support.backends import HttpBackend, wait_for
from support.clients import HttpAnswer, HttpConnection, get
from support.configs import backend, single_http_cluster
from support.daemon import DaemonProcess, free_port
from support.load import LoadGenerator, LoadReport
from support.load_handlers import DRIP_CHUNKS, named_handler

from sozu_config import (
    ActivateListener,
    AddBackend,
    AddCluster,
    AddHttpFrontend,
    AddHttpListener,
    Backend,
    Batch,
    Cluster,
    DeactivateListener,
    HttpFrontend,
    HttpListenerConfig,
    ListenerType,
    ListListeners,
    QueryState,
    RemoveBackend,
    RemoveCluster,
    RemoveHttpFrontend,
    RemoveListener,
    StateRequest,
    UpdateHttpListener,
)

pytestmark = pytest.mark.e2e


def single_cluster(address: str, backend_address: str, *, backend_id: str = "app-0") -> str:
    """Two workers, one HTTP listener at ``address``, cluster ``app`` for ``app.example``."""
    return single_http_cluster(
        address, [backend(backend_address, backend_id=backend_id)], worker_count=2
    )


def site(name: str, listener: str, backend: str) -> list[StateRequest]:
    """A cluster ``name`` serving ``name.example`` on ``listener`` with one backend."""
    return [
        AddCluster(cluster=Cluster(cluster_id=name)),
        AddHttpFrontend(
            frontend=HttpFrontend(address=listener, hostname=f"{name}.example", cluster_id=name)
        ),
        AddBackend(backend=Backend(cluster_id=name, backend_id=f"{name}-0", address=backend)),
    ]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def answers(port: int, host: str, count: int = 6, target: str = "/") -> list[tuple[int, bytes]]:
    """Status and body of ``count`` requests, each on a new connection (so every worker
    serves some of them)."""
    found = []
    for _ in range(count):
        answer = get(port, target, host=host)
        found.append((answer.status, answer.body))
    return found


def statuses(port: int, host: str, count: int = 6) -> list[int]:
    return [status for status, _ in answers(port, host, count)]


def apply_each(daemon: DaemonProcess, requests: list[StateRequest]) -> None:
    """Send ``requests`` one by one; each must be accepted."""
    for request in requests:
        response = daemon.send(request)
        assert response.ok, f"{request.type}: {response.message}"


def app_load(port: int, bodies: frozenset[bytes] = frozenset({b"app"})) -> LoadGenerator:
    """Two keep-alive and two new-connection clients asking ``app.example`` for ``/``; an
    answer is ``ok`` when it is 200 with one of ``bodies``. They never resend a request."""
    return LoadGenerator(
        port,
        host="app.example",
        keep_alive_clients=2,
        new_connection_clients=2,
        expected_bodies=bodies,
    )


def check_undisturbed(report: LoadReport) -> None:
    """Not one request of the load failed or got anything but 200 with one of the expected
    bodies (a keep-alive connection dropped by the proxy would show as a failed request)."""
    assert report.failures() == [], report.summary()
    assert report.ok >= 50, report.summary()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for requests that stay in flight while the test changes the daemon."""
    with ThreadPoolExecutor(4, thread_name_prefix="in-flight") as executor:
        yield executor


def in_flight(backend: HttpBackend, send: Future[HttpAnswer], target: str) -> None:
    """Wait until ``backend`` received ``target`` (the request is now in flight)."""
    wait_for(lambda: any(r.target == target for r in backend.requests), timeout=10)
    assert not send.done(), f"the slow request ended before the change: {send.result()}"


def test_cluster_added_and_removed_under_load(tmp_path: Path) -> None:
    listener = f"127.0.0.1:{free_port()}"
    port = port_of(listener)
    with (
        HttpBackend("app", named_handler("app")) as app,
        HttpBackend("extra", named_handler("extra")) as extra,
        DaemonProcess(tmp_path, single_cluster(listener, app.address)).start() as daemon,
    ):
        with app_load(port) as load:
            added = daemon.send(Batch(requests=site("extra", listener, extra.address)))
            assert added.ok, added.message
            assert answers(port, "extra.example") == [(200, b"extra")] * 6
            load.wait_progress()
            removed = daemon.send(RemoveCluster(cluster_id="extra"))
            assert removed.ok, removed.message
            assert statuses(port, "extra.example") == [404] * 6
            load.wait_progress()
            report = load.stop()
        check_undisturbed(report)
        state = daemon.send(QueryState()).content
        assert state is not None and state.type == "state"
        assert [c.cluster_id for c in state.state.clusters] == ["app"]
        assert [f.hostname for f in state.state.http_frontends] == ["app.example"]
        assert [b.cluster_id for b in state.state.backends] == ["app"]


def test_removed_frontend_stops_matching_new_requests_only(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    listener = f"127.0.0.1:{free_port()}"
    port = port_of(listener)
    frontend = HttpFrontend(address=listener, hostname="front.example", cluster_id="app")
    with (
        HttpBackend("app", named_handler("app")) as app,
        DaemonProcess(tmp_path, single_cluster(listener, app.address)).start() as daemon,
    ):
        with app_load(port) as load:
            added = daemon.send(AddHttpFrontend(frontend=frontend))
            assert added.ok, added.message
            assert answers(port, "front.example") == [(200, b"app")] * 6
            with HttpConnection(port) as kept:
                assert kept.request("GET", "/", host="front.example").status == 200
                slow = pool.submit(get, port, "/slow/2", host="front.example")
                in_flight(app, slow, "/slow/2")
                removed = daemon.send(RemoveHttpFrontend(frontend=frontend))
                assert removed.ok, removed.message
                assert not slow.done(), "the slow request was cut by the removal"
                answer = slow.result(timeout=15)
                assert (answer.status, answer.body) == (200, b"app")
                # a new request no longer matches, on a new or on an existing connection
                assert statuses(port, "front.example") == [404] * 6
                assert kept.request("GET", "/", host="front.example").status == 404
            load.wait_progress()
            report = load.stop()
        check_undisturbed(report)


def test_blue_green_backend_switch(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """sōzu: test_blue_green — add backend B while A serves, remove A: requests in flight on A
    complete, no request fails, new requests go to B only."""
    listener = f"127.0.0.1:{free_port()}"
    port = port_of(listener)
    with (
        HttpBackend("blue", named_handler("blue")) as blue,
        HttpBackend("green", named_handler("green")) as green,
        DaemonProcess(
            tmp_path, single_cluster(listener, blue.address, backend_id="blue")
        ).start() as daemon,
    ):
        with app_load(port, frozenset({b"blue", b"green"})) as load:
            slow = [pool.submit(get, port, f"/slow/{2 + i}", host="app.example") for i in range(2)]
            for index in range(2):
                in_flight(blue, slow[index], f"/slow/{2 + index}")
            dripping = pool.submit(get, port, "/drip/3", host="app.example")
            in_flight(blue, dripping, "/drip/3")
            added = daemon.send(
                AddBackend(
                    backend=Backend(cluster_id="app", backend_id="green", address=green.address)
                )
            )
            assert added.ok, added.message
            wait_for(lambda: len(green.requests) >= 10, timeout=15)
            removed = daemon.send(RemoveBackend(cluster_id="app", backend_id="blue"))
            assert removed.ok, removed.message
            for future in slow:
                answer = future.result(timeout=15)
                assert (answer.status, answer.body) == (200, b"blue")
            answer = dripping.result(timeout=15)
            assert (answer.status, answer.body) == (200, b"blue" * DRIP_CHUNKS)
            blue_count = len(blue.requests)
            load.wait_progress(100)
            assert len(blue.requests) == blue_count, "blue got requests after its removal"
            assert answers(port, "app.example") == [(200, b"green")] * 6
            report = load.stop()
        check_undisturbed(report)
        assert daemon.stop() == 0, "the workers did not stop cleanly after the switch"


def test_listener_added_activated_deactivated_removed(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """A second listener added and activated serves; deactivated, it refuses new connections
    while the exchange in flight on a keep-alive connection finishes; patched while inactive
    and activated again, it serves with the patched timeout; removed (after its frontend), its
    address is free for a new listener."""
    first = f"127.0.0.1:{free_port()}"
    second = f"127.0.0.1:{free_port()}"
    frontend = HttpFrontend(address=second, hostname="app.example", cluster_id="app")
    with (
        HttpBackend("app", named_handler("app")) as app,
        DaemonProcess(tmp_path, single_cluster(first, app.address)).start() as daemon,
    ):
        with app_load(port_of(first)) as load:
            apply_each(
                daemon,
                [
                    AddHttpListener(listener=HttpListenerConfig(address=second)),
                    AddHttpFrontend(frontend=frontend),
                    ActivateListener(address=second, proxy=ListenerType.HTTP),
                ],
            )
            assert answers(port_of(second), "app.example") == [(200, b"app")] * 6

            with HttpConnection(port_of(second)) as kept:
                assert kept.request("GET", "/", host="app.example").status == 200
                busy = pool.submit(kept.request, "GET", "/slow/2", host="app.example")
                in_flight(app, busy, "/slow/2")
                deactivated = daemon.send(
                    DeactivateListener(address=second, proxy=ListenerType.HTTP)
                )
                assert deactivated.ok, deactivated.message
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port_of(second)), timeout=3).close()
                # the exchange in flight on the existing keep-alive connection finishes
                answer = busy.result(timeout=15)
                assert (answer.status, answer.body) == (200, b"app")

            listed = daemon.send(ListListeners()).content
            assert listed is not None and listed.type == "listeners_list"
            assert {(item.address, item.active) for item in listed.http} == {
                (first, True),
                (second, False),
            }

            # sōzu: test_update_on_deactivated_listener — patched while inactive, the new
            # value holds once the listener is active again
            patched = daemon.send(UpdateHttpListener(address=second, back_timeout=1))
            assert patched.ok, patched.message
            reactivated = daemon.send(ActivateListener(address=second, proxy=ListenerType.HTTP))
            assert reactivated.ok, reactivated.message
            assert answers(port_of(second), "app.example") == [(200, b"app")] * 6
            assert get(port_of(second), "/slow/3", host="app.example").status == 504

            refused = daemon.send(RemoveListener(address=second, proxy=ListenerType.HTTP))
            assert refused.status == "failure", "a listener with frontends was removed"
            apply_each(
                daemon,
                [
                    RemoveHttpFrontend(frontend=frontend),
                    RemoveListener(address=second, proxy=ListenerType.HTTP),
                ],
            )
            listed = daemon.send(ListListeners()).content
            assert listed is not None and listed.type == "listeners_list"
            assert [item.address for item in listed.http] == [first]
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port_of(second)), timeout=3).close()
            # the address is free again: a new listener can take it
            apply_each(
                daemon,
                [
                    AddHttpListener(listener=HttpListenerConfig(address=second)),
                    AddHttpFrontend(frontend=frontend),
                    ActivateListener(address=second, proxy=ListenerType.HTTP),
                ],
            )
            assert statuses(port_of(second), "app.example") == [200] * 6
            load.wait_progress()
            report = load.stop()
        check_undisturbed(report)


def test_listener_timeouts_updated_under_load(tmp_path: Path) -> None:
    """sōzu: test_timeout_patch — front and back timeouts patched on a live listener."""
    listener = f"127.0.0.1:{free_port()}"
    port = port_of(listener)
    with (
        HttpBackend("app", named_handler("app")) as app,
        DaemonProcess(tmp_path, single_cluster(listener, app.address)).start() as daemon,
    ):
        assert get(port, "/slow/2", host="app.example").status == 200  # back_timeout is 30 s
        with app_load(port) as load:
            updated = daemon.send(
                UpdateHttpListener(address=listener, back_timeout=1, front_timeout=2)
            )
            assert updated.ok, updated.message
            state = daemon.send(QueryState()).content
            assert state is not None and state.type == "state"
            [config] = state.state.http_listeners
            assert (config.back_timeout, config.front_timeout) == (1, 2)
            assert config.active, "the update deactivated the listener"
            load.wait_progress()

            # a backend slower than the new back_timeout: 504, after about one second
            with HttpConnection(port) as connection:
                answer = connection.request("GET", "/slow/4", host="app.example")
            assert answer.status == 504
            # an idle keep-alive connection is closed after the new front_timeout
            with HttpConnection(port) as idle:
                assert idle.request("GET", "/", host="app.example").status == 200
                assert not idle.is_closed(timeout=1.0), "closed before front_timeout"
                assert idle.is_closed(timeout=4.0), "still open well after front_timeout"

            restored = daemon.send(
                UpdateHttpListener(address=listener, back_timeout=30, front_timeout=60)
            )
            assert restored.ok, restored.message
            assert get(port, "/slow/2", host="app.example").status == 200
            load.wait_progress()
            report = load.stop()
        check_undisturbed(report)
