"""``sozu-apply --publish``, ``--source`` and ``--fleet-status`` against a real etcd server (and a
real daemon where one is needed): the layout in etcd, the guarded publish, the same plan as
from the file, and clear errors."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import REPOSITORY, base_config, live_state, sozu_apply
from support import certs
from support.daemon import DaemonProcess, free_port
from support.etcd import EtcdServer, make_tls_files

from sozu_cli.fleet import EtcdTls, FleetError, load_fleet
from sozu_config.config import load_checked

PREFIX = "sozu/test"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    (tmp_path / "etcd").mkdir()
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


def etcd_call(server: EtcdServer, path: str, body: dict[str, str]) -> dict[str, object]:
    data = json.dumps(body).encode()
    with urllib.request.urlopen(f"{server.url}{path}", data=data, timeout=5) as answer:
        result: dict[str, object] = json.loads(answer.read())
        return result


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def stored(server: EtcdServer) -> dict[str, bytes]:
    """Every key under the prefix, with its value (as ``etcdctl get --prefix`` shows them)."""
    root = f"/{PREFIX}/"
    end = root[:-1] + chr(ord(root[-1]) + 1)
    answer = etcd_call(server, "/v3/kv/range", {"key": b64(root), "range_end": b64(end)})
    kvs = answer.get("kvs", [])
    assert isinstance(kvs, list)
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")) for kv in kvs
    }


def put(server: EtcdServer, key: str, value: str) -> None:
    etcd_call(server, "/v3/kv/put", {"key": b64(f"/{PREFIX}/{key}"), "value": b64(value)})


def tls_document(folder: Path, port: int, tls_port: int) -> Path:
    """A file naming a certificate, its key and an answer template, relative to itself."""
    certificate = certs.make_certificate("fleet.example.com")
    (folder / "certs").mkdir(parents=True)
    (folder / "certs" / "site.pem").write_text(certificate.cert_pem)
    (folder / "certs" / "site.key").write_text(certificate.key_pem)
    (folder / "503.http").write_text("HTTP/1.1 503 Service Unavailable\r\n\r\nfleet")
    frontend = (
        f'{{ address = "127.0.0.1:{tls_port}", hostname = "fleet.example.com", '
        'certificate = "certs/site.pem", key = "certs/site.key" }'
    )
    config = folder / "config.toml"
    config.write_text(
        base_config(port)
        + f'\n[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:{tls_port}"\n'
        f'\n[clusters.secure]\nprotocol = "http"\nanswer_503 = "503.http"\n'
        f"frontends = [{frontend}]\n"
    )
    return config


def test_published_configuration_is_planned_and_applied_as_the_file_is(
    tmp_path: Path, etcd: EtcdServer, daemon: DaemonProcess
) -> None:
    source = etcd.source(PREFIX)
    config = tls_document(tmp_path / "site", daemon.port, free_port())  # type: ignore[attr-defined]
    published = sozu_apply("--publish", source, config)
    assert published.code == 0, published
    assert f"to {source} as revision" in published.out
    # the layout, readable with etcdctl: the document and each file under files/<path>
    keys = stored(etcd)
    assert keys[f"/{PREFIX}/config.toml"] == config.read_bytes()
    assert (
        keys[f"/{PREFIX}/files/certs/site.pem"] == (config.parent / "certs/site.pem").read_bytes()
    )
    assert (
        keys[f"/{PREFIX}/files/certs/site.key"] == (config.parent / "certs/site.key").read_bytes()
    )
    assert keys[f"/{PREFIX}/files/503.http"] == (config.parent / "503.http").read_bytes()
    # the same plan as from the file
    socket = daemon.socket_path
    from_file = sozu_apply(config, "--socket", socket, "--dry-run")
    from_etcd = sozu_apply("--source", source, "--socket", socket, "--dry-run")
    assert from_file.code == from_etcd.code == 0, from_etcd
    assert from_etcd.out == from_file.out
    assert "+ add_certificate" in from_etcd.out
    assert "(nothing was changed)" not in from_etcd.err
    # drift, then applied as one batch, then in sync with both
    assert sozu_apply("--source", source, "--socket", socket, "--check").code == 2
    applied = sozu_apply("--source", source, "--socket", socket)
    assert applied.code == 0, applied
    assert set(live_state(daemon)[1].clusters) == {"app", "secure"}
    assert sozu_apply(config, "--socket", socket, "--check").code == 0
    checked = sozu_apply("--source", source, "--socket", socket, "--check", "--json")
    assert checked.code == 0, checked
    data = checked.json()
    assert data["source"] == source and data["targets"][0]["status"] == "in_sync"


def test_the_library_reads_the_same_configuration_as_the_file(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    source = etcd.source(PREFIX)
    config = tls_document(tmp_path / "site", free_port(), free_port())
    assert sozu_apply("--publish", source, config).code == 0
    assert load_fleet(source).state == load_checked(config).state
    with pytest.raises(FleetError, match="nothing is published"):
        load_fleet(etcd.source("sozu/elsewhere"))


def test_a_file_that_does_not_check_is_not_published(tmp_path: Path, etcd: EtcdServer) -> None:
    source = etcd.source(PREFIX)
    config = tmp_path / "config.toml"
    config.write_text(base_config(free_port()) + "\n[clusters.bad]\nprotocol = 'smtp'\n")
    result = sozu_apply("--publish", source, config)
    assert result.code == 1, result
    assert f"{config}: [clusters.bad] key 'protocol': line " in result.err
    assert "(nothing was published)" in result.err
    assert "Traceback" not in result.err
    assert stored(etcd) == {}
    status = sozu_apply("--fleet-status", source)
    assert status.code == 0 and "nothing published, 0 nodes" in status.out


@pytest.mark.parametrize("absolute", [True, False], ids=["absolute", "parent"])
def test_files_outside_the_document_folder_are_refused(
    tmp_path: Path, etcd: EtcdServer, absolute: bool
) -> None:
    certificate = certs.make_certificate("fleet.example.com")
    (tmp_path / "site.pem").write_text(certificate.cert_pem)
    (tmp_path / "site.key").write_text(certificate.key_pem)
    folder = tmp_path / "conf"
    folder.mkdir()
    named = str(tmp_path) if absolute else ".."
    port = free_port()
    config = folder / "config.toml"
    config.write_text(
        f'[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:{port}"\n'
        f'[clusters.s]\nprotocol = "http"\nfrontends = [{{ address = "127.0.0.1:{port}", '
        f'hostname = "fleet.example.com", certificate = "{named}/site.pem", '
        f'key = "{named}/site.key" }}]\n'
    )
    assert load_checked(config)  # a good file, that names files outside its folder
    result = sozu_apply("--publish", etcd.source(PREFIX), config)
    assert result.code == 1, result
    why = "is an absolute path" if absolute else "leaves the document's folder"
    assert why in result.err and "(nothing was published)" in result.err
    assert stored(etcd) == {}


def test_two_publishes_from_the_same_base_revision_one_wins(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    source = etcd.source(PREFIX)
    port = free_port()
    first = tmp_path / "first.toml"
    first.write_text(base_config(port))
    assert sozu_apply("--publish", source, first).code == 0
    base = json.loads(sozu_apply("--fleet-status", source, "--json").out)["revision"]
    # two people change the same revision at once
    files = []
    for name in ("alice", "bob"):
        path = tmp_path / f"{name}.toml"
        path.write_text(base_config(port) + f'\n[clusters.{name}]\nprotocol = "http"\n')
        files.append(path)
    command = [sys.executable, "-m", "sozu_cli.apply", "--publish", source]
    processes = [
        subprocess.Popen(
            [*command, str(path), "--base-revision", str(base)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in files
    ]
    outcomes = [(p.wait(60), *p.communicate()) for p in processes]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 1], outcomes
    (winner,) = [files[i] for i, (code, _, _) in enumerate(outcomes) if code == 0]
    (refusal,) = [err for code, _, err in outcomes if code == 1]
    assert f"is at revision {base + 1}, not {base}: someone published since" in refusal
    assert "nothing was written" in refusal and f"--base-revision {base + 1}" in refusal
    assert "Traceback" not in refusal
    assert stored(etcd)[f"/{PREFIX}/config.toml"] == winner.read_bytes()
    # a publish without a base revision guards with the one it reads: it goes through
    assert sozu_apply("--publish", source, first).code == 0


def test_files_no_longer_named_are_removed(tmp_path: Path, etcd: EtcdServer) -> None:
    source = etcd.source(PREFIX)
    port = free_port()
    (tmp_path / "503.http").write_text("HTTP/1.1 503 Service Unavailable\r\n\r\nbusy")
    config = tmp_path / "config.toml"
    config.write_text(base_config(port) + 'answer_503 = "503.http"\n')
    assert sozu_apply("--publish", source, config).code == 0
    assert f"/{PREFIX}/files/503.http" in stored(etcd)
    config.write_text(base_config(port))
    result = sozu_apply("--publish", source, config)
    assert result.code == 0, result
    assert "removed 503.http" in result.out
    assert set(stored(etcd)) == {f"/{PREFIX}/config.toml"}


def test_a_document_naming_a_file_missing_from_etcd_is_refused(
    tmp_path: Path, etcd: EtcdServer, daemon: DaemonProcess
) -> None:
    put(etcd, "config.toml", base_config(free_port()) + 'answer_503 = "gone.http"\n')
    (tmp_path / "gone.http").write_text("a local file of that name is not read")
    result = sozu_apply(
        "--source", etcd.source(PREFIX), "--socket", daemon.socket_path, cwd=tmp_path
    )
    assert result.code == 1, result
    assert f"/{PREFIX}/files/gone.http is not in etcd" in result.err
    assert "(nothing was changed)" in result.err


def test_bad_sources_and_unreachable_etcd_are_clear_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(base_config(free_port()))
    cases = [
        (("--source", "http://127.0.0.1:2379/p", "--socket", "x"), "is not an etcd source"),
        (("--source", "etcd://127.0.0.1:2379/", "--socket", "x"), "names no usable key prefix"),
        (("--fleet-status", "etcd://127.0.0.1:99999/p"), "is not a number in 1-65535"),
        (("--fleet-status", "etcd://a:1,/p"), "'' is not HOST:PORT"),
        (("--publish", "etcd://127.0.0.1:2379/p"), "--publish needs FILE"),
        (("--source", "etcd://127.0.0.1:2379/p", config), "give FILE or --source, not both"),
        ((config, "--node", "a"), "--node and --lease-ttl go with --watch --source"),
        (("--watch", "--source", "etcd://a/p", "--node", "a/b"), "has no '/'"),
        (("--fleet-status", "etcd://127.0.0.1:1/p", "--check"), "only talk to etcd"),
        (("--fleet-status", "etcd://127.0.0.1:1/p"), "etcd at http://127.0.0.1:1 is unreachable"),
        (("--publish", "etcd://127.0.0.1:1/p", config), "is unreachable: Connection refused"),
    ]
    for arguments, message in cases:
        result = sozu_apply(*arguments)
        assert result.code == 1, (arguments, result)
        assert message in result.err, (arguments, result)
        assert "Traceback" not in result.err, result


def test_the_library_example_of_the_fleet_guide_applies_what_is_published(
    tmp_path: Path, etcd: EtcdServer, daemon: DaemonProcess
) -> None:
    guide = (REPOSITORY / "docs" / "fleet.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", guide[guide.index("\n## Library\n") :], re.S)
    source = etcd.source(PREFIX)
    config = tmp_path / "config.toml"
    config.write_text(
        base_config(daemon.port)  # type: ignore[attr-defined]
        + '\n[clusters.published]\nprotocol = "http"\n'
    )
    assert sozu_apply("--publish", source, config).code == 0
    code = example.replace("etcd://127.0.0.1:2379/sozu/prod", source).replace(
        "/run/sozu/sozu.sock", str(daemon.socket_path)
    )
    run = [sys.executable, "-c", code]
    result = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("to remove"), result.stdout
    assert "published" in live_state(daemon)[1].clusters
    again = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert again.stdout.strip() == "0 to add, 0 to change, 0 to remove", again.stdout


def test_a_source_names_several_members_and_uses_the_one_that_answers(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    # the first member named is down: every command goes on to the next one
    down = free_port()
    source = f"etcd://127.0.0.1:{down},{etcd.address}/{PREFIX}"
    config = tmp_path / "config.toml"
    config.write_text(base_config(free_port()))
    published = sozu_apply("--publish", source, config)
    assert published.code == 0, published
    assert f"to {source} as revision" in published.out
    status = sozu_apply("--fleet-status", source, "--json")
    assert status.code == 0, status
    assert status.json()["revision"] > 0
    assert load_fleet(source).state == load_checked(config).state


def test_an_etcds_source_speaks_tls_with_a_client_certificate(tmp_path: Path) -> None:
    (tmp_path / "etcd").mkdir()
    (tmp_path / "tls").mkdir()
    tls = make_tls_files(tmp_path / "tls")
    config = tmp_path / "config.toml"
    config.write_text(base_config(free_port()))
    with EtcdServer(tmp_path / "etcd", tls=tls) as server:
        source = server.source(PREFIX)
        assert source.startswith("etcds://localhost:")
        client = ("--etcd-cert", tls.client_cert, "--etcd-key", tls.client_key)
        published = sozu_apply("--publish", source, config, "--etcd-ca", tls.ca, *client)
        assert published.code == 0, published
        status = sozu_apply("--fleet-status", source, "--etcd-ca", tls.ca, *client, "--json")
        assert status.code == 0, status
        assert status.json()["revision"] > 0
        loaded = load_fleet(source, tls=EtcdTls(tls.ca, tls.client_cert, tls.client_key))
        assert loaded.state == load_checked(config).state
        # etcd's certificate is not signed by a CA the system knows
        unknown = sozu_apply("--fleet-status", source, *client)
        assert unknown.code == 1, unknown
        assert "is unreachable: its certificate is refused" in unknown.err, unknown
        assert "--etcd-ca names the CA" in unknown.err
        # etcd asks for a client certificate
        anonymous = sozu_apply("--fleet-status", source, "--etcd-ca", tls.ca)
        assert anonymous.code == 1, anonymous
        # (in TLS 1.3 the refusal may come after the request was sent: then it shows as a
        # closed or reset connection rather than as the alert etcd sent)
        assert f"etcd at {server.url} is unreachable: " in anonymous.err, anonymous
        assert "Traceback" not in anonymous.err
        # plain HTTP to a TLS port, and TLS files with a plain source, are refused clearly
        plain = sozu_apply("--fleet-status", source.replace("etcds://", "etcd://"))
        assert plain.code == 1 and "Traceback" not in plain.err, plain
        mixed = sozu_apply(
            "--fleet-status", source.replace("etcds://", "etcd://"), "--etcd-ca", tls.ca
        )
        assert "TLS files are for an etcds:// source" in mixed.err, mixed
        missing = sozu_apply("--fleet-status", source, "--etcd-ca", tmp_path / "none.pem")
        assert f"the CA file {tmp_path / 'none.pem'} is not usable" in missing.err, missing
