"""The ``[clusters.<id>.health_check]`` table of ``config.toml``: what it becomes in the state and
in the requests the loader generates, every refusal's located message, and the plans that
change it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sozu_config import HealthCheck, plan_states
from sozu_config import requests as rq
from sozu_config.config import ConfigError, check_config_text, load_config_text
from sozu_config.state import ConfigState

SOURCE = Path("health.toml")


def cluster_text(protocol: str, table: str, *, extra: str = "") -> str:
    """Cluster ``app`` of ``protocol`` with ``table`` as the body of its health_check table."""
    return f"""
[clusters.app]
protocol = "{protocol}"
{extra}
[clusters.app.health_check]
{table}
"""


def loaded(text: str) -> ConfigState:
    return load_config_text(text, path=SOURCE).state


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, path=SOURCE)
    return caught.value


# --------------------------------------------------------------------------- valid tables


def test_an_http_cluster_check_with_every_key() -> None:
    state = loaded(
        cluster_text(
            "http",
            """
uri = "/health?full=1"
interval = 2.5
timeout = 1
healthy_threshold = 2
unhealthy_threshold = 4
expected_status = 204
host = "api.example.com"
fail_open = false
""",
        )
    )
    assert state.clusters["app"].health_check == HealthCheck(
        uri="/health?full=1",
        interval=2.5,
        timeout=1.0,
        healthy_threshold=2,
        unhealthy_threshold=4,
        expected_status=204,
        host="api.example.com",
        fail_open=False,
    )


def test_keys_left_out_take_the_defaults() -> None:
    check = loaded(cluster_text("http", 'uri = "/health"')).clusters["app"].health_check
    assert check == HealthCheck(uri="/health")
    assert (check.interval, check.timeout) == (10.0, 5.0)
    assert (check.healthy_threshold, check.unhealthy_threshold) == (3, 3)
    assert (check.expected_status, check.host, check.fail_open) == (0, None, True)


def test_a_tcp_cluster_check_opens_a_connection() -> None:
    text = """
[clusters.db]
protocol = "tcp"
health_check = { interval = 1, timeout = 0.5, unhealthy_threshold = 2, fail_open = false }
"""
    check = loaded(text).clusters["db"].health_check
    assert check is not None
    assert check.uri is None
    assert check.describe() == "TCP connect every 1s"
    assert (check.timeout, check.unhealthy_threshold, check.fail_open) == (0.5, 2, False)


@pytest.mark.parametrize(("written", "seconds"), [("3", 3.0), ("0.1", 0.1), ("86400", 86400.0)])
def test_intervals_are_integers_or_floats(written: str, seconds: float) -> None:
    text = cluster_text("http", f'uri = "/h"\ninterval = {written}')
    assert loaded(text).clusters["app"].health_check == HealthCheck(uri="/h", interval=seconds)


def test_a_cluster_without_the_table_has_no_check() -> None:
    state = loaded('[clusters.app]\nprotocol = "http"\n')
    assert state.clusters["app"].health_check is None
    assert state.health_checks() == {}


def test_the_generated_add_cluster_carries_the_check() -> None:
    text = cluster_text(
        "http",
        'uri = "/health"\ninterval = 5',
        extra='backends = [{ address = "127.0.0.1:9001", backend_id = "app-1" }]',
    )
    state = loaded(text)
    requests = state.generate_requests()
    (add,) = [r for r in requests if isinstance(r, rq.AddCluster)]
    assert add.cluster.health_check == HealthCheck(uri="/health", interval=5)
    assert add.describe().startswith("add_cluster app")
    # the requests rebuild the same state, check included
    rebuilt = ConfigState()
    for request in requests:
        rebuilt.apply(request)
    assert rebuilt.health_checks() == {"app": HealthCheck(uri="/health", interval=5)}
    # and it is the state a set_health_check on a cluster without one makes
    plain = ConfigState()
    plain.apply(rq.AddCluster(cluster=add.cluster.model_copy(update={"health_check": None})))
    plain.apply(
        rq.SetHealthCheck(cluster_id="app", health_check=HealthCheck(uri="/health", interval=5))
    )
    assert plain.clusters["app"] == state.clusters["app"]


# --------------------------------------------------------------------------- refusals

REFUSALS = [
    # (protocol, table body, key at fault, message)
    (
        "http",
        "interval = 5",
        "uri",
        "is required: the path an http cluster's probe requests, starting with '/' "
        '(e.g. uri = "/health")',
    ),
    (
        "tcp",
        'uri = "/health"',
        "uri",
        "a tcp cluster's health check opens a connection: it has no uri (no HTTP request is sent)",
    ),
    (
        "tcp",
        'host = "db.example.com"',
        "host",
        "a tcp cluster's health check opens a connection: it has no host (no HTTP request is sent)",
    ),
    (
        "tcp",
        "expected_status = 200",
        "expected_status",
        "a tcp cluster's health check opens a connection: it has no expected_status "
        "(no HTTP request is sent)",
    ),
    ("http", 'uri = "/h"\ninterval = 0.05', "interval", "must be at least 0.1, found 0.05"),
    ("http", 'uri = "/h"\ninterval = 0', "interval", "must be at least 0.1, found 0"),
    ("http", 'uri = "/h"\ninterval = "10"', "interval", 'expected a number, found "10" (a string)'),
    ("http", 'uri = "/h"\ninterval = true', "interval", "expected a number, found true"),
    ("http", 'uri = "/h"\ninterval = nan', "interval", "expected a finite number, found nan"),
    ("http", 'uri = "/h"\ninterval = inf', "interval", "expected a finite number, found inf"),
    ("http", 'uri = "/h"\ninterval = 100000', "interval", "must be at most 86400, found 100000"),
    ("http", 'uri = "/h"\ntimeout = 0', "timeout", "must be more than 0, found 0"),
    ("http", 'uri = "/h"\ntimeout = -1.5', "timeout", "must be more than 0, found -1.5"),
    ("tcp", "healthy_threshold = 0", "healthy_threshold", "must be at least 1, found 0"),
    ("http", 'uri = "/h"\nunhealthy_threshold = 0', "unhealthy_threshold", "must be at least 1"),
    (
        "http",
        'uri = "/h"\nhealthy_threshold = 1.5',
        "healthy_threshold",
        "expected an integer, found 1.5",
    ),
    (
        "http",
        'uri = "/h"\nexpected_status = 99',
        "expected_status",
        "99 is not an HTTP status code (100-599, or 0 for any 2xx)",
    ),
    ("http", 'uri = "/h"\nexpected_status = 600', "expected_status", "must be at most 599"),
    ("http", 'uri = "health"', "uri", "'health' must start with '/'"),
    ("http", 'uri = "/a b"', "uri", "no space or control character"),
    ("http", 'uri = "/h"\nhost = "a b"', "host", "'a b' is not a host name or address"),
    (
        "http",
        'uri = "/h"\nfail_open = "no"',
        "fail_open",
        'expected a boolean (true or false), found "no" (a string)',
    ),
    (
        "http",
        'uri = "/h"\nintervall = 3',
        "intervall",
        "unknown key (known keys: expected_status, fail_open, healthy_threshold, host, "
        "interval, timeout, unhealthy_threshold, uri); did you mean 'interval'?",
    ),
    ("tcp", "path = '/x'", "path", "unknown key (known keys: expected_status"),
]


@pytest.mark.parametrize(
    ("protocol", "table", "key", "message"),
    REFUSALS,
    ids=[f"{r[0]}-{r[2]}-{i}" for i, r in enumerate(REFUSALS)],
)
def test_refusals_name_the_table_and_the_key(
    protocol: str, table: str, key: str, message: str
) -> None:
    error = refusal(cluster_text(protocol, table))
    assert (error.table, error.key) == ("clusters.app.health_check", key)
    text = str(error)
    assert text.startswith(f"{SOURCE}: [clusters.app.health_check] key '{key}': ")
    assert message in text
    for leak in ("validation error", "pydantic", "Input should", "type=", "Traceback"):
        assert leak not in text
    assert "\n" not in text


def test_a_health_check_that_is_not_a_table() -> None:
    error = refusal('[clusters.app]\nprotocol = "http"\nhealth_check = "/health"\n')
    assert (error.table, error.key) == ("clusters.app", "health_check")
    assert 'expected a table, found "/health" (a string)' in str(error)


def test_a_health_check_key_in_the_cluster_table_points_to_the_table() -> None:
    error = refusal('[clusters.app]\nprotocol = "http"\nuri = "/health"\n')
    assert (error.table, error.key) == ("clusters.app", "uri")
    assert "is a health check key: set it in the cluster's health_check table" in str(error)


def test_health_check_in_a_listener_is_a_cluster_key() -> None:
    text = '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\nhealth_check = {}\n'
    error = refusal(text)
    assert (error.table, error.key) == ("listeners[0]", "health_check")
    assert "is a cluster key" in str(error)


def test_every_bad_health_check_is_reported_at_once() -> None:
    text = (
        '[clusters.a]\nprotocol = "http"\nhealth_check = { interval = 2 }\n'
        '[clusters.b]\nprotocol = "tcp"\nhealth_check = { uri = "/x" }\n'
        '[clusters.c]\nprotocol = "http"\nhealth_check = { uri = "/ok" }\n'
        '[clusters.d]\nprotocol = "http"\nhealth_check = { uri = "/x", timeout = 0 }\n'
    )
    report = check_config_text(text, path=SOURCE)
    assert [(e.table, e.key) for e in report.errors] == [
        ("clusters.a.health_check", "uri"),
        ("clusters.b.health_check", "uri"),
        ("clusters.d.health_check", "timeout"),
    ]


# --------------------------------------------------------------------------- plans


def test_plans_show_a_changed_check_as_a_cluster_change() -> None:
    none = loaded('[clusters.app]\nprotocol = "http"\n')
    default = loaded(cluster_text("http", 'uri = "/health"'))
    tuned = loaded(cluster_text("http", 'uri = "/health"\ninterval = 3\nhost = "x.test"'))

    added = plan_states(none, default)
    (change,) = added.changes
    assert (change.op, change.kind, change.key) == ("~", "cluster", "app")
    assert change.fields == {
        "health_check": (None, HealthCheck(uri="/health").model_dump(mode="json"))
    }
    assert added.summary() == "0 to add, 1 to change, 0 to remove"

    (change,) = plan_states(default, tuned).changes
    assert change.fields == {
        "health_check.host": (None, "x.test"),
        "health_check.interval": (10.0, 3.0),
    }
    (change,) = plan_states(tuned, none).changes
    assert change.op == "~"
    assert list(change.fields) == ["health_check"]
    assert change.fields["health_check"][1] is None
    assert plan_states(tuned, tuned).empty
