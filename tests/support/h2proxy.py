"""A daemon serving HTTP/2: one HTTPS listener offering ``h2`` (and ``http/1.1``) with the
certificate of ``app.example``, cluster ``app`` for that name on an HTTP/1.1 backend.

:func:`h2_proxy` starts it (a context manager; everything stops on exit). Listener settings
(the ``h2_*`` knobs, ``alpn_protocols``, ``disable_http11``, timeouts…) are keyword
arguments; more clusters or listeners are given as ready parts (see :mod:`support.configs`)
with ``extra``, and top-level settings with ``top``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sozu_config import QueryMetrics
from sozu_config.responses import MetricsContent
from support import configs
from support.backends import Handler, HttpBackend
from support.certs import TestCertificate, cached_certificate
from support.daemon import DaemonProcess, free_ports

HOST = "app.example"
CURL_TIMEOUT = 20.0


@dataclass
class H2Proxy:
    daemon: DaemonProcess
    port: int
    ports: dict[str, int]
    backend: HttpBackend
    certificate: TestCertificate
    cert_path: Path
    directory: Path

    def proxying(self) -> dict[str, Any]:
        """The proxy-wide metrics (the workers' summed), by name."""
        response = self.daemon.send(QueryMetrics())
        assert response.ok and isinstance(response.content, MetricsContent), response.message
        return response.content.proxying

    def curl(
        self, *args: str, host: str = HOST, http2: bool = True, listener: str = "main"
    ) -> Curl:
        return curl(self.ports[listener], self.cert_path, *args, host=host, http2=http2)


def write_certificate(directory: Path, certificate: TestCertificate, stem: str) -> Path:
    cert_path = directory / f"{stem}.pem"
    cert_path.write_text(certificate.cert_pem)
    (directory / f"{stem}.key").write_text(certificate.key_pem)
    return cert_path


@contextlib.contextmanager
def h2_proxy(
    directory: Path,
    handler: Handler | None = None,
    *,
    listeners: Mapping[str, Mapping[str, Any]] | None = None,
    frontends: Sequence[Mapping[str, Any]] = (),
    extra: Callable[[dict[str, int], str], Sequence[configs.ClusterTable | str]] | None = None,
    cluster_settings: Mapping[str, Any] | None = None,
    top: Mapping[str, Any] | None = None,
    **listener_settings: Any,
) -> Iterator[H2Proxy]:
    """The daemon of the module's doc (one worker unless ``top`` says otherwise).

    ``listeners`` names more HTTPS listeners (their settings; same certificate), whose ports
    are in :attr:`H2Proxy.ports` (the first one's name is ``"main"``); cluster ``app`` has a
    frontend for ``app.example`` on each, and on each the ``frontends`` given (``hostname``
    and frontend settings). ``extra(ports, backend_address)`` gives more parts of the file."""
    certificate = cached_certificate(HOST, "other.example", "*.wild.example", "localhost")
    cert_path = write_certificate(directory, certificate, "app")
    key_path = directory / "app.key"
    every = {"main": listener_settings, **(listeners or {})}
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(HttpBackend("app", handler))
        ports = dict(zip(every, free_ports(len(every)), strict=True))
        parts: list[configs.ClusterTable | configs.ListenerTable | str] = [
            configs.https_listener(ports[name], certificate=cert_path, key=key_path, **settings)
            for name, settings in every.items()
        ]
        tables = [
            configs.frontend(port, **{"hostname": HOST, **table})
            for port in ports.values()
            for table in ({}, *frontends)
        ]
        parts.append(
            configs.cluster(
                "app",
                frontends=tables,
                backends=[configs.backend(backend.address)],
                **(cluster_settings or {}),
            )
        )
        if extra is not None:
            parts += extra(ports, backend.address)
        text = configs.document(*parts, **{"worker_count": 1, **(top or {})})
        daemon = stack.enter_context(DaemonProcess(directory, text).start())
        yield H2Proxy(daemon, ports["main"], ports, backend, certificate, cert_path, directory)


# ---------------------------------------------------------------------------- curl


@dataclass
class Curl:
    """What ``curl`` got: exit code, HTTP version, status, headers (names lowercase), body."""

    returncode: int
    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stderr: str

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None


_STATUS_LINE = re.compile(rb"^HTTP/([0-9.]+) (\d{3})", re.MULTILINE)


def curl(port: int, cert_path: Path, *args: str, host: str = HOST, http2: bool = True) -> Curl:
    """``curl https://<host>:<port><args>`` (the last argument is the path), trusting only
    ``cert_path``; ``--http2`` (ALPN ``h2``, HTTP/1.1 if refused) or ``--http1.1``."""
    assert shutil.which("curl"), "curl is needed by the HTTP/2 end-to-end tests"
    *options, path = args
    command = [
        "curl",
        "-sS",
        "--max-time",
        "15",
        "--cacert",
        str(cert_path),
        "--resolve",
        f"{host}:{port}:127.0.0.1",
        "--http2" if http2 else "--http1.1",
        *(() if "-I" in options else ("-D", "-")),  # (-I writes the head as the output)
        "-o",
        "-",
        *options,
        f"https://{host}:{port}{path}",
    ]
    done = subprocess.run(command, capture_output=True, timeout=CURL_TIMEOUT, check=False)
    out = done.stdout
    version, status, headers, body = "", 0, [], out
    # the heads (1xx ones included) come first, each ended by an empty line
    while (match := _STATUS_LINE.match(out)) is not None:
        end = out.find(b"\r\n\r\n")
        if end < 0:
            break
        version, status = match.group(1).decode(), int(match.group(2))
        headers = [
            (name.strip().lower(), value.strip())
            for line in out[:end].decode("latin-1").split("\r\n")[1:]
            if ":" in line
            for name, value in [line.split(":", 1)]
        ]
        out = out[end + 4 :]
        body = out
        if not 100 <= status < 200:
            break
    return Curl(
        done.returncode, version, status, headers, body, done.stderr.decode(errors="replace")
    )
