"""``sozu top``: a live view of the proxy, refreshed every ``--interval`` seconds.

Each refresh asks the daemon for its metrics (``query_metrics``) and its processes
(``status``); the routing state is read again only when its version changes, so that clusters
and backends without traffic are listed too. The figures are computed by :mod:`sozu_cli.top`.

On a terminal the view is drawn in place with rich (the alternate screen, as ``top`` does);
``q`` or Ctrl-C quits, and the terminal is restored. Keys are read in cbreak mode between
refreshes, so that waiting for one never delays the other. Elsewhere (a pipe, a file, or with
``--json``) each frame is printed after the previous one; ``--count N`` stops after N frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from sozu_config import QueryMetrics, QueryState, Status
from sozu_config.responses import MetricsContent, StateContent, WorkersContent

from ..arguments import positive, seconds
from ..context import Context, content_of
from ..declarations import Arg, Command
from ..errors import CommandError, DaemonFailure
from ..output import Output
from ..top import COLUMNS, Frame, Sample, build_frame, frame_cells, header_text

__all__ = ["COMMANDS", "Viewer", "quit_pressed", "top"]

_QUIT_KEYS = frozenset(b"qQ")
_WORKER_COLUMNS = ("WORKER", "PID", "STATE")


class Viewer:
    """Fetches a sample at each call of :meth:`frame` and turns it into a frame, rates over
    the time since the previous one. After the first frame, a daemon that does not answer
    leaves the previous figures on screen with the reason, and is asked again next time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.previous: Sample | None = None
        self.last: Frame | None = None
        self.known: dict[str, list[str]] = {}
        self.known_version: int | None = None

    def _send(self, request: Any, kind: type[Any]) -> Any:
        response = self.ctx.send(request)
        if not response.ok:
            raise DaemonFailure(response.message or f"the daemon refused {request.type}")
        return content_of(response, kind)

    def _refresh_layout(self, version: Any) -> None:
        """The clusters and backends of the routing state, read when its version changed."""
        if version == self.known_version and self.known_version is not None:
            return
        state = self._send(QueryState(), StateContent).state
        known: dict[str, list[str]] = {c.cluster_id: [] for c in state.clusters}
        for backend in state.backends:
            known.setdefault(backend.cluster_id, []).append(backend.backend_id)
        self.known = known
        self.known_version = version if isinstance(version, int) else None

    def frame(self) -> Frame:
        try:
            metrics: MetricsContent = self._send(QueryMetrics(), MetricsContent)
            sample = Sample(time.monotonic(), metrics)
            workers: WorkersContent = self._send(Status(), WorkersContent)
            self._refresh_layout(metrics.main.get("state.version"))
        except CommandError as error:
            if self.last is None:
                raise
            return dataclasses.replace(self.last, problem=error.message)
        frame = build_frame(self.previous, sample, workers, self.known)
        self.previous = sample
        self.last = frame
        return frame


# --------------------------------------------------------------------------- keys


@contextlib.contextmanager
def _cbreak(stream: TextIO) -> Iterator[int | None]:
    """The terminal of ``stream`` in cbreak mode (keys arrive one by one, unechoed; Ctrl-C
    still interrupts), restored on exit; None when ``stream`` is not a terminal."""
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        fd = -1
    if fd < 0 or not os.isatty(fd):
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def quit_pressed(fd: int | None, deadline: float) -> bool:
    """Wait until the monotonic ``deadline``; True as soon as ``q`` is read from ``fd``
    (nothing is read when ``fd`` is None or at its end)."""
    while (left := deadline - time.monotonic()) > 0:
        if fd is None:
            time.sleep(left)
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 64)
        if not data:
            fd = None  # end of input: only the deadline is left
        elif _QUIT_KEYS.intersection(data):
            return True
    return False


# --------------------------------------------------------------------------- drawing


def _renderable(frame: Frame, interval: float) -> Any:
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text(header_text(frame), style="bold")
    if frame.problem:
        header.stylize("yellow")
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", expand=False)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in COLUMNS[:2] else "right")
    styles = {"down": "red", "up": "green"}
    for row, cells in zip(frame.rows, frame_cells(frame), strict=True):
        table.add_row(
            Text(cells[0], style="dim" if row.depth else "bold"),
            Text(cells[1], style=styles.get(cells[1], "")),
            *(Text(cell) for cell in cells[2:]),
        )
    workers = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in _WORKER_COLUMNS:
        workers.add_column(column)
    for worker in frame.workers:
        workers.add_row(*(Text(cell) for cell in worker))
    footer = Text(f"q quits · every {interval:g} s · {time.strftime('%H:%M:%S')}", style="dim")
    return Group(header, table, workers, footer)


def _print_frame(output: Output, frame: Frame) -> None:
    if output.json_mode:
        output.json(dataclasses.asdict(frame), compact=True)
        return
    output.print(f"{time.strftime('%H:%M:%S')}  {header_text(frame)}")
    output.table(COLUMNS, frame_cells(frame))
    output.table(_WORKER_COLUMNS, frame.workers)
    output.print()


def _live(viewer: Viewer, interval: float, count: int | None, stdout: TextIO) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=stdout, highlight=False)
    frame = viewer.frame()
    shown = 1
    due = time.monotonic() + interval
    with (
        _cbreak(sys.stdin) as keys,
        Live(
            _renderable(frame, interval), console=console, auto_refresh=False, screen=True
        ) as live,
    ):
        while (count is None or shown < count) and not quit_pressed(keys, due):
            live.update(_renderable(viewer.frame(), interval), refresh=True)
            shown += 1
            due = max(due + interval, time.monotonic())
    return 0


def top(ctx: Context) -> int:
    """The live view until ``q``, Ctrl-C or ``--count`` frames (exit 0)."""
    interval: float = ctx.args.interval
    count: int | None = ctx.args.count
    output = ctx.output
    viewer = Viewer(ctx)
    try:
        if output.rich:
            return _live(viewer, interval, count, output.stdout)
        shown = 0
        due = time.monotonic()
        while True:
            _print_frame(output, viewer.frame())
            shown += 1
            if count is not None and shown >= count:
                return 0
            due = max(due + interval, time.monotonic())  # late: at once, no burst
            time.sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        return 0


TOP = Command(
    "top",
    help="a live view of requests/s, errors, times and connections",
    description="A live view of the proxy, refreshed every --interval seconds: uptime, "
    "workers and state version; requests per second, share of 5xx answers and p50/p99 request "
    "times over the last interval, backend connections and requests in flight, per cluster and "
    "per backend; the workers' states. q or Ctrl-C quits. Without a terminal (or with --json) "
    "each frame is printed after the previous one.",
    examples=[
        "sozu -c config.toml top",
        "sozu -c config.toml top --interval 5",
        "sozu -c config.toml top --count 3 > frames.txt",
        "sozu -c config.toml top --count 10 --json | jq .total.requests_per_second",
    ],
    args=[
        Arg(
            ("--interval",),
            metavar="SECONDS",
            type=seconds,
            default=1.0,
            help="seconds between refreshes (default: 1)",
        ),
        Arg(("--count",), metavar="N", type=positive, help="stop after N frames"),
    ],
    handler=top,
)

COMMANDS = (TOP,)
"""``top``."""
