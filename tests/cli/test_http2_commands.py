"""The HTTP/2 settings through the commands, against a real daemon: ``sozu listener https
add|update`` with ``--disable-http11`` and the ``--h2-*`` limits, ``sozu cluster add --http2``
and ``sozu cluster h2 enable|disable``, and ``sozu-apply`` planning a change of them."""

from __future__ import annotations

import re
from pathlib import Path

from cli_harness import live_state, sozu, sozu_apply
from support.daemon import DaemonProcess, free_port

from sozu_config import load_config


def test_https_listener_http2_settings_are_set_and_patched(daemon: DaemonProcess) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = daemon.config_path
    added = sozu(
        "-c", config, "listener", "https", "add", "-a", address,
        "--disable-http11", "--h2-max-concurrent-streams", "10",
    )  # fmt: skip
    assert added.code == 0, added
    listener = live_state(daemon)[1].https_listeners[address]
    assert (listener.disable_http11, listener.alpn_protocols) == (True, ["h2"])
    assert listener.h2_max_concurrent_streams == 10

    updated = sozu(
        "-c", config, "listener", "https", "update", "-a", address,
        "--enable-http11", "--h2-max-rst-stream-per-window", "3",
        "--h2-graceful-shutdown-deadline-seconds", "0",
    )  # fmt: skip
    assert updated.code == 0, updated
    listener = live_state(daemon)[1].https_listeners[address]
    assert (listener.disable_http11, listener.alpn_protocols) == (False, ["h2", "http/1.1"])
    assert listener.h2_max_rst_stream_per_window == 3
    assert listener.h2_graceful_shutdown_deadline_seconds == 0
    assert listener.h2_max_concurrent_streams == 10  # kept

    preferring_http11 = sozu(
        "-c", config, "listener", "https", "update", "-a", address,
        "--alpn-protocols", "http/1.1", "h2",
    )  # fmt: skip
    assert preferring_http11.code == 0, preferring_http11
    assert live_state(daemon)[1].https_listeners[address].alpn_protocols == ["http/1.1", "h2"]
    reset = sozu("-c", config, "listener", "https", "update", "-a", address, "--reset-alpn")
    assert reset.code == 0, reset
    assert live_state(daemon)[1].https_listeners[address].alpn_protocols == ["h2", "http/1.1"]

    version = live_state(daemon)[0]
    small = sozu(
        "-c", config, "listener", "https", "update", "-a", address,
        "--h2-initial-connection-window", "1000",
    )  # fmt: skip
    assert small.code == 2, small
    assert "h2_initial_connection_window" in small.err
    assert "65535" in small.err
    assert "Traceback" not in small.err
    unknown = sozu(
        "-c", config, "listener", "https", "update", "-a", address, "--alpn-protocols", "h3"
    )
    assert unknown.code == 2, unknown
    assert "h3" in unknown.err
    # both at once, or HTTP/1.1 offered while disabled: the daemon refuses, nothing changes
    refused = sozu(
        "-c", config, "listener", "https", "update", "-a", address,
        "--disable-http11", "--alpn-protocols", "h2", "http/1.1", "--json",
    )  # fmt: skip
    assert refused.code == 1, refused
    assert "offers 'http/1.1'" in refused.json()["message"]
    assert live_state(daemon)[0] == version


def test_cluster_http2_is_added_and_switched(daemon: DaemonProcess) -> None:
    config = daemon.config_path
    added = sozu("-c", config, "cluster", "add", "-i", "api", "--http2", "--sticky-session")
    assert added.code == 0, added
    assert live_state(daemon)[1].clusters["api"].http2 is True

    off = sozu("-c", config, "cluster", "h2", "disable", "-i", "api")
    assert off.code == 0, off
    api = live_state(daemon)[1].clusters["api"]
    assert (api.http2, api.sticky_session) == (False, True)  # the rest is kept

    on = sozu("-c", config, "cluster", "h2", "enable", "-i", "app")
    assert on.code == 0, on
    state = live_state(daemon)[1]
    assert state.clusters["app"].http2 is True
    assert len(state.http_frontends) == 1  # its frontend and backend stay
    shown = sozu("-c", config, "cluster", "list", "-i", "app", "--json")
    assert shown.json()["clusters"][0]["cluster"]["http2"] is True
    human = sozu("-c", config, "cluster", "list", "-i", "app")
    assert re.search(r"^  http2 to backends +yes$", human.out, re.MULTILINE), human

    missing = sozu("-c", config, "cluster", "h2", "enable", "-i", "nope", "--json")
    assert missing.code == 1, missing
    assert missing.json()["kind"] == "not_found"


def test_sozu_apply_plans_http2_changes(tmp_path: Path) -> None:
    port = free_port()
    before = tmp_path / "before.toml"
    after = tmp_path / "after.toml"
    listener = f'[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:{port}"\n'
    cluster = '[clusters.app]\nprotocol = "http"\n'
    before.write_text(listener + cluster)
    after.write_text(
        listener + "h2_max_concurrent_streams = 250\ndisable_http11 = true\n" + cluster
        + "http2 = true\n"
    )  # fmt: skip
    (tmp_path / "daemon").mkdir()
    with DaemonProcess(tmp_path / "daemon", "worker_count = 1\n") as daemon:
        daemon.start()
        socket = daemon.socket_path
        first = sozu_apply(before, "--socket", socket)
        assert first.code == 0, first
        dry = sozu_apply(after, "--socket", socket, "--dry-run", "--json")
        assert dry.code == 0, dry
        (target,) = dry.json()["targets"]
        assert target["descriptions"] == [
            f"update_https_listener 127.0.0.1:{port} "
            "(alpn_protocols, disable_http11, h2_max_concurrent_streams)",
            "add_cluster app",
        ]
        changes = {c["description"]: c["fields"] for c in target["changes"]}
        assert changes["add_cluster app"] == {"http2": [False, True]}
        applied = sozu_apply(after, "--socket", socket)
        assert applied.code == 0, applied
        assert live_state(daemon)[1] == load_config(after).state
        again = sozu_apply(after, "--socket", socket, "--check")
        assert again.code == 0, again
