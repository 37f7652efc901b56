"""Running h2load (nghttp2's HTTP/2 load generator) and reading its report.

``parse_h2load_output`` is a pure function from h2load 1.x's text report (and the durations
of its ``--log-file``) to an ``H2loadResult``; ``run_h2load`` starts one pinned h2load process,
reads its per-request log for the latency percentiles (h2load prints none) and hands both to
it. ``classify`` says whether a run is a measurement (``ok``), one to flag (some requests
failed or got an error status) or a failure (nothing succeeded, or the connection did not
speak the HTTP/2 that was asked for).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadbench.processes import pinned_command

# h2load prints durations with these suffixes (util::format_duration), here in ms.
_TIME_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = rf"{_NUMBER}(us|ms|s)"
_FINISHED_LINE = re.compile(rf"^finished in {_DURATION}, {_NUMBER} req/s, ", re.MULTILINE)
_REQUESTS_LINE = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout\s*$",
    re.MULTILINE,
)
_STATUS_LINE = re.compile(
    r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx\s*$", re.MULTILINE
)
_REQUEST_TIME_LINE = re.compile(
    rf"^time for request:\s+{_DURATION}\s+{_DURATION}\s+{_DURATION}\s", re.MULTILINE
)
_PROTOCOL_LINE = re.compile(r"^Application protocol: (\S+)\s*$", re.MULTILINE)


class H2loadOutputError(ValueError):
    """h2load's output is not a complete report (h2load failed before measuring)."""


@dataclass(frozen=True)
class H2loadResult:
    """One h2load run, as reported by h2load.

    ``requests`` are the requests done in the measured period; ``succeeded`` those answered
    with a 2xx or 3xx status; ``failed`` the others (error statuses included), of which
    ``errored`` ended without an answer and ``timeout`` timed out. ``protocol`` is what the
    connections negotiated (``h2`` by ALPN over TLS, ``h2c`` in clear text), ``None`` when no
    connection was made. Latencies are in milliseconds, per request (per stream): the mean
    and maximum are h2load's, the percentiles are taken over its per-request log.
    """

    requests: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    duration_s: float
    requests_per_s: float
    protocol: str | None
    latency_mean_ms: float
    latency_max_ms: float
    latency_p50_ms: float
    latency_p75_ms: float
    latency_p90_ms: float
    latency_p99_ms: float

    @property
    def has_errors(self) -> bool:
        """True when the run must be flagged: a failed request, an error status, or none."""
        errors = self.failed + self.errored + self.timeout + self.status_4xx + self.status_5xx
        return errors > 0 or self.requests == 0


def _milliseconds(value: str, unit: str) -> float:
    return round(float(value) * _TIME_UNIT_MS[unit], 6)


def _required(pattern: re.Pattern[str], text: str, what: str) -> re.Match[str]:
    match = pattern.search(text)
    if match is None:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        last_line = lines[-1] if lines else "(no output)"
        raise H2loadOutputError(f"no {what} in h2load output: {last_line}")
    return match


def percentile(ordered: Sequence[int], fraction: float) -> float:
    """The nearest-rank percentile of ``ordered`` (sorted ascending); 0 when it is empty."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return float(ordered[rank - 1])


def read_durations(log_text: str) -> list[int]:
    """The per-request durations (µs), sorted, from h2load's ``--log-file``: one line per
    request, ``start time (µs since the epoch) TAB status TAB duration (µs)``."""
    durations = []
    for line in log_text.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[2].isdigit():
            durations.append(int(fields[2]))
    durations.sort()
    return durations


def parse_h2load_output(text: str, durations_us: Sequence[int] = ()) -> H2loadResult:
    """Read the report h2load prints, with the sorted per-request durations of its log.

    Raises ``H2loadOutputError`` when the summary (``finished in``, ``requests:``, ``status
    codes:``, ``time for request:``) is missing, e.g. when h2load rejected its arguments.
    """
    finished = _required(_FINISHED_LINE, text, "'finished in' line")
    requests = _required(_REQUESTS_LINE, text, "'requests:' line")
    statuses = _required(_STATUS_LINE, text, "'status codes:' line")
    request_time = _required(_REQUEST_TIME_LINE, text, "'time for request:' line")
    protocol = _PROTOCOL_LINE.search(text)
    _total, _started, done, succeeded, failed, errored, timeout = (
        int(value) for value in requests.groups()
    )
    status_2xx, status_3xx, status_4xx, status_5xx = (int(value) for value in statuses.groups())
    return H2loadResult(
        requests=done,
        succeeded=succeeded,
        failed=failed,
        errored=errored,
        timeout=timeout,
        status_2xx=status_2xx,
        status_3xx=status_3xx,
        status_4xx=status_4xx,
        status_5xx=status_5xx,
        duration_s=_milliseconds(finished.group(1), finished.group(2)) / 1000.0,
        requests_per_s=float(finished.group(3)),
        protocol=protocol.group(1) if protocol else None,
        latency_mean_ms=_milliseconds(request_time.group(5), request_time.group(6)),
        latency_max_ms=_milliseconds(request_time.group(3), request_time.group(4)),
        latency_p50_ms=percentile(durations_us, 0.50) / 1000.0,
        latency_p75_ms=percentile(durations_us, 0.75) / 1000.0,
        latency_p90_ms=percentile(durations_us, 0.90) / 1000.0,
        latency_p99_ms=percentile(durations_us, 0.99) / 1000.0,
    )


def classify(result: H2loadResult, protocol: str) -> tuple[str, str]:
    """(``ok``, ``flagged`` or ``failed``, why) for a run that asked for ``protocol``.

    A run where no request succeeded, or whose connections spoke something else than
    ``protocol``, measured nothing of what it stands for: it is ``failed``, with no number.
    """
    statuses = (
        f"status codes {result.status_2xx} 2xx, {result.status_3xx} 3xx, "
        f"{result.status_4xx} 4xx, {result.status_5xx} 5xx"
    )
    if result.protocol != protocol:
        spoken = result.protocol or "nothing (no connection)"
        return "failed", f"h2load: asked for {protocol}, the connections spoke {spoken}"
    if result.succeeded == 0:
        return "failed", (
            f"h2load: none of {result.requests} requests succeeded ({statuses}, "
            f"{result.errored} errored, {result.timeout} timed out)"
        )
    if result.has_errors:
        return "flagged", (
            f"{result.requests} requests, {result.failed} failed "
            f"({result.errored} errored, {result.timeout} timed out), {statuses}"
        )
    return "ok", ""


@dataclass(frozen=True)
class H2loadInvocation:
    """Everything that defines one h2load run.

    ``url`` names the host the requests are for (``:authority`` and, over TLS, the SNI);
    ``connect_to`` (``host:port``) is where h2load connects. An ``https`` URL asks for ``h2``
    by ALPN, an ``http`` one speaks h2c with prior knowledge.
    """

    url: str
    connect_to: str
    connections: int
    streams: int
    # Whole seconds, as for wrk.
    duration_s: int
    cpu: int
    # A request silent for this long counts as timed out.
    timeout_s: int = 10

    @property
    def authority(self) -> str:
        """The host of ``url``, without its port."""
        return self.url.partition("://")[2].partition("/")[0].rpartition(":")[0]

    @property
    def protocol(self) -> str:
        """The protocol the connections must speak: ``h2`` over TLS, ``h2c`` in clear."""
        return "h2" if self.url.startswith("https:") else "h2c"

    def command(self, log_file: Path) -> list[str]:
        """The pinned h2load command line (one thread), writing its per-request log."""
        return pinned_command(
            self.cpu,
            [
                "h2load",
                "--threads=1",
                f"--clients={self.connections}",
                f"--max-concurrent-streams={self.streams}",
                f"--duration={self.duration_s}",
                f"--connection-inactivity-timeout={self.timeout_s}",
                f"--connect-to={self.connect_to}",
                f"--log-file={log_file}",
                # the authority without the port, as the wrk loads send ``Host: bench.local``
                f"--header=:authority: {self.authority}",
                self.url,
            ],
        )


def run_h2load(invocation: H2loadInvocation) -> tuple[H2loadResult | None, str]:
    """Run h2load once; return its parsed report (``None`` if unreadable) and its output.

    Like wrk, h2load leads its own process group; its log goes to a temporary file, read and
    removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="h2load-") as directory:
        log_file = Path(directory) / "requests.tsv"
        completed = subprocess.run(
            invocation.command(log_file),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=invocation.duration_s + invocation.timeout_s + 30.0,
            start_new_session=True,
            check=False,
        )
        log_text = log_file.read_text(encoding="ascii") if log_file.exists() else ""
    try:
        return parse_h2load_output(completed.stdout, read_durations(log_text)), completed.stdout
    except H2loadOutputError:
        return None, completed.stdout
