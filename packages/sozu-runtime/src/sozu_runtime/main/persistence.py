"""The state on disk: the saved state a start resumes from, ``save_state``, ``load_state``
and the automatic save after every change (``automatic_state_save``).

State files are written atomically (temporary file, fsync, rename: see
:mod:`sozu_config.statefile`); one holds private keys, so it is private to the daemon's user.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from pathlib import Path

from sozu_config import requests as rq
from sozu_config.config import Config
from sozu_config.responses import (
    BatchResult,
    BatchResults,
    ErrorKind,
    Event,
    EventKind,
    Response,
    ResponseStatus,
)
from sozu_config.state import ConfigState
from sozu_config.statefile import (
    StateFileError,
    iter_state_file,
    read_state_file,
    remove_stale_temporaries,
    write_state_file,
)

from .replies import fail, ok
from .startup import StartupError

log = logging.getLogger("sozu.main")

__all__ = ["LOAD_STATE_BATCH", "SKIPPED_LISTED", "StateFiles", "state_at_start"]

LOAD_STATE_BATCH = 256  # state file records read per trip to the reading thread
SKIPPED_LISTED = 10_000
"""The skipped records a ``load_state`` answer lists at most (the count is always whole): the
answer stays small enough to read even when a whole large file is refused."""


def state_at_start(config: Config) -> ConfigState:
    """The state to start from: the saved state when ``saved_state`` exists and is not
    empty (it holds the configuration's objects and every change made at runtime since, so
    it replaces the file's routing: a restart serves exactly what was served before), else
    the configuration's. Raises StartupError."""
    saved = config.saved_state
    if saved is None:
        return config.state
    for stale in remove_stale_temporaries(saved):
        log.warning("removed %s, left by an interrupted state save", stale)
    if saved.exists() and saved.stat().st_size > 0:
        return _saved_state(config, saved)
    return config.state


def _saved_state(config: Config, saved: Path) -> ConfigState:
    try:
        state, errors = read_state_file(saved, max_record_bytes=config.max_command_buffer_size)
    except StateFileError as error:
        raise StartupError(f"saved_state: {error}") from None
    if errors:
        listed = "; ".join(str(e) for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        if config.saved_state_errors == "refuse":
            raise StartupError(
                f"the saved state has {len(errors)} bad record(s): {listed}{more}. Fix or "
                'remove the file, or set saved_state_errors = "skip" to start with the '
                "good records"
            )
        for bad in errors:
            log.error("saved state record skipped: %s", bad)
    log.info("starting from the saved state %s (%s)", saved, state.summary())
    _warn_if_the_file_differs(config, saved, state)
    return state


def _warn_if_the_file_differs(config: Config, saved: Path, state: ConfigState) -> None:
    """The saved state wins over the configuration file's routing: say so when the file
    differs from it (an edit the operator may expect to see served), and how to apply it."""
    differences = len(state.diff(config.state))
    if differences:
        log.warning(
            "the configuration file %s differs from the saved state %s by %d change%s, not "
            "applied: a restart serves the saved state. 'sozu-apply %s --dry-run' shows them, "
            "'sozu reload' applies them",
            config.path,
            saved,
            differences,
            "" if differences == 1 else "s",
            config.path,
        )


class StateFiles:
    """Saving and loading the daemon's state (``execute``, given to :meth:`load`, applies a
    request as the command socket would)."""

    def __init__(
        self,
        config: Config,
        state: ConfigState,
        loop: asyncio.AbstractEventLoop,
        emit: Callable[[Event], None],
    ) -> None:
        self.config = config
        self.state = state
        self._loop = loop
        self._emit = emit

    def save(self, path: str) -> Response:
        """``save_state``: write the state to ``path``."""
        target = Path(path)
        try:
            count = write_state_file(self.state, target)
        except OSError as error:
            return fail(
                f"cannot save the state to {target}: {error.strerror or error}",
                kind=ErrorKind.OS_ERROR,
            )
        self._emit(Event(kind=EventKind.STATE_SAVED, message=str(target)))
        return ok(f"saved {count} requests to {target}")

    def automatic_save(self) -> tuple[str, str]:
        """``automatic_state_save``: (what was saved, or "") and (why it failed, or "")."""
        config = self.config
        if not config.automatic_state_save or config.saved_state is None:
            return "", ""
        try:
            count = write_state_file(self.state, config.saved_state)
        except OSError as error:
            reason = (
                f"the automatic state save to {config.saved_state} failed: "
                f"{error.strerror or error}"
            )
            log.error("%s", reason)
            return "", reason
        self._emit(Event(kind=EventKind.STATE_SAVED, message=str(config.saved_state)))
        return f"state saved ({count} requests)", ""

    async def load(
        self, path: str, execute: Callable[[rq.Request], Awaitable[Response]]
    ) -> Response:
        """``load_state``: apply the records of a state file (a merge: records the state
        refuses, e.g. objects that exist already, are counted and skipped).

        The file is read in a thread, a batch of records at a time, each record at most
        ``max_command_buffer_size`` bytes: the command plane never waits on a slow disk, and a
        path that never ends (``/dev/zero``, a FIFO) is refused, not read forever."""
        source = Path(path)
        applied = skipped = 0
        refused: list[BatchResult] = []
        records: Generator[tuple[int, rq.StateRequest], None, None] = iter_state_file(
            source, max_record_bytes=self.config.max_command_buffer_size
        )
        try:
            while True:
                batch, stop = await self._loop.run_in_executor(
                    None, _take, records, LOAD_STATE_BATCH
                )
                for number, request in batch:
                    response = await execute(request)
                    if response.ok:
                        applied += 1
                    else:
                        skipped += 1
                        if len(refused) < SKIPPED_LISTED:
                            refused.append(_skipped(number, request, response))
                if stop is not None:
                    unreadable = stop.line == 0  # the file, not one of its records
                    return fail(
                        f"loading the state stopped at {stop}; "
                        f"{applied} requests applied before it",
                        kind=ErrorKind.OS_ERROR if unreadable else ErrorKind.INVALID,
                    )
                if not batch:
                    break
        finally:
            records.close()
        self._emit(Event(kind=EventKind.STATE_LOADED, message=str(source)))
        message = f"loaded {source}: {applied} requests applied, {skipped} skipped"
        if skipped > len(refused):
            message += f" (the first {len(refused)} listed)"
        return ok(message, content=BatchResults(results=refused) if refused else None)


def _skipped(line: int, request: rq.StateRequest, response: Response) -> BatchResult:
    """A record ``load_state`` skipped: ``index`` is its line in the file, ``message`` why."""
    return BatchResult(
        index=line,
        request=request.describe(),
        status=ResponseStatus.FAILURE,
        message=response.message,
    )


def _take(
    records: Iterator[tuple[int, rq.StateRequest]], count: int
) -> tuple[list[tuple[int, rq.StateRequest]], StateFileError | None]:
    """The next ``count`` records (fewer at the end), and the error that stopped the reading
    after them, if any. Run in a thread."""
    batch: list[tuple[int, rq.StateRequest]] = []
    try:
        for record in records:
            batch.append(record)
            if len(batch) >= count:
                break
    except StateFileError as error:
        return batch, error
    return batch, None
