"""Access logs of a real daemon: the format the file asks for reaches the workers, and every
line a worker writes has that form."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from support import configs
from support.backends import HttpBackend, wait_for
from support.certs import make_certificate
from support.clients import get, tls_client_context
from support.daemon import DaemonProcess, free_port

from sozu_config import ConfigureMetrics, QueryMetrics
from sozu_config.responses import MetricsContent

ASCII_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d+ \d+ INFO-ACCESS  WRK-00\t")


def serve_and_read(tmp_path: Path, **settings: str) -> list[str]:
    """Start a daemon with ``settings``, send two requests, return its access-log lines."""
    access = tmp_path / "access.log"
    port = free_port()
    with HttpBackend("logged") as backend:
        config = configs.single_http_cluster(
            port,
            [backend.address],
            hostname="logs.test",
            worker_count=1,
            access_logs_target=f"file://{access}",
            **settings,
        )
        with DaemonProcess(tmp_path, config).start():
            assert get(port, "/first-path", host="logs.test").status == 200
            assert get(port, "/second-path", host="logs.test").status == 200
            wait_for(lambda: access.exists() and access.read_text().count("\n") >= 2)
    return access.read_text().splitlines()


@pytest.mark.parametrize("settings", [{}, {"access_logs_format": "ascii"}])
def test_ascii_lines_have_sozus_prefix(tmp_path: Path, settings: dict[str, str]) -> None:
    lines = serve_and_read(tmp_path, **settings)
    assert len(lines) == 2
    assert all(ASCII_PREFIX.match(line) for line in lines), lines
    assert "/first-path" in lines[0] and "/second-path" in lines[1]


def test_json_lines_are_json_objects(tmp_path: Path) -> None:
    lines = serve_and_read(tmp_path, access_logs_format="json")
    assert len(lines) == 2
    objects = [json.loads(line) for line in lines]
    assert all(o["worker"] == "WRK-00" and o["time"].endswith("Z") for o in objects)
    assert "/first-path" in lines[0] and "/second-path" in lines[1]


def test_json_lines_carry_every_field_of_the_exchange(tmp_path: Path) -> None:
    """An HTTPS request to a backend and an answer the proxy gives itself, read back as JSON:
    cluster, backend and its address, client, method, authority, path, status, times, bytes
    (those the client sent and received), user agent, TLS version, cipher and SNI, tags."""
    access = tmp_path / "access.log"
    certificate = make_certificate("json.logs.test")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_text(certificate.cert_pem)
    key_path.write_text(certificate.key_pem)
    port = free_port()
    with HttpBackend("json-backend") as backend:
        config = configs.document(
            configs.https_listener(port),
            configs.cluster(
                "secure",
                frontends=[
                    configs.frontend(
                        port,
                        "json.logs.test",
                        certificate=str(cert_path),
                        key=str(key_path),
                        tags={"team": "web"},
                    )
                ],
                backends=[configs.backend(backend.address, backend_id="json-1")],
            ),
            worker_count=1,
            access_logs_target=f"file://{access}",
            access_logs_format="json",
        )
        (tmp_path / "daemon").mkdir()
        with DaemonProcess(tmp_path / "daemon", config).start():
            request = (
                b"GET /items?page=2 HTTP/1.1\r\nHost: json.logs.test\r\n"
                b"User-Agent: log test/1.0\r\nConnection: close\r\n\r\n"
            )
            context = tls_client_context()
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="json.logs.test") as tls,
            ):
                client_port = tls.getsockname()[1]
                tls.sendall(request)
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            lines = wait_for(lambda: access.exists() and access.read_text().splitlines())
    (line,) = lines
    entry = json.loads(line)
    assert entry["cluster_id"] == "secure" and entry["backend_id"] == "json-1"
    assert entry["backend_address"] == backend.address
    assert (entry["client_address"], entry["client_port"]) == ("127.0.0.1", client_port)
    assert (entry["method"], entry["authority"], entry["path"]) == (
        "GET",
        "json.logs.test",
        "/items?page=2",
    )
    assert entry["status"] == 200 and entry["message"] is None
    assert (entry["bytes_in"], entry["bytes_out"]) == (len(request), len(answer))
    assert entry["user_agent"] == "log test/1.0"
    assert entry["protocol"] == "HTTPS" and entry["tls_version"].startswith("TLSv1.")
    assert entry["tls_cipher"] and entry["tls_sni"] == "json.logs.test"
    assert entry["tags"] == {"team": "web"}
    assert 0 <= entry["service_time_us"] <= entry["request_time_us"]
    assert 0 < entry["response_time_us"] <= entry["request_time_us"]
    assert entry["session_id"] and entry["request_id"]
    assert answer.count(entry["request_id"].encode()) >= 1  # the Sozu-Id the client saw


def test_access_logs_go_on_when_metrics_are_disabled(tmp_path: Path) -> None:
    """Disabling the metrics stops the recording of figures, never the access log."""
    access = tmp_path / "access.log"
    port = free_port()
    with HttpBackend("logged") as backend:
        config = configs.single_http_cluster(
            port,
            [backend.address],
            hostname="logs.test",
            worker_count=1,
            access_logs_target=f"file://{access}",
            access_logs_format="json",
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            assert daemon.send(ConfigureMetrics(configuration="disabled")).ok
            assert get(port, "/while-disabled", host="logs.test").status == 200
            lines = wait_for(lambda: access.exists() and access.read_text().splitlines())
            content = daemon.send(QueryMetrics()).content
    assert [json.loads(line)["path"] for line in lines] == ["/while-disabled"]
    assert isinstance(content, MetricsContent) and content.proxying == {}
