"""The origin server and the targets wrk is pointed at.

A target is something with an HTTP port (and, unless it is the naive proxy, an HTTPS port)
that answers ``Host: bench.local`` requests with the origin's content: the origin itself
(``direct``), sōzu, HAProxy, nginx or the naive aiohttp proxy. Each proxy is a small class that
writes its configuration and knows its command line; starting, probing and stopping are shared.

The HTTPS ports also speak HTTP/2 (ALPN ``h2``). Requests for ``/h2c`` go to the origin's h2c
listener (HTTP/2 in clear text, prior knowledge) through the proxies that can speak h2c to a
backend (``speaks_h2c``), for the HTTP/2 load that measures that path.

Placement: the origin and wrk share the client CPU, every proxy runs alone on the proxy CPU, so
a proxy's throughput is bounded by one core and never competes with the load generator. The
multi-core targets (``multi_core``: sōzu with two workers, HAProxy with two threads) run on
both CPUs, the client's included: on a two-core machine they share it with wrk and the origin.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from loadbench.certificates import TlsMaterial
from loadbench.config_templates import write_config
from loadbench.loads import HOSTNAME, Load
from loadbench.processes import PinnedProcess
from sozu_config.client import ClientError, CommandClient
from sozu_config.requests import ConfigureMetrics
from sozu_runtime.compiled import PURE_ENV

# Every server listens on loopback only.
LOOPBACK = "127.0.0.1"

# What the origin serves; the probes check that a target relays exactly this.
SMALL_BODY = b"hello world\n"
STATIC_FILES = {"/64k": 64 * 1024, "/1m": 1024 * 1024}

BENCHMARKS_DIRECTORY = Path(__file__).resolve().parent.parent

# How often readiness is probed while a server starts.
_PROBE_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 2.0
# How long a command sent on sozu's command socket may take.
_COMMAND_TIMEOUT_S = 10.0


def allocate_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free ephemeral ports on loopback.

    All sockets are held open until every port is known so the ports are distinct; another
    program could still take one before the server binds it, which only makes that server fail
    to start (and be reported as failed).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def allocate_udp_port() -> int:
    """A free UDP port on loopback (UDP ports are apart from TCP ones: it may equal one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _client_tls_context() -> ssl.SSLContext:
    # The certificate is self-signed and the probes check content, not identity.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fetch(
    port: int, path: str, tls: bool, timeout_s: float = _PROBE_TIMEOUT_S
) -> tuple[int, bytes]:
    """GET ``path`` from ``127.0.0.1:port`` with ``Host: bench.local``; return status and body.

    Over TLS the SNI is ``bench.local`` (Python sends no SNI for an IP address, unlike wrk).
    Raises ``OSError`` or ``http.client.HTTPException`` when there is no valid answer.
    """
    raw = socket.create_connection((LOOPBACK, port), timeout=timeout_s)
    sock: socket.socket = raw
    try:
        if tls:
            sock = _client_tls_context().wrap_socket(raw, server_hostname=HOSTNAME)
        request = f"GET {path} HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("ascii"))
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return response.status, response.read()
        finally:
            response.close()
    finally:
        sock.close()


@dataclass
class Readiness:
    """The outcome of starting a target.

    ``available`` is false when the plain-HTTP probes never succeeded; ``tls_available`` is
    ``None`` for a target that serves no TLS. ``detail`` says what went wrong and
    ``output_head`` holds the first lines the target printed, for the report.
    """

    available: bool
    tls_available: bool | None
    detail: str = ""
    output_head: list[str] = field(default_factory=list)


def _content_problem(port: int, tls: bool) -> str | None:
    """Check that ``/``, ``/64k`` and ``/1m`` come back intact; describe the first problem."""
    status, body = fetch(port, "/", tls)
    if status != 200 or body != SMALL_BODY:
        return f"GET / answered {status} with {body[:40]!r}"
    for path, size in STATIC_FILES.items():
        status, body = fetch(port, path, tls, timeout_s=10.0)
        if status != 200 or len(body) != size:
            return f"GET {path} answered {status} with {len(body)} bytes, expected {size}"
    return None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Server(ABC):
    """A server process of the benchmark, with its own directory and its own two ports."""

    name: ClassVar[str]
    # Seconds to wait for the first 200 before declaring the server failed.
    startup_timeout_s: ClassVar[float] = 10.0

    def __init__(self, directory: Path, cpu: int | str, http_port: int, https_port: int) -> None:
        self.directory = directory
        self.cpu = cpu
        self.http_port = http_port
        self.https_port = https_port
        self.process: PinnedProcess | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """Write the configuration into ``directory`` and return the command line to run."""

    def start(self) -> None:
        """Write the configuration and start the pinned process."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # Group- and world-traversable: nginx started as root serves files as ``nobody``.
        self.directory.chmod(0o755)
        self.process = PinnedProcess(
            self.name, self.command(), self.cpu, self.directory / "output.log"
        )
        self.process.start(cwd=self.directory, env=self.environment())

    def environment(self) -> dict[str, str] | None:
        """The process's environment (None: the benchmark's own)."""
        return None

    def stop(self) -> None:
        """Stop the process group, if it was started (idempotent)."""
        if self.process is not None:
            self.process.stop()

    def exit_code(self) -> int | None:
        """The process's exit status if it has ended, else ``None``."""
        return self.process.exit_code() if self.process else None

    def output_head(self, lines: int = 8) -> list[str]:
        """The first lines the process printed."""
        return self.process.output_head(lines) if self.process else []

    def url(self, load: Load) -> str:
        """The URL wrk requests for ``load``."""
        if load.tls:
            return f"https://{LOOPBACK}:{self.https_port}{load.path}"
        return f"http://{LOOPBACK}:{self.http_port}{load.path}"

    def h2_endpoint(self, load: Load) -> tuple[str, str]:
        """(the URL, where to connect) h2load uses for the HTTP/2 ``load``: the URL names
        ``bench.local``, so that it is the SNI and the ``:authority``, as for a real client."""
        return f"https://{HOSTNAME}:{self.https_port}{load.path}", f"{LOOPBACK}:{self.https_port}"

    def answers(self) -> bool:
        """One readiness probe: does ``GET /`` answer 200 over plain HTTP?"""
        try:
            status, _ = fetch(self.http_port, "/", tls=False, timeout_s=1.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def wait_until_ready(self) -> Readiness:
        """Poll until the server answers, it exits, or ``startup_timeout_s`` passes.

        Once it answers, the content of every path is checked over HTTP and, if the server has
        a TLS listener, over HTTPS, so that a proxy relaying wrong bytes is never benchmarked.
        """
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.answers():
            code = self.exit_code()
            if code is not None:
                return self._failed(f"exited with status {code} before answering")
            if time.monotonic() > deadline:
                return self._failed(f"no 200 on GET / within {self.startup_timeout_s:g} s")
            time.sleep(_PROBE_INTERVAL_S)
        try:
            problem = _content_problem(self.http_port, tls=False)
        except (OSError, http.client.HTTPException) as error:
            problem = _describe(error)
        if problem:
            return self._failed(f"wrong content over HTTP: {problem}")
        return self._tls_readiness()

    def _tls_readiness(self) -> Readiness:
        try:
            problem = _content_problem(self.https_port, tls=True)
        except (OSError, http.client.HTTPException) as error:
            problem = _describe(error)
        if problem:
            return Readiness(True, False, f"HTTPS failed: {problem}", self.output_head())
        return Readiness(True, True)

    def _failed(self, detail: str) -> Readiness:
        return Readiness(False, None, detail, self.output_head())


class Origin(Server):
    """nginx serving the benchmark's content, on the client CPU.

    ``/`` answers the 12-byte ``hello world\\n``; ``/64k`` and ``/1m`` are static files. It also
    has a TLS listener (HTTP/1.1 and h2) so that the ``direct`` target has a TLS baseline, and
    an h2c listener (``h2c_port``) where ``/h2c`` answers the same 12 bytes.
    """

    name = "origin"

    def __init__(
        self,
        directory: Path,
        cpu: int | str,
        http_port: int,
        https_port: int,
        tls: TlsMaterial,
        h2c_port: int,
    ) -> None:
        super().__init__(directory, cpu, http_port, https_port)
        self.tls = tls
        self.h2c_port = h2c_port

    def command(self) -> list[str]:
        """Write the document root and ``nginx.conf``; return the nginx command line."""
        document_root = self.directory / "www"
        document_root.mkdir(exist_ok=True)
        document_root.chmod(0o755)
        pattern = bytes(range(256))
        for path, size in STATIC_FILES.items():
            static_file = document_root / path.lstrip("/")
            static_file.write_bytes(pattern * (size // len(pattern)))
            static_file.chmod(0o644)
        config = write_config(
            "origin-nginx.conf",
            self.directory / "nginx.conf",
            {
                "workspace": str(self.directory),
                "address": LOOPBACK,
                "http_port": self.http_port,
                "https_port": self.https_port,
                "h2c_port": self.h2c_port,
                "certificate": str(self.tls.certificate_path),
                "key": str(self.tls.key_path),
                "document_root": str(document_root),
            },
        )
        return _nginx_command(self.directory, config)


def _nginx_command(prefix: Path, config: Path) -> list[str]:
    # ``-e stderr`` keeps nginx from opening the system error log before reading the config.
    return ["nginx", "-p", f"{prefix}/", "-c", str(config), "-e", "stderr"]


class Target(Server):
    """A server wrk is pointed at, forwarding to the origin.

    ``serves_tls`` false means the TLS loads do not apply (reported as ``n/a``);
    ``speaks_h2c`` false, that the load with an h2c backend does not.
    """

    serves_tls: ClassVar[bool] = True
    speaks_h2c: ClassVar[bool] = True
    description: ClassVar[str]
    # A variant of sozu that exists to show the cost of observability: measured only on the
    # loads chosen for that (``--observability-loads``), not on every load.
    observability_variant: ClassVar[bool] = False
    # TCP ports the target needs beyond its HTTP and HTTPS ports, given as ``extra_ports``.
    extra_port_count: ClassVar[int] = 0
    # Runs on every CPU (the client's too) instead of the proxy CPU alone, and is measured on
    # the loads chosen for the multi-core comparison (``--multicore-loads``) only.
    multi_core: ClassVar[bool] = False

    def __init__(
        self,
        directory: Path,
        cpu: int | str,
        http_port: int,
        https_port: int,
        origin: Origin,
        tls: TlsMaterial,
        extra_ports: Sequence[int] = (),
    ) -> None:
        super().__init__(directory, cpu, http_port, https_port)
        self.origin = origin
        self.tls = tls
        if len(extra_ports) != self.extra_port_count:
            raise ValueError(f"{self.name} takes {self.extra_port_count} extra ports")
        self.extra_ports = tuple(extra_ports)

    def common_values(self) -> dict[str, str | int]:
        """The template values every proxy configuration needs."""
        return {
            "address": LOOPBACK,
            "http_port": self.http_port,
            "https_port": self.https_port,
            "hostname": HOSTNAME,
            "origin_address": LOOPBACK,
            "origin_port": self.origin.http_port,
        }


class DirectTarget(Target):
    """No proxy: wrk talks to the origin itself, the physical limit of the machine."""

    name = "direct"
    description = "no proxy: wrk to the origin nginx (the physical limit)"

    def __init__(self, origin: Origin, tls: TlsMaterial) -> None:
        super().__init__(
            origin.directory, origin.cpu, origin.http_port, origin.https_port, origin, tls
        )

    def command(self) -> list[str]:
        """Never called: there is nothing to start."""
        raise NotImplementedError("the direct target starts no process")

    def start(self) -> None:
        """Nothing to start: the origin is already running."""

    def stop(self) -> None:
        """Nothing to stop: the origin is stopped on its own."""

    def exit_code(self) -> int | None:
        """The origin's status: if it died, the direct target died with it."""
        return self.origin.exit_code()

    def output_head(self, lines: int = 8) -> list[str]:
        """The origin's output."""
        return self.origin.output_head(lines)

    def h2_endpoint(self, load: Load) -> tuple[str, str]:
        """The origin's TLS port, or its h2c listener for the load with an h2c backend."""
        if load.backend == "h2c":
            port = self.origin.h2c_port
            return f"http://{HOSTNAME}:{port}{load.path}", f"{LOOPBACK}:{port}"
        return super().h2_endpoint(load)


def sozu_executable() -> Path:
    """The ``sozu`` script installed next to the Python interpreter running the benchmark."""
    return Path(sys.executable).parent / "sozu"


class SozuTarget(Target):
    """This project's daemon with one worker, started with ``sozu -c config.toml start``.

    Metrics are recorded, as by default; access logs are off (no ``access_logs_target``).
    """

    name = "sozu"
    description = "sozu for Python, 1 worker"
    # The daemon imports more and starts a worker; it gets longer than the C servers.
    startup_timeout_s = 20.0
    template: ClassVar[str] = "sozu.toml"
    worker_count: ClassVar[int] = 1

    @property
    def command_socket(self) -> Path:
        """The daemon's command socket, in the target's directory."""
        return self.directory / "sozu.sock"

    def template_values(self) -> dict[str, str | int]:
        """The values ``template`` is filled in with."""
        return {
            **self.common_values(),
            "origin_h2c_port": self.origin.h2c_port,
            "worker_count": self.worker_count,
            "command_socket": str(self.command_socket),
            "certificate": str(self.tls.certificate_path),
            "key": str(self.tls.key_path),
        }

    def command(self) -> list[str]:
        """Write ``config.toml`` (sozu's format) and return the start command."""
        values = self.template_values()
        config = write_config(self.template, self.directory / "config.toml", values)
        return [str(sozu_executable()), "-c", str(config), "start"]

    def wait_until_ready(self) -> Readiness:
        """As for every target, but a missing ``sozu`` script fails at once, explained."""
        if not sozu_executable().exists():
            return self._failed(f"{sozu_executable()} not found (is sozu-cli installed?)")
        return super().wait_until_ready()


class SozuTwoWorkersTarget(SozuTarget):
    """The same daemon with two workers (``worker_count = 2``), on both CPUs: the multi-core
    row, compared with HAProxy's two threads."""

    name = "sozu-2w"
    description = "sozu for Python, 2 workers, on both CPUs (shared with wrk)"
    worker_count = 2
    multi_core = True


class SozuPureTarget(SozuTarget):
    """The same daemon with its per-request modules run from their Python sources
    (``SOZU_PURE_PYTHON=1``): what the compiled hot path gains, side by side."""

    name = "sozu-pure"
    description = "sozu for Python, 1 worker, pure-Python mode (SOZU_PURE_PYTHON=1)"

    def environment(self) -> dict[str, str] | None:
        """The daemon's environment, and so its workers': ``SOZU_PURE_PYTHON=1``."""
        return {**os.environ, PURE_ENV: "1"}


class SozuQuietTarget(SozuTarget):
    """The same daemon with its metrics disabled once it is up, and no access logs: the
    baseline the cost of observability is measured against."""

    name = "sozu-quiet"
    description = "sozu for Python, 1 worker, metrics disabled, no access logs"
    observability_variant = True

    def wait_until_ready(self) -> Readiness:
        """Once the daemon serves, send ``ConfigureMetrics(disabled)`` on its command socket;
        a refusal or no answer fails the target (it would measure the wrong thing)."""
        readiness = super().wait_until_ready()
        if not readiness.available:
            return readiness
        try:
            with CommandClient(self.command_socket, timeout=_COMMAND_TIMEOUT_S) as client:
                response = client.send(ConfigureMetrics(configuration="disabled"))
        except ClientError as error:
            return self._failed(f"could not disable metrics: {_describe(error)}")
        if not response.ok:
            return self._failed(f"disabling metrics was refused: {response.message}")
        return readiness


class SozuObservedTarget(SozuTarget):
    """The same daemon with everything an operator would turn on: metrics, their statsd
    export (to a free UDP port nobody listens on: the daemon sends its datagrams all the same),
    the admin endpoint and JSON access logs written to a file in the target's directory."""

    name = "sozu-observed"
    description = "sozu for Python, 1 worker, metrics, statsd, admin endpoint, JSON access logs"
    observability_variant = True
    extra_port_count = 1
    template = "sozu-observed.toml"

    @property
    def admin_port(self) -> int:
        """The TCP port of the admin endpoint."""
        return self.extra_ports[0]

    @property
    def access_log(self) -> Path:
        """The file the access logs go to."""
        return self.directory / "access.log"

    def template_values(self) -> dict[str, str | int]:
        """The plain daemon's values, plus where statsd, the admin endpoint and the access
        logs go."""
        return {
            **super().template_values(),
            "statsd_port": allocate_udp_port(),
            "admin_port": self.admin_port,
            "access_log": str(self.access_log),
        }

    def wait_until_ready(self) -> Readiness:
        """Once the daemon serves, check that its admin endpoint answers ``/healthz``."""
        readiness = super().wait_until_ready()
        if not readiness.available:
            return readiness
        try:
            status, body = fetch(self.admin_port, "/healthz", tls=False, timeout_s=5.0)
        except (OSError, http.client.HTTPException) as error:
            return self._failed(f"the admin endpoint did not answer: {_describe(error)}")
        if status != 200:
            return self._failed(f"the admin endpoint's /healthz answered {status}: {body[:80]!r}")
        return readiness


class HaproxyTarget(Target):
    """HAProxy, one thread, HTTP mode with backend connection reuse."""

    name = "haproxy"
    description = "HAProxy, nbthread 1, http-reuse always"
    threads: ClassVar[int] = 1

    def command(self) -> list[str]:
        """Write ``haproxy.cfg`` and return the foreground HAProxy command."""
        config = write_config(
            "haproxy.cfg",
            self.directory / "haproxy.cfg",
            {
                **self.common_values(),
                "threads": self.threads,
                "origin_h2c_port": self.origin.h2c_port,
                "bundle": str(self.tls.bundle_path),
            },
        )
        return ["haproxy", "-db", "-f", str(config)]


class HaproxyTwoThreadsTarget(HaproxyTarget):
    """HAProxy with two threads (``nbthread 2``), on both CPUs: the multi-core reference."""

    name = "haproxy-2t"
    description = "HAProxy, nbthread 2, on both CPUs (shared with wrk)"
    threads = 2
    multi_core = True


class NginxTarget(Target):
    """nginx as a reverse proxy, one worker, keep-alive upstream pool of 64. Its proxy module
    speaks HTTP/1.x only to upstreams: no h2c backend."""

    name = "nginx"
    description = "nginx reverse proxy, 1 worker, upstream keepalive 64"
    speaks_h2c = False

    def command(self) -> list[str]:
        """Write ``nginx.conf`` and return the nginx command line."""
        config = write_config(
            "proxy-nginx.conf",
            self.directory / "nginx.conf",
            {
                **self.common_values(),
                "workspace": str(self.directory),
                "certificate": str(self.tls.certificate_path),
                "key": str(self.tls.key_path),
            },
        )
        return _nginx_command(self.directory, config)


class AiohttpTarget(Target):
    """The naive aiohttp reverse proxy of ``benchmarks/naive_aiohttp_proxy.py`` (no TLS)."""

    name = "aiohttp"
    description = "naive aiohttp.web proxy with one ClientSession (plain HTTP only)"
    serves_tls = False

    def command(self) -> list[str]:
        """Return the command line; the proxy takes its settings as arguments."""
        return [
            sys.executable,
            str(BENCHMARKS_DIRECTORY / "naive_aiohttp_proxy.py"),
            "--listen",
            f"{LOOPBACK}:{self.http_port}",
            "--origin",
            f"{LOOPBACK}:{self.origin.http_port}",
        ]

    def _tls_readiness(self) -> Readiness:
        return Readiness(True, None)


# Benchmark order within a round (A B C ... A B C ...); also the order of the report.
TARGET_CLASSES: tuple[type[Target], ...] = (
    DirectTarget,
    SozuTarget,
    SozuPureTarget,
    SozuQuietTarget,
    SozuObservedTarget,
    HaproxyTarget,
    NginxTarget,
    AiohttpTarget,
    SozuTwoWorkersTarget,
    HaproxyTwoThreadsTarget,
)
TARGET_NAMES: tuple[str, ...] = tuple(cls.name for cls in TARGET_CLASSES)
TARGETS_BY_NAME: dict[str, type[Target]] = {cls.name: cls for cls in TARGET_CLASSES}


def multi_core_cpus(client_cpu: int, proxy_cpu: int) -> int | str:
    """The CPUs of a multi-core target: the proxy CPU and the client CPU (``taskset`` list)."""
    return proxy_cpu if client_cpu == proxy_cpu else f"{client_cpu},{proxy_cpu}"


def build_servers(
    names: Sequence[str], workspace: Path, client_cpu: int, proxy_cpu: int, tls: TlsMaterial
) -> tuple[Origin, list[Target]]:
    """Create (without starting) the origin and the named targets, in ``TARGET_NAMES`` order.

    Each server gets its own subdirectory of ``workspace`` and two ports (plus the extra ports
    its class asks for, and the origin's h2c port), all allocated at once so that no two
    servers are given the same port. The multi-core targets run on both CPUs.
    """
    chosen = [cls for cls in TARGET_CLASSES if cls.name in names]
    proxies = [cls for cls in chosen if cls is not DirectTarget]
    count = 3 + sum(2 + cls.extra_port_count for cls in proxies)
    ports = iter(allocate_ports(count))
    origin = Origin(
        workspace / "origin", client_cpu, next(ports), next(ports), tls, h2c_port=next(ports)
    )
    targets: list[Target] = []
    for cls in chosen:
        if cls is DirectTarget:
            targets.append(DirectTarget(origin, tls))
        else:
            directory = workspace / cls.name
            http_port, https_port = next(ports), next(ports)
            extra = [next(ports) for _ in range(cls.extra_port_count)]
            cpu = multi_core_cpus(client_cpu, proxy_cpu) if cls.multi_core else proxy_cpu
            targets.append(cls(directory, cpu, http_port, https_port, origin, tls, extra))
    return origin, targets
