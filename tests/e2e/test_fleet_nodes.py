"""A fleet fed from etcd, end to end: a real etcd server, three real proxies — each in a
network namespace of its own, so that all three listen on the same address and serve the very
same published document, as three machines would — each followed by a
``sozu-apply --watch --source etcd://…`` watcher, and ``sozu-apply --publish`` and
``--fleet-status`` run as a user runs them.

What a node serves is read with real requests on its listener (curl, run in the node's
namespace). The change published is the answer template the document names: a file, so each
change goes through ``PREFIX/files/``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.daemon import DaemonProcess, free_port
from support.etcd import EtcdServer

from sozu_cli.fleet import FleetSource, publish

PREFIX = "sozu/fleet"
NODES = ("node-a", "node-b", "node-c")
LEASE_TTL = 2
WAIT = 30.0  # seconds: bound of every wait for the fleet to act
SERVE_BOUND = 2.0  # seconds: a published change is served by every node within this

# Run inside a new user and network namespace: brings its loopback up, then becomes the
# command (argv[1:]). SIOCGIFFLAGS / SIOCSIFFLAGS on "lo", IFF_UP.
_LOOPBACK_UP = (
    "import fcntl, os, socket, struct, sys; s = socket.socket(socket.AF_INET, "
    "socket.SOCK_DGRAM); r = struct.pack('16sh', b'lo', 0); "
    "f = struct.unpack('16sh', fcntl.ioctl(s, 0x8913, r))[1]; "
    "fcntl.ioctl(s, 0x8914, struct.pack('16sh', b'lo', f | 1)); os.execv(sys.argv[1], sys.argv[1:])"
)


pytestmark = pytest.mark.e2e


class NodeDaemon(DaemonProcess):
    """A daemon alone in a network namespace (the command socket is a file: reachable)."""

    def start(
        self,
        *,
        wait: bool = True,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
    ) -> NodeDaemon:
        command = [
            "unshare",
            "-rn",
            sys.executable,
            "-c",
            _LOOPBACK_UP,
            sys.executable,
            "-m",
            "sozu_cli.main",
            "-c",
            str(self.config_path),
            "start",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def get(self, port: int, host: str = "app.example.com") -> str | None:
        """The body the proxy answers to ``GET /`` for ``host`` (None: no answer)."""
        completed = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.pid),
                "-U",
                "-n",
                "--preserve-credentials",
                "curl",
                "-s",
                "-m",
                "2",
                "-H",
                f"Host: {host}",
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return completed.stdout if completed.returncode == 0 else None


@dataclass
class Watcher:
    node: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _apply_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "sozu_cli.apply", *map(str, args)]


def sozu_apply(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _apply_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def document(port: int, answer: str = "answer.http") -> str:
    return f"""worker_count = 1

[[listeners]]
protocol = "http"
address = "127.0.0.1:{port}"

[clusters.app]
protocol = "http"
answer_503 = "{answer}"
frontends = [{{ address = "127.0.0.1:{port}", hostname = "app.example.com" }}]
"""


def template(body: str) -> str:
    return (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    )


class Fleet:
    """etcd, three nodes and their watchers; the published folder; helpers to wait on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etcd = EtcdServer(root)
        self.port = free_port()
        self.source = self.etcd.source(PREFIX)
        self.folder = root / "published"
        self.folder.mkdir()
        self.daemons: dict[str, NodeDaemon] = {}
        self.watchers: dict[str, Watcher] = {}

    def start(self) -> None:
        self.etcd.start()
        for node in NODES:
            directory = self.root / node
            directory.mkdir()
            self.daemons[node] = NodeDaemon(directory, "worker_count = 1\n").start(wait=False)
        for daemon in self.daemons.values():
            daemon.wait_ready()
        for node in NODES:
            self.start_watcher(node)

    def start_watcher(self, node: str) -> Watcher:
        log = self.root / f"watch-{node}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                _apply_command(
                    "--watch",
                    "--source",
                    self.source,
                    "--socket",
                    self.daemons[node].socket_path,
                    "--node",
                    node,
                    "--lease-ttl",
                    str(LEASE_TTL),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.watchers[node] = Watcher(node, process, log)
        return self.watchers[node]

    def stop(self) -> None:
        for watcher in self.watchers.values():
            if watcher.process.poll() is None:
                watcher.process.send_signal(signal.SIGTERM)
        for watcher in self.watchers.values():
            try:
                watcher.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(watcher.process.pid, signal.SIGKILL)
                watcher.process.wait(5)
        for daemon in self.daemons.values():
            daemon.stop()
            daemon.kill()
        self.etcd.stop()

    # ------------------------------------------------------------------ acting

    def write(self, body: str, *, text: str | None = None) -> Path:
        (self.folder / "answer.http").write_text(template(body))
        config = self.folder / "config.toml"
        config.write_text(text if text is not None else document(self.port))
        return config

    def publish(self, body: str) -> subprocess.CompletedProcess[str]:
        result = sozu_apply("--publish", self.source, self.write(body))
        assert result.returncode == 0, self.explain(result.stderr)
        return result

    def put_raw(self, key: str, value: str) -> None:
        """Write a key as a human with etcdctl would: no check."""
        body = json.dumps(
            {
                "key": base64.b64encode(f"/{PREFIX}/{key}".encode()).decode(),
                "value": base64.b64encode(value.encode()).decode(),
            }
        ).encode()
        with urllib.request.urlopen(f"{self.etcd.url}/v3/kv/put", data=body, timeout=5) as answer:
            assert answer.status == 200

    def status_keys(self) -> set[str]:
        """The nodes with a status key, read straight from etcd (no command to start)."""
        root = f"/{PREFIX}/status/"
        body = json.dumps(
            {
                "key": base64.b64encode(root.encode()).decode(),
                "range_end": base64.b64encode((root[:-1] + "0").encode()).decode(),
                "keys_only": True,
            }
        ).encode()
        with urllib.request.urlopen(f"{self.etcd.url}/v3/kv/range", data=body, timeout=5) as answer:
            kvs = json.loads(answer.read()).get("kvs", [])
        return {base64.b64decode(kv["key"]).decode().removeprefix(root) for kv in kvs}

    def status(self) -> tuple[int, dict[str, object]]:
        result = sozu_apply("--fleet-status", self.source, "--json")
        assert result.returncode in (0, 2), self.explain(result.stderr)
        data = json.loads(result.stdout)
        return result.returncode, data

    # ------------------------------------------------------------------ waiting

    def explain(self, what: str) -> str:
        said = "".join(f"\n--- {w.log.name}\n{w.output()[-3000:]}" for w in self.watchers.values())
        return f"{what}{said}\n--- etcd\n{self.etcd.logs()[-1500:]}"

    def wait(self, predicate: Callable[[], bool], what: str, bound: float = WAIT) -> float:
        """Wait for ``predicate`` (bounded); returns the time it took."""
        start = time.monotonic()
        while time.monotonic() - start < bound:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(self.explain(f"not within {bound} s: {what}"))

    def serving(self, body: str, nodes: tuple[str, ...] = NODES) -> bool:
        return all(self.daemons[node].get(self.port) == body for node in nodes)

    def wait_serving(self, body: str, nodes: tuple[str, ...] = NODES) -> float:
        return self.wait(lambda: self.serving(body, nodes), f"{nodes} serving {body!r}")

    def nodes_status(self) -> dict[str, dict[str, object]]:
        _, data = self.status()
        return {node["node"]: node for node in data["nodes"]}  # type: ignore[attr-defined,index]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path)
    try:
        running.start()
        running.publish("v1")
        running.wait_serving("v1")
        yield running
    finally:
        running.stop()


def test_a_published_change_is_served_by_all_three_nodes_within_two_seconds(
    fleet: Fleet,
) -> None:
    # measured from the start of the publish (its check and its transaction included), made
    # with the library's publish: the time of the command's own start-up is not the fleet's
    config = fleet.write("v2")
    started = time.monotonic()
    published = asyncio.run(publish(FleetSource.parse(fleet.source), config, base_revision=None))
    committed = time.monotonic() - started
    fleet.wait(lambda: fleet.serving("v2"), "every node serving v2")
    took = time.monotonic() - started
    # the same with the command, measured from its start (Python's start-up included)
    config = fleet.write("v3")
    started = time.monotonic()
    result = sozu_apply("--publish", fleet.source, config)
    assert result.returncode == 0, result.stderr
    fleet.wait(lambda: fleet.serving("v3"), "every node serving v3")
    took_command = time.monotonic() - started
    print(
        f"\npublish to served by all three: {took:.3f} s (the transaction returned after "
        f"{committed:.3f} s); with sozu-apply --publish, from the command's start: "
        f"{took_command:.3f} s"
    )
    assert took <= SERVE_BOUND, fleet.explain(f"took {took:.3f} s")
    revision = int(result.stdout.split(" as revision ")[1].split()[0])
    assert revision > published.revision
    fleet.wait(
        lambda: fleet.status() == (0, {**fleet.status()[1], "revision": revision}),
        "every node in sync in the fleet status",
    )
    code, data = fleet.status()
    assert code == 0 and data["in_sync"] is True
    assert sorted(node["node"] for node in data["nodes"]) == list(NODES)  # type: ignore[attr-defined]
    assert all(node["revision"] == revision for node in data["nodes"])  # type: ignore[attr-defined]


def test_a_bad_document_is_refused_by_every_watcher_and_each_status_says_why(
    fleet: Fleet,
) -> None:
    good = fleet.nodes_status()["node-a"]["revision"]
    # a human edits the document in etcd directly: an unknown key on line 1
    fleet.put_raw("config.toml", "colour = 'blue'\n" + document(fleet.port))

    def all_refused() -> bool:
        nodes = fleet.nodes_status()
        return len(nodes) == 3 and all(node["error"] for node in nodes.values())

    fleet.wait(all_refused, "every node reporting the refused revision")
    for node, status in fleet.nodes_status().items():
        assert status["revision"] == good, (node, status)
        assert f"{fleet.source}/config.toml: top-level key 'colour': line 1, column 1" in str(
            status["error"]
        ), (node, status)
        assert status["refused_revision"] not in (None, good)
    code, _ = fleet.status()
    assert code == 2
    listing = sozu_apply("--fleet-status", fleet.source)
    assert listing.returncode == 2
    assert listing.stdout.count("error") >= 3, listing.stdout
    # none changed: each still serves the last good revision
    assert fleet.serving("v1")
    for watcher in fleet.watchers.values():
        assert "unknown top-level key" in watcher.output()
    # the next good revision is applied everywhere
    fleet.publish("v6")
    fleet.wait_serving("v6")
    fleet.wait(lambda: fleet.status()[0] == 0, "every node in sync again")


def test_watchers_catch_up_after_etcd_stops_and_comes_back(fleet: Fleet) -> None:
    fleet.etcd.stop()
    fleet.wait(
        lambda: all("unreachable" in w.output() for w in fleet.watchers.values()),
        "every watcher noticing etcd is gone",
    )
    time.sleep(0.5)
    assert fleet.serving("v1"), "the proxies keep their configuration without etcd"
    assert all(w.process.poll() is None for w in fleet.watchers.values())
    fleet.etcd.start()
    # published as soon as etcd is back, before the watchers have found it again
    fleet.publish("v4")
    fleet.wait_serving("v4")
    fleet.wait(lambda: fleet.status()[0] == 0, "every node in sync after the outage")
    for watcher in fleet.watchers.values():
        assert "answers again" in watcher.output()


def test_a_killed_node_disappears_from_the_fleet_status_after_its_lease(fleet: Fleet) -> None:
    fleet.wait(lambda: len(fleet.nodes_status()) == 3, "three nodes in the status")
    victim = fleet.watchers["node-b"].process
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(5)
    killed = time.monotonic()
    assert "node-b" in fleet.status_keys(), "the lease has not expired yet"
    fleet.wait(
        lambda: set(fleet.nodes_status()) == {"node-a", "node-c"},
        "node-b leaving the status",
        bound=LEASE_TTL + 10,
    )
    print(f"\nnode-b left the fleet status {time.monotonic() - killed:.1f} s after it was killed")
    # a watcher stopped properly leaves at once (its lease is revoked)
    fleet.watchers["node-c"].process.send_signal(signal.SIGTERM)
    assert fleet.watchers["node-c"].process.wait(10) == 0
    assert set(fleet.nodes_status()) == {"node-a"}
    # the node that stayed still follows the fleet
    fleet.publish("v5")
    fleet.wait_serving("v5", ("node-a",))


def test_watchers_notice_a_silent_etcd_and_catch_up_when_it_answers(fleet: Fleet) -> None:
    # etcd stopped with SIGSTOP: the connections stay open, nothing answers (a cut network)
    assert fleet.etcd.process is not None
    pid = fleet.etcd.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        fleet.wait(
            lambda: all("no answer" in w.output() for w in fleet.watchers.values()),
            "every watcher noticing etcd is silent",
        )
        assert fleet.serving("v1"), "the proxies keep their configuration"
    finally:
        os.kill(pid, signal.SIGCONT)
    fleet.publish("v7")
    fleet.wait_serving("v7")
    fleet.wait(lambda: fleet.status()[0] == 0, "every node in sync after the silence")
