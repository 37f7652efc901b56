"""``sozu top``: the rates, shares and percentiles over an interval (pure functions on
synthetic snapshots), the frames they make, the key reader, and the command against a real
daemon: printed frames in a pipe, a live view on a pseudo-terminal that quits on ``q``."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import base_config, sozu
from support.backends import HttpBackend
from support.clients import get
from support.daemon import DaemonProcess, free_port

from sozu_cli.commands.top import quit_pressed
from sozu_cli.top import (
    Sample,
    build_frame,
    counter_rate,
    error_share,
    frame_cells,
    header_text,
    histogram_delta,
    interval_percentile,
    scope_row,
    uptime_text,
)
from sozu_config.responses import (
    MainProcessInfo,
    MetricsContent,
    RunState,
    WorkerInfo,
    WorkersContent,
)

# --------------------------------------------------------------------------- arithmetic


def test_counter_rate_over_the_interval() -> None:
    assert counter_rate(100, 150, 2.0) == 25.0
    assert counter_rate(100, 100, 1.0) == 0.0
    assert counter_rate(None, 150, 2.0) is None  # first sample: no rate yet
    assert counter_rate(100, 150, 0.0) is None
    assert counter_rate(500, 30, 1.5) == 20.0  # cleared in between: counts from zero


def test_error_share_is_the_5xx_part_of_the_interval() -> None:
    before = {"200": 90, "502": 10}
    after = {"200": 120, "502": 10, "503": 10}
    assert error_share(before, after) == 0.25  # 10 of 40 new answers
    assert error_share(after, after) is None  # nothing answered
    assert error_share(None, after) is None
    assert error_share(before, {"200": 3, "500": 1}) == 0.25  # cleared in between


def hist(buckets: dict[str, int], maximum: int) -> dict[str, Any]:
    return {"count": sum(buckets.values()), "sum": 0, "max": maximum, "buckets": buckets}


def test_percentiles_cover_the_interval_only() -> None:
    before = hist({"1000": 100}, 1000)
    after = hist({"1000": 100, "100000": 100}, 90_000)
    assert histogram_delta(before, after)["buckets"] == {"100000": 100}
    assert histogram_delta(before, after)["count"] == 100
    # all of time: p50 in the 1 ms bucket; the last interval: every request took ~90 ms
    assert interval_percentile(None, after, 0.5) == 1000
    assert interval_percentile(before, after, 0.5) == 90_000
    assert interval_percentile(after, after, 0.5) is None
    assert interval_percentile(None, None, 0.5) is None
    cleared = hist({"2500": 4}, 2000)
    assert interval_percentile(after, cleared, 0.99) == 2000


def test_scope_row_reads_gauges_and_the_backend_state() -> None:
    before = {"http.requests": 10, "http.status": {"200": 10}}
    after = {
        "http.requests": 30,
        "http.status": {"200": 15, "503": 5},
        "backend.connections": 3,
        "http.active_requests": 2,
        "backend.down": 2,  # the number of workers that see the backend down
    }
    row = scope_row("web-1", before, after, 4.0, depth=1, workers=2)
    assert row.requests_per_second == 5.0
    assert row.error_share == 0.5  # 5 of the 10 answers since the last sample
    assert (row.backend_connections, row.active_requests, row.state) == (3, 2, "down")
    assert scope_row("web-1", {}, after, 1.0, depth=1, workers=3).state == "down 2/3"
    assert scope_row("web-1", {}, {"backend.down": 0}, 1.0, depth=1, workers=2).state == "up"
    assert scope_row("web-1", {}, {}, 1.0, depth=1).state == "-"  # no health information
    assert scope_row("web", {}, after, 1.0).state == "-"  # a cluster has no state
    first = scope_row("web", None, after, 0.0)
    assert first.requests_per_second is None and first.error_share is None


def test_uptime_text() -> None:
    assert uptime_text(42.9) == "42s"
    assert uptime_text(307) == "5m07s"
    assert uptime_text(3720) == "1h02m"
    assert uptime_text(3 * 86_400 + 4 * 3600 + 59) == "3d04h"
    assert uptime_text(None) == "-"


# --------------------------------------------------------------------------- frames


def metrics(requests: int, errors: int, *, down: bool | None = None) -> MetricsContent:
    backend: dict[str, Any] = {"http.requests": requests, "backend.connections": 2}
    if down is not None:
        backend["backend.down"] = 2 if down else 0
    scope = {"http.requests": requests, "http.status": {"200": requests - errors, "500": errors}}
    return MetricsContent(
        main={"workers": 2, "state.version": 12},
        proxying={**scope, "client.connections": 7, "backend.connections": 2},
        clusters={"api": {"cluster": scope, "backends": {"api-1": backend}}},
    )


STARTED = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
WORKERS = WorkersContent(
    workers=[
        WorkerInfo(id=0, pid=100, run_state=RunState.RUNNING),
        WorkerInfo(id=1, pid=101, run_state=RunState.NOT_ANSWERING),
    ],
    main=MainProcessInfo(pid=99, version="1", started_at=STARTED),
)


def test_a_frame_has_the_header_clusters_backends_and_workers() -> None:
    first = Sample(10.0, metrics(100, 0, down=False))
    second = Sample(12.0, metrics(140, 10, down=True))
    now = STARTED + dt.timedelta(hours=1, minutes=2)
    known = {"api": ["api-1", "api-2"], "idle": []}
    frame = build_frame(first, second, WORKERS, known, now=now)
    assert frame.total.requests_per_second == 20.0
    assert frame.total.error_share == 0.25
    assert (frame.workers_running, frame.workers_total, frame.state_version) == (1, 2, 12)
    assert frame.client_connections == 7
    assert frame.workers == [("0", "100", "running"), ("1", "101", "not_answering")]
    assert frame_cells(frame) == [
        ["api", "-", "20.0", "25.0", "-", "-", "-", "-"],
        ["  └ api-1", "down", "20.0", "-", "-", "-", "2", "-"],
        ["  └ api-2", "-", "0.0", "-", "-", "-", "-", "-"],  # in the state, no traffic yet
        ["idle", "-", "0.0", "-", "-", "-", "-", "-"],
    ]
    header = header_text(frame)
    for part in ("up 1h02m", "workers 1/2", "state v12", "req/s 20.0", "5xx 25.0 %"):
        assert part in header
    assert "connections 7 client / 2 backend" in header

    opening = build_frame(None, first, None, {})
    assert opening.total.requests_per_second is None
    assert opening.workers_total == 2  # from the main process's figures
    assert "up -" in header_text(opening)


# --------------------------------------------------------------------------- keys


def test_quit_pressed_reads_q_without_waiting_for_the_deadline() -> None:
    reader, writer = os.pipe()
    try:
        os.write(writer, b"xq")
        started = time.monotonic()
        assert quit_pressed(reader, started + 10)
        assert time.monotonic() - started < 2
        os.write(writer, b"x")
        started = time.monotonic()
        assert not quit_pressed(reader, started + 0.3)
        assert time.monotonic() - started >= 0.29
        assert not quit_pressed(None, time.monotonic() + 0.05)
        os.close(writer)
        writer = -1
        started = time.monotonic()
        assert not quit_pressed(reader, started + 0.3)  # end of input: the deadline still holds
        assert time.monotonic() - started >= 0.29
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


# --------------------------------------------------------------------------- a real daemon


@pytest.fixture
def where(daemon: DaemonProcess) -> Iterator[tuple[str, str]]:
    """The daemon with its metrics disabled: the workers report nothing, and the view still
    lists the clusters and backends of the routing state."""
    arguments = ("-c", str(daemon.config_path))
    assert sozu(*arguments, "metrics", "disable").code == 0
    yield arguments


def test_frames_in_a_pipe_stop_after_count(where: tuple[str, str]) -> None:
    result = sozu(*where, "top", "--count", "2", "--interval", "0.2", timeout=60)
    assert result.code == 0, result
    lines = result.out.splitlines()
    headers = [line for line in lines if "workers 1/1" in line]
    assert len(headers) == 2, result
    assert sum(line.startswith("CLUSTER / BACKEND") for line in lines) == 2
    assert sum(line.split()[:1] == ["app"] for line in lines) == 2
    assert sum(line.split()[:2] == ["└", "app-1"] for line in lines) == 2
    assert "\x1b[" not in result.out

    documents = sozu(*where, "top", "--count", "2", "--interval", "0.2", "--json", timeout=60)
    assert documents.code == 0, documents
    frames = [json.loads(line) for line in documents.out.splitlines()]
    assert len(frames) == 2
    assert frames[0]["total"]["requests_per_second"] is None
    assert frames[1]["total"]["requests_per_second"] is not None
    assert [row["name"] for row in frames[1]["rows"]] == ["app", "app-1"]


def test_rates_follow_the_traffic_between_frames(tmp_path: Path) -> None:
    stop_sending = threading.Event()

    def send(port: int) -> None:
        deadline = time.monotonic() + 30
        while not stop_sending.is_set() and time.monotonic() < deadline:
            get(port, "/", host="app.example.com")
            time.sleep(0.01)

    with HttpBackend("app-1") as backend:
        port = free_port()
        with DaemonProcess(tmp_path, base_config(port, backend.port)) as daemon:
            daemon.start()
            sender = threading.Thread(target=send, args=(port,), daemon=True)
            sender.start()
            try:
                result = sozu(
                    "-c", daemon.config_path, "top", "--count", "3", "--interval", "0.5",
                    "--json", timeout=60,
                )  # fmt: skip
            finally:
                stop_sending.set()
                sender.join(35)
    assert result.code == 0, result
    frames = [json.loads(line) for line in result.out.splitlines()]
    assert len(frames) == 3
    assert frames[0]["rows"][0]["requests_per_second"] is None  # no interval yet
    for frame in frames[1:]:
        cluster, backend_row = frame["rows"]
        assert (cluster["name"], backend_row["name"]) == ("app", "app-1")
        assert cluster["requests_per_second"] > 0
        assert cluster["p50_us"] is not None and cluster["p50_us"] <= cluster["p99_us"]
        assert backend_row["state"] == "up"
        assert frame["total"]["requests_per_second"] > 0


def test_a_daemon_gone_after_the_first_frame_is_reported_in_the_next(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, base_config(free_port())) as daemon:
        daemon.start()
        process = subprocess.Popen(
            [sys.executable, "-m", "sozu_cli.main", "-c", str(daemon.config_path), "top",
             "--count", "3", "--interval", "1", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
            assert first["problem"] == ""
            # gone at once (a stopping daemon still answers for a while), well before the
            # next frame is due
            daemon.kill()
            out, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert process.returncode == 0
    later = [json.loads(line) for line in out.decode().splitlines()]
    assert len(later) == 2
    assert all(frame["problem"] for frame in later)  # the previous figures, and why
    assert later[-1]["rows"] == first["rows"]


def test_unreachable_daemon_exits_3(tmp_path: Path) -> None:
    result = sozu("--socket", tmp_path / "nothing.sock", "top", "--count", "1")
    assert result.code == 3
    assert "Traceback" not in result.err


def read_until(leader: int, wanted: list[bytes], within: float) -> bytes:
    """What the terminal shows until every one of ``wanted`` appeared (or ``within`` s)."""
    shown = b""
    deadline = time.monotonic() + within
    while not all(w in shown for w in wanted) and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([leader], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    return shown


def start_on_a_terminal(where: tuple[str, str]) -> tuple[subprocess.Popen[bytes], int, int]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sozu_cli.main", *where, "top", "--interval", "0.3"],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"},
    )
    return process, leader, follower


def stop(process: subprocess.Popen[bytes], leader: int, follower: int) -> None:
    os.close(leader)
    os.close(follower)
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_live_view_draws_the_clusters_and_quits_on_q(where: tuple[str, str]) -> None:
    process, leader, follower = start_on_a_terminal(where)
    try:
        shown = read_until(leader, [b"app-1", b"running", b"q quits"], within=30)
        assert b"app-1" in shown and b"running" in shown, shown
        assert b"\x1b[?1049h" in shown  # drawn on the alternate screen
        # the keys are read in cbreak mode: no echo, no line buffering
        assert not termios.tcgetattr(follower)[3] & (termios.ICANON | termios.ECHO)
        os.write(leader, b"q")
        assert process.wait(10) == 0
        rest = read_until(leader, [b"\x1b[?1049l"], within=5)
        assert b"\x1b[?1049l" in rest  # back from the alternate screen
        lflag = termios.tcgetattr(follower)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO  # terminal restored
    finally:
        stop(process, leader, follower)


def test_live_view_quits_on_ctrl_c(where: tuple[str, str]) -> None:
    process, leader, follower = start_on_a_terminal(where)
    try:
        shown = read_until(leader, [b"app-1"], within=30)
        assert b"app-1" in shown
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        lflag = termios.tcgetattr(follower)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    finally:
        stop(process, leader, follower)
