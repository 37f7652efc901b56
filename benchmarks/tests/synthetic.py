"""A run of wrk as the report would have recorded it, for the tests of the tables."""

from __future__ import annotations

from loadbench.report import RunRecord
from loadbench.wrk import SocketErrors, WrkResult


def wrk_run(
    round_index: int,
    target: str,
    requests_per_s: float,
    load_name: str = "small-50",
    errors: int = 0,
    *,
    p50_ms: float = 1.0,
    p99_ms: float = 4.0,
) -> RunRecord:
    """One clean (or, with ``errors``, erroneous) run of ``target`` on ``load_name``."""
    result = WrkResult(
        requests=1000,
        duration_s=5.0,
        requests_per_s=requests_per_s,
        transfer_bytes_per_s=0,
        latency_avg_ms=1.0,
        latency_max_ms=9.0,
        latency_p50_ms=p50_ms,
        latency_p75_ms=2.0,
        latency_p90_ms=3.0,
        latency_p99_ms=p99_ms,
        socket_errors=SocketErrors(read=errors),
        non_2xx_3xx=0,
    )
    return RunRecord.from_wrk(round_index, load_name, target, result, "")
