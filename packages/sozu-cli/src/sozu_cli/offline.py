"""Offline plans, without a daemon: ``sozu-apply --diff A.toml B.toml`` (file against file)
and ``sozu-apply --against STATE_FILE FILE`` (a state file written by ``sozu state save``
against a file); with ``--check``, 2 when the two differ."""

from __future__ import annotations

import argparse
from pathlib import Path

from sozu_config import plan_states
from sozu_config.state import ConfigState
from sozu_config.statefile import StateFileError, load_state_file

from .output import Output
from .plan_view import render_plan
from .targets import ApplyExit, load_desired

__all__ = ["plan_offline"]


def _load_state_file(path: Path, output: Output) -> ConfigState | None:
    try:
        return load_state_file(path)
    except StateFileError as error:
        output.error(f"{error} (nothing was compared)")
    except OSError as error:
        output.error(f"cannot read the state file {path}: {error.strerror}")
    return None


def plan_offline(args: argparse.Namespace, output: Output) -> int:
    """``--diff A B`` and ``--against STATE_FILE FILE``: the plan between two states, without a
    daemon; with ``--check``, 2 when they differ."""
    if args.diff:
        source, file = Path(args.diff[0]), Path(args.diff[1])
        before = load_desired(source, output)
        live = before.state if before is not None else None
    else:
        source, file = Path(args.against), Path(args.file)
        live = _load_state_file(source, output)
    desired = load_desired(file, output)
    if live is None or desired is None:
        output.json({"from": str(source), "file": str(file), "error": "not usable"})
        return ApplyExit.ERROR
    plan = plan_states(live, desired.state, live.version)
    render_plan(output, plan, target=f"{source} -> {file}", offline=True)
    pending = args.check and not plan.empty
    output.json({"from": str(source), "file": str(file), **plan.to_json()})
    return ApplyExit.PENDING if pending else ApplyExit.OK
