"""A raw-socket HTTP/1.1 client for end-to-end tests: exact bytes out, parsed answers in."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class HttpAnswer:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class ConnectionClosed(Exception):
    """The proxy closed the connection before a complete answer."""


class HttpConnection:
    """One client connection (keep-alive); plain or TLS."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock: socket.socket = (
            tls.wrap_socket(raw, server_hostname=server_hostname) if tls is not None else raw
        )
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HttpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.buffer += data
        return True

    def read_until_closed(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True when the peer closed the connection (EOF) within ``timeout``."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(previous)
        if data:
            self.buffer += data
            return False
        return True

    def closed_while_idle(self) -> bool:
        """True when the peer closed (or reset) the connection while it carried no request;
        looks without waiting."""
        timeout = self.sock.gettimeout()
        # A socket with a timeout waits (up to the timeout) even with MSG_DONTWAIT: make it
        # non-blocking for the look.
        self.sock.settimeout(0.0)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # nothing to read: the connection is open and quiet
        except OSError:
            return True
        finally:
            self.sock.settimeout(timeout)
        # Readable: either the end of the stream (b"") or bytes that answer no request; the
        # connection is unusable in both cases.
        return True

    def read_answer(self, *, head_only: bool = False) -> HttpAnswer:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionClosed(f"closed before a complete head: {self.buffer[:200]!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        answer = HttpAnswer(status, parts[2] if len(parts) > 2 else "", raw_head=head + b"\r\n\r\n")
        answer.headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:]]  # type: ignore[misc]
        if head_only or 100 <= status < 200 or status in (204, 304):
            return answer
        length = answer.header("content-length")
        if answer.header("transfer-encoding"):
            answer.body = self._read_chunked()
        elif length is not None:
            size = int(length)
            while len(self.buffer) < size:
                if not self._fill():
                    raise ConnectionClosed("closed in the middle of a body")
            answer.body, self.buffer = self.buffer[:size], self.buffer[size:]
        else:
            answer.body = self.read_until_closed()
        return answer

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                if not self._fill():
                    raise ConnectionClosed("closed in a chunk size")
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while b"\r\n" not in self.buffer:
                    self._fill()
                while not self.buffer.startswith(b"\r\n"):
                    _, self.buffer = self.buffer.split(b"\r\n", 1)
                    while b"\r\n" not in self.buffer:
                        self._fill()
                self.buffer = self.buffer[2:]
                return body
            while len(self.buffer) < size + 2:
                if not self._fill():
                    raise ConnectionClosed("closed in a chunk")
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]

    def iter_chunked(self) -> Iterator[bytes]:
        """The data of a chunked body as it arrives (piece by piece, not chunk by chunk), after
        :meth:`read_answer` with ``head_only``; ends after the last chunk and the trailer
        section. Raises :class:`ConnectionClosed` when the connection ends first and
        :class:`ValueError` on a framing error."""

        def fill() -> None:
            if not self._fill():
                raise ConnectionClosed("the connection ended in the middle of the chunked body")

        while True:
            while b"\r\n" not in self.buffer:
                fill()
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while not self.buffer.startswith(b"\r\n"):  # skip trailer fields
                    while b"\r\n" not in self.buffer:
                        fill()
                    self.buffer = self.buffer.split(b"\r\n", 1)[1]
                self.buffer = self.buffer[2:]
                return
            remaining = size
            while remaining:
                if not self.buffer:
                    fill()
                piece = self.buffer[:remaining]
                self.buffer = self.buffer[len(piece) :]
                remaining -= len(piece)
                yield piece
            while len(self.buffer) < 2:
                fill()
            if self.buffer[:2] != b"\r\n":
                raise ValueError(f"chunk not followed by CRLF: {self.buffer[:10]!r}")
            self.buffer = self.buffer[2:]

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        *,
        host: str = "localhost",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> HttpAnswer:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{n}: {v}" for n, v in headers or []]
        if body is not None and not any(
            n.lower() in ("content-length", "transfer-encoding") for n, _ in headers or []
        ):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return self.read_answer(head_only=method == "HEAD")


def get(port: int, target: str = "/", *, host: str = "localhost", **kwargs: object) -> HttpAnswer:
    """One request on a fresh connection."""
    with HttpConnection(port) as connection:
        return connection.request("GET", target, host=host, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TLS clients


@dataclass(frozen=True)
class TlsSession:
    """What one completed TLS handshake showed of the server."""

    certificate: bytes
    """DER of the leaf certificate the server presented."""
    version: str
    """Negotiated protocol, as ``ssl`` names it (``"TLSv1.2"``, ``"TLSv1.3"``)."""
    cipher: str
    """Negotiated cipher suite, OpenSSL name."""
    alpn: str | None
    """Negotiated ALPN protocol, ``None`` when the server selected none."""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the served leaf's DER, lowercase hex (as ``sozu_config.fingerprint_of``)."""
        return hashlib.sha256(self.certificate).hexdigest()


def tls_client_context(
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    alpn: list[str] | None = None,
    trust: str | None = None,
) -> ssl.SSLContext:
    """A client context. Without ``trust`` (a PEM certificate to trust) nothing is verified:
    tests then compare the fingerprint of the certificate served instead. With it, the chain
    and the host name are verified as a browser would."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trust is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=trust)
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def tls_handshake(
    port: int,
    server_name: str | None,
    *,
    context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> TlsSession:
    """Open a connection, complete the handshake (SNI ``server_name``; ``None`` sends no SNI),
    report what the server presented, and close. A refused handshake raises ``ssl.SSLError``
    (or ``OSError`` when the server cuts the connection)."""
    context = context or tls_client_context()
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True) or b""
        cipher = tls.cipher()
        return TlsSession(
            certificate=certificate,
            version=tls.version() or "",
            cipher=cipher[0] if cipher else "",
            alpn=tls.selected_alpn_protocol(),
        )


PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A PROXY protocol v2 header, command PROXY, for a TCP connection from ``source`` to
    ``destination`` (IPv4 or IPv6 addresses, both of the same family)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
    addresses = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    head = PROXY_V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(addresses))
    return head + addresses
