"""The main process's table of listening sockets, with real sockets on 127.0.0.1."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from sozu_runtime.main.sockets import ListenError, ListeningSockets, bind_listener


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def table() -> Iterator[ListeningSockets]:
    sockets = ListeningSockets()
    yield sockets
    sockets.close()


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_bind_listener_listens_without_blocking() -> None:
    address = free_address()
    sock = bind_listener(address)
    try:
        assert not sock.getblocking()
        assert accepts(address)
    finally:
        sock.close()
    assert not accepts(address)


def test_open_binds_each_address_once(table: ListeningSockets) -> None:
    one, two = free_address(), free_address()
    assert table.open([one, two]) == [one, two]
    fd = table.fileno(one)
    assert table.open([one]) == []  # already bound: the same socket serves
    assert table.fileno(one) == fd
    assert len(table) == 2
    assert one in table and two in table
    assert accepts(one) and accepts(two)


def test_a_refused_address_closes_what_the_call_bound(table: ListeningSockets) -> None:
    kept, fresh = free_address(), free_address()
    table.open([kept])
    taken = bind_listener(free_address())
    busy = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        with pytest.raises(ListenError) as refused:
            table.open([kept, fresh, busy])
    finally:
        taken.close()
    assert refused.value.address == busy
    assert refused.value.error.errno == errno.EADDRINUSE
    assert refused.value.reason == "the address is already in use"
    assert list(table) == [kept]  # bound before the call: kept
    assert not accepts(fresh)


def test_discard_and_release_close_sockets(table: ListeningSockets) -> None:
    one, two, three = free_address(), free_address(), free_address()
    table.open([one, two, three])
    table.discard([one])
    assert not accepts(one)
    table.release([three])  # only three's listener is still active
    assert list(table) == [three]
    assert not accepts(two)
    assert accepts(three)


def test_descriptors_and_adopt(table: ListeningSockets) -> None:
    one, two = free_address(), free_address()
    table.open([one, two])
    assert table.descriptors([two, free_address()]) == {two: table.fileno(two)}
    handed = {address: os.dup(fd) for address, fd in table.descriptors().items()}
    table.close()
    assert len(table) == 0
    successor = ListeningSockets()
    successor.adopt(handed)
    try:
        assert sorted(successor) == sorted([one, two])
        assert accepts(one) and accepts(two)  # the sockets went on listening
    finally:
        successor.close()
