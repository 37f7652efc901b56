"""``reload_configuration``: the daemon re-reads its configuration file (or another file) and
applies the real difference — additions, removals and changes — as one all-or-nothing batch.

This is a deliberate deviation from sōzu 2.1, whose reload only adds (reference §D.6, §L.2;
DESIGN.md §5). What these tests hold the daemon to:

* after a reload the live state is exactly the file's state (``query_state`` equals the state
  ``load_config`` computes), and the traffic follows: removed routes answer 404, changed
  backends serve, new clusters serve;
* a file that does not load, or whose changes cannot all be applied, changes nothing and the
  answer says why;
* clients of the routes that stay never notice a reload, even one that removes and adds
  clusters while they send requests (checked with continuous load and a long download).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.backends import HttpBackend
from support.clients import get
from support.configs import backend, cluster, document, frontend, http_listener
from support.daemon import DaemonProcess, free_port
from support.load import LoadGenerator
from support.load_handlers import StreamSpec, load_handler

from sozu_config import ConfigState, QueryState, ReloadConfiguration, StateSnapshot, load_config
from sozu_config.responses import BatchResults

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Site:
    """A cluster as the configuration file writes it."""

    cluster_id: str
    frontends: tuple[dict[str, str], ...]
    """The frontends' settings, without the address (added by :func:`config_text`)."""
    backends: tuple[dict[str, str], ...]
    settings: dict[str, str] = field(default_factory=dict)


def config_text(
    port: int, sites: list[Site], *, extra_listener: int | None = None, **settings: object
) -> str:
    """Two workers, an HTTP listener on ``port`` (and one on ``extra_listener``), the
    ``sites`` on ``port``; ``settings`` at the top level."""
    listeners = [http_listener(port)]
    if extra_listener is not None:
        listeners.append(http_listener(extra_listener))
    clusters = [
        cluster(
            site.cluster_id,
            frontends=[frontend(port, **f) for f in site.frontends],
            backends=site.backends,
            **site.settings,
        )
        for site in sites
    ]
    return document(*listeners, *clusters, worker_count=2, **settings)


def live_state(daemon: DaemonProcess) -> StateSnapshot:
    response = daemon.send(QueryState())
    assert response.ok, response.message
    assert response.content is not None and response.content.type == "state"
    return response.content.state


def file_state(path: Path) -> StateSnapshot:
    return load_config(path).state.snapshot()


class Backends:
    """Named backends answering their own name (and the slow stream of :func:`load_handler`)."""

    def __init__(self, *names: str, stream: StreamSpec | None = None) -> None:
        self.servers = {n: HttpBackend(n, load_handler(n, stream=stream)) for n in names}

    def __enter__(self) -> Backends:
        for server in self.servers.values():
            server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers.values():
            server.stop()

    def __getitem__(self, name: str) -> HttpBackend:
        return self.servers[name]

    def entry(self, name: str, backend_id: str | None = None) -> dict[str, str]:
        return backend(self[name].address, backend_id=backend_id or name)


@pytest.fixture
def backends() -> Iterator[Backends]:
    with Backends("one", "two", "three", "old", "fresh", "v1", "v2") as started:
        yield started


def before_sites(b: Backends) -> list[Site]:
    return [
        Site("app", ({"hostname": "app.example"},), (b.entry("one"), b.entry("two"))),
        Site("old", ({"hostname": "old.example"},), (b.entry("old"),)),
        Site("versioned", ({"hostname": "v.example", "path": "/v1"},), (b.entry("v1"),)),
    ]


def after_sites(b: Backends) -> list[Site]:
    """``app`` changed (a setting, a frontend added, backend ``one`` removed, backend ``two``
    moved to another server), ``old`` removed, ``fresh`` added, ``versioned``'s path changed."""
    return [
        Site(
            "app",
            ({"hostname": "app.example"}, {"hostname": "www.app.example"}),
            (b.entry("three", "two"),),
            settings={"load_balancing": "RANDOM"},
        ),
        Site("fresh", ({"hostname": "fresh.example"},), (b.entry("fresh"),)),
        Site("versioned", ({"hostname": "v.example", "path": "/v2"},), (b.entry("v2"),)),
    ]


def stream_done(load: LoadGenerator) -> bool:
    return load.stream_result is not None and load.stream_result.ended is not None


def bodies(port: int, host: str, target: str = "/", count: int = 6) -> set[bytes]:
    answers = [get(port, target, host=host) for _ in range(count)]
    return {a.body if a.status == 200 else str(a.status).encode() for a in answers}


# --------------------------------------------------------------------------- the real diff


def test_reload_applies_removals_changes_and_additions(tmp_path: Path, backends: Backends) -> None:
    port = free_port()
    with DaemonProcess(tmp_path, config_text(port, before_sites(backends))).start() as daemon:
        assert bodies(port, "app.example") == {b"one", b"two"}
        assert bodies(port, "old.example") == {b"old"}
        daemon.config_path.write_text(
            config_text(port, after_sites(backends), command_socket=daemon.socket_path)
        )
        plan = ConfigState.from_snapshot(live_state(daemon)).diff(
            load_config(daemon.config_path).state
        )
        response = daemon.send(ReloadConfiguration())
        assert response.ok, response.message
        # the answer names every change it applied, as plans describe them, and so does the log
        assert f"applied {len(plan)} changes;" in response.message
        assert isinstance(response.content, BatchResults)
        described = [r.describe() for r in plan]
        assert [r.request for r in response.content.results] == described
        logs = daemon.logs()
        assert all(f"reload: {line}" in logs for line in described), logs

        assert live_state(daemon) == file_state(daemon.config_path)
        app = next(c for c in live_state(daemon).clusters if c.cluster_id == "app")
        assert app.load_balancing.value.lower() == "random"
        assert bodies(port, "app.example") == {b"three"}
        assert bodies(port, "www.app.example") == {b"three"}
        assert bodies(port, "old.example") == {b"404"}
        assert bodies(port, "fresh.example") == {b"fresh"}
        assert bodies(port, "v.example", "/v1") == {b"404"}
        assert bodies(port, "v.example", "/v2") == {b"v2"}

        # reloading the same file again changes nothing
        version = daemon.send(QueryState()).content.version  # type: ignore[union-attr]
        again = daemon.send(ReloadConfiguration())
        assert again.ok, again.message
        assert daemon.send(QueryState()).content.version == version  # type: ignore[union-attr]


def test_reload_with_a_path_applies_that_file(tmp_path: Path, backends: Backends) -> None:
    port = free_port()
    with DaemonProcess(tmp_path, config_text(port, before_sites(backends))).start() as daemon:
        original = daemon.config_path.read_text()
        other = tmp_path / "elsewhere" / "next.toml"
        other.parent.mkdir()
        other.write_text(
            config_text(port, after_sites(backends), command_socket=daemon.socket_path)
        )
        response = daemon.send(ReloadConfiguration(path=str(other)))
        assert response.ok, response.message
        assert live_state(daemon) == file_state(other)
        assert bodies(port, "fresh.example") == {b"fresh"}
        assert bodies(port, "old.example") == {b"404"}
        assert daemon.config_path.read_text() == original

        # and back, from the daemon's own file (which never changed)
        response = daemon.send(ReloadConfiguration())
        assert response.ok, response.message
        assert live_state(daemon) == file_state(daemon.config_path)
        assert bodies(port, "old.example") == {b"old"}
        assert bodies(port, "app.example") == {b"one", b"two"}


# --------------------------------------------------------------------------- nothing changes


def bad_files(port: int, backends: Backends, taken: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Configuration texts that must change nothing, and words the refusal must contain."""
    good = config_text(port, after_sites(backends))
    return {
        "toml syntax": (good + "\n[clusters.broken\nprotocol = 'http'\n", ("line",)),
        "unknown cluster key": (
            good.replace('load_balancing = "RANDOM"', 'load_balancing = "RANDOM"\nspeed = 3'),
            ("clusters.app", "speed"),
        ),
        "frontend without hostname": (
            good.replace('hostname = "fresh.example"', 'path = "/x"'),
            ("clusters.fresh", "hostname"),
        ),
        # loads, but one of its changes cannot be applied: none is
        "listener address in use": (
            config_text(port, after_sites(backends), extra_listener=taken),
            (f"127.0.0.1:{taken}",),
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["toml syntax", "unknown cluster key", "frontend without hostname", "listener address in use"],
)
def test_a_reload_that_cannot_be_applied_changes_nothing_and_says_why(
    tmp_path: Path, backends: Backends, case: str
) -> None:
    port = free_port()
    holder = socket.socket()  # a port in use by someone else
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        with DaemonProcess(tmp_path, config_text(port, before_sites(backends))).start() as daemon:
            before = daemon.send(QueryState()).content
            text, words = bad_files(port, backends, taken)[case]
            daemon.config_path.write_text(f'command_socket = "{daemon.socket_path}"\n' + text)
            response = daemon.send(ReloadConfiguration())
            assert not response.ok, response.message
            for word in words:
                assert word in response.message, response.message
            after = daemon.send(QueryState()).content
            assert after == before  # the state and its version
            assert bodies(port, "old.example") == {b"old"}
            assert bodies(port, "fresh.example") == {b"404"}
    finally:
        holder.close()


def test_a_reload_from_a_missing_file_changes_nothing(tmp_path: Path, backends: Backends) -> None:
    port = free_port()
    with DaemonProcess(tmp_path, config_text(port, before_sites(backends))).start() as daemon:
        before = daemon.send(QueryState()).content
        missing = tmp_path / "missing.toml"
        response = daemon.send(ReloadConfiguration(path=str(missing)))
        assert not response.ok
        assert str(missing) in response.message
        assert daemon.send(QueryState()).content == before


# --------------------------------------------------------------------------- under load


def test_reloads_that_remove_and_add_clusters_never_disturb_the_routes_that_stay(
    tmp_path: Path,
) -> None:
    port = free_port()
    stream = StreamSpec(size=4 * 1024 * 1024, seconds=8.0)
    with Backends("one", "two", "three", "old", "fresh", "v1", "v2", stream=stream) as b:
        stay = Site("app", ({"hostname": "app.example"},), (b.entry("one"), b.entry("two")))
        first = [stay, Site("old", ({"hostname": "old.example"},), (b.entry("old"),))]
        second = [stay, Site("fresh", ({"hostname": "fresh.example"},), (b.entry("fresh"),))]
        texts = [
            config_text(port, sites, command_socket=tmp_path / "sozu.sock")
            for sites in (first, second)
        ]
        with DaemonProcess(tmp_path, texts[0]).start() as daemon:
            load = LoadGenerator(
                port,
                host="app.example",
                stream=stream,
                expected_bodies={b"one", b"two"},
                resend=True,
            )
            with load:
                load.wait_progress(count=200)  # the operation happens amid established traffic
                # reload back and forth for as long as the download lasts (bounded)
                rounds = 0
                deadline = time.monotonic() + 60
                while rounds < 6 or (not stream_done(load) and time.monotonic() < deadline):
                    target = texts[(rounds + 1) % 2]
                    daemon.config_path.write_text(target)
                    response = daemon.send(ReloadConfiguration())
                    assert response.ok, response.message
                    assert live_state(daemon) == file_state(daemon.config_path)
                    gone, added = ("old", "fresh") if rounds % 2 == 0 else ("fresh", "old")
                    assert bodies(port, f"{added}.example", count=2) == {added.encode()}
                    assert bodies(port, f"{gone}.example", count=2) == {b"404"}
                    load.wait_progress()
                    rounds += 1
                    time.sleep(0.2)
                report = load.stop()
            assert report.failures() == [], report.summary()
            assert report.refused == 0
            assert report.stream is not None and report.stream.complete, report.summary()
            assert report.ok > 100, report.summary()
