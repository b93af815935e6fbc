"""S1 — Dana's backordered shoes, the journeys' part.

Dana buys running shoes. Her order is backordered. She opens a support chat;
the agent tags her as inconvenienced through the admin API, and at that
instant an SMS with a personal promo code (a reference to the
``backorder-apology`` code pool) is produced (the published
``examples/journeys/s1-inconvenience-sms.yaml``, applied as it is). While the
chat is open no promotional email or survey goes out. When the shoes arrive
and she submits feedback, her loyalty balance grows by 500 points and a
thank-you message carrying the points is produced.

The warehouse reports the backorder as a business event
(``POST /v1/business-events``): ``examples/journeys/s1-backorder-care.yaml``,
applied as it is, fans it out to whoever placed that order.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

INCONVENIENCED: dict[str, Any] = {
    "id": "inconvenienced",
    "name": "Tagged as inconvenienced by support",
    "condition": {"trait": "tags", "op": "contains", "value": "inconvenienced"},
}

THANKS: dict[str, Any] = {
    "id": "feedback-thanks-points",
    "name": "Thank you, with the points",
    "channel": "sms",
    "body": "Thanks {{ profile.traits.first_name }}! {{ journey.points_added }} points added: "
    "your balance is {{ profile.traits.loyalty_points }}.",
}

AFTER_PURCHASE = """
id: after-purchase
name: Accessories a few hours after a purchase, a survey the next day
priority: 30
triggers:
  - event: Order Completed
correlation_key: properties.order_id
reentry: always
hold:
  while: {trait: support_chat_open, op: equals, value: true}
  max_age: 2d
  messages: promotional
start: later
steps:
  later:
    wait: {for: 2h}
    next: accessories
  accessories:
    message:
      channel: email
      template: running-accessories
      topic: offers
      category: promotional
    next: next-day
  next-day:
    wait: {for: 1d}
    next: survey
  survey:
    message:
      channel: email
      template: purchase-survey
      topic: surveys
      category: promotional
"""


async def define(s: Scenario) -> None:
    await s.apply("segment", INCONVENIENCED)
    await s.apply("template", THANKS)
    await s.apply_file("journey", EXAMPLES / "s1-inconvenience-sms.yaml")
    await s.apply_file("journey", EXAMPLES / "s1-backorder-care.yaml")
    await s.apply("journey", AFTER_PURCHASE)


async def chat(s: Scenario, open_: bool) -> None:
    name = "Support Chat Started" if open_ else "Support Chat Ended"
    await s.track("dana", name, {"chat_id": "c-1"}, server=True)
    await s.identify("dana", {"support_chat_open": open_}, server=True)


async def test_dana_backordered_shoes(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await s.customer(
        "dana",
        {
            "first_name": "Dana",
            "email": "dana@example.com",
            "phone": "+33612345678",
            "loyalty_points": 1200,
        },
        consent={"sms": True, "email": True},
    )
    order = {"order_id": "o-1", "product_name": "Trail Runner 2", "revenue": 129}
    await s.track("dana", "Order Completed", order)
    await s.advance(timedelta(minutes=30))
    await s.track("sam", "Order Completed", {"order_id": "o-2", "revenue": 40})
    await s.business_event("Item Backordered", {"order_id": "o-1", "sku": "TR2-39"})
    care = await s.instance("backorder-care", "dana")
    assert (care["status"], care["correlation_key"]) == ("waiting", "o-1")
    assert [i["profile_id"] for i in await s.instances("backorder-care")] == [care["profile_id"]]

    # The chat opens; the agent tags her: the promo-code SMS at once.
    await s.advance(timedelta(minutes=30))
    await chat(s, open_=True)
    await s.advance(timedelta(minutes=2))
    await s.patch_traits("dana", {"tags": ["inconvenienced"]})
    tagged_at = s.now
    [sms] = await s.effects("dana")
    assert sms.created_at == tagged_at
    assert (sms.journey_id, sms.channels, sms.template, sms.category) == (
        "inconvenience-sms",
        ("sms",),
        "apology-promo-code",
        "transactional",
    )
    assert sms.data == {"code_pool": "backorder-apology"}
    assert (sms.gate, sms.channel, sms.address) == ("send", "sms", "+33612345678")

    # The accessories email comes due while the chat is open: held, not sent.
    await s.advance(timedelta(hours=1))
    assert [m.template for m in await s.effects("dana")] == ["apology-promo-code"]
    held = await s.instance("after-purchase", "dana")
    assert held["status"] == "held"
    await chat(s, open_=False)
    closed_at = s.now
    sent = await s.sent("dana")
    assert sent == await s.effects("dana")
    assert [m.template for m in sent] == ["apology-promo-code", "running-accessories"]
    assert sent[1].created_at == closed_at

    # The survey comes due a day later, during a second chat: it waits for its end.
    await s.advance(timedelta(hours=23))
    await chat(s, open_=True)
    await s.advance(timedelta(hours=2))
    assert "purchase-survey" not in [m.template for m in await s.effects("dana")]
    await chat(s, open_=False)
    assert (await s.sent("dana"))[-1].template == "purchase-survey"

    # The shoes arrive; she scans the insert and gives feedback.
    await s.advance(timedelta(days=4))
    await s.track("dana", "Order Delivered", {"order_id": "o-1"}, server=True)
    await s.advance(timedelta(hours=3))
    await s.track("dana", "Feedback Submitted", {"order_id": "o-1", "rating": 5})
    traits = await s.traits("dana")
    assert traits["loyalty_points"] == 1700
    assert sorted(traits["tags"]) == ["gave-feedback", "inconvenienced"]
    thanks = (await s.sent("dana"))[-1]
    assert (thanks.journey_id, thanks.step_id) == ("backorder-care", "thanks")
    assert thanks.channels == ("sms", "email")
    assert (thanks.gate, thanks.channel) == ("send", "sms")
    assert (thanks.template, thanks.category) == ("feedback-thanks-points", "transactional")
    assert thanks.data == {"points_added": 500}
    rendered = await s.preview(thanks.template, "dana", thanks.data)
    assert rendered["parts"]["body"] == "Thanks Dana! 500 points added: your balance is 1700."
    care = await s.instance("backorder-care", "dana")
    assert care["status"] == "completed"
    assert "feedback-given" in str(care["goals_reached"])

    # The points were added once: nothing replays the update.
    await s.advance(timedelta(days=30))
    assert (await s.traits("dana"))["loyalty_points"] == 1700


async def test_no_sms_without_sms_consent(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await s.customer("eve", {"phone": "+33698765432"}, consent={"sms": False})
    await s.patch_traits("eve", {"tags": ["inconvenienced"]})
    await s.advance(timedelta(minutes=5))
    assert await s.effects("eve") == []
