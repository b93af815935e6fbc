"""S2 — the leather jacket, end to end.

She views the same jacket three times within an hour: within seconds of the
third view (not the second) one promotional email with a coats-and-jackets
discount reaches a real SMTP server. Buying before it goes out sends
nothing. However often she looks again, she does not get the offer a second
time within 7 days.

The journey is the published example (``examples/journeys/s2-leather-jacket.yaml``)
as written: the third view is the event trigger's ``condition``, an event
aggregate keyed by product that the runtime maintains per event. The 7-day
cap is the journey's re-entry cooldown (``reentry: {after: 7d}``).
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

TEMPLATE: dict[str, Any] = {
    "id": "coats-jackets-discount",
    "name": "Coats and jackets discount",
    "channel": "email",
    "subject": "{{ journey.discount_percent }}% off coats and jackets",
    "text": "Still thinking about it? {{ journey.discount_percent }}% off coats and jackets "
    "for {{ journey.valid_for_hours }} hours.",
}

EXAMPLE = EXAMPLES / "s2-leather-jacket.yaml"


async def define(s: Scenario, *customers: str) -> None:
    await s.apply("template", TEMPLATE)
    await s.apply_file("journey", EXAMPLE)
    for user in customers:
        await s.customer(user, {"email": f"{user}@example.com"})


async def view(s: Scenario, user: str, product: str = "leather-jacket") -> None:
    await s.track(user, "Product Viewed", {"product_id": product, "category": "jackets"})


async def test_the_third_view_within_an_hour_sends_one_offer_within_seconds(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "ana", "ben")
    await view(s, "ana")
    await s.advance(timedelta(minutes=20))
    await view(s, "ana")
    await view(s, "ana", product="wool-coat")  # another coat: its own count
    await s.advance(timedelta(minutes=30))
    assert await s.effects() == [], "two views of the jacket are not enough"

    await view(s, "ana")  # the third, 50 minutes after the first
    third_at = s.now
    await s.advance(timedelta(seconds=19))
    assert await s.effects() == []
    await s.advance(timedelta(seconds=1))
    [offer] = await s.sent()
    assert offer.created_at - third_at == timedelta(seconds=20)
    assert offer.profile_id == await s.profile_id("ana")
    assert (offer.journey_id, offer.step_id) == ("leather-jacket-nudge", "offer")
    assert offer.channels == ("email",)
    assert (offer.gate, offer.channel, offer.address) == ("send", "email", "ana@example.com")
    assert (offer.template, offer.topic, offer.category) == (
        "coats-jackets-discount",
        "offers",
        "promotional",
    )
    assert offer.data == {"discount_percent": 15, "valid_for_hours": 48}
    instance = await s.instance("leather-jacket-nudge", "ana")
    assert offer.idempotency_key == f"journey:{instance['id']}:offer:1"
    assert instance["status"] == "completed"
    rendered = await s.preview(offer.template, "ana", offer.data)
    assert rendered["parts"]["subject"] == "15% off coats and jackets"

    # The mail itself reached a real SMTP server, personalised, with a working
    # one-click unsubscribe for its topic.
    [mail] = s.mails("ana@example.com")
    assert mail["Subject"] == "15% off coats and jackets"
    assert mail["To"] == "ana@example.com"
    assert parsedate_to_datetime(mail["Date"]) == offer.created_at  # handed over at once
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = mail.get_body(("plain",))
    assert body is not None and "15% off coats and jackets for 48 hours" in body.get_content()
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    r = await s.follow(
        unsubscribe,
        "POST",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    consent = (await s.profile("ana"))["consent"]
    assert consent["topic:offers"]["granted"] is False

    # Views spread over more than an hour never add up to three.
    await view(s, "ben")
    await s.advance(timedelta(minutes=40))
    await view(s, "ben")
    await s.advance(timedelta(minutes=40))
    await view(s, "ben")
    await s.advance(timedelta(hours=1))
    assert await s.effects("ben") == []


async def test_buying_before_the_email_goes_out_sends_nothing(scenario: Scenario) -> None:
    s = scenario
    await define(s, "ana", "cleo")
    for _ in range(3):
        await view(s, "ana")
        await s.advance(timedelta(minutes=2))
    await view(s, "cleo")
    await view(s, "cleo")
    await view(s, "cleo")
    await s.advance(timedelta(seconds=10))
    await s.track("cleo", "Order Completed", {"order_id": "o-1", "category": "jackets"})
    await s.advance(timedelta(hours=2))

    assert await s.effects("cleo") == []
    assert s.mails("cleo@example.com") == []
    assert len(s.mails("ana@example.com")) == 1
    cleo = await s.instance("leather-jacket-nudge", "cleo")
    assert cleo["status"] == "converted"  # buying the jacket is the journey's goal
    assert [m.template for m in await s.sent("ana")] == ["coats-jackets-discount"]


async def test_no_second_offer_within_seven_days_however_often_she_looks(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "ana")
    for _ in range(3):
        await view(s, "ana")
    await s.advance(timedelta(minutes=1))
    assert len(await s.sent("ana")) == 1

    # Day 2 and day 6: three views within an hour again, each time.
    for day in (1, 5):
        await s.advance(timedelta(days=day) - timedelta(minutes=1))
        for _ in range(4):
            await view(s, "ana")
        await s.advance(timedelta(minutes=1))
        assert len(await s.effects("ana")) == 1, f"a second offer {day} days later"
        assert len(s.mails("ana@example.com")) == 1

    # A week after the first offer, she may be offered again.
    await s.advance_to(s.now + timedelta(days=2))
    for _ in range(3):
        await view(s, "ana")
    await s.advance(timedelta(minutes=1))
    offers = await s.sent("ana")
    assert len(offers) == 2
    assert len(await s.effects("ana")) == 2
    assert offers[1].created_at - offers[0].created_at >= timedelta(days=7)
    assert offers[0].idempotency_key != offers[1].idempotency_key
    assert len(s.mails("ana@example.com")) == 2
