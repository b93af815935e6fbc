"""What the demo shop tells Rapport before any traffic: policy, promo codes,
segments, computed traits, templates and journeys.

Everything goes in through the admin API, the way a console or a
``rapport journeys apply`` would. The journeys are the published examples
(``examples/journeys/``): S1's two are applied as they are (read from the
checkout when it has them); S2, S5 and S8 wait hours or days, so the demo
defines fast variants of them with the same shape and seconds-long waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "journeys"
"""The published example journeys, in a checkout (absent from an installed package)."""

POLICY: dict[str, Any] = {
    "topics": [
        {"id": "offers", "name": "Offers and discounts"},
        {"id": "onboarding", "name": "Getting started"},
        {"id": "reminders", "name": "Basket reminders"},
    ],
    # Tight on purpose, so the demo shows the cap at work within a minute:
    # the third promotion one customer would get in an hour is dropped.
    "caps": [{"id": "two-promotions-an-hour", "category": "promotional", "max": 2, "window": "1h"}],
}

CODE_POOLS: dict[str, list[str]] = {
    "backorder-apology": [f"SORRY-{n:04d}" for n in range(1, 51)],
}

SEGMENTS: list[dict[str, Any]] = [
    {
        "id": "hesitating-over-outerwear",
        "name": "Viewed one coat or jacket three times within an hour",
        "condition": {
            "event": "Product Viewed",
            "where": [{"field": "properties.category", "op": "in", "value": ["coats", "jackets"]}],
            "key": "properties.product_id",
            "window": "1h",
            "op": "gte",
            "value": 3,
        },
    },
    {
        "id": "inconvenienced",
        "name": "Tagged as inconvenienced by support",
        "condition": {"trait": "tags", "op": "contains", "value": "inconvenienced"},
    },
    {
        "id": "marketable-buyers",
        "name": "Bought something and agreed to marketing",
        "condition": {
            "all": [
                {"event": "Order Completed", "aggregate": "count", "op": "gte", "value": 1},
                {"consent": "marketing", "granted": True},
            ]
        },
    },
]

COMPUTED_TRAITS: list[dict[str, Any]] = [
    {
        "id": "favorite_category",
        "description": "The category of the last product she clicked in an email",
        "compute": {
            "event": "Email Link Clicked",
            "aggregate": "last",
            "of": "properties.category",
        },
    },
    {
        "id": "lifetime_revenue",
        "description": "Sum of her orders' revenue",
        "compute": {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"},
    },
]

_PICKS = (
    "{% case profile.traits.favorite_category %}"
    "{% when 'running-shoes', 'trail-shoes' %}Athletic gear picked for you"
    "{% when 'dress-shoes' %}Dress shoes picked for you"
    "{% else %}Our bestsellers, picked for you{% endcase %}"
)


def _welcome(ident: str, subject: str, intro: str) -> dict[str, Any]:
    return {
        "id": ident,
        "name": ident,
        "channel": "email",
        "subject": subject,
        "text": f"Hi {{{{ profile.traits.first_name }}}}, {intro} {_PICKS}.",
        "variables": {"profile.traits.favorite_category": "none", "profile.traits.first_name": ""},
    }


TEMPLATES: list[dict[str, Any]] = [
    _welcome("welcome-1", "Welcome to the shop!", "glad you're here."),
    _welcome("welcome-2-picks", "Picked for you", "we looked at what you like."),
    _welcome("welcome-3-picks", "More for you", "one more idea."),
    {
        "id": "coats-jackets-discount",
        "name": "Coats and jackets discount",
        "channel": "email",
        "subject": "{{ journey.discount_percent }}% off coats and jackets",
        "text": "Still thinking about it, {{ profile.traits.first_name }}? "
        "{{ journey.discount_percent }}% off coats and jackets for "
        "{{ journey.valid_for_hours }} hours.",
        "variables": {"profile.traits.first_name": "friend"},
    },
    {
        "id": "apology-promo-code",
        "name": "Sorry for the wait, with a code",
        "channel": "sms",
        "body": "Sorry for the wait, {{ profile.traits.first_name }}: 15% off your next order "
        "with {{ codes.backorder-apology }}",
        "variables": {"profile.traits.first_name": "there"},
    },
    {
        "id": "feedback-thanks-points",
        "name": "Thank you, with the points",
        "channel": "sms",
        "body": "Thanks {{ profile.traits.first_name }}! {{ journey.points_added }} points added: "
        "your balance is {{ profile.traits.loyalty_points }}.",
        "variables": {"profile.traits.first_name": "there"},
    },
    {
        "id": "feedback-thanks-points-email",
        "name": "Thank you, with the points (email)",
        "channel": "email",
        "subject": "{{ journey.points_added }} points for your feedback",
        "text": "Thanks {{ profile.traits.first_name }}! Your balance is "
        "{{ profile.traits.loyalty_points }} points.",
        "variables": {"profile.traits.first_name": "there"},
    },
    {
        "id": "basket-reminder",
        "name": "Your basket is waiting (email)",
        "channel": "email",
        "subject": "{{ profile.traits.first_name }}, your basket is waiting",
        "text": "{% for item in profile.traits.basket.items %}{{ item.quantity }} x "
        "{{ item.name }}; {% endfor %}total {{ profile.traits.basket.total }}",
        "variables": {"profile.traits.first_name": "Hello"},
    },
    {
        "id": "basket-reminder-push",
        "name": "Your basket is waiting (push)",
        "channel": "push",
        "title": "Your basket is waiting",
        "body": "{% for item in profile.traits.basket.items %}{{ item.name }}"
        "{% unless forloop.last %}, {% endunless %}{% endfor %} - "
        "total {{ profile.traits.basket.total }}",
    },
]

# Fast variant of examples/journeys/s2-leather-jacket.yaml: entered through the
# segment (the example's event-aggregate trigger condition is not evaluated by
# the runtime yet), a 3-second settle instead of 20.
LEATHER_JACKET = """
id: leather-jacket-nudge
name: Hesitating over a coat or jacket (demo)
priority: 60
triggers:
  - segment_entered: hesitating-over-outerwear
reentry: {after: 7d}
exit_when:
  - event: Order Completed
hold:
  while: {trait: open_support_tickets, op: gt, value: 0}
  max_age: 1d
  messages: promotional
start: settle
steps:
  settle:
    wait: {for: 3s}
    next: offer
  offer:
    message:
      channel: email
      template: coats-jackets-discount
      topic: offers
      category: promotional
      data: {discount_percent: 15, valid_for_hours: 48}
"""

# Fast variant of examples/journeys/s5-welcome-series.yaml: 10 seconds stand for
# the days between messages, and no wait for the next morning.
WELCOME = """
id: welcome-series
name: Welcome series (demo)
priority: 40
triggers:
  - event: Signed Up
    condition: {event: Order Completed, op: equals, value: 0}
reentry: never
goals:
  - name: first-purchase
    event: Order Completed
    within: 14d
    exit: true
start: welcome
steps:
  welcome:
    message: {channel: email, template: welcome-1, topic: onboarding, category: promotional}
    next: pause-1
  pause-1:
    wait: {for: 10s}
    next: second
  second:
    message:
      channel: email
      template: welcome-2-picks
      topic: onboarding
      category: promotional
      data: {featured: clicked-category}
    next: pause-2
  pause-2:
    wait: {for: 10s}
    next: third
  third:
    message:
      channel: email
      template: welcome-3-picks
      topic: onboarding
      category: promotional
      data: {featured: clicked-category}
"""

# Fast variant of examples/journeys/s8-basket-reminder.yaml: 6 seconds without
# an order instead of two hours, and no wait for her usual time of day.
BASKET = """
id: basket-reminder
name: Basket left behind (demo)
priority: 50
triggers:
  - event: Product Added
reentry: {after: 1d}
exit_when:
  - event: Order Completed
start: left
steps:
  left:
    wait: {event: Order Completed, timeout: 6s, on_timeout: still-there}
    next: bought
  still-there:
    branch:
      - when:
          all:
            - {trait: basket, op: exists}
            - {not: {trait: basket, op: equals, value: []}}
        next: remind
    otherwise: bought
  remind:
    message:
      channel: [push, email]
      template: basket-reminder
      topic: reminders
      category: promotional
      data: {show: basket}
  bought:
    exit: bought or emptied the basket
"""


@dataclass(frozen=True)
class JourneySource:
    id: str
    origin: str
    """Where it comes from, for the account (``examples/journeys/s1-...yaml``)."""
    text: str | None
    """The YAML; None when the example file is not there to read."""


def journeys() -> list[JourneySource]:
    """The journeys to apply, in order: S1's examples as published, then the fast variants."""
    found = []
    for ident, name in (
        ("inconvenience-sms", "s1-inconvenience-sms.yaml"),
        ("backorder-care", "s1-backorder-care.yaml"),
    ):
        path = EXAMPLES / name
        text = path.read_text(encoding="utf-8") if path.is_file() else None
        found.append(JourneySource(ident, f"examples/journeys/{name}", text))
    found += [
        JourneySource("leather-jacket-nudge", "fast s2-leather-jacket", LEATHER_JACKET),
        JourneySource("welcome-series", "fast s5-welcome-series", WELCOME),
        JourneySource("basket-reminder", "fast s8-basket-reminder", BASKET),
    ]
    return found
