"""The README's "Use the library" examples and its recorded plan still work as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cli_harness import APPLY_FIXTURES, REPOSITORY, base_config, live_state, sozu_apply
from support.daemon import DaemonProcess, free_port

README = REPOSITORY / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_in_memory_example_prints_the_plan_of_the_demo() -> None:
    first, _ = blocks(section("Use the library"), "python")
    result = run_python(first, REPOSITORY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "+ add_http_listener 127.0.0.1:8080"
    assert "+ add_cluster demo" in lines
    assert "+ add_http_frontend demo.localhost/api on 127.0.0.1:8080 -> api" in lines
    assert "~ activate_listener http 127.0.0.1:8080" in lines
    assert "    active: False -> True" in lines
    assert lines[-1] == "8 to add, 0 to change, 0 to remove"


def test_the_daemon_example_applies_the_file(tmp_path: Path) -> None:
    _, second = blocks(section("Use the library"), "python")
    port = free_port()
    with DaemonProcess(tmp_path, base_config(port)) as daemon:
        daemon.start()
        # the file now asks for one more cluster than the daemon has
        daemon.config_path.write_text(
            daemon.config_path.read_text() + '\n[clusters.added]\nprotocol = "http"\n'
        )
        result = run_python(second, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("applied to 1 worker"), result.stdout
        assert set(live_state(daemon)[1].clusters) == {"app", "added"}
        again = run_python(second, tmp_path)
        assert again.stdout.strip() == "nothing to do"


def test_the_recorded_plan_is_what_sozu_apply_prints(tmp_path: Path) -> None:
    (recorded,) = blocks(section("Make the proxy match a file"), "text")
    command, heading, *body = recorded.splitlines()
    assert command.startswith("$ sozu-apply after.toml --socket ")
    assert command.endswith(" --dry-run")
    with DaemonProcess(tmp_path, "worker_count = 1\n") as daemon:
        daemon.start()
        assert sozu_apply(APPLY_FIXTURES / "before.toml", "--socket", daemon.socket_path).code == 0
        result = sozu_apply(
            APPLY_FIXTURES / "after.toml", "--socket", daemon.socket_path, "--dry-run"
        )
        assert result.code == 0, result
        shown_heading, *shown_body = result.out.splitlines()
        assert shown_heading == f"{daemon.socket_path} (state version {live_state(daemon)[0]})"
        assert re.fullmatch(r"\S+ \(state version \d+\)", heading)
        assert shown_body == body
