"""Running wrk and reading its report.

``parse_wrk_output`` is a pure function from wrk 4.x's text report (run with ``--latency``) to a
``WrkResult``; ``run_wrk`` starts one pinned wrk process and hands its output to it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from loadbench.processes import pinned_command

# wrk 4.x prints durations with these suffixes (src/units.c, ``time_units_us``), base µs.
_TIME_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
# ... and byte counts with binary multiples (``binary_units``), base byte.
_BYTE_UNIT = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "PB": 1024**5}

_NUMBER = r"(\d+(?:\.\d+)?)"
_REQUESTS_LINE = re.compile(rf"^\s*(\d+) requests in {_NUMBER}(us|ms|s|m|h), ", re.MULTILINE)
_RATE_LINE = re.compile(rf"^Requests/sec:\s+{_NUMBER}\s*$", re.MULTILINE)
_TRANSFER_LINE = re.compile(rf"^Transfer/sec:\s+{_NUMBER}([KMGTP]?B)\s*$", re.MULTILINE)
_LATENCY_STATS = re.compile(
    rf"^\s*Latency\s+{_NUMBER}(us|ms|s|m|h)\s+\S+\s+{_NUMBER}(us|ms|s|m|h)\s", re.MULTILINE
)
_PERCENTILE_LINE = re.compile(rf"^\s*(50|75|90|99)%\s+{_NUMBER}(us|ms|s|m|h)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_NON_SUCCESS = re.compile(r"^\s*Non-2xx or 3xx responses: (\d+)\s*$", re.MULTILINE)


class WrkOutputError(ValueError):
    """wrk's output is not a complete report (wrk failed, or printed something unexpected)."""


@dataclass(frozen=True)
class SocketErrors:
    """wrk's socket error counters; all zero when wrk printed no ``Socket errors`` line."""

    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        """Sum of all counters."""
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as reported by wrk.

    Latencies are in milliseconds. The percentiles come from wrk's ``Latency Distribution``
    (an HdrHistogram of every request, corrected for coordinated omission by wrk 4).
    ``non_2xx_3xx`` is wrk's ``Non-2xx or 3xx responses`` counter, which counts answers with a
    status of 400 or more.
    """

    requests: int
    duration_s: float
    requests_per_s: float
    transfer_bytes_per_s: float
    latency_avg_ms: float
    latency_max_ms: float
    latency_p50_ms: float
    latency_p75_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    socket_errors: SocketErrors
    non_2xx_3xx: int

    @property
    def has_errors(self) -> bool:
        """True when the run must be flagged: a socket error, an error status, or no request."""
        return self.socket_errors.total > 0 or self.non_2xx_3xx > 0 or self.requests == 0


def _milliseconds(value: str, unit: str) -> float:
    # Rounded to what wrk prints (two decimals of its unit) to drop binary-float noise.
    return round(float(value) * _TIME_UNIT_MS[unit], 6)


def _required(pattern: re.Pattern[str], text: str, what: str) -> re.Match[str]:
    match = pattern.search(text)
    if match is None:
        first_line = text.strip().splitlines()[0] if text.strip() else "(no output)"
        raise WrkOutputError(f"no {what} in wrk output: {first_line}")
    return match


def parse_wrk_output(text: str) -> WrkResult:
    """Read the report wrk 4.x prints when run with ``--latency``.

    Raises ``WrkOutputError`` when a mandatory part (request count, rate, latency statistics
    or the four percentiles) is missing, e.g. when wrk could not connect at all.
    """
    requests = _required(_REQUESTS_LINE, text, "request count")
    rate = _required(_RATE_LINE, text, "Requests/sec line")
    transfer = _required(_TRANSFER_LINE, text, "Transfer/sec line")
    latency = _required(_LATENCY_STATS, text, "latency statistics")
    percentiles = {
        int(match.group(1)): _milliseconds(match.group(2), match.group(3))
        for match in _PERCENTILE_LINE.finditer(text)
    }
    missing = {50, 75, 90, 99} - percentiles.keys()
    if missing:
        raise WrkOutputError(f"latency distribution lacks {sorted(missing)} (run with --latency)")
    socket_match = _SOCKET_ERRORS.search(text)
    socket_errors = (
        SocketErrors(*(int(group) for group in socket_match.groups()))
        if socket_match
        else SocketErrors()
    )
    non_success = _NON_SUCCESS.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=_milliseconds(requests.group(2), requests.group(3)) / 1000.0,
        requests_per_s=float(rate.group(1)),
        transfer_bytes_per_s=round(float(transfer.group(1)) * _BYTE_UNIT[transfer.group(2)]),
        latency_avg_ms=_milliseconds(latency.group(1), latency.group(2)),
        latency_max_ms=_milliseconds(latency.group(3), latency.group(4)),
        latency_p50_ms=percentiles[50],
        latency_p75_ms=percentiles[75],
        latency_p90_ms=percentiles[90],
        latency_p99_ms=percentiles[99],
        socket_errors=socket_errors,
        non_2xx_3xx=int(non_success.group(1)) if non_success else 0,
    )


@dataclass(frozen=True)
class WrkInvocation:
    """Everything that defines one wrk run."""

    url: str
    connections: int
    # Whole seconds: wrk rejects fractional durations.
    duration_s: int
    headers: tuple[str, ...]
    cpu: int
    # Generous so that a slow proxy shows up as high latency rather than as timeouts.
    timeout_s: int = 10

    def command(self) -> list[str]:
        """The pinned wrk command line (one thread, latency distribution on)."""
        arguments = [
            "wrk",
            "--threads",
            "1",
            "--connections",
            str(self.connections),
            "--duration",
            f"{self.duration_s}s",
            "--timeout",
            f"{self.timeout_s}s",
            "--latency",
        ]
        for header in self.headers:
            arguments += ["--header", header]
        arguments.append(self.url)
        return pinned_command(self.cpu, arguments)


def run_wrk(invocation: WrkInvocation) -> tuple[WrkResult | None, str]:
    """Run wrk once; return its parsed report (``None`` if unreadable) and its raw output.

    wrk leads its own process group (``setsid``) so that a Ctrl-C in the terminal reaches only the
    orchestrator, which then stops wrk itself (``subprocess.run`` kills it on any exception).
    """
    completed = subprocess.run(
        invocation.command(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=invocation.duration_s + invocation.timeout_s + 30.0,
        start_new_session=True,
        check=False,
    )
    try:
        return parse_wrk_output(completed.stdout), completed.stdout
    except WrkOutputError:
        return None, completed.stdout
