"""Backend health seen through the metrics, by every way out of a real daemon: ``query_metrics``
(merged, each figure counted once although 2 workers serve), the admin endpoint's Prometheus
exposition and the statsd export (origin ``MAIN``).

One daemon, 2 workers, cluster ``web`` checked every 0.2 s, with backend ``ok`` (200 on the
health uri) and backend ``sick`` (500 on the health uri, 200 elsewhere): ``sick`` goes down."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import configs
from support.backends import Answer, HttpBackend, Received, wait_for
from support.daemon import DaemonProcess, free_ports

from sozu_config import HealthCheck, ListBackends, QueryMetrics, SetHealthCheck
from sozu_config.responses import BackendState

pytestmark = pytest.mark.e2e


def health_handler(name: str, status: int):  # type: ignore[no-untyped-def]
    def handle(request: Received) -> Answer:
        if request.target == "/health":
            return Answer(status, body=b"health")
        return Answer(200, body=name.encode())

    return handle


class Daemon:
    def __init__(self, daemon: DaemonProcess, admin_port: int, statsd: socket.socket) -> None:
        self.daemon = daemon
        self.admin_port = admin_port
        self.statsd = statsd


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    proxy_port, admin_port = free_ports(2)
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd_address = f"127.0.0.1:{statsd.getsockname()[1]}"
    with (
        HttpBackend("ok", health_handler("ok", 200)) as ok,
        HttpBackend("sick", health_handler("sick", 500)) as sick,
    ):
        text = configs.document(
            configs.http_listener(proxy_port),
            configs.http_cluster(
                "web",
                proxy_port,
                "web.example",
                [
                    configs.backend(ok.address, backend_id="ok"),
                    configs.backend(sick.address, backend_id="sick"),
                ],
            ),
            f'[metrics]\naddress = "{statsd_address}"\nprefix = "hc"\ndetail = "backend"\n',
            worker_count=2,
            admin={"address": f"127.0.0.1:{admin_port}"},
        )
        with DaemonProcess(tmp_path_factory.mktemp("health-metrics"), text).start() as daemon:
            check = HealthCheck(uri="/health", interval=0.2, timeout=0.5, unhealthy_threshold=2)
            assert daemon.send(SetHealthCheck(cluster_id="web", health_check=check)).ok

            def sick_is_down() -> bool:
                content = daemon.send(ListBackends(cluster_id="web")).content
                states = {b.backend_id: b.state for b in content.backends}  # type: ignore[union-attr]
                return states == {"ok": BackendState.UP, "sick": BackendState.DOWN}

            wait_for(sick_is_down, timeout=10)
            yield Daemon(daemon, admin_port, statsd)
    statsd.close()


def test_query_metrics_counts_probes_and_the_shared_state_once(served: Daemon) -> None:
    names = [
        "health_check.success",
        "health_check.failure",
        "health_check.down",
        "backend.down",
        "health_check.healthy_backends",
    ]
    content = served.daemon.send(QueryMetrics(metric_names=names)).content
    web = content.clusters["web"]  # type: ignore[union-attr]
    sick, ok = web["backends"]["sick"], web["backends"]["ok"]
    assert sick["backend.down"] == 1  # once, not once per worker
    assert ok["backend.down"] == 0
    assert sick["health_check.down"] == 1
    assert sick["health_check.failure"] >= 2 and sick["health_check.success"] == 0
    assert ok["health_check.success"] >= 1 and ok["health_check.failure"] == 0
    assert web["cluster"]["health_check.healthy_backends"] == 1
    assert web["cluster"]["backend.down"] == 1
    assert content.proxying["health_check.healthy_backends"] == 1  # type: ignore[union-attr]
    # the filters apply to them as to the workers' figures
    only = served.daemon.send(QueryMetrics(backend_ids=["ok"], metric_names=names)).content
    assert list(only.clusters["web"]["backends"]) == ["ok"]  # type: ignore[union-attr]
    none = served.daemon.send(QueryMetrics(no_clusters=True)).content
    assert none.clusters == {}  # type: ignore[union-attr]


def admin_get(served: Daemon, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", served.admin_port, timeout=15)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_the_admin_endpoint_lists_the_backends_health(served: Daemon) -> None:
    status, body = admin_get(served, "/api/v1/backends?cluster_id=web")
    assert status == 200, body
    backends = {b["backend_id"]: b for b in json.loads(body)["backends"]}
    assert backends["sick"]["state"] == "down" and backends["ok"]["state"] == "up"
    assert backends["sick"]["last_check"]["detail"] == "500"
    assert backends["sick"]["reason"].endswith("failed checks: 500")
    status, body = admin_get(served, "/api/v1/backends?cluster_id=nope")
    assert status == 404 and "nope" in json.loads(body)["error"]


def test_prometheus_exposes_the_health_series(served: Daemon) -> None:
    status, body = admin_get(served, "/metrics")
    assert status == 200, body
    families = {f.name: f for f in text_string_to_metric_families(body)}

    def value(family: str, **labels: str) -> float:
        found = [s.value for s in families[family].samples if s.labels == labels]
        assert len(found) == 1, (family, labels, families[family].samples)
        return found[0]

    assert value("sozu_backend_down", cluster_id="web", backend_id="sick") == 1
    assert value("sozu_backend_down", cluster_id="web", backend_id="ok") == 0
    assert value("sozu_health_check_healthy_backends", cluster_id="web") == 1
    failures = [
        s for s in families["sozu_health_check_failure"].samples if s.name.endswith("_total")
    ]
    assert any(s.labels.get("backend_id") == "sick" and s.value >= 2 for s in failures)


def test_statsd_sends_them_from_the_main_process(served: Daemon) -> None:
    lines: list[str] = []
    deadline = time.monotonic() + 5
    wanted = "hc.MAIN.cluster.web.backend.sick.backend.down:1|g"
    while time.monotonic() < deadline and wanted not in lines:
        served.statsd.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            payload = served.statsd.recv(65_536)
        except TimeoutError:
            break
        lines += payload.decode().splitlines()
    assert wanted in lines, [line for line in lines if ".cluster." in line]
    assert any(
        line.startswith("hc.MAIN.cluster.web.health_check.healthy_backends:") for line in lines
    )
