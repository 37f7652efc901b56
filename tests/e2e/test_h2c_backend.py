"""End-to-end HTTP/2 to backends (h2c, prior knowledge) with the real daemon: the four
combinations of HTTP/1.1 or HTTP/2 from the client and HTTP/1.1 or h2c to the backend
(reference §E.10, §B.4 ``http2``; sōzu's ``test_tls_cardinality_*``), and ``http2`` switched on
a live cluster.

One daemon (one worker) serves the module on one HTTPS listener (ALPN ``h2`` and
``http/1.1``): ``h1.h2c.test`` goes to an HTTP/1.1 :class:`HttpBackend`, ``h2.h2c.test`` to an
:class:`H2cServer` on a cluster with ``http2 = true``, ``toggle.h2c.test`` to another
:class:`H2cServer` (which also answers HTTP/1.1, saying so) on a cluster whose ``http2`` the
tests switch. The client is ``curl``, told ``--http1.1`` or ``--http2``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.certs import make_certificate
from support.daemon import DaemonProcess, free_port, sozu_command
from support.h2c_server import H2cServer

from sozu_config import QueryMetrics
from sozu_config.responses import MetricsContent

pytestmark = pytest.mark.e2e

NAMES = ("h1.h2c.test", "h2.h2c.test", "toggle.h2c.test")
UPLOAD = 10 << 20
CURL_TIMEOUT = 60


def h1_handler(request: Received) -> Answer:
    """The HTTP/1.1 backend: the same answers as :class:`H2cServer` for the same paths."""
    path = request.target.split("?", 1)[0]
    if path.startswith("/status/"):
        return Answer(status=int(path.rsplit("/", 1)[1]))
    if path == "/trailers":
        return Answer(
            raw=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-checksum: %s\r\n\r\n" % request.body_sha256.encode()
        )
    fields = ("h1", request.method, request.target, str(request.body_length), request.body_sha256)
    return Answer(body=" ".join(fields).encode())


@dataclass
class Setup:
    daemon: DaemonProcess
    port: int
    h1: HttpBackend
    h2: H2cServer
    toggle: H2cServer
    upload: Path
    directory: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("h2c")
    certificate = make_certificate(*NAMES)
    cert_path, key_path = directory / "cert.pem", directory / "cert.key"
    cert_path.write_text(certificate.cert_pem)
    key_path.write_text(certificate.key_pem)
    upload = directory / "upload.bin"
    upload.write_bytes(bytes(range(251)) * (UPLOAD // 251) + b"x" * (UPLOAD % 251))
    with (
        HttpBackend("h1", h1_handler, keep_bodies=False) as h1,
        H2cServer("h2") as h2,
        H2cServer("toggle") as toggle,
    ):
        port = free_port()
        config = configs.document(
            configs.https_listener(port, certificate=cert_path, key=key_path),
            configs.http_cluster("h1", port, NAMES[0], [h1.address]),
            configs.http_cluster("h2", port, NAMES[1], [h2.address], http2=True),
            configs.http_cluster("toggle", port, NAMES[2], [toggle.address]),
            worker_count=1,
        )
        with DaemonProcess(directory, config).start() as daemon:
            yield Setup(daemon, port, h1, h2, toggle, upload, directory)


@dataclass
class CurlAnswer:
    status: int
    version: str  # the HTTP version curl spoke to the proxy ("1.1" or "2")
    headers: str  # the head (and trailers) as curl wrote them, lowercase
    body: bytes


def curl(setup: Setup, host: str, target: str, front: str, *options: str) -> CurlAnswer:
    """``curl`` to ``https://host/target`` through the proxy, speaking ``front`` ("h1" or
    "h2") to it."""
    headers = setup.directory / "headers.txt"
    command = [
        "curl",
        "-sS",
        "-k",
        "--max-time",
        str(CURL_TIMEOUT - 10),
        "--http1.1" if front == "h1" else "--http2",
        "--resolve",
        f"{host}:{setup.port}:127.0.0.1",
        "-D",
        str(headers),
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version}",
        *options,
        f"https://{host}:{setup.port}{target}",
    ]
    result = subprocess.run(command, capture_output=True, timeout=CURL_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    body, _, tail = result.stdout.rpartition(b"\n")
    status, version = tail.decode().split()
    return CurlAnswer(int(status), version, headers.read_text().lower(), body)


FRONTS = ("h1", "h2")
BACKS = {"h1": NAMES[0], "h2": NAMES[1]}


@pytest.mark.parametrize("back", list(BACKS))
@pytest.mark.parametrize("front", FRONTS)
def test_get_head_204_and_trailers(setup: Setup, front: str, back: str) -> None:
    host = BACKS[back]
    answer = curl(setup, host, "/hello?x=1", front)
    assert answer.version == ("1.1" if front == "h1" else "2")
    assert answer.status == 200
    empty = hashlib.sha256(b"").hexdigest()
    assert answer.body == f"{back} GET /hello?x=1 0 {empty}".encode()
    assert re.search(r"^sozu-id: ", answer.headers, re.M)

    head = curl(setup, host, "/hello", front, "-I")
    assert head.status == 200
    assert head.body.endswith(b"\r\n\r\n")  # (-I writes the head there) and nothing after
    assert re.search(r"^content-length: \d+", head.headers, re.M)

    nothing = curl(setup, host, "/status/204", front)
    assert nothing.status == 204 and nothing.body == b""

    trailers = curl(setup, host, "/trailers", front, "-H", "TE: trailers")
    assert trailers.status == 200
    assert f"x-checksum: {empty}" in trailers.headers  # the trailer reached the client
    if back == "h2":  # TE: trailers is said to an HTTP/2 backend (hop-by-hop for HTTP/1.1)
        assert setup.h2.seen[-1].headers.get("te") == "trailers"
    else:
        assert setup.h1.requests[-1].header("te") is None


@pytest.mark.parametrize("back", list(BACKS))
@pytest.mark.parametrize("front", FRONTS)
def test_a_10_mib_upload_arrives_whole(setup: Setup, front: str, back: str) -> None:
    digest = hashlib.sha256(setup.upload.read_bytes()).hexdigest()
    options = ["--data-binary", f"@{setup.upload}", "-H", "Content-Type: application/x-test"]
    if front == "h1":  # streamed chunked from an HTTP/1.1 client (HTTP/2 has no such coding)
        options += ["-H", "Transfer-Encoding: chunked"]
    answer = curl(setup, BACKS[back], "/upload", front, *options)
    assert answer.status == 200
    assert answer.body.endswith(f" POST /upload {UPLOAD} {digest}".encode())
    if back == "h1":
        received = setup.h1.requests[-1]
        assert (received.body_length, received.body_sha256) == (UPLOAD, digest)
    else:
        seen = setup.h2.seen[-1]
        assert (seen.body_size, seen.sha256) == (UPLOAD, digest)


def test_a_websocket_upgrade_to_an_h2c_cluster_is_a_502(setup: Setup) -> None:
    """(An HTTP/2 client has no Upgrade: HTTP/1.1 clients only.)"""
    seen = len(setup.h2.seen)
    answer = curl(
        setup,
        NAMES[1],
        "/ws",
        "h1",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    assert answer.status == 502
    assert len(setup.h2.seen) == seen  # nothing reached the backend


def test_requests_to_an_h2c_cluster_share_its_connection(setup: Setup) -> None:
    before = proxying(setup)["http2.backend_streams"]
    connections = setup.h2.connections
    for n in range(5):
        assert curl(setup, NAMES[1], f"/again/{n}", "h2").status == 200
    assert setup.h2.connections <= connections + 1  # one connection (if none was open)
    figures = proxying(setup)
    assert figures["http2.backend_streams"] == before + 5
    assert figures["http2.backend_connections"] == 1


def proxying(setup: Setup) -> dict[str, Any]:
    content = setup.daemon.send(QueryMetrics()).content
    assert isinstance(content, MetricsContent)
    return content.proxying


def test_http2_switched_on_a_live_cluster(setup: Setup) -> None:
    host = NAMES[2]
    answer = curl(setup, host, "/before", "h1")
    assert answer.body == b"h1 toggle GET /before"  # HTTP/1.1 to the backend
    switch(setup, "enable")
    answer = curl(setup, host, "/during", "h2")
    assert answer.body.startswith(b"toggle GET /during 0 ")  # a stream of an h2c connection
    assert [seen.path for seen in setup.toggle.seen] == ["/during"]
    switch(setup, "disable")
    answer = curl(setup, host, "/after", "h1")
    assert answer.body == b"h1 toggle GET /after"
    assert setup.toggle.h1_seen == ["/before", "/after"]
    assert len(setup.toggle.seen) == 1


def switch(setup: Setup, how: str) -> None:
    result = subprocess.run(
        [
            *sozu_command(),
            "-c",
            str(setup.daemon.config_path),
            "cluster",
            "h2",
            how,
            "-i",
            "toggle",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
