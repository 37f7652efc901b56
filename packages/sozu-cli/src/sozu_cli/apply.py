"""``sozu-apply FILE`` (also ``sozu apply FILE``): make live proxies match a configuration file.

For each target — the daemon of the file's ``command_socket``, or every ``--socket PATH`` — the
live state is read with ``query_state``, the plan ``live.diff(desired)`` is shown grouped as it
will run, and then, depending on the mode:

* ``--dry-run``: nothing more; ``--out PLAN.json``: the plan is saved, to be applied later
  with ``--plan PLAN.json``, exactly as reviewed, or not at all if the live state moved;
* ``--check``: exit 0 when every target matches the file, 2 when one would change;
* default: the plan is applied as one ``batch`` guarded by the version it was made against —
  all of it or nothing; if the live state moved meanwhile nothing is applied and the user is
  told to plan again; ``--confirm`` asks first, and refuses when stdin is not a terminal to
  ask on (unless ``--yes``);
* ``--watch``: apply, then again after every change of the file or of a file it names
  (certificates, keys, answer templates), until Ctrl-C (see :mod:`sozu_cli.watch`).

Offline, without a daemon: ``--diff A.toml B.toml`` plans from one file to another,
``--against STATE_FILE FILE`` from a state file (``sozu state save``) to a file.

Exit codes, as ``terraform plan -detailed-exitcode``: 0 in sync or applied, 2 changes pending
(``--check``), 1 any error (bad arguments or file, unreachable daemon, refused batch); an
error wins over changes pending. The file is only read, never written.
"""

from __future__ import annotations

import argparse
import json
import os
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
from sozu_config.files import read_regular_text
from sozu_config.live import MUTATION_TIMEOUT, fetch_live_state, mutation_timeout
from sozu_config.plan import saved_plan
from sozu_config.responses import BatchResult, BatchResults
from sozu_config.state import ConfigState
from sozu_config.statefile import StateFileError, load_state_file

from .arguments import Parser, add_version, non_negative
from .declarations import Arg, Argument, Completer, OneOf
from .declarations import add_arguments as add_declared
from .errors import CommandError
from .output import Output, plural
from .plan_view import render_plan, render_results

__all__ = ["PLAN_FORMAT", "ApplyExit", "Target", "add_arguments", "apply_file", "main", "run"]


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


MAX_PLAN_BYTES = 1 << 30
"""Largest saved plan read (a plan of 10,000 clusters and their certificates is tens of MB)."""

PLAN_FORMAT = "sozu-apply plan 1"
"""The ``format`` of the files ``--out`` writes and ``--plan`` reads."""

VERSION_RETRIES = 3
"""How many times ``--watch`` plans again when the live state moved between plan and apply."""

EXAMPLES = [
    "sozu-apply config.toml --dry-run",
    "sozu-apply config.toml --check",
    "sozu-apply config.toml --out plan.json && sozu-apply --plan plan.json",
    "sozu-apply --diff old.toml new.toml",
    "sozu-apply --against saved-state.jsonl config.toml --check",
    "sozu-apply config.toml --confirm",
    "sozu-apply config.toml --watch",
    "sozu-apply config.toml --socket /run/sozu-a.sock --socket /run/sozu-b.sock",
    "sozu-apply config.toml --dry-run --json | jq '.targets[].summary'",
]


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


def _timeouts(args: argparse.Namespace, milliseconds: int) -> tuple[float | None, float | None]:
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


def _close(targets: list[Target]) -> None:
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


def _mode(args: argparse.Namespace) -> str:
    if args.check:
        return "check"
    if args.dry_run or getattr(args, "out", None):
        return "dry_run"
    return "apply"


def _sockets(args: argparse.Namespace, config: Config) -> list[Path]:
    given = [getattr(args, "socket", None), *(getattr(args, "sockets", None) or [])]
    sockets = [Path(s) for s in given if s]
    return list(dict.fromkeys(sockets)) or [config.command_socket]


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


def apply_file(
    args: argparse.Namespace, output: Output, *, retries: int = 0, compact: bool = False
) -> int:
    """One pass: load the file, plan every target, show, then check, save or apply. Returns the
    exit code (:func:`worst` of the targets'). ``retries``: times to plan again after a version
    mismatch (used by ``--watch``)."""
    file = Path(args.file)
    mode = _mode(args)
    desired = load_desired(file, output)
    if desired is None:
        output.json(
            {"file": str(file), "mode": mode, "error": "the file is not usable", "targets": []},
            compact=compact,
        )
        return ApplyExit.ERROR
    query_timeout, batch_timeout = _timeouts(args, desired.ctl_command_timeout)
    targets = [Target(socket) for socket in _sockets(args, desired)]
    try:
        for target in targets:
            plan_target(target, desired, query_timeout)
            _show(output, target)
        if mode == "check":
            _check(output, targets)
        elif mode == "apply":
            _apply(args, output, targets, batch_timeout)
            for target in targets:
                for _ in range(retries):
                    if target.status != "version_mismatch":
                        break
                    output.note(f"{target.socket}: the state moved meanwhile; planning again")
                    target.reset()
                    plan_target(target, desired, query_timeout)
                    _show(output, target)
                    apply_target(target, batch_timeout)
                _report(output, target)
    finally:
        _close(targets)
    if getattr(args, "out", None) and not any(t.code == ApplyExit.ERROR for t in targets):
        _save(Path(args.out), file, desired, targets, output)
    output.json(
        {"file": str(file), "mode": mode, "targets": [t.to_json() for t in targets]},
        compact=compact,
    )
    return worst([t.code for t in targets])


def _show(output: Output, target: Target) -> None:
    if target.plan is not None:
        render_plan(output, target.plan, target=str(target.socket))
    else:
        output.error(target.message)


def _apply(
    args: argparse.Namespace, output: Output, targets: list[Target], timeout: float | None
) -> None:
    """Apply every planned target (after asking, with ``--confirm``)."""
    pending = [t for t in targets if t.plan is not None and not t.plan.empty and not t.code]
    if pending and args.confirm and not _confirm(args, output, targets):
        for target in pending:
            target.fail("cancelled", ApplyExit.ERROR, "not applied: cancelled")
    for target in targets:
        apply_target(target, timeout)


def _check(output: Output, targets: list[Target]) -> None:
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


def _report(output: Output, target: Target) -> None:
    if target.status == "applied":
        output.success(f"{target.socket}: {target.message}")
    elif target.status == "nothing_to_do":
        output.print(f"{target.socket}: nothing to do")
    elif target.status in ("failed", "version_mismatch"):
        output.error(target.message)
        render_results(output, target.results)
    elif target.status == "unreachable" and target.plan is not None:
        output.error(target.message)


# --------------------------------------------------------------------------- saved plans


def _save(path: Path, file: Path, desired: Config, targets: list[Target], output: Output) -> None:
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
    query_timeout, batch_timeout = _timeouts(
        args, milliseconds if isinstance(milliseconds, int) else 1000
    )
    targets = [target for target, _ in saved]
    try:
        for target, plan in saved:
            plan_saved_target(target, plan, query_timeout)
            _show(output, target)
        if not args.dry_run:
            _apply(args, output, targets, batch_timeout)
            for target in targets:
                _report(output, target)
    finally:
        _close(targets)
    output.json(
        {
            "plan": str(path),
            "file": document.get("file"),
            "mode": "dry_run" if args.dry_run else "apply",
            "targets": [t.to_json() for t in targets],
        }
    )
    return worst([t.code for t in targets])


# --------------------------------------------------------------------------- offline plans


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


# --------------------------------------------------------------------------- the command


def _validate(args: argparse.Namespace) -> None:
    """Refuse the combinations of modes that mean nothing."""
    file, diff, plan = args.file, args.diff, getattr(args, "plan", None)
    sources = [
        name for name, given in (("FILE", file), ("--diff", diff), ("--plan", plan)) if given
    ]
    offline = bool(diff or args.against)
    conflicts = [
        (args.against and not file, "--against needs FILE: sozu-apply --against STATE FILE"),
        (
            len(sources) != 1,
            "give one of FILE, --diff A.toml B.toml or --plan PLAN.json"
            + (f" (not {' and '.join(sources)})" if len(sources) > 1 else ""),
        ),
        (offline and args.watch, "--watch needs a daemon: not with --diff or --against"),
        (offline and args.out, "--out saves a plan against a daemon: not with --diff or --against"),
        (offline and args.sockets, "--socket: --diff and --against need no daemon"),
        (
            plan and (args.watch or args.check or args.out),
            "--plan applies: not with --watch, --check or --out",
        ),
        (plan and args.sockets, "--plan applies to the sockets saved in the plan: no --socket"),
        (args.out and args.watch, "--out saves one plan: not with --watch"),
    ]
    for conflict, message in conflicts:
        if conflict:
            raise CommandError(message)


def run(args: argparse.Namespace, output: Output) -> int:
    """``sozu-apply`` with parsed arguments: one pass, a saved plan, an offline plan, or
    ``--watch``."""
    _validate(args)
    if args.diff or args.against:
        return plan_offline(args, output)
    if getattr(args, "plan", None):
        return apply_saved(args, output)
    if args.watch:
        from .watch import watch

        return watch(
            args,
            output,
            lambda: apply_file(args, output, retries=VERSION_RETRIES, compact=True),
        )
    return apply_file(args, output)


ARGUMENTS: tuple[Argument, ...] = (
    Arg(
        ("file",),
        metavar="FILE",
        nargs="?",
        completer=Completer.FILE,
        help="the configuration file describing the desired state",
    ),
    Arg(
        ("--socket",),
        dest="sockets",
        action="append",
        metavar="PATH",
        completer=Completer.FILE,
        help="a daemon's command socket (repeatable: a fleet); default: the file's command_socket",
    ),
    OneOf(
        (
            Arg(("--dry-run",), action="store_true", help="show the plan, change nothing"),
            Arg(
                ("--check",),
                action="store_true",
                help="exit 0 when the proxy matches the file, 2 when changes are pending",
            ),
            Arg(
                ("--watch",),
                action="store_true",
                help="apply again after every change of the file or of the certificates, keys "
                "and answer templates it names",
            ),
        )
    ),
    Arg(
        ("--confirm",),
        action="store_true",
        help="ask before applying; refuse when stdin is not a terminal (unless --yes)",
    ),
    Arg(("--yes",), action="store_true", help="with --confirm: apply without asking"),
    Arg(
        ("--out",),
        metavar="PLAN.json",
        completer=Completer.FILE,
        help="save the plan (private keys included: mode 0600) instead of applying it",
    ),
    Arg(
        ("--plan",),
        metavar="PLAN.json",
        completer=Completer.FILE,
        help="apply exactly a plan saved by --out, or nothing if the live state moved since",
    ),
    Arg(
        ("--diff",),
        nargs=2,
        metavar="TOML",
        completer=Completer.FILE,
        help="offline: the plan from the first file to the second, no daemon needed",
    ),
    Arg(
        ("--against",),
        metavar="STATE_FILE",
        completer=Completer.FILE,
        help="offline: the plan from a state file (sozu state save) to FILE, no daemon needed",
    ),
    Arg(
        ("--debounce",),
        type=non_negative,
        default=300,
        metavar="MS",
        help="--watch: wait for the files to be quiet that long before planning (default 300)",
    ),
)
"""The arguments of ``sozu-apply`` and of ``sozu apply``."""

STANDALONE_ARGUMENTS: tuple[Argument, ...] = (
    Arg(
        ("-t", "--timeout"),
        type=non_negative,
        metavar="MS",
        help="milliseconds to wait for answers (default: the file's ctl_command_timeout, "
        f"at least {MUTATION_TIMEOUT:g} s for the batch; 0: no limit)",
    ),
    Arg(("-j", "--json"), action="store_true", help="print the plan and the outcome as JSON"),
)
"""The options ``sozu-apply`` has of its own (``sozu apply`` has them from ``sozu``)."""


def add_arguments(parser: Parser, *, standalone: bool) -> None:
    """The arguments of ``sozu-apply`` (``standalone``) or of ``sozu apply`` (whose global
    options come from the ``sozu`` parser)."""
    add_declared(parser, ARGUMENTS + (STANDALONE_ARGUMENTS if standalone else ()))


def build_parser() -> Parser:
    """The parser of ``sozu-apply``."""
    parser = Parser(
        prog="sozu-apply",
        description="Make live sōzu proxies match a configuration file: show the plan (requests "
        "in the order they run, the fields that change), then apply it as one all-or-nothing "
        "batch.",
        epilog="examples:\n"
        + "\n".join(f"  {example}" for example in EXAMPLES)
        + "\n\nexit codes (as terraform plan -detailed-exitcode):\n"
        "  0  in sync, or applied\n"
        "  2  changes pending (--check; offline: the two states differ)\n"
        "  1  any error: bad arguments or file, unreachable daemon, refused batch\n"
        "     (an error wins over changes pending)",
    )
    add_version(parser)
    add_arguments(parser, standalone=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sozu-apply``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help and --version: 0; bad arguments: an error like any
        return ApplyExit.OK if exit.code in (0, None) else ApplyExit.ERROR
    output = Output(json_mode=args.json)
    try:
        return run(args, output)
    except CommandError as error:
        output.error(error.message)
        return ApplyExit.ERROR
    except KeyboardInterrupt:
        output.note("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
