"""``sozu config check`` and the same checks in ``sozu-apply``, run as a user would: every
finding at once with file:line:column, a count, exit 1 on errors; ``--json``; ``--strict``;
unknown top-level keys; HTTPS hostnames no certificate covers, also when ``sozu-apply`` would
replace a certificate of a running daemon by one that drops a served name."""

from __future__ import annotations

from pathlib import Path

from cli_harness import live_state, sozu, sozu_apply
from support.certs import cached_certificate
from support.daemon import DaemonProcess, free_port

MISTAKES = """\
worker_cont = 2
log_level = "info"
handle_process_affinity = true

[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"

[clusters.api]
protocol = "http"
frontends = [{ address = "127.0.0.1:8080", hostname = "api.example" }]
backends = [
  { address = "10.0.0.1:80" },
  { address = "nope" },
]
"""


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_error_and_warning_with_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, MISTAKES)
    checked = sozu("config", "check", path)
    assert checked.code == 1, checked
    assert "Traceback" not in checked.err
    lines = checked.err.splitlines()
    assert lines == [
        f"error: {path}:1:1: top-level key 'worker_cont': unknown top-level key; "
        "did you mean 'worker_count'?",
        f"error: {path}:14:5: [clusters.api.backends[1]] key 'address': invalid address "
        "'nope': expected 'IP:port', e.g. '127.0.0.1:8080'",
        f"warning: {path}:3:1: top-level key 'handle_process_affinity': is not implemented "
        "by this proxy and is ignored",
    ]
    assert checked.out.splitlines()[-1] == f"{path}: 2 errors, 1 warning"

    document = sozu("config", "check", path, "--json")
    assert document.code == 1, document
    data = document.json()
    assert data["valid"] is False
    assert [(e["severity"], e["line"], e["column"], e["key"]) for e in data["errors"]] == [
        ("error", 1, 1, "worker_cont"),
        ("error", 14, 5, "address"),
    ]
    assert data["errors"][1]["table"] == "clusters.api.backends[1]"
    assert data["errors"][1]["file"] == str(path)
    (warning,) = data["warnings"]
    assert (warning["severity"], warning["line"], warning["key"]) == (
        "warning",
        3,
        "handle_process_affinity",
    )


def test_a_valid_file_exits_0_with_its_summary_and_strict_refuses_its_warnings(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path, MISTAKES.replace("worker_cont", "worker_count").replace("nope", "10.0.0.2:80")
    )
    checked = sozu("config", "check", path)
    assert checked.code == 0, checked
    assert f"{path} is valid: 1 listener, 1 cluster, 1 frontend, 2 backends" in checked.out
    assert checked.out.splitlines()[-1] == f"{path}: 0 errors, 1 warning"
    assert f"warning: {path}:3:1: top-level key 'handle_process_affinity'" in checked.err

    strict = sozu("config", "check", "--strict", path)
    assert strict.code == 1, strict
    assert (
        f"error: {path}:3:1: top-level key 'handle_process_affinity': is not implemented by "
        "this proxy and is ignored (a warning, refused with --strict)"
    ) in strict.err
    assert strict.out.splitlines()[-1] == f"{path}: 1 error, 0 warnings"
    strict_json = sozu("-c", path, "config", "check", "--strict", "--json")
    assert strict_json.code == 1
    assert strict_json.json()["strict"] is True
    assert strict_json.json()["warnings"] == []


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    checked = sozu("config", "check", tmp_path / "absent.toml")
    assert checked.code == 1, checked
    assert "cannot read the configuration file" in checked.err
    assert "Traceback" not in checked.err


def https_config(directory: Path, port: int, names: tuple[str, ...], hostnames: list[str]) -> str:
    """An HTTPS listener on ``port`` whose certificate covers ``names``; one frontend per
    hostname."""
    certificate = cached_certificate(*names)
    stem = "-".join(names).replace("*", "star")
    write(directory, certificate.cert_pem, f"{stem}.pem")
    write(directory, certificate.key_pem, f"{stem}.key")
    frontends = ",\n".join(
        f'  {{ address = "127.0.0.1:{port}", hostname = "{hostname}" }}' for hostname in hostnames
    )
    return f"""\
worker_count = 1

[[listeners]]
protocol = "https"
address = "127.0.0.1:{port}"
certificate = "{stem}.pem"
key = "{stem}.key"

[clusters.app]
protocol = "http"
frontends = [
{frontends},
]
backends = [{{ address = "127.0.0.1:{free_port()}" }}]
"""


def test_an_https_hostname_no_certificate_covers_is_an_error(tmp_path: Path) -> None:
    port = free_port()
    path = write(
        tmp_path,
        https_config(
            tmp_path, port, ("*.shop.test",), ["a.shop.test", "x.a.shop.test", "shop.test"]
        ),
    )
    checked = sozu("config", "check", path)
    assert checked.code == 1, checked
    errors = [line for line in checked.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {path}:13:")
    assert "[clusters.app.frontends[1]] key 'hostname'" in errors[0]
    assert "covers 'x.a.shop.test'" in errors[0]
    assert errors[1].startswith(f"error: {path}:14:") and "covers 'shop.test'" in errors[1]
    assert "the certificates there cover *.shop.test" in errors[1]
    assert f"[listeners[0]] (127.0.0.1:{port})" in errors[1]
    # and a warning: a wildcard cannot be the default certificate
    assert checked.out.splitlines()[-1] == f"{path}: 2 errors, 1 warning"


def test_sozu_apply_refuses_a_certificate_that_drops_a_served_hostname(tmp_path: Path) -> None:
    port = free_port()
    both = ("a.shop.test", "b.shop.test")
    running = https_config(tmp_path, port, both, list(both))
    with DaemonProcess(tmp_path, running) as daemon:
        daemon.start()
        before = live_state(daemon)
        (fingerprints,) = before[1].certificates.values()
        # the renewed certificate forgot b.shop.test, still served by a frontend
        desired = tmp_path / "desired"
        desired.mkdir()
        path = write(
            desired,
            f'command_socket = "{daemon.socket_path}"\n'
            + https_config(desired, port, ("a.shop.test",), list(both)),
        )
        for mode in (["--check"], []):
            refused = sozu_apply(path, *mode)
            assert refused.code != 0, refused
            assert "Traceback" not in refused.err
            assert f"{path}:14:" in refused.err
            assert (
                "[clusters.app.frontends[1]] key 'hostname': no certificate on "
                f"the https listener of [listeners[0]] (127.0.0.1:{port}) covers 'b.shop.test': "
                "the certificates there cover a.shop.test"
            ) in refused.err
            assert "nothing was changed" in refused.err
        after = live_state(daemon)
        assert after[0] == before[0]
        assert list(after[1].certificates.values()) == [fingerprints]
        # what config check says of the same file
        checked = sozu("config", "check", path)
        assert checked.code == 1 and "covers 'b.shop.test'" in checked.err


def test_sozu_apply_lists_every_error_of_the_file(tmp_path: Path, daemon: DaemonProcess) -> None:
    path = write(
        tmp_path,
        f'command_socket = "{daemon.socket_path}"\n' + MISTAKES,
        "desired.toml",
    )
    before = live_state(daemon)
    refused = sozu_apply(path, "--check")
    assert refused.code != 0, refused
    assert f"2 errors in {path}:" in refused.err
    assert f"{path}:2:1: top-level key 'worker_cont': unknown top-level key" in refused.err
    assert f"{path}:15:5: [clusters.api.backends[1]] key 'address'" in refused.err
    assert "Traceback" not in refused.err
    assert live_state(daemon) == before


def test_the_readme_example_is_what_config_check_prints(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("$ sozu config check config.toml\n")
    recorded = readme[start : readme.index("```", start)].splitlines()[1:]
    write(tmp_path, MISTAKES)
    checked = sozu("config", "check", "config.toml", cwd=tmp_path)
    assert checked.code == 1, checked
    assert checked.err.splitlines() + checked.out.splitlines() == recorded
