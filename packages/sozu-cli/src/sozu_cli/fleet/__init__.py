"""A fleet of proxies fed from etcd: the configuration published once
(``sozu-apply --publish``), followed by a watcher next to each proxy
(``sozu-apply --watch --source``), and every node's status in the store
(``sozu-apply --fleet-status``). See ``docs/fleet.md``.

The library face: :func:`load_fleet` reads a fleet's configuration into the object
:func:`sozu_config.config.load_checked` gives for a file; :func:`publish` writes one;
:func:`read_fleet_status` reads what the nodes run.
"""

from .etcd import EtcdClient, EtcdError, EtcdUnreachable
from .publish import Published, publish
from .source import (
    EtcdTls,
    FleetError,
    FleetSource,
    Snapshot,
    load_fleet,
    load_snapshot,
    read_snapshot,
)
from .status import FleetStatus, NodeStatus, read_fleet_status
from .watcher import FleetWatcher

__all__ = [
    "EtcdClient",
    "EtcdError",
    "EtcdTls",
    "EtcdUnreachable",
    "FleetError",
    "FleetSource",
    "FleetStatus",
    "FleetWatcher",
    "NodeStatus",
    "Published",
    "Snapshot",
    "load_fleet",
    "load_snapshot",
    "publish",
    "read_fleet_status",
    "read_snapshot",
]
