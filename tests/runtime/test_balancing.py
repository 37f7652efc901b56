"""Backend selection, load balancing and the retry policy, driven without sockets or clocks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sozu_runtime.worker.balancing import (
    CONNECTION_TIME,
    CONNECTIONS,
    LEAST_LOADED,
    MAX_FAILURES,
    POWER_OF_TWO,
    RANDOM,
    REQUESTS,
    ROUND_ROBIN,
    Backend,
    Cluster,
    backoff_delay,
)

NOW = 1000.0


def make_cluster(
    algorithm: str = ROUND_ROBIN,
    metric: str | None = None,
    *,
    seed: int = 7,
    weights: tuple[int, ...] = (100, 100, 100),
) -> Cluster:
    """A cluster with backends b0, b1, … at 127.0.0.1:8000, :8001, … of the given weights."""
    cluster = Cluster("app", algorithm, metric, rng=random.Random(seed))
    for index, weight in enumerate(weights):
        cluster.upsert_backend(f"b{index}", f"127.0.0.1:{8000 + index}", weight=weight)
    return cluster


def pick_ids(cluster: Cluster, picks: int, now: float = NOW) -> list[str]:
    """The backend ids chosen by ``picks`` successive selections."""
    chosen: list[str] = []
    for _ in range(picks):
        backend = cluster.choose(now)
        assert backend is not None
        chosen.append(backend.backend_id)
    return chosen


def put_in_backoff(backend: Backend, now: float = NOW) -> None:
    """Make a backend unavailable at ``now`` through its own retry policy."""
    backend.connect_failed(now)
    assert not backend.can_open(now)


# --- retry policy -------------------------------------------------------------------------


def test_backoff_delay_first_failure_is_one_second() -> None:
    rng = random.Random(1)
    assert backoff_delay(0, rng) == 1.0
    assert backoff_delay(1, rng) == 1.0


@pytest.mark.parametrize("failures", [2, 3, 4, 5, 6])
def test_backoff_delay_is_a_whole_number_of_seconds_below_two_to_the_failures(
    failures: int,
) -> None:
    rng = random.Random(failures)
    delays = {backoff_delay(failures, rng) for _ in range(5000)}
    assert all(delay == int(delay) for delay in delays)
    # Every integer of [1, 2**failures) is reachable and nothing outside it.
    assert delays == {float(second) for second in range(1, 2**failures)}


def test_first_failure_opens_a_one_second_window() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(3))
    assert backend.can_open(NOW)
    assert backend.connect_failed(NOW) is True  # counted: the main process is told
    assert backend.failures == 1
    assert backend.retry_at == NOW + 1.0
    assert not backend.can_open(NOW)
    assert not backend.can_open(NOW + 0.999)
    assert backend.can_open(NOW + 1.0)
    assert backend.can_open(NOW + 5.0)


def test_later_failures_wait_as_sozu_does() -> None:
    """The k-th consecutive failure waits backoff_delay(k - 1): within [1, 2**(k-1)) seconds."""
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(11))
    now = NOW
    waits: list[float] = []
    for _ in range(MAX_FAILURES + 3):
        previous = backend.failures
        backend.connect_failed(now)
        wait = backend.retry_at - now
        waits.append(wait)
        assert wait == int(wait)
        assert 1 <= wait < max(2, 2**previous)
        now = backend.retry_at
    assert waits[0] == 1.0
    assert waits[1] == 1.0
    # The window keeps growing up to [1, 2**MAX_FAILURES).
    assert max(waits) > 2


def test_failures_cap_and_every_counted_failure_is_reported() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(5))
    now = NOW
    reported: list[bool] = []
    for _ in range(MAX_FAILURES + 4):
        reported.append(backend.connect_failed(now))
        now = backend.retry_at
    assert backend.failures == MAX_FAILURES
    assert reported == [True] * (MAX_FAILURES + 4)
    # a worker does not decide that a backend is down: the main process does
    assert not backend.down


def test_simultaneous_failures_count_once() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(5))
    assert backend.connect_failed(NOW) is True
    window_end = backend.retry_at
    # Other connections opened at the same time fail during the window: ignored, unreported.
    assert backend.connect_failed(NOW) is False
    assert backend.connect_failed(NOW + 0.5) is False
    assert backend.failures == 1
    assert backend.retry_at == window_end
    # After the window a new failure counts again.
    assert backend.connect_failed(window_end) is True
    assert backend.failures == 2
    assert backend.retry_at >= window_end + 1


def test_success_after_failures_is_reported_once() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(5))
    now = NOW
    for _ in range(MAX_FAILURES):
        backend.connect_failed(now)
        now = backend.retry_at
    # A backend is still tried once its window has passed: that is how it recovers.
    assert backend.can_open(now)
    assert backend.connect_succeeded(0.01) is True
    assert backend.failures == 0
    assert backend.retry_at == 0.0
    assert backend.can_open(now)
    assert backend.connect_succeeded(0.01) is False


def test_on_a_backend_another_worker_found_down_an_answer_is_news_not_a_connection() -> None:
    cluster = Cluster("app")
    backend = cluster.upsert_backend("b0", "127.0.0.1:8000")
    assert not backend.news
    cluster.set_down(backend, True)
    assert backend.failures == 0 and backend.news
    assert backend.connect_succeeded(0.01) is False  # a connection proves nothing yet
    assert backend.recovered() is True  # an answer does (news until the main process says up)
    cluster.set_down(backend, False)
    assert not backend.news and backend.recovered() is False
    # with an active check the check decides: answers (fail-open traffic) are no news
    cluster.set_checked(True)
    cluster.set_down(backend, True)
    assert not backend.news and backend.recovered() is False


def test_after_an_answer_timeout_a_connection_is_no_proof_and_no_window_opens() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(5))
    backend.answer_timed_out()
    assert backend.silent and backend.news
    assert backend.can_open(NOW)  # one slow request does not take its traffic away
    backend.connect_failed(NOW)
    assert backend.connect_succeeded(0.01) is False
    assert backend.failures == 1 and backend.silent
    assert backend.recovered() is True
    assert backend.failures == 0 and not backend.silent and not backend.news


def test_success_before_down_reports_it_and_clears_the_window() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000", rng=random.Random(5))
    backend.connect_failed(NOW)
    assert not backend.can_open(NOW + 0.5)
    # A connection started earlier succeeds during the window: the backend is fine again.
    assert backend.connect_succeeded(0.2) is True
    assert backend.failures == 0
    assert backend.can_open(NOW + 0.5)
    assert backend.connect_succeeded(0.2) is False
    # And the next failure is a "first" failure again: exactly one second.
    backend.connect_failed(NOW + 0.6)
    assert backend.retry_at == NOW + 1.6


def test_connect_time_is_an_ewma_with_alpha_three_tenths() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000")
    assert backend.connect_time == 0.0
    backend.connect_succeeded(0.100)
    assert backend.connect_time == pytest.approx(0.100)
    backend.connect_succeeded(0.200)
    assert backend.connect_time == pytest.approx(0.7 * 0.100 + 0.3 * 0.200)
    backend.connect_succeeded(0.0)
    assert backend.connect_time == pytest.approx(0.7 * 0.13)


def test_removed_backend_cannot_open() -> None:
    backend = Backend("app", "b0", "127.0.0.1:8000")
    backend.removed = True
    assert not backend.can_open(NOW)


# --- backend objects ----------------------------------------------------------------------


def test_backend_address_parts_and_default_sticky_id() -> None:
    backend = Backend("app", "b0", "10.0.0.1:8080")
    assert (backend.host, backend.port) == ("10.0.0.1", 8080)
    assert backend.sticky_id == "b0"
    v6 = Backend("app", "b1", "[::1]:9000", sticky_id="s1", weight=0, backup=True)
    assert (v6.host, v6.port) == ("::1", 9000)
    assert v6.sticky_id == "s1"
    assert v6.weight == 0
    assert v6.backup


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.1:", ":80", "::1:80", "h:99999", "h:x"])
def test_malformed_backend_address_is_rejected(address: str) -> None:
    with pytest.raises(ValueError):
        Backend("app", "b0", address)


def test_negative_weight_is_rejected() -> None:
    with pytest.raises(ValueError):
        Backend("app", "b0", "127.0.0.1:80", weight=-1)
    cluster = make_cluster()
    with pytest.raises(ValueError):
        cluster.upsert_backend("b0", "127.0.0.1:8000", weight=-1)
    assert cluster.backends()[0].weight == 100


# --- sticky sessions ----------------------------------------------------------------------


def test_sticky_hit_overrides_the_algorithm() -> None:
    cluster = make_cluster()
    cluster.upsert_backend("b3", "127.0.0.1:8003", sticky_id="blue")
    for _ in range(10):
        chosen = cluster.choose(NOW, sticky="blue")
        assert chosen is not None
        assert chosen.backend_id == "b3"
    # Without a configured sticky_id, the backend_id is the cookie value.
    for _ in range(10):
        chosen = cluster.choose(NOW, sticky="b1")
        assert chosen is not None
        assert chosen.backend_id == "b1"


def test_sticky_selects_a_backup_or_weight_zero_backend() -> None:
    cluster = make_cluster()
    cluster.upsert_backend("spare", "127.0.0.1:9000", backup=True)
    cluster.upsert_backend("idle", "127.0.0.1:9001", weight=0)
    assert cluster.choose(NOW, sticky="spare") is cluster.backend("spare")
    assert cluster.choose(NOW, sticky="idle") is cluster.backend("idle")


def test_sticky_miss_on_a_backend_in_backoff_falls_back() -> None:
    cluster = make_cluster()
    sticky_backend = cluster.backend("b1")
    assert sticky_backend is not None
    put_in_backoff(sticky_backend)
    chosen = {cluster.choose(NOW, sticky="b1") for _ in range(20)}
    assert chosen == {cluster.backend("b0"), cluster.backend("b2")}
    # Once the window has passed the cookie is honoured again.
    assert cluster.choose(sticky_backend.retry_at, sticky="b1") is sticky_backend


def test_sticky_unknown_value_uses_normal_selection() -> None:
    cluster = make_cluster()
    ids = [cluster.choose(NOW, sticky="nobody") for _ in range(3)]
    assert [backend.backend_id for backend in ids if backend] == ["b0", "b1", "b2"]


def test_sticky_backend_already_tried_is_not_retried() -> None:
    cluster = make_cluster()
    sticky_backend = cluster.backend("b1")
    assert sticky_backend is not None
    chosen = cluster.choose(NOW, sticky="b1", exclude=(sticky_backend,))
    assert chosen is not None
    assert chosen is not sticky_backend


# --- candidate tiers ----------------------------------------------------------------------


def test_backup_only_when_no_primary_can_open() -> None:
    cluster = make_cluster(weights=(100, 100))
    spare = cluster.upsert_backend("spare", "127.0.0.1:9000", backup=True)
    assert spare not in {cluster.choose(NOW) for _ in range(100)}
    primaries = [backend for backend in cluster.backends() if not backend.backup]
    put_in_backoff(primaries[0])
    assert spare not in {cluster.choose(NOW) for _ in range(100)}
    put_in_backoff(primaries[1])
    assert {cluster.choose(NOW) for _ in range(10)} == {spare}
    # The primaries come back after their one-second window.
    later = NOW + 1.0
    assert spare not in {cluster.choose(later) for _ in range(100)}


def test_none_when_nothing_can_open() -> None:
    assert Cluster("empty").choose(NOW) is None
    cluster = make_cluster(weights=(100,))
    spare = cluster.upsert_backend("spare", "127.0.0.1:9000", backup=True)
    for backend in cluster.backends():
        put_in_backoff(backend)
    assert cluster.choose(NOW) is None
    assert cluster.choose(NOW, exclude=(spare,)) is None


def test_exclusion_prefers_untried_backends() -> None:
    cluster = make_cluster()
    b0, b1, b2 = cluster.backends()
    for _ in range(20):
        assert cluster.choose(NOW, exclude=(b0, b2)) is b1
    assert {cluster.choose(NOW, exclude={b0}) for _ in range(20)} == {b1, b2}


def test_exclusion_falls_back_to_backups_before_tried_primaries() -> None:
    cluster = make_cluster(weights=(100,))
    (primary,) = cluster.backends()
    spare = cluster.upsert_backend("spare", "127.0.0.1:9000", backup=True)
    assert cluster.choose(NOW, exclude=[primary]) is spare


def test_exclusion_of_everything_retries_ignoring_it() -> None:
    cluster = make_cluster()
    everything = cluster.backends()
    chosen = {cluster.choose(NOW, exclude=everything) for _ in range(30)}
    assert chosen == set(everything)
    # Tiers still apply among the excluded: a backup is not chosen over a primary.
    spare = cluster.upsert_backend("spare", "127.0.0.1:9000", backup=True)
    everything = cluster.backends()
    assert spare not in {cluster.choose(NOW, exclude=everything) for _ in range(30)}


def test_weight_zero_is_chosen_only_when_no_weighted_backend_can_open() -> None:
    cluster = make_cluster(weights=(0, 100))
    idle, busy = cluster.backends()
    assert {cluster.choose(NOW) for _ in range(100)} == {busy}
    put_in_backoff(busy)
    assert cluster.choose(NOW) is idle


def test_weight_zero_primary_beats_a_backup() -> None:
    cluster = make_cluster(weights=(0,))
    (idle,) = cluster.backends()
    cluster.upsert_backend("spare", "127.0.0.1:9000", backup=True)
    assert cluster.choose(NOW) is idle


@pytest.mark.parametrize("algorithm", [ROUND_ROBIN, RANDOM, LEAST_LOADED, POWER_OF_TWO])
def test_all_weight_zero_backends_share_the_load(algorithm: str) -> None:
    cluster = make_cluster(algorithm, weights=(0, 0, 0))
    counts = Counter(pick_ids(cluster, 3000))
    assert set(counts) == {"b0", "b1", "b2"}
    assert all(800 < count < 1200 for count in counts.values())


# --- round robin --------------------------------------------------------------------------


def test_round_robin_with_equal_weights_is_plain_rotation() -> None:
    cluster = make_cluster(ROUND_ROBIN)
    assert pick_ids(cluster, 7) == ["b0", "b1", "b2", "b0", "b1", "b2", "b0"]


def test_round_robin_exact_proportions_with_weights_one_two_three() -> None:
    cluster = make_cluster(ROUND_ROBIN, weights=(1, 2, 3))
    picks = pick_ids(cluster, 6 * 1666)
    assert Counter(picks) == {"b0": 1666, "b1": 3332, "b2": 4998}
    # Every cycle of sum(weights) picks holds the exact proportions, interleaved.
    for start in range(0, len(picks), 6):
        assert Counter(picks[start : start + 6]) == {"b0": 1, "b1": 2, "b2": 3}
    assert picks[:6] != ["b2", "b2", "b2", "b1", "b1", "b0"]
    assert all(picks[i : i + 3] != ["b2"] * 3 for i in range(len(picks) - 2))


@given(st.lists(st.integers(min_value=1, max_value=255), min_size=1, max_size=8))
def test_round_robin_each_cycle_matches_the_weights(weights: list[int]) -> None:
    cluster = make_cluster(ROUND_ROBIN, weights=tuple(weights))
    total = sum(weights)
    for _ in range(2):
        counts = Counter(pick_ids(cluster, total))
        assert counts == {f"b{index}": weight for index, weight in enumerate(weights)}


def test_round_robin_is_stable_when_the_candidate_set_changes() -> None:
    cluster = make_cluster(ROUND_ROBIN)
    b0 = cluster.backend("b0")
    assert b0 is not None
    pick_ids(cluster, 2)
    put_in_backoff(b0)
    during = pick_ids(cluster, 100)
    # b2 was next in line when b0 left, so it may be one pick ahead; then they alternate.
    assert set(during) == {"b1", "b2"}
    assert abs(during.count("b1") - during.count("b2")) <= 2
    assert all(during[i] != during[i + 1] for i in range(2, len(during) - 1))
    after = Counter(pick_ids(cluster, 300, now=b0.retry_at))
    assert set(after) == {"b0", "b1", "b2"}
    assert all(abs(count - 100) <= 1 for count in after.values())
    # A backend added live joins the rotation at once.
    cluster.upsert_backend("b3", "127.0.0.1:8003")
    joined = Counter(pick_ids(cluster, 400, now=b0.retry_at))
    assert all(abs(count - 100) <= 1 for count in joined.values())
    assert set(joined) == {"b0", "b1", "b2", "b3"}


# --- random -------------------------------------------------------------------------------


def test_random_is_weighted() -> None:
    cluster = make_cluster(RANDOM, weights=(1, 2, 3), seed=2024)
    counts = Counter(pick_ids(cluster, 10_000))
    assert counts["b0"] / 10_000 == pytest.approx(1 / 6, abs=0.02)
    assert counts["b1"] / 10_000 == pytest.approx(2 / 6, abs=0.02)
    assert counts["b2"] / 10_000 == pytest.approx(3 / 6, abs=0.02)


def test_random_is_reproducible_with_a_seed() -> None:
    first = pick_ids(make_cluster(RANDOM, seed=99), 200)
    second = pick_ids(make_cluster(RANDOM, seed=99), 200)
    assert first == second
    assert len(set(first)) == 3


# --- least loaded -------------------------------------------------------------------------


def test_least_loaded_follows_active_connections() -> None:
    cluster = make_cluster(LEAST_LOADED)
    b0, b1, b2 = cluster.backends()
    b0.active_connections, b1.active_connections, b2.active_connections = 5, 1, 3
    # Requests are ignored by the default metric.
    b1.active_requests = 50
    assert cluster.choose(NOW) is b1
    for _ in range(10_000):
        chosen = cluster.choose(NOW)
        assert chosen is not None
        chosen.active_connections += 1
    loads = sorted(backend.active_connections for backend in cluster.backends())
    assert loads[-1] - loads[0] <= 1
    assert sum(loads) == 10_009


def test_least_loaded_divides_the_load_by_the_weight() -> None:
    cluster = make_cluster(LEAST_LOADED, CONNECTIONS, weights=(100, 200))
    for _ in range(3000):
        chosen = cluster.choose(NOW)
        assert chosen is not None
        chosen.active_connections += 1
    light, heavy = cluster.backends()
    assert (light.active_connections, heavy.active_connections) == (1000, 2000)


def test_least_loaded_follows_active_requests() -> None:
    cluster = make_cluster(LEAST_LOADED, REQUESTS)
    b0, b1, b2 = cluster.backends()
    b0.active_requests, b1.active_requests, b2.active_requests = 4, 9, 2
    b2.active_connections = 100
    assert cluster.choose(NOW) is b2
    b2.active_requests = 10
    assert cluster.choose(NOW) is b0


def test_least_loaded_follows_connection_time() -> None:
    cluster = make_cluster(LEAST_LOADED, CONNECTION_TIME)
    b0, b1, b2 = cluster.backends()
    b0.connect_succeeded(0.050)
    b1.connect_succeeded(0.005)
    b2.connect_succeeded(0.020)
    assert {cluster.choose(NOW) for _ in range(10)} == {b1}


def test_least_loaded_ties_take_turns() -> None:
    cluster = make_cluster(LEAST_LOADED)
    assert Counter(pick_ids(cluster, 300)) == {"b0": 100, "b1": 100, "b2": 100}
    b0, _, _ = cluster.backends()
    b0.active_connections = 1
    assert Counter(pick_ids(cluster, 300)) == {"b1": 150, "b2": 150}


# --- power of two choices -----------------------------------------------------------------


def test_power_of_two_never_picks_the_most_loaded_of_three() -> None:
    cluster = make_cluster(POWER_OF_TWO, seed=17)
    b0, b1, b2 = cluster.backends()
    b0.active_connections, b1.active_connections, b2.active_connections = 10, 1, 2
    counts = Counter(pick_ids(cluster, 10_000))
    assert "b0" not in counts
    # b2 wins only when the pair drawn is {b0, b2}: one pair in three.
    assert counts["b2"] / 10_000 == pytest.approx(1 / 3, abs=0.02)
    assert counts["b1"] / 10_000 == pytest.approx(2 / 3, abs=0.02)


def test_power_of_two_with_two_candidates_takes_the_less_loaded() -> None:
    cluster = make_cluster(POWER_OF_TWO, REQUESTS, weights=(100, 100))
    b0, b1 = cluster.backends()
    b0.active_requests = 3
    assert {cluster.choose(NOW) for _ in range(200)} == {b1}


def test_power_of_two_spreads_a_growing_load() -> None:
    cluster = make_cluster(POWER_OF_TWO, seed=4, weights=(100, 100, 100, 100))
    for _ in range(4000):
        chosen = cluster.choose(NOW)
        assert chosen is not None
        chosen.active_connections += 1
    loads = [backend.active_connections for backend in cluster.backends()]
    assert max(loads) - min(loads) <= 3


# --- configuration changes ----------------------------------------------------------------


def test_upsert_same_address_keeps_the_object_and_its_counters() -> None:
    cluster = make_cluster()
    b1 = cluster.backend("b1")
    assert b1 is not None
    b1.active_connections = 4
    b1.active_requests = 2
    b1.connect_succeeded(0.01)
    b1.connect_failed(NOW)
    updated = cluster.upsert_backend("b1", "127.0.0.1:8001", weight=7, backup=True, sticky_id="s")
    assert updated is b1
    assert (updated.weight, updated.backup, updated.sticky_id) == (7, True, "s")
    assert (updated.active_connections, updated.active_requests, updated.failures) == (4, 2, 1)
    assert updated.connect_time == pytest.approx(0.01)
    assert not updated.removed
    assert [backend.backend_id for backend in cluster.backends()] == ["b0", "b1", "b2"]


def test_upsert_with_a_new_address_detaches_the_old_backend() -> None:
    cluster = make_cluster()
    old = cluster.backend("b1")
    assert old is not None
    old.active_connections = 3
    fresh = cluster.upsert_backend("b1", "127.0.0.1:9999")
    assert fresh is not old
    assert old.removed
    assert old.active_connections == 3
    assert not fresh.removed
    assert (fresh.active_connections, fresh.port) == (0, 9999)
    assert cluster.backend("b1") is fresh
    assert [backend.address for backend in cluster.backends()] == [
        "127.0.0.1:8000",
        "127.0.0.1:9999",
        "127.0.0.1:8002",
    ]
    assert old not in {cluster.choose(NOW) for _ in range(30)}
    assert cluster.choose(NOW, sticky="b1") is fresh


def test_remove_backend_marks_it_removed() -> None:
    cluster = make_cluster()
    b1 = cluster.backend("b1")
    assert b1 is not None
    b1.active_connections = 2
    assert cluster.remove_backend("b1") is b1
    assert b1.removed
    assert b1.active_connections == 2
    assert not b1.can_open(NOW)
    assert cluster.backend("b1") is None
    assert [backend.backend_id for backend in cluster.backends()] == ["b0", "b2"]
    assert b1 not in {cluster.choose(NOW) for _ in range(30)}
    assert cluster.choose(NOW, sticky="b1") is not b1
    assert cluster.remove_backend("b1") is None
    assert cluster.remove_backend("never") is None


def test_backends_is_a_snapshot() -> None:
    cluster = make_cluster()
    snapshot = cluster.backends()
    snapshot.clear()
    assert len(cluster.backends()) == 3


def test_configure_keeps_backends_and_counters() -> None:
    cluster = make_cluster(ROUND_ROBIN)
    before = cluster.backends()
    b0, b1, b2 = before
    b0.active_connections, b1.active_connections, b2.active_connections = 3, 0, 3
    put_in_backoff(b2)
    cluster.configure(LEAST_LOADED, None)
    assert (cluster.algorithm, cluster.metric) == (LEAST_LOADED, None)
    assert cluster.backends() == before
    assert [backend.active_connections for backend in before] == [3, 0, 3]
    assert b2.failures == 1
    assert not b2.can_open(NOW)
    assert {cluster.choose(NOW) for _ in range(10)} == {b1}
    cluster.configure(LEAST_LOADED, REQUESTS)
    b1.active_requests = 5
    assert cluster.choose(NOW) is b0


def test_configure_accepts_sozu_spellings_and_rejects_unknown_ones() -> None:
    cluster = make_cluster()
    cluster.configure("POWER_OF_TWO", "CONNECTION_TIME")
    assert (cluster.algorithm, cluster.metric) == (POWER_OF_TWO, CONNECTION_TIME)
    with pytest.raises(ValueError):
        cluster.configure("maglev", None)
    with pytest.raises(ValueError):
        cluster.configure(ROUND_ROBIN, "bandwidth")
    assert (cluster.algorithm, cluster.metric) == (POWER_OF_TWO, CONNECTION_TIME)
    with pytest.raises(ValueError):
        Cluster("app", "weighted")


def test_cluster_backoff_draws_come_from_the_cluster_rng() -> None:
    def windows(seed: int) -> list[float]:
        cluster = Cluster("app", rng=random.Random(seed))
        backend = cluster.upsert_backend("b0", "127.0.0.1:8000")
        now = NOW
        result = []
        for _ in range(MAX_FAILURES + 5):
            backend.connect_failed(now)
            result.append(backend.retry_at - now)
            now = backend.retry_at
        return result

    assert windows(8) == windows(8)
