"""Running the real daemon in tests: a `sozu start` process on 127.0.0.1, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sozu_config import CommandClient, DaemonUnreachable, Response, Status
from sozu_config.client import CommandTimeout

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sozu_command() -> list[str]:
    return [sys.executable, "-m", "sozu_cli.main"]


class DaemonProcess:
    """A daemon started from a config text (written to ``directory/config.toml``)."""

    def __init__(self, directory: Path, config_text: str, *, name: str = "config.toml") -> None:
        self.directory = directory
        self.config_path = directory / name
        self.socket_path = directory / "sozu.sock"
        if "command_socket" not in config_text:
            config_text = f'command_socket = "{self.socket_path}"\n' + config_text
        self.config_path.write_text(config_text)
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, env: dict[str, str] | None = None) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*sozu_command(), "-c", str(self.config_path), "start"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with CommandClient(self.socket_path, timeout=5) as client:
                    response = client.send(Status())
                    if response.ok and response.content is not None:
                        workers = getattr(response.content, "workers", [])
                        if workers and all(w.run_state == "running" for w in workers):
                            return
            except (DaemonUnreachable, CommandTimeout):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the daemon did not become ready:\n{self.logs()}")

    def send(self, request: Any, *, timeout: float = 30.0) -> Response:
        with CommandClient(self.socket_path, timeout=timeout) as client:
            return client.send(request)

    def client(self, timeout: float = 30.0) -> CommandClient:
        return CommandClient(self.socket_path, timeout=timeout)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        from sozu_config import ListWorkers

        response = self.send(ListWorkers())
        return [w.pid for w in response.content.workers]  # type: ignore[union-attr]

    def stop(self, *, timeout: float = 20.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait(5)

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.kill()
