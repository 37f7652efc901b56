"""The benchmarks are scripts, not an installed package: their modules (``loadbench``,
``memory``, ``reconfig``…) are imported from ``benchmarks/``, which is put on ``sys.path``
here for every test of this directory."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]

if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))
