"""The statsd export of a real daemon (``[metrics]``) to a UDP socket bound by the test on
127.0.0.1: the lines arrive in both formats and parse, carry the main process's
``configuration.clusters`` gauge with its value, the prefix, the origins and the tags; a gauge
that changes many times within a second is sent once that second; the export goes on after a
main-process upgrade and ends with the daemon.

The workers' own figures depend on what they record; these tests check their form only."""

from __future__ import annotations

import itertools
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.backends import HttpBackend
from support.clients import get
from support.configs import single_http_cluster, toml_value
from support.daemon import DaemonProcess, free_port

from sozu_config import AddCluster, Cluster, DaemonUnreachable, Status, UpgradeMain
from sozu_runtime import __version__

UNTAGGED = re.compile(
    r"^(?P<prefix>e2e)\.(?P<origin>MAIN|WRK-\d{2,})\.(?P<key>[^:,]+)"
    r":(?P<value>[0-9.]+)\|(?P<type>c|g|ms)(\|@[0-9.e-]+)?$"
)
TAGGED = re.compile(
    r"^(?P<prefix>sozu)\.(?P<key>[^:,]+),origin=(?P<origin>MAIN|WRK-\d{2,}),"
    r"version=(?P<version>[^,:]+)(?P<ids>(,cluster_id=[^,:]+)?(,backend_id=[^,:]+)?)"
    r":(?P<value>[0-9.]+)\|(?P<type>c|g|ms)(\|@[0-9.e-]+)?$"
)
# Linux's SO_TIMESTAMP (also the type of its control message: a struct timeval), which the
# socket module does not name.
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)


@dataclass
class Received:
    at: float
    """When the datagram reached the socket (the kernel's time stamp, in seconds)."""
    line: str


class StatsdServer:
    """A UDP socket on 127.0.0.1 that collects statsd lines (every datagram checked to be at
    most 1,400 bytes of newline-terminated lines)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        # the kernel stamps each datagram: the test's own delays do not blur the times
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.lines: list[Received] = []

    def receive(self, seconds: float) -> list[Received]:
        """Lines received during ``seconds`` (also added to :attr:`lines`)."""
        got: list[Received] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                payload, ancillary, _, _ = self.sock.recvmsg(65_536, 1_024)
            except TimeoutError:
                break
            assert len(payload) <= 1_400
            assert payload.endswith(b"\n")
            stamp = next(data for level, kind, data in ancillary if kind == SO_TIMESTAMP)
            seconds, micros = struct.unpack("@ll", stamp[: struct.calcsize("@ll")])
            at = seconds + micros / 1e6
            got += [Received(at, line) for line in payload.decode().splitlines()]
        self.lines += got
        return got

    def wait_for(self, line: str, seconds: float = 15.0) -> Received:
        """The first reception of ``line`` (already received, or within ``seconds``)."""
        deadline = time.monotonic() + seconds
        for received in self.lines:
            if received.line == line:
                return received
        while time.monotonic() < deadline:
            for received in self.receive(min(0.5, deadline - time.monotonic())):
                if received.line == line:
                    return received
        raise AssertionError(f"{line!r} not received; got {[r.line for r in self.lines][-20:]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def statsd() -> Iterator[StatsdServer]:
    server = StatsdServer()
    yield server
    server.close()


@pytest.fixture
def backend_address() -> Iterator[str]:
    with HttpBackend("one") as one:
        yield one.address


def metrics_table(statsd: StatsdServer, **keys: str | bool) -> str:
    values = "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())
    return f'\n[metrics]\naddress = "{statsd.address}"\n{values}'


def add_cluster(daemon: DaemonProcess, cluster_id: str) -> None:
    response = daemon.send(AddCluster(cluster=Cluster(cluster_id=cluster_id)))
    assert response.ok, response.message


def test_untagged_lines_carry_the_prefix_the_origin_and_the_clusters_gauge(
    tmp_path: Path, statsd: StatsdServer, backend_address: str
) -> None:
    port = free_port()
    config = single_http_cluster(port, [backend_address], worker_count=2)
    config += metrics_table(statsd, prefix="e2e")
    with DaemonProcess(tmp_path, config).start() as daemon:
        statsd.wait_for("e2e.MAIN.configuration.clusters:1|g")
        assert f"exporting metrics to statsd at {statsd.address}" in daemon.logs()
        statsd.wait_for("e2e.MAIN.workers:2|g")
        for _ in range(5):  # some traffic for the workers to count
            assert get(port, "/", host="app.example").status == 200
        add_cluster(daemon, "second")
        statsd.wait_for("e2e.MAIN.configuration.clusters:2|g")
        statsd.receive(2.5)
    parsed = [UNTAGGED.match(received.line) for received in statsd.lines]
    assert all(parsed), [r.line for r, m in zip(statsd.lines, parsed, strict=True) if not m]
    origins = {match["origin"] for match in parsed if match}
    assert "MAIN" in origins
    # a gauge that did not change is not sent again
    ones = [r for r in statsd.lines if r.line == "e2e.MAIN.configuration.clusters:1|g"]
    assert len(ones) == 1
    # the workers' counts arrive as increases: they add up to the requests sent
    requests = re.compile(r"e2e\.WRK-\d\d\.http\.requests:(\d+)\|c")
    sent = [int(m[1]) for r in statsd.lines if (m := requests.fullmatch(r.line))]
    assert sum(sent) == 5, sent
    per_cluster = re.compile(r"e2e\.WRK-\d\d\.cluster\.app\.http\.requests:(\d+)\|c")
    in_app = [int(m[1]) for r in statsd.lines if (m := per_cluster.fullmatch(r.line))]
    assert sum(in_app) == 5, in_app
    timings = [r.line for r in statsd.lines if ".request_time:" in r.line]
    assert timings and all(re.fullmatch(r".*:[\d.]+\|ms(\|@[\d.]+)?", t) for t in timings)


def test_tagged_lines_carry_origin_and_version_tags(
    tmp_path: Path, statsd: StatsdServer, backend_address: str
) -> None:
    port = free_port()
    config = single_http_cluster(port, [backend_address], worker_count=1)
    config += metrics_table(statsd, tagged_metrics=True, detail="backend")
    with DaemonProcess(tmp_path, config).start() as daemon:
        statsd.wait_for(f"sozu.configuration.clusters,origin=MAIN,version={__version__}:1|g")
        assert get(port, "/", host="app.example").status == 200
        add_cluster(daemon, "second")
        statsd.wait_for(f"sozu.configuration.clusters,origin=MAIN,version={__version__}:2|g")
        statsd.receive(1.5)
    for received in statsd.lines:
        match = TAGGED.match(received.line)
        assert match, received.line
        assert match["version"] == __version__
        ids = match["ids"]
        assert match["key"].startswith("cluster.") == ids.startswith(",cluster_id=") or (
            ",backend_id=" in ids
        )
        # (proxy-wide names may start with "backend." too: backend.connections…)
        if ",backend_id=" in ids:
            assert match["key"].startswith("backend.")


def test_a_gauge_changing_within_a_second_is_sent_once_that_second(
    tmp_path: Path, statsd: StatsdServer, backend_address: str
) -> None:
    port = free_port()
    config = single_http_cluster(port, [backend_address], worker_count=1)
    config += metrics_table(statsd, prefix="e2e", detail="process")
    with DaemonProcess(tmp_path, config).start() as daemon:
        statsd.wait_for("e2e.MAIN.configuration.clusters:1|g")
        for n in range(12):  # many changes, a few per second
            add_cluster(daemon, f"extra-{n}")
            time.sleep(0.1)
        statsd.wait_for("e2e.MAIN.configuration.clusters:13|g")
    gauges = [r for r in statsd.lines if r.line.startswith("e2e.MAIN.configuration.clusters:")]
    values = [int(r.line.split(":")[1].split("|")[0]) for r in gauges]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert len(values) < 12, "intermediate values within one second are not sent"
    for before, after in itertools.pairwise(gauges):
        assert after.at - before.at >= 0.95, "at most once a second"
    # the process level: no cluster-scoped line
    assert not [r for r in statsd.lines if ".cluster." in r.line]


def test_the_export_goes_on_after_a_main_upgrade_and_ends_with_the_daemon(
    tmp_path: Path, statsd: StatsdServer, backend_address: str
) -> None:
    port = free_port()
    config = single_http_cluster(port, [backend_address], worker_count=1)
    config += metrics_table(statsd, prefix="e2e")
    daemon = DaemonProcess(tmp_path, config).start()
    with daemon:
        statsd.wait_for("e2e.MAIN.configuration.clusters:1|g")
        response = daemon.send(UpgradeMain(), timeout=60)
        assert response.ok, response.message
        deadline = time.monotonic() + 15
        while True:  # the new main process answers
            try:
                if daemon.send(Status(), timeout=10).ok:
                    break
            except DaemonUnreachable:
                pass
            assert time.monotonic() < deadline, "no answer 15 s after the upgrade"
            time.sleep(0.05)
        # the new main process sends its own figures again (it starts from nothing)
        statsd.lines.clear()
        statsd.wait_for("e2e.MAIN.configuration.clusters:1|g")
        add_cluster(daemon, "after-upgrade")
        statsd.wait_for("e2e.MAIN.configuration.clusters:2|g")
        assert daemon.stop() == 0
    statsd.receive(0.2)  # what was in flight
    statsd.lines.clear()
    assert statsd.receive(2.0) == [], "nothing is sent once the daemon stopped"
