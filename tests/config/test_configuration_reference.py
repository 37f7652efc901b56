"""docs/configuration.md is generated from the file models, and every key is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sozu_config.configfile import models
from sozu_config.configfile.reference import SECTIONS, Section, render, undocumented
from sozu_config.configfile.settings import Config

REPOSITORY = Path(__file__).resolve().parents[2]
PAGE = REPOSITORY / "docs" / "configuration.md"
MODULE = "sozu_config.configfile.reference"


def test_the_committed_page_is_the_generated_one() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md is out of date: run python -m {MODULE} -o docs/configuration.md"
    )


def test_every_key_of_every_file_model_is_documented() -> None:
    assert undocumented() == []


def test_every_file_model_has_a_section() -> None:
    documented = {section.model for section in SECTIONS}
    for model in (
        models.GlobalsFile,
        models.TcpListenerFile,
        models.HttpListenerFile,
        models.HttpsListenerFile,
        models.ClusterFile,
        models.HealthCheckFile,
        models.HttpFrontendFile,
        models.HeaderFile,
        models.TcpFrontendFile,
        models.BackendFile,
        models.MetricsFile,
        models.AdminFile,
    ):
        assert model in documented, model.__name__
    page = render()
    for section in SECTIONS:
        for name in section.fields():
            assert f"| `{name}` |" in page, f"{section.model.__name__}.{name} is not on the page"


def test_a_key_added_without_documentation_is_named() -> None:
    class ExtendedBackend(models.BackendFile):
        documented: int | None = None
        """A key with its meaning."""
        forgotten: int | None = None

    section = Section("Backends", "", ExtendedBackend)
    assert undocumented([section]) == ["ExtendedBackend: forgotten"]


def test_a_setting_added_without_documentation_is_named() -> None:
    # a top-level key takes its documentation from Config's field of the same name
    class BareConfig(Config):
        worker_count: int = 2

    section = Section("Top-level keys", "", models.GlobalsFile, documented_by=BareConfig)
    assert undocumented([section]) == ["GlobalsFile: worker_count"]


def test_the_command_checks_and_writes_the_page(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", MODULE, "--check", str(stale)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1
    assert "out of date" in checked.stderr
    written = subprocess.run(
        [sys.executable, "-m", MODULE, "-o", str(stale)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    assert stale.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
    again = subprocess.run(
        [sys.executable, "-m", MODULE, "--check", str(stale)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
