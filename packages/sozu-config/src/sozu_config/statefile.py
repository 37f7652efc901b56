"""State files: the routing state as JSON lines of requests, written atomically.

A state file holds one state request per line, in the order of
:meth:`~sozu_config.state.ConfigState.generate_requests`; replaying it into an empty state
rebuilds the state. It holds private keys, so it is created with mode 0600.

Writes are atomic: a temporary file in the same folder is written, flushed and fsync'ed, then
renamed over the target, then the folder is fsync'ed. A crash or a full disk at any moment
leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from .files import open_regular
from .protocol import validation_message
from .requests import STATE_REQUEST_ADAPTER, StateRequest
from .state import ConfigState, StateError

__all__ = [
    "MAX_RECORD_BYTES",
    "StateFileError",
    "iter_state_file",
    "load_state_file",
    "read_state_file",
    "remove_stale_temporaries",
    "write_state_file",
]


class StateFileError(ValueError):
    """A state file that cannot be read; ``line`` is the 1-based line at fault (0: the file)."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


def write_state_file(state: ConfigState, path: str | os.PathLike[str]) -> int:
    """Write ``state`` to ``path`` atomically (mode 0600); returns the number of requests."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            for line in state.to_jsonl():
                handle.write(line)
                handle.write("\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return count


# Longest record read back (a line naming thousands of certificates fits): the default of the
# daemon's max_command_buffer_size, whose messages state files hold.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def _open_records(source: Path) -> BinaryIO:
    """Open a state file for reading; only a regular file is accepted (a FIFO or a device
    would block the reader or never end)."""
    try:
        return open_regular(source)
    except OSError as error:
        raise StateFileError(source, 0, f"cannot read the file: {error.strerror}") from None


def _lines(
    source: Path, handle: BinaryIO, max_record_bytes: int
) -> Iterator[tuple[int, bytes | StateFileError]]:
    """(line number, raw line or the error that line is) for every non-empty line."""
    number = 0
    while True:
        raw = handle.readline(max_record_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_record_bytes and not raw.endswith(b"\n"):
            # the rest of the line is not read: a record this long is refused, not buffered
            raise StateFileError(
                source, number, f"a record is longer than {max_record_bytes} bytes"
            )
        if not raw.strip():
            continue
        if not raw.endswith(b"\n"):
            yield (
                number,
                StateFileError(
                    source, number, "the last record is incomplete (the file was cut short)"
                ),
            )
            continue
        yield number, raw


def iter_state_file(
    path: str | os.PathLike[str], *, max_record_bytes: int = MAX_RECORD_BYTES
) -> Generator[tuple[int, StateRequest], None, None]:
    """Yield (line number, request) for each record; raise :class:`StateFileError` at the first
    line that is not a valid request (the records before it have been yielded), and when the
    path is not a regular file or a record is longer than ``max_record_bytes``."""
    source = Path(path)
    with _open_records(source) as handle:
        for number, raw in _lines(source, handle, max_record_bytes):
            if isinstance(raw, StateFileError):
                raise raw
            try:
                yield number, STATE_REQUEST_ADAPTER.validate_json(raw)
            except ValidationError as error:
                raise StateFileError(source, number, validation_message(error)) from None


def read_state_file(
    path: str | os.PathLike[str], *, max_record_bytes: int = MAX_RECORD_BYTES
) -> tuple[ConfigState, list[StateFileError]]:
    """Read every record that can be read and applied; return the state and one error per
    record that could not (unreadable line, cut-short last line, refused request). Raises
    :class:`StateFileError` only when the file itself cannot be read (missing, not a regular
    file, a record longer than ``max_record_bytes``)."""
    source = Path(path)
    state = ConfigState()
    errors: list[StateFileError] = []
    with _open_records(source) as handle:
        for number, raw in _lines(source, handle, max_record_bytes):
            if isinstance(raw, StateFileError):
                errors.append(raw)
                continue
            try:
                request = STATE_REQUEST_ADAPTER.validate_json(raw)
            except ValidationError as error:
                errors.append(StateFileError(source, number, validation_message(error)))
                continue
            try:
                state.apply(request)
            except StateError as error:
                errors.append(StateFileError(source, number, f"{request.describe()}: {error}"))
    return state, errors


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that interrupted writes of ``path`` left behind (a crash or
    a kill between the write and the rename); returns those removed. Call it when no write
    of ``path`` can be in progress (at start-up)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    removed = []
    for candidate in folder.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if candidate.is_file() and not candidate.is_symlink():
                candidate.unlink()
                removed.append(candidate)
    return removed


def load_state_file(path: str | os.PathLike[str]) -> ConfigState:
    """Read a state file into a new state; any bad record or refused request is an error."""
    state = ConfigState()
    source = Path(path)
    for number, request in iter_state_file(source):
        try:
            state.apply(request)
        except StateError as error:
            raise StateFileError(source, number, f"{request.describe()}: {error}") from None
    return state
