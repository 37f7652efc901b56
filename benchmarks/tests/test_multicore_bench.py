"""The multi-core row of the load benchmark: ``sozu-2w`` and ``haproxy-2t``, their
configurations and CPUs, the loads they run on, and their table against ``haproxy-2t``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import load
import pytest
from loadbench.certificates import write_self_signed
from loadbench.loads import HOSTNAME, LOADS_BY_NAME
from loadbench.multicore import multicore_markdown, multicore_summaries, multicore_text
from loadbench.targets import (
    LOOPBACK,
    HaproxyTarget,
    HaproxyTwoThreadsTarget,
    SozuTarget,
    SozuTwoWorkersTarget,
    build_servers,
)
from synthetic import wrk_run

from sozu_config import load_config


def test_the_multi_core_targets_run_on_both_cpus_with_two_workers_or_threads(
    tmp_path: Path,
) -> None:
    tls = write_self_signed(tmp_path / "tls", HOSTNAME, LOOPBACK)
    names = ["sozu", "haproxy", "sozu-2w", "haproxy-2t"]
    origin, targets = build_servers(names, tmp_path, 0, 1, tls)
    sozu, haproxy, sozu_2w, haproxy_2t = targets
    assert isinstance(sozu_2w, SozuTwoWorkersTarget) and isinstance(sozu, SozuTarget)
    assert isinstance(haproxy_2t, HaproxyTwoThreadsTarget) and isinstance(haproxy, HaproxyTarget)

    assert (origin.cpu, sozu.cpu, haproxy.cpu) == (0, 1, 1)
    assert sozu_2w.cpu == haproxy_2t.cpu == "0,1"
    configs = {}
    for target in (sozu, sozu_2w):
        target.directory.mkdir()
        command = target.command()
        configs[target.name] = load_config(command[command.index("-c") + 1])
    assert configs["sozu"].worker_count == 1
    assert configs["sozu-2w"].worker_count == 2
    for target, threads in ((haproxy, 1), (haproxy_2t, 2)):
        target.directory.mkdir()
        command = target.command()
        text = Path(command[command.index("-f") + 1]).read_text(encoding="utf-8")
        assert f"    nbthread {threads}\n" in text
    # on a single usable CPU, everything shares it
    _, (alone,) = build_servers(["sozu-2w"], tmp_path / "one", 0, 0, tls)
    assert alone.cpu == 0


def test_the_multi_core_targets_run_on_small_50_and_newconn_unless_told(
    capsys: pytest.CaptureFixture[str],
) -> None:
    full = load.parse_arguments([])
    chosen = load.parse_arguments(["--loads", "64k,small-200"])
    told = load.parse_arguments(["--multicore-loads", "tls-keepalive"])
    small, big = LOADS_BY_NAME["small-50"], LOADS_BY_NAME["64k"]

    assert {"sozu-2w", "haproxy-2t"} <= set(full.targets)
    assert full.multicore_loads == ("small-50", "newconn")
    assert chosen.multicore_loads == ("small-200", "64k")
    assert told.multicore_loads == ("tls-keepalive",)
    assert load.in_plan(full, small, SozuTwoWorkersTarget)
    assert not load.in_plan(full, big, HaproxyTwoThreadsTarget)
    assert load.in_plan(full, big, HaproxyTarget)
    assert full.to_json()["multicore_loads"] == ["small-50", "newconn"]
    with pytest.raises(SystemExit):
        load.parse_arguments(["--loads", "64k", "--multicore-loads", "small-50"])
    assert "sozu-2w, haproxy-2t run on small-50 only" in capsys.readouterr().err


def test_the_multi_core_table_takes_its_ratios_against_haproxy_with_two_threads() -> None:
    records = []
    for round_index, scale in enumerate((1.0, 0.5, 2.0)):
        for target, rate in (("sozu", 600), ("haproxy", 1000), ("sozu-2w", 900)):
            records.append(wrk_run(round_index, target, rate * scale, "small-50"))
        records.append(wrk_run(round_index, "haproxy-2t", 1500 * scale, "small-50"))
        records.append(wrk_run(round_index, "sozu", 300 * scale, "64k"))  # no multi-core run

    targets = ("sozu", "haproxy", "sozu-2w", "haproxy-2t")
    cells = multicore_summaries(records, ["small-50", "64k"], targets)

    assert [(cell.load, cell.target) for cell in cells] == [("small-50", name) for name in targets]
    ratios = {cell.target: cell.median_ratio_to_haproxy for cell in cells}
    assert ratios == pytest.approx({"sozu": 0.4, "haproxy": 2 / 3, "sozu-2w": 0.6, "haproxy-2t": 1})
    markdown = multicore_markdown(cells)
    assert markdown.startswith("**Two cores.**") and "load generator (wrk)" in markdown
    assert "| load | target | req/s | vs haproxy-2t | p50 ms | p99 ms | clean runs |" in markdown
    assert "|  | sozu-2w | 900 | 0.60 |" in markdown
    assert multicore_text(cells).splitlines()[1].split()[3:5] == ["vs", "haproxy-2t"]
    assert multicore_summaries(records, ["small-50"], ("sozu", "haproxy")) == []


def test_the_main_table_leaves_the_multi_core_targets_to_their_own() -> None:
    settings = load.parse_arguments(
        ["--targets", "sozu,haproxy,sozu-2w", "--loads", "small-50", "--no-docs"]
    )
    records = [wrk_run(0, "sozu", 600, "small-50"), wrk_run(0, "haproxy", 1000, "small-50")]
    records.append(wrk_run(0, "sozu-2w", 900, "small-50"))
    summaries, _ = load.summarise_run(settings, records)

    assert [cell.target for cell in load.one_core(summaries)] == ["sozu", "haproxy"]
    assert [cell.target for cell in summaries] == ["sozu", "haproxy", "sozu-2w"]  # charts


def test_the_page_gets_the_multi_core_table_in_its_own_region(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n<!-- results:begin -->\nold main table\n<!-- results:end -->\n"
        "<!-- multicore:begin -->\nold\n<!-- multicore:end -->\n",
        encoding="utf-8",
    )
    settings = load.parse_arguments(["--targets", "sozu-2w,haproxy-2t", "--loads", "small-50"])
    settings = dataclasses.replace(settings, docs_page=page)
    records = [wrk_run(0, "sozu-2w", 900, "small-50"), wrk_run(0, "haproxy-2t", 1500, "small-50")]
    summaries, costs = load.summarise_run(settings, records)
    cells = multicore_summaries(records, ["small-50"], settings.targets)
    machine = {
        "date": "2026-12-04",
        "cpu_model": "CPU",
        "cpu_count": 2,
        "kernel": "Linux",
        "python": "3.11",
        "tools": {"wrk": "wrk 4", "h2load": None, "nginx": "nginx", "haproxy": "HAProxy"},
    }

    load.rewrite_tables(settings, machine, summaries, {}, costs, cells)

    text = page.read_text(encoding="utf-8")
    assert "old main table" in text  # no one-core cell: the main table is left alone
    region = text.split("<!-- multicore:begin -->")[1].split("<!-- multicore:end -->")[0]
    assert region.startswith("\n_full run: 3 round(s)") and "2026-12-04" in region
    assert "|  | haproxy-2t | 1,500 | 1.00 |" in region and "old" not in region
