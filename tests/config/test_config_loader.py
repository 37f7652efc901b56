"""Tests of the ``config.toml`` loader: sōzu's sample files, a full-featured file, one invalid file
per error rule (tests/fixtures/configs/invalid/, each stating the error it must produce), the
warnings, path resolution and the state built from the requests of reference §D.7."""

from __future__ import annotations

import base64
import gc
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from sozu_config.config import (
    Config,
    ConfigError,
    check_config,
    load_config,
    load_config_text,
)
from sozu_config.models import (
    HeaderPosition,
    LoadBalancingAlgorithm,
    LoadMetric,
    PathRuleKind,
    ProxyProtocolConfig,
    RedirectPolicy,
    RedirectScheme,
    RulePosition,
    TlsVersion,
)
from sozu_config.state import ConfigState
from sozu_config.tls import DEFAULT_CIPHER_LIST

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOZU_DATA = FIXTURES / "sozu-data"
CONFIGS = FIXTURES / "configs"
INVALID = CONFIGS / "invalid"
REPOSITORY = Path(__file__).resolve().parents[2]

LOLCATHOST_CERT = SOZU_DATA / "lib__assets__certificate.pem"
LOLCATHOST_KEY = SOZU_DATA / "lib__assets__key.pem"
MULTI_SNI_CERT = SOZU_DATA / "lib__assets__multi-sni-cert.pem"  # foo/bar/baz.example.com
MULTI_SNI_KEY = SOZU_DATA / "lib__assets__multi-sni-key.pem"


def fingerprint(pem_path: Path) -> str:
    """SHA-256 of the DER of a one-certificate PEM file, computed without the library."""
    body = "".join(
        line for line in pem_path.read_text().splitlines() if line and not line.startswith("-----")
    )
    return hashlib.sha256(base64.b64decode(body)).hexdigest()


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(directory: Path, text: str) -> Config:
    return load_config(write(directory, text))


def found(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text`` (which must match)."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in {text!r}"
    return match[1]


def listener_certificates(state: ConfigState, address: str) -> dict[str, list[str]]:
    """fingerprint → names of the certificates on one listener."""
    return {fp: entry.names for fp, entry in state.certificates.get(address, {}).items()}


# --------------------------------------------------------------------------- sōzu's samples


def test_bin_config_sample(sozu_data: Path) -> None:
    config = load_config(CONFIGS / "bin.toml")
    state = config.state

    assert config.path == CONFIGS / "bin.toml"
    assert config.command_socket == CONFIGS / "sozu.sock"
    assert (config.command_buffer_size, config.max_command_buffer_size) == (16_384, 163_840)
    assert (config.worker_count, config.max_connections, config.buffer_size) == (2, 500, 16_393)
    assert config.worker_automatic_restart is True
    assert config.activate_listeners is True

    assert list(state.http_listeners) == ["0.0.0.0:8080"]
    assert list(state.https_listeners) == ["0.0.0.0:8443"]
    assert list(state.tcp_listeners) == ["0.0.0.0:8081"]  # implicit: its table is commented out
    assert all(listener.active for listener in state.listeners().values())
    https = state.https_listeners["0.0.0.0:8443"]
    assert https.tls_versions == [TlsVersion.TLS_V12, TlsVersion.TLS_V13]
    assert tuple(https.cipher_list) == DEFAULT_CIPHER_LIST
    assert https.default_sni is None  # the listener's own certificate is commented out

    assert list(state.clusters) == ["MyCluster", "TcpTest"]
    assert state.clusters["MyCluster"].load_balancing is LoadBalancingAlgorithm.ROUND_ROBIN
    assert state.clusters["TcpTest"].proxy_protocol is None

    (http_front,) = state.http_frontends.values()
    assert (http_front.address, http_front.hostname, http_front.path.value) == (
        "0.0.0.0:8080",
        "lolcatho.st",
        "/api",
    )
    assert http_front.path.kind is PathRuleKind.PREFIX
    assert http_front.position is RulePosition.TREE
    assert http_front.tags == {"key": "value"}
    (https_front,) = state.https_frontends.values()
    assert (https_front.address, https_front.hostname, https_front.cluster_id) == (
        "0.0.0.0:8443",
        "lolcatho.st",
        "MyCluster",
    )
    (tcp_front,) = state.tcp_frontends.values()
    assert tcp_front.cluster_id == "TcpTest"
    assert tcp_front.tags == {"owner": "John", "uuid": "3f740af1-45fd-45ce-b61f-17bf1a51505f"}

    # the chain file holds a copy of the leaf, which is dropped
    (entry,) = state.certificates["0.0.0.0:8443"].values()
    assert entry.fingerprint == fingerprint(sozu_data / "lib__assets__certificate.pem")
    assert entry.names == ["lolcatho.st"]
    assert entry.certificate_chain == []
    assert state.private_key("0.0.0.0:8443", entry.fingerprint) == LOLCATHOST_KEY.read_text()

    assert {b.backend_id: (b.address, b.weight) for b in state.backends["MyCluster"].values()} == {
        "the-backend-to-my-app": ("127.0.0.1:1026", 100)
    }
    assert {b.backend_id: (b.address, b.weight) for b in state.backends["TcpTest"].values()} == {
        "TcpTest-0-127.0.0.1:4000": ("127.0.0.1:4000", 100),
        "TcpTest-1-127.0.0.1:4001": ("127.0.0.1:4001", 50),
    }
    assert len(config.warnings) == 1
    assert "[clusters.TcpTest.frontends[0]] key 'address'" in config.warnings[0]
    assert "a tcp listener with default options was created" in config.warnings[0]


def test_command_config_sample(sozu_data: Path) -> None:
    config = load_config(CONFIGS / "command.toml")
    state = config.state

    assert config.worker_count == 1
    assert config.max_connections == 20_000
    assert config.saved_state == sozu_data / "command__assets__state.json"
    assert config.command_socket == Path(
        "/Users/geal/dev/rust/projects/yxorp/bin/command_folder/sock"
    )

    # declared listeners, then the implicit ones (HTTP 0.0.0.0:81, TCP 0.0.0.0:8080 and :8081)
    assert list(state.http_listeners) == ["0.0.0.0:80", "0.0.0.0:81"]
    assert list(state.https_listeners) == ["0.0.0.0:443"]
    assert list(state.tcp_listeners) == ["0.0.0.0:1234", "0.0.0.0:8080", "0.0.0.0:8081"]
    assert state.tcp_listeners["0.0.0.0:1234"].expect_proxy is True
    assert state.tcp_listeners["0.0.0.0:8080"].expect_proxy is False
    https = state.https_listeners["0.0.0.0:443"]
    assert https.tls_versions == [TlsVersion.TLS_V12]
    custom_404 = (sozu_data / "command__assets__custom_404.html").read_text()
    custom_503 = (sozu_data / "command__assets__custom_503.html").read_text()
    assert https.answers == {404: custom_404}
    assert state.http_listeners["0.0.0.0:80"].answers == {}

    assert list(state.clusters) == ["MyCluster", "example_com", "TcpCluster"]
    assert state.clusters["MyCluster"].answers == {503: custom_503}
    assert state.clusters["TcpCluster"].proxy_protocol is None
    assert {f.hostname for f in state.http_frontends.values()} == {"lolcatho.st", "example.com"}
    assert [(f.address, f.hostname) for f in state.https_frontends.values()] == [
        ("0.0.0.0:443", "lolcatho.st")
    ]
    assert sorted(state.tcp_frontends) == ["0.0.0.0:8080", "0.0.0.0:8081"]

    assert {b.backend_id: b.sticky_id for b in state.backends["MyCluster"].values()} == {
        "MyCluster-0-127.0.0.1:1026": "backend-1026",
        "MyCluster-1-127.0.0.1:1027": "backend-1027",
    }
    assert [b.address for b in state.backends["TcpCluster"].values()] == [
        "127.0.0.1:1029",
        "127.0.0.1:1030",
    ]
    assert listener_certificates(state, "0.0.0.0:443") == {
        fingerprint(sozu_data / "command__assets__certificate.pem"): ["lolcatho.st"]
    }

    expired = [w for w in config.warnings if "expired on" in w]
    assert len(expired) == 1
    assert (
        "command__assets__certificate.pem for names lolcatho.st expired on 2015-12-18"
        in (expired[0])
    )
    assert "[clusters.MyCluster.frontends[1]] key 'certificate'" in expired[0]
    implicit = [w for w in config.warnings if "no listener is declared" in w]
    assert [found(r"declared at (\S+):", w) for w in implicit] == [
        "0.0.0.0:81",
        "0.0.0.0:8080",
        "0.0.0.0:8081",
    ]
    assert "an http listener" in implicit[0]


def test_os_build_config_sample(sozu_data: Path) -> None:
    config = load_config(sozu_data / "os-build__config.toml")
    state = config.state

    assert config.warnings == ()
    assert config.command_socket == Path("/run/sozu/sozu.sock")
    assert config.saved_state == Path("/var/lib/sozu/state.json")
    assert config.pid_file_path == Path("/run/sozu/sozu.pid")
    assert (config.command_buffer_size, config.max_command_buffer_size) == (163_840, 1_638_400)
    assert (config.max_buffers, config.zombie_check_interval) == (20_000, 1_800)
    assert list(state.http_listeners) == ["0.0.0.0:80"]
    assert list(state.https_listeners) == ["0.0.0.0:443"]
    assert state.clusters == {}
    for listener in state.listeners().values():
        # the top-level timeouts are the listeners' defaults
        assert (
            listener.front_timeout,
            listener.back_timeout,
            listener.connect_timeout,
            listener.request_timeout,
        ) == (900, 900, 3, 180)
        assert listener.active
    assert tuple(state.https_listeners["0.0.0.0:443"].cipher_list) == DEFAULT_CIPHER_LIST


@pytest.mark.parametrize(
    "path",
    [CONFIGS / "bin.toml", CONFIGS / "command.toml", CONFIGS / "full.toml"],
    ids=lambda p: p.name,
)
def test_state_is_consistent_and_rebuilt_by_its_own_requests(path: Path) -> None:
    state = load_config(path).state
    assert state.problems() == []
    rebuilt = ConfigState()
    for request in state.generate_requests():
        rebuilt.apply(request)
    assert rebuilt == state


# --------------------------------------------------------------------------- the full file


def test_full_config_settings() -> None:
    config = load_config(CONFIGS / "full.toml")
    assert config.warnings == ()
    assert config.command_socket == CONFIGS / "run" / "sozu.sock"
    assert config.saved_state == CONFIGS / "run" / "state.jsonl"
    assert config.pid_file_path == CONFIGS / "run" / "sozu.pid"
    assert config.automatic_state_save is True
    assert config.log_level == "info,sozu_runtime.worker=debug"
    assert config.log_target == "udp://127.0.0.1:9876"
    assert config.access_logs_target == "file:///var/log/sozu-access.log"
    assert config.log_colored is True
    assert config.access_logs_colored is True  # inherits log_colored
    assert (config.worker_count, config.worker_timeout, config.max_connections) == (3, 5, 2_000)
    assert config.worker_automatic_restart is False
    assert (config.min_buffers, config.max_buffers, config.buffer_size) == (10, 500, 32_768)
    assert (config.command_buffer_size, config.max_command_buffer_size) == (65_536, 1_048_576)
    assert config.ctl_command_timeout == 2_000
    assert (config.zombie_check_interval, config.accept_queue_timeout) == (900, 30)
    assert config.evict_on_queue_full is False
    assert config.retry_after == 0
    assert config.basic_auth_max_credential_bytes == 4_096  # 0 in the file
    assert config.command_allowed_uids == (0, 1000)
    assert config.disable_cluster_metrics is True
    assert config.expired_certificates == "warn"
    assert config.soft_stop_timeout == 15


def test_full_config_listeners() -> None:
    state = load_config(CONFIGS / "full.toml").state
    http = state.http_listeners["127.0.0.1:8080"]
    assert http.public_address == "203.0.113.7:80"
    assert (http.sticky_name, http.sozu_id_header) == ("SERVERID", "X-Request-Id")
    assert http.elide_x_real_ip and http.send_x_real_ip
    # its own front_timeout, the top-level values for the others
    assert (http.front_timeout, http.back_timeout, http.connect_timeout, http.request_timeout) == (
        120,
        31,
        4,
        11,
    )
    # answer_404 from a file; "503" of the table wins over answer_503; an empty "502" is ignored
    assert http.answers == {
        404: (SOZU_DATA / "command__assets__custom_404.html").read_text(),
        503: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    }

    https = state.https_listeners["[::1]:8443"]
    assert https.expect_proxy is True
    assert https.tls_versions == [TlsVersion.TLS_V13, TlsVersion.TLS_V12]
    assert https.cipher_list == [
        "TLS13_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ]
    assert https.alpn_protocols == ["http/1.1"]  # deduplicated
    assert https.strict_sni_binding is False
    assert https.send_tls13_tickets == 2
    assert https.default_sni == "foo.example.com"  # the first name of the listener's certificate
    assert https.answers == {404: (SOZU_DATA / "command__assets__custom_404.html").read_text()}

    tcp = state.tcp_listeners["127.0.0.1:5432"]
    assert (tcp.expect_proxy, tcp.connect_timeout, tcp.front_timeout) == (True, 1, 61)


def test_full_config_clusters_and_backends() -> None:
    state = load_config(CONFIGS / "full.toml").state
    api = state.clusters["api"]
    assert api.load_balancing is LoadBalancingAlgorithm.LEAST_LOADED
    assert api.load_metric is LoadMetric.CONNECTIONS
    assert (api.sticky_session, api.https_redirect, api.https_redirect_port) == (True, True, 8443)
    assert api.authorized_hashes == [
        "admin:" + hashlib.sha256(b"secret").hexdigest(),
    ]
    assert api.www_authenticate == "api"
    assert api.answers == {
        503: (SOZU_DATA / "command__assets__custom_503.html").read_text(),
        429: "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n",
    }
    assert api.proxy_protocol is None
    db = state.clusters["db"]
    # send_proxy on a cluster whose listener expects a PROXY header: relay it
    assert db.proxy_protocol is ProxyProtocolConfig.RELAY_HEADER
    assert db.load_balancing is LoadBalancingAlgorithm.POWER_OF_TWO
    assert state.tcp_frontends["127.0.0.1:5432"].tags == {"kind": "postgres"}

    backends = state.backends["api"]
    assert list(backends) == ["api-primary", "api-1-[::1]:9002"]
    primary, backup = backends.values()
    assert (primary.address, primary.weight, primary.sticky_id, primary.backup) == (
        "127.0.0.1:9001",
        10,
        "api-1",
        False,
    )
    assert (backup.address, backup.weight, backup.sticky_id, backup.backup) == (
        "[::1]:9002",
        0,
        None,
        True,
    )
    assert [(b.backend_id, b.weight) for b in state.backends["db"].values()] == [
        ("db-0-10.0.0.5:5432", 100),
        ("db-1-10.0.0.6:5432", 50),
    ]


def test_full_config_frontends() -> None:
    state = load_config(CONFIGS / "full.toml").state
    by_host = {(f.hostname, f.path.value): f for f in state.http_frontends.values()}
    api = by_host[("api.example.com", "/v1")]  # hostname normalised: lowercase, no final dot
    assert api.cluster_id == "api"
    assert api.method == "GET"
    assert api.position is RulePosition.PRE
    assert api.tags == {"team": "core", "env": "prod"}
    assert api.redirect is RedirectPolicy.FOUND
    assert api.redirect_scheme is RedirectScheme.USE_HTTPS
    assert api.redirect_template == "HTTP/1.1 302 Found\r\nLocation: %REDIRECT_LOCATION\r\n\r\n"
    assert (api.rewrite_host, api.rewrite_path, api.rewrite_port) == (
        "internal.example.com",
        "/internal$PATH",
        8081,
    )
    assert api.required_auth is True
    assert [(h.position, h.key, h.value) for h in api.headers] == [
        (HeaderPosition.REQUEST, "X-Env", "prod"),
        (HeaderPosition.BOTH, "Server", ""),
    ]
    wildcard = by_host[("*.example.org", "")]
    assert wildcard.position is RulePosition.TREE  # the default (sōzu's TOML would say PRE)
    regex_host = by_host[("/(www|web)[0-9]*/.example.net", "/")]
    assert regex_host.redirect is RedirectPolicy.PERMANENT
    assert regex_host.redirect_scheme is RedirectScheme.USE_HTTPS

    https = {(f.hostname, f.path.value): f for f in state.https_frontends.values()}
    assert set(https) == {
        ("foo.example.com", "^/v[0-9]+/"),
        ("localhost", "/exact"),
        ("lolcatho.st", ""),
        ("lolcatho.st", "/admin"),
    }
    assert https[("foo.example.com", "^/v[0-9]+/")].path.kind is PathRuleKind.REGEX
    exact = https[("localhost", "/exact")]
    assert (exact.path.kind, exact.position) == (PathRuleKind.EQUALS, RulePosition.POST)


def test_full_config_certificates() -> None:
    state = load_config(CONFIGS / "full.toml").state
    certificates = state.certificates["[::1]:8443"]
    ecdsa = fingerprint(SOZU_DATA / "lib__assets__tests__ecdsa-localhost.pem")
    assert set(certificates) == {fingerprint(MULTI_SNI_CERT), ecdsa, fingerprint(LOLCATHOST_CERT)}
    listener_own = certificates[fingerprint(MULTI_SNI_CERT)]
    assert listener_own.names == [
        "foo.example.com",
        "localhost",
        "bar.example.com",
        "baz.example.com",
    ]
    assert listener_own.versions == []  # the listener's tls_versions are not the certificate's
    assert certificates[ecdsa].versions == [TlsVersion.TLS_V13]  # the frontend's tls_versions
    # lolcatho.st: two frontends, one add_certificate; the duplicated leaf left the chain
    assert certificates[fingerprint(LOLCATHOST_CERT)].certificate_chain == []
    assert state.request_counts["add_certificate"] == 3


def test_requests_follow_the_file_order() -> None:
    state = load_config(CONFIGS / "full.toml").state
    assert list(state.clusters) == ["api", "www", "db"]
    assert [f.hostname for f in state.http_frontends.values()] == [
        "api.example.com",
        "*.example.org",
        "/(www|web)[0-9]*/.example.net",
    ]
    # 3 listeners, 3 certificates, 3 clusters, 8 frontends, 5 backends, 3 activations
    assert state.version == 3 + 3 + 3 + 8 + 5 + 3
    assert state.request_counts["activate_listener"] == 3


# --------------------------------------------------------------------------- invalid files


def _expectations(path: Path) -> tuple[str | None, str | None, str]:
    header = dict(
        line[2:].split(": ", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect-")
    )
    table = header["expect-table"]
    key = header["expect-key"]
    return (
        None if table == "-" else table,
        None if key == "-" else key,
        header["expect-message"],
    )


INVALID_FILES = sorted(INVALID.glob("*.toml"))


def test_there_is_an_invalid_file_per_rule() -> None:
    assert len(INVALID_FILES) >= 100


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_file_is_refused_with_a_located_message(path: Path) -> None:
    table, key, fragment = _expectations(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    message = str(error)
    assert (error.table, error.key) == (table, key)
    assert error.path == path
    assert message.startswith(f"{path}: ")
    if table is not None:
        assert f"[{table}]" in message
    if key is not None:
        assert f"key '{key}'" in message
    if table is None and key is not None:
        assert f"top-level key '{key}'" in message
    assert fragment in message
    assert error.reason in message
    # a sentence for a human, never a pydantic dump
    for leak in ("validation error", "pydantic", "Input should", "type=", "[type"):
        assert leak not in message
    assert "\n" not in message


# --------------------------------------------------------------------------- file-level errors


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "worker_count = 2\nmax_buffers = = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.line, error.column) == (2, 15)  # the second '='
    assert (error.table, error.key) == (None, None)
    assert str(error) == f"{path}: line 2, column 15: TOML syntax error: Invalid value"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file: No such file"):
        load_config(tmp_path / "absent.toml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file") as caught:
        load_config(tmp_path)
    assert caught.value.path == tmp_path


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('log_level = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_text_without_a_path_is_named_string() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("worker_count = 0\n")
    assert str(caught.value).startswith(
        "<string>: top-level key 'worker_count': line 1, column 1: must be at least 1"
    )


def test_collector_is_restored_after_success_and_failure(tmp_path: Path) -> None:
    assert gc.isenabled()
    load_text(tmp_path, "worker_count = 2\n")
    assert gc.isenabled()
    with pytest.raises(ConfigError):
        load_text(tmp_path, "worker_count = 0\n")
    assert gc.isenabled()


# --------------------------------------------------------------------------- warnings


def test_unknown_top_level_key_is_an_error_with_a_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "log_level = 'info'\nworker_cout = 4\nsomething_else = true\n")
    error = caught.value
    assert (error.table, error.key, error.line, error.column) == (None, "worker_cout", 2, 1)
    assert error.reason == "unknown top-level key; did you mean 'worker_count'?"


@pytest.mark.parametrize(
    ("text", "table", "key"),
    [
        ("handle_process_affinity = true\n", None, "handle_process_affinity"),
        ("splice_pipe_capacity_bytes = 131072\n", None, "splice_pipe_capacity_bytes"),
        ("slab_entries_per_connection = 8\n", None, "slab_entries_per_connection"),
        ('access_logs_format = "protobuf"\n', None, "access_logs_format"),
        (
            '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\n'
            "h2_max_glitch_count = 500\n",
            "listeners[0]",
            "h2_max_glitch_count",
        ),
        (
            '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
            'groups_list = ["x25519", "P-256"]\n',
            "listeners[0]",
            "groups_list",
        ),
    ],
)
def test_unimplemented_settings_are_ignored_with_a_warning(
    tmp_path: Path, text: str, table: str | None, key: str | None
) -> None:
    config = load_text(tmp_path, text)
    (warning,) = config.warnings
    assert "ignored" in warning
    if table is not None:
        assert f"[{table}]" in warning
    if key is not None:
        assert f"key '{key}'" in warning


def test_settings_asking_for_nothing_are_not_warned_about(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "handle_process_affinity = false\nsplice_pipe_capacity_bytes = 0\n"
        'access_logs_format = "ascii"\nmax_connections_per_ip = 0\n',
    )
    assert config.warnings == ()


def test_min_buffers_above_max_buffers_is_clamped(tmp_path: Path) -> None:
    config = load_text(tmp_path, "min_buffers = 50\nmax_buffers = 20\n")
    assert (config.min_buffers, config.max_buffers) == (20, 20)
    (warning,) = config.warnings
    assert "top-level key 'min_buffers'" in warning and "clamped to 20" in warning


def https_frontend_text(listener_certificate: bool, frontend: str) -> str:
    own = (
        f'certificate = "{MULTI_SNI_CERT}"\nkey = "{MULTI_SNI_KEY}"\n'
        if listener_certificate
        else ""
    )
    return (
        f'[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n{own}\n'
        f'[clusters.app]\nprotocol = "http"\n{frontend}'
    )


def test_https_frontend_no_certificate_covers_is_a_warning_at_load(tmp_path: Path) -> None:
    # the daemon starts (a certificate can be added at runtime); config check refuses it
    config = load_text(
        tmp_path,
        https_frontend_text(
            False, 'frontends = [{ address = "127.0.0.1:8443", hostname = "nobody.example" }]\n'
        ),
    )
    (warning,) = config.warnings
    assert "[clusters.app.frontends[0]] key 'hostname'" in warning
    assert (
        "no certificate on the https listener of [listeners[0]] (127.0.0.1:8443) covers "
        "'nobody.example': it has no certificate"
    ) in warning
    assert len(config.state.https_frontends) == 1
    (error,) = check_config(tmp_path / "config.toml").errors
    assert (error.table, error.key, error.line, error.column) == (
        "clusters.app.frontends[0]",
        "hostname",
        7,
        44,
    )
    assert error.reason == warning.split(": ", 2)[2]


def test_https_frontend_the_listener_certificate_does_not_cover(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        https_frontend_text(
            True, 'frontends = [{ address = "127.0.0.1:8443", hostname = "other.example" }]\n'
        ),
    )
    (warning,) = config.warnings
    assert "covers 'other.example': the certificates there cover " in warning
    assert "foo.example.com" in warning


def test_https_frontend_served_by_the_listener_certificate(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        https_frontend_text(
            True, 'frontends = [{ address = "127.0.0.1:8443", hostname = "bar.example.com" }]\n'
        ),
    )
    assert config.warnings == ()
    https = config.state.https_listeners["127.0.0.1:8443"]
    assert https.default_sni == "foo.example.com"
    assert list(listener_certificates(config.state, "127.0.0.1:8443")) == [
        fingerprint(MULTI_SNI_CERT)
    ]


def test_https_frontend_covered_by_another_frontends_certificate(tmp_path: Path) -> None:
    frontends = (
        "frontends = [\n"
        f'  {{ address = "127.0.0.1:8443", hostname = "foo.example.com", '
        f'certificate = "{MULTI_SNI_CERT}", key = "{MULTI_SNI_KEY}" }},\n'
        '  { address = "127.0.0.1:8443", hostname = "bar.example.com", path = "/b" },\n'
        '  { address = "127.0.0.1:8443", hostname = "/.*/.example.com" },\n'
        "]\n"
    )
    config = load_text(tmp_path, https_frontend_text(False, frontends))
    assert config.warnings == ()  # covered by SNI; a regex host cannot be checked
    assert len(config.state.https_frontends) == 3


def test_listener_default_sni_is_kept_when_set(tmp_path: Path) -> None:
    text = https_frontend_text(True, "").replace(
        'address = "127.0.0.1:8443"\n',
        'address = "127.0.0.1:8443"\ndefault_sni = "Bar.example.com"\n',
    )
    https = load_text(tmp_path, text).state.https_listeners["127.0.0.1:8443"]
    assert https.default_sni == "bar.example.com"


def test_required_auth_without_credentials_is_a_warning(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nfrontends = [{ address = "127.0.0.1:8080", '
        'hostname = "a.com", required_auth = true }]\n',
    )
    warnings = [w for w in config.warnings if "key 'required_auth'" in w]
    assert len(warnings) == 1 and "every request to this frontend gets 401" in warnings[0]


def test_http_only_settings_of_a_tcp_cluster_are_warnings(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[clusters.db]\nprotocol = "tcp"\nsticky_session = true\nhttps_redirect = true\n'
        'frontends = [{ address = "127.0.0.1:5432" }]\n',
    )
    assert config.state.clusters["db"].sticky_session is False
    assert config.state.clusters["db"].https_redirect is False
    keys = [found(r"key '(\w+)'", w) for w in config.warnings]
    assert keys == ["sticky_session", "https_redirect", "address"]  # address: implicit listener


def test_send_proxy_on_an_http_cluster_is_a_warning(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[clusters.app]\nprotocol = "http"\nsend_proxy = true\n')
    (warning,) = config.warnings
    assert "[clusters.app] key 'send_proxy': only applies to tcp clusters" in warning
    assert config.state.clusters["app"].proxy_protocol is None


def test_tls_versions_without_certificate_is_a_warning(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        https_frontend_text(
            True,
            'frontends = [{ address = "127.0.0.1:8443", hostname = "foo.example.com", '
            'tls_versions = ["TLS_V13"] }]\n',
        ),
    )
    (warning,) = config.warnings
    assert "key 'tls_versions': has no effect without certificate and key" in warning


def test_not_yet_valid_and_expired_certificates_are_warned_once(tmp_path: Path) -> None:
    expired = SOZU_DATA / "command__assets__certificate.pem"
    key = SOZU_DATA / "command__assets__key.pem"
    frontends = "".join(
        f'  {{ address = "127.0.0.1:8443", hostname = "lolcatho.st", path = "/{n}", '
        f'certificate = "{expired}", key = "{key}" }},\n'
        for n in range(3)
    )
    config = load_text(tmp_path, https_frontend_text(False, f"frontends = [\n{frontends}]\n"))
    (warning,) = config.warnings
    assert f"certificate {expired} for names lolcatho.st expired on 2015-12-18 15:07:38 UTC" in (
        warning
    )


# --------------------------------------------------------------------------- paths


def test_paths_of_the_settings_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config(
        write(
            directory,
            'saved_state = "state/saved.jsonl"\npid_file_path = "../run/sozu.pid"\n',
        )
    )
    assert config.command_socket == directory / "sozu.sock"  # default: next to the file
    assert config.saved_state == directory / "state" / "saved.jsonl"
    assert config.pid_file_path == tmp_path / "run" / "sozu.pid"
    assert config.path == directory / "config.toml"


def test_relative_config_path_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, 'command_socket = "./control.sock"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("config.toml")
    assert config.path == tmp_path / "config.toml"
    assert config.command_socket == tmp_path / "control.sock"


def _certificate_config(certificate: str, key: str) -> str:
    return (
        '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n\n'
        '[clusters.app]\nprotocol = "http"\n'
        f'frontends = [{{ address = "127.0.0.1:8443", hostname = "lolcatho.st", '
        f'certificate = "{certificate}", key = "{key}" }}]\n'
    )


def test_certificates_next_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "c.pem").write_text(LOLCATHOST_CERT.read_text())
    (tmp_path / "certs" / "k.pem").write_text(LOLCATHOST_KEY.read_text())
    monkeypatch.chdir(REPOSITORY)
    state = load_text(tmp_path, _certificate_config("certs/c.pem", "certs/k.pem")).state
    assert list(state.certificates["127.0.0.1:8443"]) == [fingerprint(LOLCATHOST_CERT)]


def test_certificates_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    monkeypatch.chdir(REPOSITORY)  # sōzu's rule: paths relative to where the daemon runs
    relative = os.path.relpath(LOLCATHOST_CERT, REPOSITORY)
    relative_key = os.path.relpath(LOLCATHOST_KEY, REPOSITORY)
    state = load_text(config_dir, _certificate_config(relative, relative_key)).state
    assert list(state.certificates["127.0.0.1:8443"]) == [fingerprint(LOLCATHOST_CERT)]


def test_missing_certificate_names_both_places_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPOSITORY)
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, _certificate_config("nope.pem", str(LOLCATHOST_KEY)))
    assert caught.value.key == "certificate"
    assert f"looked for {tmp_path / 'nope.pem'} and {REPOSITORY / 'nope.pem'}" in str(caught.value)


def test_text_resolves_paths_against_base_dir(tmp_path: Path) -> None:
    config = load_config_text(
        'saved_state = "s.jsonl"\n'
        + _certificate_config(LOLCATHOST_CERT.name, "lib__assets__key.pem"),
        base_dir=SOZU_DATA,
    )
    assert config.path is None
    assert config.saved_state == SOZU_DATA / "s.jsonl"
    assert config.command_socket == SOZU_DATA / "sozu.sock"
    assert len(config.state.https_frontends) == 1


def test_key_errors_never_show_key_material(tmp_path: Path) -> None:
    wrong_key = SOZU_DATA / "lib__assets__local-key.pem"
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, _certificate_config(str(LOLCATHOST_CERT), str(wrong_key)))
    message = str(caught.value)
    assert str(wrong_key) in message and str(LOLCATHOST_CERT) in message
    key_lines = [line for line in wrong_key.read_text().splitlines() if "-----" not in line]
    assert not any(line in message for line in key_lines)
    assert "PRIVATE KEY" not in message


def test_certificate_file_with_its_chain(tmp_path: Path) -> None:
    intermediate = SOZU_DATA / "lib__assets__cert_test.pem"
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_text(LOLCATHOST_CERT.read_text() + intermediate.read_text())
    state = load_text(tmp_path, _certificate_config(str(fullchain), str(LOLCATHOST_KEY))).state
    (entry,) = state.certificates["127.0.0.1:8443"].values()
    assert entry.fingerprint == fingerprint(LOLCATHOST_CERT)
    assert entry.certificate == LOLCATHOST_CERT.read_text()
    assert entry.certificate_chain == [intermediate.read_text()]


# --------------------------------------------------------------------------- rules in detail


def test_frontend_defaults(tmp_path: Path) -> None:
    state = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\n'
        'frontends = [{ address = "127.0.0.1:8080", hostname = "a.com" }]\n',
    ).state
    (frontend,) = state.http_frontends.values()
    assert frontend.position is RulePosition.TREE
    assert (frontend.path.kind, frontend.path.value) == (PathRuleKind.PREFIX, "")
    assert frontend.redirect is RedirectPolicy.FORWARD
    assert frontend.redirect_scheme is RedirectScheme.USE_SAME
    assert frontend.method is None and frontend.tags == {} and frontend.headers == []


@pytest.mark.parametrize(
    ("key", "spelling", "attribute", "expected"),
    [
        ("path_type", "prefix", "path", PathRuleKind.PREFIX),
        ("path_type", "Regex", "path", PathRuleKind.REGEX),
        ("path_type", "EQUALS", "path", PathRuleKind.EQUALS),
        ("position", "pre", "position", RulePosition.PRE),
        ("position", "POST", "position", RulePosition.POST),
        ("position", "Tree", "position", RulePosition.TREE),
        ("redirect", "forward", "redirect", RedirectPolicy.FORWARD),
        ("redirect", "PERMANENT", "redirect", RedirectPolicy.PERMANENT),
        ("redirect", "unauthorized", "redirect", RedirectPolicy.UNAUTHORIZED),
        ("redirect", "found", "redirect", RedirectPolicy.FOUND),
        ("redirect", "permanent_redirect", "redirect", RedirectPolicy.PERMANENT_REDIRECT),
        ("redirect", "Permanent-Redirect", "redirect", RedirectPolicy.PERMANENT_REDIRECT),
        ("redirect_scheme", "use-same", "redirect_scheme", RedirectScheme.USE_SAME),
        ("redirect_scheme", "use_http", "redirect_scheme", RedirectScheme.USE_HTTP),
        ("redirect_scheme", "USE-HTTPS", "redirect_scheme", RedirectScheme.USE_HTTPS),
    ],
)
def test_frontend_enumerations_in_every_spelling(
    tmp_path: Path, key: str, spelling: str, attribute: str, expected: object
) -> None:
    path = ', path = "/x"' if key == "path_type" else ""
    state = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\n'
        f'frontends = [{{ address = "127.0.0.1:8080", hostname = "a.com"{path}, '
        f'{key} = "{spelling}" }}]\n',
    ).state
    (frontend,) = state.http_frontends.values()
    value = getattr(frontend, attribute)
    assert (value.kind if key == "path_type" else value) is expected


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("ROUND_ROBIN", LoadBalancingAlgorithm.ROUND_ROBIN),
        ("random", LoadBalancingAlgorithm.RANDOM),
        ("LEAST_LOADED", LoadBalancingAlgorithm.LEAST_LOADED),
        ("POWER_OF_TWO", LoadBalancingAlgorithm.POWER_OF_TWO),
    ],
)
def test_load_balancing_spellings(tmp_path: Path, spelling: str, expected: object) -> None:
    state = load_text(
        tmp_path, f'[clusters.app]\nprotocol = "http"\nload_balancing = "{spelling}"\n'
    ).state
    assert state.clusters["app"].load_balancing is expected


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("CONNECTIONS", LoadMetric.CONNECTIONS),
        ("connections", LoadMetric.CONNECTIONS),
        ("requests", LoadMetric.REQUESTS),
        ("CONNECTION_TIME", LoadMetric.CONNECTION_TIME),
    ],
)
def test_load_metric_spellings(tmp_path: Path, spelling: str, expected: object) -> None:
    state = load_text(
        tmp_path, f'[clusters.app]\nprotocol = "http"\nload_metric = "{spelling}"\n'
    ).state
    assert state.clusters["app"].load_metric is expected


@pytest.mark.parametrize(
    ("send_proxy", "expect_proxy", "expected"),
    [
        (False, False, None),
        (True, False, ProxyProtocolConfig.SEND_HEADER),
        (False, True, ProxyProtocolConfig.EXPECT_HEADER),
        (True, True, ProxyProtocolConfig.RELAY_HEADER),
    ],
)
def test_tcp_proxy_protocol(
    tmp_path: Path, send_proxy: bool, expect_proxy: bool, expected: ProxyProtocolConfig | None
) -> None:
    state = load_text(
        tmp_path,
        '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:5432"\n'
        f"expect_proxy = {str(expect_proxy).lower()}\n\n"
        '[[listeners]]\nprotocol = "tcp"\naddress = "127.0.0.1:5433"\n'
        f"expect_proxy = {str(expect_proxy).lower()}\n\n"
        f'[clusters.db]\nprotocol = "tcp"\nsend_proxy = {str(send_proxy).lower()}\n'
        'frontends = [{ address = "127.0.0.1:5432" }, { address = "127.0.0.1:5433" }]\n',
    ).state
    assert state.clusters["db"].proxy_protocol is expected


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        (["TLS_V12", "TLS_V13"], [TlsVersion.TLS_V12, TlsVersion.TLS_V13]),
        (["TLS_V10", "TLS_V11"], [TlsVersion.TLS_V10, TlsVersion.TLS_V11]),
        (["tls_v1_3", "TLS_V13"], [TlsVersion.TLS_V13]),
    ],
)
def test_tls_version_spellings(tmp_path: Path, spelling: list[str], expected: object) -> None:
    versions = ", ".join(f'"{v}"' for v in spelling)
    state = load_text(
        tmp_path,
        '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        f"tls_versions = [{versions}]\n",
    ).state
    assert state.https_listeners["127.0.0.1:8443"].tls_versions == expected


def test_implicit_listeners_take_the_top_level_options(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "front_timeout = 5\nrequest_timeout = 7\n"
        '[clusters.app]\nprotocol = "http"\nfrontends = [\n'
        '  { address = "127.0.0.1:8080", hostname = "a.com" },\n'
        f'  {{ address = "127.0.0.1:8443", hostname = "lolcatho.st", '
        f'certificate = "{LOLCATHOST_CERT}", key = "{LOLCATHOST_KEY}" }},\n'
        "]\n",
    )
    state = config.state
    assert list(state.http_listeners) == ["127.0.0.1:8080"]
    assert list(state.https_listeners) == ["127.0.0.1:8443"]  # it has a certificate
    for listener in state.listeners().values():
        assert (listener.front_timeout, listener.request_timeout, listener.back_timeout) == (
            5,
            7,
            30,
        )
        assert listener.active
    assert len(config.warnings) == 2
    assert "an https listener with default options was created" in config.warnings[1]


def test_listeners_stay_inactive_without_activate_listeners(tmp_path: Path) -> None:
    state = load_text(
        tmp_path,
        "activate_listeners = false\n"
        '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\n',
    ).state
    assert state.http_listeners["127.0.0.1:8080"].active is False
    assert state.request_counts["activate_listener"] == 0


def test_addresses_are_normalised(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[[listeners]]\nprotocol = "http"\naddress = "[0:0:0:0:0:0:0:1]:08080"\n\n'
        '[clusters.app]\nprotocol = "http"\n'
        'frontends = [{ address = "[::1]:8080", hostname = "a.com" }]\n'
        'backends = [{ address = " 10.0.0.1:080" }]\n',
    )
    assert list(config.state.http_listeners) == ["[::1]:8080"]
    assert config.warnings == ()  # the frontend found its listener under another spelling
    assert [b.address for b in config.state.backends["app"].values()] == ["10.0.0.1:80"]


def test_backend_ids_default_to_cluster_index_and_address(tmp_path: Path) -> None:
    state = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nbackends = [\n'
        '  { address = "10.0.0.1:80" },\n  { address = "10.0.0.2:80", backend_id = "named" },\n'
        '  { address = "[fe80::1]:80", weight = 3 },\n]\n',
    ).state
    assert list(state.backends["app"]) == ["app-0-10.0.0.1:80", "named", "app-2-[fe80::1]:80"]
    assert [b.weight for b in state.backends["app"].values()] == [100, 100, 3]


def test_frontend_tables_and_inline_arrays_are_equivalent(tmp_path: Path) -> None:
    inline = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\n'
        'frontends = [{ address = "127.0.0.1:8080", hostname = "a.com", path = "/p" }]\n'
        'backends = [{ address = "10.0.0.1:80", weight = 7 }]\n',
    ).state
    tables = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\n'
        '[[clusters.app.frontends]]\naddress = "127.0.0.1:8080"\nhostname = "a.com"\npath = "/p"\n'
        '[[clusters.app.backends]]\naddress = "10.0.0.1:80"\nweight = 7\n',
    ).state
    assert inline == tables
    assert len(inline.http_frontends) == 1


def test_zero_limits_and_retry_after_are_accepted(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[clusters.app]\nprotocol = "http"\nmax_connections_per_ip = 0\nretry_after = 30\n'
        "http2 = false\n",
    )
    assert config.warnings == ()
    assert "app" in config.state.clusters


# --------------------------------------------------------------------------- the model


def test_config_model_is_frozen_and_state_is_not_dumped() -> None:
    config = load_config(CONFIGS / "bin.toml")
    with pytest.raises(ValidationError):
        config.worker_count = 4  # type: ignore[misc]
    dumped = config.model_dump()
    assert "state" not in dumped
    assert dumped["worker_count"] == 2
    assert "state" not in json.loads(config.model_dump_json())


def test_config_model_checks_its_invariants() -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        Config(command_socket=Path("relative.sock"))
    with pytest.raises(ValidationError, match="automatic_state_save needs saved_state"):
        Config(command_socket=Path("/run/s.sock"), automatic_state_save=True)
    with pytest.raises(ValidationError, match="min_buffers"):
        Config(command_socket=Path("/run/s.sock"), min_buffers=5, max_buffers=4)
    config = Config(command_socket=Path("/run/s.sock"))
    assert config.state == ConfigState()
    assert config.max_command_buffer_size == 64 * 1024 * 1024
    assert config.expired_certificates == "refuse"


def test_error_attributes() -> None:
    error = ConfigError("bad", path=Path("a.toml"), table="clusters.x", key="protocol")
    assert isinstance(error, ValueError)
    assert str(error) == "a.toml: [clusters.x] key 'protocol': bad"
    assert (error.path, error.table, error.key, error.reason) == (
        Path("a.toml"),
        "clusters.x",
        "protocol",
        "bad",
    )
    assert str(ConfigError("bad", path=Path("a.toml"), key="worker_count")) == (
        "a.toml: top-level key 'worker_count': bad"
    )


# --------------------------------------------------------------------------- benchmark generator


def _benchmark_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_bench", REPOSITORY / "benchmarks" / "config_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_benchmark_file_loads_with_the_announced_contents(tmp_path: Path) -> None:
    bench = _benchmark_module().generate_config(tmp_path, clusters=30, certificates=4)
    config = load_config(bench.path)
    state = config.state
    assert config.warnings == ()
    assert len(state.clusters) == 30
    assert len(state.http_frontends) == bench.http_frontends == 150
    assert len(state.https_frontends) == bench.https_frontends == 8
    assert sum(len(b) for b in state.backends.values()) == bench.backends == 150
    assert sum(len(c) for c in state.certificates.values()) == bench.certificates == 4


def test_traffic_limits_and_audit_logs_are_read(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "evict_on_queue_full = true\nmax_connections_per_ip = 8\nretry_after = 0\n"
        'audit_logs_target = "audit.log"\naudit_logs_json_target = "/var/log/a.jsonl"\n'
        '[clusters.app]\nprotocol = "http"\nmax_connections_per_ip = 0\nretry_after = 30\n'
        '[clusters.tcp]\nprotocol = "tcp"\nmax_connections_per_ip = 2\n',
    )
    assert config.warnings == ()
    assert (config.evict_on_queue_full, config.max_connections_per_ip, config.retry_after) == (
        True,
        8,
        0,
    )
    assert config.audit_logs_target == tmp_path / "audit.log"
    assert config.audit_logs_json_target == Path("/var/log/a.jsonl")
    app, tcp = config.state.clusters["app"], config.state.clusters["tcp"]
    assert (app.max_connections_per_ip, app.retry_after) == (0, 30)
    assert (tcp.max_connections_per_ip, tcp.retry_after) == (2, None)


def test_hsts_tables_and_trusted_forwarding(tmp_path: Path, sozu_data: Path) -> None:
    certificate = sozu_data / "lib__assets__certificate.pem"
    key = sozu_data / "lib__assets__key.pem"
    config = load_text(
        tmp_path,
        f"""
[[listeners]]
protocol = "https"
address = "127.0.0.1:8443"
trust_forwarded_headers = true
hsts = {{ enabled = true, include_subdomains = true }}

[clusters.app]
protocol = "http"

[[clusters.app.frontends]]
address = "127.0.0.1:8443"
hostname = "lolcatho.st"
certificate = "{certificate}"
key = "{key}"
hsts = {{ enabled = true, max_age = 600, preload = true, force_replace_backend = true }}

[[clusters.app.frontends]]
address = "127.0.0.1:8443"
hostname = "off.lolcatho.st"
hsts = {{ enabled = false }}
""",
    )
    listener = config.state.https_listeners["127.0.0.1:8443"]
    assert listener.trust_forwarded_headers
    assert listener.hsts is not None and listener.hsts.enabled
    assert listener.hsts.header_value() == "max-age=31536000; includeSubDomains"
    frontends = {f.hostname: f for f in config.state.https_frontends.values()}
    first = frontends["lolcatho.st"].hsts
    assert first is not None and first.force_replace_backend
    assert first.header_value() == "max-age=600; preload"
    off = frontends["off.lolcatho.st"].hsts
    assert off is not None and not off.enabled


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    """A configuration (or a file it names) that is a device, a FIFO or a directory is an
    error naming it, never a read that blocks or never ends."""
    if kind == "device":
        target = Path("/dev/zero")
    elif kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    else:
        target = tmp_path / "folder"
        target.mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(target)
    text = (
        '[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        f'certificate = "{target}"\nkey = "{target}"\n'
    )
    with pytest.raises(ConfigError, match="not a regular file") as caught:
        load_text(tmp_path, text)
    assert str(target) in str(caught.value)


def test_a_file_named_by_the_configuration_is_bounded_in_size(tmp_path: Path) -> None:
    from sozu_config.config import MAX_NAMED_FILE_BYTES

    big = tmp_path / "big.pem"
    with big.open("wb") as handle:
        handle.truncate(MAX_NAMED_FILE_BYTES + 1)
    text = f'[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\ncertificate = "{big}"\n'
    text += f'key = "{big}"\n'
    with pytest.raises(ConfigError, match=f"larger than {MAX_NAMED_FILE_BYTES} bytes"):
        load_text(tmp_path, text)


@pytest.mark.parametrize("name", ["a" * 5000, "x/" * 3000 + "page.html"])
def test_an_impossible_file_name_is_an_error_not_a_traceback(tmp_path: Path, name: str) -> None:
    """Found by the fuzzing session: a name the system refuses (too long) raised OSError."""
    text = f'[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\nanswer_404 = "{name}"\n'
    with pytest.raises(ConfigError, match="answer_404"):
        load_text(tmp_path, text)
