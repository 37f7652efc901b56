"""Tests of ``check_config``: every error of a configuration file at once, each located by
table and key, while ``load_config`` keeps raising the first one."""

from __future__ import annotations

from pathlib import Path

import pytest

from sozu_config.config import (
    ConfigError,
    ConfigReport,
    check_config,
    check_config_text,
    load_config,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = FIXTURES / "configs"
INVALID_FILES = sorted((CONFIGS / "invalid").glob("*.toml"))


def write(directory: Path, text: str) -> Path:
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def located(report: ConfigReport) -> list[tuple[str | None, str | None]]:
    return [(error.table, error.key) for error in report.errors]


THREE_MISTAKES = """
worker_count = 0

[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"
sticky_name = "has space"

[clusters.app]
protocol = "http"
frontends = [{ address = "127.0.0.1:8080", hostname = "a.example" }]
backends = [{ address = "10.0.0.1:80", weight = "100" }]
"""


def test_three_independent_mistakes_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    report = check_config(path)
    assert not report.ok
    assert report.path == path
    assert located(report) == [
        (None, "worker_count"),
        ("listeners[0]", "sticky_name"),
        ("clusters.app.backends[0]", "weight"),
    ]
    reasons = [error.reason for error in report.errors]
    assert reasons[0] == "must be at least 1, found 0"
    assert "is not an HTTP token" in reasons[1]
    assert reasons[2] == 'expected an integer, found "100" (a string)'
    for error in report.errors:
        assert str(error).startswith(f"{path}: ")
    # load_config stops at the first one
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == str(report.errors[0])


def test_every_error_of_one_table_in_file_order(tmp_path: Path) -> None:
    report = check_config(
        write(
            tmp_path,
            '[clusters.app]\nprotocol = "http"\nfrontends = [{ hostnme = "a.example", '
            'address = "127.0.0.1:8080", path_type = "SOMETIMES", required_auth = "yes" }]\n',
        )
    )
    table = "clusters.app.frontends[0]"
    assert located(report) == [
        (table, "hostnme"),
        (table, "path_type"),
        (table, "required_auth"),
        (table, "hostname"),  # required: not in the file, so after its keys
    ]
    assert "did you mean 'hostname'?" in report.errors[0].reason
    assert report.errors[1].reason.startswith("expected one of PREFIX, REGEX, EQUALS")
    assert report.errors[3].reason == "is required"


def test_a_bad_entry_does_not_hide_the_next_ones_nor_the_state_rules(tmp_path: Path) -> None:
    report = check_config(
        write(
            tmp_path,
            '[clusters.app]\nprotocol = "http"\nfrontends = [\n'
            '  { address = "127.0.0.1:8080", hostname = "a.example", method = "G E T" },\n'
            '  { address = "127.0.0.1:8080", hostname = "b.example" },\n'
            '  { address = "127.0.0.1:8080", hostname = "b.example" },\n'
            "]\n"
            'backends = [{ address = "0.0.0.0:80" }, { address = "10.0.0.1:80", '
            'backend_id = "" }]\n',
        )
    )
    assert located(report) == [
        ("clusters.app.frontends[0]", "method"),
        ("clusters.app.backends[0]", "address"),
        ("clusters.app.backends[1]", "backend_id"),
        ("clusters.app.frontends[2]", None),  # found when the state is built
    ]
    assert "declared first in [clusters.app.frontends[1]]" in report.errors[3].reason


def test_a_refused_table_is_skipped_and_the_others_are_read(tmp_path: Path) -> None:
    report = check_config(
        write(
            tmp_path,
            'worker_count = "two"\n'
            '[[listeners]]\nprotocol = "gopher"\naddress = "127.0.0.1:70"\n'
            '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:5432"\n'
            '[clusters.broken]\nprotocol = "http"\nlaod_balancing = "RANDOM"\n'
            'frontends = [{ address = "127.0.0.1:8080" }]\n'
            '[clusters.db]\nprotocol = "tcp"\nfrontends = [{ address = "127.0.0.1:5432" }]\n'
            'backends = [{ address = "10.0.0.1:5432", weight = 900 }]\n',
        )
    )
    assert located(report) == [
        (None, "worker_count"),
        ("listeners[0]", "protocol"),
        ("clusters.broken", "laod_balancing"),  # its frontends are not read
        ("clusters.db.backends[0]", "weight"),
    ]
    assert "did you mean 'load_balancing'?" in report.errors[2].reason
    assert report.errors[3].reason == "must be at most 255, found 900"


def test_a_valid_file_has_no_error_and_the_warnings_of_load_config() -> None:
    for name in ("bin.toml", "command.toml", "full.toml"):
        report = check_config(CONFIGS / name)
        assert report.ok, report.errors
        assert report.warnings == load_config(CONFIGS / name).warnings


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_the_first_error_reported_is_the_one_load_config_raises(path: Path) -> None:
    report = check_config(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert report.errors, "check_config found nothing"
    first = report.errors[0]
    assert (first.table, first.key, str(first)) == (
        caught.value.table,
        caught.value.key,
        str(caught.value),
    )


def test_file_level_problems_are_one_error(tmp_path: Path) -> None:
    missing = check_config(tmp_path / "absent.toml")
    (error,) = missing.errors
    assert "cannot read the configuration file" in error.reason
    syntax = check_config(write(tmp_path, "worker_count = 2\nmax_buffers = = 3\n"))
    (error,) = syntax.errors
    assert (error.line, error.column) == (2, 15)
    assert syntax.warnings == ()


def test_text_is_checked_like_a_file() -> None:
    report = check_config_text("worker_count = 0\nbuffer_size = 10\nworker_cout = 1\n")
    assert [str(e) for e in report.errors] == [
        "<string>: top-level key 'worker_cout': line 3, column 1: unknown top-level key; "
        "did you mean 'worker_count'?",
        "<string>: top-level key 'worker_count': line 1, column 1: must be at least 1, found 0",
        "<string>: top-level key 'buffer_size': line 2, column 1: must be at least 16393, found 10",
    ]
    assert report.warnings == ()
