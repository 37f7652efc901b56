"""The cost-of-observability rows of the load benchmark: the per-round ratios against
``sozu-quiet`` (on synthetic runs), their tables, the configurations of the two variants of
sozu, which slots exist, and the variants started for real against the origin nginx."""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import load
import pytest
from loadbench.certificates import TlsMaterial, write_self_signed
from loadbench.loads import HOSTNAME, LOADS_BY_NAME
from loadbench.observability import (
    cost_markdown,
    cost_text_table,
    costs_to_json,
    observability_costs,
)
from loadbench.report import RunRecord
from loadbench.targets import (
    LOOPBACK,
    Origin,
    SozuObservedTarget,
    SozuQuietTarget,
    SozuTarget,
    allocate_ports,
    build_servers,
    fetch,
    sozu_executable,
)
from synthetic import wrk_run

from sozu_config import load_config
from sozu_config.client import CommandClient
from sozu_config.requests import QueryMetrics
from sozu_config.responses import MetricsContent

VARIANTS = ["sozu", "sozu-quiet", "sozu-observed"]


def _three_rounds() -> list[RunRecord]:
    # Per round: quiet, then sozu and sozu-observed; the machine drifts between rounds.
    figures = [(1000.0, 960.0, 800.0), (2000.0, 1800.0, 1800.0), (500.0, 490.0, 400.0)]
    records = []
    for round_index, (quiet, metrics, observed) in enumerate(figures):
        records += [
            wrk_run(round_index, "sozu", metrics),
            wrk_run(round_index, "sozu-quiet", quiet),
            wrk_run(round_index, "sozu-observed", observed),
        ]
    return records


# --- the ratios ---------------------------------------------------------------------------


def test_each_variant_is_divided_by_the_quiet_daemon_of_its_own_round() -> None:
    metrics_on, observed = observability_costs(_three_rounds(), ["small-50"], VARIANTS)

    assert (metrics_on.target, metrics_on.goal) == ("sozu", 0.95)
    assert metrics_on.ratios == [0.96, 0.9, 0.98]
    assert metrics_on.median_ratio == 0.96
    assert metrics_on.meets_goal is True
    assert (observed.target, observed.goal) == ("sozu-observed", 0.85)
    assert observed.ratios == [0.8, 0.9, 0.8]
    assert observed.median_ratio == 0.8
    assert observed.meets_goal is False
    assert (metrics_on.status, observed.status) == ("ok", "ok")


def test_no_table_without_the_quiet_daemon_and_another_variant() -> None:
    records = _three_rounds()

    assert observability_costs(records, ["small-50"], ["sozu", "haproxy"]) == []
    assert observability_costs(records, ["small-50"], ["sozu-quiet", "haproxy"]) == []
    (only,) = observability_costs(records, ["small-50"], ["sozu", "sozu-quiet"])
    assert only.target == "sozu"


def test_only_the_loads_the_quiet_daemon_ran_on_have_rows() -> None:
    records = [*_three_rounds(), wrk_run(0, "sozu", 3000.0, load_name="64k")]

    costs = observability_costs(records, ["small-50", "64k"], VARIANTS)

    assert {cost.load for cost in costs} == {"small-50"}


def test_a_variant_that_did_not_start_is_a_failed_row_saying_why() -> None:
    records = [
        wrk_run(0, "sozu-quiet", 1000.0),
        wrk_run(0, "sozu", 950.0),
        RunRecord(0, "small-50", "sozu-observed", "failed", None, "did not start: exited"),
    ]

    metrics_on, observed = observability_costs(records, ["small-50"], VARIANTS)

    assert metrics_on.median_ratio == 0.95 and metrics_on.meets_goal is True
    assert (observed.status, observed.median_ratio, observed.meets_goal) == ("failed", None, None)
    assert observed.note == "did not start: exited"


def test_no_ratio_without_a_quiet_run_of_the_same_round() -> None:
    dead_quiet = [
        RunRecord(0, "small-50", "sozu-quiet", "failed", None, "did not start"),
        wrk_run(0, "sozu", 900.0),
    ]
    other_rounds = [wrk_run(0, "sozu-quiet", 1000.0), wrk_run(1, "sozu", 900.0)]

    (no_quiet,) = observability_costs(dead_quiet, ["small-50"], ["sozu", "sozu-quiet"])
    (apart,) = observability_costs(other_rounds, ["small-50"], ["sozu", "sozu-quiet"])

    assert (no_quiet.status, no_quiet.note) == ("failed", "sozu-quiet: no run measured")
    assert apart.status == "failed" and "never measured in the same round" in apart.note


def test_runs_with_errors_are_used_only_without_clean_ones_and_flag_the_row() -> None:
    clean_beside_flagged = [
        wrk_run(0, "sozu-quiet", 1000.0),
        wrk_run(0, "sozu", 900.0),
        wrk_run(1, "sozu-quiet", 1000.0),
        wrk_run(1, "sozu", 10.0, errors=5),
    ]
    quiet_with_errors = [wrk_run(0, "sozu-quiet", 1000.0, errors=1), wrk_run(0, "sozu", 500.0)]

    (clean,) = observability_costs(clean_beside_flagged, ["small-50"], ["sozu", "sozu-quiet"])
    (flagged,) = observability_costs(quiet_with_errors, ["small-50"], ["sozu", "sozu-quiet"])

    assert (clean.status, clean.ratios) == ("ok", [0.9])
    assert (flagged.status, flagged.ratios) == ("flagged", [0.5])


def test_the_tables_state_the_goals_and_the_failures() -> None:
    records = [
        wrk_run(0, "sozu-quiet", 1000.0),
        wrk_run(0, "sozu", 970.0),
        RunRecord(0, "small-50", "sozu-observed", "failed", None, "did not start: exited"),
    ]
    costs = observability_costs(records, ["small-50"], VARIANTS)

    text = cost_text_table(costs)
    markdown = cost_markdown(costs)
    data = costs_to_json(costs)

    assert text.startswith("Cost of observability: ")
    lines = text.splitlines()
    assert lines[1].split() == [
        "load",
        "target",
        "observability",
        "vs",
        "sozu-quiet",
        "goal",
        "met",
    ]
    assert lines[3].split() == ["small-50", "sozu", "metrics", "on", "0.97", ">=", "0.95", "yes"]
    assert "sozu-observed" in lines[4] and "failed" in lines[4] and ">= 0.85" in lines[4]
    assert "small-50 / sozu-observed: did not start: exited" in text
    assert markdown.startswith("**Cost of observability.**")
    assert "| small-50 | sozu | metrics on | 0.97 | >= 0.95 | yes |" in markdown
    assert "|  | sozu-observed | metrics, statsd, admin, JSON access logs | failed |" in markdown
    assert data["reference"] == "sozu-quiet"
    assert data["costs"][0]["median_ratio"] == 0.97  # type: ignore[index]


# --- the slots and the report ---------------------------------------------------------------


def test_the_variants_run_on_small_50_unless_told() -> None:
    full = load.parse_arguments([])
    chosen = load.parse_arguments(["--loads", "64k,small-200"])
    told = load.parse_arguments(["--observability-loads", "newconn,small-50"])
    quiet, plain = SozuQuietTarget, SozuTarget
    small, big = LOADS_BY_NAME["small-50"], LOADS_BY_NAME["64k"]

    assert {"sozu-quiet", "sozu-observed"} <= set(full.targets)
    assert full.observability_loads == ("small-50",)
    assert chosen.observability_loads == ("small-200", "64k")
    assert told.observability_loads == ("small-50", "newconn")
    assert load.in_plan(full, small, quiet) and not load.in_plan(full, big, quiet)
    assert load.in_plan(full, big, plain)
    assert full.to_json()["observability_loads"] == ["small-50"]


def test_variants_that_would_never_run_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load.parse_arguments(["--loads", "64k", "--observability-loads", "small-50"])

    assert "would never be measured" in capsys.readouterr().err
    # without the variants, the same loads are fine
    load.parse_arguments(
        ["--loads", "64k", "--observability-loads", "small-50", "--targets", "sozu"]
    )


def test_the_report_leaves_out_the_slots_that_do_not_exist() -> None:
    settings = load.parse_arguments(
        [
            "--targets",
            "sozu,sozu-quiet",
            "--loads",
            "small-50,64k",
            "--observability-loads",
            "small-50",
        ]
    )
    records = [*_three_rounds(), wrk_run(0, "sozu", 3000.0, load_name="64k")]
    records = [record for record in records if record.target != "sozu-observed"]

    summaries, costs = load.summarise_run(settings, records)

    cells = [(summary.load, summary.target) for summary in summaries]
    assert cells == [("small-50", "sozu"), ("small-50", "sozu-quiet"), ("64k", "sozu")]
    assert [(cost.load, cost.target) for cost in costs] == [("small-50", "sozu")]


# --- the configurations -----------------------------------------------------------------------


def _tls(directory: Path) -> TlsMaterial:
    return TlsMaterial(directory / "cert.pem", directory / "key.pem", directory / "bundle.pem")


def _written_config(target: SozuTarget) -> dict[str, object]:
    """The configuration the target writes, its own ports and directory replaced by names."""
    target.directory.mkdir(parents=True)
    command = target.command()
    config_path = Path(command[command.index("-c") + 1])
    assert command[0] == str(sozu_executable()) and command[-1] == "start"
    config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    text = json.dumps(config)
    for value, name in (
        (f":{target.http_port}", ":HTTP"),
        (f":{target.https_port}", ":HTTPS"),
        (str(target.directory), "DIRECTORY"),
    ):
        text = text.replace(value, name)
    normalised: dict[str, object] = json.loads(text)
    return normalised


def test_the_observed_daemon_adds_statsd_admin_and_json_access_logs(tmp_path: Path) -> None:
    origin, targets = build_servers(VARIANTS, tmp_path, 0, 0, _tls(tmp_path))
    plain, quiet, observed = targets
    assert isinstance(plain, SozuTarget) and isinstance(quiet, SozuQuietTarget)
    assert isinstance(observed, SozuObservedTarget)

    plain_config = _written_config(plain)
    quiet_config = _written_config(quiet)
    observed_config = _written_config(observed)

    assert quiet_config == plain_config
    assert plain_config["command_socket"] == "DIRECTORY/sozu.sock"
    assert "metrics" not in plain_config and "access_logs_target" not in plain_config
    assert observed_config.pop("access_logs_target") == "file://DIRECTORY/access.log"
    assert observed_config.pop("access_logs_format") == "json"
    metrics = observed_config.pop("metrics")
    admin = observed_config.pop("admin")
    assert isinstance(metrics, dict) and isinstance(admin, dict)
    assert metrics["tagged_metrics"] is False
    host, port = metrics["address"].rsplit(":", 1)
    assert host == LOOPBACK and 0 < int(port) < 65536
    assert admin == {"address": f"{LOOPBACK}:{observed.admin_port}"}
    assert observed_config == plain_config
    ports = [origin.http_port, origin.https_port, observed.admin_port]
    ports += [port for target in targets for port in (target.http_port, target.https_port)]
    assert len(set(ports)) == len(ports) == 9


def test_the_plain_and_quiet_configurations_pass_the_product_loader(tmp_path: Path) -> None:
    tls = write_self_signed(tmp_path / "tls", HOSTNAME, LOOPBACK)
    _, (quiet,) = build_servers(["sozu-quiet"], tmp_path, 0, 0, tls)
    quiet.directory.mkdir()
    command = quiet.command()

    config = load_config(command[command.index("-c") + 1])

    assert config.command_socket == quiet.directory / "sozu.sock"
    assert config.access_logs_target is None


# --- started for real -----------------------------------------------------------------------


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A directory nginx's workers (``nobody`` when started as root) can read, as the
    benchmark's own: pytest's temporary directories are private to their owner."""
    directory = Path(tempfile.mkdtemp(prefix="sozu-bench-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def origin(workspace: Path) -> Iterator[tuple[Origin, TlsMaterial]]:
    tls = write_self_signed(workspace / "tls", HOSTNAME, LOOPBACK)
    server, _ = build_servers([], workspace, 0, 0, tls)
    server.start()
    try:
        readiness = server.wait_until_ready()
        assert readiness.available, readiness.detail
        yield server, tls
    finally:
        server.stop()


def _requests_counted(socket_path: Path) -> int:
    with CommandClient(socket_path, timeout=10.0) as client:
        response = client.send(QueryMetrics())
    assert response.ok and isinstance(response.content, MetricsContent), response.message
    count = response.content.proxying.get("http.requests", 0)
    return int(count) if isinstance(count, int | float) else 0


@pytest.mark.e2e
def test_the_quiet_daemon_serves_with_its_metrics_disabled(
    workspace: Path, origin: tuple[Origin, TlsMaterial]
) -> None:
    server, tls = origin
    http_port, https_port = allocate_ports(2)
    quiet = SozuQuietTarget(workspace / "quiet", 0, http_port, https_port, server, tls)
    quiet.start()
    try:
        readiness = quiet.wait_until_ready()
        assert readiness.available and readiness.tls_available, readiness.detail
        before = _requests_counted(quiet.command_socket)
        for _ in range(5):
            assert fetch(quiet.http_port, "/", tls=False)[0] == 200

        assert _requests_counted(quiet.command_socket) == before == 0
    finally:
        quiet.stop()


@pytest.mark.e2e
def test_the_observed_daemon_serves_its_admin_endpoint_and_logs_accesses(
    workspace: Path, origin: tuple[Origin, TlsMaterial]
) -> None:
    server, tls = origin
    http_port, https_port, admin_port = allocate_ports(3)
    directory = workspace / "observed"
    observed = SozuObservedTarget(directory, 0, http_port, https_port, server, tls, [admin_port])
    directory.mkdir()
    command = observed.command()
    load_config(command[command.index("-c") + 1])
    observed.start()
    try:
        readiness = observed.wait_until_ready()
        assert readiness.available and readiness.tls_available, readiness.detail
        assert fetch(observed.admin_port, "/healthz", tls=False)[0] == 200
        for _ in range(5):
            assert fetch(observed.http_port, "/", tls=False)[0] == 200
    finally:
        observed.stop()
    lines = observed.access_log.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 5
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_the_page_gets_the_cost_table_only_when_there_are_costs() -> None:
    settings = load.parse_arguments(["--targets", "sozu,sozu-quiet", "--loads", "small-50"])
    machine = {
        "date": "2026-01-01T00:00:00+00:00",
        "cpu_model": "cpu",
        "cpu_count": 2,
        "kernel": "Linux",
        "python": "3.11",
        "tools": {"wrk": "wrk 4", "nginx": "nginx 1", "haproxy": "HAProxy 2"},
    }
    summaries, costs = load.summarise_run(settings, _three_rounds())

    with_costs = load.markdown_report(settings, machine, summaries, {}, costs)
    without = load.markdown_report(settings, machine, summaries, {})

    assert "**Cost of observability.**" in with_costs
    assert "| small-50 | sozu | metrics on | 0.96 | >= 0.95 | yes |" in with_costs
    assert "Cost of observability" not in without
    assert with_costs.index("| load | target | req/s") < with_costs.index("**Cost of")
