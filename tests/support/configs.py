"""Configuration files for end-to-end tests, built from parts instead of written by hand.

A test names what it needs and :func:`document` writes the TOML text the daemon reads::

    document(
        http_listener(port),
        cluster(
            "app",
            frontends=[frontend(port, hostname="app.example")],
            backends=[backend(one.address), backend(two.address, backend_id="two")],
        ),
        worker_count=2,
    )

Addresses are given as ``"host:port"`` or, for the usual ``127.0.0.1``, as a port number.
Settings are keyword arguments named as the file names them (``sticky_name="LB"``,
``hsts={"enabled": True}``); values are written as TOML: strings quoted and escaped, paths as
strings, mappings as inline tables, lists and tuples as arrays. A hand-written fragment may be
passed to :func:`document` as a plain string where a test is about the exact text of a file.

The usual shapes have shortcuts: :func:`http_cluster` (one hostname on one listener),
:func:`tcp_cluster`, and :func:`single_http_cluster` (a whole file: one listener, one cluster).
Tests whose variables are named ``backend`` or ``cluster`` import the module
(``from support import configs``) and write ``configs.backend(...)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

__all__ = [
    "LOOPBACK",
    "ClusterTable",
    "ListenerTable",
    "address",
    "backend",
    "cluster",
    "document",
    "frontend",
    "http_cluster",
    "http_listener",
    "https_listener",
    "single_http_cluster",
    "tcp_cluster",
    "tcp_listener",
    "toml_key",
    "toml_value",
]

LOOPBACK = "127.0.0.1"
"""Where every end-to-end test listens and every test backend runs."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


# --------------------------------------------------------------------------- TOML values


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    """``key`` bare when TOML allows it, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def toml_value(value: Any) -> str:
    """``value`` written as TOML (on one line: mappings become inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | PurePath):
        return _string(str(value))
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r} ({type(value).__name__})")


def _pairs(settings: Mapping[str, Any]) -> list[str]:
    return [f"{toml_key(key)} = {toml_value(value)}" for key, value in settings.items()]


# --------------------------------------------------------------------------- parts


def address(where: int | str) -> str:
    """``"127.0.0.1:<port>"`` for a port number; an address string as it is."""
    return f"{LOOPBACK}:{where}" if isinstance(where, int) else where


@dataclass(frozen=True)
class ListenerTable:
    """One ``[[listeners]]`` table."""

    protocol: str
    address: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def toml(self) -> str:
        head = ["[[listeners]]", f"protocol = {_string(self.protocol)}"]
        return "\n".join([*head, f"address = {_string(self.address)}", *_pairs(self.settings)])


@dataclass(frozen=True)
class ClusterTable:
    """One ``[clusters.<id>]`` table with its frontends and backends (inline tables)."""

    cluster_id: str
    protocol: str
    frontends: tuple[Mapping[str, Any], ...]
    backends: tuple[Mapping[str, Any], ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def toml(self) -> str:
        lines = [f"[clusters.{toml_key(self.cluster_id)}]", f"protocol = {_string(self.protocol)}"]
        lines += _pairs(self.settings)
        lines.append(_array("frontends", self.frontends))
        lines.append(_array("backends", self.backends))
        return "\n".join(lines)


def _array(key: str, tables: tuple[Mapping[str, Any], ...]) -> str:
    """An array of inline tables: on one line when it has one, else one table a line."""
    if len(tables) <= 1:
        return f"{key} = {toml_value(list(tables))}"
    items = "".join(f"  {toml_value(table)},\n" for table in tables)
    return f"{key} = [\n{items}]"


def http_listener(where: int | str, **settings: Any) -> ListenerTable:
    return ListenerTable("http", address(where), settings)


def https_listener(where: int | str, **settings: Any) -> ListenerTable:
    """An HTTPS listener; ``certificate`` and ``key`` (paths) among the settings give it a
    default certificate."""
    return ListenerTable("https", address(where), settings)


def tcp_listener(where: int | str, **settings: Any) -> ListenerTable:
    return ListenerTable("tcp", address(where), settings)


def frontend(where: int | str, hostname: str | None = None, **settings: Any) -> dict[str, Any]:
    """A frontend on the listener at ``where``: for an HTTP(S) cluster a ``hostname`` (and
    ``path``, ``certificate``… among the settings); for a TCP cluster the address alone."""
    table: dict[str, Any] = {"address": address(where)}
    if hostname is not None:
        table["hostname"] = hostname
    table.update(settings)
    return table


def backend(where: int | str, **settings: Any) -> dict[str, Any]:
    """A backend at ``where`` (``backend_id``, ``weight``, ``sticky_id``… among the settings)."""
    return {"address": address(where), **settings}


def cluster(
    cluster_id: str,
    *,
    protocol: str = "http",
    frontends: Iterable[Mapping[str, Any]] = (),
    backends: Iterable[Mapping[str, Any]] = (),
    **settings: Any,
) -> ClusterTable:
    """Cluster ``cluster_id`` with its ``frontends`` and ``backends`` (see :func:`frontend`
    and :func:`backend`) and its settings (``load_balancing="RANDOM"``…)."""
    return ClusterTable(cluster_id, protocol, tuple(frontends), tuple(backends), settings)


def document(*parts: ListenerTable | ClusterTable | str, **settings: Any) -> str:
    """The configuration file: the top-level ``settings`` (``worker_count=2``…) first, then
    each part in order (a string is taken as a TOML fragment, as it is)."""
    blocks = ["\n".join(_pairs(settings))] if settings else []
    blocks += [part if isinstance(part, str) else part.toml() for part in parts]
    return "\n\n".join(block.strip("\n") for block in blocks) + "\n"


def http_cluster(
    cluster_id: str,
    where: int | str,
    hostname: str,
    backends: Iterable[int | str | Mapping[str, Any]],
    **settings: Any,
) -> ClusterTable:
    """The most common cluster: ``cluster_id`` serving ``hostname`` on the listener at
    ``where`` from ``backends`` (addresses, or tables made by :func:`backend`)."""
    return cluster(
        cluster_id,
        frontends=[frontend(where, hostname=hostname)],
        backends=[b if isinstance(b, Mapping) else backend(b) for b in backends],
        **settings,
    )


def tcp_cluster(
    cluster_id: str,
    where: int | str,
    backends: Iterable[int | str | Mapping[str, Any]],
    **settings: Any,
) -> ClusterTable:
    """TCP cluster ``cluster_id`` behind the TCP listener at ``where``, to ``backends``."""
    return cluster(
        cluster_id,
        protocol="tcp",
        frontends=[frontend(where)],
        backends=[b if isinstance(b, Mapping) else backend(b) for b in backends],
        **settings,
    )


def single_http_cluster(
    where: int | str,
    backends: Iterable[int | str | Mapping[str, Any]],
    *,
    hostname: str = "app.example",
    cluster_id: str = "app",
    **settings: Any,
) -> str:
    """The most common file: one HTTP listener at ``where`` and :func:`http_cluster`
    ``cluster_id`` for ``hostname`` there, with the top-level ``settings``."""
    return document(
        http_listener(where), http_cluster(cluster_id, where, hostname, backends), **settings
    )
