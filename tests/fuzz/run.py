"""The fuzzing session (``nox -s fuzz``): coverage-guided fuzzing of the parsers with atheris.

Every target of :mod:`targets` runs in a process of its own for ``--seconds`` (libFuzzer's
``-max_total_time``), starting from its seeds; an input that makes a target raise anything but
its documented error, break one of its checks, run longer than ``--timeout`` seconds or grow
the process past 2 GiB is a finding: libFuzzer saves it (``<out>/<target>/crash-…``) and the
session fails, naming it. The report (cases tried per target, findings) is printed and written
to ``<out>/fuzz.json``.

Usage::

    python tests/fuzz/run.py [--seconds 60] [--timeout 10] [--targets a,b] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_OUT = HERE.parent.parent / ".fuzz"
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")
_STATS = re.compile(rb"#(\d+)\s+(?:pulse|NEW|REDUCE|DONE|INITED)")


def _worker(target: str, libfuzzer_arguments: list[str]) -> None:
    """Run one target under atheris (a process of its own): the project's modules are
    imported under instrumentation, so that the fuzzer follows their code paths."""
    import atheris

    with atheris.instrument_imports(include=["sozu_runtime", "sozu_config"]):
        import targets
    atheris.Setup([sys.argv[0], *libfuzzer_arguments], targets.TARGETS[target])
    atheris.Fuzz()


def _run_target(target: str, seconds: int, timeout: int, out: Path) -> dict[str, object]:
    import targets

    directory = out / target
    corpus = directory / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("crash-*"):
        stale.unlink()
    seeds = targets.seeds(target)
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index:04d}").write_bytes(seed)
    command = [
        sys.executable,
        __file__,
        "--worker",
        target,
        "--",
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        "-rss_limit_mb=2048",
        "-max_len=65536",
        f"-artifact_prefix={directory}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    started = time.monotonic()
    process = subprocess.run(
        command, capture_output=True, timeout=seconds + 600, check=False, cwd=HERE
    )
    elapsed = time.monotonic() - started
    log = process.stdout + process.stderr
    (directory / "fuzz.log").write_bytes(log)
    done = _DONE.search(log)
    stats = _STATS.findall(log)
    runs = int(done.group(1)) if done else (int(stats[-1]) if stats else 0)
    findings = sorted(str(path) for path in directory.glob("crash-*"))
    findings += sorted(str(path) for path in directory.glob("timeout-*"))
    findings += sorted(str(path) for path in directory.glob("oom-*"))
    return {
        "target": target,
        "seeds": len(seeds),
        "cases": runs,
        "seconds": round(elapsed, 1),
        "corpus": len(list(corpus.iterdir())),
        "exit_code": process.returncode,
        "findings": findings,
        "ok": process.returncode == 0 and not findings,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--worker"]:
        rest = arguments[3:] if arguments[2:3] == ["--"] else arguments[2:]
        _worker(arguments[1], rest)
        return 0
    import targets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--targets", default=",".join(targets.TARGETS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus and report")
    options = parser.parse_args(arguments)
    chosen = [name.strip() for name in options.targets.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in targets.TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown} (known: {', '.join(targets.TARGETS)})")
    options.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in chosen:
        print(f"fuzzing {name} for {options.seconds} s ...", flush=True)
        result = _run_target(name, options.seconds, options.timeout, options.out)
        results.append(result)
        verdict = "ok" if result["ok"] else f"FINDINGS (exit {result['exit_code']})"
        print(
            f"  {result['cases']:>12,} cases, {result['seeds']} seeds, corpus "
            f"{result['corpus']}: {verdict}",
            flush=True,
        )
        for finding in result["findings"]:  # type: ignore[attr-defined]
            print(f"    {finding}")
    report = options.out / "fuzz.json"
    report.write_text(json.dumps({"seconds_per_target": options.seconds, "targets": results}))
    total = sum(int(r["cases"]) for r in results)  # type: ignore[call-overload]
    print(f"{total:,} cases in all; report: {report}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
