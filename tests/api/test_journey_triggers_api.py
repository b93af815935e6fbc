"""Date, schedule and business-event triggers, and resume, end to end through the API.

A virtual clock drives the runtime; the outbox must hold exactly the
messages each trigger lets through: a birthday at 09:00 in her zone, and
again a year later; a reminder 15 minutes before a reservation that moves;
a weekly run entering the audience once per run, across a restart; a
business event reaching only the customers it names; a resume firing the
waits that came due while paused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rapport.api.app import create_app
from rapport.cli_journeys import change_journey
from rapport.core.clock import VirtualClock
from rapport.runtime.journey_triggers import CONSUMER as TRIGGERS_CONSUMER
from rapport.runtime.service import Rapport
from rapport.settings import load_settings
from rapport.storage.base import ProcessingBatch
from tests import pg
from tests.api.conftest import ApiHarness

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)  # a Monday

Opener = Callable[[], Awaitable[ApiHarness]]


def message(template: str) -> dict[str, Any]:
    return {"message": {"channel": "email", "template": template, "category": "transactional"}}


async def _runtime(overrides: dict[str, object], clock: VirtualClock) -> AsyncIterator[Opener]:
    opened: list[ApiHarness] = []
    keys: dict[str, str] = {}

    async def close() -> None:
        if opened:
            harness = opened.pop()
            await harness.client.aclose()
            await harness.rapport.close()

    async def open_() -> ApiHarness:
        await close()
        runtime = await Rapport.open(load_settings(overrides, environ={}), clock=clock)
        await runtime.start()
        if not keys:
            keys["write"] = await runtime.create_key("write")
            keys["secret"] = await runtime.create_key("secret")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://rapport.test"
        )
        harness = ApiHarness(runtime, client, keys["write"], keys["secret"])
        opened.append(harness)
        return harness

    try:
        yield open_
    finally:
        await close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def opener(tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Opener]:
    """``open()``: (re)open the runtime on the same SQLite data dir."""
    async for open_ in _runtime({"data_dir": str(tmp_path / "data")}, clock):
        yield open_


@pytest.fixture(params=["sqlite", "postgres"])
async def any_backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock
) -> AsyncIterator[ApiHarness]:
    overrides: dict[str, object] = {"data_dir": str(tmp_path / "data")}
    cleanup = None
    if request.param == "postgres":
        dsn, schema = pg.postgres_dsn(), pg.unique_schema()
        overrides.update(database_url=dsn, database_schema=schema)
        cleanup = (dsn, schema)
    try:
        async for open_ in _runtime(overrides, clock):
            yield await open_()
    finally:
        if cleanup is not None:
            await pg.drop_schema(*cleanup)


async def publish(api: ApiHarness, document: dict[str, Any]) -> None:
    response = await api.client.post("/api/journeys", json=document, headers=api.admin)
    assert response.status_code == 201, response.text
    await action(api, document["id"], "publish")


async def action(api: ApiHarness, journey_id: str, name: str) -> None:
    response = await api.client.post(f"/api/journeys/{journey_id}/{name}", headers=api.admin)
    assert response.status_code == 200, response.text
    await api.settle()


async def send(api: ApiHarness, *events: dict[str, Any]) -> None:
    response = await api.client.post(
        "/v1/batch",
        json={"batch": list(events)},
        headers={"Authorization": f"Bearer {api.write_key}"},
    )
    assert response.status_code == 200, response.text
    await api.settle()


async def identify(api: ApiHarness, message_id: str, user: str, **traits: Any) -> None:
    await send(api, {"type": "identify", "userId": user, "messageId": message_id, "traits": traits})


async def track(api: ApiHarness, message_id: str, user: str, name: str, **properties: Any) -> None:
    await send(
        api,
        {
            "type": "track",
            "event": name,
            "userId": user,
            "messageId": message_id,
            "properties": properties,
        },
    )


async def business(api: ApiHarness, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    response = await api.client.post(
        "/v1/business-events",
        json=body,
        headers={"Authorization": f"Bearer {key or api.secret_key}"},
    )
    await api.settle()
    return response


async def sent(api: ApiHarness) -> list[tuple[str, str]]:
    """``(template, user id)`` of every message the journeys sent, sorted.

    Read from the instances' traces (the outbox belongs to delivery, which
    may already have taken a message further).
    """
    storage = api.rapport.storage
    workspace = await storage.find_workspace("default")
    assert workspace is not None
    found = []
    journeys = {v.journey_id for v in await storage.list_journey_versions(workspace.id)}
    for journey_id in sorted(journeys):
        page = await storage.list_journey_instances(workspace.id, journey_id, 1000)
        for instance in page.instances:
            profiles = await storage.load_profiles(workspace.id, [instance.profile_id])
            user = next(
                i.value for i in profiles[instance.profile_id].identifiers if i.type == "user_id"
            )
            for line in instance.trace:
                if line.what == "sent":
                    found.append((line.why.split("'")[1], user))
    return sorted(found)


async def at(api: ApiHarness, clock: VirtualClock, when: datetime) -> None:
    clock.set(when)
    await api.settle()


# -- date triggers ---------------------------------------------------------------

BIRTHDAY: dict[str, Any] = {
    "id": "birthday",
    "name": "Happy birthday",
    "triggers": [{"date": "birthday", "yearly": True, "at": "09:00"}],
    "reentry": "always",
    "start": "wishes",
    "steps": {"wishes": message("birthday-wishes")},
}


async def test_a_birthday_fires_at_nine_local_and_again_next_year(
    opener: Opener, clock: VirtualClock
) -> None:
    api = await opener()
    # Ana has her birthday before the journey exists (the publish walks her),
    # Ben sets his after it is published (his own event schedules him).
    await identify(api, "i1", "ana", birthday="1990-05-12", timezone="Europe/Paris")
    await publish(api, BIRTHDAY)
    await identify(api, "i2", "ben", birthday="1985-05-12", timezone="America/New_York")
    await identify(api, "i3", "cat", name="no birthday")

    paris_nine = datetime(2026, 5, 12, 7, 0, tzinfo=UTC)
    new_york_nine = datetime(2026, 5, 12, 13, 0, tzinfo=UTC)
    await at(api, clock, paris_nine - timedelta(seconds=1))
    assert await sent(api) == []
    await at(api, clock, paris_nine)
    assert await sent(api) == [("birthday-wishes", "ana")]
    api = await opener()  # a restart between the two birthdays changes nothing
    await at(api, clock, new_york_nine)
    assert await sent(api) == [("birthday-wishes", "ana"), ("birthday-wishes", "ben")]

    await at(api, clock, datetime(2027, 5, 12, 6, 59, tzinfo=UTC))
    assert len(await sent(api)) == 2
    await at(api, clock, datetime(2027, 5, 12, 13, 0, tzinfo=UTC))
    assert await sent(api) == [
        ("birthday-wishes", "ana"),
        ("birthday-wishes", "ana"),
        ("birthday-wishes", "ben"),
        ("birthday-wishes", "ben"),
    ]


async def test_merged_profiles_keep_one_birthday_timer(opener: Opener, clock: VirtualClock) -> None:
    api = await opener()
    await publish(api, BIRTHDAY)
    await send(
        api,
        {
            "type": "identify",
            "anonymousId": "device-1",
            "messageId": "a1",
            "traits": {"birthday": "1990-05-12"},
        },
    )
    await identify(api, "a2", "ana", birthday="1990-05-12")
    # The device turns out to be Ana's: the two profiles merge.
    await send(
        api,
        {"type": "identify", "userId": "ana", "anonymousId": "device-1", "messageId": "a3"},
    )
    await at(api, clock, datetime(2026, 5, 12, 9, tzinfo=UTC))
    assert await sent(api) == [("birthday-wishes", "ana")]


RESERVATION: dict[str, Any] = {
    "id": "table-reminder",
    "name": "Your table",
    "triggers": [{"date": "reservation_at", "before": "15m"}],
    "reentry": "always",
    "start": "remind",
    "steps": {"remind": message("table-soon")},
}


async def test_a_reservation_reminder_follows_the_reservation(
    opener: Opener, clock: VirtualClock
) -> None:
    api = await opener()
    await publish(api, RESERVATION)
    await identify(api, "r1", "ana", reservation_at="2026-05-04T19:30:00+02:00")
    await identify(api, "r2", "ben", reservation_at="2026-05-04T20:00:00+02:00")
    # Ana moves her table half an hour later; Ben cancels his.
    await identify(api, "r3", "ana", reservation_at="2026-05-04T20:00:00+02:00")
    await identify(api, "r4", "ben", reservation_at=None)

    await at(api, clock, datetime(2026, 5, 4, 17, 15, tzinfo=UTC))
    assert await sent(api) == [], "the old instant no longer fires"
    await at(api, clock, datetime(2026, 5, 4, 17, 44, 59, tzinfo=UTC))
    assert await sent(api) == []
    await at(api, clock, datetime(2026, 5, 4, 17, 45, tzinfo=UTC))
    assert await sent(api) == [("table-soon", "ana")]
    await at(api, clock, datetime(2026, 5, 5, tzinfo=UTC))
    assert await sent(api) == [("table-soon", "ana")], "once per value"


# -- schedule triggers -----------------------------------------------------------

VIP = {"id": "vip", "name": "VIP", "condition": {"trait": "plan", "op": "equals", "value": "vip"}}
WEEKLY: dict[str, Any] = {
    "id": "weekly",
    "name": "Weekly digest",
    "triggers": [
        {
            "schedule": {
                "every": "week",
                "days": ["mon"],
                "at": "12:00",
                "time_zone": "Europe/Paris",
            },
            "segment": "vip",
        }
    ],
    "reentry": "always",
    "start": "digest",
    "steps": {"digest": message("weekly-digest")},
}


async def test_a_weekly_schedule_enters_the_audience_once_per_run_across_restarts(
    opener: Opener, clock: VirtualClock
) -> None:
    api = await opener()
    response = await api.client.post("/api/segments", json=VIP, headers=api.admin)
    assert response.status_code == 201, response.text
    await identify(api, "p1", "ana", plan="vip")
    await identify(api, "p2", "ben", plan="vip")
    await identify(api, "p3", "cat", plan="free")
    await publish(api, WEEKLY)

    run = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # Monday 12:00 in Paris
    await at(api, clock, run - timedelta(seconds=1))
    assert await sent(api) == []
    await at(api, clock, run)
    assert await sent(api) == [("weekly-digest", "ana"), ("weekly-digest", "ben")]
    # As if it crashed before recording any progress: the consumer reads the
    # whole log again, run included, on restart.
    await api.rapport.storage.commit_processing(
        ProcessingBatch(consumer=TRIGGERS_CONSUMER, offset=0)
    )
    api = await opener()
    await at(api, clock, run + timedelta(hours=1))
    assert api.rapport.journey_triggers.handled_offset > 0
    assert len(await sent(api)) == 2, "a restart fires no run twice"

    await identify(api, "p4", "ben", plan="free")  # Ben leaves the audience
    api = await opener()
    await at(api, clock, run + timedelta(days=7))
    assert await sent(api) == [
        ("weekly-digest", "ana"),
        ("weekly-digest", "ana"),
        ("weekly-digest", "ben"),
    ]
    api = await opener()
    await at(api, clock, run + timedelta(days=7, hours=2))
    assert len(await sent(api)) == 3


# -- business events -------------------------------------------------------------

SHIPMENT: dict[str, Any] = {
    "id": "shipment-delayed",
    "name": "Your order is late",
    "triggers": [
        {
            "business_event": "Shipment Delayed",
            "where": [{"field": "properties.delay_days", "op": "gte", "value": 2}],
            "to": {
                "event": "Order Completed",
                "match": {"properties.order_id": "properties.order_id"},
                "window": "90d",
            },
        }
    ],
    "correlation_key": "properties.order_id",
    "start": "sorry",
    "steps": {"sorry": message("shipment-delayed")},
}
ACCOUNT: dict[str, Any] = {
    "id": "account-notice",
    "name": "Account notice",
    "triggers": [
        {
            "business_event": "Account Flagged",
            "to": {"identifier": "email", "from": "properties.email"},
        }
    ],
    "start": "notice",
    "steps": {"notice": message("account-flagged")},
}


async def test_a_shipment_delay_reaches_only_that_orders_customer(
    any_backend: ApiHarness,
) -> None:
    api = any_backend
    await publish(api, SHIPMENT)
    await publish(api, ACCOUNT)
    await track(api, "o1", "ana", "Order Completed", order_id="A-1")
    await track(api, "o2", "ben", "Order Completed", order_id="B-7")
    await identify(api, "e1", "ben", email="Ben@Example.com")

    minor = await business(
        api,
        {
            "event": "Shipment Delayed",
            "messageId": "d0",
            "properties": {"order_id": "A-1", "delay_days": 1},
        },
    )
    assert minor.status_code == 200, minor.text
    assert await sent(api) == [], "where: a one-day delay is not worth a message"
    late = {
        "event": "Shipment Delayed",
        "messageId": "d1",
        "properties": {"order_id": "A-1", "delay_days": 3},
    }
    response = await business(api, late)
    assert response.json() == {"messageId": "d1", "duplicate": False}
    again = await business(api, late)
    assert again.json() == {"messageId": "d1", "duplicate": True}
    assert await sent(api) == [("shipment-delayed", "ana")]

    flagged = {
        "event": "Account Flagged",
        "messageId": "f1",
        "properties": {"email": "ben@example.com"},
    }
    assert (await business(api, flagged)).status_code == 200
    assert await sent(api) == [("account-flagged", "ben"), ("shipment-delayed", "ana")]

    instances = await api.client.get("/api/journeys/shipment-delayed/instances", headers=api.admin)
    [instance] = instances.json()["instances"]
    assert instance["correlation_key"] == "A-1"
    assert any("Shipment Delayed" in line and "d1" in line for line in instance["trace"])


BACK_IN_STOCK: dict[str, Any] = {
    "id": "back-in-stock",
    "name": "Back in stock",
    "triggers": [
        {
            "business_event": "Back In Stock",
            "to": {
                "event": "Product Viewed",
                "match": {"properties.product_id": "properties.product_id"},
                "window": "7d",
            },
        }
    ],
    "reentry": {"after": "1d"},
    "start": "tell",
    "steps": {"tell": message("back-in-stock")},
}


async def test_back_in_stock_reaches_everyone_who_viewed_it_this_week(
    any_backend: ApiHarness, clock: VirtualClock
) -> None:
    api = any_backend
    await publish(api, BACK_IN_STOCK)
    await track(api, "v1", "old", "Product Viewed", product_id="p1")  # 8 days before
    clock.advance(timedelta(days=3))
    await track(api, "v2", "ana", "Product Viewed", product_id="p1")
    await track(api, "v3", "ana", "Product Viewed", product_id="p1")  # twice: one message
    await track(api, "v4", "cat", "Product Viewed", product_id="p2")
    await track(api, "v5", "dan", "Product Added", product_id="p1")
    clock.advance(timedelta(days=5))
    await track(api, "v6", "eve", "Product Viewed", product_id=1)  # a number: the same id

    response = await business(
        api, {"event": "Back In Stock", "messageId": "s1", "properties": {"product_id": "1"}}
    )
    assert response.status_code == 200, response.text
    assert await sent(api) == [("back-in-stock", "eve")]
    response = await business(
        api, {"event": "Back In Stock", "messageId": "s2", "properties": {"product_id": "p1"}}
    )
    assert await sent(api) == [("back-in-stock", "ana"), ("back-in-stock", "eve")]


async def test_business_events_refuse_write_keys_and_bad_input(opener: Opener) -> None:
    api = await opener()
    refused = await business(api, {"event": "Back In Stock", "messageId": "x"}, key=api.write_key)
    assert refused.status_code == 403, refused.text
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messageId": "x"}, "event"),
        ({"event": "", "messageId": "x"}, "event"),
        ({"event": "Back In Stock"}, "messageId"),
        ({"event": "Back In Stock", "messageId": "x", "properties": [1]}, "properties"),
        ({"event": "Back In Stock", "messageId": "x", "timestamp": "yesterday"}, "timestamp"),
        ({"event": "Back In Stock", "messageId": "x", "userId": "ana"}, "userId"),
    ]
    for body, field in cases:
        response = await business(api, body)
        assert (response.status_code, response.json().get("field")) == (422, field), body
    broken = await api.client.post("/v1/business-events", content=b"{", headers=api.admin)
    assert broken.status_code == 400


# -- resume ----------------------------------------------------------------------

PATIENT: dict[str, Any] = {
    "id": "patient",
    "name": "Patient",
    "triggers": [{"event": "Signed Up"}],
    "start": "later",
    "steps": {
        "later": {"wait": {"for": "1h"}, "next": "hello"},
        "hello": message("hello-later"),
    },
}


@pytest.mark.parametrize("surface", ["api", "cli"])
async def test_resume_fires_the_waits_that_came_due_while_paused(
    opener: Opener, clock: VirtualClock, tmp_path: Path, surface: str
) -> None:
    api = await opener()
    await publish(api, PATIENT)
    await track(api, "s1", "ana", "Signed Up")
    await action(api, "patient", "pause")
    await at(api, clock, T0 + timedelta(hours=2))
    assert await sent(api) == [], "paused: the due wait waits"
    api = await opener()
    if surface == "api":
        await action(api, "patient", "resume")
    else:  # ``rapport journeys resume patient``, next to the running server
        settings = load_settings({"data_dir": str(tmp_path / "data")}, environ={})
        lines, ok = await change_journey(settings, "default", "patient", "resume")
        assert ok, lines
        api.rapport.journey_triggers.notify()
        await api.settle()
    assert await sent(api) == [("hello-later", "ana")]
    response = await api.client.get("/api/journeys/patient/instances", headers=api.admin)
    [instance] = response.json()["instances"]
    assert instance["status"] == "completed"
    trace = "\n".join(instance["trace"])
    assert "paused" in trace and "resumed" in trace
