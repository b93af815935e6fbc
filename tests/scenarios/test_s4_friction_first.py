"""S4 — friction first, selling later, the journeys' part.

The helpdesk (a server-side source, secret key) reports her tickets: a
``Ticket Opened`` / ``Ticket Closed`` event and her ``open_support_tickets``
count. While a ticket is open every promotional journey holds her messages
and no satisfaction survey goes out. An hour after a lost-package ticket is
closed she gets an apology gift offer, and the survey only after that (the
published ``examples/journeys/s4-ticket-recovery.yaml``, applied as it is).
Held promotions resume once the ticket is closed, but one held longer than
its journey's ``hold.max_age`` is dropped, never sent late.

The published weekly offers (``s4-weekly-offers.yaml``) are entered by a
schedule trigger, which the runtime does not run yet: the promotional
journey here is entered by an event and holds under the same rule.
"""

from __future__ import annotations

from datetime import timedelta

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

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


async def define(s: Scenario, user: str) -> None:
    await s.apply_file("journey", EXAMPLES / "s4-ticket-recovery.yaml")
    await s.apply("journey", WISHLIST)
    await s.customer(user, {"email": f"{user}@example.com"})


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


async def test_promotions_hold_while_the_ticket_is_open_and_stale_ones_are_dropped(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s, "ana")
    await s.track("ana", "Wishlist Item Added", {"product_id": "trail-runner"})
    await s.advance(timedelta(hours=1))
    await open_ticket(s, "ana", "t-1")
    await s.track("ana", "Wishlist Item Added", {"product_id": "rain-shell"})

    # Transactional messages are not held; the promotional nudges are.
    await s.advance(timedelta(days=1))
    sent = await s.sent("ana")
    assert [(m.template, m.category) for m in sent] == [
        ("wishlist-saved", "transactional"),
        ("wishlist-saved", "transactional"),
    ]
    assert await produced(s, "ana") == ["wishlist-saved", "wishlist-saved"]
    first, second = sorted(await s.instances("wishlist-nudge"), key=lambda i: i["entered_at"])
    assert first["status"] == second["status"] == "held"

    # The ticket is closed three days after it opened: both nudges have been
    # held longer than max_age (2d), so both are dropped, and none is sent.
    await s.advance(timedelta(days=2, hours=1))
    await close_ticket(s, "ana", "t-1")
    closed_at = s.now
    await s.advance(timedelta(days=3))
    assert "wishlist-nudge" not in await produced(s, "ana")
    for instance in await s.instances("wishlist-nudge"):
        assert instance["status"] == "completed"
        assert any("dropped" in line and "stale" in line for line in instance["trace"])
    response = await s.client.get("/api/journeys/wishlist-nudge/metrics", headers=s.admin)
    assert response.json()["steps"]["nudge"]["dropped"] == 2

    # The apology gift an hour after the close, the survey a day after it.
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
    await open_ticket(s, "ben", "t-2")
    await s.advance(timedelta(days=1, hours=6))
    assert await produced(s, "ben") == ["wishlist-saved"]

    await close_ticket(s, "ben", "t-2")  # held 6 hours: not stale
    closed_at = s.now
    await s.advance(timedelta(days=2))
    sent = await s.sent("ben")
    assert await produced(s, "ben") == [m.template for m in sent]
    assert [m.template for m in sent] == [
        "wishlist-saved",
        "wishlist-nudge",
        "apology-gift",
        "satisfaction-survey",
    ]
    assert sent[1].created_at == closed_at
    assert sent[1].topic == "offers"


async def test_no_survey_while_a_ticket_is_open(scenario: Scenario) -> None:
    s = scenario
    await define(s, "cleo")
    await open_ticket(s, "cleo", "t-3")
    await s.advance(timedelta(hours=5))
    await close_ticket(s, "cleo", "t-3")
    await s.advance(timedelta(hours=1))
    assert await produced(s, "cleo") == ["apology-gift"]

    # A new problem before the survey is due: the survey waits for it.
    await s.advance(timedelta(hours=12))
    await open_ticket(s, "cleo", "t-4")
    await s.advance(timedelta(hours=20))  # the survey came due 8 hours ago
    assert await produced(s, "cleo") == ["apology-gift"]
    held = await s.instance("ticket-recovery", "cleo")
    assert held["status"] == "held"
    assert held["correlation_key"] == "t-3"

    await s.identify("cleo", {"open_support_tickets": 0}, server=True)
    released_at = s.now
    sent = await s.sent("cleo")
    assert [m.template for m in sent] == ["apology-gift", "satisfaction-survey"]
    assert all(m.gate == "send" and m.address == "cleo@example.com" for m in sent)
    assert sent[1].created_at == released_at
    assert (sent[1].topic, sent[1].category) == ("surveys", "promotional")
