"""``sozu`` commands about the daemon's life: status, state, logging, metrics, queries, reload,
upgrade, events, shutdown, start; and how a missing daemon or configuration is reported."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli_harness import base_config, live_state, sozu
from support.daemon import DaemonProcess, free_port

import sozu_runtime
from sozu_config import (
    AddBackend,
    AddCluster,
    AddHttpListener,
    Backend,
    Cluster,
    HttpListenerConfig,
)


def config_of(daemon: DaemonProcess) -> tuple[str, str]:
    return "-c", str(daemon.config_path)


def test_status_plain_json_and_the_ways_to_name_the_daemon(daemon: DaemonProcess) -> None:
    plain = sozu(*config_of(daemon), "status")
    assert plain.code == 0, plain
    lines = plain.out.splitlines()
    assert lines[0].split() == ["PROCESS", "PID", "VERSION", "STARTED", "STATE"]
    (pid,) = daemon.worker_pids()
    main_row, worker_row = lines[1].split(), lines[2].split()
    assert main_row[:3] == ["main", str(daemon.pid), sozu_runtime.__version__]
    assert main_row[4] == "running"
    assert worker_row[:4] == ["worker", "0", str(pid), sozu_runtime.__version__]
    assert worker_row[5] == "running"
    for row in (main_row, worker_row):  # RFC 3339 UTC start times
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[-2]), row
    assert "1 of 1 workers answered" in plain.out

    document = sozu(*config_of(daemon), "status", "--json")
    assert document.code == 0
    data = document.json()
    assert data["type"] == "workers"
    (worker,) = data["workers"]
    assert worker["id"] == 0 and worker["pid"] == pid and worker["run_state"] == "running"
    assert worker["version"] == sozu_runtime.__version__
    assert data["main"]["pid"] == daemon.pid and data["main"]["version"] == sozu_runtime.__version__
    started = dt.datetime.fromisoformat(data["main"]["started_at"])
    assert started.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - started) < dt.timedelta(minutes=30)
    # global options after the subcommand, $SOZU_CONFIG, and --socket without a file
    assert sozu("status", "-c", daemon.config_path).code == 0
    assert sozu("status", env={"SOZU_CONFIG": str(daemon.config_path)}).code == 0
    by_socket = sozu("--socket", daemon.socket_path, "status", "-j")
    assert by_socket.code == 0
    assert by_socket.json()["workers"][0]["pid"] == pid
    assert sozu(*config_of(daemon), "-t", "0", "status").code == 0


def test_no_daemon_exits_3_with_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    for args in (
        ["status"],
        ["cluster", "list"],
        ["query", "state"],
        ["cluster", "add", "-i", "x"],
        ["events"],
        ["upgrade"],
        ["shutdown"],
        ["state", "stats"],
    ):
        result = sozu("--socket", missing, *args)
        assert result.code == 3, (args, result)
        assert "the socket file does not exist" in result.err
        assert len(result.err.strip().splitlines()) == 1
        assert "Traceback" not in result.err
        # with --json, stdout says it too, as one JSON document
        document = sozu("--socket", missing, *args, "--json")
        assert document.code == 3, (args, document)
        assert document.json() == {
            "status": "failure",
            "kind": "unreachable",
            "message": result.err.strip().removeprefix("error: "),
        }
    # a stale socket file: nobody listens on it
    stale = tmp_path / "stale.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(stale))
    server.close()
    result = sozu("--socket", stale, "status")
    assert result.code == 3, result
    assert "nobody listens" in result.err


def test_configuration_problems_are_usage_errors(tmp_path: Path) -> None:
    nothing = sozu("status")
    assert nothing.code == 2
    assert "no configuration file" in nothing.err
    as_json = sozu("status", "--json")
    assert as_json.code == 2
    assert as_json.json()["kind"] == "usage"
    assert "no configuration file" in as_json.json()["message"]
    bad = tmp_path / "bad.toml"
    bad.write_text("worker_count = 'many'\n")
    result = sozu("-c", bad, "status")
    assert result.code == 2, result
    assert "worker_count" in result.err
    assert "Traceback" not in result.err


def test_state_save_load_and_stats(daemon: DaemonProcess, tmp_path: Path) -> None:
    saved = tmp_path / "saved" / "state.jsonl"
    assert sozu(*config_of(daemon), "state", "save", "-f", saved).code == 2  # no folder
    saved.parent.mkdir()
    result = sozu(*config_of(daemon), "state", "save", "-f", saved)
    assert result.code == 0, result
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert {"add_cluster", "add_http_listener"} <= {r["type"] for r in records}

    assert sozu(*config_of(daemon), "cluster", "remove", "-i", "app").code == 0
    assert "app" not in live_state(daemon)[1].clusters
    loaded = sozu(*config_of(daemon), "state", "load", "-f", saved)
    # a merge: the listener exists already, so its record is skipped (listed, exit 1)
    assert loaded.code == 1, loaded
    assert loaded.out.splitlines()[0].endswith("1 skipped"), loaded
    assert "add_http_listener" in loaded.out.splitlines()[1]
    assert "app" in live_state(daemon)[1].clusters

    loaded_json = sozu(*config_of(daemon), "state", "load", "-f", saved, "--json")
    assert loaded_json.code == 1, loaded_json
    document = loaded_json.json()
    assert document["status"] == "failure"
    assert "skipped" in document["message"]
    assert document["skipped"][0]["request"].startswith("add_http_listener")

    missing = sozu(*config_of(daemon), "state", "load", "-f", tmp_path / "missing.jsonl")
    assert missing.code == 2
    assert "does not exist" in missing.err

    stats = sozu(*config_of(daemon), "state", "stats")
    assert stats.code == 0
    assert stats.out.splitlines()[0].split() == ["REQUEST", "COUNT"]
    counts = sozu(*config_of(daemon), "state", "stats", "--json").json()
    assert counts["type"] == "request_counts"
    assert counts["counts"]["remove_cluster"] == 1


def test_state_load_lists_every_skipped_record_and_fails(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    listener = f"127.0.0.1:{daemon.port}"  # type: ignore[attr-defined]
    records = [
        AddCluster(cluster=Cluster(cluster_id="a")),
        AddBackend(backend=Backend(cluster_id="nope", backend_id="x", address="127.0.0.1:9")),
        AddHttpListener(listener=HttpListenerConfig(address=listener)),  # exists already
        AddCluster(cluster=Cluster(cluster_id="b")),
        AddBackend(backend=Backend(cluster_id="gone", backend_id="y", address="127.0.0.1:9")),
    ]
    state_file = tmp_path / "state.jsonl"
    state_file.write_text("".join(r.model_dump_json() + "\n" for r in records))
    result = sozu(*config_of(daemon), "state", "load", "-f", state_file)
    assert result.code == 1, result
    lines = result.out.splitlines()
    assert lines[0] == f"loaded {state_file}: 2 requests applied, 3 skipped", result
    assert [line.split(":")[0] for line in lines[1:]] == ["  line 2", "  line 3", "  line 5"]
    assert "add_backend nope/x" in lines[1] and "no cluster 'nope'" in lines[1]
    assert f"add_http_listener {listener}" in lines[2] and "already exists" in lines[2]
    assert "3 skipped records" in result.err and str(state_file) in result.err
    assert {"a", "b"} <= set(live_state(daemon)[1].clusters)

    document = sozu(*config_of(daemon), "state", "load", "-f", state_file, "--json")
    assert document.code == 1, document
    data = document.json()
    assert data["status"] == "failure"
    skipped = {r["line"]: r for r in data["skipped"]}
    assert {2, 3, 5} <= set(skipped), data
    assert skipped[5]["request"] == "add_backend gone/y 127.0.0.1:9"
    assert "no cluster 'gone'" in skipped[5]["message"]

    good = tmp_path / "good.jsonl"
    good.write_text(AddCluster(cluster=Cluster(cluster_id="c")).model_dump_json() + "\n")
    clean = sozu(*config_of(daemon), "state", "load", "-f", good)
    assert clean.code == 0, clean
    assert clean.out.strip() == f"loaded {good}: 1 requests applied, 0 skipped"


def test_logging_metrics_and_queries(daemon: DaemonProcess) -> None:
    level = sozu(*config_of(daemon), "logging", "debug")
    assert level.code == 0
    assert "debug" in level.out
    wrong = sozu(*config_of(daemon), "logging", "loud")
    assert wrong.code == 2
    assert "invalid choice" in wrong.err

    for verb, word in (("disable", "disabled"), ("enable", "enabled"), ("clear", "clear")):
        result = sozu(*config_of(daemon), "metrics", verb, "--json")
        assert result.code == 0, result
        assert result.json() == {"status": "ok", "message": f"metrics {word}"}

    metrics = sozu(*config_of(daemon), "metrics", "get", "--json").json()
    assert metrics["type"] == "metrics"
    assert metrics["main"]["configuration.clusters"] == 1
    assert "app" in metrics["clusters"]
    assert sozu(*config_of(daemon), "query", "metrics", "-k", "app", "-w").code == 0
    table = sozu(*config_of(daemon), "metrics", "get")
    assert "configuration.clusters" in table.out

    state = sozu(*config_of(daemon), "query", "state", "--json").json()
    assert state["type"] == "state"
    assert state["version"] == live_state(daemon)[0]
    assert [c["cluster_id"] for c in state["state"]["clusters"]] == ["app"]
    human = sozu(*config_of(daemon), "query", "state")
    assert "app.example.com" in human.out
    workers = sozu(*config_of(daemon), "query", "workers", "--json").json()
    assert [w["id"] for w in workers["workers"]] == [0]


def test_reload(daemon: DaemonProcess, tmp_path: Path) -> None:
    port = daemon.port  # type: ignore[attr-defined]
    changed = tmp_path / "changed.toml"
    backend = f"127.0.0.1:{free_port()}"
    changed.write_text(
        f'command_socket = "{daemon.socket_path}"\n'
        + base_config(port, int(backend.rsplit(":", 1)[1]))
        + '\n[clusters.extra]\nprotocol = "http"\n'
    )
    result = sozu(*config_of(daemon), "reload", "-f", changed)
    assert result.code == 0, result
    assert set(live_state(daemon)[1].clusters) == {"app", "extra"}
    # the changes are named, one a line, as plans describe them
    # (base_config gave the backend another port: it is replaced too)
    lines = result.out.splitlines()
    assert "applied 2 changes;" in lines[0], result
    assert lines[1:] == ["  add_cluster extra", f"  add_backend app/app-1 {backend}"], result
    assert sozu(*config_of(daemon), "reload", "-f", tmp_path / "missing.toml").code == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("[[listeners]\n")
    refused = sozu(*config_of(daemon), "reload", "-f", broken)
    assert refused.code == 1, refused
    assert "not reloaded" in refused.err
    # without -f: the daemon's own file, which does not have "extra"
    back = sozu(*config_of(daemon), "reload", "--json")
    assert back.code == 0, back
    assert "remove_cluster extra" in [r["request"] for r in back.json()["results"]], back
    assert set(live_state(daemon)[1].clusters) == {"app"}


def test_upgrade_one_worker_then_everything(daemon: DaemonProcess) -> None:
    (old_pid,) = daemon.worker_pids()
    one = sozu(*config_of(daemon), "upgrade", "--worker", "0")
    assert one.code == 0, one
    assert "replaced by worker" in one.out
    # the old worker drains its connections in the background, then leaves the list
    deadline = time.monotonic() + 10
    while old_pid in daemon.worker_pids():
        assert time.monotonic() < deadline, "the upgraded worker did not leave"
        time.sleep(0.05)
    (new_pid,) = daemon.worker_pids()
    assert new_pid != old_pid
    absent = sozu(*config_of(daemon), "upgrade", "--worker", "0")
    assert absent.code == 1
    assert "no running worker 0" in absent.err

    everything = sozu(*config_of(daemon), "upgrade", "--json")
    document = everything.json()
    steps = document["steps"]
    assert steps[0]["target"] == "main process"
    assert [s["target"] for s in steps[1:]] == ["worker 1"]
    complete = all(s["status"] == "ok" for s in steps)
    assert everything.code == (0 if complete else 1), everything
    assert document["status"] == ("ok" if complete else "failure")
    deadline = time.monotonic() + 20
    while sozu(*config_of(daemon), "status").code != 0:
        assert time.monotonic() < deadline, "the daemon did not answer after the upgrade"
        time.sleep(0.2)


def read_line(stream: object, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    try:
        if not selector.select(timeout):
            raise AssertionError(f"no line within {timeout} s")
        return stream.readline()  # type: ignore[attr-defined,no-any-return]
    finally:
        selector.close()


def test_events_are_printed_until_ctrl_c(daemon: DaemonProcess) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sozu_cli.main", *config_of(daemon), "events", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SOZU_CONFIG"},
    )
    try:
        assert "subscribed" in read_line(process.stderr, 15)
        assert daemon.send(AddCluster(cluster=Cluster(cluster_id="observed"))).ok
        event = json.loads(read_line(process.stdout, 15))
        assert event["kind"] == "configuration_changed"
        assert "add_cluster observed" in event["message"]
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_soft_shutdown(daemon: DaemonProcess) -> None:
    result = sozu(*config_of(daemon), "shutdown")
    assert result.code == 0, result
    assert "soft stop" in result.out
    assert daemon.process is not None
    assert daemon.process.wait(20) == 0
    assert sozu(*config_of(daemon), "status").code == 3


def test_hard_shutdown(daemon: DaemonProcess) -> None:
    result = sozu(*config_of(daemon), "shutdown", "--hard", "--json")
    assert result.code == 0, result
    assert result.json()["status"] == "ok"
    assert daemon.process is not None
    assert daemon.process.wait(20) == 0


def test_start_refuses_a_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:{free_port()}"\nx = 1\n'
    )
    result = sozu("-c", bad, "start", timeout=30)
    assert result.code == 1, result
    assert "unknown key" in result.err
    assert "Traceback" not in result.err
    no_file = sozu("start")
    assert no_file.code == 2
