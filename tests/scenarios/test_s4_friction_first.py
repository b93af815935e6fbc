"""S4 — friction first, selling later.

The helpdesk (a server-side source, secret key) reports her tickets: a
``Ticket Opened`` / ``Ticket Closed`` event and her ``open_support_tickets``
count. While a ticket is open every promotional journey holds her messages
and no satisfaction survey goes out: the SMTP server receives none. An hour
after a lost-package ticket is closed the apology gift offer reaches her
mailbox, and the survey only after it (the published
``examples/journeys/s4-ticket-recovery.yaml``, applied as it is). Held
promotions resume once the ticket is closed, but one held longer than its
journey's ``hold.max_age`` is dropped, never delivered late.

The weekly offers are the published ``examples/journeys/s4-weekly-offers.yaml``,
applied as it is: a schedule trigger enters the ``newsletter`` segment every
Monday at 08:00 in Paris, and the offer goes at 10:00 in each customer's
own time zone. A wishlist nudge (an event-triggered promotion) holds under
the same rule.
"""

from __future__ import annotations

import email.message
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES, T0
from tests.scenarios.harness import Scenario

NEWSLETTER: dict[str, Any] = {
    "id": "newsletter",
    "name": "Newsletter readers",
    "condition": {"trait": "newsletter", "op": "equals", "value": True},
}

TEMPLATES: list[dict[str, Any]] = [
    {
        "id": "wishlist-saved",
        "name": "Wish saved",
        "channel": "email",
        "subject": "Saved to your wishlist",
        "text": "We saved {{ event.properties.product_id }} to your wishlist.",
    },
    {
        "id": "wishlist-nudge",
        "name": "Wishlist nudge",
        "channel": "email",
        "subject": "Still thinking about {{ event.properties.product_id }}?",
        "text": "It is still in stock.",
    },
    {
        "id": "apology-gift",
        "name": "Sorry about your package",
        "channel": "email",
        "subject": "Sorry about your package: a gift for you",
        "text": "We are sorry your package went missing. Your gift: {{ journey.gift }}.",
    },
    {
        "id": "satisfaction-survey",
        "name": "How did we do?",
        "channel": "email",
        "subject": "How did we do with ticket {{ event.properties.ticket_id }}?",
        "text": "Tell us how support handled your ticket.",
    },
    {
        "id": "weekly-offers",
        "name": "Weekly offers",
        "channel": "email",
        "subject": "This week's offers",
        "text": "Hello {{ profile.traits.first_name | default: 'there' }}, "
        "this week: 20% off shells.",
    },
]

WISHLIST = """
id: wishlist-nudge
name: A day after a wishlist add, a nudge; a receipt of the wish at once
priority: 20
triggers:
  - event: Wishlist Item Added
correlation_key: properties.product_id
reentry: always
hold:
  while: {trait: open_support_tickets, op: gt, value: 0}
  max_age: 2d
  messages: promotional
start: noted
steps:
  noted:
    message:
      channel: email
      template: wishlist-saved
      category: transactional
    next: day
  day:
    wait: {for: 1d}
    next: nudge
  nudge:
    message:
      channel: email
      template: wishlist-nudge
      topic: offers
      category: promotional
"""

GIFT = "Sorry about your package: a gift for you"
WEEKLY = "This week's offers"
SAVED = "Saved to your wishlist"


async def define(s: Scenario, user: str, traits: dict[str, Any] | None = None) -> None:
    for template in TEMPLATES:
        await s.apply("template", template)
    await s.apply("segment", NEWSLETTER)
    await s.apply_file("journey", EXAMPLES / "s4-ticket-recovery.yaml")
    await s.apply_file("journey", EXAMPLES / "s4-weekly-offers.yaml")
    await s.apply("journey", WISHLIST)
    # The weekly offers enter only customers who granted email consent.
    traits = {"email": f"{user}@example.com", **(traits or {})}
    await s.customer(user, traits, consent={"email": True})


def inbox(s: Scenario, user: str) -> list[str]:
    """The subjects of the mails the SMTP server received for her, in arrival order."""
    return [str(m["Subject"]) for m in s.mails(f"{user}@example.com")]


def text_of(mail: email.message.EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def produced(s: Scenario, user: str) -> list[str]:
    """The templates of every message the journeys produced for her, admitted or not."""
    return [m.template for m in await s.effects(user)]


async def open_ticket(s: Scenario, user: str, ticket: str) -> None:
    props = {"ticket_id": ticket, "topic": "lost_package"}
    await s.track(user, "Ticket Opened", props, server=True)
    count = int((await s.traits(user)).get("open_support_tickets", 0))
    await s.identify(user, {"open_support_tickets": count + 1}, server=True)


async def close_ticket(s: Scenario, user: str, ticket: str) -> None:
    count = int((await s.traits(user)).get("open_support_tickets", 0))
    await s.identify(user, {"open_support_tickets": count - 1}, server=True)
    props = {"ticket_id": ticket, "topic": "lost_package"}
    await s.track(user, "Ticket Closed", props, server=True)


async def assert_gift_then_survey(s: Scenario, user: str, closed_at: datetime) -> None:
    """The gift reaches her mailbox an hour after the close, not a minute sooner;
    the survey a day after the gift. Both carry a one-click unsubscribe."""
    before = len(inbox(s, user))
    await s.advance_to(closed_at + timedelta(minutes=59))
    assert len(inbox(s, user)) == before
    await s.advance_to(closed_at + timedelta(hours=1))
    assert inbox(s, user)[before:] == [GIFT]
    gift = s.mails(f"{user}@example.com")[before]
    assert "Your gift: free-shipping-30d." in text_of(gift)
    assert gift["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    await s.advance_to(closed_at + timedelta(days=1, hours=1))
    assert inbox(s, user)[before:] == [GIFT, "How did we do with ticket t-1?"]


async def test_weekly_offers_hold_while_the_ticket_is_open_and_a_stale_one_is_dropped(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "dan", {"first_name": "Dan", "newsletter": True, "timezone": "Europe/Paris"})
    assert T0.weekday() == 0  # a Monday, after this week's 08:00 run

    # Monday 11 May: the schedule runs at 08:00 in Paris, the offer goes at
    # 10:00 her time (08:00 UTC in May).
    first_offer = datetime(2026, 5, 11, 8, 0, tzinfo=UTC)
    await s.advance_to(first_offer - timedelta(minutes=1))
    assert inbox(s, "dan") == []
    await s.advance_to(first_offer)
    assert inbox(s, "dan") == [WEEKLY]
    assert "Hello Dan, this week" in text_of(s.mails("dan@example.com")[0])

    # Friday 15 May her package is lost; the ticket stays open until Wednesday
    # 20 May 15:00: Monday's offer is held, and nothing reaches her mailbox.
    await s.advance_to(datetime(2026, 5, 15, 12, 0, tzinfo=UTC))
    await open_ticket(s, "dan", "t-1")
    await s.advance_to(datetime(2026, 5, 20, 15, 0, tzinfo=UTC))
    assert inbox(s, "dan") == [WEEKLY]
    held = await s.instance("weekly-offers", "dan")
    assert held["status"] == "held"
    assert "survey" not in str(await produced(s, "dan"))

    # Closed: the offer held since Monday 10:00 (more than 2 days) is stale,
    # dropped, never delivered; the apology gift an hour later, then the survey.
    await close_ticket(s, "dan", "t-1")
    closed_at = s.now
    stale = await s.instance("weekly-offers", "dan")
    assert stale["id"] == held["id"]
    assert stale["status"] == "completed"
    assert any("dropped" in line and "stale" in line for line in stale["trace"])
    await assert_gift_then_survey(s, "dan", closed_at)

    # The weekly offers resume: next Monday's reaches her, on time.
    await s.advance_to(datetime(2026, 5, 25, 8, 0, tzinfo=UTC))
    assert inbox(s, "dan") == [WEEKLY, GIFT, "How did we do with ticket t-1?", WEEKLY]
    assert len(await s.instances("weekly-offers")) == 3


async def test_promotions_hold_while_the_ticket_is_open_and_stale_ones_are_dropped(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "ana")
    await s.track("ana", "Wishlist Item Added", {"product_id": "trail-runner"})
    await s.advance(timedelta(hours=1))
    await open_ticket(s, "ana", "t-1")
    await s.track("ana", "Wishlist Item Added", {"product_id": "rain-shell"})

    # Transactional receipts are not held; the promotional nudges are: her
    # mailbox gets the two receipts and nothing else while the ticket is open.
    await s.advance(timedelta(days=1))
    assert inbox(s, "ana") == [SAVED, SAVED]
    assert await produced(s, "ana") == ["wishlist-saved", "wishlist-saved"]
    first, second = sorted(await s.instances("wishlist-nudge"), key=lambda i: i["entered_at"])
    assert first["status"] == second["status"] == "held"

    # The ticket is closed three days after it opened: both nudges have been
    # held longer than max_age (2d), so both are dropped, and none is sent.
    await s.advance(timedelta(days=2, hours=1))
    assert inbox(s, "ana") == [SAVED, SAVED]
    await close_ticket(s, "ana", "t-1")
    closed_at = s.now
    await assert_gift_then_survey(s, "ana", closed_at)
    await s.advance(timedelta(days=3))
    assert inbox(s, "ana") == [SAVED, SAVED, GIFT, "How did we do with ticket t-1?"]
    assert "wishlist-nudge" not in await produced(s, "ana")
    for instance in await s.instances("wishlist-nudge"):
        assert instance["status"] == "completed"
        assert any("dropped" in line and "stale" in line for line in instance["trace"])
    response = await s.client.get("/api/journeys/wishlist-nudge/metrics", headers=s.admin)
    assert response.json()["steps"]["nudge"]["dropped"] == 2

    recovery = [m for m in await s.sent("ana") if m.journey_id == "ticket-recovery"]
    assert [(m.template, m.created_at - closed_at) for m in recovery] == [
        ("apology-gift", timedelta(hours=1)),
        ("satisfaction-survey", timedelta(days=1, hours=1)),
    ]
    gift = recovery[0]
    assert (gift.topic, gift.category, gift.data) == (
        "service-recovery",
        "promotional",
        {"gift": "free-shipping-30d"},
    )


async def test_a_promotion_held_briefly_goes_out_once_the_ticket_closes(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "ben")
    await s.track("ben", "Wishlist Item Added", {"product_id": "trail-runner"})
    await open_ticket(s, "ben", "t-1")
    await s.advance(timedelta(days=1, hours=6))
    assert inbox(s, "ben") == [SAVED]

    await close_ticket(s, "ben", "t-1")  # held 6 hours: not stale, delivered at the close
    closed_at = s.now
    assert inbox(s, "ben") == [SAVED, "Still thinking about trail-runner?"]
    nudge = s.mails("ben@example.com")[1]
    assert nudge["List-Unsubscribe"]
    await assert_gift_then_survey(s, "ben", closed_at)
    sent = await s.sent("ben")
    assert await produced(s, "ben") == [m.template for m in sent]
    assert sent[1].created_at == closed_at
    assert sent[1].topic == "offers"


async def test_no_survey_while_a_ticket_is_open(scenario: Scenario) -> None:
    s = scenario
    await define(s, "cleo")
    await open_ticket(s, "cleo", "t-1")
    await s.advance(timedelta(hours=5))
    assert inbox(s, "cleo") == []
    await close_ticket(s, "cleo", "t-1")
    await s.advance(timedelta(hours=1))
    assert inbox(s, "cleo") == [GIFT]

    # A new problem before the survey is due: the survey waits for it.
    await s.advance(timedelta(hours=12))
    await open_ticket(s, "cleo", "t-2")
    await s.advance(timedelta(hours=20))  # the survey came due 8 hours ago
    assert inbox(s, "cleo") == [GIFT]
    assert await produced(s, "cleo") == ["apology-gift"]
    held = await s.instance("ticket-recovery", "cleo")
    assert held["status"] == "held"
    assert held["correlation_key"] == "t-1"

    await s.identify("cleo", {"open_support_tickets": 0}, server=True)
    released_at = s.now
    assert inbox(s, "cleo") == [GIFT, "How did we do with ticket t-1?"]
    sent = await s.sent("cleo")
    assert [m.template for m in sent] == ["apology-gift", "satisfaction-survey"]
    assert all(m.gate == "send" and m.address == "cleo@example.com" for m in sent)
    assert sent[1].created_at == released_at
    assert (sent[1].topic, sent[1].category) == ("surveys", "promotional")
