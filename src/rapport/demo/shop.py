"""The simulated shop: three personas acting out the customer stories in real time.

One ``round`` of the story lasts about half a minute, something happening
every second or two: Mei signs up and gets the welcome series (S5), Dana
hesitates over the leather jacket (S2) while her shoes are backordered and
support makes it up to her (S1), Sam looks at the same jacket with a support
ticket open, so his offer is held until the ticket closes (S4), then leaves
a basket behind (S8). The storefront's calls (views, basket adds) go in with
the write key, the shop's backend (sign-ups, orders, tickets) with the secret
key, all through ``/v1/batch``; the warehouse sends a business event and the
support agent patches traits through the admin API.

Each round after the first uses new customers (``u-dana-2``...), so every
round plays the whole story again, and the run's own message ids keep a demo
started twice on one data directory from being deduplicated away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Via = Literal["browser", "backend", "warehouse", "support"]


@dataclass(frozen=True)
class Persona:
    key: str
    first_name: str
    last_name: str
    city: str
    timezone: str

    def user_id(self, round_: int) -> str:
        return f"u-{self.key}" if round_ == 1 else f"u-{self.key}-{round_}"

    def email(self, round_: int) -> str:
        return f"{self.key}@example.com" if round_ == 1 else f"{self.key}+{round_}@example.com"

    def name(self, round_: int) -> str:
        suffix = "" if round_ == 1 else f" #{round_}"
        return f"{self.first_name} {self.last_name}{suffix}"


DANA = Persona("dana", "Dana", "Reyes", "Austin", "America/Chicago")
SAM = Persona("sam", "Sam", "Okafor", "Leeds", "Europe/London")
MEI = Persona("mei", "Mei", "Tanaka", "Osaka", "Asia/Tokyo")
PERSONAS = (DANA, SAM, MEI)

JACKET = {"product_id": "jacket-01", "name": "Leather jacket", "category": "jackets", "price": 240}
SHOES = {"product_id": "shoe-77", "name": "Trail Runner 2", "category": "running-shoes"}
BASKET: dict[str, Any] = {
    "items": [
        {"product_id": "sock-3", "name": "Merino socks", "quantity": 2, "price": 22},
        {"product_id": "shell-9", "name": "Rain shell", "quantity": 1, "price": 130},
    ],
    "total": 174,
}


@dataclass(frozen=True)
class Action:
    """One thing the shop does at ``at`` seconds into the round."""

    at: float
    persona: Persona
    says: str
    """What happens, in words, for the account."""
    via: Via
    calls: list[dict[str, Any]] = field(default_factory=list)
    """Segment-style calls (browser, backend), the business event (warehouse) or the
    traits to set (support)."""


def _phone(round_: int) -> str:
    return f"+1512555{100 + round_:04d}"


def story(round_: int) -> list[Action]:
    """The round's actions, in time order."""
    dana, sam, mei = (p.user_id(round_) for p in PERSONAS)
    order = f"o-1001-{round_}"
    anon = f"anon-mei-{round_}"

    def view(user: str, product: dict[str, Any]) -> dict[str, Any]:
        return {"type": "track", "userId": user, "event": "Product Viewed", "properties": product}

    def customer(persona: Persona, **traits: Any) -> dict[str, Any]:
        consent = {"marketing": True, "email": True, **traits.pop("consent", {})}
        return {
            "type": "identify",
            "userId": persona.user_id(round_),
            "traits": {
                "first_name": persona.first_name,
                "name": persona.name(round_),
                "email": persona.email(round_),
                "city": persona.city,
                "timezone": persona.timezone,
                **traits,
            },
            "context": {"consent": {"categoryPreferences": consent}},
        }

    def tickets(persona: Persona, n: int, event: str) -> list[dict[str, Any]]:
        user = persona.user_id(round_)
        props = {"ticket_id": f"t-{round_}", "topic": "lost_package"}
        counted = {"type": "identify", "userId": user, "traits": {"open_support_tickets": n}}
        told = {"type": "track", "userId": user, "event": event, "properties": props}
        return [told, counted] if n else [counted, told]

    return [
        Action(
            0,
            MEI,
            "browses the shop anonymously",
            "browser",
            [
                {"type": "page", "anonymousId": anon, "name": "Home", "properties": {"path": "/"}},
                {
                    "type": "track",
                    "anonymousId": anon,
                    "event": "Product Viewed",
                    "properties": SHOES,
                },
            ],
        ),
        Action(
            1,
            MEI,
            "signs up (her anonymous visit joins her profile)",
            "backend",
            [
                {**customer(MEI), "anonymousId": anon},
                {"type": "track", "userId": mei, "event": "Signed Up", "properties": {}},
            ],
        ),
        Action(
            1.5,
            DANA,
            "orders the Trail Runner 2 (o-1001)",
            "backend",
            [
                customer(DANA, phone=_phone(round_), loyalty_points=1200, consent={"sms": True}),
                {
                    "type": "track",
                    "userId": dana,
                    "event": "Order Completed",
                    "properties": {"order_id": order, "revenue": 129, "products": [SHOES]},
                },
            ],
        ),
        Action(
            3,
            SAM,
            "is a customer with the app installed",
            "backend",
            [
                customer(SAM, push_token=f"device-sam-{round_}"),
            ],
        ),
        Action(4, DANA, "views the Leather jacket", "browser", [view(dana, JACKET)]),
        Action(5, DANA, "views the Leather jacket again", "browser", [view(dana, JACKET)]),
        Action(6, DANA, "views the Leather jacket a third time", "browser", [view(dana, JACKET)]),
        Action(
            7,
            DANA,
            "has her order backordered by the warehouse",
            "warehouse",
            [
                {"event": "Item Backordered", "properties": {"order_id": order, "sku": "TR2-39"}},
            ],
        ),
        Action(
            8,
            MEI,
            "clicks running shoes in her welcome email",
            "browser",
            [
                {
                    "type": "track",
                    "userId": mei,
                    "event": "Email Link Clicked",
                    "properties": {"category": "running-shoes", "url": "/c/running-shoes"},
                },
            ],
        ),
        Action(
            9,
            SAM,
            "opens a support ticket (lost package)",
            "backend",
            tickets(SAM, 1, "Ticket Opened"),
        ),
        Action(
            10,
            SAM,
            "views the Leather jacket three times",
            "browser",
            [view(sam, JACKET), view(sam, JACKET), view(sam, JACKET)],
        ),
        Action(
            12,
            DANA,
            "is tagged 'inconvenienced' by a support agent",
            "support",
            [{"tags": ["inconvenienced"]}],
        ),
        Action(
            16,
            SAM,
            "puts socks and a rain shell in his basket and leaves",
            "browser",
            [
                {"type": "identify", "userId": sam, "traits": {"basket": BASKET}},
                {
                    "type": "track",
                    "userId": sam,
                    "event": "Product Added",
                    "properties": BASKET["items"][1],
                },
            ],
        ),
        Action(19, SAM, "has his ticket closed", "backend", tickets(SAM, 0, "Ticket Closed")),
        Action(
            22,
            DANA,
            "receives her shoes",
            "backend",
            [
                {
                    "type": "track",
                    "userId": dana,
                    "event": "Order Delivered",
                    "properties": {"order_id": order},
                },
            ],
        ),
        Action(
            24,
            DANA,
            "leaves feedback on the shoes",
            "backend",
            [
                {
                    "type": "track",
                    "userId": dana,
                    "event": "Feedback Submitted",
                    "properties": {"order_id": order, "rating": 5},
                },
            ],
        ),
    ]


ROUND_SECONDS = 40.0
"""From one round's start to the next: the last action, then time for the rest to play out."""


def stamp(calls: list[dict[str, Any]], next_id: Callable[[], str]) -> list[dict[str, str]]:
    """Give each call a message id and the current time; returns (id, event name) pairs."""
    named = []
    now = datetime.now(UTC).isoformat()
    for call in calls:
        call["messageId"] = next_id()
        call["timestamp"] = now
        named.append({"id": call["messageId"], "event": str(call.get("event") or call["type"])})
    return named
