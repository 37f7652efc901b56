"""The HTTP/2 settings: ALPN and ``disable_http11`` of HTTPS listeners, their ``h2_*`` limits
and ``http2`` on clusters, through every way a setting travels: the models, ``config.toml``,
the update request (live patch), the wire, and the plan from one state to another."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sozu_config import requests as rq
from sozu_config.config import ConfigError, load_config
from sozu_config.models import (
    H2_LISTENER_FIELDS,
    Cluster,
    HttpListenerConfig,
    HttpsListenerConfig,
)
from sozu_config.protocol import decode_request, encode_request
from sozu_config.state import ConfigState, InvalidRequest

HTTPS = "127.0.0.1:8443"
HTTP = "127.0.0.1:8080"

# sōzu's names and defaults (reference §B.3)
SOZU_DEFAULTS = {
    "h2_max_rst_stream_per_window": 100,
    "h2_max_ping_per_window": 100,
    "h2_max_settings_per_window": 50,
    "h2_max_empty_data_per_window": 100,
    "h2_max_window_update_stream0_per_window": 100,
    "h2_max_continuation_frames": 20,
    "h2_max_glitch_count": 100,
    "h2_initial_connection_window": 1_048_576,
    "h2_max_concurrent_streams": 100,
    "h2_stream_shrink_ratio": 2,
    "h2_max_rst_stream_lifetime": 10_000,
    "h2_max_rst_stream_abusive_lifetime": 50,
    "h2_max_rst_stream_emitted_lifetime": 500,
    "h2_max_header_list_size": 65_536,
    "h2_max_header_table_size": 65_536,
    "h2_max_header_fields": 128,
    "h2_stream_idle_timeout_seconds": 30,
    "h2_graceful_shutdown_deadline_seconds": 5,
}
# a value other than the default, within bounds, for each
CHANGED = {name: default + 1 for name, default in SOZU_DEFAULTS.items()}


def load_text(directory: Path, text: str) -> Any:
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def https_table(extra: str = "") -> str:
    return f'[[listeners]]\nprotocol = "https"\naddress = "{HTTPS}"\n{extra}'


# --------------------------------------------------------------------------- the models


def test_the_listener_has_sozus_http2_settings_with_sozus_defaults() -> None:
    listener = HttpsListenerConfig(address=HTTPS)
    assert tuple(SOZU_DEFAULTS) == H2_LISTENER_FIELDS
    assert {name: getattr(listener, name) for name in H2_LISTENER_FIELDS} == SOZU_DEFAULTS
    assert listener.alpn_protocols == ["h2", "http/1.1"]
    assert listener.disable_http11 is False
    for name in H2_LISTENER_FIELDS:
        assert HttpsListenerConfig.model_fields[name].description
    # plain HTTP listeners have none of them: HTTP/2 is negotiated by ALPN
    assert not set(H2_LISTENER_FIELDS) & set(HttpListenerConfig.model_fields)
    assert "disable_http11" not in HttpListenerConfig.model_fields


@pytest.mark.parametrize("name", list(SOZU_DEFAULTS))
def test_each_http2_setting_has_a_lower_bound(name: str) -> None:
    lowest = {
        "h2_initial_connection_window": 65_535,
        "h2_max_header_table_size": 0,
        "h2_graceful_shutdown_deadline_seconds": 0,
        "h2_stream_shrink_ratio": 2,
    }.get(name, 1)
    assert getattr(HttpsListenerConfig(address=HTTPS, **{name: lowest}), name) == lowest
    with pytest.raises(ValidationError, match=name):
        HttpsListenerConfig(address=HTTPS, **{name: lowest - 1})
    with pytest.raises(ValidationError, match=name):
        rq.UpdateHttpsListener(address=HTTPS, **{name: lowest - 1})


def test_the_update_request_patches_every_http2_setting() -> None:
    fields = set(rq.UpdateHttpsListener.model_fields)
    assert set(H2_LISTENER_FIELDS) | {"disable_http11"} <= fields


@pytest.mark.parametrize(
    ("alpn", "reason"),
    [
        (["h3"], "unknown ALPN protocol 'h3' (supported: h2, http/1.1)"),
        (["http/1.0"], "unknown ALPN protocol 'http/1.0'"),
    ],
)
def test_alpn_accepts_h2_and_http11_only(alpn: list[str], reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        HttpsListenerConfig(address=HTTPS, alpn_protocols=alpn)


def test_cluster_http2() -> None:
    assert Cluster(cluster_id="c").http2 is False
    assert Cluster(cluster_id="c", http2=True).http2 is True
    with pytest.raises(ValidationError):
        Cluster.model_validate({"cluster_id": "c", "http2": "yes please"})


# --------------------------------------------------------------------------- config.toml


def test_https_listener_http2_settings_are_read(tmp_path: Path) -> None:
    keys = "".join(f"{name} = {value}\n" for name, value in CHANGED.items())
    config = load_text(tmp_path, https_table(keys))
    assert config.warnings == ()
    listener = config.state.https_listeners[HTTPS]
    assert {name: getattr(listener, name) for name in H2_LISTENER_FIELDS} == CHANGED
    assert listener.alpn_protocols == ["h2", "http/1.1"]


def test_zero_is_accepted_where_it_means_something(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        https_table("h2_graceful_shutdown_deadline_seconds = 0\nh2_max_header_table_size = 0\n"),
    )
    listener = config.state.https_listeners[HTTPS]
    assert listener.h2_graceful_shutdown_deadline_seconds == 0
    assert listener.h2_max_header_table_size == 0


def test_http_listener_http2_settings_are_ignored_with_a_warning(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        f'[[listeners]]\nprotocol = "http"\naddress = "{HTTP}"\n'
        "h2_max_concurrent_streams = 5\nh2_max_glitch_count = 7\n",
    )
    assert len(config.warnings) == 2
    for warning, key in zip(
        config.warnings, ("h2_max_concurrent_streams", "h2_max_glitch_count"), strict=True
    ):
        assert f"[listeners[0]] key '{key}'" in warning
        assert "HTTPS listeners only (ALPN)" in warning
        assert "ignored" in warning
    without = load_text(tmp_path, f'[[listeners]]\nprotocol = "http"\naddress = "{HTTP}"\n')
    assert config.state.http_listeners[HTTP] == without.state.http_listeners[HTTP]


def test_disable_http11_alone_offers_h2_alone(tmp_path: Path) -> None:
    config = load_text(tmp_path, https_table("disable_http11 = true\n"))
    listener = config.state.https_listeners[HTTPS]
    assert listener.disable_http11 is True
    assert listener.alpn_protocols == ["h2"]
    explicit = load_text(
        tmp_path, https_table('disable_http11 = true\nalpn_protocols = ["h2", "h2"]\n')
    )
    assert explicit.state.https_listeners[HTTPS] == listener


def test_alpn_order_is_kept_without_repeats(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, https_table('alpn_protocols = ["http/1.1", "h2", "http/1.1", "h2"]\n')
    )
    assert config.state.https_listeners[HTTPS].alpn_protocols == ["http/1.1", "h2"]


@pytest.mark.parametrize(
    ("extra", "key", "line", "fragment"),
    [
        ('alpn_protocols = ["h2", "spdy/3"]\n', "alpn_protocols", 4, "unknown ALPN protocol"),
        (
            'disable_http11 = true\nalpn_protocols = ["http/1.1", "h2"]\n',
            "alpn_protocols",
            5,
            "offers 'http/1.1'",
        ),
        ("h2_max_header_fields = 0\n", "h2_max_header_fields", 4, "must be at least 1"),
        (
            "h2_initial_connection_window = 2147483648\n",
            "h2_initial_connection_window",
            4,
            "must be at most 2147483647",
        ),
        ("h2_stream_idle_timeout_seconds = 1.5\n", "h2_stream_idle_timeout_seconds", 4, "integer"),
        ('disable_http11 = "yes"\n', "disable_http11", 4, "expected a boolean"),
    ],
)
def test_bad_http2_settings_are_located(
    tmp_path: Path, extra: str, key: str, line: int, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, https_table(extra))
    error = caught.value
    assert (error.table, error.key, error.line, error.column) == ("listeners[0]", key, line, 1)
    assert fragment in str(error)
    assert f"[listeners[0]] key '{key}': line {line}, column 1: " in str(error)


def test_http2_on_an_http_cluster_is_read(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[clusters.app]\nprotocol = "http"\nhttp2 = true\n')
    assert config.state.clusters["app"].http2 is True
    assert config.warnings == ()


def test_http2_on_a_tcp_cluster_is_refused_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, '[clusters.db]\nprotocol = "tcp"\nhttp2 = true\n')
    error = caught.value
    assert (error.table, error.key, error.line, error.column) == ("clusters.db", "http2", 3, 1)
    assert "for http clusters" in error.reason
    # false asks for nothing: accepted
    config = load_text(tmp_path, '[clusters.db]\nprotocol = "tcp"\nhttp2 = false\n')
    assert config.state.clusters["db"].http2 is False


# --------------------------------------------------------------------------- live patches


def https_state(**settings: Any) -> ConfigState:
    state = ConfigState()
    state.apply(rq.AddHttpsListener(listener=HttpsListenerConfig(address=HTTPS, **settings)))
    return state


def test_an_update_patches_http2_settings_and_keeps_the_others() -> None:
    state = https_state()
    state.apply(
        rq.UpdateHttpsListener(address=HTTPS, h2_max_rst_stream_per_window=3, front_timeout=9)
    )
    listener = state.https_listeners[HTTPS]
    assert listener.h2_max_rst_stream_per_window == 3
    assert listener.front_timeout == 9
    expected = HttpsListenerConfig(address=HTTPS, h2_max_rst_stream_per_window=3, front_timeout=9)
    assert listener == expected
    state.apply(rq.UpdateHttpsListener(address=HTTPS, h2_graceful_shutdown_deadline_seconds=0))
    assert state.https_listeners[HTTPS].h2_graceful_shutdown_deadline_seconds == 0
    assert state.https_listeners[HTTPS].h2_max_rst_stream_per_window == 3


def test_disable_http11_patch_needs_an_alpn_list_without_http11() -> None:
    state = https_state()
    reference = state.copy()
    with pytest.raises(InvalidRequest, match=re.escape("alpn_protocols offers 'http/1.1'")):
        state.apply(rq.UpdateHttpsListener(address=HTTPS, disable_http11=True))
    assert state == reference
    state.apply(rq.UpdateHttpsListener(address=HTTPS, disable_http11=True, alpn_protocols=["h2"]))
    listener = state.https_listeners[HTTPS]
    assert (listener.disable_http11, listener.alpn_protocols) == (True, ["h2"])
    # while HTTP/1.1 is disabled, ALPN cannot offer it again alone
    with pytest.raises(InvalidRequest, match=re.escape("offers 'http/1.1'")):
        state.apply(rq.UpdateHttpsListener(address=HTTPS, alpn_protocols=["h2", "http/1.1"]))
    state.apply(
        rq.UpdateHttpsListener(
            address=HTTPS, disable_http11=False, alpn_protocols=["h2", "http/1.1"]
        )
    )
    assert state.https_listeners[HTTPS] == HttpsListenerConfig(address=HTTPS)


def test_http2_update_survives_the_wire() -> None:
    request = rq.UpdateHttpsListener(
        address=HTTPS,
        disable_http11=True,
        alpn_protocols=["h2"],
        h2_max_concurrent_streams=12,
        h2_graceful_shutdown_deadline_seconds=0,
    )
    message = decode_request(encode_request(request, "u"))
    assert isinstance(message.request, rq.UpdateHttpsListener)
    assert message.request.patch() == {
        "disable_http11": True,
        "alpn_protocols": ["h2"],
        "h2_max_concurrent_streams": 12,
        "h2_graceful_shutdown_deadline_seconds": 0,
    }
    cluster = decode_request(
        encode_request(rq.AddCluster(cluster=Cluster(cluster_id="c", http2=True)), "c")
    )
    assert isinstance(cluster.request, rq.AddCluster)
    assert cluster.request.cluster.http2 is True


# --------------------------------------------------------------------------- plans


def test_a_changed_http2_setting_is_planned_as_a_listener_update() -> None:
    source = https_state()
    target = https_state(h2_max_ping_per_window=7, h2_max_header_fields=64)
    plan = source.diff(target)
    assert [r.type for r in plan] == ["update_https_listener"]
    (update,) = plan
    assert isinstance(update, rq.UpdateHttpsListener)
    assert update.patch() == {"h2_max_ping_per_window": 7, "h2_max_header_fields": 64}
    wire = json.loads(update.model_dump_json(exclude_unset=True))
    assert set(wire) == {"address", "h2_max_ping_per_window", "h2_max_header_fields"}
    for request in plan:
        source.apply(request)
    assert source == target


def test_disabling_http11_is_planned_as_one_update_with_its_alpn_list() -> None:
    source = https_state()
    target = https_state(disable_http11=True, alpn_protocols=["h2"])
    plan = source.diff(target)
    (update,) = plan
    assert isinstance(update, rq.UpdateHttpsListener)
    assert update.patch() == {"disable_http11": True, "alpn_protocols": ["h2"]}
    source.apply(update)
    assert source == target


def test_a_changed_cluster_http2_is_planned_as_an_update_of_the_cluster() -> None:
    source = ConfigState()
    source.apply(rq.AddCluster(cluster=Cluster(cluster_id="app")))
    target = ConfigState()
    target.apply(rq.AddCluster(cluster=Cluster(cluster_id="app", http2=True)))
    plan = source.diff(target)
    assert [r.describe() for r in plan] == ["add_cluster app"]
    (add,) = plan
    assert isinstance(add, rq.AddCluster)
    assert add.cluster.http2 is True
    source.apply(add)
    assert source == target


def test_the_plan_between_two_files_carries_the_http2_changes(tmp_path: Path) -> None:
    before = load_text(
        tmp_path,
        https_table() + '[clusters.app]\nprotocol = "http"\n',
    ).state
    after = load_text(
        tmp_path,
        https_table("h2_max_concurrent_streams = 250\n")
        + '[clusters.app]\nprotocol = "http"\nhttp2 = true\n',
    ).state
    plan = before.diff(after)
    assert [r.describe() for r in plan] == [
        f"update_https_listener {HTTPS} (h2_max_concurrent_streams)",
        "add_cluster app",
    ]
