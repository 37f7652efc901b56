"""End-to-end active health checks (reference §B.4 ``health_check``, §E.6; sōzu's
``test_health_check_*``).

The main process probes each backend of a checked cluster once per ``interval`` whatever the
number of workers (HTTP ``GET uri``, or a TCP connection without a uri), marks it down after
``unhealthy_threshold`` failed probes in a row and up after ``healthy_threshold`` good ones,
says so once in a ``backend_down`` / ``backend_up`` event, and every worker stops (or starts
again) sending it new requests. ``list_backends`` shows what the main process decided.

One daemon with TWO workers serves the module, so that "once" means once for the daemon and
not once per worker; each test adds its own cluster (removed at the end, which stops its
probes) and looks only at the events after its own mark. The health check written in the
configuration file, and the TCP check, get daemons of their own.

Passive detection (no health check, real traffic only) is shown on the same daemon: each
worker reports the connections to a backend that fail (at most once per backoff window) and
the first answer after them; the main process marks the backend down after three failures in a
row and up again, once each whatever the number of workers, while requests go to the other
backend (a failed connection is retried), so that none fails.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from support import configs
from support.backends import HttpBackend, TcpEchoBackend, wait_for
from support.clients import HttpAnswer, get
from support.daemon import DaemonProcess, EventRecorder, free_port, sozu_command
from support.health import (
    HEALTH_URI,
    SLOW_TARGET,
    HealthBackend,
    Traffic,
    backend_health,
    backends_health,
    wait_state,
)

from sozu_config import (
    AddBackend,
    AddCluster,
    AddHttpFrontend,
    Backend,
    Batch,
    Cluster,
    HealthCheck,
    HttpFrontend,
    QueryHealthChecks,
    ReloadConfiguration,
    RemoveBackend,
    RemoveCluster,
    RemoveHealthCheck,
    SetHealthCheck,
)
from sozu_config.responses import BackendState, HealthChecksContent

pytestmark = pytest.mark.e2e

INTERVAL = 0.2
TIMEOUT = 0.4
THRESHOLD = 2  # healthy and unhealthy alike
SLACK = 1.0  # what a loaded machine may add to the delays below
DOWN_WITHIN = (THRESHOLD + 1) * INTERVAL + SLACK
"""Seconds from a backend's failure to its ``backend_down`` event (one interval to the next
probe, ``THRESHOLD`` failed probes, and slack)."""
UP_WITHIN = (THRESHOLD + 1) * INTERVAL + SLACK
SETTLE = TIMEOUT + INTERVAL
"""Long enough for a probe already under way when a check stops to end."""

CHECK_SETTINGS: dict[str, Any] = {
    "interval": INTERVAL,
    "timeout": TIMEOUT,
    "healthy_threshold": THRESHOLD,
    "unhealthy_threshold": THRESHOLD,
}


def check(**settings: Any) -> HealthCheck:
    """The tests' HTTP check of ``/health`` (fast interval, small thresholds)."""
    return HealthCheck(**{"uri": HEALTH_URI, **CHECK_SETTINGS, **settings})


class Proxy:
    """The module's daemon and the address of its HTTP listener."""

    def __init__(self, daemon: DaemonProcess, port: int) -> None:
        self.daemon = daemon
        self.port = port

    def send_ok(self, request: Any) -> str:
        response = self.daemon.send(request)
        assert response.ok, f"{request!r}: {response.message}"
        return response.message

    @contextmanager
    def site(
        self,
        cluster_id: str,
        backends: Mapping[str, HealthBackend | str],
        *,
        health_check: HealthCheck | None = None,
        in_cluster: bool = False,
        hostname: str | None = None,
    ) -> Iterator[str]:
        """Cluster ``cluster_id`` for ``hostname`` (default ``<cluster_id>.example``, given
        back) with ``backends`` (id → backend or address), checked by ``health_check``: set by
        a ``set_health_check`` request in the same batch, or ``in_cluster`` (the cluster's
        field). Removed at the end."""
        hostname = hostname or f"{cluster_id}.example"
        cluster = Cluster(cluster_id=cluster_id, health_check=health_check if in_cluster else None)
        requests: list[Any] = [
            AddCluster(cluster=cluster),
            AddHttpFrontend(
                frontend=HttpFrontend(
                    address=f"127.0.0.1:{self.port}", hostname=hostname, cluster_id=cluster_id
                )
            ),
        ]
        for backend_id, backend in backends.items():
            where = backend if isinstance(backend, str) else backend.address
            requests.append(
                AddBackend(
                    backend=Backend(cluster_id=cluster_id, backend_id=backend_id, address=where)
                )
            )
        if health_check is not None and not in_cluster:
            requests.append(SetHealthCheck(cluster_id=cluster_id, health_check=health_check))
        self.send_ok(Batch(requests=requests))
        try:
            yield hostname
        finally:
            self.daemon.send(RemoveCluster(cluster_id=cluster_id))

    def answers(self, host: str, count: int, target: str = "/") -> list[tuple[int, bytes]]:
        """``count`` requests, each on a fresh connection: (status, body) of each."""
        found = []
        for _ in range(count):
            answer: HttpAnswer = get(self.port, target, host=host)
            found.append((answer.status, answer.body))
        return found


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    port = free_port()
    config = configs.document(configs.http_listener(port), worker_count=2)
    with DaemonProcess(tmp_path_factory.mktemp("health"), config).start() as daemon:
        assert len(daemon.worker_pids()) == 2
        yield Proxy(daemon, port)


@pytest.fixture
def events(proxy: Proxy) -> Iterator[EventRecorder]:
    with EventRecorder(proxy.daemon) as recorder:
        yield recorder


def about(cluster_id: str, backend_id: str) -> Any:
    """An event predicate: the event is about this backend."""
    return lambda e: e.cluster_id == cluster_id and e.backend_id == backend_id


def wait_event(
    events: EventRecorder,
    kind: str,
    cluster_id: str,
    backend_id: str,
    *,
    since: int,
    timeout: float,
) -> Any:
    return events.wait_for(kind, about(cluster_id, backend_id), since=since, timeout=timeout)


def count_events(
    events: EventRecorder, kind: str, cluster_id: str, backend_id: str, *, since: int
) -> int:
    return len(events.find(kind, about(cluster_id, backend_id), since=since))


def assert_once(
    events: EventRecorder, kind: str, cluster_id: str, backend_id: str, *, since: int
) -> None:
    """After the first event, one more second brings no second one (two workers, one event)."""
    time.sleep(1.0)
    found = events.find(kind, about(cluster_id, backend_id), since=since)
    assert len(found) == 1, [e.describe() for e in found]


def health_checks(daemon: DaemonProcess, cluster_id: str) -> dict[str, HealthCheck]:
    """The ``query_health_checks`` answer for one cluster."""
    response = daemon.send(QueryHealthChecks(cluster_id=cluster_id))
    assert response.ok, f"query_health_checks: {response.message}"
    assert isinstance(response.content, HealthChecksContent), response
    return response.content.health_checks


def utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def timed_out(message: str) -> bool:
    """The message says that the probe ran out of time (in words, or with the timeout)."""
    return (
        re.search(r"time(d)?[ -]?out", message, re.IGNORECASE) is not None
        or f"within {TIMEOUT:g} s" in message
    )


# --------------------------------------------------------------------------- down and up


def test_a_killed_backend_goes_down_once_and_gets_no_traffic(tmp_path: Path) -> None:
    """sōzu's ``test_health_check_excludes_unhealthy``, with the check written in the
    configuration file."""
    port = free_port()
    live = HealthBackend("live").start()
    doomed = HealthBackend("doomed").start()
    config = configs.document(
        configs.http_listener(port),
        configs.http_cluster(
            "file",
            port,
            "file.example",
            [
                configs.backend(live.address, backend_id="live"),
                configs.backend(doomed.address, backend_id="doomed"),
            ],
            health_check={"uri": HEALTH_URI, **CHECK_SETTINGS},
        ),
        worker_count=2,
    )
    try:
        with DaemonProcess(tmp_path, config).start() as daemon, EventRecorder(daemon) as events:
            assert health_checks(daemon, "file") == {"file": check()}
            wait_for(lambda: live.probe_count() and doomed.probe_count(), timeout=5)

            mark = events.mark()
            doomed.stop()
            stopped = time.monotonic()
            down = wait_event(
                events, "backend_down", "file", "doomed", since=mark, timeout=DOWN_WITHIN + 5
            )
            elapsed = time.monotonic() - stopped
            assert elapsed <= DOWN_WITHIN, f"down after {elapsed:.2f} s"
            assert down.address == doomed.address
            assert down.message, down
            assert down.worker_id is None  # decided by the main process
            assert_once(events, "backend_down", "file", "doomed", since=mark)
            assert count_events(events, "backend_down", "file", "live", since=0) == 0

            answers = [
                (a.status, a.body) for a in (get(port, host="file.example") for _ in range(30))
            ]
            assert answers == [(200, b"live")] * 30
    finally:
        live.stop()
        doomed.stop()


def test_a_restarted_backend_comes_back_up(proxy: Proxy, events: EventRecorder) -> None:
    """sōzu's ``test_health_check_recovery``."""
    with (
        HealthBackend("steady") as steady,
        HealthBackend("phoenix") as phoenix,
        proxy.site(
            "recovery", {"steady": steady, "phoenix": phoenix}, health_check=check()
        ) as host,
    ):
        wait_for(lambda: steady.probe_count() and phoenix.probe_count(), timeout=5)
        mark = events.mark()
        phoenix.stop()
        wait_event(
            events, "backend_down", "recovery", "phoenix", since=mark, timeout=DOWN_WITHIN + 5
        )
        assert set(proxy.answers(host, 6)) == {(200, b"steady")}

        up_mark = events.mark()
        phoenix.restart()
        restarted = time.monotonic()
        up = wait_event(
            events, "backend_up", "recovery", "phoenix", since=up_mark, timeout=UP_WITHIN + 5
        )
        elapsed = time.monotonic() - restarted
        assert elapsed <= UP_WITHIN, f"up after {elapsed:.2f} s"
        assert up.address == phoenix.address
        assert up.message, up
        assert up.worker_id is None
        assert_once(events, "backend_up", "recovery", "phoenix", since=up_mark)
        assert count_events(events, "backend_down", "recovery", "phoenix", since=mark) == 1
        entry = backend_health(proxy.daemon, "recovery", "phoenix")
        assert entry is not None and entry.state == BackendState.UP, entry
        assert entry.reason == up.message and entry.since is not None, entry
        assert entry.last_check is not None and entry.last_check.ok, entry

        seen: set[tuple[int, bytes]] = set()
        for _ in range(20):  # round robin in each of two workers: both within a few
            seen |= set(proxy.answers(host, 1))
            if len(seen) == 2:
                break
        assert seen == {(200, b"steady"), (200, b"phoenix")}


def test_a_backend_failing_its_health_uri_goes_down(proxy: Proxy, events: EventRecorder) -> None:
    """It answers 500 on ``/health`` but 200 elsewhere: only the check takes it out."""
    with HealthBackend("fine") as fine, HealthBackend("sick", health_status=500) as sick:
        mark = events.mark()
        with proxy.site("sick", {"fine": fine, "sick": sick}, health_check=check()) as host:
            down = wait_event(
                events, "backend_down", "sick", "sick", since=mark, timeout=DOWN_WITHIN + 5
            )
            assert "500" in down.message, down
            assert set(proxy.answers(host, 10)) == {(200, b"fine")}
            assert sick.served == []
            assert count_events(events, "backend_down", "sick", "fine", since=mark) == 0


def test_expected_status(proxy: Proxy, events: EventRecorder) -> None:
    """sōzu's ``test_health_check_expected_status``: with ``expected_status = 204`` a backend
    answering 200 goes down and one answering 204 stays up (the check given in the cluster)."""
    with (
        HealthBackend("nocontent", health_status=204) as nocontent,
        HealthBackend("plain") as plain,
    ):
        mark = events.mark()
        with proxy.site(
            "expect",
            {"nocontent": nocontent, "plain": plain},
            health_check=check(expected_status=204),
            in_cluster=True,
        ) as host:
            down = wait_event(
                events, "backend_down", "expect", "plain", since=mark, timeout=DOWN_WITHIN + 5
            )
            assert "200" in down.message, down
            wait_for(lambda: nocontent.probe_count() >= THRESHOLD + 2, timeout=5)
            assert count_events(events, "backend_down", "expect", "nocontent", since=mark) == 0
            entry = backend_health(proxy.daemon, "expect", "nocontent")
            assert entry is not None and entry.state == BackendState.UP, entry
            assert entry.last_check is not None and entry.last_check.ok, entry
            assert entry.last_check.detail == "204", entry
            assert set(proxy.answers(host, 6)) == {(200, b"nocontent")}


def test_a_backend_slower_than_the_timeout_goes_down(proxy: Proxy, events: EventRecorder) -> None:
    with (
        HealthBackend("quick") as quick,
        HealthBackend("sluggish", health_delay=TIMEOUT + 1.0) as sluggish,
    ):
        mark = events.mark()
        with proxy.site("sluggish", {"quick": quick, "sluggish": sluggish}, health_check=check()):
            down = wait_event(
                events,
                "backend_down",
                "sluggish",
                "sluggish",
                since=mark,
                timeout=DOWN_WITHIN + THRESHOLD * TIMEOUT + 5,
            )
            assert timed_out(down.message), down
            entry = backend_health(proxy.daemon, "sluggish", "sluggish")
            assert entry is not None and entry.last_check is not None, entry
            assert not entry.last_check.ok and timed_out(entry.last_check.detail), entry
            assert count_events(events, "backend_down", "sluggish", "quick", since=mark) == 0


# --------------------------------------------------------------------------- the probes


def test_one_probe_per_backend_per_interval_whatever_the_workers(proxy: Proxy) -> None:
    """Two workers, three backends: each backend gets one probe per interval (not one per
    worker), with the cluster's first hostname as ``Host``, or the check's ``host``."""
    window = 2.0
    trio = {f"p{i}": HealthBackend(f"p{i}").start() for i in range(3)}
    hosted = HealthBackend("hosted").start()
    try:
        with (
            proxy.site("probes", trio, health_check=check(), hostname="probes.example"),
            proxy.site("hosted", {"hosted": hosted}, health_check=check(host="health.internal")),
        ):
            everyone = [*trio.values(), hosted]
            wait_for(lambda: all(b.probe_count() for b in everyone), timeout=5)
            start = time.monotonic()
            time.sleep(window)
            expected = window / INTERVAL
            counts = {
                b.name: sum(1 for at, _ in list(b.probes) if start <= at < start + window)
                for b in everyone
            }
            for count in counts.values():
                assert 0.6 * expected <= count <= 1.4 * expected, (counts, expected)

            probes = [r for b in trio.values() for r in b.probe_requests()]
            assert {(r.method, r.header("host")) for r in probes} == {("GET", "probes.example")}
            assert {r.header("host") for r in hosted.probe_requests()} == {"health.internal"}
            assert all(b.served == [] for b in everyone)  # probes only
    finally:
        for backend in [*trio.values(), hosted]:
            backend.stop()


def test_health_check_set_and_removed_live(proxy: Proxy) -> None:
    """sōzu's ``test_health_check_remove``: probes start with ``set_health_check`` and stop
    with ``remove_health_check``."""
    with HealthBackend("watched") as watched, proxy.site("live-check", {"watched": watched}):
        time.sleep(3 * INTERVAL)
        assert watched.probe_count() == 0  # no check, no probe
        entry = backend_health(proxy.daemon, "live-check", "watched")
        assert entry is not None and not entry.checked, entry

        proxy.send_ok(SetHealthCheck(cluster_id="live-check", health_check=check()))
        wait_for(lambda: watched.probe_count() >= 2, timeout=5)
        assert health_checks(proxy.daemon, "live-check") == {"live-check": check()}
        entry = backend_health(proxy.daemon, "live-check", "watched")
        assert entry is not None and entry.checked and entry.state == BackendState.UP, entry

        proxy.send_ok(RemoveHealthCheck(cluster_id="live-check"))
        time.sleep(SETTLE)
        after = time.monotonic()
        time.sleep(1.0)
        assert watched.probe_count(since=after) == 0
        assert health_checks(proxy.daemon, "live-check") == {}
        entry = backend_health(proxy.daemon, "live-check", "watched")
        assert entry is not None and not entry.checked, entry

        again = proxy.daemon.send(RemoveHealthCheck(cluster_id="live-check"))
        assert not again.ok and again.kind == "not_found", again


def test_a_removed_backend_is_no_longer_probed(proxy: Proxy) -> None:
    with (
        HealthBackend("kept") as kept,
        HealthBackend("dropped") as dropped,
        proxy.site("prune", {"kept": kept, "dropped": dropped}, health_check=check()),
    ):
        wait_for(lambda: kept.probe_count() and dropped.probe_count(), timeout=5)
        proxy.send_ok(RemoveBackend(cluster_id="prune", backend_id="dropped"))
        time.sleep(SETTLE)
        after = time.monotonic()
        time.sleep(1.0)
        assert dropped.probe_count(since=after) == 0
        assert kept.probe_count(since=after) >= 2  # the cluster is still checked
        wait_state(proxy.daemon, "prune", "dropped", None, timeout=2)


def test_removing_the_cluster_stops_its_probes(proxy: Proxy) -> None:
    with HealthBackend("orphan") as orphan:
        with proxy.site("ephemeral", {"orphan": orphan}, health_check=check()):
            wait_for(lambda: orphan.probe_count() >= 1, timeout=5)
        time.sleep(SETTLE)
        after = time.monotonic()
        time.sleep(1.0)
        assert orphan.probe_count(since=after) == 0
        assert all(e.cluster_id != "ephemeral" for e in backends_health(proxy.daemon))


# --------------------------------------------------------------------------- every backend down


def test_fail_open_serves_from_backends_all_down(proxy: Proxy, events: EventRecorder) -> None:
    """sōzu's ``test_health_check_fail_open``: both backends fail their check (500) yet serve
    ``/``; with ``fail_open`` (the default) requests still reach them."""
    with (
        HealthBackend("open-a", health_status=500) as first,
        HealthBackend("open-b", health_status=500) as second,
    ):
        mark = events.mark()
        with proxy.site("fail-open", {"a": first, "b": second}, health_check=check()) as host:
            for backend_id in ("a", "b"):
                wait_event(
                    events,
                    "backend_down",
                    "fail-open",
                    backend_id,
                    since=mark,
                    timeout=DOWN_WITHIN + 5,
                )
            answers = proxy.answers(host, 10)
            assert {status for status, _ in answers} == {200}, answers
            assert {body for _, body in answers} <= {b"open-a", b"open-b"}


def test_fail_closed_answers_503_until_a_backend_is_up(proxy: Proxy, events: EventRecorder) -> None:
    with (
        HealthBackend("closed-a", health_status=500) as first,
        HealthBackend("closed-b", health_status=500) as second,
    ):
        mark = events.mark()
        with proxy.site(
            "fail-closed", {"a": first, "b": second}, health_check=check(fail_open=False)
        ) as host:
            for backend_id in ("a", "b"):
                wait_event(
                    events,
                    "backend_down",
                    "fail-closed",
                    backend_id,
                    since=mark,
                    timeout=DOWN_WITHIN + 5,
                )
            assert [status for status, _ in proxy.answers(host, 5)] == [503] * 5
            assert first.served == [] and second.served == []

            up_mark = events.mark()
            second.health_status = 200
            wait_event(
                events, "backend_up", "fail-closed", "b", since=up_mark, timeout=UP_WITHIN + 5
            )
            assert set(proxy.answers(host, 5)) == {(200, b"closed-b")}


# --------------------------------------------------------------------------- list_backends


def test_list_backends_shows_each_backends_health(proxy: Proxy, events: EventRecorder) -> None:
    began = dt.datetime.now(dt.UTC)
    with (
        HealthBackend("shown-up") as alive,
        HealthBackend("shown-down") as dead,
        proxy.site("shown", {"alive": alive, "dead": dead}, health_check=check()),
        proxy.site("unchecked", {"plain": alive}),
    ):
        wait_for(lambda: alive.probe_count() and dead.probe_count(), timeout=5)
        mark = events.mark()
        dead.stop()
        down = wait_event(
            events, "backend_down", "shown", "dead", since=mark, timeout=DOWN_WITHIN + 5
        )

        entries = {e.backend_id: e for e in backends_health(proxy.daemon, "shown")}
        assert set(entries) == {"alive", "dead"}
        up = entries["alive"]
        assert (up.cluster_id, up.address, up.state) == ("shown", alive.address, "up"), up
        assert up.checked and up.consecutive_failures == 0, up
        assert up.last_check is not None and up.last_check.ok, up
        assert up.last_check.detail == "200", up
        assert 0 <= up.last_check.latency < TIMEOUT, up

        gone = entries["dead"]
        assert (gone.address, gone.state, gone.checked) == (dead.address, "down", True), gone
        assert gone.reason, gone
        assert gone.reason == down.message, (gone.reason, down.message)
        assert gone.since is not None, gone
        assert began <= utc(gone.since) <= dt.datetime.now(dt.UTC), gone
        assert gone.last_check is not None and not gone.last_check.ok, gone
        assert "refused" in gone.last_check.detail.lower(), gone
        assert gone.consecutive_failures >= THRESHOLD, gone

        everything = {(e.cluster_id, e.backend_id) for e in backends_health(proxy.daemon)}
        assert {("shown", "alive"), ("shown", "dead"), ("unchecked", "plain")} <= everything
        plain = backend_health(proxy.daemon, "unchecked", "plain")
        assert plain is not None, everything
        assert (plain.state, plain.checked, plain.last_check) == ("up", False, None), plain


def test_a_removed_backend_drains_then_disappears(proxy: Proxy) -> None:
    """Removed with a request in flight, the backend is ``draining`` until the answer is
    sent, then no longer listed."""
    with (
        HealthBackend("leaving", slow_delay=3.0) as leaving,
        proxy.site("drain", {"leaving": leaving}) as host,
    ):
        answers: list[tuple[int, bytes] | BaseException] = []

        def slow_request() -> None:
            try:
                answer = get(proxy.port, SLOW_TARGET, host=host)
                answers.append((answer.status, answer.body))
            except BaseException as error:  # reported by the assertion below
                answers.append(error)

        client = threading.Thread(target=slow_request, daemon=True)
        client.start()
        wait_for(lambda: leaving.served, timeout=5)
        proxy.send_ok(RemoveBackend(cluster_id="drain", backend_id="leaving"))
        draining = wait_state(proxy.daemon, "drain", "leaving", BackendState.DRAINING, timeout=1.5)
        assert draining.address == leaving.address
        assert answers == [], "the slow answer came too early for the test"
        client.join(10)
        assert answers == [(200, b"leaving")]
        wait_state(proxy.daemon, "drain", "leaving", None, timeout=5)


def test_a_reload_sets_then_removes_the_check(tmp_path: Path) -> None:
    """The check written in the file, added and taken away by reloading it."""
    port = free_port()

    def configuration(**settings: Any) -> str:
        return configs.document(
            configs.http_listener(port),
            configs.http_cluster(
                "reloaded", port, "reloaded.example", [served.address], **settings
            ),
            worker_count=2,
        )

    with HealthBackend("served") as served, DaemonProcess(tmp_path, configuration()) as daemon:
        daemon.start()
        time.sleep(3 * INTERVAL)
        assert served.probe_count() == 0

        daemon.config_path.write_text(
            configuration(health_check={"uri": HEALTH_URI, **CHECK_SETTINGS})
        )
        assert daemon.send(ReloadConfiguration()).ok
        wait_for(lambda: served.probe_count() >= 2, timeout=5)
        assert health_checks(daemon, "reloaded") == {"reloaded": check()}

        daemon.config_path.write_text(configuration())
        assert daemon.send(ReloadConfiguration()).ok
        time.sleep(SETTLE)
        after = time.monotonic()
        time.sleep(1.0)
        assert served.probe_count(since=after) == 0
        assert health_checks(daemon, "reloaded") == {}


# --------------------------------------------------------------------------- TCP


def greeting(port: int) -> bytes:
    """The prefix a TCP echo backend sends first, read through the proxy at ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        while not data.endswith(b"]"):
            chunk = sock.recv(64)
            if not chunk:
                break
            data += chunk
        return data


def test_tcp_backends_are_checked_by_connecting(tmp_path: Path) -> None:
    """A TCP cluster whose check has no uri: a backend that stops accepting goes down, and up
    again when it listens again (the check written in the configuration file)."""
    port = free_port()
    first = TcpEchoBackend(prefix=b"[first]").start()
    second = TcpEchoBackend(prefix=b"[second]").start()
    second_port = second.port
    config = configs.document(
        configs.tcp_listener(port),
        configs.tcp_cluster(
            "tcp-checked",
            port,
            [
                configs.backend(first.address, backend_id="first"),
                configs.backend(second.address, backend_id="second"),
            ],
            health_check=CHECK_SETTINGS,
        ),
        worker_count=2,
    )
    try:
        with DaemonProcess(tmp_path, config).start() as daemon, EventRecorder(daemon) as events:
            # a probe is a bare connection: no byte sent
            wait_for(lambda: len(second.received) >= 2, timeout=5)
            assert all(record == b"" for record in second.received[:2])

            mark = events.mark()
            second.stop()
            down = wait_event(
                events, "backend_down", "tcp-checked", "second", since=mark, timeout=DOWN_WITHIN + 5
            )
            assert down.message, down
            entry = backend_health(daemon, "tcp-checked", "second")
            assert entry is not None and entry.state == BackendState.DOWN and entry.checked, entry
            assert entry.last_check is not None and not entry.last_check.ok, entry
            assert {greeting(port) for _ in range(4)} == {b"[first]"}

            up_mark = events.mark()
            second = TcpEchoBackend(prefix=b"[second]").start(second_port)
            wait_event(
                events, "backend_up", "tcp-checked", "second", since=up_mark, timeout=UP_WITHIN + 5
            )
            assert_once(events, "backend_up", "tcp-checked", "second", since=up_mark)
            entry = backend_health(daemon, "tcp-checked", "second")
            assert entry is not None and entry.state == BackendState.UP, entry
            assert entry.last_check is not None and entry.last_check.ok, entry
            seen: set[bytes] = set()
            for _ in range(20):
                seen.add(greeting(port))
                if len(seen) == 2:
                    break
            assert seen == {b"[first]", b"[second]"}
    finally:
        first.stop()
        second.stop()


# --------------------------------------------------------------------------- passive detection

PASSIVE_DOWN_WITHIN = 10.0
"""Seconds from a backend's death to its ``backend_down`` event under steady traffic without a
check: three reported failures, each worker reporting at most once per backoff window (1 s at
first)."""
PASSIVE_UP_WITHIN = 20.0
"""Seconds from its return to its ``backend_up`` event: the next attempt waits for the backoff
window, which grows (randomly) with the failures."""


def test_passive_a_backend_killed_under_traffic_goes_down_once_then_up_once(
    proxy: Proxy, events: EventRecorder
) -> None:
    survivor = HttpBackend("survivor").start()
    victim = HttpBackend("victim").start()
    victim_port = victim.port
    sites = proxy.site("passive", {"survivor": survivor.address, "victim": victim.address})
    try:
        with sites as host:
            traffic = Traffic(proxy.port, host, limit=PASSIVE_UP_WITHIN + PASSIVE_DOWN_WITHIN + 20)
            try:
                traffic.start()
                wait_for(lambda: victim.requests and survivor.requests, timeout=5)

                mark = events.mark()
                victim.stop()
                down = wait_event(
                    events,
                    "backend_down",
                    "passive",
                    "victim",
                    since=mark,
                    timeout=PASSIVE_DOWN_WITHIN,
                )
                assert down.address == victim.address
                assert down.message, down
                assert down.worker_id is None  # decided by the main process, for every worker
                assert_once(events, "backend_down", "passive", "victim", since=mark)
                assert traffic.failures() == [], traffic.failures()[:5]
                assert set(traffic.bodies()) == {b"survivor", b"victim"}

                up_mark = events.mark()
                victim = HttpBackend("victim").start(victim_port)
                up = wait_event(
                    events,
                    "backend_up",
                    "passive",
                    "victim",
                    since=up_mark,
                    timeout=PASSIVE_UP_WITHIN,
                )
                assert up.address == victim.address
                assert up.worker_id is None
                back = time.monotonic()
                assert_once(events, "backend_up", "passive", "victim", since=up_mark)
                # the backend takes traffic again
                wait_for(lambda: b"victim" in traffic.bodies(since=back), timeout=5)
                traffic.stop()
                assert traffic.failures() == [], traffic.failures()[:5]
                assert count_events(events, "backend_down", "passive", "victim", since=mark) == 1
                entry = backend_health(proxy.daemon, "passive", "victim")
                assert entry is not None and entry.state == BackendState.UP, entry
            finally:
                traffic.stop()
    finally:
        survivor.stop()
        victim.stop()


def test_passive_list_backends_shows_a_backend_found_down_by_traffic(
    proxy: Proxy, events: EventRecorder
) -> None:
    """Nothing listens at the second backend's address: connections to it are refused."""
    absent = f"127.0.0.1:{free_port()}"
    with (
        HttpBackend("present") as present,
        proxy.site("refusing", {"present": present.address, "absent": absent}) as host,
    ):
        traffic = Traffic(proxy.port, host, limit=PASSIVE_DOWN_WITHIN + 10)
        try:
            mark = events.mark()
            with traffic:
                down = wait_event(
                    events,
                    "backend_down",
                    "refusing",
                    "absent",
                    since=mark,
                    timeout=PASSIVE_DOWN_WITHIN,
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


# --------------------------------------------------------------------------- invalid checks


def raw_request(socket_path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send ``request`` as JSON, as a program in any language would (no model checks it on
    the way), and return the final answer as JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps({"id": "raw", "request": request}).encode() + b"\n")
        buffer = b""
        while True:
            while b"\n" not in buffer:
                data = sock.recv(1 << 16)
                assert data, f"closed by the daemon; pending {buffer[:200]!r}"
                buffer += data
            line, buffer = buffer.split(b"\n", 1)
            answer: dict[str, Any] = json.loads(line)
            if answer["status"] != "processing":
                return answer


INVALID_SETTINGS = {
    "interval": 0,
    "timeout": 0,
    "healthy_threshold": 0,
    "unhealthy_threshold": -1,
    "expected_status": 42,
    "uri": "health",
}


def test_invalid_health_checks_are_refused(proxy: Proxy) -> None:
    """sōzu's ``test_health_check_invalid_config``, through the command socket."""
    unknown = proxy.daemon.send(SetHealthCheck(cluster_id="nowhere", health_check=check()))
    assert not unknown.ok and unknown.kind == "not_found", unknown
    assert "nowhere" in unknown.message

    with proxy.site("strict", {}):  # the cluster exists: only the check is at fault
        missing = proxy.daemon.send(RemoveHealthCheck(cluster_id="strict"))
        assert not missing.ok and missing.kind == "not_found", missing
        valid = check().model_dump(mode="json")
        for field, value in INVALID_SETTINGS.items():
            with pytest.raises(ValidationError):
                HealthCheck(**{**valid, field: value})
            answer = raw_request(
                proxy.daemon.socket_path,
                {
                    "type": "set_health_check",
                    "cluster_id": "strict",
                    "health_check": {**valid, field: value},
                },
            )
            assert (answer["status"], answer.get("kind")) == ("failure", "bad_request"), answer
            assert f"health_check.{field}" in answer["message"], answer
        assert health_checks(proxy.daemon, "strict") == {}


def test_an_invalid_health_check_in_the_configuration_file_is_refused(tmp_path: Path) -> None:
    port = free_port()

    def config_check(settings: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "config.toml"
        path.write_text(
            configs.document(
                configs.http_listener(port),
                configs.http_cluster("app", port, "app.example", [9], health_check=settings),
            )
        )
        return subprocess.run(
            [*sozu_command(), "-c", str(path), "config", "check"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    accepted = config_check({"uri": HEALTH_URI, **CHECK_SETTINGS})
    assert accepted.returncode == 0, accepted
    for field, value in INVALID_SETTINGS.items():
        refused = config_check({"uri": HEALTH_URI, **CHECK_SETTINGS, field: value})
        assert refused.returncode == 1, (field, refused)
        assert "health_check" in refused.stderr and field in refused.stderr, (field, refused)
        assert "Traceback" not in refused.stderr
