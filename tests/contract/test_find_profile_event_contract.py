"""``Storage.find_profile_event``: the composer's lookup of a trigger event, every backend."""

from __future__ import annotations

from tests.contract.conftest import Backend
from tests.contract.test_storage_contract import WS, batch, profile, timeline_event


async def test_finds_her_event_by_message_id_without_paging(backend: Backend) -> None:
    storage, _ = backend
    # More than one page of the default lookup (500), and the event sought is the oldest.
    events = [timeline_event(offset, "p1") for offset in range(1, 602)]
    await storage.commit_processing(
        batch(
            602,
            profiles=[profile("p1"), profile("p2")],
            events=[*events, timeline_event(602, "p2")],
        )
    )

    found = await storage.find_profile_event(WS, "p1", "m1")
    assert found is not None
    assert (found.offset, found.profile_id, found.message_id) == (1, "p1", "m1")
    assert found == events[0]
    newest = await storage.find_profile_event(WS, "p1", "m601")
    assert newest is not None and newest.offset == 601


async def test_another_profile_or_workspace_does_not_answer(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_processing(
        batch(2, profiles=[profile("p1"), profile("p2")], events=[timeline_event(1, "p2")])
    )
    assert await storage.find_profile_event(WS, "p2", "m1") is not None
    assert await storage.find_profile_event(WS, "p1", "m1") is None
    assert await storage.find_profile_event("ws_other", "p2", "m1") is None
    assert await storage.find_profile_event(WS, "p2", "m-unknown") is None


async def test_finds_many_events_at_once(backend: Backend) -> None:
    storage, _ = backend
    events = [timeline_event(offset, "p1") for offset in range(1, 602)]
    await storage.commit_processing(
        batch(
            603,
            profiles=[profile("p1"), profile("p2")],
            events=[*events, timeline_event(602, "p2"), timeline_event(603, "p2")],
        )
    )
    wanted = [("p1", "m1"), ("p1", "m601"), ("p2", "m602"), ("p2", "m1"), ("p1", "m1")]
    found = await storage.find_profile_events(WS, wanted)
    # Each pair answers what ``find_profile_event`` answers; the missing ones are left out.
    expected = {
        pair: event
        for pair in wanted
        if (event := await storage.find_profile_event(WS, *pair)) is not None
    }
    assert found == expected
    assert set(found) == {("p1", "m1"), ("p1", "m601"), ("p2", "m602")}
    assert found[("p1", "m1")] == events[0]
    assert await storage.find_profile_events("ws_other", wanted) == {}
    assert await storage.find_profile_events(WS, []) == {}
