"""Membership events take a short path through the processor and store what the long one did.

A ``Segment Entered`` / ``Segment Exited`` event addresses its profile by id
and carries no identifier, so the processor lands it without resolving
identity (``segment_effects.settled``), and an event that changes nothing
leaves the stored profile and its timer alone. Here the same customers go
through two processors, one of them forced down the long path, and
everything they store is compared.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from rapport.core.model import Event
from rapport.runtime import processor as processor_module
from rapport.runtime.segment_effects import SEGMENT_EVENT_SOURCE
from tests.unit.test_processor import S2, WS, Harness, define, drain, make_event, view

FAR = datetime(2100, 1, 1).astimezone()


async def scenario(h: Harness) -> None:
    await define(h, "s2", S2)
    await define(h, "s2-member", {"in_segment": "s2"})
    # Membership events are events like others: a segment can count them.
    await define(h, "joiner", {"event": "Segment Entered", "window": "1d", "op": "gte", "value": 2})
    await play(h)


async def play(h: Harness) -> None:
    """A "gold" segment, then the customers' story: views, identifies, a merge, a timer."""
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"})
    start = h.clock.now()
    steps: list[list[Event]] = [
        [view(1, "jacket", start, "u1"), view(2, "jacket", start, "u1")],
        [view(3, "jacket", start + timedelta(minutes=5), "u1")],
        [make_event(4, "identify", user_id="u2", traits={"plan": "gold"})],
        [make_event(5, "identify", anonymous_id="a3", traits={"plan": "gold"})],
        # a3 turns out to be u2: the merge makes a3's profile leave "gold" (an
        # exit addressed to a profile that no longer exists: it lands on u2's).
        [make_event(6, "identify", anonymous_id="a3", user_id="u2")],
        [view(7, "shoes", start + timedelta(minutes=9), "u2")],
    ]
    for events in steps:
        await h.log.append(events)
        await drain(h)
        h.clock.advance(timedelta(minutes=20))
    # The s2 timer fires: u1 leaves s2 and s2-member.
    h.clock.advance(timedelta(hours=1))
    await h.relay.run_due()
    await drain(h)


async def stored(h: Harness) -> dict[str, Any]:
    profiles = await h.storage.scan_profiles(WS, None, 1000)
    timelines = {}
    for profile in profiles:
        page = await h.storage.list_profile_events(WS, profile.id, limit=1000)
        timelines[profile.id] = [
            (e.offset, e.message_id, e.type, e.name, e.timestamp, e.body) for e in page.events
        ]
    return {
        "profiles": profiles,
        "timelines": timelines,
        "scheduled": await h.storage.due_scheduled(FAR, 1000),
        "log": [(e.offset, e.event) for e in await h.log.read(0, 1000)],
        "owners": await h.storage.find_profile_ids(
            WS, [i for p in profiles for i in p.identifiers]
        ),
    }


async def test_membership_events_store_what_resolving_them_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved: list[Event] = []
    real_resolve = processor_module.resolve

    def counting_resolve(claims: Any, *args: Any) -> Any:
        resolved.append(claims)
        return real_resolve(claims, *args)

    monkeypatch.setattr(processor_module, "resolve", counting_resolve)
    short = Harness()
    await scenario(short)
    short_path = await stored(short)
    through_resolve = len(resolved)

    monkeypatch.setattr(processor_module, "_settled", lambda *args: None)
    resolved.clear()
    long = Harness()
    await scenario(long)
    long_path = await stored(long)

    assert short_path == long_path
    membership_events = [e for _, e in short_path["log"] if e.source == SEGMENT_EVENT_SOURCE]
    assert {e.event for e in membership_events} == {"Segment Entered", "Segment Exited"}
    assert any("merged_into" in e.properties for e in membership_events)
    # The long path resolved every membership event; the short one none.
    assert len(resolved) - through_resolve == len(membership_events)
    profiles = {p.id: p for p in short_path["profiles"]}
    assert any("joiner" in p.segments for p in profiles.values()), "membership events counted"


async def test_a_membership_event_that_changes_nothing_does_not_rewrite_the_profile() -> None:
    h = Harness()
    await define(h, "s2", S2)
    start = h.clock.now()
    await h.log.append([view(n, "jacket", start, "u1") for n in (1, 2, 3)])
    await h.processor.run_once()
    entered = len(h.storage.batches)
    assert [p.id for p in h.storage.batches[-1].profiles] != []
    await h.relay.run_due()
    assert await h.processor.run_once() == 1, "the Segment Entered event"
    batch = h.storage.batches[entered]
    assert [e.name for e in batch.events] == ["Segment Entered"], "in the timeline"
    assert batch.profiles == [] and batch.scheduled == [] and batch.unscheduled == []
