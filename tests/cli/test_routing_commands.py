"""``sozu cluster|backend|frontend|listener``: changes that the proxy then serves traffic with."""

from __future__ import annotations

import socket
from pathlib import Path

from cli_harness import live_state, sozu
from support.backends import HttpBackend, TcpEchoBackend
from support.clients import get
from support.daemon import DaemonProcess, free_port


def test_cluster_lifecycle(daemon: DaemonProcess) -> None:
    added = sozu(
        "-c",
        daemon.config_path,
        "cluster",
        "add",
        "-i",
        "api",
        "--load-balancing-policy",
        "RANDOM",
        "--sticky-session",
        "--https-redirect",
        "--https-redirect-port",
        "8443",
    )
    assert added.code == 0, added
    assert "applied to 1 worker" in added.out
    listing = sozu("-c", daemon.config_path, "cluster", "list")
    assert listing.code == 0
    rows = [line.split() for line in listing.out.splitlines()]
    assert rows[0] == ["CLUSTER", "HASH", "BACKENDS", "HEALTH", "CHECK"]
    assert [row[0] for row in rows[1:]] == ["api", "app"]

    one = sozu("-c", daemon.config_path, "cluster", "list", "-i", "api", "--json")
    assert one.code == 0
    (info,) = one.json()["clusters"]
    assert info["cluster"]["load_balancing"] == "random"
    assert info["cluster"]["sticky_session"] is True
    assert info["cluster"]["https_redirect_port"] == 8443
    shown = sozu("-c", daemon.config_path, "cluster", "list", "-i", "app")
    assert "app-1" in shown.out  # its backend
    assert "app.example.com" in shown.out  # its frontend

    by_domain = sozu("-c", daemon.config_path, "query", "clusters", "-d", "app.example.com", "-j")
    assert [c["cluster"]["cluster_id"] for c in by_domain.json()["clusters"]] == ["app"]
    nowhere = sozu("-c", daemon.config_path, "cluster", "list", "-d", "nowhere.example.com")
    assert nowhere.code == 1
    missing = sozu("-c", daemon.config_path, "cluster", "list", "-i", "nope", "--json")
    assert missing.code == 1
    assert missing.json() == {
        "status": "failure",
        "message": "no cluster 'nope'",
        "kind": "not_found",
    }
    unknown = sozu("-c", daemon.config_path, "cluster", "remove", "-i", "nope", "--json")
    assert unknown.code == 1
    assert unknown.json()["kind"] == "not_found"

    # upsert: the same id again replaces the settings
    assert sozu("-c", daemon.config_path, "cluster", "add", "-i", "api").code == 0
    assert live_state(daemon)[1].clusters["api"].sticky_session is False

    bad_policy = sozu(
        "-c", daemon.config_path, "cluster", "add", "-i", "x", "--load-balancing-policy", "fastest"
    )
    assert bad_policy.code == 2
    assert "round_robin" in bad_policy.err
    bad_id = sozu("-c", daemon.config_path, "cluster", "add", "-i", "two words")
    assert bad_id.code == 2, bad_id
    assert "cluster_id" in bad_id.err
    assert "Traceback" not in bad_id.err

    assert sozu("-c", daemon.config_path, "cluster", "remove", "-i", "api").code == 0
    again = sozu("-c", daemon.config_path, "cluster", "remove", "-i", "api")
    assert again.code == 1
    assert "no cluster 'api'" in again.err


def test_backends_and_frontends_route_real_traffic(daemon: DaemonProcess) -> None:
    port = daemon.port  # type: ignore[attr-defined]
    config = ("-c", str(daemon.config_path))
    with HttpBackend("web") as backend:
        assert sozu(*config, "cluster", "add", "-i", "web").code == 0
        added = sozu(
            *config,
            "backend",
            "add",
            "-i",
            "web",
            "--backend-id",
            "w1",
            "-a",
            backend.address,
            "--weight",
            "7",
        )
        assert added.code == 0, added
        route = sozu(
            *config,
            "frontend",
            "http",
            "add",
            "-a",
            f"127.0.0.1:{port}",
            "--hostname",
            "web.example.com",
            "-p",
            "/x",
            "--tags",
            "team=web, tier=front",
            "--id",
            "web",
        )
        assert route.code == 0, route
        answer = get(port, "/x/y", host="web.example.com")
        assert answer.status == 200
        assert answer.body == b"web"
        assert backend.requests[0].target == "/x/y"

        listing = sozu(*config, "frontend", "list", "--http", "-d", "web.example", "--json").json()
        assert listing["type"] == "frontend_list"
        (frontend,) = listing["http"]
        assert frontend["hostname"] == "web.example.com"
        assert frontend["path"] == {"kind": "prefix", "value": "/x"}
        assert frontend["tags"] == {"team": "web", "tier": "front"}
        assert frontend["cluster_id"] == "web"
        table = sozu(*config, "frontend", "list")
        assert table.out.splitlines()[0].split()[:3] == ["PROTOCOL", "ADDRESS", "HOSTNAME"]
        assert "web.example.com" in table.out

        listener = ("-a", f"127.0.0.1:{port}", "--hostname", "web.example.com")
        rule = ("--path-equals", "/x/secret", "--position", "pre", "--deny")
        deny = sozu(*config, "frontend", "http", "add", *listener, *rule)
        assert deny.code == 0, deny
        assert get(port, "/x/secret", host="web.example.com").status == 401
        duplicate = sozu(*config, "frontend", "http", "add", *listener, *rule)
        assert duplicate.code == 1
        assert "already exists" in duplicate.err

        removed = sozu(
            *config,
            "frontend",
            "http",
            "remove",
            "-a",
            f"127.0.0.1:{port}",
            "--hostname",
            "web.example.com",
            "-p",
            "/x",
        )
        assert removed.code == 0, removed
        assert get(port, "/x/y", host="web.example.com").status == 404
        gone = sozu(
            *config,
            "frontend",
            "http",
            "remove",
            "-a",
            f"127.0.0.1:{port}",
            "--hostname",
            "web.example.com",
            "-p",
            "/x",
        )
        assert gone.code == 1

        assert sozu(*config, "backend", "remove", "-i", "web", "--backend-id", "w1").code == 0
        absent = sozu(*config, "backend", "remove", "-i", "web", "--backend-id", "w1")
        assert absent.code == 1
        assert "no backend 'w1'" in absent.err

    bad_address = sozu(
        *config, "backend", "add", "-i", "web", "--backend-id", "w2", "-a", "backend.local:80"
    )
    assert bad_address.code == 2
    lines = bad_address.err.strip().splitlines()
    assert len(lines) == 1
    assert "not an IPv4 address" in lines[0]
    bad_port = sozu(
        *config, "backend", "add", "-i", "web", "--backend-id", "w2", "-a", "10.0.0.1:99999"
    )
    assert bad_port.code == 2
    assert "99999" in bad_port.err
    no_target = sozu(
        *config, "frontend", "http", "add", "-a", f"127.0.0.1:{port}", "--hostname", "a.example"
    )
    assert no_target.code == 2
    assert "--id" in no_target.err
    bad_tags = sozu(
        *config, "frontend", "http", "add", "-a", f"127.0.0.1:{port}", "--hostname", "a.example",
        "--id", "web", "--tags", "novalue",
    )  # fmt: skip
    assert bad_tags.code == 2
    assert "key=value" in bad_tags.err


def test_tcp_listener_and_frontend(daemon: DaemonProcess) -> None:
    config = ("-c", str(daemon.config_path))
    tcp_port = free_port()
    address = f"127.0.0.1:{tcp_port}"
    assert sozu(*config, "listener", "tcp", "add", "-a", address).code == 0
    listed = sozu(*config, "listener", "list", "--json").json()
    assert listed["type"] == "listeners_list"
    (tcp,) = listed["tcp"]
    assert tcp["address"] == address
    assert tcp["active"] is False

    nothing = sozu(*config, "listener", "tcp", "update", "-a", address)
    assert nothing.code == 2
    assert "nothing to update" in nothing.err
    updated = sozu(*config, "listener", "tcp", "update", "-a", address, "--front-timeout", "99")
    assert updated.code == 0, updated
    assert live_state(daemon)[1].tcp_listeners[address].front_timeout == 99
    missing = sozu(
        *config,
        "listener",
        "tcp",
        "update",
        "-a",
        f"127.0.0.1:{free_port()}",
        "--front-timeout",
        "9",
    )
    assert missing.code == 1

    with TcpEchoBackend() as echo:
        assert sozu(*config, "cluster", "add", "-i", "echo").code == 0
        assert (
            sozu(
                *config, "backend", "add", "-i", "echo", "--backend-id", "e1", "-a", echo.address
            ).code
            == 0
        )
        bound = sozu(
            *config, "frontend", "tcp", "add", "-i", "echo", "-a", address, "--tags", "kind=echo"
        )
        assert bound.code == 0, bound
        activated = sozu(*config, "listener", "tcp", "activate", "-a", address)
        assert activated.code == 0, activated
        assert live_state(daemon)[1].tcp_listeners[address].active
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as connection:
            connection.sendall(b"ping")
            assert connection.recv(16) == b"ping"
        frontends = sozu(*config, "frontend", "list", "--tcp", "--json").json()
        assert frontends["http"] == []
        assert frontends["tcp"] == [
            {"address": address, "cluster_id": "echo", "tags": {"kind": "echo"}}
        ]

        busy = sozu(*config, "listener", "tcp", "remove", "-a", address)
        assert busy.code == 1
        assert "remove them first" in busy.err
        assert sozu(*config, "frontend", "tcp", "remove", "-i", "echo", "-a", address).code == 0
        assert sozu(*config, "listener", "tcp", "deactivate", "-a", address).code == 0
        assert sozu(*config, "listener", "tcp", "remove", "-a", address).code == 0
    assert sozu(*config, "listener", "tcp", "remove", "-a", address).code == 1
    assert sozu(*config, "listener", "http", "add", "-a", "localhost:80").code == 2


def test_http_and_https_listener_settings(daemon: DaemonProcess, tmp_path: Path) -> None:
    config = ("-c", str(daemon.config_path))
    http_address = f"127.0.0.1:{free_port()}"
    template = tmp_path / "404.http"
    template.write_text("HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope")
    added = sozu(
        *config, "listener", "http", "add", "-a", http_address, "--sticky-name", "STICKY",
        "--answer-404", template, "--request-timeout", "5",
    )  # fmt: skip
    assert added.code == 0, added
    listener = live_state(daemon)[1].http_listeners[http_address]
    assert listener.sticky_name == "STICKY"
    assert listener.request_timeout == 5
    assert listener.answers[404].endswith("nope")
    patched = sozu(
        *config, "listener", "http", "update", "-a", http_address, "--sticky-name", "OTHER",
        "--send-x-real-ip",
    )  # fmt: skip
    assert patched.code == 0, patched
    listener = live_state(daemon)[1].http_listeners[http_address]
    assert (listener.sticky_name, listener.send_x_real_ip) == ("OTHER", True)
    assert listener.request_timeout == 5  # what the update did not name is kept
    missing_template = sozu(
        *config,
        "listener",
        "http",
        "add",
        "-a",
        f"127.0.0.1:{free_port()}",
        "--answer-404",
        tmp_path / "no",
    )
    assert missing_template.code == 2
    assert "does not exist" in missing_template.err

    https_address = f"127.0.0.1:{free_port()}"
    added = sozu(
        *config,
        "listener",
        "https",
        "add",
        "-a",
        https_address,
        "--tls-versions",
        "TLS_V12",
        "tls_v13",
    )
    assert added.code == 0, added
    updated = sozu(
        *config, "listener", "https", "update", "-a", https_address, "--no-strict-sni-binding",
        "--tls-versions", "tls_v13", "--public-address", "10.0.0.1:443",
    )  # fmt: skip
    assert updated.code == 0, updated
    https = sozu(*config, "listener", "list", "--json").json()["https"][0]
    assert https["strict_sni_binding"] is False
    assert https["tls_versions"] == ["tls_v13"]
    assert https["public_address"] == "10.0.0.1:443"
    cleared = sozu(
        *config, "listener", "https", "update", "-a", https_address, "--no-public-address"
    )
    assert cleared.code == 0, cleared
    assert live_state(daemon)[1].https_listeners[https_address].public_address is None
    table = sozu(*config, "listener", "list")
    assert table.out.splitlines()[0].split()[:3] == ["PROTOCOL", "ADDRESS", "ACTIVE"]
    taken = sozu(*config, "listener", "tcp", "add", "-a", https_address)
    assert taken.code == 1
    assert "already exists" in taken.err


def test_hardening_settings_from_the_command_line(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Per-IP limits of a cluster, trusted forwarding of a listener, HSTS of an HTTPS listener
    and frontend; bad values are usage errors, never tracebacks."""
    config = ("-c", str(daemon.config_path))
    limited = sozu(
        *config,
        "cluster",
        "add",
        "-i",
        "lim",
        "--max-connections-per-ip",
        "3",
        "--retry-after",
        "0",
    )
    assert limited.code == 0, limited
    cluster = live_state(daemon)[1].clusters["lim"]
    assert (cluster.max_connections_per_ip, cluster.retry_after) == (3, 0)
    negative = sozu(*config, "cluster", "add", "-i", "lim", "--max-connections-per-ip", "-1")
    assert negative.code == 2 and "Traceback" not in negative.err, negative

    http, https = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    trusted = sozu(*config, "listener", "http", "add", "-a", http, "--trust-forwarded-headers")
    assert trusted.code == 0, trusted
    assert live_state(daemon)[1].http_listeners[http].trust_forwarded_headers
    added = sozu(
        *config, "listener", "https", "add", "-a", https, "--hsts", "--hsts-include-subdomains"
    )
    assert added.code == 0, added
    listener = live_state(daemon)[1].https_listeners[https]
    assert listener.hsts is not None
    assert listener.hsts.header_value() == "max-age=31536000; includeSubDomains"
    cleared = sozu(*config, "listener", "https", "update", "-a", https, "--no-hsts")
    assert cleared.code == 0, cleared
    assert live_state(daemon)[1].https_listeners[https].hsts is None

    frontend = ("-a", https, "--hostname", "secure.example.com", "--id", "lim")
    on = sozu(*config, "frontend", "https", "add", *frontend, "--hsts", "--hsts-max-age", "600")
    assert on.code == 0, on
    (stored,) = live_state(daemon)[1].https_frontends.values()
    assert stored.hsts is not None and stored.hsts.header_value() == "max-age=600"
    lonely = sozu(*config, "frontend", "https", "add", *frontend, "--hsts-preload")
    assert lonely.code == 2 and "--hsts-preload needs --hsts" in lonely.err, lonely
    plain = sozu(
        *config,
        "frontend",
        "http",
        "add",
        "-a",
        http,
        "--hostname",
        "plain.example.com",
        "--id",
        "lim",
        "--hsts",
    )
    assert plain.code == 2, plain  # not an option of plain HTTP frontends
