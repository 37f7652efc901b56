"""How a plan and the outcome of a batch look on a terminal or in a pipe.

A plan is shown grouped as it will run (listeners, clusters, certificates, frontends, backends,
activations, removals), one line per :class:`~sozu_config.plan.Change` — ``+`` added, ``-``
removed, ``~`` changed, followed by the fields that change (for an addition: its settings that
are not the defaults, one per line) — and a summary line. A health
check set or removed as a whole reads as its summary (``GET /health every 10s, timeout 5s,
…``), not as its JSON.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from sozu_config import HealthCheck, Plan
from sozu_config.responses import BatchResult

from .health_view import check_summary
from .output import Output

__all__ = ["render_plan", "render_results", "show_field", "show_value"]

_STYLES = {"+": "green", "-": "red", "~": "yellow"}
_LONGEST_VALUE = 80


def show_value(value: Any) -> str:
    """A field value on one line: JSON text, cut after 80 characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > _LONGEST_VALUE:
        text = text[: _LONGEST_VALUE - 1] + "…"
    return text


def show_field(path: str, value: Any) -> str:
    """A changed field's value: :func:`show_value`, but a whole health check as its
    summary (``none`` when there is none)."""
    if path == "health_check":
        if value is None:
            return "none"
        try:
            return check_summary(HealthCheck.model_validate(value))
        except ValidationError:
            pass  # not a health check after all: shown as it is
    return show_value(value)


def render_plan(output: Output, plan: Plan, *, target: str, offline: bool = False) -> None:
    """The plan for one target, then its summary (or that there is nothing to do).
    ``offline``: ``target`` names the two states compared, not a daemon."""
    output.heading(target if offline else f"{target} (state version {plan.version})")
    if plan.empty:
        same = "the two states are the same" if offline else "the proxy matches the file"
        output.print(f"  nothing to do: {same}")
        return
    group = None
    for change in plan.changes:
        if change.group != group:
            group = change.group
            output.print(f"  {group}")
        output.print(f"    {change.op} {change.description}", style=_STYLES[change.op])
        for path, (old, new) in change.fields.items():
            output.print(f"        {path}: {show_field(path, old)} -> {show_field(path, new)}")
        for path, value in change.attributes.items():
            output.print(f"        {path}: {show_field(path, value)}")
    output.print(f"  plan: {plan.summary()}", style="bold")


def render_results(output: Output, results: list[BatchResult]) -> None:
    """The per-request outcome of a refused batch (which failed, which were undone)."""
    if not results:
        return
    output.table(
        ["#", "REQUEST", "STATUS", "MESSAGE"],
        [[r.index + 1, r.request, r.status.value, r.message] for r in results],
    )
