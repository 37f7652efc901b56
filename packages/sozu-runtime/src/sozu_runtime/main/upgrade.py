"""Main-process upgrade: the main process re-executes itself (picking up newly installed code)
and keeps its command socket, the listening sockets, the workers and the state.

The running main process writes what it holds to a private file — its settings, the state (a
state file: it holds private keys, so mode 0600), the workers (pid, id, channel descriptor) and
the descriptors of the sockets — marks those descriptors inheritable and ``exec``s
``python -m sozu_runtime.main.upgrade FILE``. The process keeps its pid, so the workers stay its
children; they never notice. Clients that connect during the switch wait in the command
socket's backlog and are served by the new code.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["exec_new_main", "main", "write_upgrade_file"]


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


def exec_new_main(path: Path, descriptors: list[int]) -> None:
    """Replace this process by a new main process that resumes from ``path``."""
    for fd in descriptors:
        os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "sozu_runtime.main.upgrade", str(path)])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sozu_runtime.main.upgrade UPGRADE_FILE", file=sys.stderr)
        return 2
    from .resume import resume

    return resume(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
