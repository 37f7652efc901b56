"""End-to-end metrics: after requests of known outcomes over two clusters and three backends,
served by two workers, the merged metrics count exactly what was sent and received.

Every request is sent on its own connection (``Connection: close``) by a raw socket client, so
the test knows every byte that went each way; the connections spread over both workers.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.certs import make_certificate
from support.clients import tls_client_context, tls_handshake
from support.daemon import DaemonProcess, free_port, sozu_command

from sozu_config import QueryMetrics
from sozu_config.responses import MetricsContent

pytestmark = pytest.mark.e2e

APP_REQUESTS = 12  # round robin over app-1 and app-2: 200
API_OK = 4  # api-1: 200
API_MISSING = 5  # api-1: 404 from the backend
UNKNOWN_HOST = 3  # no frontend: 404 from the proxy
TOTAL = APP_REQUESTS + API_OK + API_MISSING + UNKNOWN_HOST


def api_handler(request: Received) -> Answer:
    if request.target.startswith("/missing"):
        return Answer(status=404, body=b"not here")
    return Answer(body=b"api answer")


@dataclass
class Run:
    daemon: DaemonProcess
    sent: int  # bytes the client sent
    received: int  # bytes the client received
    by_host: dict[str, tuple[int, int]]  # host → (bytes sent, bytes received)
    served: dict[str, int]  # backend → requests it received
    admin_port: int


def exchange(port: int, host: str, target: str) -> tuple[int, int]:
    """One request on a new connection: (bytes sent, bytes received until the proxy closed)."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: metrics-test\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return len(request), len(answer)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    backends = {
        "app-1": HttpBackend("app-1").start(),
        "app-2": HttpBackend("app-2").start(),
        "api-1": HttpBackend("api-1", api_handler).start(),
    }
    port, admin_port = free_port(), free_port()
    config = configs.document(
        f'[admin]\naddress = "127.0.0.1:{admin_port}"',
        configs.http_listener(port),
        configs.http_cluster(
            "app",
            port,
            "app.test",
            [configs.backend(backends[n].address, backend_id=n) for n in ("app-1", "app-2")],
            load_balancing="ROUND_ROBIN",
        ),
        configs.http_cluster(
            "api",
            port,
            "api.test",
            [configs.backend(backends["api-1"].address, backend_id="api-1")],
        ),
        worker_count=2,
    )
    try:
        with DaemonProcess(tmp_path_factory.mktemp("metrics"), config).start() as daemon:
            by_host: dict[str, tuple[int, int]] = {}
            plan = (
                [("app.test", f"/item/{n}") for n in range(APP_REQUESTS)]
                + [("api.test", f"/ok/{n}") for n in range(API_OK)]
                + [("api.test", f"/missing/{n}") for n in range(API_MISSING)]
                + [("nowhere.test", "/") for _ in range(UNKNOWN_HOST)]
            )
            for host, target in plan:
                sent, received = exchange(port, host, target)
                before = by_host.get(host, (0, 0))
                by_host[host] = (before[0] + sent, before[1] + received)
            yield Run(
                daemon,
                sum(s for s, _ in by_host.values()),
                sum(r for _, r in by_host.values()),
                by_host,
                {name: len(backend.requests) for name, backend in backends.items()},
                admin_port,
            )
    finally:
        for backend in backends.values():
            backend.stop()


def query(daemon: DaemonProcess, **fields: Any) -> MetricsContent:
    content = daemon.send(QueryMetrics(**fields)).content
    assert isinstance(content, MetricsContent)
    return content


def test_requests_statuses_and_bytes_are_exact(run: Run) -> None:
    metrics = query(run.daemon)
    proxy = metrics.proxying
    assert proxy["http.requests"] == TOTAL
    assert proxy["http.status"] == {"200": APP_REQUESTS + API_OK, "404": API_MISSING + UNKNOWN_HOST}
    assert proxy["http.answers"] == {"404": UNKNOWN_HOST}
    assert proxy["bytes_in"] == run.sent
    assert proxy["bytes_out"] == run.received
    assert proxy["client.connections.accepted"] == TOTAL

    app = metrics.clusters["app"]
    assert app["cluster"]["http.requests"] == APP_REQUESTS
    assert {b: v["http.requests"] for b, v in app["backends"].items()} == {
        "app-1": run.served["app-1"],
        "app-2": run.served["app-2"],
    }
    assert run.served["app-1"] > 0 and run.served["app-2"] > 0
    assert app["cluster"]["bytes_in"] == run.by_host["app.test"][0]
    assert app["cluster"]["bytes_out"] == run.by_host["app.test"][1]
    api = metrics.clusters["api"]["backends"]["api-1"]
    assert api["http.status"] == {"200": API_OK, "404": API_MISSING}
    assert api["bytes_in"] == run.by_host["api.test"][0]
    assert api["bytes_out"] == run.by_host["api.test"][1]
    # what reached the backends: a forwarded head is the received one plus forwarding headers
    assert app["cluster"]["back_bytes_out"] > app["cluster"]["bytes_in"]
    assert app["cluster"]["back_bytes_in"] > 0


def test_histograms_count_every_request_and_give_percentiles(run: Run) -> None:
    metrics = query(run.daemon)
    proxy = metrics.proxying
    assert proxy["request_time"]["count"] == TOTAL
    assert proxy["service_time"]["count"] == TOTAL
    answered_by_backends = APP_REQUESTS + API_OK + API_MISSING
    assert proxy["backend_response_time"]["count"] == answered_by_backends
    # one new backend connection per request (the client closes, so does the proxy)
    assert proxy["backend_connection_time"]["count"] == proxy["backend.connections.opened"]
    times = metrics.clusters["app"]["cluster"]["request_time"]
    assert sum(times["buckets"].values()) == APP_REQUESTS
    assert 0 < times["p50"] <= times["p99"] <= times["max"] < 10_000_000
    assert times["sum"] >= times["max"]


def test_per_worker_detail_adds_up_to_the_totals(run: Run) -> None:
    metrics = query(run.daemon, workers=True)
    assert set(metrics.workers) == {"0", "1"}
    per_worker = [w["proxying"]["http.requests"] for w in metrics.workers.values()]
    assert sum(per_worker) == TOTAL


def test_filters(run: Run) -> None:
    only_api = query(run.daemon, cluster_ids=["api"])
    assert set(only_api.clusters) == {"api"}
    one_backend = query(run.daemon, backend_ids=["app-2"])
    assert set(one_backend.clusters) == {"app"}
    assert set(one_backend.clusters["app"]["backends"]) == {"app-2"}
    named = query(run.daemon, metric_names=["http.requests"])
    assert named.proxying == {"http.requests": TOTAL}
    assert named.clusters["app"]["cluster"] == {"http.requests": APP_REQUESTS}
    assert query(run.daemon, no_clusters=True).clusters == {}
    listed = query(run.daemon, list=True)
    assert "request_time" in listed.names and listed.proxying == {}


def test_the_cli_json_matches(run: Run) -> None:
    command = [*sozu_command(), "-c", str(run.daemon.config_path), "metrics", "get", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result
    content = json.loads(result.stdout)
    assert content["proxying"]["http.requests"] == TOTAL
    assert content["proxying"]["bytes_out"] == run.received
    assert content["main"]["configuration.clusters"] == 2


def test_tls_handshakes_are_counted_by_version(tmp_path: Path) -> None:
    certificate = make_certificate("tls.metrics.test")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_text(certificate.cert_pem)
    key_path.write_text(certificate.key_pem)
    backend = HttpBackend("tls-1").start()
    port = free_port()
    config = configs.document(
        configs.https_listener(port),
        configs.cluster(
            "secure",
            frontends=[
                configs.frontend(
                    port, "tls.metrics.test", certificate=str(cert_path), key=str(key_path)
                )
            ],
            backends=[configs.backend(backend.address)],
        ),
    )
    try:
        (tmp_path / "daemon").mkdir()
        with DaemonProcess(tmp_path / "daemon", config).start() as daemon:
            modern = tls_client_context(minimum=ssl.TLSVersion.TLSv1_3)
            older = tls_client_context(maximum=ssl.TLSVersion.TLSv1_2)
            for context in (modern, modern, older):
                tls_handshake(port, "tls.metrics.test", context=context)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(b"not a TLS client hello\r\n\r\n")  # a failed handshake
                raw.recv(100)
            deadline = time.monotonic() + 5
            while True:
                proxy = query(daemon).proxying
                if proxy["tls.handshake_failures"] >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert proxy["tls.handshakes"] == {"TLSv1.2": 1, "TLSv1.3": 2}
            assert proxy["tls.handshake_failures"] == 1
    finally:
        backend.stop()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The admin endpoint's ``/metrics``, parsed by prometheus_client: value by (sample name,
    labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_prometheus_scrape_counts_the_same(run: Run) -> None:
    samples = scrape(run.admin_port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("sozu_http_requests_total") == TOTAL
    assert value("sozu_http_requests_total", cluster_id="app") == APP_REQUESTS
    for backend in ("app-1", "app-2"):
        assert (
            value("sozu_http_requests_total", cluster_id="app", backend_id=backend)
            == run.served[backend]
        )
    api = {"cluster_id": "api", "backend_id": "api-1"}
    assert value("sozu_http_status_total", code="200", **api) == API_OK
    assert value("sozu_http_status_total", code="404", **api) == API_MISSING
    assert value("sozu_http_status_total", code="404") == API_MISSING + UNKNOWN_HOST
    assert value("sozu_http_answers_total", code="404") == UNKNOWN_HOST
    assert value("sozu_bytes_in_total") == run.sent
    assert value("sozu_bytes_out_total") == run.received
    assert value("sozu_bytes_in_total", cluster_id="app") == run.by_host["app.test"][0]
    assert value("sozu_request_time_seconds_count") == TOTAL
    assert value("sozu_request_time_seconds_bucket", le="+Inf") == TOTAL
    assert value("sozu_request_time_seconds_count", cluster_id="app") == APP_REQUESTS
    per_worker = [
        v
        for (name, labels), v in samples.items()
        if name == "sozu_http_requests_total" and dict(labels).keys() == {"worker"}
    ]
    assert len(per_worker) == 2 and sum(per_worker) == TOTAL
