"""A first run as the README tells it: its two commands, the demo, the HTTPS example, the install
of the three packages from the repository in a fresh virtual environment."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest
from support.daemon import DaemonProcess, free_ports

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
EXAMPLES = REPOSITORY / "examples"


def readme_first_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_example", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo_backends() -> Iterator[list[int]]:
    """The demo's two backends (its own handler) on ephemeral ports."""
    demo = load_demo()
    servers = [
        ThreadingHTTPServer(("127.0.0.1", 0), demo.make_handler(name)) for name in ("A", "B")
    ]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    try:
        yield [int(server.server_address[1]) for server in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)


# --------------------------------------------------------------------------- the README


def test_the_readme_starts_with_two_commands_for_an_externally_managed_python() -> None:
    demo, tests = readme_first_block()
    for command in (demo, tests):
        # a virtual environment: pip never installs into the system's Python
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install nox && ")
        assert "python3 -m pip" not in command
    assert demo.endswith(".venv/bin/nox -s demo")
    assert tests.endswith(".venv/bin/nox -s tests")
    head = README.read_text(encoding="utf-8").split("\n## ", 1)[0]
    for needed in ("Python ≥ 3.11", "python3-venv", "8080", "9001", "9002"):
        assert needed in head, needed


def test_continuous_integration_runs_the_readme_test_command() -> None:
    _, tests = readme_first_block()
    lines = (REPOSITORY / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in lines
    assert any("nox -s lint typecheck schema" in line for line in lines)


def test_run_it_uses_files_that_exist_and_drive_it_explains_sozu_config() -> None:
    text = README.read_text(encoding="utf-8")
    run_it = text[text.index("\n## Run it\n") : text.index("\n## Drive it\n")]
    for config in re.findall(r"sozu -c (\S+)", run_it):
        assert (REPOSITORY / config).is_file(), config
    assert "docs/configuration.md" in run_it
    assert "bin__config.toml" not in text
    drive_it = text[text.index("\n## Drive it\n") :]
    drive_it = drive_it[: drive_it.index("\n## ", 1)]
    assert "SOZU_CONFIG" in drive_it and "-c" in drive_it


# --------------------------------------------------------------------------- the demo


def test_the_demo_banner_prints_sozu_commands_that_work_as_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPOSITORY)
    banner = load_demo().banner()
    commands = [line.split("  #")[0].strip() for line in banner.splitlines() if " -c " in line]
    assert len(commands) >= 2, banner
    for command in commands:
        argv = shlex.split(command)
        executable = REPOSITORY / argv[0] if "/" in argv[0] else shutil.which(argv[0])
        assert executable is not None and os.access(executable, os.X_OK), command
        assert argv[1:3] == ["-c", "examples/demo.toml"], command
    # the printed prefix, with a command that needs no running daemon
    argv = [*shlex.split(commands[0])[:3], "config", "check"]
    checked = subprocess.run(
        argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "is valid" in checked.stdout


def demo_config(proxy_port: int, backend_ports: list[int]) -> str:
    text = (EXAMPLES / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('command_socket = "demo.sock"\n', "").replace(
        "127.0.0.1:8080", f"127.0.0.1:{proxy_port}"
    )
    for old, new in zip((9001, 9002), backend_ports, strict=True):
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    return text


@pytest.mark.e2e
def test_demo_backends_read_request_bodies_so_pooled_connections_stay_in_step(
    tmp_path: Path, demo_backends: list[int]
) -> None:
    (proxy_port,) = free_ports(1)
    with DaemonProcess(tmp_path, demo_config(proxy_port, demo_backends)).start():
        connection = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        try:
            answers = []
            for index in range(8):
                body = f"hello=world&n={index}".encode()
                connection.request("POST", "/", body=body, headers={"Host": "demo.localhost"})
                response = connection.getresponse()
                answers.append((response.status, response.read(), len(body)))
            for _ in range(4):
                connection.request("GET", "/", headers={"Host": "demo.localhost"})
                response = connection.getresponse()
                answers.append((response.status, response.read(), 0))
        finally:
            connection.close()
    assert [status for status, _, _ in answers] == [200] * 12, answers
    seen = [(json.loads(body), sent) for _, body, sent in answers]
    assert all(echo["body_bytes"] == sent for echo, sent in seen), seen
    assert {echo["backend"] for echo, _ in seen} == {"A", "B"}


# --------------------------------------------------------------------------- examples/https.toml


def certificate_command() -> list[str]:
    """The README's command that makes the HTTPS example's certificate."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^openssl req -x509 .*$", text, flags=re.MULTILINE)
    assert found is not None
    assert found.group(0) in (EXAMPLES / "https.toml").read_text(encoding="utf-8")
    return shlex.split(found.group(0))


@pytest.mark.e2e
def test_the_https_example_serves_with_the_certificate_its_command_makes(
    tmp_path: Path, demo_backends: list[int]
) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    made = run(certificate_command(), tmp_path, 60)
    assert made.returncode == 0, made.stderr
    assert (examples / "localhost.pem").is_file() and (examples / "localhost.key").is_file()

    https_port, http_port = free_ports(2)
    text = (EXAMPLES / "https.toml").read_text(encoding="utf-8")
    text = text.replace('command_socket = "https.sock"', 'command_socket = "sozu.sock"')
    for old, new in (
        (8443, https_port),
        (8081, http_port),
        (9001, demo_backends[0]),
        (9002, demo_backends[1]),
    ):
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    text = text.replace("https_redirect_port = 8443", f"https_redirect_port = {https_port}")
    with DaemonProcess(examples, text, name="https.toml").start():
        context = ssl.create_default_context(cafile=str(examples / "localhost.pem"))
        connection = http.client.HTTPSConnection(
            "localhost", https_port, context=context, timeout=10
        )
        # "localhost" may resolve to ::1 first: the listener is on 127.0.0.1
        connection.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", https_port), timeout=10),
            server_hostname="localhost",
        )
        try:
            connection.request("GET", "/", headers={"Host": "localhost"})
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        try:
            plain.request("GET", "/x", headers={"Host": "localhost"})
            redirected = plain.getresponse()
            redirected.read()
        finally:
            plain.close()
    assert response.status == 200
    assert body["backend"] in ("A", "B")
    assert redirected.status == 301
    assert redirected.getheader("Location") == f"https://localhost:{https_port}/x"


# --------------------------------------------------------------------------- the install


def run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.install
@pytest.mark.timeout(600)
def test_the_three_packages_install_from_the_repository_in_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], tmp_path, 60)
    assert created.returncode == 0, created.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]

    # one package alone: its pins name packages no index has, as the README says
    alone = run([*pip, str(REPOSITORY / "packages" / "sozu-cli")], tmp_path, 120)
    assert alone.returncode != 0, alone.stdout + alone.stderr[-3000:]
    refusal = re.search(r"No matching distribution found for (sozu-\w+==0\.1\.0)", alone.stderr)
    assert refusal is not None, alone.stderr[-3000:]
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "No matching distribution found for sozu-config==0.1.0" in readme
    assert refusal.group(1) in readme

    # the README's single install (the index only for the dependencies)
    packages = [str(REPOSITORY / "packages" / name) for name in ("sozu-config", "sozu-runtime")]
    installed = run([*pip, *packages, str(REPOSITORY / "packages" / "sozu-cli")], tmp_path, 480)
    assert installed.returncode == 0, installed.stderr
    # where a C compiler exists, the one install compiled the hot path
    hot_path = run([str(venv / "bin" / "python"), "-c", HOT_PATH], tmp_path, 60)
    assert hot_path.returncode == 0, hot_path.stderr
    if shutil.which("cc") is not None and os.environ.get("SOZU_PURE_PYTHON") != "1":
        assert hot_path.stdout.startswith("compiled: "), hot_path.stdout
    version = run([str(venv / "bin" / "sozu"), "--version"], tmp_path, 60)
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout + version.stderr
    helped = run([str(venv / "bin" / "sozu-apply"), "--help"], tmp_path, 60)
    assert helped.returncode == 0, helped.stderr
    assert "usage: sozu-apply" in helped.stdout
    licences = list((venv / "lib").glob("python3*/site-packages/sozu_*.dist-info/licenses/*"))
    assert {path.name for path in licences} >= {"LICENSE", "LICENSE.GPL-3"}


HOT_PATH = "from sozu_runtime.compiled import mode; print(mode()[1])"


@pytest.mark.install
@pytest.mark.timeout(600)
def test_an_install_whose_compiler_fails_runs_pure_python(tmp_path: Path) -> None:
    """A machine whose C compiler fails (here ``CC=false``) still installs the daemon: the
    build says why it fell back, and the proxy runs its Python sources."""
    venv = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], tmp_path, 60)
    assert created.returncode == 0, created.stderr
    packages = [str(REPOSITORY / "packages" / name) for name in ("sozu-config", "sozu-runtime")]
    env = {key: value for key, value in os.environ.items() if key != "SOZU_PURE_PYTHON"}
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-v", *packages],
        cwd=tmp_path,
        env={**env, "CC": shutil.which("false") or "/bin/false"},
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert "mypyc failed, building pure Python instead" in installed.stdout + installed.stderr
    python = str(venv / "bin" / "python")
    hot_path = run([python, "-c", HOT_PATH], tmp_path, 60)
    assert hot_path.stdout.strip() == "pure Python: this installation has no compiled modules"
    started = run([python, "-c", "import sozu_runtime.worker.http"], tmp_path, 60)
    assert started.returncode == 0, started.stderr


@pytest.mark.install
@pytest.mark.timeout(600)
def test_the_readme_demo_command_installs_a_demo_whose_banner_works(tmp_path: Path) -> None:
    """The README's first command, as written, in an empty directory; its last step with
    ``--install-only`` (the demo itself would take the ports 8080, 9001 and 9002)."""
    demo_command, _ = readme_first_block()
    *setup, nox_step = (part.strip() for part in demo_command.split("&&"))
    for step in setup:  # python3 -m venv .venv; .venv/bin/pip install nox
        done = run(shlex.split(step), tmp_path, 180)
        assert done.returncode == 0, f"{step}\n{done.stderr[-3000:]}"
    envdir = tmp_path / "nox"
    noxfile = REPOSITORY / "noxfile.py"
    extra = ["--install-only", "--envdir", str(envdir), "-f", str(noxfile)]
    installed = run([*shlex.split(nox_step), *extra], tmp_path, 480)
    assert installed.returncode == 0, installed.stderr[-3000:]

    python = envdir / "demo" / "bin" / "python"
    printed = run(
        [
            str(python),
            "-c",
            "import sys; sys.path.insert(0, 'examples'); import demo; print(demo.banner())",
        ],
        REPOSITORY,
        60,
    )
    assert printed.returncode == 0, printed.stderr
    commands = [line.split("  #")[0].strip() for line in printed.stdout.splitlines()]
    commands = [command for command in commands if " -c examples/demo.toml " in command]
    assert commands, printed.stdout
    argv = [*shlex.split(commands[0])[:3], "config", "check"]
    assert Path(argv[0]).resolve() == (envdir / "demo" / "bin" / "sozu").resolve()
    checked = run(argv, REPOSITORY, 60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
