"""``sozu cluster health-check set|remove|list``, ``sozu backend list``, the health in ``sozu
cluster list`` and the health check in plans: the rendering from hand-built answers, then the
commands against real daemons (and a stand-in for a daemon that does not tell the backends'
health)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_harness import base_config, live_state, sozu, sozu_apply
from support.backends import HttpBackend, wait_for
from support.daemon import DaemonProcess, free_port

from sozu_cli.health_view import (
    ago,
    backends_summary,
    check_summary,
    health_check_row,
    last_check,
    render_backends,
    render_health_checks,
)
from sozu_cli.main import build_parser
from sozu_cli.output import Output
from sozu_cli.plan_view import show_field
from sozu_config import Cluster, ConfigState, HealthCheck
from sozu_config import requests as rq
from sozu_config.protocol import decode_request, encode_response
from sozu_config.responses import (
    BackendHealth,
    BackendsContent,
    BackendState,
    ErrorKind,
    ProbeResult,
    Response,
    ResponseContent,
    ResponseStatus,
)

NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def before(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def sample_backends() -> list[BackendHealth]:
    """Three backends of ``api`` (up, down, draining) and one of ``db`` never checked."""
    return [
        BackendHealth(
            cluster_id="api",
            backend_id="api-2",
            address="10.0.0.2:8080",
            state=BackendState.DOWN,
            since=before(190),
            reason="3 failed checks: connection refused",
            checked=True,
            last_check=ProbeResult(
                time=before(1), ok=False, latency=0.0004, detail="connection refused"
            ),
            consecutive_failures=5,
        ),
        BackendHealth(
            cluster_id="api",
            backend_id="api-1",
            address="10.0.0.1:8080",
            state=BackendState.UP,
            checked=True,
            last_check=ProbeResult(time=before(2.5), ok=True, latency=0.0031, detail="200"),
        ),
        BackendHealth(
            cluster_id="api",
            backend_id="api-3",
            address="10.0.0.3:8080",
            state=BackendState.DRAINING,
            since=before(7_300),
            reason="removed",
        ),
        BackendHealth(
            cluster_id="db", backend_id="db-1", address="10.0.1.1:5432", state=BackendState.UP
        ),
    ]


def plain_output() -> tuple[Output, io.StringIO]:
    stdout = io.StringIO()
    return Output(stdout=stdout, stderr=io.StringIO()), stdout


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --------------------------------------------------------------------------- rendering


def test_relative_times() -> None:
    assert ago(before(0), NOW) == "0s ago"
    assert ago(before(59.9), NOW) == "59s ago"
    assert ago(before(60), NOW) == "1m ago"
    assert ago(before(3 * 60 + 59), NOW) == "3m ago"
    assert ago(before(2 * 3600 + 1), NOW) == "2h ago"
    assert ago(before(4 * 86_400), NOW) == "4d ago"
    assert ago(NOW + dt.timedelta(seconds=5), NOW) == "0s ago"  # a clock ahead of ours
    assert ago(before(30).replace(tzinfo=None), NOW) == "30s ago"  # no zone: UTC


def test_last_checks() -> None:
    assert last_check(None, NOW) == "-"
    passed = ProbeResult(time=before(2), ok=True, latency=0.0031, detail="200")
    assert last_check(passed, NOW) == "200 in 3 ms, 2s ago"
    fast = ProbeResult(time=before(2), ok=True, latency=0.0002, detail="connected")
    assert last_check(fast, NOW) == "connected in <1 ms, 2s ago"
    failed = ProbeResult(time=before(1), ok=False, latency=5.0, detail="connection refused")
    assert last_check(failed, NOW) == "connection refused, 1s ago"
    silent = ProbeResult(time=before(1), ok=False, latency=5.0)
    assert last_check(silent, NOW) == "failed, 1s ago"


def test_backend_table_in_a_pipe() -> None:
    output, stdout = plain_output()
    render_backends(output, sample_backends(), NOW)
    lines = stdout.getvalue().splitlines()
    assert lines[0].split() == [
        "CLUSTER",
        "BACKEND",
        "ADDRESS",
        "STATE",
        "SINCE",
        "REASON",
        "LAST",
        "CHECK",
        "FAILURES",
    ]
    # by cluster, then backend id
    assert [line.split()[:4] for line in lines[1:]] == [
        ["api", "api-1", "10.0.0.1:8080", "up"],
        ["api", "api-2", "10.0.0.2:8080", "down"],
        ["api", "api-3", "10.0.0.3:8080", "draining"],
        ["db", "db-1", "10.0.1.1:5432", "up"],
    ]
    up, down, draining, unchecked = lines[1:]
    assert "200 in 3 ms, 2s ago" in up
    assert up.rstrip().endswith("0")
    assert "3m ago" in down
    assert "3 failed checks: connection refused" in down
    assert "connection refused, 1s ago" in down
    assert down.rstrip().endswith("5")
    assert "2h ago" in draining
    assert "removed" in draining
    # nothing known: dashes, never "None"
    assert unchecked.split()[4:] == ["-", "-", "-", "0"]
    assert "None" not in stdout.getvalue()


def test_backend_states_are_coloured_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    terminal = FakeTerminal()
    output = Output(stdout=terminal, stderr=io.StringIO())
    assert output.rich
    render_backends(output, sample_backends(), NOW)
    text = terminal.getvalue()
    assert len(re.findall(r"\x1b\[32mup +\x1b\[0m", text)) == 2  # green
    assert len(re.findall(r"\x1b\[1;31mdown +\x1b\[0m", text)) == 1  # bold red
    assert len(re.findall(r"\x1b\[33mdraining\x1b\[0m", text)) == 1  # yellow
    assert "\x1b[32m10.0" not in text  # only the state is coloured


def test_empty_answers() -> None:
    output, stdout = plain_output()
    render_backends(output, [], NOW)
    render_health_checks(output, {})
    assert stdout.getvalue() == "no backend\nno health check\n"


def test_health_check_summaries_and_rows() -> None:
    http = HealthCheck(uri="/health")
    assert check_summary(http) == (
        "GET /health every 10s, timeout 5s, down after 3 failures, up after 3 successes"
    )
    tuned = HealthCheck(
        uri="/ready",
        interval=0.5,
        timeout=0.2,
        healthy_threshold=1,
        unhealthy_threshold=2,
        expected_status=204,
        host="api.example.com",
        fail_open=False,
    )
    assert check_summary(tuned) == (
        "GET /ready every 0.5s, timeout 0.2s, down after 2 failures, up after 1 success, "
        "expects 204, Host api.example.com, fail closed"
    )
    tcp = HealthCheck(interval=2)
    assert check_summary(tcp).startswith("TCP connect every 2s, timeout 5s")
    assert health_check_row("api", http) == [
        "api",
        "GET /health",
        "10s",
        "5s",
        3,
        3,
        "2xx",
        "(first frontend)",
        True,
    ]
    assert health_check_row("db", tcp)[1:] == ["TCP connect", "2s", "5s", 3, 3, None, None, True]
    output, stdout = plain_output()
    render_health_checks(output, {"db": tcp, "api": tuned})
    lines = stdout.getvalue().splitlines()
    assert lines[0].split()[:3] == ["CLUSTER", "PROBE", "INTERVAL"]
    assert lines[1].split() == [
        "api",
        "GET",
        "/ready",
        "0.5s",
        "0.2s",
        "1",
        "2",
        "204",
        "api.example.com",
        "no",
    ]
    assert lines[2].split() == ["db", "TCP", "connect", "2s", "5s", "3", "3", "-", "-", "yes"]


def test_backend_counts() -> None:
    backends = sample_backends()
    api = [b for b in backends if b.cluster_id == "api"]
    assert backends_summary(api) == "1/2 up, 1 draining"
    assert backends_summary([b for b in backends if b.cluster_id == "db"]) == "1/1 up"
    assert backends_summary([]) == "none"


def test_plans_show_a_whole_health_check_as_its_summary() -> None:
    data = HealthCheck(uri="/health", interval=5).model_dump(mode="json")
    assert show_field("health_check", data) == (
        "GET /health every 5s, timeout 5s, down after 3 failures, up after 3 successes"
    )
    assert show_field("health_check", HealthCheck()) == (
        "TCP connect every 10s, timeout 5s, down after 3 failures, up after 3 successes"
    )
    assert show_field("health_check", None) == "none"
    assert show_field("health_check.interval", 5.0) == "5.0"
    assert show_field("load_balancing", "random") == '"random"'


# --------------------------------------------------------------------------- parsing


def test_the_probe_timeout_and_the_wait_are_different_options() -> None:
    args = build_parser().parse_args(
        ["-t", "700", "cluster", "health-check", "set", "-i", "api", "--timeout", "1.5"]
    )
    assert (args.timeout, args.probe_timeout) == (700, 1.5)
    assert args.fail_open is True
    assert args.uri is None  # a TCP check
    args = build_parser().parse_args(
        ["cluster", "health-check", "set", "-i", "api", "-t", "50", "--no-fail-open"]
    )
    assert (args.timeout, args.probe_timeout, args.fail_open) == (50, None, False)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--interval", "0.01"], "must be at least 0.1 seconds"),
        (["--timeout", "0"], "must be more than 0 seconds"),
        (["--timeout", "soon"], "is not a number of seconds"),
        (["--healthy-threshold", "0"], "must be at least 1"),
        (["--expected-status", "50"], "50 is not an HTTP status code"),
        (["-u", "health"], "must start with '/'"),
        (["-u", "/h", "--host", "a b"], "is not a host name"),
    ],
)
def test_bad_values_are_usage_errors(arguments: list[str], fragment: str) -> None:
    result = sozu(
        "--socket",
        "/nonexistent/sozu.sock",
        "cluster",
        "health-check",
        "set",
        "-i",
        "a",
        *arguments,
    )
    assert result.code == 2, result
    (line,) = result.err.strip().splitlines()
    assert fragment in line
    assert "--help" in line
    assert "Traceback" not in result.err


def test_completion_knows_the_health_commands() -> None:
    script = sozu("completion", "bash")
    assert script.code == 0
    assert "health-check" in script.out
    assert "--unhealthy-threshold" in script.out
    assert "--no-fail-open" in script.out


# --------------------------------------------------------------------------- real daemons


def test_set_list_and_remove_round_trip(daemon: DaemonProcess) -> None:
    config = daemon.config_path
    result = sozu(
        "-c",
        config,
        "cluster",
        "health-check",
        "set",
        "-i",
        "app",
        "-u",
        "/health",
        "--interval",
        "2.5",
        "--timeout",
        "1",
        "--healthy-threshold",
        "2",
        "--unhealthy-threshold",
        "4",
        "--expected-status",
        "204",
        "--host",
        "app.example.com",
        "--no-fail-open",
    )
    assert result.code == 0, result
    assert "applied to 1 worker" in result.out
    expected = HealthCheck(
        uri="/health",
        interval=2.5,
        timeout=1,
        healthy_threshold=2,
        unhealthy_threshold=4,
        expected_status=204,
        host="app.example.com",
        fail_open=False,
    )
    assert live_state(daemon)[1].clusters["app"].health_check == expected

    shown = sozu("-c", config, "cluster", "list", "-i", "app")
    assert shown.code == 0, shown
    assert (
        "health check         GET /health every 2.5s, timeout 1s, down after 4 failures, "
        "up after 2 successes, expects 204, Host app.example.com, fail closed"
    ) in shown.out

    listed = sozu("-c", config, "cluster", "health-check", "list")
    assert listed.code == 0, listed
    header, row = listed.out.splitlines()
    assert header.split()[:2] == ["CLUSTER", "PROBE"]
    assert row.split() == [
        "app",
        "GET",
        "/health",
        "2.5s",
        "1s",
        "2",
        "4",
        "204",
        "app.example.com",
        "no",
    ]
    document = sozu("-c", config, "cluster", "health-check", "list", "-i", "app", "--json")
    assert document.code == 0, document
    assert document.json() == {
        "type": "health_checks",
        "health_checks": {"app": expected.model_dump(mode="json")},
    }

    # a TCP connection check replaces it
    tcp = sozu("-c", config, "cluster", "health-check", "set", "-i", "app", "--interval", "3")
    assert tcp.code == 0, tcp
    assert live_state(daemon)[1].clusters["app"].health_check == HealthCheck(interval=3)

    removed = sozu("-c", config, "cluster", "health-check", "remove", "-i", "app")
    assert removed.code == 0, removed
    assert live_state(daemon)[1].clusters["app"].health_check is None
    none = sozu("-c", config, "cluster", "health-check", "list")
    assert none.code == 0, none
    assert none.out == "no health check\n"
    assert sozu("-c", config, "cluster", "health-check", "list", "-j").json()["health_checks"] == {}


def test_refusals_are_clear_and_exit_1(daemon: DaemonProcess) -> None:
    config = daemon.config_path
    unknown = sozu("-c", config, "cluster", "health-check", "set", "-i", "nope", "-u", "/h")
    assert unknown.code == 1, unknown
    assert unknown.err.strip() == "error: refused by the main process: no cluster 'nope'"
    assert unknown.out == ""
    as_json = sozu("-c", config, "cluster", "health-check", "remove", "-i", "nope", "--json")
    assert as_json.code == 1
    assert as_json.json()["kind"] == "not_found"
    assert "no cluster 'nope'" in as_json.json()["message"]
    without = sozu("-c", config, "cluster", "health-check", "remove", "-i", "app")
    assert without.code == 1
    assert "cluster 'app' has no health check" in without.err
    for result in (unknown, as_json, without):
        assert "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1


def _two_backends_config(port: int, live: int, dead: int) -> str:
    return f"""
worker_count = 2
[[listeners]]
protocol = "http"
address = "127.0.0.1:{port}"

[clusters.app]
protocol = "http"
frontends = [{{ address = "127.0.0.1:{port}", hostname = "app.example.com" }}]
backends = [
    {{ address = "127.0.0.1:{live}", backend_id = "live" }},
    {{ address = "127.0.0.1:{dead}", backend_id = "dead" }},
]
"""


def test_backend_list_and_cluster_list_show_the_health(
    daemon_factory: Callable[[str, str], DaemonProcess],
) -> None:
    """Needs a daemon that answers ``list_backends``."""
    with HttpBackend("live") as live:
        dead = free_port()
        daemon = daemon_factory("d", _two_backends_config(free_port(), live.port, dead))
        config = daemon.config_path
        result = sozu(
            "-c",
            config,
            "cluster",
            "health-check",
            "set",
            "-i",
            "app",
            "-u",
            "/health",
            "--interval",
            "0.2",
            "--timeout",
            "1",
            "--healthy-threshold",
            "1",
            "--unhealthy-threshold",
            "1",
        )
        assert result.code == 0, result

        def states() -> dict[str, dict[str, object]] | None:
            listing = sozu("-c", config, "backend", "list", "-i", "app", "--json")
            assert listing.code == 0, listing
            found = {b["backend_id"]: b for b in listing.json()["backends"]}
            settled = (
                found.get("dead", {}).get("state") == "down"
                and found.get("live", {}).get("state") == "up"
                and found["live"].get("last_check") is not None
            )
            return found if settled else None

        found = wait_for(states, timeout=20, interval=0.3)
        assert found["dead"]["checked"] is True
        assert found["dead"]["consecutive_failures"] >= 1
        assert found["live"]["last_check"]["ok"] is True
        assert found["live"]["last_check"]["detail"] == "200"

        table = sozu("-c", config, "backend", "list")
        assert table.code == 0, table
        rows = {line.split()[1]: line for line in table.out.splitlines()[1:]}
        assert rows["live"].split()[:4] == ["app", "live", live.address, "up"]
        assert " 200 in " in rows["live"]
        assert rows["dead"].split()[3] == "down"
        assert "ago" in rows["dead"]

        clusters = sozu("-c", config, "cluster", "list")
        assert clusters.code == 0, clusters
        header, row = clusters.out.splitlines()
        assert header.split() == ["CLUSTER", "HASH", "BACKENDS", "HEALTH", "CHECK"]
        assert row.split()[2:] == ["1/2", "up", "GET", "/health", "every", "0.2s"]
        one = sozu("-c", config, "cluster", "list", "-i", "app")
        assert "backends             1/2 up" in one.out
        shown = {
            line.split()[0]: line.split()[-1]
            for line in one.out.splitlines()
            if line.startswith(("live ", "dead "))
        }
        assert shown == {"live": "up", "dead": "down"}


def test_a_health_check_from_the_file_probes_the_backends(
    daemon_factory: Callable[[str, str], DaemonProcess],
) -> None:
    """The table of config.toml reaches the daemon's health monitor (needs a daemon that
    answers ``list_backends``)."""
    with HttpBackend("live") as live:
        text = _two_backends_config(free_port(), live.port, free_port()) + (
            "[clusters.app.health_check]\n"
            'uri = "/ready"\n'
            "interval = 0.2\n"
            "unhealthy_threshold = 1\n"
            'host = "probe.example.com"\n'
        )
        daemon = daemon_factory("f", text)

        def probed() -> bool:
            return any(r.target == "/ready" for r in live.requests)

        wait_for(probed, timeout=15, interval=0.1)
        probe = next(r for r in live.requests if r.target == "/ready")
        assert probe.method == "GET"
        assert probe.header("Host") == "probe.example.com"
        assert probe.header("User-Agent") == "sozu-health-check"

        def dead_is_down() -> dict[str, object] | None:
            listing = sozu("-c", daemon.config_path, "backend", "list", "--json")
            assert listing.code == 0, listing
            found = {b["backend_id"]: b for b in listing.json()["backends"]}
            return found if found["dead"]["state"] == "down" else None

        found = wait_for(dead_is_down, timeout=15, interval=0.3)
        assert found["live"]["state"] == "up"
        assert "connection refused" in found["dead"]["reason"]
        listed = sozu("-c", daemon.config_path, "cluster", "health-check", "list", "--json")
        assert listed.json()["health_checks"]["app"]["host"] == "probe.example.com"


def test_sozu_apply_plans_a_health_check_readably(tmp_path: Path) -> None:
    port = free_port()
    text = base_config(port)
    with DaemonProcess(tmp_path, text) as daemon:
        daemon.start()
        desired = tmp_path / "desired.toml"
        desired.write_text(text + '\n[clusters.app.health_check]\nuri = "/health"\ninterval = 5\n')
        plan = sozu_apply(desired, "--socket", daemon.socket_path, "--dry-run")
        assert plan.code == 0, plan
        lines = [line.strip() for line in plan.out.splitlines()]
        assert "~ add_cluster app" in lines
        assert (
            "health_check: none -> GET /health every 5s, timeout 5s, down after 3 failures, "
            "up after 3 successes"
        ) in lines
        assert "plan: 0 to add, 1 to change, 0 to remove" in lines
        applied = sozu_apply(desired, "--socket", daemon.socket_path)
        assert applied.code == 0, applied
        assert live_state(daemon)[1].health_checks() == {
            "app": HealthCheck(uri="/health", interval=5)
        }
        desired.write_text(text + '\n[clusters.app.health_check]\nuri = "/ready"\ninterval = 5\n')
        again = sozu_apply(desired, "--socket", daemon.socket_path, "--dry-run")
        assert again.code == 0, again
        assert 'health_check.uri: "/health" -> "/ready"' in again.out
        checked = sozu("config", "check", desired)
        assert checked.code == 0, checked
        assert (
            "health check of app: GET /ready every 5s, timeout 5s, down after 3 failures, "
            "up after 3 successes"
        ) in checked.out
        summary = sozu("config", "check", desired, "--json").json()
        assert summary["summary"]["health_checks"] == 1
        assert summary["health_checks"]["app"]["uri"] == "/ready"


# --------------------------------------------------------------------------- a daemon that
# does not tell the backends' health


class StandInDaemon:
    """A command socket answering from a :class:`ConfigState` the requests it answers alone,
    ``list_backends`` with ``backends`` when given, and a failure for everything else."""

    def __init__(self, path: Path, state: ConfigState, backends: list[BackendHealth] | None):
        self.path = path
        self.state = state
        self.backends = backends
        self.requests: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="stand-in")

    def _answer(self, request: rq.Request) -> Response:
        self.requests.append(request.type)
        content: ResponseContent | None = None
        if isinstance(request, rq.ListBackends) and self.backends is not None:
            content = BackendsContent(backends=self.backends)
        elif not isinstance(request, rq.ListBackends):
            content = self.state.answer_query(request)
        if content is None:
            return Response.failure(
                f"{request.type} is not supported by this daemon", kind=ErrorKind.UNSUPPORTED
            )
        return Response(id="", status=ResponseStatus.OK, content=content)

    def _serve(self) -> None:
        for _ in range(10_000):  # bounded: 0.2 s per turn at most
            if self._stop.is_set():
                return
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            with connection, connection.makefile("rb") as lines:
                connection.settimeout(5)
                for line in lines:
                    message = decode_request(line)
                    answer = self._answer(message.request).model_copy(update={"id": message.id})
                    connection.sendall(encode_response(answer))

    def __enter__(self) -> StandInDaemon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory whose path is short enough for a unix socket."""
    yield tmp_path_factory.mktemp("s", numbered=True)


def _state_with_api() -> ConfigState:
    state = ConfigState()
    state.apply(
        rq.AddCluster(cluster=Cluster(cluster_id="api", health_check=HealthCheck(uri="/h")))
    )
    state.apply(rq.AddCluster(cluster=Cluster(cluster_id="web")))
    for backend in sample_backends()[:2]:
        state.apply(
            rq.AddBackend(
                backend={
                    "cluster_id": "api",
                    "backend_id": backend.backend_id,
                    "address": backend.address,
                }
            )
        )
    return state


def test_cluster_list_without_health_from_the_daemon(short_dir: Path) -> None:
    with StandInDaemon(short_dir / "c.sock", _state_with_api(), None) as stand_in:
        listing = sozu("--socket", stand_in.path, "cluster", "list")
        assert listing.code == 0, listing
        # query_health_checks is answered by the state: the check is shown; no backends column
        assert listing.out.splitlines()[0].split() == [
            "CLUSTER",
            "HASH",
            "HEALTH",
            "CHECK",
        ]
        assert "GET /h every 10s" in listing.out
        one = sozu("--socket", stand_in.path, "cluster", "list", "-i", "api")
        assert one.code == 0, one
        assert "health check         GET /h every 10s" in one.out
        assert not any(line.startswith("backends ") for line in one.out.splitlines())
        assert "STATE" not in one.out
        as_json = sozu("--socket", stand_in.path, "cluster", "list", "--json")
        assert set(as_json.json()) == {"type", "hashes"}
        refused = sozu("--socket", stand_in.path, "backend", "list")
        assert refused.code == 1
        assert refused.err.strip() == "error: list_backends is not supported by this daemon"
        assert stand_in.requests.count("list_backends") == 3  # as json: not asked


def test_cluster_list_with_health_from_the_daemon(short_dir: Path) -> None:
    backends = [b for b in sample_backends() if b.cluster_id == "api"]
    with StandInDaemon(short_dir / "c.sock", _state_with_api(), backends) as stand_in:
        listing = sozu("--socket", stand_in.path, "cluster", "list")
        assert listing.code == 0, listing
        rows = [line.split() for line in listing.out.splitlines()]
        assert rows[0] == ["CLUSTER", "HASH", "BACKENDS", "HEALTH", "CHECK"]
        assert rows[1][0] == "api"
        assert rows[1][2:] == ["1/2", "up,", "1", "draining", "GET", "/h", "every", "10s"]
        assert rows[2][0] == "web"
        assert rows[2][2:] == ["none", "-"]
        one = sozu("--socket", stand_in.path, "cluster", "list", "-i", "api")
        assert "backends             1/2 up, 1 draining" in one.out
        states = {
            line.split()[0]: line.split()[-1] for line in one.out.splitlines() if "10.0.0." in line
        }
        assert states == {"api-2": "down", "api-1": "up"}
        table = sozu("--socket", stand_in.path, "backend", "list", "-i", "api")
        assert table.code == 0, table
        assert [line.split()[3] for line in table.out.splitlines()[1:]] == [
            "up",
            "down",
            "draining",
        ]
        document = sozu("--socket", stand_in.path, "backend", "list", "--json")
        assert document.code == 0
        parsed = BackendsContent.model_validate(json.loads(document.out))
        assert parsed.backends == backends
