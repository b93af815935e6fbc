"""S8 — pick up where you left off.

For a week she visits the shop in the evening (page calls from her browser,
Paris time). Then she fills a basket over lunch and leaves without buying.
Two computed traits keep what the reminder needs on her profile:

* ``basket``: the products of her last ``Cart Viewed`` (``last`` of
  ``properties.products``), which the storefront sends when she looks at her
  cart;
* ``usual_return_time``: a ``usual_time`` trait over her visits (page calls),
  ``"20:00"`` for her.

The published ``examples/journeys/s8-basket-reminder.yaml`` (applied as it
is) waits two hours for an order, then until her usual return time in her own
zone (19:00 for a newcomer), and the reminder mail lists the basket's items.
Buying first sends nothing; an emptied basket is not reminded.
"""

from __future__ import annotations

import email.message
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES, T0
from tests.scenarios.harness import Scenario

PARIS = "Europe/Paris"

COMPUTED: list[dict[str, Any]] = [
    {
        "id": "basket",
        "description": "What was in her cart the last time she looked at it",
        "compute": {"event": "Cart Viewed", "aggregate": "last", "of": "properties.products"},
    },
    {
        "id": "usual_return_time",
        "description": "The hour of the day she usually visits the shop",
        "kind": "usual_time",
        "compute": {"window": "30d", "bucket": "1h", "events": [], "pages": True},
    },
]

ITEMS: list[dict[str, Any]] = [
    {"product_id": "socks-m", "name": "Merino socks", "quantity": 2, "price": 12.5},
    {"product_id": "shell-r", "name": "Rain shell", "quantity": 1, "price": 149},
]

TEMPLATE: dict[str, Any] = {
    "id": "basket-reminder",
    "name": "Your basket is waiting",
    "channel": "email",
    "subject": "{{ profile.traits.first_name }}, your basket is waiting",
    "text": "Still yours:\n{% for item in profile.traits.basket %}"
    "- {{ item.quantity }} x {{ item.name }} ({{ item.price }} EUR)\n{% endfor %}",
    "html": "<html><body><ul>{% for item in profile.traits.basket %}"
    "<li>{{ item.quantity }} x {{ item.name }}</li>{% endfor %}</ul>"
    '<a href="https://shop.example/cart">Back to your basket</a></body></html>',
    "variables": {"profile.traits.first_name": "Hello"},
}

LUNCH = datetime(2026, 5, 12, 10, 15, tzinfo=UTC)
"""Tuesday 12 May, 12:15 in Paris (UTC+2 in May)."""


async def define(s: Scenario) -> None:
    for trait in COMPUTED:
        await s.apply("computed_trait", trait)
    await s.apply("template", TEMPLATE)
    await s.apply_file("journey", EXAMPLES / "s8-basket-reminder.yaml")


async def visit(s: Scenario, user: str, page: str, zone: str = PARIS) -> None:
    """A page call from her browser (the SDK reports her time zone)."""
    await s.send({"type": "page", "userId": user, "name": page, "context": {"timezone": zone}})


async def evenings(s: Scenario, user: str) -> None:
    """Five evenings of visits at 20:05 and 20:25 in Paris, browsing without adding anything."""
    for day in range(5):
        await s.advance_to(T0 + timedelta(days=day, hours=9, minutes=5))  # 20:05 Paris
        await visit(s, user, "Home")
        await s.advance(timedelta(minutes=20))
        await visit(s, user, "Rain gear")
        await s.track(user, "Product Viewed", {"product_id": "shell-r"})


async def fill_basket(s: Scenario, user: str, zone: str = PARIS) -> None:
    """Over lunch: she browses, adds two products, looks at her cart and leaves."""
    await visit(s, user, "Socks", zone)
    for item in ITEMS:
        await s.track(user, "Product Added", item)
    await s.advance(timedelta(minutes=4))
    await visit(s, user, "Cart", zone)
    await s.track(user, "Cart Viewed", {"cart_id": f"cart-{user}", "products": ITEMS})


def text_of(mail: email.message.EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None, mail
    return str(part.get_content()).replace("\r\n", "\n")


async def test_the_reminder_comes_at_her_usual_evening_time_with_the_basket(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s)
    await s.customer("ana", {"email": "ana@example.com", "first_name": "Ana", "timezone": PARIS})
    await evenings(s, "ana")
    assert (await s.traits("ana"))["usual_return_time"] == "20:00"

    await s.advance_to(LUNCH)
    await fill_basket(s, "ana")
    traits = await s.traits("ana")
    assert traits["basket"] == ITEMS
    assert traits["usual_return_time"] == "20:00", "lunch once does not outweigh a week"
    await s.advance_to(datetime(2026, 5, 12, 17, 59, tzinfo=UTC))
    assert s.mails("ana@example.com") == []
    assert await s.effects("ana") == []

    await s.advance(timedelta(minutes=1))  # 20:00 in Paris
    [mail] = s.mails("ana@example.com")
    assert mail["Subject"] == "Ana, your basket is waiting"
    assert mail["To"] == "ana@example.com"
    assert text_of(mail) == (
        "Still yours:\n- 2 x Merino socks (12.5 EUR)\n- 1 x Rain shell (149 EUR)\n"
    )
    html = mail.get_body(("html",))
    assert html is not None
    assert "<li>2 x Merino socks</li><li>1 x Rain shell</li>" in html.get_content()
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [reminder] = await s.sent("ana")
    assert reminder.created_at == datetime(2026, 5, 12, 18, 0, tzinfo=UTC)
    assert reminder.channels == ("push", "email")
    assert (reminder.gate, reminder.channel) == ("send", "email")  # no push token: email
    assert (reminder.template, reminder.topic, reminder.category) == (
        "basket-reminder",
        "reminders",
        "promotional",
    )
    await s.advance(timedelta(days=2))
    assert len(s.mails("ana@example.com")) == 1


async def test_a_newcomer_without_visits_hears_at_seven_in_her_evening(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s)
    # Her basket comes from the shop's app, which sends track events only: no visit
    # to learn a habit from.
    await s.customer("ben", {"email": "ben@example.com", "timezone": "America/New_York"})
    await s.advance_to(LUNCH + timedelta(hours=6))  # 12:15 in New York
    for item in ITEMS:
        await s.track("ben", "Product Added", item)
    await s.track("ben", "Cart Viewed", {"cart_id": "cart-ben", "products": ITEMS[1:]})
    assert "usual_return_time" not in await s.traits("ben")
    await s.advance_to(datetime(2026, 5, 12, 22, 59, tzinfo=UTC))
    assert s.mails("ben@example.com") == []
    await s.advance(timedelta(minutes=1))  # 19:00 in New York
    [mail] = s.mails("ben@example.com")
    assert text_of(mail) == "Still yours:\n- 1 x Rain shell (149 EUR)\n"
    assert mail["Subject"] == "Hello, your basket is waiting"


async def test_nothing_is_sent_if_she_buys_first(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    for user in ("ana", "ben"):
        await s.customer(user, {"email": f"{user}@example.com", "timezone": PARIS})
    await evenings(s, "ana")
    await s.advance_to(LUNCH)
    await fill_basket(s, "ana")
    await fill_basket(s, "ben")
    await s.advance(timedelta(hours=1))
    await s.track("ana", "Order Completed", {"order_id": "o-1", "revenue": 174})
    await s.advance(timedelta(hours=4))  # past the two hours, before the evening
    await s.track("ben", "Order Completed", {"order_id": "o-2", "revenue": 174})
    await s.advance(timedelta(days=2))

    assert s.mails() == []
    assert await s.effects() == []
    for user in ("ana", "ben"):
        instance = await s.instance("basket-reminder", user)
        assert instance["status"] in ("exited", "converted"), instance


async def test_an_emptied_basket_is_not_reminded(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await s.customer("ana", {"email": "ana@example.com", "timezone": PARIS})
    await s.advance_to(LUNCH)
    await fill_basket(s, "ana")
    await s.advance(timedelta(hours=3))
    await s.track("ana", "Cart Viewed", {"cart_id": "cart-ana", "products": []})
    assert (await s.traits("ana"))["basket"] == []
    await s.advance(timedelta(days=1))
    assert s.mails() == []
    assert await s.effects() == []
    instance = await s.instance("basket-reminder", "ana")
    assert instance["status"] == "exited"
    assert instance["end_reason"] == "exit step: bought or emptied the basket"
