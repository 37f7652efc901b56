"""The main process's merge of the workers' metrics."""

from __future__ import annotations

from typing import Any

from sozu_config.models import Cluster
from sozu_config.requests import AddCluster
from sozu_config.responses import MetricsContent, Response, ResponseStatus
from sozu_config.state import ConfigState
from sozu_runtime.main.metrics import main_figures, merge_counts, merge_metrics


def answer(content: MetricsContent | None) -> Response:
    return Response(id="", status=ResponseStatus.OK, content=content)


def test_merge_counts_adds_nested_numbers_and_skips_flags() -> None:
    into: dict[str, Any] = {"requests": 1, "http": {"status": {"200": 2}}}
    merge_counts(
        into,
        {
            "requests": 2,
            "seconds": 0.5,
            "enabled": True,
            "name": "w",
            "http": {"status": {"200": 3, "404": 1}},
        },
    )
    assert into == {"requests": 3, "seconds": 0.5, "http": {"status": {"200": 5, "404": 1}}}


def test_merge_metrics_sums_workers_and_keeps_each_on_request() -> None:
    one = MetricsContent(
        proxying={"requests": 3, "accepted": 1},
        clusters={"app": {"requests": 2, "bytes_in": 10}},
    )
    two = MetricsContent(proxying={"requests": 4}, clusters={"app": {"requests": 5}, "db": {}})
    answers = [(0, answer(one)), (1, answer(two)), (2, answer(None))]
    main = {"workers": 3}

    merged = merge_metrics(answers, main, per_worker=True)

    assert merged.main == main
    assert merged.proxying == {"requests": 7, "accepted": 1}
    assert merged.clusters == {"app": {"requests": 7}, "db": {"requests": 0}}
    assert set(merged.workers) == {"0", "1"}  # worker 2 sent no metrics
    assert merged.workers["0"] == {"proxying": one.proxying, "clusters": one.clusters}
    assert merge_metrics(answers, main, per_worker=False).workers == {}


def test_main_figures_count_the_state() -> None:
    state = ConfigState(version=7)
    state.apply(AddCluster(cluster=Cluster(cluster_id="app")))
    figures = main_figures(state, 2)
    assert figures == {
        "workers": 2,
        "clusters": 1,
        "frontends": 0,
        "backends": 0,
        "version": state.version,
    }
    assert state.version == 8
