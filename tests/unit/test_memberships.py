"""The membership index's log consumer, with the real processor on the in-memory backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rapport.core.clock import VirtualClock
from rapport.core.identity import IdentityRules
from rapport.core.ids import SequentialIds
from rapport.core.model import Event, LogEntry
from rapport.core.segments import SegmentDraft
from rapport.runtime import memberships as memberships_module
from rapport.runtime.memberships import MembershipIndexer, segment_change
from rapport.runtime.processor import Processor
from rapport.runtime.relay import Relay
from rapport.storage.base import MembershipBatch
from rapport.storage.memory import MemoryEventLog, MemoryStorage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws"
GOLD = {"trait": "plan", "op": "equals", "value": "gold"}


def identify(n: int, user_id: str, **traits: Any) -> Event:
    return Event(
        workspace_id=WS,
        message_id=f"m{n}",
        type="identify",
        timestamp=T0 + timedelta(minutes=n),
        received_at=T0 + timedelta(minutes=n),
        source="write_key:k1",
        user_id=user_id,
        traits=traits,
    )


def membership_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "workspace_id": WS,
        "message_id": "segment-entered:1:gold",
        "type": "track",
        "event": "Segment Entered",
        "timestamp": T0,
        "received_at": T0,
        "source": "rapport:segments",
        "properties": {"segment_id": "gold", "version": 2},
        "profile_id": "prof_1",
        **overrides,
    }
    return Event(**fields)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(
        self,
        storage: MemoryStorage | None = None,
        *,
        follow_processing: bool = True,
        relay_wakes_index: bool = True,
    ) -> None:
        self.relay_wakes_index = relay_wakes_index
        self.storage = storage or MemoryStorage()
        self.log = MemoryEventLog()
        self.clock = VirtualClock(T0 + timedelta(days=1))
        self.relay = Relay(self.storage, self.log, self.clock, on_appended=self.appended)
        self.processor = Processor(
            self.storage,
            self.log,
            self.clock,
            SequentialIds(),
            IdentityRules(),
            on_scheduled=self.relay.notify,
        )
        self.monotonic = FakeMonotonic()
        self.index = MembershipIndexer(
            self.storage,
            self.log,
            upstream=self.processor if follow_processing else None,
            monotonic=self.monotonic,
        )

    def appended(self) -> None:
        """What ``Rapport`` does when the relay appends."""
        self.processor.notify()
        if self.relay_wakes_index:
            self.index.notify()

    async def define_gold(self) -> None:
        draft = SegmentDraft(
            workspace_id=WS, id="gold", name="Gold", kind="dynamic", condition=GOLD
        )
        await self.storage.put_segment(draft, self.clock.now())

    async def process_all(self) -> None:
        """Process, and deliver what processing scheduled, until nothing is left."""
        while await self.processor.run_once() + await self.relay.run_due():
            pass

    async def members(self) -> dict[str, int]:
        page = await self.storage.list_segment_members(WS, "gold", limit=100)
        return {m.profile_id: m.version for m in page.members}


def test_only_well_formed_membership_events_become_changes() -> None:
    entered = segment_change(LogEntry(7, membership_event()))
    assert entered is not None
    assert (entered.offset, entered.profile_id, entered.segment_id) == (7, "prof_1", "gold")
    assert (entered.version, entered.entered, entered.at) == (2, True, T0)
    exited = segment_change(LogEntry(8, membership_event(event="Segment Exited")))
    assert exited is not None and not exited.entered

    not_ours: list[Event] = [
        membership_event(source="write_key:k1"),
        membership_event(type="identify"),
        membership_event(event="Segment Viewed"),
    ]
    malformed: list[Event] = [
        membership_event(properties={"segment_id": "gold"}),
        membership_event(properties={"segment_id": "gold", "version": True}),
        membership_event(properties={"segment_id": "gold", "version": 0}),
        membership_event(properties={"segment_id": "Not A Slug", "version": 1}),
        membership_event(properties={"segment_id": 3, "version": 1}),
        membership_event(profile_id=None),
        membership_event(profile_id="prof\x001"),
    ]
    for event in [*not_ours, *malformed]:
        assert segment_change(LogEntry(9, event)) is None, event


async def test_entries_and_exits_from_processing_reach_the_index() -> None:
    h = Harness()
    await h.define_gold()
    await h.log.append([identify(1, "dana", plan="gold"), identify(2, "lee", plan="gold")])
    await h.process_all()
    read = await h.index.run_once()
    assert read == await h.log.end_offset()
    members = await h.members()
    assert len(members) == 2 and set(members.values()) == {1}
    assert await h.storage.segment_sizes(WS, ["gold"]) == {"gold": 2}

    await h.log.append([identify(3, "dana", plan="silver")])
    await h.process_all()
    await h.index.run_once()
    assert len(await h.members()) == 1
    profile_ids = list(members)
    history = await h.storage.list_segment_history(WS, profile_ids, limit=10)
    assert [c.entered for c in history.changes] == [False, True, True]
    assert h.index.changes_total == 3
    assert await h.storage.consumer_offset("memberships") == await h.log.end_offset()


async def test_stretches_without_membership_events_commit_their_offset_lazily() -> None:
    h = Harness()
    await h.log.append([identify(1, "dana", plan="bronze"), identify(2, "lee")])
    await h.index.load_offset()
    assert await h.index.run_once() == 2
    assert h.index.indexed_offset == 2
    assert await h.storage.consumer_offset("memberships") == 0, "not committed yet"
    await h.log.append([identify(3, "kim")])
    h.monotonic.now += memberships_module.OFFSET_COMMIT_INTERVAL
    assert await h.index.run_once() == 1
    assert await h.storage.consumer_offset("memberships") == 3
    await h.log.append([identify(4, "ash")])
    await h.index.run_once()
    await h.index.flush()
    assert await h.storage.consumer_offset("memberships") == 4


@pytest.mark.parametrize("wake", ["relay", "processing"])
async def test_the_loop_is_woken_by_appends_or_processing_not_by_polling(
    monkeypatch: pytest.MonkeyPatch, wake: str
) -> None:
    # With a poll this long, only a wake-up can bring the index up to date in time.
    monkeypatch.setattr(memberships_module, "POLL_INTERVAL", 60.0)
    h = Harness(follow_processing=wake == "processing", relay_wakes_index=wake == "relay")
    await h.define_gold()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(h.processor.run(stop)),
        asyncio.create_task(h.relay.run(stop)),
        asyncio.create_task(h.index.run(stop)),
    ]
    try:
        await asyncio.sleep(0.05)
        await h.log.append([identify(1, "dana", plan="gold")])
        h.processor.notify()
        # The Segment Entered event the step scheduled, appended by the relay.
        assert await h.processor.wait_processed(2, 5)
        assert await h.index.wait_indexed(2, 5)
        assert len(await h.members()) == 1
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    # Stopping commits what only moved in memory.
    assert await h.storage.consumer_offset("memberships") == await h.log.end_offset()


class FlakyStorage(MemoryStorage):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def commit_memberships(self, batch: MembershipBatch) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk unavailable")
        await super().commit_memberships(batch)


async def test_a_failing_commit_is_retried_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memberships_module, "POLL_INTERVAL", 0.01)
    h = Harness(FlakyStorage(failures=2))
    await h.define_gold()
    await h.log.append([identify(1, "dana", plan="gold")])
    await h.process_all()
    stop = asyncio.Event()
    task = asyncio.create_task(h.index.run(stop))
    try:
        assert await h.index.wait_indexed(await h.log.end_offset(), 5)
    finally:
        stop.set()
        await task
    assert len(await h.members()) == 1
    assert await h.storage.segment_sizes(WS, ["gold"]) == {"gold": 1}
