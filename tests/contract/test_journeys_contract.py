"""The journey-definition part of the ``Storage`` contract, over every backend:
every version kept, drafts replaced in place, the lifecycle's transitions applied
atomically (or not at all), the entry version, and the revision counter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rapport.core.journeys import (
    ARCHIVE,
    ARCHIVED,
    DRAFT,
    PAUSE,
    PAUSED,
    PUBLISH,
    PUBLISHED,
    RESUME,
    RUNNING,
    IllegalTransition,
    JourneyAlreadyExists,
    JourneyNotFound,
)
from rapport.storage.journey_signals import CONTROL_SOURCE, SIGNAL_KEY_PREFIX
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
WS = "ws_a"


def definition(name: str = "Welcome series", **more: Any) -> dict[str, Any]:
    return {
        "id": "welcome-series",
        "name": name,
        "triggers": [{"event": "Signed Up"}],
        "start": "hello",
        "steps": {
            "hello": {
                "message": {
                    "channel": "email",
                    "template": "welcome-1",
                    "topic": "onboarding",
                    "category": "promotional",
                    "data": {"note": "nul \u0000 byte", "ratio": 1.5, "none": None},
                }
            }
        },
        **more,
    }


async def test_a_new_journey_is_a_version_1_draft_that_reads_back_whole(backend: Backend) -> None:
    storage, _ = backend
    at = datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=PARIS_WINTER)
    stored = await storage.save_journey(WS, "welcome-series", definition(), at)
    assert (stored.version, stored.status) == (1, DRAFT)
    assert stored.created_at == at and stored.updated_at == at
    assert stored.published_at is None
    assert stored.definition == definition()
    assert stored.name == "Welcome series"
    read = await storage.get_journey_version(WS, "welcome-series", 1)
    assert read == stored
    assert read is not None and read.created_at.utcoffset() == timedelta(hours=1)
    assert await storage.journey_versions(WS, "welcome-series") == [stored]


async def test_saving_again_replaces_the_draft_in_place(backend: Backend) -> None:
    storage, _ = backend
    await storage.save_journey(WS, "welcome-series", definition(), T0)
    later = T0 + timedelta(minutes=5)
    again = await storage.save_journey(WS, "welcome-series", definition("Renamed"), later)
    assert (again.version, again.status, again.name) == (1, DRAFT, "Renamed")
    assert again.created_at == T0 and again.updated_at == later
    assert [v.name for v in await storage.journey_versions(WS, "welcome-series")] == ["Renamed"]


async def test_create_only_refuses_an_existing_journey_and_stores_nothing(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.save_journey(WS, "welcome-series", definition(), T0)
    with pytest.raises(JourneyAlreadyExists):
        await storage.save_journey(WS, "welcome-series", definition("Other"), T0, create_only=True)
    (only,) = await storage.journey_versions(WS, "welcome-series")
    assert only.name == "Welcome series"
    created = await storage.save_journey(WS, "other", definition(), T0, create_only=True)
    assert created.version == 1


async def test_publishing_keeps_every_version_and_new_entries_take_the_newest(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.save_journey(WS, "welcome-series", definition("v1"), T0)
    assert await storage.entry_journey_version(WS, "welcome-series") is None
    published_at = T0 + timedelta(hours=1)
    after = await storage.transition_journey(WS, "welcome-series", PUBLISH, published_at)
    assert [(v.version, v.status) for v in after] == [(1, PUBLISHED)]
    assert after[0].published_at == published_at
    # Saving a published journey starts version 2 as a draft; v1 keeps taking entries.
    draft = await storage.save_journey(WS, "welcome-series", definition("v2"), T0)
    assert (draft.version, draft.status) == (2, DRAFT)
    entry = await storage.entry_journey_version(WS, "welcome-series")
    assert entry is not None and entry.version == 1
    await storage.transition_journey(WS, "welcome-series", PUBLISH, T0 + timedelta(hours=2))
    entry = await storage.entry_journey_version(WS, "welcome-series")
    assert entry is not None and (entry.version, entry.name) == (2, "v2")
    # v1 stays published: its in-flight instances finish on it.
    versions = await storage.journey_versions(WS, "welcome-series")
    assert [(v.version, v.status, v.name) for v in versions] == [
        (1, PUBLISHED, "v1"),
        (2, PUBLISHED, "v2"),
    ]
    old = await storage.get_journey_version(WS, "welcome-series", 1)
    assert old is not None and old.definition == definition("v1")


async def test_pause_resume_and_archive_move_every_version(backend: Backend) -> None:
    storage, _ = backend
    for name in ("v1", "v2"):
        await storage.save_journey(WS, "welcome-series", definition(name), T0)
        await storage.transition_journey(WS, "welcome-series", PUBLISH, T0)
    await storage.save_journey(WS, "welcome-series", definition("v3"), T0)
    paused = await storage.transition_journey(WS, "welcome-series", PAUSE, T0)
    assert [v.status for v in paused] == [PAUSED, PAUSED, DRAFT]
    assert await storage.entry_journey_version(WS, "welcome-series") is None
    resumed = await storage.transition_journey(WS, "welcome-series", RESUME, T0)
    assert [v.status for v in resumed] == [PUBLISHED, PUBLISHED, DRAFT]
    archived = await storage.transition_journey(WS, "welcome-series", ARCHIVE, T0)
    assert [v.status for v in archived] == [ARCHIVED, ARCHIVED, ARCHIVED]
    assert await storage.entry_journey_version(WS, "welcome-series") is None
    # Saving after an archive starts a new draft; archived versions stay.
    revived = await storage.save_journey(WS, "welcome-series", definition("v4"), T0)
    assert (revived.version, revived.status) == (4, DRAFT)


async def test_an_illegal_transition_raises_and_stores_nothing(backend: Backend) -> None:
    storage, _ = backend
    await storage.save_journey(WS, "welcome-series", definition(), T0)
    revision = await storage.journeys_revision()
    for action in (PAUSE, RESUME):
        with pytest.raises(IllegalTransition) as raised:
            await storage.transition_journey(WS, "welcome-series", action, T0)
        assert raised.value.state == "draft"
    await storage.transition_journey(WS, "welcome-series", PUBLISH, T0)
    await storage.save_journey(WS, "welcome-series", definition("v2"), T0)
    await storage.transition_journey(WS, "welcome-series", PAUSE, T0)
    revision = await storage.journeys_revision()
    with pytest.raises(IllegalTransition, match="resume it"):
        await storage.transition_journey(WS, "welcome-series", PUBLISH, T0)
    assert await storage.journeys_revision() == revision
    versions = await storage.journey_versions(WS, "welcome-series")
    assert [v.status for v in versions] == [PAUSED, DRAFT]
    with pytest.raises(JourneyNotFound):
        await storage.transition_journey(WS, "nope", PUBLISH, T0)


async def test_listing_filters_by_status_and_orders_by_journey_then_version(
    backend: Backend,
) -> None:
    storage, _ = backend
    for journey_id in ("b-journey", "a-journey", "c-journey"):
        await storage.save_journey(WS, journey_id, definition(journey_id), T0)
    await storage.transition_journey(WS, "b-journey", PUBLISH, T0)
    await storage.save_journey(WS, "b-journey", definition("b2"), T0)
    await storage.transition_journey(WS, "c-journey", PUBLISH, T0)
    await storage.transition_journey(WS, "c-journey", PAUSE, T0)
    await storage.save_journey("ws_other", "a-journey", definition(), T0)
    every = await storage.list_journey_versions(WS)
    assert [(v.journey_id, v.version, v.status) for v in every] == [
        ("a-journey", 1, DRAFT),
        ("b-journey", 1, PUBLISHED),
        ("b-journey", 2, DRAFT),
        ("c-journey", 1, PAUSED),
    ]
    running = await storage.list_journey_versions(WS, statuses=RUNNING)
    assert [(v.journey_id, v.version) for v in running] == [("b-journey", 1), ("c-journey", 1)]
    assert await storage.list_journey_versions(WS, statuses=()) == []
    assert await storage.journey_versions(WS, "nope") == []
    assert await storage.get_journey_version(WS, "b-journey", 9) is None


async def test_the_revision_grows_with_every_write(backend: Backend) -> None:
    storage, _ = backend
    seen = [await storage.journeys_revision()]
    assert seen == [0]
    await storage.save_journey(WS, "welcome-series", definition(), T0)
    seen.append(await storage.journeys_revision())
    await storage.save_journey(WS, "welcome-series", definition("again"), T0)
    seen.append(await storage.journeys_revision())
    await storage.transition_journey(WS, "welcome-series", PUBLISH, T0)
    seen.append(await storage.journeys_revision())
    await storage.save_journey("ws_other", "x", definition(), T0)
    seen.append(await storage.journeys_revision())
    assert seen == sorted(set(seen)), seen


async def test_concurrent_saves_of_a_new_journey_make_one_draft(backend: Backend) -> None:
    storage, _ = backend
    await asyncio.gather(
        *(storage.save_journey(WS, "welcome-series", definition(f"n{n}"), T0) for n in range(8))
    )
    versions = await storage.journey_versions(WS, "welcome-series")
    assert [(v.version, v.status) for v in versions] == [(1, DRAFT)]


async def test_returned_definitions_are_copies(backend: Backend) -> None:
    storage, _ = backend
    mine = definition()
    stored = await storage.save_journey(WS, "welcome-series", mine, T0)
    mine["name"] = "changed by the caller"
    stored.definition["steps"].clear()
    (read,) = await storage.journey_versions(WS, "welcome-series")
    assert read.definition == definition()


async def test_versions_survive_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    storage, _ = opened
    await storage.save_journey(WS, "welcome-series", definition(), T0)
    await storage.transition_journey(WS, "welcome-series", PUBLISH, T0)
    revision = await storage.journeys_revision()
    await backend_factory.close(opened)
    storage, _ = await backend_factory.open()
    entry = await storage.entry_journey_version(WS, "welcome-series")
    assert entry is not None and entry.definition == definition()
    assert await storage.journeys_revision() == revision


async def _signals(backend: Backend) -> list[tuple[str, str, dict[str, Any]]]:
    """``(key, event name, properties)`` of the stored journey signals, in delivery order."""
    storage, _ = backend
    rows = await storage.due_scheduled(T0, 100)
    return [
        (row.key, str(row.event.event), row.event.properties)
        for row in rows
        if row.key.startswith(SIGNAL_KEY_PREFIX)
    ]


async def test_publish_and_resume_store_their_signal_with_the_transition(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.save_journey(WS, "welcome-series", definition(), T0)
    await storage.transition_journey(WS, "welcome-series", PUBLISH, T0)
    published = ("journey-signal:welcome-series:published:v1", "Journey Published")
    props = {"journey_id": "welcome-series", "version": 1}
    assert await _signals(backend) == [(*published, props)]
    [row] = await storage.due_scheduled(T0, 100)
    assert row.event.source == CONTROL_SOURCE
    assert row.event.message_id == "journey-published:welcome-series:v1"

    await storage.transition_journey(WS, "welcome-series", PAUSE, T0)
    assert len(await _signals(backend)) == 1, "a pause signals nothing"
    await storage.transition_journey(WS, "welcome-series", RESUME, T0)
    await storage.transition_journey(WS, "welcome-series", PAUSE, T0)
    await storage.transition_journey(WS, "welcome-series", RESUME, T0)
    signals = await _signals(backend)
    resumes = [s for s in signals if s[1] == "Journey Resume Requested"]
    assert len(resumes) == 2, "each resume has its own signal, even at the same instant"
    assert [s[1] for s in signals] == [
        "Journey Published",
        "Journey Resume Requested",
        "Journey Resume Requested",
    ], "delivered in the order the transitions were written"

    # A refused transition stores no signal either.
    await storage.save_journey(WS, "other", {**definition(), "id": "other"}, T0)
    with pytest.raises(IllegalTransition):
        await storage.transition_journey(WS, "other", RESUME, T0)
    await storage.transition_journey(WS, "welcome-series", ARCHIVE, T0)
    assert len(await _signals(backend)) == 3
