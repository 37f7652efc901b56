"""What no single table of ``config.toml`` can check, and the routing state the file makes.

:class:`Assembly` gathers, table after table, the listeners of the file (declared, or created
for a frontend on an address no listener declares), the certificates each listener gets (once
per fingerprint, whoever declares them), the HTTPS frontends whose hostname must be covered by
one of them, and the requests to apply. It checks what a table says against the others: a
frontend's listener must speak its cluster's protocol (and HTTPS for a frontend with a
certificate), the listeners of a tcp cluster's frontends must agree on ``expect_proxy``, two
listeners cannot share an address nor two backends of a cluster an id.
:meth:`Assembly.build_state` applies the requests in
sōzu's order (reference §D.7): listeners (HTTP, HTTPS, then TCP) and their certificates, the
clusters' requests, then the activations; what the routing state refuses (a frontend declared
twice, a TCP listener bound to two clusters…) is an error naming the table at fault and the one
declared first.

The hints given for an unknown key that belongs to another kind of table are derived from the
file models here, so that they follow the models.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from functools import cache

from pydantic import ValidationError

from .. import requests as rq
from ..files import read_regular
from ..grammar import HostKind, names_cover, parse_hostname_rule
from ..models import (
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    PathRule,
    PathRuleKind,
    ProxyProtocolConfig,
    TcpListenerConfig,
)
from ..state import ConfigState, StateError
from .errors import Findings, show, validate_table, validation_reason
from .models import (
    AdminFile,
    ClusterFile,
    HealthCheckFile,
    HttpFrontendFile,
    HttpListenerFile,
    HttpsListenerFile,
    TcpFrontendFile,
    TcpListenerFile,
)
from .named_files import LoadedCertificate, NamedFiles
from .settings import AdminSettings, Config, is_loopback

__all__ = ["MAX_TOKEN_BYTES", "Assembly", "Listener", "read_admin"]

ListenerModel = HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig
LISTENER_MODELS: dict[ListenerType, type[ListenerModel]] = {
    ListenerType.HTTP: HttpListenerConfig,
    ListenerType.HTTPS: HttpsListenerConfig,
    ListenerType.TCP: TcpListenerConfig,
}
LISTENER_TIMEOUTS = ("front_timeout", "back_timeout", "connect_timeout", "request_timeout")
Step = tuple[str, rq.StateRequest]
"""A request to apply, with the table it comes from."""


@dataclass(slots=True)
class Listener:
    """A listener of the file (declared, or created for a frontend on an undeclared address)."""

    protocol: ListenerType
    table: str
    model: ListenerModel
    certificate: LoadedCertificate | None = None
    implicit: bool = False

    def describe(self) -> str:
        """Where the listener comes from, for messages."""
        if self.implicit:
            return f"the {self.protocol.value} listener created for [{self.table}]"
        return f"the {self.protocol.value} listener of [{self.table}]"


@dataclass(slots=True)
class _UncoveredCandidate:
    """An HTTPS frontend without certificate, checked against the listener's names at the end."""

    table: str
    address: str
    hostname: str


@dataclass(slots=True)
class Assembly:
    """The tables read so far, and the requests they make."""

    findings: Findings
    files: NamedFiles
    config: Config
    """The top-level settings (their timeouts are the listeners' defaults)."""
    listeners: dict[str, Listener] = field(default_factory=dict)
    listener_steps: list[Step] = field(default_factory=list)
    """``add_certificate`` of the certificates declared on listeners."""
    steps: list[Step] = field(default_factory=list)
    """The requests of the clusters, in order."""
    certificates_added: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    names_at: dict[str, set[str]] = field(default_factory=dict)
    uncovered: list[_UncoveredCandidate] = field(default_factory=list)
    path_rules: dict[tuple[PathRuleKind, str], PathRule] = field(default_factory=dict)
    """Path rules already validated (many frontends share one)."""
    backend_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    """The table of each backend, by cluster and backend id."""

    # ------------------------------------------------------------------ listeners

    def check_address_free(self, table: str, address: str) -> None:
        """A listener of ``[[listeners]]`` must have an address of its own."""
        previous = self.listeners.get(address)
        if previous is not None:
            raise self.findings.error(
                table, "address", f"{address} is already the address of {previous.describe()}"
            )

    def declare_listener(self, listener: Listener) -> None:
        """A listener of ``[[listeners]]`` (its address checked with
        :meth:`check_address_free`), with the certificate it declares."""
        address = listener.model.address
        self.listeners[address] = listener
        if listener.certificate is not None:
            self.add_certificate(listener.table, address, listener.certificate, self.listener_steps)

    def listener_for(self, table: str, address: str, protocol: ListenerType) -> Listener:
        """The listener at ``address``; sōzu creates one with default options (``protocol``)
        for a frontend on an address no listener declares."""
        listener = self.listeners.get(address)
        if listener is not None:
            return listener
        fields: dict[str, object] = {key: getattr(self.config, key) for key in LISTENER_TIMEOUTS}
        fields["address"] = address
        model = LISTENER_MODELS[protocol].model_validate(fields, strict=True)
        listener = Listener(protocol, table, model, implicit=True)
        self.listeners[address] = listener
        article = "a" if protocol is ListenerType.TCP else "an"
        self.findings.warn(
            table,
            "address",
            f"no listener is declared at {address}: {article} {protocol.value} listener "
            "with default options was created",
        )
        return listener

    def http_listener_for(
        self, table: str, address: str, certificate: LoadedCertificate | None
    ) -> bool:
        """The listener of an http cluster's frontend (created when none is declared, HTTPS
        when the frontend has a certificate); returns whether it is an HTTPS one."""
        implicit = ListenerType.HTTPS if certificate is not None else ListenerType.HTTP
        listener = self.listener_for(table, address, implicit)
        if listener.protocol is ListenerType.TCP:
            raise self.findings.error(
                table,
                "address",
                f"the listener at {address} is {listener.describe()}; "
                "an http cluster's frontends need an http or https listener",
            )
        https = listener.protocol is ListenerType.HTTPS
        if certificate is not None and not https:
            raise self.findings.error(
                table,
                "certificate",
                f"a frontend with a certificate needs an https listener; the listener at "
                f"{address} is {listener.describe()}",
            )
        return https

    def tcp_listener_for(self, table: str, address: str) -> Listener:
        """The listener of a tcp cluster's frontend (created when none is declared)."""
        listener = self.listener_for(table, address, ListenerType.TCP)
        if listener.protocol is not ListenerType.TCP:
            raise self.findings.error(
                table,
                "address",
                f"the listener at {address} is {listener.describe()}; "
                "a tcp cluster's frontends need a tcp listener",
            )
        return listener

    def tcp_proxy_protocol(
        self, cluster_table: str, expectations: dict[bool, str], *, send_proxy: bool
    ) -> ProxyProtocolConfig | None:
        """The PROXY protocol setting of a tcp cluster, from ``send_proxy`` and whether the
        listeners of its frontends expect a PROXY header (``expectations``: the first
        frontend table of each answer) — they must agree."""
        if len(expectations) > 1:
            raise self.findings.error(
                f"{cluster_table}.frontends",
                "address",
                "the frontends of a tcp cluster must all be on listeners that agree on "
                f"expect_proxy ([{expectations[True]}] expects a PROXY header, "
                f"[{expectations[False]}] does not)",
            )
        expect = next(iter(expectations), False)
        if send_proxy:
            return ProxyProtocolConfig.RELAY_HEADER if expect else ProxyProtocolConfig.SEND_HEADER
        return ProxyProtocolConfig.EXPECT_HEADER if expect else None

    def claim_backend_id(self, table: str, cluster_id: str, backend_id: str) -> None:
        """Two backends of a cluster cannot share a ``backend_id`` (sōzu would let the second
        replace the first)."""
        first = self.backend_ids.setdefault((cluster_id, backend_id), table)
        if first is not table:
            raise self.findings.error(
                table, "backend_id", f"backend id {backend_id!r} is already used by [{first}]"
            )

    # ------------------------------------------------------------------ certificates

    def add_certificate(
        self, table: str, address: str, certificate: LoadedCertificate, steps: list[Step]
    ) -> None:
        """Queue ``add_certificate`` on ``steps`` unless this certificate is already on that
        listener (one request per fingerprint and listener)."""
        versions = tuple(certificate.request_body.versions)
        added = self.certificates_added.get((address, certificate.fingerprint))
        if added is not None:
            if added != versions:
                self.findings.warn(
                    table,
                    "tls_versions",
                    f"certificate {certificate.source} is already on the listener at {address} "
                    "with other tls_versions; the first declaration is kept",
                )
            return
        self.certificates_added[(address, certificate.fingerprint)] = versions
        self.names_at.setdefault(address, set()).update(certificate.names)
        steps.append(
            (table, rq.AddCertificate(address=address, certificate=certificate.request_body))
        )

    def expect_coverage(self, table: str, address: str, hostname: str) -> None:
        """An HTTPS frontend: some certificate added to its listener (the listener's own, or
        a frontend's on that address) must serve its hostname."""
        self.uncovered.append(_UncoveredCandidate(table, address, hostname))

    def _check_coverage(self) -> None:
        """Every HTTPS hostname covered by a certificate of its listener: an error when the
        file is checked (``config check``, ``sozu-apply``), a warning when the daemon loads
        it (a certificate can be added at runtime)."""
        for candidate in self.uncovered:
            hostname = candidate.hostname
            if parse_hostname_rule(hostname).kind in (HostKind.REGEX, HostKind.ANY):
                continue  # a regex or catch-all rule: which names it serves cannot be checked
            names = self.names_at.get(candidate.address, set())
            if names_cover(names, hostname):
                continue
            listener = self.listeners[candidate.address].describe()
            if names:
                listed = sorted(names)
                more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
                served = f"the certificates there cover {', '.join(listed[:10])}{more}"
            else:
                served = "it has no certificate"
            reason = (
                f"no certificate on {listener} ({candidate.address}) covers {hostname!r}: "
                f"{served}; add a certificate that covers it (clients would refuse the "
                "connection)"
            )
            if self.findings.collect:  # a check: the file must be complete
                self.findings.record(self.findings.error(candidate.table, "hostname", reason))
            else:  # the daemon starts: a certificate can still be added at runtime
                self.findings.warn(candidate.table, "hostname", reason)

    # ------------------------------------------------------------------ the state

    def build_state(self) -> ConfigState:
        """Apply the queued requests to an empty state: listeners (HTTP, HTTPS, then TCP),
        their certificates, the clusters' requests, then the activations."""
        ordered = [
            listener
            for protocol in (ListenerType.HTTP, ListenerType.HTTPS, ListenerType.TCP)
            for listener in self.listeners.values()
            if listener.protocol is protocol
        ]
        head: list[Step] = [(listener.table, _add_listener(listener.model)) for listener in ordered]
        head.extend(self.listener_steps)
        tail: list[Step] = []
        if self.config.activate_listeners:
            tail = [
                (
                    listener.table,
                    rq.ActivateListener(address=listener.model.address, proxy=listener.protocol),
                )
                for listener in ordered
            ]
        state = ConfigState()
        steps = [*head, *self.steps, *tail]
        apply = state.apply
        for position, (table, request) in enumerate(steps):
            try:
                apply(request)
            except StateError as error:
                reason = f"refused by the routing state: {error.message}"
                first = _first_declaration(steps[:position], request)
                if first is not None:
                    reason += f" (declared first in [{first}])"
                self.findings.record(self.findings.error(table, None, reason))
        self._check_coverage()
        return state


def _add_listener(model: ListenerModel) -> rq.StateRequest:
    if isinstance(model, HttpsListenerConfig):
        return rq.AddHttpsListener(listener=model)
    if isinstance(model, HttpListenerConfig):
        return rq.AddHttpListener(listener=model)
    return rq.AddTcpListener(listener=model)


def _first_declaration(earlier: list[Step], request: rq.StateRequest) -> str | None:
    """The table of the earlier frontend that makes ``request`` a duplicate, if any."""
    if isinstance(request, rq.AddHttpFrontend | rq.AddHttpsFrontend):
        key = request.frontend.key
        for table, other in earlier:
            if (
                isinstance(other, rq.AddHttpFrontend | rq.AddHttpsFrontend)
                and other.frontend.key == key
            ):
                return table
    elif isinstance(request, rq.AddTcpFrontend):
        for table, other in earlier:
            if (
                isinstance(other, rq.AddTcpFrontend)
                and other.frontend.address == request.frontend.address
            ):
                return table
    return None


# --------------------------------------------------------------------------- keys out of place


def _keys(model: type[object]) -> frozenset[str]:
    return frozenset(getattr(model, "model_fields", {}))


@cache
def listener_hints(protocol: ListenerType) -> dict[str, str]:
    """What to say of a key of another kind of table found in a listener of ``protocol``."""
    https_only = _keys(HttpsListenerFile) - _keys(HttpListenerFile)
    hints = dict.fromkeys(
        https_only, f"is only valid on https listeners, this one is {protocol.value}"
    )
    if protocol is ListenerType.TCP:
        hints.update(
            dict.fromkeys(
                _keys(HttpsListenerFile) - _keys(TcpListenerFile),
                "is only valid on http and https listeners, this one is tcp",
            )
        )
    hints.update(
        dict.fromkeys(
            _keys(ClusterFile) - _keys(HttpsListenerFile),
            "is a cluster key, not a listener key (put it in [clusters.<id>])",
        )
    )
    for key in ("max_rx_datagram_size", "max_flows"):
        hints[key] = "is a UDP listener key; UDP listeners are not supported"
    return hints


@cache
def cluster_hints() -> dict[str, str]:
    """What to say of a frontend's or a listener's key found in a cluster table."""
    hints = dict.fromkeys(
        _keys(HttpFrontendFile) - _keys(ClusterFile),
        "is a frontend key: set it on each entry of frontends",
    )
    hints["sticky_name"] = "is a listener key (the sticky cookie's name is per listener)"
    hints.update(
        dict.fromkeys(
            _keys(HealthCheckFile) - _keys(ClusterFile),
            "is a health check key: set it in the cluster's health_check table "
            "([clusters.<id>.health_check])",
        )
    )
    return hints


@cache
def http_frontend_hints() -> dict[str, str]:
    return dict.fromkeys(
        _keys(ClusterFile) - _keys(HttpFrontendFile),
        "is a cluster key, not a frontend key (set it in the cluster table)",
    )


@cache
def tcp_frontend_hints() -> dict[str, str]:
    return dict.fromkeys(
        _keys(HttpFrontendFile) - _keys(TcpFrontendFile),
        "is not valid on a frontend of a tcp cluster (TCP frontends have only address and tags)",
    )


METRICS_HINTS = {
    "disable_cluster_metrics": "disable_cluster_metrics is a top-level key, not a [metrics] key"
}


# --------------------------------------------------------------------------- [admin]

MAX_TOKEN_BYTES = 4_096  # a bearer token is a line, not a document


def read_admin(findings: Findings, files: NamedFiles, value: object) -> AdminSettings:
    """``[admin]``: its keys, the token read from ``token_file`` (surrounding whitespace
    stripped), and the rule that an address off the loopback interface needs a token."""
    if type(value) is not dict:
        raise findings.error(None, "admin", f"expected a table, found {show(value)}")
    table = validate_table(findings, AdminFile, value, "admin")
    token = None
    if table.token_file is not None:
        token = _read_token(findings, files, table.token_file)
    elif not is_loopback(table.address):
        raise findings.error(
            "admin",
            "address",
            f"{table.address} is not a loopback address: set token_file (a file holding the "
            "bearer token every request must carry), or listen on 127.0.0.1 or [::1]",
        )
    try:
        return AdminSettings(address=table.address, token=token)
    except ValidationError as error:
        reason = validation_reason(error.errors(include_url=False)[0])
        raise findings.error("admin", None, reason) from None


def _read_token(findings: Findings, files: NamedFiles, raw: str) -> str:
    path = files.config_path(raw)
    try:
        data = read_regular(path, MAX_TOKEN_BYTES)
        mode = os.stat(path).st_mode
    except OSError as error:
        raise findings.error(
            "admin", "token_file", f"cannot read {path}: {error.strerror or error}"
        ) from None
    token = data.decode("ascii", errors="replace").strip()  # U+FFFD is refused below
    if not token:
        raise findings.error("admin", "token_file", f"{path} is empty: it must hold the token")
    if not all("!" <= char <= "~" for char in token):
        raise findings.error(
            "admin",
            "token_file",
            f"{path} must hold one token of visible ASCII characters (no spaces inside)",
        )
    if stat.S_IMODE(mode) & 0o077:
        findings.warn(
            "admin",
            "token_file",
            f"{path} can be read by other users (mode {stat.S_IMODE(mode):04o}); chmod 600 it",
        )
    return token
