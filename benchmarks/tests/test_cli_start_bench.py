"""The command-line start benchmark's pure parts: medians, report and documentation table."""

from __future__ import annotations

import pytest
from cli_start import child_environment, markdown_section, median_ms, report_lines
from memory import replace_region

PAYLOAD = {
    "context": {"date": "2026-12-04T18:00:00+00:00", "cpu_model": "CPU", "cpu_count": 2},
    "runs": 20,
    "commands": [
        {"command": "python -c pass", "median_ms": 11.2, "min_ms": 10.9, "max_ms": 13.0},
        {"command": "sozu status", "median_ms": 140.4, "min_ms": 131.0, "max_ms": 180.2},
    ],
}


def test_median_in_milliseconds() -> None:
    assert median_ms([0.3, 0.1, 0.2]) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        median_ms([])


def test_the_documentation_table_has_a_row_per_command() -> None:
    section = markdown_section(PAYLOAD)
    assert "CPU, 2 CPUs; median of 20 runs" in section
    assert "| `sozu status` | 140 ms | 131 ms | 180 ms |" in section
    page = "# B\n<!-- cli-start:begin -->\nold\n<!-- cli-start:end -->\n"
    rewritten = replace_region(page, "cli-start", section)
    assert "old" not in rewritten
    assert rewritten.count("| `") == 2


def test_report_and_environment() -> None:
    lines = report_lines(PAYLOAD)
    assert len(lines) == 3
    assert "140.4 ms" in lines[2]
    environment = child_environment()
    assert "PYTHONDONTWRITEBYTECODE" not in environment
    assert environment["NO_COLOR"] == "1"
