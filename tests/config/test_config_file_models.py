"""Tests of the file models of ``config.toml`` (one per kind of table), of the location of
their errors, and of the cross-table rules derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sozu_config.config import Config
from sozu_config.configfile.errors import Findings, TableRefused, validate_table
from sozu_config.configfile.models import (
    GLOBAL_KEYS,
    GLOBAL_PATH_KEYS,
    BackendFile,
    ClusterFile,
    GlobalsFile,
    HttpFrontendFile,
    HttpListenerFile,
    HttpsListenerFile,
    TcpListenerFile,
)
from sozu_config.configfile.rules import (
    cluster_hints,
    http_frontend_hints,
    listener_hints,
    tcp_frontend_hints,
)
from sozu_config.grammar import names_cover
from sozu_config.models import (
    HeaderPosition,
    ListenerType,
    LoadBalancingAlgorithm,
    PathRuleKind,
    RedirectPolicy,
    TlsVersion,
)

SOURCE = Path("c.toml")


def refused(model: type, data: dict[str, object], table: str | None = "t") -> list[str]:
    """The errors of reading ``data`` with ``model``, as printed."""
    with pytest.raises(TableRefused) as caught:
        validate_table(Findings(SOURCE, collect=True), model, data, table)
    return [str(error) for error in caught.value.errors]


def test_top_level_keys_are_config_fields_with_their_constraints() -> None:
    assert set(Config.model_fields) - GLOBAL_KEYS == {"path", "warnings", "state", "metrics"}
    assert set(GLOBAL_PATH_KEYS) == {
        "command_socket",
        "saved_state",
        "pid_file_path",
        "audit_logs_target",
        "audit_logs_json_target",
    }
    settings = GlobalsFile.model_validate(
        {"worker_count": 3, "saved_state": "s.jsonl", "command_allowed_uids": [0, 7]},
        strict=True,
    )
    assert settings.model_fields_set == {"worker_count", "saved_state", "command_allowed_uids"}
    # Config's constraints, the file's types (paths are strings, arrays are arrays)
    assert refused(GlobalsFile, {"worker_count": 70_000}, None) == [
        "c.toml: top-level key 'worker_count': must be at most 65535, found 70000"
    ]
    assert refused(GlobalsFile, {"saved_state": ""}, None) == [
        "c.toml: top-level key 'saved_state': expected a path, found an empty string"
    ]
    assert refused(GlobalsFile, {"command_allowed_uids": [-1]}, None) == [
        "c.toml: top-level key 'command_allowed_uids': must be at least 0, found -1"
    ]
    # sōzu's 0 for "the default" is accepted in the file though Config wants at least 1
    GlobalsFile.model_validate({"basic_auth_max_credential_bytes": 0}, strict=True)


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (BackendFile, {"address": "10.0.0.1:80", "weight": "100"}, "expected an integer"),
        (BackendFile, {"address": "10.0.0.1:80", "backup": 1}, "expected a boolean"),
        (ClusterFile, {"protocol": "http", "sticky_session": "true"}, "expected a boolean"),
        (TcpListenerFile, {"protocol": "tcp", "address": 8080}, "expected a string"),
        (
            HttpFrontendFile,
            {"address": "1.2.3.4:80", "hostname": "a", "tags": {"k": 1}},
            "a string",
        ),
    ],
)
def test_values_must_have_their_toml_type(
    model: type, data: dict[str, object], message: str
) -> None:
    (error,) = refused(model, data)
    assert message in error


def test_unknown_keys_are_refused_by_every_table_model() -> None:
    for model, data in [
        (BackendFile, {"address": "10.0.0.1:80"}),
        (ClusterFile, {"protocol": "http"}),
        (HttpFrontendFile, {"address": "1.2.3.4:80", "hostname": "a"}),
        (HttpsListenerFile, {"protocol": "https", "address": "1.2.3.4:443"}),
    ]:
        with pytest.raises(ValidationError):
            model.model_validate({**data, "nonsense": 1}, strict=True)


def test_enumerations_in_sozu_spellings() -> None:
    frontend = HttpFrontendFile.model_validate(
        {
            "address": "[::1]:80",
            "hostname": "a",
            "path_type": "regex",
            "redirect": "Permanent-Redirect",
            "headers": [{"position": "Both", "key": "X"}],
        },
        strict=True,
    )
    assert frontend.address == "[::1]:80"
    assert frontend.path_type is PathRuleKind.REGEX
    assert frontend.redirect is RedirectPolicy.PERMANENT_REDIRECT
    assert frontend.headers is not None and frontend.headers[0].position is HeaderPosition.BOTH
    cluster = ClusterFile.model_validate(
        {"protocol": "http", "load_balancing": "least-loaded"}, strict=True
    )
    assert cluster.load_balancing is LoadBalancingAlgorithm.LEAST_LOADED
    listener = HttpsListenerFile.model_validate(
        {"protocol": "https", "address": "1.2.3.4:443", "tls_versions": ["tls_v1_3", "TLS_V13"]},
        strict=True,
    )
    assert listener.tls_versions == [TlsVersion.TLS_V13]
    (error,) = refused(ClusterFile, {"protocol": "http", "load_balancing": "MAGLEV"})
    assert "only for UDP clusters" in error


def test_errors_of_sub_tables_name_the_sub_table() -> None:
    errors = refused(
        HttpFrontendFile,
        {
            "address": "1.2.3.4:80",
            "hostname": "a",
            "headers": [{"position": "request", "key": "X"}, {"position": "sideways"}],
            "hsts": {"enabled": True, "max-age": 3},
        },
        "clusters.app.frontends[0]",
    )
    assert errors == [
        "c.toml: [clusters.app.frontends[0].headers[1]] key 'position': expected one of "
        'REQUEST, RESPONSE, BOTH, found "sideways" (a string)',
        "c.toml: [clusters.app.frontends[0].headers[1]] key 'key': is required",
        "c.toml: [clusters.app.frontends[0].hsts] key 'max-age': unknown key (known keys: "
        "enabled, force_replace_backend, include_subdomains, max_age, preload); did you mean "
        "'max_age'?",
    ]
    (entry,) = refused(
        HttpFrontendFile,
        {"address": "1.2.3.4:80", "hostname": "a", "headers": ["X-A: b"]},
        "f",
    )
    assert entry == 'c.toml: [f.headers[0]]: expected a table, found "X-A: b" (a string)'


def test_hints_for_keys_of_other_tables_follow_the_models() -> None:
    https_only = set(HttpsListenerFile.model_fields) - set(HttpListenerFile.model_fields)
    http = listener_hints(ListenerType.HTTP)
    assert {key for key, hint in http.items() if "only valid on https" in hint} == https_only
    tcp = listener_hints(ListenerType.TCP)
    assert "only valid on http and https listeners" in tcp["sticky_name"]
    assert "only valid on http and https listeners" in tcp["certificate"]
    assert "is a cluster key" in http["load_balancing"]
    assert "protocol" not in http and "answers" not in http  # keys listeners have too
    assert "is a frontend key" in cluster_hints()["hostname"]
    assert "is a listener key" in cluster_hints()["sticky_name"]
    assert "is a cluster key" in http_frontend_hints()["sticky_session"]
    assert set(tcp_frontend_hints()) == set(HttpFrontendFile.model_fields) - {"address", "tags"}


@pytest.mark.parametrize(
    ("names", "hostname", "expected"),
    [
        ({"a.example"}, "a.example", True),
        ({"*.example"}, "a.example", True),
        ({"*.example"}, "b.a.example", False),
        ({"*.example"}, "example", False),
        ({"*.example"}, "*.example", True),
        ({"a.example"}, "b.example", False),
    ],
)
def test_certificate_name_coverage(names: set[str], hostname: str, expected: bool) -> None:
    assert names_cover(names, hostname) is expected
