"""The main process's merge of the workers' metrics."""

from __future__ import annotations

from typing import Any

from sozu_config.metrics import CATALOGUE
from sozu_config.models import Cluster
from sozu_config.requests import AddCluster, QueryMetrics
from sozu_config.responses import MetricsContent, Response, ResponseStatus
from sozu_config.state import ConfigState
from sozu_runtime.main.metrics import main_figures, merge_metrics


def answer(content: MetricsContent | None) -> Response:
    return Response(id="", status=ResponseStatus.OK, content=content)


def histogram(*values_us: int) -> dict[str, Any]:
    buckets: dict[str, int] = {}
    for value in values_us:
        buckets[str(value)] = buckets.get(str(value), 0) + 1
    return {
        "count": len(values_us),
        "sum": sum(values_us),
        "max": max(values_us),
        "buckets": buckets,
    }


def worker(requests: int, codes: dict[str, int], times: list[int]) -> MetricsContent:
    backend = {
        "http.requests": requests,
        "http.status": codes,
        "request_time": histogram(*times),
        "backend.connections": 1,
    }
    return MetricsContent(
        proxying={"http.requests": requests, "client.connections": 2},
        clusters={"app": {"cluster": dict(backend), "backends": {"b1": dict(backend)}}},
    )


def test_merge_sums_counters_labels_gauges_and_histograms() -> None:
    one = worker(3, {"200": 2, "404": 1}, [100, 100, 1000])
    two = worker(1, {"200": 1}, [5000])
    answers = [(0, answer(one)), (1, answer(two)), (2, answer(None))]

    merged = merge_metrics(answers, {"workers": 3}, QueryMetrics(workers=True))

    assert merged.main == {"workers": 3}
    assert merged.proxying == {"http.requests": 4, "client.connections": 4}
    backend = merged.clusters["app"]["backends"]["b1"]
    assert backend["http.status"] == {"200": 3, "404": 1}
    assert backend["backend.connections"] == 2
    times = backend["request_time"]
    assert times["count"] == 4 and times["sum"] == 6200 and times["max"] == 5000
    assert times["buckets"] == {"100": 2, "1000": 1, "5000": 1}
    assert times["p50"] == 100 and times["p90"] == 5000 and times["p99"] == 5000
    assert set(merged.workers) == {"0", "1"}  # worker 2 sent no metrics
    assert merged.workers["1"]["clusters"]["app"]["backends"]["b1"]["http.requests"] == 1
    # the answers of the workers are not changed by the merge
    assert one.clusters["app"]["backends"]["b1"]["request_time"]["count"] == 3


def test_merge_without_per_worker_detail_and_with_names() -> None:
    answers = [(0, answer(worker(1, {"200": 1}, [10])))]
    plain = merge_metrics(answers, {"workers": 1}, QueryMetrics())
    assert plain.workers == {}
    named = merge_metrics(answers, {"workers": 1}, QueryMetrics(metric_names=["http.requests"]))
    assert named.main == {}
    listed = merge_metrics(answers, {}, QueryMetrics(list=True))
    assert listed.names == sorted(CATALOGUE) and listed.proxying == {}


def test_main_figures_count_the_state() -> None:
    state = ConfigState(version=7)
    state.apply(AddCluster(cluster=Cluster(cluster_id="app")))
    figures = main_figures(state, 2)
    assert figures == {
        "workers": 2,
        "configuration.clusters": 1,
        "configuration.frontends": 0,
        "configuration.backends": 0,
        "state.version": state.version,
    }
    assert state.version == 8
    assert all(name in CATALOGUE for name in figures)
