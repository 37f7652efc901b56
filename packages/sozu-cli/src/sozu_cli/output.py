"""How the commands write: rich tables and colours on a terminal, plain aligned text in pipes
and files, plain JSON with ``--json``.

Invariants: with ``--json`` stdout carries exactly one JSON document per answer (several, one
per line, for streams such as ``events``) and nothing else; human text then goes nowhere and
diagnostics go to stderr. Text from the daemon or the user is never interpreted as rich markup.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import BaseModel

__all__ = ["Output", "Styled", "cell", "plural", "to_json_data"]


@dataclass(frozen=True, slots=True)
class Styled:
    """A table value drawn in a rich ``style`` on a terminal (``green``, ``bold red``); plain
    text elsewhere."""

    value: object
    style: str


def cell(value: object) -> str:
    """A value as table text: ``-`` for nothing, ``yes``/``no`` for booleans, lists joined."""
    if isinstance(value, Styled):
        return cell(value.value)
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(cell(item) for item in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "-"
    if hasattr(value, "value") and isinstance(value.value, str):  # enumerations
        return str(value.value)
    return str(value)


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 listener``, ``2 listeners`` (``many``: the irregular plural)."""
    return f"{count} {singular if count == 1 else many or singular + 's'}"


def to_json_data(value: Any) -> Any:
    """JSON data of a model (or of anything JSON already knows)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


class Output:
    """The writer of one command run.

    ``rich`` is true when stdout is a terminal and JSON was not asked for: only then are
    tables drawn with rich and messages coloured.
    """

    def __init__(
        self,
        *,
        json_mode: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.rich = not json_mode and _is_terminal(self.stdout)
        self.wrote_json = False
        """Whether a JSON document was printed on stdout already."""
        self._error_rich = _is_terminal(self.stderr)
        self._consoles: dict[bool, Any] = {}

    def _console(self, *, error: bool = False) -> Any:
        """The rich console of stdout (or of stderr), None where rich is not used. rich is
        imported when something is first written on a terminal, not before."""
        if not (self._error_rich if error else self.rich):
            return None
        console = self._consoles.get(error)
        if console is None:
            from rich.console import Console

            console = Console(file=self.stderr if error else self.stdout, highlight=False)
            self._consoles[error] = console
        return console

    # ------------------------------------------------------------------ human text

    def print(self, text: str = "", *, style: str | None = None) -> None:
        """A line of human text (nothing in JSON mode)."""
        if self.json_mode:
            return
        console = self._console()
        if console is not None:
            console.print(text, style=style, markup=False, soft_wrap=True)
        else:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    def success(self, text: str) -> None:
        self.print(text, style="green")

    def heading(self, text: str) -> None:
        self.print(text, style="bold")

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
        *,
        title: str | None = None,
        whole: Sequence[str] = (),
    ) -> None:
        """A table: rich on a terminal, else columns aligned with two spaces. A
        :class:`Styled` value is drawn in its style on a terminal. The columns named in
        ``whole`` are never cut nor wrapped on a narrow terminal (the others give way)."""
        if self.json_mode:
            return
        listed = [list(row) for row in rows]
        texts = [[cell(value) for value in row] for row in listed]
        console = self._console()
        if console is not None:
            from rich import box
            from rich.table import Table
            from rich.text import Text

            table = Table(
                title=title, box=box.SIMPLE_HEAD, header_style="bold", title_justify="left"
            )
            for index, column in enumerate(columns):
                if column in whole:
                    width = max([len(column), *(len(row[index]) for row in texts)])
                    table.add_column(column, no_wrap=True, min_width=width)
                else:
                    table.add_column(column)
            for values, row in zip(listed, texts, strict=True):
                table.add_row(
                    *(
                        Text(text, style=value.style if isinstance(value, Styled) else "")
                        for value, text in zip(values, row, strict=True)
                    )
                )
            console.print(table)
            return
        if title:
            self.stdout.write(title + "\n")
        widths = [len(column) for column in columns]
        for row in texts:
            for index, value in enumerate(row):
                widths[index] = max(widths[index], len(value))
        for row in [list(columns), *texts]:
            line = "  ".join(value.ljust(widths[index]) for index, value in enumerate(row))
            self.stdout.write(line.rstrip() + "\n")
        self.stdout.flush()

    def pairs(self, items: Iterable[tuple[str, object]], *, title: str | None = None) -> None:
        """``name: value`` lines with the values aligned."""
        if self.json_mode:
            return
        listed = [(name, cell(value)) for name, value in items]
        if title:
            self.heading(title)
        width = max((len(name) for name, _ in listed), default=0)
        for name, value in listed:
            self.print(f"  {name.ljust(width)}  {value}")

    # ------------------------------------------------------------------ JSON

    def json(self, data: Any, *, compact: bool = False) -> None:
        """One JSON document on stdout (JSON mode only; ``compact``: on one line)."""
        if not self.json_mode:
            return
        text = json.dumps(
            to_json_data(data),
            indent=None if compact else 2,
            ensure_ascii=False,
            default=str,
        )
        self.stdout.write(text + "\n")
        self.stdout.flush()
        self.wrote_json = True

    def failure(self, kind: str, message: str) -> None:
        """``{"status": "failure", "kind", "message"}`` on stdout (JSON mode, when the command
        printed no document yet): a program reading stdout learns why it got nothing else."""
        if not self.wrote_json:
            self.json({"status": "failure", "kind": kind, "message": message})

    # ------------------------------------------------------------------ diagnostics

    def _stderr(self, prefix: str, message: str, style: str) -> None:
        console = self._console(error=True)
        if console is not None:
            console.print(f"{prefix}{message}", style=style, markup=False, soft_wrap=True)
        else:
            self.stderr.write(f"{prefix}{message}\n")
            self.stderr.flush()

    def error(self, message: str) -> None:
        """``error: …`` on stderr."""
        self._stderr("error: ", message, "bold red")

    def warning(self, message: str) -> None:
        """``warning: …`` on stderr."""
        self._stderr("warning: ", message, "yellow")

    def note(self, message: str) -> None:
        """Progress for humans on stderr (also in JSON mode: stdout stays pure JSON)."""
        self._stderr("", message, "dim")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
