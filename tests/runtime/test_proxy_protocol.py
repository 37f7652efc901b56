"""PROXY protocol v1 and v2 (HAProxy spec §2.1, §2.2), driven by feeding bytes, no sockets.

The reference vectors are written out byte by byte so that the parser is checked against the
specification rather than against the module's own builders.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sozu_runtime.worker.proxy_protocol import (
    MAX_HEADER_LENGTH,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    build_v1,
    build_v2,
    parse,
    parse_v2_only,
)

SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
PAYLOAD = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

# --- reference vectors ---------------------------------------------------------------------------

V1_TCP4 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:DB8:0:0::1 2001:db8::ff:2 65535 0\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# The spec's worst case: exactly 107 bytes, and what follows UNKNOWN is ignored.
V1_UNKNOWN_LONGEST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)

V2_IPV4 = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"  # signature
    "21"  # version 2, command PROXY
    "11"  # AF_INET, STREAM
    "000c"  # 12 bytes follow
    "c0a80001"  # source 192.168.0.1
    "c0a8000b"  # destination 192.168.0.11
    "dc04"  # source port 56324
    "01bb"  # destination port 443
)
V2_IPV6_DGRAM = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"
    "21"  # version 2, PROXY
    "22"  # AF_INET6, DGRAM
    "0024"  # 36 bytes follow
    "20010db8000000000000000000000001"  # source 2001:db8::1
    "00000000000000000000000000000001"  # destination ::1
    "1f90"  # source port 8080
    "0035"  # destination port 53
)
V2_UNIX = (
    SIGNATURE
    + b"\x21"  # version 2, PROXY
    + b"\x31"  # AF_UNIX, STREAM
    + b"\x00\xd8"  # 216 bytes follow
    + b"/run/client.sock"
    + b"\x00" * (108 - 16)
    + b"/run/sozu.sock"
    + b"\x00" * (108 - 14)
)
V2_LOCAL = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"
    "20"  # version 2, LOCAL
    "00"  # AF_UNSPEC, UNSPEC
    "0000"  # nothing follows
)
# A LOCAL health check that still carries an IPv4 block: the block must be skipped, unused.
V2_LOCAL_INET = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"
    "20"  # version 2, LOCAL
    "11"  # AF_INET, STREAM
    "000c"
    "0a000001"
    "0a000002"
    "3039"
    "0050"
)
V2_IPV4_TLVS = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"
    "21"
    "11"
    "0028"  # 40 bytes follow: 12 address bytes + 28 TLV bytes
    "7f000001"  # 127.0.0.1
    "7f000002"  # 127.0.0.2
    "0400"  # 1024
    "0050"  # 80
    "01"
    "0002"
    "6832"  # PP2_TYPE_ALPN "h2"
    "02"
    "000b"
    "6578616d706c652e636f6d"  # PP2_TYPE_AUTHORITY "example.com"
    "04"
    "0000"  # PP2_TYPE_NOOP, empty
    "e0"
    "0003"
    "010203"  # application-specific type 0xE0
)

EXPECTED: dict[bytes, ProxyHeader] = {
    V1_TCP4: ProxyHeader(
        1, "proxy", "inet", "stream", ("192.168.0.1", 56324), ("192.168.0.11", 443), (), V1_TCP4
    ),
    V1_TCP6: ProxyHeader(
        1, "proxy", "inet6", "stream", ("2001:db8::1", 65535), ("2001:db8::ff:2", 0), (), V1_TCP6
    ),
    V1_UNKNOWN: ProxyHeader(1, "local", "unspec", "unspec", None, None, (), V1_UNKNOWN),
    V1_UNKNOWN_LONGEST: ProxyHeader(
        1, "local", "unspec", "unspec", None, None, (), V1_UNKNOWN_LONGEST
    ),
    V2_IPV4: ProxyHeader(
        2, "proxy", "inet", "stream", ("192.168.0.1", 56324), ("192.168.0.11", 443), (), V2_IPV4
    ),
    V2_IPV6_DGRAM: ProxyHeader(
        2, "proxy", "inet6", "dgram", ("2001:db8::1", 8080), ("::1", 53), (), V2_IPV6_DGRAM
    ),
    V2_UNIX: ProxyHeader(2, "proxy", "unix", "stream", None, None, (), V2_UNIX),
    V2_LOCAL: ProxyHeader(2, "local", "unspec", "unspec", None, None, (), V2_LOCAL),
    V2_LOCAL_INET: ProxyHeader(2, "local", "inet", "stream", None, None, (), V2_LOCAL_INET),
    V2_IPV4_TLVS: ProxyHeader(
        2,
        "proxy",
        "inet",
        "stream",
        ("127.0.0.1", 1024),
        ("127.0.0.2", 80),
        ((0x01, b"h2"), (0x02, b"example.com"), (0x04, b""), (0xE0, b"\x01\x02\x03")),
        V2_IPV4_TLVS,
    ),
}
VECTORS = list(EXPECTED)
V2_VECTORS = [vector for vector in VECTORS if vector.startswith(SIGNATURE)]
VECTOR_IDS = [
    "v1-tcp4",
    "v1-tcp6",
    "v1-unknown",
    "v1-unknown-107",
    "v2-ipv4",
    "v2-ipv6-dgram",
    "v2-unix",
    "v2-local",
    "v2-local-inet",
    "v2-tlvs",
]
V2_VECTOR_IDS = [name for name in VECTOR_IDS if name.startswith("v2")]


def test_constants_match_the_specification() -> None:
    assert V2_SIGNATURE == SIGNATURE
    assert V1_MAX_LENGTH == 107
    assert MAX_HEADER_LENGTH == 4096
    assert len(V1_UNKNOWN_LONGEST) == V1_MAX_LENGTH
    assert len(V2_UNIX) == 16 + 216


# --- complete headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_reference_vector_parses_to_expected_header(vector: bytes) -> None:
    assert parse(vector) == (EXPECTED[vector], len(vector))


@pytest.mark.parametrize("vector", V2_VECTORS, ids=V2_VECTOR_IDS)
def test_parse_v2_only_accepts_v2_vectors(vector: bytes) -> None:
    assert parse_v2_only(vector) == (EXPECTED[vector], len(vector))


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_payload_after_header_is_not_consumed(vector: bytes) -> None:
    result = parse(vector + PAYLOAD)
    assert result is not None
    header, consumed = result
    assert consumed == len(vector)
    assert header.raw == vector
    assert header == EXPECTED[vector]


def test_v1_line_ends_at_the_first_crlf() -> None:
    # The payload starts with its own CRLF: only the header's one belongs to the header.
    result = parse(V1_TCP4 + b"\r\n" + PAYLOAD)
    assert result is not None
    assert result[1] == len(V1_TCP4)


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_bytearray_and_memoryview_are_accepted(vector: bytes) -> None:
    buffer = bytearray(b"xx" + vector + PAYLOAD)
    assert parse(buffer[2:]) == (EXPECTED[vector], len(vector))
    assert parse(memoryview(buffer)[2:]) == (EXPECTED[vector], len(vector))
    result = parse(memoryview(buffer)[2:])
    assert result is not None
    assert type(result[0].raw) is bytes


def test_empty_input_needs_more_bytes() -> None:
    assert parse(b"") is None
    assert parse_v2_only(b"") is None


# --- partial input ------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_every_strict_prefix_needs_more_bytes(vector: bytes) -> None:
    for end in range(len(vector)):
        assert parse(vector[:end]) is None, vector[:end]


@pytest.mark.parametrize("vector", V2_VECTORS, ids=V2_VECTOR_IDS)
def test_every_strict_prefix_needs_more_bytes_v2_only(vector: bytes) -> None:
    for end in range(len(vector)):
        assert parse_v2_only(vector[:end]) is None, vector[:end]


def test_v1_line_of_106_bytes_waits_for_its_line_feed() -> None:
    waiting = V1_UNKNOWN_LONGEST[:-1]
    assert waiting.endswith(b"\r")
    assert parse(waiting) is None
    assert parse(waiting + b"\n") == (EXPECTED[V1_UNKNOWN_LONGEST], V1_MAX_LENGTH)


# --- builders -----------------------------------------------------------------------------------


def test_build_v1_produces_the_reference_lines() -> None:
    assert build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == V1_TCP4
    assert build_v1(None, None) == V1_UNKNOWN
    assert (
        build_v1(("2001:db8::1", 65535), ("2001:DB8:0::ff:2", 0))
        == b"PROXY TCP6 2001:db8::1 2001:db8::ff:2 65535 0\r\n"
    )


def test_build_v2_produces_the_reference_headers() -> None:
    assert build_v2(("192.168.0.1", 56324), ("192.168.0.11", 443)) == V2_IPV4
    assert build_v2(("2001:db8::1", 8080), ("::1", 53), transport="dgram") == V2_IPV6_DGRAM
    assert build_v2(None, None) == V2_LOCAL
    assert build_v2(("10.0.0.1", 1), ("10.0.0.2", 2), command="local") == V2_LOCAL
    tlvs = [(0x01, b"h2"), (0x02, b"example.com"), (0x04, b""), (0xE0, b"\x01\x02\x03")]
    assert build_v2(("127.0.0.1", 1024), ("127.0.0.2", 80), tlvs=tlvs) == V2_IPV4_TLVS


def test_local_header_with_tlvs_round_trips() -> None:
    header_bytes = build_v2(None, None, tlvs=[(0x05, b"connection-42")])
    assert header_bytes == SIGNATURE + b"\x20\x00\x00\x10" + b"\x05\x00\x0dconnection-42"
    result = parse(header_bytes)
    assert result is not None
    header, consumed = result
    assert consumed == len(header_bytes)
    assert (header.command, header.family, header.source) == ("local", "unspec", None)
    assert header.tlvs == ((0x05, b"connection-42"),)


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        (("1.2.3.4", 80), None),
        (None, ("1.2.3.4", 80)),
        (("1.2.3.4", 80), ("::1", 80)),
        (("1.2.3.4", 65536), ("1.2.3.4", 80)),
        (("1.2.3.4", -1), ("1.2.3.4", 80)),
        (("1.2.3.4", True), ("1.2.3.4", 80)),
        (("example.com", 80), ("1.2.3.4", 80)),
        (("fe80::1%eth0", 80), ("fe80::2", 80)),
        (("01.2.3.4", 80), ("1.2.3.4", 80)),
    ],
    ids=[
        "source-only",
        "destination-only",
        "mixed-families",
        "port-65536",
        "port-negative",
        "port-bool",
        "host-name",
        "zone-identifier",
        "leading-zero",
    ],
)
def test_builders_refuse_bad_endpoints(
    source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> None:
    with pytest.raises(ValueError):
        build_v1(source, destination)
    with pytest.raises(ValueError):
        build_v2(source, destination)


def test_build_v2_refuses_bad_options() -> None:
    endpoints = (("1.2.3.4", 1), ("5.6.7.8", 2))
    with pytest.raises(ValueError, match="command"):
        build_v2(*endpoints, command="relay")
    with pytest.raises(ValueError, match="transport"):
        build_v2(*endpoints, transport="seqpacket")
    with pytest.raises(ValueError, match="transport"):
        build_v2(*endpoints, transport="unspec")
    with pytest.raises(ValueError, match="TLV type"):
        build_v2(*endpoints, tlvs=[(256, b"")])
    with pytest.raises(ValueError, match="TLV type"):
        build_v2(*endpoints, tlvs=[(-1, b"")])
    with pytest.raises(ValueError, match="value bytes"):
        build_v2(*endpoints, tlvs=[(0xE0, bytes(65536))])
    with pytest.raises(ValueError, match="limit"):
        build_v2(*endpoints, tlvs=[(0x04, bytes(MAX_HEADER_LENGTH))])


# --- malformed input ----------------------------------------------------------------------------

INET_BLOCK = bytes.fromhex("c0a80001c0a8000bdc0401bb")

MALFORMED: dict[str, bytes] = {
    # detection
    "first-byte-neither-P-nor-CR": b"GET / HTTP/1.1\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    # v1 grammar
    "v1-lowercase-proxy": b"proxy TCP4 1.2.3.4 5.6.7.8 80 443\r\n",
    "v1-no-space-after-PROXY": b"PROXY\r\n",
    "v1-double-space": b"PROXY  TCP4 1.2.3.4 5.6.7.8 80 443\r\n",
    "v1-lowercase-protocol": b"PROXY tcp4 1.2.3.4 5.6.7.8 80 443\r\n",
    "v1-unknown-protocol": b"PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n",
    "v1-unknown-glued": b"PROXY UNKNOWNX\r\n",
    "v1-tab-separator": b"PROXY TCP4\t1.2.3.4 5.6.7.8 80 443\r\n",
    "v1-missing-port": b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",
    "v1-trailing-space": b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 \r\n",
    "v1-extra-field": b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 9\r\n",
    "v1-bare-lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n" + PAYLOAD,
    "v1-bare-cr": b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rX",
    "v1-port-65536": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n",
    "v1-port-leading-zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n",
    "v1-port-00": b"PROXY TCP4 1.2.3.4 5.6.7.8 00 443\r\n",
    "v1-port-negative": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n",
    "v1-port-plus-sign": b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n",
    "v1-port-empty": b"PROXY TCP4 1.2.3.4 5.6.7.8  443\r\n",
    "v1-tcp4-with-ipv6": b"PROXY TCP4 ::1 ::1 80 443\r\n",
    "v1-tcp6-with-ipv4": b"PROXY TCP6 1.2.3.4 5.6.7.8 80 443\r\n",
    "v1-tcp4-octet-256": b"PROXY TCP4 1.2.3.256 5.6.7.8 80 443\r\n",
    "v1-tcp4-leading-zero-octet": b"PROXY TCP4 1.2.3.04 5.6.7.8 80 443\r\n",
    "v1-tcp4-three-octets": b"PROXY TCP4 1.2.3 5.6.7.8 80 443\r\n",
    "v1-tcp4-host-name": b"PROXY TCP4 localhost 5.6.7.8 80 443\r\n",
    "v1-tcp6-zone-identifier": b"PROXY TCP6 fe80::1%eth0 fe80::2 80 443\r\n",
    "v1-tcp6-two-double-colons": b"PROXY TCP6 1::2::3 ::1 80 443\r\n",
    "v1-tcp6-nine-groups": b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 80 443\r\n",
    "v1-tcp6-bracketed": b"PROXY TCP6 [::1] ::1 80 443\r\n",
    "v1-non-ascii-address": "PROXY TCP4 1.2.3.\uff14 5.6.7.8 80 443\r\n".encode(),
    "v1-no-crlf-within-107": b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 14),
    "v1-crlf-at-byte-108": b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n",
    # v2 fixed header
    "v2-bad-signature-byte": SIGNATURE[:7] + b"\x50" + SIGNATURE[8:] + b"\x21\x11\x00\x0c",
    "v2-version-1": SIGNATURE + b"\x11\x11\x00\x0c" + INET_BLOCK,
    "v2-version-3": SIGNATURE + b"\x31\x11\x00\x0c" + INET_BLOCK,
    "v2-command-2": SIGNATURE + b"\x22\x11\x00\x0c" + INET_BLOCK,
    "v2-command-3": SIGNATURE + b"\x23\x11\x00\x0c" + INET_BLOCK,
    "v2-command-15": SIGNATURE + b"\x2f\x11\x00\x0c" + INET_BLOCK,
    "v2-family-4": SIGNATURE + b"\x21\x41\x00\x0c" + INET_BLOCK,
    "v2-transport-3": SIGNATURE + b"\x21\x13\x00\x0c" + INET_BLOCK,
    "v2-local-family-4": SIGNATURE + b"\x20\x41\x00\x00",
    "v2-proxy-inet-unspec-transport": SIGNATURE + b"\x21\x10\x00\x0c" + INET_BLOCK,
    "v2-proxy-unspec-stream": SIGNATURE + b"\x21\x01\x00\x00",
    "v2-inet-block-too-short": SIGNATURE + b"\x21\x11\x00\x08" + INET_BLOCK[:8],
    "v2-inet6-with-inet-length": SIGNATURE + b"\x21\x21\x00\x0c" + INET_BLOCK,
    "v2-unix-block-too-short": SIGNATURE + b"\x21\x31\x00\x24" + bytes(36),
    # v2 TLVs
    "v2-tlv-overruns-length": SIGNATURE + b"\x21\x11\x00\x11" + INET_BLOCK + b"\x01\x00\x03h2",
    "v2-tlv-header-truncated": SIGNATURE + b"\x21\x11\x00\x0e" + INET_BLOCK + b"\x01\x00",
    "v2-second-tlv-overruns": (
        SIGNATURE + b"\x21\x11\x00\x16" + INET_BLOCK + b"\x04\x00\x00" + b"\x01\x00\x05h2"
    ),
    # v2 size limit
    "v2-over-max-length": (
        SIGNATURE + b"\x21\x11" + (MAX_HEADER_LENGTH - 16 + 1).to_bytes(2, "big") + INET_BLOCK
    ),
    "v2-max-u16-length": SIGNATURE + b"\x20\x00\xff\xff",
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_header_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)
    with pytest.raises(ProxyProtocolError):
        parse(data + PAYLOAD)


@pytest.mark.parametrize(
    "data",
    [data for name, data in MALFORMED.items() if name.startswith("v2")],
    ids=[name for name in MALFORMED if name.startswith("v2")],
)
def test_malformed_v2_header_is_refused_by_parse_v2_only(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_v2_only(data)


@pytest.mark.parametrize("vector", VECTORS[:4], ids=VECTOR_IDS[:4])
def test_parse_v2_only_refuses_v1(vector: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="v1"):
        parse_v2_only(vector)
    with pytest.raises(ProxyProtocolError):
        parse_v2_only(vector[:1])


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(ProxyProtocolError, match="version 1"):
        parse(MALFORMED["v2-version-1"])
    with pytest.raises(ProxyProtocolError, match="command 3"):
        parse(MALFORMED["v2-command-3"])
    with pytest.raises(ProxyProtocolError, match="65536"):
        parse(MALFORMED["v1-port-65536"])
    with pytest.raises(ProxyProtocolError, match="107"):
        parse(MALFORMED["v1-no-crlf-within-107"])
    with pytest.raises(ProxyProtocolError, match="TLV"):
        parse(MALFORMED["v2-tlv-overruns-length"])
    with pytest.raises(ProxyProtocolError, match="4096"):
        parse(MALFORMED["v2-over-max-length"])


# Inputs that are incomplete but already certain to be wrong: refused without waiting.
CERTAIN_EARLY: dict[str, bytes] = {
    "first-byte": b"X",
    "v1-preamble": b"PR0",
    "v1-protocol": b"PROXY TCP5",
    "v1-unknown-glued": b"PROXY UNKNOWNX",
    "v1-octet-256": b"PROXY TCP4 256",
    "v1-five-octets": b"PROXY TCP4 1.2.3.4.",
    "v1-ipv6-in-tcp4": b"PROXY TCP4 ::",
    "v1-ipv6-second-double-colon": b"PROXY TCP6 ::1::",
    "v1-ipv6-five-digit-group": b"PROXY TCP6 12345",
    "v1-ipv6-ninth-group": b"PROXY TCP6 1:2:3:4:5:6:7:8:",
    "v1-ipv6-zone": b"PROXY TCP6 fe80::1%",
    "v1-bad-source-before-destination": b"PROXY TCP4 1.2.3.999 5.6",
    "v1-port-65536": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
    "v1-port-leading-zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 01",
    "v1-fifth-field": b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 ",
    "v1-cr-too-early": b"PROXY TCP4 1.2.3.4\r",
    "v1-106-bytes-without-cr": b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15),
    "v2-signature": SIGNATURE[:9] + b"X",
    "v2-version": SIGNATURE + b"\x11",
    "v2-command": SIGNATURE + b"\x23",
    "v2-family": SIGNATURE + b"\x21\x41",
    "v2-combination": SIGNATURE + b"\x21\x10",
    "v2-short-address-length": SIGNATURE + b"\x21\x11\x00\x0b",
    "v2-over-max-length": SIGNATURE + b"\x21\x11\x0f\xf1",
    "v2-tlv-overrun-visible": SIGNATURE + b"\x21\x11\x00\x11" + INET_BLOCK + b"\x01\x00\x09",
}


@pytest.mark.parametrize("data", list(CERTAIN_EARLY.values()), ids=list(CERTAIN_EARLY))
def test_certain_error_is_raised_without_waiting(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_longest_v1_partial_line_without_cr_still_waits() -> None:
    # 105 bytes leave exactly room for the CRLF; 106 (in CERTAIN_EARLY) do not.
    partial = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16)
    assert len(partial) == V1_MAX_LENGTH - 2
    assert parse(partial) is None
    assert parse(partial + b"\r\n") is not None


# --- v2 limits and ignored blocks ---------------------------------------------------------------


def test_v2_header_of_exactly_max_length_is_accepted() -> None:
    padding = MAX_HEADER_LENGTH - 16 - 12 - 3
    header_bytes = (
        SIGNATURE
        + b"\x21\x11"
        + (MAX_HEADER_LENGTH - 16).to_bytes(2, "big")
        + INET_BLOCK
        + b"\x04"
        + padding.to_bytes(2, "big")
        + bytes(padding)
    )
    assert len(header_bytes) == MAX_HEADER_LENGTH
    result = parse(header_bytes + PAYLOAD)
    assert result is not None
    header, consumed = result
    assert consumed == MAX_HEADER_LENGTH
    assert header.tlvs == ((0x04, bytes(padding)),)
    assert parse(header_bytes[:-1]) is None


def test_local_command_ignores_whatever_block_it_carries() -> None:
    # LOCAL: "discard the protocol block including the family" (spec §2.2), even a block too
    # short for its family or with bytes that are not TLVs.
    junk = SIGNATURE + b"\x20\x11\x00\x05" + b"\xff\xff\xff\xff\xff"
    assert parse(junk + PAYLOAD) == (
        ProxyHeader(2, "local", "inet", "stream", None, None, (), junk),
        len(junk),
    )
    not_tlvs = SIGNATURE + b"\x20\x00\x00\x04" + b"\x01\x00\x09z"
    assert parse(not_tlvs) == (
        ProxyHeader(2, "local", "unspec", "unspec", None, None, (), not_tlvs),
        len(not_tlvs),
    )
    # The declared length is honoured even for LOCAL: nothing of the block leaks into payload.
    assert parse(junk[:-1]) is None


def test_local_command_reports_well_formed_tlvs_after_its_address_block() -> None:
    data = V2_LOCAL_INET[:14] + b"\x00\x11" + V2_LOCAL_INET[16:] + b"\x01\x00\x02h2"
    result = parse(data)
    assert result is not None
    assert result[0].tlvs == ((0x01, b"h2"),)
    assert result[0].source is None


def test_proxy_command_with_unspec_family_is_accepted_without_addresses() -> None:
    data = SIGNATURE + b"\x21\x00\x00\x03" + b"abc"
    assert parse(data) == (
        ProxyHeader(2, "proxy", "unspec", "unspec", None, None, (), data),
        len(data),
    )


def test_unix_header_carries_tlvs_after_its_addresses() -> None:
    data = SIGNATURE + b"\x21\x32\x00\xdd" + bytes(216) + b"\xe1\x00\x02ok"
    result = parse(data)
    assert result is not None
    header, consumed = result
    assert consumed == len(data)
    assert (header.family, header.transport, header.source) == ("unix", "dgram", None)
    assert header.tlvs == ((0xE1, b"ok"),)


# --- properties ---------------------------------------------------------------------------------

ports = st.integers(min_value=0, max_value=65535)
endpoint_pairs = st.one_of(
    st.tuples(st.ip_addresses(v=4), ports, st.ip_addresses(v=4), ports),
    st.tuples(st.ip_addresses(v=6), ports, st.ip_addresses(v=6), ports),
)
tlv_lists = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=40)),
    max_size=4,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def endpoints(
    pair: tuple[IPAddress, int, IPAddress, int],
) -> tuple[tuple[str, int], tuple[str, int]]:
    source_ip, source_port, destination_ip, destination_port = pair
    return (str(source_ip), source_port), (str(destination_ip), destination_port)


@given(endpoint_pairs)
def test_v1_round_trip(pair: tuple[IPAddress, int, IPAddress, int]) -> None:
    source, destination = endpoints(pair)
    data = build_v1(source, destination)
    assert len(data) <= V1_MAX_LENGTH
    result = parse(data + PAYLOAD)
    assert result is not None
    header, consumed = result
    assert consumed == len(data)
    assert (header.version, header.command) == (1, "proxy")
    assert header.family == ("inet" if pair[0].version == 4 else "inet6")
    assert header.source == source
    assert header.destination == destination
    assert header.raw == data


@given(endpoint_pairs, st.sampled_from(["stream", "dgram"]), tlv_lists)
def test_v2_round_trip(
    pair: tuple[IPAddress, int, IPAddress, int],
    transport: str,
    tlvs: list[tuple[int, bytes]],
) -> None:
    source, destination = endpoints(pair)
    data = build_v2(source, destination, transport=transport, tlvs=tlvs)
    for parser in (parse, parse_v2_only):
        result = parser(data + PAYLOAD)
        assert result is not None
        header, consumed = result
        assert consumed == len(data)
        assert (header.version, header.command, header.transport) == (2, "proxy", transport)
        assert header.family == ("inet" if pair[0].version == 4 else "inet6")
        assert header.source == source
        assert header.destination == destination
        assert header.tlvs == tuple(tlvs)
        assert header.raw == data


@given(endpoint_pairs, tlv_lists, st.booleans())
def test_every_prefix_of_a_built_header_needs_more_bytes(
    pair: tuple[IPAddress, int, IPAddress, int],
    tlvs: list[tuple[int, bytes]],
    version_one: bool,
) -> None:
    source, destination = endpoints(pair)
    data = (
        build_v1(source, destination) if version_one else build_v2(source, destination, tlvs=tlvs)
    )
    for end in range(len(data)):
        assert parse(data[:end]) is None


def ipv6_spellings(address: ipaddress.IPv6Address) -> list[str]:
    """Several valid ways to write `address` (RFC 4291 §2.2)."""
    groups = address.exploded.split(":")
    dotted_tail = str(ipaddress.IPv4Address(address.packed[12:]))
    spellings = [
        address.compressed,
        address.exploded,
        address.exploded.upper(),
        ":".join(group.lstrip("0") or "0" for group in groups),
        ":".join(groups[:6]) + ":" + dotted_tail,
    ]
    # Compressed head with a dotted tail ("::ffff:1.2.3.4"), when '::' lands before the tail.
    head = ipaddress.IPv6Address(int(address) & ~0xFFFFFFFF).compressed
    if head.endswith("::") and head.count(":") <= 6:
        spellings.append(head + dotted_tail)
    return spellings


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), ports, ports, st.data())
def test_v1_ipv6_spellings_parse_to_canonical_text_and_their_prefixes_wait(
    source: ipaddress.IPv6Address,
    destination: ipaddress.IPv6Address,
    source_port: int,
    destination_port: int,
    data: st.DataObject,
) -> None:
    source_text = data.draw(st.sampled_from(ipv6_spellings(source)))
    destination_text = data.draw(st.sampled_from(ipv6_spellings(destination)))
    line = f"PROXY TCP6 {source_text} {destination_text} {source_port} {destination_port}\r\n"
    line_bytes = line.encode()
    if len(line_bytes) > V1_MAX_LENGTH:
        # Long spellings (exploded groups plus a dotted tail) can overflow the 107-byte line.
        with pytest.raises(ProxyProtocolError, match="107"):
            parse(line_bytes)
        return
    assert parse(line_bytes) == (
        ProxyHeader(
            1,
            "proxy",
            "inet6",
            "stream",
            (str(source), source_port),
            (str(destination), destination_port),
            (),
            line_bytes,
        ),
        len(line_bytes),
    )
    for end in range(len(line_bytes)):
        assert parse(line_bytes[:end]) is None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_proxy_protocol_error(data: bytes) -> None:
    for candidate in (data, b"PROXY " + data, SIGNATURE + data, b"PROXY TCP6 " + data):
        try:
            result = parse(candidate)
        except ProxyProtocolError:
            continue
        if result is not None:
            header, consumed = result
            assert header.raw == candidate[:consumed]


@given(
    st.sampled_from(VECTORS),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
)
def test_an_error_on_a_prefix_is_certain(vector: bytes, position: int, value: int) -> None:
    """Once a prefix is refused, no continuation of it is ever accepted."""
    corrupted = bytearray(vector + PAYLOAD)
    corrupted[position % len(vector)] = value
    corrupted_bytes = bytes(corrupted)
    for end in range(len(corrupted_bytes) + 1):
        try:
            parse(corrupted_bytes[:end])
        except ProxyProtocolError:
            first_refused = end
            break
    else:
        return
    for end in range(first_refused, len(corrupted_bytes) + 1):
        with pytest.raises(ProxyProtocolError):
            parse(corrupted_bytes[:end])
