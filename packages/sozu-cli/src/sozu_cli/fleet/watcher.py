"""``sozu-apply --watch --source etcd://…``: keep the local proxy in line with a fleet's
configuration in etcd, until Ctrl-C or SIGTERM.

* Every new revision of the document or of its files (etcd's watch stream) is read whole, at
  one revision, checked as a file is, planned and applied as one guarded batch. A revision that
  does not check is not applied: the errors are printed and written to the node's status, and
  the proxy keeps the last good configuration.
* When etcd is unreachable (or the stream breaks) the proxy keeps what it runs; the watcher
  tries again with a growing pause (:data:`BACKOFF`), then reads the configuration as it is
  now, resuming the watch after the revision it read: nothing published meanwhile is missed.
* The node's status (``PREFIX/status/NODE``: revision run, when, last error) is written after
  every attempt under a lease of ``--lease-ttl`` seconds kept alive while the watcher runs; a
  watcher that dies stops renewing it and its node disappears from the fleet; one that stops
  (Ctrl-C, SIGTERM) revokes it.
* A revision that could not be applied because of the proxy (unreachable, refused batch) is
  tried again every :data:`RETRY_PAUSE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from collections.abc import Callable
from pathlib import Path

from sozu_config.config import Config

from ..output import Output
from .etcd import EtcdClient, EtcdCompacted, EtcdError, EtcdUnreachable
from .source import FleetError, FleetSource, Snapshot, load_snapshot, read_snapshot
from .status import NodeStatus, now

__all__ = ["BACKOFF", "RETRY_PAUSE", "ApplyOnce", "FleetWatcher"]

BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)
"""Pauses before trying etcd again, in seconds, the last one repeated: a short outage is
caught up at once, a long one costs etcd one request every 2 s per node."""

RETRY_PAUSE = 3.0
"""Seconds between two attempts at a revision the proxy did not take."""

ApplyOnce = Callable[[Config, list[Path]], tuple[int, list[str]]]
"""Plan and apply a configuration to sockets: (exit code, the failures' messages)."""


def _stamp() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


class FleetWatcher:
    """One node's watcher: its source, its proxy's sockets, its status."""

    def __init__(
        self,
        source: FleetSource,
        output: Output,
        apply_once: ApplyOnce,
        *,
        node: str,
        sockets: list[Path],
        lease_ttl: int,
    ) -> None:
        self.source = source
        self.output = output
        self.apply_once = apply_once
        self.sockets = sockets
        self.lease_ttl = lease_ttl
        self.status = NodeStatus(node=node, socket=", ".join(map(str, sockets)))
        self.client: EtcdClient | None = None
        self.lease = 0
        self.seen = 0
        """The store's revision read last: a watch resumes after it."""
        self.attempted = -1
        """The configuration's revision tried last (applied or refused)."""
        self.snapshot: Snapshot | None = None
        self.retry = False
        """The last revision failed because of the proxy: try it again."""
        self.status_written = False
        self.lock = asyncio.Lock()
        self.etcd_lost = False
        self.stream: asyncio.Task[None] | None = None
        """The task following the watch stream."""

    def note(self, message: str) -> None:
        self.output.note(f"[{_stamp()}] {message}")

    # ------------------------------------------------------------------ the loop

    async def run(self) -> int:
        """Watch until SIGINT or SIGTERM; returns the exit code (0)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        async with self.source.client() as client:
            self.client = client
            tasks = [
                asyncio.create_task(self._follow()),
                asyncio.create_task(self._keep_alive()),
                asyncio.create_task(self._retry()),
            ]
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in [stopping, *tasks]:
                task.cancel()
            await asyncio.gather(stopping, *tasks, return_exceptions=True)
            for task in done:  # a loop that ended on its own is a bug: say it
                if task is not stopping and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
            if self.lease:  # the node leaves the fleet at once
                with contextlib.suppress(EtcdError):
                    await client.revoke(self.lease)
        self.note("stopped")
        return 0

    @property
    def etcd(self) -> EtcdClient:
        assert self.client is not None
        return self.client

    async def _follow(self) -> None:
        failures = 0
        while True:
            try:
                await self._catch_up()
                if self.etcd_lost:
                    self.note(f"etcd at {self.etcd.endpoint} answers again")
                    self.etcd_lost = False
                failures = 0
                await self._stream()
            except EtcdCompacted as error:
                self.note(error.message)
            except EtcdError as error:
                if not self.etcd_lost:
                    kept = self.status.revision
                    running = f"revision {kept}" if kept is not None else "its configuration"
                    self.note(f"{error.message}; the proxy keeps {running}; trying again")
                    self.etcd_lost = isinstance(error, EtcdUnreachable)
                await asyncio.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1

    async def _stream(self) -> None:
        """Follow the watch stream until it breaks, or until etcd stops answering the lease's
        keep-alives (:meth:`_keep_alive` then cancels it: a stream to a member that is cut off
        may stay open and silent)."""

        async def follow() -> None:
            key, end = self.source.configuration_range
            async for events in self.etcd.watch(key, end, start_revision=self.seen + 1):
                self.seen = max([self.seen, *(event.revision for event in events)])
                if any(self.source.concerns_configuration(event.key) for event in events):
                    await self._catch_up()

        self.stream = asyncio.create_task(follow())
        try:
            await asyncio.wait([self.stream])
        finally:
            self.stream.cancel()
        if self.stream.cancelled():
            raise EtcdUnreachable(
                f"etcd at {self.etcd.endpoint} is unreachable: no answer to the lease's keep-alive"
            )
        self.stream.result()  # its error, if it ended on one

    async def _catch_up(self) -> None:
        """Read the configuration as it is now; apply it if it is a revision not tried yet."""
        async with self.lock:
            try:
                snapshot = await read_snapshot(self.etcd, self.source)
            except FleetError as error:
                self.status.error, self.status.refused_revision = error.message, None
                self.output.error(error.message)
                await self._write_status()
                return
            # the revision read, not the highest seen: an etcd restored from a backup may be
            # behind what this watcher saw, and a watch from a revision to come would miss all
            self.seen = snapshot.store_revision
            if snapshot.revision != self.attempted:
                self.snapshot = snapshot
                await self._attempt(snapshot)
            if not self.status_written:
                await self._write_status()

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(RETRY_PAUSE)
            if self.retry and self.snapshot is not None:
                async with self.lock:
                    with contextlib.suppress(EtcdError):
                        await self._attempt(self.snapshot)

    async def _attempt(self, snapshot: Snapshot) -> None:
        """Check, plan and apply one revision; record the outcome in the status."""
        self.attempted, self.retry = snapshot.revision, False
        if snapshot.text is None:
            self.note(f"nothing is published at {self.source.config_key} yet: waiting")
            self.status.error = f"nothing is published at {self.source.config_key}"
            await self._write_status()
            return
        self.note(f"revision {snapshot.revision}: planning")
        loaded = await asyncio.to_thread(load_snapshot, snapshot)
        for warning in loaded.warnings:
            self.output.warning(warning)
        failures: list[str] = list(loaded.errors)
        if loaded.config is not None:
            sockets = self.sockets or (
                [loaded.config.command_socket] if loaded.socket_named else []
            )
            if not sockets:
                failures = [
                    "the document's command_socket is not an absolute path: name the proxy with "
                    "--socket"
                ]
            else:
                code, failures = await asyncio.to_thread(self.apply_once, loaded.config, sockets)
                self.retry = code != 0
                if code == 0:
                    failures = []
        else:
            for error in failures:
                self.output.error(error)
        if not failures:
            self.status.revision, self.status.applied_at = snapshot.revision, now()
            self.status.error, self.status.refused_revision = None, None
            self.note(f"revision {snapshot.revision}: the proxy is in line")
        else:
            self.status.error = f"revision {snapshot.revision} not applied: " + "; ".join(failures)
            self.status.refused_revision = snapshot.revision
            kept = self.status.revision
            running = f"revision {kept}" if kept is not None else "what it had"
            self.note(f"revision {snapshot.revision} not applied: the proxy keeps {running}")
        await self._write_status()

    # ------------------------------------------------------------------ status and lease

    async def _write_status(self) -> None:
        """Write the node's status under its lease (granted when there is none); when etcd is
        unreachable it is written after the next read."""
        self.status.updated_at = now()
        self.status_written = False
        try:
            if not self.lease:
                self.lease = await self.etcd.grant(self.lease_ttl)
            try:
                await self.etcd.put(
                    self.source.status_key(self.status.node),
                    self.status.to_json(),
                    lease=self.lease,
                )
            except EtcdUnreachable:
                raise
            except EtcdError:  # the lease expired meanwhile: a new one
                self.lease = await self.etcd.grant(self.lease_ttl)
                await self.etcd.put(
                    self.source.status_key(self.status.node),
                    self.status.to_json(),
                    lease=self.lease,
                )
        except EtcdError:
            return
        self.status_written = True

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_ttl / 3, 0.2))
            if not self.lease:
                continue
            try:
                alive = await self.etcd.keep_alive(self.lease)
            except EtcdUnreachable:
                # the watch stream may be open to a member that no longer answers: start it
                # again (elsewhere, with several members) unless a revision is being applied
                if self.stream is not None and not self.lock.locked():
                    self.stream.cancel()
                continue
            except EtcdError:
                alive = 0
            if not alive:  # expired (etcd was away too long): the status is written again
                self.lease = 0
                async with self.lock:
                    await self._write_status()
