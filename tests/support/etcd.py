"""A real etcd server for tests: ``/usr/bin/etcd`` with a temporary data directory, on two free
ports of 127.0.0.1 (client and peer), stopped afterwards; restartable on the same data and
ports (to test clients that lose it and find it again); over TLS with client certificates when
asked (:func:`make_tls_files`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .daemon import free_ports

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a server certificate for ``localhost`` and a client certificate, signed by it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a CA and two certificates it signs (server: localhost; client) in ``directory``."""
    now = dt.datetime.now(dt.UTC)

    def build(name: str, issuer: x509.Name, key: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test CA")])
    ca_cert = build("fleet test CA", ca_name, ca_key, ca_key, True)
    written: list[Path] = []
    for name, (cert, key) in {
        "ca": (ca_cert, ca_key),
        **{
            role: (build(cn, ca_name, k, ca_key, False), k)
            for role, cn, k in (
                ("server", "localhost", ec.generate_private_key(ec.SECP256R1())),
                ("client", "sozu-apply", ec.generate_private_key(ec.SECP256R1())),
            )
        },
    }.items():
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(_pem_key(key))
        written += [directory / f"{name}.pem", directory / f"{name}.key"]
    ca, _, server_cert, server_key, client_cert, client_key = written
    return TlsFiles(ca, server_cert, server_key, client_cert, client_key)


class EtcdServer:
    """One etcd member; ``url`` is its client URL (``http://127.0.0.1:PORT``). With ``tls``,
    it serves HTTPS as ``localhost`` and asks clients for a certificate signed by the CA."""

    def __init__(self, directory: Path, *, tls: TlsFiles | None = None) -> None:
        self.directory = directory
        self.data_dir = directory / "etcd-data"
        self.log_path = directory / "etcd.log"
        self.client_port, self.peer_port = free_ports(2)
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.client_port}"
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.tls is None else "localhost"
        return f"{host}:{self.client_port}"

    def source(self, prefix: str) -> str:
        """The ``etcd://`` (``etcds://``) source of ``prefix`` on this server."""
        scheme = "etcd" if self.tls is None else "etcds"
        return f"{scheme}://{self.address}/{prefix.strip('/')}"

    def start(self) -> EtcdServer:
        client = self.url.replace("localhost", "127.0.0.1")
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            ETCD,
            "--name=default",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
        ]
        if self.tls is not None:
            command += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready()
        return self

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1, context=context) as answer:
                return b'"true"' in answer.read()
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}:\n{self.logs()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
