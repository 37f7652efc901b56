"""The worker's connection limits (worker/admission.py), driven without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from sozu_runtime.worker.admission import Admission
from sozu_runtime.worker.metrics import Metrics


@dataclass(eq=False)
class FakeTransport:
    aborted: bool = False

    def abort(self) -> None:
        self.aborted = True


@dataclass(eq=False)
class Connection:
    deadline: float
    transport: FakeTransport = field(default_factory=FakeTransport)


def admission(max_connections: int, *, evict: bool = False) -> tuple[Admission, list[bool]]:
    calls: list[bool] = []
    limits = Admission(
        calls.append, Metrics(), max_connections=max_connections, evict_on_queue_full=evict
    )
    return limits, calls


def test_accepting_pauses_at_the_limit_and_resumes_below_ninety_percent() -> None:
    limits, calls = admission(10)
    connections = [Connection(float(i)) for i in range(10)]
    assert all(limits.opened(c) for c in connections)
    assert calls == [False] and limits.paused
    # one past the limit in the same batch of accepts is refused, and not counted
    extra = Connection(99.0)
    assert not limits.opened(extra)
    assert len(limits.connections) == 10
    limits.closed(connections[0])
    assert calls == [False]  # 9 is not below 90 % of 10
    limits.closed(connections[1])
    assert calls == [False, True] and not limits.paused


def test_a_handshake_handed_over_to_its_session_is_counted_once() -> None:
    limits, calls = admission(2)
    handshake, session = Connection(1.0), Connection(2.0)
    assert limits.opened(handshake)
    limits.replaced(handshake, session)
    assert limits.connections == {session}
    assert calls == []


def test_eviction_closes_the_connections_closest_to_their_deadline() -> None:
    limits, calls = admission(200, evict=True)
    connections = [Connection(float(1000 - i)) for i in range(200)]
    for connection in connections:
        assert limits.opened(connection)
    newcomer = Connection(0.0)  # the soonest deadline of all: still never its own victim
    assert limits.opened(newcomer)
    assert calls == []  # never pauses
    evicted = [c for c in connections if c.transport.aborted]
    # 1 % of 200: the two with the soonest deadlines
    assert sorted(c.deadline for c in evicted) == [801.0, 802.0]
    assert newcomer in limits.connections and len(limits.connections) == 199
    assert limits.metrics.evicted_connections == 2


def test_per_ip_slots_per_cluster() -> None:
    limits, _ = admission(100)
    assert limits.take_ip_slot("api", "10.0.0.1", 2)
    assert limits.take_ip_slot("api", "10.0.0.1", 2)
    assert not limits.take_ip_slot("api", "10.0.0.1", 2)
    assert limits.take_ip_slot("api", "10.0.0.2", 2)  # another address
    assert limits.take_ip_slot("web", "10.0.0.1", 2)  # another cluster
    limits.release_ip_slot("api", "10.0.0.1")
    assert limits.take_ip_slot("api", "10.0.0.1", 2)
    assert limits.metrics.per_ip_refusals == 1
    for _ in range(3):
        limits.release_ip_slot("api", "10.0.0.1")  # more releases than slots: no negatives
    assert limits.ip_slots("api", "10.0.0.1") == 0


def test_memory_is_handed_back_after_a_burst_and_when_idle() -> None:
    trims: list[int] = []
    limits = Admission(
        [].append, Metrics(), max_connections=10_000, trim=lambda: trims.append(1) or True
    )
    burst = [Connection(float(i)) for i in range(300)]
    for connection in burst:
        limits.opened(connection)
    limits.sweep(100.0, idle=False)
    assert trims == []  # still at its peak
    for connection in burst[:200]:
        limits.closed(connection)
    limits.sweep(101.0, idle=False)
    assert trims == [1]  # fell to a third of the peak
    limits.sweep(102.0, idle=False)
    assert trims == [1]  # not again without a new fall
    for connection in burst[200:]:
        limits.closed(connection)
    limits.sweep(103.0, idle=True)
    assert trims == [1]  # idle, but within TRIM_INTERVAL of the last time
    limits.sweep(107.0, idle=True)
    assert trims == [1, 1]
    limits.sweep(120.0, idle=True)
    assert trims == [1, 1]  # idle with nothing new since: nothing to hand back
