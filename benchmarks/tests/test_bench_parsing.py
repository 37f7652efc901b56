"""The benchmarks' pure parts: reading wrk's report, classifying runs, medians, docs markers;
reading ``/proc``, memory and latency statistics, probe answers, the generated bulk file; and
the memory benchmark's backend, over real loopback sockets.

The wrk reports below were captured from wrk 4.1.0 (``--latency``, one thread) on loopback:
against the benchmark's origin nginx, against a deliberately flaky server (answers 503 to one
request in ten and resets one connection in a hundred), over TLS with ``Connection: close``,
and against a closed port. The ``/proc/<pid>/status`` text was captured on Linux 6.18.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from loadbench.report import (
    RESULTS_BEGIN,
    RESULTS_END,
    RunRecord,
    replace_between_markers,
    summarise,
)
from loadbench.wrk import (
    SocketErrors,
    WrkOutputError,
    WrkResult,
    parse_wrk_output,
)
from memory import (
    MIB,
    BackendProcess,
    Growth,
    IdleConnections,
    MemoryResult,
    MemorySettings,
    Streaming,
    StreamOutcome,
    failure_summary,
    parse_response_head,
    parse_vm_rss,
    per_connection_cost,
    read_rss,
    region_markers,
    replace_region,
    streaming_growth,
)
from memory import markdown_section as memory_section
from reconfig import (
    LatencySummary,
    Propagation,
    PropagationSeries,
    ReconfigResult,
    ReconfigSettings,
    parse_status_line,
    percentile,
    retarget_config,
    served_index,
)
from reconfig import markdown_section as reconfig_section
from synthetic import wrk_run

from sozu_config import load_config

CLEAN_KEEPALIVE = """\
Running 2s test @ http://127.0.0.1:44041/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   256.23us  440.14us   5.65ms   96.30%
    Req/Sec   199.47k    36.83k  224.86k    85.00%
  Latency Distribution
     50%  171.00us
     75%  182.00us
     90%  251.00us
     99%    2.85ms
  396834 requests in 2.00s, 60.55MB read
Requests/sec: 198263.94
Transfer/sec:     30.25MB
"""

WITH_ERRORS = """\
Running 2s test @ http://127.0.0.1:45609/
  1 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   185.79us  558.26us  10.00ms   99.01%
    Req/Sec    49.79k    15.81k   60.97k   100.00%
  Latency Distribution
     50%  131.00us
     75%  197.00us
     90%  243.00us
     99%  691.00us
  9897 requests in 2.10s, 509.35KB read
  Socket errors: connect 0, read 104, write 0, timeout 0
  Non-2xx or 3xx responses: 990
Requests/sec:   4719.27
Transfer/sec:    242.88KB
"""

TLS_HANDSHAKES = """\
Running 1s test @ https://127.0.0.1:45047/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.36ms    3.31ms  38.74ms   62.87%
    Req/Sec     2.48k   587.39     3.04k    90.00%
  Latency Distribution
     50%    8.27ms
     75%   11.39ms
     90%   12.31ms
     99%   13.31ms
  2521 requests in 1.03s, 381.60KB read
Requests/sec:   2452.75
Transfer/sec:    371.27KB
"""

CONNECTION_REFUSED = "unable to connect to 127.0.0.1:1 Connection refused"


def test_clean_report_is_read_field_by_field() -> None:
    result = parse_wrk_output(CLEAN_KEEPALIVE)

    assert result == WrkResult(
        requests=396834,
        duration_s=2.0,
        requests_per_s=198263.94,
        transfer_bytes_per_s=round(30.25 * 1024 * 1024),
        latency_avg_ms=0.25623,
        latency_max_ms=5.65,
        latency_p50_ms=0.171,
        latency_p75_ms=0.182,
        latency_p90_ms=0.251,
        latency_p99_ms=2.85,
        socket_errors=SocketErrors(0, 0, 0, 0),
        non_2xx_3xx=0,
    )
    assert not result.has_errors


def test_socket_errors_and_error_statuses_flag_the_run() -> None:
    result = parse_wrk_output(WITH_ERRORS)

    assert result.socket_errors == SocketErrors(connect=0, read=104, write=0, timeout=0)
    assert result.socket_errors.total == 104
    assert result.non_2xx_3xx == 990
    assert result.requests == 9897
    assert result.duration_s == pytest.approx(2.1)
    assert result.requests_per_s == 4719.27
    assert result.transfer_bytes_per_s == round(242.88 * 1024)
    assert result.latency_p99_ms == pytest.approx(0.691)
    assert result.has_errors


def test_tls_handshake_report_in_milliseconds() -> None:
    result = parse_wrk_output(TLS_HANDSHAKES)

    assert result.requests == 2521
    assert result.duration_s == pytest.approx(1.03)
    assert (result.latency_p50_ms, result.latency_p99_ms) == (8.27, 13.31)
    assert result.latency_max_ms == 38.74
    assert not result.has_errors


@pytest.mark.parametrize(
    ("printed", "milliseconds"),
    [("850.00us", 0.85), ("2.85ms", 2.85), ("1.50s", 1500.0), ("2.00m", 120_000.0)],
)
def test_every_wrk_time_unit_is_converted_to_milliseconds(
    printed: str, milliseconds: float
) -> None:
    report = CLEAN_KEEPALIVE.replace("99%    2.85ms", f"99%  {printed}")

    assert parse_wrk_output(report).latency_p99_ms == pytest.approx(milliseconds)


def test_a_run_that_served_nothing_is_flagged() -> None:
    report = CLEAN_KEEPALIVE.replace("396834 requests in", "0 requests in")

    assert parse_wrk_output(report).has_errors


def test_wrk_failing_to_connect_is_not_a_report() -> None:
    with pytest.raises(WrkOutputError, match="unable to connect"):
        parse_wrk_output(CONNECTION_REFUSED)


def test_a_report_without_latency_distribution_is_refused() -> None:
    without_distribution = "\n".join(
        line for line in CLEAN_KEEPALIVE.splitlines() if "%  " not in line or "Latency" in line
    )
    assert "99%" not in without_distribution

    with pytest.raises(WrkOutputError, match="--latency"):
        parse_wrk_output(without_distribution)


def test_runs_are_classified_from_wrk_output() -> None:
    clean = RunRecord.from_wrk(0, "small-50", "nginx", parse_wrk_output(CLEAN_KEEPALIVE), "")
    flagged = RunRecord.from_wrk(0, "small-50", "nginx", parse_wrk_output(WITH_ERRORS), "")
    failed = RunRecord.from_wrk(0, "small-50", "nginx", None, CONNECTION_REFUSED)

    assert (clean.status, flagged.status, failed.status) == ("ok", "flagged", "failed")
    assert "read 104" in flagged.detail and "990 error statuses" in flagged.detail
    assert failed.detail == f"wrk: {CONNECTION_REFUSED}"


def _run(round_index: int, target: str, requests_per_s: float, errors: int = 0) -> RunRecord:
    """A run whose latencies follow its rate, so that their medians can be told apart."""
    return wrk_run(
        round_index,
        target,
        requests_per_s,
        errors=errors,
        p50_ms=requests_per_s / 1000,
        p99_ms=requests_per_s / 100,
    )


def test_medians_and_per_round_ratios_to_haproxy() -> None:
    records = [
        _run(0, "haproxy", 100.0),
        _run(0, "sozu", 50.0),
        _run(1, "haproxy", 200.0),
        _run(1, "sozu", 150.0),
        _run(2, "haproxy", 400.0),
        _run(2, "sozu", 100.0),
    ]

    haproxy, sozu = summarise(records, ["small-50"], ["haproxy", "sozu"])

    assert sozu.median_requests_per_s == 100.0
    assert sozu.ratios_to_haproxy == [0.5, 0.75, 0.25]
    assert sozu.median_ratio_to_haproxy == 0.5
    assert sozu.median_p99_ms == 1.0
    assert haproxy.median_ratio_to_haproxy == 1.0
    assert (sozu.status, sozu.clean_runs, sozu.runs) == ("ok", 3, 3)


def test_flagged_runs_are_left_out_of_the_median_and_said_so() -> None:
    records = [_run(0, "sozu", 100.0), _run(1, "sozu", 999_999.0, errors=3), _run(2, "sozu", 300.0)]

    (sozu,) = summarise(records, ["small-50"], ["sozu"])

    assert sozu.status == "flagged"
    assert sozu.median_requests_per_s == 200.0
    assert sozu.note == "1 of 3 runs had errors and are left out"
    assert sozu.median_ratio_to_haproxy is None  # no HAProxy runs to compare with


def test_runs_lost_to_a_dead_target_are_reported_with_the_survivors() -> None:
    records = [
        _run(0, "sozu", 100.0),
        RunRecord(1, "small-50", "sozu", "failed", None, "process exited with status 1"),
        RunRecord(2, "small-50", "sozu", "failed", None, "process exited with status 1"),
    ]

    (sozu,) = summarise(records, ["small-50"], ["sozu"])

    assert (sozu.status, sozu.clean_runs, sozu.runs) == ("ok", 1, 3)
    assert sozu.median_requests_per_s == 100.0
    assert sozu.note == "2 of 3 runs failed (process exited with status 1)"


def test_failed_and_not_applicable_cells() -> None:
    records = [
        RunRecord(0, "tls-keepalive", "aiohttp", "n/a", None, "no TLS listener"),
        RunRecord(0, "tls-keepalive", "sozu", "failed", None, "did not start: exited"),
    ]

    aiohttp, sozu = summarise(records, ["tls-keepalive"], ["aiohttp", "sozu"])

    assert aiohttp.status == "n/a"
    assert (sozu.status, sozu.note, sozu.median_requests_per_s) == (
        "failed",
        "did not start: exited",
        None,
    )


def test_only_the_text_between_the_markers_is_replaced() -> None:
    page = f"# Title\n\nintro\n\n{RESULTS_BEGIN}\nold table\n{RESULTS_END}\n\nafter\n"

    rewritten = replace_between_markers(page, "| new | table |\n")

    assert (
        rewritten
        == f"# Title\n\nintro\n\n{RESULTS_BEGIN}\n| new | table |\n{RESULTS_END}\n\nafter\n"
    )
    assert replace_between_markers(rewritten, "again") == replace_between_markers(page, "again")


def test_a_page_without_markers_is_left_alone() -> None:
    with pytest.raises(ValueError, match="results:begin"):
        replace_between_markers("# no markers here\n", "table")


# --- memory: /proc and statistics ------------------------------------------------------------

PROC_STATUS = """\
Name:	python
Umask:	0022
State:	S (sleeping)
Tgid:	5984
Pid:	5984
PPid:	5982
VmPeak:	   63496 kB
VmSize:	   63496 kB
VmLck:	       0 kB
VmHWM:	   51500 kB
VmRSS:	   51232 kB
RssAnon:	   38100 kB
RssFile:	   13132 kB
Threads:	1
"""

# A zombie has exited: its status keeps the name and state, and no memory lines.
ZOMBIE_STATUS = "Name:\tpython\nState:\tZ (zombie)\nTgid:\t5984\nPid:\t5984\nThreads:\t1\n"


def test_vm_rss_is_read_in_bytes_and_not_confused_with_the_peak() -> None:
    assert parse_vm_rss(PROC_STATUS) == 51232 * 1024


def test_a_status_without_rss_or_with_an_odd_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="zombie"):
        parse_vm_rss(ZOMBIE_STATUS)
    with pytest.raises(ValueError, match="unexpected VmRSS"):
        parse_vm_rss(PROC_STATUS.replace("51232 kB", "51232 MB"))


def test_the_rss_of_a_live_process_follows_what_it_touches() -> None:
    before = read_rss(os.getpid())
    touched = bytearray(64 * MIB)  # zero-filled pages, resident once written
    for offset in range(0, len(touched), 4096):
        touched[offset] = 1
    after = read_rss(os.getpid())
    del touched

    assert before > 1 * MIB
    assert after - before >= 60 * MIB


def test_the_cost_of_a_connection_is_the_growth_shared_out() -> None:
    assert per_connection_cost(50 * MIB, 51 * MIB, 1000) == pytest.approx(1048.576)
    # memory given back meanwhile is reported as measured, not hidden
    assert per_connection_cost(51 * MIB, 50 * MIB, 1024) == -1024.0
    with pytest.raises(ValueError):
        per_connection_cost(1, 2, 0)


def test_growth_of_a_plateau_is_early_and_stops() -> None:
    samples = [(0.0, 100), (0.5, 180), (1.0, 190), (1.5, 185), (2.0, 190), (2.5, 160)]

    growth = streaming_growth(100, samples)

    assert growth == Growth(
        baseline_bytes=100,
        max_bytes=190,
        max_growth_bytes=90,
        final_bytes=160,
        late_growth_bytes=0,  # the second half never went above the first half's peak
    )


def test_growth_that_keeps_climbing_shows_in_the_second_half() -> None:
    samples = [(index * 0.5, 100 + 10 * index) for index in range(10)]

    growth = streaming_growth(100, samples)

    assert growth.max_growth_bytes == 90
    assert growth.late_growth_bytes == 190 - 140
    assert streaming_growth(100, [(0.0, 120)]).late_growth_bytes == 0
    with pytest.raises(ValueError):
        streaming_growth(100, [])


def test_response_heads_give_status_and_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length:  12 \r\n\r\n"

    assert parse_response_head(head) == (200, 12)
    assert parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\n\r\n") == (503, None)
    with pytest.raises(ValueError, match="status line"):
        parse_response_head(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


def test_only_the_named_region_of_the_page_is_rewritten() -> None:
    memory_begin, memory_end = region_markers("memory")
    reconfig_begin, reconfig_end = region_markers("reconfig")
    page = (
        f"# Title\n\n{memory_begin}\nold memory\n{memory_end}\n\n"
        f"{reconfig_begin}\nold reconfig\n{reconfig_end}\n"
    )

    rewritten = replace_region(page, "memory", "| new | table |\n")

    assert rewritten == (
        f"# Title\n\n{memory_begin}\n| new | table |\n{memory_end}\n\n"
        f"{reconfig_begin}\nold reconfig\n{reconfig_end}\n"
    )
    with pytest.raises(ValueError, match="results:begin"):
        replace_region(page, "results", "table")


# --- reconfiguration: statistics and the bulk file ---------------------------------------------


def test_nearest_rank_percentiles() -> None:
    values = [float(value) for value in range(1, 101)]

    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 0.0)


def test_latency_summaries_are_in_milliseconds() -> None:
    summary = LatencySummary.of([0.001, 0.002, 0.004, 0.010])

    assert summary.count == 4
    assert summary.median_ms == pytest.approx(3.0)
    assert summary.p99_ms == pytest.approx(10.0)
    assert summary.max_ms == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("outcomes", "index"),
    [
        ([True, True, True], 0),
        ([False, False, True, True, True], 2),
        # one worker serves it before the other: successes and failures alternate at first
        ([True, False, True, False, True, True, True, True], 4),
        ([True, True, False, True, True], None),
        ([], None),
    ],
)
def test_served_from_the_first_probe_of_the_first_full_streak(
    outcomes: list[bool], index: int | None
) -> None:
    assert served_index(outcomes, 3) == index


def test_a_streak_must_be_positive() -> None:
    with pytest.raises(ValueError):
        served_index([True], 0)


def test_status_lines_of_probe_answers() -> None:
    assert parse_status_line(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") == 404
    assert parse_status_line(b"HTTP/1.0 200 OK\r\n\r\nbody") == 200
    assert parse_status_line(b"") == 0
    assert parse_status_line(b"garbage\r\n") == 0


def test_the_generated_file_is_moved_onto_loopback_and_names_its_socket(tmp_path: Path) -> None:
    from config_bench import generate_config

    generated = generate_config(tmp_path, clusters=3, certificates=0)
    socket_path = tmp_path / "daemon" / "sozu.sock"

    text = retarget_config(
        generated.path.read_text(encoding="utf-8"),
        socket_path,
        "127.0.0.1:18080",
        "127.0.0.1:18443",
    )
    generated.path.write_text(text, encoding="utf-8")
    config = load_config(generated.path)

    assert "0.0.0.0" not in text
    assert Path(config.command_socket) == socket_path
    assert sorted(config.state.listeners()) == ["127.0.0.1:18080", "127.0.0.1:18443"]
    assert len(config.state.clusters) == 3
    assert len(config.state.http_frontends) == generated.http_frontends == 15
    with pytest.raises(ValueError, match=r"0\.0\.0\.0:8080"):
        retarget_config("worker_count = 1\n", socket_path, "a", "b")


# --- the memory benchmark's backend, on loopback -------------------------------------------------


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(1 << 16):
            answer += chunk
    return answer


def test_the_backend_streams_downloads_and_counts_uploads() -> None:
    backend = BackendProcess()
    port = backend.start()
    try:
        size = 3 * MIB + 5  # not a multiple of the chunk size
        download = _exchange(
            port, f"GET /download/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        head, _, body = download.partition(b"\r\n\r\n")
        upload_body = b"x" * (2 * MIB + 1)
        upload = _exchange(
            port,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Length: {len(upload_body)}\r\n\r\n".encode()
            + upload_body,
        )
        small = _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        backend.stop()

    assert parse_response_head(head) == (200, size)
    assert len(body) == size
    assert body[:512] == bytes(range(256)) * 2
    assert upload.endswith(b"\r\n\r\n" + str(len(upload_body)).encode())
    assert parse_response_head(upload.partition(b"\r\n\r\n")[0])[0] == 200
    assert small.endswith(b"\r\n\r\nok\n")


# --- the sections written into docs/benchmarks.md ------------------------------------------------


def _idle(per_connection: float) -> IdleConnections:
    return IdleConnections(
        requested=1000,
        opened=1000,
        open_at_reading=1000,
        idle_rss_bytes=50 * MIB,
        loaded_rss_bytes=50 * MIB + round(per_connection * 1000),
        per_connection_bytes=per_connection,
    )


def test_the_memory_section_says_whether_the_target_is_met() -> None:
    within = MemoryResult(MemorySettings(), idle=_idle(1147.0)).to_json()
    above = MemoryResult(MemorySettings(), idle=_idle(5000.0), error="streaming failed").to_json()

    within_text = memory_section(within, None)
    above_text = memory_section(above, "../benchmarks/results/memory.png")

    assert "| per idle connection | 1,147 bytes (within the 4 KiB target) |" in within_text
    assert "| worker RSS, idle | 50.0 MiB |" in within_text
    assert "(above the 4 KiB target)" in above_text
    assert "streaming failed" in above_text
    # no streaming measure: no chart of it
    assert "memory.png" not in above_text


def test_the_reconfiguration_section_reports_unserved_changes_and_problems() -> None:
    series = PropagationSeries(
        "frontend",
        [
            Propagation("frontend", 0.001, 0.002, 10),
            Propagation("frontend", 0.003, 0.005, 12),
            Propagation("frontend", 0.002, None, 900),
        ],
        error="",
    )
    result = ReconfigResult(ReconfigSettings(), propagation=[series], error="bulk apply: boom")

    text = reconfig_section(result.to_json(), "../benchmarks/results/reconfig.png")

    assert "| add_frontend: send to answer (3 changes) | median 2.0 ms, max 3.0 ms |" in text
    assert "median 3.5 ms, max 5.0 ms, 1 not served |" in text
    assert "bulk apply: boom" in text
    assert "![propagation of changes](../benchmarks/results/reconfig.png)" in text
    assert result.failed


def test_load_runs_the_memory_and_reconfiguration_benchmarks_unless_skipped() -> None:
    import load
    import memory
    import reconfig

    full = load.parse_arguments([])
    quick = load.parse_arguments(["--quick", "--skip-reconfig"])
    bare = load.parse_arguments(["--skip-memory", "--skip-reconfig"])

    assert full.memory == memory.MemorySettings()
    assert full.reconfig == reconfig.ReconfigSettings()
    assert (quick.memory, quick.reconfig) == (memory.QUICK_MEMORY, None)
    assert (bare.memory, bare.reconfig) == (None, None)
    assert load.estimated_extra_seconds(bare) == 0.0
    assert bare.to_json()["memory"] is False
    # the whole default run stays within the budget of nox -s bench
    assert load.estimated_seconds(full) + load.estimated_extra_seconds(full) < load.TOTAL_BUDGET_S


def test_failed_transfers_are_grouped_by_direction_and_reason() -> None:
    failures = [
        {"direction": "upload", "error": "not done after 60 s"},
        {"direction": "download", "error": "ConnectionResetError: reset"},
        {"direction": "upload", "error": "not done after 60 s"},
    ]

    assert failure_summary(failures) == [
        "2 uploads: not done after 60 s",
        "1 download: ConnectionResetError: reset",
    ]
    assert failure_summary([]) == []


def test_a_stalled_transfer_fails_the_run_and_is_left_out_of_the_throughput() -> None:
    outcomes = [
        StreamOutcome("upload", 100 * MIB, 2.0),
        StreamOutcome("download", 100 * MIB, 1.0),
        StreamOutcome("upload", 100 * MIB, 60.0, "not done after 60 s"),
    ]
    streaming = Streaming(
        streams=3,
        body_bytes=100 * MIB,
        seconds=60.0,
        growth=streaming_growth(50 * MIB, [(0.0, 52 * MIB), (0.5, 51 * MIB)]),
        samples=[(0.0, 52 * MIB), (0.5, 51 * MIB)],
        outcomes=outcomes,
    )
    result = MemoryResult(MemorySettings(streams=3), idle=_idle(1000.0), streaming=streaming)

    assert streaming.completed == 2
    assert streaming.last_completed_s == 2.0
    assert streaming.throughput_bytes_per_s == 100 * MIB
    assert streaming.flat  # 2 MiB of growth, 3 MiB allowed
    assert result.failed
    text = memory_section(result.to_json(), None)
    assert "2/3 completed, the last after 2.0 s" in text
    assert "failed: 1 upload: not done after 60 s" in text
