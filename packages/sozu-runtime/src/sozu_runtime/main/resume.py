"""The second half of a main-process upgrade: the new code takes over what the old one held.

``python -m sozu_runtime.main.resume FILE`` is what the old main process ``exec``s (see
:mod:`.upgrade`); ``--check FILE`` only proves that this code can resume from FILE (it reads
the settings and the state) and prints its version.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from sozu_config.config import Config
from sozu_config.statefile import load_state_file

from .. import __version__
from ..logs import configure_main_logging
from ..loops import run as run_loop
from .daemon import Daemon

__all__ = ["check", "resume"]


async def _resume(config: Config, data: dict[str, Any]) -> int:
    state = load_state_file(data["state_file"])
    state.version = int(data["version"])
    with contextlib.suppress(OSError):
        shutil.rmtree(Path(data["state_file"]).parent)  # it holds private keys
    daemon = Daemon(config, state)
    await daemon.adopt(data)
    daemon.install_signal_handlers()
    return await daemon.finished


def _read(path: Path) -> tuple[Config, dict[str, Any]]:
    data = json.loads(path.read_text())
    return Config.model_validate(data["config"]), data


def check(path: Path) -> int:
    """Read the settings and the state of an upgrade file; print this code's version."""
    _, data = _read(path)
    load_state_file(data["state_file"])
    print(__version__)
    return 0


def resume(path: Path) -> int:
    config, data = _read(path)
    configure_main_logging(config)
    try:
        return run_loop(_resume(config, data))
    except Exception as error:  # the old process is gone: say clearly why the new one is not up
        print(f"error: the upgraded main process could not resume: {error}", file=sys.stderr)
        raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--check":
        return check(Path(args[1]))
    if len(args) != 1:
        print("usage: python -m sozu_runtime.main.resume [--check] UPGRADE_FILE", file=sys.stderr)
        return 2
    return resume(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
