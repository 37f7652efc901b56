"""``sozu-apply``: plans against real daemons, check, apply, version guard, rollback, fleets."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cli_harness import APPLY_FIXTURES, base_config, live_state, sozu, sozu_apply
from support.certs import make_certificate
from support.daemon import DaemonProcess, free_port

from sozu_config import (
    AddCluster,
    Cluster,
    CommandClient,
    ConfigState,
    CountRequests,
    PlanError,
    RemoveCluster,
    load_config,
    load_plan,
    plan_states,
)
from sozu_config.responses import ErrorKind, ResponseStatus

BEFORE = APPLY_FIXTURES / "before.toml"
AFTER = APPLY_FIXTURES / "after.toml"
LOCALHOST = "c4a787c2140c9b0a"  # tests__ecdsa-localhost.pem
MULTI_SNI = "91d60adcea2c935b"  # multi-sni-cert.pem

EXPECTED_REQUESTS = [
    "update_http_listener 127.0.0.1:28080 (front_timeout)",
    "add_http_listener 127.0.0.1:28081",
    "add_cluster api",
    "add_cluster web",
    f"replace_certificate 127.0.0.1:28443 {LOCALHOST} -> {MULTI_SNI} "
    "(foo.example.com,localhost,bar.example.com,baz.example.com)",
    "remove_http_frontend www.example.com on 127.0.0.1:28080",
    "add_http_frontend www.example.com on 127.0.0.1:28080 -> web",
    "add_http_frontend www.example.com/api on 127.0.0.1:28080 -> api",
    "add_backend api/api-1 127.0.0.1:29020",
    "add_backend db/db-1 127.0.0.1:29500",
    "add_backend web/web-3 127.0.0.1:29003",
    "remove_backend legacy/legacy-1",
    "remove_backend web/web-2",
    "remove_http_frontend legacy.example.com on 127.0.0.1:28080",
    "remove_http_frontend www.example.com/old on 127.0.0.1:28080",
    "remove_cluster legacy",
]


def empty_daemon(directory: Path) -> DaemonProcess:
    return DaemonProcess(directory, "worker_count = 1\n")


# --------------------------------------------------------------------------- the fixture pair


def test_library_plan_of_the_fixture_pair_is_the_expected_sequence() -> None:
    plan = plan_states(load_config(BEFORE).state, load_config(AFTER).state)
    assert [r.describe() for r in plan.requests] == EXPECTED_REQUESTS
    assert plan.summary() == "5 to add, 5 to change, 5 to remove"
    changed = {c.description: c.fields for c in plan.changes if c.op == "~"}
    assert changed["add_cluster web"] == {
        "load_balancing": ("round_robin", "random"),
        "sticky_session": (False, True),
    }
    frontend = "http_frontend www.example.com on 127.0.0.1:28080 -> web (removed and added back)"
    assert changed[frontend] == {"tags.team": (None, "web")}
    assert changed["add_backend db/db-1 127.0.0.1:29500"] == {"weight": (100, 50)}
    assert changed["update_http_listener 127.0.0.1:28080 (front_timeout)"] == {
        "front_timeout": (60, 120)
    }


def test_fixture_pair_against_a_daemon_dry_run_check_apply(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        socket = daemon.socket_path
        # bring the daemon to the "before" state with sozu-apply itself
        first = sozu_apply(BEFORE, "--socket", socket)
        assert first.code == 0, first
        assert sozu_apply(BEFORE, "--socket", socket, "--check").code == 0

        dry = sozu_apply(AFTER, "--socket", socket, "--dry-run", "--json")
        assert dry.code == 0, dry
        document = dry.json()
        assert document["mode"] == "dry_run"
        (target,) = document["targets"]
        assert target["socket"] == str(socket)
        assert target["status"] == "planned"
        assert target["descriptions"] == EXPECTED_REQUESTS
        assert [r["type"] for r in target["requests"]] == [d.split()[0] for d in EXPECTED_REQUESTS]
        assert target["summary"] == {
            "add": 5,
            "change": 5,
            "remove": 5,
            "text": "5 to add, 5 to change, 5 to remove",
        }
        version_before, state_before = live_state(daemon)
        assert target["version"] == version_before
        # a changed frontend is one "~" line standing for its remove and add requests
        pair = next(c for c in target["changes"] if c["description"].startswith("http_frontend"))
        assert pair["op"] == "~"
        assert pair["requests"] == [5, 6]
        assert pair["fields"] == {"tags.team": [None, "web"]}
        rotation = next(c for c in target["changes"] if c["kind"] == "certificate")
        assert rotation["fields"]["fingerprint"] == [LOCALHOST, MULTI_SNI]
        # never key material, in any output
        assert "PRIVATE KEY" not in dry.out
        replace = target["requests"][4]
        assert replace["new_certificate"]["key"] is None

        human = sozu_apply(AFTER, "--socket", socket, "--dry-run")
        assert human.code == 0, human
        lines = human.out.splitlines()
        assert lines[0] == f"{socket} (state version {version_before})"
        groups = [
            line.strip() for line in lines if line.startswith("  ") and not line.startswith("    ")
        ]
        assert groups == [
            "listeners",
            "clusters",
            "certificates",
            "frontends",
            "backends",
            "removals",
            "plan: 5 to add, 5 to change, 5 to remove",
        ]
        assert "    ~ add_cluster web" in lines
        assert '        load_balancing: "round_robin" -> "random"' in lines
        assert "    - remove_cluster legacy" in lines
        assert "    + add_cluster api" in lines
        assert "PRIVATE KEY" not in human.out
        # the dry run changed nothing
        assert live_state(daemon) == (version_before, state_before)

        drift = sozu_apply(AFTER, "--socket", socket, "--check")
        assert drift.code == 2, drift
        assert "drifted" in drift.out

        applied = sozu_apply(AFTER, "--socket", socket)
        assert applied.code == 0, applied
        assert "applied 16 requests" in applied.out
        version, state = live_state(daemon)
        assert version == version_before + 1  # one batch
        assert state == load_config(AFTER).state

        in_line = sozu_apply(AFTER, "--socket", socket, "--check", "--json")
        assert in_line.code == 0, in_line
        assert in_line.json()["targets"][0]["status"] == "in_sync"

        again = sozu_apply(AFTER, "--socket", socket)
        assert again.code == 0
        assert "nothing to do" in again.out
        assert live_state(daemon)[0] == version  # nothing was sent


def test_sozu_apply_subcommand_is_the_same_command(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        result = sozu("--socket", daemon.socket_path, "apply", BEFORE, "--json")
        assert result.code == 0, result
        (target,) = result.json()["targets"]
        assert target["status"] == "applied"
        assert [r["status"] for r in target["results"]] == ["ok"] * len(target["requests"])
        assert live_state(daemon)[1] == load_config(BEFORE).state


def test_the_file_command_socket_is_the_default_target_and_the_file_is_not_written(
    tmp_path: Path,
) -> None:
    port = free_port()
    with DaemonProcess(tmp_path, base_config(port)) as daemon:
        daemon.start()
        desired = tmp_path / "desired.toml"
        text = f'command_socket = "{daemon.socket_path}"\n' + base_config(port).replace(
            'hostname = "app.example.com"', 'hostname = "app.example.com", path = "/v2"'
        )
        desired.write_text(text)
        before = desired.stat().st_mtime_ns
        result = sozu_apply(desired)
        assert result.code == 0, result
        assert "~ http_frontend app.example.com/v2" not in result.out  # a new key
        assert "    + add_http_frontend app.example.com/v2 on" in result.out
        assert "    - remove_http_frontend app.example.com on" in result.out
        assert desired.read_text() == text
        assert desired.stat().st_mtime_ns == before
        assert live_state(daemon)[1] == load_config(desired).state


# --------------------------------------------------------------------------- errors


def test_bad_file_exits_1_and_changes_nothing(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        broken = tmp_path / "broken.toml"
        broken.write_text("[[listeners]]\nprotocol = 'http'\naddress = 'nowhere'\n")
        version = live_state(daemon)[0]
        result = sozu_apply(broken, "--socket", daemon.socket_path)
        assert result.code == 1, result
        assert "nowhere" in result.err
        assert "Traceback" not in result.err
        assert live_state(daemon)[0] == version
        missing = sozu_apply(tmp_path / "missing.toml", "--socket", daemon.socket_path)
        assert missing.code == 1
        assert "cannot read" in missing.err


def test_daemon_down_exits_1(tmp_path: Path) -> None:
    result = sozu_apply(BEFORE, "--socket", tmp_path / "nobody.sock")
    assert result.code == 1, result
    assert "does not exist" in result.err
    check = sozu_apply(BEFORE, "--socket", tmp_path / "nobody.sock", "--check", "--json")
    assert check.code == 1
    assert check.json()["targets"][0]["status"] == "unreachable"


def test_refused_certificate_rolls_back_the_whole_batch(tmp_path: Path) -> None:
    port, tls_port = free_port(), free_port()
    expired = make_certificate("old.example.com", expired=True)
    (tmp_path / "old.pem").write_text(expired.cert_pem)
    (tmp_path / "old.key").write_text(expired.key_pem)
    with DaemonProcess(tmp_path, base_config(port)) as daemon:
        daemon.start()
        version, before = live_state(daemon)
        desired = tmp_path / "desired.toml"
        frontend = (
            f'{{ address = "127.0.0.1:{tls_port}", hostname = "old.example.com", '
            'certificate = "old.pem", key = "old.key" }'
        )
        desired.write_text(
            base_config(port)
            + f"""
[[listeners]]
protocol = "https"
address = "127.0.0.1:{tls_port}"

[clusters.secure]
protocol = "http"
frontends = [{frontend}]
backends = [{{ address = "127.0.0.1:{free_port()}" }}]
"""
        )
        plan = sozu_apply(desired, "--socket", daemon.socket_path, "--dry-run", "--json")
        descriptions = plan.json()["targets"][0]["descriptions"]
        position = next(i for i, d in enumerate(descriptions) if d.startswith("add_certificate"))
        assert position >= 2, "the certificate comes after other requests"
        result = sozu_apply(desired, "--socket", daemon.socket_path)
        assert result.code == 1, result
        assert "expired" in result.err
        assert "nothing was applied" in result.err
        assert live_state(daemon) == (version, before)


def test_a_batch_refused_by_the_daemon_checks_names_the_failing_request(tmp_path: Path) -> None:
    """The daemon refuses an expired certificate before its state sees the batch; its answer
    must still carry the per-request results, as for a refusal by the state."""
    port, tls_port = free_port(), free_port()
    expired = make_certificate("old.example.com", expired=True)
    (tmp_path / "old.pem").write_text(expired.cert_pem)
    (tmp_path / "old.key").write_text(expired.key_pem)
    frontend = (
        f'{{ address = "127.0.0.1:{tls_port}", hostname = "old.example.com", '
        'certificate = "old.pem", key = "old.key" }'
    )
    with DaemonProcess(tmp_path, base_config(port)) as daemon:
        daemon.start()
        desired = tmp_path / "desired.toml"
        desired.write_text(
            base_config(port)
            + f'\n[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:{tls_port}"\n'
            + f'\n[clusters.secure]\nprotocol = "http"\nfrontends = [{frontend}]\n'
        )
        result = sozu_apply(desired, "--socket", daemon.socket_path, "--json")
        assert result.code == 1, result
        (target,) = result.json()["targets"]
        failed = [
            r for r in target["results"] if r["status"] == "failure" and "expired" in r["message"]
        ]
        assert [r["request"] for r in failed] == [
            d for d in target["descriptions"] if d.startswith("add_certificate")
        ], target["results"]


def test_a_failing_request_in_the_middle_undoes_the_others(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        version, before = live_state(daemon)
        with CommandClient(daemon.socket_path, timeout=30) as client:
            plan = load_plan(BEFORE, client)
            assert plan.version == version
            middle = len(plan.requests) // 2
            plan.requests.insert(middle, RemoveCluster(cluster_id="ghost"))
            try:
                plan.apply()
            except PlanError as error:
                failure = error
            else:
                raise AssertionError("the batch should have been refused")
        assert not failure.version_mismatch
        assert failure.kind != ErrorKind.VERSION_MISMATCH
        assert "ghost" in failure.message
        statuses = [(r.status, r.message) for r in failure.results]
        assert len(statuses) == len(plan.requests)
        assert statuses[middle][0] is ResponseStatus.FAILURE
        assert all(m == "undone" for _, m in statuses[:middle])
        assert all(m == "not applied" for _, m in statuses[middle + 1 :])
        assert live_state(daemon) == (version, before)


def test_a_concurrent_change_makes_the_plan_fail_with_a_version_mismatch(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        with CommandClient(daemon.socket_path, timeout=30) as client:
            plan = load_plan(BEFORE, client)
            assert not plan.empty
            interloper = daemon.send(AddCluster(cluster=Cluster(cluster_id="interloper")))
            assert interloper.ok, interloper.message
            moved = live_state(daemon)
            assert moved[0] != plan.version
            try:
                plan.apply()
            except PlanError as error:
                assert error.version_mismatch, error.message
                assert error.kind == ErrorKind.VERSION_MISMATCH
            else:
                raise AssertionError("a plan made against another version must be refused")
        assert live_state(daemon) == moved
        assert list(moved[1].clusters) == ["interloper"]


def test_a_version_mismatch_does_not_report_requests_as_undone(tmp_path: Path) -> None:
    """Refused for its version, the batch was never started: no request was applied, so none
    was "undone"."""
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        with CommandClient(daemon.socket_path, timeout=30) as client:
            plan = load_plan(BEFORE, client)
            assert daemon.send(AddCluster(cluster=Cluster(cluster_id="interloper"))).ok
            try:
                plan.apply()
            except PlanError as error:
                refused = error
            else:
                raise AssertionError("a plan made against another version must be refused")
        assert refused.version_mismatch
        assert len(refused.results) == len(plan.requests)
        assert [r.message for r in refused.results] == ["not applied"] * len(plan.requests)


def test_an_empty_plan_sends_nothing(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        with CommandClient(daemon.socket_path, timeout=30) as client:
            plan = load_plan(BEFORE, client)
            plan.apply()
            counts_before = daemon.send(CountRequests()).content.counts  # type: ignore[union-attr]
            second = load_plan(BEFORE, client)
            assert second.empty
            response = second.apply()
            assert response.ok
            assert response.message == "nothing to do"
        counts_after = daemon.send(CountRequests()).content.counts  # type: ignore[union-attr]
        assert counts_after == counts_before


def test_load_plan_opens_its_own_connection_and_the_plan_closes_it(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        file = tmp_path / "desired.toml"
        file.write_text(
            f'command_socket = "{daemon.socket_path}"\n[clusters.app]\nprotocol = "http"\n',
            encoding="utf-8",
        )
        with load_plan(file) as plan:
            assert plan.client is not None
            assert plan.client.timeout is not None
            assert plan.client.timeout >= 30
            assert plan.apply().ok
            client = plan.client
        assert client._socket is None  # closed with the plan
        assert list(live_state(daemon)[1].clusters) == ["app"]


# --------------------------------------------------------------------------- fleets


def test_a_fleet_of_two_daemons(
    tmp_path: Path, daemon_factory: Callable[[str, str], DaemonProcess]
) -> None:
    one = daemon_factory("one", "worker_count = 1\n")
    two = daemon_factory("two", "worker_count = 1\n")
    two.send(AddCluster(cluster=Cluster(cluster_id="stray")))
    result = sozu_apply(BEFORE, "--socket", one.socket_path, "--socket", two.socket_path, "--json")
    assert result.code == 0, result
    targets = result.json()["targets"]
    assert [t["socket"] for t in targets] == [str(one.socket_path), str(two.socket_path)]
    assert [t["status"] for t in targets] == ["applied", "applied"]
    assert "remove_cluster stray" in targets[1]["descriptions"]
    assert "remove_cluster stray" not in targets[0]["descriptions"]
    desired = load_config(BEFORE).state
    assert live_state(one)[1] == desired
    assert live_state(two)[1] == desired
    check = sozu_apply(BEFORE, "--socket", one.socket_path, "--socket", two.socket_path, "--check")
    assert check.code == 0, check

    # one target down: the other is still brought in line, the exit code is an error (1)
    two.send(AddCluster(cluster=Cluster(cluster_id="again")))
    down = tmp_path / "down.sock"
    mixed = sozu_apply(BEFORE, "--socket", down, "--socket", two.socket_path)
    assert mixed.code == 1, mixed
    assert str(down) in mixed.err
    assert live_state(two)[1] == desired


def test_plan_json_output_for_a_fresh_proxy_is_plain_json(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        result = sozu_apply(BEFORE, "--socket", daemon.socket_path, "--dry-run", "--json")
        assert result.code == 0
        document = json.loads(result.out)  # nothing but JSON on stdout
        (target,) = document["targets"]
        assert (
            target["summary"]["text"]
            == plan_states(ConfigState(), load_config(BEFORE).state).summary()
        )
        assert result.err == ""


def confirm_on_a_terminal(socket: Path, answer: str) -> tuple[int, str]:
    """Run ``sozu-apply BEFORE --confirm`` with stdin on a terminal that types ``answer``."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sozu_cli.apply", str(BEFORE), "--socket", str(socket), "--confirm"],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        os.write(leader, f"{answer}\n".encode())  # the terminal keeps the line until it is read
        _, err = process.communicate(timeout=60)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait(5)
    return process.returncode, err


def test_confirm_on_a_terminal_asks_first(tmp_path: Path) -> None:
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        before = live_state(daemon)
        code, err = confirm_on_a_terminal(daemon.socket_path, "n")
        assert code == 1, err
        assert "Apply these changes to 1 proxy? [y/N]" in err
        assert "cancelled" in err
        assert live_state(daemon) == before
        code, err = confirm_on_a_terminal(daemon.socket_path, "y")
        assert code == 0, err
        assert live_state(daemon)[1] == load_config(BEFORE).state


def test_confirm_without_a_terminal_refuses_unless_yes(tmp_path: Path) -> None:
    # --confirm asks on a terminal; stdin a pipe or /dev/null (CI) cannot answer: refused
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        before = live_state(daemon)
        piped = sozu_apply(BEFORE, "--socket", daemon.socket_path, "--confirm", stdin="y\n")
        assert piped.code == 1, piped
        assert "--confirm needs a terminal" in piped.err
        assert "--yes" in piped.err
        assert "Traceback" not in piped.err
        command = [sys.executable, "-m", "sozu_cli.apply", str(BEFORE), "--confirm"]
        with open(os.devnull) as nothing:
            null = subprocess.run(
                [*command, "--socket", str(daemon.socket_path)],
                stdin=nothing,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert null.returncode == 1, null.stderr
        assert "nothing was applied" in null.stderr
        assert live_state(daemon) == before
        yes = sozu_apply(BEFORE, "--socket", daemon.socket_path, "--confirm", "--yes", stdin="")
        assert yes.code == 0, yes
        assert live_state(daemon)[1] == load_config(BEFORE).state
