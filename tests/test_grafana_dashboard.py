"""``examples/grafana-dashboard.json``: a dashboard Grafana can import, whose every expression
names only metrics the admin endpoint exposes (derived from the catalogue) and labels they
carry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sozu_config.metrics import CATALOGUE, Kind, Scope, prometheus_name

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana-dashboard.json"
SERIES_LABELS = {"cluster_id", "backend_id", "worker", "le"}
"""The labels of the exposed series besides the labelled counters' own."""


def exposed_names() -> dict[str, str]:
    """Every sample name Prometheus sees, mapped to the catalogue name: the family name
    (:func:`~sozu_config.metrics.prometheus_name`), or for a histogram its ``_bucket``,
    ``_sum`` and ``_count``."""
    names: dict[str, str] = {}
    for name, info in CATALOGUE.items():
        family = prometheus_name(name, info.kind)
        if info.kind is Kind.HISTOGRAM:
            for suffix in ("_bucket", "_sum", "_count"):
                names[family + suffix] = name
        else:
            names[family] = name
    return names


def test_the_naming_rule_is_the_one_shown_to_users() -> None:
    names = exposed_names()
    for shown in (
        "sozu_http_requests_total",
        "sozu_http_status_total",
        "sozu_request_time_seconds_bucket",
        "sozu_client_connections",
    ):
        assert shown in names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and template variable query."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def balanced(text: str) -> bool:
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', text):
        if char in "({[":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_every_expression_names_exposed_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    names = exposed_names()
    labels = SERIES_LABELS | {info.label for info in CATALOGUE.values() if info.label}
    labels |= {"class"}  # made by label_replace from ``code``
    used: set[str] = set()
    for where, expr in expressions(dashboard):
        assert balanced(expr), where
        metrics = re.findall(r"\bsozu_[a-z0-9_]+", expr)
        assert metrics, where
        for metric in metrics:
            assert metric in names, f"{where}: {metric} is not exposed"
            used.add(names[metric])
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                assert label in labels, f"{where}: grouped by unknown label {label!r}"
        for selector in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*[=!]~?", selector):
                assert label in labels, f"{where}: unknown label {label!r}"
    wanted = {
        "http.requests",
        "http.status",
        "request_time",
        "backend_response_time",
        "bytes_in",
        "bytes_out",
        "client.connections",
        "backend.connections",
        "tls.handshakes",
    }
    assert wanted <= used, wanted - used


def test_scoped_selectors_match_the_scopes_of_each_metric(dashboard: dict[str, Any]) -> None:
    """A metric only exposed proxy-wide is never asked per cluster, and the cluster
    figures are not summed with their backends' (``backend_id=""`` picks the cluster's)."""
    names = exposed_names()
    for where, expr in expressions(dashboard):
        for metric, selector in re.findall(r"\b(sozu_[a-z0-9_]+)\{([^}]*)\}", expr):
            scopes = CATALOGUE[names[metric]].scopes
            if "cluster_id" in selector:
                assert Scope.CLUSTER in scopes or Scope.BACKEND in scopes, where
                assert "backend_id" in selector, f"{where}: cluster and backend series mixed"


def test_it_imports_with_a_datasource_input_and_a_cluster_variable(
    dashboard: dict[str, Any],
) -> None:
    (source,) = dashboard["__inputs"]
    assert source["type"] == "datasource" and source["pluginId"] == "prometheus"
    reference = "${" + source["name"] + "}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 8
    for panel in graphs:
        assert panel["datasource"]["uid"] == reference, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"]["uid"] == reference for target in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "cluster_id"
    assert variable["includeAll"] and variable["multi"]
    assert variable["allValue"] == ".+"  # "all clusters" must not match the proxy-wide series
    per_cluster = [
        expr for _, expr in expressions(dashboard) if 'cluster_id=~"$cluster_id"' in expr
    ]
    assert len(per_cluster) >= 8
    quantiles = {
        found
        for _, expr in expressions(dashboard)
        for found in re.findall(r"histogram_quantile\((0\.\d+)", expr)
    }
    assert quantiles >= {"0.5", "0.9", "0.99"}
