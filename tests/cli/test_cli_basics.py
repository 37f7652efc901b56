"""What every ``sozu`` command shares: help with examples, one-line usage errors, completion
scripts, ``config check``, and rich output only on a terminal."""

from __future__ import annotations

import argparse
import os
import pty
import select
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_harness import REPOSITORY, sozu, sozu_apply
from support.daemon import DaemonProcess

from sozu_cli.main import build_parser

CONFIGS = REPOSITORY / "tests" / "fixtures" / "configs"


def leaf_parsers(
    parser: argparse.ArgumentParser, path: str = "sozu"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += leaf_parsers(child, f"{path} {name}")
    return found


def test_every_command_has_help_with_examples() -> None:
    commands = leaf_parsers(build_parser())
    assert len(commands) > 60
    for path, parser in commands:
        assert parser.epilog and parser.epilog.startswith("examples:\n"), path
        examples = parser.epilog.split("\n\n")[0].splitlines()[1:]
        assert examples, path
        assert all(line.startswith("  ") and "sozu" in line for line in examples), path
    shown = sozu("frontend", "http", "add", "--help")
    assert shown.code == 0
    assert "examples:" in shown.out
    assert "--path-prefix" in shown.out
    assert "--hostname example.com -p /api -m GET" in shown.out
    apply_help = sozu_apply("--help")
    assert apply_help.code == 0
    assert "sozu-apply config.toml --watch" in apply_help.out


def test_usage_errors_are_one_line_and_exit_2() -> None:
    for args, expected in (
        ([], "required: COMMAND"),
        (["nonsense"], "invalid choice"),
        (["cluster", "add"], "-i/--id"),
        (["backend", "add", "-i", "c", "--backend-id", "b", "-a", "1.2.3.4:99999"], "99999"),
        (
            [
                "frontend",
                "http",
                "add",
                "-a",
                "1.2.3.4:80",
                "--hostname",
                "h",
                "-p",
                "/",
                "--path-regex",
                "x",
            ],
            "not allowed",
        ),
        (["-t", "soon", "status"], "whole number"),
        (["completion", "powershell"], "invalid choice"),
    ):
        result = sozu(*args)
        assert result.code == 2, (args, result)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, (args, result)
        assert expected in lines[0], (args, result)
        assert "--help" in lines[0]
        assert result.out == ""
        # with --json, stdout carries the same line as a JSON failure document
        as_json = sozu(*args, "--json")
        assert as_json.code == 2, (args, as_json)
        assert as_json.json()["status"] == "failure" and as_json.json()["kind"] == "usage"
        assert expected in as_json.json()["message"], (args, as_json)
        assert len(as_json.err.strip().splitlines()) == 1, (args, as_json)
    assert sozu_apply().code == 1  # sozu-apply: every error is 1 (2 is changes pending)
    both = sozu_apply("x.toml", "--check", "--watch")
    assert both.code == 1
    assert "not allowed" in both.err


def test_config_check() -> None:
    valid = sozu("config", "check", CONFIGS / "command.toml")
    assert valid.code == 0, valid
    assert "is valid: 6 listeners, 3 clusters, 5 frontends, 5 backends, 1 certificate" in valid.out
    assert "warning:" in valid.err
    assert "expired" in valid.err  # the sample's certificate
    document = sozu("-c", CONFIGS / "command.toml", "config", "check", "--json")
    assert document.code == 0
    data = document.json()
    assert data["valid"] is True
    assert data["summary"]["clusters"] == 3
    assert data["summary"]["listeners"] == 6
    assert any("expired" in w["message"] for w in data["warnings"])

    invalid = CONFIGS / "invalid" / "backend_invalid_address.toml"
    refused = sozu("config", "check", invalid)
    assert refused.code == 1
    assert str(invalid) in refused.err
    assert "[clusters.app.backends[0]] key 'address'" in refused.err
    assert "Traceback" not in refused.err
    refused_json = sozu("config", "check", invalid, "--json")
    assert refused_json.code == 1
    assert refused_json.json()["valid"] is False
    assert sozu("config", "check").code == 2
    from_env = sozu("config", "check", env={"SOZU_CONFIG": str(CONFIGS / "command.toml")})
    assert from_env.code == 0


def test_bash_completion_completes_subcommands_options_and_files(tmp_path: Path) -> None:
    script = sozu("completion", "bash")
    assert script.code == 0
    (tmp_path / "sozu.bash").write_text(script.out)
    (tmp_path / "cert.pem").write_text("")
    probe = textwrap.dedent(
        """
        source ./sozu.bash
        complete_words() {
            COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); FUNCTION; echo "${COMPREPLY[*]}"
        }
        complete_words sozu ""
        complete_words sozu cluster ""
        complete_words sozu -c x.toml fr
        complete_words sozu frontend http add --ho
        complete_words sozu logging ""
        complete_words sozu certificate add --certificate ce
        """
    ).replace("FUNCTION", completion_function(script.out, "sozu"))
    result = subprocess.run(
        ["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["start", "status", "shutdown"]
    assert "apply" in lines[0].split()
    assert lines[1].split() == ["list", "add", "remove", "h2", "health-check"]
    assert lines[2] == "frontend"
    assert lines[3] == "--hostname"
    assert lines[4].split() == ["error", "warn", "info", "debug", "trace"]
    assert lines[5] == "cert.pem"


def completion_function(bash_script: str, program: str) -> str:
    """The function a bash completion script registers for ``program``."""
    for line in bash_script.splitlines():
        words = line.split()
        if words[:1] == ["complete"] and words[-1] == program and "-F" in words:
            return words[words.index("-F") + 1]
    raise AssertionError(f"no 'complete -F FUNCTION {program}' in the script")


def fish_completions(fish_script: str, program: str) -> list[dict[str, list[str]]]:
    """The ``complete -c program`` lines of a fish script, as {flag: [values]}."""
    found = []
    for line in fish_script.splitlines():
        if not line.startswith(f"complete -c {program} "):
            continue
        words = shlex.split(line)[3:]
        entry: dict[str, list[str]] = {}
        flag = ""
        for word in words:
            if word.startswith("-"):
                flag = word
                entry.setdefault(flag, [])
            else:
                entry.setdefault(flag, []).append(word)
        found.append(entry)
    return found


def test_zsh_and_fish_completion_scripts() -> None:
    zsh = sozu("completion", "zsh")
    assert zsh.code == 0
    assert zsh.out.startswith("#compdef sozu\n")
    assert "compdef _shtab_sozu -N sozu" in zsh.out
    fish = sozu("completion", "fish")
    assert fish.code == 0
    paths = {path for path, _ in leaf_parsers(build_parser())}
    assert {"sozu cluster add", "sozu frontend http add", "sozu listener tcp update"} <= paths
    assert "sozu apply" in paths
    entries = fish_completions(fish.out, "sozu")
    cluster_verbs = [
        word
        for entry in entries
        if any("_using cluster;" in c for c in entry.get("-n", []))
        for word in entry.get("-a", [])
    ]
    assert cluster_verbs == ["list", "add", "remove", "h2", "health-check"]
    (policy,) = [e for e in entries if e.get("-l") == ["load-balancing-policy"]]
    assert any(flag.startswith("-x") for flag in policy)  # takes a value
    certificate = [e for e in entries if e.get("-l") == ["certificate"]]
    assert certificate
    for entry in certificate:  # completes file names
        values = [v for flag, words in entry.items() if flag.startswith("-x") for v in words]
        assert any("__fish_complete_path" in value for value in values)


def run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``sozu args`` with stdout on a pseudo-terminal; return (exit code, what it showed)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sozu_cli.main", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"},
    )
    os.close(follower)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(30)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return code, shown.decode(errors="replace")


def test_rich_tables_only_on_a_terminal(daemon: DaemonProcess) -> None:
    code, shown = run_on_a_terminal(["-c", str(daemon.config_path), "status"])
    assert code == 0
    assert "─" in shown  # a table rule drawn by rich
    assert "\x1b[" in shown  # styles
    assert "PROCESS" in shown and "VERSION" in shown
    piped = sozu("-c", daemon.config_path, "status")
    assert "─" not in piped.out
    assert "\x1b[" not in piped.out
    json_on_terminal = run_on_a_terminal(["-c", str(daemon.config_path), "status", "--json"])[1]
    assert "\x1b[" not in json_on_terminal
    assert '"type": "workers"' in json_on_terminal
