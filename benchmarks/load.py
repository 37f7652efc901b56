"""Load benchmark: sōzu for Python against HAProxy, nginx and a naive aiohttp proxy.

Everything runs on loopback. An nginx origin and wrk share the first CPU; each proxy runs on
the second, one at a time under load, all of them forwarding ``Host: bench.local`` requests to
the origin. For every round, every load and every target (in a fixed order, A B C ... A B C ...)
wrk runs once for ``--duration`` seconds after a one-second warm-up whose numbers are dropped.
The report gives, per load and target, the median requests/s, p50 and p99 latency over the
rounds and the median of the per-round ratios to HAProxy; it is printed, written to
``<out>/latest.json`` with charts beside it, and copied into ``docs/benchmarks.md``.

The HTTP/2 loads (``h2-*``) are measured the same way with h2load instead of wrk
(``loadbench/http2.py``), and get a table of their own on the page.

Two more variants of sōzu show the cost of observability: ``sozu-quiet`` (metrics disabled, no
access logs) and ``sozu-observed`` (metrics, statsd export, admin endpoint, JSON access logs).
They run on ``--observability-loads`` only (by default ``small-50``, or every load given with
``--loads``), and the report adds a table of ``sozu`` and ``sozu-observed`` against
``sozu-quiet`` (``loadbench/observability.py``).

Two multi-core targets, ``sozu-2w`` (two workers) and ``haproxy-2t`` (two threads), run on both
CPUs, shared with wrk and the origin, on ``--multicore-loads`` only (by default ``small-50`` and
``newconn``, or every load given with ``--loads``); they have a table of their own, against
``haproxy-2t`` (``loadbench/multicore.py``).

After the load rounds, with every server stopped, it runs the memory benchmark
(``benchmarks/memory.py``: the worker's RSS idle, per idle connection and while streaming) and
the reconfiguration benchmark (``benchmarks/reconfig.py``: change rate, propagation to the
workers, bulk apply of 10,000 clusters), unless skipped; their results go into the same
report, results file, charts and page.

Usage::

    python benchmarks/load.py [--rounds N] [--duration S] [--targets a,b,..] [--loads x,y,..]
                              [--observability-loads x,y,..] [--multicore-loads x,y,..]
                              [--quick] [--out DIR]
                              [--no-docs] [--skip-memory] [--skip-reconfig]

See ``docs/benchmarks.md`` for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import memory
import reconfig
from loadbench import http2
from loadbench.certificates import write_self_signed
from loadbench.loads import HOSTNAME, LOADS, LOADS_BY_NAME, Load
from loadbench.machine import choose_cpus, describe_machine, ensure_tools
from loadbench.multicore import DOCS_REGION as MULTICORE_REGION
from loadbench.multicore import MULTICORE_REFERENCE, multicore_summaries, multicore_text
from loadbench.multicore import markdown_section as multicore_section
from loadbench.observability import (
    ObservabilityCost,
    cost_markdown,
    cost_text_table,
    costs_to_json,
    observability_costs,
)
from loadbench.processes import catch_stop_signals, ignore_stop_signals, restore_signals
from loadbench.report import (
    CellSummary,
    RunRecord,
    failure_notes,
    markdown_table,
    replace_between_markers,
    summarise,
    text_table,
    write_json,
)
from loadbench.targets import (
    LOOPBACK,
    TARGET_NAMES,
    TARGETS_BY_NAME,
    Origin,
    Readiness,
    Server,
    Target,
    build_servers,
)
from loadbench.wrk import WrkInvocation, WrkResult, run_wrk

BENCHMARKS_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS_DIRECTORY.parent
DOCS_PAGE = REPOSITORY / "docs" / "benchmarks.md"
DEFAULT_OUT = BENCHMARKS_DIRECTORY / "results"

DEFAULT_ROUNDS = 3
# wrk takes whole seconds only (``2s``; ``1.5s`` is rejected), hence the integers.
DEFAULT_DURATION_S = 5
QUICK_ROUNDS = 1
QUICK_DURATION_S = 2
WARMUP_S = 1
# What a run costs beyond wrk's own duration (process start, connection set-up, teardown).
RUN_OVERHEAD_S = 0.1
# The budget of a default run; the estimate printed at start is checked against it.
DEFAULT_BUDGET_S = 17.0 * 60.0
# The loads the variants of sozu that show the cost of observability run on, unless told: the
# full run would exceed its budget with them on every load.
DEFAULT_OBSERVABILITY_LOADS = ("small-50",)
# The loads the multi-core targets (sozu-2w, haproxy-2t) run on, unless told.
DEFAULT_MULTICORE_LOADS = ("small-50", "newconn")
# The budget with the memory and reconfiguration benchmarks: ``nox -s bench`` (this and
# config_bench.py and cli_start.py) must stay under 23 minutes.
TOTAL_BUDGET_S = 20 * 60.0


@dataclass(frozen=True)
class Settings:
    """What one invocation of the benchmark measures and where it writes."""

    rounds: int
    duration_s: int
    warmup_s: int
    targets: tuple[str, ...]
    loads: tuple[Load, ...]
    quick: bool
    out_dir: Path
    docs_page: Path | None
    # The loads ``sozu-quiet`` and ``sozu-observed`` are measured on.
    observability_loads: tuple[str, ...] = DEFAULT_OBSERVABILITY_LOADS
    # The loads ``sozu-2w`` and ``haproxy-2t`` are measured on.
    multicore_loads: tuple[str, ...] = DEFAULT_MULTICORE_LOADS
    # The benchmarks run after the load rounds; ``None`` when skipped.
    memory: memory.MemorySettings | None = None
    reconfig: reconfig.ReconfigSettings | None = None

    def to_json(self) -> dict[str, object]:
        """The settings as recorded in the results file."""
        return {
            "rounds": self.rounds,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "targets": list(self.targets),
            "loads": [load.name for load in self.loads],
            "observability_loads": list(self.observability_loads),
            "multicore_loads": list(self.multicore_loads),
            "quick": self.quick,
            "memory": self.memory is not None,
            "reconfig": self.reconfig is not None,
        }


def _names(text: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    """Parse a comma-separated selection, keeping the canonical order of ``known``."""
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    unknown = chosen - set(known)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {sorted(unknown)}; choose among {', '.join(known)}"
        )
    return tuple(name for name in known if name in chosen)


def parse_arguments(argv: Sequence[str] | None = None) -> Settings:
    """Read the command line; ``--quick`` sets 1 round of 2 s unless those are given."""
    parser = argparse.ArgumentParser(
        description="Load benchmark of sozu against HAProxy, nginx and a naive aiohttp proxy.",
    )
    parser.add_argument("--rounds", type=int, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--duration",
        type=int,
        help=f"whole seconds per measured run (default {DEFAULT_DURATION_S})",
    )
    parser.add_argument(
        "--targets",
        type=lambda text: _names(text, TARGET_NAMES, "targets"),
        default=TARGET_NAMES,
        help=f"comma-separated targets (default all: {','.join(TARGET_NAMES)})",
    )
    load_names = [load.name for load in LOADS]
    parser.add_argument(
        "--loads",
        type=lambda text: _names(text, load_names, "loads"),
        help=f"comma-separated loads (default all: {','.join(load_names)})",
    )
    parser.add_argument(
        "--observability-loads",
        type=lambda text: _names(text, load_names, "loads"),
        help="comma-separated loads sozu-quiet and sozu-observed run on (default "
        f"{','.join(DEFAULT_OBSERVABILITY_LOADS)}, or every load given with --loads)",
    )
    parser.add_argument(
        "--multicore-loads",
        type=lambda text: _names(text, load_names, "loads"),
        help="comma-separated loads sozu-2w and haproxy-2t run on (default "
        f"{','.join(DEFAULT_MULTICORE_LOADS)}, or every load given with --loads)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 2 s per run (a smoke test, not a result)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--no-docs", action="store_true", help="do not rewrite the table in docs/benchmarks.md"
    )
    parser.add_argument(
        "--skip-memory", action="store_true", help="do not run the memory benchmark afterwards"
    )
    parser.add_argument(
        "--skip-reconfig",
        action="store_true",
        help="do not run the reconfiguration benchmark afterwards",
    )
    arguments = parser.parse_args(argv)
    rounds = arguments.rounds or (QUICK_ROUNDS if arguments.quick else DEFAULT_ROUNDS)
    duration = arguments.duration or (QUICK_DURATION_S if arguments.quick else DEFAULT_DURATION_S)
    if rounds < 1 or duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    loads = arguments.loads or tuple(load_names)
    observability_loads = arguments.observability_loads or (
        arguments.loads or DEFAULT_OBSERVABILITY_LOADS
    )
    multicore_loads = arguments.multicore_loads or (arguments.loads or DEFAULT_MULTICORE_LOADS)
    for kind, chosen in (
        ("observability_variant", observability_loads),
        ("multi_core", multicore_loads),
    ):
        variants = [name for name in arguments.targets if getattr(TARGETS_BY_NAME[name], kind)]
        if variants and not set(chosen) & set(loads):
            parser.error(
                f"{', '.join(variants)} run on {','.join(chosen)} only, "
                "which --loads leaves out: they would never be measured"
            )
    return Settings(
        rounds=rounds,
        duration_s=duration,
        warmup_s=WARMUP_S,
        targets=arguments.targets,
        loads=tuple(LOADS_BY_NAME[name] for name in loads),
        observability_loads=observability_loads,
        multicore_loads=multicore_loads,
        quick=arguments.quick,
        out_dir=arguments.out.resolve(),
        docs_page=None if arguments.no_docs else DOCS_PAGE,
        memory=None
        if arguments.skip_memory
        else (memory.QUICK_MEMORY if arguments.quick else memory.MemorySettings()),
        reconfig=None
        if arguments.skip_reconfig
        else (reconfig.QUICK_RECONFIG if arguments.quick else reconfig.ReconfigSettings()),
    )


# --- the benchmark proper -------------------------------------------------------------------


def not_applicable(load: Load, target: Target | type[Target]) -> str | None:
    """Why ``load`` is not measured on ``target`` (``None``: it is). TLS loads need a TLS
    listener; the load with an h2c backend needs a proxy that speaks h2c to backends."""
    if load.tls and not target.serves_tls:
        return "no TLS listener"
    if load.backend == "h2c" and not target.speaks_h2c:
        return "speaks no h2c to backends"
    return None


def load_applies(load: Load, target: Target | type[Target]) -> bool:
    """Whether ``load`` is measured on ``target`` (see ``not_applicable``)."""
    return not_applicable(load, target) is None


def in_plan(settings: Settings, load: Load, target: Target | type[Target]) -> bool:
    """Whether the (load, target) slot exists at all: the variants of sozu that show the cost
    of observability run on ``settings.observability_loads`` only, the multi-core targets on
    ``settings.multicore_loads`` only. A slot that exists but whose load does not apply (see
    ``load_applies``) is reported ``n/a``; one that does not exist is not reported."""
    if target.observability_variant:
        return load.name in settings.observability_loads
    if target.multi_core:
        return load.name in settings.multicore_loads
    return True


def estimated_seconds(settings: Settings) -> float:
    """How long the measuring takes if every target starts (start-up not included)."""
    runs = sum(
        in_plan(settings, load, TARGETS_BY_NAME[name]) and load_applies(load, TARGETS_BY_NAME[name])
        for load in settings.loads
        for name in settings.targets
    )
    return settings.rounds * runs * (settings.warmup_s + settings.duration_s + RUN_OVERHEAD_S)


def estimated_extra_seconds(settings: Settings) -> float:
    """How long the memory and reconfiguration benchmarks take (0 when both are skipped)."""
    seconds = 0.0
    if settings.memory is not None:
        seconds += memory.estimated_memory_seconds(settings.memory)
    if settings.reconfig is not None:
        seconds += reconfig.estimated_reconfig_seconds(settings.reconfig)
    return seconds


class Benchmark:
    """The measuring loop over rounds, loads and targets, with the targets already running.

    ``readiness`` is what starting each target gave; a target that did not start, or whose
    process died since, gets ``failed`` records instead of runs.
    """

    def __init__(
        self,
        settings: Settings,
        targets: Sequence[Target],
        readiness: dict[str, Readiness],
        client_cpu: int,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.readiness = readiness
        self.client_cpu = client_cpu
        # Targets found dead during the benchmark (their readiness already says so).
        self.exited: set[str] = set()

    def run(self) -> list[RunRecord]:
        """Every (round, load, target) slot, in benchmark order, one record each."""
        records = []
        for round_index in range(self.settings.rounds):
            for load in self.settings.loads:
                for target in self.targets:
                    if not in_plan(self.settings, load, target):
                        continue
                    record = self.measure(round_index, load, target)
                    records.append(record)
                    self._print_progress(record)
        return records

    def measure(self, round_index: int, load: Load, target: Target) -> RunRecord:
        """One slot: warm up, then one measured wrk run, unless the target cannot take it."""
        skipped = self._skipped(round_index, load, target)
        if skipped is not None:
            return skipped
        if load.http2:
            settings = self.settings
            return http2.measure_h2(
                round_index, load, target, settings.warmup_s, settings.duration_s, self.client_cpu
            )
        self._wrk(target, load, self.settings.warmup_s)
        result, output = self._wrk(target, load, self.settings.duration_s)
        return RunRecord.from_wrk(round_index, load.name, target.name, result, output)

    def _skipped(self, round_index: int, load: Load, target: Target) -> RunRecord | None:
        """The record of a slot that cannot be measured, or ``None`` if it can."""
        readiness = self.readiness[target.name]

        def record(status: str, detail: str) -> RunRecord:
            return RunRecord(round_index, load.name, target.name, status, None, detail)

        reason = not_applicable(load, target)
        if reason is not None:
            return record("n/a", reason)
        if not readiness.available:
            return record("failed", f"did not start: {readiness.detail}")
        code = target.exit_code()
        if code is not None:
            if target.name not in self.exited:
                # First time it is seen dead: say so in the report, with its output.
                self.exited.add(target.name)
                death = f"exited with status {code} during the benchmark"
                readiness.detail = f"{readiness.detail}; {death}" if readiness.detail else death
                readiness.output_head = target.output_head()
            return record("failed", f"process exited with status {code}")
        if load.tls and readiness.tls_available is False:
            return record("failed", readiness.detail)
        return None

    def _wrk(self, target: Target, load: Load, duration_s: int) -> tuple[WrkResult | None, str]:
        invocation = WrkInvocation(
            url=target.url(load),
            connections=load.connections,
            duration_s=duration_s,
            headers=load.headers(),
            cpu=self.client_cpu,
        )
        return run_wrk(invocation)

    def _print_progress(self, record: RunRecord) -> None:
        position = f"[round {record.round + 1}/{self.settings.rounds}]"
        if record.result is None:
            outcome = f"{record.status}: {record.detail}" if record.detail else record.status
        else:
            outcome = (
                f"{record.result.requests_per_s:>10,.0f} req/s  "
                f"p50 {record.result.latency_p50_ms:7.2f} ms  "
                f"p99 {record.result.latency_p99_ms:7.2f} ms"
            )
            if record.status == "flagged":
                outcome += f"  FLAGGED ({record.detail})"
        print(f"{position} {record.load:<14} {record.target:<13} {outcome}", flush=True)


def start_servers(
    origin: Origin, targets: Sequence[Target], started: list[Server]
) -> dict[str, Readiness]:
    """Start the origin, then every target; return how each target came up.

    Every started server is appended to ``started`` at once, so the caller stops it whatever
    happens next. The origin failing ends the benchmark (``SystemExit``): nothing can be
    measured without it.
    """
    # Recorded before starting: stopping a server that never started is harmless.
    started.append(origin)
    origin.start()
    origin_readiness = origin.wait_until_ready()
    if not origin_readiness.available or not origin_readiness.tls_available:
        output = "\n".join(f"    {line}" for line in origin_readiness.output_head)
        raise SystemExit(f"the origin nginx did not start: {origin_readiness.detail}\n{output}")
    # Start them all before waiting: slow starters then overlap.
    for target in targets:
        started.append(target)
        target.start()
    readiness = {}
    for target in targets:
        readiness[target.name] = target.wait_until_ready()
        state = readiness[target.name]
        if not state.available:
            # A hung or half-started server must not take CPU from the others under load.
            target.stop()
            shown = "FAILED: " + state.detail
        elif state.tls_available is False:
            shown = "up, but " + state.detail
        else:
            shown = f"up on http {target.http_port}" + (
                f", https {target.https_port}" if state.tls_available else ""
            )
        print(f"  {target.name:<13} {shown}", flush=True)
    return readiness


# --- memory and reconfiguration --------------------------------------------------------------

# A benchmark run after the load rounds: its name, how to run it (giving its JSON result) and
# how to report that result as lines of text.
ExtraPart = tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], list[str]]]


def run_extra_benchmarks(settings: Settings, proxy_cpu: int) -> tuple[dict[str, Any], bool]:
    """Run the memory and reconfiguration benchmarks the settings ask for, once the load
    servers are stopped; return their results as JSON data by name (``memory``,
    ``reconfig``) and whether the run was interrupted.

    A part that crashes is recorded with its error rather than losing the load results; an
    interruption (Ctrl-C, SIGTERM) stops the part in progress, whose daemons are stopped on the
    way out, and skips the rest.
    """
    results: dict[str, Any] = {}
    workspace = Path(tempfile.mkdtemp(prefix="sozu-bench-extras-"))
    parts: list[ExtraPart] = []
    if settings.memory is not None:
        memory_settings = settings.memory
        parts.append(
            (
                "memory",
                lambda: memory.run_memory_benchmark(
                    memory_settings, workspace / "memory", proxy_cpu
                ).to_json(),
                memory.report_lines,
            )
        )
    if settings.reconfig is not None:
        reconfig_settings = settings.reconfig
        parts.append(
            (
                "reconfig",
                lambda: reconfig.run_reconfig_benchmark(
                    reconfig_settings, workspace / "reconfig"
                ).to_json(),
                reconfig.report_lines,
            )
        )
    try:
        for name, run, report in parts:
            print(f"\n{name}:", flush=True)
            try:
                results[name] = run()
            except KeyboardInterrupt:
                print(f"\ninterrupted during {name}: the rest is skipped", file=sys.stderr)
                return results, True
            except Exception as error:  # a bug in one part must not lose the load results
                results[name] = {"settings": {}, "error": f"{type(error).__name__}: {error}"}
            print("\n".join(f"  {line}" for line in report(results[name])), flush=True)
    finally:
        if not os.environ.get("SOZU_BENCH_KEEP"):
            shutil.rmtree(workspace, ignore_errors=True)
    return results, False


# --- reporting ----------------------------------------------------------------------------


def summarise_run(
    settings: Settings, records: Sequence[RunRecord]
) -> tuple[list[CellSummary], list[ObservabilityCost]]:
    """The cells of the slots that exist (see ``in_plan``), and the cost of observability
    (empty unless ``sozu-quiet`` and another variant of sozu ran)."""
    loads = [load.name for load in settings.loads]
    summaries = [
        summary
        for summary in summarise(records, loads, settings.targets)
        if in_plan(settings, LOADS_BY_NAME[summary.load], TARGETS_BY_NAME[summary.target])
    ]
    return summaries, observability_costs(records, loads, settings.targets)


def results_payload(
    settings: Settings,
    machine: dict[str, object],
    targets: Sequence[Target],
    readiness: dict[str, Readiness],
    records: Sequence[RunRecord],
    summaries: Sequence[CellSummary],
    elapsed_s: float,
    extras: dict[str, Any] | None = None,
    costs: Sequence[ObservabilityCost] = (),
    multicore: Sequence[CellSummary] = (),
) -> dict[str, Any]:
    """Everything the run produced, as the JSON document ``latest.json`` holds.

    ``extras`` are the results of the memory and reconfiguration benchmarks by name
    (``memory``, ``reconfig``); a part that was skipped is absent. ``costs``, when there are
    any, go under ``observability``; the cells of the multi-core table (``multicore``), when
    there are any, under ``multicore``.
    """
    payload: dict[str, Any] = {
        "schema": 1,
        "settings": settings.to_json(),
        "machine": machine,
        "elapsed_s": round(elapsed_s, 1),
        "loads": [
            {
                "name": load.name,
                "path": load.path,
                "connections": load.connections,
                "tls": load.tls,
                "keep_alive": load.keep_alive,
                "description": load.description,
            }
            for load in settings.loads
        ],
        "targets": [
            {
                "name": target.name,
                "description": target.description,
                "available": readiness[target.name].available,
                "tls_available": readiness[target.name].tls_available,
                "detail": readiness[target.name].detail,
                "output_head": readiness[target.name].output_head,
            }
            for target in targets
        ],
        "runs": [record.to_json() for record in records],
        "summary": [asdict(summary) for summary in summaries],
    }
    if costs:
        payload["observability"] = costs_to_json(costs)
    if multicore:
        payload["multicore"] = {
            "reference": MULTICORE_REFERENCE,
            "summary": [asdict(summary) for summary in multicore],
        }
    payload.update(extras or {})
    return payload


def one_core(summaries: Sequence[CellSummary]) -> list[CellSummary]:
    """The cells of the main table: the multi-core targets have a table of their own."""
    return [summary for summary in summaries if not TARGETS_BY_NAME[summary.target].multi_core]


def target_problems(readiness: dict[str, Readiness]) -> dict[str, Readiness]:
    """The targets worth a note: failed, half-failed (no TLS) or died during the run."""
    return {name: state for name, state in readiness.items() if state.detail}


def describe_run(settings: Settings, machine: dict[str, Any]) -> str:
    """One paragraph saying when, where and how the numbers were measured."""
    tools = machine["tools"]
    kind = "quick smoke run (not a result)" if settings.quick else "full run"
    return (
        f"{kind}: {settings.rounds} round(s) x {settings.duration_s:g} s per run after a "
        f"{settings.warmup_s:g} s warm-up; {machine['date']}; {machine['cpu_model']}, "
        f"{machine['cpu_count']} CPUs; {machine['kernel']}; Python {machine['python']}; "
        f"{tools['wrk']}; {tools.get('h2load') or 'no h2load'}; {tools['nginx']}; "
        f"{tools['haproxy']}; sozu's hot path {machine.get('sozu_hot_path', 'unknown')}."
    )


def markdown_report(
    settings: Settings,
    machine: dict[str, Any],
    summaries: Sequence[CellSummary],
    readiness: dict[str, Readiness],
    costs: Sequence[ObservabilityCost] = (),
) -> str:
    """The text that goes between the results markers of ``docs/benchmarks.md`` (the cells of
    the multi-core targets have a region of their own, see ``rewrite_tables``)."""
    lines = [
        f"_{describe_run(settings, machine)}_",
        "",
        "Medians over the rounds; _vs haproxy_ is the median of the per-round ratios "
        "(target req/s / HAProxy req/s in the same round); `!` marks a cell where wrk "
        "counted errors (see the notes).",
        "",
        markdown_table(one_core(summaries)),
    ]
    if costs:
        lines += ["", cost_markdown(costs)]
    notes = failure_notes(summaries, target_problems(readiness))
    if notes:
        lines += ["", "Notes:", "", "```text", *notes, "```"]
    if settings.docs_page is not None:
        charts_dir = Path(os.path.relpath(settings.out_dir, settings.docs_page.parent))
        lines += [
            "",
            f"![requests per second]({(charts_dir / 'throughput.png').as_posix()})",
            f"![p99 latency]({(charts_dir / 'latency_p99.png').as_posix()})",
        ]
    return "\n".join(lines)


def write_reports(
    settings: Settings,
    payload: dict[str, Any],
    summaries: Sequence[CellSummary],
    readiness: dict[str, Readiness],
    costs: Sequence[ObservabilityCost] = (),
    multicore: Sequence[CellSummary] = (),
) -> None:
    """Print the tables, write ``latest.json`` (and a dated copy), the charts and the docs
    tables."""
    print()
    print(describe_run(settings, payload["machine"]))
    print(text_table(one_core(summaries)))
    notes = failure_notes(summaries, target_problems(readiness))
    if notes:
        print("\nNotes:")
        print("\n".join(f"  {note}" for note in notes))
    if multicore:
        print(f"\n{multicore_text(multicore)}")
    if costs:
        print(f"\n{cost_text_table(costs)}")
    for name, title, part_lines in (
        ("memory", "Memory (one worker)", memory.report_lines),
        ("reconfig", "Reconfiguration (two workers)", reconfig.report_lines),
    ):
        if name in payload:
            print(f"\n{title}:")
            print("\n".join(f"  {line}" for line in part_lines(payload[name])))
    latest = settings.out_dir / "latest.json"
    write_json(latest, payload)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json(settings.out_dir / "runs" / f"{stamp}.json", payload)
    import charts  # matplotlib is only needed once there is something to draw

    chart_paths = charts.render_charts(payload, settings.out_dir)
    print(f"\nresults: {latest}")
    print("charts: " + ", ".join(str(path) for path in chart_paths))
    if settings.docs_page is not None:
        if settings.docs_page.exists():
            rewrite_tables(settings, payload["machine"], summaries, readiness, costs, multicore)
            rewrite_extra_sections(settings, payload, chart_paths)
        else:
            print(f"warning: {settings.docs_page} not found; table not written", file=sys.stderr)


def rewrite_tables(
    settings: Settings,
    machine: dict[str, Any],
    summaries: Sequence[CellSummary],
    readiness: dict[str, Readiness],
    costs: Sequence[ObservabilityCost],
    multicore: Sequence[CellSummary] = (),
) -> None:
    """Rewrite the results table of the HTTP/1.1 loads, the one of the HTTP/2 loads and the
    multi-core one, each only when some of its cells were measured."""
    assert settings.docs_page is not None
    http1_cells, http2_cells = http2.split_summaries(one_core(summaries), settings.loads)
    if http1_cells:
        page = settings.docs_page.read_text(encoding="utf-8")
        report = markdown_report(settings, machine, http1_cells, readiness, costs)
        settings.docs_page.write_text(replace_between_markers(page, report), encoding="utf-8")
        print(f"table rewritten in {settings.docs_page}")
    if http2_cells:
        notes = failure_notes(http2_cells, target_problems(readiness))
        section = http2.markdown_section(describe_run(settings, machine), http2_cells, notes)
        if memory.rewrite_docs_region(settings.docs_page, http2.DOCS_REGION, section):
            print(f"HTTP/2 table rewritten in {settings.docs_page}")
    if multicore:
        notes = failure_notes(multicore, target_problems(readiness))
        section = multicore_section(describe_run(settings, machine), multicore, notes)
        if memory.rewrite_docs_region(settings.docs_page, MULTICORE_REGION, section):
            print(f"multi-core table rewritten in {settings.docs_page}")


def rewrite_extra_sections(
    settings: Settings, payload: dict[str, Any], chart_paths: Sequence[Path]
) -> None:
    """Rewrite the memory and reconfiguration sections of the page for the parts that ran."""
    assert settings.docs_page is not None
    charts_by_name = {path.name: path for path in chart_paths}
    for name, chart_name, section in (
        ("memory", "memory.png", memory.markdown_section),
        ("reconfig", "reconfig.png", reconfig.markdown_section),
    ):
        if name not in payload:
            continue
        chart = charts_by_name.get(chart_name)
        relative = os.path.relpath(chart, settings.docs_page.parent) if chart else None
        if memory.rewrite_docs_region(settings.docs_page, name, section(payload[name], relative)):
            print(f"{name} section rewritten in {settings.docs_page}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    settings = parse_arguments(argv)
    ensure_tools()
    client_cpu, proxy_cpu = choose_cpus()
    estimate = estimated_seconds(settings)
    extra_estimate = estimated_extra_seconds(settings)
    print(
        f"{settings.rounds} round(s) x {len(settings.loads)} load(s) x "
        f"{len(settings.targets)} target(s), {settings.duration_s:g} s per run: "
        f"about {estimate / 60:.1f} min of measuring "
        f"(wrk and origin on CPU {client_cpu}, proxies on CPU {proxy_cpu})"
        + (
            f", then about {extra_estimate / 60:.1f} min of memory and reconfiguration"
            if extra_estimate
            else ""
        ),
        flush=True,
    )
    if estimate > DEFAULT_BUDGET_S:
        print(f"warning: longer than the {DEFAULT_BUDGET_S / 60:g} min budget", file=sys.stderr)
    elif estimate + extra_estimate > TOTAL_BUDGET_S:
        print(f"warning: longer than the {TOTAL_BUDGET_S / 60:g} min budget", file=sys.stderr)
    previous_handlers = catch_stop_signals()
    began = time.monotonic()
    workspace = Path(tempfile.mkdtemp(prefix="sozu-bench-"))
    # Servers started as root drop to ``nobody``, which must reach the files inside.
    workspace.chmod(0o755)
    started: list[Server] = []
    try:
        tls = write_self_signed(workspace / "tls", HOSTNAME, LOOPBACK)
        origin, targets = build_servers(settings.targets, workspace, client_cpu, proxy_cpu, tls)
        readiness = start_servers(origin, targets, started)
        records = Benchmark(settings, targets, readiness, client_cpu).run()
        machine = describe_machine(REPOSITORY)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything, no results written", file=sys.stderr)
        return 130
    finally:
        ignore_stop_signals()
        for server in reversed(started):
            server.stop()
        if not os.environ.get("SOZU_BENCH_KEEP"):
            shutil.rmtree(workspace, ignore_errors=True)
        restore_signals(previous_handlers)
    previous_handlers = catch_stop_signals()
    try:
        extras, interrupted = run_extra_benchmarks(settings, proxy_cpu)
    finally:
        restore_signals(previous_handlers)
    summaries, costs = summarise_run(settings, records)
    multicore = multicore_summaries(
        records, [load.name for load in settings.loads], settings.targets
    )
    payload = results_payload(
        settings,
        machine,
        targets,
        readiness,
        records,
        summaries,
        time.monotonic() - began,
        extras,
        costs,
        multicore,
    )
    write_reports(settings, payload, summaries, readiness, costs, multicore)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
