"""S3 — walking into the store.

A customer who gave location consent enters a store's geofence (a
``Geofence Entered`` event from the mobile app, carrying
``context.consent.categoryPreferences.location: true``): she gets one push
from the push gateway, 10% off everything in *that* store, today only, valid
until 23:59 on the event's day (the template formats the event's timestamp
with Liquid's ``date`` filter; timestamps are stored in UTC and Liquid has no
time zone conversion, so "the day" is the UTC day). A customer without location consent gets
nothing, and her location is not stored: this Rapport runs with
``consent_required_events: Geofence Entered=location`` and
``consent_required_fields: context.location=location`` (docs/ingest.md, "Data
that needs consent"), so her geofence event is refused at the door (nowhere in
her timeline, no payload in the rejections) and a location riding on any
other event of hers is cut off before it is stored.

When she buys in the store, the till sends ``Order Completed`` server-side
knowing only her loyalty card: ``context.traits.loyalty_id`` (an identifier
trait here: ``identifier_traits`` includes ``loyalty_id=loyalty_id``). Ingest
needs a ``userId`` or ``anonymousId`` on every event, so the till uses the
card number as its anonymous id, which stays one identifier per card however
often she buys. She gets a thank-you email with care tips for each thing she
bought, chosen by its category from the event's products.

The two journeys are ``examples/journeys/s3-*.yaml``. The story's Rapport is
the harness's with the consent and identifier settings added.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.conftest import EXAMPLES, T0
from tests.scenarios.harness import Scenario, open_scenario

STORE_SETTINGS = {
    "consent_required_events": "Geofence Entered=location",
    "consent_required_fields": "context.location=location",
    "identifier_traits": "email=email,phone=phone,loyalty_id=loyalty_id",
}
"""What this story adds to the harness's settings."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Scenario]:
    async with open_scenario(
        tmp_path, T0, push_gateway_token="push-secret", **STORE_SETTINGS
    ) as opened:
        yield opened


PUSH_TEMPLATE: dict[str, Any] = {
    "id": "store-visit-push",
    "name": "In the store today",
    "channel": "push",
    "title": "Welcome to {{ event.properties.store_name }}",
    "body": "{{ journey.percent_off }}% off everything in {{ event.properties.store_name }}, "
    "today only: valid until 23:59 on {{ event.timestamp | date: '%A %d %B %Y' }}.",
}

CARE_TIPS = {
    "leather": "feed the leather with a conditioner every three months",
    "wool": "wash cold by hand and dry flat",
    "shoes": "let them rest a day between wears, with shoe trees",
}
"""The tips the thank-you email gives, by product category."""

THANKS_TEMPLATE: dict[str, Any] = {
    "id": "in-store-thanks",
    "name": "Thank you for shopping in store",
    "channel": "email",
    "subject": "Thank you for visiting {{ event.properties.store_name }}",
    "text": "Hi {{ profile.traits.first_name }}, thank you for shopping at "
    "{{ event.properties.store_name }}.\n"
    "How to care for what you bought:\n"
    "{%- for product in event.properties.products %}\n"
    "- {{ product.name }}: "
    "{%- case product.category %}"
    + "".join(f'{{%- when "{cat}" %}} {tip}.' for cat, tip in CARE_TIPS.items())
    + "{%- else %} ask us in store, we are happy to help.{%- endcase %}"
    "{%- endfor %}\n",
    "variables": {"profile.traits.first_name": "there"},
}

STORE = {"store_id": "lyon-part-dieu", "store_name": "Rapport Lyon Part-Dieu"}
OTHER_STORE = {"store_id": "paris-marais", "store_name": "Rapport Paris Marais"}
WHERE = {"latitude": 45.7606, "longitude": 4.8593}


async def define(s: Scenario) -> None:
    await s.apply("template", PUSH_TEMPLATE)
    await s.apply("template", THANKS_TEMPLATE)
    await s.apply_file("journey", EXAMPLES / "s3-store-visit-offer.yaml")
    await s.apply_file("journey", EXAMPLES / "s3-in-store-thanks.yaml")


async def app_user(s: Scenario, user: str, *, location: bool) -> None:
    """A customer the shop knows (email, loyalty card, marketing consent), signed in on
    the mobile app, which reports her push token and her location choice."""
    await s.customer(
        user,
        {
            "email": f"{user}@example.com",
            "first_name": user.title(),
            "loyalty_id": f"L-{user.upper()}",
        },
    )
    await s.identify(
        user, {"push_token": f"device-{user}"}, consent={"location": location, "push": True}
    )


def geofence(user: str, store: dict[str, str], *, location: bool | None) -> dict[str, Any]:
    """The mobile app's event: she entered a store's geofence (with her position)."""
    context: dict[str, Any] = {"location": WHERE, "app": {"name": "Rapport Shop"}}
    if location is not None:
        context["consent"] = {"categoryPreferences": {"location": location}}
    return {
        "type": "track",
        "event": "Geofence Entered",
        "userId": user,
        "properties": {**store, "radius_m": 150},
        "context": context,
    }


async def ingest(s: Scenario, event: dict[str, Any]) -> dict[str, Any]:
    """One event from the mobile app (write key), whatever the answer; then settle."""
    event.setdefault("messageId", f"app-{uuid.uuid4()}")
    event.setdefault("timestamp", s.now.isoformat())
    response = await s.client.post(
        "/v1/batch",
        json={"batch": [event]},
        headers={"Authorization": f"Bearer {s.write_key}"},
    )
    await s.settle()
    body: dict[str, Any] = response.json()
    body["status"] = response.status_code
    return body


async def timeline(s: Scenario, user: str) -> list[dict[str, Any]]:
    response = await s.client.get(
        f"/api/profiles/user_id:{user}/events", params={"limit": "500"}, headers=s.admin
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def rejections(s: Scenario) -> list[dict[str, Any]]:
    response = await s.client.get("/api/rejections", params={"limit": "500"}, headers=s.admin)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["rejections"]
    return found


def push_bodies(s: Scenario) -> list[dict[str, Any]]:
    return [json.loads(hit.body) for hit in s.pushes()]


async def pos_sale(
    s: Scenario, loyalty_id: str, order_id: str, products: list[dict[str, Any]]
) -> None:
    """The till's ``Order Completed``: server-side, knowing only the loyalty card."""
    await s.send(
        {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": f"loyalty-card-{loyalty_id}",
            "properties": {
                "order_id": order_id,
                "channel": "store",
                **STORE,
                "products": products,
                "total": sum(p["price"] for p in products),
            },
            "context": {"traits": {"loyalty_id": loyalty_id}},
        },
        server=True,
    )


async def test_entering_the_geofence_with_location_consent_sends_the_store_offer(
    store: Scenario,
) -> None:
    s = store
    await define(s)
    await app_user(s, "ana", location=True)
    await s.advance(timedelta(hours=1, minutes=12))  # 10:12 UTC
    answer = await ingest(s, geofence("ana", STORE, location=True))
    assert answer["status"] == 200 and answer["rejected"] == [], answer

    # A real push reached the gateway: her device, the store's name from the event.
    [hit] = s.pushes()
    assert hit.headers["authorization"] == "Bearer push-secret"
    push = json.loads(hit.body)
    assert push["to"] == "device-ana"
    assert push["title"] == "Welcome to Rapport Lyon Part-Dieu"
    assert push["body"] == (
        "10% off everything in Rapport Lyon Part-Dieu, today only: "
        "valid until 23:59 on Monday 04 May 2026."
    )
    assert (push["data"]["journey_id"], push["data"]["step_id"]) == ("store-visit-offer", "offer")
    assert push["data"]["category"] == "promotional"
    assert push["data"]["topic"] == "store-offers"
    assert push["data"]["profile_id"] == await s.profile_id("ana")
    assert hit.headers["idempotency-key"] == push["idempotency_key"]
    [offer] = await s.sent("ana")
    assert (offer.gate, offer.channel, offer.address) == ("send", "push", "device-ana")
    assert offer.data == {"percent_off": 10}

    # Her consent is kept, and so is the visit, position included.
    assert (await s.profile("ana"))["consent"]["location"]["granted"] is True
    [visit] = [e for e in await timeline(s, "ana") if e.get("event") == "Geofence Entered"]
    assert visit["properties"]["store_id"] == "lyon-part-dieu"
    assert visit["context"]["location"] == WHERE

    # Walking past again an hour later: still one offer for this store today.
    await s.advance(timedelta(hours=1))
    await ingest(s, geofence("ana", STORE, location=True))
    assert len(s.pushes()) == 1
    # Another store is another offer, with that store's name.
    await ingest(s, geofence("ana", OTHER_STORE, location=True))
    assert [p["body"].split(",")[0] for p in push_bodies(s)] == [
        "10% off everything in Rapport Lyon Part-Dieu",
        "10% off everything in Rapport Paris Marais",
    ]
    # The next day, the same store may offer again, dated that day.
    await s.advance(timedelta(days=1))
    await ingest(s, geofence("ana", STORE, location=True))
    assert len(s.pushes()) == 3
    assert push_bodies(s)[-1]["body"].endswith("valid until 23:59 on Tuesday 05 May 2026.")
    assert s.mails() == [], "the offer goes by push only"


async def test_without_location_consent_nothing_is_sent_and_her_location_is_not_stored(
    store: Scenario,
) -> None:
    s = store
    await define(s)
    await app_user(s, "ben", location=False)
    await s.advance(timedelta(minutes=30))

    # Her app sends the geofence entry without location consent (declined, then
    # not stated at all): each is refused, with the consent it lacks named.
    refused_ids = set()
    for consent in (False, None):
        event = geofence("ben", STORE, location=consent)
        answer = await ingest(s, event)
        refused_ids.add(event["messageId"])
        assert answer["status"] == 400, answer
        [refused] = answer["rejected"]
        assert refused["code"] == "consent_required", refused
        assert refused["field"] == "batch.0.context.consent.categoryPreferences.location"
    await s.advance(timedelta(minutes=5))

    assert s.pushes() == []
    assert await s.effects("ben") == []
    assert await s.instances("store-visit-offer") == []
    events = await timeline(s, "ben")
    assert [e for e in events if e.get("event") == "Geofence Entered"] == []
    assert "45.7606" not in json.dumps(events)
    refusals = [r for r in await rejections(s) if r.get("code") == "consent_required"]
    assert len(refusals) == 2, refusals
    dumped = json.dumps(refusals)
    assert "lyon-part-dieu" not in dumped and "45.7606" not in dumped, refusals
    assert all(r.get("payload", "") == "" for r in refusals), refusals
    assert {r["message_id"] for r in refusals} == refused_ids
    assert (await s.profile("ben"))["consent"]["location"]["granted"] is False

    # Any other event of hers keeps its content but loses the position.
    answer = await ingest(
        s,
        {
            "type": "track",
            "event": "Application Opened",
            "userId": "ben",
            "properties": {"from_background": True},
            "context": {"location": WHERE},
        },
    )
    assert answer["status"] == 200 and answer["rejected"] == [], answer
    [opened] = [e for e in await timeline(s, "ben") if e.get("event") == "Application Opened"]
    assert opened["properties"] == {"from_background": True}
    assert "location" not in opened["context"]
    assert opened["context"]["withheld"] == ["context.location"]
    assert "45.7606" not in json.dumps(await timeline(s, "ben"))
    assert "45.7606" not in json.dumps(await s.profile("ben"))
    assert s.pushes() == [] and s.mails() == []


async def test_an_in_store_purchase_by_loyalty_card_sends_care_tips_for_what_she_bought(
    store: Scenario,
) -> None:
    s = store
    await define(s)
    await app_user(s, "ana", location=True)
    await ingest(s, geofence("ana", STORE, location=True))
    await s.advance(timedelta(minutes=25))

    await pos_sale(
        s,
        "L-ANA",
        "pos-1001",
        [{"sku": "BAG-07", "name": "Tan leather tote", "category": "leather", "price": 189}],
    )

    # The sale landed on her profile, found by the loyalty card alone.
    sale = [e for e in await timeline(s, "ana") if e.get("event") == "Order Completed"]
    assert [e["properties"]["order_id"] for e in sale] == ["pos-1001"]
    assert "userId" not in sale[0] or sale[0]["userId"] is None

    # A thank-you mail reached the real SMTP server with tips for leather only.
    [mail] = s.mails("ana@example.com")
    assert mail["Subject"] == "Thank you for visiting Rapport Lyon Part-Dieu"
    assert (mail["To"], mail["From"]) == ("ana@example.com", "Rapport Shop <shop@rapport.test>")
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Hi Ana, thank you for shopping at Rapport Lyon Part-Dieu." in text
    assert f"- Tan leather tote: {CARE_TIPS['leather']}." in text
    assert CARE_TIPS["wool"] not in text and CARE_TIPS["shoes"] not in text
    [thanks] = [m for m in await s.sent("ana") if m.template == "in-store-thanks"]
    assert (thanks.channel, thanks.category) == ("email", "transactional")

    # A second visit, two things: tips for each, one mail per order, and the till
    # sending the same receipt again changes nothing.
    await s.advance(timedelta(days=3))
    basket = [
        {"sku": "JMP-21", "name": "Merino jumper", "category": "wool", "price": 89},
        {"sku": "BOOT-3", "name": "Chelsea boots", "category": "shoes", "price": 159},
        {"sku": "GIFT-50", "name": "Gift card", "category": "gift", "price": 50},
    ]
    await pos_sale(s, "L-ANA", "pos-1002", basket)
    await pos_sale(s, "L-ANA", "pos-1002", basket)
    first, second = s.mails("ana@example.com")
    second_body = second.get_body(("plain",))
    assert second_body is not None
    text = second_body.get_content()
    assert f"- Merino jumper: {CARE_TIPS['wool']}." in text
    assert f"- Chelsea boots: {CARE_TIPS['shoes']}." in text
    assert "- Gift card: ask us in store, we are happy to help." in text
    assert CARE_TIPS["leather"] not in text
    profile = await s.profile("ana")
    loyalty = [i for i in profile["identifiers"] if i["type"] == "loyalty_id"]
    assert [i["value"] for i in loyalty] == ["L-ANA"]
    assert len([i for i in profile["identifiers"] if i["type"] == "anonymous_id"]) == 1
    assert first["Subject"] == second["Subject"]
