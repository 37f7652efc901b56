"""Logging of the main process and workers: one line per event, prefixed with a tag.

``<time> <pid> <LEVEL> <TAG>  <message>``, sent to ``log_target``: ``stdout``,
``file:///path`` (appended), ``udp://IP:port`` or ``unix:///path`` (one datagram per line), or
``tcp://IP:port`` (one line each, best effort: a line that cannot be sent at once is dropped,
logging never blocks the proxy). Access logs (one line per request) do not use the logging
module: a worker formats and buffers them itself (:mod:`.worker.access_log`), sending them
with the same :class:`LineSocket` to socket targets.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sozu_config.config import Config

__all__ = [
    "LEVELS",
    "LineSocket",
    "configure_logging",
    "configure_main_logging",
    "line_socket",
    "reopen_logs",
    "set_level",
]

LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
    "off": logging.CRITICAL + 1,
}


class _Formatter(logging.Formatter):
    """``<RFC 3339 UTC time, µs> <pid> <LEVEL> <TAG>\t<message>`` (sōzu's layout)."""

    def __init__(self, tag: str) -> None:
        super().__init__(fmt=f"%(asctime)s {os.getpid()} %(levelname)-5s {tag}\t%(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LineSocket:
    """A non-blocking socket to a log target: one datagram per :meth:`send` (udp, unix), or
    bytes on a stream (tcp, connected on first use). Sending never waits: what the socket
    cannot take at once is not sent, and a stream that fails is closed and connected again at
    the next send."""

    def __init__(self, family: int, kind: int, address: tuple[str, int] | str) -> None:
        self.family, self.kind, self.address = family, kind, address
        self.datagram = kind == socket.SOCK_DGRAM
        self.sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(self.family, self.kind)
            sock.setblocking(False)
            if not self.datagram:
                with contextlib.suppress(BlockingIOError):
                    sock.connect(self.address)
            self.sock = sock
        return self.sock

    def send(self, data: bytes) -> int:
        """Send ``data`` without waiting; returns how many bytes went (for a datagram: all
        or none). -1: the stream failed and was closed (nothing of ``data`` went)."""
        try:
            sock = self._socket()
            if self.datagram:
                return sock.sendto(data, self.address)
            return sock.send(data)
        except BlockingIOError:  # full, or a stream still connecting
            return 0
        except OSError:
            if self.datagram:
                return 0
            self.close()  # connect again for the next send
            return -1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def line_socket(target: str) -> LineSocket | None:
    """The socket of a ``udp://``, ``tcp://`` or ``unix://`` target (None for others)."""
    scheme, _, rest = target.partition("://")
    if scheme in ("udp", "tcp"):
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
        return LineSocket(family, kind, (host, int(port)))
    if scheme == "unix":
        return LineSocket(socket.AF_UNIX, socket.SOCK_DGRAM, rest)
    return None


class _SocketLineHandler(logging.Handler):
    """One formatted line per datagram (udp, unix) or per write on a stream (tcp); a line that
    cannot be sent at once is dropped rather than blocking the event loop."""

    def __init__(self, sock: LineSocket) -> None:
        super().__init__()
        self.line_socket = sock

    def emit(self, record: logging.LogRecord) -> None:
        self.line_socket.send((self.format(record) + "\n").encode("utf-8", "replace"))

    def close(self) -> None:
        self.line_socket.close()
        super().close()


def _handler(target: str) -> logging.Handler:
    scheme, _, rest = target.partition("://")
    if scheme == "file":
        return logging.FileHandler(rest, encoding="utf-8")
    sock = line_socket(target)
    if sock is not None:
        return _SocketLineHandler(sock)
    return logging.StreamHandler(sys.stdout)


def configure_logging(level: str, tag: str, *, target: str = "stdout") -> None:
    """Send the ``sozu`` loggers to ``target`` with ``tag`` (``MAIN``, ``WRK-00``). Access logs
    do not go through them: a worker writes them itself (:mod:`.worker.access_log`)."""
    root = logging.getLogger("sozu")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = _handler(target)
    handler.setFormatter(_Formatter(tag))
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))


def set_level(level: str) -> None:
    logging.getLogger("sozu").setLevel(LEVELS.get(level.lower(), logging.INFO))


def reopen_logs() -> int:
    """Open the log file again (a ``file://`` target), so that lines go to a new file after a
    rotation renamed the old one; returns how many files were reopened. (A worker reopens its
    access-log file itself.)"""
    reopened = 0
    for handler in logging.getLogger("sozu").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
            reopened += 1
    return reopened


def configure_main_logging(config: Config) -> None:
    """The main process's logs, as ``config`` says (at start and after an upgrade)."""
    configure_logging(config.log_level, "MAIN", target=config.log_target)
