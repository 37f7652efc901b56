"""The listening sockets, which belong to the main process.

A listener's socket is bound when the listener is activated and kept until it is deactivated
or removed; every worker gets a descriptor of it (with its initial state, or with the request
that activates it). A worker that dies never takes a socket down: clients wait in the kernel
backlog until another worker accepts them.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Iterator, Mapping

from sozu_config.addresses import split_address

__all__ = ["BACKLOG", "ListenError", "ListeningSockets", "bind_listener"]

BACKLOG = 1024  # listen() backlog of the listening sockets (sōzu's)


def bind_listener(address: str) -> socket.socket:
    """A listening TCP socket for ``address`` (the main process keeps it for its lifetime)."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ListenError(Exception):
    """An address could not be bound; ``error`` is the system's reason."""

    def __init__(self, address: str, error: OSError) -> None:
        super().__init__(f"cannot listen on {address}: {error.strerror or error}")
        self.address = address
        self.error = error

    @property
    def reason(self) -> str:
        """The reason in words a user acts on."""
        if self.error.errno == errno.EADDRINUSE:
            return "the address is already in use"
        return self.error.strerror or str(self.error)


class ListeningSockets:
    """The table of listening sockets, by listener address."""

    __slots__ = ("_sockets",)

    def __init__(self) -> None:
        self._sockets: dict[str, socket.socket] = {}

    def __len__(self) -> int:
        return len(self._sockets)

    def __contains__(self, address: object) -> bool:
        return address in self._sockets

    def __iter__(self) -> Iterator[str]:
        return iter(self._sockets)

    def fileno(self, address: str) -> int:
        return self._sockets[address].fileno()

    def open(self, addresses: Iterable[str]) -> list[str]:
        """Bind those of ``addresses`` that are not bound yet; the addresses bound now (to
        :meth:`discard` when the change they serve is refused). When one cannot be bound,
        those bound by this call are closed again and :class:`ListenError` is raised."""
        fresh: list[str] = []
        for address in addresses:
            if address in self._sockets:
                continue
            try:
                self._sockets[address] = bind_listener(address)
            except OSError as error:
                self.discard(fresh)
                raise ListenError(address, error) from None
            fresh.append(address)
        return fresh

    def discard(self, addresses: Iterable[str]) -> None:
        """Close the sockets of ``addresses``."""
        for address in addresses:
            self._sockets.pop(address).close()

    def release(self, active: Iterable[str]) -> None:
        """Close every socket whose address is not in ``active`` (its listener was
        deactivated or removed)."""
        keep = set(active)
        self.discard([a for a in self._sockets if a not in keep])

    def descriptors(self, addresses: Iterable[str] | None = None) -> dict[str, int]:
        """The descriptor of each bound address (of those in ``addresses``, when given)."""
        if addresses is None:
            return {address: sock.fileno() for address, sock in self._sockets.items()}
        return {a: self._sockets[a].fileno() for a in addresses if a in self._sockets}

    def adopt(self, descriptors: Mapping[str, int]) -> None:
        """Take over sockets handed over by the previous main process."""
        for address, fd in descriptors.items():
            self._sockets[address] = socket.socket(fileno=int(fd))

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
