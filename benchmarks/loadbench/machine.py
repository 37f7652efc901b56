"""What the numbers were measured on: CPU, kernel, Python and the versions of the tools.

Results without this are not comparable from one machine (or one upgrade) to the next.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


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
            "nginx": _tool_version(["nginx", "-v"], r"nginx/(\S+)", "nginx"),
            "haproxy": _tool_version(["haproxy", "-v"], r"HAProxy version (\S+)", "HAProxy"),
            "taskset": _tool_version(["taskset", "--version"], r"util-linux (\S+)", "taskset"),
        },
        "packages": {
            name: _package_version(name)
            for name in ("sozu-runtime", "sozu-cli", "sozu-config", "aiohttp", "uvloop")
        },
        "source_revision": source_revision(repository),
    }
