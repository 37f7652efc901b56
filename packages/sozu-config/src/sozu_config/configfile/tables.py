"""Each table of ``config.toml`` read with its file model and turned into state requests.

A listener becomes an ``add_*_listener`` (and the ``add_certificate`` of its certificate), a
cluster an ``add_cluster`` (its ``health_check`` table included), each frontend an
``add_http_frontend``, ``add_https_frontend`` or ``add_tcp_frontend`` (preceded by its
certificate), each backend an ``add_backend``. The state's
models validate what the values mean; their errors are located with the file model of the
table. A cluster's frontends and backends are read one by one: a bad entry does not hide the
errors of the next ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .. import requests as rq
from ..models import (
    Cluster,
    ListenerType,
    PathRule,
    PathRuleKind,
    ProxyProtocolConfig,
    check_http2_only,
    normalize_hostname_rule,
)
from .errors import (
    ConfigError,
    TableRefused,
    guarded,
    record_refusal,
    show,
    validate_table,
    validation_errors,
    validation_reason,
)
from .models import (
    CERTIFICATE_KEYS,
    FRONTEND_PLAIN_KEYS,
    HTTP2_KEYS,
    HTTP_ONLY_CLUSTER_KEYS,
    HTTP_ONLY_HEALTH_CHECK_KEYS,
    LEGACY_ANSWER_KEYS,
    BackendFile,
    ClusterFile,
    FileModel,
    HealthCheckFile,
    HttpFrontendFile,
    HttpListenerFile,
    HttpsListenerFile,
    TcpFrontendFile,
    listener_file_model,
)
from .named_files import LoadedCertificate
from .rules import (
    LISTENER_MODELS,
    LISTENER_TIMEOUTS,
    Assembly,
    Listener,
    cluster_hints,
    http_frontend_hints,
    listener_hints,
    tcp_frontend_hints,
)

__all__ = ["read_cluster", "read_listener"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# Backend keys handed to the state's model unchanged.
_BACKEND_PLAIN_KEYS = frozenset({"weight", "sticky_id", "backup"})


def _built(
    assembly: Assembly,
    model: type[Any],
    fields: dict[str, Any],
    file_model: type[FileModel],
    table: str,
    data: dict[str, Any],
    *,
    skip: int = 1,
) -> Any:
    """``model`` (a request, or with ``skip=0`` a state model) validated from ``fields``; its
    errors are located with the table's file model (the request's wrapping field dropped)."""
    try:
        return model.__pydantic_validator__.validate_python(fields, strict=True)
    except ValidationError as error:
        raise TableRefused(
            validation_errors(assembly.findings, error, file_model, table, data, skip=skip)
        ) from None


# --------------------------------------------------------------------------- [[listeners]]


def read_listener(assembly: Assembly, index: int, data: object) -> None:
    """A ``[[listeners]]`` table: a listener of the state, and the certificate it declares."""
    findings = assembly.findings
    table = f"listeners[{index}]"
    if type(data) is not dict:
        raise findings.error(
            None, "listeners", f"expected an array of [[listeners]] tables, found {show(data)}"
        )
    protocol = _listener_protocol(assembly, table, data)
    if protocol is ListenerType.HTTP and not HTTP2_KEYS.isdisjoint(data):
        data = _without_http2_keys(assembly, table, data)
    file_model = listener_file_model(protocol)
    file = validate_table(findings, file_model, data, table, listener_hints(protocol))
    assembly.check_address_free(table, file.address)
    fields: dict[str, Any] = {"address": file.address}
    if file.public_address is not None:
        if file.expect_proxy:
            raise findings.error(
                table,
                "public_address",
                "public_address cannot be used with expect_proxy = true (the PROXY header "
                "gives the addresses)",
            )
        fields["public_address"] = file.public_address
    if file.expect_proxy is not None:
        fields["expect_proxy"] = file.expect_proxy
    for key in LISTENER_TIMEOUTS:
        value = getattr(file, key)
        fields[key] = value if value is not None else getattr(assembly.config, key)
    certificate = None
    if isinstance(file, HttpListenerFile):
        _http_settings(assembly, table, protocol, file, fields)
    if isinstance(file, HttpsListenerFile):
        certificate = _tls_settings(assembly, table, file, fields)
    model = _built(assembly, LISTENER_MODELS[protocol], fields, file_model, table, data, skip=0)
    assembly.declare_listener(Listener(protocol, table, model, certificate))


def _listener_protocol(assembly: Assembly, table: str, data: dict[str, Any]) -> ListenerType:
    """``protocol``, which chooses the model of the rest of the table."""
    name = data.get("protocol")
    if name is None:
        raise assembly.findings.error(table, "protocol", "is required (http, https or tcp)")
    if type(name) is not str:
        raise assembly.findings.error(table, "protocol", f"expected a string, found {show(name)}")
    if name.lower() == "udp":
        raise assembly.findings.error(table, "protocol", "UDP listeners are not supported")
    try:
        return ListenerType(name.lower())
    except ValueError:
        raise assembly.findings.error(
            table, "protocol", f"expected http, https or tcp, found {show(name)}"
        ) from None


def _without_http2_keys(assembly: Assembly, table: str, data: dict[str, Any]) -> dict[str, Any]:
    """An http listener's table without sōzu's ``h2_*`` keys, each ignored with a warning."""
    for key in sorted(HTTP2_KEYS.intersection(data)):
        assembly.findings.warn(
            table,
            key,
            "HTTP/2 is offered on HTTPS listeners only (ALPN): this setting is ignored on an "
            "http listener",
        )
    return {key: value for key, value in data.items() if key not in HTTP2_KEYS}


def _http_settings(
    assembly: Assembly,
    table: str,
    protocol: ListenerType,
    file: HttpListenerFile,
    fields: dict[str, Any],
) -> None:
    """The HTTP part of a listener into ``fields``."""
    given = file.model_fields_set
    for key in (
        "sticky_name",
        "sozu_id_header",
        "elide_x_real_ip",
        "send_x_real_ip",
        "trust_forwarded_headers",
    ):
        if key in given:
            fields[key] = getattr(file, key)
    legacy = {key: getattr(file, key) for key in LEGACY_ANSWER_KEYS}
    fields["answers"] = assembly.files.answers(table, legacy, file.answers)
    if file.hsts is not None:
        if protocol is not ListenerType.HTTPS:
            raise assembly.findings.error(
                table,
                "hsts",
                "HSTS is only valid on https listeners (RFC 6797 §7.2: browsers ignore it "
                "over plain HTTP)",
            )
        fields["hsts"] = file.hsts


def _tls_settings(
    assembly: Assembly, table: str, file: HttpsListenerFile, fields: dict[str, Any]
) -> LoadedCertificate | None:
    """The HTTPS part of a listener into ``fields``; returns the listener's certificate."""
    given = file.model_fields_set
    if file.cipher_list is not None and file.cipher_suites is not None:
        raise assembly.findings.error(
            table, "cipher_suites", "give either cipher_list or cipher_suites (the same setting)"
        )
    ciphers = file.cipher_suites if file.cipher_suites is not None else file.cipher_list
    if ciphers is not None:
        fields["cipher_list"] = ciphers
    for key in (
        "tls_versions",
        "alpn_protocols",
        "strict_sni_binding",
        "send_tls13_tickets",
        "default_sni",
        "disable_http11",
        *sorted(HTTP2_KEYS),
    ):
        if key in given:
            fields[key] = getattr(file, key)
    if file.disable_http11:
        _http2_only(assembly, table, file, fields)
    if "groups_list" in given:
        assembly.findings.warn(
            table,
            "groups_list",
            "key exchange groups are chosen by the TLS library; this setting is ignored",
        )
    certificate = assembly.files.certificate(
        table, file.certificate, file.key, file.certificate_chain
    )
    if certificate is not None and "default_sni" not in given:
        fields["default_sni"] = _first_exact_name(certificate.names)
        if fields["default_sni"] is None:
            assembly.findings.warn(
                table,
                "certificate",
                f"certificate {certificate.source} names no exact host "
                f"({', '.join(certificate.names)}), so it cannot be the default (default_sni)",
            )
    return certificate


def _http2_only(
    assembly: Assembly, table: str, file: HttpsListenerFile, fields: dict[str, Any]
) -> None:
    """``disable_http11 = true``: ALPN offers ``h2`` alone when the table does not say."""
    if file.alpn_protocols is None:
        fields["alpn_protocols"] = ["h2"]
        return
    try:
        check_http2_only(file.alpn_protocols)
    except ValueError as error:
        raise assembly.findings.error(table, "alpn_protocols", str(error)) from None


def _first_exact_name(names: Iterable[str]) -> str | None:
    """The first name that is a plain host name (not a wildcard): the default SNI."""
    for name in names:
        if name.startswith("*") or "/" in name:
            continue
        try:
            return normalize_hostname_rule(name)
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- [clusters.<id>]


@dataclass(slots=True)
class _ClusterContext:
    cluster_id: str
    table: str
    protocol: ListenerType
    requires_auth: bool = False


def _table_key(name: str) -> str:
    """A key as written in a TOML table name (quoted unless it is a bare key)."""
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def read_cluster(assembly: Assembly, cluster_id: str, data: object) -> None:
    """A ``[clusters.<id>]`` table: the cluster, then its frontends and its backends."""
    findings = assembly.findings
    table = f"clusters.{_table_key(cluster_id)}"
    if type(data) is not dict:
        raise findings.error(
            "clusters", cluster_id, f"expected a [clusters.<id>] table, found {show(data)}"
        )
    file = validate_table(findings, ClusterFile, data, table, cluster_hints())
    protocol = _cluster_protocol(assembly, table, file.protocol)
    try:
        cluster: Cluster | None = _cluster(assembly, cluster_id, table, protocol, file, data)
    except (ConfigError, TableRefused) as error:
        # the file is refused; its frontends and backends are still read for their own errors,
        # against a stand-in cluster (so that they do not fail for want of one)
        record_refusal(findings, error)
        try:
            cluster = Cluster(cluster_id=cluster_id)
        except ValidationError:  # the id itself is refused
            cluster = None
    context = _ClusterContext(cluster_id, table, protocol, bool(file.authorized_hashes))
    cluster_step = len(assembly.steps)
    if cluster is not None:
        assembly.steps.append((table, rq.AddCluster(cluster=cluster)))
    if protocol is ListenerType.HTTP:
        for index, entry in enumerate(file.frontends):
            try:  # each entry on its own (guarded() inlined: large files have many)
                _read_http_frontend(assembly, context, index, entry)
            except (ConfigError, TableRefused) as error:
                record_refusal(findings, error)
    else:
        proxy_protocol = _read_tcp_frontends(assembly, context, file)
        if proxy_protocol is not None and cluster is not None:
            # a value of the enumeration computed here: nothing left to validate
            cluster = cluster.model_copy(update={"proxy_protocol": proxy_protocol})
            assembly.steps[cluster_step] = (table, rq.AddCluster(cluster=cluster))
    for index, entry in enumerate(file.backends):
        try:
            _read_backend(assembly, context, index, entry)
        except (ConfigError, TableRefused) as error:
            record_refusal(findings, error)


def _cluster_protocol(assembly: Assembly, table: str, name: str) -> ListenerType:
    spelled = name.lower()
    if spelled == "http":
        return ListenerType.HTTP
    if spelled == "tcp":
        return ListenerType.TCP
    if spelled == "https":
        reason = 'HTTPS clusters use protocol = "http" (TLS is a frontend matter)'
    elif spelled == "udp":
        reason = "UDP clusters are not supported"
    else:
        reason = f"expected http or tcp, found {show(name)}"
    raise assembly.findings.error(table, "protocol", reason)


def _cluster(
    assembly: Assembly,
    cluster_id: str,
    table: str,
    protocol: ListenerType,
    file: ClusterFile,
    data: dict[str, Any],
) -> Cluster:
    given = file.model_fields_set
    fields: dict[str, Any] = {"cluster_id": cluster_id}
    for key in (
        "load_balancing",
        "load_metric",
        *HTTP_ONLY_CLUSTER_KEYS,
        "authorized_hashes",
        "www_authenticate",
        "max_connections_per_ip",
        "retry_after",
        "http2",
    ):
        if key in given:
            fields[key] = getattr(file, key)
    if protocol is ListenerType.TCP and file.http2:
        raise assembly.findings.error(
            table,
            "http2",
            "HTTP/2 to the backends is for http clusters: a tcp cluster relays bytes (remove "
            'http2, or use protocol = "http")',
        )
    if protocol is ListenerType.TCP:
        for key in HTTP_ONLY_CLUSTER_KEYS:
            if getattr(file, key):
                assembly.findings.warn(table, key, "only applies to http clusters; ignored")
                del fields[key]
    if file.send_proxy and protocol is ListenerType.HTTP:
        assembly.findings.warn(table, "send_proxy", "only applies to tcp clusters; ignored")
    if "answers" in given or "answer_503" in given:
        legacy = {"answer_503": file.answer_503}
        fields["answers"] = assembly.files.answers(table, legacy, file.answers)
    if file.health_check is not None:
        fields["health_check"] = _health_check(
            assembly, table, protocol, file.health_check, data["health_check"]
        )
    try:
        return Cluster.model_validate(fields, strict=True)
    except ValidationError as error:
        item = error.errors(include_url=False)[0]
        if item["loc"][:1] == ("cluster_id",):
            reason = f"invalid cluster id: {validation_reason(item)}"
            raise assembly.findings.error("clusters", cluster_id, reason) from None
        raise TableRefused(
            validation_errors(assembly.findings, error, ClusterFile, table, data)
        ) from None


def _health_check(
    assembly: Assembly,
    table: str,
    protocol: ListenerType,
    check: HealthCheckFile,
    written: dict[str, Any],
) -> dict[str, Any]:
    """The keys a ``health_check`` table gives, as ``written`` (an integer stays one in
    messages; the others take the state's defaults): an HTTP probe for an http cluster, which
    needs its ``uri``; a connection for a tcp one."""
    where = f"{table}.health_check"
    given = check.model_fields_set
    if protocol is ListenerType.HTTP and check.uri is None:
        raise assembly.findings.error(
            where,
            "uri",
            "is required: the path an http cluster's probe requests, starting with '/' "
            '(e.g. uri = "/health")',
        )
    if protocol is ListenerType.TCP:
        for key in HTTP_ONLY_HEALTH_CHECK_KEYS:
            if key in given:
                raise assembly.findings.error(
                    where,
                    key,
                    f"a tcp cluster's health check opens a connection: it has no {key} "
                    "(no HTTP request is sent)",
                )
    return {key: written[key] for key in given}


# --------------------------------------------------------------------------- frontends


def _entry(assembly: Assembly, table: str, value: object) -> dict[str, Any]:
    """An entry of an array of tables (``table`` names the entry)."""
    if type(value) is not dict:
        raise assembly.findings.error(table, None, f"expected a table, found {show(value)}")
    return value


def _read_http_frontend(
    assembly: Assembly, cluster: _ClusterContext, index: int, entry: object
) -> None:
    findings = assembly.findings
    table = f"{cluster.table}.frontends[{index}]"
    data = _entry(assembly, table, entry)
    file = validate_table(findings, HttpFrontendFile, data, table, http_frontend_hints())
    given = file.model_fields_set
    address = file.address
    fields: dict[str, Any] = {
        "address": address,
        "hostname": file.hostname,
        "cluster_id": cluster.cluster_id,
        "position": file.position,
    }
    if file.path is not None or file.path_type is not None:
        fields["path"] = _path_rule(assembly, table, file)
    for key in FRONTEND_PLAIN_KEYS & given:
        fields[key] = getattr(file, key)
    if file.headers is not None:
        fields["headers"] = [header.model_dump() for header in file.headers]
    if file.required_auth and not cluster.requires_auth:
        findings.warn(
            table,
            "required_auth",
            "the cluster has no authorized_hashes: every request to this frontend gets 401",
        )
    certificate = None
    if not CERTIFICATE_KEYS.isdisjoint(given):
        versions = tuple(file.tls_versions or ())
        certificate = assembly.files.certificate(
            table, file.certificate, file.key, file.certificate_chain, versions
        )
    https = assembly.http_listener_for(table, address, certificate)
    if file.tls_versions is not None and certificate is None:
        findings.warn(table, "tls_versions", "has no effect without certificate and key; ignored")
    if file.hsts is not None:
        if not https:
            listener = assembly.listeners[address]
            raise findings.error(
                table,
                "hsts",
                f"HSTS is only valid on https frontends (RFC 6797 §7.2); the listener at "
                f"{address} is {listener.describe()}",
            )
        fields["hsts"] = file.hsts
    request_type = rq.AddHttpsFrontend if https else rq.AddHttpFrontend
    request = _built(assembly, request_type, {"frontend": fields}, HttpFrontendFile, table, data)
    if certificate is not None:
        assembly.add_certificate(table, address, certificate, assembly.steps)
    if https:
        assembly.expect_coverage(table, address, request.frontend.hostname)
    assembly.steps.append((table, request))


def _path_rule(assembly: Assembly, table: str, file: HttpFrontendFile) -> PathRule:
    kind = file.path_type if file.path_type is not None else PathRuleKind.PREFIX
    value = file.path if file.path is not None else ""
    rule = assembly.path_rules.get((kind, value))
    if rule is None:
        try:
            rule = PathRule.model_validate({"kind": kind, "value": value}, strict=True)
        except ValidationError as error:
            item = error.errors(include_url=False)[0]
            raise assembly.findings.error(table, "path", validation_reason(item)) from None
        assembly.path_rules[(kind, value)] = rule
    return rule


def _read_tcp_frontends(
    assembly: Assembly, cluster: _ClusterContext, file: ClusterFile
) -> ProxyProtocolConfig | None:
    """The frontends of a tcp cluster; returns the PROXY protocol setting of the cluster
    (the frontends' listeners must agree on expect_proxy)."""
    expectations: dict[bool, str] = {}
    for index, entry in enumerate(file.frontends):
        table = f"{cluster.table}.frontends[{index}]"
        found: list[bool] = []
        if guarded(assembly.findings, _read_tcp_frontend, assembly, cluster, table, entry, found):
            expectations.setdefault(found[0], table)
    return assembly.tcp_proxy_protocol(cluster.table, expectations, send_proxy=file.send_proxy)


def _read_tcp_frontend(
    assembly: Assembly, cluster: _ClusterContext, table: str, entry: object, found: list[bool]
) -> None:
    """Queue a TCP frontend; appends to ``found`` whether its listener expects a PROXY
    header."""
    data = _entry(assembly, table, entry)
    file = validate_table(assembly.findings, TcpFrontendFile, data, table, tcp_frontend_hints())
    address = file.address
    listener = assembly.tcp_listener_for(table, address)
    fields: dict[str, Any] = {"address": address, "cluster_id": cluster.cluster_id}
    if file.tags is not None:
        fields["tags"] = file.tags
    request = _built(
        assembly, rq.AddTcpFrontend, {"frontend": fields}, TcpFrontendFile, table, data
    )
    assembly.steps.append((table, request))
    found.append(listener.model.expect_proxy)


# --------------------------------------------------------------------------- backends


def _read_backend(assembly: Assembly, cluster: _ClusterContext, index: int, entry: object) -> None:
    table = f"{cluster.table}.backends[{index}]"
    data = _entry(assembly, table, entry)
    file = validate_table(assembly.findings, BackendFile, data, table)
    address = file.address
    backend_id = file.backend_id
    if backend_id is None:
        backend_id = f"{cluster.cluster_id}-{index}-{address}"
    fields: dict[str, Any] = {
        "cluster_id": cluster.cluster_id,
        "backend_id": backend_id,
        "address": address,
    }
    for key in _BACKEND_PLAIN_KEYS & file.model_fields_set:
        fields[key] = getattr(file, key)
    request = _built(assembly, rq.AddBackend, {"backend": fields}, BackendFile, table, data)
    assembly.claim_backend_id(table, cluster.cluster_id, request.backend.backend_id)
    assembly.steps.append((table, request))
