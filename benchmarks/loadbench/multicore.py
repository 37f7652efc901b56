"""The multi-core comparison: sōzu with two workers against HAProxy with two threads.

``sozu-2w`` (``worker_count = 2``) and ``haproxy-2t`` (``nbthread 2``) run on both CPUs, the
one wrk and the origin use included (see ``loadbench.targets``), on the loads chosen for them
(``--multicore-loads``). Their table sets them next to the one-core ``sozu`` and ``haproxy`` of
the same rounds, every ratio taken against ``haproxy-2t`` round by round, as the main table's
against ``haproxy``.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadbench.report import CellSummary, RunRecord, markdown_table, summarise, text_table
from loadbench.targets import TARGETS_BY_NAME

# The region of docs/benchmarks.md the table goes to (``<!-- multicore:begin -->`` ...).
DOCS_REGION = "multicore"
# The target every ratio of the multi-core table is taken against.
MULTICORE_REFERENCE = "haproxy-2t"
# The targets the table shows, in its order: one core, then both.
MULTICORE_TABLE_TARGETS = ("sozu", "haproxy", "sozu-2w", "haproxy-2t")

TITLE = "Two cores"
EXPLANATION = (
    "`sozu-2w` (two workers) and `haproxy-2t` (two threads) run on both CPUs; on this "
    "two-core machine they share them with the load generator (wrk) and the origin, so "
    "neither gets two whole cores. `sozu` and `haproxy` are the one-core targets of the same "
    f"rounds; _vs {MULTICORE_REFERENCE}_ is the median of the per-round ratios."
)


def multicore_summaries(
    records: Sequence[RunRecord], loads: Sequence[str], targets: Sequence[str]
) -> list[CellSummary]:
    """The cells of the table: for every load a multi-core target ran on, the targets of
    ``MULTICORE_TABLE_TARGETS`` that ran, against ``haproxy-2t``; empty when none ran."""
    ran = {(record.load, record.target) for record in records}
    chosen = [name for name in MULTICORE_TABLE_TARGETS if name in targets]
    multi = [name for name in chosen if TARGETS_BY_NAME[name].multi_core]
    table_loads = [load for load in loads if any((load, name) in ran for name in multi)]
    if not table_loads:
        return []
    return [
        summary
        for summary in summarise(records, table_loads, chosen, MULTICORE_REFERENCE)
        if (summary.load, summary.target) in ran
    ]


def multicore_text(summaries: Sequence[CellSummary]) -> str:
    """The table for the terminal, with its title and explanation."""
    return f"{TITLE}: {EXPLANATION}\n{text_table(summaries, MULTICORE_REFERENCE)}"


def multicore_markdown(summaries: Sequence[CellSummary]) -> str:
    """The table for the documentation page, with its title and explanation."""
    return f"**{TITLE}.** {EXPLANATION}\n\n{markdown_table(summaries, MULTICORE_REFERENCE)}"


def markdown_section(
    run_description: str, summaries: Sequence[CellSummary], notes: Sequence[str]
) -> str:
    """What goes between the ``multicore`` markers of the page: how the run was made, the
    table and the notes on its cells."""
    lines = [f"_{run_description}_", "", multicore_markdown(summaries)]
    if notes:
        lines += ["", "Notes:", "", "```text", *notes, "```"]
    return "\n".join(lines)
