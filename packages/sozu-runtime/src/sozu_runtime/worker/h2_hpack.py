"""HPACK coding of the header blocks the proxy exchanges over HTTP/2: answers to its clients,
requests to its h2c backends (both sides encode with :class:`BlockEncoder`).

The blocks a connection sends repeat the same fields (``server``, ``content-type`` in answers;
``:method``, ``:authority``, the forwarding fields in requests): after the first block each
is found whole in the encoder's tables and coded as one index (RFC 7541 §6.1).
:class:`BlockEncoder` remembers those codes instead of searching the tables again for every
block, and forgets them all as soon as the dynamic table changes (an insertion shifts every
dynamic index, an eviction removes some, RFC 7541 §2.3.3), so that what it sends is byte for
byte what the library's encoder sends without Huffman.

Literals are not Huffman-coded: what repeats is indexed after its first block, and what is
new in every block (the request id, sent never indexed) is short: coding it byte by byte costs
more time than the few bytes it saves.

The requests of a connection repeat too: a client sends the same header block, byte for byte,
for every request to the same resource. :class:`RequestDecoder` remembers the header lists of
a few small blocks whose decoding left the decoder's state as it was, and gives the same list
for the same bytes while that state stays the same (decoding is a function of the two). The
library decodes everything else, and every limit is the library's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import hpack

__all__ = ["BlockEncoder", "RequestDecoder"]

# Bounds what a connection keeps: index codes of a few bytes each, and a few header lists.
_MAX_REMEMBERED: Final = 64
_MAX_BLOCKS: Final = 8
_MAX_BLOCK_SIZE: Final = 512


class BlockEncoder(hpack.Encoder):
    """The library's encoder, remembering the index code of every field it found whole in a
    table while the dynamic table stays as it was (see the module's doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._indexed: dict[tuple[bytes, bytes], bytes] = {}
        self._table_size = self.header_table.maxsize

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """The header block of ``headers`` (pairs of bytes, pseudo-fields first; a
        :class:`hpack.NeverIndexedHeaderTuple` is never indexed). ``huffman`` is ignored:
        literals are sent as they are."""
        table = self.header_table
        indexed = self._indexed
        block = []
        if table.resized or self.table_size_changes or table.maxsize != self._table_size:
            indexed.clear()  # a smaller table evicted entries: their indices are gone
            self._table_size = table.maxsize
            if table.resized:
                block.append(self._encode_table_size_change())
                table.resized = False
        for header in headers:
            if isinstance(header, hpack.HeaderTuple):
                block.append(self.add((header[0], header[1]), not header.indexable, False))
                continue
            code = indexed.get(header)
            if code is None:
                code = self.add(header, False, False)
                if code[0] & 0x80:  # an index (RFC 7541 §6.1): the table is unchanged
                    if len(indexed) < _MAX_REMEMBERED:
                        indexed[header] = code
                else:  # a literal, inserted in the dynamic table: every index moved
                    indexed.clear()
            block.append(code)
        return b"".join(block)


class RequestDecoder(hpack.Decoder):
    """The library's decoder, remembering the header lists of a few small blocks whose
    decoding changed nothing (see the module's doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._decoded: dict[bytes, list[hpack.HeaderTuple]] = {}
        self._state = self._current_state()

    def _current_state(self) -> tuple[object, int, int, int, int]:
        """What decoding depends on besides the bytes: the dynamic table (its newest entry,
        compared by identity, and its length), its size and the limits."""
        entries = self.header_table.dynamic_entries
        return (
            entries[0] if entries else None,
            len(entries),
            self.header_table.maxsize,
            self.max_header_list_size,
            self.max_allowed_table_size,
        )

    def _is_current(self, state: tuple[object, int, int, int, int]) -> bool:
        current = self._current_state()
        return current[0] is state[0] and current[1:] == state[1:]

    def decode(self, data: bytes, raw: bool = False) -> Iterable[hpack.HeaderTuple]:
        if not raw or type(data) is not bytes or len(data) > _MAX_BLOCK_SIZE:
            return super().decode(data, raw)
        decoded = self._decoded
        state = self._state
        if self._is_current(state):
            headers = decoded.get(data)
            if headers is not None:
                return list(headers)
        else:  # the table changed since: what was remembered no longer holds
            decoded.clear()
            state = self._state = self._current_state()
        headers = list(super().decode(data, raw))
        if self._is_current(state) and len(decoded) < _MAX_BLOCKS:
            decoded[data] = headers
        return list(headers)
