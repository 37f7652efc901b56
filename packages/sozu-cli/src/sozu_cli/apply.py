"""``sozu-apply FILE`` (also ``sozu apply FILE``): make live proxies match a configuration file.

For each target — the daemon of the file's ``command_socket``, or every ``--socket PATH`` — the
live state is read with ``query_state``, the plan ``live.diff(desired)`` is shown grouped as it
will run, and then, depending on the mode:

* ``--dry-run``: nothing more;
* ``--check``: exit 0 when every target matches the file, 2 when one drifted;
* default: the plan is applied as one ``batch`` guarded by the version it was made against —
  all of it or nothing; if the live state moved meanwhile nothing is applied and the user is
  told to plan again; ``--confirm`` asks first when stdin is a terminal;
* ``--watch``: apply, then again after every change of the file, until Ctrl-C (see
  :mod:`sozu_cli.watch`).

The exit code is the worst of the targets' (0 ok, 1 refused or failed, 2 bad file or drift,
3 unreachable). The file is only read, never written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
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
from sozu_config.live import MUTATION_TIMEOUT, fetch_live_state, mutation_timeout
from sozu_config.responses import BatchResult, BatchResults

from .arguments import Parser, add_version, non_negative
from .declarations import Arg, Argument, Completer, OneOf
from .declarations import add_arguments as add_declared
from .errors import CommandError, ExitCode
from .output import Output, plural
from .plan_view import render_plan, render_results

__all__ = ["Target", "add_arguments", "apply_file", "main", "run"]

VERSION_RETRIES = 3
"""How many times ``--watch`` plans again when the live state moved between plan and apply."""

EXAMPLES = [
    "sozu-apply config.toml --dry-run",
    "sozu-apply config.toml --check",
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
    code: int = ExitCode.OK
    message: str = ""
    plan: Plan | None = None
    client: CommandClient | None = None
    results: list[BatchResult] = field(default_factory=list)

    def fail(self, status: str, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message

    def reset(self) -> None:
        """Forget the plan and its outcome (to plan again), closing the connection."""
        if self.client is not None:
            self.client.close()
        self.status, self.code, self.message = "pending", ExitCode.OK, ""
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


def _timeouts(args: argparse.Namespace, config: Config) -> tuple[float | None, float | None]:
    """(wait for queries, wait for the batch) in seconds; None: no limit."""
    explicit = getattr(args, "timeout", None)
    if explicit is not None:
        wait = None if explicit == 0 else explicit / 1000
        return wait, wait
    milliseconds = config.ctl_command_timeout
    return (None if milliseconds == 0 else milliseconds / 1000), mutation_timeout(milliseconds)


def _unreachable_message(error: Exception, socket: Path) -> str:
    return f"{error}; is the daemon started? (check the file's command_socket or --socket {socket})"


def plan_target(target: Target, desired: Config, timeout: float | None) -> None:
    """Read the target's live state and make its plan (or record why it could not)."""
    client = CommandClient(target.socket, timeout=timeout)
    try:
        client.connect()
    except CommandTimeout:
        target.fail("unreachable", ExitCode.UNREACHABLE, f"connecting to {target.socket} timed out")
        return
    except DaemonUnreachable as error:
        target.fail("unreachable", ExitCode.UNREACHABLE, _unreachable_message(error, target.socket))
        return
    target.client = client
    try:
        live = fetch_live_state(client)
    except (ClientError, ProtocolError) as error:
        client.close()
        target.client = None
        if isinstance(error, DaemonUnreachable):
            target.fail(
                "unreachable", ExitCode.UNREACHABLE, _unreachable_message(error, target.socket)
            )
        else:
            target.fail(
                "failed", ExitCode.FAILURE, f"{target.socket} did not give its state: {error}"
            )
        return
    except PlanError as error:
        reason = error.response.message if error.response is not None else error.message
        target.fail("failed", ExitCode.FAILURE, f"{target.socket} did not give its state: {reason}")
        return
    except StateError as error:
        target.fail(
            "failed", ExitCode.FAILURE, f"the state of {target.socket} is unusable: {error.message}"
        )
        return
    target.plan = plan_states(live, desired.state, live.version)
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
            target.fail(
                "version_mismatch",
                ExitCode.FAILURE,
                f"the state of {target.socket} changed since the plan was made: nothing was "
                "applied; run sozu-apply again to plan from the new state",
            )
        else:
            target.fail(
                "failed",
                ExitCode.FAILURE,
                f"nothing was applied to {target.socket}: {error.message}",
            )
        return
    except CommandTimeout:
        target.fail(
            "failed",
            ExitCode.FAILURE,
            f"{target.socket} did not answer in time: the batch may still be applied (it is all or "
            "nothing); check with sozu-apply --check, or wait longer with -t MS",
        )
        return
    except (ClientError, ProtocolError) as error:
        target.fail("unreachable", ExitCode.UNREACHABLE, _unreachable_message(error, target.socket))
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


def _confirm(output: Output, targets: list[Target]) -> bool:
    """Ask y/N when stdin is a terminal (else: yes, as without --confirm)."""
    if not sys.stdin.isatty():
        return True
    count = sum(1 for t in targets if t.plan is not None and not t.plan.empty)
    # the question goes to stderr: stdout may be JSON for another program
    output.stderr.write(f"Apply these changes to {plural(count, 'proxy', 'proxies')}? [y/N] ")
    output.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _mode(args: argparse.Namespace) -> str:
    if args.check:
        return "check"
    if args.dry_run:
        return "dry_run"
    return "apply"


def _sockets(args: argparse.Namespace, config: Config) -> list[Path]:
    given = [getattr(args, "socket", None), *(getattr(args, "sockets", None) or [])]
    sockets = [Path(s) for s in given if s]
    return list(dict.fromkeys(sockets)) or [config.command_socket]


def apply_file(
    args: argparse.Namespace, output: Output, *, retries: int = 0, compact: bool = False
) -> int:
    """One pass: load the file, plan every target, show, then check or apply. Returns the exit
    code (the worst of the targets'). ``retries``: times to plan again after a version
    mismatch (used by ``--watch``)."""
    file = Path(args.file)
    mode = _mode(args)
    try:
        desired = load_checked(file)  # every error of the file, as config check
    except ConfigError as error:
        output.json(
            {"file": str(file), "mode": mode, "error": str(error), "targets": []}, compact=compact
        )
        output.error(f"{error} (nothing was changed)")
        return ExitCode.USAGE
    for warning in desired.warnings:
        output.warning(warning)
    query_timeout, batch_timeout = _timeouts(args, desired)
    targets = [Target(socket) for socket in _sockets(args, desired)]
    try:
        for target in targets:
            plan_target(target, desired, query_timeout)
            if target.plan is not None:
                render_plan(output, target.plan, target=str(target.socket))
            else:
                output.error(target.message)
        if mode == "check":
            _check(output, targets)
        elif mode == "apply":
            pending = [t for t in targets if t.plan is not None and not t.plan.empty]
            if pending and args.confirm and not _confirm(output, targets):
                for target in pending:
                    target.fail("cancelled", ExitCode.FAILURE, "not applied: cancelled")
                output.error("nothing was applied (cancelled)")
            for target in targets:
                apply_target(target, batch_timeout)
                for _ in range(retries):
                    if target.status != "version_mismatch":
                        break
                    output.note(f"{target.socket}: the state moved meanwhile; planning again")
                    target.reset()
                    plan_target(target, desired, query_timeout)
                    if target.plan is not None:
                        render_plan(output, target.plan, target=str(target.socket))
                    apply_target(target, batch_timeout)
                _report(output, target)
    finally:
        _close(targets)
    output.json(
        {"file": str(file), "mode": mode, "targets": [t.to_json() for t in targets]},
        compact=compact,
    )
    return max((t.code for t in targets), default=0)


def _check(output: Output, targets: list[Target]) -> None:
    """``--check``: every planned target is in sync (empty plan) or drifted (exit 2)."""
    for target in targets:
        if target.plan is None:
            continue
        if target.plan.empty:
            target.status, target.message = "in_sync", "the proxy matches the file"
            output.success(f"{target.socket}: {target.message}")
        else:
            summary = target.plan.summary()
            target.fail("drift", ExitCode.USAGE, f"the proxy drifted from the file: {summary}")
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


def run(args: argparse.Namespace, output: Output) -> int:
    """``sozu-apply`` with parsed arguments: one pass, or ``--watch``."""
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
                help="exit 0 when the proxy matches the file, 2 when it drifted",
            ),
            Arg(
                ("--watch",), action="store_true", help="apply again after every change of the file"
            ),
        )
    ),
    Arg(("--confirm",), action="store_true", help="ask before applying (when stdin is a terminal)"),
    Arg(
        ("--debounce",),
        type=non_negative,
        default=300,
        metavar="MS",
        help="--watch: wait for the file to be quiet that long before planning (default 300)",
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
        + "\n\nexit codes: 0 ok, 1 refused or failed, 2 bad file or drift (--check), 3 unreachable",
    )
    add_version(parser)
    add_arguments(parser, standalone=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sozu-apply``."""
    args = build_parser().parse_args(argv)
    output = Output(json_mode=args.json)
    try:
        return run(args, output)
    except CommandError as error:
        output.error(error.message)
        return error.code
    except KeyboardInterrupt:
        output.note("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
