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

A fleet fed from etcd (:mod:`.fleet`): ``--source etcd://HOST:PORT/PREFIX`` reads the desired
state from etcd instead of FILE (once, or with ``--watch``), ``--publish URL FILE`` writes a
checked file there, ``--fleet-status URL`` shows what every node runs.

This module is the command (its arguments, its modes, one pass over the targets); the targets
themselves are :mod:`.targets`, saved plans :mod:`.saved_plans`, offline plans :mod:`.offline`,
the fleet modes :mod:`.fleet.command`. Those are imported when a pass runs, not with this
module, which ``sozu`` imports for its ``apply`` subcommand's arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sozu_config.client import MUTATION_TIMEOUT

from .arguments import Parser, add_version, non_negative, positive
from .declarations import Arg, Argument, Completer, OneOf
from .declarations import add_arguments as add_declared
from .errors import CommandError
from .output import Output

if TYPE_CHECKING:
    from sozu_config.config import Config

__all__ = ["VERSION_RETRIES", "add_arguments", "apply_file", "build_parser", "main", "run"]


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
    "sozu-apply --publish etcd://127.0.0.1:2379/sozu/prod config.toml",
    "sozu-apply --source etcd://127.0.0.1:2379/sozu/prod --socket /run/sozu.sock --dry-run",
    "sozu-apply --watch --source etcd://127.0.0.1:2379/sozu/prod --socket /run/sozu.sock",
    "sozu-apply --fleet-status etcd://127.0.0.1:2379/sozu/prod",
]


def _sockets(args: argparse.Namespace, config: Config) -> list[Path]:
    from .targets import given_sockets

    return given_sockets(args) or [config.command_socket]


def apply_file(
    args: argparse.Namespace, output: Output, *, retries: int = 0, compact: bool = False
) -> int:
    """One pass: load the file, plan every target, show, then check, save or apply. Returns the
    exit code (:func:`worst` of the targets'). ``retries``: times to plan again after a version
    mismatch (used by ``--watch``)."""
    from .saved_plans import save_plan
    from .targets import ApplyExit, load_desired, mode_of, run_pass, worst

    file = Path(args.file)
    mode = mode_of(args)
    desired = load_desired(file, output)
    if desired is None:
        output.json(
            {"file": str(file), "mode": mode, "error": "the file is not usable", "targets": []},
            compact=compact,
        )
        return ApplyExit.ERROR
    targets = run_pass(args, output, desired, _sockets(args, desired), retries=retries)
    if getattr(args, "out", None) and not any(t.code == ApplyExit.ERROR for t in targets):
        save_plan(Path(args.out), file, desired, targets, output)
    output.json(
        {"file": str(file), "mode": mode, "targets": [t.to_json() for t in targets]},
        compact=compact,
    )
    return worst([t.code for t in targets])


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
    fleet_options = (
        *(args.source, args.publish, args.fleet_status, args.node, args.lease_ttl),
        *(args.etcd_ca, args.etcd_cert, args.etcd_key),
    )
    if any(fleet_options) or args.base_revision is not None:
        from .fleet.command import run_fleet

        code = run_fleet(args, output, retries=VERSION_RETRIES)
        if code is not None:
            return code
    _validate(args)
    if args.diff or args.against:
        from .offline import plan_offline

        return plan_offline(args, output)
    if getattr(args, "plan", None):
        from .saved_plans import apply_saved

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
                "and answer templates it names (with --source: after every new revision in etcd)",
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
        ("--source",),
        metavar="URL",
        help="read the desired state from etcd instead of FILE: etcd://HOST:PORT/PREFIX "
        "(etcds:// over TLS; members: HOST:PORT,HOST:PORT), that is PREFIX/config.toml and the "
        "files it names under PREFIX/files/",
    ),
    Arg(
        ("--publish",),
        metavar="URL",
        help="check FILE and write it, with the files it names, to etcd://HOST:PORT/PREFIX in "
        "one transaction (refused if the configuration there changed since the base revision)",
    ),
    Arg(
        ("--base-revision",),
        type=non_negative,
        metavar="N",
        help="--publish: the revision the change was made from (default: the one read just "
        "before writing; 0: nothing published yet)",
    ),
    Arg(
        ("--fleet-status",),
        metavar="URL",
        help="show every node following etcd://HOST:PORT/PREFIX, the revision it runs and "
        "whether it is in sync (exit 2 when one is not)",
    ),
    Arg(
        ("--node",),
        metavar="NAME",
        help="--watch --source: the name this proxy reports its status under (default: the "
        "host name)",
    ),
    Arg(
        ("--lease-ttl",),
        type=positive,
        metavar="SECONDS",
        help="--watch --source: a node whose watcher stops disappears from the fleet status "
        "after that long (default 10)",
    ),
    Arg(
        ("--etcd-ca",),
        metavar="FILE",
        completer=Completer.FILE,
        help="etcds:// sources: the CA that signed etcd's certificate (default: the system's)",
    ),
    Arg(
        ("--etcd-cert",),
        metavar="FILE",
        completer=Completer.FILE,
        help="etcds:// sources: this client's certificate, when etcd asks for one",
    ),
    Arg(
        ("--etcd-key",),
        metavar="FILE",
        completer=Completer.FILE,
        help="etcds:// sources: the key of --etcd-cert (default: in the same file)",
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
        "  2  changes pending (--check; offline: the two states differ;\n"
        "     --fleet-status: a node is not in sync)\n"
        "  1  any error: bad arguments or file, unreachable daemon, refused batch\n"
        "     (an error wins over changes pending)",
    )
    add_version(parser)
    add_arguments(parser, standalone=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sozu-apply``."""
    from .targets import ApplyExit

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
