"""Access logs of a real daemon: the format the file asks for reaches the workers, and every
line a worker writes has that form."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import configs
from support.backends import HttpBackend, wait_for
from support.clients import get
from support.daemon import DaemonProcess, free_port

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
