"""The segment membership index part of the ``Storage`` contract, over every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rapport.storage.base import MembershipBatch, SegmentChange, Storage
from tests.contract.conftest import Backend, BackendFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws_a"
OTHER_WS = "ws_b"
CONSUMER = "memberships"


def change(
    offset: int,
    profile_id: str,
    segment_id: str = "gold",
    *,
    entered: bool = True,
    version: int = 1,
    workspace_id: str = WS,
) -> SegmentChange:
    return SegmentChange(
        workspace_id=workspace_id,
        offset=offset,
        profile_id=profile_id,
        segment_id=segment_id,
        version=version,
        entered=entered,
        at=T0 + timedelta(seconds=offset),
    )


def batch(offset: int, *changes: SegmentChange, consumer: str = CONSUMER) -> MembershipBatch:
    return MembershipBatch(consumer=consumer, offset=offset, changes=list(changes))


async def members(storage: Storage, segment_id: str = "gold", ws: str = WS) -> dict[str, int]:
    page = await storage.list_segment_members(ws, segment_id, limit=1000)
    assert page.next_after is None
    return {m.profile_id: m.version for m in page.members}


async def history(storage: Storage, *profile_ids: str, ws: str = WS) -> list[tuple[int, bool]]:
    page = await storage.list_segment_history(ws, profile_ids, limit=1000)
    return [(c.offset, c.entered) for c in page.changes]


async def test_entries_and_exits_set_members_sizes_history_and_the_offset(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.commit_memberships(
        batch(10, change(3, "p1"), change(5, "p2"), change(7, "p3", "silver"))
    )
    assert await storage.consumer_offset(CONSUMER) == 10
    assert await members(storage) == {"p1": 1, "p2": 1}
    assert await storage.segment_sizes(WS, ["gold", "silver", "unknown"]) == {
        "gold": 2,
        "silver": 1,
        "unknown": 0,
    }
    page = await storage.list_segment_members(WS, "gold", limit=10)
    assert page.members[0].entered_at == T0 + timedelta(seconds=3)

    await storage.commit_memberships(batch(20, change(12, "p1", entered=False)))
    assert await members(storage) == {"p2": 1}
    assert (await storage.segment_sizes(WS, ["gold"]))["gold"] == 1
    assert await history(storage, "p1") == [(12, False), (3, True)]
    stored = (await storage.list_segment_history(WS, ["p1"], limit=1)).changes[0]
    assert stored == change(12, "p1", entered=False)
    assert await storage.consumer_offset(CONSUMER) == 20


async def test_replaying_a_batch_changes_nothing(backend: Backend) -> None:
    storage, _ = backend
    first = batch(10, change(3, "p1"), change(5, "p2"), change(6, "p2", entered=False))
    second = batch(20, change(15, "p1", entered=False), change(16, "p3"))
    await storage.commit_memberships(first)
    await storage.commit_memberships(second)
    before = (
        await members(storage),
        await storage.segment_sizes(WS, ["gold"]),
        await history(storage, "p1", "p2", "p3"),
    )
    # The same batches again, in either order: already applied, left out.
    await storage.commit_memberships(second)
    await storage.commit_memberships(first)
    after = (
        await members(storage),
        await storage.segment_sizes(WS, ["gold"]),
        await history(storage, "p1", "p2", "p3"),
    )
    assert (
        after
        == before
        == ({"p3": 1}, {"gold": 1}, [(16, True), (15, False), (6, False), (5, True), (3, True)])
    )
    # The offset never moves backwards.
    assert await storage.consumer_offset(CONSUMER) == 20


async def test_a_batch_overlapping_what_is_committed_applies_only_its_new_part(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.commit_memberships(batch(10, change(4, "p1")))
    # Another indexer read (0, 30] at once: offsets 1-10 are already in.
    await storage.commit_memberships(
        batch(30, change(4, "p1"), change(8, "p2"), change(25, "p1", entered=False))
    )
    assert await members(storage) == {}, "p2 at offset 8 was at or below the committed offset"
    assert (await storage.segment_sizes(WS, ["gold"]))["gold"] == 0
    assert await history(storage, "p1", "p2") == [(25, False), (4, True)]


async def test_the_last_change_of_a_batch_wins_and_sizes_never_go_negative(
    backend: Backend,
) -> None:
    storage, _ = backend
    await storage.commit_memberships(
        batch(
            10,
            change(2, "p1"),
            change(3, "p1", entered=False),
            change(4, "p1", version=2),
            # Leaving a segment one is not in (the entry came before the index).
            change(5, "p9", entered=False),
        )
    )
    assert await members(storage) == {"p1": 2}
    page = await storage.list_segment_members(WS, "gold", limit=5)
    assert page.members[0].entered_at == T0 + timedelta(seconds=4)
    assert (await storage.segment_sizes(WS, ["gold"]))["gold"] == 1
    # Changes given out of order are applied in offset order.
    await storage.commit_memberships(batch(20, change(14, "p1", entered=False), change(12, "p2")))
    await storage.commit_memberships(batch(30, change(22, "p2", entered=False), change(21, "p1")))
    assert await members(storage) == {"p1": 1}
    assert (await storage.segment_sizes(WS, ["gold"]))["gold"] == 1
    assert len(await history(storage, "p1", "p2", "p9")) == 8


async def test_an_offset_only_batch_moves_the_offset_and_consumers_are_apart(
    backend: Backend,
) -> None:
    storage, _ = backend
    assert await storage.consumer_offset(CONSUMER) == 0
    await storage.commit_memberships(batch(40))
    assert await storage.consumer_offset(CONSUMER) == 40
    assert await storage.consumer_offset("profiles") == 0
    await storage.commit_memberships(batch(7, change(5, "p1"), consumer="other-index"))
    assert await storage.consumer_offset("other-index") == 7
    assert await storage.consumer_offset(CONSUMER) == 40
    assert await members(storage) == {"p1": 1}


async def test_members_page_by_profile_id_in_byte_order(backend: Backend) -> None:
    storage, _ = backend
    ids = ["prof_b", "prof_A", "prof_a", "prof_é", "prof_Z", "prof_0", "prof_aa"]
    await storage.commit_memberships(
        batch(100, *(change(offset, p) for offset, p in enumerate(ids, start=1)))
    )
    expected = sorted(ids, key=str.encode)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await storage.list_segment_members(WS, "gold", limit=3, after=after)
        pages += 1
        seen.extend(m.profile_id for m in page.members)
        if page.next_after is None:
            break
        assert page.next_after == page.members[-1].profile_id
        after = page.next_after
    assert seen == expected
    assert pages == 3
    # An exact last page says there is no next one.
    exact = await storage.list_segment_members(WS, "gold", limit=7)
    assert len(exact.members) == 7 and exact.next_after is None
    # A cursor that is no member (it left meanwhile) still pages on from its place.
    rest = await storage.list_segment_members(WS, "gold", limit=10, after="prof_Y")
    assert [m.profile_id for m in rest.members] == expected[expected.index("prof_Z") :]
    assert (await storage.list_segment_members(WS, "nobody", limit=10)).members == []


async def test_history_is_newest_first_paged_and_spans_the_given_profiles(
    backend: Backend,
) -> None:
    storage, _ = backend
    changes = [
        change(offset, "p1" if offset % 2 else "p2", "gold" if offset % 3 else "silver")
        for offset in range(1, 12)
    ]
    changes.append(change(12, "p3"))
    await storage.commit_memberships(batch(20, *changes))
    offsets: list[int] = []
    before: int | None = None
    while True:
        page = await storage.list_segment_history(WS, ["p1", "p2", "p1"], limit=4, before=before)
        offsets.extend(c.offset for c in page.changes)
        if page.next_before is None:
            break
        assert page.next_before == page.changes[-1].offset
        before = page.next_before
    assert offsets == list(range(11, 0, -1))
    only_p1 = await storage.list_segment_history(WS, ["p1"], limit=100)
    assert [c.offset for c in only_p1.changes] == [11, 9, 7, 5, 3, 1]
    assert {c.segment_id for c in only_p1.changes} == {"gold", "silver"}
    assert (await storage.list_segment_history(WS, [], limit=10)).changes == []


async def test_workspaces_keep_their_own_index(backend: Backend) -> None:
    storage, _ = backend
    await storage.commit_memberships(
        batch(10, change(1, "p1"), change(2, "p1", workspace_id=OTHER_WS))
    )
    await storage.commit_memberships(batch(20, change(11, "p1", entered=False)))
    assert await members(storage) == {}
    assert await members(storage, ws=OTHER_WS) == {"p1": 1}
    assert await storage.segment_sizes(OTHER_WS, ["gold"]) == {"gold": 1}
    assert await history(storage, "p1", ws=OTHER_WS) == [(2, True)]


async def test_times_come_back_as_the_same_instants(backend: Backend) -> None:
    storage, _ = backend
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=paris)
    await storage.commit_memberships(
        batch(
            5,
            SegmentChange(
                workspace_id=WS,
                offset=5,
                profile_id="p1",
                segment_id="gold",
                version=3,
                entered=True,
                at=at,
            ),
        )
    )
    page = await storage.list_segment_members(WS, "gold", limit=1)
    assert page.members[0].entered_at == at
    assert (await storage.list_segment_history(WS, ["p1"], limit=1)).changes[0].at == at


async def test_the_index_survives_a_reopen(backend_factory: BackendFactory) -> None:
    if not backend_factory.supports_reopen:
        pytest.skip("nothing survives closing this backend")
    opened = await backend_factory.open()
    storage, _ = opened
    await storage.commit_memberships(
        batch(10, change(3, "p1"), change(5, "p2"), change(8, "p2", entered=False))
    )
    await backend_factory.close(opened)
    reopened, _ = await backend_factory.open()
    assert await reopened.consumer_offset(CONSUMER) == 10
    assert await members(reopened) == {"p1": 1}
    assert await reopened.segment_sizes(WS, ["gold"]) == {"gold": 1}
    assert await history(reopened, "p1", "p2") == [(8, False), (5, True), (3, True)]
    # A replay after the reopen is still left out.
    await reopened.commit_memberships(batch(10, change(3, "p1", entered=False)))
    assert await members(reopened) == {"p1": 1}
