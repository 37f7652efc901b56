"""The configuration builders write TOML that reads back as what was asked, and documents the
daemon's loader accepts with the listeners, clusters, frontends and backends they name."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from sozu_config import ProxyProtocolConfig, load_config_text
from support.configs import (
    backend,
    cluster,
    document,
    frontend,
    http_cluster,
    http_listener,
    https_listener,
    single_http_cluster,
    tcp_cluster,
    tcp_listener,
    toml_key,
    toml_value,
)

AWKWARD = 'quote " backslash \\ tab \t newline \n return \r bell \x07 del \x7f é ☃'


@pytest.mark.parametrize(
    "value",
    [
        AWKWARD,
        "",
        0,
        -7,
        2**40,
        1.5,
        True,
        False,
        [1, "two", [3.0]],
        (),
        {"enabled": True, "max_age": 31536000},
        {},
        {"404": "file:///tmp/answer.html", "odd key": {"nested": ["a", 'b"']}},
    ],
)
def test_values_read_back_as_they_were_given(value: object) -> None:
    parsed = tomllib.loads(f"key = {toml_value(value)}\n")
    expected = list(value) if isinstance(value, tuple) else value
    assert parsed == {"key": expected}


def test_special_floats_and_paths() -> None:
    parsed = tomllib.loads(
        f"a = {toml_value(math.inf)}\nb = {toml_value(-math.inf)}\nc = {toml_value(math.nan)}\n"
        f"d = {toml_value(Path('/tmp/with space/cert.pem'))}\n"
    )
    assert parsed["a"] == math.inf and parsed["b"] == -math.inf and math.isnan(parsed["c"])
    assert parsed["d"] == "/tmp/with space/cert.pem"


def test_keys_are_quoted_only_when_they_must_be() -> None:
    assert toml_key("back_timeout") == "back_timeout"
    assert toml_key("404") == "404"
    assert toml_key("a.b") == '"a.b"'
    assert tomllib.loads(f"{toml_key('a b.c')} = 1\n") == {"a b.c": 1}


def test_no_toml_form_for_none() -> None:
    with pytest.raises(TypeError, match="None"):
        toml_value(None)


def test_a_document_reads_back_table_by_table() -> None:
    text = document(
        http_listener(8080, sticky_name="LB"),
        https_listener("127.0.0.2:8443", certificate="cert.pem", key="key.pem"),
        tcp_listener(9000),
        cluster(
            "app",
            frontends=[frontend(8080, hostname="app.example"), frontend(8080, "x", path="/a")],
            backends=[backend(3000, backend_id="one"), backend("10.0.0.1:3001", weight=2)],
            load_balancing="RANDOM",
        ),
        cluster("echo", protocol="tcp", frontends=[frontend(9000)], backends=[backend(4000)]),
        cluster("odd.name"),
        'extra = "kept as written"',
        worker_count=2,
        command_socket="/run/sozu.sock",
    )
    assert tomllib.loads(text) == {
        "worker_count": 2,
        "command_socket": "/run/sozu.sock",
        "listeners": [
            {"protocol": "http", "address": "127.0.0.1:8080", "sticky_name": "LB"},
            {
                "protocol": "https",
                "address": "127.0.0.2:8443",
                "certificate": "cert.pem",
                "key": "key.pem",
            },
            {"protocol": "tcp", "address": "127.0.0.1:9000"},
        ],
        "clusters": {
            "app": {
                "protocol": "http",
                "load_balancing": "RANDOM",
                "frontends": [
                    {"address": "127.0.0.1:8080", "hostname": "app.example"},
                    {"address": "127.0.0.1:8080", "hostname": "x", "path": "/a"},
                ],
                "backends": [
                    {"address": "127.0.0.1:3000", "backend_id": "one"},
                    {"address": "10.0.0.1:3001", "weight": 2},
                ],
            },
            "echo": {
                "protocol": "tcp",
                "frontends": [{"address": "127.0.0.1:9000"}],
                "backends": [{"address": "127.0.0.1:4000"}],
            },
            # a raw fragment lands where it is placed: here, in the last table opened
            "odd.name": {
                "protocol": "http",
                "frontends": [],
                "backends": [],
                "extra": "kept as written",
            },
        },
    }


def test_the_loader_accepts_a_full_document(tmp_path: Path) -> None:
    text = document(
        http_listener(8080, back_timeout=7),
        http_listener(8081),
        tcp_listener(9000),
        cluster(
            "app",
            frontends=[
                frontend(8080, hostname="app.example"),
                frontend(8081, hostname="app.example", path="/api"),
            ],
            backends=[backend(3000, backend_id="one"), backend(3001, backend_id="two")],
            load_balancing="RANDOM",
        ),
        cluster(
            "echo",
            protocol="tcp",
            frontends=[frontend(9000)],
            backends=[backend(4000, backend_id="e0")],
        ),
        worker_count=3,
        command_socket=tmp_path / 'so"zu.sock',
    )
    config = load_config_text(text)
    assert config.worker_count == 3
    assert config.command_socket == tmp_path / 'so"zu.sock'
    state = config.state.snapshot()
    assert [(x.address, x.back_timeout) for x in state.http_listeners] == [
        ("127.0.0.1:8080", 7),
        ("127.0.0.1:8081", 30),
    ]
    assert [x.address for x in state.tcp_listeners] == ["127.0.0.1:9000"]
    assert sorted(c.cluster_id for c in state.clusters) == ["app", "echo"]
    [app] = [c for c in state.clusters if c.cluster_id == "app"]
    assert app.load_balancing.value == "random"
    assert sorted((f.address, f.hostname, f.path.value) for f in state.http_frontends) == [
        ("127.0.0.1:8080", "app.example", ""),
        ("127.0.0.1:8081", "app.example", "/api"),
    ]
    assert sorted((b.cluster_id, b.backend_id, b.address) for b in state.backends) == [
        ("app", "one", "127.0.0.1:3000"),
        ("app", "two", "127.0.0.1:3001"),
        ("echo", "e0", "127.0.0.1:4000"),
    ]
    assert [(f.cluster_id, f.address) for f in state.tcp_frontends] == [("echo", "127.0.0.1:9000")]


def test_the_shortcuts_make_the_usual_shapes() -> None:
    text = document(
        http_listener(8080),
        tcp_listener(9000),
        http_cluster("web", 8080, "web.example", [3000], https_redirect=True),
        tcp_cluster("pipe", 9000, [backend(4000, backend_id="p0")], send_proxy=True),
    )
    state = load_config_text(text).state.snapshot()
    [web] = [c for c in state.clusters if c.cluster_id == "web"]
    [pipe] = [c for c in state.clusters if c.cluster_id == "pipe"]
    assert web.https_redirect
    assert pipe.proxy_protocol is ProxyProtocolConfig.SEND_HEADER
    assert [(f.cluster_id, f.hostname) for f in state.http_frontends] == [("web", "web.example")]
    assert [(f.cluster_id, f.address) for f in state.tcp_frontends] == [("pipe", "127.0.0.1:9000")]
    assert sorted((b.cluster_id, b.address) for b in state.backends) == [
        ("pipe", "127.0.0.1:4000"),
        ("web", "127.0.0.1:3000"),
    ]

    single = single_http_cluster(
        "127.0.0.1:8081", [3001, backend(3002, weight=2)], hostname="one.example", worker_count=1
    )
    assert tomllib.loads(single) == {
        "worker_count": 1,
        "listeners": [{"protocol": "http", "address": "127.0.0.1:8081"}],
        "clusters": {
            "app": {
                "protocol": "http",
                "frontends": [{"address": "127.0.0.1:8081", "hostname": "one.example"}],
                "backends": [
                    {"address": "127.0.0.1:3001"},
                    {"address": "127.0.0.1:3002", "weight": 2},
                ],
            }
        },
    }
