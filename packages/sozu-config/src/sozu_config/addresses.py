"""Socket addresses: validation and the one normal form used everywhere.

An address is written ``IPv4:port`` or ``[IPv6]:port`` (split by
:func:`sozu_config.grammar.split_host_port`). Every address that enters the models is
normalised (``ipaddress`` canonical text, IPv6 in brackets, no leading zeros in the port), so
that two spellings of the same address compare equal as dictionary keys in the state and in the
workers.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator

from .grammar import parse_port, split_host_port, unbracket

__all__ = ["SocketAddress", "normalize_address", "split_address"]


@lru_cache(maxsize=65536)
def normalize_address(text: str) -> str:
    """Return the normal form of ``text`` or raise ``ValueError`` saying what is wrong.

    Accepted: ``1.2.3.4:80``, ``[::1]:80``, ``[fe80::1%eth0]:80`` (scope kept). The port must be
    1-65535 written in decimal digits only.
    """
    if not isinstance(text, str):
        raise ValueError(f"an address must be a string like '127.0.0.1:8080', not {text!r}")
    fast = _fast_ipv4(text)
    if fast is not None:
        return fast
    raw = text.strip()
    bracketed = raw.startswith("[")
    try:
        host, port_text = split_host_port(raw)
    except ValueError:
        if bracketed:
            raise ValueError(f"invalid address {text!r}: expected '[IPv6]:port'") from None
        raise ValueError(
            f"invalid address {text!r}: write IPv6 addresses as '[addr]:port'"
        ) from None
    if bracketed:
        if port_text is None:
            raise ValueError(f"invalid address {text!r}: expected '[IPv6]:port'")
        try:
            ip = ipaddress.IPv6Address(unbracket(host))
        except ValueError:
            raise ValueError(
                f"invalid address {text!r}: {unbracket(host)!r} is not an IPv6 address"
            ) from None
        host_text = f"[{ip.compressed}]"
    else:
        if port_text is None or not host:
            raise ValueError(f"invalid address {text!r}: expected 'IP:port', e.g. '127.0.0.1:8080'")
        try:
            ip4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"invalid address {text!r}: {host!r} is not an IPv4 address "
                "(host names are not accepted, use an IP address)"
            ) from None
        host_text = ip4.compressed
    try:
        port = parse_port(port_text)
    except ValueError as error:
        raise ValueError(f"invalid address {text!r}: {error}") from None
    return f"{host_text}:{port}"


def _fast_ipv4(text: str) -> str | None:
    """The common case (``a.b.c.d:port`` already in normal form) without ``ipaddress``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or port[0] == "0" or len(port) > 5:
        return None
    if not 1 <= int(port) <= 65535:
        return None
    parts = host.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not part.isdigit() or not part.isascii() or len(part) > 3:
            return None
        if (part[0] == "0" and len(part) > 1) or int(part) > 255:
            return None
    return text


def split_address(address: str) -> tuple[str, int]:
    """Split a normalised address into (host, port); the IPv6 host is returned without brackets."""
    host, port = split_host_port(address)
    return unbracket(host), int(port or 0)


def _validate(value: str) -> str:
    return normalize_address(value)


SocketAddress = Annotated[str, AfterValidator(_validate)]
"""A socket address in normal form (``127.0.0.1:8080``, ``[::1]:8080``)."""
