"""``sozu-apply --watch``: keep proxies in line with a file as it is edited, until Ctrl-C.

The file's directory is watched, not the file: editors that save by writing a new file and
renaming it over the old one replace the watched inode, and a watch on the file itself would
go blind after the first save. Changes are debounced (``--debounce MS`` of quiet) so that one
save is one plan. A bad edit never stops the watch: the error is reported and the proxies stay
as they are until the next good version; an unreachable daemon is reported the same way. When
the live state moves between plan and apply, the plan is made again (a few times).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from pathlib import Path

from .errors import ExitCode, UsageError
from .output import Output

__all__ = ["watch"]


_OUTCOMES: dict[int, str] = {
    ExitCode.OK: "proxies in line with the file",
    ExitCode.FAILURE: "a proxy refused the change: nothing was applied to it",
    ExitCode.USAGE: "the file is not usable: proxies left as they were until the next version",
    ExitCode.UNREACHABLE: "a proxy is unreachable: it will be planned again at the next change",
}


def _stamp() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


def watch(args: argparse.Namespace, output: Output, apply_once: Callable[[], int]) -> int:
    """Apply ``args.file`` now and after each change with ``apply_once`` (one plan and
    apply, its exit code); returns 0 on Ctrl-C."""
    import watchfiles

    file = Path(args.file).absolute()
    directory = file.parent
    if not directory.is_dir():
        raise UsageError(f"cannot watch {file}: the folder {directory} does not exist")

    def concerns(change: object, path: str) -> bool:
        changed = Path(path)
        return changed.name == file.name and changed.parent.absolute() == directory

    def once(reason: str) -> None:
        output.note(f"[{_stamp()}] {reason}: planning")
        code = apply_once()
        outcome = _OUTCOMES.get(code, _OUTCOMES[ExitCode.FAILURE])
        output.note(f"[{_stamp()}] {outcome}; watching {file} (Ctrl-C stops)")

    try:
        once("start")
        for _changes in watchfiles.watch(
            directory,
            watch_filter=concerns,
            # step: quiet time that ends a group of changes; debounce: longest group
            step=max(args.debounce, 1),
            debounce=max(1600, 4 * args.debounce),
            recursive=False,
            raise_interrupt=True,
        ):
            once(f"{file.name} changed")
    except KeyboardInterrupt:
        output.note(f"[{_stamp()}] stopped")
    return 0
