"""Child processes pinned to one CPU, each in its own process group, always stopped.

Every server the benchmark starts is a ``PinnedProcess``: started under ``taskset -c CPU`` after
``setsid`` (so it leads its own process group, and a terminal Ctrl-C reaches only the
orchestrator), with stdout and stderr captured in one log file so that a failure can be shown
with the first lines the program printed. ``stop`` signals the whole group, so helpers such as
nginx's worker or sōzu's worker processes go down with their parent.

The orchestrator turns its own stop signals into ``KeyboardInterrupt``
(``catch_stop_signals``) so that one clean-up path stops every group, whatever ended the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

# How long a group gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0


def pinned_command(cpu: int | str, command: Sequence[str]) -> list[str]:
    """``command`` prefixed so that it (and everything it forks) runs on ``cpu`` only (a CPU
    number, or a ``taskset`` list such as ``"0,1"``)."""
    return ["taskset", "--cpu-list", str(cpu), *command]


class PinnedProcess:
    """One server process, pinned to a CPU, whose output is kept in ``log_path``.

    Invariant: once ``start`` returned, ``stop`` must be called (it is idempotent); it leaves
    no member of the process group running.
    """

    def __init__(self, name: str, command: Sequence[str], cpu: int | str, log_path: Path) -> None:
        self.name = name
        self.command = pinned_command(cpu, command)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """Start the process as leader of a new process group, output appended to the log."""
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        """The process id (also its process-group id), ``None`` before ``start``."""
        return self._popen.pid if self._popen else None

    def exit_code(self) -> int | None:
        """The exit status if the process has ended, else ``None``."""
        return self._popen.poll() if self._popen else None

    def output_head(self, lines: int = 8) -> list[str]:
        """The first ``lines`` lines the process printed (stdout and stderr interleaved)."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as log:
                return [line.rstrip("\n") for _, line in zip(range(lines), log, strict=False)]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after ``STOP_GRACE_S``, and reap the leader."""
        if self._popen is None:
            return
        group = self._popen.pid
        self._signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and self._group_alive(group):
            self._popen.poll()  # reap the leader as soon as it exits
            time.sleep(0.05)
        if self._group_alive(group):
            self._signal_group(group, signal.SIGKILL)
        try:
            self._popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        self._popen = None

    @staticmethod
    def _signal_group(group: int, signum: signal.Signals) -> None:
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            pass

    @staticmethod
    def _group_alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True


# Signals that end the benchmark early; each one goes through the same clean-up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

SignalHandler = Callable[[int, FrameType | None], object] | int | None


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def catch_stop_signals() -> dict[signal.Signals, SignalHandler]:
    """Turn the stop signals into ``KeyboardInterrupt``; return the handlers they had.

    SIGINT and SIGHUP stay ignored when they were (a run under ``nohup`` or started in the
    background must not be ended by the terminal); SIGTERM always stops the benchmark cleanly.
    """
    previous = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.getsignal(signum)
        if signum == signal.SIGTERM or previous[signum] != signal.SIG_IGN:
            signal.signal(signum, _raise_keyboard_interrupt)
    return previous


def ignore_stop_signals() -> None:
    # A second Ctrl-C must not cut the clean-up short and leave servers behind.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def restore_signals(previous: dict[signal.Signals, SignalHandler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
