"""The compiled or pure-Python hot path (sozu_runtime/compiled.py): SOZU_PURE_PYTHON=1 loads
every compiled module from its source, an installation runs its compiled modules all together
or none of them, and an edited source sends the process back to pure Python."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sozu_runtime.compiled import PURE_ENV, Mode

# what a child process reports: its mode, and the file each worker module was loaded from
REPORT = """
import importlib, json, pkgutil
import sozu_runtime.worker as worker
from sozu_runtime.compiled import mode
files = {}
for module in pkgutil.iter_modules(worker.__path__):
    if module.name != "__main__":
        name = "sozu_runtime.worker." + module.name
        files[name] = importlib.import_module(name).__file__
compiled, reason = mode()
print(json.dumps({"compiled": compiled, "reason": reason, "files": files}))
"""


def report(pure: bool, script: str = REPORT) -> dict[str, object]:
    """What ``script`` prints (JSON), run in a child process in the default or the pure mode."""
    env = {key: value for key, value in os.environ.items() if key != PURE_ENV}
    if pure:
        env[PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_pure_mode_loads_every_worker_module_from_its_source() -> None:
    pure = report(pure=True)
    assert pure["compiled"] is False
    assert f"{PURE_ENV}=1" in str(pure["reason"]) or "no compiled modules" in str(pure["reason"])
    files = pure["files"]
    assert isinstance(files, dict) and "sozu_runtime.worker.http" in files
    assert all(path.endswith(".py") for path in files.values()), files


def test_the_default_mode_runs_the_compiled_modules_all_together_or_none() -> None:
    default = report(pure=False)
    files = default["files"]
    assert isinstance(files, dict)
    extensions = {name for name, path in files.items() if not path.endswith(".py")}
    if default["compiled"]:
        assert str(default["reason"]).startswith("compiled: ")
        # the modules of the hot path, at least, are compiled
        assert {"sozu_runtime.worker.http", "sozu_runtime.worker.h1"} <= extensions
        assert f"{len(extensions)} modules" in str(default["reason"])
    else:
        assert extensions == set(), default["reason"]


# what a child process reports: every worker class that extends a library's class, and whether
# an instance of it keeps attributes (the library's code stores its own in the instance's dict)
LIBRARY_SUBCLASSES = """
import importlib, inspect, json, pkgutil
import sozu_runtime.worker as worker
# the project's own classes, the builtins, and typing's and asyncio's, which keep no dict
# (typing's Protocol classes cannot even be instantiated)
own = ("sozu_runtime", "builtins", "typing", "asyncio")
found = {}
for info in pkgutil.iter_modules(worker.__path__):
    if info.name == "__main__":
        continue
    module = importlib.import_module("sozu_runtime.worker." + info.name)
    for cls in vars(module).values():
        if not (inspect.isclass(cls) and cls.__module__ == module.__name__):
            continue
        if not any(
            base.__module__.partition(".")[0] not in own and "__dict__" in vars(base)
            for base in cls.__mro__[1:]
        ):
            continue
        try:
            instance = cls.__new__(cls)
            instance.probe = 1
            found[cls.__qualname__] = vars(instance).get("probe") == 1 or "no dict entry"
        except Exception as exc:
            found[cls.__qualname__] = repr(exc)
print(json.dumps(found))
"""


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
def test_worker_classes_extending_a_library_class_keep_their_attributes(pure: bool) -> None:
    # compiled against a library it could not see, such a class lost its instance dict
    found = report(pure, LIBRARY_SUBCLASSES)
    # the h2 and hpack classes the HTTP/2 code extends, at least
    assert {"BlockEncoder", "RequestDecoder", "_Connection", "_StateMachine"} <= set(found)
    assert all(result is True for result in found.values()), found


def built(tmp_path: Path, sources: dict[str, bytes]) -> Mode:
    """A fake installation: ``sources`` under ``tmp_path`` and a manifest of their hashes."""
    for path, text in sources.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(text)
    manifest = tmp_path / "_compiled.json"
    hashes = {path: hashlib.sha256(text).hexdigest() for path, text in sources.items()}
    manifest.write_text(json.dumps(hashes))
    return Mode(manifest, tmp_path)


SOURCES = {"pkg/worker/a.py": b"A = 1\n", "pkg/worker/b.py": b"B = 2\n"}


def test_sources_matching_the_build_run_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    mode = built(tmp_path, SOURCES)
    mode.decide()
    assert mode.compiled
    assert mode.modules == frozenset({"pkg.worker.a", "pkg.worker.b"})
    assert mode.reason == "compiled: 2 modules built with mypyc"


def test_an_edited_source_runs_everything_pure_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    mode = built(tmp_path, SOURCES)
    (tmp_path / "pkg/worker/b.py").write_bytes(b"B = 3\n")
    mode.decide()
    assert not mode.compiled
    assert "pkg/worker/b.py changed since it was compiled" in mode.reason
    assert "pkg/worker/b.py" in capsys.readouterr().err


def test_a_removed_source_or_no_manifest_runs_pure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    mode = built(tmp_path, SOURCES)
    (tmp_path / "pkg/worker/a.py").unlink()
    mode.decide()
    assert not mode.compiled and "pkg/worker/a.py" in mode.reason
    bare = Mode(tmp_path / "missing.json", tmp_path)
    bare.decide()
    assert not bare.compiled and "no compiled modules" in bare.reason


def test_the_environment_variable_wins_over_a_valid_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PURE_ENV, "1")
    mode = built(tmp_path, SOURCES)
    mode.decide()
    assert not mode.compiled and mode.reason == f"pure Python: {PURE_ENV}=1"
    assert mode.modules == frozenset({"pkg.worker.a", "pkg.worker.b"})  # still loaded as .py
