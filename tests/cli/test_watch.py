"""``sozu-apply --watch``: follows successive edits of the file, survives a broken one, and
follows the certificates the file names when they are renewed in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cli_harness import base_config, live_state
from support import certs
from support.daemon import DaemonProcess, free_port

WAIT = 20.0  # seconds: bound of every wait for the watcher to act


def poll(
    predicate: Callable[[], bool],
    what: str,
    process: subprocess.Popen[str],
    logs: tuple[Path, ...] = (),
) -> None:
    """Wait for ``predicate``; on failure, say what the watcher wrote in ``logs``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    said = "".join(f"\n--- {log.name}\n{log.read_text()}" for log in logs)
    if process.poll() is not None:
        raise AssertionError(f"the watcher exited ({process.returncode}) waiting for {what}{said}")
    raise AssertionError(f"not within {WAIT} s: {what}{said}")


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


def renew_like_certbot(
    live: Path, archive: Path, number: int, certificate: certs.TestCertificate
) -> None:
    """Write the new files in ``archive`` and point the links of ``live`` at them, each link
    replaced by a rename, as certbot does."""
    for name, text in (("cert", certificate.cert_pem), ("privkey", certificate.key_pem)):
        target = archive / f"{name}{number}.pem"
        target.write_text(text)
        link = live / f".{name}.pem.new"
        link.symlink_to(os.path.relpath(target, live))
        os.replace(link, live / f"{name}.pem")


def test_watch_applies_a_certificate_renewed_in_place(tmp_path: Path) -> None:
    port, tls_port = free_port(), free_port()
    with DaemonProcess(tmp_path, base_config(port)) as daemon:
        daemon.start()
        folder = tmp_path / "watched"
        live, archive = folder / "live" / "site", folder / "archive" / "site"
        live.mkdir(parents=True)
        archive.mkdir(parents=True)
        first, second, third = (certs.make_certificate("renew.example.com") for _ in range(3))
        renew_like_certbot(live, archive, 1, first)
        desired = folder / "config.toml"
        frontend = (
            f'{{ address = "127.0.0.1:{tls_port}", hostname = "renew.example.com", '
            'certificate = "live/site/cert.pem", key = "live/site/privkey.pem" }'
        )
        desired.write_text(
            f'command_socket = "{daemon.socket_path}"\nworker_count = 1\n'
            f'[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:{tls_port}"\n'
            f'[clusters.secure]\nprotocol = "http"\nfrontends = [{frontend}]\n'
        )
        stdout_path, stderr_path = tmp_path / "watch.out", tmp_path / "watch.err"
        logs = (stdout_path, stderr_path)
        command = [sys.executable, "-m", "sozu_cli.apply", str(desired), "--watch"]
        with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
            watcher = subprocess.Popen(
                [*command, "--debounce", "100"],
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        try:

            def served() -> set[str]:
                certificates = live_state(daemon)[1].certificates
                return set(certificates.get(f"127.0.0.1:{tls_port}", {}))

            poll(lambda: served() == {first.fingerprint}, "the first certificate", watcher, logs)
            poll(
                lambda: "and 4 files it names" in stderr_path.read_text(),
                "the watch of the certificate and key",
                watcher,
                logs,
            )
            # certbot: new files in archive/, the links of live/ moved to them
            renew_like_certbot(live, archive, 2, second)
            poll(lambda: served() == {second.fingerprint}, "the renewed certificate", watcher, logs)
            assert "~ replace_certificate" in stdout_path.read_text()
            # the same path written with new content
            (archive / "cert2.pem").write_text(third.cert_pem)
            (archive / "privkey2.pem").write_text(third.key_pem)
            poll(
                lambda: served() == {third.fingerprint}, "the rewritten certificate", watcher, logs
            )

            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(10) == 0
            assert "Traceback" not in stderr_path.read_text()
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(5)


def test_the_files_a_configuration_names_are_watched(tmp_path: Path) -> None:
    from sozu_cli.watch import named_files

    (tmp_path / "tls").mkdir()
    for name in ("cert.pem", "key.pem", "chain.pem", "503.html", "404.html"):
        (tmp_path / "tls" / name).write_text("x")
    (tmp_path / "real.pem").write_text("x")
    (tmp_path / "tls" / "link.pem").symlink_to(tmp_path / "real.pem")
    config = tmp_path / "config.toml"
    config.write_text(
        """
[[listeners]]
protocol = "https"
address = "127.0.0.1:8443"
certificate = "tls/cert.pem"
key = "tls/key.pem"
certificate_chain = "tls/chain.pem"
answer_503 = "tls/503.html"
[clusters.app]
protocol = "http"
answers = { 404 = "file://tls/404.html", 500 = "HTTP/1.1 500 inline\\r\\n\\r\\n" }
[[clusters.app.frontends]]
address = "127.0.0.1:8443"
hostname = "a"
certificate = "tls/link.pem"
key = "/absent/key.pem"
"""
    )
    expected = {tmp_path / "tls" / name for name in ("cert.pem", "key.pem", "chain.pem")}
    expected |= {tmp_path / "tls" / "503.html", tmp_path / "tls" / "404.html"}
    expected |= {tmp_path / "tls" / "link.pem", tmp_path / "real.pem", Path("/absent/key.pem")}
    assert named_files(config) == expected
    config.write_text("[[listeners]\n")  # unreadable: nothing more than the file itself
    assert named_files(config) == set()
