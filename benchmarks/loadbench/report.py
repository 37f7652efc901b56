"""From individual wrk and h2load runs to medians, ratios to HAProxy, tables and the results file.

Every (round, load, target) slot of a benchmark has exactly one ``RunRecord``. A run is
``ok`` (wrk reported no error), ``flagged`` (wrk counted socket errors or error statuses, or
served nothing), ``failed`` (no wrk report: the target was down or wrk could not run) or
``n/a`` (the load does not apply to the target, e.g. TLS on the naive proxy). The HTTP/2 loads
are run by h2load instead, classified the same way (``loadbench.h2load.classify``): a run in
which no request succeeded, or which did not speak HTTP/2, is ``failed``.

Medians are taken over the ``ok`` runs of a cell. Flagged runs are never mixed in silently:
they are left out when at least one clean run exists, and when none does, the cell shows the
median of the flagged runs and says so. The ratio to HAProxy is computed round by round
(``target / haproxy`` in the same round, which cancels drifts of the machine between rounds)
and its median reported.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadbench.h2load import H2loadResult, classify
from loadbench.targets import Readiness
from loadbench.wrk import WrkResult

RESULTS_BEGIN = "<!-- results:begin -->"
RESULTS_END = "<!-- results:end -->"

# The reference proxy every target is compared with.
REFERENCE_TARGET = "haproxy"

RUN_STATUSES = ("ok", "flagged", "failed", "n/a")


@dataclass(frozen=True)
class RunRecord:
    """One slot of the benchmark: a wrk run, or the reason there was none.

    ``detail`` explains a ``failed`` or ``flagged`` run (first line of wrk's output, or why the
    target was skipped). ``result`` is set exactly for ``ok`` and ``flagged`` runs.
    """

    round: int
    load: str
    target: str
    status: str
    result: WrkResult | H2loadResult | None = None
    detail: str = ""

    @classmethod
    def from_wrk(
        cls, round_index: int, load: str, target: str, result: WrkResult | None, output: str
    ) -> RunRecord:
        """Classify a wrk run from its parsed report (``None`` if wrk printed none)."""
        if result is None:
            first_line = output.strip().splitlines()[0] if output.strip() else "no output"
            return cls(round_index, load, target, "failed", None, f"wrk: {first_line}")
        if result.has_errors:
            errors = result.socket_errors
            detail = (
                f"{result.requests} requests, socket errors connect {errors.connect} "
                f"read {errors.read} write {errors.write} timeout {errors.timeout}, "
                f"{result.non_2xx_3xx} error statuses"
            )
            return cls(round_index, load, target, "flagged", result, detail)
        return cls(round_index, load, target, "ok", result)

    @classmethod
    def from_h2load(
        cls,
        round_index: int,
        load: str,
        target: str,
        result: H2loadResult | None,
        output: str,
        protocol: str,
    ) -> RunRecord:
        """Classify an h2load run that asked for ``protocol`` (``h2`` or ``h2c``) from its
        parsed report (``None`` if h2load printed none); a failed run keeps no numbers."""
        if result is None:
            lines = [line for line in output.strip().splitlines() if line.strip()]
            last_line = lines[-1] if lines else "no output"
            return cls(round_index, load, target, "failed", None, f"h2load: {last_line}")
        status, detail = classify(result, protocol)
        return cls(
            round_index, load, target, status, None if status == "failed" else result, detail
        )

    def to_json(self) -> dict[str, object]:
        """The record as plain JSON data (the result flattened into its fields, under the name
        of the tool that measured it: ``wrk`` or ``h2load``; the other is ``None``)."""
        return {
            "round": self.round,
            "load": self.load,
            "target": self.target,
            "status": self.status,
            "detail": self.detail,
            "wrk": asdict(self.result) if isinstance(self.result, WrkResult) else None,
            "h2load": asdict(self.result) if isinstance(self.result, H2loadResult) else None,
        }


@dataclass(frozen=True)
class CellSummary:
    """The medians of one (load, target) cell over the rounds.

    ``status`` is the cell's overall state: ``ok`` when every run was clean, ``flagged`` when
    at least one run had errors, ``failed`` when no run produced a report, ``n/a`` when the load
    does not apply. The median fields are ``None`` when there is nothing to take a median of.
    """

    load: str
    target: str
    status: str
    runs: int
    clean_runs: int
    flagged_runs: int
    median_requests_per_s: float | None
    median_p50_ms: float | None
    median_p99_ms: float | None
    ratios_to_haproxy: list[float] = field(default_factory=list)
    median_ratio_to_haproxy: float | None = None
    note: str = ""


def measured_runs(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The runs a median is taken over: the clean ones, or the flagged ones if none is clean."""
    records = list(records)
    clean = [record for record in records if record.status == "ok"]
    return clean or [record for record in records if record.status == "flagged"]


def median(values: Sequence[float]) -> float | None:
    """The median of ``values``, ``None`` when there are none."""
    return statistics.median(values) if values else None


def per_round_ratios(measured: Iterable[RunRecord], reference: dict[int, RunRecord]) -> list[float]:
    """``run / reference`` in requests per second, for every run whose round has a reference
    run (the runs of the same round were measured side by side, under the same conditions)."""
    ratios = []
    for record in measured:
        base = reference.get(record.round)
        if record.result and base and base.result and base.result.requests_per_s > 0:
            ratios.append(record.result.requests_per_s / base.result.requests_per_s)
    return ratios


def summarise(
    records: Sequence[RunRecord],
    loads: Sequence[str],
    targets: Sequence[str],
    reference_target: str = REFERENCE_TARGET,
) -> list[CellSummary]:
    """One ``CellSummary`` per (load, target), loads outermost, in the given orders; the
    ratios are taken against ``reference_target`` (HAProxy with one thread unless told)."""
    by_cell: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        by_cell.setdefault((record.load, record.target), []).append(record)
    summaries = []
    for load in loads:
        reference = {
            record.round: record
            for record in measured_runs(by_cell.get((load, reference_target), []))
        }
        for target in targets:
            cell = by_cell.get((load, target), [])
            summaries.append(_summarise_cell(load, target, cell, reference))
    return summaries


def _summarise_cell(
    load: str, target: str, cell: Sequence[RunRecord], reference: dict[int, RunRecord]
) -> CellSummary:
    statuses = [record.status for record in cell]
    clean = statuses.count("ok")
    flagged = statuses.count("flagged")
    failed = [record for record in cell if record.status == "failed"]
    measured = measured_runs(cell)
    if cell and all(status == "n/a" for status in statuses):
        status = "n/a"
    elif not measured:
        status = "failed"
    elif flagged:
        status = "flagged"
    else:
        status = "ok"
    ratios = per_round_ratios(measured, reference)
    notes = []
    if status == "failed":
        details = [record.detail for record in cell if record.detail]
        notes.append(details[0] if details else "no run")
    elif failed:
        notes.append(f"{len(failed)} of {len(cell)} runs failed ({failed[0].detail})")
    if flagged and clean:
        notes.append(f"{flagged} of {len(cell)} runs had errors and are left out")
    elif flagged:
        notes.append(f"all {flagged} measured runs had errors: {measured[0].detail}")
    results = [record.result for record in measured if record.result]
    return CellSummary(
        load=load,
        target=target,
        status=status,
        runs=len(cell),
        clean_runs=clean,
        flagged_runs=flagged,
        median_requests_per_s=median([result.requests_per_s for result in results]),
        median_p50_ms=median([result.latency_p50_ms for result in results]),
        median_p99_ms=median([result.latency_p99_ms for result in results]),
        ratios_to_haproxy=ratios,
        median_ratio_to_haproxy=median(ratios),
        note="; ".join(notes),
    )


# --- tables -------------------------------------------------------------------------------

TABLE_HEADER = ("load", "target", "req/s", "vs haproxy", "p50 ms", "p99 ms", "clean runs")


def _rate(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def _milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def table_rows(summaries: Sequence[CellSummary]) -> list[tuple[str, ...]]:
    """The rows of the results table; a flagged cell's rate carries a ``!``."""
    rows: list[tuple[str, ...]] = []
    previous_load = None
    for summary in summaries:
        load = summary.load if summary.load != previous_load else ""
        previous_load = summary.load
        if summary.status in ("failed", "n/a"):
            rows.append((load, summary.target, summary.status, "", "", "", ""))
            continue
        marker = " !" if summary.status == "flagged" else ""
        rows.append(
            (
                load,
                summary.target,
                _rate(summary.median_requests_per_s) + marker,
                _ratio(summary.median_ratio_to_haproxy),
                _milliseconds(summary.median_p50_ms),
                _milliseconds(summary.median_p99_ms),
                f"{summary.clean_runs}/{summary.runs}",
            )
        )
    return rows


def table_header(reference_target: str = REFERENCE_TARGET) -> tuple[str, ...]:
    """The header of a results table whose ratios are taken against ``reference_target``."""
    return tuple(
        f"vs {reference_target}" if name == "vs haproxy" else name for name in TABLE_HEADER
    )


def text_table(summaries: Sequence[CellSummary], reference_target: str = REFERENCE_TARGET) -> str:
    """The results as an aligned plain-text table, for the terminal."""
    rows = [table_header(reference_target), *table_rows(summaries)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_HEADER))]
    numeric = {2, 3, 4, 5, 6}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(
    summaries: Sequence[CellSummary], reference_target: str = REFERENCE_TARGET
) -> str:
    """The results as a GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(table_header(reference_target)) + " |",
        "|" + "|".join([":---", ":---", "---:", "---:", "---:", "---:", "---:"]) + "|",
    ]
    lines.extend(
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
        for row in table_rows(summaries)
    )
    return "\n".join(lines)


def failure_notes(summaries: Sequence[CellSummary], problems: dict[str, Readiness]) -> list[str]:
    """One line per target that failed to start (followed by the first lines it printed, as
    indented lines) and one per cell with a note that is not already explained by that.
    """
    notes = []
    for target, readiness in problems.items():
        notes.append(f"{target}: {readiness.detail}")
        notes.extend(f"    {line}" for line in readiness.output_head)
    for summary in summaries:
        explained = summary.status == "failed" and summary.target in problems
        if summary.note and not explained:
            notes.append(f"{summary.load} / {summary.target}: {summary.note}")
    return notes


# --- results file and documentation --------------------------------------------------------


def write_json(path: Path, payload: dict[str, object]) -> None:
    """Write ``payload`` as indented JSON, atomically (temporary file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def replace_between_markers(document: str, content: str) -> str:
    """Return ``document`` with the text between the results markers replaced by ``content``.

    The markers themselves are kept. Raises ``ValueError`` if they are missing or out of order,
    so that a hand-edited page is never silently truncated.
    """
    begin = document.find(RESULTS_BEGIN)
    end = document.find(RESULTS_END)
    if begin < 0 or end < 0 or end < begin:
        raise ValueError(f"the document lacks {RESULTS_BEGIN} ... {RESULTS_END}")
    head = document[: begin + len(RESULTS_BEGIN)]
    return f"{head}\n{content.strip()}\n{document[end:]}"
