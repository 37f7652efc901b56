"""A raw-socket HTTP/1.1 client for end-to-end tests: exact bytes out, parsed answers in."""

from __future__ import annotations

import socket
import ssl
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
        if body is not None and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers or []):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return self.read_answer(head_only=method == "HEAD")


def get(port: int, target: str = "/", *, host: str = "localhost", **kwargs: object) -> HttpAnswer:
    """One request on a fresh connection."""
    with HttpConnection(port) as connection:
        return connection.request("GET", target, host=host, **kwargs)  # type: ignore[arg-type]
