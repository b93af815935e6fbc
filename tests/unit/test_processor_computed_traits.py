"""Computed traits in the processor (memory backend): written, read by segments, reloaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rapport.core.clock import VirtualClock
from rapport.core.computed_traits import ComputedTraitDraft
from rapport.core.identity import IdentityRules
from rapport.core.ids import SequentialIds
from rapport.core.model import Event, Identifier, Profile
from rapport.core.segments import SegmentDraft
from rapport.runtime.processor import Processor
from rapport.storage.memory import open_memory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws"
REVENUE = {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"}


class Harness:
    def __init__(self) -> None:
        self.storage, self.log = open_memory()
        self.clock = VirtualClock(T0)
        self.processor = Processor(
            self.storage, self.log, self.clock, SequentialIds(), IdentityRules()
        )
        self.sent = 0

    async def send(self, name: str, **properties: Any) -> None:
        self.sent += 1
        now = self.clock.now()
        event = Event(
            workspace_id=WS,
            message_id=f"m{self.sent}",
            type="track",
            event=name,
            user_id="dana",
            properties=properties,
            timestamp=now,
            received_at=now,
            source="write_key:k1",
        )
        await self.log.append([event])
        # Membership events go through the log too: process until it is drained.
        while await self.processor.run_once():
            pass

    async def profile(self) -> Profile:
        ident = Identifier("user_id", "dana")
        owner = (await self.storage.find_profile_ids(WS, [ident]))[ident]
        return (await self.storage.load_profiles(WS, [owner]))[owner]

    async def compute(self, trait_id: str, compute: Any, kind: str = "aggregate") -> None:
        draft = ComputedTraitDraft(workspace_id=WS, id=trait_id, kind=kind, compute=compute)
        await self.storage.put_computed_trait(draft, self.clock.now())

    async def segment(self, segment_id: str, condition: Any) -> None:
        draft = SegmentDraft(
            workspace_id=WS, id=segment_id, name=segment_id, kind="dynamic", condition=condition
        )
        await self.storage.put_segment(draft, self.clock.now())


def traits(profile: Profile) -> dict[str, Any]:
    return {name: trait.value for name, trait in profile.traits.items()}


async def test_traits_are_computed_and_a_segment_reading_one_enters_at_once() -> None:
    h = Harness()
    await h.compute("lifetime_revenue", REVENUE)
    await h.compute("orders_90d", {"event": "Order Completed", "window": "90d"})
    await h.segment("big-spenders", {"trait": "lifetime_revenue", "op": "gt", "value": 500})
    await h.send("Order Completed", revenue=300)
    profile = await h.profile()
    assert traits(profile) == {"lifetime_revenue": 300, "orders_90d": 1}
    assert profile.segments == {}
    h.clock.advance(timedelta(minutes=5))
    await h.send("Order Completed", revenue=250)
    profile = await h.profile()
    assert traits(profile) == {"lifetime_revenue": 550, "orders_90d": 2}
    assert set(profile.segments) == {"big-spenders"}
    assert profile.segments["big-spenders"].entered_at == h.clock.now()
    trait = profile.traits["lifetime_revenue"]
    assert (trait.source, trait.message_id, trait.received_at) == (
        "rapport:computed",
        "m2",
        h.clock.now(),
    )
    # The Segment Entered event that followed is internal: it counts for nothing.
    assert profile.event_count == 2


async def test_definitions_are_reloaded_when_they_change() -> None:
    h = Harness()
    await h.send("Order Completed", revenue=10)
    assert traits(await h.profile()) == {}
    await h.compute("lifetime_revenue", REVENUE)
    await h.send("Order Completed", revenue=20)
    assert traits(await h.profile()) == {"lifetime_revenue": 20}, "no backfill of history"
    await h.compute("lifetime_revenue", {**REVENUE, "aggregate": "max"})
    await h.send("Order Completed", revenue=5)
    assert traits(await h.profile()) == {"lifetime_revenue": 5}, "a new definition, a new state"
    await h.storage.delete_computed_trait(WS, "lifetime_revenue", h.clock.now())
    await h.send("Order Completed", revenue=50)
    profile = await h.profile()
    assert traits(profile) == {"lifetime_revenue": 5}, "the last value stays, no longer kept"
    assert profile.aggregates == {}


async def test_segment_and_computed_states_survive_each_other() -> None:
    h = Harness()
    await h.compute("orders_90d", {"event": "Order Completed", "window": "90d"})
    await h.segment(
        "two-orders", {"event": "Order Completed", "window": "30d", "op": "gte", "value": 2}
    )
    for _ in range(3):
        h.clock.advance(timedelta(hours=1))
        await h.send("Order Completed", revenue=1)
        await h.send("Page Left")
    profile = await h.profile()
    assert traits(profile) == {"orders_90d": 3}
    assert set(profile.segments) == {"two-orders"}
    states = sorted(profile.aggregates)
    assert [state_id.split("_")[0] for state_id in states] == ["agg", "ct", "ct"]
    assert "ct_due" in states, "with the next expiry of the windowed computed state"


async def test_a_windowed_trait_decays_on_its_timer_and_segments_reading_it_follow() -> None:
    from rapport.runtime.relay import Relay

    h = Harness()
    relay = Relay(h.storage, h.log, h.clock)
    h.processor.on_scheduled = relay.notify
    await h.compute("orders_90d", {"event": "Order Completed", "window": "90d"})
    await h.segment("recent-buyer", {"trait": "orders_90d", "op": "gte", "value": 1})
    first = h.clock.now()
    await h.send("Order Completed", revenue=300)
    await relay.run_due()
    while await h.processor.run_once():
        await relay.run_due()
    profile = await h.profile()
    assert traits(profile)["orders_90d"] == 1
    assert "recent-buyer" in profile.segments
    # The trait can only change when the order is 90 days old: that is the timer.
    assert profile.segment_timer_at is not None
    assert first + timedelta(days=90) - timedelta(hours=1) <= profile.segment_timer_at
    assert profile.segment_timer_at <= first + timedelta(days=90)

    # No event comes: at the timer the trait drops to 0 and she leaves.
    h.clock.set(first + timedelta(days=90))
    assert await relay.run_due() == 1
    while await h.processor.run_once():
        await relay.run_due()
    profile = await h.profile()
    assert traits(profile)["orders_90d"] == 0
    assert "recent-buyer" not in profile.segments
    assert profile.traits["orders_90d"].observed_at == first + timedelta(days=90)
    exited = [
        e.event
        for e in await h.log.read(0, 100)
        if e.event.event == "Segment Exited" and e.event.properties["segment_id"] == "recent-buyer"
    ]
    assert len(exited) == 1


async def test_merging_two_profiles_adds_up_their_computed_traits() -> None:
    h = Harness()
    await h.compute("lifetime_revenue", REVENUE)
    await h.send("Order Completed", revenue=40)  # signed in as dana
    now = h.clock.now()

    def event(n: str, **fields: Any) -> Event:
        return Event(
            workspace_id=WS,
            message_id=n,
            timestamp=now,
            received_at=now,
            source="write_key:k1",
            **fields,
        )

    # Anonymous on another device: a second order, a second profile.
    await h.log.append(
        [
            event(
                "anon-order",
                type="track",
                event="Order Completed",
                anonymous_id="laptop",
                properties={"revenue": 2},
            )
        ]
    )
    while await h.processor.run_once():
        pass
    assert traits(await h.profile())["lifetime_revenue"] == 40
    # She signs in on the laptop: one customer, both orders.
    await h.log.append([event("login", type="identify", user_id="dana", anonymous_id="laptop")])
    while await h.processor.run_once():
        pass
    assert traits(await h.profile())["lifetime_revenue"] == 42
