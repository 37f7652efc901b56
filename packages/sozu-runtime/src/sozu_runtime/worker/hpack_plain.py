"""HPACK coding without Huffman, for the header blocks the proxy sends over HTTP/2.

What repeats from one header block to the next (names, most values) is indexed after its first
use; what is new each time (the request id) is short and sent as a literal never indexed:
coding it byte by byte with Huffman costs more time than the few bytes it saves.
"""

from __future__ import annotations

from typing import Any

import hpack

__all__ = ["PlainEncoder"]


class PlainEncoder(hpack.Encoder):
    """An HPACK encoder that never uses Huffman coding (see the module's doc)."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)
