"""Every refusal of a running daemon says why in a machine-readable ``kind`` (and, for a batch,
the ``index`` of the request at fault), read here from the raw JSON answer as any program in
any language would read it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import DaemonProcess, free_port

from sozu_config import (
    AddCluster,
    AddHttpListener,
    Batch,
    Cluster,
    HttpListenerConfig,
    LoadState,
    QueryState,
    RemoveCluster,
    Request,
    SaveState,
    UpgradeWorker,
    encode_request,
)

pytestmark = pytest.mark.e2e

MAX_COMMAND_BUFFER_SIZE = 65_536


class RawClient:
    """A command socket connection that sends bytes and reads answers as plain JSON."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30.0)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_final(self) -> dict[str, Any]:
        """The next final answer (``processing`` answers are skipped)."""
        while True:
            while b"\n" not in self.buffer:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError(f"closed by the daemon; pending {self.buffer[:200]!r}")
                self.buffer += data
            line, self.buffer = self.buffer.split(b"\n", 1)
            answer: dict[str, Any] = json.loads(line)
            if answer["status"] != "processing":
                return answer

    def request(self, request: Request, request_id: str) -> dict[str, Any]:
        self.send(encode_request(request, request_id))
        answer = self.read_final()
        assert answer["id"] == request_id
        return answer

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("error-kinds")
    config = f"""
worker_count = 1
command_buffer_size = 16384
max_command_buffer_size = {MAX_COMMAND_BUFFER_SIZE}
[[listeners]]
protocol = "http"
address = "127.0.0.1:{free_port()}"
"""
    with DaemonProcess(directory, config).start() as started:
        yield started


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[RawClient]:
    raw = RawClient(daemon.socket_path)
    try:
        yield raw
    finally:
        raw.close()


def version_of(client: RawClient) -> int:
    answer = client.request(QueryState(), "version")
    assert answer["status"] == "ok", answer
    version: int = answer["content"]["version"]
    return version


def test_the_refused_request_of_a_batch_is_named_by_its_index(client: RawClient) -> None:
    before = version_of(client)
    address = f"127.0.0.1:{free_port()}"
    listener = AddHttpListener(listener=HttpListenerConfig(address=address))
    batch = Batch(
        requests=[AddCluster(cluster=Cluster(cluster_id="batch-kinds")), listener, listener]
    )
    answer = client.request(batch, "batch")
    assert answer["status"] == "failure"
    assert (answer["kind"], answer["index"]) == ("already_exists", 2)
    assert answer["message"].startswith("refused by the main process: request 3 of 3")
    results = answer["content"]["results"]
    assert [r["message"] for r in results[:2]] == ["undone", "undone"]
    assert version_of(client) == before


def test_removing_an_unknown_cluster_is_not_found(client: RawClient) -> None:
    answer = client.request(RemoveCluster(cluster_id="no-such-cluster"), "remove")
    assert answer["status"] == "failure"
    assert answer["kind"] == "not_found"
    assert answer.get("index") is None


def test_a_batch_planned_on_an_old_version_is_a_version_mismatch(client: RawClient) -> None:
    stale = version_of(client) + 7
    batch = Batch(
        requests=[AddCluster(cluster=Cluster(cluster_id="never-added"))], expected_version=stale
    )
    answer = client.request(batch, "stale")
    assert answer["status"] == "failure"
    assert answer["kind"] == "version_mismatch"
    assert answer.get("index") is None
    assert [r["message"] for r in answer["content"]["results"]] == ["not applied"]


def test_a_message_that_is_not_json_is_a_bad_request(client: RawClient) -> None:
    client.send(b"this is not json\n")
    answer = client.read_final()
    assert (answer["status"], answer["kind"]) == ("failure", "bad_request")
    client.send(b'{"id": "typo", "request": {"type": "no_such_request"}}\n')
    unknown = client.read_final()
    assert (unknown["id"], unknown["status"], unknown["kind"]) == ("typo", "failure", "bad_request")
    assert version_of(client) > 0  # the connection goes on


def test_an_oversized_message_is_over_the_limit(client: RawClient) -> None:
    client.send(b"x" * (MAX_COMMAND_BUFFER_SIZE * 2) + b"\n")
    answer = client.read_final()
    assert (answer["status"], answer["kind"]) == ("failure", "limit")
    assert "max_command_buffer_size" in answer["message"]


def test_upgrading_an_unknown_worker_is_not_found(client: RawClient) -> None:
    answer = client.request(UpgradeWorker(worker_id=4242), "upgrade")
    assert answer["status"] == "failure"
    assert answer["kind"] == "not_found"
    assert answer["message"] == "no running worker 4242"


def test_state_files_out_of_reach_are_os_errors(client: RawClient, tmp_path: Path) -> None:
    nowhere = tmp_path / "no-such-folder" / "state.jsonl"
    saved = client.request(SaveState(path=str(nowhere)), "save")
    assert (saved["status"], saved["kind"]) == ("failure", "os_error")
    loaded = client.request(LoadState(path=str(nowhere)), "load")
    assert (loaded["status"], loaded["kind"]) == ("failure", "os_error")
