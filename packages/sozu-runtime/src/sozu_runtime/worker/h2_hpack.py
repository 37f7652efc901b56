"""HPACK coding of the header blocks the proxy sends to its HTTP/2 clients.

The answers of a connection repeat the same fields (``server``, ``content-type``, often
``content-length``): after the first answer each is found whole in the encoder's tables and
coded as one index (RFC 7541 §6.1). :class:`AnswerEncoder` remembers those codes instead of
searching the tables again for every answer, and forgets them all as soon as the dynamic
table changes (an insertion shifts every dynamic index, an eviction removes some, RFC 7541
§2.3.3), so that what it sends is byte for byte what the library's encoder would send.

Literals are not Huffman-coded: what repeats is indexed after its first answer, and what is
new in every answer (``sozu-id``, sent never indexed) is short: coding it byte by byte costs
more time than the few bytes it saves.
"""

from __future__ import annotations

from typing import Any, Final

import hpack

__all__ = ["AnswerEncoder"]

# Bounds the codes kept per connection (a table of 4096 bytes holds about a hundred fields).
_MAX_REMEMBERED: Final = 256


class AnswerEncoder(hpack.Encoder):
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
