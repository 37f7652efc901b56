"""The cost of observability: sōzu with its metrics and logs on, against sōzu with them off.

Three variants of the same daemon are measured side by side in every round: ``sozu-quiet``
(metrics disabled, no access logs), ``sozu`` (metrics recorded, as by default) and
``sozu-observed`` (metrics, statsd export, admin endpoint, JSON access logs). For each load
where ``sozu-quiet`` ran, each other variant gets the median of its per-round ratios
``variant req/s / sozu-quiet req/s`` (as the ratios to HAProxy: same round, then the median),
set against the goal it should meet. A run that selected ``sozu-quiet`` and neither other
variant has no such table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from loadbench.report import RunRecord, measured_runs, median, per_round_ratios

# The variant every ratio is taken against: metrics disabled, no access logs.
QUIET_TARGET = "sozu-quiet"


@dataclass(frozen=True)
class Variant:
    """A configuration of sozu whose cost is measured, and the throughput it should keep."""

    target: str
    observability: str
    goal: float


VARIANTS: tuple[Variant, ...] = (
    Variant("sozu", "metrics on", 0.95),
    Variant("sozu-observed", "metrics, statsd, admin, JSON access logs", 0.85),
)


@dataclass(frozen=True)
class ObservabilityCost:
    """One row: a variant's throughput relative to ``sozu-quiet`` on one load.

    ``status`` is ``ok``; ``flagged`` when a run the ratio uses had errors (on either side);
    ``failed`` when no ratio could be formed, ``note`` then saying why.
    """

    load: str
    target: str
    observability: str
    goal: float
    status: str
    ratios: list[float] = field(default_factory=list)
    median_ratio: float | None = None
    note: str = ""

    @property
    def meets_goal(self) -> bool | None:
        """Whether the median ratio reaches the goal (``None`` without a ratio)."""
        return None if self.median_ratio is None else self.median_ratio >= self.goal


def observability_costs(
    records: Sequence[RunRecord], loads: Sequence[str], targets: Sequence[str]
) -> list[ObservabilityCost]:
    """One row per load on which ``sozu-quiet`` was measured and per other variant among
    ``targets``, loads outermost; empty when the run had not ``sozu-quiet`` and a variant."""
    variants = [variant for variant in VARIANTS if variant.target in targets]
    if QUIET_TARGET not in targets or not variants:
        return []
    by_cell: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        by_cell.setdefault((record.load, record.target), []).append(record)
    costs = []
    for load in loads:
        if (load, QUIET_TARGET) not in by_cell:
            continue  # the variants were not measured on this load
        quiet = measured_runs(by_cell[(load, QUIET_TARGET)])
        for variant in variants:
            cell = by_cell.get((load, variant.target), [])
            costs.append(_cost(load, variant, measured_runs(cell), quiet, cell))
    return costs


def _cost(
    load: str,
    variant: Variant,
    measured: Sequence[RunRecord],
    quiet: Sequence[RunRecord],
    cell: Sequence[RunRecord],
) -> ObservabilityCost:
    reference = {record.round: record for record in quiet}
    ratios = per_round_ratios(measured, reference)
    used = [record for record in measured if record.round in reference]
    used += [reference[record.round] for record in used]
    if ratios:
        flagged = any(record.status == "flagged" for record in used)
        status, note = ("flagged", "runs with errors used") if flagged else ("ok", "")
    else:
        status, note = "failed", _why_no_ratio(variant.target, cell, quiet, measured)
    return ObservabilityCost(
        load=load,
        target=variant.target,
        observability=variant.observability,
        goal=variant.goal,
        status=status,
        ratios=ratios,
        median_ratio=median(ratios),
        note=note,
    )


def _why_no_ratio(
    target: str,
    cell: Sequence[RunRecord],
    quiet: Sequence[RunRecord],
    measured: Sequence[RunRecord],
) -> str:
    if not measured:
        details = [record.detail for record in cell if record.detail]
        return details[0] if details else "no run"
    if not quiet:
        return f"{QUIET_TARGET}: no run measured"
    return f"{target} and {QUIET_TARGET} were never measured in the same round"


# --- tables -------------------------------------------------------------------------------

TITLE = "Cost of observability"
EXPLANATION = (
    f"Requests/s of each variant divided by {QUIET_TARGET}'s (metrics disabled, no access "
    "logs) in the same round, median over the rounds; the goal is the least it should keep."
)
HEADER = ("load", "target", "observability", f"vs {QUIET_TARGET}", "goal", "met")


def cost_rows(costs: Sequence[ObservabilityCost]) -> list[tuple[str, ...]]:
    """The rows of the table; a ratio that uses runs with errors carries a ``!``."""
    rows: list[tuple[str, ...]] = []
    previous_load = None
    for cost in costs:
        load = cost.load if cost.load != previous_load else ""
        previous_load = cost.load
        if cost.median_ratio is None:
            ratio = cost.status
        else:
            ratio = f"{cost.median_ratio:.2f}" + (" !" if cost.status == "flagged" else "")
        met = {True: "yes", False: "no", None: "-"}[cost.meets_goal]
        rows.append((load, cost.target, cost.observability, ratio, f">= {cost.goal:.2f}", met))
    return rows


def cost_notes(costs: Sequence[ObservabilityCost]) -> list[str]:
    """One line per row with something to explain."""
    return [f"{cost.load} / {cost.target}: {cost.note}" for cost in costs if cost.note]


def cost_text_table(costs: Sequence[ObservabilityCost]) -> str:
    """The table for the terminal, its title and explanation first, its notes after."""
    rows = [HEADER, *cost_rows(costs)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]
    lines = [f"{TITLE}: {EXPLANATION}"]
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if column in (3, 4) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.extend(f"  {note}" for note in cost_notes(costs))
    return "\n".join(lines)


def cost_markdown(costs: Sequence[ObservabilityCost]) -> str:
    """The table for the documentation page, with its title, explanation and notes."""
    lines = [
        f"**{TITLE}.** {EXPLANATION}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join([":---", ":---", ":---", "---:", "---:", ":---"]) + "|",
    ]
    lines.extend(
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
        for row in cost_rows(costs)
    )
    notes = cost_notes(costs)
    if notes:
        lines += ["", "```text", *notes, "```"]
    return "\n".join(lines)


def costs_to_json(costs: Sequence[ObservabilityCost]) -> dict[str, object]:
    """The rows as the results file holds them, with the reference they are taken against."""
    return {
        "reference": QUIET_TARGET,
        "costs": [
            {
                "load": cost.load,
                "target": cost.target,
                "observability": cost.observability,
                "goal": cost.goal,
                "status": cost.status,
                "ratios": cost.ratios,
                "median_ratio": cost.median_ratio,
                "meets_goal": cost.meets_goal,
                "note": cost.note,
            }
            for cost in costs
        ],
    }
