"""A worker's counters: recording, retiring removed backends and clusters, snapshots."""

from __future__ import annotations

from sozu_runtime.worker.balancing import Backend
from sozu_runtime.worker.metrics import Counters, Histogram, Metrics, Sample


def sample(status: int, total: int, response: int = 0, service: int | None = None) -> Sample:
    """An exchange of ``total`` ns whose backend answered after ``response`` ns (0: none),
    with 1, 2, 3, 4 bytes from/to the client, from/to the backend."""
    service = total - response if service is None else service
    return (status, total, service, response, 1, 2, 3, 4)


def test_histogram_puts_a_value_in_the_first_bucket_at_or_above_it() -> None:
    histogram = Histogram()
    for ns in (1, 10_000, 10_001, 2_000_000_000_000):
        histogram.observe(ns)
    snapshot = histogram.snapshot()
    assert snapshot["buckets"] == {"10": 2, "11": 1, "inf": 1}
    assert snapshot["count"] == 4
    assert snapshot["max"] == 2_000_000_000
    assert snapshot["sum"] == (1 + 10_000 + 10_001 + 2_000_000_000_000) // 1000


def test_folded_samples_count_each_exchange() -> None:
    counters = Counters()
    counters.samples.append(sample(200, 3_000_000, 2_000_000))
    counters.samples.append(sample(502, 50_000))
    counters.samples.append(sample(200, 99_000, 98_000, 500))
    counters.samples.append(sample(504, 5_000, -40_000, -10))  # odd clocks: in the first bucket
    snapshot = counters.snapshot()
    assert counters.samples == []
    assert snapshot["http.requests"] == 4
    assert snapshot["http.status"] == {"200": 2, "502": 1, "504": 1}
    assert (snapshot["bytes_in"], snapshot["bytes_out"]) == (4, 8)
    assert (snapshot["back_bytes_in"], snapshot["back_bytes_out"]) == (12, 16)
    assert snapshot["request_time"]["buckets"] == {"10": 1, "50": 1, "100": 1, "3000": 1}
    assert snapshot["request_time"]["sum"] == (3_000_000 + 50_000 + 99_000 + 5_000) // 1000
    assert snapshot["backend_response_time"]["count"] == 2  # no backend answered the others
    assert snapshot["backend_response_time"]["buckets"] == {"100": 1, "2000": 1}
    assert snapshot["service_time"]["buckets"] == {"10": 2, "50": 1, "1000": 1}


def test_folding_in_batches_gives_the_same_histogram_as_one_by_one() -> None:
    values = [(i * 7919) % 5_000_000_000 + 1 for i in range(3000)]
    batched, single = Histogram(), Histogram()
    batched.observe_sorted(sorted(values[:1000]))
    batched.observe_sorted(sorted(values[1000:]))
    for value in values:
        single.observe(value)
    assert batched.snapshot() == single.snapshot()


def test_removed_backends_and_clusters_keep_the_totals() -> None:
    metrics = Metrics()
    backend = Backend("app", "b1", "127.0.0.1:1")
    backend.stats = metrics.backend("app", "b1")
    backend.stats.samples.append(sample(200, 1000, 500))
    live = {"app": [backend]}
    [(cluster_id, scope, backends)] = list(metrics.cluster_snapshots(live))
    assert cluster_id == "app" and scope["http.requests"] == 1
    assert backends["b1"]["http.requests"] == 1

    backend.stats = metrics.retire_backend("app", "b1")
    backend.stats.samples.append(sample(200, 1000, 500))  # a request still in flight
    [(_, scope, backends)] = list(metrics.cluster_snapshots({"app": []}))
    assert scope["http.requests"] == 2 and backends == {}

    metrics.retire_cluster("app")
    assert list(metrics.cluster_snapshots({})) == []
    proxy = metrics.proxy_snapshot([], {"client.connections": 0})
    assert proxy["http.requests"] == 2
    assert proxy["client.connections"] == 0


def test_clear_keeps_the_objects_the_data_path_holds() -> None:
    metrics = Metrics()
    counters = metrics.backend("app", "b1")
    counters.samples.append(sample(200, 1))
    metrics.accepted = 5
    metrics.clear()
    assert metrics.backend("app", "b1") is counters
    assert counters.requests == 0 and metrics.accepted == 0
