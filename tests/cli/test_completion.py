"""Completion scripts of ``sozu`` and ``sozu-apply``, generated from their parsers: every
subcommand and every long option is in each script, and bash completes as expected."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_harness import sozu

from sozu_cli.apply import build_parser as build_apply_parser
from sozu_cli.completion import SHELLS
from sozu_cli.main import build_parser


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(subcommand words, parser) of every command of ``parser``, itself first."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += commands(child, (*path, name))
    return found


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


PARSERS = {"sozu": build_parser, "sozu-apply": build_apply_parser}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("program", sorted(PARSERS))
def test_scripts_hold_every_subcommand_and_long_option(program: str, shell: str) -> None:
    result = sozu("completion", shell, program)
    assert result.code == 0, result
    script = result.out
    tree = commands(PARSERS[program]())
    words = set(re.findall(r"[\w-]+", script))
    for path, parser in tree:
        assert set(path) <= words, path
        for option in long_options(parser):
            if shell == "fish":
                assert f"-l {option[2:]}" in script, (path, option)
            else:
                assert option in words, (path, option)
    if shell == "bash":
        # each command's own list of options
        arrays = dict(re.findall(r"^(\w+)_option_strings=\((.*)\)$", script, re.MULTILINE))
        prefix = "_shtab_" + re.sub(r"\W", "_", program)
        for path, parser in tree:
            name = "_".join((prefix, *(re.sub(r"\W", "_", word) for word in path)))
            listed = set(arrays[name].replace("'", "").split())
            assert long_options(parser) <= listed, path


def test_bash_completes_sozu_apply(tmp_path: Path) -> None:
    script = sozu("completion", "bash", "sozu-apply")
    assert script.code == 0
    (tmp_path / "apply.bash").write_text(script.out)
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "sozu.sock").write_text("")
    probe = textwrap.dedent(
        """
        source ./apply.bash
        function=$(sed -n 's/^complete .* -F \\([^ ]*\\) sozu-apply$/\\1/p' apply.bash)
        complete_words() {
            COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); $function; echo "${COMPREPLY[*]}"
        }
        complete_words sozu-apply config.toml --dr
        complete_words sozu-apply co
        complete_words sozu-apply config.toml --socket so
        """
    )
    result = subprocess.run(
        ["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["--dry-run", "config.toml", "sozu.sock"]


def test_completion_library_loads_only_for_completion() -> None:
    probe = (
        "import sys, sozu_cli.main, sozu_cli.apply; sozu_cli.main.build_parser(); "
        "sozu_cli.apply.build_parser(); print(sorted(m for m in sys.modules if 'shtab' in m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
