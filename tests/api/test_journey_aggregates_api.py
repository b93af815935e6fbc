"""Journey conditions on event aggregates, through the API (SQLite, virtual clock).

The published S2 example (``examples/journeys/s2-leather-jacket.yaml``) is
applied unchanged: its event trigger's ``condition`` counts views of one coat
or jacket within an hour, so the third view lets her in (not the second) and
the discount email goes out 20 seconds later, to a real SMTP server. No
segment is defined: the count is maintained for the journey alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.harness import Scenario, open_scenario

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "journeys" / "s2-leather-jacket.yaml"

TEMPLATE: dict[str, Any] = {
    "id": "coats-jackets-discount",
    "name": "Coats and jackets discount",
    "channel": "email",
    "subject": "{{ journey.discount_percent }}% off coats and jackets",
    "text": "{{ journey.discount_percent }}% off for {{ journey.valid_for_hours }} hours.",
}


@pytest.fixture
async def scenario(tmp_path: Path) -> AsyncIterator[Scenario]:
    async with open_scenario(tmp_path, T0) as opened:
        await opened.apply("template", TEMPLATE)
        await opened.apply_file("journey", EXAMPLE)
        yield opened


async def view(s: Scenario, user: str, product: str, category: str = "jackets") -> None:
    await s.track(user, "Product Viewed", {"product_id": product, "category": category})


async def test_the_published_example_emails_after_the_third_view_not_the_second(
    scenario: Scenario,
) -> None:
    s = scenario
    segments = await s.client.get("/api/segments", headers=s.admin)
    assert segments.status_code == 200 and segments.json()["segments"] == []
    await s.customer("ana", {"email": "ana@example.com"})
    await view(s, "ana", "leather-jacket")
    await s.advance(timedelta(minutes=20))
    await view(s, "ana", "leather-jacket")
    await view(s, "ana", "wool-coat", "coats")  # another coat: its own count
    await view(s, "ana", "scarf", "accessories")  # not outerwear: not counted
    await s.advance(timedelta(minutes=30))
    assert await s.instances("leather-jacket-nudge") == [], "two views are not three"
    assert await s.effects() == []

    await view(s, "ana", "leather-jacket")  # the third, 50 minutes after the first
    third_at = s.now
    [instance] = await s.instances("leather-jacket-nudge")
    assert instance["profile_id"] == await s.profile_id("ana")
    await s.advance(timedelta(seconds=20))
    [offer] = await s.sent("ana")
    assert offer.created_at - third_at == timedelta(seconds=20)
    assert (offer.template, offer.channel, offer.address) == (
        "coats-jackets-discount",
        "email",
        "ana@example.com",
    )
    [mail] = s.mails("ana@example.com")
    assert mail["Subject"] == "15% off coats and jackets"


async def test_views_spread_over_more_than_an_hour_never_let_her_in(scenario: Scenario) -> None:
    s = scenario
    await s.customer("ben", {"email": "ben@example.com"})
    for _ in range(3):
        await view(s, "ben", "leather-jacket")
        await s.advance(timedelta(minutes=40))
    await s.advance(timedelta(hours=1))
    assert await s.instances("leather-jacket-nudge") == []
    assert s.mails("ben@example.com") == []
