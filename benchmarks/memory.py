"""Memory benchmark: what one sōzu worker holds idle, per idle connection, and while streaming.

A daemon with one worker (``worker_count = 1``, pinned to the proxy CPU as in the load
benchmark) forwards ``Host: bench.local`` to the backend of this module. Every figure is the
worker's resident set size, VmRSS from ``/proc/<pid>/status``:

1. **idle**: after a few warm-up requests (and their connections closed);
2. **idle connections**: with ``--connections`` (1,000) keep-alive client connections open,
   each of which made one request first and then stays idle; the per-connection cost is
   ``(RSS with them - RSS idle) / connections`` (the goal: under 4 KiB);
3. **streaming**: on a fresh daemon, sampled every 0.5 s while ``--streams`` (50) clients each
   move ``--body-mib`` (100) MiB through the proxy at the same time, half of them uploading
   (the backend discards the body) and half downloading (the backend generates it). Bodies
   are streamed, never held whole, by the clients and the backend; the worker's growth over
   its baseline must be bounded by its buffers, not by the body size.

Usage::

    python benchmarks/memory.py [--connections N] [--streams N] [--body-mib N] [--quick]
                                [--out DIR] [--no-docs]

It prints its report, writes ``<out>/memory.json`` and ``<out>/memory.png`` and rewrites the
memory section of ``docs/benchmarks.md``. ``benchmarks/load.py`` runs it after the load rounds
(``run_memory_benchmark``). The daemon runner (:class:`SozuDaemon`), the backend
(:class:`BackendProcess`) and the documentation regions defined here are shared with
``benchmarks/reconfig.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, cast

import httptools
from loadbench.loads import HOSTNAME
from loadbench.machine import cpu_model
from loadbench.processes import STOP_GRACE_S, pinned_command
from loadbench.targets import LOOPBACK, allocate_ports, sozu_executable

from sozu_config import CommandClient, ListWorkers, Status
from sozu_config.client import ClientError
from sozu_config.responses import WorkersContent

BENCHMARKS_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS_DIRECTORY.parent
DOCS_PAGE = REPOSITORY / "docs" / "benchmarks.md"
DEFAULT_OUT = BENCHMARKS_DIRECTORY / "results"

KIB = 1024
MIB = 1024 * KIB

# The goal for an idle keep-alive connection (what the worker holds per connection).
CONNECTION_TARGET_BYTES = 4 * KIB
# What a stream may cost the worker while it flows: its socket buffers, one read of the event
# loop (256 KiB in uvloop) and the write buffers up to their high-water marks (64 KiB each)
# fit well inside; a body held whole would be a hundred times more.
STREAM_ALLOWANCE_BYTES = 1 * MIB

# Connections opened at the same time when setting up the idle ones: enough to be quick,
# few enough to stay inside the listen backlog.
CONNECTION_WAVE = 100
# Settling time before an RSS reading, and the readings a steady figure is the median of.
SETTLE_S = 0.5
STEADY_READINGS = 3
STEADY_INTERVAL_S = 0.2

# Chunk written by the clients and the backend when streaming (a view of it when shorter).
STREAM_CHUNK = bytes(range(256)) * (256 * KIB // 256)
# What a download client asks a read for; the stream reader hands back what it holds.
READ_SIZE = 256 * KIB

# The backend's answers.
DOWNLOAD_PREFIX = "/download/"
UPLOAD_PATH = "/upload"
SMALL_BODY = b"ok\n"

# How long the daemon gets to start, a transfer and a phase to finish, before they count as
# failed. A transfer normally takes seconds; a stalled one would otherwise wait for the
# proxy's front_timeout (60 s by default) to reset it.
DAEMON_STARTUP_S = 30.0
TRANSFER_TIMEOUT_S = 60.0
PHASE_TIMEOUT_S = 300.0

ResultT = TypeVar("ResultT")


# --- /proc and statistics (pure) ----------------------------------------------------------


def parse_vm_rss(status_text: str) -> int:
    """The resident set size in bytes, from the text of ``/proc/<pid>/status``.

    The kernel prints ``VmRSS:\\t   51232 kB`` (always kB, meaning KiB). Raises ``ValueError``
    when the line is missing (a kernel thread or a zombie has none) or malformed.
    """
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) != 3 or fields[2] != "kB" or not fields[1].isdigit():
                raise ValueError(f"unexpected VmRSS line: {line!r}")
            return int(fields[1]) * KIB
    raise ValueError("no VmRSS line (the process is a zombie or a kernel thread)")


def read_rss(pid: int) -> int:
    """The current VmRSS of process ``pid``, in bytes."""
    return parse_vm_rss(Path(f"/proc/{pid}/status").read_text(encoding="ascii"))


def per_connection_cost(idle_bytes: int, loaded_bytes: int, connections: int) -> float:
    """What each held connection added to the RSS: ``(loaded - idle) / connections``.

    Negative when the process gave memory back meanwhile (reported as measured).
    """
    if connections <= 0:
        raise ValueError("no connection was held")
    return (loaded_bytes - idle_bytes) / connections


@dataclass(frozen=True)
class Growth:
    """How the RSS samples of a streaming phase compare with the baseline before it.

    ``late_growth_bytes`` is the highest sample of the second half of the phase minus the
    highest of the first half: close to zero when memory plateaued early (bounded by buffers),
    large when it kept climbing with the bytes moved.
    """

    baseline_bytes: int
    max_bytes: int
    max_growth_bytes: int
    final_bytes: int
    late_growth_bytes: int


def streaming_growth(baseline_bytes: int, samples: Sequence[tuple[float, int]]) -> Growth:
    """Summarise ``(seconds since start, rss bytes)`` samples taken in time order."""
    if not samples:
        raise ValueError("no sample")
    values = [rss for _, rss in samples]
    peak = max(values)
    half = len(values) // 2
    late = max(values[half:]) - max(values[:half]) if half else 0
    return Growth(
        baseline_bytes=baseline_bytes,
        max_bytes=peak,
        max_growth_bytes=peak - baseline_bytes,
        final_bytes=values[-1],
        late_growth_bytes=late,
    )


def parse_response_head(head: bytes) -> tuple[int, int | None]:
    """The status and the ``Content-Length`` (``None`` if absent) of a response head.

    ``head`` is the status line and the header lines, ``\\r\\n``-separated; raises
    ``ValueError`` for anything that is not an HTTP/1.x status line.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not a status line: {lines[0][:60]!r}")
    length = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"content-length":
            length = int(value.strip())
    return int(parts[1]), length


# --- documentation regions (shared with reconfig.py and load.py) -------------------------


def region_markers(region: str) -> tuple[str, str]:
    """The HTML comments around a generated region of ``docs/benchmarks.md``."""
    return f"<!-- {region}:begin -->", f"<!-- {region}:end -->"


def replace_region(document: str, region: str, content: str) -> str:
    """``document`` with the text between the markers of ``region`` replaced by ``content``.

    The markers are kept. Raises ``ValueError`` when they are missing or out of order, so that
    a hand-edited page is never silently truncated.
    """
    begin_marker, end_marker = region_markers(region)
    begin = document.find(begin_marker)
    end = document.find(end_marker)
    if begin < 0 or end < 0 or end < begin:
        raise ValueError(f"the document lacks {begin_marker} ... {end_marker}")
    head = document[: begin + len(begin_marker)]
    return f"{head}\n{content.strip()}\n{document[end:]}"


def rewrite_docs_region(page: Path, region: str, content: str) -> bool:
    """Rewrite one region of ``page``; False (and a warning) when the page or region is
    missing."""
    try:
        document = page.read_text(encoding="utf-8")
        page.write_text(replace_region(document, region, content), encoding="utf-8")
    except (OSError, ValueError) as error:
        print(f"warning: {page} not rewritten: {error}", file=sys.stderr)
        return False
    return True


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (temporary file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


def mebibytes(value: float) -> str:
    """``51.2 MiB``: how the reports show a memory size."""
    return f"{value / MIB:.1f} MiB"


def measurement_context() -> dict[str, Any]:
    """When and on what a result was measured (recorded with it: results are only
    comparable on the same machine)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def describe_context(payload: dict[str, Any]) -> str:
    """``2026-11-27T22:07:38+00:00; Intel(R) Xeon(R) Processor, 2 CPUs`` from a result."""
    context = payload.get("context") or {}
    if not context:
        return "unknown date and machine"
    return f"{context['date']}; {context['cpu_model']}, {context['cpu_count']} CPUs"


# --- machine ---------------------------------------------------------------------------------


def proxy_cpu() -> int:
    """The CPU the load benchmark gives the proxies: the second usable one, if any."""
    usable = sorted(os.sched_getaffinity(0))
    return usable[1] if len(usable) > 1 else usable[0]


def raise_file_limit(needed: int) -> int:
    """Raise this process's soft limit of open files to at least ``needed`` (up to the hard
    limit) and return the new soft limit. Child processes, the daemon among them, inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


# --- the backend ------------------------------------------------------------------------------


class BackendProtocol(asyncio.Protocol):
    """One connection to the benchmark backend (requests answered in order; kept alive unless
    the request says otherwise).

    ``GET /download/<n>`` answers ``n`` generated bytes, written as the transport drains
    (``pause_writing``/``resume_writing``), never more than one chunk ahead. A request with a
    body has it counted and dropped; the answer's body is the count. Anything else answers
    ``ok\\n``.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.received = 0
        self.remaining = 0
        self.paused = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.received = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.received += len(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.keep_alive = self.parser.should_keep_alive()
        path = self.url.decode("latin-1")
        if path.startswith(DOWNLOAD_PREFIX):
            self.remaining = int(path[len(DOWNLOAD_PREFIX) :])
            self.transport.write(_head(self.remaining))
            self._pump()
            return
        if self.received:
            body = str(self.received).encode("ascii")
            self.transport.write(_head(len(body)) + body)
        else:
            self.transport.write(_head(len(SMALL_BODY)) + SMALL_BODY)
        self._answered()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def _pump(self) -> None:
        view = memoryview(STREAM_CHUNK)
        while self.remaining and not self.paused and self.transport is not None:
            size = min(self.remaining, len(STREAM_CHUNK))
            self.remaining -= size
            # write() may call pause_writing() before it returns, which ends the loop.
            self.transport.write(view[:size])
            if not self.remaining:
                self._answered()

    def _answered(self) -> None:
        # close() sends what is still buffered first
        if not self.keep_alive and self.transport is not None:
            self.transport.close()


def _head(length: int) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream"
        "\r\n\r\n"
    ).encode("ascii")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (it is a dependency of the runtime), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


async def _serve_backend() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BackendProtocol, LOOPBACK, 0, backlog=4096)
    # The parent reads this line to learn the port.
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def serve_backend() -> None:
    """The backend process: listen on an ephemeral loopback port, print it on a line of its
    own on stdout, and serve until terminated."""
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(_serve_backend())


class BackendProcess:
    """The backend, in a process of its own (so that it never competes for the event loop of
    the clients), started as ``python -c "import memory; memory.serve_backend()"``.

    Invariant: once ``start`` returned, ``stop`` must be called (it is idempotent).
    """

    def __init__(self) -> None:
        self.port = 0
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> int:
        """Start the backend; return its port once it listens."""
        path = os.environ.get("PYTHONPATH")
        search = str(BENCHMARKS_DIRECTORY) + (os.pathsep + path if path else "")
        self._popen = subprocess.Popen(
            [sys.executable, "-c", "import memory; memory.serve_backend()"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": search},
            # Its own session: a Ctrl-C meant for the benchmark must not kill it halfway
            # through a measurement; ``stop`` ends it.
            start_new_session=True,
        )
        assert self._popen.stdout is not None
        ready, _, _ = select.select([self._popen.stdout], [], [], timeout_s)
        line = self._popen.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            code = self._popen.poll()
            state = f"exited with status {code}" if code is not None else "is not listening"
            raise RuntimeError(f"the backend {state} after {timeout_s:g} s")
        self.port = int(line)
        return self.port

    def stop(self) -> None:
        """Terminate the backend process and reap it."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        popen.terminate()
        try:
            popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()


# --- the daemon under test ----------------------------------------------------------------------


def daemon_config(
    socket_path: Path,
    *,
    worker_count: int,
    http_port: int,
    backend_port: int | None,
    hostname: str = HOSTNAME,
) -> str:
    """A ``config.toml`` (sōzu's format): one HTTP listener on loopback and, with a backend,
    cluster ``bench`` routing ``hostname`` to it. Without a backend the state holds the
    listener only."""
    lines = [
        f"command_socket = {json.dumps(str(socket_path))}",
        f"worker_count = {worker_count}",
        'log_level = "error"',
        'log_target = "stdout"',
        "",
        "[[listeners]]",
        'protocol = "http"',
        f'address = "{LOOPBACK}:{http_port}"',
    ]
    if backend_port is not None:
        lines += [
            "",
            "[clusters.bench]",
            'protocol = "http"',
            "frontends = [",
            f'    {{ address = "{LOOPBACK}:{http_port}", hostname = "{hostname}" }},',
            "]",
            f'backends = [{{ address = "{LOOPBACK}:{backend_port}" }}]',
        ]
    return "\n".join(lines) + "\n"


class DaemonError(RuntimeError):
    """The daemon did not start, or stopped answering; ``output_head`` is what it printed."""

    def __init__(self, message: str, output_head: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.output_head = list(output_head)

    def describe(self) -> str:
        """The message followed by the daemon's first output lines, indented."""
        return "\n".join([str(self), *(f"    {line}" for line in self.output_head)])


class SozuDaemon:
    """A ``sozu -c config.toml start`` of the benchmark, in its own process group, optionally
    pinned to one CPU (with everything it forks: its workers).

    Invariant: once ``start`` returned, ``stop`` must be called (it is idempotent); it leaves
    no process of the daemon running, main or worker.
    """

    def __init__(self, directory: Path, cpu: int | None) -> None:
        self.directory = directory
        self.config_path = directory / "config.toml"
        self.log_path = directory / "output.log"
        # The configuration given to ``start`` must name this command socket.
        self.socket_path = directory / "sozu.sock"
        self.cpu = cpu
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self, config_text: str) -> None:
        """Write ``config_text`` (whose ``command_socket`` is :attr:`socket_path`) and start
        the daemon on it (returns at once)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text, encoding="utf-8")
        command = [str(sozu_executable()), "-c", str(self.config_path), "start"]
        if self.cpu is not None:
            command = pinned_command(self.cpu, command)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )

    def output_head(self, lines: int = 8) -> list[str]:
        """The first lines the daemon printed."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as log:
                return [line.rstrip("\n") for _, line in zip(range(lines), log, strict=False)]
        except FileNotFoundError:
            return []

    def client(self, timeout_s: float | None = 30.0) -> CommandClient:
        """A new client of the command socket (not yet connected)."""
        return CommandClient(self.socket_path, timeout=timeout_s)

    def wait_ready(self, timeout_s: float = DAEMON_STARTUP_S) -> None:
        """Return once every worker reports ``running``; raise :class:`DaemonError` when the
        daemon exits or ``timeout_s`` passes first."""
        if not sozu_executable().exists():
            raise DaemonError(f"{sozu_executable()} not found (is sozu-cli installed?)")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._popen.poll() if self._popen else None
            if code is not None:
                raise DaemonError(f"the daemon exited with status {code}", self.output_head())
            try:
                with self.client(timeout_s=5.0) as client:
                    content = client.send(Status()).content
                workers = getattr(content, "workers", [])
                if workers and all(worker.run_state == "running" for worker in workers):
                    return
            except ClientError:
                pass
            time.sleep(0.1)
        raise DaemonError(f"the daemon was not ready within {timeout_s:g} s", self.output_head())

    def worker_pids(self) -> list[int]:
        """The process ids of the workers, in worker-id order."""
        with self.client() as client:
            response = client.send(ListWorkers())
        if not response.ok or not isinstance(response.content, WorkersContent):
            raise DaemonError(f"list_workers failed: {response.message}", self.output_head())
        return [worker.pid for worker in sorted(response.content.workers, key=lambda w: w.id)]

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace time, and reap the leader."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        group = popen.pid
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and _group_alive(group):
            popen.poll()  # reap the leader as soon as it exits
            time.sleep(0.05)
        if _group_alive(group):
            _signal_group(group, signal.SIGKILL)
        try:
            popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


# --- HTTP clients (asyncio) ---------------------------------------------------------------------


def _request(method: str, path: str, extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {HOSTNAME}\r\n{extra}\r\n".encode("ascii")


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read one answer whose body has a ``Content-Length``; return status and body size.

    The body is read in pieces and dropped, whatever its size.
    """
    status, length = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
    if length is None:
        raise ValueError(f"status {status} without Content-Length")
    remaining = length
    while remaining:
        piece = await reader.read(min(remaining, READ_SIZE))
        if not piece:
            raise ConnectionError(f"closed with {remaining} of {length} body bytes missing")
        remaining -= len(piece)
    return status, length


async def _open_and_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection that made one successful keep-alive ``GET /``."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(_request("GET", "/"))
        status, _ = await _read_answer(reader)
        if status != 200:
            raise ConnectionError(f"GET / answered {status}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def warm_up(port: int, requests: int) -> None:
    """``requests`` keep-alive requests on one connection, then one request on each of a few
    new connections, all closed afterwards: the code paths are loaded and the caches filled."""
    reader, writer = await _open_and_request(port)
    try:
        for _ in range(requests - 1):
            writer.write(_request("GET", "/"))
            await _read_answer(reader)
    finally:
        writer.close()
    fresh = await asyncio.gather(*(_open_and_request(port) for _ in range(20)))
    for _, fresh_writer in fresh:
        fresh_writer.close()


async def steady_rss(pid: int) -> int:
    """The worker's RSS once settled: the median of a few readings after a short pause."""
    await asyncio.sleep(SETTLE_S)
    readings = []
    for index in range(STEADY_READINGS):
        if index:
            await asyncio.sleep(STEADY_INTERVAL_S)
        readings.append(read_rss(pid))
    return int(statistics.median(readings))


async def open_idle_connections(
    port: int, count: int
) -> tuple[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], list[str]]:
    """Open ``count`` connections, each of which made one request; return the ones that are
    open and the errors of those that failed."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    errors: list[str] = []
    for first in range(0, count, CONNECTION_WAVE):
        wave = min(CONNECTION_WAVE, count - first)
        outcomes = await asyncio.gather(
            *(_open_and_request(port) for _ in range(wave)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                errors.append(f"{type(outcome).__name__}: {outcome}")
            else:
                opened.append(outcome)
    return opened, errors


def still_open(connections: Sequence[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of the connections the proxy has not closed (no end of stream seen)."""
    return sum(
        1 for reader, writer in connections if not reader.at_eof() and not writer.is_closing()
    )


@dataclass(frozen=True)
class StreamOutcome:
    """One client's transfer: ``direction`` is ``upload`` or ``download``; ``error`` is empty
    when all ``size`` bytes went through and the answer was a 200 (an upload's answer body
    must also be the backend's count of the bytes it received)."""

    direction: str
    size: int
    seconds: float
    error: str = ""


async def upload(port: int, size: int) -> StreamOutcome:
    """POST ``size`` bytes to the backend's discarding endpoint through the proxy."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(_request("POST", UPLOAD_PATH, f"Content-Length: {size}\r\n"))
        view = memoryview(STREAM_CHUNK)
        remaining = size
        while remaining:
            piece = min(remaining, len(STREAM_CHUNK))
            writer.write(view[:piece])
            remaining -= piece
            await writer.drain()
        status, length = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
        body = await reader.readexactly(length or 0)
        error = ""
        if status != 200 or body != str(size).encode("ascii"):
            error = f"answered {status} with {body[:40]!r}, expected 200 with {size}"
        return StreamOutcome("upload", size, time.monotonic() - started, error)
    finally:
        writer.close()


async def download(port: int, size: int) -> StreamOutcome:
    """GET ``size`` generated bytes from the backend through the proxy, reading as they come."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(_request("GET", f"{DOWNLOAD_PREFIX}{size}"))
        status, length = await _read_answer(reader)
        error = "" if status == 200 and length == size else f"answered {status}, {length} bytes"
        return StreamOutcome("download", size, time.monotonic() - started, error)
    finally:
        writer.close()


async def _guarded(
    direction: str, size: int, transfer: Coroutine[Any, Any, StreamOutcome]
) -> StreamOutcome:
    """``transfer``'s outcome, with a failure turned into an outcome that says what went
    wrong (one broken stream must not hide what the others measured)."""
    started = time.monotonic()
    try:
        return await asyncio.wait_for(transfer, TRANSFER_TIMEOUT_S)
    except TimeoutError:
        reason = f"not done after {TRANSFER_TIMEOUT_S:g} s"
    except (OSError, ValueError, asyncio.IncompleteReadError) as error:
        reason = f"{type(error).__name__}: {error}"
    return StreamOutcome(direction, size, time.monotonic() - started, reason)


async def sample_rss(
    pid: int, interval_s: float, samples: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    """Append ``(seconds since start, rss)`` to ``samples`` every ``interval_s`` until
    ``stop`` is set (one last sample then)."""
    started = time.monotonic()
    while True:
        samples.append((round(time.monotonic() - started, 3), read_rss(pid)))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            continue
        samples.append((round(time.monotonic() - started, 3), read_rss(pid)))
        return


# --- the benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySettings:
    """What the memory benchmark measures: ``connections`` idle keep-alive connections, then
    ``streams`` concurrent transfers of ``body_bytes`` each (even-numbered ones upload,
    odd-numbered ones download), with the RSS sampled every ``sample_interval_s``."""

    connections: int = 1000
    streams: int = 50
    body_bytes: int = 100 * MIB
    sample_interval_s: float = 0.5
    warmup_requests: int = 200

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded in the results."""
        return asdict(self)


QUICK_MEMORY = MemorySettings(connections=200, streams=10, body_bytes=10 * MIB)


def estimated_memory_seconds(settings: MemorySettings) -> float:
    """A rough duration: two daemon starts, the connections, and the streaming at about
    300 MB/s through one worker."""
    return 15.0 + settings.connections / 500 + settings.streams * settings.body_bytes / 300e6


@dataclass
class IdleConnections:
    """The idle figures: RSS idle, RSS with the connections held, and the cost of one."""

    requested: int
    opened: int
    open_at_reading: int
    idle_rss_bytes: int
    loaded_rss_bytes: int
    per_connection_bytes: float
    errors: list[str] = field(default_factory=list)

    @property
    def within_target(self) -> bool:
        """Whether one idle connection costs less than :data:`CONNECTION_TARGET_BYTES`."""
        return self.per_connection_bytes < CONNECTION_TARGET_BYTES


@dataclass
class Streaming:
    """The streaming phase: the outcomes of the transfers and the RSS samples."""

    streams: int
    body_bytes: int
    seconds: float
    growth: Growth
    samples: list[tuple[float, int]]
    outcomes: list[StreamOutcome]

    @property
    def completed(self) -> int:
        """Transfers that moved all their bytes and were answered correctly."""
        return sum(1 for outcome in self.outcomes if not outcome.error)

    @property
    def bound_bytes(self) -> int:
        """The growth allowed for the memory to count as flat (see
        :data:`STREAM_ALLOWANCE_BYTES`)."""
        return self.streams * STREAM_ALLOWANCE_BYTES

    @property
    def flat(self) -> bool:
        """Whether the worker's growth stayed within the buffer allowance of the streams."""
        return self.growth.max_growth_bytes <= self.bound_bytes

    @property
    def last_completed_s(self) -> float:
        """When the last completed transfer ended, in seconds since the phase began (0 when
        none completed). Failed transfers can keep the phase going much longer."""
        return max((o.seconds for o in self.outcomes if not o.error), default=0.0)

    @property
    def throughput_bytes_per_s(self) -> float:
        """Bytes of the completed transfers per second, until the last of them ended."""
        moved = sum(outcome.size for outcome in self.outcomes if not outcome.error)
        seconds = self.last_completed_s
        return moved / seconds if seconds > 0 else 0.0


def failure_summary(failures: Sequence[dict[str, Any]]) -> list[str]:
    """Failed transfers (``StreamOutcome`` as JSON data) grouped by direction and reason, most
    frequent first: ``15 uploads: not done after 60 s``."""
    counts: dict[tuple[str, str], int] = {}
    for failure in failures:
        key = (failure["direction"], failure["error"])
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [
        f"{count} {direction}{'s' if count > 1 else ''}: {error}"
        for (direction, error), count in ordered
    ]


@dataclass
class MemoryResult:
    """Everything the memory benchmark measured; a phase that could not run is ``None`` and
    ``error`` says why."""

    settings: MemorySettings
    idle: IdleConnections | None = None
    streaming: Streaming | None = None
    worker_pids: list[int] = field(default_factory=list)
    error: str = ""
    context: dict[str, Any] = field(default_factory=measurement_context)

    @property
    def failed(self) -> bool:
        """Whether a phase failed, or a connection or a transfer did not go through."""
        return bool(
            self.error
            or self.idle is None
            or self.idle.opened < self.idle.requested
            or self.streaming is None
            or self.streaming.completed < self.streaming.streams
        )

    def to_json(self) -> dict[str, Any]:
        """The result as the JSON data of ``memory.json`` and ``latest.json``'s ``memory``."""
        payload: dict[str, Any] = {
            "settings": self.settings.to_json(),
            "context": self.context,
            "worker_pids": self.worker_pids,
            "error": self.error,
            "idle": None,
            "streaming": None,
        }
        if self.idle is not None:
            payload["idle"] = {
                **asdict(self.idle),
                "target_bytes": CONNECTION_TARGET_BYTES,
                "within_target": self.idle.within_target,
            }
        if self.streaming is not None:
            streaming = self.streaming
            payload["streaming"] = {
                "streams": streaming.streams,
                "body_bytes": streaming.body_bytes,
                "seconds": round(streaming.seconds, 3),
                "completed": streaming.completed,
                "last_completed_s": round(streaming.last_completed_s, 3),
                "throughput_bytes_per_s": round(streaming.throughput_bytes_per_s),
                **asdict(streaming.growth),
                "bound_bytes": streaming.bound_bytes,
                "flat": streaming.flat,
                "failures": [asdict(o) for o in streaming.outcomes if o.error],
                "samples": [list(sample) for sample in streaming.samples],
            }
        return payload


def _run_with_timeout(
    runner: asyncio.Runner, make: Callable[[], Coroutine[Any, Any, ResultT]]
) -> ResultT:
    async def bounded() -> ResultT:
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            return await make()

    return runner.run(bounded())


class MemoryBenchmark:
    """The two phases, each on a daemon of its own started in ``workspace``."""

    def __init__(self, settings: MemorySettings, workspace: Path, cpu: int | None) -> None:
        self.settings = settings
        self.workspace = workspace
        self.cpu = cpu

    def run(self) -> MemoryResult:
        """Measure; failures of the daemon or of a phase are reported in the result."""
        result = MemoryResult(self.settings)
        # Each connection is a socket here, and up to two in the worker (client and backend).
        raise_file_limit(2 * self.settings.connections + 1024)
        backend = BackendProcess()
        try:
            backend_port = backend.start()
            with asyncio.Runner(loop_factory=_new_event_loop) as runner:
                result.idle = self._phase(
                    "idle", backend_port, result, lambda port, pid: self._idle(runner, port, pid)
                )
                result.streaming = self._phase(
                    "streaming",
                    backend_port,
                    result,
                    lambda port, pid: self._streaming(runner, port, pid),
                )
        except (RuntimeError, OSError) as error:
            result.error = f"{type(error).__name__}: {error}"
        finally:
            backend.stop()
        return result

    def _phase(
        self,
        name: str,
        backend_port: int,
        result: MemoryResult,
        measure: Callable[[int, int], ResultT],
    ) -> ResultT | None:
        """Start a fresh daemon, run ``measure(http port, worker pid)``, stop the daemon."""
        (http_port,) = allocate_ports(1)
        directory = self.workspace / f"memory-{name}"
        daemon = SozuDaemon(directory, self.cpu)
        try:
            daemon.start(
                daemon_config(
                    daemon.socket_path,
                    worker_count=1,
                    http_port=http_port,
                    backend_port=backend_port,
                )
            )
            daemon.wait_ready()
            (pid,) = daemon.worker_pids()
            result.worker_pids.append(pid)
            return measure(http_port, pid)
        except DaemonError as error:
            self._fail(result, name, error.describe())
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as error:
            self._fail(result, name, f"{type(error).__name__}: {error}")
        finally:
            daemon.stop()
        return None

    @staticmethod
    def _fail(result: MemoryResult, phase: str, reason: str) -> None:
        line = f"{phase} phase failed: {reason}"
        result.error = f"{result.error}\n{line}" if result.error else line

    def _idle(self, runner: asyncio.Runner, port: int, pid: int) -> IdleConnections:
        settings = self.settings

        async def measure() -> IdleConnections:
            await warm_up(port, settings.warmup_requests)
            idle = await steady_rss(pid)
            opened, errors = await open_idle_connections(port, settings.connections)
            try:
                loaded = await steady_rss(pid)
                held = still_open(opened)
            finally:
                for _, writer in opened:
                    writer.close()
            return IdleConnections(
                requested=settings.connections,
                opened=len(opened),
                open_at_reading=held,
                idle_rss_bytes=idle,
                loaded_rss_bytes=loaded,
                per_connection_bytes=per_connection_cost(idle, loaded, max(held, 1)),
                errors=errors[:5],
            )

        return _run_with_timeout(runner, measure)

    def _streaming(self, runner: asyncio.Runner, port: int, pid: int) -> Streaming:
        settings = self.settings

        async def measure() -> Streaming:
            await warm_up(port, settings.warmup_requests)
            baseline = await steady_rss(pid)
            samples: list[tuple[float, int]] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(
                sample_rss(pid, settings.sample_interval_s, samples, stop)
            )
            started = time.monotonic()
            transfers = []
            for index in range(settings.streams):
                size = settings.body_bytes
                if index % 2 == 0:
                    transfers.append(_guarded("upload", size, upload(port, size)))
                else:
                    transfers.append(_guarded("download", size, download(port, size)))
            try:
                outcomes = await asyncio.gather(*transfers)
            finally:
                elapsed = time.monotonic() - started
                stop.set()
                await sampler
            return Streaming(
                streams=settings.streams,
                body_bytes=settings.body_bytes,
                seconds=elapsed,
                growth=streaming_growth(baseline, samples),
                samples=samples,
                outcomes=list(outcomes),
            )

        return _run_with_timeout(runner, measure)


def run_memory_benchmark(
    settings: MemorySettings, workspace: Path, cpu: int | None = None
) -> MemoryResult:
    """Run the memory benchmark with its daemons under ``workspace`` (pinned to ``cpu`` when
    given). Never raises for a benchmark failure: the result's ``error`` says what failed."""
    return MemoryBenchmark(settings, workspace, cpu).run()


# --- reports ---------------------------------------------------------------------------------


def report_lines(payload: dict[str, Any]) -> list[str]:
    """The memory results (``MemoryResult.to_json()``) as lines of plain text."""
    settings = payload["settings"]
    lines = []
    idle = payload.get("idle")
    if idle is not None:
        verdict = "within" if idle["within_target"] else "ABOVE"
        lines += [
            f"worker RSS idle:                         {mebibytes(idle['idle_rss_bytes'])}",
            f"worker RSS, {idle['open_at_reading']:>5} idle keep-alive conns: "
            f"{mebibytes(idle['loaded_rss_bytes'])}",
            f"per idle connection:                     {idle['per_connection_bytes']:,.0f} bytes "
            f"({verdict} the {idle['target_bytes'] // KIB} KiB target)",
        ]
        if idle["opened"] < idle["requested"]:
            lines.append(
                f"  only {idle['opened']} of {idle['requested']} connections opened: "
                + "; ".join(idle["errors"][:2])
            )
    streaming = payload.get("streaming")
    if streaming is not None:
        body = streaming["body_bytes"] / MIB
        verdict = "flat" if streaming["flat"] else "NOT flat"
        lines += [
            f"streaming, {streaming['streams']} clients x {body:g} MiB (half up, half down): "
            f"{streaming['completed']}/{streaming['streams']} completed, the last after "
            f"{streaming['last_completed_s']:.1f} s "
            f"({streaming['throughput_bytes_per_s'] / 1e6:,.0f} MB/s); "
            f"phase {streaming['seconds']:.1f} s",
            f"  RSS baseline {mebibytes(streaming['baseline_bytes'])}, "
            f"max {mebibytes(streaming['max_bytes'])}, "
            f"max growth {mebibytes(streaming['max_growth_bytes'])} "
            f"({verdict}: bound {mebibytes(streaming['bound_bytes'])}), "
            f"growth in the second half {mebibytes(streaming['late_growth_bytes'])}",
        ]
        lines.extend(f"  failed: {line}" for line in failure_summary(streaming["failures"]))
    if payload.get("error"):
        lines += ["memory benchmark problems:", *payload["error"].splitlines()]
    if not lines:
        lines.append(f"no result (settings {settings})")
    return lines


def markdown_section(payload: dict[str, Any], chart: str | None) -> str:
    """The text of the memory region of ``docs/benchmarks.md``; ``chart`` is the relative
    path of ``memory.png`` from the page, if drawn."""
    rows = []
    idle = payload.get("idle")
    if idle is not None:
        rows += [
            ("worker RSS, idle", mebibytes(idle["idle_rss_bytes"])),
            (
                f"worker RSS, {idle['open_at_reading']:,} idle keep-alive connections",
                mebibytes(idle["loaded_rss_bytes"]),
            ),
            (
                "per idle connection",
                f"{idle['per_connection_bytes']:,.0f} bytes "
                f"({'within' if idle['within_target'] else 'above'} the 4 KiB target)",
            ),
        ]
    streaming = payload.get("streaming")
    if streaming is not None:
        rows += [
            (
                f"streaming: {streaming['streams']} clients x "
                f"{streaming['body_bytes'] / MIB:g} MiB",
                f"{streaming['completed']}/{streaming['streams']} completed, the last after "
                f"{streaming['last_completed_s']:.1f} s "
                f"({streaming['throughput_bytes_per_s'] / 1e6:,.0f} MB/s)",
            ),
            ("streaming: RSS baseline", mebibytes(streaming["baseline_bytes"])),
            ("streaming: RSS max", mebibytes(streaming["max_bytes"])),
            (
                "streaming: max growth",
                f"{mebibytes(streaming['max_growth_bytes'])} "
                f"({'flat' if streaming['flat'] else 'not flat'}: "
                f"bound {mebibytes(streaming['bound_bytes'])})",
            ),
        ]
    lines = [
        f"_{describe_context(payload)}._",
        "",
        "| measure | value |",
        "|:---|---:|",
        *(f"| {a} | {b} |" for a, b in rows),
    ]
    if not rows:
        lines = ["_No memory result._"]
    problems = payload["error"].splitlines() if payload.get("error") else []
    if streaming is not None:
        problems += [f"failed: {line}" for line in failure_summary(streaming["failures"])]
    if problems:
        lines += ["", "Problems:", "", "```text", *problems, "```"]
    if chart is not None and streaming is not None:
        lines += ["", f"![worker RSS while streaming]({chart})"]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line of a stand-alone run."""
    defaults = MemorySettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, help=f"default {defaults.connections}")
    parser.add_argument("--streams", type=int, help=f"default {defaults.streams}")
    parser.add_argument("--body-mib", type=int, help=f"default {defaults.body_bytes // MIB}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_MEMORY.connections} connections, {QUICK_MEMORY.streams} streams of "
        f"{QUICK_MEMORY.body_bytes // MIB} MiB (a smoke test)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    return parser.parse_args(argv)


def settings_from(arguments: argparse.Namespace) -> MemorySettings:
    """The settings a command line asks for (``--quick`` first, explicit values over it)."""
    base = QUICK_MEMORY if arguments.quick else MemorySettings()
    return MemorySettings(
        connections=arguments.connections or base.connections,
        streams=arguments.streams or base.streams,
        body_bytes=(arguments.body_mib * MIB) if arguments.body_mib else base.body_bytes,
        sample_interval_s=base.sample_interval_s,
        warmup_requests=base.warmup_requests,
    )


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the memory benchmark alone; return the exit status (1 when a phase failed)."""
    arguments = parse_arguments(argv)
    settings = settings_from(arguments)
    # SIGTERM goes through the same clean-up as Ctrl-C: no daemon may be left behind.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    print(
        f"memory: {settings.connections} idle connections, {settings.streams} streams of "
        f"{settings.body_bytes // MIB} MiB; about "
        f"{estimated_memory_seconds(settings):.0f} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="sozu-memory-") as workspace:
        try:
            result = run_memory_benchmark(settings, Path(workspace), proxy_cpu())
        except KeyboardInterrupt:
            print("\ninterrupted: stopped, no results written", file=sys.stderr)
            return 130
    payload = result.to_json()
    print("\n".join(report_lines(payload)))
    out_dir = arguments.out.resolve()
    write_json(out_dir / "memory.json", payload)
    import charts  # matplotlib is only needed once there is something to draw

    chart = charts.render_memory_chart(payload, out_dir)
    print(f"\nresults: {out_dir / 'memory.json'}" + (f"\nchart: {chart}" if chart else ""))
    if not arguments.no_docs:
        relative = os.path.relpath(chart, DOCS_PAGE.parent) if chart else None
        if rewrite_docs_region(DOCS_PAGE, "memory", markdown_section(payload, relative)):
            print(f"memory section rewritten in {DOCS_PAGE}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
