"""Upgrades: a worker replaced by a new one running the installed code, and the main process
re-executing itself (picking up newly installed code) while it keeps its pid, its command
socket and connected clients, the listening sockets, the workers and the state.

A worker upgrade starts the new worker first, from the main state; the old one is then
soft-stopped and finishes its requests (:meth:`.pool.WorkerPool.replace`).

For a main-process upgrade, the running main process stops accepting commands (new clients
wait in the socket's backlog), lets the requests in flight finish, and writes what it holds to
a private file — its settings, the state (a state file: it holds private keys, so mode 0600),
the workers (pid, id, channel descriptor, version), the listening sockets, and every command
connection with the bytes it had received but not yet read (so that no client notices the
switch; the one that asked for the upgrade gets its answer from the new code). Before it
``exec``s anything, the new code proves it can resume from that file: ``python -m
sozu_runtime.main.resume --check FILE`` loads the settings and the state and answers its
version. Only then are the descriptors marked inheritable and ``python -m
sozu_runtime.main.resume FILE`` ``exec``'d. When the check fails, nothing has changed: the old
code answers why and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sozu_config.config import Config
from sozu_config.responses import (
    ErrorKind,
    Response,
    ResponseStatus,
    RunState,
    WorkersContent,
)
from sozu_config.state import ConfigState
from sozu_config.statefile import write_state_file

from .. import __version__
from ..health import HealthMonitor
from .command_socket import CommandServer
from .connections import Asker, CommandConnections
from .pool import WorkerPool
from .replies import fail, ok
from .sockets import ListeningSockets
from .systemd import reloading

log = logging.getLogger("sozu.main")

__all__ = [
    "MainUpgrade",
    "UpgradeRefused",
    "check_new_code",
    "exec_new_main",
    "remove_upgrade_file",
    "update_upgrade_file",
    "upgrade_all_workers",
    "upgrade_worker",
    "upgrade_workers_logged",
    "upgraded_answer",
    "write_upgrade_file",
]

CHECK_TIMEOUT = 60.0  # seconds the new code has to prove it can resume
SWITCH_QUIESCE = 5.0  # seconds a main upgrade waits for the requests in flight


class UpgradeRefused(Exception):
    """The new code cannot take over (the message says why); the old one goes on."""


def write_upgrade_file(data: dict[str, Any], state_text_writer: Any) -> Path:
    """Write ``data`` (JSON) and the state (through ``state_text_writer(path)``) to private
    files; return the path of the JSON file."""
    directory = Path(tempfile.mkdtemp(prefix="sozu-upgrade-"))
    os.chmod(directory, 0o700)
    state_path = directory / "state.jsonl"
    state_text_writer(state_path)
    data = {**data, "state_file": str(state_path)}
    path = directory / "upgrade.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    return path


def update_upgrade_file(path: Path, data: dict[str, Any]) -> None:
    """Complete the upgrade file with ``data`` (its state file is kept)."""
    previous = json.loads(path.read_text())
    text = json.dumps({**previous, **data, "state_file": previous["state_file"]})
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def remove_upgrade_file(path: Path) -> None:
    """Forget an upgrade that did not happen (the folder holds private keys)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(path.parent)


async def check_new_code(path: Path) -> str:
    """Run the installed code's check of ``path``; its version, or UpgradeRefused. The check
    runs in a thread (the standard library's subprocess: it touches no descriptor of this
    process but the pipes it makes)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _check, path)


def _check(path: Path) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sozu_runtime.main.resume", "--check", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UpgradeRefused(
            f"the new code did not answer its check in {CHECK_TIMEOUT:g} s"
        ) from None
    except OSError as error:
        raise UpgradeRefused(f"the new code could not be checked: {error.strerror}") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
        raise UpgradeRefused(f"the new code cannot resume: {lines[-1]}")
    return done.stdout.decode("utf-8", "replace").strip() or "unknown"


def exec_new_main(path: Path, descriptors: list[int]) -> None:
    """Replace this process by a new main process that resumes from ``path`` (returns only
    by raising OSError)."""
    for fd in descriptors:
        try:
            os.set_inheritable(fd, True)
        except OSError as error:
            raise OSError(error.errno, f"{error.strerror} (descriptor {fd})") from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "sozu_runtime.main.resume", str(path)])


# --------------------------------------------------------------------------- worker upgrades


async def upgrade_worker(pool: WorkerPool, worker_id: int) -> Response:
    """Replace a running worker by a new one (the old one finishes its requests)."""
    handle = pool.workers.get(worker_id)
    if handle is None or not handle.alive or handle.run_state is not RunState.RUNNING:
        return fail(f"no running worker {worker_id}", kind=ErrorKind.NOT_FOUND)
    new = await pool.replace(handle, "upgrade")
    if new is None:
        return fail(
            f"worker {worker_id} was not upgraded: the new worker did not start",
            kind=ErrorKind.UNAVAILABLE,
        )
    return ok(
        f"worker {worker_id} (version {handle.version}) replaced by worker {new.id} "
        f"(version {new.version}, pid {new.pid})",
        content=WorkersContent(workers=[new.info()]),
    )


async def upgrade_all_workers(pool: WorkerPool) -> list[Response]:
    """Replace every running worker by a new one, all at once (the new ones start side by
    side; each old one finishes its requests)."""
    running = pool.running()
    return list(await asyncio.gather(*(upgrade_worker(pool, w.id) for w in running)))


async def upgrade_workers_logged(pool: WorkerPool) -> None:
    """Upgrade every worker, and log how each went."""
    for response in await upgrade_all_workers(pool):
        if response.ok:
            log.info("%s", response.message)
        else:
            log.error("%s", response.message)


# --------------------------------------------------------------------------- main upgrade


@dataclass
class _Attempt:
    """What a main upgrade made that is undone when it does not happen."""

    path: Path | None = None
    descriptors: list[int] = field(default_factory=list)


class MainUpgrade:
    """The old main process's half of a main-process upgrade (the new one's is
    :mod:`.resume`)."""

    # Complexity: the main process's parts, given explicitly by the daemon that composes them.
    def __init__(  # noqa: PLR0913
        self,
        config: Config,
        state: ConfigState,
        pool: WorkerPool,
        sockets: ListeningSockets,
        commands: CommandServer,
        connections: CommandConnections,
        health: HealthMonitor,
        *,
        lock: asyncio.Lock,
        started_at: dt.datetime,
    ) -> None:
        self.config = config
        self.state = state
        self.pool = pool
        self.sockets = sockets
        self.commands = commands
        self.connections = connections
        self.health = health
        self.lock = lock
        self.started_at = started_at

    async def upgrade(self, asker: Asker | None, *, then_workers: bool) -> Response:
        """Re-execute this process with the installed code.

        Returns only when that did not happen, with the reason (the old code goes on): when
        it works, the new main process answers the client that asked (``asker``), and with
        ``then_workers`` upgrades every worker next.
        """
        if self.commands.server is None or self.connections.switching is not None:
            return fail(
                "the command socket is not served by this process", kind=ErrorKind.UNSUPPORTED
            )
        reason = await self._switch(asker, then_workers)
        return fail(
            f"the main process was not upgraded: {reason}; it goes on with version {__version__}",
            kind=ErrorKind.UNAVAILABLE,
        )

    async def _switch(self, asker: Asker | None, then_workers: bool) -> str:
        """Hand everything over to the new code and exec it; the reason when it did not."""
        connections = self.connections
        connections.begin_switch()
        command_fd = os.dup(self.commands.listening_socket.fileno())  # keeps it alive
        self.commands.close()  # new clients wait in the kernel backlog for the new code
        attempt = _Attempt()
        try:
            await self._hand_over(attempt, command_fd, asker, then_workers)
            reason = "the new code could not be started"
        except UpgradeRefused as refusal:
            reason = str(refusal)
        except OSError as error:
            reason = f"the new code could not be started: {error.strerror or error}"
        log.error("the main process upgrade did not happen: %s; going on", reason)
        if attempt.path is not None:
            remove_upgrade_file(attempt.path)
        for fd in attempt.descriptors:
            os.close(fd)
        # the same listening socket again: clients waiting in its backlog are served
        await self.commands.adopt(socket.socket(fileno=command_fd))
        connections.end_switch()  # parked connections go on with their lines
        return reason

    async def _hand_over(
        self, attempt: _Attempt, command_fd: int, asker: Asker | None, then_workers: bool
    ) -> None:
        """Write the upgrade file, have the new code check it, and exec the new code
        (returns only when the exec failed)."""
        loop = asyncio.get_running_loop()
        own = 1 if asker is not None else 0
        await self.connections.quiesce(own, loop.time() + SWITCH_QUIESCE)
        async with self.lock:  # no change starts any more
            settings = {"config": self.config.model_dump(mode="json")}
            path = write_upgrade_file(settings, lambda p: write_state_file(self.state, p))
            attempt.path = path
            version = await check_new_code(path)
            # From here to the exec nothing waits: what is handed over (workers that are
            # still there, connections still open) is what exists when the code changes.
            asked = {"version": __version__, "started_at": self.started_at.isoformat()}
            clients, attempt.descriptors = self.connections.handovers(asker, asked)
            data = self._handover_data(command_fd, clients, then_workers)
            update_upgrade_file(path, data)
            log.info("re-executing the main process: version %s -> %s", __version__, version)
            reloading(f"upgrading the main process to version {version}")
            for handler in logging.getLogger("sozu").handlers:
                handler.flush()
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            kept = [
                command_fd,
                *data["sockets"].values(),
                *(worker["fd"] for worker in data["workers"]),
                *attempt.descriptors,
            ]
            exec_new_main(path, kept)

    def _handover_data(
        self, command_fd: int, clients: list[dict[str, Any]], then_workers: bool
    ) -> dict[str, Any]:
        workers, next_worker_id = self.pool.handover()
        return {  # the configuration is in the file already (written before the check)
            "version": self.state.version,
            "next_worker_id": next_worker_id,
            "workers": workers,
            "sockets": self.sockets.descriptors(),
            "command_fd": command_fd,
            "clients": clients,
            "then_workers": then_workers,
            "health": self.health.handover(),
        }


def upgraded_answer(
    asked: dict[str, Any], workers: WorkersContent, started_at: dt.datetime
) -> Response:
    """The answer to ``upgrade_main``, given by the new code once it serves (``asked``: what
    the old code handed over of the request; ``started_at``: when the new code started)."""
    before = asked.get("version", "?")
    started = dt.datetime.fromisoformat(asked["started_at"]) if "started_at" in asked else None
    was = f" (started {started.isoformat(timespec='seconds')})" if started else ""
    return Response(
        id=asked["id"],
        status=ResponseStatus.OK,
        message=f"the main process (pid {os.getpid()}) was upgraded from version "
        f"{before}{was} to version {__version__} (started "
        f"{started_at.isoformat(timespec='seconds')})",
        content=workers,
    )
