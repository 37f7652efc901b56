"""Running ``sozu`` and ``sozu-apply`` as real subprocesses, and reading daemons' states."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.daemon import DaemonProcess, free_port

from sozu_config import ConfigState, QueryState
from sozu_config.responses import StateContent

REPOSITORY = Path(__file__).resolve().parents[2]
APPLY_FIXTURES = REPOSITORY / "tests" / "fixtures" / "apply"


@dataclass
class Result:
    """What a command did: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:  # shown by assertion failures
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run_command(
    module: str,
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60.0,
) -> Result:
    """Run ``python -m module args`` and wait for it (stdin: the text, or nothing)."""
    environment = {k: v for k, v in os.environ.items() if k != "SOZU_CONFIG"}
    environment.update(env or {})
    completed = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        input=stdin if stdin is not None else "",
        timeout=timeout,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def sozu(*args: str | Path, **kwargs: Any) -> Result:
    """``sozu ARGS``."""
    return run_command("sozu_cli.main", *args, **kwargs)


def sozu_apply(*args: str | Path, **kwargs: Any) -> Result:
    """``sozu-apply ARGS``."""
    return run_command("sozu_cli.apply", *args, **kwargs)


def live_state(daemon: DaemonProcess) -> tuple[int, ConfigState]:
    """(version, state) of a daemon, read with ``query_state``."""
    response = daemon.send(QueryState())
    assert response.ok, response.message
    content = response.content
    assert isinstance(content, StateContent)
    return content.version, ConfigState.from_snapshot(content.state, version=content.version)


def base_config(port: int, backend_port: int = 1) -> str:
    """One active HTTP listener on ``port``, cluster ``app`` with one frontend and a backend."""
    backend = backend_port if backend_port > 1 else free_port()
    return f"""
worker_count = 1
[[listeners]]
protocol = "http"
address = "127.0.0.1:{port}"

[clusters.app]
protocol = "http"
frontends = [{{ address = "127.0.0.1:{port}", hostname = "app.example.com" }}]
backends = [{{ address = "127.0.0.1:{backend}", backend_id = "app-1" }}]
"""
