"""S5 — welcome, then listen: the journey's part.

A brand-new sign-up enters the welcome series (the published
``examples/journeys/s5-welcome-series.yaml``, applied as it is): three
messages over a week. Between messages she only clicks running shoes; the
second and third messages feature athletic gear, not dress shoes. The
templates read ``favorite_category``, a computed trait kept from her
``Email Link Clicked`` events, so what the send effect names renders, for
her, with the athletic picks. Buying during the series is the goal, and it
ends the series.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

FAVORITE: dict[str, Any] = {
    "id": "favorite_category",
    "description": "The category of the last product she clicked in an email",
    "compute": {"event": "Email Link Clicked", "aggregate": "last", "of": "properties.category"},
}

PICKS = (
    "{% case profile.traits.favorite_category %}"
    "{% when 'running-shoes', 'trail-shoes' %}Athletic gear picked for you"
    "{% when 'dress-shoes' %}Dress shoes picked for you"
    "{% else %}Our bestsellers{% endcase %}"
)


def template(ident: str, subject: str) -> dict[str, Any]:
    return {
        "id": ident,
        "name": ident,
        "channel": "email",
        "subject": subject,
        "text": PICKS,
        "variables": {"profile.traits.favorite_category": "none"},
    }


async def define(s: Scenario) -> None:
    await s.apply("computed_trait", FAVORITE)
    await s.apply("template", template("welcome-1", "Welcome!"))
    await s.apply("template", template("welcome-2-picks", "Picked for you"))
    await s.apply("template", template("welcome-3-picks", "More for you"))
    await s.apply_file("journey", EXAMPLES / "s5-welcome-series.yaml")


async def sign_up(s: Scenario, user: str) -> None:
    """The shop's backend creates her account (her address is trusted) and says so."""
    await s.customer(user, {"email": f"{user}@example.com"})
    await s.track(user, "Signed Up", server=True)


async def click(s: Scenario, user: str, category: str) -> None:
    properties = {"category": category, "url": f"https://shop.example/{category}"}
    await s.track(user, "Email Link Clicked", properties)


async def test_three_messages_over_a_week_featuring_what_she_clicked(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s)
    await s.advance(timedelta(hours=5, minutes=30))  # Monday 14:30 UTC
    signed_up = s.now
    await sign_up(s, "ana")
    [welcome] = await s.sent("ana")
    assert welcome.created_at == signed_up
    assert (welcome.template, welcome.topic, welcome.category) == (
        "welcome-1",
        "onboarding",
        "promotional",
    )

    await s.advance(timedelta(hours=20))
    await click(s, "ana", "running-shoes")
    await s.advance(timedelta(hours=20))
    await click(s, "ana", "running-shoes")
    await s.advance(timedelta(hours=8))  # two days after signing up
    sent = await s.sent("ana")
    assert [m.template for m in sent] == ["welcome-1", "welcome-2-picks"]
    second = sent[1]
    assert second.created_at == signed_up + timedelta(days=2)
    assert second.data == {"featured": "clicked-category"}
    assert (second.gate, second.address) == ("send", "ana@example.com")
    assert (await s.traits("ana"))["favorite_category"] == "running-shoes"
    text = (await s.preview(second.template, "ana", second.data))["parts"]["text"]
    assert text == "Athletic gear picked for you"

    await s.advance(timedelta(days=3))
    await click(s, "ana", "trail-shoes")
    await s.advance(timedelta(days=2, hours=18))  # day 8, 08:30
    sent = await s.sent("ana")
    assert len(sent) == 2, "the third waits for 09:00 after five more days"
    await s.advance(timedelta(minutes=30))
    sent = await s.sent("ana")
    assert [m.template for m in sent] == ["welcome-1", "welcome-2-picks", "welcome-3-picks"]
    third = sent[2]
    # Five days after the second, then the next 09:00 in her zone (UTC).
    assert third.created_at == datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
    assert third.created_at - signed_up < timedelta(days=8)
    text = (await s.preview(third.template, "ana", third.data))["parts"]["text"]
    assert "Athletic gear" in text and "Dress" not in text
    instance = await s.instance("welcome-series", "ana")
    assert instance["status"] == "completed"

    # A newcomer who clicked nothing gets the bestsellers, not athletic gear.
    await sign_up(s, "ben")
    await s.advance(timedelta(days=2))
    [_, picks] = await s.sent("ben")
    assert (await s.preview(picks.template, "ben", picks.data))["parts"]["text"] == (
        "Our bestsellers"
    )


async def test_a_purchase_during_the_series_is_the_goal_and_ends_it(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await sign_up(s, "cleo")
    await s.advance(timedelta(days=1))
    await s.track("cleo", "Order Completed", {"order_id": "o-1", "revenue": 89})
    await s.advance(timedelta(days=10))

    assert [m.template for m in await s.effects("cleo")] == ["welcome-1"]
    instance = await s.instance("welcome-series", "cleo")
    assert instance["status"] == "converted"
    assert "first-purchase" in str(instance["goals_reached"])
    response = await s.client.get("/api/journeys/welcome-series/metrics", headers=s.admin)
    assert response.json()["instances"] == {"converted": 1}
