"""Command-line start benchmark: how long a command takes from ``exec`` to exit.

Each measure is the median wall time of ``--runs`` (20) runs of a fresh process, after one
warm-up run that is not counted (it also writes the bytecode caches, as an installed package
has them):

1. ``python -c "import sozu_config"``: the library alone, what a tool that imports it pays;
2. ``python -c pass``: the interpreter alone, the floor of every other figure;
3. ``sozu -c config.toml status`` and ``sozu --socket PATH status`` against a running daemon
   (one HTTP listener on an ephemeral loopback port, two workers), with and without the
   configuration file read;
4. ``sozu-apply --check config.toml`` against the same daemon: load the file, read the live
   state, compare.

Usage::

    python benchmarks/cli_start.py [--runs N] [--out DIR] [--no-docs]

It prints its report, writes ``<out>/cli_start.json`` and rewrites the command-line start
section of ``docs/benchmarks.md`` (region ``cli-start``). ``nox -s bench`` runs it.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from loadbench.targets import allocate_ports, sozu_executable
from memory import (
    DEFAULT_OUT,
    DOCS_PAGE,
    DaemonError,
    SozuDaemon,
    daemon_config,
    describe_context,
    measurement_context,
    rewrite_docs_region,
    write_json,
)

DEFAULT_RUNS = 20
# A run that takes longer than this is a hung command, not a slow one.
RUN_TIMEOUT_S = 60.0


def median_ms(seconds: Sequence[float]) -> float:
    """The median of wall times in seconds, in milliseconds."""
    if not seconds:
        raise ValueError("no run")
    return statistics.median(seconds) * 1000


def child_environment() -> dict[str, str]:
    """The environment of the measured commands: this one, but bytecode may be written (the
    warm-up run leaves the caches an installed package has) and no colours."""
    environment = dict(os.environ)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    environment["NO_COLOR"] = "1"
    return environment


def time_command(command: Sequence[str], runs: int, environment: dict[str, str]) -> list[float]:
    """Wall times of ``runs`` runs of ``command`` (after one uncounted warm-up run); raises
    ``RuntimeError`` when a run fails."""
    times = []
    for index in range(runs + 1):
        start = time.perf_counter()
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if completed.returncode != 0:
            error = completed.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(command)} exited with {completed.returncode}: {error}")
        if index:
            times.append(elapsed)
    return times


def commands(config_path: Path, socket_path: Path) -> list[tuple[str, list[str]]]:
    """The measured commands: ``(label, argv)``."""
    python = sys.executable
    sozu = str(sozu_executable())
    apply = str(sozu_executable().with_name("sozu-apply"))
    return [
        ("python -c pass", [python, "-c", "pass"]),
        ('python -c "import sozu_config"', [python, "-c", "import sozu_config"]),
        ("sozu -c config.toml status", [sozu, "-c", str(config_path), "status"]),
        ("sozu --socket PATH status", [sozu, "--socket", str(socket_path), "status"]),
        ("sozu-apply --check config.toml", [apply, "--check", str(config_path)]),
    ]


def run_benchmark(runs: int, workspace: Path) -> dict[str, Any]:
    """Start a daemon in ``workspace``, time every command ``runs`` times, stop the daemon."""
    daemon = SozuDaemon(workspace / "daemon", cpu=None)
    (http_port,) = allocate_ports(1)
    daemon.start(
        daemon_config(daemon.socket_path, worker_count=2, http_port=http_port, backend_port=None)
    )
    environment = child_environment()
    results = []
    try:
        daemon.wait_ready()
        for label, command in commands(daemon.config_path, daemon.socket_path):
            print(f"  {label} ...", end="", flush=True)
            seconds = time_command(command, runs, environment)
            print(f" median {median_ms(seconds):.0f} ms", flush=True)
            results.append(
                {
                    "command": label,
                    "median_ms": round(median_ms(seconds), 1),
                    "min_ms": round(min(seconds) * 1000, 1),
                    "max_ms": round(max(seconds) * 1000, 1),
                }
            )
    finally:
        daemon.stop()
    return {"context": measurement_context(), "runs": runs, "commands": results}


def report_lines(payload: dict[str, Any]) -> list[str]:
    """The report printed at the end."""
    lines = [f"command-line start, median of {payload['runs']} runs ({describe_context(payload)})"]
    width = max((len(entry["command"]) for entry in payload["commands"]), default=0)
    for entry in payload["commands"]:
        lines.append(
            f"  {entry['command'].ljust(width)}  {entry['median_ms']:7.1f} ms  "
            f"(min {entry['min_ms']:.1f}, max {entry['max_ms']:.1f})"
        )
    return lines


def markdown_section(payload: dict[str, Any]) -> str:
    """The text of the ``cli-start`` region of ``docs/benchmarks.md``."""
    lines = [
        f"_{describe_context(payload)}; median of {payload['runs']} runs._",
        "",
        "| command | median | min | max |",
        "|:---|---:|---:|---:|",
    ]
    for entry in payload["commands"]:
        lines.append(
            f"| `{entry['command']}` | {entry['median_ms']:.0f} ms | {entry['min_ms']:.0f} ms "
            f"| {entry['max_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs of each command")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    return parser.parse_args(argv)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 when a command failed)."""
    arguments = parse_arguments(argv)
    if arguments.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2
    # SIGTERM goes through the same clean-up as Ctrl-C: no daemon may be left behind.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    print(f"command-line start: {arguments.runs} runs of each command", flush=True)
    with tempfile.TemporaryDirectory(prefix="sozu-cli-start-") as workspace:
        try:
            payload = run_benchmark(arguments.runs, Path(workspace))
        except KeyboardInterrupt:
            print("\ninterrupted: stopped, no results written", file=sys.stderr)
            return 130
        except (DaemonError, RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"\nfailed: {error}", file=sys.stderr)
            return 1
    print("\n".join(report_lines(payload)))
    out_dir = arguments.out.resolve()
    write_json(out_dir / "cli_start.json", payload)
    print(f"\nresults: {out_dir / 'cli_start.json'}")
    if not arguments.no_docs and rewrite_docs_region(
        DOCS_PAGE, "cli-start", markdown_section(payload)
    ):
        print(f"command-line start section rewritten in {DOCS_PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
