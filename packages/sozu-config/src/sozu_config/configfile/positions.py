"""Where each table and key of a TOML text is: ``clusters.api.backends[1]`` → line 12, column 3.

``tomllib`` gives no positions, so :func:`key_positions` scans the text once for its structure
only: table headers (``[a.b]``), arrays of tables (``[[a.b]]``, numbered from 0), ``key =``
lines (dotted keys included), inline tables and arrays (their entries numbered from 0). Values
are skipped, strings of every kind included, so that a ``#`` or a ``]`` inside a string is not
taken for structure. The text is valid TOML (``tomllib`` read it first); on text it does not
understand, the scan stops and returns what it found so far.

Paths are spelt as findings name tables: parts joined by ``.``, array indexes as ``[i]``.
:func:`position_of` finds a finding's table and key, falling back to the nearest enclosing
table that the text spells out (a missing key is reported at its table's header).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

__all__ = ["Position", "key_positions", "position_of", "spell"]

Part = str | int
Position = tuple[int, int]
"""Line and column, counted from 1."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
_ESCAPE = re.compile(r"\\(.)")
_SCALAR = re.compile(r"[^,\]}#\n]*")
_BLANKS = re.compile(r"[ \t\r]*")
_BLANKS_AND_LINES = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)*")
_NEWLINE = re.compile(r"\n")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def spell(parts: tuple[Part, ...]) -> str:
    """``('clusters', 'api', 'backends', 1)`` → ``clusters.api.backends[1]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


class _Stop(Exception):
    """Text the scanner does not understand: keep what was found."""


@dataclass(slots=True)
class _Scanner:
    text: str
    pos: int = 0
    line_ends: list[int] = field(default_factory=list)
    """The offset of every line end, for :meth:`here`."""
    found: dict[str, Position] = field(default_factory=dict)
    tables: dict[tuple[Part, ...], int] = field(default_factory=dict)
    """The number of entries of each array of tables seen so far."""

    def __post_init__(self) -> None:
        self.line_ends = [match.start() for match in _NEWLINE.finditer(self.text)]

    # ------------------------------------------------------------------ characters

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        self.pos = min(self.pos + count, len(self.text))

    def skip(self, pattern: re.Pattern[str]) -> None:
        match = pattern.match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()

    def here(self) -> Position:
        line = bisect.bisect_left(self.line_ends, self.pos)
        start = self.line_ends[line - 1] + 1 if line else 0
        return line + 1, self.pos - start + 1

    def record(self, parts: tuple[Part, ...], position: Position) -> None:
        self.found.setdefault(spell(parts), position)

    def skip_blanks(self, *, newlines: bool) -> None:
        """Spaces and tabs; with ``newlines``, line ends and comments too."""
        self.skip(_BLANKS_AND_LINES if newlines else _BLANKS)

    # ------------------------------------------------------------------ keys

    def key(self) -> list[tuple[str, Position]]:
        """A (dotted) key: its parts, each with where it starts."""
        parts = []
        while True:
            self.skip_blanks(newlines=False)
            start = self.here()
            char = self.peek()
            if char in "\"'":
                parts.append((self.string(), start))
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _Stop
                self.pos = match.end()
                parts.append((match.group(), start))
            self.skip_blanks(newlines=False)
            if self.peek() != ".":
                return parts
            self.advance()

    def string(self) -> str:
        """A string of any kind, its text (escapes of basic strings decoded simply)."""
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            self.advance(3)
            end = self.text.find(quote * 3, self.pos)
            while end >= 0 and quote == '"' and _escaped(self.text, end):
                end = self.text.find(quote * 3, end + 1)
            if end < 0:
                raise _Stop
            # up to two more quotes may close the string's content
            while self.text.startswith(quote, end + 3):
                end += 1
            value = self.text[self.pos : end]
            self.advance(end + 3 - self.pos)
            return value
        match = (_BASIC if quote == '"' else _LITERAL).match(self.text, self.pos)
        if match is None:
            raise _Stop
        self.pos = match.end()
        value = match.group()[1:-1]
        if quote == '"' and "\\" in value:
            value = _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), value)
        return value

    # ------------------------------------------------------------------ values

    def value(self, parts: tuple[Part, ...]) -> None:
        """Skip a value, recording the keys of its inline tables and its array entries."""
        char = self.peek()
        if char in "\"'":
            self.string()
        elif char == "[":
            self.advance()
            index = 0
            while True:
                self.skip_blanks(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    return
                if not self.peek():
                    raise _Stop
                self.record((*parts, index), self.here())
                self.value((*parts, index))
                index += 1
                self.skip_blanks(newlines=True)
                self.separator("]")
        elif char == "{":
            self.advance()
            while True:
                self.skip_blanks(newlines=True)
                if self.peek() == "}":
                    self.advance()
                    return
                if not self.peek():
                    raise _Stop
                self.assignment(parts)
                self.skip_blanks(newlines=True)
                self.separator("}")
        else:  # a number, a boolean, a date: up to the next delimiter
            self.skip(_SCALAR)

    def separator(self, closing: str) -> None:
        """After an entry of an array or inline table: a comma, or its ``closing`` bracket
        (left for the loop); anything else is text the scanner does not understand (an entry
        that consumed nothing would otherwise be counted again and again)."""
        if self.peek() == ",":
            self.advance()
        elif self.peek() != closing:
            raise _Stop

    def assignment(self, table: tuple[Part, ...]) -> None:
        """``key = value`` in ``table``."""
        keys = self.key()
        path = table
        for name, start in keys:
            path = (*path, name)
            self.record(path, start)
        self.skip_blanks(newlines=False)
        if self.peek() != "=":
            raise _Stop
        self.advance()
        self.skip_blanks(newlines=False)
        self.value(path)

    def header(self) -> tuple[Part, ...]:
        """``[a.b]`` or ``[[a.b]]``: the table's path (an array of tables' entry numbered)."""
        start = self.here()
        array = self.text.startswith("[[", self.pos)
        self.advance(2 if array else 1)
        keys = self.key()
        if not self.text.startswith("]]" if array else "]", self.pos):
            raise _Stop
        self.advance(2 if array else 1)
        path: tuple[Part, ...] = ()
        for number, (name, name_start) in enumerate(keys, 1):
            path = (*path, name)
            if number < len(keys):
                self.record(path, name_start)  # an enclosing table, maybe implicit
            if number < len(keys) and path in self.tables:
                path = (*path, self.tables[path] - 1)  # inside the latest entry
        if array:
            index = self.tables.get(path, 0)
            self.tables[path] = index + 1
            self.record(path, start)
            path = (*path, index)
        self.record(path, start)
        return path

    def document(self) -> None:
        table: tuple[Part, ...] = ()
        while True:
            self.skip_blanks(newlines=True)
            if not self.peek():
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.assignment(table)


def _escaped(text: str, index: int) -> bool:
    """Whether the character at ``index`` follows an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def key_positions(text: str) -> dict[str, Position]:
    """Every table, key and array entry of a TOML text, spelt as findings spell them, with
    where it first appears."""
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (_Stop, RecursionError):  # text it does not understand, or nested too deep
        pass
    return scanner.found


def position_of(
    positions: dict[str, Position], table: str | None, key: str | None
) -> Position | None:
    """Where a finding of ``[table] key`` is: the key, else the nearest enclosing table or
    entry the text spells out; None when nothing of it is in the text."""
    if table is None:
        return positions.get(key) if key is not None else None
    candidate = f"{table}.{key}" if key is not None else table
    while candidate:
        if candidate in positions:
            return positions[candidate]
        cut = max(candidate.rfind("."), candidate.rfind("["))
        if cut <= 0:
            return None
        candidate = candidate[:cut]
    return None
