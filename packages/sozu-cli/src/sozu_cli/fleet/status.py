"""What each node of a fleet runs, as its watcher writes it to ``PREFIX/status/NODE`` under a
lease (a node whose watcher dies disappears when the lease expires), and
``sozu-apply --fleet-status etcd://…``, which reads them all."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from ..output import Output, plural
from .etcd import EtcdClient
from .source import FleetSource

__all__ = ["FleetStatus", "NodeStatus", "now", "read_fleet_status", "show_fleet_status"]


def now() -> str:
    """The time, as the statuses write it (UTC, ISO 8601, to the millisecond)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class NodeStatus:
    """One node, as its watcher last wrote it."""

    node: str
    socket: str
    revision: int | None = None
    """The configuration's revision the proxy runs (None: none applied yet)."""
    applied_at: str | None = None
    """When that revision was applied (or found already in place)."""
    error: str | None = None
    """Why the last revision seen was not applied (None when it was)."""
    refused_revision: int | None = None
    """The revision that was not applied, with ``error``."""
    updated_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, node: str, data: bytes) -> NodeStatus:
        try:
            fields: Any = json.loads(data)
            if not isinstance(fields, dict):
                raise ValueError("not an object")
            return cls(
                node=node,
                socket=str(fields.get("socket", "")),
                revision=fields.get("revision"),
                applied_at=fields.get("applied_at"),
                error=fields.get("error"),
                refused_revision=fields.get("refused_revision"),
                updated_at=str(fields.get("updated_at", "")),
            )
        except (ValueError, TypeError) as error:
            return cls(node=node, socket="", error=f"unreadable status: {error}")


@dataclass(frozen=True)
class FleetStatus:
    source: FleetSource
    revision: int
    """The configuration's revision in etcd (0: nothing published)."""
    nodes: tuple[NodeStatus, ...]

    def in_sync(self, node: NodeStatus) -> bool:
        return node.error is None and node.revision == self.revision and self.revision > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.url,
            "revision": self.revision,
            "in_sync": all(self.in_sync(node) for node in self.nodes),
            "nodes": [{**asdict(node), "in_sync": self.in_sync(node)} for node in self.nodes],
        }


async def read_fleet_status(client: EtcdClient, source: FleetSource) -> FleetStatus:
    """The configuration's revision and every node's status, read at one revision."""
    store, documents = await client.range(source.config_key)
    _, files = await client.range(source.files_prefix, prefix=True, revision=store)
    _, statuses = await client.range(source.status_prefix, prefix=True, revision=store)
    revision = max([0, *(kv.mod_revision for kv in (*documents, *files))])
    nodes = tuple(
        NodeStatus.from_json(kv.key.removeprefix(source.status_prefix), kv.value)
        for kv in sorted(statuses, key=lambda kv: kv.key)
    )
    return FleetStatus(source, revision, nodes)


def show_fleet_status(output: Output, status: FleetStatus) -> int:
    """Print the fleet's status; the exit code: 0 every node in sync, 2 one is not."""
    output.json(status.to_json())
    published = f"revision {status.revision}" if status.revision else "nothing published"
    output.heading(f"{status.source.url}: {published}, {plural(len(status.nodes), 'node')}")
    rows = [
        [
            node.node,
            "-" if node.revision is None else str(node.revision),
            "in sync" if status.in_sync(node) else "behind" if node.error is None else "error",
            node.applied_at or "-",
            node.error or "",
        ]
        for node in status.nodes
    ]
    if rows:
        output.table(["NODE", "REVISION", "STATE", "APPLIED AT", "LAST ERROR"], rows)
    return 0 if all(status.in_sync(node) for node in status.nodes) else 2
