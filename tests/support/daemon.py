"""Running the real daemon in tests: a `sozu start` process on 127.0.0.1, stopped afterwards;
and :func:`serving_process`, which of its processes holds a client's connection (from /proc)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sozu_config import CommandClient, DaemonUnreachable, Response, SaveState, Status
from sozu_config.client import CommandTimeout

STARTUP_TIMEOUT = 30.0
# argv: limit, command...: sets RLIMIT_NOFILE to the limit, then becomes the command
_LIMITED_LAUNCHER = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _listening_range() -> tuple[int, int]:
    """Ports for the listeners tests start: below the range the kernel draws the local ports
    of outgoing connections from (``ip_local_port_range``), so that a port chosen now is not
    taken by some connection's local end before the daemon binds it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - 16384), max(1025, low)


_PORTS = random.Random()  # seeded from the system: each test process draws its own ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, for a listener a test starts."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free right now (all bound at once
    while they are chosen, so that no two are the same), outside the range of the local ports
    of outgoing connections (see :func:`_listening_range`)."""
    low, high = _listening_range()
    sockets: list[socket.socket] = []
    try:
        for _ in range(10_000):
            if len(sockets) == count:
                return [int(sock.getsockname()[1]) for sock in sockets]
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", _PORTS.randrange(low, high)))
            except OSError:  # taken: draw again
                sock.close()
                continue
            sockets.append(sock)
        raise RuntimeError(f"no {count} free ports found in {low}-{high}")
    finally:
        for sock in sockets:
            sock.close()


def _socket_inodes(port: int, peer_port: int) -> set[int]:
    """Inodes of the TCP sockets from 127.0.0.1:``port`` to 127.0.0.1:``peer_port``."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if (
                    int(local.rsplit(":", 1)[1], 16) == port
                    and int(remote.rsplit(":", 1)[1], 16) == peer_port
                ):
                    found.add(inode)
    return found


def serving_process(proxy_port: int, client_port: int, pids: Iterable[int]) -> int | None:
    """The pid (among ``pids``) holding the proxy side of the client connection whose local
    port is ``client_port``, or None when none of them holds it (read from ``/proc``)."""
    inodes = _socket_inodes(proxy_port, client_port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        with contextlib.suppress(OSError):
            for entry in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(entry.path) in wanted:
                        return pid
    return None


def sozu_command() -> list[str]:
    return [sys.executable, "-m", "sozu_cli.main"]


class DaemonProcess:
    """A daemon started from a config text (written to ``directory/config.toml``)."""

    def __init__(self, directory: Path, config_text: str, *, name: str = "config.toml") -> None:
        self.directory = directory
        self.config_path = directory / name
        self.socket_path = directory / "sozu.sock"
        if "command_socket" not in config_text:
            config_text = f'command_socket = "{self.socket_path}"\n' + config_text
        self.config_path.write_text(config_text)
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self,
        *,
        wait: bool = True,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
    ) -> DaemonProcess:
        """Start ``sozu start``; ``open_files`` sets the process's open files limit (soft and
        hard), which its workers inherit."""
        command = [*sozu_command(), "-c", str(self.config_path), "start"]
        if open_files is not None:  # set by a small launcher (no preexec_fn: tests use threads)
            command = [sys.executable, "-c", _LIMITED_LAUNCHER, str(open_files), *command]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited with {self.process.returncode}:\n{self.logs()}"
                )
            try:
                with CommandClient(self.socket_path, timeout=5) as client:
                    response = client.send(Status())
                    if response.ok and response.content is not None:
                        workers = getattr(response.content, "workers", [])
                        if workers and all(w.run_state == "running" for w in workers):
                            return
            except (DaemonUnreachable, CommandTimeout):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the daemon did not become ready:\n{self.logs()}")

    def send(self, request: Any, *, timeout: float = 30.0) -> Response:
        with CommandClient(self.socket_path, timeout=timeout) as client:
            return client.send(request)

    def client(self, timeout: float = 30.0) -> CommandClient:
        return CommandClient(self.socket_path, timeout=timeout)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        from sozu_config import ListWorkers

        response = self.send(ListWorkers())
        return [w.pid for w in response.content.workers]  # type: ignore[union-attr]

    def stop(self, *, timeout: float = 20.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait(5)

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.kill()


class EventRecorder:
    """The events a daemon pushes to subscribers, collected by a thread that iterates
    ``CommandClient.events()``.

    :meth:`start` returns once the subscription is known to be live: it saves the state to a
    scratch file until the matching ``state_saved`` event comes back (events emitted before
    the subscription took effect are never delivered, so a test must not act before that).
    With ``resubscribe`` the thread subscribes again when the daemon ends the subscription (a
    main-process upgrade closes every client connection), for up to ``resubscribe_window``
    seconds of trying to reconnect; ``subscriptions`` counts the subscriptions made.
    """

    def __init__(
        self, daemon: DaemonProcess, *, resubscribe: bool = False, resubscribe_window: float = 15.0
    ) -> None:
        self.daemon = daemon
        self.resubscribe = resubscribe
        self.resubscribe_window = resubscribe_window
        self.events: list[Any] = []
        self.subscriptions = 0
        self.ended = threading.Event()
        """Set when the thread is done (the subscription ended and was not renewed)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client: CommandClient | None = None
        self._thread: threading.Thread | None = None
        self.barrier = daemon.directory / f"events-barrier-{id(self):x}.state"

    def start(self, timeout: float = 15.0) -> EventRecorder:
        self._thread = threading.Thread(target=self._run, daemon=True, name="events")
        self._thread.start()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.daemon.send(SaveState(path=str(self.barrier)))
            if self.find("state_saved", lambda e: e.message == str(self.barrier), since=0):
                return self
            time.sleep(0.1)
        raise AssertionError(f"the event subscription did not start within {timeout} s")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                client = CommandClient(self.daemon.socket_path, timeout=5.0)
                try:
                    client.connect()
                except (DaemonUnreachable, CommandTimeout):
                    if self._retry_connect(client):
                        continue
                    return
                self._client = client
                self.subscriptions += 1
                try:
                    for event in client.events():
                        with self._lock:
                            self.events.append(event)
                finally:
                    client.close()
                if not self.resubscribe or self._stop.is_set():
                    return
        finally:
            self.ended.set()

    def _retry_connect(self, client: CommandClient) -> bool:
        """Keep trying to connect (the daemon may be re-executing); False when giving up."""
        deadline = time.monotonic() + self.resubscribe_window
        while self.resubscribe and not self._stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                client.connect()
            except (DaemonUnreachable, CommandTimeout):
                continue
            client.close()
            return True
        return False

    def stop(self) -> None:
        """End the subscription (bounded) and the thread."""
        self._stop.set()
        client = self._client
        # the thread blocks in a read without timeout: shutting the socket down wakes it
        sock = getattr(client, "_socket", None) if client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> EventRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.events)

    def mark(self) -> int:
        """The number of events so far: pass it as ``since`` to look only at later ones."""
        with self._lock:
            return len(self.events)

    def find(self, kind: str, predicate: Any = None, *, since: int = 0) -> list[Any]:
        """Events of ``kind`` (received after the ``since`` mark) that satisfy ``predicate``."""
        return [
            e
            for e in self.snapshot()[since:]
            if e.kind == kind and (predicate is None or predicate(e))
        ]

    def wait_for(
        self, kind: str, predicate: Any = None, *, since: int = 0, timeout: float = 10.0
    ) -> Any:
        """The first event of ``kind`` (after ``since``) satisfying ``predicate``; fails after
        ``timeout`` seconds listing the events received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(kind, predicate, since=since)
            if found:
                return found[0]
            time.sleep(0.02)
        seen = [f"{e.kind}({e.message or e.backend_id or ''})" for e in self.snapshot()[since:]]
        raise AssertionError(f"no {kind} event within {timeout} s; events received: {seen}")
