"""A worker process on its own: the channel's messages in, its answers out, no main process.

The worker runs as it does under the daemon (``python -m sozu_runtime.worker``), given one end
of a socketpair; the test plays the main process on the other end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from sozu_config import requests as rq
from sozu_config.models import Backend, Cluster
from sozu_runtime.messages import Setup, WorkerMessage, encode_message


class Channel:
    """The main process's end of a worker's channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.buffer = b""

    def send(self, message: WorkerMessage | bytes) -> None:
        self.sock.sendall(message if isinstance(message, bytes) else encode_message(message))

    def answer(self, request_id: str) -> dict[str, Any]:
        """The next answer with ``request_id`` (events are skipped)."""
        while True:
            while b"\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                assert chunk, "the worker closed its channel"
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            answer: dict[str, Any] = json.loads(line)
            if answer["id"] == request_id:
                return answer


@pytest.fixture
def worker() -> Iterator[Channel]:
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "sozu_runtime.worker", "--id", "0", "--fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    theirs.close()
    try:
        yield Channel(ours)
    finally:
        ours.close()  # the worker sees its channel close and stops
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_request_before_setup_is_refused_as_unavailable(worker: Channel) -> None:
    worker.send(WorkerMessage(id="1", request=rq.Status()))
    answer = worker.answer("1")
    assert answer["status"] == "failure"
    assert answer["kind"] == "unavailable"
    assert answer["message"] == "the worker is not set up yet"


def test_an_empty_message_is_a_bad_request(worker: Channel) -> None:
    worker.send(WorkerMessage(id="1"))
    answer = worker.answer("1")
    assert (answer["status"], answer["kind"]) == ("failure", "bad_request")


def test_requests_are_dispatched_by_family_and_refusals_keep_their_kind(worker: Channel) -> None:
    worker.send(WorkerMessage(id="setup", control=Setup(worker_id=0)))
    assert worker.answer("setup")["status"] == "ok"

    # a state request: applied to the worker's state
    worker.send(WorkerMessage(id="2", request=rq.AddCluster(cluster=Cluster(cluster_id="app"))))
    assert worker.answer("2")["status"] == "ok"

    # a state request the worker's state refuses: the refusal's kind comes back
    orphan = Backend(cluster_id="nowhere", backend_id="b", address="127.0.0.1:9")
    worker.send(WorkerMessage(id="3", request=rq.AddBackend(backend=orphan)))
    refused = worker.answer("3")
    assert (refused["status"], refused["kind"]) == ("failure", "not_found")
    assert "index" not in refused

    # in a batch, the index of the request at fault
    batch = rq.Batch(
        requests=[
            rq.AddCluster(cluster=Cluster(cluster_id="api")),
            rq.AddBackend(backend=orphan),
        ]
    )
    worker.send(WorkerMessage(id="4", request=batch))
    refused = worker.answer("4")
    assert (refused["status"], refused["kind"], refused["index"]) == ("failure", "not_found", 1)

    # the refused batch changed nothing; a query is answered from the worker's own state
    worker.send(WorkerMessage(id="5", request=rq.QueryClustersHashes()))
    hashes = worker.answer("5")
    assert hashes["status"] == "ok"
    assert set(hashes["content"]["hashes"]) == {"app"}
