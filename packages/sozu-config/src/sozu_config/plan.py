"""Plans: the requests that make a live proxy match a desired state, explained and applied.

A :class:`Plan` holds the ordered requests of ``live.diff(desired)`` (see
:mod:`sozu_config.diff` for the order) and, for display, one :class:`Change` per line: ``+`` for
an object added, with its settings that are not the defaults, ``-`` for one removed, ``~`` for
one changed, with the fields that change computed by deepdiff between the live and the desired
object. A frontend that the diff removes
and adds back (its key stays, something else changed) is one ``~`` line standing for both
requests; every other line stands for exactly one request, so the lines, read in order, are the
requests in the order they run.

Planning is pure: this module computes values and imports no client. :meth:`Plan.batch` is
the plan as one ``batch`` guarded by ``expected_version`` (the daemon applies all of it or
none, and refuses it when its state moved since the plan was made); :meth:`Plan.apply` hands
it to a client given by the caller and reads the answer. Reading a live state and keeping a
connection with a plan live in :mod:`sozu_config.live`.

Certificates are shown by names and short fingerprints; private keys never appear in
descriptions, fields or :meth:`Plan.to_json`. :meth:`Plan.to_saved` is the other way: the plan
whole, keys included, to be applied later exactly as it was reviewed (:func:`saved_plan` reads
it back).

    from sozu_config import ConfigState, load_config, plan_states

    plan = plan_states(ConfigState(), load_config("config.toml").state)
    for change in plan.changes:
        print(change.op, change.description)
    print(plan.summary())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, assert_never

from pydantic import BaseModel, ValidationError

from . import requests as rq
from .models import HttpFrontend
from .responses import (
    BatchResult,
    BatchResults,
    ErrorKind,
    Response,
    ResponseStatus,
    StateSnapshot,
)
from .state import ConfigState

__all__ = [
    "PLAN_GROUPS",
    "Change",
    "ChangeOp",
    "Plan",
    "PlanError",
    "Sender",
    "field_changes",
    "plan_states",
    "saved_plan",
]

ChangeOp = Literal["+", "-", "~"]
"""``+`` added, ``-`` removed, ``~`` changed."""

PLAN_GROUPS = (
    "listeners",
    "clusters",
    "certificates",
    "frontends",
    "backends",
    "activations",
    "removals",
)
"""The groups a plan is shown in, in the order the diff emits them (:attr:`Change.group`)."""

SHORT_FINGERPRINT = 16
"""Hex digits of a fingerprint shown in plans (the requests' ``describe()`` use as many)."""

# Fields of a certificate summary that are not shown as changed fields: the address and the
# fingerprint are the key (a new fingerprint is shown separately, shortened), the PEM text is
# long and says nothing a reader can compare.
_CERTIFICATE_HIDDEN = frozenset({"address", "fingerprint", "certificate", "certificate_chain"})


class Sender(Protocol):
    """What :meth:`Plan.apply` needs of a client: sending a request and returning the final
    answer (:class:`~sozu_config.client.CommandClient` is one)."""

    def send(self, request: Any) -> Response: ...


@dataclass
class Change:
    """One displayed line of a plan.

    Invariants: ``requests`` is not empty and its requests are consecutive in
    :attr:`Plan.requests`; ``fields`` is empty unless ``op`` is ``~``, ``attributes`` unless
    it is ``+``; no value in ``fields``, ``attributes`` or ``description`` holds key material.
    """

    op: ChangeOp
    kind: str
    """What the line is about: ``listener``, ``cluster``, ``certificate``, ``frontend`` or
    ``backend`` (an activation is a change of its listener)."""
    key: str
    """What identifies the object within its kind (``http 127.0.0.1:8080``, ``api``,
    ``api/api-0``, ``https example.com/ on 127.0.0.1:8443``, ``127.0.0.1:8443 ab12…``)."""
    description: str
    """One line for humans: the request's ``describe()``; a frontend removed and added back is
    ``<protocol>_frontend … (removed and added back)``; a certificate removal names the
    certificate's names."""
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """For ``~``: field path (``load_balancing``, ``tags.env``, ``headers[0].value``) →
    (live value, desired value), JSON values, ``None`` for absent, sorted by path."""
    requests: list[rq.StateRequest] = field(default_factory=list)
    """The request(s) this line stands for."""
    attributes: dict[str, Any] = field(default_factory=dict)
    """For ``+``: field path → value of every setting of the added object that is not its
    default and not already in ``description`` (``load_balancing``, ``tags.team``,
    ``health_check``), JSON values, sorted by path."""

    @property
    def group(self) -> str:
        """The group of :data:`PLAN_GROUPS` the line is shown in (from its first request)."""
        kind = self.requests[0].type
        if self.op == "-" or kind == "deactivate_listener":
            return "removals"
        if kind == "activate_listener":
            return "activations"
        return self.kind + "s"

    def to_json(self, indexes: list[int]) -> dict[str, Any]:
        """The line as JSON data; ``indexes`` are the positions of its requests in the plan."""
        return {
            "op": self.op,
            "kind": self.kind,
            "key": self.key,
            "group": self.group,
            "description": self.description,
            "fields": {path: [old, new] for path, (old, new) in self.fields.items()},
            "attributes": dict(self.attributes),
            "requests": indexes,
        }


class PlanError(Exception):
    """A plan that could not be made or applied; nothing was applied.

    ``response`` is the daemon's final answer when there is one; ``results`` its per-request
    outcome (which request failed, which were undone or not reached) when the daemon gave one;
    ``kind`` why it failed (:class:`~sozu_config.responses.ErrorKind`, when known) and
    ``index`` the position in the plan's requests of the one at fault (when one was).
    ``version_mismatch`` is true when the live state changed since the plan was made (plan
    again and retry).
    """

    def __init__(
        self,
        message: str,
        *,
        response: Response | None = None,
        results: list[BatchResult] | None = None,
        kind: ErrorKind | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.response = response
        self.results = list(results or [])
        self.kind = kind
        self.index = index

    @property
    def version_mismatch(self) -> bool:
        return self.kind == ErrorKind.VERSION_MISMATCH


@dataclass
class Plan:
    """What it takes to turn ``live`` into ``desired``.

    ``version`` is the live state's version the plan was made against (what ``query_state``
    reported); :meth:`apply` sends it as the batch's ``expected_version``. ``requests`` is
    ``live.diff(desired)``; ``changes`` explains them line by line, in the same order. A plan
    is a value: it holds no connection (:func:`~sozu_config.live.load_plan` returns a
    :class:`~sozu_config.live.LivePlan`, which does).
    """

    desired: ConfigState
    live: ConfigState
    version: int
    requests: list[rq.StateRequest]
    changes: list[Change]

    @property
    def empty(self) -> bool:
        """True when the live state already matches the desired one."""
        return not self.requests

    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to remove), counted in objects.

        Every ``+`` and ``-`` line counts once; a ``~`` line counts once, except the
        activation of a listener the plan adds and the deactivation of a listener it removes
        (they are part of that addition or removal).
        """
        # (listener key, request type) of the activations that are part of an addition and
        # the deactivations that are part of a removal
        born_or_dying = {
            (c.key, "activate_listener" if c.op == "+" else "deactivate_listener")
            for c in self.changes
            if c.kind == "listener" and c.op != "~"
        }
        add = change = remove = 0
        for line in self.changes:
            if line.op == "+":
                add += 1
            elif line.op == "-":
                remove += 1
            elif (line.key, line.requests[0].type) not in born_or_dying:
                change += 1
        return add, change, remove

    def summary(self) -> str:
        """``"3 to add, 1 to change, 2 to remove"`` (see :meth:`counts`)."""
        add, change, remove = self.counts()
        return f"{add} to add, {change} to change, {remove} to remove"

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON data: ``version``, ``requests`` (in order, private keys replaced by
        ``null``), ``descriptions`` (each request's ``describe()``), ``changes`` (each with the
        indexes of its requests) and ``summary``."""
        position = {id(request): index for index, request in enumerate(self.requests)}
        add, change, remove = self.counts()
        return {
            "version": self.version,
            "requests": [_redacted(request) for request in self.requests],
            "descriptions": [request.describe() for request in self.requests],
            "changes": [
                line.to_json([position[id(request)] for request in line.requests])
                for line in self.changes
            ],
            "summary": {"add": add, "change": change, "remove": remove, "text": self.summary()},
        }

    def to_saved(self) -> dict[str, Any]:
        """The plan as JSON data to apply later (:func:`saved_plan`): :meth:`to_json`, but
        with the ``requests`` whole — private keys included: store it as carefully as the
        configuration's keys — and the ``live`` and ``desired`` states (without keys)."""
        data = self.to_json()
        data["requests"] = [request.model_dump(mode="json") for request in self.requests]
        data["live"] = self.live.snapshot().model_dump(mode="json")
        data["desired"] = self.desired.snapshot().model_dump(mode="json")
        return data

    def batch(self) -> rq.Batch:
        """The plan as one batch guarded by the version it was made against."""
        return rq.Batch(requests=self.requests, expected_version=self.version)

    def apply(self, client: Sender | None = None) -> Response:
        """Send :meth:`batch` with ``client`` and return the daemon's final answer (its
        content: the per-request :class:`~sozu_config.responses.BatchResults`).

        An empty plan sends nothing and returns an ``ok`` answer saying "nothing to do".
        Raises :class:`PlanError` when the daemon refuses the batch (then nothing was applied;
        ``kind`` says why, ``version_mismatch`` when the live state moved) or when there is no
        client, and the client's errors (:class:`~sozu_config.client.DaemonUnreachable`,
        :class:`~sozu_config.client.CommandTimeout`) when the daemon cannot be reached.
        """
        if self.empty:
            return Response(id="", status=ResponseStatus.OK, message="nothing to do")
        if client is None:
            raise PlanError(
                "this plan has no connection to a daemon: pass a CommandClient to apply(), "
                "or make the plan with load_plan()"
            )
        response = client.send(self.batch())
        if response.ok:
            return response
        content = response.content
        raise PlanError(
            response.message,
            response=response,
            results=list(content.results) if isinstance(content, BatchResults) else [],
            kind=response.kind,
            index=response.index,
        )


def _redacted(request: rq.StateRequest) -> dict[str, Any]:
    """The request as JSON data without private keys."""
    data: dict[str, Any] = request.model_dump(mode="json")
    for name in ("certificate", "new_certificate"):
        certificate = data.get(name)
        if isinstance(certificate, dict) and "key" in certificate:
            certificate["key"] = None
    return data


# --------------------------------------------------------------------------- field changes


def _path(parts: list[Any]) -> str:
    """``['headers', 0, 'value']`` → ``headers[0].value``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _value(value: Any) -> Any:
    from deepdiff.helper import NotPresent

    return None if isinstance(value, NotPresent) else value


def field_changes(
    live: BaseModel, desired: BaseModel, *, hidden: frozenset[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """Field path → (live, desired) for every leaf that differs between two models (compared
    as JSON data, fields in ``hidden`` left out), sorted by path."""
    # deepdiff is imported here, not with the module: it doubles the import time of the
    # package, and the daemon's processes import the package without ever making a plan.
    from deepdiff import DeepDiff

    old = live.model_dump(mode="json", exclude=set(hidden))
    new = desired.model_dump(mode="json", exclude=set(hidden))
    found: dict[str, tuple[Any, Any]] = {}
    for levels in DeepDiff(old, new, view="tree").values():
        for level in levels:
            parts: list[Any] = level.path(output_format="list")
            index = next((i for i, part in enumerate(parts) if isinstance(part, int)), None)
            if index is None:
                found[_path(parts)] = (_value(level.t1), _value(level.t2))
            else:
                # A list is shown whole: item-by-item differences of a reordered or grown
                # list (names, TLS versions, header edits) read as noise.
                whole = parts[:index]
                found[_path(whole)] = (_lookup(old, whole), _lookup(new, whole))
    return dict(sorted(found.items()))


def _lookup(data: Any, parts: list[Any]) -> Any:
    for part in parts:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


# --------------------------------------------------------------------------- building a plan


def _short(fingerprint: str) -> str:
    return fingerprint[:SHORT_FINGERPRINT]


def _frontend_key(protocol: str, frontend: HttpFrontend) -> str:
    return f"{protocol} {frontend.describe()}"


def _pair(first: rq.StateRequest, second: rq.StateRequest | None) -> bool:
    """True when ``first`` removes a frontend that ``second`` adds back under the same key."""
    if second is None:
        return False
    if isinstance(first, rq.RemoveHttpFrontend) and isinstance(second, rq.AddHttpFrontend):
        return first.frontend.key == second.frontend.key
    if isinstance(first, rq.RemoveHttpsFrontend) and isinstance(second, rq.AddHttpsFrontend):
        return first.frontend.key == second.frontend.key
    if isinstance(first, rq.RemoveTcpFrontend) and isinstance(second, rq.AddTcpFrontend):
        return first.frontend.address == second.frontend.address
    return False


def _frontend_pair(removal: rq.StateRequest, addition: rq.StateRequest) -> Change:
    requests = [removal, addition]
    if isinstance(removal, rq.RemoveTcpFrontend) and isinstance(addition, rq.AddTcpFrontend):
        old_tcp, new_tcp = removal.frontend, addition.frontend
        return Change(
            "~",
            "frontend",
            f"tcp {new_tcp.address}",
            f"tcp_frontend {new_tcp.address} -> {new_tcp.cluster_id} (removed and added back)",
            field_changes(old_tcp, new_tcp),
            requests,
        )
    assert isinstance(removal, (rq.RemoveHttpFrontend, rq.RemoveHttpsFrontend))
    assert isinstance(addition, (rq.AddHttpFrontend, rq.AddHttpsFrontend))
    protocol = "https" if isinstance(addition, rq.AddHttpsFrontend) else "http"
    old, new = removal.frontend, addition.frontend
    return Change(
        "~",
        "frontend",
        _frontend_key(protocol, new),
        f"{protocol}_frontend {new.describe()} -> {new.cluster_id or 'deny'} "
        "(removed and added back)",
        field_changes(old, new),
        requests,
    )


def _listener_of(state: ConfigState, address: str) -> BaseModel | None:
    return state.listeners().get(address)


# Complexity: one exhaustive match over the state request types (mypy checks each is here).
def _change(request: rq.StateRequest, live: ConfigState, desired: ConfigState) -> Change:  # noqa: C901, PLR0911, PLR0912
    """The line of a request that stands alone."""
    describe = request.describe()
    match request:
        case rq.AddHttpListener() | rq.AddHttpsListener() | rq.AddTcpListener():
            proxy = request.type.split("_")[1]
            return Change(
                "+", "listener", f"{proxy} {request.listener.address}", describe, {}, [request]
            )
        case rq.UpdateHttpListener() | rq.UpdateHttpsListener() | rq.UpdateTcpListener():
            proxy = request.type.split("_")[1]
            old_listener = _listener_of(live, request.address)
            new_listener = _listener_of(desired, request.address)
            fields = (
                field_changes(old_listener, new_listener, hidden=frozenset({"active"}))
                if old_listener is not None and new_listener is not None
                else {}
            )
            return Change(
                "~", "listener", f"{proxy} {request.address}", describe, fields, [request]
            )
        case rq.ActivateListener() | rq.DeactivateListener():
            active = isinstance(request, rq.ActivateListener)
            key = f"{request.proxy.value} {request.address}"
            return Change(
                "~", "listener", key, describe, {"active": (not active, active)}, [request]
            )
        case rq.RemoveListener():
            key = f"{request.proxy.value} {request.address}"
            return Change("-", "listener", key, describe, {}, [request])
        case rq.AddCluster():
            cluster_id = request.cluster.cluster_id
            old_cluster = live.clusters.get(cluster_id)
            if old_cluster is None:
                return Change("+", "cluster", cluster_id, describe, {}, [request])
            fields = field_changes(old_cluster, request.cluster)
            return Change("~", "cluster", cluster_id, describe, fields, [request])
        case rq.RemoveCluster():
            return Change("-", "cluster", request.cluster_id, describe, {}, [request])
        case rq.SetHealthCheck() | rq.RemoveHealthCheck():
            old = live.clusters.get(request.cluster_id)
            before = None if old is None else old.health_check
            after = request.health_check if isinstance(request, rq.SetHealthCheck) else None
            fields = {"health_check": tuple(_json(check) for check in (before, after))}
            return Change("~", "cluster", request.cluster_id, describe, fields, [request])
        case rq.AddCertificate():
            fingerprint = _added_fingerprint(request)
            key = f"{request.address} {_short(fingerprint)}"
            return Change("+", "certificate", key, describe, {}, [request])
        case rq.ReplaceCertificate():
            return _replacement(request, live, desired)
        case rq.RemoveCertificate():
            old_entry = live.certificates.get(request.address, {}).get(request.fingerprint)
            names = f" {','.join(old_entry.names)}" if old_entry is not None else ""
            short = _short(request.fingerprint)
            return Change(
                "-",
                "certificate",
                f"{request.address} {short}",
                f"remove_certificate {request.address}{names} {short}",
                {},
                [request],
            )
        case rq.AddHttpFrontend() | rq.AddHttpsFrontend():
            protocol = "https" if isinstance(request, rq.AddHttpsFrontend) else "http"
            key = _frontend_key(protocol, request.frontend)
            return Change("+", "frontend", key, describe, {}, [request])
        case rq.RemoveHttpFrontend() | rq.RemoveHttpsFrontend():
            protocol = "https" if isinstance(request, rq.RemoveHttpsFrontend) else "http"
            key = _frontend_key(protocol, request.frontend)
            return Change("-", "frontend", key, describe, {}, [request])
        case rq.AddTcpFrontend():
            key = f"tcp {request.frontend.address}"
            return Change("+", "frontend", key, describe, {}, [request])
        case rq.RemoveTcpFrontend():
            key = f"tcp {request.frontend.address}"
            return Change("-", "frontend", key, describe, {}, [request])
        case rq.AddBackend():
            backend = request.backend
            key = f"{backend.cluster_id}/{backend.backend_id}"
            old_backend = live.backends.get(backend.cluster_id, {}).get(backend.backend_id)
            if old_backend is None:
                return Change("+", "backend", key, describe, {}, [request])
            return Change(
                "~", "backend", key, describe, field_changes(old_backend, backend), [request]
            )
        case rq.RemoveBackend():
            key = f"{request.cluster_id}/{request.backend_id}"
            return Change("-", "backend", key, describe, {}, [request])
        case _:
            assert_never(request)


# The object an addition adds (the request's field of that name), and its fields that the
# request's description already shows or that are key material.
_ADDED: dict[str, frozenset[str]] = {
    "listener": frozenset({"address", "active"}),
    "cluster": frozenset({"cluster_id"}),
    "certificate": frozenset({"certificate", "certificate_chain", "key", "names"}),
    "frontend": frozenset({"address", "hostname", "path", "cluster_id"}),
    "backend": frozenset({"cluster_id", "backend_id", "address"}),
}


def _attributes(request: rq.StateRequest) -> dict[str, Any]:
    """Field path → value of the settings of what ``request`` adds that are not defaults."""
    found = [
        (added, shown)
        for name, shown in _ADDED.items()
        if isinstance(added := getattr(request, name, None), BaseModel)
    ]
    if not found:
        return {}
    added, shown = found[0]
    model = type(added)
    data = added.model_dump(mode="json")
    required = {key: data[key] for key, info in model.model_fields.items() if info.is_required()}
    try:
        default = model.model_validate(required)
    except ValidationError:  # defaults alone do not make a valid object: show nothing extra
        return {}
    return {path: new for path, (_, new) in field_changes(default, added, hidden=shown).items()}


def saved_plan(data: Any) -> Plan:
    """The plan of :meth:`Plan.to_saved` data, as it was: its version, states, requests and
    lines. Its states hold no private keys (its requests do). Raises :class:`PlanError` when
    the data is not a saved plan."""
    try:
        version = int(data["version"])
        live, desired = (
            ConfigState.from_snapshot(StateSnapshot.model_validate(data[name]), version=version)
            for name in ("live", "desired")
        )
        requests = [rq.STATE_REQUEST_ADAPTER.validate_python(item) for item in data["requests"]]
        changes = [_saved_change(item, requests) for item in data["changes"]]
    except (KeyError, TypeError, ValueError, IndexError) as error:  # ValidationError too
        raise PlanError(f"not a saved plan: {_first_line(error)}") from None
    if [request for line in changes for request in line.requests] != requests:
        raise PlanError("not a saved plan: its lines do not stand for its requests in order")
    return Plan(desired=desired, live=live, version=version, requests=requests, changes=changes)


def _saved_change(data: dict[str, Any], requests: list[rq.StateRequest]) -> Change:
    op = data["op"]
    if op not in ("+", "-", "~") or not data["requests"]:
        raise ValueError(f"a line with op {op!r} and requests {data['requests']!r}")
    return Change(
        op,
        str(data["kind"]),
        str(data["key"]),
        str(data["description"]),
        {path: (old, new) for path, (old, new) in data["fields"].items()},
        [requests[int(index)] for index in data["requests"]],
        dict(data["attributes"]),
    )


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _json(model: BaseModel | None) -> Any:
    """A field's value in a plan: JSON data, as :func:`field_changes` gives them."""
    return None if model is None else model.model_dump(mode="json")


def _added_fingerprint(request: rq.AddCertificate) -> str:
    from .certificates import CertificateError, fingerprint_of

    try:
        return fingerprint_of(request.certificate.certificate)
    except CertificateError:
        # not a certificate at all: the daemon will refuse it; show what can be shown
        return "?" * SHORT_FINGERPRINT


def _replacement(request: rq.ReplaceCertificate, live: ConfigState, desired: ConfigState) -> Change:
    from .certificates import CertificateError, fingerprint_of

    old_fingerprint = request.old_fingerprint
    try:
        new_fingerprint = fingerprint_of(request.new_certificate.certificate)
    except CertificateError:
        new_fingerprint = "?" * SHORT_FINGERPRINT
    old_entry = live.certificates.get(request.address, {}).get(old_fingerprint)
    new_entry = desired.certificates.get(request.address, {}).get(new_fingerprint)
    fields: dict[str, tuple[Any, Any]] = {}
    if old_fingerprint != new_fingerprint:
        fields["fingerprint"] = (_short(old_fingerprint), _short(new_fingerprint))
    if old_entry is not None and new_entry is not None:
        fields.update(field_changes(old_entry, new_entry, hidden=_CERTIFICATE_HIDDEN))
    return Change(
        "~",
        "certificate",
        f"{request.address} {_short(old_fingerprint)}",
        request.describe(),
        dict(sorted(fields.items())),
        [request],
    )


def plan_states(live: ConfigState, desired: ConfigState, version: int | None = None) -> Plan:
    """The plan that turns ``live`` into ``desired``.

    ``version`` is the live state's version as the daemon reported it (default:
    ``live.version``); :meth:`Plan.apply` refuses to apply anything if the daemon's state has
    another version by then. ``desired`` must hold the private keys of the certificates to add
    (a state from :func:`~sozu_config.config.load_config` does; one read back from
    ``query_state`` does not).
    """
    requests = live.diff(desired)
    changes: list[Change] = []
    index = 0
    while index < len(requests):
        request = requests[index]
        following = requests[index + 1] if index + 1 < len(requests) else None
        if _pair(request, following):
            assert following is not None
            changes.append(_frontend_pair(request, following))
            index += 2
            continue
        line = _change(request, live, desired)
        if line.op == "+":
            line.attributes = _attributes(request)
        changes.append(line)
        index += 1
    return Plan(
        desired=desired,
        live=live,
        version=live.version if version is None else version,
        requests=requests,
        changes=changes,
    )
