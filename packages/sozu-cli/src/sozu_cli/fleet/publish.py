"""``sozu-apply --publish etcd://… FILE``: check a file and write it, with the files it names,
to etcd in one transaction guarded by the configuration's revision.

The transaction runs only if neither the document nor any of its files changed after the base
revision — the one given with ``--base-revision`` (what the publisher last saw), else the one
read just before writing. Two people publishing from the same base: the first wins, the second
is refused and told to look at what changed. Files the document no longer names are deleted in
the same transaction.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sozu_config.config import checked_config

from ..watch import raw_paths
from .etcd import EtcdClient, encode, prefix_end
from .source import FleetError, FleetSource, check_relative

__all__ = ["Published", "publish", "read_published"]


@dataclass(frozen=True)
class Published:
    """What a publish wrote."""

    source: FleetSource
    revision: int
    """The configuration's new revision."""
    base_revision: int
    files: tuple[str, ...]
    removed: tuple[str, ...]
    warnings: tuple[str, ...]


def _locate(file: Path, raw: str) -> Path | None:
    """A named file, found as the loader finds it: next to the document, then in the working
    directory."""
    for candidate in (file.parent / raw, Path.cwd() / raw):
        if candidate.is_file():
            return candidate
    return None


def read_published(file: Path) -> tuple[str, dict[str, bytes], tuple[str, ...]]:
    """The document's text, the files it names (by path as written) and its warnings, once it
    checks; raises :class:`FleetError` with every error otherwise."""
    config, report = checked_config(file)
    if config is None:
        errors = "\n".join(str(error) for error in report.errors)
        raise FleetError(f"{errors}\n(nothing was published)")
    text = file.read_text(encoding="utf-8")
    files: dict[str, bytes] = {}
    errors_found: list[str] = []
    for raw in dict.fromkeys(raw_paths(tomllib.loads(text))):
        why = check_relative(raw)
        located = _locate(file, raw) if why is None else None
        if why is not None:
            errors_found.append(f"{file}: {why}")
        elif located is None:
            errors_found.append(f"{file}: {raw!r} not found")
        else:
            files[raw] = located.read_bytes()
    if errors_found:
        raise FleetError("\n".join(errors_found) + "\n(nothing was published)")
    return text, files, tuple(str(warning) for warning in report.warnings)


def _moved(source: FleetSource, base: int, now: int) -> FleetError:
    return FleetError(
        f"the configuration at {source.url} is at revision {now}, not {base}: someone published "
        f"since; nothing was written. Look at what changed (sozu-apply --source {source.url} "
        f"--dry-run), then publish again (--base-revision {now})"
    )


async def _current(client: EtcdClient, source: FleetSource) -> tuple[int, list[str]]:
    """(the configuration's revision, 0 when nothing is published; the file keys stored)."""
    store, documents = await client.range(source.config_key)
    _, files = await client.range(source.files_prefix, prefix=True, revision=store)
    revision = max([0, *(kv.mod_revision for kv in (*documents, *files))])
    return revision, [kv.key for kv in files]


async def publish(source: FleetSource, file: Path, *, base_revision: int | None) -> Published:
    """Check ``file`` and write it with its files in one guarded transaction; raises
    :class:`FleetError` (nothing written) when it does not check or the base moved."""
    text, files, warnings = read_published(file)
    async with source.client() as client:
        current, stored = await _current(client, source)
        base = current if base_revision is None else base_revision
        if current != base:
            raise _moved(source, base, current)
        keys = {source.file_key(raw) for raw in files}
        removed = sorted(key for key in stored if key not in keys)
        below = str(base + 1)  # nothing may have been written after the base revision
        compare: list[dict[str, Any]] = [
            {
                "key": encode(source.config_key),
                "target": "MOD",
                "result": "LESS",
                "mod_revision": below,
            },
            {
                "key": encode(source.files_prefix),
                "range_end": encode(prefix_end(source.files_prefix)),
                "target": "MOD",
                "result": "LESS",
                "mod_revision": below,
            },
        ]
        success: list[dict[str, Any]] = [
            {"request_put": {"key": encode(source.config_key), "value": encode(text)}}
        ]
        success += [
            {"request_put": {"key": encode(source.file_key(raw)), "value": encode(content)}}
            for raw, content in files.items()
        ]
        success += [{"request_delete_range": {"key": encode(key)}} for key in removed]
        done, revision = await client.txn(compare, success)
        if not done:
            now, _ = await _current(client, source)
            raise _moved(source, base, now)
    return Published(
        source,
        revision,
        base,
        tuple(files),
        tuple(key.removeprefix(source.files_prefix) for key in removed),
        warnings,
    )
