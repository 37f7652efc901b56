"""HPACK for HTTP/2 clients (worker/h2_hpack.py). The encoder of the answers: whatever the
sequence of header lists and table size changes, it sends byte for byte what the library's
encoder sends (without Huffman coding), and a decoder reads back every list as it was given.
The decoder of the requests: whatever the blocks (valid, repeated, resizing the table,
oversized or garbage), it gives what the library's decoder gives, or fails as it does."""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from sozu_runtime.worker.h2_hpack import BlockEncoder, RequestDecoder

# A few names and values, so that fields repeat, are indexed, evicted and inserted again;
# ``date`` and ``content-length`` take many values, as on a real connection.
_FIELDS = st.one_of(
    st.sampled_from(
        [
            (b":status", b"200"),
            (b":status", b"404"),
            (b"server", b"nginx/1.22.1"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"12"),
            (b"x-long", b"v" * 3000),
        ]
    ),
    st.tuples(st.just(b"date"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just(b"content-length"), st.integers(0, 10**6).map(lambda n: b"%d" % n)),
)
_SOZU_ID = st.binary(min_size=1, max_size=26).map(
    lambda value: hpack.NeverIndexedHeaderTuple(b"sozu-id", value)
)
_BLOCK = st.lists(st.one_of(_FIELDS, _SOZU_ID), min_size=1, max_size=8)
# Between blocks: nothing, or a new table size from the client's SETTINGS.
_STEP = st.tuples(_BLOCK, st.one_of(st.none(), st.sampled_from([0, 64, 256, 4096, 65536])))


class _Reference(hpack.Encoder):
    def encode(self, headers: object, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=40))
def test_the_answers_encoder_sends_what_the_library_sends(
    steps: list[tuple[list[tuple[bytes, bytes]], int | None]],
) -> None:
    encoder, reference, decoder = BlockEncoder(), _Reference(), hpack.Decoder()
    decoder.max_allowed_table_size = 65536
    for block, table_size in steps:
        code = encoder.encode(block)

        assert code == reference.encode(block)
        assert [(name, value) for name, value in decoder.decode(code, raw=True)] == [
            (name, value) for name, value in block
        ]
        if table_size is not None:
            encoder.header_table_size = table_size
            reference.header_table_size = table_size


def test_repeated_fields_are_one_index_each_and_sozu_id_never_indexed() -> None:
    encoder = BlockEncoder()
    block = [
        (b":status", b"200"),
        (b"server", b"nginx/1.22.1"),
        hpack.NeverIndexedHeaderTuple(b"sozu-id", b"01M90PYCRJER2TC400000047E7"),
    ]

    first = encoder.encode(block)
    second = encoder.encode(block)

    assert len(second) < len(first)
    # :status 200 (static 8) and server (dynamic 62) as indices, sozu-id a never-indexed literal
    assert second[:2] == bytes([0x88, 0x80 | 62])
    assert second[2] & 0xF0 == 0x10
    assert [entry[0] for entry in encoder.header_table.dynamic_entries] == [b"server"]


def _decoded(decoder: hpack.Decoder, block: bytes) -> object:
    """The header list, or the type of the error."""
    try:
        return [tuple(header) for header in decoder.decode(block, raw=True)]
    except (hpack.HPACKError, IndexError, TypeError) as error:
        return type(error)


# Blocks: a client's requests (repeated, sometimes with a table size update first), and
# bytes that are no block at all.
_REQUEST_FIELDS = st.sampled_from(
    [
        (b":method", b"GET"),
        (b":path", b"/"),
        (b":path", b"/h2c"),
        (b":scheme", b"https"),
        (b":authority", b"bench.local"),
        (b"user-agent", b"h2load nghttp2/1.52.0"),
        (b"x-big", b"b" * 300),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.lists(_REQUEST_FIELDS, min_size=1, max_size=6),
            st.binary(min_size=1, max_size=20),
            st.sampled_from([0, 64, 4096]),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([100, 4096, 65536]),
)
def test_the_requests_decoder_gives_what_the_library_gives(
    steps: list[list[tuple[bytes, bytes]] | bytes | int], list_limit: int
) -> None:
    client = hpack.Encoder()
    decoder, reference = RequestDecoder(), hpack.Decoder()
    decoder.max_header_list_size = reference.max_header_list_size = list_limit
    sent: list[bytes] = []
    for step in steps:
        if isinstance(step, int):  # the client shrinks or grows its table: a size update
            client.header_table_size = step
            continue
        block = step if isinstance(step, bytes) else client.encode(step)
        sent.append(block)
        for again in (block, *sent[-3:]):  # the same bytes again, and earlier blocks
            assert _decoded(decoder, again) == _decoded(reference, again)
