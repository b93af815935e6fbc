"""Static segment uploads through the processor, on the in-memory backend with a virtual clock.

The upload events are appended as the API appends them; the processor and
the relay run step by step, so races (a segment deleted while its upload
waits in the log) are set up exactly.
"""

from __future__ import annotations

from datetime import timedelta

from rapport.core.identity import IdentityRules
from rapport.core.model import Event, Identifier
from rapport.core.segments import SegmentDraft
from rapport.core.static_segments import ADD, REMOVE, StaticUpload, upload_event
from rapport.runtime.processor import SEGMENT_EVENT_SOURCE
from tests.unit.test_processor import T0, WS, Harness, drain, make_event

UPLOADED_AT = T0 + timedelta(days=1)
"""When the API accepted the uploads: the harness clock's start."""


async def create_static(h: Harness, segment_id: str = "vip") -> int:
    draft = SegmentDraft(
        workspace_id=WS, id=segment_id, name=segment_id, kind="static", condition=None
    )
    return (await h.storage.put_segment(draft, h.clock.now())).version


def uploaded(
    action: str, id_type: str, value: str, version: int, *, upload_id: str = "u1"
) -> Event:
    upload = StaticUpload(
        segment_id="vip",
        version=version,
        action=action,
        identifier=Identifier(id_type, value),
        upload_id=upload_id,
    )
    return upload_event(WS, upload, IdentityRules(), UPLOADED_AT, uploaded_by="admin:k1")


async def membership_events(h: Harness) -> list[tuple[str, str | None, str]]:
    return [
        (e.event.event or "", e.event.profile_id, e.event.properties["segment_id"])
        for e in await h.log.read(0, 1000)
        if e.event.source == SEGMENT_EVENT_SOURCE
    ]


async def test_an_upload_creates_unknown_customers_and_emits_segment_entered() -> None:
    h = Harness()
    version = await create_static(h)
    await h.feed(make_event(1, "identify", user_id="dana", traits={"email": "dana@example.com"}))
    dana_before = await h.profile_of("user_id", "dana")
    await h.log.append(
        [
            uploaded(ADD, "email", "dana@example.com", version),
            uploaded(ADD, "email", "sam@example.com", version),
            uploaded(REMOVE, "email", "nobody@example.com", version),
        ]
    )
    await drain(h)

    dana = await h.profile_of("user_id", "dana")
    assert dana.segments["vip"].version == version
    assert (dana.last_seen, dana.event_count, dana.traits) == (
        dana_before.last_seen,
        dana_before.event_count,
        dana_before.traits,
    )
    sam = await h.profile_of("email", "sam@example.com")
    assert list(sam.segments) == ["vip"] and sam.event_count == 0
    assert not await h.storage.find_profile_ids(WS, [Identifier("email", "nobody@example.com")])
    assert sorted(await membership_events(h)) == [
        ("Segment Entered", dana.id, "vip"),
        ("Segment Entered", sam.id, "vip"),
    ]
    timeline = await h.storage.list_profile_events(WS, sam.id, limit=10)
    assert [e.name for e in timeline.events] == [
        "Segment Entered",
        "Static Segment Member Added",
    ]
    assert await h.storage.list_rejections(WS, 10) == []


async def test_an_add_whose_segment_was_deleted_meanwhile_is_recorded_not_dropped() -> None:
    h = Harness()
    version = await create_static(h)
    await h.log.append([uploaded(ADD, "user_id", "dana", version)])
    await h.storage.delete_segment(WS, "vip", h.clock.now())
    await drain(h)
    assert not await h.storage.find_profile_ids(WS, [Identifier("user_id", "dana")])
    [rejection] = await h.storage.list_rejections(WS, 10)
    assert rejection.code == "processing_failed"
    assert "'vip' no longer exists" in rejection.message
    assert rejection.source == "rapport:static-segments"

    # Created again after the upload: the old upload does not fill the new list.
    h.clock.advance(timedelta(seconds=1))
    await create_static(h)
    await h.log.append([uploaded(ADD, "user_id", "dana", version, upload_id="u2")])
    await drain(h)
    rejections = await h.storage.list_rejections(WS, 10)
    assert len(rejections) == 2 and "created again" in rejections[0].message
    assert await membership_events(h) == []


async def test_a_merged_profile_stays_on_the_list_of_the_profile_it_absorbed() -> None:
    h = Harness()
    version = await create_static(h)
    # An anonymous visitor (the older profile, so the merge winner) ...
    await h.feed(make_event(1, anonymous_id="a-1"))
    visitor = await h.owner("anonymous_id", "a-1")
    # ... and a list entry by email, which creates a profile of its own.
    h.clock.advance(timedelta(minutes=1))
    await h.log.append([uploaded(ADD, "email", "dana@example.com", version)])
    await drain(h)
    listed = await h.owner("email", "dana@example.com")
    assert listed != visitor

    await h.feed(
        make_event(2, "identify", anonymous_id="a-1", traits={"email": "dana@example.com"})
    )
    await drain(h)
    merged = await h.profile_of("email", "dana@example.com")
    assert merged.id == visitor and listed in merged.merged_from
    assert list(merged.segments) == ["vip"]
    assert await membership_events(h) == [
        ("Segment Entered", listed, "vip"),
        ("Segment Entered", visitor, "vip"),
        ("Segment Exited", listed, "vip"),
    ]
