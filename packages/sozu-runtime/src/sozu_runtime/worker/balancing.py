"""Backend selection, load balancing and the per-backend retry policy (sans-I/O).

Each worker keeps, per cluster, a :class:`Cluster`: the runtime view of that cluster's
backends (open connections, in-flight requests, connect times, consecutive failures) and the
balancing policy that picks a backend for every new backend connection. Nothing here touches a
socket or a clock: callers pass the monotonic time ``now`` in, and report connection outcomes
with :meth:`Backend.connect_failed` / :meth:`Backend.connect_succeeded`.

Behaviour follows sōzu (reference §E.6, §G) with two deliberate improvements described in the
project design: ``ROUND_ROBIN`` honours weights (smooth weighted round robin) instead of
ignoring them, and ``POWER_OF_TWO`` is the textbook "power of two random choices" instead of
"random among the two least loaded seen in one pass".

Hot path: :meth:`Cluster.choose` is O(n) in the number of backends, allocates at most one short
candidate list and never logs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from operator import attrgetter
from typing import Final

from sozu_config.grammar import parse_port, split_host_port, unbracket
from sozu_config.models import LoadBalancingAlgorithm, LoadMetric

from .metrics import Counters

__all__ = [
    "CONNECTIONS",
    "CONNECTION_TIME",
    "LEAST_LOADED",
    "MAX_FAILURES",
    "POWER_OF_TWO",
    "RANDOM",
    "REQUESTS",
    "ROUND_ROBIN",
    "Backend",
    "Cluster",
    "backoff_delay",
]

# Load balancing algorithms and load measures are the configuration's enumerations; the hot
# path compares members by identity. HRW and MAGLEV are hash-based and only used by UDP
# clusters, which this module does not serve.
ROUND_ROBIN: Final = LoadBalancingAlgorithm.ROUND_ROBIN
RANDOM: Final = LoadBalancingAlgorithm.RANDOM
LEAST_LOADED: Final = LoadBalancingAlgorithm.LEAST_LOADED
POWER_OF_TWO: Final = LoadBalancingAlgorithm.POWER_OF_TWO

# Load measures for LEAST_LOADED and POWER_OF_TWO.
CONNECTIONS: Final = LoadMetric.CONNECTIONS
REQUESTS: Final = LoadMetric.REQUESTS
CONNECTION_TIME: Final = LoadMetric.CONNECTION_TIME

# sōzu's ExponentialBackoffPolicy is built with max_tries = 6 (lib/src/backends.rs): the
# backoff window stops growing after six consecutive failures. Whether a backend is *down* is
# decided by the main process for every worker (see `Backend.down`).
MAX_FAILURES = 6

# Smoothing factor of the connect-time moving average: each new sample weighs 30 %.
CONNECT_TIME_ALPHA = 0.3

# Default backend weight (reference §B.4, `weight` default 100).
DEFAULT_WEIGHT = 100

# Which Backend attribute each load measure reads; attrgetter keeps the hot loop in C.
_LOAD_ATTRIBUTE: Final[dict[LoadMetric, str]] = {
    CONNECTIONS: "active_connections",
    REQUESTS: "active_requests",
    CONNECTION_TIME: "connect_time",
}

# Candidate tiers of `Cluster.choose`, as bits of a rank: the lowest rank present wins.
# Primaries beat backups, positive weights beat weight 0, and a backend the caller asked to
# exclude (already tried for this request) only comes back when nothing else can open.
# A backend its cluster's health check found down comes last, and only when the check fails
# open (see `Cluster.set_checked`).
_TIER_WEIGHT_ZERO = 1
_TIER_BACKUP = 2
_TIER_EXCLUDED = 4
_TIER_DOWN = 8
_NO_TIER = 16


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Return how long (seconds) a backend must rest after a failed connection attempt.

    ``failures`` is the number of consecutive failures already recorded before this one, as in
    sōzu's ``ExponentialBackoffPolicy::fail``: the first failure (``failures`` 0, and also 1)
    waits exactly 1 s; later ones wait a random whole number of seconds in
    ``[1, 2**failures)``, drawn from ``rng``. The result is always an integer >= 1.
    """
    if failures <= 1:
        return 1.0
    return float(rng.randrange(1, 1 << failures))


def _split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[addr]:port``) into its host, without brackets, and port.

    Raises ValueError when the port is missing or not a number in 1..65535.
    """
    try:
        host, port_text = split_host_port(address)
        if not host or port_text is None:
            raise ValueError("expected host:port")
        return unbracket(host), parse_port(port_text)
    except ValueError as error:
        raise ValueError(f"backend address {address!r}: {error}") from None


class Backend:
    """The runtime state of one backend of one cluster, in one worker.

    Identity matters: live connections hold a reference to the object they were opened on and
    decrement its counters when they end, so a backend whose address changes, or that is removed
    from the configuration, is *detached* (``removed`` set) rather than mutated into something
    else. Two Backend objects are never equal unless they are the same object.

    Attributes:
        cluster_id: the cluster this backend serves.
        backend_id: its identifier, unique within the cluster.
        address: ``host:port`` as configured; ``host`` and ``port`` are its parts (an IPv6
            host without brackets).
        weight: relative share of new connections (0..255 in the configuration); 0 means "never
            chosen while a backend with a positive weight of the same kind can open".
        backup: only chosen when no primary (non-backup) backend can open.
        sticky_id: the sticky-session cookie value that selects this backend: the configured
            ``sticky_id``, else ``backend_id``.
        active_connections: open connections to this backend (maintained by the proxy).
        active_requests: requests in flight on this backend (maintained by the proxy).
        connect_time: exponentially weighted moving average (alpha 0.3) of successful connect
            durations in seconds; 0 until the first success.
        failures: consecutive connection failures seen by this worker, 0..MAX_FAILURES.
        silent: an answer did not come in time (the backend accepts requests but does not
            answer them): a connection that opens proves nothing then, only an answer does.
            It opens no backoff window: one slow request must not take a backend's traffic
            away.
        news: an answer from this backend is news for the main process: it follows failures
            or a silence seen by this worker, or the backend is down without an active check
            (real traffic is then how it comes back). One attribute, kept up to date, so that
            the data path reads one flag per answer.
        down: the shared health, decided by the main process: the backend is down.
        avoid: down, and its cluster has an active health check: it gets no new connection
            (unless the check fails open and every backend is down). Without an active check a
            down backend is tried again once its backoff window has passed: that attempt is
            how real traffic finds it back up.
        retry_at: monotonic time before which the backend must not be tried (the backoff
            window); 0 when there is no window.
        removed: no longer part of the configuration; kept alive by live connections only.
        current_weight: the smooth weighted round robin credit, owned by the Cluster.
    """

    __slots__ = (
        "_rng",
        "active_connections",
        "active_requests",
        "address",
        "avoid",
        "backend_id",
        "backup",
        "cluster_id",
        "connect_time",
        "current_weight",
        "down",
        "failures",
        "host",
        "news",
        "port",
        "removed",
        "retry_at",
        "silent",
        "stats",
        "sticky_id",
        "weight",
    )

    cluster_id: str
    backend_id: str
    address: str
    host: str
    port: int
    weight: int
    backup: bool
    sticky_id: str
    active_connections: int
    active_requests: int
    connect_time: float
    failures: int
    retry_at: float
    removed: bool
    silent: bool
    news: bool
    down: bool
    avoid: bool
    stats: Counters
    current_weight: int
    _rng: random.Random

    def __init__(
        self,
        cluster_id: str,
        backend_id: str,
        address: str,
        *,
        weight: int = DEFAULT_WEIGHT,
        backup: bool = False,
        sticky_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Create a backend with no connections, no failures and no backoff window.

        ``rng`` draws the backoff delays; a fresh generator is used when none is given.
        Raises ValueError for a malformed address or a negative weight.
        """
        if weight < 0:
            raise ValueError(f"backend {backend_id!r}: weight must be >= 0, got {weight}")
        self.cluster_id = cluster_id
        self.backend_id = backend_id
        self.address = address
        self.host, self.port = _split_address(address)
        self.weight = weight
        self.backup = backup
        self.sticky_id = backend_id if sticky_id is None else sticky_id
        self.stats = Counters()
        self.active_connections = 0
        self.active_requests = 0
        self.connect_time = 0.0
        self.failures = 0
        self.retry_at = 0.0
        self.removed = False
        self.silent = False
        self.news = False
        self.down = False
        self.avoid = False
        self.current_weight = 0
        self._rng = random.Random() if rng is None else rng

    def __repr__(self) -> str:
        return (
            f"Backend({self.cluster_id!r}, {self.backend_id!r}, {self.address!r}, "
            f"weight={self.weight}, backup={self.backup}, failures={self.failures}, "
            f"removed={self.removed})"
        )

    def can_open(self, now: float) -> bool:
        """Whether a new connection may be attempted at monotonic time ``now``.

        False while the backoff window runs (``now < retry_at``) and once removed. A down
        backend may still be tried after its window: that attempt is how it comes back up.
        """
        return not self.removed and now >= self.retry_at

    def connect_failed(self, now: float) -> bool:
        """Record a failed connection attempt (refused, reset or ``connect_timeout``) at ``now``.

        Opens a backoff window of :func:`backoff_delay` seconds and counts one more failure
        (capped at MAX_FAILURES). Failures reported while a window is still open are ignored:
        connections attempted together that fail together count once.

        Returns True when the failure counted (what the main process is told).
        """
        if now < self.retry_at:
            return False
        self.retry_at = now + backoff_delay(self.failures, self._rng)
        if self.failures < MAX_FAILURES:
            self.failures += 1
        self.news = True
        return True

    def answer_timed_out(self) -> None:
        """A request sent to the backend got no answer in time (see ``silent``)."""
        self.silent = True
        self.news = True

    def connect_succeeded(self, duration: float) -> bool:
        """Record a connection established after ``duration`` seconds of connecting.

        Clears the failure count and the backoff window, and folds ``duration`` into the
        connect-time average (the first sample is taken as is).

        Returns True when it follows connection failures of this worker (the main process is
        told); after an answer timeout, or for a backend another worker found down, an answer
        is the proof, not a connection (see :meth:`recovered`).
        """
        if self.connect_time == 0.0:
            self.connect_time = duration
        else:
            self.connect_time += CONNECT_TIME_ALPHA * (duration - self.connect_time)
        if self.silent or not self.failures:
            # no failure to clear, or it accepted connections but did not answer: only an
            # answer proves it works (see recovered)
            return False
        return self.recovered()

    def recovered(self) -> bool:
        """The backend answered: clear the failure count, the silence and the backoff window.
        True when that is news (see ``news``): the main process is told."""
        told = self.news
        self.failures = 0
        self.retry_at = 0.0
        self.silent = False
        self.news = self.down and not self.avoid
        return told


def _validate_policy(
    algorithm: str, metric: str | None
) -> tuple[LoadBalancingAlgorithm, LoadMetric | None]:
    """Return the algorithm and metric members, or raise ValueError.

    Names are matched case-insensitively (sōzu's TOML spells them in upper case).
    """
    try:
        canonical_algorithm = LoadBalancingAlgorithm(algorithm.lower())
    except ValueError:
        raise ValueError(f"unknown load balancing algorithm {algorithm!r}") from None
    if metric is None:
        return canonical_algorithm, None
    try:
        return canonical_algorithm, LoadMetric(metric.lower())
    except ValueError:
        raise ValueError(f"unknown load metric {metric!r}") from None


class Cluster:
    """The runtime balancing state of one cluster in one worker.

    Invariants: ``backends()`` lists the attached backends in configuration order, each with a
    distinct ``backend_id`` and ``removed`` False; a detached backend is never chosen again.
    The algorithm and metric may change at any time without losing counters.
    """

    __slots__ = (
        "_algorithm",
        "_backends",
        "_by_id",
        "_checked",
        "_fail_open",
        "_load_of",
        "_metric",
        "_rng",
        "_rotation",
        "cluster_id",
    )

    cluster_id: str

    def __init__(
        self,
        cluster_id: str,
        algorithm: str = ROUND_ROBIN,
        metric: str | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Create an empty cluster balanced by ``algorithm`` over the load ``metric``.

        ``metric`` only matters to LEAST_LOADED and POWER_OF_TWO; None means CONNECTIONS.
        ``rng`` drives RANDOM, POWER_OF_TWO and the backoff delays of this cluster's backends
        (pass a seeded one for reproducible behaviour). Raises ValueError for an unknown
        algorithm or metric (accepted case-insensitively).
        """
        self.cluster_id = cluster_id
        self._rng = random.Random() if rng is None else rng
        self._backends: list[Backend] = []
        self._by_id: dict[str, Backend] = {}
        # Advances on every LEAST_LOADED pick so that equally loaded backends take turns.
        self._rotation = 0
        self._algorithm: LoadBalancingAlgorithm = ROUND_ROBIN
        self._metric: LoadMetric | None = None
        self._load_of: Callable[[Backend], float] = attrgetter(_LOAD_ATTRIBUTE[CONNECTIONS])
        self._checked = False
        self._fail_open = True
        self.configure(algorithm, metric)

    @property
    def algorithm(self) -> LoadBalancingAlgorithm:
        """The load balancing algorithm in use."""
        return self._algorithm

    @property
    def metric(self) -> LoadMetric | None:
        """The configured load metric, or None (CONNECTIONS is then used)."""
        return self._metric

    def configure(self, algorithm: str, metric: str | None) -> None:
        """Change the balancing policy live; backends, their counters and backoffs are kept.

        ``algorithm`` and ``metric`` are members of the configuration's enumerations or their
        names, in either case. Raises ValueError (and changes nothing) for an unknown one.
        """
        self._algorithm, self._metric = _validate_policy(algorithm, metric)
        self._load_of = attrgetter(_LOAD_ATTRIBUTE[self._metric or CONNECTIONS])

    def set_checked(self, checked: bool, fail_open: bool = True) -> None:
        """Whether an active health check decides which backends are down (``checked``), and
        whether the cluster then fails open: with every backend down, traffic still goes to
        them (``fail_open``) rather than getting a 503."""
        self._checked = checked
        self._fail_open = fail_open
        for backend in self._backends:
            self.set_down(backend, backend.down)

    def set_down(self, backend: Backend, down: bool) -> None:
        """The shared health of ``backend`` changed (the main process decided)."""
        backend.down = down
        backend.avoid = down and self._checked
        backend.news = backend.failures > 0 or backend.silent or (down and not backend.avoid)

    def backends(self) -> list[Backend]:
        """A snapshot list of the attached backends, in configuration order."""
        return list(self._backends)

    def backend(self, backend_id: str) -> Backend | None:
        """The attached backend with this id, or None."""
        return self._by_id.get(backend_id)

    def upsert_backend(
        self,
        backend_id: str,
        address: str,
        *,
        weight: int = DEFAULT_WEIGHT,
        backup: bool = False,
        sticky_id: str | None = None,
    ) -> Backend:
        """Add a backend, or update the one with the same ``backend_id``; return it.

        Same id and same address: the existing object is updated in place (weight, backup,
        sticky_id), so its counters, connect time and backoff survive. Same id but a new
        address: it is a different server, so the old object is detached (``removed`` True,
        still valid for the connections that use it) and a fresh one takes its place in the
        configuration order. Raises ValueError for a malformed address or a negative weight.
        """
        existing = self._by_id.get(backend_id)
        if existing is not None and existing.address == address:
            if weight < 0:
                raise ValueError(f"backend {backend_id!r}: weight must be >= 0, got {weight}")
            existing.weight = weight
            existing.backup = backup
            existing.sticky_id = backend_id if sticky_id is None else sticky_id
            return existing
        fresh = Backend(
            self.cluster_id,
            backend_id,
            address,
            weight=weight,
            backup=backup,
            sticky_id=sticky_id,
            rng=self._rng,
        )
        if existing is None:
            self._backends.append(fresh)
        else:
            existing.removed = True
            fresh.stats = existing.stats  # the same backend, at a new address
            self._backends[self._backends.index(existing)] = fresh
        self._by_id[backend_id] = fresh
        return fresh

    def remove_backend(self, backend_id: str) -> Backend | None:
        """Detach the backend with this id (``removed`` True) and return it; None if absent.

        The returned object stays valid for the connections still using it, which is how the
        caller knows when the last one closes (REMOVED_BACKEND_HAS_NO_CONNECTIONS).
        """
        backend = self._by_id.pop(backend_id, None)
        if backend is not None:
            backend.removed = True
            self._backends.remove(backend)
        return backend

    # Complexity: per-connection hot path: the tiers are decided in one pass, in one frame.
    def choose(  # noqa: C901
        self,
        now: float,
        *,
        sticky: str | None = None,
        exclude: Collection[Backend] = (),
    ) -> Backend | None:
        """Pick the backend for a new connection at monotonic time ``now``, or None (503).

        1. ``sticky`` (the session cookie value): the backend whose ``sticky_id`` equals it,
           if it can open, is not ``avoid``ed and is not in ``exclude``.
        2. Candidates, first non-empty tier wins: primaries with a positive weight; primaries
           of weight 0; backups with a positive weight; backups of weight 0; then the same
           tiers among the ``exclude``d backends (those already tried for this request), so a
           retry prefers a backend not yet tried but still gets one when all were; then, when
           the health check fails open, the same tiers among the backends it found down
           (never, when it does not).
        3. The cluster's algorithm picks among the candidates. In a weight-0 tier every
           candidate counts as weight 1.
        """
        backends = self._backends
        if sticky is not None:
            for backend in backends:
                if (
                    backend.sticky_id == sticky
                    and now >= backend.retry_at
                    and not backend.avoid
                    and not (exclude and backend in exclude)
                ):
                    return backend

        candidates: list[Backend] = []
        best_rank = _NO_TIER
        for backend in backends:
            # Inlined Backend.can_open: attached backends are never removed.
            if now < backend.retry_at:
                continue
            rank = _TIER_BACKUP if backend.backup else 0
            if backend.avoid:
                if not self._fail_open:
                    continue
                rank |= _TIER_DOWN
            if backend.weight == 0:
                rank |= _TIER_WEIGHT_ZERO
            if exclude and backend in exclude:
                rank |= _TIER_EXCLUDED
            if rank < best_rank:
                best_rank = rank
                candidates.clear()
                candidates.append(backend)
            elif rank == best_rank:
                candidates.append(backend)

        if len(candidates) <= 1:
            return candidates[0] if candidates else None

        # Within a tier the weights are either all positive or all 0, so `weight or 1` is the
        # configured weight in the first case and a uniform weight in the second.
        algorithm = self._algorithm
        if algorithm is ROUND_ROBIN:
            return self._smooth_weighted_round_robin(candidates)
        if algorithm is RANDOM:
            return self._weighted_random(candidates, None)
        if algorithm is LEAST_LOADED:
            return self._least_loaded(candidates)
        return self._power_of_two(candidates)

    def _smooth_weighted_round_robin(self, candidates: list[Backend]) -> Backend:
        """nginx's smooth weighted round robin over ``candidates`` (at least one).

        Every candidate earns its weight, the richest is picked and pays the total. Over any
        run of ``sum(weights)`` picks on a stable set each backend is picked exactly ``weight``
        times, interleaved rather than in bursts; with equal weights it is plain rotation in
        configuration order. Backends outside the candidate set keep their credit untouched,
        so the rotation carries on undisturbed when the set changes.
        """
        total = 0
        best = candidates[0]
        best_credit = -(1 << 62)
        for backend in candidates:
            weight = backend.weight or 1
            credit = backend.current_weight + weight
            backend.current_weight = credit
            total += weight
            if credit > best_credit:
                best = backend
                best_credit = credit
        best.current_weight = best_credit - total
        return best

    def _weighted_random(self, candidates: list[Backend], skip: Backend | None) -> Backend:
        """A candidate drawn with probability proportional to its weight, never ``skip``.

        ``candidates`` must hold at least one backend other than ``skip``.
        """
        total = 0
        for backend in candidates:
            if backend is not skip:
                total += backend.weight or 1
        point = self._rng.random() * total
        chosen = candidates[0]
        for backend in candidates:
            if backend is skip:
                continue
            chosen = backend
            point -= backend.weight or 1
            if point < 0:
                break
        return chosen

    def _least_loaded(self, candidates: list[Backend]) -> Backend:
        """The candidate with the lowest load per unit of weight; ties take turns.

        Two passes and no allocation: the first finds the minimum and how many candidates
        share it, the second returns the ``rotation % ties``-th of them.
        """
        load_of = self._load_of
        lowest = float("inf")
        ties = 0
        for backend in candidates:
            load = load_of(backend) / (backend.weight or 1)
            if load < lowest:
                lowest = load
                ties = 1
            elif load == lowest:
                ties += 1
        turn = self._rotation % ties
        self._rotation += 1
        for backend in candidates:
            if load_of(backend) / (backend.weight or 1) == lowest:
                if turn == 0:
                    return backend
                turn -= 1
        raise AssertionError("unreachable: the minimum was found in the first pass")

    def _power_of_two(self, candidates: list[Backend]) -> Backend:
        """The power of two random choices: of two distinct weighted draws, the less loaded.

        Needs at least two candidates. The most loaded candidate can only win when it ties.
        """
        first = self._weighted_random(candidates, None)
        second = self._weighted_random(candidates, first)
        load_of = self._load_of
        if load_of(second) / (second.weight or 1) < load_of(first) / (first.weight or 1):
            return second
        return first
