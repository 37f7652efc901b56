"""Log targets: the daemon's logs and access logs go where the configuration says."""

from __future__ import annotations

import socket
from pathlib import Path

from support import configs
from support.backends import HttpBackend, wait_for
from support.clients import get
from support.daemon import DaemonProcess, free_port


def test_logs_to_udp_and_access_logs_to_a_file(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    udp_port = receiver.getsockname()[1]
    access = tmp_path / "access.log"
    port = free_port()
    with HttpBackend("logged") as backend:
        config = configs.single_http_cluster(
            port,
            [backend.address],
            hostname="logs.test",
            worker_count=1,
            log_target=f"udp://127.0.0.1:{udp_port}",
            access_logs_target=f"file://{access}",
        )
        with DaemonProcess(tmp_path, config).start() as daemon:
            lines = []
            while not any("ready" in line for line in lines):
                lines.append(receiver.recv(65536).decode())
            assert any("MAIN" in line for line in lines)
            answer = get(port, "/logged-path", host="logs.test")
            assert answer.status == 200
            assert get(port, "/", host="elsewhere.test").status == 404
            text = wait_for(
                lambda: (
                    access.exists() and access.read_text().count("\n") >= 2 and access.read_text()
                )
            )
            first, second = text.splitlines()[:2]
            assert answer.header("sozu-id") in first
            assert "logs.test GET /logged-path 200" in first and " app " in first
            assert "elsewhere.test GET / 404" in second
            assert "logged-path" not in daemon.logs()  # nothing of it on standard output
    receiver.close()


def test_pid_file_and_allowed_uids(tmp_path: Path) -> None:
    """``pid_file_path`` holds the main process's pid while it runs; ``command_allowed_uids``
    refuses users that are not listed (here: only a user id that is not ours)."""
    import os

    from sozu_config import CommandClient, Status

    pid_file = tmp_path / "sozu.pid"
    port = free_port()
    other_uid = os.getuid() + 4242
    config = configs.document(
        configs.http_listener(port),
        worker_count=1,
        pid_file_path=pid_file,
        command_allowed_uids=[other_uid],
    )
    daemon = DaemonProcess(tmp_path, config)
    daemon.start(wait=False)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        assert int(pid_file.read_text()) == daemon.pid
        with CommandClient(daemon.socket_path, timeout=5) as client:
            answer = client.send(Status())
        assert not answer.ok
        assert "unauthorized" in answer.message
    finally:
        daemon.stop()
        daemon.kill()
    assert not pid_file.exists()
