"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check what is computed, not how fast: on a shared machine a per-example
# deadline only measures the neighbours' load.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOZU_DATA = FIXTURES / "sozu-data"


@pytest.fixture(scope="session")
def sozu_data() -> Path:
    """The sample configurations, certificates and requests of the reference implementation."""
    return SOZU_DATA
