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
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from .protocol import validation_message
from .requests import STATE_REQUEST_ADAPTER, StateRequest
from .state import ConfigState, StateError

__all__ = [
    "StateFileError",
    "iter_state_file",
    "load_state_file",
    "read_state_file",
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


def iter_state_file(path: str | os.PathLike[str]) -> Iterator[tuple[int, StateRequest]]:
    """Yield (line number, request) for each record; raise :class:`StateFileError` at the first
    line that is not a valid request (the records before it have been yielded)."""
    source = Path(path)
    try:
        handle = source.open("rb")
    except OSError as error:
        raise StateFileError(source, 0, f"cannot read the file: {error.strerror}") from None
    with handle:
        number = 0
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                raise StateFileError(
                    source, number, "the last record is incomplete (the file was cut short)"
                )
            try:
                yield number, STATE_REQUEST_ADAPTER.validate_json(raw)
            except ValidationError as error:
                raise StateFileError(source, number, validation_message(error)) from None


def read_state_file(
    path: str | os.PathLike[str],
) -> tuple[ConfigState, list[StateFileError]]:
    """Read every record that can be read and applied; return the state and one error per
    record that could not (unreadable line, cut-short last line, refused request). Raises
    :class:`StateFileError` only when the file itself cannot be read."""
    source = Path(path)
    try:
        handle = source.open("rb")
    except OSError as error:
        raise StateFileError(source, 0, f"cannot read the file: {error.strerror}") from None
    state = ConfigState()
    errors: list[StateFileError] = []
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                errors.append(
                    StateFileError(source, number, "the last record is incomplete (cut short)")
                )
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
