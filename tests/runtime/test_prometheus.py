"""Metric snapshots rendered in the Prometheus text format, read back with the reference
parser (prometheus_client): names, types, labels, cumulative buckets in seconds, escaping."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sozu_config.metrics import (
    BUCKET_BOUNDS_US,
    CATALOGUE,
    PROMETHEUS_BOUNDS_US,
    Kind,
    prometheus_name,
)
from sozu_config.responses import MetricsContent
from sozu_runtime.admin.prometheus import CONTENT_TYPE, render

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def histogram(values_us: list[int]) -> dict[str, Any]:
    """A histogram snapshot of ``values_us`` in the catalogue's form (sparse buckets)."""
    buckets: dict[str, int] = {}
    for value in values_us:
        bound = next((b for b in BUCKET_BOUNDS_US if b >= value), None)
        key = "inf" if bound is None else str(bound)
        buckets[key] = buckets.get(key, 0) + 1
    return {
        "count": len(values_us),
        "sum": sum(values_us),
        "max": max(values_us, default=0),
        "buckets": buckets,
        "p50": 0,  # the main process adds percentiles: they are not exposed
    }


def snapshot() -> MetricsContent:
    """Two workers, one cluster with one backend, the main process's figures."""
    worker0 = {"http.requests": 3, "client.connections": 2, "http.status": {"200": 3}}
    worker1 = {"http.requests": 4, "client.connections": 1, "http.status": {"200": 2, "503": 2}}
    return MetricsContent(
        main={"workers": 2, "configuration.clusters": 1, "state.version": 7},
        proxying={
            "http.requests": 7,
            "client.connections": 3,
            "http.status": {"200": 5, "503": 2},
            "request_time": histogram([50, 120, 3_000, 2_000_000]),
        },
        workers={"0": {"proxying": worker0, "clusters": {}}, "1": {"proxying": worker1}},
        clusters={
            "app": {
                "cluster": {"http.requests": 7, "http.active_requests": 1},
                "backends": {"app-0": {"http.requests": 7, "bytes_out": 1_024}},
            }
        },
    )


def parse(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[Sample]:
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    found = [s.value for s in samples(text, name) if s.labels == labels]
    assert len(found) == 1, (name, labels, samples(text, name))
    return found[0]


def test_counters_gauges_and_labelled_counters_with_their_types_and_help() -> None:
    text = render(snapshot())
    families = parse(text)
    assert families["sozu_http_requests"].type == "counter"
    assert families["sozu_http_requests"].documentation == CATALOGUE["http.requests"].help
    assert families["sozu_client_connections"].type == "gauge"
    assert families["sozu_http_status"].type == "counter"
    assert value(text, "sozu_http_requests_total") == 7
    assert value(text, "sozu_client_connections") == 3
    assert value(text, "sozu_http_status_total", code="503") == 2
    assert value(text, "sozu_http_status_total", code="200", worker="1") == 2
    assert "# TYPE sozu_http_requests_total counter" in text.splitlines()


def test_main_figures_are_gauges_without_labels() -> None:
    text = render(snapshot())
    families = parse(text)
    for name, expected in (("workers", 2), ("configuration_clusters", 1), ("state_version", 7)):
        family = families[f"sozu_{name}"]
        assert family.type == "gauge"
        assert [(s.labels, s.value) for s in family.samples] == [({}, expected)]


def test_merged_totals_have_no_worker_label_and_each_worker_has_its_own() -> None:
    text = render(snapshot())
    found = {
        tuple(sorted(s.labels.items())): s.value for s in samples(text, "sozu_http_requests_total")
    }
    assert found == {
        (): 7,
        (("worker", "0"),): 3,
        (("worker", "1"),): 4,
        (("cluster_id", "app"),): 7,
        (("backend_id", "app-0"), ("cluster_id", "app")): 7,
    }
    # cluster and backend series are the workers' sum: no worker label on them
    assert all(
        "worker" not in s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "cluster_id" in s.labels
    )


def test_no_series_is_exposed_twice() -> None:
    text = render(snapshot())
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, key
            seen.add(key)


def test_histograms_are_in_seconds_with_cumulative_buckets() -> None:
    text = render(snapshot())
    family = parse(text)["sozu_request_time_seconds"]
    assert family.type == "histogram"
    assert "(seconds)" in family.documentation and "µs" not in family.documentation
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
    bounds = [float(le) for le, _ in buckets]
    assert bounds[:-1] == [b / 1_000_000 for b in PROMETHEUS_BOUNDS_US]
    assert buckets[-1] == ("+Inf", 4)
    counts = [n for _, n in buckets]
    assert counts == sorted(counts)  # cumulative
    # 50 µs and 120 µs: 50 is under the first bound (100 µs), 120 under 250 µs
    assert dict(buckets)["0.0001"] == 1
    assert dict(buckets)["0.00025"] == 2
    assert dict(buckets)["0.005"] == 3  # 3 ms
    assert dict(buckets)["1.0"] == 3  # 2 s is above 1 s
    assert dict(buckets)["2.5"] == 4
    assert value(text, "sozu_request_time_seconds_count") == 4
    assert value(text, "sozu_request_time_seconds_sum") == pytest.approx(2.00317)


def test_a_value_past_the_last_bucket_counts_only_in_inf() -> None:
    content = MetricsContent(proxying={"request_time": histogram([500_000_000])})
    text = render(content)
    buckets = {s.labels["le"]: s.value for s in samples(text, "sozu_request_time_seconds_bucket")}
    assert buckets["100.0"] == 0
    assert buckets["+Inf"] == 1


@pytest.mark.parametrize(
    "cluster_id",
    ['a"b', "back\\slash", "é-ü", 'tricky\\"both'],
    ids=["quote", "backslash", "utf8", "both"],
)
def test_label_values_are_escaped(cluster_id: str) -> None:
    content = MetricsContent(
        clusters={cluster_id: {"cluster": {"http.requests": 1}, "backends": {}}}
    )
    text = render(content)
    assert value(text, "sozu_http_requests_total", cluster_id=cluster_id) == 1


def test_a_label_value_with_a_line_feed_stays_on_its_line() -> None:
    content = MetricsContent(proxying={"http.status": {"2\n00": 1}})
    text = render(content)
    assert value(text, "sozu_http_status_total", code="2\n00") == 1


def test_names_outside_the_catalogue_and_malformed_values_are_left_out() -> None:
    content = MetricsContent(
        proxying={
            "requests": 5,  # not a catalogue name
            "http.requests": {"oops": 1},  # a counter must be a number
            "http.status": 3,  # a labelled counter must be a table
            "client.connections": True,  # not a number
            "request_time": {"sum": 1},  # no count
            "bytes_in": 10,
        },
        main={"http.requests": 9},  # not a main-process metric: not read from main
    )
    text = render(content)
    assert set(parse(text)) == {"sozu_bytes_in"}


def test_nothing_to_expose_is_an_empty_document() -> None:
    assert render(MetricsContent()) == ""


def test_every_exposed_name_is_valid_and_unique() -> None:
    names: list[str] = []
    for info in CATALOGUE.values():
        family = prometheus_name(info.name, info.kind)
        assert NAME.fullmatch(family), family
        assert family.startswith("sozu_")
        if info.kind is Kind.HISTOGRAM:
            names += [family + suffix for suffix in ("_bucket", "_sum", "_count")]
        else:
            names.append(family)
    assert len(names) == len(set(names))


def test_content_type_is_the_text_format_0_0_4() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
