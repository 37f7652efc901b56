"""The daemons ``sozu-apply`` brings in line, one :class:`Target` each: reading its live state,
planning, showing, checking and applying, and the exit codes that sum them up (as ``terraform
plan -detailed-exitcode``: 0 in sync or applied, 2 changes pending, 1 any error)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from sozu_config import (
    ClientError,
    CommandClient,
    CommandTimeout,
    DaemonUnreachable,
    ErrorKind,
    Plan,
    PlanError,
    ProtocolError,
    StateError,
    plan_states,
)
from sozu_config.config import Config, ConfigError, load_checked
from sozu_config.live import fetch_live_state, mutation_timeout
from sozu_config.responses import BatchResult, BatchResults
from sozu_config.state import ConfigState

from .output import Output, plural
from .plan_view import render_plan, render_results

__all__ = [
    "ApplyExit",
    "Target",
    "apply_all",
    "apply_target",
    "check_all",
    "close_all",
    "given_sockets",
    "load_desired",
    "mode_of",
    "plan_saved_target",
    "plan_target",
    "report",
    "run_pass",
    "show",
    "timeouts",
    "worst",
]


class ApplyExit(IntEnum):
    """Exit codes of ``sozu-apply``, as ``terraform plan -detailed-exitcode``."""

    OK = 0
    """In sync, applied, or nothing asked beyond showing the plan."""
    ERROR = 1
    """Any error: bad arguments, unusable file, unreachable daemon, refused or cancelled batch."""
    PENDING = 2
    """``--check``: a target (or, offline, the second state) differs: changes are pending."""


def worst(codes: list[int]) -> int:
    """The exit code of several targets: an error wins over changes pending."""
    if ApplyExit.ERROR in codes:
        return ApplyExit.ERROR
    return ApplyExit.PENDING if ApplyExit.PENDING in codes else ApplyExit.OK


@dataclass
class Target:
    """One daemon to bring in line, and what happened to it."""

    socket: Path
    status: str = "pending"
    """``planned``, ``in_sync``, ``drift``, ``nothing_to_do``, ``applied``, ``failed``,
    ``version_mismatch``, ``cancelled`` or ``unreachable``."""
    code: int = ApplyExit.OK
    message: str = ""
    plan: Plan | None = None
    client: CommandClient | None = None
    results: list[BatchResult] = field(default_factory=list)
    saved: bool = False
    """The plan is a saved one (``--plan``): when the state moved, a new plan is needed."""

    def fail(self, status: str, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message

    def reset(self) -> None:
        """Forget the plan and its outcome (to plan again), closing the connection."""
        if self.client is not None:
            self.client.close()
        self.status, self.code, self.message = "pending", ApplyExit.OK, ""
        self.plan, self.client, self.results = None, None, []

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "socket": str(self.socket),
            "status": self.status,
            "message": self.message,
        }
        if self.plan is not None:
            data.update(self.plan.to_json())
        data["results"] = [r.model_dump(mode="json") for r in self.results]
        return data


def timeouts(args: argparse.Namespace, milliseconds: int) -> tuple[float | None, float | None]:
    """(wait for queries, wait for the batch) in seconds; None: no limit. ``milliseconds``: the
    file's ``ctl_command_timeout``, unless ``-t`` is given."""
    explicit = getattr(args, "timeout", None)
    if explicit is not None:
        wait = None if explicit == 0 else explicit / 1000
        return wait, wait
    return (None if milliseconds == 0 else milliseconds / 1000), mutation_timeout(milliseconds)


def _unreachable_message(error: Exception) -> str:
    return f"{error}; check the file's command_socket, or name another with --socket"


def _fetch(target: Target, timeout: float | None) -> ConfigState | None:
    """Connect to the target and read its live state (keeping the connection in
    ``target.client``), or record why it could not."""
    client = CommandClient(target.socket, timeout=timeout)
    try:
        client.connect()
    except CommandTimeout:
        target.fail("unreachable", ApplyExit.ERROR, f"connecting to {target.socket} timed out")
        return None
    except DaemonUnreachable as error:
        target.fail("unreachable", ApplyExit.ERROR, _unreachable_message(error))
        return None
    target.client = client
    try:
        return fetch_live_state(client)
    except (ClientError, ProtocolError) as error:
        client.close()
        target.client = None
        if isinstance(error, DaemonUnreachable):
            target.fail("unreachable", ApplyExit.ERROR, _unreachable_message(error))
        else:
            target.fail(
                "failed", ApplyExit.ERROR, f"{target.socket} did not give its state: {error}"
            )
    except PlanError as error:
        reason = error.response.message if error.response is not None else error.message
        target.fail("failed", ApplyExit.ERROR, f"{target.socket} did not give its state: {reason}")
    except StateError as error:
        target.fail(
            "failed", ApplyExit.ERROR, f"the state of {target.socket} is unusable: {error.message}"
        )
    return None


def plan_target(target: Target, desired: Config, timeout: float | None) -> None:
    """Read the target's live state and make its plan (or record why it could not)."""
    live = _fetch(target, timeout)
    if live is not None:
        target.plan = plan_states(live, desired.state, live.version)
        target.status = "planned"


def plan_saved_target(target: Target, plan: Plan, timeout: float | None) -> None:
    """Give the target its saved plan if its live state is still the one the plan was made
    against (or record that it moved: then nothing is to be applied)."""
    live = _fetch(target, timeout)
    if live is None:
        return
    target.saved = True
    if live.version != plan.version or live != plan.live:
        target.fail(
            "version_mismatch",
            ApplyExit.ERROR,
            f"the state of {target.socket} moved since the plan was saved (version "
            f"{plan.version}, now {live.version}): nothing was applied; make a new plan",
        )
        return
    target.plan = plan
    target.status = "planned"


def apply_target(target: Target, timeout: float | None) -> None:
    """Apply the target's plan as one guarded batch and record the outcome."""
    plan, client = target.plan, target.client
    if plan is None or client is None or target.code:
        return
    if plan.empty:
        target.status, target.message = "nothing_to_do", "nothing to do"
        return
    client.timeout = timeout
    try:
        response = plan.apply(client)
    except PlanError as error:
        target.results = error.results
        if error.kind == ErrorKind.VERSION_MISMATCH:
            again = "make a new plan" if target.saved else "run sozu-apply again to plan"
            target.fail(
                "version_mismatch",
                ApplyExit.ERROR,
                f"the state of {target.socket} changed since the plan was made: nothing was "
                f"applied; {again} from the new state",
            )
        else:
            target.fail(
                "failed",
                ApplyExit.ERROR,
                f"nothing was applied to {target.socket}: {error.message}",
            )
        return
    except CommandTimeout:
        target.fail(
            "failed",
            ApplyExit.ERROR,
            f"{target.socket} did not answer in time: the batch may still be applied (it is all or "
            "nothing); check with sozu-apply --check, or wait longer with -t MS",
        )
        return
    except (ClientError, ProtocolError) as error:
        target.fail("unreachable", ApplyExit.ERROR, _unreachable_message(error))
        return
    if isinstance(response.content, BatchResults):
        target.results = list(response.content.results)
    target.status = "applied"
    target.message = f"applied {len(plan.requests)} requests: {plan.summary()} ({response.message})"


def close_all(targets: list[Target]) -> None:
    for target in targets:
        if target.client is not None:
            target.client.close()
            target.client = None


def _confirm(args: argparse.Namespace, output: Output, targets: list[Target]) -> bool:
    """Ask y/N on the terminal; without one, refuse unless ``--yes`` answers for the user."""
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        output.error(
            "--confirm needs a terminal to ask on, and stdin is not one: nothing was applied "
            "(add --yes to apply without asking)"
        )
        return False
    count = sum(1 for t in targets if t.plan is not None and not t.plan.empty)
    # the question goes to stderr: stdout may be JSON for another program
    output.stderr.write(f"Apply these changes to {plural(count, 'proxy', 'proxies')}? [y/N] ")
    output.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() in ("y", "yes"):
        return True
    output.error("nothing was applied (cancelled)")
    return False


def load_desired(file: Path, output: Output) -> Config | None:
    """The file to make the proxies match, or ``None`` (said on stderr) when it is not usable.
    Every mode reads its target file here."""
    try:
        desired = load_checked(file)  # every error of the file, as config check
    except ConfigError as error:
        output.error(f"{error} (nothing was changed)")
        return None
    for warning in desired.warnings:
        output.warning(warning)
    return desired


def show(output: Output, target: Target) -> None:
    if target.plan is not None:
        render_plan(output, target.plan, target=str(target.socket))
    else:
        output.error(target.message)


def apply_all(
    args: argparse.Namespace, output: Output, targets: list[Target], timeout: float | None
) -> None:
    """Apply every planned target (after asking, with ``--confirm``)."""
    pending = [t for t in targets if t.plan is not None and not t.plan.empty and not t.code]
    if pending and args.confirm and not _confirm(args, output, targets):
        for target in pending:
            target.fail("cancelled", ApplyExit.ERROR, "not applied: cancelled")
    for target in targets:
        apply_target(target, timeout)


def check_all(output: Output, targets: list[Target]) -> None:
    """``--check``: every planned target is in sync (empty plan) or would change (exit 2)."""
    for target in targets:
        if target.plan is None:
            continue
        if target.plan.empty:
            target.status, target.message = "in_sync", "the proxy matches the file"
            output.success(f"{target.socket}: {target.message}")
        else:
            summary = target.plan.summary()
            target.fail("drift", ApplyExit.PENDING, f"the proxy drifted from the file: {summary}")
            output.print(f"{target.socket}: {target.message}", style="yellow")


def report(output: Output, target: Target) -> None:
    if target.status == "applied":
        output.success(f"{target.socket}: {target.message}")
    elif target.status == "nothing_to_do":
        output.print(f"{target.socket}: nothing to do")
    elif target.status in ("failed", "version_mismatch"):
        output.error(target.message)
        render_results(output, target.results)
    elif target.status == "unreachable" and target.plan is not None:
        output.error(target.message)


def mode_of(args: argparse.Namespace) -> str:
    """``check``, ``dry_run`` (also with ``--out``) or ``apply``."""
    if args.check:
        return "check"
    if args.dry_run or getattr(args, "out", None):
        return "dry_run"
    return "apply"


def run_pass(
    args: argparse.Namespace,
    output: Output,
    desired: Config,
    sockets: list[Path],
    *,
    retries: int = 0,
) -> list[Target]:
    """Plan every target against ``desired``, show the plans, then check or apply them (as
    the mode says); ``retries``: times to plan again after a version mismatch (``--watch``).
    Returns the targets, each with its outcome."""
    mode = mode_of(args)
    query_timeout, batch_timeout = timeouts(args, desired.ctl_command_timeout)
    targets = [Target(socket) for socket in sockets]
    try:
        for target in targets:
            plan_target(target, desired, query_timeout)
            show(output, target)
        if mode == "check":
            check_all(output, targets)
        elif mode == "apply":
            apply_all(args, output, targets, batch_timeout)
            for target in targets:
                for _ in range(retries):
                    if target.status != "version_mismatch":
                        break
                    output.note(f"{target.socket}: the state moved meanwhile; planning again")
                    target.reset()
                    plan_target(target, desired, query_timeout)
                    show(output, target)
                    apply_target(target, batch_timeout)
                report(output, target)
    finally:
        close_all(targets)
    return targets


def given_sockets(args: argparse.Namespace) -> list[Path]:
    """The sockets named on the command line (``--socket``, repeatable), in order, once each."""
    given = [getattr(args, "socket", None), *(getattr(args, "sockets", None) or [])]
    return list(dict.fromkeys(Path(s) for s in given if s))
