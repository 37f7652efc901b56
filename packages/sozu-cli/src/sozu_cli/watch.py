"""``sozu-apply --watch``: keep proxies in line with a file as it is edited, until Ctrl-C.

The file is watched, and so are the files it names: certificates, keys, certificate chains and
answer templates, and the files these point to when they are links. A certificate renewed in
place (same path, new content; or, as certbot does, its ``live/`` link pointed at a new file)
is planned and applied like an edit of the file.
The folders are watched, not the files: editors that save by writing a new file and renaming
it over the old one replace the watched inode, and a watch on the file itself would go blind
after the first save. The set of named files is read again after each change, so that a
certificate the file starts to name is watched from then on.

Changes are debounced (``--debounce MS`` of quiet) so that one save is one plan. A bad edit
never stops the watch: the error is reported and the proxies stay as they are until the next
good version; an unreachable daemon is reported the same way. When the live state moves
between plan and apply, the plan is made again (a few times).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import UsageError
from .output import Output

__all__ = ["named_files", "raw_paths", "watch"]

# Keys whose value is the path of a file the configuration reads (certificates, keys, chains,
# and answer templates: ``answer_503 = "path"`` or, in an ``answers`` table, "file://path").
_FILE_KEYS = frozenset({"certificate", "key", "certificate_chain"})
_ANSWER_FILE = "file://"

_WAKE_UP = 200
"""Milliseconds a watch waits at most before it wakes up without a change (the first wake-up
says it is armed)."""


def _stamp() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


def raw_paths(document: Any, key: str = "") -> Iterator[str]:
    """Every file path named in a parsed TOML document, as written."""
    if isinstance(document, dict):
        for name, value in document.items():
            if name == "answers" and isinstance(value, dict):
                for template in value.values():
                    if isinstance(template, str) and template.startswith(_ANSWER_FILE):
                        yield template.removeprefix(_ANSWER_FILE)
            else:
                yield from raw_paths(value, name)
    elif isinstance(document, list):
        for item in document:
            yield from raw_paths(item, key)
    elif (
        isinstance(document, str) and document and (key in _FILE_KEYS or key.startswith("answer_"))
    ):
        yield document


def named_files(file: Path) -> set[Path]:
    """The files ``file`` names, absolute: a relative path is looked for in the file's folder,
    then in the working directory (as the configuration loader does); when it is in neither,
    both places are given (it may appear). Empty when the file cannot be read or parsed (the
    plan will say why)."""
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    found: set[Path] = set()
    for raw in raw_paths(document):
        given = Path(raw)
        bases = [file.parent, Path.cwd()] if not given.is_absolute() else [Path("/")]
        candidates = [Path(os.path.normpath(base / given)) for base in bases]
        existing = [path for path in candidates if os.path.lexists(path)]
        found.update(existing[:1] or candidates)
        # a link (certbot's live/ files) is watched, and so is the file it points to, which
        # may be written in place
        found.update(Path(os.path.realpath(path)) for path in existing[:1])
    return found


def _watched(file: Path) -> set[Path]:
    """The file and the files it names whose folder exists (the folders are watched)."""
    return {file} | {path for path in named_files(file) if path.parent.is_dir()}


def watch(args: argparse.Namespace, output: Output, apply_once: Callable[[], int]) -> int:
    """Apply ``args.file`` now and after each change of it or of a file it names with
    ``apply_once`` (one plan and apply, its exit code); returns 0 on Ctrl-C."""
    import watchfiles

    file = Path(os.path.normpath(Path(args.file).absolute()))
    if not file.parent.is_dir():
        raise UsageError(f"cannot watch {file}: the folder {file.parent} does not exist")
    watched = _watched(file)

    def concerns(change: object, path: str) -> bool:
        return Path(os.path.normpath(path)) in watched

    def once(reason: str) -> None:
        nonlocal watched
        output.note(f"[{_stamp()}] {reason}: planning")
        code = apply_once()
        outcome = (
            "proxies in line with the file"
            if code == 0
            else "not applied (see above): proxies left as they were until the next change"
        )
        watched = _watched(file)
        others = len(watched) - 1
        also = f" and {others} file{'s' if others != 1 else ''} it names" if others else ""
        output.note(f"[{_stamp()}] {outcome}; watching {file}{also} (Ctrl-C stops)")

    reason = "start"
    try:
        while True:
            folders = sorted({path.parent for path in watched})
            armed = False
            # One watch as long as the folders stay the same: changes made while a plan is
            # applied are kept by the watcher and come in the next group. Each watch plans
            # once as soon as it is armed (its first, empty, wake-up), so that no change made
            # before it was armed goes unseen.
            for changes in watchfiles.watch(
                *folders,
                watch_filter=concerns,
                # step: quiet time that ends a group of changes; debounce: longest group
                step=max(args.debounce, 1),
                debounce=max(1600, 4 * args.debounce),
                rust_timeout=_WAKE_UP,
                yield_on_timeout=True,
                recursive=False,
                raise_interrupt=True,
            ):
                if armed and not changes:
                    continue
                if armed:
                    reason = ", ".join(sorted({Path(path).name for _, path in changes}))
                    reason += " changed"
                armed = True
                once(reason)
                if sorted({path.parent for path in watched}) != folders:
                    reason = "the files it names moved"
                    break  # watch the new set of folders (and plan once it is armed)
            else:
                break
    except KeyboardInterrupt:
        output.note(f"[{_stamp()}] stopped")
    return 0
