"""The HTTP/2 loads of the benchmark: reading h2load's report and per-request log, classifying
runs (a run with no success, or not over HTTP/2, is a failure without a number), which targets
the loads apply to, the page's HTTP/2 table, and short real h2load runs against the origin
nginx and HAProxy.

The reports below were captured from h2load 1.52.0 (``-t 1``, ``-D``) on loopback: against
nginx over TLS with ALPN ``h2``, against a path nginx answers 404, against a closed port, and
with ``--npn-list=http/1.1`` (the server then speaks HTTP/1.1).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import load
import pytest
from loadbench import http2
from loadbench.certificates import write_self_signed
from loadbench.h2load import (
    H2loadInvocation,
    H2loadOutputError,
    classify,
    parse_h2load_output,
    percentile,
    read_durations,
    run_h2load,
)
from loadbench.loads import HOSTNAME, LOADS_BY_NAME
from loadbench.report import RunRecord, summarise
from loadbench.targets import (
    LOOPBACK,
    TARGETS_BY_NAME,
    DirectTarget,
    HaproxyTarget,
    Origin,
    allocate_ports,
    build_servers,
)

_HEADER = """starting benchmark...
spawning thread #0: 10 total client(s). Timing-based test with 0s of warm-up time and 2s of \
main duration for measurements.
Warm-up started for thread #0.
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
"""

CLEAN_H2 = (
    _HEADER
    + """TLS Protocol: TLSv1.2
Cipher: ECDHE-ECDSA-AES128-GCM-SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 105614.00 req/s, 7.96MB/s
requests: 211228 total, 211328 started, 211228 done, 211228 succeeded, 0 failed, 0 errored, \
0 timeout
status codes: 211228 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 15.91MB (16687502) total, 9.87MB (10350172) headers (space savings 50.51%), 2.42MB \
(2534736) data
                     min         max         mean         sd        +/- sd
time for request:       32us      4.97ms       806us       260us    76.52%
time for connect:     8.20ms      8.66ms      8.45ms       149us    60.00%
time to 1st byte:     9.05ms      9.96ms      9.52ms       304us    60.00%
req/s           :   10531.86    10577.97    10555.51       15.15    70.00%
"""
)

ALL_404 = (
    _HEADER
    + """Application protocol: h2
finished in 1.00s, 17642.00 req/s, 3.72MB/s
requests: 17642 total, 17646 started, 17642 done, 0 succeeded, 17642 failed, 0 errored, \
0 timeout
status codes: 0 2xx, 0 3xx, 17642 4xx, 0 5xx
traffic: 3.72MB (3898980) total, 861.43KB (882100) headers (space savings 49.49%), 2.57MB \
(2699226) data
                     min         max         mean         sd        +/- sd
time for request:       26us      4.52ms       202us       179us    96.44%
"""
)

NO_CONNECTION = (
    _HEADER
    + """Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 1.00s, 0.00 req/s, 0B/s
requests: 0 total, 0 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 0B (0) total, 0B (0) headers (space savings 0.00%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:        0us         0us         0us         0us     0.00%
"""
)

HTTP11 = CLEAN_H2.replace("Application protocol: h2", "Application protocol: http/1.1")


def _with_statuses(text: str, ok: int, server_errors: int) -> str:
    """``CLEAN_H2`` with ``server_errors`` of its requests answered 5xx."""
    total = ok + server_errors
    return text.replace(
        "211228 done, 211228 succeeded, 0 failed",
        f"{total} done, {ok} succeeded, {server_errors} failed",
    ).replace(
        "status codes: 211228 2xx, 0 3xx, 0 4xx, 0 5xx",
        f"status codes: {ok} 2xx, 0 3xx, 0 4xx, {server_errors} 5xx",
    )


# --- h2load's report ------------------------------------------------------------------------


def test_clean_report_is_read_with_the_percentiles_of_the_log() -> None:
    log = "".join(f"1796393315936533\t200\t{micros}\n" for micros in range(1, 1001))
    result = parse_h2load_output(CLEAN_H2, read_durations(log))

    assert (result.requests, result.succeeded, result.failed) == (211228, 211228, 0)
    assert (result.status_2xx, result.status_4xx, result.status_5xx) == (211228, 0, 0)
    assert result.duration_s == 2.0
    assert result.requests_per_s == 105614.0
    assert result.protocol == "h2"
    assert (result.latency_mean_ms, result.latency_max_ms) == (0.806, 4.97)
    assert (result.latency_p50_ms, result.latency_p90_ms, result.latency_p99_ms) == (
        0.5,
        0.9,
        0.99,
    )
    assert not result.has_errors
    assert classify(result, "h2") == ("ok", "")


def test_the_log_gives_sorted_durations_and_nearest_rank_percentiles() -> None:
    log = "1\t200\t30\n2\t200\t10\n3\t503\t20\nnot a line\n4\t200\t\n"

    durations = read_durations(log)

    assert durations == [10, 20, 30]
    assert [percentile(durations, fraction) for fraction in (0.01, 0.5, 0.99)] == [10, 20, 30]
    assert percentile([], 0.5) == 0.0
    assert percentile(list(range(1, 101)), 0.99) == 99


def test_a_run_where_nothing_succeeded_is_a_failure_without_a_number() -> None:
    result = parse_h2load_output(ALL_404)
    record = RunRecord.from_h2load(0, "h2-small-10", "haproxy", result, ALL_404, "h2")

    assert result.has_errors
    assert record.status == "failed" and record.result is None
    assert "none of 17642 requests succeeded" in record.detail
    assert "17642 4xx" in record.detail


def test_some_error_statuses_flag_the_run_and_keep_its_numbers() -> None:
    text = _with_statuses(CLEAN_H2, ok=1000, server_errors=10)
    record = RunRecord.from_h2load(0, "h2-small-10", "sozu", parse_h2load_output(text), text, "h2")

    assert record.status == "flagged" and record.result is not None
    assert "10 failed" in record.detail and "10 5xx" in record.detail


def test_a_run_without_connection_or_over_http11_is_a_failure() -> None:
    refused = classify(parse_h2load_output(NO_CONNECTION), "h2")
    downgraded = classify(parse_h2load_output(HTTP11), "h2")
    cleartext = classify(parse_h2load_output(CLEAN_H2), "h2c")

    assert refused == (
        "failed",
        "h2load: asked for h2, the connections spoke nothing (no connection)",
    )
    assert downgraded == ("failed", "h2load: asked for h2, the connections spoke http/1.1")
    assert cleartext[0] == "failed"


def test_output_without_a_summary_is_not_a_report() -> None:
    text = "h2load: unrecognized option '--nonsense'\nUsage: h2load [OPTIONS]... [URI]..."

    with pytest.raises(H2loadOutputError, match="finished in"):
        parse_h2load_output(text)
    record = RunRecord.from_h2load(0, "h2-small-10", "sozu", None, text, "h2")
    assert record.status == "failed"
    assert record.detail == "h2load: Usage: h2load [OPTIONS]... [URI]..."


def test_the_command_names_the_host_and_connects_to_loopback() -> None:
    invocation = H2loadInvocation(
        url="https://bench.local:8443/h2c",
        connect_to="127.0.0.1:8443",
        connections=10,
        streams=10,
        duration_s=3,
        cpu=0,
    )

    command = invocation.command(Path("/tmp/log.tsv"))

    assert command[:3] == ["taskset", "--cpu-list", "0"]
    assert command[-1] == "https://bench.local:8443/h2c"
    for option in (
        "--threads=1",
        "--clients=10",
        "--max-concurrent-streams=10",
        "--duration=3",
        "--connect-to=127.0.0.1:8443",
        "--log-file=/tmp/log.tsv",
        "--header=:authority: bench.local",
    ):
        assert option in command
    assert invocation.protocol == "h2"
    assert dataclasses.replace(invocation, url="http://bench.local:80/").protocol == "h2c"


# --- which targets, and the page ------------------------------------------------------------


def test_the_h2c_load_does_not_apply_to_nginx_nor_tls_loads_to_the_naive_proxy() -> None:
    h2 = LOADS_BY_NAME["h2-small-10"]
    h2c = LOADS_BY_NAME["h2-h2c-small-10"]

    assert h2.http2 and h2c.http2 and not LOADS_BY_NAME["tls-keepalive"].http2
    assert load.not_applicable(h2c, TARGETS_BY_NAME["nginx"]) == "speaks no h2c to backends"
    assert load.not_applicable(h2, TARGETS_BY_NAME["nginx"]) is None
    assert load.not_applicable(h2, TARGETS_BY_NAME["aiohttp"]) == "no TLS listener"
    for name in ("direct", "sozu", "haproxy"):
        assert load.not_applicable(h2c, TARGETS_BY_NAME[name]) is None


def _h2_record(round_index: int, target: str, requests_per_s: float) -> RunRecord:
    result = dataclasses.replace(parse_h2load_output(CLEAN_H2), requests_per_s=requests_per_s)
    return RunRecord.from_h2load(round_index, "h2-small-10", target, result, "", "h2")


def test_only_the_http2_table_is_rewritten_when_only_http2_loads_ran(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    before = (
        "<!-- results:begin -->\nHTTP/1.1\n<!-- results:end -->\n"
        "<!-- h2:begin -->\nold\n<!-- h2:end -->\n"
    )
    page.write_text(before, encoding="utf-8")
    settings = dataclasses.replace(
        load.parse_arguments(["--loads", "h2-small-10,h2-h2c-small-10"]), docs_page=page
    )
    records = [
        _h2_record(0, "sozu", 5000.0),
        _h2_record(0, "haproxy", 50000.0),
        RunRecord(0, "h2-h2c-small-10", "sozu", "failed", None, "h2load: none of 9 requests"),
        RunRecord(0, "h2-h2c-small-10", "haproxy", "n/a", None, "speaks no h2c to backends"),
    ]
    summaries = summarise(records, ["h2-small-10", "h2-h2c-small-10"], ["sozu", "haproxy"])
    machine = {
        "date": "2026-01-01T00:00:00+00:00",
        "cpu_model": "cpu",
        "cpu_count": 2,
        "kernel": "Linux",
        "python": "3.11",
        "tools": {"wrk": "wrk 4", "h2load": "h2load 1.52.0", "nginx": "n", "haproxy": "h"},
    }

    load.rewrite_tables(settings, machine, summaries, {}, [])

    text = page.read_text(encoding="utf-8")
    assert "HTTP/1.1" in text and "old" not in text
    assert "| h2-small-10 | sozu | 5,000 | 0.10 |" in text
    assert "| h2-h2c-small-10 | sozu | failed |" in text
    assert "h2-h2c-small-10 / sozu: h2load: none of 9 requests" in text
    assert "h2load 1.52.0" in text
    first, second = http2.split_summaries(summaries, settings.loads)
    assert first == [] and len(second) == 4


# --- real h2load runs -------------------------------------------------------------------------


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A directory nginx's workers (``nobody`` when started as root) can read."""
    directory = Path(tempfile.mkdtemp(prefix="sozu-bench-h2-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def origin(workspace: Path) -> Iterator[Origin]:
    tls = write_self_signed(workspace / "tls", HOSTNAME, LOOPBACK)
    server, _ = build_servers([], workspace, 0, 0, tls)
    server.start()
    try:
        readiness = server.wait_until_ready()
        assert readiness.available and readiness.tls_available, readiness.detail
        yield server
    finally:
        server.stop()


def _short_run(target: DirectTarget | HaproxyTarget, load_name: str) -> RunRecord:
    invocation = http2.h2load_invocation(target, LOADS_BY_NAME[load_name], 1, 0)
    result, output = run_h2load(invocation)
    return RunRecord.from_h2load(0, load_name, target.name, result, output, invocation.protocol)


@pytest.mark.e2e
def test_h2load_measures_the_origin_over_h2_and_h2c(origin: Origin) -> None:
    direct = DirectTarget(origin, origin.tls)

    for load_name, protocol in (("h2-small-10", "h2"), ("h2-h2c-small-10", "h2c")):
        record = _short_run(direct, load_name)

        assert record.status == "ok", record.detail
        assert record.result is not None and record.result.protocol == protocol
        # (h2load may count one more status than requests done: one answered at the end)
        assert record.result.requests > 0 and record.result.succeeded == record.result.requests
        assert 0 < record.result.latency_p50_ms <= record.result.latency_p99_ms


@pytest.mark.e2e
def test_haproxy_relays_h2_to_the_origin_and_h2c_at_h2c(workspace: Path, origin: Origin) -> None:
    http_port, https_port = allocate_ports(2)
    haproxy = HaproxyTarget(workspace / "haproxy", 0, http_port, https_port, origin, origin.tls)
    haproxy.start()
    try:
        assert haproxy.wait_until_ready().tls_available
        for load_name in ("h2-small-10", "h2-h2c-small-10"):
            record = _short_run(haproxy, load_name)
            assert record.status == "ok", record.detail
    finally:
        haproxy.stop()


@pytest.mark.e2e
def test_a_closed_port_is_a_failed_run() -> None:
    (port,) = allocate_ports(1)
    invocation = H2loadInvocation(
        url=f"https://{HOSTNAME}:{port}/",
        connect_to=f"{LOOPBACK}:{port}",
        connections=1,
        streams=1,
        duration_s=1,
        cpu=0,
    )

    result, output = run_h2load(invocation)
    record = RunRecord.from_h2load(0, "h2-small-10", "direct", result, output, "h2")

    assert record.status == "failed" and record.result is None
    assert "no connection" in record.detail
