"""The shared health of backends as the main process decides it (sans-I/O): thresholds of
active checks, passive detection across workers, draining, transitions once, metrics."""

from __future__ import annotations

import datetime as dt

from sozu_config import (
    AddBackend,
    AddCluster,
    Backend,
    Cluster,
    ConfigState,
    HealthCheck,
    RemoveBackend,
    RemoveCluster,
    RemoveHealthCheck,
    SetHealthCheck,
)
from sozu_config.responses import BackendState, ProbeResult
from sozu_runtime.health.board import PASSIVE_FAILURES, HealthBoard

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEY = ("web", "b0")


def state_with(check: HealthCheck | None = None, backends: int = 2) -> ConfigState:
    state = ConfigState()
    state.apply(AddCluster(cluster=Cluster(cluster_id="web", health_check=check)))
    for i in range(backends):
        state.apply(
            AddBackend(
                backend=Backend(cluster_id="web", backend_id=f"b{i}", address=f"10.0.0.{i}:80")
            )
        )
    return state


def result(ok: bool, detail: str = "200") -> ProbeResult:
    return ProbeResult(time=NOW, ok=ok, latency=0.001, detail=detail)


def board_for(state: ConfigState, workers: tuple[int, ...] = (0, 1)) -> HealthBoard:
    board = HealthBoard()
    assert board.sync(state, workers, NOW) == []
    return board


CHECK = HealthCheck(uri="/health", interval=1, healthy_threshold=2, unhealthy_threshold=3)


def test_unhealthy_threshold_failures_in_a_row_take_it_down_once() -> None:
    board = board_for(state_with(CHECK))
    assert board.probed(KEY, result(False, "connection refused")) is None
    assert board.probed(KEY, result(False, "connection refused")) is None
    transition = board.probed(KEY, result(False, "connection refused"))
    assert transition is not None and transition.down
    assert transition.reason == "3 failed checks: connection refused"
    # already down: further failures change nothing and say nothing
    assert board.probed(KEY, result(False)) is None
    assert board.down() == [KEY]
    [status] = [s for s in board.statuses() if s.backend_id == "b0"]
    assert status.state is BackendState.DOWN and status.checked
    assert status.since == NOW and status.reason == transition.reason
    assert status.last_check is not None and status.last_check.detail == "200"


def test_a_success_between_failures_starts_the_count_again() -> None:
    board = board_for(state_with(CHECK))
    for ok in (False, False, True, False, False):
        assert board.probed(KEY, result(ok)) is None
    assert board.down() == []


def test_healthy_threshold_successes_bring_it_up() -> None:
    board = board_for(state_with(CHECK))
    for _ in range(3):
        board.probed(KEY, result(False))
    assert board.probed(KEY, result(True)) is None
    transition = board.probed(KEY, result(True))
    assert transition is not None and not transition.down
    assert board.down() == []
    assert board.probed(KEY, result(True)) is None


def test_passive_failures_from_any_workers_take_it_down_once() -> None:
    board = board_for(state_with())
    for _ in range(PASSIVE_FAILURES - 1):
        assert board.observed(KEY, True, "connection refused", NOW) is None
    transition = board.observed(KEY, True, "connection refused", NOW)
    assert transition is not None and transition.down
    assert "connection refused" in transition.reason
    assert board.observed(KEY, True, "connection refused", NOW) is None
    # without an active check, a connection that opened brings it up
    up = board.observed(KEY, False, "", NOW)
    assert up is not None and not up.down
    assert board.observed(KEY, False, "", NOW) is None


def test_a_success_resets_the_passive_count() -> None:
    board = board_for(state_with())
    for failed in (True, True, False, True, True):
        assert board.observed(KEY, failed, "refused", NOW) is None


def test_with_an_active_check_only_the_check_brings_it_back() -> None:
    board = board_for(state_with(CHECK))
    for _ in range(PASSIVE_FAILURES):
        board.observed(KEY, True, "refused", NOW)
    assert board.down() == [KEY]
    assert board.observed(KEY, False, "", NOW) is None  # a lucky connection is not enough
    board.probed(KEY, result(True))
    transition = board.probed(KEY, result(True))
    assert transition is not None and not transition.down


def test_removing_the_check_brings_its_down_backends_up() -> None:
    state = state_with(CHECK)
    board = board_for(state)
    for _ in range(3):
        board.probed(KEY, result(False))
    state.apply(RemoveHealthCheck(cluster_id="web"))
    [transition] = board.sync(state, (0, 1), NOW)
    assert not transition.down and transition.reason == "health check removed"
    assert all(not s.checked for s in board.statuses())
    # probes that were in flight when the check went away are not counted
    assert board.probed(KEY, result(False)) is None


def test_a_changed_check_counts_from_scratch() -> None:
    state = state_with(CHECK)
    board = board_for(state)
    board.probed(KEY, result(False))
    board.probed(KEY, result(False))
    state.apply(
        SetHealthCheck(cluster_id="web", health_check=CHECK.model_copy(update={"timeout": 2}))
    )
    board.sync(state, (0, 1), NOW)
    assert board.probed(KEY, result(False)) is None  # the count started again


def test_a_removed_backend_drains_until_every_worker_says_so() -> None:
    state = state_with(CHECK)
    board = board_for(state)
    state.apply(RemoveBackend(cluster_id="web", backend_id="b0"))
    board.sync(state, (0, 1), NOW)
    draining = [s for s in board.statuses() if s.state is BackendState.DRAINING]
    assert [(s.backend_id, s.address) for s in draining] == [("b0", "10.0.0.0:80")]
    assert board.record(KEY) is None
    board.drained("web", "b0", "10.0.0.0:80", 0)
    assert [s.backend_id for s in board.statuses("web")] == ["b1", "b0"]
    board.drained("web", "b0", "10.0.0.0:80", 1)
    assert [s.backend_id for s in board.statuses("web")] == ["b1"]


def test_a_worker_gone_drains_nothing_more() -> None:
    state = state_with()
    board = board_for(state)
    state.apply(RemoveCluster(cluster_id="web"))
    board.sync(state, (0, 1), NOW)
    assert len(board.statuses()) == 2
    board.worker_gone(0)
    board.worker_gone(1)
    assert board.statuses() == []


def test_a_moved_backend_is_a_new_server_and_the_old_address_drains() -> None:
    state = state_with()
    board = board_for(state)
    for _ in range(PASSIVE_FAILURES):
        board.observed(KEY, True, "refused", NOW)
    state.apply(
        AddBackend(backend=Backend(cluster_id="web", backend_id="b0", address="10.0.1.0:80"))
    )
    board.sync(state, (0,), NOW)
    states = {(s.address, s.state) for s in board.statuses()}
    assert ("10.0.1.0:80", BackendState.UP) in states
    assert ("10.0.0.0:80", BackendState.DRAINING) in states


def test_metrics_count_probes_transitions_and_healthy_backends() -> None:
    board = board_for(state_with(CHECK, backends=3))
    for _ in range(3):
        board.probed(KEY, result(False))
    board.probed(("web", "b1"), result(True))
    metrics = board.metrics()["web"]
    assert metrics["backends"]["b0"] == {
        "health_check.success": 0,
        "health_check.failure": 3,
        "health_check.up": 0,
        "health_check.down": 1,
        "backend.down": 1,
    }
    assert metrics["cluster"]["health_check.failure"] == 3
    assert metrics["cluster"]["health_check.success"] == 1
    assert metrics["cluster"]["backend.down"] == 1
    assert metrics["cluster"]["health_check.healthy_backends"] == 2


def test_handover_keeps_down_backends_down() -> None:
    state = state_with(CHECK)
    board = board_for(state)
    for _ in range(3):
        board.probed(KEY, result(False, "refused"))
    fresh = board_for(state)
    fresh.restore(board.handover())
    assert fresh.down() == [KEY]
    [status] = [s for s in fresh.statuses() if s.backend_id == "b0"]
    assert status.since == NOW and "refused" in status.reason


def test_without_a_check_no_probe_figures_and_clearing_keeps_the_gauges() -> None:
    board = board_for(state_with())
    for _ in range(PASSIVE_FAILURES):
        board.observed(KEY, True, "refused", NOW)
    web = board.metrics()["web"]
    assert web["backends"]["b0"] == {
        "health_check.up": 0,
        "health_check.down": 1,
        "backend.down": 1,
    }
    assert "health_check.success" not in web["cluster"]
    board.clear_counters()
    assert board.metrics()["web"]["backends"]["b0"] == {
        "health_check.up": 0,
        "health_check.down": 0,
        "backend.down": 1,
    }


def test_a_threshold_of_one_says_one_check() -> None:
    check = HealthCheck(uri="/", unhealthy_threshold=1, healthy_threshold=1)
    board = board_for(state_with(check))
    down = board.probed(KEY, result(False, "500"))
    assert down is not None and down.reason == "1 failed check: 500"
    up = board.probed(KEY, result(True))
    assert up is not None and up.reason == "1 successful check"
