"""Build hook: compile the worker's per-request modules with mypyc where a C compiler exists.

The modules named in ``[tool.hatch.build.hooks.custom] compiled`` (pyproject.toml) are built
from their own typed sources into C extensions; the ``.py`` files stay in the package beside
them, so the same code runs compiled or not. The build never fails for want of a compiler: it
then says so and produces a pure-Python wheel. ``SOZU_PURE_PYTHON=1`` at build time skips the
compilation.

A regular wheel takes the extensions from a temporary directory. An editable install builds
them into ``src/`` (where the editable install imports from), together with
``sozu_runtime/_compiled.json``: the hashes of the sources they were built from, so that the
package runs pure Python rather than stale compiled code once a source is edited (see
``sozu_runtime.compiled``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PURE_ENV = "SOZU_PURE_PYTHON"
MANIFEST = "sozu_runtime/_compiled.json"
GROUP = "sozu_runtime"  # the shared library is named sozu_runtime__mypyc

# What mypyc checks the modules against. Every library they import must be found, typed, in the
# build's environment (pyproject.toml's build requirements): a class of a library that mypyc
# took for ``Any`` could be a compiled class's base, and mypyc would then lay the compiled class
# out without the instance dictionary its base needs. Only sozu-config, which a build cannot
# install from an index, is missing: the modules use its names but extend none of its classes.
_MYPY_CONFIG = """\
[mypy]
follow_imports = silent

[mypy-sozu_config.*]
ignore_missing_imports = True
"""

# run in a child interpreter: mypyc's build goes through setuptools' build_ext
_BUILD_SCRIPT = f"""
import sys
_MYPY_CONFIG = {_MYPY_CONFIG!r}
from setuptools import Distribution
from mypyc.build import mypycify

build_dir, *modules = sys.argv[1:]
with open(build_dir + "/mypy.ini", "w") as config:
    config.write(_MYPY_CONFIG)
extensions = mypycify(
    ["--config-file=" + build_dir + "/mypy.ini", "--cache-dir=" + build_dir + "/cache", *modules],
    opt_level="3",
    group_name="{GROUP}",
    target_dir=build_dir + "/c",
)
distribution = Distribution({{"name": "{GROUP}", "ext_modules": extensions}})
command = distribution.get_command_obj("build_ext")
command.build_lib = build_dir + "/lib"
command.build_temp = build_dir + "/tmp"
command.parallel = 2
distribution.run_command("build_ext")
"""


def _compiler() -> str | None:
    """The C compiler Python's build would use, if it is installed."""
    configured = (sysconfig.get_config_var("CC") or "cc").split()
    candidates = [os.environ.get("CC", ""), configured[0] if configured else "", "cc", "gcc"]
    return next((found for name in candidates if name and (found := shutil.which(name))), None)


def _say(message: str) -> None:
    print(f"sozu-runtime build: {message}", file=sys.stderr, flush=True)


class CompiledHotPath(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        src = Path(self.root) / "src"
        modules: list[str] = list(self.config.get("compiled", []))
        editable = version == "editable"
        if editable:
            self._clean(src, modules)
        if os.environ.get(PURE_ENV) == "1":
            _say(f"{PURE_ENV}=1: building pure Python")
            return
        if _compiler() is None:
            _say("no C compiler found: building pure Python (the proxy runs, more slowly)")
            return
        build_dir = Path(tempfile.mkdtemp(prefix="sozu-mypyc-"))
        try:
            built = self._compile(src, modules, build_dir)
            if built is None:
                return
            manifest = build_dir / "lib" / MANIFEST
            manifest.write_text(json.dumps(self._hashes(src, modules), indent=1) + "\n")
            built.append(manifest)
            lib = build_dir / "lib"
            if editable:
                for path in built:
                    target = src / path.relative_to(lib)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
            else:
                for path in built:
                    build_data["force_include"][str(path)] = str(path.relative_to(lib))
                self._keep = build_dir  # removed in finalize, once the wheel holds the files
                build_dir = None  # type: ignore[assignment]
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            _say(f"compiled {len(modules)} modules with mypyc")
        finally:
            if build_dir is not None:
                shutil.rmtree(build_dir, ignore_errors=True)

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        kept = getattr(self, "_keep", None)
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)

    def _compile(self, src: Path, modules: list[str], build_dir: Path) -> list[Path] | None:
        """Build the extensions into ``build_dir/lib``; None (and a message) if that failed."""
        process = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT, str(build_dir), *modules],
            cwd=src,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if process.returncode != 0:
            tail = "\n".join(process.stdout.splitlines()[-20:])
            _say(f"mypyc failed, building pure Python instead:\n{tail}")
            return None
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        return sorted((build_dir / "lib").rglob(f"*{suffix}"))

    @staticmethod
    def _hashes(src: Path, modules: list[str]) -> dict[str, str]:
        return {
            module: hashlib.sha256((src / module).read_bytes()).hexdigest() for module in modules
        }

    @staticmethod
    def _clean(src: Path, modules: list[str]) -> None:
        """Remove what an earlier editable build left in ``src/``."""
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for module in modules:
            (src / module).with_suffix(suffix).unlink(missing_ok=True)
        (src / f"{GROUP}__mypyc{suffix}").unlink(missing_ok=True)
        (src / MANIFEST).unlink(missing_ok=True)
