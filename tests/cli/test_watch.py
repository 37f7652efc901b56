"""``sozu-apply --watch``: follows successive edits of the file, survives a broken one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cli_harness import base_config, live_state
from support.daemon import DaemonProcess, free_port

WAIT = 20.0  # seconds: bound of every wait for the watcher to act


def poll(predicate: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"the watcher exited ({process.returncode}) waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"not within {WAIT} s: {what}")


def save_like_an_editor(path: Path, text: str) -> None:
    """Write a new file next to it and rename it over the old one."""
    temporary = path.with_name(f".{path.name}.swp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_watch_follows_three_edits_including_a_broken_one(tmp_path: Path) -> None:
    port = free_port()
    with DaemonProcess(tmp_path, base_config(port)) as daemon:
        daemon.start()
        folder = tmp_path / "watched"
        folder.mkdir()
        desired = folder / "config.toml"
        header = f'command_socket = "{daemon.socket_path}"\n'
        extra = (
            '\n[clusters.{name}]\nprotocol = "http"\n'
            'backends = [{{ address = "127.0.0.1:{port}" }}]\n'
        )
        desired.write_text(header + base_config(port) + extra.format(name="one", port=free_port()))
        stderr_path = tmp_path / "watch.err"
        with stderr_path.open("w") as stderr:
            watcher = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sozu_cli.apply",
                    str(desired),
                    "--watch",
                    "--debounce",
                    "100",
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        try:

            def clusters() -> list[str]:
                return sorted(live_state(daemon)[1].clusters)

            poll(lambda: clusters() == ["app", "one"], "the first apply", watcher)
            poll(lambda: "watching" in stderr_path.read_text(), "the watch to start", watcher)

            # edit 1 (saved by rename, as editors do): cluster one becomes two
            save_like_an_editor(
                desired, header + base_config(port) + extra.format(name="two", port=free_port())
            )
            poll(lambda: clusters() == ["app", "two"], "edit 1 to be applied", watcher)

            # edit 2: broken; reported, nothing changes, the watcher goes on
            version = live_state(daemon)[0]
            desired.write_text(header + "[[listeners]\nprotocol = \n")
            poll(
                lambda: "TOML syntax error" in stderr_path.read_text(), "the error report", watcher
            )
            assert watcher.poll() is None
            assert live_state(daemon)[0] == version

            # edit 3: good again; cluster two becomes three
            save_like_an_editor(
                desired, header + base_config(port) + extra.format(name="three", port=free_port())
            )
            poll(lambda: clusters() == ["app", "three"], "edit 3 to be applied", watcher)

            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(10) == 0
            assert "Traceback" not in stderr_path.read_text()
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(5)
