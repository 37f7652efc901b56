"""``reload_configuration`` (and SIGHUP): read the configuration file again and apply the
difference to the running state as one batch, all or nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from sozu_config import requests as rq
from sozu_config.config import ConfigError, load_config
from sozu_config.responses import ErrorKind, Event, EventKind, Response
from sozu_config.state import ConfigState

from .replies import fail, ok

log = logging.getLogger("sozu.main")

__all__ = ["reload"]


async def reload(
    source: Path | None,
    state: ConfigState,
    *,
    execute: Callable[[rq.Request], Awaitable[Response]],
    emit: Callable[[Event], None],
) -> Response:
    """Apply what changed in the configuration file ``source`` (read in a thread) through
    ``execute``, as a batch that expects the current state version. The answer's content
    lists the changes (:class:`~sozu_config.responses.BatchResults`, each described as
    ``request.describe()`` gives it); they are also logged, for a reload by SIGHUP."""
    if source is None:
        return fail("no configuration file to reload", kind=ErrorKind.UNSUPPORTED)
    loop = asyncio.get_running_loop()
    try:
        desired = await loop.run_in_executor(None, load_config, source)
    except ConfigError as error:
        return fail(f"the configuration was not reloaded: {error}", kind=ErrorKind.INVALID)
    plan = state.diff(desired.state)
    if not plan:
        return ok(f"{source}: nothing to change")
    response = await execute(rq.Batch(requests=plan, expected_version=state.version))
    if response.ok:
        emit(Event(kind=EventKind.CONFIGURATION_RELOADED, message=str(source)))
        for request in plan:
            log.info("reload: %s", request.describe())
        count = f"{len(plan)} change{'' if len(plan) == 1 else 's'}"
        return ok(f"{source}: applied {count}; {response.message}", content=response.content)
    return response.model_copy(
        update={"message": f"the configuration was not reloaded: {response.message}"}
    )
