"""Saved plans: ``sozu-apply FILE --out PLAN.json`` writes the plans of its targets (the
requests and the live state's version each was made against, private keys included: mode
0600); ``sozu-apply --plan PLAN.json`` applies exactly them, or nothing where the live state
moved since."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sozu_config import Plan, PlanError
from sozu_config.config import Config
from sozu_config.files import read_regular_text
from sozu_config.plan import saved_plan

from .errors import CommandError
from .output import Output
from .targets import (
    Target,
    apply_all,
    close_all,
    plan_saved_target,
    report,
    show,
    timeouts,
    worst,
)

__all__ = ["MAX_PLAN_BYTES", "PLAN_FORMAT", "apply_saved", "save_plan"]

MAX_PLAN_BYTES = 1 << 30
"""Largest saved plan read (a plan of 10,000 clusters and their certificates is tens of MB)."""

PLAN_FORMAT = "sozu-apply plan 1"
"""The ``format`` of the files ``--out`` writes and ``--plan`` reads."""


def save_plan(
    path: Path, file: Path, desired: Config, targets: list[Target], output: Output
) -> None:
    """Write the targets' plans to ``path`` (mode 0600: the requests hold private keys)."""
    document = {
        "format": PLAN_FORMAT,
        "file": str(file.absolute()),
        "ctl_command_timeout": desired.ctl_command_timeout,
        "targets": [
            {"socket": str(t.socket), **t.plan.to_saved()} for t in targets if t.plan is not None
        ],
    }
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(document, handle)
            handle.write("\n")
    except OSError as error:
        raise CommandError(f"cannot write the plan to {path}: {error.strerror}") from None
    output.note(f"plan saved to {path}; apply exactly it with: sozu-apply --plan {path}")


def _read_saved(path: Path) -> tuple[dict[str, Any], list[tuple[Target, Plan]]]:
    """The saved plan file's document and its targets with their plans."""
    try:
        document = json.loads(read_regular_text(path, MAX_PLAN_BYTES))
    except OSError as error:
        raise CommandError(f"cannot read the plan {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CommandError(f"{path} is not a saved plan: {error}") from None
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise CommandError(f"{path} is not a saved plan of this sozu-apply (see --out)")
    found: list[tuple[Target, Plan]] = []
    for entry in document.get("targets") or []:
        try:
            found.append((Target(Path(entry["socket"])), saved_plan(entry)))
        except (PlanError, KeyError, TypeError) as error:
            raise CommandError(f"{path} is not a usable saved plan: {error}") from None
    if not found:
        raise CommandError(f"{path} holds no plan (see --out)")
    return document, found


def apply_saved(args: argparse.Namespace, output: Output) -> int:
    """``--plan PLAN.json``: apply each saved plan to its target, guarded by its version."""
    path = Path(args.plan)
    document, saved = _read_saved(path)
    milliseconds = document.get("ctl_command_timeout")
    query_timeout, batch_timeout = timeouts(
        args, milliseconds if isinstance(milliseconds, int) else 1000
    )
    targets = [target for target, _ in saved]
    try:
        for target, plan in saved:
            plan_saved_target(target, plan, query_timeout)
            show(output, target)
        if not args.dry_run:
            apply_all(args, output, targets, batch_timeout)
            for target in targets:
                report(output, target)
    finally:
        close_all(targets)
    output.json(
        {
            "plan": str(path),
            "file": document.get("file"),
            "mode": "dry_run" if args.dry_run else "apply",
            "targets": [t.to_json() for t in targets],
        }
    )
    return worst([t.code for t in targets])
