"""What a command loads: ``sozu status`` and ``sozu-apply --check`` against a running daemon
import only what they use — no rich when nothing is drawn on a terminal, no cryptography when no
certificate is read, no deepdiff when no field changed, no asyncio, no daemon code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_harness import base_config
from support.daemon import DaemonProcess, free_port

NOT_NEEDED = ("rich", "cryptography", "deepdiff", "asyncio", "aiohttp", "watchfiles", "shtab")
"""Packages none of these runs needs (``sozu_runtime`` is only read for ``--version``)."""

RUN = textwrap.dedent(
    """
    import json, sys
    program, *argv = sys.argv[1:]
    if program == "sozu":
        from sozu_cli.main import main
    else:
        from sozu_cli.apply import main
    code = main(argv)
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({"code": code, "loaded": loaded, "modules": sorted(sys.modules)}),
          file=sys.stderr)
    """
)


def loaded_by(program: str, *argv: str | Path) -> dict[str, object]:
    """The exit code and the modules loaded by one run of ``program`` (stdout a pipe)."""
    result = subprocess.run(
        [sys.executable, "-c", RUN, program, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: dict[str, object] = json.loads(result.stderr.strip().splitlines()[-1])
    report["out"] = result.stdout
    return report


def test_status_and_apply_check_load_only_what_they_use(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, base_config(free_port())) as daemon:
        daemon.start()
        runs = {
            "status": loaded_by("sozu", "-c", daemon.config_path, "status"),
            "status --socket": loaded_by("sozu", "--socket", daemon.socket_path, "status"),
            "status --json": loaded_by("sozu", "--socket", daemon.socket_path, "status", "-j"),
            "apply --check": loaded_by("sozu-apply", "--check", daemon.config_path),
        }
    for name, report in runs.items():
        assert report["code"] == 0, (name, report["out"])
        loaded = report["loaded"]
        assert isinstance(loaded, list)
        assert set(loaded) & set(NOT_NEEDED) == set(), name
    assert "worker 0" in str(runs["status"]["out"])
    assert json.loads(str(runs["status --json"]["out"]))["workers"]
    assert "matches the file" in str(runs["apply --check"]["out"])
    # status needs no configuration loader when it is given the socket, no planning at all
    socket_modules = runs["status --socket"]["modules"]
    assert isinstance(socket_modules, list)
    assert not {"sozu_config.config", "sozu_config.plan", "sozu_config.state"} & set(socket_modules)
