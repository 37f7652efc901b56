"""Whether the worker's per-request modules run compiled (mypyc) or as pure Python.

The build (``hatch_build.py``) compiles the modules listed in the package's pyproject.toml
where a C compiler exists and records, in ``_compiled.json`` beside this file, the hash of each
source it compiled. Both forms are installed; Python would import the compiled one. The
finder installed by :func:`install` makes every listed module load from its ``.py`` source
instead when

* ``SOZU_PURE_PYTHON=1`` is set (for tests, profiling and comparison), or
* a source no longer matches the hash it was compiled from (an edited editable install): the
  compiled modules call each other directly, so they are used all together or not at all.

The decision is taken once per process, at the first import of a listed module, and
:func:`mode` tells it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PURE_ENV = "SOZU_PURE_PYTHON"
_HERE = Path(__file__).parent
_MANIFEST = _HERE / "_compiled.json"
_PACKAGE = __name__.rpartition(".")[0]


class Mode:
    """The mode of a process, decided on first use from ``manifest`` (the build's record of
    the compiled sources, relative to ``root``) and the environment."""

    def __init__(self, manifest: Path, root: Path) -> None:
        self.manifest = manifest
        self.root = root
        self.decided = False
        self.compiled = False
        self.reason = ""
        self.modules: frozenset[str] = frozenset()  # dotted names of the compiled modules

    def decide(self) -> None:
        if self.decided:
            return
        self.decided = True
        try:
            hashes: dict[str, str] = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            self.reason = "pure Python: this installation has no compiled modules"
            return
        self.modules = frozenset(path.removesuffix(".py").replace("/", ".") for path in hashes)
        if os.environ.get(PURE_ENV) == "1":
            self.reason = f"pure Python: {PURE_ENV}=1"
            return
        for path, digest in hashes.items():
            source = self.root / path
            try:
                current = hashlib.sha256(source.read_bytes()).hexdigest()
            except OSError:
                current = ""
            if current != digest:
                self.reason = f"pure Python: {path} changed since it was compiled (reinstall)"
                print(f"sozu: {self.reason}", file=sys.stderr)
                return
        self.compiled = True
        self.reason = f"compiled: {len(hashes)} modules built with mypyc"


_MODE = Mode(_MANIFEST, _HERE.parent)


def mode() -> tuple[bool, str]:
    """(True if the listed modules run compiled, a sentence saying which and why)."""
    _MODE.decide()
    return _MODE.compiled, _MODE.reason


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the compiled modules' ``.py`` sources when the process runs pure Python."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PACKAGE + ".") or path is None:
            return None
        _MODE.decide()
        if _MODE.compiled or fullname not in _MODE.modules:
            return None  # the usual machinery finds the extension module first
        finder = importlib.machinery.FileFinder(
            path[0],
            (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES),
        )
        return finder.find_spec(fullname, target)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())
