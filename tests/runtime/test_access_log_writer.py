"""Writing access logs without blocking the event loop (worker/access_log.py): real files and
real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sozu_runtime.worker.access_log import (
    ENTRY_SIZE,
    FLUSH_DELAY,
    AccessEntry,
    AccessLogWriter,
)
from sozu_runtime.worker.proxy import Proxy

ASCII_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d+ \d+ INFO-ACCESS  WRK-07\t"
    r"\[S - app b1\] .* /n(\d+) 200$"
)


def entry(number: int) -> AccessEntry:
    made = AccessEntry()
    made.session_id = "S"
    made.cluster_id, made.backend_id = "app", "b1"
    made.client_address, made.client_port = "127.0.0.1", 40000 + number
    made.protocol, made.method, made.authority = "HTTP", "GET", "app.test"
    made.path, made.status = f"/n{number}", 200
    made.request_time_us, made.service_time_us, made.response_time_us = 1500, 30, 1200
    return made


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def numbers(text: str) -> list[int]:
    found = []
    for line in text.splitlines():
        match = ASCII_LINE.match(line)
        assert match is not None, line
        found.append(int(match[1]))
    return found


def test_lines_reach_the_file_after_the_flush_delay_in_one_write(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def test() -> None:
        writer = AccessLogWriter(f"file://{path}", "ascii", "WRK-07")
        for number in range(100):
            writer.write(entry(number))
        assert path.read_text() == ""  # nothing written while the loop is busy
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        assert numbers(path.read_text()) == list(range(100))
        assert (writer.writes, writer.written, writer.dropped) == (1, 100, 0)
        writer.write(entry(100))
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        assert numbers(path.read_text())[-1] == 100 and writer.writes == 2
        writer.close()

    run(test)


def test_a_large_buffer_is_written_without_waiting_for_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def test() -> None:
        writer = AccessLogWriter(f"file://{path}", "ascii", "WRK-07", flush_bytes=4096)
        count = 0
        while path.stat().st_size == 0 if path.exists() else True:
            writer.write(entry(count))
            count += 1
            assert count < 1000
        # entries are reckoned ENTRY_SIZE characters each until they are formatted
        assert writer.writes == 1 and count == -(-4096 // ENTRY_SIZE)
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        assert numbers(path.read_text()) == list(range(count))
        writer.close()

    run(test)


def test_lines_past_the_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def test() -> None:
        writer = AccessLogWriter(
            f"file://{path}", "ascii", "WRK-07", flush_bytes=1 << 20, max_buffered=2000
        )
        for number in range(50):
            writer.write(entry(number))
        kept = 2000 // ENTRY_SIZE  # entries reckoned ENTRY_SIZE characters each
        assert writer.size == kept * ENTRY_SIZE
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        written = numbers(path.read_text())
        assert written == list(range(kept))
        assert writer.dropped == 50 - kept and writer.written == kept
        writer.write(entry(50))  # room again once written
        writer.close()
        assert numbers(path.read_text())[-1] == 50

    run(test)


def test_reopen_after_a_rename_writes_to_the_new_file(tmp_path: Path) -> None:
    path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"

    async def test() -> None:
        writer = AccessLogWriter(f"file://{path}", "ascii", "WRK-07")
        writer.write(entry(1))
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        path.rename(rotated)
        writer.write(entry(2))  # buffered before the rotation: belongs to the old file
        writer.reopen()
        writer.write(entry(3))
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        assert numbers(rotated.read_text()) == [1, 2]
        assert numbers(path.read_text()) == [3]
        writer.close()

    run(test)


def test_close_writes_what_waits_and_later_lines_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def test() -> None:
        writer = AccessLogWriter(f"file://{path}", "ascii", "WRK-07")
        writer.write(entry(1))
        writer.close()
        assert numbers(path.read_text()) == [1]
        writer.write(entry(2))
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        assert numbers(path.read_text()) == [1] and writer.dropped == 1

    run(test)


def test_json_lines_are_one_object_each_without_prefix(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def test() -> None:
        writer = AccessLogWriter(f"file://{path}", "json", "WRK-02")
        for number in range(3):
            writer.write(entry(number))
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        objects = [json.loads(line) for line in path.read_text().splitlines()]
        assert [o["path"] for o in objects] == ["/n0", "/n1", "/n2"]
        assert all(o["worker"] == "WRK-02" and o["time"].endswith("Z") for o in objects)
        assert all(abs(time.time() - _epoch(o["time"])) < 60 for o in objects)  # stamped now
        writer.close()

    run(test)


def _epoch(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text).timestamp()


def test_udp_target_gets_one_datagram_per_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]

        async def test() -> None:
            writer = AccessLogWriter(f"udp://127.0.0.1:{port}", "ascii", "WRK-07")
            for number in range(5):
                writer.write(entry(number))
            await asyncio.sleep(FLUSH_DELAY + 0.02)
            writer.close()

        run(test)
        datagrams = [receiver.recv(65536).decode() for _ in range(5)]
    assert all(d.endswith("\n") and d.count("\n") == 1 for d in datagrams)
    assert numbers("".join(datagrams)) == list(range(5))


def test_tcp_target_keeps_whole_lines_when_the_collector_is_slow() -> None:
    """A collector that stops reading: what the socket cannot take waits up to the bound, then
    lines are dropped and counted; once it reads again, the waiting lines arrive whole."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)  # the loop's sock_accept waits, never the thread
        port = server.getsockname()[1]

        async def test() -> bytes:
            loop = asyncio.get_running_loop()
            writer = AccessLogWriter(
                f"tcp://127.0.0.1:{port}", "ascii", "WRK-07", max_buffered=16_384
            )
            writer.write(entry(0))
            await asyncio.sleep(FLUSH_DELAY + 0.02)
            collector, _ = await loop.sock_accept(server)
            collector.setblocking(False)
            number = 1
            while writer.dropped == 0:  # the kernel's buffers fill, then the bound
                assert number < 200_000
                for _ in range(50):
                    writer.write(entry(number))
                    number += 1
                await asyncio.sleep(FLUSH_DELAY + 0.02)
                assert writer.sink.pending <= writer.max_buffered
            received = b""
            deadline = loop.time() + 20
            while writer.written + writer.dropped < number or writer.sink.pending:
                assert loop.time() < deadline
                try:
                    received += await asyncio.wait_for(loop.sock_recv(collector, 1 << 20), 0.2)
                except TimeoutError:
                    pass
            writer.close()
            while True:
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(collector, 1 << 20), 0.5)
                except TimeoutError:
                    break
                if not chunk:
                    break
                received += chunk
            collector.close()
            assert received.count(b"\n") == writer.written == number - writer.dropped
            return received

        received = asyncio.run(asyncio.wait_for(test(), 60))
    found = numbers(received.decode())  # every line whole
    assert found == sorted(found) and found[0] == 0


def test_the_proxy_builds_no_writer_when_access_logs_are_off(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def test() -> None:
        proxy = Proxy(worker_id=7)
        assert not proxy.access_logs and proxy.access_writer is None
        proxy.access_log(entry(1))  # nothing to write to: ignored
        proxy.configure_access_logs(f"file://{path}", "ascii", "WRK-07")
        assert proxy.access_logs
        proxy.access_log(entry(1))
        await asyncio.sleep(FLUSH_DELAY + 0.02)
        (first,) = path.read_text().splitlines()
        assert numbers(first) == [1]
        assert re.match(r"^\S+Z \d+ \d+ INFO-ACCESS  WRK-07\t", first)
        proxy.access_log(entry(2))
        proxy.close_access_log()  # the worker stops: what waits is written
        assert numbers(path.read_text().splitlines()[-1]) == [2]

    run(test)


def test_tcp_target_connects_again_after_the_collector_went_away() -> None:
    """Lines sent while the connection is lost are counted as dropped, never raised or waited
    for; the next lines go over a new connection."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)  # the loop's sock_accept waits, never the thread
        port = server.getsockname()[1]

        async def test() -> None:
            loop = asyncio.get_running_loop()
            writer = AccessLogWriter(f"tcp://127.0.0.1:{port}", "ascii", "WRK-07", flush_delay=0)
            writer.write(entry(0))
            await asyncio.sleep(FLUSH_DELAY + 0.02)
            first, _ = await loop.sock_accept(server)
            assert numbers((await loop.sock_recv(first, 65536)).decode()) == [0]
            first.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            first.close()  # reset: the writer's next sends fail
            number = 1
            second = None
            deadline = loop.time() + 10
            while second is None:
                assert loop.time() < deadline
                writer.write(entry(number))
                number += 1
                try:
                    second, _ = await asyncio.wait_for(loop.sock_accept(server), 0.05)
                except TimeoutError:
                    pass
            assert writer.dropped >= 1
            writer.write(entry(number))
            writer.close()
            received = b""
            while not received.endswith(f"/n{number} 200\n".encode()):
                assert loop.time() < deadline
                received += await asyncio.wait_for(loop.sock_recv(second, 65536), 5)
            second.close()
            assert writer.written + writer.dropped == number + 1
            assert numbers(received.decode())[-1] == number

        run(test)
