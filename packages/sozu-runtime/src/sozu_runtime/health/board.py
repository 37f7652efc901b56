"""The one health of every backend, as the main process decides it for all workers (sans-I/O).

A backend is **up**, **down** (since when, why) or **draining** (removed from the state, some
worker still finishing its requests). What moves it:

* **active checks** (:meth:`HealthBoard.probed`): ``unhealthy_threshold`` failed probes in a
  row take an up backend down, ``healthy_threshold`` successful ones in a row bring a down
  backend up (whatever took it down);
* **passive detection** (:meth:`HealthBoard.observed`): the workers report each connection
  to a backend that failed (at most once per backoff window each) and the first that opened
  after failures; :data:`PASSIVE_FAILURES` failures in a row, from any workers, take the
  backend down; a connection that opened brings it up again, unless an active check decides
  (then only the check does).

Each change of state is returned as a :class:`Transition`, once: the caller tells the workers
and emits the event. Nothing here touches a socket or a clock; times are passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from sozu_config.models import HealthCheck
from sozu_config.responses import BackendHealth, BackendState, ProbeResult
from sozu_config.state import ConfigState

__all__ = ["PASSIVE_FAILURES", "BackendKey", "HealthBoard", "Record", "Transition"]

PASSIVE_FAILURES: Final = 3
"""Failed connections in a row, reported by any workers, that take a backend down."""

BackendKey = tuple[str, str]
"""(cluster id, backend id)."""


@dataclass(slots=True)
class Record:
    """What the main process knows of one backend's health."""

    cluster_id: str
    backend_id: str
    address: str
    down: bool = False
    since: dt.datetime | None = None
    reason: str = ""
    successes: int = 0  # successful probes in a row
    failures: int = 0  # failed probes in a row
    passive_failures: int = 0  # failed connections in a row, reported by the workers
    last_check: ProbeResult | None = None
    draining: set[int] | None = None  # removed: the workers still finishing its requests
    # counters (metrics): probes and transitions
    probe_successes: int = 0
    probe_failures: int = 0
    went_up: int = 0
    went_down: int = 0

    @property
    def key(self) -> BackendKey:
        return (self.cluster_id, self.backend_id)


@dataclass(frozen=True, slots=True)
class Transition:
    """A backend went down (``down``) or up, for ``reason``."""

    record: Record
    down: bool
    reason: str


@dataclass(slots=True)
class _Cluster:
    check: HealthCheck | None = None
    backends: dict[str, Record] = field(default_factory=dict)


class HealthBoard:
    """Every backend's health, by cluster, in state order."""

    def __init__(self) -> None:
        self._clusters: dict[str, _Cluster] = {}
        self._draining: dict[tuple[str, str, str], Record] = {}

    # ------------------------------------------------------------------ the state's backends

    def sync(
        self, state: ConfigState, workers: Iterable[int], now: dt.datetime
    ) -> list[Transition]:
        """Follow the state: new backends are up; a backend whose address changed is a new
        server (up); removed ones drain in ``workers`` (the running workers' ids); a cluster
        whose health check went away has its backends up again (passive detection goes on
        from scratch). Returns the transitions."""
        transitions: list[Transition] = []
        pending = set(workers)
        clusters: dict[str, _Cluster] = {}
        for cluster_id, cluster in state.clusters.items():
            before = self._clusters.get(cluster_id, _Cluster())
            check = cluster.health_check
            kept: dict[str, Record] = {}
            for backend_id, backend in state.backends.get(cluster_id, {}).items():
                record = before.backends.pop(backend_id, None)
                if record is not None and record.address != backend.address:
                    self._drain(record, pending)
                    record = None
                if record is None:
                    record = Record(cluster_id, backend_id, backend.address)
                elif before.check is not None and check is None and record.down:
                    transitions.append(self._set(record, False, "health check removed", now))
                if check != before.check:  # a new check counts from scratch
                    record.successes = record.failures = 0
                kept[backend_id] = record
            clusters[cluster_id] = _Cluster(check, kept)
            for record in before.backends.values():  # removed from the cluster
                self._drain(record, pending)
        for cluster_id, gone in self._clusters.items():
            if cluster_id not in clusters:
                for record in gone.backends.values():
                    self._drain(record, pending)
        self._clusters = clusters
        return transitions

    def _drain(self, record: Record, workers: set[int]) -> None:
        if workers:
            record.draining = set(workers)
            self._draining[(record.cluster_id, record.backend_id, record.address)] = record

    def drained(self, cluster_id: str, backend_id: str, address: str | None, worker: int) -> None:
        """``worker`` has no connection left to the removed backend (its
        ``removed_backend_has_no_connections`` event)."""
        key = (cluster_id, backend_id, address or "")
        record = self._draining.get(key)
        if record is None or record.draining is None:
            return
        record.draining.discard(worker)
        if not record.draining:
            del self._draining[key]

    def worker_gone(self, worker: int) -> None:
        """A worker exited: it drains nothing any more."""
        for key, record in list(self._draining.items()):
            if record.draining is not None:
                record.draining.discard(worker)
                if not record.draining:
                    del self._draining[key]

    # ------------------------------------------------------------------ what moves the state

    def record(self, key: BackendKey) -> Record | None:
        cluster = self._clusters.get(key[0])
        return None if cluster is None else cluster.backends.get(key[1])

    def check_of(self, cluster_id: str) -> HealthCheck | None:
        cluster = self._clusters.get(cluster_id)
        return None if cluster is None else cluster.check

    def probed(self, key: BackendKey, result: ProbeResult) -> Transition | None:
        """An active check of ``key`` ended with ``result``."""
        record = self.record(key)
        check = self.check_of(key[0])
        if record is None or check is None:
            return None  # removed, or its check removed, while the probe ran
        record.last_check = result
        if result.ok:
            record.probe_successes += 1
            record.successes += 1
            record.failures = 0
            if record.down and record.successes >= check.healthy_threshold:
                reason = _count(record.successes, "successful check")
                return self._set(record, False, reason, result.time)
            return None
        record.probe_failures += 1
        record.failures += 1
        record.successes = 0
        if not record.down and record.failures >= check.unhealthy_threshold:
            reason = f"{_count(record.failures, 'failed check')}: {result.detail}"
            return self._set(record, True, reason, result.time)
        return None

    def observed(
        self, key: BackendKey, failed: bool, detail: str, now: dt.datetime
    ) -> Transition | None:
        """A worker saw a connection to ``key`` fail (``failed``), or the backend answer again
        (``detail``: what it saw, e.g. ``connection refused`` or ``an answer came``)."""
        record = self.record(key)
        if record is None:
            return None
        if not failed:
            record.passive_failures = 0
            if record.down and self.check_of(key[0]) is None:
                return self._set(record, False, detail or "traffic went through", now)
            return None
        record.passive_failures += 1
        if not record.down and record.passive_failures >= PASSIVE_FAILURES:
            reason = f"{_count(record.passive_failures, 'failed connection')}: {detail}"
            record.successes = 0
            return self._set(record, True, reason, now)
        return None

    @staticmethod
    def _set(record: Record, down: bool, reason: str, now: dt.datetime) -> Transition:
        record.down = down
        record.since = now
        record.reason = reason
        if not down:  # up: the failures in a row are over (down: they go on being counted)
            record.passive_failures = 0
        if down:
            record.went_down += 1
        else:
            record.went_up += 1
        return Transition(record, down, reason)

    # ------------------------------------------------------------------ reading it

    def records(self) -> Iterator[Record]:
        """Every backend of the state, by cluster, in state order."""
        for cluster in self._clusters.values():
            yield from cluster.backends.values()

    def down(self) -> list[BackendKey]:
        """The backends that are down."""
        return [record.key for record in self.records() if record.down]

    def statuses(self, cluster_id: str | None = None) -> list[BackendHealth]:
        """What ``list_backends`` answers: every backend (of ``cluster_id``), then those
        draining."""
        out = []
        for cid, cluster in self._clusters.items():
            if cluster_id is not None and cid != cluster_id:
                continue
            for record in cluster.backends.values():
                state = BackendState.DOWN if record.down else BackendState.UP
                out.append(_status(record, state, cluster.check is not None))
        for record in self._draining.values():
            if cluster_id is None or record.cluster_id == cluster_id:
                out.append(_status(record, BackendState.DRAINING, False))
        return out

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Health figures by cluster, in the form of ``query_metrics``'s ``clusters``: per
        backend the transition counters, the ``backend.down`` gauge and, where the cluster has
        a health check, the probe counters; per cluster their sums and
        ``health_check.healthy_backends``."""
        clusters: dict[str, dict[str, Any]] = {}
        for cluster_id, cluster in self._clusters.items():
            backends = {}
            totals: dict[str, int] = {}
            healthy = 0
            for record in cluster.backends.values():
                values = {
                    "health_check.up": record.went_up,
                    "health_check.down": record.went_down,
                    "backend.down": int(record.down),
                }
                if cluster.check is not None:  # probes only where there is a check
                    values["health_check.success"] = record.probe_successes
                    values["health_check.failure"] = record.probe_failures
                for name, value in values.items():
                    totals[name] = totals.get(name, 0) + value
                healthy += not record.down
                backends[record.backend_id] = values
            totals["health_check.healthy_backends"] = healthy
            clusters[cluster_id] = {"cluster": totals, "backends": backends}
        return clusters

    def clear_counters(self) -> None:
        """Start the probe and transition counters from zero (the gauges stay true)."""
        for record in self.records():
            record.probe_successes = record.probe_failures = 0
            record.went_up = record.went_down = 0

    # ------------------------------------------------------------------ main-process upgrade

    def handover(self) -> list[dict[str, Any]]:
        """The down backends, for the next main process (JSON)."""
        return [
            {
                "cluster_id": r.cluster_id,
                "backend_id": r.backend_id,
                "address": r.address,
                "since": r.since.isoformat() if r.since else None,
                "reason": r.reason,
            }
            for r in self.records()
            if r.down
        ]

    def restore(self, down: Iterable[dict[str, Any]]) -> None:
        """Take the down backends the previous main process handed over (after
        :meth:`sync`)."""
        for entry in down:
            record = self.record((entry["cluster_id"], entry["backend_id"]))
            if record is not None and record.address == entry.get("address"):
                record.down = True
                record.reason = str(entry.get("reason", ""))
                since = entry.get("since")
                record.since = dt.datetime.fromisoformat(since) if since else None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _status(record: Record, state: BackendState, checked: bool) -> BackendHealth:
    return BackendHealth(
        cluster_id=record.cluster_id,
        backend_id=record.backend_id,
        address=record.address,
        state=state,
        since=record.since,
        reason=record.reason,
        checked=checked,
        last_check=record.last_check,
        consecutive_failures=record.failures if checked else record.passive_failures,
    )
