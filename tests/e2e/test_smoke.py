"""The daemon starts from a config file, proxies HTTP and answers on its command socket."""

from __future__ import annotations

from pathlib import Path

from support.backends import HttpBackend
from support.clients import HttpConnection, get
from support.configs import single_http_cluster
from support.daemon import DaemonProcess, free_port

from sozu_config import QueryState, Status


def test_daemon_proxies_and_answers(tmp_path: Path) -> None:
    port = free_port()
    with HttpBackend("one") as one, HttpBackend("two") as two:
        config = single_http_cluster(
            port, [one.address, two.address], hostname="example.com", worker_count=2
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            status = daemon.send(Status())
            assert status.ok, status.message
            assert len(status.content.workers) == 2
            bodies = set()
            with HttpConnection(port) as connection:
                for _ in range(6):
                    answer = connection.request("GET", "/hello?x=1", host="example.com")
                    assert answer.status == 200
                    assert answer.header("sozu-id")
                    bodies.add(answer.body)
            assert bodies == {b"one", b"two"}
            received = one.requests[0]
            assert received.target == "/hello?x=1"
            assert received.header("x-forwarded-for") == "127.0.0.1"
            assert received.header("x-forwarded-proto") == "http"
            assert received.header("x-forwarded-port") == str(port)
            assert received.header("x-request-id") == received.header("sozu-id")
            assert received.header("forwarded").startswith('proto=http;for="127.0.0.1:')
            assert get(port, "/", host="unknown.example").status == 404
            state = daemon.send(QueryState())
            assert state.ok
            assert [c.cluster_id for c in state.content.state.clusters] == ["app"]
