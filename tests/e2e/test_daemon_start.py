"""`sozu start`: the three ways to name the configuration, the command socket it creates, and
the configurations and situations in which it must refuse to start.

A daemon that refuses to start prints one paragraph naming what is wrong (the file, the table
and the key, or the socket, or the address), exits with code 1, and leaves nothing behind: no
command socket file and no worker process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import configs
from support.backends import HttpBackend, wait_for
from support.certs import make_certificate
from support.clients import get
from support.daemon import DaemonProcess, free_port, sozu_command

from sozu_config import ListWorkers, Status

pytestmark = pytest.mark.e2e

START_TIMEOUT = 60.0  # seconds a refused start may take at most (it should take ~1 s)


def http_config(
    port: int, backend: str, *, hostname: str = "app.example", **settings: object
) -> str:
    """One HTTP listener on ``port``, one cluster with one frontend and one backend;
    ``settings`` at the top level."""
    return configs.single_http_cluster(
        port, [backend], hostname=hostname, worker_count=2, **settings
    )


def processes_in_group(group: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``group``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group_of = fields[0], int(fields[2])
        if group_of == group and state != "Z":
            found.append(int(entry.name))
    return found


def socket_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fetch_status(port: int, hostname: str) -> int:
    """Status of ``GET /`` through the proxy: with curl when it is installed (a client this
    project did not write), else with the raw-socket client."""
    curl = shutil.which("curl")
    if curl is None:
        return get(port, "/", host=hostname).status
    command = [curl, "--silent", "--max-time", "10", "--output", "/dev/null"]
    command += ["--write-out", "%{http_code}", "--header", f"Host: {hostname}"]
    result = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return int(result.stdout or 0)


def check_serving(daemon: DaemonProcess, port: int, hostname: str = "app.example") -> None:
    """The daemon answers on its command socket and proxies a request."""
    status = daemon.send(Status())
    assert status.ok, status.message
    assert status.content is not None
    assert status.content.type == "workers"
    assert len(status.content.workers) == 2
    assert fetch_status(port, hostname) == 200


# --------------------------------------------------------------------------- three ways to start


@dataclass(frozen=True)
class StartForm:
    """How the command line names the configuration file."""

    name: str
    arguments: tuple[str, ...]  # after the `sozu` command; "{config}" is replaced by the path
    environment: bool  # the path is given in SOZU_CONFIG


START_FORMS = [
    StartForm("global -c before start", ("-c", "{config}", "start"), False),
    StartForm("start -c", ("start", "-c", "{config}"), False),
    StartForm("SOZU_CONFIG", ("start",), True),
]


@pytest.mark.parametrize("form", START_FORMS, ids=[f.name for f in START_FORMS])
def test_start_forms_serve_with_a_private_command_socket(tmp_path: Path, form: StartForm) -> None:
    port = free_port()
    with HttpBackend("app") as backend:
        daemon = DaemonProcess(tmp_path, http_config(port, backend.address))
        arguments = [a.replace("{config}", str(daemon.config_path)) for a in form.arguments]
        environment = dict(os.environ)
        environment.pop("SOZU_CONFIG", None)
        if form.environment:
            environment["SOZU_CONFIG"] = str(daemon.config_path)
        with daemon.log_path.open("ab") as log:
            daemon.process = subprocess.Popen(
                [*sozu_command(), *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=environment,
                start_new_session=True,
            )
        with daemon:
            daemon.wait_ready()
            assert stat.S_ISSOCK(daemon.socket_path.stat().st_mode)
            assert socket_mode(daemon.socket_path) == 0o600
            check_serving(daemon, port)
            code = daemon.stop()
        assert code == 0, daemon.logs()
        assert not daemon.socket_path.exists(), "a stopped daemon removes its command socket"
        assert processes_in_group(daemon.pid) == [], "workers outlived the daemon"


# --------------------------------------------------------------------------- the command socket


def test_second_daemon_on_the_same_socket_refuses_and_the_first_keeps_running(
    tmp_path: Path,
) -> None:
    first_port, second_port = free_port(), free_port()
    (tmp_path / "second").mkdir()
    with (
        HttpBackend("app") as backend,
        DaemonProcess(tmp_path, http_config(first_port, backend.address)).start() as first,
    ):
        first_workers = first.send(ListWorkers()).content
        second = DaemonProcess(
            tmp_path / "second",
            http_config(second_port, backend.address, command_socket=first.socket_path),
        )
        refused = subprocess.run(
            [*sozu_command(), "-c", str(second.config_path), "start"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            start_new_session=True,
            check=False,
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = refused.stderr.strip()
        assert str(first.socket_path) in message
        assert "Traceback" not in refused.stderr
        assert "\n\n" not in message, "the error is one paragraph"
        # the first daemon is untouched: same socket file, same workers, still proxying
        assert first.socket_path.exists()
        assert socket_mode(first.socket_path) == 0o600
        check_serving(first, first_port)
        assert first.send(ListWorkers()).content == first_workers
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", second_port), timeout=2).close()


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    stale = tmp_path / "sozu.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))  # a socket file nobody listens on: a daemon that died
    leftover.close()
    assert stat.S_ISSOCK(stale.stat().st_mode)
    with (
        HttpBackend("app") as backend,
        DaemonProcess(tmp_path, http_config(port, backend.address)).start() as daemon,
    ):
        assert daemon.socket_path == stale
        assert socket_mode(stale) == 0o600
        check_serving(daemon, port)


# --------------------------------------------------------------------------- refused starts


@dataclass(frozen=True)
class Refusal:
    """A start that must fail: what the file says, and what the error must name."""

    name: str
    config: str
    expected: tuple[str, ...]


@contextlib.contextmanager
def address_taken() -> Iterator[int]:
    """A port on 127.0.0.1 on which this (other) process listens."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def refusals(directory: Path, taken: int, backend: str) -> list[Refusal]:
    port = free_port()
    certificate = make_certificate("secure.example")
    (directory / "key.pem").write_text(certificate.key_pem)
    unknown_key = http_config(port, backend).replace(
        'protocol = "http"\nfrontends', 'protocol = "http"\nbogus_setting = 3\nfrontends'
    )
    missing_certificate = f"""
worker_count = 2
[[listeners]]
protocol = "https"
address = "127.0.0.1:{port}"

[clusters.secure]
protocol = "http"
backends = [{{ address = "{backend}" }}]

[[clusters.secure.frontends]]
address = "127.0.0.1:{port}"
hostname = "secure.example"
certificate = "missing-cert.pem"
key = "key.pem"
"""
    return [
        Refusal("unknown key in a cluster", unknown_key, ("clusters.app", "bogus_setting")),
        Refusal(
            "missing certificate file",
            missing_certificate,
            ("clusters.secure", "certificate", "missing-cert.pem"),
        ),
        Refusal(
            "listener address in use",
            http_config(taken, backend),
            (f"127.0.0.1:{taken}", "in use"),
        ),
        Refusal(
            "command socket folder missing",
            http_config(port, backend, command_socket=directory / "absent" / "sozu.sock"),
            ("command_socket", str(directory / "absent")),
        ),
    ]


REFUSAL_NAMES = [
    "unknown key in a cluster",
    "missing certificate file",
    "listener address in use",
    "command socket folder missing",
]


@pytest.mark.parametrize("name", REFUSAL_NAMES)
def test_bad_configuration_refuses_to_start_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    with HttpBackend("app") as backend, address_taken() as taken:
        refusal = next(r for r in refusals(tmp_path, taken, backend.address) if r.name == name)
        daemon = DaemonProcess(tmp_path, refusal.config)
        process = subprocess.Popen(
            [*sozu_command(), "-c", str(daemon.config_path), "start"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=START_TIMEOUT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait(5)
        assert process.returncode == 1, f"exit code {process.returncode}\n{out}\n{err}"
        message = err.strip()
        assert message.startswith("error:"), err
        assert "Traceback" not in err + out
        assert "\n\n" not in message and message.count("error:") == 1, (
            f"one paragraph expected:\n{err}"
        )
        assert str(daemon.config_path) in message
        for fragment in refusal.expected:
            assert fragment in message, f"{fragment!r} not named in: {message}"
        assert not daemon.socket_path.exists(), "a daemon that did not start left its socket"
        wait_for(lambda: processes_in_group(process.pid) == [], timeout=5)
