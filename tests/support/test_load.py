"""The load generator's accounting, against small real servers on 127.0.0.1: every request
ends as exactly one record with one outcome, and each outcome means what it says."""

from __future__ import annotations

import pytest

from support.backends import Answer, HttpBackend, Received, wait_for
from support.daemon import free_port
from support.load import (
    BAD_BODY,
    BAD_STATUS,
    CLOSED,
    OK,
    OUTCOMES,
    REFUSED,
    RESET,
    LoadGenerator,
    LoadReport,
    RequestRecord,
)
from support.load_handlers import DRIP_CHUNKS, StreamSpec, load_handler, named_handler

PER_CLIENT = 15


def port_of(backend: HttpBackend) -> int:
    return int(backend.address.rsplit(":", 1)[1])


def small_load(port: int, **settings: object) -> LoadGenerator:
    options: dict[str, object] = {
        "host": "load.test",
        "keep_alive_clients": 2,
        "new_connection_clients": 2,
        "max_requests": PER_CLIENT,
        "max_seconds": 30.0,
        "pause": 0.005,
        "timeout": 5.0,
    }
    options.update(settings)
    return LoadGenerator(port, **options)  # type: ignore[arg-type]


def run_to_the_end(load: LoadGenerator, requests: int) -> LoadReport:
    """Let every client send all its requests, then stop."""
    with load:
        wait_for(lambda: len(load.report().records) >= requests, timeout=30)
        return load.stop()


def test_every_request_ends_as_one_record_with_one_outcome() -> None:
    with HttpBackend("app", named_handler("app")) as backend:
        report = run_to_the_end(small_load(port_of(backend), expected_bodies={b"app"}), 60)
        assert len(backend.requests) == 60, "a request was sent twice or not at all"
        # two kept connections, and one connection per request of the others
        assert backend.connections == 2 + 2 * PER_CLIENT
    assert len(report.records) == 60, report.summary()
    assert all(r.outcome in OUTCOMES for r in report.records)
    assert sum(report.outcomes().values()) == 60
    assert report.ok == 60 and report.failures() == [], report.summary()
    for client in ("keep-alive 1", "keep-alive 2", "new-connection 1", "new-connection 2"):
        mine = [r for r in report.records if r.client == client]
        assert len(mine) == PER_CLIENT
        assert all(r.status == 200 and r.body == b"app" for r in mine)
        assert all(r.connected_at > 0.0 and r.started <= r.ended for r in mine)
        if client.startswith("keep-alive"):
            assert {r.connection for r in mine} == {1}
            assert [r.reused for r in mine] == [False] + [True] * (PER_CLIENT - 1)
        else:
            assert [r.connection for r in mine] == list(range(1, PER_CLIENT + 1))
            assert not any(r.reused for r in mine)
    assert (report.idle_closes, report.retries) == (0, 0)


def test_a_port_nobody_listens_on_gives_refused_requests() -> None:
    load = small_load(free_port(), max_requests=3)
    with pytest.raises(AssertionError, match="did not get going"):
        load.start(ready_timeout=1.0)
    report = load.stop()
    assert report.records, report.summary()
    assert report.refused == len(report.records), report.summary()
    assert all(r.connected_at == 0.0 and r.status is None for r in report.records)
    cut, others = report.cut_at(report.records[-1].ended)
    assert cut == [] and len(others) == len(report.records)


def judging(request: Received) -> Answer:
    if request.target == "/missing":
        return Answer(status=404, body=b"app")
    return Answer(body=b"another")


@pytest.mark.parametrize(("target", "outcome"), [("/missing", BAD_STATUS), ("/", BAD_BODY)])
def test_an_unexpected_answer_is_a_failure(target: str, outcome: str) -> None:
    with HttpBackend("app", judging) as backend:
        load = small_load(port_of(backend), target=target, expected_bodies={b"app"})
        with pytest.raises(AssertionError, match="did not get going"):
            load.start(ready_timeout=0.5)
        report = load.stop()
    assert report.records and report.count(outcome) == len(report.records), report.summary()
    assert all(r.status is not None and not r.nothing_received for r in report.records)


def closing_after_each_answer(request: Received) -> Answer:
    """The answer, then the connection closed without ``Connection: close``: the next request
    the client sends on it finds it closed."""
    return Answer(body=b"app", close=True, headers=[("Connection", "keep-alive")])


def test_without_resend_an_idle_close_costs_the_next_request() -> None:
    with HttpBackend("app", closing_after_each_answer) as backend:
        load = small_load(port_of(backend), keep_alive_clients=1, new_connection_clients=0)
        report = run_to_the_end(load, PER_CLIENT)
    lost = report.idle_losses()
    assert lost and lost == report.failures(), report.summary()
    assert all(r.outcome in (CLOSED, RESET) and r.reused for r in lost)
    assert report.ok + len(lost) == PER_CLIENT
    assert (report.idle_closes, report.retries) == (0, 0)


def test_with_resend_an_idle_close_costs_nothing() -> None:
    with HttpBackend("app", closing_after_each_answer) as backend:
        load = small_load(
            port_of(backend), keep_alive_clients=1, new_connection_clients=0, resend=True
        )
        report = run_to_the_end(load, PER_CLIENT)
        # a resent request never reached the backend the first time: it had closed
        assert len(backend.requests) == PER_CLIENT
    assert report.ok == PER_CLIENT and report.failures() == [], report.summary()
    assert report.idle_closes + report.retries >= PER_CLIENT - 1, report.summary()
    assert report.idle_losses() == []


def test_connection_close_answers_open_a_new_connection_each_time() -> None:
    with HttpBackend("app", lambda request: Answer(body=b"app", close=True)) as backend:
        load = small_load(port_of(backend), keep_alive_clients=1, new_connection_clients=0)
        report = run_to_the_end(load, PER_CLIENT)
    assert report.ok == PER_CLIENT, report.summary()
    assert [r.connection for r in report.records] == list(range(1, PER_CLIENT + 1))
    assert not any(r.reused for r in report.records)


def test_the_stream_is_downloaded_and_checked_byte_by_byte() -> None:
    spec = StreamSpec(size=300_000, seconds=0.5, chunk=16_384)
    with HttpBackend("app", load_handler("app", stream=spec)) as backend:
        load = small_load(port_of(backend), stream=spec, max_requests=1_000)
        with load:
            report = load.stop()
    stream = report.stream
    assert stream is not None and stream.complete, report.summary()
    assert stream.received == spec.size and stream.sha256 == spec.sha256
    assert stream.first_byte is not None and stream.local_port > 0
    assert report.failures() == [], report.summary()


def test_named_handler_answers_slow_and_dripping_targets() -> None:
    with HttpBackend("app", named_handler("app")) as backend:
        dripping = small_load(port_of(backend), target="/drip/0.05", max_requests=2)
        slow = small_load(port_of(backend), target="/slow/0.05", max_requests=2)
        for load, body in ((dripping, b"app" * DRIP_CHUNKS), (slow, b"app")):
            report = run_to_the_end(load, 8)
            assert report.ok == 8 and {r.body for r in report.records} == {body[:64]}


def record(outcome: str, connected_at: float, ended: float) -> RequestRecord:
    return RequestRecord("keep-alive 1", 1, connected_at, connected_at, ended, outcome)


def test_cut_at_keeps_the_connections_that_spanned_the_instant() -> None:
    spanning = record(RESET, 1.0, 3.0)
    closed = record(CLOSED, 2.0, 2.5)
    later = record(RESET, 2.5, 4.0)  # connected after the instant
    earlier = record(CLOSED, 0.5, 1.5)  # ended before it
    refused = record(REFUSED, 0.0, 2.2)
    timeout = record("timeout", 1.0, 3.0)
    fine = record(OK, 1.0, 3.0)
    report = LoadReport(
        (spanning, closed, later, earlier, refused, timeout, fine), None, 0, 0, clients=1
    )
    cut, others = report.cut_at(2.0)
    assert cut == [spanning, closed]
    assert others == [later, earlier, refused, timeout]
    assert report.answered_after(0.5) == [fine]
