"""The metrics vocabulary: buckets, percentiles, cumulative counts, merging."""

from __future__ import annotations

import itertools
from pathlib import Path

from sozu_config.metrics import (
    BUCKET_BOUNDS_NS,
    BUCKET_BOUNDS_US,
    CATALOGUE,
    PROMETHEUS_BOUNDS_US,
    Kind,
    cumulative_buckets,
    histogram_percentile,
    merge_scope,
    reference_table,
    status_classes,
)


def test_buckets_are_increasing_and_prometheus_bounds_are_among_them() -> None:
    assert list(BUCKET_BOUNDS_US) == sorted(set(BUCKET_BOUNDS_US))
    assert [b * 1000 for b in BUCKET_BOUNDS_US] == BUCKET_BOUNDS_NS
    assert set(PROMETHEUS_BOUNDS_US) <= set(BUCKET_BOUNDS_US)
    # neighbouring bounds differ by at most 25 %: percentiles are close to the truth
    assert all(b / a <= 1.25 for a, b in itertools.pairwise(BUCKET_BOUNDS_US[1:]))


def test_percentile_is_the_bucket_bound_capped_by_the_maximum() -> None:
    histogram = {"count": 10, "sum": 0, "max": 700, "buckets": {"100": 9, "inf": 1}}
    assert histogram_percentile(histogram, 0.5) == 100
    assert histogram_percentile(histogram, 0.9) == 100
    assert histogram_percentile(histogram, 0.99) == 700
    assert histogram_percentile({"count": 0, "buckets": {}}, 0.5) == 0
    small = {"count": 1, "sum": 42, "max": 42, "buckets": {"45": 1}}
    assert histogram_percentile(small, 0.5) == 42


def test_cumulative_buckets_count_observations_at_or_below_each_bound() -> None:
    histogram = {"count": 4, "sum": 0, "max": 0, "buckets": {"90": 1, "100": 1, "2200": 2}}
    assert cumulative_buckets(histogram, (100, 1000, 2500)) == [(100, 2), (1000, 2), (2500, 4)]


def test_merge_scope_by_kind() -> None:
    into: dict[str, object] = {}
    merge_scope(into, {"http.requests": 2, "http.status": {"200": 2}})
    merge_scope(
        into,
        {
            "http.requests": 3,
            "http.status": {"200": 1, "503": 2},
            "request_time": {"count": 1, "sum": 5, "max": 5, "buckets": {"10": 1}},
        },
    )
    assert into["http.requests"] == 5
    assert into["http.status"] == {"200": 3, "503": 2}
    assert into["request_time"] == {"count": 1, "sum": 5, "max": 5, "buckets": {"10": 1}}
    assert CATALOGUE["request_time"].kind is Kind.HISTOGRAM


def test_status_classes() -> None:
    assert status_classes({"200": 2, "204": 1, "503": 4, "0": 1}) == {
        "2xx": 3,
        "5xx": 4,
        "other": 1,
    }


def test_the_reference_page_lists_every_metric() -> None:
    page = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    assert page.endswith(reference_table()), "regenerate: python -m sozu_config.metrics"
    for name in CATALOGUE:
        assert f"`{name}`" in page
