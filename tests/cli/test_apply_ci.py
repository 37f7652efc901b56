"""``sozu-apply`` in CI: exit codes as ``terraform plan -detailed-exitcode``, saved plans applied
exactly or not at all, offline plans, additions with their settings, completion."""

from __future__ import annotations

import json
import stat
import subprocess
import textwrap
from pathlib import Path

from cli_harness import APPLY_FIXTURES, live_state, sozu, sozu_apply
from support.daemon import DaemonProcess

from sozu_config import AddCluster, Cluster, load_config

BEFORE = APPLY_FIXTURES / "before.toml"
AFTER = APPLY_FIXTURES / "after.toml"


def empty_daemon(directory: Path) -> DaemonProcess:
    return DaemonProcess(directory, "worker_count = 1\n")


def plan_lines(text: str) -> list[str]:
    """The lines of a shown plan, without its heading (which names the target)."""
    return text.splitlines()[1:]


# --------------------------------------------------------------------------- exit codes


def test_exit_codes_0_in_sync_2_pending_1_any_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[listeners]\n")
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        socket = daemon.socket_path
        pending = sozu_apply(BEFORE, "--socket", socket, "--check")
        assert pending.code == 2, pending
        assert sozu_apply(BEFORE, "--socket", socket).code == 0
        assert sozu_apply(BEFORE, "--socket", socket, "--check").code == 0
        # a broken file is an error, not a drift, with --check as without
        bad = sozu_apply(broken, "--socket", socket, "--check")
        assert bad.code == 1, bad
        assert "TOML syntax error" in bad.err
        # an error wins over changes pending: one target drifted, the other unreachable
        daemon.send(AddCluster(cluster=Cluster(cluster_id="stray")))
        both = sozu_apply(
            BEFORE, "--socket", socket, "--socket", tmp_path / "nobody.sock", "--check", "--json"
        )
        assert both.code == 1, both
        assert [t["status"] for t in both.json()["targets"]] == ["drift", "unreachable"]
    down = sozu_apply(BEFORE, "--socket", tmp_path / "nobody.sock", "--check")
    assert down.code == 1, down
    # bad arguments are errors too (1, not argparse's 2), said in one line
    for arguments in (["--debounce", "soon"], [], ["--check", "--dry-run", "x.toml"]):
        wrong = sozu_apply(*arguments)
        assert wrong.code == 1, (arguments, wrong)
        assert "Traceback" not in wrong.err
        assert wrong.err.count("\n") == 1, wrong
    usage = sozu_apply("--help")
    assert usage.code == 0
    assert "terraform plan -detailed-exitcode" in usage.out
    assert "  2  changes pending" in usage.out
    assert "  1  any error" in usage.out


# --------------------------------------------------------------------------- saved plans


def test_a_saved_plan_is_applied_exactly_as_reviewed(tmp_path: Path) -> None:
    reviewed = tmp_path / "desired.toml"
    reviewed.write_text(BEFORE.read_text().replace("../", f"{APPLY_FIXTURES.parent}/"))
    plan_file = tmp_path / "plan.json"
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        socket = daemon.socket_path
        before = live_state(daemon)
        saved = sozu_apply(reviewed, "--socket", socket, "--out", plan_file)
        assert saved.code == 0, saved
        assert f"sozu-apply --plan {plan_file}" in saved.err
        assert "+ add_cluster web" in saved.out
        assert live_state(daemon) == before  # saving applies nothing
        assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600  # it holds private keys
        document = json.loads(plan_file.read_text())
        assert document["targets"][0]["version"] == before[0]
        assert document["targets"][0]["socket"] == str(socket)

        # the file changes after the review: the plan applied is still the reviewed one
        reviewed.write_text("worker_count = 1\n")
        shown = sozu_apply("--plan", plan_file, "--dry-run")
        assert shown.code == 0, shown
        assert plan_lines(shown.out) == plan_lines(saved.out)
        assert live_state(daemon) == before
        applied = sozu_apply("--plan", plan_file)
        assert applied.code == 0, applied
        assert live_state(daemon)[1] == load_config(BEFORE).state

        # applied once, the state moved: the same plan is refused, nothing changes
        again = sozu_apply("--plan", plan_file)
        assert again.code == 1, again
        assert "moved since the plan was saved" in again.err
        assert live_state(daemon)[1] == load_config(BEFORE).state


def test_a_saved_plan_is_refused_when_the_live_state_moved(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        saved = sozu_apply(AFTER, "--socket", daemon.socket_path, "--out", plan_file, "--json")
        assert saved.code == 0, saved
        assert saved.json()["targets"][0]["status"] == "planned"
        assert daemon.send(AddCluster(cluster=Cluster(cluster_id="interloper"))).ok
        moved = live_state(daemon)
        refused = sozu_apply("--plan", plan_file, "--json")
        assert refused.code == 1, refused
        assert refused.json()["targets"][0]["status"] == "version_mismatch"
        assert "make a new plan" in refused.err
        assert live_state(daemon) == moved
    # not a plan at all: one clear line
    for content in (
        '{"targets": []}',
        "not json",
        '{"format": "sozu-apply plan 1", "targets": [1]}',
    ):
        plan_file.write_text(content)
        bad = sozu_apply("--plan", plan_file)
        assert bad.code == 1, bad
        assert "not a" in bad.err and "Traceback" not in bad.err, bad
    plan_file.write_text('{"format": "sozu-apply plan 1", "targets": []}')
    empty = sozu_apply("--plan", plan_file)
    assert empty.code == 1
    assert "holds no plan" in empty.err
    conflict = sozu_apply("--plan", plan_file, AFTER)
    assert conflict.code == 1
    assert "give one of FILE" in conflict.err


# --------------------------------------------------------------------------- offline plans


def test_offline_plans_show_what_the_daemon_plan_shows(tmp_path: Path) -> None:
    state_file = tmp_path / "state.jsonl"
    with empty_daemon(tmp_path) as daemon:
        daemon.start()
        socket = daemon.socket_path
        assert sozu_apply(BEFORE, "--socket", socket).code == 0
        online = sozu_apply(AFTER, "--socket", socket, "--dry-run")
        assert online.code == 0, online
        saved = sozu("--socket", socket, "state", "save", "-f", state_file)
        assert saved.code == 0, saved
    # the daemon is stopped: the offline plans need none
    diff = sozu_apply("--diff", BEFORE, AFTER)
    assert diff.code == 0, diff
    assert diff.out.splitlines()[0] == f"{BEFORE} -> {AFTER}"
    assert plan_lines(diff.out) == plan_lines(online.out)
    against = sozu_apply("--against", state_file, AFTER)
    assert against.code == 0, against
    assert plan_lines(against.out) == plan_lines(online.out)

    assert sozu_apply("--diff", BEFORE, AFTER, "--check").code == 2
    assert sozu_apply("--against", state_file, AFTER, "--check").code == 2
    same = sozu_apply("--against", state_file, BEFORE, "--check")
    assert same.code == 0, same
    assert "the two states are the same" in same.out
    assert sozu_apply("--diff", AFTER, AFTER, "--check").code == 0

    document = sozu_apply("--diff", BEFORE, AFTER, "--json").json()
    assert document["summary"]["text"] == "5 to add, 5 to change, 5 to remove"
    assert "PRIVATE KEY" not in json.dumps(document)

    # unusable inputs are errors (1), named
    bad_state = tmp_path / "bad.jsonl"
    bad_state.write_text('{"type": "nonsense"}\n')
    broken = sozu_apply("--against", bad_state, AFTER, "--check")
    assert broken.code == 1, broken
    assert str(bad_state) in broken.err
    missing = sozu_apply("--diff", tmp_path / "missing.toml", AFTER)
    assert missing.code == 1, missing
    assert "Traceback" not in missing.err
    no_file = sozu_apply("--against", state_file)
    assert no_file.code == 1
    assert "--against needs FILE" in no_file.err


# --------------------------------------------------------------------------- additions


def test_additions_list_their_settings_that_are_not_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("worker_count = 1\n")
    desired = tmp_path / "desired.toml"
    desired.write_text(
        textwrap.dedent(
            """
            worker_count = 1
            [clusters.admin]
            protocol = "http"
            load_balancing = "LEAST_LOADED"
            sticky_session = true
            backends = [
                { address = "127.0.0.1:9001", backend_id = "main" },
                { address = "127.0.0.1:9002", backend_id = "spare", backup = true, weight = 10 },
            ]
            [clusters.admin.health_check]
            uri = "/health"
            interval = 10
            timeout = 5

            [clusters.plain]
            protocol = "http"
            """
        )
    )
    result = sozu_apply("--diff", empty, desired)
    assert result.code == 0, result
    lines = result.out.splitlines()
    admin = lines.index("    + add_cluster admin")
    settings = lines[admin + 1 : admin + 4]
    assert settings[0].startswith("        health_check: GET /health every 10s"), settings
    assert settings[1:] == [
        '        load_balancing: "least_loaded"',
        "        sticky_session: true",
    ]
    plain = lines.index("    + add_cluster plain")
    assert not lines[plain + 1].startswith("        "), "defaults are not listed"
    spare = next(i for i, line in enumerate(lines) if "add_backend admin/spare" in line)
    assert lines[spare + 1 : spare + 3] == ["        backup: true", "        weight: 10"]
    main = next(i for i, line in enumerate(lines) if "add_backend admin/main" in line)
    assert not lines[main + 1].startswith("        ")

    document = sozu_apply("--diff", empty, desired, "--json").json()
    change = next(c for c in document["changes"] if c["description"] == "add_cluster admin")
    assert change["attributes"]["load_balancing"] == "least_loaded"
    assert change["attributes"]["health_check"]["uri"] == "/health"


# --------------------------------------------------------------------------- completion


def test_bash_completes_the_new_options_and_their_files(tmp_path: Path) -> None:
    script = sozu("completion", "bash", "sozu-apply")
    assert script.code == 0
    (tmp_path / "apply.bash").write_text(script.out)
    (tmp_path / "plan.json").write_text("{}")
    probe = textwrap.dedent(
        """
        source ./apply.bash
        function=$(sed -n 's/^complete .* -F \\([^ ]*\\) sozu-apply$/\\1/p' apply.bash)
        complete_words() {
            COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); $function; echo "${COMPREPLY[*]}"
        }
        complete_words sozu-apply --pl
        complete_words sozu-apply --plan pl
        complete_words sozu-apply --ag
        complete_words sozu-apply config.toml --ye
        """
    )
    result = subprocess.run(
        ["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["--plan", "plan.json", "--against", "--yes"]
