"""The processor end to end on the in-memory backend."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rapport.core.clock import VirtualClock
from rapport.core.identity import IdentityRules
from rapport.core.ids import SequentialIds
from rapport.core.model import Event, Identifier, Membership, Profile, Rejection
from rapport.core.segments import SegmentDraft
from rapport.runtime import processor as processor_module
from rapport.runtime import segment_effects
from rapport.runtime.processor import Processor
from rapport.runtime.relay import Relay
from rapport.storage.base import ProcessingBatch
from rapport.storage.memory import MemoryEventLog, MemoryStorage, open_memory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS = "ws"


def make_event(n: int, type: str = "track", **fields: Any) -> Event:
    fields.setdefault("workspace_id", WS)
    if type == "track":
        fields.setdefault("event", "Viewed")
    return Event(
        message_id=f"m{n}",
        type=type,
        timestamp=T0 + timedelta(minutes=n),
        received_at=T0 + timedelta(minutes=n),
        source="write_key:k1",
        **fields,
    )


class CountingStorage(MemoryStorage):
    """The memory backend, counting round trips and keeping committed batches."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}
        self.batches: list[ProcessingBatch] = []

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def find_profile_ids(
        self, workspace_id: str, identifiers: Sequence[Identifier]
    ) -> dict[Identifier, str]:
        self._count("find_profile_ids")
        return await super().find_profile_ids(workspace_id, identifiers)

    async def load_profiles(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Profile]:
        self._count("load_profiles")
        return await super().load_profiles(workspace_id, ids)

    async def commit_processing(self, batch: ProcessingBatch) -> None:
        self._count("commit_processing")
        await super().commit_processing(batch)
        self.batches.append(batch)


class Harness:
    def __init__(
        self,
        rules: IdentityRules | None = None,
        batch_size: int = 500,
        cache_profiles: int = 0,
        storage: CountingStorage | None = None,
    ) -> None:
        self.storage = storage or CountingStorage()
        self.log = MemoryEventLog()
        self.clock = VirtualClock(T0 + timedelta(days=1))
        self.relay = Relay(self.storage, self.log, self.clock)
        self.processor = Processor(
            self.storage,
            self.log,
            self.clock,
            SequentialIds(),
            rules or IdentityRules(),
            batch_size=batch_size,
            cache_profiles=cache_profiles,
            on_scheduled=self.relay.notify,
        )

    async def feed(self, *events: Event) -> int:
        """Append and process one step; what it scheduled for now is then delivered."""
        await self.log.append(events)
        processed = await self.processor.run_once()
        await self.relay.run_due()
        return processed

    async def owner(self, type: str, value: str, ws: str = WS) -> str:
        found = await self.storage.find_profile_ids(ws, [Identifier(type, value)])
        return found[Identifier(type, value)]

    async def profile_of(self, type: str, value: str) -> Profile:
        pid = await self.owner(type, value)
        return (await self.storage.load_profiles(WS, [pid]))[pid]

    async def timeline(self, profile_id: str) -> list[str]:
        page = await self.storage.list_profile_events(WS, profile_id, limit=100)
        return [e.message_id for e in page.events]


async def test_anonymous_visitor_identifies_in_one_batch() -> None:
    h = Harness()
    processed = await h.feed(
        make_event(1, anonymous_id="anon-1", context={"traits": {"referrer": "ad"}}),
        make_event(2, "page", anonymous_id="anon-1", name="Pricing"),
        make_event(3, "identify", user_id="u-1", anonymous_id="anon-1", traits={"email": "D@x.io"}),
        make_event(4, user_id="u-1", event="Order Completed"),
    )
    calls = dict(h.storage.calls)
    assert processed == 4
    profile = await h.profile_of("user_id", "u-1")
    assert profile.identifiers == [
        Identifier("anonymous_id", "anon-1"),
        Identifier("email", "d@x.io"),
        Identifier("user_id", "u-1"),
    ]
    assert {k: v.value for k, v in profile.traits.items()} == {"referrer": "ad", "email": "D@x.io"}
    assert profile.event_count == 4
    assert (profile.first_seen, profile.last_seen) == (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=4),
    )
    assert await h.timeline(profile.id) == ["m4", "m3", "m2", "m1"]
    page = await h.storage.list_profile_events(WS, profile.id, limit=1)
    stored = page.events[0]
    assert (stored.type, stored.name, stored.offset) == ("track", "Order Completed", 4)
    assert msgspec.json.decode(stored.body, type=Event) == make_event(
        4, user_id="u-1", event="Order Completed"
    )
    # Round trips are per batch, not per event.
    assert calls == {"find_profile_ids": 1, "commit_processing": 1}
    assert h.processor.processed_offset == 4
    assert await h.storage.consumer_offset("profiles") == 4


async def test_merge_across_batches_unions_timelines_and_redirects() -> None:
    h = Harness()
    await h.feed(
        make_event(1, anonymous_id="phone-app"),
        make_event(2, "identify", user_id="dana", traits={"email": "dana@x.io", "plan": "pro"}),
        make_event(3, anonymous_id="laptop", context={"traits": {"plan": "free"}}),
    )
    phone = await h.owner("anonymous_id", "phone-app")
    laptop = await h.owner("anonymous_id", "laptop")
    dana = await h.owner("user_id", "dana")
    assert len({phone, laptop, dana}) == 3

    await h.feed(
        make_event(4, "identify", anonymous_id="phone-app", traits={"email": "DANA@x.io"}),
        make_event(5, "alias", user_id="dana", previous_id="laptop"),
    )
    for type, value in [
        ("anonymous_id", "phone-app"),
        ("anonymous_id", "laptop"),
        ("email", "dana@x.io"),
        ("user_id", "dana"),
    ]:
        assert await h.owner(type, value) == dana
    assert await h.timeline(dana) == ["m5", "m4", "m3", "m2", "m1"]
    for gone in (phone, laptop):
        assert await h.storage.resolve_profile_id(WS, gone) == dana
        assert await h.storage.load_profiles(WS, [gone]) == {}
    merges = await h.storage.list_merges(WS, dana)
    assert [(m.loser, m.message_id) for m in merges] == [(phone, "m4"), (laptop, "m5")]
    profile = (await h.storage.load_profiles(WS, [dana]))[dana]
    assert sorted(profile.merged_from) == sorted([phone, laptop])
    assert profile.event_count == 5
    # The newer observation wins whatever profile it came from.
    assert profile.traits["plan"].value == "free"


async def test_identifier_rows_reflect_owners_after_a_chain_of_merges_in_one_batch() -> None:
    h = Harness()
    await h.feed(
        make_event(1, anonymous_id="a"),
        make_event(2, anonymous_id="b"),
        make_event(3, "identify", anonymous_id="a", traits={"email": "x@y.io"}),
        make_event(4, "identify", anonymous_id="b", traits={"email": "x@y.io"}),
        make_event(5, "identify", user_id="u", traits={"email": "x@y.io"}),
    )
    owner = await h.owner("user_id", "u")
    for type, value in [("anonymous_id", "a"), ("anonymous_id", "b"), ("email", "x@y.io")]:
        assert await h.owner(type, value) == owner
    assert await h.timeline(owner) == ["m5", "m4", "m3", "m2", "m1"]
    (batch,) = h.storage.batches
    assert {pid for _, _, pid in batch.identifiers} == {owner}
    assert [p.id for p in batch.profiles] == [owner]
    assert {e.profile_id for e in batch.events} == {owner}


async def test_two_user_ids_on_a_shared_device_stay_apart() -> None:
    h = Harness()
    await h.feed(
        make_event(1, "identify", user_id="dana", anonymous_id="kiosk"),
        make_event(2, "identify", user_id="sam", anonymous_id="kiosk"),
        make_event(3, anonymous_id="kiosk"),
    )
    dana = await h.owner("user_id", "dana")
    sam = await h.owner("user_id", "sam")
    assert dana != sam
    assert await h.owner("anonymous_id", "kiosk") == dana
    assert await h.timeline(sam) == ["m2"]
    assert await h.timeline(dana) == ["m3", "m1"]
    assert await h.storage.list_merges(WS, dana) == []


async def test_workspaces_never_share_profiles() -> None:
    h = Harness()
    await h.feed(
        make_event(1, "identify", user_id="u", traits={"email": "d@x.io"}),
        make_event(2, "identify", user_id="u", workspace_id="ws2", traits={"email": "d@x.io"}),
    )
    assert h.storage.calls["find_profile_ids"] == 2  # one per workspace in the batch
    assert await h.owner("email", "d@x.io") != await h.owner("email", "d@x.io", ws="ws2")


async def test_events_addressing_a_profile_follow_its_merges() -> None:
    h = Harness()
    await h.feed(make_event(1, anonymous_id="a"), make_event(2, user_id="u"))
    anon = await h.owner("anonymous_id", "a")
    await h.feed(make_event(3, "identify", user_id="u", anonymous_id="a"))
    user = await h.owner("user_id", "u")
    await h.feed(make_event(4, "identify", profile_id=anon, traits={"vip": True}))
    profile = (await h.storage.load_profiles(WS, [user]))[user]
    assert profile.traits["vip"].value is True
    assert await h.timeline(user) == ["m4", "m3", "m2", "m1"]


async def test_replaying_a_committed_batch_is_idempotent() -> None:
    h = Harness()
    await h.feed(make_event(1, anonymous_id="a"), make_event(2, user_id="u"))
    await h.feed(
        make_event(3, "identify", user_id="u", anonymous_id="a", traits={"plan": "pro"}),
        make_event(4, user_id="u"),
    )
    user = await h.owner("user_id", "u")

    async def state() -> tuple[Any, ...]:
        return (
            await h.storage.load_profiles(WS, [user]),
            await h.storage.find_profile_ids(WS, [Identifier("anonymous_id", "a")]),
            await h.storage.list_profile_events(WS, user, limit=100),
            await h.storage.list_merges(WS, user),
            await h.storage.consumer_offset("profiles"),
        )

    before = await state()
    await h.storage.commit_processing(h.storage.batches[-1])
    assert await state() == before
    # A restarted processor resumes after the committed offset.
    again = Processor(h.storage, h.log, h.clock, SequentialIds(), IdentityRules())
    assert await again.run_once() == 0
    assert await state() == before


async def test_a_failing_event_is_recorded_and_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_apply = processor_module.apply_event

    def apply_or_fail(profile: Profile, event: Event, now: datetime) -> Profile:
        if event.message_id == "m2":
            raise ValueError("cannot digest this")
        return real_apply(profile, event, now)

    monkeypatch.setattr(processor_module, "apply_event", apply_or_fail)
    h = Harness()
    assert (
        await h.feed(
            make_event(1, "identify", user_id="u", traits={"a": 1}),
            make_event(2, "identify", user_id="u", traits={"email": "new@x.io", "b": 2}),
            make_event(3, "identify", user_id="u", traits={"c": 3}),
        )
        == 3
    )
    profile = await h.profile_of("user_id", "u")
    assert set(profile.traits) == {"a", "c"}
    # The failed event changed nothing: not even its identifier attached.
    assert Identifier("email", "new@x.io") not in profile.identifiers
    assert await h.timeline(profile.id) == ["m3", "m1"]
    (failure,) = await h.storage.list_rejections(WS, limit=10)
    assert (failure.code, failure.message_id, failure.source) == (
        "processing_failed",
        "m2",
        "write_key:k1",
    )
    assert "offset 2" in failure.message and "cannot digest this" in failure.message
    assert msgspec.json.decode(failure.payload, type=Event).message_id == "m2"
    assert h.processor.processed_offset == 3
    assert (h.processor.processed_total, h.processor.failed_total) == (3, 1)


class FlakyStorage(CountingStorage):
    """Commits fail while they contain ``poison_offset``, or all fail while ``down``."""

    def __init__(self, poison_offset: int) -> None:
        super().__init__()
        self.poison_offset = poison_offset
        self.down = False

    async def commit_processing(self, batch: ProcessingBatch) -> None:
        if self.down or any(e.offset == self.poison_offset for e in batch.events):
            self._count("failed_commit")
            raise OSError("disk says no")
        await super().commit_processing(batch)

    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        if self.down:
            raise OSError("disk says no")
        await super().record_rejections(rejections)


async def test_run_isolates_and_skips_an_event_whose_commit_keeps_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processor_module, "POLL_INTERVAL", 0.001)
    storage = FlakyStorage(poison_offset=3)
    log = MemoryEventLog()
    proc = Processor(storage, log, VirtualClock(T0), SequentialIds(), IdentityRules())
    await log.append([make_event(n, user_id=f"u{n}") for n in range(1, 7)])
    stop = asyncio.Event()
    task = asyncio.create_task(proc.run(stop))
    try:
        assert await proc.wait_processed(6, timeout=10)
    finally:
        stop.set()
        await task
    for n in (1, 2, 4, 5, 6):
        owner = await storage.find_profile_ids(WS, [Identifier("user_id", f"u{n}")])
        assert owner, f"event {n} was lost"
    assert await storage.find_profile_ids(WS, [Identifier("user_id", "u3")]) == {}
    (skipped,) = await storage.list_rejections(WS, limit=10)
    assert skipped.message_id == "m3" and skipped.code == "processing_failed"
    assert "OSError: disk says no" in skipped.message
    assert proc.failed_total == 1


async def test_run_waits_out_a_storage_outage_without_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processor_module, "POLL_INTERVAL", 0.001)
    monkeypatch.setattr(processor_module, "MAX_BACKOFF", 0.005)
    storage = FlakyStorage(poison_offset=-1)
    log = MemoryEventLog()
    proc = Processor(storage, log, VirtualClock(T0), SequentialIds(), IdentityRules())
    await log.append([make_event(1, user_id="u1")])
    stop = asyncio.Event()
    task = asyncio.create_task(proc.run(stop))
    try:
        storage.down = True
        assert not await proc.wait_processed(1, timeout=0.3)
        assert storage.calls["failed_commit"] > 3  # retried, isolated, tried to skip...
        assert await storage.list_rejections(WS, limit=10) == []  # ...but skipped nothing
        storage.down = False
        assert await proc.wait_processed(1, timeout=5)
    finally:
        stop.set()
        await task
    assert await storage.find_profile_ids(WS, [Identifier("user_id", "u1")])
    assert proc.failed_total == 0


async def test_run_sleeps_when_idle_and_wakes_on_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a poll interval this long, only notify() can wake the loop in time.
    monkeypatch.setattr(processor_module, "POLL_INTERVAL", 30.0)
    storage, log = open_memory()
    proc = Processor(storage, log, VirtualClock(T0), SequentialIds(), IdentityRules())
    reads = 0
    real_read = log.read

    async def counting_read(after: int, limit: int) -> Any:
        nonlocal reads
        reads += 1
        return await real_read(after, limit)

    log.read = counting_read  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(proc.run(stop))
    try:
        await asyncio.sleep(0.1)
        assert reads == 1, "an idle processor must sleep, not spin"
        await log.append([make_event(1, user_id="u")])
        proc.notify()
        assert await proc.wait_processed(1, timeout=1)
        assert not await proc.wait_processed(2, timeout=0.01)
    finally:
        stop.set()
        proc.notify()
        await asyncio.wait_for(task, timeout=1)
    assert await storage.find_profile_ids(WS, [Identifier("user_id", "u")])


async def test_the_next_step_builds_on_the_one_still_committing() -> None:
    h = Harness(batch_size=1)
    await h.log.append(
        [
            make_event(1, anonymous_id="a"),
            make_event(2, anonymous_id="b"),
            make_event(3, "identify", anonymous_id="a", user_id="u", traits={"email": "u@x.io"}),
            make_event(4, "identify", anonymous_id="b", traits={"email": "u@x.io"}),
            make_event(5, anonymous_id="b"),
        ]
    )
    assert [await h.processor.run_once() for _ in range(6)] == [1, 1, 1, 1, 1, 0]
    lookups = h.storage.calls["find_profile_ids"]
    user = await h.owner("user_id", "u")
    for type, value in [("anonymous_id", "a"), ("anonymous_id", "b"), ("email", "u@x.io")]:
        assert await h.owner(type, value) == user
    profile = (await h.storage.load_profiles(WS, [user]))[user]
    assert profile.event_count == 5
    assert await h.timeline(user) == ["m5", "m4", "m3", "m2", "m1"]
    # Each step was built while its predecessor committed, on top of the
    # predecessor's working set: step 5 (anonymous id "b", just merged by
    # step 4) found everything there and never asked storage.
    assert lookups == 4
    assert h.storage.calls["commit_processing"] == 5


class FailOnceStorage(CountingStorage):
    """The commit of the batch ending at ``offset`` fails the first time."""

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.fail_at: int | None = offset

    async def commit_processing(self, batch: ProcessingBatch) -> None:
        if batch.offset == self.fail_at:
            self.fail_at = None
            raise OSError("disk says no")
        await super().commit_processing(batch)


@pytest.mark.parametrize("cache_profiles", [0, 100])
async def test_a_failed_commit_drops_the_step_built_on_it(cache_profiles: int) -> None:
    h = Harness(batch_size=1, cache_profiles=cache_profiles, storage=FailOnceStorage(2))
    await h.log.append(
        [
            make_event(1, "identify", user_id="u", traits={"plan": "free"}),
            make_event(2, "identify", user_id="u", anonymous_id="a", traits={"plan": "pro"}),
            make_event(3, anonymous_id="a"),
        ]
    )
    assert await h.processor.run_once() == 1
    with pytest.raises(OSError):
        await h.processor.run_once()
    assert h.processor.processed_offset == 1
    # Step 3 was built on top of step 2, which never landed: it is built again.
    assert await h.processor.run_once() == 1
    assert await h.processor.run_once() == 1
    assert await h.processor.run_once() == 0
    profile = await h.profile_of("user_id", "u")
    assert profile.event_count == 3
    assert profile.traits["plan"].value == "pro"
    assert await h.owner("anonymous_id", "a") == profile.id
    assert await h.timeline(profile.id) == ["m3", "m2", "m1"]


async def test_load_offset_forgets_what_was_prepared_and_cached() -> None:
    h = Harness(batch_size=1, cache_profiles=100)
    await h.log.append([make_event(1, user_id="u"), make_event(2, user_id="u")])
    assert await h.processor.run_once() == 1
    # Someone else processes event 2 (the offset moves behind our back).
    other = Processor(h.storage, h.log, h.clock, SequentialIds(), IdentityRules())
    await other.load_offset()
    assert await other.run_once() == 1
    await h.log.append([make_event(3, user_id="u")])
    await h.processor.load_offset()
    assert await h.processor.run_once() == 1
    profile = await h.profile_of("user_id", "u")
    assert profile.event_count == 3


async def test_a_big_step_gives_the_event_loop_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "YIELD_EVERY", 2)
    h = Harness(batch_size=10)
    await h.log.append([make_event(n, anonymous_id=f"a{n}") for n in range(1, 11)])
    turns = 0
    done = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    assert await h.processor.run_once() == 10
    during = turns - before
    done.set()
    await other
    # Ten events, a turn after every second one (what storage awaits may add more).
    assert during >= 4


@pytest.mark.parametrize(("busy", "sizes"), [(False, [5, 5]), (True, [2, 2, 2, 2, 2])])
async def test_steps_are_short_while_ingest_keeps_the_loop_busy(
    monkeypatch: pytest.MonkeyPatch, busy: bool, sizes: list[int]
) -> None:
    monkeypatch.setattr(processor_module, "BUSY_STEP", 2)
    h = Harness(batch_size=5)

    async def give_way() -> bool:
        return busy

    h.processor.give_way = give_way
    await h.log.append([make_event(n, anonymous_id=f"a{n}") for n in range(1, 11)])
    stop = asyncio.Event()
    running = asyncio.create_task(h.processor.run(stop))
    assert await h.processor.wait_processed(10, timeout=5)
    stop.set()
    h.processor.notify()
    await running
    offsets = [0] + [batch.offset for batch in h.storage.batches]
    assert [b - a for a, b in itertools.pairwise(offsets)] == sizes


async def test_batch_size_bounds_each_step() -> None:
    h = Harness(batch_size=2)
    await h.log.append([make_event(n, anonymous_id=f"a{n}") for n in range(1, 6)])
    assert [await h.processor.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert h.storage.calls["commit_processing"] == 3


# -- invariants over random streams ---------------------------------------------

USERS = ["u1", "u2", "u3"]
ANONS = ["a1", "a2", "a3", "a4"]
EMAILS = ["e1@x.io", "e2@x.io", "E1@X.io", "null"]


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    events = []
    for n in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["track", "identify", "alias"]))
        fields: dict[str, Any] = {}
        user = draw(st.sampled_from([None, *USERS]))
        anon = draw(st.sampled_from([None, *ANONS]))
        if user is None and anon is None:
            anon = ANONS[0]
        if user is not None:
            fields["user_id"] = user
        if anon is not None:
            fields["anonymous_id"] = anon
        email = draw(st.sampled_from([None, *EMAILS]))
        if kind == "identify" and email is not None:
            fields["traits"] = {"email": email}
        elif email is not None:
            fields["context"] = {"traits": {"email": email}}
        if kind == "alias":
            fields["previous_id"] = draw(st.sampled_from(USERS + ANONS))
        events.append(make_event(n, kind, **fields))
    return events


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(), batch_size=st.integers(1, 8), cache_profiles=st.sampled_from([0, 1, 100]))
async def test_any_stream_leaves_a_consistent_identity_graph(
    events: list[Event], batch_size: int, cache_profiles: int
) -> None:
    # Small batches make every step build on a step still committing (the
    # memory backend applies a commit only when it is awaited); a cache of
    # one profile evicts all the time.
    rules = IdentityRules.from_config(identifier_traits={"email": "email"}, caps={"email": 2})
    h = Harness(rules, batch_size=batch_size, cache_profiles=cache_profiles)
    await h.log.append(events)
    while await h.processor.run_once():
        pass

    everything = [Identifier("user_id", u) for u in USERS]
    everything += [Identifier("anonymous_id", a) for a in ANONS + USERS]  # alias previousId
    everything += [Identifier("email", e.lower()) for e in EMAILS]
    owners = await h.storage.find_profile_ids(WS, everything)
    live = await h.storage.load_profiles(WS, sorted(set(owners.values())))
    # Every known identifier is owned by exactly one live profile, which lists it.
    assert set(live) == set(owners.values())
    for identifier, owner in owners.items():
        assert identifier in live[owner].identifiers
        others = [p.id for p in live.values() if p.id != owner and identifier in p.identifiers]
        assert others == []
    for profile in live.values():
        assert profile.identifiers == sorted(set(profile.identifiers))
        assert sum(1 for i in profile.identifiers if i.type == "user_id") <= 1
        assert sum(1 for i in profile.identifiers if i.type == "email") <= 2
        assert all(owners.get(i) == profile.id for i in profile.identifiers)
    assert Identifier("email", "null") not in owners
    # Every event is on exactly one live timeline and counted exactly once,
    # including profiles that own nothing (all their identifiers were junk).
    ever = sorted({p.id for batch in h.storage.batches for p in batch.profiles})
    all_live = await h.storage.load_profiles(WS, ever)
    assert set(live) <= set(all_live)
    assert sum(p.event_count for p in all_live.values()) == len(events)
    offsets: list[int] = []
    for pid in all_live:
        page = await h.storage.list_profile_events(WS, pid, limit=1000)
        offsets.extend(e.offset for e in page.events)
    assert sorted(offsets) == list(range(1, len(events) + 1))
    for pid in ever:
        assert await h.storage.resolve_profile_id(WS, pid) in all_live


# -- segments --------------------------------------------------------------------

S2 = {
    "event": "Product Viewed",
    "aggregate": "count",
    "window": "1h",
    "key": "properties.product_id",
    "op": "gte",
    "value": 3,
}


async def define(h: Harness, segment_id: str, condition: Any, *, ws: str = WS) -> int:
    stored = await h.storage.put_segment(
        SegmentDraft(
            workspace_id=ws, id=segment_id, name=segment_id, kind="dynamic", condition=condition
        ),
        h.clock.now(),
    )
    return stored.version


def view(n: int, product: str, at: datetime, user: str = "u") -> Event:
    return msgspec.structs.replace(
        make_event(n, event="Product Viewed", user_id=user, properties={"product_id": product}),
        timestamp=at,
        received_at=at,
    )


async def drain(h: Harness) -> None:
    """Process and deliver until nothing is left (membership events come back through the log)."""
    while await h.processor.run_once() + await h.relay.run_due():
        pass


async def logged_segment_events(h: Harness) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, message id, properties)``; the message id names the trigger's message id."""
    entries = await h.log.read(0, 1000)
    message_ids = {e.offset: e.event.message_id for e in entries}
    found = []
    for entry in entries:
        event = entry.event
        if event.source != processor_module.SEGMENT_EVENT_SOURCE:
            continue
        direction, offset, *rest = event.message_id.split(":")
        readable = ":".join([direction, message_ids[int(offset)], *rest])
        found.append((event.event or "", readable, event.properties))
    return found


async def test_s2_enters_on_the_third_view_of_the_same_product_within_an_hour() -> None:
    h = Harness()
    await define(h, "s2", S2)
    start = h.clock.now()
    await h.feed(view(1, "jacket", start), view(2, "shoes", start + timedelta(minutes=5)))
    h.clock.advance(timedelta(minutes=20))
    await h.feed(view(3, "jacket", h.clock.now()))
    await drain(h)
    profile = await h.profile_of("user_id", "u")
    assert profile.segments == {}, "two views of the jacket, one of shoes: not yet"
    assert await logged_segment_events(h) == []

    h.clock.advance(timedelta(minutes=30))
    entered_at = h.clock.now()
    await h.feed(view(4, "jacket", entered_at))
    profile = await h.profile_of("user_id", "u")
    assert profile.segments == {"s2": Membership(version=1, entered_at=entered_at)}
    assert await logged_segment_events(h) == [
        ("Segment Entered", "segment-entered:m4:s2", {"segment_id": "s2", "version": 1})
    ]
    await drain(h)
    page = await h.storage.list_profile_events(WS, profile.id, limit=1)
    newest = page.events[0]
    assert newest.name == "Segment Entered"
    assert newest.message_id.startswith("segment-entered:")
    # A fourth view changes nothing: no second "entered".
    await h.feed(view(6, "jacket", h.clock.now()))
    await drain(h)
    assert len(await logged_segment_events(h)) == 1
    # The membership event is in the timeline, but it is not the customer's activity.
    profile = await h.profile_of("user_id", "u")
    assert profile.event_count == 5
    assert profile.last_seen == h.clock.now()


async def test_views_spread_over_more_than_an_hour_do_not_enter() -> None:
    h = Harness()
    await define(h, "s2", S2)
    for n in range(1, 4):
        await h.feed(view(n, "jacket", h.clock.now()))
        h.clock.advance(timedelta(minutes=31))
    await drain(h)
    assert (await h.profile_of("user_id", "u")).segments == {}
    assert await logged_segment_events(h) == []


async def test_trait_segments_enter_and_exit_and_readers_follow_in_the_same_event() -> None:
    h = Harness()
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"})
    await define(
        h, "gold-or-vip", {"any": [{"in_segment": "gold"}, {"trait": "vip", "op": "exists"}]}
    )
    await h.feed(make_event(1, "identify", user_id="u", traits={"plan": "gold"}))
    profile = await h.profile_of("user_id", "u")
    assert set(profile.segments) == {"gold", "gold-or-vip"}
    await h.feed(make_event(2, "identify", user_id="u", traits={"plan": "silver"}))
    profile = await h.profile_of("user_id", "u")
    assert profile.segments == {}
    events = [(name, message_id) for name, message_id, _ in await logged_segment_events(h)]
    assert sorted(events) == [
        ("Segment Entered", "segment-entered:m1:gold"),
        ("Segment Entered", "segment-entered:m1:gold-or-vip"),
        ("Segment Exited", "segment-exited:m2:gold"),
        ("Segment Exited", "segment-exited:m2:gold-or-vip"),
    ]


async def test_definitions_are_reloaded_when_they_change_and_deleted_ones_are_left() -> None:
    h = Harness()
    await h.feed(make_event(1, "identify", user_id="u", traits={"plan": "gold"}))
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"})
    # Not re-evaluated by an event that cannot change it (backfill is separate).
    await h.feed(make_event(2, user_id="u", event="Clicked"))
    assert (await h.profile_of("user_id", "u")).segments == {}
    await h.feed(make_event(3, "identify", user_id="u", traits={"plan": "gold", "tier": 2}))
    await h.feed(make_event(4, "identify", user_id="u", traits={"plan": "platinum"}))
    await h.feed(make_event(5, "identify", user_id="u", traits={"plan": "gold"}))
    assert (await h.profile_of("user_id", "u")).segments["gold"].version == 1

    # A new version the profile still matches: it stays in, under the new version.
    version = await define(h, "gold", {"trait": "plan", "op": "in", "value": ["gold", "x"]})
    await h.feed(make_event(6, user_id="u", event="Clicked"))
    assert (await h.profile_of("user_id", "u")).segments["gold"].version == version

    await h.storage.delete_segment(WS, "gold", h.clock.now())
    await h.feed(make_event(7, user_id="u", event="Clicked"))
    assert (await h.profile_of("user_id", "u")).segments == {}
    last = (await logged_segment_events(h))[-1]
    assert last == (
        "Segment Exited",
        "segment-exited:m7:gold",
        {"segment_id": "gold", "version": 2},
    )


async def test_segments_stay_in_their_workspace() -> None:
    h = Harness()
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"}, ws="other")
    await h.feed(make_event(1, "identify", user_id="u", traits={"plan": "gold"}))
    assert (await h.profile_of("user_id", "u")).segments == {}


async def test_a_replayed_step_appends_its_membership_events_once() -> None:
    h = Harness(storage=FailOnceStorage(1))
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"})
    await h.log.append([make_event(1, "identify", user_id="u", traits={"plan": "gold"})])
    with pytest.raises(OSError):
        await h.processor.run_once()
    await drain(h)
    assert [m for _, m, _ in await logged_segment_events(h)] == ["segment-entered:m1:gold"]
    assert set((await h.profile_of("user_id", "u")).segments) == {"gold"}


# -- outbox and segment timers ------------------------------------------------------

US = timedelta(microseconds=1)


async def timeline_events(h: Harness, profile_id: str) -> list[Event]:
    page = await h.storage.list_profile_events(WS, profile_id, limit=100)
    return [msgspec.json.decode(e.body, type=Event) for e in reversed(page.events)]


async def test_s2_exits_when_the_timer_fires_an_hour_after_the_first_view_not_before() -> None:
    h = Harness()
    await define(h, "s2", S2)
    # A timer event must count for nobody, even a segment that asks for it.
    await define(h, "timed", {"event": "Segment Timer Due", "op": "gte", "value": 1})
    first = h.clock.now()
    for minutes in (0, 20, 50):
        h.clock.set(first + timedelta(minutes=minutes))
        await h.feed(view(minutes, "jacket", h.clock.now()))
    await drain(h)
    profile = await h.profile_of("user_id", "u")
    assert set(profile.segments) == {"s2"}
    due = first + timedelta(hours=1)
    assert profile.segment_timer_at == due
    timer = await h.storage.get_scheduled(WS, f"segments:{profile.id}")
    assert timer is not None and timer.due_at == due
    assert timer.event.profile_id == profile.id
    assert timer.event.source == processor_module.TIMER_EVENT_SOURCE

    h.clock.set(due - US)
    await drain(h)
    assert set((await h.profile_of("user_id", "u")).segments) == {"s2"}, "not a µs early"

    h.clock.set(due)
    assert await h.relay.run_due() == 1
    await drain(h)
    after = await h.profile_of("user_id", "u")
    assert after.segments == {}
    assert after.segment_timer_at is None
    assert await h.storage.get_scheduled(WS, f"segments:{profile.id}") is None
    # Not the customer's activity, not counted, not in the timeline.
    assert (after.last_seen, after.event_count) == (profile.last_seen, profile.event_count)
    assert after.aggregates == profile.aggregates
    events = await timeline_events(h, profile.id)
    assert [e.event for e in events[-2:]] == ["Segment Entered", "Segment Exited"]
    exited = events[-1]
    assert exited.timestamp == due
    assert exited.properties == {"segment_id": "s2", "version": 1}
    assert all(e.source != processor_module.TIMER_EVENT_SOURCE for e in events)
    # Delivered once: a replay of the relay appends nothing new.
    end = await h.log.end_offset()
    await h.relay.run_due()
    assert await h.log.end_offset() == end


async def test_time_makes_people_enter_too() -> None:
    h = Harness()
    await define(h, "lapsed", {"trait": "last_order_at", "op": "before", "value": {"ago": "30d"}})
    ordered = h.clock.now() - timedelta(days=2)
    await h.feed(
        make_event(1, "identify", user_id="u", traits={"last_order_at": ordered.isoformat()})
    )
    profile = await h.profile_of("user_id", "u")
    assert profile.segments == {}
    due = ordered + timedelta(days=30)
    assert profile.segment_timer_at == due
    h.clock.set(due)
    await drain(h)
    profile = await h.profile_of("user_id", "u")
    assert profile.segments == {"lapsed": Membership(version=1, entered_at=due)}
    assert profile.segment_timer_at is None
    # A new order moves the trait: out again, and the timer comes back for later.
    h.clock.advance(timedelta(days=1))
    now = h.clock.now()
    await h.feed(make_event(2, "identify", user_id="u", traits={"last_order_at": now.isoformat()}))
    await drain(h)
    profile = await h.profile_of("user_id", "u")
    assert profile.segments == {}
    assert profile.segment_timer_at == now + timedelta(days=30)


async def test_an_overdue_timer_is_settled_by_the_next_customer_event() -> None:
    h = Harness()
    await define(h, "s2", S2)
    first = h.clock.now()
    for minutes in (0, 20, 50):
        h.clock.set(first + timedelta(minutes=minutes))
        await h.feed(view(minutes, "jacket", h.clock.now()))
    await drain(h)
    # The relay is late: the customer clicks something first, an hour and a bit later.
    h.clock.set(first + timedelta(hours=1, minutes=3))
    await h.log.append([make_event(99, user_id="u", event="Clicked")])
    assert await h.processor.run_once() == 1
    assert (await h.profile_of("user_id", "u")).segments == {}
    await drain(h)
    exits = [e for e in await logged_segment_events(h) if e[0] == "Segment Exited"]
    assert [m for _, m, _ in exits] == ["segment-exited:m99:s2"], "the late timer changes nothing"


async def test_a_failed_commit_emits_nothing_that_disagrees_with_storage() -> None:
    h = Harness(storage=FailOnceStorage(3))
    await define(h, "s2", S2)
    first = h.clock.now()
    await h.feed(view(1, "jacket", first), view(2, "jacket", first + timedelta(minutes=1)))
    third = first + timedelta(minutes=2)
    h.clock.set(third)
    await h.log.append([view(3, "jacket", third)])
    with pytest.raises(OSError):
        await h.processor.run_once()
    await h.relay.run_due()
    assert await logged_segment_events(h) == [], "nothing emitted before the commit"
    assert await h.storage.next_scheduled_at() is None
    # Built again later, with another now: what goes out is what is stored.
    h.clock.advance(timedelta(seconds=7))
    await drain(h)
    profile = await h.profile_of("user_id", "u")
    entered = [e for e in await timeline_events(h, profile.id) if e.event == "Segment Entered"]
    assert len(entered) == 1
    assert entered[0].timestamp == profile.segments["s2"].entered_at == h.clock.now()
    timer = await h.storage.get_scheduled(WS, f"segments:{profile.id}")
    assert timer is not None and timer.due_at == profile.segment_timer_at == first + timedelta(
        hours=1
    )


async def test_a_merge_exits_the_absorbed_profile_and_leaves_one_timer() -> None:
    h = Harness()
    await define(h, "gold", {"trait": "plan", "op": "equals", "value": "gold"})
    await define(h, "s2", S2)
    start = h.clock.now()
    # The anonymous visitor is gold and hesitates over a jacket...
    await h.feed(make_event(1, anonymous_id="a", context={"traits": {"plan": "gold"}}))
    for n in range(3):
        at = start + timedelta(minutes=n)
        await h.feed(
            msgspec.structs.replace(view(10 + n, "jacket", at), user_id=None, anonymous_id="a")
        )
    # ...while the known customer hesitates over shoes, a little later.
    for n in range(3):
        at = start + timedelta(minutes=10 + n)
        h.clock.set(at)
        await h.feed(view(20 + n, "shoes", at))
    await drain(h)
    visitor = await h.owner("anonymous_id", "a")
    customer = await h.owner("user_id", "u")
    assert visitor != customer
    visitor_timer = await h.storage.get_scheduled(WS, f"segments:{visitor}")
    assert visitor_timer is not None

    await h.feed(make_event(30, "identify", user_id="u", anonymous_id="a"))
    await drain(h)
    merged = await h.profile_of("user_id", "u")
    assert merged.id == customer and await h.owner("anonymous_id", "a") == customer
    assert set(merged.segments) == {"gold", "s2"}
    exits = [e for e in await logged_segment_events(h) if e[1].startswith("segment-exited:m30:")]
    assert sorted((m, p["merged_into"]) for _, m, p in exits) == [
        (f"segment-exited:m30:gold:{visitor}", customer),
        (f"segment-exited:m30:s2:{visitor}", customer),
    ]
    merge_exits = [
        e.event for e in await h.log.read(0, 1000) if e.event.message_id.endswith(f":{visitor}")
    ]
    assert [e.profile_id for e in merge_exits] == [visitor, visitor]
    entered_gold = [m for n, m, _ in await logged_segment_events(h) if m.endswith(":gold")]
    assert entered_gold[-1] == "segment-entered:m30:gold", "the customer enters under its own id"
    # One timer: the visitor's is gone, the customer's is its own s2 exit.
    assert await h.storage.get_scheduled(WS, f"segments:{visitor}") is None
    assert merged.segment_timer_at == start + timedelta(minutes=10, hours=1)
    timer = await h.storage.get_scheduled(WS, f"segments:{customer}")
    assert timer is not None and timer.due_at == merged.segment_timer_at

    # A stale timer of the absorbed profile that still went out reaches the customer, harmlessly.
    h.clock.set(visitor_timer.due_at)
    await h.log.append([visitor_timer.event])
    await drain(h)
    assert set((await h.profile_of("user_id", "u")).segments) == {"gold", "s2"}
    assert await h.storage.resolve_profile_id(WS, visitor) == customer


async def test_a_timer_for_a_profile_that_is_gone_is_dropped() -> None:
    h = Harness()
    await define(h, "s2", S2)
    due = h.clock.now()
    event = segment_effects.timer_event(WS, "prof_gone", "segments:prof_gone", due)
    await h.log.append([event])
    assert await h.processor.run_once() == 1
    assert h.processor.failed_total == 0
    assert await h.storage.load_profiles(WS, ["prof_gone"]) == {}
    assert await h.storage.list_rejections(WS, limit=10) == []
