"""The statsd export (main/statsd.py): snapshots in the forms of sozu_config.metrics built by
hand, turned into statsd lines (formats, increases, timings, detail levels, the once-a-second
rule and forgetting, with an injected clock), packed into datagrams, and sent from a real UDP
socket to one bound by the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sozu_config import requests as rq
from sozu_config.config import (
    Config,
    MetricDetail,
    MetricsSettings,
    check_config_text,
    load_config_text,
)
from sozu_config.models import Cluster
from sozu_config.state import ConfigState
from sozu_runtime.main.pool import WorkerPool
from sozu_runtime.main.sockets import ListeningSockets
from sozu_runtime.main.statsd import (
    FORGET_AFTER,
    MAX_DATAGRAM,
    SEND_INTERVAL,
    StatsdExport,
    StatsdLines,
    datagrams,
    flatten,
    worker_origin,
)

VERSION = "9.8.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = SEND_INTERVAL) -> None:
        self.now += seconds


def settings(**values: Any) -> MetricsSettings:
    return MetricsSettings(address="127.0.0.1:8125", **values)


def builder(
    clock: Clock | None = None, *, baseline: tuple[int, ...] = (), **values: Any
) -> StatsdLines:
    return StatsdLines(
        settings(**values), version=VERSION, clock=clock or Clock(), baseline=baseline
    )


def histogram(buckets: dict[str, int], maximum: int = 0) -> dict[str, Any]:
    count = sum(buckets.values())
    return {"count": count, "sum": 0, "max": maximum, "buckets": buckets}


def worker(
    proxying: dict[str, Any] | None = None,
    clusters: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {"proxying": proxying or {}, "clusters": clusters or {}}


def cluster(values: dict[str, Any], **backends: dict[str, Any]) -> dict[str, Any]:
    return {"cluster": values, "backends": backends}


# --------------------------------------------------------------------------- [metrics]


def test_the_metrics_table_is_read_without_a_warning() -> None:
    config = load_config_text('[metrics]\naddress = "127.0.0.1:8125"\n')
    assert config.warnings == ()
    assert config.metrics == MetricsSettings(
        address="127.0.0.1:8125", tagged_metrics=False, prefix="sozu", detail=MetricDetail.CLUSTER
    )
    assert load_config_text("worker_count = 1\n").metrics is None


def test_every_metrics_key_is_read() -> None:
    config = load_config_text(
        '[metrics]\naddress = "[::1]:8125"\ntagged_metrics = true\nprefix = "edge.sozu-1"\n'
        'detail = "Backend"\n'
    )
    assert config.metrics == MetricsSettings(
        address="[::1]:8125", tagged_metrics=True, prefix="edge.sozu-1", detail="backend"
    )
    # what a main-process upgrade hands over
    assert Config.model_validate(config.model_dump(mode="json")).metrics == config.metrics


def test_a_bad_metrics_table_is_reported_with_the_other_errors() -> None:
    report = check_config_text(
        'worker_count = 0\n[metrics]\naddress = "127.0.0.1:8125"\ndetail = "all"\nprefix = ""\n'
    )
    assert sorted(str(error) for error in report.errors) == [
        "<string>: [metrics] key 'detail': line 4, column 1: expected one of PROCESS, FRONTEND, "
        'CLUSTER, BACKEND, found "all" (a string)',
        "<string>: [metrics] key 'prefix': line 5, column 1: expected dot-separated words of "
        "letters, digits, '_' and '-' (like 'sozu' or 'edge.sozu'), found ''",
        "<string>: top-level key 'worker_count': line 1, column 1: must be at least 1, found 0",
    ]


# --------------------------------------------------------------------------- line formats


def test_untagged_lines_name_the_origin_and_the_scope() -> None:
    lines = builder(detail=MetricDetail.BACKEND).lines(
        {"configuration.clusters": 3},
        {
            1: worker(
                {"client.connections": 4, "http.requests": 10},
                {"app": cluster({"http.requests": 7}, b1={"backend.connections": 2})},
            )
        },
    )
    assert lines == [
        "sozu.MAIN.configuration.clusters:3|g",
        "sozu.WRK-01.client.connections:4|g",
        "sozu.WRK-01.http.requests:10|c",
        "sozu.WRK-01.cluster.app.http.requests:7|c",
        "sozu.WRK-01.cluster.app.backend.b1.backend.connections:2|g",
    ]


def test_tagged_lines_carry_origin_version_and_ids_as_tags() -> None:
    lines = builder(detail=MetricDetail.BACKEND, tagged_metrics=True, prefix="edge.px").lines(
        {"workers": 2},
        {
            12: worker(
                {"http.requests": 1},
                {"app": cluster({"http.requests": 1}, b1={"bytes_in": 300})},
            )
        },
    )
    assert lines == [
        "edge.px.workers,origin=MAIN,version=9.8.7:2|g",
        "edge.px.http.requests,origin=WRK-12,version=9.8.7:1|c",
        "edge.px.cluster.http.requests,origin=WRK-12,version=9.8.7,cluster_id=app:1|c",
        "edge.px.backend.bytes_in,origin=WRK-12,version=9.8.7,cluster_id=app,backend_id=b1:300|c",
    ]


def test_worker_origins_have_two_digits_at_least() -> None:
    assert [worker_origin(i) for i in (0, 7, 42, 123)] == ["WRK-00", "WRK-07", "WRK-42", "WRK-123"]


def test_labelled_counters_are_spelt_as_in_sozu() -> None:
    figures = flatten(
        {
            "http.status": {"200": 5, "204": 1, "404": 2, "999x": 1},
            "http.answers": {"503": 3},
            "tls.handshakes": {"TLSv1.3": 4},
        }
    )
    sent = {figure.key: figure.value for figure in figures.values()}
    assert sent == {
        "http.status.200": 5,
        "http.status.204": 1,
        "http.status.404": 2,
        "http.status.999x": 1,
        "http.status.2xx": 6,
        "http.status.4xx": 2,
        "http.status.other": 1,
        "http.503.errors": 3,
        "tls.handshakes.TLSv1.3": 4,
    }
    assert {figure.type for figure in figures.values()} == {"c"}


def test_unknown_names_and_values_out_of_form_are_left_out() -> None:
    figures = flatten(
        {
            "not.a.metric": 3,
            "http.requests": "12",
            "client.connections": True,
            "http.status": 4,
            "request_time": {"buckets": "x"},
            "bytes_in": 5,
        }
    )
    assert [figure.key for figure in figures.values()] == ["bytes_in"]


def test_ids_with_line_separators_cannot_break_a_line() -> None:
    untagged = builder().lines({}, {0: worker(clusters={"a:b|c.d": cluster({"bytes_in": 1})})})
    assert untagged == ["sozu.WRK-00.cluster.a_b_c_d.bytes_in:1|c"]
    tagged = builder(tagged_metrics=True).lines(
        {}, {0: worker(clusters={"a,b=c.d": cluster({"bytes_in": 1})})}
    )
    assert tagged == ["sozu.cluster.bytes_in,origin=WRK-00,version=9.8.7,cluster_id=a_b_c.d:1|c"]


# --------------------------------------------------------------------------- what is sent


def test_counters_send_their_increase_and_nothing_when_unchanged() -> None:
    clock = Clock()
    lines = builder(clock)
    assert lines.lines({}, {1: worker({"http.requests": 10})}) == ["sozu.WRK-01.http.requests:10|c"]
    clock.advance()
    assert lines.lines({}, {1: worker({"http.requests": 10})}) == []
    clock.advance()
    assert lines.lines({}, {1: worker({"http.requests": 13})}) == ["sozu.WRK-01.http.requests:3|c"]
    clock.advance()  # counted again from zero (metrics cleared): all of it is new
    assert lines.lines({}, {1: worker({"http.requests": 2})}) == ["sozu.WRK-01.http.requests:2|c"]


def test_gauges_are_sent_when_they_change_only() -> None:
    clock = Clock()
    lines = builder(clock)
    sends = []
    for value in (0, 0, 5, 5, 2, 2):
        sends.append(lines.lines({"configuration.clusters": value}, {}))
        clock.advance()
    gauge = "sozu.MAIN.configuration.clusters"
    assert sends == [[f"{gauge}:0|g"], [], [f"{gauge}:5|g"], [], [f"{gauge}:2|g"], []]


def test_a_gauge_is_never_sent_below_zero() -> None:
    """A signed gauge value is a change in statsd, not a value."""
    assert builder().lines({}, {0: worker({"client.connections": -2})}) == [
        "sozu.WRK-00.client.connections:0|g"
    ]


def test_a_key_that_disappears_counts_from_zero_when_it_comes_back() -> None:
    clock = Clock()
    lines = builder(clock)
    lines.lines({}, {1: worker({"http.status": {"200": 8}})})
    clock.advance()
    assert lines.lines({}, {1: worker({"http.status": {}})}) == []
    clock.advance()
    assert lines.lines({}, {1: worker({"http.status": {"200": 3}})}) == [
        "sozu.WRK-01.http.status.200:3|c",
        "sozu.WRK-01.http.status.2xx:3|c",
    ]


def test_histograms_send_one_sampled_timing_per_bucket_that_grew() -> None:
    clock = Clock()
    lines = builder(clock)
    first = {"request_time": histogram({"1500": 4, "250000": 1, "inf": 1}, maximum=1_234_567_000)}
    assert lines.lines({}, {3: worker(first)}) == [
        "sozu.WRK-03.request_time:1.5|ms|@0.25",
        "sozu.WRK-03.request_time:250|ms",
        "sozu.WRK-03.request_time:1234567|ms",
    ]
    clock.advance()
    second = {"request_time": histogram({"1500": 7, "250000": 1, "inf": 1, "10": 1})}
    assert lines.lines({}, {3: worker(second)}) == [
        "sozu.WRK-03.request_time:1.5|ms|@0.3333333333",
        "sozu.WRK-03.request_time:0.01|ms",
    ]


def test_a_sample_rate_stands_for_the_number_of_observations() -> None:
    """A statsd server counts a timing line as 1/rate observations."""
    for n in (2, 3, 7, 1000, 123_457):
        (line,) = builder().lines({}, {0: worker({"service_time": histogram({"20": n})})})
        rate = float(line.rpartition("|@")[2])
        assert round(1 / rate) == n


def test_each_key_is_sent_at_most_once_a_second() -> None:
    clock = Clock()
    lines = builder(clock)
    assert lines.lines({"workers": 1}, {0: worker({"http.requests": 1})}) != []
    clock.advance(0.4)
    assert lines.lines({"workers": 2}, {0: worker({"http.requests": 5})}) == []
    clock.advance(0.5)
    assert lines.lines({"workers": 2}, {0: worker({"http.requests": 6})}) == []
    clock.advance(0.1)  # one second after the last send: what changed meanwhile, once
    assert lines.lines({"workers": 2}, {0: worker({"http.requests": 6})}) == [
        "sozu.MAIN.workers:2|g",
        "sozu.WRK-00.http.requests:5|c",
    ]


def test_an_explicit_send_time_wins_over_the_clock() -> None:
    lines = builder(Clock())
    assert lines.lines({"workers": 1}, {}, now=10.0) == ["sozu.MAIN.workers:1|g"]
    assert lines.lines({"workers": 2}, {}, now=10.5) == []
    assert lines.lines({"workers": 2}, {}, now=11.0) == ["sozu.MAIN.workers:2|g"]


def test_adopted_workers_counts_so_far_are_not_sent_again() -> None:
    clock = Clock()
    lines = builder(clock, baseline=(4,))
    snapshot = {"http.requests": 100, "client.connections": 3}
    assert lines.lines({}, {4: worker(snapshot), 5: worker({"http.requests": 2})}) == [
        "sozu.WRK-04.client.connections:3|g",
        "sozu.WRK-05.http.requests:2|c",
    ]
    clock.advance()
    grown = {"http.requests": 104, "client.connections": 3}
    clusters = {"new": cluster({"http.requests": 4})}
    assert lines.lines({}, {4: worker(grown, clusters)}) == [
        "sozu.WRK-04.http.requests:4|c",
        "sozu.WRK-04.cluster.new.http.requests:4|c",
    ]


# --------------------------------------------------------------------------- detail levels


def detailed() -> dict[int, dict[str, Any]]:
    return {
        0: worker(
            {"http.requests": 3},
            {"app": cluster({"http.requests": 2}, b1={"http.requests": 1})},
        )
    }


@pytest.mark.parametrize(
    ("detail", "scopes"),
    [
        (MetricDetail.PROCESS, ["MAIN", "WRK-00"]),
        (MetricDetail.FRONTEND, ["MAIN", "WRK-00", "WRK-00.cluster.app"]),
        (MetricDetail.CLUSTER, ["MAIN", "WRK-00", "WRK-00.cluster.app"]),
        (
            MetricDetail.BACKEND,
            ["MAIN", "WRK-00", "WRK-00.cluster.app", "WRK-00.cluster.app.backend.b1"],
        ),
    ],
)
def test_the_detail_level_limits_the_scopes_sent(detail: MetricDetail, scopes: list[str]) -> None:
    lines = builder(detail=detail).lines({"workers": 1}, detailed())
    names = [line.removeprefix("sozu.").partition(":")[0] for line in lines]
    sent = [name.removesuffix(".workers").removesuffix(".http.requests") for name in names]
    assert sent == scopes


def test_disable_cluster_metrics_sends_the_process_level_only() -> None:
    lines = StatsdLines(
        settings(detail=MetricDetail.BACKEND),
        version=VERSION,
        disable_cluster_metrics=True,
        clock=Clock(),
    )
    assert lines.lines({}, detailed()) == ["sozu.WRK-00.http.requests:3|c"]
    assert not lines.clusters and not lines.backends


def test_the_default_detail_is_cluster() -> None:
    assert settings().detail is MetricDetail.CLUSTER
    assert settings().prefix == "sozu" and settings().tagged_metrics is False


# --------------------------------------------------------------------------- forgetting


def test_scopes_no_answer_carries_are_forgotten_after_ten_minutes() -> None:
    clock = Clock()
    lines = builder(clock, detail=MetricDetail.BACKEND)
    gone = ("WRK-01", "old", None)
    lines.lines({}, {1: worker(clusters={"old": cluster({"http.requests": 5})})})
    assert lines.remembers(gone)
    clock.advance(FORGET_AFTER - 1)
    lines.lines({}, {1: worker()})
    assert lines.remembers(gone), "remembered for ten minutes"
    clock.advance(1)
    lines.lines({}, {1: worker()})
    assert not lines.remembers(gone)
    assert lines.remembers(("WRK-01", None, None)), "a worker that answers is not forgotten"
    assert lines.remembers(("MAIN", None, None))


def test_a_scope_back_within_ten_minutes_sends_its_increase_only() -> None:
    clock = Clock()
    lines = builder(clock)
    lines.lines({}, {1: worker(clusters={"app": cluster({"http.requests": 5})})})
    clock.advance(FORGET_AFTER / 2)
    lines.lines({}, {})  # the worker did not answer in time
    clock.advance(FORGET_AFTER / 2 - 1)
    back = {1: worker(clusters={"app": cluster({"http.requests": 6})})}
    assert lines.lines({}, back) == ["sozu.WRK-01.cluster.app.http.requests:1|c"]


def test_an_idle_scope_still_reported_is_kept_and_not_sent_again() -> None:
    clock = Clock()
    lines = builder(clock)
    idle = {1: worker(clusters={"app": cluster({"http.requests": 5})})}
    lines.lines({}, idle)
    for _ in range(3):
        clock.advance(FORGET_AFTER)
        assert lines.lines({}, idle) == []
    assert lines.remembers(("WRK-01", "app", None))


def test_memory_stays_bounded_as_clusters_come_and_go() -> None:
    clock = Clock()
    lines = builder(clock, detail=MetricDetail.BACKEND)
    for step in range(1_500):  # a new cluster every second, each gone the next one
        current = {f"c{step}": cluster({"http.requests": 1}, b={"http.requests": 1})}
        lines.lines({"workers": 1}, {0: worker({"http.requests": step}, current)})
        clock.advance()
    # MAIN, WRK-00, and a cluster and its backend for each of the last ten minutes
    assert len(lines) <= 2 + 2 * int(FORGET_AFTER / SEND_INTERVAL)


# --------------------------------------------------------------------------- datagrams


def many_lines(count: int) -> list[str]:
    return [f"sozu.WRK-00.cluster.cluster-{i:05d}.http.requests:{i}|c" for i in range(count)]


def test_lines_are_packed_into_datagrams_of_at_most_1400_bytes() -> None:
    lines = many_lines(500)
    payloads = datagrams(lines)
    assert all(len(payload) <= MAX_DATAGRAM for payload in payloads)
    assert len(payloads) < len(lines) / 10, "several lines per datagram"
    received = [line for payload in payloads for line in payload.decode().splitlines()]
    assert received == lines
    assert all(payload.endswith(b"\n") for payload in payloads)
    # packed tight: a datagram's next line would not have fitted
    for payload, following in itertools.pairwise(payloads):
        assert len(payload) + len(following.split(b"\n", 1)[0]) + 1 > MAX_DATAGRAM


def test_a_line_longer_than_a_datagram_is_left_out() -> None:
    assert datagrams(["a" * MAX_DATAGRAM, "b:1|c"]) == [b"b:1|c\n"]
    assert datagrams([]) == []


def test_a_thousand_clusters_make_bounded_datagrams() -> None:
    clusters = {f"cluster-{i}": cluster({"http.requests": i + 1}) for i in range(1_000)}
    lines = builder(tagged_metrics=True).lines({"workers": 1}, {0: worker(clusters=clusters)})
    assert len(lines) == 1_001
    payloads = datagrams(lines)
    assert max(len(payload) for payload in payloads) <= MAX_DATAGRAM
    assert sum(payload.count(b"\n") for payload in payloads) == 1_001


# --------------------------------------------------------------------------- the socket


LINE = re.compile(r"^(?P<name>[^:]+):(?P<value>[0-9.]+)\|(?P<type>c|g|ms)(\|@[0-9.e-]+)?$")


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def export_to(address: str, state: ConfigState, **values: Any) -> StatsdExport:
    config = Config(command_socket=Path("/nonexistent/sozu.sock"))
    pool = WorkerPool(
        config,
        state,
        ListeningSockets(),
        emit=lambda event: None,
        spawn=lambda coroutine: coroutine.close(),
        stopping=lambda: False,
    )
    return StatsdExport(MetricsSettings(address=address, **values), pool, state, version=VERSION)


def test_the_main_figures_reach_a_udp_socket(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    state = ConfigState()
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="a")))
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="b")))

    async def main() -> None:
        export = export_to(f"127.0.0.1:{port}", state, tagged_metrics=True)
        try:
            await export.send_once(now=0.0)
            assert export.sent.datagrams == 1 and export.sent.dropped == 0
            await export.send_once(now=1.0)  # nothing changed: nothing sent
            assert export.sent.datagrams == 1
        finally:
            await export.stop()
        assert export.socket.fileno() == -1

    asyncio.run(main())
    payload = receiver.recv(65_536)
    lines = payload.decode().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert "sozu.configuration.clusters,origin=MAIN,version=9.8.7:2|g" in lines
    assert "sozu.workers,origin=MAIN,version=9.8.7:0|g" in lines


def test_the_task_sends_every_second_until_stopped(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    state = ConfigState()

    async def main() -> None:
        export = export_to(f"127.0.0.1:{port}", state)
        export.start()
        try:
            await asyncio.sleep(1.3)
            state.apply(rq.AddCluster(cluster=Cluster(cluster_id="a")))
            await asyncio.sleep(1.0)
        finally:
            await export.stop()

    asyncio.run(main())
    received = [receiver.recv(65_536).decode() for _ in range(2)]
    assert "sozu.MAIN.configuration.clusters:0|g\n" in received[0]
    assert received[1] == "sozu.MAIN.configuration.clusters:1|g\nsozu.MAIN.state.version:1|g\n"
    receiver.settimeout(0.5)
    with pytest.raises(TimeoutError):
        receiver.recv(65_536)


def test_a_send_the_system_refuses_drops_the_datagram_without_raising() -> None:
    async def main() -> None:
        # broadcast without SO_BROADCAST: the kernel refuses at once
        export = export_to("255.255.255.255:8125", ConfigState())
        try:
            export.send(["a:1|c", "b:2|c"])
            assert export.sent.dropped == 1 and export.sent.datagrams == 0
        finally:
            await export.stop()

    asyncio.run(main())
