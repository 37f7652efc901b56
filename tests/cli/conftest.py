"""Fixtures of the CLI tests: real daemons, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_harness import base_config
from support.daemon import DaemonProcess, free_port


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A running daemon started from :func:`base_config`; ``daemon.port`` is its listener."""
    port = free_port()
    process = DaemonProcess(tmp_path, base_config(port))
    process.port = port  # type: ignore[attr-defined]
    with process:
        process.start()
        yield process


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[[str, str], DaemonProcess]]:
    """Start more daemons: ``daemon_factory(name, config_text)``; all stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(name: str, config_text: str) -> DaemonProcess:
        directory = tmp_path / name
        directory.mkdir()
        process = DaemonProcess(directory, config_text)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()
            process.kill()
