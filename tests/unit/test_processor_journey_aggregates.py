"""Journey conditions read event aggregates, maintained per event like the segments' own."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from rapport.core.conditions import aggregate_spec
from rapport.core.journeys import describe
from rapport.core.model import Event
from rapport.runtime.journey_effects import JourneyRunner
from tests.unit.test_backfill import walk
from tests.unit.test_processor import WS, Harness, define, drain
from tests.unit.test_processor_journeys import at_now, outbox, publish

THIRD_VIEW: dict[str, Any] = {
    "event": "Product Viewed",
    "key": "properties.product_id",
    "window": "1h",
    "op": "gte",
    "value": 3,
}

HESITATING: dict[str, Any] = {
    "id": "hesitating",
    "name": "Third view within an hour",
    "triggers": [{"event": "Product Viewed", "condition": THIRD_VIEW}],
    "start": "nudge",
    "steps": {
        "nudge": {
            "message": {
                "channel": "email",
                "template": "nudge",
                "category": "promotional",
                "topic": "offers",
            }
        }
    },
}

ORDERED_90D: dict[str, Any] = {"event": "Order Completed", "window": "90d", "op": "gte", "value": 1}

WELCOME_BACK: dict[str, Any] = {
    "id": "welcome-back",
    "name": "Welcome back, by whether she ordered lately",
    "triggers": [{"event": "Logged In"}],
    "start": "check",
    "steps": {
        "check": {"branch": [{"when": ORDERED_90D, "next": "thanks"}], "otherwise": "first"},
        "thanks": {
            "message": {
                "channel": "email",
                "template": "thanks-again",
                "category": "promotional",
                "topic": "news",
            }
        },
        "first": {
            "message": {
                "channel": "email",
                "template": "first-order-offer",
                "category": "promotional",
                "topic": "news",
            }
        },
    },
}


def view(h: Harness, n: int, product: str = "jacket-1") -> Event:
    return at_now(h, n, event="Product Viewed", properties={"product_id": product})


def _as_user(event: Event, user: str) -> Event:
    return msgspec.structs.replace(event, user_id=user)


async def instances(h: Harness, journey_id: str) -> list[Any]:
    return list((await h.storage.list_journey_instances(WS, journey_id, 10)).instances)


async def test_the_third_view_within_an_hour_lets_her_in_not_the_second() -> None:
    h = Harness()
    await publish(h, HESITATING)
    await h.feed(view(h, 1))
    h.clock.advance(timedelta(minutes=10))
    await h.feed(view(h, 2))
    assert await instances(h, "hesitating") == [], "two views are not three"
    h.clock.advance(timedelta(minutes=10))
    await h.feed(view(h, 3))
    [instance] = await instances(h, "hesitating")
    assert instance.entered_by == "m3"
    assert [template for _, template in await outbox(h)] == ["nudge"]
    # The count lives on the profile, fed per event (the segments' mechanism).
    profile = await h.profile_of("user_id", "u-1")
    assert aggregate_spec(THIRD_VIEW).id in profile.aggregates


async def test_views_that_aged_out_or_of_other_products_do_not_count() -> None:
    h = Harness()
    await publish(h, HESITATING)
    await h.feed(view(h, 1))
    await h.feed(view(h, 2))
    h.clock.advance(timedelta(hours=2))  # the first two aged out of the hour
    await h.feed(view(h, 3))
    await h.feed(view(h, 4, product="jacket-2"))
    await h.feed(view(h, 5, product="jacket-3"))
    assert await instances(h, "hesitating") == []
    await h.feed(view(h, 6))
    assert await instances(h, "hesitating") == []
    await h.feed(view(h, 7))
    [instance] = await instances(h, "hesitating")
    assert instance.entered_by == "m7"


async def test_a_branch_reads_whether_she_ordered_in_the_last_90_days() -> None:
    h = Harness()
    await publish(h, WELCOME_BACK)
    await h.feed(
        _as_user(at_now(h, 1, event="Order Completed", properties={"total": 80}), "buyer"),
        _as_user(at_now(h, 2, event="Product Viewed"), "browser"),
    )
    h.clock.advance(timedelta(days=30))
    await h.feed(
        _as_user(at_now(h, 3, event="Logged In"), "buyer"),
        _as_user(at_now(h, 4, event="Logged In"), "browser"),
    )
    assert sorted(template for _, template in await outbox(h)) == [
        "first-order-offer",
        "thanks-again",
    ]
    by_profile = {i.profile_id: i for i in await instances(h, "welcome-back")}
    buyer = await h.profile_of("user_id", "buyer")
    assert any("thanks" in line for line in describe(by_profile[buyer.id]))


async def test_an_order_older_than_90_days_takes_the_otherwise_branch() -> None:
    h = Harness()
    await publish(h, WELCOME_BACK)
    await h.feed(at_now(h, 1, event="Order Completed"))
    h.clock.advance(timedelta(days=91))
    await h.feed(at_now(h, 2, event="Logged In"))
    assert [template for _, template in await outbox(h)] == ["first-order-offer"]


async def test_a_segment_and_a_journey_reading_one_aggregate_share_its_state() -> None:
    h = Harness()
    await define(h, "hesitating-3x", THIRD_VIEW)
    await publish(h, HESITATING)
    for n in (1, 2, 3):
        await h.feed(view(h, n))
    await drain(h)
    profile = await h.profile_of("user_id", "u-1")
    assert list(profile.aggregates) == [aggregate_spec(THIRD_VIEW).id]
    assert "hesitating-3x" in profile.segments
    assert len(await instances(h, "hesitating")) == 1


async def test_an_archived_journeys_aggregate_is_no_longer_kept() -> None:
    h = Harness()
    await publish(h, HESITATING)
    await h.feed(view(h, 1))
    assert (await h.profile_of("user_id", "u-1")).aggregates
    await h.storage.transition_journey(WS, "hesitating", "archive", h.clock.now())
    await h.feed(view(h, 2))
    assert (await h.profile_of("user_id", "u-1")).aggregates == {}


async def test_the_runtime_context_reads_the_profiles_aggregates() -> None:
    h = Harness()
    await publish(h, HESITATING)
    for n in (1, 2):
        await h.feed(view(h, n))
    catalog = (await JourneyRunner(h.storage).catalogs.for_workspaces([WS]))[WS]
    profile = await h.profile_of("user_id", "u-1")
    reading = catalog.context(profile, h.clock.now()).aggregate(aggregate_spec(THIRD_VIEW).id)
    assert reading.values == {"jacket-1": 2}
    later = catalog.context(profile, h.clock.now() + timedelta(hours=2))
    assert later.aggregate(aggregate_spec(THIRD_VIEW).id).values == {}


async def test_a_segment_backfill_keeps_the_states_journeys_read() -> None:
    h = Harness()
    await publish(h, HESITATING)
    await h.feed(view(h, 1))
    await h.feed(view(h, 2))
    # A segment reading something else is walked over her profile: the walk
    # re-encodes her states and must not drop the journey's count.
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"})
    assert await walk(h) >= 1
    assert aggregate_spec(THIRD_VIEW).id in (await h.profile_of("user_id", "u-1")).aggregates
    await h.feed(view(h, 3))
    [instance] = await instances(h, "hesitating")
    assert instance.entered_by == "m3"
