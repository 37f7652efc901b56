"""The fleet modes of ``sozu-apply``: ``--source etcd://…`` (once, or ``--watch``),
``--publish etcd://… FILE`` and ``--fleet-status etcd://…``."""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path
from typing import Any

from sozu_config.config import Config

from ..errors import CommandError
from ..output import Output, plural
from ..targets import ApplyExit, given_sockets, mode_of, run_pass, worst
from .etcd import EtcdError
from .publish import publish
from .source import EtcdTls, FleetError, FleetSource, load_snapshot, read_snapshot
from .status import read_fleet_status, show_fleet_status
from .watcher import FleetWatcher

__all__ = ["DEFAULT_LEASE_TTL", "run_fleet"]

DEFAULT_LEASE_TTL = 10
"""Seconds a node stays in the fleet's status after its watcher stops renewing its lease."""


def _tls(args: argparse.Namespace) -> EtcdTls | None:
    files = (args.etcd_ca, args.etcd_cert, args.etcd_key)
    if not any(files):
        return None
    return EtcdTls(*(None if file is None else Path(file) for file in files))


def _source(args: argparse.Namespace, url: str) -> FleetSource:
    try:
        return FleetSource.parse(url, _tls(args))
    except FleetError as error:
        raise CommandError(error.message) from None


def _publish(args: argparse.Namespace, output: Output) -> int:
    source = _source(args, args.publish)
    file = Path(args.file)
    published = asyncio.run(publish(source, file, base_revision=args.base_revision))
    for warning in published.warnings:
        output.warning(warning)
    output.json(
        {
            "source": source.url,
            "file": str(file),
            "revision": published.revision,
            "base_revision": published.base_revision,
            "files": list(published.files),
            "removed": list(published.removed),
        }
    )
    files = f" with {plural(len(published.files), 'file')}" if published.files else ""
    removed = (
        f"; removed {', '.join(published.removed)} (no longer named)" if published.removed else ""
    )
    output.success(
        f"published {file}{files} to {source.url} as revision {published.revision} (base "
        f"revision {published.base_revision}){removed}"
    )
    return ApplyExit.OK


def _fleet_status(args: argparse.Namespace, output: Output) -> int:
    source = _source(args, args.fleet_status)

    async def read() -> Any:
        async with source.client() as client:
            return await read_fleet_status(client, source)

    return show_fleet_status(output, asyncio.run(read()))


def _targets_of(args: argparse.Namespace, config: Config, socket_named: bool) -> list[Path]:
    sockets = given_sockets(args)
    if sockets:
        return sockets
    if socket_named:
        return [config.command_socket]
    raise CommandError(
        "the document's command_socket is not an absolute path: name the proxy with --socket PATH"
    )


def _apply_source(args: argparse.Namespace, output: Output) -> int:
    """One pass against the configuration in etcd, as a file would be applied."""
    source = _source(args, args.source)

    async def read() -> Any:
        async with source.client() as client:
            return await read_snapshot(client, source)

    snapshot = asyncio.run(read())
    mode = mode_of(args)
    loaded = load_snapshot(snapshot)
    for warning in loaded.warnings:
        output.warning(warning)
    if loaded.config is None:
        for error in loaded.errors:
            output.error(f"{error} (nothing was changed)")
        output.json(
            {
                "source": source.url,
                "revision": snapshot.revision,
                "mode": mode,
                "error": "the configuration is not usable",
                "errors": list(loaded.errors),
                "targets": [],
            }
        )
        return ApplyExit.ERROR
    output.note(f"{source.url}: revision {snapshot.revision}")
    sockets = _targets_of(args, loaded.config, loaded.socket_named)
    targets = run_pass(args, output, loaded.config, sockets)
    output.json(
        {
            "source": source.url,
            "revision": snapshot.revision,
            "mode": mode,
            "targets": [t.to_json() for t in targets],
        }
    )
    return worst([t.code for t in targets])


def _watch_source(args: argparse.Namespace, output: Output, retries: int) -> int:
    source = _source(args, args.source)

    def apply_once(config: Config, sockets: list[Path]) -> tuple[int, list[str]]:
        targets = run_pass(args, output, config, sockets, retries=retries)
        output.json(
            {"source": source.url, "mode": "apply", "targets": [t.to_json() for t in targets]},
            compact=True,
        )
        return worst([t.code for t in targets]), [t.message for t in targets if t.code]

    watcher = FleetWatcher(
        source,
        output,
        apply_once,
        node=args.node or socket.gethostname(),
        sockets=given_sockets(args),
        lease_ttl=args.lease_ttl or DEFAULT_LEASE_TTL,
    )
    output.note(
        f"following {source.url} as node {watcher.status.node} (lease {watcher.lease_ttl} s; "
        "Ctrl-C stops)"
    )
    return asyncio.run(watcher.run())


def validate_fleet(args: argparse.Namespace) -> None:
    """Refuse the fleet options given where they mean nothing."""
    fleet_modes = [
        flag
        for flag, given in (
            ("--source", args.source),
            ("--publish", args.publish),
            ("--fleet-status", args.fleet_status),
        )
        if given
    ]
    conflicts = [
        (len(fleet_modes) > 1, f"give one of {' and '.join(fleet_modes)}"),
        (
            bool(fleet_modes) and bool(args.diff or args.against or args.plan),
            "--diff, --against and --plan read files: not with --source, --publish or "
            "--fleet-status",
        ),
        (args.publish and not args.file, "--publish needs FILE: sozu-apply --publish URL FILE"),
        (
            bool(args.publish or args.fleet_status)
            and bool(
                args.watch or args.check or args.dry_run or args.out or args.sockets or args.plan
            ),
            "--publish and --fleet-status only talk to etcd: no --watch, --check, --dry-run, "
            "--out, --plan or --socket",
        ),
        (args.fleet_status and args.file, "--fleet-status takes no FILE"),
        (args.source and args.file, "give FILE or --source, not both"),
        (args.source and args.out, "--out saves a plan of a FILE: not with --source"),
        (
            (args.node or args.lease_ttl) and not (args.source and args.watch),
            "--node and --lease-ttl go with --watch --source",
        ),
        (
            args.node is not None and (not args.node or "/" in args.node),
            f"--node {args.node!r}: a node's name is not empty and has no '/'",
        ),
        (
            bool(args.etcd_ca or args.etcd_cert or args.etcd_key) and not fleet_modes,
            "--etcd-ca, --etcd-cert and --etcd-key go with an etcds:// --source, --publish or "
            "--fleet-status",
        ),
        (args.etcd_key and not args.etcd_cert, "--etcd-key goes with --etcd-cert"),
        (
            args.base_revision is not None and not args.publish,
            "--base-revision goes with --publish",
        ),
    ]
    for conflict, message in conflicts:
        if conflict:
            raise CommandError(message)


def run_fleet(args: argparse.Namespace, output: Output, *, retries: int) -> int | None:
    """Run a fleet mode, or return None when none was asked for."""
    validate_fleet(args)
    try:
        if args.publish:
            return _publish(args, output)
        if args.fleet_status:
            return _fleet_status(args, output)
        if args.source and args.watch:
            return _watch_source(args, output, retries)
        if args.source:
            return _apply_source(args, output)
    except (FleetError, EtcdError) as error:
        raise CommandError(error.message) from None
    return None
