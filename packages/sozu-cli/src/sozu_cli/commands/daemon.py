"""The daemon's life: start it, ask how it is, stop, upgrade, reload, save and load its state,
change its log level, follow its events."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from sozu_config import (
    ClientError,
    CountRequests,
    DaemonUnreachable,
    Event,
    HardStop,
    ListWorkers,
    LoadState,
    Logging,
    ProtocolError,
    ReloadConfiguration,
    SaveState,
    SoftStop,
    Status,
    SubscribeEvents,
    UpgradeMain,
    UpgradeWorker,
)
from sozu_config.config import ConfigError, load_config
from sozu_config.responses import EventContent, RequestCounts, WorkersContent

from ..arguments import Parser, add_command, non_negative
from ..context import Context, client_error, content_of
from ..errors import DaemonFailure, Unreachable, UsageError

__all__ = ["register"]

LOG_LEVELS = ("error", "warn", "info", "debug", "trace")


# --------------------------------------------------------------------------- start


def start(ctx: Context) -> int:
    """Run the daemon in the foreground (exit 1 when the configuration does not load)."""
    path = ctx.config_path
    if path is None:
        raise UsageError("no configuration file: give -c FILE or set SOZU_CONFIG")
    try:
        config = load_config(path)
    except ConfigError as error:
        ctx.output.error(str(error))
        return 1
    from sozu_runtime.main import run

    return run(config)


# --------------------------------------------------------------------------- status


def _workers_table(ctx: Context, content: WorkersContent) -> None:
    ctx.output.table(
        ["WORKER", "PID", "STATE"],
        [[w.id, w.pid, w.run_state.value] for w in content.workers],
    )


def status(ctx: Context) -> int:
    response = ctx.send(Status())

    def render(content: Any) -> None:
        _workers_table(ctx, content_of(response, WorkersContent))
        ctx.output.print(response.message)

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- shutdown, upgrade


def shutdown(ctx: Context) -> int:
    return ctx.run(HardStop() if ctx.args.hard else SoftStop())


def upgrade(ctx: Context) -> int:
    """One worker with ``--worker``; else the main process, then every worker in turn."""
    output = ctx.output
    if ctx.args.worker is not None:
        return ctx.run(UpgradeWorker(worker_id=ctx.args.worker))
    steps: list[dict[str, Any]] = []

    def step(target: str, response: Any) -> bool:
        steps.append(
            {"target": target, "status": response.status.value, "message": response.message}
        )
        if response.ok:
            output.success(f"{target}: {response.message or 'upgraded'}")
        elif not output.json_mode:
            output.print(f"{target}: {response.message}", style="red")
        return bool(response.ok)

    main_upgraded = step("main process", ctx.send(UpgradeMain()))
    workers = content_of(ctx.send(ListWorkers()), WorkersContent).workers
    failed_workers = [
        w.id
        for w in workers
        if w.run_state.value == "running"
        and not step(f"worker {w.id}", ctx.send(UpgradeWorker(worker_id=w.id)))
    ]
    complete = main_upgraded and not failed_workers
    output.json({"status": "ok" if complete else "failure", "steps": steps})
    if complete:
        return 0
    problems = []
    if not main_upgraded:
        problems.append(f"the main process was not upgraded ({steps[0]['message']})")
    if failed_workers:
        problems.append(f"workers {', '.join(map(str, failed_workers))} were not upgraded")
    raise DaemonFailure("the upgrade is incomplete: " + "; ".join(problems))


# --------------------------------------------------------------------------- reload, state


def _existing_file(text: str, what: str) -> Path:
    path = Path(text).expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"{what} {text!r} does not exist (or is not a file)")
    return path


def reload(ctx: Context) -> int:
    path = _existing_file(ctx.args.file, "the configuration file") if ctx.args.file else None
    response = ctx.send(ReloadConfiguration(path=str(path) if path else None))
    return ctx.finish(response, lambda content: ctx.output.success(response.message))


def state_save(ctx: Context) -> int:
    path = Path(ctx.args.file).expanduser().absolute()
    if not path.parent.is_dir():
        raise UsageError(
            f"cannot save the state to {path}: the folder {path.parent} does not exist"
        )
    return ctx.run(SaveState(path=str(path)))


def state_load(ctx: Context) -> int:
    path = _existing_file(ctx.args.file, "the state file")
    return ctx.run(LoadState(path=str(path)))


def state_stats(ctx: Context) -> int:
    response = ctx.send(CountRequests())

    def render(content: Any) -> None:
        counts = content_of(response, RequestCounts).counts
        if not counts:
            ctx.output.print("no request was applied yet")
            return
        ctx.output.table(["REQUEST", "COUNT"], sorted(counts.items()))

    return ctx.finish(response, render)


def logging_level(ctx: Context) -> int:
    return ctx.run(Logging(level=ctx.args.level))


# --------------------------------------------------------------------------- events


def _event_line(event: Event) -> str:
    details = [
        f"{name}={value}"
        for name, value in (
            ("cluster", event.cluster_id),
            ("backend", event.backend_id),
            ("address", event.address),
            ("worker", event.worker_id),
        )
        if value is not None
    ]
    if event.message:
        details.append(event.message)
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    return f"{stamp} {event.kind.value} {' '.join(details)}".rstrip()


def events(ctx: Context) -> int:
    """Print events until Ctrl-C (exit 0) or until the daemon goes away (exit 3)."""
    output = ctx.output
    client = ctx.connect("subscribe_events")
    client.timeout = None  # events come when they come
    try:
        for response in client.responses(SubscribeEvents()):
            content = response.content
            if isinstance(content, EventContent):
                if output.json_mode:
                    output.json(content.event, compact=True)
                else:
                    output.print(_event_line(content.event))
            elif response.final:
                if not response.ok:
                    raise DaemonFailure(response.message)
                break
            else:
                output.note(
                    f"{response.message or 'subscribed'} on {ctx.socket_path} (Ctrl-C stops)"
                )
    except KeyboardInterrupt:
        return 0
    except DaemonUnreachable:
        raise Unreachable(
            f"the daemon at {ctx.socket_path} closed the event stream (it stopped, or its main "
            "process was upgraded): run 'sozu events' again once it answers"
        ) from None
    except (ClientError, ProtocolError) as error:
        raise client_error(error, ctx.socket_path) from None
    finally:
        client.close()
    return 0


# --------------------------------------------------------------------------- parsers


def register(subcommands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``start``, ``status``, ``shutdown``, ``upgrade``, ``reload``, ``state``,
    ``logging`` and ``events``."""
    add_command(
        subcommands,
        "start",
        help="run the proxy in the foreground (Ctrl-C stops softly, twice stops now)",
        examples=["sozu -c config.toml start", "SOZU_CONFIG=config.toml sozu start"],
        parents=[common],
        handler=start,
    )
    add_command(
        subcommands,
        "status",
        help="show the workers and whether they answer",
        examples=["sozu -c config.toml status", "sozu --socket /run/sozu.sock status --json"],
        parents=[common],
        handler=status,
    )
    parser = add_command(
        subcommands,
        "shutdown",
        help="stop the proxy: softly (requests in flight finish) or now with --hard",
        examples=["sozu -c config.toml shutdown", "sozu -c config.toml shutdown --hard"],
        parents=[common],
        handler=shutdown,
    )
    parser.add_argument("--hard", action="store_true", help="stop now, cutting connections")
    parser = add_command(
        subcommands,
        "upgrade",
        help="replace the processes by new ones running the installed code, without downtime",
        description="Upgrade the main process, then every worker in turn (or one worker with "
        "--worker). A new worker takes the listening sockets and the state before the old one "
        "finishes its requests.",
        examples=["sozu -c config.toml upgrade", "sozu -c config.toml upgrade --worker 0"],
        parents=[common],
        handler=upgrade,
    )
    parser.add_argument(
        "--worker", type=non_negative, metavar="ID", help="upgrade only this worker"
    )
    parser = add_command(
        subcommands,
        "reload",
        help="re-read the configuration file and apply the difference as one batch",
        examples=["sozu -c config.toml reload", "sozu -c config.toml reload -f new.toml"],
        parents=[common],
        handler=reload,
    )
    parser.add_argument(
        "-f", "--file", metavar="FILE", help="read this file instead of the daemon's own"
    )

    state = add_command(
        subcommands,
        "state",
        help="save, load or count the state's requests",
        examples=[
            "sozu -c config.toml state save -f state.jsonl",
            "sozu -c config.toml state load -f state.jsonl",
            "sozu -c config.toml state stats",
        ],
    )
    verbs = state.add_subparsers(dest="state_command", required=True, metavar="COMMAND")
    parser = add_command(
        verbs,
        "save",
        help="write the state to a file (one JSON request per line)",
        examples=["sozu -c config.toml state save -f /var/lib/sozu/state.jsonl"],
        parents=[common],
        handler=state_save,
    )
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="file to write")
    parser = add_command(
        verbs,
        "load",
        help="apply the requests of a state file (a merge: existing objects are kept)",
        examples=["sozu -c config.toml state load -f /var/lib/sozu/state.jsonl"],
        parents=[common],
        handler=state_load,
    )
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="file to read")
    add_command(
        verbs,
        "stats",
        help="count the requests the state accepted, by type",
        examples=["sozu -c config.toml state stats", "sozu -c config.toml state stats --json"],
        parents=[common],
        handler=state_stats,
    )

    parser = add_command(
        subcommands,
        "logging",
        help="change the log level of the main process and the workers",
        examples=["sozu -c config.toml logging debug", "sozu -c config.toml logging info"],
        parents=[common],
        handler=logging_level,
    )
    parser.add_argument("level", choices=LOG_LEVELS, metavar="LEVEL", help=", ".join(LOG_LEVELS))
    add_command(
        subcommands,
        "events",
        help="print the proxy's events as they happen, until Ctrl-C",
        examples=["sozu -c config.toml events", "sozu -c config.toml events --json | jq .kind"],
        parents=[common],
        handler=events,
    )
