"""Event loop choice: uvloop when installed (the data path is built for it), else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return None
    return uvloop


def loop_name() -> str:
    return "uvloop" if _uvloop() is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    uvloop = _uvloop()
    if uvloop is not None:
        return uvloop.run(main)  # type: ignore[no-any-return]
    return asyncio.run(main)
