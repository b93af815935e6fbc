"""Where nothing reads membership events, the processor only puts them on the timeline.

In a workspace with no journey and no aggregate counting ``Segment Entered``
/ ``Segment Exited`` (``segment_effects.quiet``), such an event needs its
profile to exist, not its document: it is not loaded, not evaluated, not
stored again. Here the same customers go through two processors, one of
them forced down the full path, and everything they store is compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from rapport.core.model import Event, Profile
from rapport.core.segments import SegmentCatalog, SegmentDefinition
from rapport.runtime import processor as processor_module
from rapport.runtime.journey_catalogs import JourneyCatalog
from rapport.runtime.segment_effects import SEGMENT_EVENT_SOURCE, quiet
from tests.unit.segment_helpers import active_segment
from tests.unit.test_processor import (
    S2,
    WS,
    CountingStorage,
    Harness,
    define,
    view,
)
from tests.unit.test_processor_membership_events import play, stored

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class LoadRecordingStorage(CountingStorage):
    """Keeps which profile documents were read."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        self.loaded.extend(ids)
        return await super().load_profiles(workspace_id, ids)


async def scenario(h: Harness) -> None:
    await define(h, "s2", S2)
    await define(h, "s2-member", {"in_segment": "s2"})
    await play(h)


async def test_quiet_membership_events_store_what_the_full_path_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evaluated: list[Event] = []
    real_update = processor_module.update_memberships

    def recording_update(catalog: Any, before: Any, after: Any, event: Event, *rest: Any) -> Any:
        evaluated.append(event)
        return real_update(catalog, before, after, event, *rest)

    monkeypatch.setattr(processor_module, "update_memberships", recording_update)
    short_storage = LoadRecordingStorage()
    short = Harness(storage=short_storage)
    await scenario(short)
    short_path = await stored(short)
    short_evaluated = [e for e in evaluated if e.source == SEGMENT_EVENT_SOURCE]
    short_loaded = list(short_storage.loaded)

    monkeypatch.setattr(processor_module, "quiet_membership_events", lambda *args: False)
    evaluated.clear()
    long_storage = LoadRecordingStorage()
    long = Harness(storage=long_storage)
    await scenario(long)
    long_path = await stored(long)
    long_evaluated = [e for e in evaluated if e.source == SEGMENT_EVENT_SOURCE]
    long_loaded = list(long_storage.loaded)

    assert short_path == long_path
    membership_events = [e for _, e in short_path["log"] if e.source == SEGMENT_EVENT_SOURCE]
    assert {e.event for e in membership_events} == {"Segment Entered", "Segment Exited"}
    assert any("merged_into" in e.properties for e in membership_events)
    on_timelines = {m for t in short_path["timelines"].values() for _, m, *_ in t}
    assert {e.message_id for e in membership_events} <= on_timelines
    assert short_evaluated == [], "nothing evaluated for them"
    assert len(long_evaluated) == len(membership_events)
    assert len(short_loaded) < len(long_loaded), "their profiles' documents are not read"


async def test_a_quiet_membership_event_reads_and_writes_no_profile() -> None:
    storage = LoadRecordingStorage()
    h = Harness(storage=storage)
    await define(h, "s2", S2)
    start = h.clock.now()
    await h.log.append([view(n, "jacket", start, "u1") for n in (1, 2, 3)])
    await h.processor.run_once()
    committed = len(h.storage.batches)
    await h.relay.run_due()
    storage.loaded.clear()
    assert await h.processor.run_once() == 1, "the Segment Entered event"
    batch = h.storage.batches[committed]
    assert [e.name for e in batch.events] == ["Segment Entered"], "in the timeline"
    assert batch.profiles == [] and batch.scheduled == [] and batch.unscheduled == []
    assert storage.loaded == []


class RevisionCountingStorage(LoadRecordingStorage):
    """Also counts the segment revision checks."""

    async def segments_revision(self) -> int:
        self._count("segments_revision")
        return await super().segments_revision()


async def test_a_step_of_membership_events_checks_the_segment_definitions_once() -> None:
    storage = RevisionCountingStorage()
    h = Harness(storage=storage)
    await define(h, "s2", S2)
    start = h.clock.now()
    await h.log.append([view(n, "jacket", start, "u1") for n in (1, 2, 3)])
    await h.processor.run_once()
    await h.relay.run_due()
    storage.calls.clear()
    assert await h.processor.run_once() == 1, "the Segment Entered event"
    # Deciding that nothing reads it read the catalogs; building the step uses them again.
    assert storage.calls["segments_revision"] == 1
    await define(h, "joiner", {"event": "Segment Entered", "window": "1d", "op": "gte", "value": 1})
    await h.log.append([view(4, "jacket", start, "u1")])
    storage.calls.clear()
    assert await h.processor.run_once() == 1
    assert storage.calls["segments_revision"] == 1, "a customer event's step checks once too"


def definition(segment_id: str, condition: Any) -> SegmentDefinition:
    return active_segment(segment_id, condition, T0, workspace_id=WS)


def test_a_workspace_is_quiet_unless_something_reads_membership_events() -> None:
    views = SegmentCatalog([definition("s2", S2)])
    counting = SegmentCatalog(
        [
            definition("s2", S2),
            definition(
                "joiner", {"event": "Segment Exited", "window": "1d", "op": "gte", "value": 1}
            ),
        ]
    )
    assert quiet(views, JourneyCatalog(WS))
    assert quiet(SegmentCatalog([]), JourneyCatalog(WS))
    assert not quiet(counting, JourneyCatalog(WS)), "a segment counts them"
    assert not quiet(views, JourneyCatalog(WS, any_journey=True)), "a journey may read them"
