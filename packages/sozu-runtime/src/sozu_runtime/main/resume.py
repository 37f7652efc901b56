"""The second half of a main-process upgrade: the new code takes over what the old one held."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from sozu_config.config import Config
from sozu_config.statefile import load_state_file

from ..logs import configure_logging
from ..loops import run as run_loop
from .daemon import Daemon

__all__ = ["resume"]


async def _resume(config: Config, data: dict[str, Any]) -> int:
    state = load_state_file(data["state_file"])
    state.version = int(data["version"])
    with contextlib.suppress(OSError):
        shutil.rmtree(Path(data["state_file"]).parent)  # it holds private keys
    daemon = Daemon(config)
    await daemon.adopt(state, data)
    daemon.install_signal_handlers()
    return await daemon.finished


def resume(path: Path) -> int:
    data = json.loads(path.read_text())
    config = Config.model_validate(data["config"])
    configure_logging(
        config.log_level,
        "MAIN",
        target=config.log_target,
        access_target=config.access_logs_target,
    )
    try:
        return run_loop(_resume(config, data))
    except Exception as error:  # the old process is gone: say clearly why the new one is not up
        print(f"error: the upgraded main process could not resume: {error}", file=sys.stderr)
        raise
