"""Development tasks: `nox -s tests`, `tests-pure`, `lint`, `typecheck`, `schema`, `bench`,
`demo`, `fuzz`, `soak`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["./packages/sozu-config", "./packages/sozu-runtime", "./packages/sozu-cli"]
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.2",
    "hypothesis>=6.100",
    "aiohttp>=3.9",
    "prometheus-client>=0.20",
]


# Says how the installed daemon runs its per-request modules; fails when a C compiler is
# present but they did not compile (the build then falls back to pure Python, and the tests
# would silently check only that mode).
HOT_PATH_CHECK = """
import shutil, sys
from sozu_runtime.compiled import mode
compiled, reason = mode()
print("sozu hot path:", reason)
sys.exit(0 if compiled or sys.argv[1] == "pure" or not shutil.which("cc") else 1)
"""


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, property and end-to-end tests), on the compiled hot path
    where a C compiler exists."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("python", "-c", HOT_PATH_CHECK, "compiled")
    session.run("pytest", *session.posargs)


@nox.session(name="tests-pure")
def tests_pure(session: nox.Session) -> None:
    """The whole test suite with the per-request modules run from their Python sources
    (``SOZU_PURE_PYTHON=1``: what runs where no C compiler is found)."""
    session.env["SOZU_PURE_PYTHON"] = "1"
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("python", "-c", HOT_PATH_CHECK, "pure")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the three packages (strict is set in pyproject.toml, and stated here)."""
    session.env["SOZU_PURE_PYTHON"] = "1"  # type-checking needs no compiled modules
    session.install("mypy>=1.10", *PACKAGES)
    session.run("mypy", "--strict", "packages/sozu-config/src/sozu_config")
    session.run(
        "mypy",
        "--strict",
        "packages/sozu-runtime/src/sozu_runtime",
        "packages/sozu-cli/src/sozu_cli",
    )


@nox.session
def schema(session: nox.Session) -> None:
    """Regenerate the protocol's JSON Schema and the configuration reference, and fail if a
    committed copy differs."""
    session.install("./packages/sozu-config")
    session.run("python", "-m", "sozu_config.schema", "--check")
    session.run(
        "python", "-m", "sozu_config.configfile.reference", "--check", "docs/configuration.md"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: library (diff, generate, load), command-line start, and load tests against
    other proxies."""
    session.install(*PACKAGES, "aiohttp>=3.9", "matplotlib>=3.8")
    session.run("python", "benchmarks/config_bench.py")
    session.run("python", "benchmarks/cli_start.py")
    session.run("python", "benchmarks/load.py", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the parsers (atheris); `-- --seconds N` per target (60)."""
    session.install(*PACKAGES, *TEST_DEPS, "atheris>=2.3")
    session.run("python", "tests/fuzz/run.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Minutes of mixed and hostile traffic with memory sampled; `-- --seconds N` (180)."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("python", "tests/soak/run.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Start the proxy on examples/demo.toml with two built-in demo backends."""
    session.install(*PACKAGES)
    session.run("python", "examples/demo.py", *session.posargs)
