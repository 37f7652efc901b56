"""What ``config check`` relies on: every finding of a file at once, each with the line and
column of its table or key; unknown top-level keys refused with a did-you-mean; every HTTPS
hostname covered by a certificate of its listener; ``strict`` making warnings errors."""

from __future__ import annotations

import copy
import pickle
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.certs import cached_certificate

from sozu_config.config import (
    ConfigError,
    ConfigRefused,
    check_config,
    check_config_text,
    finding_line,
    load_checked,
    load_config,
)
from sozu_config.configfile.positions import key_positions, position_of, spell

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VALID_FILES = sorted(
    path
    for path in FIXTURES.rglob("*.toml")
    if "invalid" not in path.parts and "sozu-data" not in path.parts
)


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def at(text: str, line: int, column: int) -> str:
    """The text from a line and column (counted from 1) to the end of that line."""
    return text.splitlines()[line - 1][column - 1 :]


# --------------------------------------------------------------------------- the locator


def paths_of(value: Any, parts: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and array entry of a parsed document."""
    found: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.append((*parts, key))
            found.extend(paths_of(inner, (*parts, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.append((*parts, index))
            found.extend(paths_of(inner, (*parts, index)))
    return found


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_every_key_of_the_sample_files_is_located_at_its_name(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    positions = key_positions(text)
    parts_seen = paths_of(tomllib.loads(text))
    assert parts_seen
    for parts in parts_seen:
        spelt = spell(parts)
        assert spelt in positions, spelt
        last = parts[-1]
        if isinstance(last, str):
            found = at(text, *positions[spelt])
            assert found.startswith((last, f'"{last}"', f"'{last}'", "[")), (spelt, found)


TRICKY = '''\
# a comment with = and [brackets]
log_level = "info" # trailing [comment]
"quoted key" = 'a # not a comment'
text = """
[not.a.table]
key = "not a key"
"""
dotted.inner = 1

[[listeners]]
protocol = "http"   # first
address = "127.0.0.1:8080"

[[listeners]]
address = "127.0.0.1:8081"

[clusters.api]
frontends = [
  { address = "127.0.0.1:8080", hostname = "a]#.example" },
  {address="127.0.0.1:8081",tags={ team = "x" }},
]
backends = [ "x", [1, 2], 3 ]

[clusters.api.health_check]
uri = "/health"

[[clusters.web.frontends]]
hostname = "web.example"
[[clusters.web.frontends]]
hostname = "www.example"
'''


def test_the_locator_finds_headers_keys_inline_tables_and_arrays() -> None:
    positions = key_positions(TRICKY)
    assert positions["log_level"] == (2, 1)
    assert positions["quoted key"] == (3, 1)
    assert positions["text"] == (4, 1)
    assert "not.a.table" not in positions and "key" not in positions
    assert positions["dotted"] == (8, 1)
    assert positions["dotted.inner"] == (8, 8)
    assert positions["listeners[0]"] == (10, 1)
    assert positions["listeners[0].protocol"] == (11, 1)
    assert positions["listeners[0].address"] == (12, 1)
    assert positions["listeners[1]"] == (14, 1)
    assert positions["listeners[1].address"] == (15, 1)
    assert positions["clusters.api"] == (17, 1)
    assert positions["clusters.api.frontends"] == (18, 1)
    assert positions["clusters.api.frontends[0]"] == (19, 3)
    assert positions["clusters.api.frontends[0].hostname"] == (19, 33)
    assert positions["clusters.api.frontends[1].address"] == (20, 4)
    assert positions["clusters.api.frontends[1].tags.team"] == (20, 36)
    assert positions["clusters.api.backends[1]"] == (22, 19)
    assert positions["clusters.api.backends[1][1]"] == (22, 23)
    assert positions["clusters.api.backends[2]"] == (22, 27)
    assert positions["clusters.api.health_check.uri"] == (25, 1)
    assert positions["clusters.web.frontends[0].hostname"] == (28, 1)
    assert positions["clusters.web.frontends[1]"] == (29, 1)
    assert positions["clusters.web.frontends[1].hostname"] == (30, 1)
    # a missing key is placed at its table; nothing at all when no table is written
    assert position_of(positions, "clusters.web.frontends[1]", "address") == (29, 1)
    assert position_of(positions, "clusters.api.frontends[0]", "path") == (19, 3)
    assert position_of(positions, None, "worker_count") is None


# --------------------------------------------------------------------------- every finding


EVERYTHING_WRONG = """\
worker_cont = 2
buffer_size = 10
handle_process_affinity = true

[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"
sticky_name = "has space"

[clusters.api]
protocol = "http"
frontends = [{ address = "127.0.0.1:8080", hostname = "api.example" }]
backends = [
  { address = "10.0.0.1:80" },
  { address = "nope" },
]

[clusters.web]
protocol = "http"
frontends = [{ address = "127.0.0.1:8080", hostname = "web.example", pth = "/" }]
"""


def test_every_error_and_warning_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, EVERYTHING_WRONG)
    report = check_config(path)
    located = [(e.table, e.key, e.line, e.column) for e in report.errors]
    assert located == [
        (None, "worker_cont", 1, 1),
        (None, "buffer_size", 2, 1),
        ("listeners[0]", "sticky_name", 8, 1),
        ("clusters.api.backends[1]", "address", 15, 5),
        ("clusters.web.frontends[0]", "pth", 20, 70),
    ]
    assert report.errors[0].reason == "unknown top-level key; did you mean 'worker_count'?"
    assert "did you mean 'path'?" in report.errors[-1].reason
    # the listener is refused: its frontends' listener is made up, with a warning
    assert [(w.table, w.key, w.line, w.column) for w in report.warnings] == [
        (None, "handle_process_affinity", 3, 1),
        ("clusters.api.frontends[0]", "address", 12, 16),
    ]
    assert finding_line(report.errors[3]).startswith(
        f"{path}:15:5: [clusters.api.backends[1]] key 'address': invalid address 'nope'"
    )
    # the daemon stops at the first one, located the same way
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.key, caught.value.line, caught.value.column) == ("worker_cont", 1, 1)


def test_a_refused_cluster_setting_does_not_hide_its_frontends_and_backends_errors(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"

[clusters.api]
protocol = "http"
frontends = [{ address = "127.0.0.1:8080", hostname = "api.example" }]
backends = [{ address = "127.0.0.1:nope" }, { address = "127.0.0.1:9002", weight = 900 }]

[clusters.api.health_check]
uri = "health"
""",
    )
    report = check_config(path)
    located = sorted((e.table, e.key, e.line) for e in report.errors)
    # the health check's error, then each backend's, and nothing made up (the frontend is fine)
    assert located == [
        ("clusters.api.backends[0]", "address", 8),
        ("clusters.api.backends[1]", "weight", 8),
        ("clusters.api.health_check", "uri", 11),
    ]


def test_load_checked_refuses_a_file_with_every_error_listed(tmp_path: Path) -> None:
    path = write(tmp_path, EVERYTHING_WRONG)
    with pytest.raises(ConfigRefused) as caught:
        load_checked(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"5 errors in {path}:"
    assert [line.split(": ", 1)[0] for line in lines[1:]] == [
        f"{path}:1:1",
        f"{path}:2:1",
        f"{path}:8:1",
        f"{path}:15:5",
        f"{path}:20:70",
    ]
    assert len(caught.value.report.errors) == 5


def test_unknown_top_level_keys_are_errors_and_ignored_sozu_keys_warnings() -> None:
    report = check_config_text(
        "something_else = true\nmax_conections = 10\nslab_entries_per_connection = 8\n"
    )
    assert [(e.key, e.reason) for e in report.errors] == [
        (
            "something_else",
            "unknown top-level key (the keys of a table go below its [header])",
        ),
        ("max_conections", "unknown top-level key; did you mean 'max_connections'?"),
    ]
    assert [w.key for w in report.warnings] == ["slab_entries_per_connection"]
    assert "is not implemented by this proxy and is ignored" in report.warnings[0]


def test_strict_makes_the_warnings_errors() -> None:
    text = 'handle_process_affinity = true\naccess_logs_format = "protobuf"\n'
    relaxed = check_config_text(text)
    assert relaxed.ok and len(relaxed.warnings) == 2
    strict = check_config_text(text, strict=True)
    assert not strict.ok and strict.warnings == ()
    assert [(e.key, e.line) for e in strict.errors] == [
        ("handle_process_affinity", 1),
        ("access_logs_format", 2),
    ]
    assert all(e.reason.endswith("(a warning, refused with --strict)") for e in strict.errors)


# --------------------------------------------------------------------------- certificates


def pem_files(directory: Path, name: str, *names: str) -> tuple[Path, Path]:
    certificate = cached_certificate(*names)
    cert = write(directory, certificate.cert_pem, f"{name}.pem")
    key = write(directory, certificate.key_pem, f"{name}.key")
    return cert, key


def https_file(directory: Path, listener_names: tuple[str, ...], frontends: str) -> Path:
    listener = ""
    if listener_names:
        cert, key = pem_files(directory, "listener", *listener_names)
        listener = f'certificate = "{cert}"\nkey = "{key}"\n'
    return write(
        directory,
        '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        f'{listener}\n[clusters.app]\nprotocol = "http"\nfrontends = [\n{frontends}]\n',
    )


def frontend(hostname: str, extra: str = "") -> str:
    return f'  {{ address = "127.0.0.1:8443", hostname = "{hostname}"{extra} }},\n'


def test_a_hostname_no_certificate_covers_is_an_error_naming_what_is_covered(
    tmp_path: Path,
) -> None:
    path = https_file(
        tmp_path,
        ("*.example.com", "example.com"),
        frontend("example.com")
        + frontend("api.example.com")
        + frontend("deep.api.example.com")
        + frontend("other.org")
        + frontend("/.*/.example.net")  # a regex: which names it serves cannot be checked
        + frontend("*"),
    )
    report = check_config(path)
    assert [(e.table, e.key, e.line) for e in report.errors] == [
        ("clusters.app.frontends[2]", "hostname", 12),
        ("clusters.app.frontends[3]", "hostname", 13),
    ]
    first = report.errors[0].reason
    assert first.startswith(
        "no certificate on the https listener of [listeners[0]] (127.0.0.1:8443) covers "
        "'deep.api.example.com': the certificates there cover *.example.com, example.com"
    )
    # the daemon itself starts (a certificate can be added at runtime), with warnings
    config = load_config(path)
    assert len(config.warnings) == 2 and "'other.org'" in config.warnings[1]


def test_a_frontends_certificate_covers_the_other_frontends_of_its_listener(
    tmp_path: Path,
) -> None:
    cert, key = pem_files(tmp_path, "shop", "shop.example", "www.shop.example")
    own = f', certificate = "{cert}", key = "{key}"'
    covered = https_file(tmp_path, (), frontend("shop.example", own) + frontend("www.shop.example"))
    assert check_config(covered).ok
    uncovered = https_file(
        tmp_path, (), frontend("shop.example", own) + frontend("blog.shop.example")
    )
    (error,) = check_config(uncovered).errors
    assert "'blog.shop.example': the certificates there cover shop.example, www.shop.example" in (
        error.reason
    )


def test_a_frontend_whose_own_certificate_does_not_cover_it_is_an_error(tmp_path: Path) -> None:
    cert, key = pem_files(tmp_path, "wrong", "wrong.example")
    path = https_file(
        tmp_path, (), frontend("right.example", f', certificate = "{cert}", key = "{key}"')
    )
    (error,) = check_config(path).errors
    assert (error.table, error.key) == ("clusters.app.frontends[0]", "hostname")
    assert "covers 'right.example': the certificates there cover wrong.example" in error.reason


def test_an_http_listener_needs_no_certificate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\n\n'
        '[clusters.app]\nprotocol = "http"\n'
        'frontends = [{ address = "127.0.0.1:8080", hostname = "plain.example" }]\n',
    )
    report = check_config(path)
    assert report.ok and report.warnings == ()


TOML_ALPHABET = "ab_-.=[]{}\"'#,\\ \n\t019"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=TOML_ALPHABET, max_size=200))
def test_the_locator_never_fails_on_any_text(text: str) -> None:
    positions = key_positions(text)
    lines = text.split("\n")
    for line, column in positions.values():
        assert 1 <= line <= len(lines)
        assert 1 <= column <= len(lines[line - 1]) + 1


def test_the_locator_stops_at_an_entry_it_cannot_read() -> None:
    """An array entry that consumes nothing (``}`` inside an array) once made the scan count
    entries without end, until memory ran out."""
    assert key_positions("-=[,.}'.-9") == {"-": (1, 1), "-[0]": (1, 4), "-[1]": (1, 5)}
    assert key_positions("a = { b = 1 ] }\nc = 2\n") == {"a": (1, 1), "a.b": (1, 7)}
    (error,) = check_config_text("-=[,.}'.-9").errors
    assert "TOML syntax error" in str(error)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=TOML_ALPHABET, max_size=200))
def test_checking_any_text_gives_only_located_config_errors(text: str) -> None:
    report = check_config_text(text)
    for error in report.errors:
        assert isinstance(error, ConfigError)
        if error.line is not None:
            assert error.line <= text.count("\n") + 1


def test_a_configuration_with_warnings_can_be_copied_and_pickled(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "handle_process_affinity = true\n"))
    (warning,) = config.warnings
    for copied in (copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert copied.warnings == config.warnings
        (again,) = copied.warnings
        assert (again.key, again.message) == (warning.key, warning.message)


def test_a_listener_with_many_names_lists_ten_of_them(tmp_path: Path) -> None:
    names = tuple(f"n{index:02}.example" for index in range(12))
    path = https_file(tmp_path, names, frontend("other.example"))
    (error,) = check_config(path).errors
    assert f"cover {', '.join(names[:10])} and 2 more;" in error.reason
