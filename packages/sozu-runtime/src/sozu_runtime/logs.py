"""Logging of the main process and workers: one line per event, prefixed with a tag.

``<time> <pid> <LEVEL> <TAG>  <message>``, sent to ``log_target``: ``stdout``,
``file:///path`` (appended), ``udp://IP:port`` or ``unix:///path`` (one datagram per line), or
``tcp://IP:port`` (one line each, best effort: a line that cannot be sent at once is dropped,
logging never blocks the proxy). Access logs (one line per request) go to the ``sozu.access``
logger, written only when ``access_logs_target`` is set (to that target); when they are off,
the data path does not call the logging module at all.
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

__all__ = ["LEVELS", "configure_logging", "configure_main_logging", "reopen_logs", "set_level"]

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


class _SocketLineHandler(logging.Handler):
    """One formatted line per datagram (udp, unix) or per write on a stream (tcp); a line that
    cannot be sent at once is dropped rather than blocking the event loop."""

    def __init__(self, family: int, kind: int, address: tuple[str, int] | str) -> None:
        super().__init__()
        self.family, self.kind, self.address = family, kind, address
        self.sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(self.family, self.kind)
            sock.setblocking(False)
            if self.kind == socket.SOCK_STREAM:
                with contextlib.suppress(BlockingIOError):
                    sock.connect(self.address)
            self.sock = sock
        return self.sock

    def emit(self, record: logging.LogRecord) -> None:
        line = (self.format(record) + "\n").encode("utf-8", "replace")
        try:
            sock = self._socket()
            if self.kind == socket.SOCK_DGRAM:
                sock.sendto(line, self.address)
            else:
                sock.send(line)
        except OSError:
            if self.kind == socket.SOCK_STREAM and self.sock is not None:
                self.sock.close()
                self.sock = None  # reconnect for the next line

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        super().close()


def _handler(target: str) -> logging.Handler:
    scheme, _, rest = target.partition("://")
    if scheme == "file":
        return logging.FileHandler(rest, encoding="utf-8")
    if scheme in ("udp", "tcp"):
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
        return _SocketLineHandler(family, kind, (host, int(port)))
    if scheme == "unix":
        return _SocketLineHandler(socket.AF_UNIX, socket.SOCK_DGRAM, rest)
    return logging.StreamHandler(sys.stdout)


def configure_logging(
    level: str,
    tag: str,
    *,
    target: str = "stdout",
    access_target: str | None = None,
) -> None:
    """Send the ``sozu`` loggers to ``target`` with ``tag`` (``MAIN``, ``WRK-00``); access
    logs to ``access_target`` when it is set (else they are off)."""
    root = logging.getLogger("sozu")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = _handler(target)
    handler.setFormatter(_Formatter(tag))
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    access = logging.getLogger("sozu.access")
    for old in list(access.handlers):
        access.removeHandler(old)
        old.close()
    if access_target is None:
        access.setLevel(logging.CRITICAL + 1)
        return
    access.setLevel(logging.INFO)
    if access_target != target:
        access_handler = _handler(access_target)
        access_handler.setFormatter(_Formatter(tag))
        access.addHandler(access_handler)
        access.propagate = False
    else:
        access.propagate = True


def set_level(level: str) -> None:
    logging.getLogger("sozu").setLevel(LEVELS.get(level.lower(), logging.INFO))


def reopen_logs() -> int:
    """Open the log files again (``file://`` targets, logs and access logs), so that lines go
    to a new file after a rotation renamed the old one; returns how many were reopened."""
    reopened = 0
    for name in ("sozu", "sozu.access"):
        for handler in logging.getLogger(name).handlers:
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
    configure_logging(
        config.log_level,
        "MAIN",
        target=config.log_target,
        access_target=config.access_logs_target,
    )
