"""PNG charts of a load-benchmark results file (``benchmarks/results/latest.json``).

Two figures, one panel per load (the loads differ by orders of magnitude, so they do not share
an axis): ``throughput.png`` shows requests per second and ``latency_p99.png`` the 99th
percentile latency. In each panel a bar is a target's median over the rounds and the dots are
the individual rounds, so the spread is visible. Failed and not-applicable cells are labelled
instead of drawn.

When the results hold them, two more: ``memory.png`` (the worker's RSS idle and with the idle
connections, and its RSS over time while streaming, against the baseline and the buffer bound;
from ``benchmarks/memory.py``) and ``reconfig.png`` (per change, the time to the answer and to
being served by every worker; from ``benchmarks/reconfig.py``).

Importable (``render_charts``) and runnable::

    python benchmarks/charts.py [RESULTS_JSON] [--out DIR]

``RESULTS_JSON`` may also be the ``memory.json`` or ``reconfig.json`` of a stand-alone run.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

# pyplot is imported after the backend is chosen.
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

# One stable colour per target, so that figures of different runs read the same way.
TARGET_COLOURS = {
    "direct": "#7f7f7f",
    "sozu": "#d62728",
    "sozu-pure": "#e377c2",
    "sozu-quiet": "#f4a6a6",
    "sozu-observed": "#8c1c1c",
    "haproxy": "#1f77b4",
    "nginx": "#2ca02c",
    "aiohttp": "#ff7f0e",
}
_FALLBACK_COLOUR = "#9467bd"


@dataclass(frozen=True)
class Metric:
    """One quantity to chart: where its median and its per-round values sit in the results."""

    file_name: str
    title: str
    axis_label: str
    summary_key: str
    run_key: str


THROUGHPUT = Metric(
    "throughput.png",
    "Requests per second (bar: median of rounds, dots: rounds)",
    "requests/s",
    "median_requests_per_s",
    "requests_per_s",
)
LATENCY_P99 = Metric(
    "latency_p99.png",
    "p99 latency (bar: median of rounds, dots: rounds; lower is better)",
    "ms",
    "median_p99_ms",
    "latency_p99_ms",
)


def load_results(path: Path) -> dict[str, Any]:
    """Read a results file written by ``benchmarks/load.py``."""
    results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return results


def _round_values(results: Mapping[str, Any], load: str, target: str, key: str) -> list[float]:
    """Per-round values of the runs the medians were taken over (clean runs, else flagged)."""
    runs = [
        run
        for run in results["runs"]
        if run["load"] == load and run["target"] == target and _measured(run) is not None
    ]
    clean = [run for run in runs if run["status"] == "ok"]
    return [float(_measured(run)[key]) for run in clean or runs]


def _measured(run: Mapping[str, Any]) -> Any:
    """What wrk or h2load measured in a run (results files older than h2load have no
    ``h2load`` key)."""
    return run["wrk"] if run["wrk"] is not None else run.get("h2load")


def _targets_of(results: Mapping[str, Any], load: str, targets: Sequence[str]) -> list[str]:
    """The targets with a cell for ``load``, in the run's order: the variants of sozu that
    show the cost of observability run on some loads only and get no slot on the others."""
    present = {summary["target"] for summary in results["summary"] if summary["load"] == load}
    return [target for target in targets if target in present]


def _compact(value: float) -> str:
    """A bar label short enough to sit above a narrow bar: ``18.7k``, ``914``, ``2.35``."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _draw_panel(
    axes: Axes, results: Mapping[str, Any], load: str, targets: Sequence[str], metric: Metric
) -> None:
    summaries = {
        summary["target"]: summary for summary in results["summary"] if summary["load"] == load
    }
    # x in data coordinates, y as a fraction of the panel: labels stay inside whatever the scale.
    along_bottom = axes.get_xaxis_transform()
    heights = []
    for position, target in enumerate(targets):
        summary = summaries.get(target, {})
        median = summary.get(metric.summary_key)
        if median is None:
            label = summary.get("status", "n/a")
            axes.text(
                position,
                0.03,
                label,
                transform=along_bottom,
                ha="center",
                va="bottom",
                rotation=90,
                fontsize=8,
                color="#444444",
            )
            continue
        flagged = summary.get("status") == "flagged"
        axes.bar(
            position,
            median,
            color=TARGET_COLOURS.get(target, _FALLBACK_COLOUR),
            alpha=0.75,
            hatch="//" if flagged else None,
            edgecolor="#333333",
        )
        rounds = _round_values(results, load, target, metric.run_key)
        axes.scatter([position] * len(rounds), rounds, color="black", s=10, zorder=3)
        top = max([median, *rounds])
        heights.append(top)
        label = _compact(median) + (" !" if flagged else "")
        axes.text(position, top, label, ha="center", va="bottom", fontsize=7)
    axes.set_title(load, fontsize=10)
    axes.set_xticks(range(len(targets)), targets, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(metric.axis_label, fontsize=8)
    axes.tick_params(axis="y", labelsize=8)
    # Fixed limits: a target without a bar must still have its slot (and its label) shown.
    axes.set_xlim(-0.6, len(targets) - 0.4)
    axes.set_ylim(0, max(heights, default=0.0) * 1.15 or 1.0)
    axes.grid(axis="y", alpha=0.3)


def render_metric(results: Mapping[str, Any], metric: Metric, out_dir: Path) -> Path:
    """Draw one figure for ``metric``, one panel per load; return the PNG's path."""
    loads = [load["name"] for load in results["loads"]]
    targets = list(results["settings"]["targets"])
    columns = min(4, max(1, len(loads)))
    rows = math.ceil(len(loads) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    for index, load in enumerate(loads):
        measured = _targets_of(results, load, targets)
        _draw_panel(grid[index // columns][index % columns], results, load, measured, metric)
    for index in range(len(loads), rows * columns):
        grid[index // columns][index % columns].set_visible(False)
    settings = results["settings"]
    machine = results["machine"]
    figure.suptitle(
        f"{metric.title}\n{settings['rounds']} round(s) x {settings['duration_s']:g} s, "
        f"{machine['cpu_model']}, {machine['date']}",
        fontsize=10,
    )
    figure.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / metric.file_name
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


_MIB = 1024 * 1024


def render_memory_chart(memory: Mapping[str, Any], out_dir: Path) -> Path | None:
    """Draw ``memory.png`` from a memory result (``benchmarks/memory.py``); ``None`` when it
    holds nothing to draw."""
    idle = memory.get("idle")
    streaming = memory.get("streaming")
    if idle is None and (streaming is None or not streaming.get("samples")):
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(1, 2.2))
    if idle is not None:
        labels = ["idle", f"{idle['open_at_reading']:,} idle\nconnections"]
        values = [idle["idle_rss_bytes"] / _MIB, idle["loaded_rss_bytes"] / _MIB]
        left.bar(labels, values, color=TARGET_COLOURS["sozu"], alpha=0.75, edgecolor="#333333")
        for position, value in enumerate(values):
            left.text(position, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
        left.set_title(
            f"{idle['per_connection_bytes']:,.0f} bytes per idle connection", fontsize=10
        )
        left.set_ylim(0, max(values) * 1.2)
    else:
        left.text(0.5, 0.5, "no idle measure", ha="center", va="center", transform=left.transAxes)
    left.set_ylabel("worker RSS (MiB)", fontsize=8)
    left.grid(axis="y", alpha=0.3)
    if streaming is not None and streaming.get("samples"):
        seconds = [sample[0] for sample in streaming["samples"]]
        rss = [sample[1] / _MIB for sample in streaming["samples"]]
        baseline = streaming["baseline_bytes"] / _MIB
        bound = (streaming["baseline_bytes"] + streaming["bound_bytes"]) / _MIB
        right.plot(seconds, rss, marker=".", color=TARGET_COLOURS["sozu"], label="worker RSS")
        right.axhline(baseline, color="#333333", linestyle="--", linewidth=1, label="baseline")
        right.axhline(bound, color="#7f7f7f", linestyle=":", linewidth=1, label="buffer bound")
        if streaming.get("last_completed_s"):
            right.axvline(
                streaming["last_completed_s"],
                color="#2ca02c",
                linestyle="-.",
                linewidth=1,
                label="last transfer done",
            )
        right.set_ylim(0, max([*rss, bound]) * 1.1)
        right.legend(fontsize=8, loc="lower right")
        right.set_title(
            f"{streaming['streams']} clients x {streaming['body_bytes'] / _MIB:g} MiB streamed "
            f"({streaming['completed']}/{streaming['streams']} completed): max growth "
            f"{streaming['max_growth_bytes'] / _MIB:.1f} MiB",
            fontsize=10,
        )
    else:
        right.text(
            0.5, 0.5, "no streaming measure", ha="center", va="center", transform=right.transAxes
        )
    right.set_xlabel("seconds", fontsize=8)
    right.set_ylabel("worker RSS (MiB)", fontsize=8)
    right.grid(alpha=0.3)
    for axes in (left, right):
        axes.tick_params(labelsize=8)
    figure.tight_layout()
    return _save(figure, out_dir, "memory.png")


def render_reconfig_chart(reconfig: Mapping[str, Any], out_dir: Path) -> Path | None:
    """Draw ``reconfig.png`` from a reconfiguration result (``benchmarks/reconfig.py``);
    ``None`` when it holds no propagation measure."""
    series_list = [series for series in reconfig.get("propagation", []) if series["per_change"]]
    if not series_list:
        return None
    figure, grid = plt.subplots(
        1, len(series_list), figsize=(5.5 * len(series_list), 3.6), squeeze=False
    )
    for axes, series in zip(grid[0], series_list, strict=True):
        changes = series["per_change"]
        positions = range(1, len(changes) + 1)
        answers = [change["answer_s"] * 1000 for change in changes]
        served = [
            change["served_s"] * 1000 if change["served_s"] is not None else float("nan")
            for change in changes
        ]
        axes.plot(positions, served, "o", color=TARGET_COLOURS["sozu"], label="served everywhere")
        axes.plot(positions, answers, "x", color="#1f77b4", label="answer")
        axes.set_title(f"add_{series['kind']}: from sending the change", fontsize=10)
        axes.set_xlabel("change", fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("ms", fontsize=8)
        drawn = [*answers, *(value for value in served if not math.isnan(value))]
        axes.set_ylim(0, max(drawn, default=1.0) * 1.2)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, out_dir, "reconfig.png")


def _save(figure: Figure, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def render_charts(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write ``throughput.png`` and ``latency_p99.png`` into ``out_dir``, and ``memory.png``
    and ``reconfig.png`` when the results hold those parts; return the paths written."""
    paths = [render_metric(results, metric, out_dir) for metric in (THROUGHPUT, LATENCY_P99)]
    for part, render in (("memory", render_memory_chart), ("reconfig", render_reconfig_chart)):
        if results.get(part) is not None:
            path = render(results[part], out_dir)
            if path is not None:
                paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Render the charts of a results file next to it (or into ``--out``)."""
    parser = argparse.ArgumentParser(description="Draw the benchmark charts.")
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out", type=Path, help="directory of the PNGs (default: beside it)")
    arguments = parser.parse_args(argv)
    results = load_results(arguments.results)
    out_dir = arguments.out or arguments.results.parent
    paths: list[Path | None]
    if "runs" in results:  # latest.json of load.py
        paths = list(render_charts(results, out_dir))
    elif "propagation" in results:  # reconfig.json of reconfig.py run alone
        paths = [render_reconfig_chart(results, out_dir)]
    else:  # memory.json of memory.py run alone
        paths = [render_memory_chart(results, out_dir)]
    for path in paths:
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
