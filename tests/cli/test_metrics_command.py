"""``sozu metrics``: the query its options build, how snapshots read as text, and the command
against a real daemon (JSON, the bare group, the refresh loop and its Ctrl-C)."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import base_config, sozu
from support.backends import Answer, HttpBackend, Received
from support.clients import get
from support.daemon import DaemonProcess, free_port

from sozu_cli.commands.queries import metrics_get, metrics_request
from sozu_cli.main import build_parser
from sozu_cli.metrics_view import histogram_cells, labelled_text, milliseconds, render_metrics
from sozu_cli.output import Output
from sozu_config import QueryMetrics
from sozu_config.metrics import CATALOGUE, with_percentiles
from sozu_config.responses import MetricsContent

# --------------------------------------------------------------------------- synthetic snapshots


def histogram(*values_us: int) -> dict[str, Any]:
    """A histogram snapshot of ``values_us``, bucketed by hand on a few bounds."""
    buckets: dict[str, int] = {}
    for value in values_us:
        bound = next(b for b in (1000, 2500, 10_000, 100_000, 1_000_000) if value <= b)
        buckets[str(bound)] = buckets.get(str(bound), 0) + 1
    return {
        "count": len(values_us),
        "sum": sum(values_us),
        "max": max(values_us),
        "buckets": buckets,
    }


def content() -> MetricsContent:
    proxy = {
        "http.requests": 10,
        "http.status": {"200": 7, "404": 1, "503": 2},
        "tls.handshakes": {"TLSv1.3": 3, "TLSv1.2": 1},
        "client.connections": 4,
        "request_time": with_percentiles({"request_time": histogram(*[900] * 9, 80_000)})[
            "request_time"
        ],
    }
    return MetricsContent(
        main={"workers": 2, "state.version": 7, "configuration.clusters": 2},
        proxying=proxy,
        clusters={
            "web": {
                "cluster": {"http.requests": 3, "backend_response_time": histogram(2000, 2000)},
                "backends": {"web-2": {"http.requests": 1, "down": True}, "web-1": {}},
            },
            "api": {"cluster": {"http.requests": 7}, "backends": {}},
        },
        workers={"1": {"proxying": {"http.requests": 4}, "clusters": {}}},
    )


def rendered(metrics: MetricsContent) -> str:
    buffer = io.StringIO()
    render_metrics(Output(stdout=buffer), metrics)
    return buffer.getvalue()


def test_milliseconds_keep_about_three_figures() -> None:
    assert milliseconds(11) == "0.011"
    assert milliseconds(1250) == "1.25"
    assert milliseconds(12_500) == "12.5"
    assert milliseconds(1_250_000) == "1250"
    assert milliseconds(0) == "0.000"


def test_status_counts_come_with_their_classes_and_other_labels_alone() -> None:
    assert labelled_text("http.status", {"503": 2, "200": 7, "404": 1}) == (
        "200=7, 404=1, 503=2 (2xx=7, 4xx=1, 5xx=2)"
    )
    assert labelled_text("http.answers", {"503": 1}) == "503=1 (5xx=1)"
    assert labelled_text("tls.handshakes", {"TLSv1.3": 3}) == "TLSv1.3=3"
    assert labelled_text("http.status", {}) == "-"


def test_histograms_read_as_count_percentiles_and_max_in_ms() -> None:
    answered = with_percentiles({"request_time": histogram(*[900] * 9, 80_000)})["request_time"]
    # a percentile is its bucket's upper bound, capped at the largest value seen
    assert histogram_cells(answered) == ["10", "1.00", "1.00", "80.0", "80.0", "80.0"]
    # a snapshot without percentiles (a worker's) gets them from its buckets
    bare = histogram(2000, 2000, 9000, 9000)
    assert histogram_cells(bare) == ["4", "2.50", "9.00", "9.00", "9.00", "9.00"]
    assert histogram_cells({"count": 0, "sum": 0, "max": 0, "buckets": {}})[0] == "0"


def test_the_text_shows_every_scope_in_order() -> None:
    text = rendered(content())
    lines = text.splitlines()
    assert lines[0] == "main process"
    assert "configuration.clusters" in text and "state.version" in text
    titles = [
        line for line in lines if line.startswith(("proxy", "cluster ", "backend ", "worker "))
    ]
    assert titles == [
        "proxy",
        "proxy: times",
        "cluster api",
        "cluster web",
        "cluster web: times",
        "backend web/web-2",
        "worker 1: proxy",
    ]
    status_line = next(line for line in lines if line.startswith("http.status"))
    assert status_line.split(None, 1)[1] == "200=7, 404=1, 503=2 (2xx=7, 4xx=1, 5xx=2)"
    timing = next(line for line in lines if line.startswith("request_time"))
    assert timing.split() == ["request_time", "10", "1.00", "1.00", "80.0", "80.0", "80.0"]
    assert any(line.split() == ["down", "yes"] for line in lines)
    assert any(line.split() == ["backend_response_time", *["2"] + ["2.00"] * 5] for line in lines)


def test_an_answer_without_worker_metrics_says_so_and_names_are_listed_alone() -> None:
    text = rendered(MetricsContent(main={"workers": 1}))
    assert "no worker metrics" in text
    names = rendered(MetricsContent(names=["bytes_in", "http.requests"]))
    assert names.splitlines() == ["bytes_in", "http.requests"]


# --------------------------------------------------------------------------- arguments


def parsed(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_the_options_build_the_query() -> None:
    args = parsed(
        "metrics", "get", "-n", "http.requests", "request_time", "-k", "api", "web",
        "-b", "api-1", "--no-clusters", "-w", "-r", "2.5",
    )  # fmt: skip
    assert metrics_request(args) == QueryMetrics(
        metric_names=["http.requests", "request_time"],
        cluster_ids=["api", "web"],
        backend_ids=["api-1"],
        no_clusters=True,
        workers=True,
    )
    assert args.refresh == 2.5
    assert metrics_request(parsed("metrics", "get", "--list")) == QueryMetrics(list=True)
    assert metrics_request(parsed("query", "metrics", "-k", "api")).cluster_ids == ["api"]


def test_bare_metrics_is_metrics_get_with_no_options() -> None:
    args = parsed("metrics")
    assert args.handler is metrics_get
    assert args.metrics_command is None
    assert metrics_request(args) == QueryMetrics()
    assert parsed("metrics", "clear").handler is not metrics_get


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["metrics", "get", "-n", "http.request"], "no metric named 'http.request'"),
        (["metrics", "get", "-r", "0"], "at least 0.1 seconds"),
        (["metrics", "get", "-r", "soon"], "not a number of seconds"),
        (["metrics", "get", "-r", "nan"], "at least 0.1 seconds"),
    ],
)
def test_bad_options_are_one_line_usage_errors(argv: list[str], expected: str) -> None:
    result = sozu(*argv)
    assert result.code == 2, result
    assert result.err.count("\n") == 1
    assert expected in result.err
    assert result.out == ""


def test_bash_completion_offers_the_metric_names() -> None:
    script = sozu("completion", "bash")
    assert script.code == 0
    assert "http.requests" in script.out
    assert "backend_response_time" in script.out


# --------------------------------------------------------------------------- a real daemon


def answer(request: Received) -> Answer:
    return Answer(status=503 if request.target == "/fail" else 200, body=b"ok")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A daemon whose cluster ``app`` answered three 200s and a 503 (from its backend)."""
    with HttpBackend("app-1", answer) as backend:
        port = free_port()
        with DaemonProcess(tmp_path, base_config(port, backend.port)) as daemon:
            daemon.start()
            for target in ("/", "/", "/", "/fail"):
                get(port, target, host="app.example.com")
            yield "-c", str(daemon.config_path)


def test_the_tables_of_a_daemon_that_served(served: tuple[str, str]) -> None:
    result = sozu(*served, "metrics")
    assert result.code == 0, result
    lines = result.out.splitlines()
    for title in ("proxy", "proxy: times", "cluster app", "cluster app: times"):
        assert title in lines, result
    assert "backend app/app-1" in lines
    status = [line.split(None, 1)[1] for line in lines if line.startswith("http.status ")]
    assert status and all(re.fullmatch(r"200=\d+, 503=\d+ \(2xx=\d+, 5xx=\d+\)", s) for s in status)
    times = [line.split() for line in lines if line.startswith("request_time ")]
    assert times and all(len(row) == 7 for row in times)  # name, count, 4 percentiles, max


def test_the_filters_reach_the_daemon(served: tuple[str, str]) -> None:
    only = sozu(*served, "metrics", "get", "-k", "app", "-b", "app-1", "-n", "http.requests")
    assert only.code == 0, only
    narrowed = sozu(*served, "--json", "metrics", "get", "-k", "app", "-b", "app-1",
                    "-n", "http.requests").json()  # fmt: skip
    assert set(narrowed["clusters"]) == {"app"}
    assert set(narrowed["clusters"]["app"]["backends"]) == {"app-1"}
    assert set(narrowed["proxying"]) <= {"http.requests"}
    assert set(narrowed["clusters"]["app"]["cluster"]) <= {"http.requests"}
    assert sozu(*served, "metrics", "get", "-k", "nothing", "--json").json()["clusters"] == {}
    proxy_only = sozu(*served, "metrics", "get", "--no-clusters", "-w", "--json").json()
    assert proxy_only["clusters"] == {}
    assert proxy_only["proxying"]
    assert len(proxy_only["workers"]) == 1


@pytest.fixture
def quiet(daemon: DaemonProcess) -> Iterator[tuple[str, str]]:
    """The daemon with its metrics disabled: the workers report nothing, the main process's
    figures remain."""
    where = ("-c", str(daemon.config_path))
    assert sozu(*where, "metrics", "disable").code == 0
    yield where


def test_list_names_the_catalogue(daemon: DaemonProcess) -> None:
    where = ("-c", str(daemon.config_path))
    listed = sozu(*where, "metrics", "get", "--list", "--json")
    assert listed.code == 0, listed
    assert listed.json()["names"] == sorted(CATALOGUE)
    text = sozu(*where, "metrics", "get", "-l")
    assert text.out.split() == sorted(CATALOGUE)


def test_json_text_and_the_bare_group(quiet: tuple[str, str]) -> None:
    document = sozu(*quiet, "metrics", "get", "--json")
    assert document.code == 0, document
    answer = MetricsContent.model_validate(document.json())
    assert answer.main["configuration.clusters"] == 1
    assert answer.main["workers"] == 1

    bare = sozu(*quiet, "metrics")
    assert bare.code == 0, bare
    assert bare.out.splitlines()[0] == "main process"
    assert "configuration.backends" in bare.out
    assert "no worker metrics (none matched, or metrics are disabled)" in bare.out
    assert sozu("--json", *quiet, "metrics").json()["type"] == "metrics"

    only = sozu(*quiet, "metrics", "get", "-n", "state.version", "--json").json()
    assert set(only["main"]) == {"state.version"}


def read_lines(process: subprocess.Popen[bytes], wanted: int, within: float) -> list[str]:
    """Up to ``wanted`` lines of the process's stdout, for ``within`` seconds at most."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + within
    while len(lines) < wanted and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in done]
    return lines


def start_refreshing(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sozu_cli.main", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_refresh_prints_again_until_ctrl_c(quiet: tuple[str, str]) -> None:
    process = start_refreshing(*quiet, "metrics", "get", "-r", "0.2", "--json")
    try:
        lines = read_lines(process, 3, within=30)
        assert len(lines) == 3, lines
        documents = [json.loads(line) for line in lines]
        assert all(d["type"] == "metrics" for d in documents)
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_refresh_in_text_repeats_the_tables(quiet: tuple[str, str]) -> None:
    process = start_refreshing(*quiet, "metrics", "get", "-r", "0.2")
    try:
        lines = read_lines(process, 40, within=30)
        assert sum(line == "main process" for line in lines) >= 2, lines
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
