"""The PROXY protocol, versions 1 (text) and 2 (binary), without I/O.

A PROXY header is the block a load balancer writes at the very start of a connection to tell
the next hop who the real client is. The grammar followed here is HAProxy's specification
("The PROXY protocol, Versions 1 & 2", doc/proxy-protocol.txt), sections 2.1 (v1) and 2.2 (v2).
The worker uses it for ``expect_proxy`` listeners (parse the client's header), ``send_proxy``
clusters (build one for the backend) and relaying (forward :attr:`ProxyHeader.raw` verbatim);
see reference §G.

Nothing here touches a socket. The asyncio protocols call :func:`parse` with the bytes received
so far and get one of three answers:

* ``(header, consumed)``: a complete, valid header occupies exactly the first ``consumed``
  bytes; everything after it is payload and is left alone;
* ``None``: the bytes are a strict prefix of some valid header, read more;
* :class:`ProxyProtocolError`: no continuation can make the bytes a valid header. The error is
  raised as soon as that is certain, never deferred until more bytes arrive, so that a
  connection speaking something else is cut at once.

Two rules where the specification leaves a choice:

* A block the specification tells the receiver to ignore never causes a rejection. With the v2
  LOCAL command (health checks) or the AF_UNSPEC family, the addresses are discarded and the
  TLVs are reported only if they are well formed; with PROXY over AF_INET, AF_INET6 or AF_UNIX
  the TLVs are part of a block we use, and one that overruns the declared length is an error.
* v1 IPv6 addresses are anything :mod:`ipaddress` reads as an IPv6 address (including the
  dotted IPv4 tail of RFC 4291 §2.2) except zone identifiers, which have no meaning on the
  receiving host; they are returned in :mod:`ipaddress`'s canonical text.

The optional CRC32C TLV (type 0x03) is returned like any other TLV and not verified.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "MAX_HEADER_LENGTH",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyProtocolError",
    "build_v1",
    "build_v2",
    "parse",
    "parse_v2_only",
]

# Spec §2.2: the first 12 bytes of every v2 header; it cannot begin any common protocol.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

# Spec §2.1: the longest v1 line, CRLF included ("PROXY UNKNOWN", two full IPv6, two ports).
V1_MAX_LENGTH = 107

# Largest v2 header accepted (signature + fixed part + addresses + TLVs). The format allows
# 16 + 65535 bytes; no real sender comes near 4 KiB and the cap bounds per-connection memory.
MAX_HEADER_LENGTH = 4096

# v1 grammar pieces (spec §2.1).
_V1_PREAMBLE = b"PROXY "
_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
_V1_UNKNOWN = b"UNKNOWN"
_CRLF = b"\r\n"
_SPACE = 0x20
_ZERO_DIGIT = 0x30
# Characters an IPv6 address can be written with: hex digits, colons, dots of an IPv4 tail.
# Anything else, notably the '%' of a zone identifier, is refused before ipaddress sees it.
_IPV6_TEXT_BYTES = b"0123456789abcdefABCDEF:."
# Suffixes that complete every valid prefix of an IPv6 text into a valid address (each one is
# needed by some prefix): stop here, add a group after ':', turn ':' into '::', append '::',
# or finish a dotted IPv4 tail. Used only to tell whether a partial field can still be valid.
_IPV6_COMPLETIONS = ("", "0", ":", "::", ".0", "0.0", ".0.0", "0.0.0")

# v2 fixed part (spec §2.2): signature, version/command byte, family/transport byte, and the
# big-endian length of everything that follows (addresses then TLVs).
_V2_FIXED = struct.Struct("!BBH")
_V2_FIXED_LENGTH = len(V2_SIGNATURE) + _V2_FIXED.size
_V2_VERSION = 2
_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_V2_COMMANDS = {_V2_LOCAL: "local", _V2_PROXY: "proxy"}
# Address blocks (spec §2.2): two addresses then, for IP families, two ports.
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V2_UNIX_ADDRESS_LENGTH = 2 * 108
# TLV header (spec §2.2): type u8, value length u16 big-endian.
_V2_TLV_HEAD = struct.Struct("!BH")

_FAMILIES = {0x0: "unspec", 0x1: "inet", 0x2: "inet6", 0x3: "unix"}
_TRANSPORTS = {0x0: "unspec", 0x1: "stream", 0x2: "dgram"}
_ADDRESS_LENGTHS = {0x0: 0, 0x1: _V2_INET.size, 0x2: _V2_INET6.size, 0x3: _V2_UNIX_ADDRESS_LENGTH}
# Every family/transport byte made of defined nibbles -> (family, transport, address length).
# Values outside it "must be rejected as invalid by receivers" whatever the command.
_V2_ADDRESS_FORMATS: dict[int, tuple[str, str, int]] = {
    (family << 4) | transport: (family_name, transport_name, _ADDRESS_LENGTHS[family])
    for family, family_name in _FAMILIES.items()
    for transport, transport_name in _TRANSPORTS.items()
}
# The combinations the spec lists as valid for a PROXY command; LOCAL ignores the byte.
_V2_PROXY_FORMATS = frozenset({0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32})
_V2_TRANSPORT_CODES = {"stream": 0x1, "dgram": 0x2}

_MAX_PORT = 65535
_MAX_OCTET = 255
_MAX_TLV_TYPE = 255
_MAX_TLV_VALUE_LENGTH = 65535


class ProxyProtocolError(ValueError):
    """The bytes cannot be (the start of) a valid PROXY header; the message says why.

    The connection that sent them must be closed: the spec forbids guessing whether a header
    is present, so there is nothing sensible to fall back to.
    """


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY header.

    Invariants: ``source`` and ``destination`` are both ``None`` or both set; they are set only
    when ``command`` is ``"proxy"`` and ``family`` is ``"inet"`` or ``"inet6"``, and then hold
    the canonical :mod:`ipaddress` text of an address of that family and a port in 0..65535.
    ``tlvs`` is always ``()`` for version 1.
    """

    version: int
    """1 (text line) or 2 (binary block)."""
    command: str
    """``"proxy"``: the addresses describe the relayed client connection. ``"local"``: the
    sender opened the connection itself (health check) or cannot describe it (v1 ``UNKNOWN``);
    the receiver uses the real socket addresses."""
    family: str
    """``"inet"``, ``"inet6"``, ``"unix"`` or ``"unspec"`` (v1 ``UNKNOWN`` gives ``"unspec"``;
    a v2 LOCAL header reports the family byte it carried, although its addresses are ignored)."""
    transport: str
    """``"stream"``, ``"dgram"`` or ``"unspec"`` (v1 is always ``"stream"`` unless UNKNOWN)."""
    source: tuple[str, int] | None
    """The client's (ip text, port); ``None`` for local, unspec and unix headers."""
    destination: tuple[str, int] | None
    """The address the client connected to, as (ip text, port); ``None`` when ``source`` is."""
    tlvs: tuple[tuple[int, bytes], ...]
    """v2 type-length-value extensions as (type, value), in wire order; ``()`` for v1."""
    raw: bytes
    """The exact header bytes as received, for relaying them unchanged to a backend."""


def parse(data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, int] | None:
    """Parse a PROXY header (v1 or v2, detected from the first bytes) at the start of `data`.

    Returns (header, number of bytes consumed) when complete, None when more bytes are needed,
    raises ProxyProtocolError as soon as the bytes seen cannot start a valid header (a first
    byte that is neither 'P' nor CR, a v1 line that cannot end with CRLF within 107 bytes, a
    field that no further byte can make valid, ...). Bytes after the header are not examined.
    """
    window = _header_window(data)
    if not window:
        return None
    first = window[0]
    if first == V2_SIGNATURE[0]:
        return _parse_v2(window)
    if first == _V1_PREAMBLE[0]:
        return _parse_v1(window)
    raise ProxyProtocolError(
        f"not a PROXY protocol header: first byte {first:#04x} is neither 'P' (v1) nor CR (v2)"
    )


def parse_v2_only(data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, int] | None:
    """Like :func:`parse`, but only a v2 header is acceptable; a v1 line is an error.

    This is what sōzu's ``expect_proxy`` listeners accept (reference §G).
    """
    window = _header_window(data)
    if not window:
        return None
    if window[0] == _V1_PREAMBLE[0]:
        raise ProxyProtocolError("PROXY protocol v1 header received where only v2 is accepted")
    return _parse_v2(window)


def build_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """Return the v1 line describing a TCP connection from `source` to `destination`.

    Both ``None`` gives ``b"PROXY UNKNOWN\\r\\n"``; IPv4 endpoints give ``TCP4``, IPv6 ones
    ``TCP6``. Raises ValueError for only one endpoint, endpoints of different families, an
    invalid address (zone identifiers included) or a port outside 0..65535.
    """
    if source is None and destination is None:
        return b"PROXY UNKNOWN\r\n"
    source_ip, source_port, destination_ip, destination_port = _endpoint_pair(source, destination)
    protocol = "TCP4" if source_ip.version == 4 else "TCP6"
    line = f"PROXY {protocol} {source_ip} {destination_ip} {source_port} {destination_port}\r\n"
    return line.encode("ascii")


def build_v2(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    *,
    command: str = "proxy",
    transport: str = "stream",
    tlvs: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """Return the v2 header for a connection from `source` to `destination`, then `tlvs`.

    With ``command="proxy"`` and both endpoints, the header is PROXY over AF_INET or AF_INET6
    (from the addresses) with `transport` ``"stream"`` or ``"dgram"``. ``command="local"``, or
    both endpoints ``None``, gives a LOCAL header with AF_UNSPEC and no address bytes (what a
    health check sends); the endpoints and `transport` are then not used. TLVs are written in
    the given order after the addresses.

    Raises ValueError for an unknown command or transport, only one endpoint, endpoints of
    different families, invalid addresses or ports, a TLV type outside 0..255 or value longer
    than 65535 bytes, or a header longer than :data:`MAX_HEADER_LENGTH`.
    """
    if command not in ("proxy", "local"):
        raise ValueError(f"PROXY v2 command must be 'proxy' or 'local', not {command!r}")
    if transport not in ("stream", "dgram", "unspec"):
        raise ValueError(f"PROXY v2 transport must be 'stream' or 'dgram', not {transport!r}")
    tlv_block = _encode_tlvs(tlvs)
    if command == "local" or (source is None and destination is None):
        version_command = (_V2_VERSION << 4) | _V2_LOCAL
        family_transport = 0x00
        address_block = b""
    else:
        transport_code = _V2_TRANSPORT_CODES.get(transport)
        if transport_code is None:
            raise ValueError("a PROXY v2 header with addresses needs transport 'stream' or 'dgram'")
        source_ip, source_port, destination_ip, destination_port = _endpoint_pair(
            source, destination
        )
        version_command = (_V2_VERSION << 4) | _V2_PROXY
        if source_ip.version == 4:
            family_transport = 0x10 | transport_code
            address_layout = _V2_INET
        else:
            family_transport = 0x20 | transport_code
            address_layout = _V2_INET6
        address_block = address_layout.pack(
            source_ip.packed, destination_ip.packed, source_port, destination_port
        )
    length = len(address_block) + len(tlv_block)
    if _V2_FIXED_LENGTH + length > MAX_HEADER_LENGTH:
        raise ValueError(
            f"PROXY v2 header would be {_V2_FIXED_LENGTH + length} bytes, "
            f"over the {MAX_HEADER_LENGTH}-byte limit"
        )
    return b"".join(
        (
            V2_SIGNATURE,
            _V2_FIXED.pack(version_command, family_transport, length),
            address_block,
            tlv_block,
        )
    )


# --- input window -------------------------------------------------------------------------------


def _header_window(data: bytes | bytearray | memoryview) -> bytes:
    """Return the first :data:`MAX_HEADER_LENGTH` bytes of `data` (no header is longer).

    Copying at most 4 KiB once per connection is cheaper than slicing a memoryview field by
    field, and lets the parsers use the fast ``bytes`` methods.
    """
    if isinstance(data, bytes):
        return data[:MAX_HEADER_LENGTH]
    view = memoryview(data)
    if view.itemsize != 1 or view.ndim != 1:
        view = view.cast("B")
    return bytes(view[:MAX_HEADER_LENGTH])


# --- version 1 ----------------------------------------------------------------------------------


def _parse_v1(window: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse the v1 line at the start of `window` (which starts with 'P')."""
    line_end = window.find(_CRLF, 0, V1_MAX_LENGTH)
    if line_end < 0:
        _check_v1_partial_line(window[:V1_MAX_LENGTH])
        return None
    consumed = line_end + len(_CRLF)
    return _parse_v1_line(window[:line_end], window[:consumed]), consumed


def _parse_v1_line(line: bytes, raw: bytes) -> ProxyHeader:
    """Parse a complete v1 line, CRLF excluded; `raw` is the line with its CRLF."""
    if not line.startswith(_V1_PREAMBLE):
        raise ProxyProtocolError(f"PROXY v1 line must start with 'PROXY ': {line[:6]!r}")
    rest = line[len(_V1_PREAMBLE) :]
    if rest.startswith(_V1_UNKNOWN) and (
        len(rest) == len(_V1_UNKNOWN) or rest[len(_V1_UNKNOWN)] == _SPACE
    ):
        # Spec §2.1: for UNKNOWN the receiver must ignore anything before the CRLF.
        return ProxyHeader(1, "local", "unspec", "unspec", None, None, (), raw)
    fields = rest.split(b" ")
    protocol = fields[0]
    if protocol == b"TCP4":
        read_address, family = _v1_ipv4_address, "inet"
    elif protocol == b"TCP6":
        read_address, family = _v1_ipv6_address, "inet6"
    else:
        raise ProxyProtocolError(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol[:16]!r}"
        )
    if len(fields) != 5:
        raise ProxyProtocolError(
            f"PROXY v1 {protocol.decode()} line needs exactly 4 fields separated by single "
            f"spaces (source, destination, source port, destination port), got {len(fields) - 1}"
        )
    source = (read_address(fields[1]), _v1_port(fields[3]))
    destination = (read_address(fields[2]), _v1_port(fields[4]))
    return ProxyHeader(1, "proxy", family, "stream", source, destination, (), raw)


def _v1_ipv4_address(field: bytes) -> str:
    """Return the canonical text of the v1 IPv4 address `field` or raise."""
    try:
        # ipaddress refuses leading zeros, as the spec requires ("no octal confusion").
        return str(ipaddress.IPv4Address(field.decode("ascii")))
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 TCP4: {field!r} is not an IPv4 address") from None


def _v1_ipv6_address(field: bytes) -> str:
    """Return the canonical text of the v1 IPv6 address `field` or raise."""
    if field.translate(None, _IPV6_TEXT_BYTES):
        raise ProxyProtocolError(
            f"PROXY v1 TCP6: {field!r} is not an IPv6 address (unexpected characters)"
        )
    try:
        return str(ipaddress.IPv6Address(field.decode("ascii")))
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 TCP6: {field!r} is not an IPv6 address") from None


def _v1_port(field: bytes) -> int:
    """Return the v1 port `field` as an int, or raise if it is not 0..65535 in plain decimal."""
    if not _is_plain_decimal(field, _MAX_PORT):
        raise ProxyProtocolError(
            f"PROXY v1 port {field!r} is not a decimal number in 0..65535 without leading zeros"
        )
    return int(field)


def _is_plain_decimal(text: bytes, maximum: int) -> bool:
    """Whether `text` is a decimal number <= `maximum` written without leading zeros.

    The same test tells whether `text` is a *prefix* of such a number: every prefix of a valid
    number is itself a valid number no larger than it.
    """
    return (
        text.isdigit()
        and (len(text) == 1 or text[0] != _ZERO_DIGIT)
        and len(text) <= len(str(maximum))
        and int(text) <= maximum
    )


# Complexity: the PROXY v1 line's grammar checked as bytes arrive, one branch per field.
def _check_v1_partial_line(window: bytes) -> None:  # noqa: C901, PLR0912
    """Raise if `window`, a v1 line without its CRLF yet, cannot be completed into a valid line.

    `window` starts with 'P', holds no CRLF and is at most 107 bytes long.
    """
    if not _V1_PREAMBLE.startswith(window[: len(_V1_PREAMBLE)]):
        raise ProxyProtocolError(
            f"PROXY v1 line must start with 'PROXY ': {window[: len(_V1_PREAMBLE)]!r}"
        )
    # A trailing CR may be the first half of the CRLF; otherwise both bytes are still to come,
    # and they must fit within the 107-byte limit.
    line_end_pending = window.endswith(b"\r")
    if len(window) + (1 if line_end_pending else 2) > V1_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes")
    if len(window) <= len(_V1_PREAMBLE):
        return
    if line_end_pending:
        # Only a LF may follow, so the line must already be complete and valid.
        _parse_v1_line(window[:-1], window)
        return
    fields = window[len(_V1_PREAMBLE) :].split(b" ")
    protocol = fields[0]
    if len(fields) == 1:
        if not any(known.startswith(protocol) for known in _V1_PROTOCOLS):
            raise ProxyProtocolError(
                f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol[:16]!r}"
            )
        return
    if protocol == _V1_UNKNOWN:
        return  # whatever follows UNKNOWN up to the CRLF is ignored
    if protocol == b"TCP4":
        read_address, is_address_prefix = _v1_ipv4_address, _is_ipv4_prefix
    elif protocol == b"TCP6":
        read_address, is_address_prefix = _v1_ipv6_address, _is_ipv6_prefix
    else:
        raise ProxyProtocolError(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol[:16]!r}"
        )
    if len(fields) > 5:
        raise ProxyProtocolError(f"PROXY v1 {protocol.decode()} line has more than 4 fields")
    # Fields followed by a space are complete (1-2 addresses, 3-4 ports); the last may grow.
    *complete, growing = fields[1:]
    for field_number, field in enumerate(complete, start=1):
        if field_number <= 2:
            read_address(field)
        else:
            _v1_port(field)
    if len(fields) - 1 <= 2:
        if not is_address_prefix(growing):
            raise ProxyProtocolError(
                f"PROXY v1 {protocol.decode()}: {growing!r} cannot begin a valid address"
            )
    elif growing and not _is_plain_decimal(growing, _MAX_PORT):
        raise ProxyProtocolError(
            f"PROXY v1 port {growing!r} is not a decimal number in 0..65535 without leading zeros"
        )


def _is_ipv4_prefix(field: bytes) -> bool:
    """Whether some continuation of `field` is a valid v1 IPv4 address."""
    octets = field.split(b".")
    if len(octets) > 4:
        return False
    *complete, growing = octets
    return all(_is_plain_decimal(octet, _MAX_OCTET) for octet in complete) and (
        not growing or _is_plain_decimal(growing, _MAX_OCTET)
    )


def _is_ipv6_prefix(field: bytes) -> bool:
    """Whether some continuation of `field` is a valid v1 IPv6 address."""
    if field.translate(None, _IPV6_TEXT_BYTES):
        return False
    text = field.decode("ascii")
    for completion in _IPV6_COMPLETIONS:
        try:
            ipaddress.IPv6Address(text + completion)
        except ValueError:
            continue
        return True
    return False


# --- version 2 ----------------------------------------------------------------------------------


def _parse_v2(window: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse the v2 header at the start of `window` (which is not empty)."""
    signature = window[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(signature):
        raise ProxyProtocolError(
            f"PROXY v2 signature mismatch: expected {V2_SIGNATURE!r}, got {signature!r}"
        )
    available = len(window)
    if available < _V2_FIXED_LENGTH:
        # Check whatever part of the fixed header is already here.
        if available > len(V2_SIGNATURE):
            command = _v2_command(window[len(V2_SIGNATURE)])
            if available > len(V2_SIGNATURE) + 1:
                _v2_address_format(command, window[len(V2_SIGNATURE) + 1])
        return None
    version_command, family_transport, length = _V2_FIXED.unpack_from(window, len(V2_SIGNATURE))
    command = _v2_command(version_command)
    family, transport, address_length = _v2_address_format(command, family_transport)
    total = _V2_FIXED_LENGTH + length
    if total > MAX_HEADER_LENGTH:
        raise ProxyProtocolError(
            f"PROXY v2 header declares {total} bytes, over the {MAX_HEADER_LENGTH}-byte limit"
        )
    # Addresses and TLVs are used only for PROXY with a real family; otherwise the spec tells
    # the receiver to ignore the block, so nothing in it may cause a rejection.
    uses_block = command == "proxy" and family != "unspec"
    if uses_block and length < address_length:
        raise ProxyProtocolError(
            f"PROXY v2 {family}/{transport} needs {address_length} address bytes, "
            f"the header declares only {length}"
        )
    tlv_start = _V2_FIXED_LENGTH + address_length
    if available < total:
        if uses_block:
            _read_tlvs(window, tlv_start, total)  # report an overrunning TLV without waiting
        return None
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    if uses_block:
        if family == "inet":
            source_ip, destination_ip, source_port, destination_port = _V2_INET.unpack_from(
                window, _V2_FIXED_LENGTH
            )
            source = (str(ipaddress.IPv4Address(source_ip)), source_port)
            destination = (str(ipaddress.IPv4Address(destination_ip)), destination_port)
        elif family == "inet6":
            source_ip, destination_ip, source_port, destination_port = _V2_INET6.unpack_from(
                window, _V2_FIXED_LENGTH
            )
            source = (str(ipaddress.IPv6Address(source_ip)), source_port)
            destination = (str(ipaddress.IPv6Address(destination_ip)), destination_port)
        tlvs = _read_tlvs(window, tlv_start, total)
    elif length >= address_length:
        try:
            tlvs = _read_tlvs(window, tlv_start, total)
        except ProxyProtocolError:
            tlvs = ()
    else:
        tlvs = ()
    header = ProxyHeader(2, command, family, transport, source, destination, tlvs, window[:total])
    return header, total


def _v2_command(version_command: int) -> str:
    """Return the command of a v2 version/command byte, or raise if version or command is bad."""
    version = version_command >> 4
    if version != _V2_VERSION:
        raise ProxyProtocolError(
            f"PROXY v2 header carries version {version} (byte {version_command:#04x}); "
            "only version 2 exists"
        )
    command = _V2_COMMANDS.get(version_command & 0x0F)
    if command is None:
        raise ProxyProtocolError(
            f"PROXY v2 command {version_command & 0x0F} is neither LOCAL (0) nor PROXY (1)"
        )
    return command


def _v2_address_format(command: str, family_transport: int) -> tuple[str, str, int]:
    """Return (family, transport, address length) of a v2 family/transport byte, or raise."""
    address_format = _V2_ADDRESS_FORMATS.get(family_transport)
    if address_format is None:
        family_code, transport_code = family_transport >> 4, family_transport & 0x0F
        what = (
            f"address family {family_code}"
            if family_code not in _FAMILIES
            else f"transport protocol {transport_code}"
        )
        raise ProxyProtocolError(
            f"PROXY v2 family/transport byte {family_transport:#04x} has an undefined {what}"
        )
    if command == "proxy" and family_transport not in _V2_PROXY_FORMATS:
        raise ProxyProtocolError(
            f"PROXY v2 family/transport byte {family_transport:#04x} is not a valid combination"
            " (0x00, 0x11, 0x12, 0x21, 0x22, 0x31 or 0x32)"
        )
    return address_format


def _read_tlvs(window: bytes, start: int, end: int) -> tuple[tuple[int, bytes], ...]:
    """Return the TLVs found in ``window[start:end]``, in wire order.

    `window` may stop before `end` while the header is still arriving: then the TLVs whose
    bytes are all present are returned and the rest is not examined. Raises as soon as a TLV
    header shows that the TLV cannot fit before `end`, or the bytes left before `end` are too
    few for a TLV header.
    """
    tlvs: list[tuple[int, bytes]] = []
    available = min(len(window), end)
    offset = start
    while offset < end:
        if end - offset < _V2_TLV_HEAD.size:
            raise ProxyProtocolError(
                f"PROXY v2 header ends with {end - offset} byte(s), too few for a TLV"
            )
        if offset + _V2_TLV_HEAD.size > available:
            break
        tlv_type, value_length = _V2_TLV_HEAD.unpack_from(window, offset)
        value_start = offset + _V2_TLV_HEAD.size
        value_end = value_start + value_length
        if value_end > end:
            raise ProxyProtocolError(
                f"PROXY v2 TLV of type {tlv_type:#04x} declares {value_length} value bytes, "
                f"{value_end - end} more than the header length allows"
            )
        if value_end > available:
            break
        tlvs.append((tlv_type, window[value_start:value_end]))
        offset = value_end
    return tuple(tlvs)


def _encode_tlvs(tlvs: Sequence[tuple[int, bytes]]) -> bytes:
    """Serialise `tlvs` in order, or raise ValueError for a bad type or an oversized value."""
    encoded: list[bytes] = []
    for tlv_type, value in tlvs:
        if isinstance(tlv_type, bool) or not isinstance(tlv_type, int):
            raise ValueError(f"PROXY v2 TLV type must be an int, not {tlv_type!r}")
        if not 0 <= tlv_type <= _MAX_TLV_TYPE:
            raise ValueError(f"PROXY v2 TLV type {tlv_type} is outside 0..255")
        value_bytes = bytes(value)
        if len(value_bytes) > _MAX_TLV_VALUE_LENGTH:
            raise ValueError(
                f"PROXY v2 TLV of type {tlv_type:#04x} has {len(value_bytes)} value bytes, "
                f"more than {_MAX_TLV_VALUE_LENGTH}"
            )
        encoded.append(_V2_TLV_HEAD.pack(tlv_type, len(value_bytes)))
        encoded.append(value_bytes)
    return b"".join(encoded)


# --- endpoints (building) -----------------------------------------------------------------------


_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _endpoint_pair(
    source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> tuple[_IPAddress, int, _IPAddress, int]:
    """Validate two endpoints of one family; return (source ip, port, destination ip, port)."""
    if source is None or destination is None:
        raise ValueError("give both the source and the destination endpoint, or neither")
    source_ip, source_port = _endpoint(source, "source")
    destination_ip, destination_port = _endpoint(destination, "destination")
    if source_ip.version != destination_ip.version:
        raise ValueError(
            f"source {source_ip} and destination {destination_ip} are not of the same family"
        )
    return source_ip, source_port, destination_ip, destination_port


def _endpoint(endpoint: tuple[str, int], role: str) -> tuple[_IPAddress, int]:
    """Validate one (ip text, port) endpoint and return its parsed address and port."""
    host, port = endpoint
    if not isinstance(host, str):
        raise ValueError(f"{role} address must be IP text, not {host!r}")
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        # A zone identifier names an interface of this host; it means nothing to the receiver.
        raise ValueError(f"{role} address {host!r} has a zone identifier")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
        raise ValueError(f"{role} port {port!r} is not an integer in 0..65535")
    return ip, port
