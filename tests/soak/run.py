"""The soak session (``nox -s soak``): minutes of mixed and hostile traffic, memory sampled.

A daemon (two workers) serves an HTTP, an HTTPS and a TCP listener in front of a backend
process. For ``--seconds`` (default 180) this process drives, at the same time:

* keep-alive HTTP clients (GET and POST with a body), new-connection HTTP clients, keep-alive
  HTTPS clients and TCP echo clients, each checking every answer;
* TLS handshake floods: every ``--flood-every`` seconds, ``--flood`` silent connections to
  the HTTPS port, held a few seconds, then dropped;
* slow readers: every ``--flood-every`` seconds, ``--slow`` clients ask for a 4 MiB answer,
  read a few bytes and stall, then go away.

The resident memory (VmRSS) of the main process and of each worker is sampled every second.
The start is taken after a warm-up (one exchange of each kind: imports, caches and pools are
in place); once the load stops and the proxy has had ``--settle`` seconds to close what is
idle, each process must be back within 10 % of its start. The report (exchanges, failures,
RSS start/peak/end per process) is printed and written to ``<out>/soak.json``.

Usage::

    python tests/soak/run.py [--seconds 180] [--settle 45] [--flood 600] [--slow 40]
                             [--flood-every 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from support.certs import make_certificate  # noqa: E402
from support.daemon import DaemonProcess, free_ports  # noqa: E402

from sozu_config import ListWorkers  # noqa: E402

DEFAULT_OUT = TESTS.parent / ".soak"
BIG = 4 << 20
SMALL_BODY = b"soak-ok\n"
TOLERANCE = 0.10  # back within 10 % of the start


# --------------------------------------------------------------------------- the backend


def _backend_main(http_port: int, tcp_port: int) -> None:
    """The origin, in a process of its own: /big streams 4 MiB, anything else is small; POST
    bodies are read and counted. The TCP port echoes."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                if head.startswith(b"GET /big "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
                    block = b"b" * 65536
                    for _ in range(BIG // len(block)):
                        writer.write(block)
                        await writer.drain()
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(SMALL_BODY), SMALL_BODY)
                    )
                await writer.drain()
        writer.close()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve() -> None:
        await asyncio.start_server(http, "127.0.0.1", http_port, backlog=1024)
        await asyncio.start_server(echo, "127.0.0.1", tcp_port, backlog=1024)
        await asyncio.Event().wait()

    asyncio.run(serve())


# --------------------------------------------------------------------------- the clients


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def fail(self, kind: str, error: BaseException | str) -> None:
        self.failed[kind] += 1
        self.errors[f"{kind}: {error if isinstance(error, str) else type(error).__name__}"] += 1


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return status, await reader.readexactly(length)


async def _keep_alive(
    port: int, host: bytes, stop: float, tally: Tally, kind: str, context: ssl.SSLContext | None
) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 10
            )
            for index in range(50):
                if index % 5 == 4:
                    body = b"p" * 2000
                    writer.write(
                        b"POST /post HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s"
                        % (host, len(body), body)
                    )
                else:
                    writer.write(b"GET /small HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
                status, body = await asyncio.wait_for(_answer(reader), 15)
                if status == 200 and body == SMALL_BODY:
                    tally.ok[kind] += 1
                else:
                    tally.fail(kind, f"status {status}")
            writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
            tally.fail(kind, error)
            await asyncio.sleep(0.1)


async def _new_connections(port: int, host: bytes, stop: float, tally: Tally) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(b"GET /small HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host)
            status, body = await asyncio.wait_for(_answer(reader), 15)
            tally.ok["http-new"] += status == 200 and body == SMALL_BODY
            writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
            tally.fail("http-new", error)
            await asyncio.sleep(0.1)


async def _tcp_echo(port: int, stop: float, tally: Tally) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            for index in range(20):
                payload = b"echo-%d-" % index * 50
                writer.write(payload)
                received = await asyncio.wait_for(reader.readexactly(len(payload)), 15)
                if received == payload:
                    tally.ok["tcp"] += 1
                else:
                    tally.fail("tcp", "wrong echo")
            writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            tally.fail("tcp", error)
            await asyncio.sleep(0.1)


async def _handshake_flood(port: int, count: int, hold: float, tally: Tally) -> None:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    tally.ok["flood-connections"] += count
    await asyncio.sleep(hold)
    for sock in sockets:
        sock.close()


async def _slow_reader(port: int, host: bytes, hold: float, tally: Tally) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        transport = writer.transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /big HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        await asyncio.wait_for(reader.read(1024), 15)  # a first piece, then nothing
        transport.pause_reading()
        tally.ok["slow-readers"] += 1
        await asyncio.sleep(hold)
        writer.close()
    except (OSError, TimeoutError) as error:
        tally.fail("slow-readers", error)


async def _hostile(
    ports: dict[str, int], options: argparse.Namespace, stop: float, tally: Tally
) -> None:
    while time.monotonic() < stop:
        await asyncio.gather(
            _handshake_flood(ports["https"], options.flood, 4.0, tally),
            *(_slow_reader(ports["http"], b"soak.test", 5.0, tally) for _ in range(options.slow)),
        )
        await asyncio.sleep(max(0.0, options.flood_every - 5.0))


async def _drive(ports: dict[str, int], options: argparse.Namespace, tally: Tally) -> None:
    stop = time.monotonic() + options.seconds
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tasks = [
        *(_keep_alive(ports["http"], b"soak.test", stop, tally, "http", None) for _ in range(8)),
        *(
            _keep_alive(ports["https"], b"soak.test", stop, tally, "https", context)
            for _ in range(4)
        ),
        *(_new_connections(ports["http"], b"soak.test", stop, tally) for _ in range(4)),
        *(_tcp_echo(ports["tcp"], stop, tally) for _ in range(2)),
        _hostile(ports, options, stop, tally),
    ]
    await asyncio.gather(*tasks)


async def _warm_up(ports: dict[str, int], tally: Tally) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stop = time.monotonic() + 2.0
    await asyncio.gather(
        _keep_alive(ports["http"], b"soak.test", stop, tally, "warm-up", None),
        _keep_alive(ports["https"], b"soak.test", stop, tally, "warm-up", context),
        _new_connections(ports["http"], b"soak.test", stop, tally),
        _tcp_echo(ports["tcp"], stop, tally),
        _slow_reader(ports["http"], b"soak.test", 0.5, tally),
    )


# --------------------------------------------------------------------------- memory


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _processes(daemon: DaemonProcess) -> dict[str, int]:
    response = daemon.send(ListWorkers())
    workers = response.content.workers  # type: ignore[union-attr]
    found = {"main": daemon.pid}
    found.update({f"worker {w.id}": w.pid for w in workers})
    return found


async def _sample(
    processes: dict[str, int], samples: dict[str, list[int]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        for name, pid in processes.items():
            samples[name].append(_rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# --------------------------------------------------------------------------- the session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--settle", type=int, default=45, help="seconds after the load")
    parser.add_argument("--flood", type=int, default=600, help="silent TLS connections")
    parser.add_argument("--slow", type=int, default=40, help="slow readers per wave")
    parser.add_argument("--flood-every", type=float, default=10.0, help="seconds between waves")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)

    directory = Path(tempfile.mkdtemp(prefix="sozu-soak-"))
    made = make_certificate("soak.test")
    (directory / "cert.pem").write_text(made.cert_pem)
    (directory / "key.pem").write_text(made.key_pem)
    http, https, tcp, origin, echo = free_ports(5)
    ports = {"http": http, "https": https, "tcp": tcp}
    backend = multiprocessing.get_context("spawn").Process(
        target=_backend_main, args=(origin, echo), daemon=True
    )
    backend.start()
    config = f"""
worker_count = 2
max_connections = 1000
[[listeners]]
protocol = "http"
address = "127.0.0.1:{http}"
[[listeners]]
protocol = "https"
address = "127.0.0.1:{https}"
certificate = "cert.pem"
key = "key.pem"
request_timeout = 3
[[listeners]]
protocol = "tcp"
address = "127.0.0.1:{tcp}"

[clusters.soak]
protocol = "http"
frontends = [
  {{ address = "127.0.0.1:{http}", hostname = "soak.test" }},
  {{ address = "127.0.0.1:{https}", hostname = "soak.test" }},
]
backends = [{{ address = "127.0.0.1:{origin}" }}]

[clusters.pipe]
protocol = "tcp"
frontends = [{{ address = "127.0.0.1:{tcp}" }}]
backends = [{{ address = "127.0.0.1:{echo}" }}]
"""
    tally = Tally()
    samples: dict[str, list[int]] = {}
    try:
        with DaemonProcess(directory, config).start() as daemon:
            asyncio.run(_warm_up(ports, tally))
            time.sleep(1.0)
            processes = _processes(daemon)
            start = {name: _rss_kib(pid) for name, pid in processes.items()}
            samples = {name: [value] for name, value in start.items()}
            print(f"soak: {options.seconds} s of load, then {options.settle} s to settle")
            print("start RSS: " + ", ".join(f"{n} {v / 1024:.1f} MiB" for n, v in start.items()))

            async def session() -> None:
                stop = asyncio.Event()
                sampler = asyncio.create_task(_sample(processes, samples, stop))
                await _drive(ports, options, tally)
                await asyncio.sleep(options.settle)
                stop.set()
                await sampler

            asyncio.run(session())
            end = {name: _rss_kib(pid) for name, pid in processes.items()}
            daemon_logs = daemon.logs()
    finally:
        backend.kill()
    report = {
        "seconds": options.seconds,
        "settle": options.settle,
        "exchanges": dict(tally.ok),
        "failures": dict(tally.failed),
        "errors": dict(tally.errors.most_common(10)),
        "rss_kib": {
            name: {
                "start": start[name],
                "peak": max(samples[name]),
                "median_under_load": int(statistics.median(samples[name])),
                "end": end[name],
            }
            for name in start
        },
        "tolerance": TOLERANCE,
    }
    ok = True
    print("exchanges: " + ", ".join(f"{k} {v:,}" for k, v in sorted(tally.ok.items())))
    print("failures: " + (", ".join(f"{k} {v:,}" for k, v in tally.errors.items()) or "none"))
    for name, memory in report["rss_kib"].items():  # type: ignore[union-attr]
        back = memory["end"] <= memory["start"] * (1 + TOLERANCE)
        ok &= back
        print(
            f"{name:>9}: start {memory['start'] / 1024:6.1f} MiB  peak "
            f"{memory['peak'] / 1024:6.1f} MiB  end {memory['end'] / 1024:6.1f} MiB  "
            f"{'ok' if back else 'NOT BACK within 10 %'}"
        )
    steady = sum(tally.ok[k] for k in ("http", "https", "http-new", "tcp"))
    lost = sum(tally.failed[k] for k in ("http", "https", "http-new", "tcp"))
    if steady == 0 or lost > steady * 0.001:
        ok = False
        print(f"too many failed exchanges of the steady clients: {lost} of {steady + lost}")
    report["ok"] = ok
    (options.out / "soak.json").write_text(json.dumps(report, indent=2))
    (options.out / "daemon.log").write_text(daemon_logs)
    print(f"report: {options.out / 'soak.json'}; {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
