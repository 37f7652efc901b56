"""sozu_config stands alone: what importing it pulls in, its public face, and its packaging."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import sozu_config
from sozu_config import ConfigState
from sozu_config.responses import StateContent

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGE = REPOSITORY / "packages" / "sozu-config"
FORBIDDEN = ("aiohttp", "rich", "uvloop", "httptools", "sozu_runtime", "sozu_cli")
HEAVY = ("cryptography", "deepdiff", "asyncio")
"""Loaded only by what needs them: parsing a certificate, showing a field's change, the asyncio
client."""
CERTIFICATE = REPOSITORY / "tests" / "fixtures" / "sozu-data" / "lib__assets__local-certificate.pem"

LOADED_MODULES = textwrap.dedent(
    """
    import json, sys
    import sozu_config
    if sys.argv[1] == "all":
        for name in sozu_config.__all__:
            getattr(sozu_config, name)
    print(json.dumps(sorted(sys.modules)))
    """
)


def modules_loaded(touch: str) -> list[str]:
    """The modules loaded by a fresh interpreter after ``import sozu_config`` (and, with
    ``touch="all"``, after reading every public name, lazy ones included)."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES, touch],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return list(json.loads(result.stdout))


def forbidden_among(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in FORBIDDEN]


def top_packages(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_sozu_config_loads_no_server_or_cli_module() -> None:
    loaded = modules_loaded("import")
    assert "sozu_config" in loaded
    assert forbidden_among(loaded) == []


def test_importing_sozu_config_loads_none_of_its_modules_nor_their_dependencies() -> None:
    """The public names load their module on first use: the bare import is cheap."""
    loaded = modules_loaded("import")
    assert [m for m in loaded if m.startswith("sozu_config.")] == []
    assert top_packages(loaded) & {*HEAVY, "pydantic", "rich"} == set()


def test_using_every_public_name_loads_no_server_or_cli_module() -> None:
    loaded = modules_loaded("all")
    assert "sozu_config.client" in loaded
    assert "sozu_config.state" in loaded
    assert forbidden_among(loaded) == []
    assert top_packages(loaded) & set(HEAVY) == set()


CERTIFICATE_READ = textwrap.dedent(
    """
    import json, sys
    from sozu_config import CertificateAndKey, certificate_info
    CertificateAndKey(certificate="x", key="y")
    before = "cryptography" in sys.modules
    info = certificate_info(open(sys.argv[1], encoding="ascii").read())
    print(json.dumps({"before": before, "after": "cryptography" in sys.modules,
                      "fingerprint": info.fingerprint}))
    """
)


def test_cryptography_is_loaded_once_a_certificate_is_read() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CERTIFICATE_READ, str(CERTIFICATE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert report["before"] is False
    assert report["after"] is True
    assert len(report["fingerprint"]) == 64


def test_every_public_name_imports_in_a_fresh_interpreter() -> None:
    """``from sozu_config import …`` works for every name at once, and for the names of each
    module first thing in a new process (loading one module lazily does not depend on another
    having been loaded before)."""
    groups: dict[str, list[str]] = {}
    for name, module in sozu_config._HOMES.items():
        groups.setdefault(module, []).append(name)
    statements = [f"from sozu_config import {', '.join(sozu_config.__all__)}"]
    statements += [f"from sozu_config import {', '.join(names)}" for names in groups.values()]
    for statement in statements:
        result = subprocess.run(
            [sys.executable, "-c", statement],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{statement[:80]}: {result.stderr[-2000:]}"


def test_each_lazy_name_is_the_object_of_its_home_module() -> None:
    homes = sozu_config._HOMES
    assert set(homes) == set(sozu_config.__all__) - {"__version__"}
    for name, module in homes.items():
        home = importlib.import_module(f"sozu_config.{module}")
        assert getattr(sozu_config, name) is getattr(home, name), name
    assert set(sozu_config.__all__) <= set(dir(sozu_config))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        sozu_config.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "NoSuchName" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_every_name_in_all_exists() -> None:
    missing = [name for name in sozu_config.__all__ if not hasattr(sozu_config, name)]
    assert missing == []
    assert len(set(sozu_config.__all__)) == len(sozu_config.__all__)
    assert sozu_config.__version__


def test_the_names_used_in_the_package_docstring_exist() -> None:
    doc = sozu_config.__doc__
    assert doc is not None
    imports = re.findall(r"from sozu_config import ([\w, ]+)", doc)
    assert imports, "the docstring shows how to import the package"
    names = [name.strip() for group in imports for name in group.split(",")]
    assert {"CommandClient", "ConfigState", "QueryState", "load_config"} <= set(names)
    for name in names:
        assert name in sozu_config.__all__, name
        assert getattr(sozu_config, name) is not None
    # the attributes the example goes on to use
    assert callable(ConfigState.from_snapshot)
    assert callable(ConfigState.diff)
    config_fields = sozu_config.Config.model_fields
    assert "command_socket" in config_fields
    assert "state" in config_fields
    assert "state" in StateContent.model_fields
    assert callable(sozu_config.QueryState().describe)
    assert callable(sozu_config.load_config)


def test_sozu_config_imports_nothing_from_the_other_packages() -> None:
    source = PACKAGE / "src" / "sozu_config"
    offenders = []
    for path in sorted(source.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in FORBIDDEN:
            if re.search(rf"^\s*(from|import)\s+{name}\b", text, re.MULTILINE):
                offenders.append(f"{path.name}: {name}")
    assert offenders == []


INSTALLED_CHECK = textwrap.dedent(
    """
    import importlib.util, json, sys
    import sozu_config
    from sozu_config import AddCluster, AddHttpListener, Cluster, ConfigState
    from sozu_config import HttpListenerConfig
    from sozu_config.schema import SCHEMA_PATH

    state = ConfigState()
    state.apply(AddHttpListener(listener=HttpListenerConfig(address="127.0.0.1:8080")))
    state.apply(AddCluster(cluster=Cluster(cluster_id="installed")))
    print(json.dumps({
        "file": sozu_config.__file__,
        "version": state.version,
        "clusters": sorted(state.clusters),
        "plan": [r.type for r in ConfigState().diff(state)],
        "schema": SCHEMA_PATH.is_file(),
        "typed": (SCHEMA_PATH.parent / "py.typed").is_file(),
        "aiohttp": importlib.util.find_spec("aiohttp") is not None,
        "rich": importlib.util.find_spec("rich") is not None,
        "sozu_runtime": importlib.util.find_spec("sozu_runtime") is not None,
    }))
    """
)


def test_the_package_installs_alone_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # build from a copy, so that the build never writes into the repository
    source = tmp_path / "sozu-config"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    run = subprocess.run(
        [str(python), "-c", INSTALLED_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert Path(report["file"]).is_relative_to(venv)  # the installed copy, not the repository
    assert report["version"] == 2
    assert report["clusters"] == ["installed"]
    assert report["plan"] == ["add_http_listener", "add_cluster"]
    assert report["schema"] is True
    assert report["typed"] is True
    assert report["aiohttp"] is False
    assert report["rich"] is False
    assert report["sozu_runtime"] is False


PURE_PLANNING = textwrap.dedent(
    """
    import importlib.abc, importlib.util, json, sys, types

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("sozu_config.client", "sozu_config.live", "sozu_config.protocol"):
                raise ImportError(f"planning imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    # the package's modules without the package's own imports (which include the client)
    spec = importlib.util.find_spec("sozu_config")
    package = types.ModuleType("sozu_config")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["sozu_config"] = package

    from sozu_config import requests as rq
    from sozu_config.models import Cluster
    from sozu_config.plan import plan_states
    from sozu_config.state import ConfigState

    live = ConfigState()
    live.apply(rq.AddCluster(cluster=Cluster(cluster_id="a")))
    desired = ConfigState()
    desired.apply(rq.AddCluster(cluster=Cluster(cluster_id="a", sticky_session=True)))
    desired.apply(rq.AddCluster(cluster=Cluster(cluster_id="b")))
    plan = plan_states(live, desired, 3)
    print(json.dumps({
        "plan": plan.to_json(),
        "modules": sorted(m for m in sys.modules if m.startswith("sozu_config")),
    }))
    """
)

IO_MODULES = ("socket", "asyncio", "selectors", "ssl")


def top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not in functions, not for typing)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
            if node.module is None:
                found.update("." + alias.name for alias in node.names)
    return found


def test_planning_is_pure() -> None:
    """Making and showing a plan needs neither the client nor the protocol, and no module
    planning loads imports the socket or asyncio modules itself."""
    result = subprocess.run(
        [sys.executable, "-c", PURE_PLANNING],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [c["op"] for c in report["plan"]["changes"]] == ["~", "+"]
    assert report["plan"]["version"] == 3
    loaded = report["modules"]
    assert "sozu_config.plan" in loaded
    assert not {"sozu_config.client", "sozu_config.live", "sozu_config.protocol"} & set(loaded)
    source = PACKAGE / "src" / "sozu_config"
    for module in loaded:
        if module == "sozu_config":
            continue
        imports = top_level_imports(source / (module.split(".", 1)[1] + ".py"))
        assert not imports & {*IO_MODULES, ".client", ".live", ".protocol"}, module


def test_the_io_half_of_planning_is_in_live() -> None:
    imports = top_level_imports(PACKAGE / "src" / "sozu_config" / "plan.py")
    assert ".client" not in imports
    assert ".live" not in imports
    assert ".client" in top_level_imports(PACKAGE / "src" / "sozu_config" / "live.py")


BUILT = textwrap.dedent(
    """
    import json
    from sozu_config import protocol
    from sozu_config.responses import Response
    before = [Response.__pydantic_complete__, protocol._REQUEST_MESSAGE.pydantic_complete]
    protocol.build_validators()
    protocol.build_validators()
    after = [Response.__pydantic_complete__, protocol._REQUEST_MESSAGE.pydantic_complete,
             protocol._RESPONSE.pydantic_complete]
    print(json.dumps({"before": before, "after": after}))
    """
)


def test_validators_are_built_on_first_use_or_when_asked() -> None:
    """Loading the protocol builds no validator; a daemon builds them before it listens."""
    result = subprocess.run(
        [sys.executable, "-c", BUILT], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout)
    assert report["before"] == [False, False]
    assert report["after"] == [True, True, True]
