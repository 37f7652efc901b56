"""``sozu certificate list|add|replace|remove``: PEM files read by the CLI, never a key shown."""

from __future__ import annotations

import os
import pty
import ssl
import subprocess
import sys
import time
from pathlib import Path

from cli_harness import live_state, sozu
from support import certs
from support.backends import HttpBackend
from support.certs import make_certificate
from support.clients import HttpConnection
from support.daemon import DaemonProcess, free_port


def write(folder: Path, name: str, certificate: certs.TestCertificate) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_text(certificate.cert_pem)
    key.write_text(certificate.key_pem)
    return cert, key


def test_certificate_lifecycle(daemon: DaemonProcess, tmp_path: Path) -> None:
    config = ("-c", str(daemon.config_path))
    address = f"127.0.0.1:{free_port()}"
    assert sozu(*config, "listener", "https", "add", "-a", address).code == 0
    first = make_certificate("a.example.com", "www.a.example.com")
    renewed = make_certificate("a.example.com", "www.a.example.com")
    other = make_certificate("b.example.com")
    first_cert, first_key = write(tmp_path, "first", first)
    renewed_cert, renewed_key = write(tmp_path, "renewed", renewed)
    _, other_key = write(tmp_path, "other", other)

    added = sozu(
        *config,
        "certificate",
        "add",
        "-a",
        address,
        "--certificate",
        first_cert,
        "--key",
        first_key,
    )
    assert added.code == 0, added
    again = sozu(
        *config,
        "certificate",
        "add",
        "-a",
        address,
        "--certificate",
        first_cert,
        "--key",
        first_key,
    )
    assert again.code == 0  # a known certificate: no change

    table = sozu(*config, "certificate", "list")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == ["ADDRESS", "NAMES", "NOT", "AFTER", "FINGERPRINT"]
    # the first 16 digits, as plans show them (whole with --full or --json)
    assert first.fingerprint[:16] in lines[1].split()
    assert first.fingerprint not in lines[1]
    assert "a.example.com, www.a.example.com" in lines[1]
    full = sozu(*config, "certificate", "list", "--full")
    assert first.fingerprint in full.out.splitlines()[1].split(), full
    document = sozu(*config, "certificate", "list", "--json")
    (entry,) = document.json()["certificates"]
    assert entry["fingerprint"] == first.fingerprint
    assert entry["names"] == ["a.example.com", "www.a.example.com"]
    assert "not_after" in entry
    workers = sozu(*config, "certificate", "list", "--workers", "--json").json()
    assert workers["type"] == "worker_responses"
    assert [c["fingerprint"] for c in workers["responses"]["0"]["certificates"]] == [
        first.fingerprint
    ]
    by_domain = sozu(*config, "query", "certificates", "-d", "www.a.example.com", "-j").json()
    assert len(by_domain["certificates"]) == 1
    assert sozu(*config, "certificate", "list", "-d", "nobody.example.com", "-j").json() == {
        "type": "certificates",
        "certificates": [],
    }
    for output in (table.out, document.out, table.err, document.err):
        assert "PRIVATE KEY" not in output

    replaced = sozu(
        *config, "certificate", "replace", "-a", address, "--new-certificate", renewed_cert,
        "--new-key", renewed_key, "--old-certificate", first_cert,
    )  # fmt: skip
    assert replaced.code == 0, replaced
    live = live_state(daemon)[1].certificates[address]
    assert list(live) == [renewed.fingerprint]
    unknown_old = sozu(
        *config, "certificate", "replace", "-a", address, "--new-certificate", first_cert,
        "--new-key", first_key, "-f", first.fingerprint,
    )  # fmt: skip
    assert unknown_old.code == 1
    assert "no certificate" in unknown_old.err

    removed = sozu(
        *config, "certificate", "remove", "-a", address, "-f", renewed.fingerprint.upper()
    )
    assert removed.code == 0, removed
    assert live_state(daemon)[1].certificates.get(address, {}) == {}
    gone = sozu(*config, "certificate", "remove", "-a", address, "--certificate", renewed_cert)
    assert gone.code == 1

    # bad input: exit 2, one line, before anything is sent
    mismatch = sozu(
        *config,
        "certificate",
        "add",
        "-a",
        address,
        "--certificate",
        first_cert,
        "--key",
        other_key,
    )
    assert mismatch.code == 2
    assert "does not match" in mismatch.err
    missing = sozu(
        *config,
        "certificate",
        "add",
        "-a",
        address,
        "--certificate",
        tmp_path / "no.pem",
        "--key",
        first_key,
    )
    assert missing.code == 2
    assert "does not exist" in missing.err
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    assert (
        sozu(
            *config,
            "certificate",
            "add",
            "-a",
            address,
            "--certificate",
            not_pem,
            "--key",
            first_key,
        ).code
        == 2
    )
    short = sozu(*config, "certificate", "remove", "-a", address, "-f", "abcd")
    assert short.code == 2
    assert "64 hex digits" in short.err

    # refused by the daemon: exit 1
    expired_cert, expired_key = write(
        tmp_path, "expired", make_certificate("old.example.com", expired=True)
    )
    expired = sozu(
        *config,
        "certificate",
        "add",
        "-a",
        address,
        "--certificate",
        expired_cert,
        "--key",
        expired_key,
    )
    assert expired.code == 1
    assert "expired" in expired.err
    http_address = f"127.0.0.1:{daemon.port}"  # type: ignore[attr-defined]
    wrong_listener = sozu(
        *config,
        "certificate",
        "add",
        "-a",
        http_address,
        "--certificate",
        first_cert,
        "--key",
        first_key,
    )
    assert wrong_listener.code == 1
    assert "no HTTPS listener" in wrong_listener.err


def test_https_frontends_serve_with_the_certificate_added(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    config = ("-c", str(daemon.config_path))
    port = free_port()
    address = f"127.0.0.1:{port}"
    certificate = make_certificate("secure.example.com")
    cert, key = write(tmp_path, "secure", certificate)
    with HttpBackend("secure") as backend:
        for args in (
            ("listener", "https", "add", "-a", address),
            ("certificate", "add", "-a", address, "--certificate", cert, "--key", key),
            ("cluster", "add", "-i", "secure"),
            ("backend", "add", "-i", "secure", "--backend-id", "s1", "-a", backend.address),
            (
                "frontend",
                "https",
                "add",
                "-a",
                address,
                "--hostname",
                "secure.example.com",
                "--id",
                "secure",
            ),
            ("listener", "https", "activate", "-a", address),
        ):
            result = sozu(*config, *args)
            assert result.code == 0, (args, result)
        context = ssl.create_default_context(cadata=certificate.cert_pem)
        with HttpConnection(port, tls=context, server_hostname="secure.example.com") as connection:
            answer = connection.request("GET", "/", host="secure.example.com")
        assert answer.status == 200
        assert answer.body == b"secure"
        frontends = sozu(*config, "frontend", "list", "--https", "--json").json()
        assert [f["hostname"] for f in frontends["https"]] == ["secure.example.com"]
        assert frontends["http"] == []

        removed = sozu(
            *config,
            "frontend",
            "https",
            "remove",
            "-a",
            address,
            "--hostname",
            "secure.example.com",
        )
        assert removed.code == 0, removed
        with HttpConnection(port, tls=context, server_hostname="secure.example.com") as connection:
            assert connection.request("GET", "/", host="secure.example.com").status == 404
        again = sozu(
            *config,
            "frontend",
            "https",
            "remove",
            "-a",
            address,
            "--hostname",
            "secure.example.com",
        )
        assert again.code == 1
        assert "no https frontend" in again.err


def on_a_terminal(*args: str | Path, columns: int) -> str:
    """``sozu ARGS`` with stdout on a terminal ``columns`` wide: what it drew there."""
    controller, terminal = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k != "SOZU_CONFIG"}
    environment.update({"COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"})
    process = subprocess.Popen(
        [sys.executable, "-m", "sozu_cli.main", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=environment,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(controller)
        if process.stderr is not None:
            process.stderr.close()
    return b"".join(chunks).decode()


def test_fingerprints_are_shown_and_taken_as_16_digit_prefixes(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    config = ("-c", str(daemon.config_path))
    address, elsewhere = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    for listener in (address, elsewhere):
        assert sozu(*config, "listener", "https", "add", "-a", listener).code == 0
    first = make_certificate("a.example.com")
    renewed = make_certificate("a.example.com")
    second = make_certificate("c.example.com")
    first_cert, first_key = write(tmp_path, "first", first)
    renewed_cert, renewed_key = write(tmp_path, "renewed", renewed)
    second_cert, second_key = write(tmp_path, "second", second)
    for listener, cert, key in (
        (address, first_cert, first_key),
        (elsewhere, second_cert, second_key),
    ):
        added = sozu(
            *config, "certificate", "add", "-a", listener, "--certificate", cert, "--key", key
        )
        assert added.code == 0, added

    # on a narrow terminal the 16 digits are drawn whole, whatever else gives way
    screen = on_a_terminal(*config, "certificate", "list", columns=60)
    for certificate in (first, second):
        assert certificate.fingerprint[:16] in screen, screen
    wide = on_a_terminal(*config, "certificate", "list", "--full", columns=200)
    assert first.fingerprint in wide, wide

    # list -f filters by prefix
    listed = sozu(*config, "certificate", "list", "-f", first.fingerprint[:16], "--json").json()
    assert [c["fingerprint"] for c in listed["certificates"]] == [first.fingerprint]
    workers = sozu(*config, "certificate", "list", "-w", "-f", second.fingerprint[:20], "-j")
    assert [c["fingerprint"] for c in workers.json()["responses"]["0"]["certificates"]] == [
        second.fingerprint
    ]

    # too short: a usage error before anything is sent
    short = sozu(*config, "certificate", "remove", "-a", address, "-f", first.fingerprint[:15])
    assert short.code == 2, short
    assert "first 16" in short.err

    # a prefix of a certificate of another listener: named, nothing removed
    wrong = sozu(*config, "certificate", "remove", "-a", address, "-f", second.fingerprint[:16])
    assert wrong.code == 2, wrong
    assert second.fingerprint in wrong.err and elsewhere in wrong.err
    assert "Traceback" not in wrong.err
    # an unknown prefix: the listener's own fingerprints are listed
    unknown = sozu(*config, "certificate", "remove", "-a", address, "-f", "0" * 16, "--json")
    assert unknown.code == 2, unknown
    assert first.fingerprint[:16] in unknown.err
    assert unknown.json()["kind"] == "usage"
    assert set(live_state(daemon)[1].certificates[address]) == {first.fingerprint}

    # replace and remove take the 16 digits a listing (or a plan) shows, colons allowed
    replaced = sozu(
        *config, "certificate", "replace", "-a", address, "--new-certificate", renewed_cert,
        "--new-key", renewed_key, "-f", first.fingerprint[:16],
    )  # fmt: skip
    assert replaced.code == 0, replaced
    assert list(live_state(daemon)[1].certificates[address]) == [renewed.fingerprint]
    colons = ":".join(renewed.fingerprint[i : i + 2] for i in range(0, 16, 2)).upper()
    removed = sozu(*config, "certificate", "remove", "-a", address, "-f", colons)
    assert removed.code == 0, removed
    assert live_state(daemon)[1].certificates.get(address, {}) == {}
