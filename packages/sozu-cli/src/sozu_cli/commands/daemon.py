"""The daemon's life: start it, ask how it is, stop, upgrade, reload, save and load its state,
change its log level, follow its events."""

from __future__ import annotations

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
    Response,
    ResponseStatus,
    SaveState,
    SoftStop,
    Status,
    SubscribeEvents,
    UpgradeMain,
    UpgradeWorker,
)
from sozu_config.responses import BatchResults, EventContent, RequestCounts, WorkersContent

from ..arguments import non_negative
from ..context import Context, client_error, content_of
from ..declarations import Arg, Command, Completer, literal_values
from ..errors import DaemonFailure, ExitCode, Unreachable, UsageError
from ..output import Output, plural

__all__ = ["COMMANDS", "show_processes"]

LOG_LEVELS = literal_values(Logging, "level")


# --------------------------------------------------------------------------- start


def start(ctx: Context) -> int:
    """Run the daemon in the foreground (exit 1 when the configuration does not load)."""
    from sozu_config.config import ConfigError, load_config

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


def _moment(moment: dt.datetime | None) -> str:
    """An instant as RFC 3339 UTC, to the second."""
    if moment is None:
        return "-"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def show_processes(output: Output, content: WorkersContent) -> None:
    """The main process (when the daemon says) and the workers: pid, version, start, state."""
    rows: list[list[Any]] = []
    main = content.main
    if main is not None:
        rows.append(["main", main.pid, main.version, _moment(main.started_at), "running"])
    rows += [
        [f"worker {w.id}", w.pid, w.version or "-", _moment(w.started_at), w.run_state.value]
        for w in content.workers
    ]
    output.table(["PROCESS", "PID", "VERSION", "STARTED", "STATE"], rows)


def status(ctx: Context) -> int:
    response = ctx.send(Status())

    def render(content: Any) -> None:
        show_processes(ctx.output, content_of(response, WorkersContent))
        ctx.output.print(response.message)

    return ctx.finish(response, render)


# --------------------------------------------------------------------------- shutdown, upgrade


def shutdown(ctx: Context) -> int:
    return ctx.run(HardStop() if ctx.args.hard else SoftStop())


def upgrade(ctx: Context) -> int:
    """One worker with ``--worker``; else the main process, then every worker at once.

    The main process answers once the new code serves; every worker is then replaced side by
    side (each new one starts before its old one finishes its requests). Every step waits as
    long as changes do, and reconnects while the main process re-executes itself."""
    output = ctx.output
    if ctx.args.worker is not None:
        return ctx.run(UpgradeWorker(worker_id=ctx.args.worker))
    before = content_of(ctx.send_patiently(Status()), WorkersContent)
    steps: list[dict[str, Any]] = []

    def step(target: str, response: Any, version_before: str | None, after: Any) -> bool:
        steps.append(
            {
                "target": target,
                "status": response.status.value,
                "message": response.message,
                "version_before": version_before,
                "version_after": after.version if after is not None else None,
                "pid_after": after.pid if after is not None else None,
            }
        )
        if response.ok:
            output.success(f"{target}: {response.message or 'upgraded'}")
        elif not output.json_mode:
            output.print(f"{target}: {response.message}", style="red")
        return bool(response.ok)

    main_response = _upgrade_main(ctx, before)
    main_after = _described(main_response).main
    main_upgraded = step(
        "main process",
        main_response,
        before.main.version if before.main else None,
        main_after,
    )
    from concurrent.futures import ThreadPoolExecutor

    workers = content_of(ctx.send_patiently(ListWorkers()), WorkersContent).workers
    running = [w for w in workers if w.run_state.value == "running"]
    with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
        answers = list(
            pool.map(lambda w: ctx.send_patiently(UpgradeWorker(worker_id=w.id)), running)
        )
    failed_workers = []
    for worker, answer in zip(running, answers, strict=True):
        described = _described(answer).workers
        new = described[0] if described else None
        if not step(f"worker {worker.id}", answer, worker.version, new):
            failed_workers.append(worker.id)
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


def _described(response: Response) -> WorkersContent:
    """The processes an upgrade answer describes (none when it failed)."""
    content = response.content
    if response.ok and isinstance(content, WorkersContent):
        return content
    return WorkersContent(workers=[])


def _upgrade_main(ctx: Context, before: WorkersContent) -> Response:
    """``upgrade_main``, answered by the new code. A connection that ends without an answer
    (a daemon that answers before it re-executes, or a new code that failed) is followed by a
    status: the main process was upgraded when it answers with a new start."""
    try:
        return ctx.send(UpgradeMain())
    except Unreachable:
        pass
    now = content_of(ctx.send_patiently(Status()), WorkersContent)
    if (
        now.main is not None
        and before.main is not None
        and now.main.started_at != before.main.started_at
    ):
        return Response(
            id="",
            status=ResponseStatus.OK,
            message=f"the main process (pid {now.main.pid}) runs version {now.main.version} "
            f"since {now.main.started_at.isoformat(timespec='seconds')}",
            content=now,
        )
    return Response(
        id="",
        status=ResponseStatus.FAILURE,
        message="the daemon ended the connection without answering, and still runs the old code",
    )


# --------------------------------------------------------------------------- reload, state


def _existing_file(text: str, what: str) -> Path:
    path = Path(text).expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"{what} {text!r} does not exist (or is not a file)")
    return path


def reload(ctx: Context) -> int:
    """The daemon's answer, then each change applied on a line of its own."""
    path = _existing_file(ctx.args.file, "the configuration file") if ctx.args.file else None
    response = ctx.send(ReloadConfiguration(path=str(path) if path else None))

    def render(content: Any) -> None:
        ctx.output.success(response.message)
        if isinstance(content, BatchResults):
            for result in content.results:
                ctx.output.print(f"  {result.request}")

    return ctx.finish(response, render)


def state_save(ctx: Context) -> int:
    path = Path(ctx.args.file).expanduser().absolute()
    if not path.parent.is_dir():
        raise UsageError(
            f"cannot save the state to {path}: the folder {path.parent} does not exist"
        )
    return ctx.run(SaveState(path=str(path)))


def state_load(ctx: Context) -> int:
    """Exit 1 when the daemon skipped records (each listed: line, request, why)."""
    path = _existing_file(ctx.args.file, "the state file")
    response = ctx.send(LoadState(path=str(path)))
    if not response.ok:
        return ctx.finish(response)
    skipped = response.content.results if isinstance(response.content, BatchResults) else []
    output = ctx.output
    output.json(
        {
            "status": "failure" if skipped else "ok",
            "message": response.message,
            "skipped": [
                {"line": r.index, "request": r.request, "message": r.message} for r in skipped
            ],
        }
    )
    if not skipped:
        output.success(response.message)
        return 0
    output.print(response.message)
    for record in skipped:
        output.print(f"  line {record.index}: {record.request}: {record.message}")
    output.error(
        f"{path}: not every record was applied ({plural(len(skipped), 'skipped record')} "
        "listed on stdout)"
    )
    return ExitCode.FAILURE


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
    """``<RFC 3339 UTC time> kind key=value … message`` (the daemon's time of the event)."""
    moment = event.time or dt.datetime.now(dt.UTC)
    stamp = moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{stamp} {event.describe()}"


def events(ctx: Context) -> int:
    """Print events until Ctrl-C (exit 0). When the event stream ends (the main process was
    upgraded and could not keep this connection), subscribe again and say so; exit 3 when
    the daemon does not come back within the long wait."""
    output = ctx.output
    subscribed_once = False
    while True:
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
                    return 0
                elif not subscribed_once:
                    subscribed_once = True
                    output.note(
                        f"{response.message or 'subscribed'} on {ctx.socket_path} (Ctrl-C stops)"
                    )
                else:
                    output.note("the event stream ended (main process upgrade?): following again")
        except KeyboardInterrupt:
            return 0
        except DaemonUnreachable:
            pass  # the stream ended: subscribe again below
        except (ClientError, ProtocolError) as error:
            raise client_error(error, ctx.socket_path) from None
        finally:
            client.close()
        _wait_for_daemon(ctx)


def _wait_for_daemon(ctx: Context) -> None:
    """Wait (the long wait at most) until the daemon answers again; Unreachable otherwise."""
    try:
        ctx.send_patiently(Status())
    except Unreachable:
        raise Unreachable(
            f"the daemon at {ctx.socket_path} ended the event stream and does not answer "
            "(it stopped?): run 'sozu events' again once it answers"
        ) from None


# --------------------------------------------------------------------------- commands

_FILE = Completer.FILE


def _file_arg(help: str, *, required: bool = True) -> Arg:
    """``-f/--file FILE``, completed as a file name."""
    return Arg(("-f", "--file"), required=required, metavar="FILE", completer=_FILE, help=help)


COMMANDS = (
    Command(
        "start",
        help="run the proxy in the foreground (Ctrl-C stops softly, twice stops now)",
        examples=["sozu -c config.toml start", "SOZU_CONFIG=config.toml sozu start"],
        handler=start,
    ),
    Command(
        "status",
        help="show the workers and whether they answer",
        examples=["sozu -c config.toml status", "sozu --socket /run/sozu.sock status --json"],
        handler=status,
    ),
    Command(
        "shutdown",
        help="stop the proxy: softly (requests in flight finish) or now with --hard",
        examples=["sozu -c config.toml shutdown", "sozu -c config.toml shutdown --hard"],
        args=[Arg(("--hard",), action="store_true", help="stop now, cutting connections")],
        handler=shutdown,
    ),
    Command(
        "upgrade",
        help="replace the processes by new ones running the installed code, without downtime",
        description="Upgrade the main process, then every worker in turn (or one worker with "
        "--worker). A new worker takes the listening sockets and the state before the old one "
        "finishes its requests.",
        examples=["sozu -c config.toml upgrade", "sozu -c config.toml upgrade --worker 0"],
        args=[Arg(("--worker",), type=non_negative, metavar="ID", help="upgrade only this worker")],
        handler=upgrade,
    ),
    Command(
        "reload",
        help="re-read the configuration file and apply the difference as one batch",
        examples=["sozu -c config.toml reload", "sozu -c config.toml reload -f new.toml"],
        args=[_file_arg("read this file instead of the daemon's own", required=False)],
        handler=reload,
    ),
    Command(
        "state",
        help="save, load or count the state's requests",
        examples=[
            "sozu -c config.toml state save -f state.jsonl",
            "sozu -c config.toml state load -f state.jsonl",
            "sozu -c config.toml state stats",
        ],
        subcommands=[
            Command(
                "save",
                help="write the state to a file (one JSON request per line)",
                examples=["sozu -c config.toml state save -f /var/lib/sozu/state.jsonl"],
                args=[_file_arg("file to write")],
                handler=state_save,
            ),
            Command(
                "load",
                help="apply the requests of a state file (a merge: existing objects are kept); "
                "exit 1 when records were skipped, each listed with its line and why",
                examples=["sozu -c config.toml state load -f /var/lib/sozu/state.jsonl"],
                args=[_file_arg("file to read")],
                handler=state_load,
            ),
            Command(
                "stats",
                help="count the requests the state accepted, by type",
                examples=[
                    "sozu -c config.toml state stats",
                    "sozu -c config.toml state stats --json",
                ],
                handler=state_stats,
            ),
        ],
    ),
    Command(
        "logging",
        help="change the log level of the main process and the workers",
        examples=["sozu -c config.toml logging debug", "sozu -c config.toml logging info"],
        args=[Arg(("level",), choices=LOG_LEVELS, metavar="LEVEL", help=", ".join(LOG_LEVELS))],
        handler=logging_level,
    ),
    Command(
        "events",
        help="print the proxy's events as they happen, until Ctrl-C",
        examples=["sozu -c config.toml events", "sozu -c config.toml events --json | jq .kind"],
        handler=events,
    ),
)
"""``start``, ``status``, ``shutdown``, ``upgrade``, ``reload``, ``state``, ``logging`` and
``events``."""
