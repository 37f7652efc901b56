"""One active check against real servers on 127.0.0.1: the HTTP probe's request and how its
answer is judged, the TCP connection check, timeouts, refusals, the PROXY header."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from sozu_config import HealthCheck
from sozu_config.responses import ProbeResult
from sozu_runtime.health.probes import USER_AGENT, probe

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answering(head: bytes, *, delay: float = 0.0, received: list[bytes] | None = None) -> Serve:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(b"\r\n\r\n")
        if received is not None:
            received.append(data)
        await asyncio.sleep(delay)
        writer.write(head)
        await writer.drain()
        writer.close()

    return serve


def run_probe(check: HealthCheck, serve: Serve | None, **kwargs: object) -> ProbeResult:
    async def main() -> ProbeResult:
        if serve is None:  # nothing listens there
            with socket.socket() as free:
                free.bind(("127.0.0.1", 0))
                port = free.getsockname()[1]
            return await probe(check, "127.0.0.1", port, host_header="h", **kwargs)  # type: ignore[arg-type]
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe(check, "127.0.0.1", port, host_header="app.example", **kwargs)  # type: ignore[arg-type]
        finally:
            server.close()

    return asyncio.run(main())


HTTP = HealthCheck(uri="/health?full=1", timeout=1.0)


def test_the_http_probe_sends_a_get_with_host_user_agent_and_close() -> None:
    received: list[bytes] = []
    outcome = run_probe(HTTP, answering(b"HTTP/1.1 200 OK\r\n\r\n", received=received))
    assert outcome.ok and outcome.detail == "200" and 0 < outcome.latency < 1
    [head] = received
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /health?full=1 HTTP/1.1"
    assert "Host: app.example" in lines
    assert f"User-Agent: {USER_AGENT}" in lines
    assert "Connection: close" in lines


@pytest.mark.parametrize(
    ("expected", "status", "ok"),
    [
        (0, 200, True),
        (0, 204, True),
        (0, 299, True),
        (0, 301, False),
        (0, 500, False),
        (204, 204, True),
        (204, 200, False),
        (503, 503, True),
    ],
)
def test_the_status_is_judged_against_expected_status(expected: int, status: int, ok: bool) -> None:
    check = HTTP.model_copy(update={"expected_status": expected})
    outcome = run_probe(check, answering(f"HTTP/1.1 {status} X\r\n\r\n".encode()))
    assert (outcome.ok, outcome.detail) == (ok, str(status))


def test_a_slower_answer_than_the_timeout_fails() -> None:
    check = HTTP.model_copy(update={"timeout": 0.2})
    outcome = run_probe(check, answering(b"HTTP/1.1 200 OK\r\n\r\n", delay=1.0))
    assert not outcome.ok
    assert outcome.detail == "no answer within 0.2 s"
    assert 0.15 < outcome.latency < 0.9


def test_nothing_listening_fails_with_the_systems_words() -> None:
    outcome = run_probe(HTTP, None)
    assert not outcome.ok and outcome.detail == "connection refused"


@pytest.mark.parametrize(
    ("head", "detail"),
    [
        (b"", "the connection closed without an answer"),
        (b"SSH-2.0-OpenSSH\r\n", "the answer does not start with an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "the answer does not start with an HTTP/1.x status line"),
    ],
)
def test_what_is_not_an_http_answer_fails(head: bytes, detail: str) -> None:
    outcome = run_probe(HTTP, answering(head))
    assert (outcome.ok, outcome.detail) == (False, detail)


def test_the_tcp_check_only_opens_a_connection() -> None:
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())  # until the probe closes
        writer.close()

    outcome = run_probe(HealthCheck(timeout=1.0), serve)
    assert outcome.ok and outcome.detail == "connected"
    assert run_probe(HealthCheck(timeout=1.0), None).detail == "connection refused"


def test_a_backend_expecting_a_proxy_header_gets_a_local_one_first() -> None:
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readexactly(16))
        writer.close()

    outcome = run_probe(HealthCheck(timeout=1.0), serve, proxy_header=True)
    assert outcome.ok
    # PROXY v2 signature, version 2 / LOCAL, family UNSPEC, no address
    assert received == [b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"]
