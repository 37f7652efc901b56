"""``[admin]`` in the configuration file: the address, the token file, the loopback rule, and
errors that name the key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sozu_config.config import AdminSettings, ConfigError, check_config_text, load_config_text


def load(text: str, directory: Path) -> AdminSettings | None:
    return load_config_text(text, base_dir=directory).admin


def refusal(text: str, directory: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, base_dir=directory)
    return str(caught.value)


def token_file(directory: Path, content: bytes, mode: int = 0o600) -> Path:
    path = directory / "admin.token"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_absent_means_off(tmp_path: Path) -> None:
    assert load("worker_count = 1\n", tmp_path) is None


def test_a_loopback_address_needs_no_token(tmp_path: Path) -> None:
    for address in ("127.0.0.1:9180", "127.0.0.2:9180", "[::1]:9180"):
        admin = load(f'[admin]\naddress = "{address}"\n', tmp_path)
        assert admin == AdminSettings(address=address)
        assert admin is not None and admin.token is None


def test_the_token_is_read_relative_to_the_file_and_stripped(tmp_path: Path) -> None:
    token_file(tmp_path, b"  s3cret-Token_42\n\n")
    admin = load('[admin]\naddress = "0.0.0.0:9180"\ntoken_file = "admin.token"\n', tmp_path)
    assert admin is not None
    assert admin.token == "s3cret-Token_42"
    assert "s3cret" not in repr(admin)  # the token is not shown in reprs and logs


@pytest.mark.parametrize("address", ["0.0.0.0:9180", "10.1.2.3:9180", "[::]:9180"])
def test_an_address_off_loopback_needs_a_token_file(tmp_path: Path, address: str) -> None:
    message = refusal(f'[admin]\naddress = "{address}"\n', tmp_path)
    assert "[admin] key 'address'" in message
    assert "not a loopback address" in message
    assert "token_file" in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"two words", "visible ASCII"),
        ("jeton-é".encode(), "visible ASCII"),
        (b"x" * 5_000, "larger than"),
    ],
    ids=["empty", "blank", "space", "non-ascii", "huge"],
)
def test_a_bad_token_file_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    token_file(tmp_path, content)
    message = refusal('[admin]\naddress = "127.0.0.1:9180"\ntoken_file = "admin.token"\n', tmp_path)
    assert "[admin] key 'token_file'" in message
    assert reason in message


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    message = refusal('[admin]\naddress = "127.0.0.1:9180"\ntoken_file = "nowhere"\n', tmp_path)
    assert "[admin] key 'token_file'" in message
    assert "No such file" in message


def test_a_token_file_others_can_read_is_a_warning(tmp_path: Path) -> None:
    token_file(tmp_path, b"t0ken", mode=0o644)
    config = load_config_text(
        '[admin]\naddress = "127.0.0.1:9180"\ntoken_file = "admin.token"\n', base_dir=tmp_path
    )
    assert config.admin is not None and config.admin.token == "t0ken"
    assert any("[admin] key 'token_file'" in w and "chmod 600" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ('admin = "127.0.0.1:9180"\n', "top-level key 'admin'", "expected a table"),
        ("[admin]\n", "[admin] key 'address'", "is required"),
        ('[admin]\naddress = "localhost:9180"\n', "[admin] key 'address'", "not an IPv4"),
        ('[admin]\naddress = "127.0.0.1:9180"\nport = 3\n', "[admin] key 'port'", "unknown key"),
        ('[admin]\naddress = "127.0.0.1:9180"\ntoken_file = 3\n', "key 'token_file'", "string"),
    ],
    ids=["not-a-table", "no-address", "hostname", "unknown-key", "token-file-type"],
)
def test_errors_name_the_key(tmp_path: Path, text: str, where: str, reason: str) -> None:
    message = refusal(text, tmp_path)
    assert where in message
    assert reason in message


def test_check_reports_the_admin_error_with_the_others(tmp_path: Path) -> None:
    report = check_config_text(
        'worker_count = 0\n[admin]\naddress = "0.0.0.0:9180"\n', base_dir=tmp_path
    )
    messages = [str(e) for e in report.errors]
    assert any("worker_count" in m for m in messages)
    assert any("[admin] key 'address'" in m for m in messages)


def test_the_settings_survive_the_main_upgrade_round_trip(tmp_path: Path) -> None:
    token_file(tmp_path, b"t0ken")
    config = load_config_text(
        '[admin]\naddress = "0.0.0.0:9180"\ntoken_file = "admin.token"\n', base_dir=tmp_path
    )
    again = type(config).model_validate(config.model_dump(mode="json"))
    assert again.admin == config.admin


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("\n## Admin endpoint\n") :]
    example = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)[0]
    token_file(tmp_path, b"t0ken")
    admin = load(example, tmp_path)
    assert admin == AdminSettings(address="127.0.0.1:9180", token="t0ken")
