"""The production lifecycle (README "Signals" and "Run it as a service"): upgrades that complete
under load, every time; signals in nginx/HAProxy/systemd conventions; systemd's readiness
protocol; versions; events and logs an operator can use.

The upgrade tests run the :class:`~support.load.LoadGenerator` (keep-alive clients, clients
opening a connection per request, one long download streamed slowly) through twenty upgrades
in a row, and count every request: none may fail, no connection may be refused, and the
download completes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.backends import HttpBackend, wait_for
from support.clients import get
from support.configs import ClusterTable, backend, cluster, document, frontend, http_listener
from support.daemon import DaemonProcess, free_port, sozu_command
from support.load import LoadGenerator, assert_nothing_lost
from support.load_handlers import StreamSpec, load_backends

import sozu_runtime
from sozu_config import QueryState, Status
from sozu_config.responses import WorkersContent

pytestmark = pytest.mark.e2e

ROUNDS = 20
HOST = "app.example"
BODIES = {b"one", b"two"}
# long enough to stay in flight through every round of upgrades
STREAM = StreamSpec(size=8 * 1024 * 1024, seconds=45.0)


@dataclass
class Proxy:
    daemon: DaemonProcess
    port: int
    directory: Path

    def status(self) -> WorkersContent:
        response = self.daemon.send(Status(), timeout=30)
        assert response.ok, response.message
        assert isinstance(response.content, WorkersContent)
        return response.content

    def running_pids(self) -> set[int]:
        return {w.pid for w in self.status().workers if w.run_state == "running"}


def proxy_config(port: int, one: str, two: str, *more: ClusterTable, **settings: object) -> str:
    """Two workers, an HTTP listener on ``port``, cluster ``app`` for :data:`HOST` balanced
    between ``one`` and ``two``, then the clusters ``more``; ``settings`` at the top level."""
    return document(
        http_listener(port),
        cluster("app", frontends=[frontend(port, HOST)], backends=[backend(one), backend(two)]),
        *more,
        worker_count=2,
        **settings,
    )


def site(name: str, port: int, address: str) -> ClusterTable:
    """Cluster ``name`` serving ``<name>.example`` on ``port`` from the backend at ``address``."""
    return cluster(name, frontends=[frontend(port, f"{name}.example")], backends=[backend(address)])


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[HttpBackend, HttpBackend]]:
    with load_backends(STREAM) as pair:
        yield pair


@pytest.fixture
def proxy(tmp_path: Path, backends: tuple[HttpBackend, HttpBackend]) -> Iterator[Proxy]:
    one, two = backends
    port = free_port()
    with DaemonProcess(tmp_path, proxy_config(port, one.address, two.address)).start() as daemon:
        yield Proxy(daemon, port, tmp_path)


def assert_everything_replaced(before: WorkersContent, after: WorkersContent) -> None:
    """Same main pid with newly started code; every running worker is a new process."""
    assert before.main is not None and after.main is not None
    assert after.main.pid == before.main.pid
    assert after.main.started_at > before.main.started_at, "the main code was not re-executed"
    old = {w.pid for w in before.workers if w.run_state == "running"}
    new = {w.pid for w in after.workers if w.run_state == "running"}
    assert len(new) == 2 and not new & old, (old, new)
    assert all(w.version == sozu_runtime.__version__ for w in after.workers)


# --------------------------------------------------------------------------- upgrades


def test_twenty_cli_upgrades_in_a_row_under_load(proxy: Proxy) -> None:
    """``sozu upgrade`` twenty times while clients keep coming: each exits 0 and replaces
    the main code and every worker; not one request fails."""
    load = LoadGenerator(
        proxy.port, host=HOST, stream=STREAM, expected_bodies=BODIES, resend=True, max_seconds=240
    )
    durations = []
    with load:
        load.wait_progress(count=100)
        for round_number in range(ROUNDS):
            before = proxy.status()
            started = time.monotonic()
            result = subprocess.run(
                [*sozu_command(), "-c", str(proxy.daemon.config_path), "upgrade", "--json"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            durations.append(time.monotonic() - started)
            assert result.returncode == 0, f"round {round_number}: {result.stdout}{result.stderr}"
            steps = json.loads(result.stdout)["steps"]
            assert [s["status"] for s in steps] == ["ok"] * 3
            assert all(s["version_after"] == sozu_runtime.__version__ for s in steps)
            assert_everything_replaced(before, proxy.status())
            load.wait_progress(count=20)
        report = load.stop()
    assert_nothing_lost(report)
    print(f"upgrade durations: {', '.join(f'{d:.1f}' for d in durations)} s")


def test_usr2_upgrades_everything_under_load(proxy: Proxy) -> None:
    """``kill -USR2`` on the main process: the full upgrade, twenty times, nothing lost."""
    load = LoadGenerator(
        proxy.port, host=HOST, stream=STREAM, expected_bodies=BODIES, resend=True, max_seconds=240
    )
    with load:
        load.wait_progress(count=100)
        for _ in range(ROUNDS):
            before = proxy.status()
            os.kill(proxy.daemon.pid, signal.SIGUSR2)

            def replaced(before: WorkersContent = before) -> bool:
                try:
                    assert_everything_replaced(before, proxy.status())
                except AssertionError:
                    return False
                return True

            wait_for(replaced, timeout=60, interval=0.1)
            load.wait_progress(count=20)
        report = load.stop()
    assert_nothing_lost(report)
    assert proxy.daemon.process is not None and proxy.daemon.process.poll() is None


def test_events_follow_the_daemon_across_an_upgrade(proxy: Proxy) -> None:
    """``sozu events`` keeps going through a main upgrade, and every event carries the
    daemon's time (RFC 3339, UTC)."""
    events = subprocess.Popen(
        [*sozu_command(), "-c", str(proxy.daemon.config_path), "events", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(events.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        time.sleep(1.0)  # subscribed
        upgrade = subprocess.run(
            [*sozu_command(), "-c", str(proxy.daemon.config_path), "upgrade"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr

        def seen(kind: str) -> bool:
            return any(json.loads(line)["kind"] == kind for line in list(lines))

        wait_for(lambda: seen("main_upgraded") and seen("worker_upgraded"), timeout=20)
        assert events.poll() is None, "sozu events exited"
        for line in lines[:]:  # a copy: the reader thread goes on appending
            moment = dt.datetime.fromisoformat(json.loads(line)["time"])
            assert moment.utcoffset() == dt.timedelta(0)
            assert abs(dt.datetime.now(dt.UTC) - moment) < dt.timedelta(minutes=5)
    finally:
        events.terminate()
        events.wait(10)


# --------------------------------------------------------------------------- signals


def test_hup_reloads_the_file_and_a_bad_file_changes_nothing(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    one, two = backends
    port = free_port()
    gone = site("gone", port, one.address)
    extra = site("extra", port, two.address)
    with DaemonProcess(
        tmp_path, proxy_config(port, one.address, two.address, gone)
    ).start() as daemon:
        assert get(port, "/", host="gone.example").status == 200
        assert get(port, "/", host="extra.example").status == 404
        daemon.config_path.write_text(
            proxy_config(port, one.address, two.address, extra, command_socket=daemon.socket_path)
        )
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: get(port, "/", host="extra.example").status == 200, timeout=15)
        assert get(port, "/", host="gone.example").status == 404
        # the workers route by the new file before the main process has their answers and
        # logs the reload: wait for its lines too
        wait_for(lambda: "reload: " in daemon.logs(), timeout=15)

        state = daemon.send(QueryState()).content
        daemon.config_path.write_text("[[listeners]\nthis is not TOML\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: "the configuration was not reloaded" in daemon.logs(), timeout=15)
        assert daemon.send(QueryState()).content == state
        assert get(port, "/", host="extra.example").status == 200
        assert daemon.process is not None and daemon.process.poll() is None


def test_usr1_reopens_every_log_file(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """logrotate without copytruncate: rename the files, send USR1, new lines go to new
    files (the main process's and the workers' logs, and the access logs)."""
    one, two = backends
    port = free_port()
    logs, access = tmp_path / "sozu.log", tmp_path / "access.log"
    config = proxy_config(
        port,
        one.address,
        two.address,
        log_target=f"file://{logs}",
        access_logs_target=f"file://{access}",
    )
    with DaemonProcess(tmp_path, config) as d:
        d.start()
        for _ in range(4):
            assert get(port, "/", host=HOST).status == 200
        wait_for(lambda: access.exists() and access.read_text().count(HOST) >= 4, timeout=10)
        logs.rename(tmp_path / "sozu.log.1")
        access.rename(tmp_path / "access.log.1")
        os.kill(d.pid, signal.SIGUSR1)
        wait_for(lambda: logs.exists() and "log files reopened" in logs.read_text(), 10)

        def both_workers_reopened() -> bool:
            for _ in range(4):
                get(port, "/reopened", host=HOST)
            return access.exists() and access.read_text().count("/reopened") >= 4

        wait_for(both_workers_reopened, timeout=15)
        before = (tmp_path / "access.log.1").read_text()
        for _ in range(4):
            assert get(port, "/later", host=HOST).status == 200
        wait_for(lambda: access.read_text().count("/later") == 4, timeout=10)
        assert (tmp_path / "access.log.1").read_text() == before


def test_systemd_readiness_protocol(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """With NOTIFY_SOCKET: READY=1 once serving, RELOADING=1 then READY=1 around a reload
    (HUP), STOPPING=1 on TERM."""
    one, two = backends
    port = free_port()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(30)
        daemon = DaemonProcess(tmp_path, proxy_config(port, one.address, two.address))
        daemon.start(env={"NOTIFY_SOCKET": str(path)})
        try:
            messages = [notify.recv(4096).decode()]
            assert "READY=1" in messages[0].splitlines()
            os.kill(daemon.pid, signal.SIGHUP)
            messages.append(notify.recv(4096).decode())
            messages.append(notify.recv(4096).decode())
            assert "RELOADING=1" in messages[1].splitlines(), messages
            assert "READY=1" in messages[2].splitlines(), messages
            assert daemon.stop() == 0
            messages.append(notify.recv(4096).decode())
            assert "STOPPING=1" in messages[3].splitlines(), messages
            assert all(m.startswith(("READY", "RELOADING", "STOPPING")) for m in messages)
            assert all(any(line.startswith("STATUS=") for line in m.splitlines()) for m in messages)
        finally:
            daemon.kill()


def test_log_lines_have_utc_timestamps_and_no_python_reprs(proxy: Proxy) -> None:
    proxy.daemon.send(Status())
    lines = [line for line in proxy.daemon.logs().splitlines() if "\tsozu is ready" in line]
    assert lines, proxy.daemon.logs()
    moment = lines[0].split(" ", 1)[0]
    assert moment.endswith("Z")
    dt.datetime.fromisoformat(moment)
    assert "<ConfigState" not in proxy.daemon.logs()
    assert "{'" not in proxy.daemon.logs()


def test_version_of_both_commands() -> None:
    for module in ("sozu_cli.main", "sozu_cli.apply"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0
        assert sozu_runtime.__version__ in result.stdout
        assert "sozu-runtime" in result.stdout


def test_the_unit_file_runs_the_daemon_as_the_readme_says() -> None:
    """The systemd unit in the repository: notify type, HUP for reload, a command that exists."""
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    path = Path(__file__).resolve().parents[2] / "examples" / "systemd" / "sozu.service"
    unit.read(path)
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["ExecStart"].split()[1:] == ["-c", "/etc/sozu/config.toml", "start"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"


def test_quit_stops_at_once_and_workers_leave_signals_to_the_main_process(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend]
) -> None:
    """HUP, USR1, USR2 and QUIT sent to a worker (a terminal's process group gets them all)
    change nothing; QUIT to the main process is a hard stop: a request in flight is cut and
    the daemon exits at once, removing its command socket."""
    one, two = backends
    port = free_port()
    daemon = DaemonProcess(tmp_path, proxy_config(port, one.address, two.address))
    with daemon.start():
        workers = sorted(proxy_pids(daemon))
        for pid in workers:
            for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT):
                os.kill(pid, signum)
        time.sleep(0.5)
        assert sorted(proxy_pids(daemon)) == workers
        assert get(port, "/", host=HOST).status == 200
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(f"GET /slow/30 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        time.sleep(0.3)  # the request is in flight
        started = time.monotonic()
        os.kill(daemon.pid, signal.SIGQUIT)
        assert daemon.process is not None
        assert daemon.process.wait(10) == 0
        assert time.monotonic() - started < 5, "a hard stop does not wait for requests"
        assert slow.recv(100) == b""  # cut, not answered
        slow.close()
        assert not daemon.socket_path.exists()


def proxy_pids(daemon: DaemonProcess) -> set[int]:
    response = daemon.send(Status(), timeout=30)
    assert isinstance(response.content, WorkersContent)
    return {w.pid for w in response.content.workers}
