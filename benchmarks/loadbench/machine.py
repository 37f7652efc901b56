"""What the numbers were measured on: CPU, kernel, Python and the versions of the tools.

Results without this are not comparable from one machine (or one upgrade) to the next. Also
the tools the benchmark needs (installed when missing and allowed) and the choice of CPUs.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REQUIRED_TOOLS = ("wrk", "h2load", "nginx", "haproxy", "taskset")
INSTALL_COMMAND = ("apt-get", "install", "-y", "wrk", "nghttp2-client", "haproxy", "nginx-light")


def _first_output_line(command: list[str]) -> str | None:
    """The first non-empty line a version command prints (on stdout or stderr)."""
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (completed.stdout + completed.stderr).splitlines():
        if line.strip():
            return line.strip()
    return None


def _tool_version(command: list[str], pattern: str, label: str) -> str | None:
    """``label`` and the version ``pattern`` captures in the tool's first line, else the line."""
    line = _first_output_line(command)
    if line is None:
        return None
    match = re.search(pattern, line)
    return f"{label} {match.group(1)}" if match else line


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, or the platform's guess elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def source_revision(repository: Path) -> str | None:
    """The commit the benchmarked tree is at, if it is a git checkout with commits."""
    line = _first_output_line(["git", "-C", str(repository), "rev-parse", "--verify", "-q", "HEAD"])
    return line if line and all(char in "0123456789abcdef" for char in line) else None


def describe_machine(repository: Path) -> dict[str, Any]:
    """A JSON-ready description of this machine and of the software under test."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "tools": {
            "wrk": _tool_version(["wrk", "-v"], r"^wrk (\S+)", "wrk"),
            "h2load": _tool_version(["h2load", "--version"], r"nghttp2/(\S+)", "h2load"),
            "nginx": _tool_version(["nginx", "-v"], r"nginx/(\S+)", "nginx"),
            "haproxy": _tool_version(["haproxy", "-v"], r"HAProxy version (\S+)", "HAProxy"),
            "taskset": _tool_version(["taskset", "--version"], r"util-linux (\S+)", "taskset"),
        },
        "packages": {
            name: _package_version(name)
            for name in ("sozu-runtime", "sozu-cli", "sozu-config", "aiohttp", "uvloop")
        },
        "source_revision": source_revision(repository),
        "sozu_hot_path": hot_path(),
    }


def hot_path() -> str:
    """How ``sozu`` runs its per-request modules here: compiled (mypyc) or pure Python."""
    # imported here: the benchmark's own tests describe machines without the runtime
    from sozu_runtime.compiled import mode

    return mode()[1]


def missing_tools() -> list[str]:
    """The required programs that are not on ``PATH``."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def ensure_tools() -> None:
    """Make sure wrk, h2load, nginx, HAProxy and taskset are there, installing them when root.

    Raises ``SystemExit`` with the command to run when they are missing and this process may
    not install them.
    """
    missing = missing_tools()
    if not missing:
        return
    command = list(INSTALL_COMMAND)
    if "taskset" in missing:
        command.append("util-linux")  # taskset's package, present on any normal system
    if os.geteuid() != 0:
        raise SystemExit(
            f"missing tools: {', '.join(missing)}. Install them with:\n  sudo {' '.join(command)}"
        )
    print(f"missing tools: {', '.join(missing)}; running: {' '.join(command)}", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=environment, check=False).returncode != 0:
        # Usually stale package lists on a fresh machine: refresh them once and retry.
        subprocess.run(["apt-get", "update"], env=environment, check=False)
        subprocess.run(command, env=environment, check=False)
    still_missing = missing_tools()
    if still_missing:
        raise SystemExit(f"could not install {', '.join(still_missing)}: run {' '.join(command)}")


def choose_cpus() -> tuple[int, int]:
    """The CPU for wrk and the origin, and the CPU for the proxies.

    With a single usable CPU both are the same, and the results are not comparable with a
    two-CPU run (a warning says so).
    """
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        print(
            f"warning: only CPU {usable[0]} is usable; the proxies share it with wrk",
            file=sys.stderr,
        )
        return usable[0], usable[0]
    return usable[0], usable[1]
