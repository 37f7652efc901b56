"""The HTTP admin endpoint of a real daemon (``[admin]`` on an ephemeral loopback port):
Prometheus ``/metrics``, ``/healthz`` following a killed worker and its replacement, the JSON
views, the bearer token, and the refusals at configuration check and at start."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import configs
from support.backends import HttpBackend, wait_for
from support.clients import get
from support.daemon import DaemonProcess, free_port, free_ports, sozu_command

from sozu_config import (
    ConfigureMetrics,
    ListWorkers,
    QueryState,
    RunState,
    UpgradeMain,
    WorkerInfo,
)

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token"
WAIT = 20.0
"""Seconds any awaited condition may take (a Python worker starts in a fraction of that)."""


class Admin:
    """An HTTP client of the admin endpoint on 127.0.0.1:``port``."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token

    def request(
        self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if self.token is not None and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self.token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            connection.request(method, path, headers=sent)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def json(self, path: str, **headers: str) -> tuple[int, Any]:
        status, found, body = self.request(path, headers=headers)
        assert found["Content-Type"].startswith("application/json"), (status, body)
        return status, json.loads(body)

    def health(self) -> tuple[int, Any]:
        return self.json("/healthz")


def workers_of(daemon: DaemonProcess) -> list[WorkerInfo]:
    response = daemon.send(ListWorkers())
    assert response.content is not None and response.content.type == "workers"
    return list(response.content.workers)


def listening_inode(port: int) -> int:
    """The inode of the socket listening on 127.0.0.1:``port`` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            return int(fields[9])
    raise AssertionError(f"nothing listens on port {port}")


def holds(pid: int, inode: int) -> bool:
    wanted = f"socket:[{inode}]"
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(entry.path) == wanted:
                return True
        except OSError:
            continue
    return False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Admin, int]]:
    """A daemon with 2 workers, cluster ``app`` on an HTTP listener, the admin endpoint on a
    loopback port; yields it, its admin client and the proxy's port."""
    proxy_port, admin_port = free_ports(2)
    with HttpBackend("app") as backend:
        text = configs.document(
            configs.http_listener(proxy_port),
            configs.http_cluster(
                "app",
                proxy_port,
                "app.example",
                [configs.backend(backend.address, backend_id="app-0")],
            ),
            worker_count=2,
            admin={"address": f"127.0.0.1:{admin_port}"},
        )
        directory = tmp_path_factory.mktemp("admin")
        with DaemonProcess(directory, text).start() as daemon:
            yield daemon, Admin(admin_port), proxy_port


def test_metrics_parse_and_show_the_main_process_gauges(
    served: tuple[DaemonProcess, Admin, int],
) -> None:
    daemon, admin, _ = served
    assert daemon.send(ConfigureMetrics(configuration="disabled")).ok
    try:
        status, headers, body = admin.request("/metrics")
    finally:
        assert daemon.send(ConfigureMetrics(configuration="enabled")).ok
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name, expected in (("workers", 2), ("configuration_clusters", 1)):
        family = families[f"sozu_{name}"]
        assert family.type == "gauge"
        assert [(s.labels, s.value) for s in family.samples] == [({}, expected)]
    assert families["sozu_configuration_backends"].samples[0].value == 1
    assert families["sozu_configuration_frontends"].samples[0].value == 1
    assert families["sozu_state_version"].samples[0].value > 0
    # the workers' metrics are disabled: nothing of theirs, and no worker label
    assert not [s for f in families.values() for s in f.samples if "worker" in s.labels]


def test_metrics_show_each_worker_once_with_its_label(
    served: tuple[DaemonProcess, Admin, int],
) -> None:
    daemon, admin, proxy_port = served
    assert daemon.send(ConfigureMetrics(configuration="enabled")).ok
    for _ in range(4):
        assert get(proxy_port, "/", host="app.example").status == 200
    status, _, body = admin.request("/metrics")
    assert status == 200, body
    families = list(text_string_to_metric_families(body.decode()))
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in families:
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, f"{key} exposed twice"
            seen.add(key)
    labelled = {s.labels["worker"] for f in families for s in f.samples if "worker" in s.labels}
    running = {str(w.id) for w in workers_of(daemon) if w.run_state is RunState.RUNNING}
    assert labelled, "no per-worker series"
    assert labelled <= running


def test_the_listening_socket_is_not_held_by_the_workers(
    served: tuple[DaemonProcess, Admin, int],
) -> None:
    daemon, admin, _ = served
    inode = listening_inode(admin.port)
    assert holds(daemon.pid, inode)
    for worker in workers_of(daemon):
        assert not holds(worker.pid, inode), f"worker {worker.id} holds the admin socket"


def test_the_json_views(served: tuple[DaemonProcess, Admin, int]) -> None:
    daemon, admin, _ = served
    assert daemon.send(ConfigureMetrics(configuration="disabled")).ok
    try:
        status, document = admin.json("/api/v1/status")
        assert status == 200
        assert document["main"]["pid"] == daemon.pid
        assert {w["id"] for w in document["workers"]} == {w.id for w in workers_of(daemon)}

        status, document = admin.json("/api/v1/state")
        state = daemon.send(QueryState()).content
        assert status == 200
        assert state is not None and state.type == "state"
        assert document["version"] == state.version
        assert [c["cluster_id"] for c in document["state"]["clusters"]] == ["app"]

        status, document = admin.json("/api/v1/clusters")
        assert status == 200
        [cluster] = document["clusters"]
        assert (cluster["cluster_id"], cluster["frontends"], cluster["backends"]) == ("app", 1, 1)
        assert isinstance(cluster["requests"], int)

        status, document = admin.json("/api/v1/clusters/app")
        assert status == 200
        assert document["cluster"]["cluster_id"] == "app"
        assert [f["hostname"] for f in document["frontends"]] == ["app.example"]
        assert [b["backend_id"] for b in document["backends"]] == ["app-0"]

        status, document = admin.json("/api/v1/clusters/nope")
        assert (status, "error" in document) == (404, True)
    finally:
        assert daemon.send(ConfigureMetrics(configuration="enabled")).ok
    status, document = admin.json("/api/v2/nothing")
    assert status == 404
    status, headers, _ = admin.request("/api/v1/state", method="POST")
    assert status == 405
    assert "GET" in headers["Allow"]


def test_healthz_fails_while_a_killed_worker_is_replaced(
    served: tuple[DaemonProcess, Admin, int],
) -> None:
    daemon, admin, _ = served
    wait_for(lambda: admin.health()[0] == 200, timeout=WAIT)
    _, document = admin.health()
    assert document["status"] == "ok"
    before = workers_of(daemon)
    assert document["workers"] == {str(w.id): "running" for w in before}
    victim = before[0]
    os.kill(victim.pid, signal.SIGKILL)

    def failing() -> Any:
        status, document = admin.health()
        return document if status == 503 else None

    document = wait_for(failing, timeout=WAIT, interval=0.01)
    assert document["status"] == "failing"
    assert document["workers"].get(str(victim.id)) in (None, "not_answering")
    assert document["expected_workers"] == 2
    wait_for(lambda: admin.health()[0] == 200, timeout=WAIT)
    _, document = admin.health()
    assert document["status"] == "ok"
    assert str(victim.id) not in document["workers"]
    assert len(document["workers"]) == 2


def test_the_endpoint_serves_again_after_a_main_upgrade(
    served: tuple[DaemonProcess, Admin, int],
) -> None:
    daemon, admin, _ = served
    response = daemon.send(UpgradeMain(), timeout=60)
    assert response.ok, response.message

    def healthy() -> bool:
        try:
            return admin.health()[0] == 200
        except OSError:  # the new code is not listening yet
            return False

    wait_for(healthy, timeout=WAIT, interval=0.05)
    inode = listening_inode(admin.port)
    assert holds(daemon.pid, inode)  # the same process, re-executed
    for worker in workers_of(daemon):
        assert not holds(worker.pid, inode)


# --------------------------------------------------------------------------- the token


def test_a_configured_token_is_required(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    admin_port = free_port()
    text = configs.document(
        worker_count=1, admin={"address": f"127.0.0.1:{admin_port}", "token_file": "admin.token"}
    )
    with DaemonProcess(tmp_path, text).start():
        anonymous = Admin(admin_port)
        for path in ("/healthz", "/metrics", "/api/v1/state"):
            status, headers, _ = anonymous.request(path)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = anonymous.request("/healthz", headers={"Authorization": "Bearer nope"})
        assert status == 401
        admin = Admin(admin_port, TOKEN)
        wait_for(lambda: admin.health()[0] == 200, timeout=WAIT)
        status, document = admin.json("/api/v1/state")
        assert status == 200
        assert "state" in document


# --------------------------------------------------------------------------- refusals


def test_a_non_loopback_address_without_a_token_is_refused_at_check(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(configs.document(admin={"address": f"0.0.0.0:{free_port()}"}))
    checked = subprocess.run(
        [*sozu_command(), "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1
    assert "[admin] key 'address'" in checked.stderr
    assert "token_file" in checked.stderr
    started = subprocess.run(
        [*sozu_command(), "-c", str(config), "start"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 1
    assert "[admin] key 'address'" in started.stdout + started.stderr


def test_an_admin_address_in_use_is_a_clear_start_error(tmp_path: Path) -> None:
    with HttpBackend("squatter") as squatter:  # something already listens there
        text = configs.document(worker_count=1, admin={"address": squatter.address})
        daemon = DaemonProcess(tmp_path, text).start(wait=False)
        try:
            assert daemon.process is not None
            code = daemon.process.wait(WAIT)
        finally:
            daemon.kill()
    logs = daemon.logs()
    assert code == 1, logs
    assert f"cannot listen on {squatter.address} for the admin endpoint" in logs
    assert "Traceback" not in logs
