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

from dataclasses import dataclass, field

__all__ = ["Position", "key_positions", "position_of", "spell"]

Part = str | int
Position = tuple[int, int]
"""Line and column, counted from 1."""

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
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
    line: int = 1
    line_start: int = 0
    found: dict[str, Position] = field(default_factory=dict)
    tables: dict[tuple[Part, ...], int] = field(default_factory=dict)
    """The number of entries of each array of tables seen so far."""

    # ------------------------------------------------------------------ characters

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.pos >= len(self.text):
                return
            if self.text[self.pos] == "\n":
                self.line += 1
                self.line_start = self.pos + 1
            self.pos += 1

    def here(self) -> Position:
        return self.line, self.pos - self.line_start + 1

    def record(self, parts: tuple[Part, ...], position: Position) -> None:
        self.found.setdefault(spell(parts), position)

    def skip_blanks(self, *, newlines: bool) -> None:
        """Spaces and tabs; with ``newlines``, line ends and comments too."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.advance()
            elif newlines and char == "#":
                self.skip_comment()
            else:
                return

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.advance((len(self.text) if end < 0 else end) - self.pos)

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
                begin = self.pos
                while self.peek() and self.peek() in _BARE:
                    self.advance()
                if self.pos == begin:
                    raise _Stop
                parts.append((self.text[begin : self.pos], start))
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
        self.advance()
        chars: list[str] = []
        while True:
            char = self.peek()
            if not char or char == "\n":
                raise _Stop
            self.advance()
            if char == quote:
                return "".join(chars)
            if char == "\\" and quote == '"':
                escape = self.peek()
                self.advance()
                chars.append(_ESCAPES.get(escape, escape))
            else:
                chars.append(char)

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
                if self.peek() == ",":
                    self.advance()
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
                if self.peek() == ",":
                    self.advance()
        else:  # a number, a boolean, a date: up to the next delimiter
            while self.peek() and self.peek() not in ",]}#\n":
                self.advance()

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
    except _Stop:
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
