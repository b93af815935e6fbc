"""Fixtures for the customer stories: one ``Scenario`` per test (see ``harness``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.scenarios.harness import Scenario, open_scenario

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
"""Monday 4 May 2026, 09:00 UTC: where every story's clock starts."""

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "journeys"
"""The story journeys the documentation publishes, applied as they are where they can be."""


@pytest.fixture
async def scenario(tmp_path: Path) -> AsyncIterator[Scenario]:
    async with open_scenario(tmp_path, T0) as opened:
        yield opened
