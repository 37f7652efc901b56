"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOZU_DATA = FIXTURES / "sozu-data"


@pytest.fixture(scope="session")
def sozu_data() -> Path:
    """The sample configurations, certificates and requests of the reference implementation."""
    return SOZU_DATA
