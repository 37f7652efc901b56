"""End-to-end HTTP/2 connection lifecycle (reference §H.1 soft stop, §B.3
``h2_graceful_shutdown_deadline_seconds``, ``h2_stream_idle_timeout_seconds``; sōzu
``h2_tests.rs`` and ``h2_correctness_tests.rs`` items on shutdown, timeouts and live changes).

Each test starts its own daemon (a soft stop ends it); the backend answers ``/slow/<s>``
after ``s`` seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hyperframe.frame import DataFrame, WindowUpdateFrame
from support.backends import Answer, HttpBackend, Received, wait_for
from support.certs import make_certificate
from support.clients import tls_client_context, tls_handshake
from support.daemon import serving_process
from support.h2client import INTERNAL_ERROR, NO_ERROR, REFUSED_STREAM, H2Client
from support.h2proxy import HOST, H2Proxy, h2_proxy

from sozu_config import (
    AddBackend,
    AddCluster,
    AddHttpsFrontend,
    Backend,
    CertificateAndKey,
    Cluster,
    HttpFrontend,
    ListWorkers,
    ReplaceCertificate,
    SoftStop,
    UpgradeWorker,
)
from sozu_config.responses import WorkersContent

pytestmark = pytest.mark.e2e


async def trickle() -> AsyncIterator[bytes]:
    for _ in range(6):
        await asyncio.sleep(0.4)
        yield b"tick "


def handle(request: Received) -> Answer:
    if request.target == "/big-answer":
        return Answer(body=b"x" * 300_000)
    if request.target == "/trickle":
        return Answer(body=trickle)
    if request.target.startswith("/slow/"):
        delay = float(request.target.split("/")[2])
        return Answer(body=b"slow " + request.target.encode(), delay=delay)
    return Answer(body=b"ok " + request.target.encode(), headers=[("X-Backend", "app")])


def send_ok(proxy: H2Proxy, request: object) -> str:
    response = proxy.daemon.send(request)
    assert response.ok, response.message
    return response.message


def soft_stop_in_background(proxy: H2Proxy) -> threading.Thread:
    """Ask for a soft stop from a thread (the answer comes when the workers are done)."""
    thread = threading.Thread(target=lambda: proxy.daemon.send(SoftStop(), timeout=60), daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- soft stop


def test_soft_stop_sends_goaway_and_lets_open_streams_finish(tmp_path: Path) -> None:
    """sōzu ``test_h2_goaway_graceful_drain``,
    ``test_h2_graceful_shutdown_waits_for_inflight_request``: GOAWAY(NO_ERROR) naming the last
    stream, the open stream answered in full, a new stream refused, then the connection closed and
    the daemon gone."""
    with (
        h2_proxy(tmp_path, handle, h2_graceful_shutdown_deadline_seconds=10) as proxy,
        H2Client(proxy.port) as client,
    ):
        assert client.get("/warm").status == 200
        slow = client.request("/slow/1.5")
        wait_for(lambda: any(r.target == "/slow/1.5" for r in proxy.backend.requests))
        stopped = proxy.daemon.send(SoftStop(), timeout=60)
        assert stopped.ok, stopped.message
        assert client.wait_goaway() == NO_ERROR
        assert client.goaway is not None and client.goaway.last_stream_id == slow
        state = client.response(slow)
        assert (state.status, bytes(state.body)) == (200, b"slow /slow/1.5")
        assert client.wait_closed()
        goaway_at = client.frames.index(client.goaway)
        assert goaway_at < max(i for i, f in enumerate(client.frames) if isinstance(f, DataFrame))
        assert proxy.daemon.process is not None
        assert proxy.daemon.process.wait(30) == 0


def test_a_stream_opened_after_goaway_is_refused(tmp_path: Path) -> None:
    """During the drain a new stream gets RST_STREAM(REFUSED_STREAM) (RFC 9113 §6.8: the
    client may retry it elsewhere), the open one is answered."""
    with h2_proxy(tmp_path, handle, h2_graceful_shutdown_deadline_seconds=10) as proxy:
        with H2Client(proxy.port) as client:
            slow = client.request("/slow/2")
            wait_for(lambda: any(r.target == "/slow/2" for r in proxy.backend.requests))
            stopping = soft_stop_in_background(proxy)
            assert client.wait_goaway() == NO_ERROR
            late = client.request("/late")
            assert client.response(late).reset == REFUSED_STREAM
            assert client.response(slow, timeout=10).status == 200
            assert client.wait_closed()
            stopping.join(60)
        assert not any(r.target == "/late" for r in proxy.backend.requests)


@pytest.mark.parametrize(("deadline", "delay", "cut"), [(1, 3, True), (0, 3, False), (8, 6, False)])
def test_graceful_shutdown_deadline(tmp_path: Path, deadline: int, delay: int, cut: bool) -> None:
    """sōzu ``test_h2_graceful_shutdown_deadline_configurable_short``,
    ``test_h2_graceful_shutdown_timeout_forces_close``,
    ``test_h2_graceful_shutdown_deadline_configurable_long``: with a deadline of 1 s a stream
    still waiting after it is cut (the connection closes, no answer); 0 means no deadline
    (§B.3): the stream is answered whenever it ends; 8 s lets a 6 s stream (longer than the
    default 5 s) finish."""
    with (
        h2_proxy(tmp_path, handle, h2_graceful_shutdown_deadline_seconds=deadline) as proxy,
        H2Client(proxy.port) as client,
    ):
        slow = client.request(f"/slow/{delay}")
        wait_for(lambda: any(r.target == f"/slow/{delay}" for r in proxy.backend.requests))
        started = time.monotonic()
        assert proxy.daemon.send(SoftStop(), timeout=60).ok
        state = client.stream(slow)
        client.read_until(lambda: state.done or client.closed, 10)
        assert client.wait_closed()  # once its streams are done, or at the deadline
        assert proxy.daemon.process is not None
        assert proxy.daemon.process.wait(30) == 0
        stopped_after = time.monotonic() - started
        if cut:
            assert state.status is None and client.closed
            assert stopped_after < delay - 0.2, stopped_after
        else:
            assert (state.status, bytes(state.body)) == (200, f"slow /slow/{delay}".encode())
            assert stopped_after >= delay - 0.5, stopped_after


def test_worker_upgrade_with_streams_open(tmp_path: Path) -> None:
    """sōzu ``test_h2_graceful_shutdown_completes_large_transfer`` across a worker upgrade:
    the old worker sends GOAWAY and finishes the open streams; new connections go to the new
    worker."""
    with h2_proxy(tmp_path, handle, h2_graceful_shutdown_deadline_seconds=10) as proxy:
        workers = proxy.daemon.send(ListWorkers()).content
        assert isinstance(workers, WorkersContent)
        (old,) = workers.workers
        with H2Client(proxy.port) as client:
            streams = [client.request(f"/slow/1.{n}") for n in range(3)]
            wait_for(lambda: len([r for r in proxy.backend.requests if "/slow/" in r.target]) == 3)
            send_ok(proxy, UpgradeWorker(worker_id=old.id))
            assert client.wait_goaway() == NO_ERROR
            for n, stream in enumerate(streams):
                state = client.response(stream, timeout=10)
                assert (state.status, bytes(state.body)) == (200, f"slow /slow/1.{n}".encode())
            assert client.wait_closed()
        new_pids = [p for p in proxy.daemon.worker_pids() if p != old.pid]
        assert new_pids
        with H2Client(proxy.port) as fresh:
            assert fresh.get("/after-upgrade").status == 200
            assert serving_process(proxy.port, fresh.local_port, new_pids) in new_pids


# --------------------------------------------------------------------------- timeouts


def test_stream_idle_timeout_answers_408(tmp_path: Path) -> None:
    """sōzu ``test_h2_idle_stream_no_data_cancelled``, ``test_h2_idle_stream_timeout_frees_slot``,
    ``test_h2_active_upload_survives_idle_timeout``, ``e2e_h2_flow_per_stream_idle_timeout``:
    a request body silent for
    ``h2_stream_idle_timeout_seconds`` (1) is answered 408 and its slot freed; a body that keeps
    coming, slower than that in total, is forwarded."""
    settings = {"h2_stream_idle_timeout_seconds": 1, "h2_max_concurrent_streams": 1}
    with h2_proxy(tmp_path, handle, **settings) as proxy, H2Client(proxy.port) as client:
        silent = client.new_stream_id()
        fields = [(":method", "POST"), (":scheme", "https"), (":authority", HOST)]
        client.send_headers(silent, [*fields, (":path", "/silent")], end_stream=False)
        started = time.monotonic()
        state = client.response(silent, timeout=5)
        assert state.status == 408 and 0.8 < time.monotonic() - started < 4
        active = client.new_stream_id()  # the one slot is free again
        client.send_headers(active, [*fields, (":path", "/echo-active")], end_stream=False)
        for _ in range(5):
            time.sleep(0.4)
            client.send_data(active, b"tick", end_stream=False)
        client.send_data(active, b"end")
        assert client.response(active).status == 200
        request = wait_for(
            lambda: [r for r in proxy.backend.requests if r.target == "/echo-active"]
        )
        assert request[0].body == b"tick" * 5 + b"end"


def test_front_idle_timeout_closes_with_goaway(tmp_path: Path) -> None:
    """sōzu ``test_h2_idle_connection_zombie_metric_increments``: a connection with no
    stream for ``front_timeout`` (1 s) gets GOAWAY(NO_ERROR) and is closed."""
    with h2_proxy(tmp_path, handle, front_timeout=1) as proxy, H2Client(proxy.port) as client:
        assert client.get("/once").status == 200
        started = time.monotonic()
        assert client.wait_closed(6)
        assert 0.8 < time.monotonic() - started < 5
        assert client.goaway_code == NO_ERROR


@pytest.mark.parametrize("drip", [False, True], ids=["silent", "window drip"])
def test_a_stream_stalled_on_window_is_reaped(tmp_path: Path, drip: bool) -> None:
    """sōzu ``test_h2_window_stall_silent_reaped``, ``test_h2_window_stall_wu_drip_reaped``,
    ``test_h2_window_stall_response_reaped``: a client that gives no window (or one byte at
    a time) holds its answer, and its backend is no longer read: after ``back_timeout``
    (2 s) of that the stream is reset (RST_STREAM(INTERNAL_ERROR)), the connection goes on."""
    with h2_proxy(tmp_path, handle, back_timeout=2) as proxy:
        with H2Client(proxy.port, window=65_535, credit=False) as client:
            stream = client.request("/big-answer")
            state = client.stream(stream)
            started = time.monotonic()
            while not state.done and time.monotonic() - started < 8:
                client.read_until(lambda: state.done, 0.5)
                if drip:
                    client.send_frame(
                        WindowUpdateFrame(0, window_increment=1),
                        WindowUpdateFrame(stream, window_increment=1),
                    )
            assert state.reset == INTERNAL_ERROR and not state.ended
            assert 1.5 < time.monotonic() - started < 5
            assert 65_535 <= len(state.body) < 300_000
            assert client.get("/still-open").status == 200
        assert wait_for(lambda: proxy.proxying()["http2.active_streams"] == 0)


def test_a_slow_answer_is_not_cut_by_the_stream_idle_timeout(tmp_path: Path) -> None:
    """sōzu ``test_h2_slow_backend_idle_timeout_cancels``: ``h2_stream_idle_timeout_seconds``
    is about the client's request; a backend trickling its answer (a chunk each 0.4 s for
    2.4 s, with a 1 s stream idle timeout) is forwarded whole."""
    with h2_proxy(tmp_path, handle, h2_stream_idle_timeout_seconds=1) as proxy:
        with H2Client(proxy.port) as client:
            state = client.get("/trickle", timeout=10)
        assert (state.status, bytes(state.body)) == (200, b"tick " * 6)


# --------------------------------------------------------------------------- live changes


def test_live_changes_apply_to_new_streams_of_an_open_connection(tmp_path: Path) -> None:
    """sōzu ``test_h2_multi_cluster_routing`` with a cluster added live: a connection
    open before the change routes its next stream by the new state."""
    with h2_proxy(tmp_path, handle) as proxy, H2Client(proxy.port) as client:
        host = "new.wild.example"  # covered by the certificate's *.wild.example
        assert client.get("/before", authority=host).status == 404
        with HttpBackend("new") as new:
            address = f"127.0.0.1:{proxy.port}"
            send_ok(proxy, AddCluster(cluster=Cluster(cluster_id="new")))
            send_ok(
                proxy,
                AddHttpsFrontend(
                    frontend=HttpFrontend(address=address, hostname=host, cluster_id="new")
                ),
            )
            send_ok(proxy, AddBackend(backend=Backend(cluster_id="new", backend_id="n0",
                                                      address=new.address)))  # fmt: skip
            state = client.get("/after", authority=host)
            assert (state.status, bytes(state.body)) == (200, b"new")
            assert client.get("/app").status == 200
            assert client.goaway is None


def test_certificate_rotation_with_an_h2_connection_open(tmp_path: Path) -> None:
    """sōzu ``test_h2_hot_certificate_reload``: ReplaceCertificate while a connection is open:
    it goes on serving; new handshakes present the new certificate."""
    with h2_proxy(tmp_path, handle) as proxy, H2Client(proxy.port) as client:
        assert client.get("/before").status == 200
        old_fingerprint = proxy.certificate.fingerprint
        assert tls_handshake(proxy.port, HOST).fingerprint == old_fingerprint
        renewed = make_certificate(HOST, "other.example", "*.wild.example", "localhost", days=700)
        send_ok(
            proxy,
            ReplaceCertificate(
                address=f"127.0.0.1:{proxy.port}",
                new_certificate=CertificateAndKey(
                    certificate=renewed.cert_pem, key=renewed.key_pem
                ),
                old_fingerprint=old_fingerprint,
            ),
        )
        assert client.get("/after").status == 200
        context = tls_client_context(alpn=["h2"])
        session = tls_handshake(proxy.port, HOST, context=context)
        assert (session.fingerprint, session.alpn) == (renewed.fingerprint, "h2")
        with H2Client(proxy.port) as fresh:
            assert fresh.get("/fresh").status == 200
