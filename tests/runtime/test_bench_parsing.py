"""The load benchmark's pure parts: reading wrk's report, classifying runs, medians, docs markers.

The wrk reports below were captured from wrk 4.1.0 (``--latency``, one thread) on loopback:
against the benchmark's origin nginx, against a deliberately flaky server (answers 503 to one
request in ten and resets one connection in a hundred), over TLS with ``Connection: close``,
and against a closed port.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))

from loadbench.report import (  # noqa: E402  (benchmarks/ is not an installed package)
    RESULTS_BEGIN,
    RESULTS_END,
    RunRecord,
    replace_between_markers,
    summarise,
)
from loadbench.wrk import (  # noqa: E402
    SocketErrors,
    WrkOutputError,
    WrkResult,
    parse_wrk_output,
)

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
    result = WrkResult(
        requests=1000,
        duration_s=5.0,
        requests_per_s=requests_per_s,
        transfer_bytes_per_s=0,
        latency_avg_ms=1.0,
        latency_max_ms=9.0,
        latency_p50_ms=requests_per_s / 1000,
        latency_p75_ms=2.0,
        latency_p90_ms=3.0,
        latency_p99_ms=requests_per_s / 100,
        socket_errors=SocketErrors(read=errors),
        non_2xx_3xx=0,
    )
    return RunRecord.from_wrk(round_index, "small-50", target, result, "")


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
