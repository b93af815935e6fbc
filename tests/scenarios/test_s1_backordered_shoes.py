"""S1 — Dana's backordered shoes.

Dana buys running shoes. The warehouse reports her order backordered: a
business event (``POST /v1/business-events``) about her order, which
``examples/journeys/s1-backorder-care.yaml`` (applied as it is) fans out to
whoever placed that order, and to no one else. She opens a support chat; the
agent tags her as inconvenienced through the admin API, and within seconds
the SMS API receives a text to her phone with her personal promo code from
the ``backorder-apology`` code pool
(``examples/journeys/s1-inconvenience-sms.yaml``): another customer gets
another code, and she never gets a second one. While the chat is open the SMTP
server receives no promotional email and no survey for her. When the shoes
arrive and she submits feedback, her loyalty balance grows by 500 points and
a thank-you text mentioning the points reaches her phone.
"""

from __future__ import annotations

import email.message
from datetime import timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

POOL = "backorder-apology"
CODES = ["SORRY-7Q2M", "SORRY-K3PD", "SORRY-Z81A", "SORRY-4HTW"]

INCONVENIENCED: dict[str, Any] = {
    "id": "inconvenienced",
    "name": "Tagged as inconvenienced by support",
    "condition": {"trait": "tags", "op": "contains", "value": "inconvenienced"},
}

APOLOGY: dict[str, Any] = {
    "id": "apology-promo-code",
    "name": "Sorry for the wait, with a personal code",
    "channel": "sms",
    "body": "Sorry for the wait, {{ profile.traits.first_name }}: "
    "code {{ codes.backorder-apology }} takes 15% off your next order.",
    "variables": {"profile.traits.first_name": "there"},
}

THANKS: dict[str, Any] = {
    "id": "feedback-thanks-points",
    "name": "Thank you, with the points",
    "channel": "sms",
    "body": "Thanks {{ profile.traits.first_name }}! {{ journey.points_added }} points added: "
    "your balance is {{ profile.traits.loyalty_points }}.",
}

THANKS_EMAIL: dict[str, Any] = {
    "id": "feedback-thanks-points-email",
    "name": "Thank you, with the points (by email)",
    "channel": "email",
    "subject": "{{ journey.points_added }} points for your feedback",
    "text": "Thanks {{ profile.traits.first_name }}! {{ journey.points_added }} points added: "
    "your balance is {{ profile.traits.loyalty_points }}.",
}

ACCESSORIES: dict[str, Any] = {
    "id": "running-accessories",
    "name": "Accessories for your new shoes",
    "channel": "email",
    "subject": "Socks and insoles for your {{ event.properties.product_name }}",
    "text": "Hi {{ profile.traits.first_name }}, runners who bought the "
    "{{ event.properties.product_name }} also love our merino socks.",
}

SURVEY: dict[str, Any] = {
    "id": "purchase-survey",
    "name": "How was your purchase?",
    "channel": "email",
    "subject": "How was your purchase, {{ profile.traits.first_name }}?",
    "text": "Tell us in two minutes how your order went.",
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

DANA = "+33612345678"
SAM = "+33611112222"


async def define(s: Scenario) -> None:
    await s.code_pool(POOL, CODES)
    await s.apply("segment", INCONVENIENCED)
    for template in (APOLOGY, THANKS, THANKS_EMAIL, ACCESSORIES, SURVEY):
        await s.apply("template", template)
    await s.apply_file("journey", EXAMPLES / "s1-inconvenience-sms.yaml")
    await s.apply_file("journey", EXAMPLES / "s1-backorder-care.yaml")
    await s.apply("journey", AFTER_PURCHASE)


async def chat(s: Scenario, user: str, open_: bool) -> None:
    name = "Support Chat Started" if open_ else "Support Chat Ended"
    await s.track(user, name, {"chat_id": f"c-{user}"}, server=True)
    await s.identify(user, {"support_chat_open": open_}, server=True)


def subjects(mails: list[email.message.EmailMessage]) -> list[str]:
    return [str(m["Subject"]) for m in mails]


def text_of(mail: email.message.EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def sent_code(body: str) -> str:
    """The promo code an apology text carries."""
    [code] = [word for word in body.split() if word in CODES]
    return code


async def pool_stats(s: Scenario) -> dict[str, Any]:
    response = await s.client.get(f"/api/code-pools/{POOL}/stats", headers=s.admin)
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


async def test_dana_backordered_shoes(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await s.customer(
        "dana",
        {
            "first_name": "Dana",
            "email": "dana@example.com",
            "phone": DANA,
            "loyalty_points": 1200,
        },
        consent={"sms": True, "email": True},
    )
    await s.customer(
        "sam",
        {"first_name": "Sam", "email": "sam@example.com", "phone": SAM, "loyalty_points": 300},
        consent={"sms": True, "email": True},
    )
    order = {"order_id": "o-1", "product_name": "Trail Runner 2", "revenue": 129}
    await s.track("dana", "Order Completed", order)
    await s.advance(timedelta(minutes=30))
    await s.track("sam", "Order Completed", {"order_id": "o-2", "product_name": "Cap"})
    await s.business_event("Item Backordered", {"order_id": "o-1", "sku": "TR2-39"})
    care = await s.instance("backorder-care", "dana")
    assert (care["status"], care["correlation_key"]) == ("waiting", "o-1")
    assert [i["profile_id"] for i in await s.instances("backorder-care")] == [care["profile_id"]]

    # The chat opens; the agent tags her: the SMS API has her text within seconds,
    # with a code from the pool.
    await s.advance(timedelta(minutes=30))
    await chat(s, "dana", open_=True)
    await s.advance(timedelta(minutes=2))
    assert s.texts() == []
    await s.patch_traits("dana", {"tags": ["inconvenienced"]})
    tagged_at = s.now
    [text] = s.texts(to=DANA)
    assert text["From"] == "+15550001111"
    assert text["Body"].startswith("Sorry for the wait, Dana: code SORRY-")
    dana_code = sent_code(text["Body"])
    assert dana_code == CODES[0]  # handed out in upload order
    assert (await pool_stats(s))["claimed"] == 1
    [sms] = await s.effects("dana")
    assert sms.created_at == tagged_at
    assert (sms.journey_id, sms.template, sms.category) == (
        "inconvenience-sms",
        "apology-promo-code",
        "transactional",
    )
    assert (sms.gate, sms.channel, sms.address, sms.status) == ("send", "sms", DANA, "sent")
    [why] = [m for m in await s.messages("dana") if m["template"]["id"] == "apology-promo-code"]
    assert (why["status"], why["address"]) == ("sent", DANA)
    assert why["delivery"]["sent_at"] == tagged_at.isoformat()

    # The accessories email comes due while the chat is open: the SMTP server
    # receives nothing for her until the chat ends, then the held email.
    await s.advance(timedelta(hours=1))
    assert s.mails("dana@example.com") == []
    assert (await s.instance("after-purchase", "dana"))["status"] == "held"
    await chat(s, "dana", open_=False)
    [accessories] = s.mails("dana@example.com")
    assert accessories["Subject"] == "Socks and insoles for your Trail Runner 2"
    assert "Hi Dana" in text_of(accessories)
    assert accessories["List-Unsubscribe"]

    # The survey comes due a day later, during a second chat: it waits for its end.
    await s.advance(timedelta(hours=23))
    await chat(s, "dana", open_=True)
    await s.advance(timedelta(hours=2))
    assert len(s.mails("dana@example.com")) == 1
    await chat(s, "dana", open_=False)
    assert subjects(s.mails("dana@example.com")) == [
        "Socks and insoles for your Trail Runner 2",
        "How was your purchase, Dana?",
    ]

    # Sam is tagged too (another complaint): his own code, never hers.
    await s.patch_traits("sam", {"tags": ["inconvenienced"]})
    [sam_text] = s.texts(to=SAM)
    sam_code = sent_code(sam_text["Body"])
    assert sam_code != dana_code
    assert sam_text["Body"].startswith("Sorry for the wait, Sam: code ")

    # The shoes arrive; she scans the insert and gives feedback. Sam's order,
    # never backordered, earns him nothing.
    await s.advance(timedelta(days=4))
    await s.track("dana", "Order Delivered", {"order_id": "o-1"}, server=True)
    await s.track("sam", "Order Delivered", {"order_id": "o-2"}, server=True)
    await s.advance(timedelta(hours=3))
    await s.track("sam", "Feedback Submitted", {"order_id": "o-2", "rating": 4})
    await s.track("dana", "Feedback Submitted", {"order_id": "o-1", "rating": 5})
    traits = await s.traits("dana")
    assert traits["loyalty_points"] == 1700
    assert sorted(traits["tags"]) == ["gave-feedback", "inconvenienced"]
    assert (await s.traits("sam"))["loyalty_points"] == 300
    # The thank-you text mentions the points, and the balance with them.
    assert [t["Body"] for t in s.texts(to=DANA)][1:] == [
        "Thanks Dana! 500 points added: your balance is 1700."
    ]
    assert len(s.texts(to=SAM)) == 1
    thanks = (await s.sent("dana"))[-1]
    assert (thanks.journey_id, thanks.step_id, thanks.channel) == (
        "backorder-care",
        "thanks",
        "sms",
    )
    assert len(s.mails("dana@example.com")) == 2  # the thanks went by SMS only
    care = await s.instance("backorder-care", "dana")
    assert care["status"] == "completed"
    assert "feedback-given" in str(care["goals_reached"])

    # A month on, the agent tags her again after a second problem: the journey
    # lets her in again, and the text shows her the same code, never a second.
    await s.advance(timedelta(days=30))
    assert (await s.traits("dana"))["loyalty_points"] == 1700  # added once
    await s.patch_traits("dana", {"tags": ["gave-feedback"]})
    await s.patch_traits("dana", {"tags": ["gave-feedback", "inconvenienced"]})
    again = s.texts(to=DANA)
    assert len(again) == 3
    assert sent_code(again[2]["Body"]) == dana_code
    assert (await pool_stats(s))["claimed"] == 2


POINTS_THANKS = """
id: points-thanks
name: Points for feedback, and a thank-you that shows the balance
triggers:
  - event: Feedback Submitted
reentry: always
start: points
steps:
  points:
    update:
      increment: {loyalty_points: 500}
    next: thanks
  thanks:
    message:
      channel: sms
      template: feedback-thanks-points
      category: transactional
      data: {points_added: 500}
"""


async def test_a_thank_you_after_the_update_shows_the_new_balance(scenario: Scenario) -> None:
    s = scenario
    await s.apply("template", THANKS)
    await s.apply("journey", POINTS_THANKS)
    await s.customer(
        "dana",
        {"first_name": "Dana", "phone": DANA, "loyalty_points": 1200},
        consent={"sms": True},
    )
    await s.track("dana", "Feedback Submitted", {"order_id": "o-1"})
    assert (await s.traits("dana"))["loyalty_points"] == 1700
    [text] = s.texts(to=DANA)
    assert text["Body"] == "Thanks Dana! 500 points added: your balance is 1700."


async def test_no_sms_without_sms_consent(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await s.customer("eve", {"phone": "+33698765432"}, consent={"sms": False})
    await s.patch_traits("eve", {"tags": ["inconvenienced"]})
    await s.advance(timedelta(minutes=5))
    assert await s.effects("eve") == []
    assert s.texts() == []
    assert (await pool_stats(s))["claimed"] == 0
