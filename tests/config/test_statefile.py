"""State files: round trips, permissions, atomic replacement and errors that name the line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.certs import cached_certificate

from sozu_config import requests as rq
from sozu_config.certificates import CertificateAndKey
from sozu_config.models import (
    Backend,
    Cluster,
    HttpFrontend,
    HttpListenerConfig,
    HttpsListenerConfig,
    PathRule,
    TcpFrontend,
    TcpListenerConfig,
)
from sozu_config.state import ConfigState, InvalidRequest
from sozu_config.statefile import (
    StateFileError,
    iter_state_file,
    load_state_file,
    write_state_file,
)

HTTP = "127.0.0.1:8080"
HTTPS = "127.0.0.1:8443"
TCP = "127.0.0.1:9000"


def certificate(*names: str, generation: int = 0) -> CertificateAndKey:
    made = cached_certificate(*names, generation=generation)
    return CertificateAndKey(certificate=made.cert_pem, key=made.key_pem)


def sample_state(clusters: int = 2) -> ConfigState:
    """Listeners of every protocol, clusters with frontends and backends, two certificates."""
    state = ConfigState()
    state.apply(rq.AddHttpListener(listener=HttpListenerConfig(address=HTTP, active=True)))
    state.apply(
        rq.AddHttpsListener(listener=HttpsListenerConfig(address=HTTPS, default_sni="a.test"))
    )
    state.apply(rq.AddTcpListener(listener=TcpListenerConfig(address=TCP, active=True)))
    state.apply(rq.AddCertificate(address=HTTPS, certificate=certificate("a.test"), expired_at=9))
    state.apply(
        rq.AddCertificate(
            address=HTTPS,
            certificate=certificate("b.test", "c.test").model_copy(update={"names": ["b.test"]}),
        )
    )
    for index in range(clusters):
        cluster_id = f"c{index}"
        state.apply(rq.AddCluster(cluster=Cluster(cluster_id=cluster_id, sticky_session=True)))
        state.apply(
            rq.AddHttpFrontend(
                frontend=HttpFrontend(
                    address=HTTP,
                    hostname=f"h{index}.test",
                    cluster_id=cluster_id,
                    path=PathRule(kind="equals", value="/x"),
                    tags={"n": str(index)},
                )
            )
        )
        state.apply(
            rq.AddHttpsFrontend(
                frontend=HttpFrontend(address=HTTPS, hostname="a.test", cluster_id=cluster_id)
                if index == 0
                else HttpFrontend(address=HTTPS, hostname=f"h{index}.test", method="GET")
            )
        )
        state.apply(
            rq.AddBackend(
                backend=Backend(
                    cluster_id=cluster_id, backend_id="b0", address=f"10.0.0.{index + 1}:80"
                )
            )
        )
    state.apply(rq.AddTcpFrontend(frontend=TcpFrontend(address=TCP, cluster_id="c0")))
    return state


def private_keys(state: ConfigState) -> dict[tuple[str, str], str | None]:
    return {
        (address, fingerprint): state.private_key(address, fingerprint)
        for address, certificates in state.certificates.items()
        for fingerprint in certificates
    }


# --------------------------------------------------------------------------- round trip


def test_write_then_load_gives_back_the_same_state(tmp_path: Path) -> None:
    state = sample_state()
    path = tmp_path / "state.jsonl"
    count = write_state_file(state, path)
    assert count == len(state.generate_requests())
    assert len(path.read_text().splitlines()) == count
    loaded = load_state_file(path)
    assert loaded == state
    assert loaded.problems() == []
    keys = private_keys(loaded)
    assert len(keys) == 2
    assert keys == private_keys(state)
    assert all(key and "PRIVATE KEY" in key for key in keys.values())
    entries = loaded.certificates[HTTPS]
    assert sorted(entry.names[0] for entry in entries.values()) == ["a.test", "b.test"]
    assert sorted(str(entry.expired_at) for entry in entries.values()) == ["9", "None"]
    # and it can be written again, identically
    again = tmp_path / "again.jsonl"
    write_state_file(loaded, again)
    assert again.read_bytes() == path.read_bytes()


def test_each_line_is_one_state_request(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    write_state_file(sample_state(), path)
    records = list(iter_state_file(path))
    assert [number for number, _ in records] == list(range(1, len(records) + 1))
    for (_, request), text in zip(records, path.read_text().splitlines(), strict=True):
        assert json.loads(text)["type"] == request.type
    assert records[0][1].type == "add_http_listener"


def test_an_empty_state_is_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    assert write_state_file(ConfigState(), path) == 0
    assert path.read_bytes() == b""
    assert load_state_file(path) == ConfigState()


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    write_state_file(sample_state(), path)
    lines = path.read_text().splitlines()
    path.write_text("\n" + "\n\n".join(lines) + "\n\n")
    assert load_state_file(path) == sample_state()


def test_a_relative_path_is_written_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_state_file(sample_state(1), "relative.jsonl")
    assert load_state_file(tmp_path / "relative.jsonl") == sample_state(1)


# --------------------------------------------------------------------------- permissions


def test_the_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    old_umask = os.umask(0)
    try:
        write_state_file(sample_state(), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replacing_a_world_readable_file_leaves_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    path.write_text("")
    path.chmod(0o644)
    write_state_file(sample_state(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_state_file(path) == sample_state()


# --------------------------------------------------------------------------- atomicity

CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from sozu_config.statefile import load_state_file, write_state_file

    new_state = load_state_file(sys.argv[1])

    def crash(source, target):
        # the process dies between the complete write of the temporary file and the rename
        os._exit(17)

    os.replace = crash
    write_state_file(new_state, sys.argv[2])
    sys.exit(0)  # not reached
    """
)


def crash_while_writing(source: Path, target: Path) -> None:
    """Run write_state_file(state of ``source``, ``target``) in a process that dies just before
    the rename."""
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(source), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 17, result.stderr


def temporaries(folder: Path, target: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{target.name}.")]


def test_a_crash_before_the_rename_leaves_the_old_file_intact(tmp_path: Path) -> None:
    old_state, new_state = sample_state(1), sample_state(3)
    target = tmp_path / "state.jsonl"
    write_state_file(old_state, target)
    before = target.read_bytes()
    source = tmp_path / "new-source.jsonl"
    write_state_file(new_state, source)

    crash_while_writing(source, target)

    assert target.read_bytes() == before
    assert load_state_file(target) == old_state
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # the new content existed only in a temporary file, complete (fsync'ed before the rename)
    (leftover,) = temporaries(tmp_path, target)
    assert leftover.name.endswith(".tmp")
    assert load_state_file(leftover) == new_state
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600


def test_a_crash_before_the_first_rename_leaves_no_target(tmp_path: Path) -> None:
    source = tmp_path / "new-source.jsonl"
    write_state_file(sample_state(2), source)
    target = tmp_path / "never.jsonl"

    crash_while_writing(source, target)

    assert not target.exists()
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {
        "new-source.jsonl"
    }


def test_a_failed_write_removes_its_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.jsonl"
    write_state_file(sample_state(1), target)
    before = target.read_bytes()

    def refuse(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_state_file(sample_state(3), target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert temporaries(tmp_path, target) == []


def test_a_state_without_private_keys_cannot_be_written(tmp_path: Path) -> None:
    """A state read back from query_state has no keys: writing it would lose the certificates,
    so it fails, and leaves the previous file and no temporary file behind."""
    target = tmp_path / "state.jsonl"
    write_state_file(sample_state(1), target)
    before = target.read_bytes()
    keyless = ConfigState.from_snapshot(sample_state(2).snapshot())
    with pytest.raises(InvalidRequest, match="no private key"):
        write_state_file(keyless, target)
    assert target.read_bytes() == before
    assert temporaries(tmp_path, target) == []


# --------------------------------------------------------------------------- errors


def written(tmp_path: Path, state: ConfigState | None = None) -> tuple[Path, list[str]]:
    path = tmp_path / "state.jsonl"
    write_state_file(state or sample_state(), path)
    return path, path.read_text().splitlines(keepends=True)


def test_a_truncated_last_line_reports_its_line_number(tmp_path: Path) -> None:
    path, lines = written(tmp_path)
    cut = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    path.write_text(cut)
    with pytest.raises(StateFileError) as raised:
        load_state_file(path)
    assert raised.value.line == len(lines)
    assert raised.value.path == path
    assert f"line {len(lines)}" in str(raised.value)
    assert "incomplete" in raised.value.reason


def test_a_last_line_without_its_newline_is_incomplete(tmp_path: Path) -> None:
    path, lines = written(tmp_path)
    path.write_text("".join(lines).rstrip("\n"))
    with pytest.raises(StateFileError, match="cut short") as raised:
        load_state_file(path)
    assert raised.value.line == len(lines)


def test_a_corrupt_line_in_the_middle_reports_its_line_number(tmp_path: Path) -> None:
    path, lines = written(tmp_path)
    middle = len(lines) // 2
    lines[middle] = lines[middle].replace('"type":"', '"type":"broken_', 1)
    path.write_text("".join(lines))
    with pytest.raises(StateFileError) as raised:
        load_state_file(path)
    assert raised.value.line == middle + 1
    assert f"line {middle + 1}:" in str(raised.value)
    # the records before it were read
    numbers = []
    with pytest.raises(StateFileError):
        for number, _ in iter_state_file(path):
            numbers.append(number)
    assert numbers == list(range(1, middle + 1))


@pytest.mark.parametrize(
    "garbage",
    ["{not json\n", "[]\n", '{"type":"status"}\n', '{"type":"add_cluster","cluster":{}}\n'],
    ids=["not-json", "array", "not-a-state-request", "missing-field"],
)
def test_garbage_lines_report_their_number(tmp_path: Path, garbage: str) -> None:
    path, lines = written(tmp_path)
    lines.insert(3, garbage)
    path.write_text("".join(lines))
    with pytest.raises(StateFileError) as raised:
        load_state_file(path)
    assert raised.value.line == 4


def test_a_corrupt_certificate_line_does_not_show_the_key(tmp_path: Path) -> None:
    path, lines = written(tmp_path)
    number = next(i for i, text in enumerate(lines) if '"add_certificate"' in text)
    record = json.loads(lines[number])
    key = record["certificate"]["key"]
    record["certificate"]["versions"] = ["ssl_v2"]  # invalid, next to the key
    lines[number] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(StateFileError) as raised:
        load_state_file(path)
    assert raised.value.line == number + 1
    secret = [line for line in key.splitlines() if not line.startswith("-----")]
    assert all(line[:20] not in str(raised.value) for line in secret)


def test_a_request_the_state_refuses_reports_its_line(tmp_path: Path) -> None:
    path, lines = written(tmp_path)
    duplicate = next(i for i, text in enumerate(lines) if '"add_http_listener"' in text)
    lines.append(lines[duplicate])  # the same listener twice
    path.write_text("".join(lines))
    with pytest.raises(StateFileError) as raised:
        load_state_file(path)
    assert raised.value.line == len(lines)
    assert "add_http_listener" in raised.value.reason
    assert "already exists" in raised.value.reason


def test_a_request_referring_to_nothing_reports_its_line(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    orphan = rq.AddBackend(
        backend=Backend(cluster_id="ghost", backend_id="b", address="10.0.0.1:80")
    )
    cluster = rq.AddCluster(cluster=Cluster(cluster_id="real"))
    path.write_text(cluster.model_dump_json() + "\n" + orphan.model_dump_json() + "\n")
    with pytest.raises(StateFileError) as raised:
        load_state_file(path)
    assert raised.value.line == 2
    assert "ghost" in raised.value.reason


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.jsonl"
    with pytest.raises(StateFileError) as raised:
        load_state_file(missing)
    assert raised.value.line == 0
    assert raised.value.path == missing
    assert str(missing) in str(raised.value)
    assert "cannot read the file" in str(raised.value)
    assert isinstance(raised.value, ValueError)
