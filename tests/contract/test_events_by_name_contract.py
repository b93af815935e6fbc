"""``events_by_name``: who sent an event, by name and time, paged (business-event fan-out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.core.model import ProfileEvent
from rapport.core.profiles import new_profile
from rapport.storage.base import ProcessingBatch
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"


def event(ws: str, offset: int, profile_id: str, name: str, minutes: int) -> ProfileEvent:
    at = T0 + timedelta(minutes=minutes)
    return ProfileEvent(
        workspace_id=ws,
        profile_id=profile_id,
        offset=offset,
        message_id=f"m{offset}",
        type="track",
        name=name,
        timestamp=at,
        received_at=at,
        body=b'{"n":%d}' % offset,
    )


async def test_events_by_name_pages_in_time_order_from_since(backend: Backend) -> None:
    storage, _ = backend
    profiles = [new_profile(p, WS, T0) for p in ("prof_a", "prof_b", "prof_c")]
    # Offsets and times disagree on purpose: order is by time, then offset.
    events = [
        event(WS, 1, "prof_a", "Viewed", 30),
        event(WS, 2, "prof_b", "Viewed", 5),
        event(WS, 3, "prof_a", "Ordered", 10),
        event(WS, 4, "prof_c", "Viewed", 5),
        event(WS, 5, "prof_a", "Viewed", 20),
        event(WS, 6, "prof_b", "Viewed", 0),
        event("ws_other", 7, "prof_x", "Viewed", 10),
    ]
    await storage.commit_processing(
        ProcessingBatch(consumer="seed", offset=7, profiles=profiles, events=events)
    )
    seen: list[int] = []
    cursor: tuple[datetime, int] | None = None
    while True:
        page = await storage.events_by_name(WS, "Viewed", T0 + timedelta(minutes=5), cursor, 2)
        seen += [e.offset for e in page]
        if len(page) < 2:
            break
        cursor = (page[-1].timestamp, page[-1].offset)
    assert seen == [2, 4, 5, 1]
    everything = await storage.events_by_name(WS, "Viewed", None, None, 100)
    assert [e.offset for e in everything] == [6, 2, 4, 5, 1]
    assert everything[0] == events[5]
    assert await storage.events_by_name(WS, "Clicked", None, None, 100) == []
