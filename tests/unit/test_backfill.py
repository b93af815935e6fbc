"""Backfill: new and changed segment definitions walked over the profiles that exist.

The processor and relay on the in-memory backend, with a virtual clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rapport.core.backfill import DONE, RUNNING, start_backfill
from rapport.core.model import Event, Membership, Profile
from rapport.core.segments import SegmentCatalog, SegmentDraft, reevaluate_segments
from tests.unit.test_processor import WS, Harness, make_event

GOLD = {"trait": "plan", "op": "equals", "value": "gold"}


def identify(n: int, user: str, plan: str) -> Event:
    return make_event(n, "identify", user_id=user, traits={"plan": plan})


async def seed(h: Harness, plans: dict[str, str]) -> None:
    for n, (user, plan) in enumerate(sorted(plans.items()), start=1):
        await h.feed(identify(n, user, plan))


async def define(h: Harness, segment_id: str, condition: Any) -> int:
    draft = SegmentDraft(
        workspace_id=WS, id=segment_id, name=segment_id, kind="dynamic", condition=condition
    )
    stored = await h.storage.put_segment(draft, h.clock.now())
    return stored.version


async def walk(h: Harness) -> int:
    """Run backfill pages until none is left, delivering and processing what they emit."""
    pages = 0
    while await h.processor.run_backfill_page():
        pages += 1
        await h.relay.run_due()
    while await h.processor.run_once():
        await h.relay.run_due()
    return pages


async def members(h: Harness, segment_id: str, users: list[str]) -> dict[str, bool]:
    found = {}
    for user in users:
        profile = await h.profile_of("user_id", user)
        found[user] = segment_id in profile.segments
    return found


async def segment_events(h: Harness) -> list[tuple[str, str, Any]]:
    entries = await h.log.read(0, 10_000)
    return [
        (e.event.event or "", e.event.profile_id or "", e.event.properties)
        for e in entries
        if e.event.source == "rapport:segments"
    ]


async def test_a_new_segment_is_walked_over_quiet_profiles_in_pages() -> None:
    h = Harness()
    h.processor._backfiller.page_size = 2
    plans = {"u1": "gold", "u2": "silver", "u3": "gold", "u4": "gold", "u5": "bronze"}
    await seed(h, plans)
    version = await define(h, "gold", GOLD)
    job = await h.storage.get_backfill(WS, "gold")
    assert job is not None and (job.status, job.total, job.version) == (RUNNING, 5, version)

    assert await walk(h) == 3
    assert await members(h, "gold", sorted(plans)) == {
        user: plan == "gold" for user, plan in plans.items()
    }
    job = await h.storage.get_backfill(WS, "gold")
    assert job is not None
    assert (job.status, job.processed, job.entered, job.exited) == (DONE, 5, 3, 0)
    entered = [e for e in await segment_events(h) if e[0] == "Segment Entered"]
    assert len(entered) == 3
    assert all(props["backfill"] is True and props["version"] == version for _, _, props in entered)
    # Nothing left: the processor does not look for jobs again until a definition is written.
    assert not await h.processor.run_backfill_page()


async def test_walking_again_changes_nothing_and_emits_nothing_twice() -> None:
    h = Harness()
    await seed(h, {"u1": "gold", "u2": "silver"})
    await define(h, "gold", GOLD)
    await walk(h)
    first = await segment_events(h)
    # As if the job's progress had not been recorded: the same page again.
    job = await h.storage.get_backfill(WS, "gold")
    assert job is not None
    await h.storage.put_backfill(start_backfill(WS, "gold", job.version, 2, h.clock.now()))
    await h.storage.put_segment(
        SegmentDraft(workspace_id=WS, id="other", name="o", kind="dynamic", condition=GOLD),
        h.clock.now(),
    )
    await walk(h)
    again = [e for e in await segment_events(h) if e[2]["segment_id"] == "gold"]
    assert again == [e for e in first if e[2]["segment_id"] == "gold"]
    job = await h.storage.get_backfill(WS, "gold")
    assert job is not None and (job.status, job.entered) == (DONE, 0)


async def test_a_changed_definition_moves_members_and_a_deleted_one_walks_them_out() -> None:
    h = Harness()
    plans = {"u1": "gold", "u2": "silver", "u3": "gold"}
    await seed(h, plans)
    await define(h, "vip", GOLD)
    await walk(h)
    version = await define(h, "vip", {"trait": "plan", "op": "equals", "value": "silver"})
    await walk(h)
    assert await members(h, "vip", sorted(plans)) == {"u1": False, "u2": True, "u3": False}
    job = await h.storage.get_backfill(WS, "vip")
    assert job is not None and (job.version, job.entered, job.exited) == (version, 1, 2)
    u2 = await h.profile_of("user_id", "u2")
    assert u2.segments["vip"].version == version

    await h.storage.delete_segment(WS, "vip", h.clock.now())
    await walk(h)
    assert await members(h, "vip", sorted(plans)) == dict.fromkeys(sorted(plans), False)
    exits = [e for e in await segment_events(h) if e[0] == "Segment Exited"]
    assert len(exits) == 3  # u1 and u3 on the change, u2 on the delete


async def test_a_member_under_the_old_rule_who_still_matches_is_not_churned() -> None:
    h = Harness()
    await seed(h, {"u1": "gold"})
    await define(h, "vip", GOLD)
    await walk(h)
    version = await define(h, "vip", {"trait": "plan", "op": "in", "value": ["gold", "platinum"]})
    await walk(h)
    profile = await h.profile_of("user_id", "u1")
    assert profile.segments["vip"].version == version
    events = [e[0] for e in await segment_events(h)]
    assert events == ["Segment Entered"]


async def test_segments_reading_the_backfilled_one_follow() -> None:
    h = Harness()
    await seed(h, {"u1": "gold", "u2": "silver"})
    await define(h, "vip-reader", {"in_segment": "vip"})
    await walk(h)
    assert await members(h, "vip-reader", ["u1", "u2"]) == {"u1": False, "u2": False}
    await define(h, "vip", GOLD)
    await walk(h)
    assert await members(h, "vip-reader", ["u1", "u2"]) == {"u1": True, "u2": False}


async def test_a_time_dependent_segment_gets_its_timers_from_the_walk() -> None:
    h = Harness()
    now = h.clock.now()
    appointments = {"u1": now + timedelta(hours=5), "u2": now + timedelta(days=3)}
    for n, (user, at) in enumerate(sorted(appointments.items()), start=1):
        await h.feed(make_event(n, "identify", user_id=user, traits={"appt": at.isoformat()}))
    await define(h, "soon", {"trait": "appt", "op": "within", "value": {"next": "2h"}})
    await walk(h)
    # Nobody is within two hours yet, but both will be: each got a timer.
    u1, u2 = await h.profile_of("user_id", "u1"), await h.profile_of("user_id", "u2")
    assert "soon" not in u1.segments and "soon" not in u2.segments
    assert u1.segment_timer_at == appointments["u1"] - timedelta(hours=2)
    assert u2.segment_timer_at == appointments["u2"] - timedelta(hours=2)
    # The timer, not a customer event, makes u1 enter at that moment.
    h.clock.set(appointments["u1"] - timedelta(hours=2))
    await h.relay.run_due()
    while await h.processor.run_once():
        await h.relay.run_due()
    assert await members(h, "soon", ["u1", "u2"]) == {"u1": True, "u2": False}


def test_reevaluate_leaves_a_segment_that_is_gone() -> None:
    catalog = SegmentCatalog([])
    now = make_event(1).timestamp
    profile = Profile(
        id="p",
        workspace_id=WS,
        created_at=now,
        updated_at=now,
        segments={"old": Membership(version=2, entered_at=now - timedelta(days=1))},
    )
    updated, changes = reevaluate_segments(catalog, profile, ["old"], now)
    assert "old" not in updated.segments
    assert [(c.segment_id, c.version, c.entered) for c in changes] == [("old", 2, False)]
    same, none = reevaluate_segments(catalog, updated, ["old"], now)
    assert same is updated and none == []


S2 = {
    "event": "Product Viewed",
    "aggregate": "count",
    "window": "1h",
    "key": "properties.product_id",
    "op": "gte",
    "value": 3,
}


async def test_aggregates_count_the_events_from_before_the_definition() -> None:
    h = Harness()
    now = h.clock.now()

    def view(n: int, user: str, product: str, minutes_ago: int) -> Event:
        at = now - timedelta(minutes=minutes_ago)
        return Event(
            workspace_id=WS,
            message_id=f"v{n}",
            type="track",
            event="Product Viewed",
            user_id=user,
            properties={"product_id": product},
            timestamp=at,
            received_at=at,
            source="write_key:k1",
        )

    # u1: the same jacket three times in the last 50 minutes; u2: three times,
    # but two hours ago; u3: three different products.
    await h.feed(
        view(1, "u1", "jacket", 50),
        view(2, "u1", "jacket", 30),
        view(3, "u1", "jacket", 10),
        view(4, "u2", "jacket", 130),
        view(5, "u2", "jacket", 125),
        view(6, "u2", "jacket", 120),
        view(7, "u3", "jacket", 20),
        view(8, "u3", "boots", 15),
        view(9, "u3", "scarf", 10),
    )
    await define(h, "s2", S2)
    await walk(h)
    assert await members(h, "s2", ["u1", "u2", "u3"]) == {"u1": True, "u2": False, "u3": False}
    u1 = await h.profile_of("user_id", "u1")
    # She leaves when the first of her three views is an hour old.
    assert u1.segment_timer_at == now + timedelta(minutes=10)
    # A fourth view now counts with the three from before the definition.
    await h.feed(view(10, "u3", "boots", 0))
    await h.feed(view(11, "u3", "boots", 0))
    assert (await members(h, "s2", ["u3"]))["u3"] is True


async def test_a_static_segment_has_nothing_to_walk() -> None:
    h = Harness()
    await seed(h, {"u1": "gold", "u2": "silver"})
    draft = SegmentDraft(
        workspace_id=WS, id="vip-list", name="VIP list", kind="static", condition=None
    )
    await h.storage.put_segment(draft, h.clock.now())
    assert await walk(h) == 1
    job = await h.storage.get_backfill(WS, "vip-list")
    assert job is not None and (job.status, job.processed) == (DONE, 0)
    assert await segment_events(h) == []
