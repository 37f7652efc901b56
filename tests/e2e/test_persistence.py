"""The routing state outlives the process: ``save_state`` / ``load_state``, the automatic save
after every accepted change, a restart from ``saved_state``, a crash in the middle of a write,
and a saved state that is torn or corrupt at start-up.

The state file is the daemon's memory across restarts (DESIGN.md §3, §5: "automatic_state_save
works"; reference §D.6). What these tests hold the daemon to:

* a saved file is private (mode 0600: it carries private keys) and is read back by
  ``sozu_config.load_state_file`` into exactly the state ``query_state`` shows;
* with ``automatic_state_save`` the file equals the live state after every accepted change and
  is not rewritten by a refused one;
* a daemon restarted from the same configuration serves exactly what it served before, runtime
  changes included (the saved state replaces the file's routing);
* a writer killed between writing and renaming leaves the previous file whole;
* a bad record at start-up is named by its line: the daemon refuses to start (default
  ``saved_state_errors = "refuse"``), or starts with the good records (``"skip"``).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import configs
from support.backends import HttpBackend, wait_for
from support.certs import make_certificate
from support.clients import get, tls_handshake
from support.daemon import DaemonProcess, free_port, sozu_command

from sozu_config import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    AddCluster,
    AddHttpFrontend,
    AddHttpsFrontend,
    AddHttpsListener,
    Backend,
    Batch,
    CertificateAndKey,
    Cluster,
    ConfigState,
    HttpFrontend,
    HttpsListenerConfig,
    ListenerType,
    LoadState,
    PathRule,
    PathRuleKind,
    QueryState,
    RemoveBackend,
    RemoveCluster,
    RemoveHttpFrontend,
    SaveState,
    StateSnapshot,
    load_state_file,
    parse_request,
    write_state_file,
)

pytestmark = pytest.mark.e2e

EXIT_TIMEOUT = 60.0  # seconds a refused start may take at most (it takes about one)


# --------------------------------------------------------------------------- helpers


def app_config(port: int, one: str, two: str, **settings: object) -> str:
    """One HTTP listener; cluster ``app`` (app.example) with backends ``one`` and ``two``;
    ``settings`` at the top level."""
    backends = [configs.backend(one, backend_id="one"), configs.backend(two, backend_id="two")]
    return configs.single_http_cluster(port, backends, worker_count=2, **settings)


AUTOMATIC = {"saved_state": "state.jsonl", "automatic_state_save": True}


def live_state(daemon: DaemonProcess) -> StateSnapshot:
    response = daemon.send(QueryState())
    assert response.ok, response.message
    assert response.content is not None and response.content.type == "state"
    return response.content.state


def ok(daemon: DaemonProcess, request: object) -> str:
    response = daemon.send(request)
    assert response.ok, f"{request!r} was refused: {response.message}"
    return response.message


def frontend(port: int, hostname: str, cluster_id: str, path: str = "") -> HttpFrontend:
    return HttpFrontend(
        address=f"127.0.0.1:{port}",
        hostname=hostname,
        cluster_id=cluster_id,
        path=PathRule(kind=PathRuleKind.PREFIX, value=path),
    )


def add_site(port: int, cluster_id: str, hostname: str, backend: str) -> Batch:
    """A new cluster with one frontend and one backend, in one batch."""
    return Batch(
        requests=[
            AddCluster(cluster=Cluster(cluster_id=cluster_id)),
            AddHttpFrontend(frontend=frontend(port, hostname, cluster_id)),
            AddBackend(
                backend=Backend(
                    cluster_id=cluster_id, backend_id=f"{cluster_id}-0", address=backend
                )
            ),
        ]
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start_and_wait_exit(directory: Path, config_text: str) -> tuple[int, str]:
    """Start ``sozu start`` for a configuration that must not start; its exit code and output."""
    daemon = DaemonProcess(directory, config_text)
    process = subprocess.Popen(
        [*sozu_command(), "-c", str(daemon.config_path), "start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=EXIT_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    return process.returncode, output


@pytest.fixture
def backends() -> Iterator[tuple[HttpBackend, HttpBackend, HttpBackend]]:
    with HttpBackend("one") as one, HttpBackend("two") as two, HttpBackend("blog") as blog:
        yield one, two, blog


# --------------------------------------------------------------------------- save and load


def test_save_state_writes_a_private_file_that_loads_back_to_the_live_state(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    one, two, blog = backends
    port, secure = free_port(), free_port()
    certificate = make_certificate("secure.example")
    with DaemonProcess(tmp_path, app_config(port, one.address, two.address)).start() as daemon:
        # runtime changes the configuration file knows nothing of, a private key among them
        ok(daemon, add_site(port, "blog", "blog.example", blog.address))
        address = f"127.0.0.1:{secure}"
        ok(
            daemon,
            Batch(
                requests=[
                    AddHttpsListener(listener=HttpsListenerConfig(address=address)),
                    AddCertificate(
                        address=address,
                        certificate=CertificateAndKey(
                            certificate=certificate.cert_pem, key=certificate.key_pem
                        ),
                    ),
                    AddHttpsFrontend(frontend=frontend(secure, "secure.example", "blog")),
                    ActivateListener(address=address, proxy=ListenerType.HTTPS),
                ]
            ),
        )
        saved = tmp_path / "saved" / "state.jsonl"
        saved.parent.mkdir()
        message = ok(daemon, SaveState(path=str(saved)))
        assert str(saved) in message

        assert mode_of(saved) == 0o600
        state = load_state_file(saved)
        assert state.snapshot() == live_state(daemon)
        # the private key is in the file (a state loaded from it can serve TLS)
        assert certificate.key_pem.splitlines()[1] in saved.read_text()
        # no temporary file is left next to it
        assert sorted(p.name for p in saved.parent.iterdir()) == ["state.jsonl"]


def test_load_state_restores_runtime_changes_into_a_fresh_daemon(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    """A state saved by one daemon is merged into another started from the bare file: the
    other serves what the first served, TLS included."""
    one, two, blog = backends
    port, secure = free_port(), free_port()
    certificate = make_certificate("secure.example")
    saved = tmp_path / "saved.jsonl"
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    config = app_config(port, one.address, two.address)
    with DaemonProcess(first_dir, config).start() as first:
        ok(first, add_site(port, "blog", "blog.example", blog.address))
        ok(first, RemoveBackend(cluster_id="app", backend_id="two"))
        address = f"127.0.0.1:{secure}"
        ok(first, AddHttpsListener(listener=HttpsListenerConfig(address=address)))
        ok(
            first,
            AddCertificate(
                address=address,
                certificate=CertificateAndKey(
                    certificate=certificate.cert_pem, key=certificate.key_pem
                ),
            ),
        )
        ok(first, AddHttpsFrontend(frontend=frontend(secure, "secure.example", "blog")))
        ok(first, ActivateListener(address=address, proxy=ListenerType.HTTPS))
        ok(first, SaveState(path=str(saved)))
        before = live_state(first)

    with DaemonProcess(second_dir, config).start() as second:
        assert live_state(second) != before
        message = ok(second, LoadState(path=str(saved)))
        assert str(saved) in message
        # a merge: objects of the file the second daemon already had are left as they were,
        # and the backend removed in the first daemon is still there (loading never removes)
        expected = ConfigState.from_snapshot(before)
        expected.apply(
            AddBackend(backend=Backend(cluster_id="app", backend_id="two", address=two.address))
        )
        assert live_state(second) == expected.snapshot()
        assert get(port, "/", host="blog.example").body == b"blog"
        session = tls_handshake(secure, "secure.example")
        assert session.fingerprint == certificate.fingerprint

        # loading the same file again changes nothing
        ok(second, LoadState(path=str(saved)))
        assert live_state(second) == expected.snapshot()


def test_load_state_failures_name_the_file_or_the_line(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    one, two, blog = backends
    port = free_port()
    with DaemonProcess(tmp_path, app_config(port, one.address, two.address)).start() as daemon:
        before = live_state(daemon)
        missing = tmp_path / "nowhere.jsonl"
        response = daemon.send(LoadState(path=str(missing)))
        assert not response.ok
        assert str(missing) in response.message
        assert live_state(daemon) == before

        # line 1 is good, line 2 is not JSON, line 3 would be good: loading stops at line 2
        corrupt = tmp_path / "corrupt.jsonl"
        good = add_site(port, "blog", "blog.example", blog.address).requests
        corrupt.write_text(
            good[0].model_dump_json() + "\n{not json\n" + good[1].model_dump_json() + "\n"
        )
        response = daemon.send(LoadState(path=str(corrupt)))
        assert not response.ok, response.message
        assert "line 2" in response.message
        after = live_state(daemon)
        assert [c.cluster_id for c in after.clusters] == ["app", "blog"]
        assert [f.hostname for f in after.http_frontends] == ["app.example"]


# --------------------------------------------------------------------------- automatic save


def test_automatic_state_save_writes_the_live_state_after_every_accepted_change(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    one, two, blog = backends
    port = free_port()
    saved = tmp_path / "state.jsonl"
    config = app_config(port, one.address, two.address, **AUTOMATIC)
    with DaemonProcess(tmp_path, config).start() as daemon:
        # the state loaded at start-up is saved at once
        wait_for(saved.exists, timeout=5)
        assert mode_of(saved) == 0o600
        assert load_state_file(saved).snapshot() == live_state(daemon)

        changes: list[object] = [
            AddCluster(cluster=Cluster(cluster_id="blog")),
            AddHttpFrontend(frontend=frontend(port, "blog.example", "blog")),
            AddBackend(backend=Backend(cluster_id="blog", backend_id="b0", address=blog.address)),
            AddHttpFrontend(frontend=frontend(port, "app.example", "blog", "/blog")),
            RemoveBackend(cluster_id="app", backend_id="two"),
            AddCluster(cluster=Cluster(cluster_id="app", sticky_session=True)),
            RemoveHttpFrontend(frontend=frontend(port, "app.example", "blog", "/blog")),
            add_site(port, "shop", "shop.example", blog.address),
            RemoveCluster(cluster_id="blog"),
        ]
        for change in changes:
            ok(daemon, change)
            live = live_state(daemon)
            assert load_state_file(saved).snapshot() == live, f"after {change!r}"
            assert mode_of(saved) == 0o600

        # a refused change leaves the file as it was (not even rewritten)
        content, inode = saved.read_bytes(), saved.stat().st_ino
        response = daemon.send(RemoveCluster(cluster_id="absent"))
        assert not response.ok
        assert saved.read_bytes() == content
        assert saved.stat().st_ino == inode
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".state")) == []


def test_state_survives_a_restart_unchanged(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    one, two, blog = backends
    port = free_port()
    config = app_config(port, one.address, two.address, **AUTOMATIC)
    with DaemonProcess(tmp_path, config).start() as daemon:
        ok(daemon, add_site(port, "blog", "blog.example", blog.address))
        ok(daemon, RemoveBackend(cluster_id="app", backend_id="two"))
        ok(daemon, AddHttpFrontend(frontend=frontend(port, "www.app.example", "app")))
        before = live_state(daemon)
        assert daemon.stop() == 0

    restarted = DaemonProcess(tmp_path, config, name="config.toml")
    with restarted.start():
        assert live_state(restarted) == before
        # and it serves it: the runtime cluster, the runtime frontend, never the removed backend
        assert get(port, "/", host="blog.example").body == b"blog"
        served = {get(port, "/", host="www.app.example").body for _ in range(6)}
        assert served == {b"one"}
        assert two.requests == []


def test_a_restart_from_the_saved_state_warns_of_edits_to_the_file(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    """The saved state wins at a restart: an edit of the file is not served, and the log says
    so as a warning with the count of differences and the command that applies them."""
    one, two, _ = backends
    port = free_port()
    config = app_config(port, one.address, two.address, **AUTOMATIC)
    with DaemonProcess(tmp_path, config).start() as daemon:
        assert daemon.stop() == 0

    unchanged = DaemonProcess(tmp_path, config, name="config.toml")
    with unchanged.start():
        assert unchanged.stop() == 0
    assert "differs from the saved state" not in unchanged.logs()

    edited = (
        config + '\n[clusters.extra]\nprotocol = "http"\n\n[clusters.more]\nprotocol = "http"\n'
    )
    restarted = DaemonProcess(tmp_path, edited, name="config.toml")
    with restarted.start():
        assert {c.cluster_id for c in live_state(restarted).clusters} == {"app"}
        warnings = [
            line for line in restarted.logs().splitlines() if "differs from the saved state" in line
        ]
        assert len(warnings) == 1, restarted.logs()
        (warning,) = warnings
        assert "WARN" in warning, warning
        assert "by 2 changes" in warning and "sozu reload" in warning, warning
        assert str(restarted.config_path) in warning, warning


# --------------------------------------------------------------------------- crash while writing

CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from sozu_config import load_state_file, write_state_file

    state = load_state_file(sys.argv[1])
    def stuck_before_rename(source, target):
        print("written", source, flush=True)
        time.sleep(120)
    os.replace = stuck_before_rename
    write_state_file(state, sys.argv[2])
    """
)


def test_a_writer_killed_between_write_and_rename_leaves_the_old_file(tmp_path: Path) -> None:
    old = ConfigState()
    old.apply(AddCluster(cluster=Cluster(cluster_id="old")))
    new = ConfigState()
    for cluster_id in ("new", "newer"):
        new.apply(AddCluster(cluster=Cluster(cluster_id=cluster_id)))
    target = tmp_path / "state.jsonl"
    source = tmp_path / "source.jsonl"
    write_state_file(old, target)
    write_state_file(new, source)
    original = target.read_bytes()

    writer = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(source), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline()  # bounded: the writer sleeps 120 s at most
        assert line.startswith("written "), line + (writer.stderr.read() if writer.stderr else "")
        temporary = Path(line.split()[1])
        # the new content is complete in the temporary file: the write happened, not the rename
        assert load_state_file(temporary) == new
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    assert writer.returncode == -signal.SIGKILL
    assert target.read_bytes() == original
    assert load_state_file(target) == old


def test_a_daemon_starts_from_the_old_file_after_a_crashed_write(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    """The debris of a killed writer (a temporary file next to the state) does not disturb the
    next start: the daemon starts from the last complete file."""
    one, two, blog = backends
    port = free_port()
    config = app_config(port, one.address, two.address, **AUTOMATIC)
    with DaemonProcess(tmp_path, config).start() as daemon:
        ok(daemon, add_site(port, "blog", "blog.example", blog.address))
        before = live_state(daemon)
    saved = tmp_path / "state.jsonl"
    # what a writer killed before its rename leaves: a complete temporary file, another state
    debris = tmp_path / ".state.jsonl.crashed.tmp"
    write_state_file(ConfigState(), debris)
    with DaemonProcess(tmp_path, config).start() as restarted:
        assert live_state(restarted) == before
        assert load_state_file(saved).snapshot() == before
        # the debris is cleaned up, and the operator is told
        assert not debris.exists()
        assert str(debris) in restarted.logs()


# --------------------------------------------------------------------------- bad saved state


def saved_lines(port: int, one: str, two: str, blog: str) -> list[str]:
    """The lines of a good state file: the configuration's state plus a runtime site."""
    from sozu_config import load_config_text

    state = load_config_text(app_config(port, one, two), base_dir=Path("/")).state.copy()
    state.apply(add_site(port, "blog", "blog.example", blog))
    return list(state.to_jsonl())


def state_of(lines: list[str]) -> ConfigState:
    state = ConfigState()
    for line in lines:
        state.apply(parse_request(line))
    return state


def torn_last_record(lines: list[str]) -> tuple[str, int]:
    """A writer that did not write atomically, cut in the middle of a last record."""
    cut = lines[-1][: len(lines[-1]) // 2]
    return "\n".join([*lines, cut]), len(lines) + 1


def garbage_line(lines: list[str]) -> tuple[str, int]:
    """A line that is not JSON in the middle of the file."""
    return "\n".join([*lines[:2], '{"type": "add_cluster", "cluster": {', *lines[2:]]) + "\n", 3


BAD_FILES = {"torn last record": torn_last_record, "garbage line": garbage_line}


@pytest.mark.parametrize("damage", sorted(BAD_FILES))
def test_a_bad_saved_state_refuses_the_start_naming_the_line(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend], damage: str
) -> None:
    one, two, blog = backends
    port = free_port()
    text, bad_line = BAD_FILES[damage](saved_lines(port, one.address, two.address, blog.address))
    saved = tmp_path / "state.jsonl"
    saved.write_text(text)
    code, output = start_and_wait_exit(
        tmp_path, app_config(port, one.address, two.address, **AUTOMATIC)
    )
    assert code == 1, output
    assert f"line {bad_line}" in output, output
    assert str(saved) in output, output
    assert "saved_state_errors" in output, output  # the way out is named
    # nothing was served, and the file was left for the operator to look at
    assert saved.read_text() == text
    assert not (tmp_path / "sozu.sock").exists()


def test_skip_starts_with_the_good_records_and_logs_the_bad_lines(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    one, two, blog = backends
    port = free_port()
    lines = saved_lines(port, one.address, two.address, blog.address)
    extra = add_site(port, "shop", "shop.example", blog.address).requests[0].model_dump_json()
    # line 3 is garbage, and a record appended last was cut short
    damaged = [*lines[:2], "{garbage", *lines[2:], extra[: len(extra) // 2]]
    saved = tmp_path / "state.jsonl"
    saved.write_text("\n".join(damaged))
    config = app_config(
        port, one.address, two.address, saved_state="state.jsonl", saved_state_errors="skip"
    )
    with DaemonProcess(tmp_path, config).start() as daemon:
        assert live_state(daemon) == state_of(lines).snapshot()
        logs = daemon.logs()
        assert f"{saved}, line 3" in logs, logs
        assert f"{saved}, line {len(damaged)}" in logs, logs
        assert get(port, "/", host="blog.example").body == b"blog"


# --------------------------------------------------------------------------- hostile paths


def test_load_state_refuses_what_is_not_a_regular_file(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    """``load_state`` of ``/dev/zero`` (an endless line) or of a FIFO (a read that blocks)
    would stop the command plane: both are refused at once, and the daemon goes on."""
    one, two, _ = backends
    port = free_port()
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    with DaemonProcess(tmp_path, app_config(port, one.address, two.address)).start() as daemon:
        before = live_state(daemon)
        for path in ("/dev/zero", str(fifo), str(tmp_path)):
            response = daemon.send(LoadState(path=path), timeout=10)
            assert not response.ok
            assert path in response.message and "not a regular file" in response.message
        assert live_state(daemon) == before
        assert get(port, "/", host="app.example").status == 200


def test_load_state_refuses_a_record_longer_than_a_command(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    one, two, blog = backends
    port = free_port()
    config = app_config(
        port, one.address, two.address, max_command_buffer_size=65536, command_buffer_size=65536
    )
    good = add_site(port, "blog", "blog.example", blog.address).requests[0].model_dump_json()
    huge = tmp_path / "huge.jsonl"
    huge.write_text(good + "\n" + '{"type": "add_cluster", "pad": "' + "x" * 300_000 + '"}\n')
    with DaemonProcess(tmp_path, config).start() as daemon:
        response = daemon.send(LoadState(path=str(huge)), timeout=10)
        assert not response.ok
        assert "line 2" in response.message and "longer than 65536 bytes" in response.message
        assert "1 requests applied" in response.message
        assert [c.cluster_id for c in live_state(daemon).clusters] == ["app", "blog"]


def test_a_failed_automatic_save_is_a_failure_that_names_the_file(
    tmp_path: Path, backends: tuple[HttpBackend, HttpBackend, HttpBackend]
) -> None:
    """The change is live but would be lost at the next restart: the answer says so (and the
    CLI exits non-zero) instead of a plain ok."""
    one, two, _ = backends
    port = free_port()
    folder = tmp_path / "state"
    folder.mkdir()
    settings = {"saved_state": "state/state.jsonl", "automatic_state_save": True}
    with DaemonProcess(tmp_path, app_config(port, one.address, two.address, **settings)) as d:
        d.start()
        wait_for((folder / "state.jsonl").exists, timeout=5)
        folder.rename(tmp_path / "moved")  # the folder of the state file is gone
        result = subprocess.run(
            [*sozu_command(), "-c", str(d.config_path), "cluster", "add", "-i", "late"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert str(folder / "state.jsonl") in output, output
        assert "live but not saved" in output, output
        assert "late" in [c.cluster_id for c in live_state(d).clusters]
