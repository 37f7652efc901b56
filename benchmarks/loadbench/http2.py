"""The HTTP/2 loads of the benchmark: one slot measured with h2load, and their own section of
``docs/benchmarks.md``.

An HTTP/2 slot is measured like a wrk slot (a warm-up run whose numbers are dropped, then one
measured run), with h2load pointed at the target's HTTPS port (``Target.h2_endpoint``). The
results go into the same records, medians and ratios to HAProxy as the HTTP/1.1 loads; the
page shows them in a table of their own, in the ``h2`` region.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadbench.h2load import H2loadInvocation, run_h2load
from loadbench.loads import Load
from loadbench.report import CellSummary, RunRecord, markdown_table
from loadbench.targets import Target

# The generated region of docs/benchmarks.md the HTTP/2 table goes into.
DOCS_REGION = "h2"


def h2load_invocation(target: Target, load: Load, duration_s: int, cpu: int) -> H2loadInvocation:
    """The h2load run of ``load`` against ``target``."""
    url, connect_to = target.h2_endpoint(load)
    return H2loadInvocation(
        url=url,
        connect_to=connect_to,
        connections=load.connections,
        streams=load.streams,
        duration_s=duration_s,
        cpu=cpu,
    )


def measure_h2(
    round_index: int, load: Load, target: Target, warmup_s: int, duration_s: int, cpu: int
) -> RunRecord:
    """One HTTP/2 slot: warm up, then one measured h2load run."""
    run_h2load(h2load_invocation(target, load, warmup_s, cpu))
    invocation = h2load_invocation(target, load, duration_s, cpu)
    result, output = run_h2load(invocation)
    return RunRecord.from_h2load(
        round_index, load.name, target.name, result, output, invocation.protocol
    )


def split_summaries(
    summaries: Sequence[CellSummary], loads: Sequence[Load]
) -> tuple[list[CellSummary], list[CellSummary]]:
    """(the cells of the HTTP/1.1 loads, the cells of the HTTP/2 loads)."""
    http2 = {load.name for load in loads if load.http2}
    return (
        [summary for summary in summaries if summary.load not in http2],
        [summary for summary in summaries if summary.load in http2],
    )


def markdown_section(
    run_description: str, summaries: Sequence[CellSummary], notes: Sequence[str]
) -> str:
    """What goes between the ``h2`` markers of the page: how the run was made, the table of
    the HTTP/2 loads and the notes on its cells."""
    lines = [
        f"_{run_description}_",
        "",
        "Medians over the rounds; _vs haproxy_ is the median of the per-round ratios "
        "(target req/s / HAProxy req/s in the same round); latencies are per request "
        "(stream); `!` marks a cell where h2load counted failed requests, `failed` a cell "
        "where no request succeeded or the connections did not speak HTTP/2 (see the "
        "notes); `n/a`: the target cannot carry the load.",
        "",
        markdown_table(summaries),
    ]
    if notes:
        lines += ["", "Notes:", "", "```text", *notes, "```"]
    return "\n".join(lines)
