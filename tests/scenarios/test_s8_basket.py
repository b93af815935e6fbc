"""S8 — pick up where you left off, the journey's part.

She fills a basket over lunch (Paris time) and leaves without buying. The
storefront keeps the basket on her profile (a ``basket`` trait); the
published ``examples/journeys/s8-basket-reminder.yaml`` (applied as it is)
waits two hours for an order, then for the time of day she usually comes
back (``usual_return_time``, in her own time zone; 19:00 for a newcomer), and
reminds her of the basket's items. Buying first sends nothing.

Her usual return time is given by a server-side source here: no computed
trait can learn a typical time of day from her history yet (see the
report of the scenario harness).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios.conftest import EXAMPLES
from tests.scenarios.harness import Scenario

ITEMS: list[dict[str, Any]] = [
    {"name": "Merino socks", "quantity": 2, "price": 12.5},
    {"name": "Rain shell", "quantity": 1, "price": 149},
]
BASKET: dict[str, Any] = {"total": 174, "items": ITEMS}

TEMPLATE: dict[str, Any] = {
    "id": "basket-reminder",
    "name": "Your basket is waiting",
    "channel": "email",
    "subject": "{{ profile.traits.first_name }}, your basket is waiting",
    "text": "{% for item in profile.traits.basket.items %}{{ item.quantity }} x {{ item.name }}; "
    "{% endfor %}total {{ profile.traits.basket.total }}",
    "variables": {"profile.traits.first_name": "Hello"},
}

LUNCH = datetime(2026, 5, 4, 10, 15, tzinfo=UTC)
"""Monday 12:15 in Paris (UTC+2 in May)."""


async def define(s: Scenario) -> None:
    await s.apply("template", TEMPLATE)
    await s.apply_file("journey", EXAMPLES / "s8-basket-reminder.yaml")


async def fill_basket(s: Scenario, user: str) -> None:
    await s.advance_to(LUNCH)
    await s.customer(user, {"email": f"{user}@example.com"})
    await s.identify(user, {"first_name": user.title(), "timezone": "Europe/Paris"})
    for item in ITEMS:
        await s.track(user, "Product Added", {"name": item["name"], "price": item["price"]})
    await s.identify(user, {"basket": BASKET})


async def test_the_reminder_comes_at_her_usual_evening_time_with_the_basket(
    scenario: Scenario,
) -> None:
    s = scenario
    await define(s)
    # What her history says about her (from an analytics job, server-side).
    await s.identify("ana", {"usual_return_time": "20:30"}, server=True)
    await fill_basket(s, "ana")
    await s.advance_to(datetime(2026, 5, 4, 18, 29, tzinfo=UTC))
    assert await s.effects("ana") == []
    await s.advance(timedelta(minutes=1))

    [reminder] = await s.sent("ana")
    assert reminder.created_at == datetime(2026, 5, 4, 18, 30, tzinfo=UTC)  # 20:30 in Paris
    assert reminder.channels == ("push", "email")
    assert (reminder.gate, reminder.channel) == ("send", "email")  # no push token: email
    assert (reminder.template, reminder.topic, reminder.category) == (
        "basket-reminder",
        "reminders",
        "promotional",
    )
    assert reminder.data == {"show": "basket"}
    assert (await s.traits("ana"))["basket"] == BASKET
    rendered = await s.preview(reminder.template, "ana", reminder.data)
    assert rendered["parts"]["text"] == "2 x Merino socks; 1 x Rain shell; total 174"

    # A newcomer with no known habit hears at 19:00, her time.
    await s.customer("ben", {"email": "ben@example.com", "timezone": "America/New_York"})
    await s.track("ben", "Product Added", {"name": "Rain shell", "price": 149})
    await s.identify("ben", {"basket": BASKET})
    await s.advance_to(datetime(2026, 5, 5, 0, 0, tzinfo=UTC))
    [ben] = await s.sent("ben")
    assert ben.created_at == datetime(2026, 5, 4, 23, 0, tzinfo=UTC)  # 19:00 in New York


async def test_nothing_is_sent_if_she_buys_first(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await fill_basket(s, "ana")
    await fill_basket(s, "ben")
    await s.advance(timedelta(hours=1))
    await s.track("ana", "Order Completed", {"order_id": "o-1", "revenue": 174})
    await s.advance(timedelta(hours=4))  # past the two hours, before the evening
    await s.track("ben", "Order Completed", {"order_id": "o-2", "revenue": 174})
    await s.advance(timedelta(days=2))

    assert await s.effects() == []
    for user in ("ana", "ben"):
        instance = await s.instance("basket-reminder", user)
        assert instance["status"] in ("exited", "converted"), instance


async def test_an_emptied_basket_is_not_reminded(scenario: Scenario) -> None:
    s = scenario
    await define(s)
    await fill_basket(s, "ana")
    await s.advance(timedelta(hours=3))
    await s.identify("ana", {"basket": []})
    await s.advance(timedelta(days=1))
    assert await s.effects() == []
    instance = await s.instance("basket-reminder", "ana")
    assert instance["status"] == "exited"
    assert instance["end_reason"] == "exit step: bought or emptied the basket"
