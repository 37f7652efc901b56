"""Main-process upgrade: the main process re-executes itself (picking up newly installed code)
and keeps its pid, its command socket and connected clients, the listening sockets, the
workers and the state.

The running main process stops accepting commands (new clients wait in the socket's backlog),
lets the requests in flight finish, and writes what it holds to a private file — its
settings, the state (a state file: it holds private keys, so mode 0600), the workers (pid, id,
channel descriptor, version), the listening sockets, and every command connection with the
bytes it had received but not yet read (so that no client notices the switch; the one that
asked for the upgrade gets its answer from the new code). Before it ``exec``s anything, the
new code proves it can resume from that file: ``python -m sozu_runtime.main.resume --check
FILE`` loads the settings and the state and answers its version. Only then are the
descriptors marked inheritable and ``python -m sozu_runtime.main.resume FILE`` ``exec``'d.
When the check fails, nothing has changed: the old code answers why and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "UpgradeRefused",
    "check_new_code",
    "exec_new_main",
    "remove_upgrade_file",
    "update_upgrade_file",
    "write_upgrade_file",
]

CHECK_TIMEOUT = 60.0  # seconds the new code has to prove it can resume


class UpgradeRefused(Exception):
    """The new code cannot take over (the message says why); the old one goes on."""


def write_upgrade_file(data: dict[str, Any], state_text_writer: Any) -> Path:
    """Write ``data`` (JSON) and the state (through ``state_text_writer(path)``) to private
    files; return the path of the JSON file."""
    directory = Path(tempfile.mkdtemp(prefix="sozu-upgrade-"))
    os.chmod(directory, 0o700)
    state_path = directory / "state.jsonl"
    state_text_writer(state_path)
    data = {**data, "state_file": str(state_path)}
    path = directory / "upgrade.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    return path


def update_upgrade_file(path: Path, data: dict[str, Any]) -> None:
    """Complete the upgrade file with ``data`` (its state file is kept)."""
    previous = json.loads(path.read_text())
    text = json.dumps({**previous, **data, "state_file": previous["state_file"]})
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def remove_upgrade_file(path: Path) -> None:
    """Forget an upgrade that did not happen (the folder holds private keys)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(path.parent)


async def check_new_code(path: Path) -> str:
    """Run the installed code's check of ``path``; its version, or UpgradeRefused. The check
    runs in a thread (the standard library's subprocess: it touches no descriptor of this
    process but the pipes it makes)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _check, path)


def _check(path: Path) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sozu_runtime.main.resume", "--check", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UpgradeRefused(
            f"the new code did not answer its check in {CHECK_TIMEOUT:g} s"
        ) from None
    except OSError as error:
        raise UpgradeRefused(f"the new code could not be checked: {error.strerror}") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
        raise UpgradeRefused(f"the new code cannot resume: {lines[-1]}")
    return done.stdout.decode("utf-8", "replace").strip() or "unknown"


def exec_new_main(path: Path, descriptors: list[int]) -> None:
    """Replace this process by a new main process that resumes from ``path`` (returns only
    by raising OSError)."""
    for fd in descriptors:
        try:
            os.set_inheritable(fd, True)
        except OSError as error:
            raise OSError(error.errno, f"{error.strerror} (descriptor {fd})") from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "sozu_runtime.main.resume", str(path)])
