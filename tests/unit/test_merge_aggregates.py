"""Profiles that merge keep every event their segments counted (processor, memory backend)."""

from __future__ import annotations

from datetime import timedelta

from rapport.core.model import Event
from rapport.core.segments import SegmentDraft
from tests.unit.test_backfill import S2
from tests.unit.test_processor import WS, Harness


def view(n: int, minutes_ago: int, now_: Harness, **who: str) -> Event:
    at = now_.clock.now() - timedelta(minutes=minutes_ago)
    return Event(
        workspace_id=WS,
        message_id=f"v{n}",
        type="track",
        event="Product Viewed",
        properties={"product_id": "jacket"},
        timestamp=at,
        received_at=at,
        source="write_key:k1",
        **who,
    )


async def test_views_made_as_two_profiles_count_once_they_merge() -> None:
    h = Harness()
    await h.storage.put_segment(
        SegmentDraft(workspace_id=WS, id="s2", name="S2", kind="dynamic", condition=S2),
        h.clock.now(),
    )
    # One view signed in on her phone, two anonymous views on her laptop.
    await h.feed(view(1, 40, h, user_id="dana"))
    await h.feed(view(2, 30, h, anonymous_id="laptop"), view(3, 20, h, anonymous_id="laptop"))
    assert "s2" not in (await h.profile_of("user_id", "dana")).segments
    assert "s2" not in (await h.profile_of("anonymous_id", "laptop")).segments

    # She signs in on the laptop: one customer, three views within the hour.
    signed_in = Event(
        workspace_id=WS,
        message_id="login",
        type="identify",
        user_id="dana",
        anonymous_id="laptop",
        timestamp=h.clock.now(),
        received_at=h.clock.now(),
        source="write_key:k1",
    )
    await h.feed(signed_in)
    while await h.processor.run_once():
        await h.relay.run_due()
    dana = await h.profile_of("user_id", "dana")
    assert "s2" in dana.segments
    # And she leaves when the first of the three (40 minutes ago) is an hour old.
    assert dana.segment_timer_at == h.clock.now() + timedelta(minutes=20)
